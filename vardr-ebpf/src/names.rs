//! Server names: the TLS ClientHello's server name (SNI) as it leaves a
//! socket (cgroup `skb` egress), checked against the domain rules before
//! the packet goes out, and DNS responses handed to the agent (ingress),
//! which maps addresses back to the names a process looked up.
//!
//! The packet programs do not run in the sending process's context, so the
//! process is taken from the socket: `connect4/6` record who connected
//! each TCP socket ([`record_owner`]), by socket cookie.
use aya_ebpf::{
    bindings::__sk_buff,
    cty::c_void,
    helpers::generated::{
        bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id, bpf_skb_load_bytes,
    },
    macros::{cgroup_skb, map},
    maps::{lpm_trie::Key, LruHashMap, PerCpuArray},
    programs::SkBuffContext,
};
use vardr_common::{
    Action, Config, DnsEvent, EventHeader, EventKind, Hook, Operation, PolicyEvent, RuleRef,
    Verdict, COMM_LEN, DNS_PAYLOAD_LEN, DOMAIN_KEY_LEN, EVENT_PATH_LEN, LOST_POLICY, NAMES_DENY,
    NAMES_DNS, NAMES_RULES, NAMES_TLS, RULE_NONE, RULE_UNREADABLE_HELLO,
};

use crate::{
    maps::{domain_rule, POLICY_EVENTS},
    shared::{config, count_lost, fill_header, verdict},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// TLS record type of a handshake, and the handshake type of a ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
/// Extensions of a ClientHello looked at before giving up on a server name.
const MAX_EXTENSIONS: u32 = 64;
/// Longest DNS name.
const MAX_NAME: u32 = 253;

/// [`SockOwner::state`]: no ClientHello seen yet, one passed, one dropped.
const STATE_NEW: u32 = 0;
const STATE_PASSED: u32 = 1;
const STATE_DROPPED: u32 = 2;

/// Who connected a TCP socket, recorded at `connect4/6`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SockOwner {
    header: EventHeader,
    /// Non-zero: the rules apply to the process that connected.
    governed: u32,
    state: u32,
}

#[map]
static SOCK_OWNERS: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(1 << 16, 0);

/// A server name as read (`name`) and as a domain key (`key`).
#[repr(C)]
pub struct NameScratch {
    name: [u8; 256],
    key: Key<[u8; DOMAIN_KEY_LEN]>,
    /// Room past the key: the verifier cannot always tell a masked index
    /// plus one from one past the end.
    _slack: [u8; 8],
    /// Parse results, stored and read back (see [`converge`]).
    payload: u32,
    kind: u32,
    at: u32,
    n: u32,
}

/// Reads a value back from the scratch map. The verifier does not track
/// what is stored in a map value, so the many paths through a parse (one
/// per header length, per extension count) leave one unknown value here
/// and merge, instead of each exploring the rest of the program.
#[inline(always)]
fn converge(v: &u32) -> u32 {
    // SAFETY: a read of an initialized u32 in this CPU's scratch entry.
    unsafe { core::ptr::read_volatile(v) }
}

#[map]
static NAME_KEY: PerCpuArray<NameScratch> = PerCpuArray::with_max_entries(1, 0);

/// Records who connects socket `cookie` (from `connect4/6`, in the
/// process's context), when server names are looked at.
#[inline(always)]
pub fn record_owner(cfg: &Config, cookie: u64, governed: bool) {
    if cfg.names == 0 {
        return;
    }
    let mut o = SockOwner {
        header: blank_header(0),
        governed: u32::from(governed),
        state: STATE_NEW,
    };
    fill_header(&mut o.header, EventKind::Policy);
    let _ = SOCK_OWNERS.insert(cookie, o, 0);
}

#[inline(always)]
pub fn blank_header(cgroup_id: u64) -> EventHeader {
    EventHeader {
        kind: EventKind::Policy as u32,
        _pad: 0,
        boot_ns: 0,
        tid: 0,
        pid: 0,
        uid: 0,
        gid: 0,
        cgroup_id,
        comm: [0; COMM_LEN],
    }
}

