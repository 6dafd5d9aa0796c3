//! Sends that never call `connect()` on sockets no cgroup connect or
//! sendmsg hook sees (raw sockets, ICMP echo sockets, SCTP), judged by the
//! packets they put out: a packet to a denied destination is dropped at
//! the cgroup's egress and the send fails with EPERM. The fallback's only
//! check of them; beside the LSM backend's `socket_sendmsg` (which judges
//! the address a send names) the packet check still refuses what a
//! hand-made IP header sends elsewhere, reporting only what it blocks.
//!
//! Who sends is known at the socket's creation (`cgroup/sock_create`, in
//! the creating process): a governed creator's socket is recorded with
//! its event header until it is released (`cgroup/sock_release`). The map
//! is not an LRU: a record is never pushed out by other sockets, and a
//! governed process whose socket cannot be recorded (the map is full)
//! does not get it (EPERM at `socket()`).
use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock},
    cty::c_void,
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_sk_fullsock},
    macros::{cgroup_sock, map},
    maps::HashMap,
    programs::SockContext,
};
use vardr_common::{
    BackendKind, EventHeader, EventKind, Hook, Operation, PolicyEvent, LOST_POLICY,
};

use crate::{
    maps::POLICY_EVENTS,
    names::{be16, blank_header, ip},
    net::{lookup4, lookup6, sock_addr_backend, v4_mapped, IPPROTO_UDPLITE},
    shared::{config, count_lost, fill_header, governed_task, hook_bit, verdict},
};

/// Sockets of governed processes that no other hook sees, by cookie: the
/// creator's event header.
#[map]
static RAW_OWNERS: HashMap<u64, EventHeader> = HashMap::with_max_entries(1 << 15, 0);

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_SCTP: u8 = 132;
const AF_INET: u16 = 2;

/// TCP and UDP sockets have the cgroup connect and sendmsg hooks.
#[inline(always)]
fn seen_elsewhere(type_: u32, proto: u32) -> bool {
    (type_ == SOCK_STREAM && proto == IPPROTO_TCP)
        || (type_ == SOCK_DGRAM && (proto == IPPROTO_UDP || proto == u32::from(IPPROTO_UDPLITE)))
}

/// Records the sockets of governed processes that only egress sees;
/// refuses one it cannot record.
#[cgroup_sock(sock_create)]
pub fn vardr_raw_sock_create(ctx: SockContext) -> i32 {
    match record(ctx.sock) {
        Some(false) => 0,
        _ => 1,
    }
}

/// Forgets a released socket.
#[cgroup_sock(sock_release)]
pub fn vardr_raw_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: context fields of `struct bpf_sock`.
    let (type_, proto) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    if !seen_elsewhere(type_, proto) {
        // SAFETY: the context, as the helper wants it.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock as *mut c_void) };
        let _ = RAW_OWNERS.remove(cookie);
    }
    1
}

/// `Some(true)`: recorded; `Some(false)`: a governed socket that could
/// not be; `None`: nothing to record.
#[inline(always)]
fn record(sk: *mut bpf_sock) -> Option<bool> {
    // SAFETY: context fields of `struct bpf_sock`.
    let (type_, proto) = unsafe { ((*sk).type_, (*sk).protocol) };
    if seen_elsewhere(type_, proto) {
        return None;
    }
    let cfg = config()?;
    if !governed_task(&cfg) {
        return None;
    }
    let mut h = blank_header(0);
    fill_header(&mut h, EventKind::Policy);
    // SAFETY: the context, as the helper wants it.
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    let recorded = RAW_OWNERS.insert(cookie, h, 0).is_ok();
    // Refused only while connect rules are in force.
    Some(recorded || cfg.active_mask & hook_bit(Hook::Connect) == 0)
}

/// Whether egress drops this packet: a recorded socket's packet to a
/// denied destination (reported).
#[inline(always)]
pub fn refused(skb: *mut __sk_buff) -> bool {
    check(skb).unwrap_or(false)
}

#[inline(always)]
fn check(skb: *mut __sk_buff) -> Option<bool> {
    let cfg = config()?;
    if cfg.active_mask & hook_bit(Hook::Connect) == 0 {
        return None;
    }
    // SAFETY: the context's socket, made a full socket by the helper.
    let (type_, proto) = unsafe {
        let sk = (*skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return None;
        }
        ((*full).type_, (*full).protocol)
    };
    if seen_elsewhere(type_, proto) {
        return None;
    }
    // SAFETY: the context, as the helper wants it.
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    // SAFETY: a map value, copied out.
    let owner = unsafe { *RAW_OWNERS.get(cookie)? };
    let lsm = sock_addr_backend() == BackendKind::Lsm;
    // What the packet says: its transport protocol and, for the ones with
    // ports (a raw socket's hand-made TCP or UDP header too), its port. A
    // hand-made packet that is not IPv4 or IPv6 cannot be checked: refused
    // while connect rules are enforced.
    let Some((l4, l4proto, family, addr)) = ip(skb, false) else {
        return Some(cfg.enforce_mask & hook_bit(Hook::Connect) != 0);
    };
    let port = if matches!(u32::from(l4proto), IPPROTO_TCP | IPPROTO_UDP)
        || l4proto == IPPROTO_SCTP
        || u16::from(l4proto) == IPPROTO_UDPLITE
    {
        be16(skb, l4 + 2).unwrap_or(0) as u16
    } else {
        0
    };
    let rule = if family == AF_INET {
        lookup4(
            cfg.generation,
            l4proto,
            port,
            [addr[0], addr[1], addr[2], addr[3]],
        )
    } else {
        match v4_mapped(&addr) {
            Some(v4) => lookup4(cfg.generation, l4proto, port, v4),
            None => lookup6(cfg.generation, l4proto, port, &addr),
        }
    };
    let (v, block) = verdict(&cfg, Hook::Connect, &rule)?;
    // `socket_sendmsg` reported the send already, by the address it named.
    if lsm && !block {
        return None;
    }
    let Some(mut entry) = POLICY_EVENTS.reserve::<PolicyEvent>(0) else {
        count_lost(LOST_POLICY);
        return Some(block);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry of the right size.
    unsafe {
        (*ev).header = owner;
        (*ev).header.boot_ns = bpf_ktime_get_boot_ns();
        (*ev).hook = Hook::Connect as u32;
        (*ev).backend = sock_addr_backend() as u32;
        (*ev).verdict = v as u32;
        (*ev).rule_id = rule.rule_id;
        (*ev).flags = 0;
        (*ev).family = family;
        (*ev).port = port;
        (*ev).protocol = u32::from(l4proto);
        (*ev).op = Operation::Send as u32;
        (*ev).addr = addr;
        (*ev).path[0] = 0;
    }
    entry.submit(0);
    Some(block)
}
