//! Outbound connections: `lsm/socket_connect` (ECONNREFUSED) and, as the
//! fallback, cgroup `connect4/6` and `sendmsg4/6` programs (EPERM).
//!
//! With the LSM backend the cgroup programs run too: `sendmsg4/6` for
//! unconnected UDP sends, which `socket_connect` never sees, and
//! `connect4/6` for TCP Fast Open (`sendto(MSG_FASTOPEN)` connects without
//! `socket_connect`). A connect that `socket_connect` already decided is
//! recognised by its thread and destination and not decided twice.
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, lsm, map, tracepoint},
    maps::{lpm_trie::Key, LruHashMap},
    programs::{LsmContext, SockAddrContext, TracePointContext},
    Global,
};
use vardr_common::{
    Action, BackendKind, Hook, Operation, RuleRef, Verdict, AF_PACKET, AF_XDP, NAMES_DNS,
    NAMES_RULES, NET4_KEY_LEN, NET6_KEY_LEN, NET_KEY_HEAD_BITS, PACKET_PROTO_UNKNOWN, RULE_NONE,
    RULE_PACKET_FRAMES,
};

use crate::{
    maps::{net4_rule, net6_rule},
    shared::{config, emit, governed, governed_task, hook_bit, offsets, read, verdict, Report},
};

const ECONNREFUSED: i32 = 111;

/// Backend the cgroup programs report as: `Fallback`, or `Lsm` when they
/// complete the LSM backend (set by the loader).
#[unsafe(no_mangle)]
pub static SOCK_ADDR_BACKEND: Global<u32> = Global::new(BackendKind::Fallback as u32);

/// A connect `socket_connect` allowed, by thread: the `connect4/6`
/// program that follows it in the same call has nothing left to decide.
/// The protocol is part of it: a connect that fails before `connect4/6`
/// (a UDP connect with a short address) leaves its entry behind, which
/// must not let a TCP Fast Open send to the same place through undecided.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Decided {
    generation: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
    protocol: u32,
}

#[map]
static LSM_DECIDED: LruHashMap<u32, Decided> = LruHashMap::with_max_entries(4096, 0);
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A rule naming a port is more specific than one naming only a protocol:
/// (protocol, port), (any, port), (protocol, any), (any, any).
#[inline(always)]
pub fn lookup4(generation: u32, proto: u8, port: u16, a: [u8; 4]) -> RuleRef {
    let tries = [(proto, port), (0, port), (proto, 0), (0, 0)];
    for (p, pt) in tries {
        let data: [u8; NET4_KEY_LEN] = [
            generation as u8,
            p,
            (pt >> 8) as u8,
            pt as u8,
            a[0],
            a[1],
            a[2],
            a[3],
        ];
        let key = Key::new(NET_KEY_HEAD_BITS + 32, data);
        if let Some(r) = net4_rule(generation, &key) {
            if r.action != Action::None as u32 {
                return r;
            }
        }
    }
    RuleRef::default()
}

#[inline(always)]
pub fn lookup6(generation: u32, proto: u8, port: u16, a: &[u8; 16]) -> RuleRef {
    let tries = [(proto, port), (0, port), (proto, 0), (0, 0)];
    for (p, pt) in tries {
        let mut data = [0u8; NET6_KEY_LEN];
        data[0] = generation as u8;
        data[1] = p;
        data[2] = (pt >> 8) as u8;
        data[3] = pt as u8;
        data[4..].copy_from_slice(a);
        let key = Key::new(NET_KEY_HEAD_BITS + 128, data);
        if let Some(r) = net6_rule(generation, &key) {
            if r.action != Action::None as u32 {
                return r;
            }
        }
    }
    RuleRef::default()
}

/// `::ffff:a.b.c.d` goes through the IPv4 rules, so it cannot bypass them.
#[inline(always)]
pub fn v4_mapped(a: &[u8; 16]) -> Option<[u8; 4]> {
    let prefix = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    if a[..12] == prefix {
        Some([a[12], a[13], a[14], a[15]])
    } else {
        None
    }
}