#[inline(always)]
pub fn load<T>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: reads size_of::<T>() packet bytes into `v`; the helper checks
    // the offset against the packet.
    let rc = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            off,
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
        )
    };
    // SAFETY: the helper filled every byte when it returned 0.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

#[inline(always)]
pub fn be16(skb: *mut __sk_buff, off: u32) -> Option<u32> {
    let b: [u8; 2] = load(skb, off)?;
    Some(u32::from(b[0]) << 8 | u32::from(b[1]))
}

/// IPv6 extension headers followed before giving up on a packet.
const MAX_IPV6_EXT: u32 = 4;

/// The transport header's offset, protocol, the family and the source or
/// destination address.
#[inline(always)]
pub fn ip(skb: *mut __sk_buff, src: bool) -> Option<(u32, u8, u16, [u8; 16])> {
    let v: u8 = load(skb, 0)?;
    let mut addr = [0u8; 16];
    match v >> 4 {
        4 => {
            let proto: u8 = load(skb, 9)?;
            let a: [u8; 4] = load(skb, if src { 12 } else { 16 })?;
            addr[..4].copy_from_slice(&a);
            Some((u32::from(v & 0xf) * 4, proto, AF_INET, addr))
        }
        6 => {
            let mut proto: u8 = load(skb, 6)?;
            addr = load(skb, if src { 8 } else { 24 })?;
            let mut at = 40;
            // Hop-by-hop, routing and destination options: a socket option
            // can put them before TCP, which must not hide the payload.
            for _ in 0..MAX_IPV6_EXT {
                if !matches!(proto, 0 | 43 | 60) {
                    break;
                }
                let h: [u8; 2] = load(skb, at)?;
                proto = h[0];
                at += (u32::from(h[1]) + 1) * 8;
            }
            Some((at, proto, AF_INET6, addr))
        }
        _ => None,
    }
}

/// [`NameScratch::kind`]: a [`Hello`] without its fields.
const HELLO_NAME: u32 = 1;
const HELLO_NO_NAME: u32 = 2;
const HELLO_UNREADABLE: u32 = 3;

/// What a ClientHello says about its server.
enum Hello {
    /// Offset and length of the server name.
    Name(u32, u32),
    /// Read to the end: no server name extension.
    NoName,
    /// Not all in this packet and this TLS record, or not well formed.
    Unreadable,
}

/// Reads the ClientHello whose record starts at `off` in a packet of `len` bytes.
#[inline(always)]
fn server_name(skb: *mut __sk_buff, off: u32, len: u32) -> Hello {
    parse_hello(skb, off, len).unwrap_or(Hello::Unreadable)
}

#[inline(always)]
fn parse_hello(skb: *mut __sk_buff, off: u32, len: u32) -> Option<Hello> {
    let record = be16(skb, off + 3)?;
    let hs_hi: u8 = load(skb, off + 6)?;
    let hs = u32::from(hs_hi) << 16 | be16(skb, off + 7)?;
    // The whole message in this one record, and the record in this packet:
    // a hello split over TCP segments or TLS records is not read in parts.
    let record_end = off + 5 + record;
    if hs + 4 > record || record_end > len {
        return Some(Hello::Unreadable);
    }
    // Handshake header (4), version (2), random (32).
    let mut at = off + 5 + 4 + 34;
    let sid: u8 = load(skb, at)?;
    at += 1 + u32::from(sid);
    at += 2 + be16(skb, at)?;
    let comp: u8 = load(skb, at)?;
    at += 1 + u32::from(comp);
    if at == record_end {
        return Some(Hello::NoName);
    }
    let end = at + 2 + be16(skb, at)?;
    if end > record_end {
        return Some(Hello::Unreadable);
    }
    at += 2;
    for _ in 0..MAX_EXTENSIONS {
        if at == end {
            return Some(Hello::NoName);
        }
        if at + 4 > end {
            return Some(Hello::Unreadable);
        }
        let ty = be16(skb, at)?;
        let ext = be16(skb, at + 2)?;
        if ty == 0 {
            // server_name: list length (2), name type (1, 0 = host name), length (2).
            let kind: u8 = load(skb, at + 6)?;
            let n = be16(skb, at + 7)?;
            if kind != 0 || n == 0 || n > MAX_NAME || at + 9 + n > end {
                return Some(Hello::Unreadable);
            }
            return Some(Hello::Name(at + 9, n));
        }
        at += 4 + ext;
    }
    Some(Hello::Unreadable)
}

