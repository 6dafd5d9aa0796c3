//! Fallback: sends that never call `connect()` on sockets no cgroup
//! connect or sendmsg hook sees (raw sockets, ICMP echo sockets, SCTP),
//! dropped at the cgroup's egress when their destination is denied (the
//! send fails with EPERM). With the LSM backend `socket_sendmsg` decides
//! them before a packet exists, and these programs stand aside.
//!
//! Who sends is known at the socket's creation (`cgroup/sock_create`, in
//! the creating process): a governed creator's socket is recorded with
//! its event header; egress checks only recorded sockets, so a packet the
//! kernel sends from another context (a timer) is judged as its socket's.
use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock},
    cty::c_void,
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_sk_fullsock},
    macros::{cgroup_sock, map},
    maps::LruHashMap,
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
static RAW_OWNERS: LruHashMap<u64, EventHeader> = LruHashMap::with_max_entries(1 << 14, 0);

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

/// Records the sockets of governed processes that only egress sees.
#[cgroup_sock(sock_create)]
pub fn vardr_raw_sock_create(ctx: SockContext) -> i32 {
    record(ctx.sock);
    // Never refuses a socket.
    1
}

#[inline(always)]
fn record(sk: *mut bpf_sock) -> Option<()> {
    if sock_addr_backend() == BackendKind::Lsm {
        return None;
    }
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
    RAW_OWNERS.insert(cookie, h, 0).ok()
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
    // What the packet says: its transport protocol and, for the ones with
    // ports (a raw socket's hand-made TCP or UDP header too), its port.
    let (l4, l4proto, family, addr) = ip(skb, false)?;
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
        (*ev).backend = BackendKind::Fallback as u32;
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