/// The address a connect really reaches: the kernel sends a connect to the
/// unspecified address (0.0.0.0, ::, ::ffff:0.0.0.0) to the loopback, so a
/// rule on 127.0.0.1 or ::1 must see it as that.
#[inline(always)]
fn effective(family: u16, mut addr: [u8; 16]) -> [u8; 16] {
    if family == AF_INET {
        if addr[..4] == [0; 4] {
            addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        }
    } else if addr == [0; 16] {
        addr[15] = 1;
    } else if v4_mapped(&addr) == Some([0; 4]) {
        addr[12..].copy_from_slice(&[127, 0, 0, 1]);
    }
    addr
}

/// Decides a connection; reports a match; returns whether to block.
#[inline(always)]
fn decide(
    family: u16,
    proto: u8,
    port: u16,
    addr: [u8; 16],
    backend: BackendKind,
    connect: bool,
) -> bool {
    decide_as(
        family,
        proto,
        port,
        addr,
        backend,
        connect,
        Operation::Hook as u32,
    )
}

/// [`decide`], reported as `op` (an [`Operation`]; with 0x100, only
/// when blocked).
#[inline(always)]
fn decide_as(
    family: u16,
    proto: u8,
    port: u16,
    addr: [u8; 16],
    backend: BackendKind,
    connect: bool,
    op: u32,
) -> bool {
    let meta = u32::from(family)
        | u32::from(proto) << 16
        | (backend as u32 & 0x7f) << 24
        | u32::from(connect) << 31;
    let (mut a0, mut a1) = ([0u8; 8], [0u8; 8]);
    a0.copy_from_slice(&addr[..8]);
    a1.copy_from_slice(&addr[8..]);
    let blocked = vardr_decide_connect(
        meta,
        u32::from(port) | op << 16,
        u64::from_ne_bytes(a0),
        u64::from_ne_bytes(a1),
    );
    // Read back opaquely: LLVM knows the answer is 0 or 1 and would turn
    // the caller's `0 or 1` return into arithmetic on it, which the
    // verifier (seeing any number come back) refuses at program exit.
    // SAFETY: a local.
    unsafe { core::ptr::read_volatile(&blocked) != 0 }
}

/// [`decide`] as a global function (`meta`: family, protocol, backend
/// and whether it is a connect, packed low to high; `port`: the port,
/// the operation above it; the address in two words): the kernel
/// verifies it once per program, on its own, instead of in every state
/// the hook reaches it with.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_decide_connect(meta: u32, port: u32, a0: u64, a1: u64) -> u32 {
    let backend = if (meta >> 24) & 0x7f == BackendKind::Lsm as u32 {
        BackendKind::Lsm
    } else {
        BackendKind::Fallback
    };
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&a0.to_ne_bytes());
    addr[8..].copy_from_slice(&a1.to_ne_bytes());

    u32::from(decide_here(
        meta as u16,
        (meta >> 16) as u8,
        port as u16,
        addr,
        backend,
        meta >> 31 != 0,
        port >> 16,
    ))
}

#[inline(always)]
fn decide_here(
    family: u16,
    proto: u8,
    port: u16,
    addr: [u8; 16],
    backend: BackendKind,
    connect: bool,
    op: u32,
) -> bool {
    // As [`decide_as`] packs it.
    let quiet = op & 0x100 != 0;
    let op = if op & 0xff == Operation::Send as u32 {
        Operation::Send
    } else {
        Operation::Hook
    };
    let Some(ref cfg) = config() else {
        return false;
    };
    if !governed(cfg, hook_bit(Hook::Connect)) {
        return false;
    }
    let addr = effective(family, addr);
    let rule = if family == AF_INET {
        lookup4(
            cfg.generation,
            proto,
            port,
            [addr[0], addr[1], addr[2], addr[3]],
        )
    } else {
        match v4_mapped(&addr) {
            Some(v4) => lookup4(cfg.generation, proto, port, v4),
            None => lookup6(cfg.generation, proto, port, &addr),
        }
    };
    // With domain rules and DNS names learnt, a TCP connect no rule
    // decided goes to the agent, which checks the names DNS gave its
    // address against the domain rules (after the fact).
    let names = NAMES_DNS | NAMES_RULES;
    let (verdict, block, rule_id) = match verdict(cfg, Hook::Connect, &rule) {
        Some((v, b)) => (v, b, rule.rule_id),
        None if connect && proto == IPPROTO_TCP && cfg.names & names == names => {
            (Verdict::Allow, false, RULE_NONE)
        }
        None => return false,
    };
    if quiet && !block {
        return false;
    }
    let report = Report {
        hook: Hook::Connect,
        backend,
        verdict,
        rule_id,
        flags: 0,
        family,
        port,
        protocol: proto as u32,
        addr,
        op: op as u32,
    };
    emit(&report, None);
    block
}