/// ASCII lowercase by table, and 1 for bytes no host name has: a branch
/// per byte would multiply the states the verifier walks through.
static LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};
/// 1 for a dot.
static DOT: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'.' as usize] = 1;
    t
};

/// What the name buffer holds past the name: a byte every host name may have.
static FILL: [u8; 256] = [b'a'; 256];
static NOT_HOST: [u8; 256] = {
    let mut t = [1u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.' {
            t[i] = 0;
        }
        i += 1;
    }
    t
};

/// Fills the scratch key with generation, reversed lowercase name, NUL;
/// returns its prefix length in bits, or `None` when the name has a byte
/// no host name has (a NUL would end the name early for some servers).
/// Bytes past the name are whatever the loop wrote: the trie looks at
/// the prefix only.
#[inline(always)]
fn domain_key(s: &mut NameScratch, generation: u32, n: u32) -> Option<u32> {
    s.key.data[0] = generation as u8;
    // An empty label (a leading dot, two dots in a row) names no host the
    // rules could: unreadable.
    let mut bad = u8::from(s.name[0] == b'.');
    let mut prev = 0u8;
    for i in 0..MAX_NAME as usize {
        let j = (n as usize).wrapping_sub(1 + i) & 0xff;
        let c = s.name[j];
        s.key.data[1 + i] = LOWER[c as usize];
        // Past the name the buffer holds FILL (see `tls`): every byte is
        // checked, so there is no branch on `i < n` for the verifier to
        // follow both ways 253 times.
        bad |= NOT_HOST[c as usize] | (DOT[c as usize] & prev);
        prev = DOT[c as usize];
    }
    s.key.data[(n as usize + 1) & 0xff] = 0;
    (bad == 0).then_some((n + 2) * 8)
}

#[inline(always)]
fn tls(skb: *mut __sk_buff) -> Option<bool> {
    let cfg = config()?;
    if cfg.names & (NAMES_TLS | NAMES_RULES) == 0 {
        return None;
    }
    let (l4, proto, family, addr) = ip(skb, false)?;
    if proto != IPPROTO_TCP {
        return None;
    }
    let port = be16(skb, l4 + 2)?;
    let doff: u8 = load(skb, l4 + 12)?;
    let s = NAME_KEY.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry.
    let s = unsafe { &mut *s };
    s.payload = l4 + u32::from(doff >> 4) * 4;
    let payload = converge(&s.payload);
    // SAFETY: `skb` is this program's context.
    let len = unsafe { (*skb).len };
    if len <= payload {
        return None;
    }
    // SAFETY: the context, as the helper wants it.
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    let owner = SOCK_OWNERS.get_ptr_mut(cookie);
    // SAFETY: pointer into a map value returned by lookup.
    let state = owner.map_or(STATE_NEW, |o| unsafe { (*o).state });
    if state == STATE_DROPPED {
        // Whatever follows a dropped ClientHello (TLS 1.3 early data,
        // retransmissions, the rest of a split hello) is dropped too.
        return Some(false);
    }
    // A hello whose first bytes come alone (a 1-byte first write) starts
    // with the handshake type and must still be read whole.
    let first: u8 = load(skb, payload)?;
    if first != TLS_HANDSHAKE {
        return None;
    }
    let head: Option<[u8; 6]> = load(skb, payload);
    let hello = head.is_some_and(|h| h[1] == 3 && h[5] == CLIENT_HELLO);
    if !hello && (state == STATE_PASSED || owner.is_none()) {
        // Later handshake records of a connection whose hello passed
        // (TLS 1.2 key exchange, encrypted Finished), and a server's
        // (accepted sockets were never connected: no owner). A second
        // hello (after a HelloRetryRequest) is read like the first.
        return None;
    }
    // A socket connected before the agent looked: governed by its cgroup.
    let mut o = match owner {
        // SAFETY: pointer into a map value returned by lookup.
        Some(o) => unsafe { *o },
        None => SockOwner {
            // SAFETY: helper reading the context's socket.
            header: blank_header(unsafe { bpf_skb_cgroup_id(skb) }),
            governed: u32::from(skb_governed(&cfg, skb)),
            state: STATE_NEW,
        },
    };
    if o.governed == 0 {
        o.state = STATE_PASSED;
        let _ = SOCK_OWNERS.insert(cookie, o, 0);
        return None;
    }
    let parsed = if hello {
        server_name(skb, payload, len)
    } else {
        // A handshake record that is no ClientHello, or cut before its
        // type, as the first data of a connection.
        Hello::Unreadable
    };
    (s.kind, s.at, s.n) = match parsed {
        Hello::Name(at, n) => (HELLO_NAME, at, n),
        Hello::NoName => (HELLO_NO_NAME, 0, 0),
        Hello::Unreadable => (HELLO_UNREADABLE, 0, 0),
    };
    // A passed connection's later hello is held to the rules only when it
    // can be read: a record that merely looks like one (1 in 256 encrypted
    // TLS 1.2 Finished records) must not end the connection.
    if state == STATE_PASSED && converge(&s.kind) == HELLO_UNREADABLE {
        return None;
    }
    let (mut kind, at) = (converge(&s.kind), converge(&s.at));
    // 1..=256 as the verifier sees it (the parse gave 1..=253).
    let mut n = (converge(&s.n).wrapping_sub(1) & 0xff) + 1;
    if kind == HELLO_NAME {
        // SAFETY: a 256-byte copy between a static and this CPU's scratch;
        // then `n` (at most 256) packet bytes into the 256-byte buffer.
        let rc = unsafe {
            bpf_probe_read_kernel(
                s.name.as_mut_ptr() as *mut c_void,
                256,
                FILL.as_ptr() as *const c_void,
            );
            bpf_skb_load_bytes(
                skb as *const c_void,
                at,
                s.name.as_mut_ptr() as *mut c_void,
                n,
            )
        };
        // A fully qualified name (`evil.example.`) is the same host.
        if n > 1 && s.name[(n as usize - 1) & 0xff] == b'.' {
            n -= 1;
        }
        match domain_key(s, cfg.generation, n) {
            Some(bits) if rc == 0 => s.key.prefix_len = bits,
            _ => kind = HELLO_UNREADABLE,
        }
    }
    let rule = if cfg.names & NAMES_RULES == 0 || kind == HELLO_NO_NAME {
        // A hello without a name has nothing to match.
        RuleRef::default()
    } else if kind == HELLO_NAME {
        domain_rule(cfg.generation, &s.key)
            .filter(|r| r.action != Action::None as u32)
            .unwrap_or_default()
    } else if cfg.names & NAMES_DENY != 0 {
        // A name the rules cannot be checked against: refused while a
        // domain deny is in force (a split or garbled hello is how one
        // would slip past it).
        RuleRef {
            rule_id: RULE_UNREADABLE_HELLO,
            action: Action::Deny as u32,
        }
    } else {
        RuleRef::default()
    };
    let (v, block, rule_id) = match verdict(&cfg, Hook::Connect, &rule) {
        Some((v, b)) => (v, b, rule.rule_id),
        None if cfg.names & NAMES_TLS != 0 => (Verdict::Allow, false, RULE_NONE),
        None => {
            o.state = STATE_PASSED;
            let _ = SOCK_OWNERS.insert(cookie, o, 0);
            return None;
        }
    };
    o.state = if block { STATE_DROPPED } else { STATE_PASSED };
    let _ = SOCK_OWNERS.insert(cookie, o, 0);
    let shown = if kind == HELLO_NAME { n } else { 0 };
    report(&o.header, v, rule_id, family, port as u16, addr, s, shown);
    Some(!block)
}