#[lsm(hook = "socket_connect")]
pub fn vardr_socket_connect(ctx: LsmContext) -> i32 {
    // socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let sock: *const u8 = ctx.arg(0);
    let sa: *const u8 = ctx.arg(1);
    let Some(family) = read::<u16>(sa, 0) else {
        return 0;
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    // The socket's protocol (ICMP for a ping socket, SCTP, a raw socket's),
    // as the cgroup `connect4/6` programs see it; by type where the
    // kernel's BTF does not give it.
    let off = offsets();
    let sk = read::<*const u8>(sock, off.socket_sk).unwrap_or(core::ptr::null());
    let sk_proto: u16 = if sk.is_null() || off.sk_protocol == 0 {
        0
    } else {
        read(sk, off.sk_protocol).unwrap_or(0)
    };
    let sock_type: i16 = read(sock, off.socket_type).unwrap_or(0);
    let proto = match sock_type & 0xf {
        _ if sk_proto != 0 && sk_proto < 256 => sk_proto as u8,
        1 => IPPROTO_TCP,
        2 => IPPROTO_UDP,
        _ => 0,
    };
    let port = u16::from_be(read::<u16>(sa, 2).unwrap_or(0));
    let mut addr = [0u8; 16];
    if family == AF_INET {
        let a: [u8; 4] = read(sa, 4).unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&a);
    } else {
        addr = read(sa, 8).unwrap_or([0; 16]);
    }
    if decide(family, proto, port, addr, BackendKind::Lsm, true) {
        return -ECONNREFUSED;
    }
    if let Some(cfg) = config() {
        if cfg.active_mask & hook_bit(Hook::Connect) != 0 {
            let d = Decided {
                generation: cfg.generation,
                family,
                port,
                addr,
                protocol: u32::from(proto),
            };
            let _ = LSM_DECIDED.insert(bpf_get_current_pid_tgid() as u32, d, 0);
        }
    }
    0
}

const EPERM: i32 = 1;
const SOCK_STREAM: i16 = 1;
const SOCK_DGRAM: i16 = 2;
pub const IPPROTO_UDPLITE: u16 = 136;
const IPPROTO_SCTP: u8 = 132;