/// Rules apply to a socket no connect was seen for unless it belongs to
/// the agent's cgroup or lies outside the scope.
#[inline(always)]
fn skb_governed(cfg: &Config, skb: *mut __sk_buff) -> bool {
    // SAFETY: helpers reading the context's socket.
    let cg = unsafe { bpf_skb_cgroup_id(skb) };
    if cfg.agent_cgroup_id != 0 && cg == cfg.agent_cgroup_id {
        return false;
    }
    cfg.scope_cgroup_id == 0
        // SAFETY: as above.
        || unsafe { bpf_skb_ancestor_cgroup_id(skb, cfg.scope_level as i32) }
            == cfg.scope_cgroup_id
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn report(
    owner: &EventHeader,
    v: Verdict,
    rule_id: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
    s: &NameScratch,
    n: u32,
) {
    let Some(mut entry) = POLICY_EVENTS.reserve::<PolicyEvent>(0) else {
        count_lost(LOST_POLICY);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry of the right size.
    unsafe {
        (*ev).header = *owner;
        let now = bpf_ktime_get_boot_ns();
        // Milliseconds since the connect the header is from: the agent
        // checks the process it kills was running then (pid reuse).
        (*ev).flags = (now.saturating_sub(owner.boot_ns) / 1_000_000).min(u32::MAX as u64) as u32;
        (*ev).header.boot_ns = now;
        (*ev).hook = Hook::Connect as u32;
        (*ev).backend = crate::net::sock_addr_backend() as u32;
        (*ev).verdict = v as u32;
        (*ev).rule_id = rule_id;
        (*ev).family = family;
        (*ev).port = port;
        (*ev).protocol = u32::from(IPPROTO_TCP);
        (*ev).op = Operation::TlsClientHello as u32;
        (*ev).addr = addr;
        // One helper call: a 256-byte copy compiles to a loop the verifier
        // would walk byte by byte.
        bpf_probe_read_kernel(
            (*ev).path.as_mut_ptr() as *mut c_void,
            EVENT_PATH_LEN as u32,
            s.name.as_ptr() as *const c_void,
        );
        (*ev).path[(n as usize) & 0xff] = 0;
        (*ev).path[EVENT_PATH_LEN - 1] = 0;
    }
    entry.submit(0);
}

/// Egress of sockets in the scope: 1 sends the packet, 0 drops it (a
/// denied raw send, or a denied TLS ClientHello).
#[cgroup_skb(egress)]
pub fn vardr_tls_egress(ctx: SkBuffContext) -> i32 {
    if crate::raw_send::refused(ctx.skb.skb) {
        return 0;
    }
    match tls(ctx.skb.skb) {
        Some(false) => 0,
        _ => 1,
    }
}

#[inline(always)]
fn dns(skb: *mut __sk_buff) -> Option<()> {
    let cfg = config()?;
    if cfg.names & NAMES_DNS == 0 {
        return None;
    }
    let (l4, proto, _, _) = ip(skb, true)?;
    if proto != IPPROTO_UDP || be16(skb, l4)? != 53 {
        return None;
    }
    let payload = l4 + 8;
    // SAFETY: `skb` is this program's context.
    let len = unsafe { (*skb).len };
    if len < payload + 12 {
        return None;
    }
    // 1..=DNS_PAYLOAD_LEN, in a form the verifier can see.
    let n = (len - payload - 1).min(DNS_PAYLOAD_LEN as u32 - 1) + 1;
    let Some(mut entry) = POLICY_EVENTS.reserve::<DnsEvent>(0) else {
        count_lost(LOST_POLICY);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved entry of the right size; the helper reads
    // at most DNS_PAYLOAD_LEN bytes into its payload.
    let rc = unsafe {
        (*ev).header = blank_header(bpf_skb_cgroup_id(skb));
        (*ev).header.kind = EventKind::Dns as u32;
        (*ev).header.boot_ns = bpf_ktime_get_boot_ns();
        (*ev).len = n;
        (*ev)._pad = 0;
        bpf_skb_load_bytes(
            skb as *const c_void,
            payload,
            (*ev).payload.as_mut_ptr() as *mut c_void,
            n,
        )
    };
    if rc == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
    Some(())
}

/// Ingress of sockets in the scope: DNS responses to the agent; never drops.
#[cgroup_skb(ingress)]
pub fn vardr_dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = dns(ctx.skb.skb);
    1
}