/// Sends on sockets the cgroup hooks never see: raw sockets (whatever
/// protocol they carry), ICMP echo ("ping") sockets and SCTP (`sendto`,
/// `sendmsg`, `sendmmsg`, `write`, io_uring). The destination a send
/// names is checked as a connect to it (raw and ICMP sends have no port:
/// rules with ports do not match them; SCTP's is the address's); a send
/// without one goes to the socket's peer, checked again here (a socket
/// connected before the policy, or passed in by another process), but
/// reported only when refused (its connect was). What a hand-made IP
/// header says is checked on the packet, at egress (`raw_send`).
#[lsm(hook = "socket_sendmsg")]
pub fn vardr_socket_sendmsg(ctx: LsmContext) -> i32 {
    // socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let off = offsets();
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    let sock_type: i16 = read::<i16>(sock, off.socket_type).unwrap_or(0) & 0xf;
    let sk = read::<*const u8>(sock, off.socket_sk).unwrap_or(core::ptr::null());
    let proto: u16 = if sk.is_null() || off.sk_protocol == 0 {
        0
    } else {
        read(sk, off.sk_protocol).unwrap_or(0)
    };
    // The socket's own family and peer (`struct sock_common`), when the
    // kernel's BTF gives them.
    let own_family = if sk.is_null() || off.skc_family == 0 {
        0
    } else {
        read::<u16>(sk, off.skc_family).unwrap_or(0)
    };
    // Frames built by hand, before the protocol checks below: a packet
    // socket's protocol is an ethertype, which can equal TCP's or UDP's.
    if own_family == AF_PACKET || own_family == AF_XDP {
        // `sk_protocol` of a packet socket is not its ethertype (that is in
        // `struct packet_sock`, which no offset here reaches): not reported.
        return if packet_frames(
            own_family,
            PACKET_PROTO_UNKNOWN,
            BackendKind::Lsm,
            Operation::PacketSend,
        ) {
            -EPERM
        } else {
            0
        };
    }
    // TCP and UDP sends: the cgroup connect and sendmsg programs decide.
    let tcp = sock_type == SOCK_STREAM && proto == IPPROTO_TCP as u16;
    let udp = sock_type == SOCK_DGRAM && (proto == IPPROTO_UDP as u16 || proto == IPPROTO_UDPLITE);
    if tcp || udp {
        return 0;
    }
    // `msg_name` is the kernel's copy of the address (or null).
    let name = read::<*const u8>(msg, off.msghdr_name).unwrap_or(core::ptr::null());
    let sctp = proto == IPPROTO_SCTP as u16;
    let (family, port, addr, quiet) = if name.is_null() {
        if own_family == 0 {
            return 0;
        }
        let mut addr = [0u8; 16];
        if own_family == AF_INET {
            let a: [u8; 4] = read(sk, off.skc_daddr).unwrap_or([0; 4]);
            addr[..4].copy_from_slice(&a);
        } else {
            addr = read(sk, off.skc_v6_daddr).unwrap_or([0; 16]);
        }
        if addr == [0; 16] {
            // Not connected: the send fails without a destination.
            return 0;
        }
        let port = if sctp {
            u16::from_be(read::<u16>(sk, off.skc_dport).unwrap_or(0))
        } else {
            0
        };
        (own_family, port, addr, true)
    } else {
        let mut family = read::<u16>(name, 0).unwrap_or(0);
        // A raw socket takes AF_UNSPEC as its own family.
        if family == 0 {
            family = own_family;
        }
        let port = if sctp {
            u16::from_be(read::<u16>(name, 2).unwrap_or(0))
        } else {
            0
        };
        let mut addr = [0u8; 16];
        if family == AF_INET {
            let a: [u8; 4] = read(name, 4).unwrap_or([0; 4]);
            addr[..4].copy_from_slice(&a);
        } else {
            addr = read(name, 8).unwrap_or([0; 16]);
        }
        (family, port, addr, false)
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let op = if quiet {
        SEND_QUIET
    } else {
        Operation::Send as u32
    };
    if decide_as(family, proto as u8, port, addr, BackendKind::Lsm, false, op) {
        return -EPERM;
    }
    0
}

/// A frame built by hand (`family` `AF_PACKET` or `AF_XDP`, `ethertype`
/// its protocol, or [`PACKET_PROTO_UNKNOWN`]) from a
/// governed process while some connect rule denies: refused (reported
/// under [`RULE_PACKET_FRAMES`]), as no rule can be checked on it. Whether
/// it is refused (false in audit mode).
#[inline(always)]
pub fn packet_frames(family: u16, ethertype: u32, backend: BackendKind, op: Operation) -> bool {
    let Some(ref cfg) = config() else {
        return false;
    };
    if cfg.packet_frames == 0 || !governed(cfg, hook_bit(Hook::Connect)) {
        return false;
    }
    let rule = RuleRef {
        action: Action::Deny as u32,
        rule_id: RULE_PACKET_FRAMES,
    };
    let Some((verdict, block)) = verdict(cfg, Hook::Connect, &rule) else {
        return false;
    };
    let report = Report {
        hook: Hook::Connect,
        backend,
        verdict,
        rule_id: RULE_PACKET_FRAMES,
        flags: 0,
        family,
        port: 0,
        protocol: ethertype,
        addr: [0; 16],
        op: op as u32,
    };
    emit(&report, None);
    block
}

/// Fallback: `socket(AF_PACKET | AF_XDP, ...)` (or `AF_INET` with
/// `SOCK_PACKET`) by a governed process while some connect rule denies.
/// No hook of the fallback sees a packet socket's frames (the cgroup programs see only IP sockets), nor tells a send
/// from a receive: the process is killed at the call's entry, and dies
/// on its way back to user space, before it can use the socket.
#[tracepoint]
pub fn vardr_sys_socket(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the sys_enter_socket record (family, type, protocol).
    let (family, type_, proto) = unsafe {
        (
            ctx.read_at::<u64>(16),
            ctx.read_at::<u64>(24),
            ctx.read_at::<u64>(32),
        )
    };
    let (Ok(family), Ok(type_), Ok(proto)) = (family, type_, proto) else {
        return 0;
    };
    // The kernel takes the arguments as `int`: high bits are not part of
    // them. `socket(AF_INET, SOCK_PACKET)` makes a packet socket too.
    let family = family as u32;
    let packet = family == u32::from(AF_PACKET)
        || family == u32::from(AF_XDP)
        || (family == u32::from(AF_INET) && type_ as u32 & 0xf == SOCK_PACKET);
    if !packet {
        return 0;
    }
    let (family, ethertype) = if family == u32::from(AF_XDP) {
        (AF_XDP, 0)
    } else {
        (AF_PACKET, u32::from(u16::from_be(proto as u16)))
    };
    if packet_frames(
        family,
        ethertype,
        BackendKind::Fallback,
        Operation::PacketSocket,
    ) {
        // SAFETY: signals the calling process.
        unsafe { aya_ebpf::helpers::bpf_send_signal(SIGKILL) };
    }
    0
}

const SIGKILL: u32 = 9;
const SOCK_PACKET: u32 = 10;

/// The operation code of a send reported only when refused.
const SEND_QUIET: u32 = 0x100 | Operation::Send as u32;

/// Backend the cgroup programs report as.
#[inline(always)]
pub fn sock_addr_backend() -> BackendKind {
    if SOCK_ADDR_BACKEND.load() == BackendKind::Lsm as u32 {
        BackendKind::Lsm
    } else {
        BackendKind::Fallback
    }
}

/// Fallback: 1 lets the call proceed, 0 makes it fail with EPERM.
#[inline(always)]
fn sock_addr(ctx: &SockAddrContext, v6: bool, connect: bool) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: context fields of `struct bpf_sock_addr`, read as u32 as the verifier requires.
    let (proto, port, addr) = unsafe {
        let proto = (*sa).protocol as u8;
        let port = u16::from_be((*sa).user_port as u16);
        let mut addr = [0u8; 16];
        if v6 {
            for i in 0..4 {
                let w = (*sa).user_ip6[i].to_ne_bytes();
                addr[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            addr[..4].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        }
        (proto, port, addr)
    };
    let family = if v6 { AF_INET6 } else { AF_INET };
    let backend = sock_addr_backend();
    if connect && proto == IPPROTO_TCP {
        if let Some(cfg) = config() {
            if cfg.names != 0 {
                // SAFETY: the context, as the helper wants it.
                let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
                crate::names::record_owner(&cfg, cookie, governed_task(&cfg));
            }
        }
    }
    if connect && backend == BackendKind::Lsm {
        let tid = bpf_get_current_pid_tgid() as u32;
        if let Some(d) = LSM_DECIDED.get_ptr(tid) {
            // SAFETY: pointer into a map value returned by lookup.
            let d = unsafe { *d };
            let _ = LSM_DECIDED.remove(tid);
            let generation = config().map(|c| c.generation).unwrap_or(u32::MAX);
            if d.family == family
                && d.port == port
                && d.addr == addr
                && d.generation == generation
                && d.protocol == u32::from(proto)
                && proto != 0
            {
                return 1;
            }
        }
    }
    if decide(family, proto, port, addr, backend, connect) {
        0
    } else {
        1
    }
}

#[cgroup_sock_addr(connect4)]
pub fn vardr_connect4(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx, false, true)
}

#[cgroup_sock_addr(connect6)]
pub fn vardr_connect6(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx, true, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vardr_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx, false, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vardr_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx, true, false)
}
