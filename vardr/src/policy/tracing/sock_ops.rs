//! `matchArgs` on a kprobe's `sock`, `sockaddr` or `skb` argument: ports,
//! port ranges and privileged ports, addresses by CIDR, protocol, family
//! and TCP state, as Tetragon names them.
use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::generic::{ArgType, Op, Values};
use crate::policy::validate::{parse_cidr, Diags};

/// Addresses of one SAddr/DAddr entry.
const MAX_CIDRS: usize = 16;

/// The socket operator `name` names, if it is one.
pub(super) fn op(name: &str) -> Option<Op> {
    Some(match name {
        "SPort" | "sport" | "Sport" => Op::SPort,
        "NotSPort" | "notsport" | "NotSport" => Op::NotSPort,
        "DPort" | "dport" | "Dport" => Op::DPort,
        "NotDPort" | "notdport" | "NotDport" => Op::NotDPort,
        "SPortPriv" | "sportpriv" | "SportPriv" => Op::SPortPriv,
        "NotSPortPriv" | "notsportpriv" | "NotSportPriv" => Op::NotSPortPriv,
        "DPortPriv" | "dportpriv" | "DportPriv" => Op::DPortPriv,
        "NotDPortPriv" | "notdportpriv" | "NotDportPriv" => Op::NotDPortPriv,
        "SAddr" | "saddr" | "Saddr" => Op::SAddr,
        "NotSAddr" | "notsaddr" | "NotSaddr" => Op::NotSAddr,
        "DAddr" | "daddr" | "Daddr" => Op::DAddr,
        "NotDAddr" | "notdaddr" | "NotDaddr" => Op::NotDAddr,
        "Protocol" | "protocol" => Op::Protocol,
        "Family" | "family" => Op::Family,
        "State" | "state" => Op::State,
        _ => return None,
    })
}

/// Whether `op` is one of the socket operators.
pub fn is_sock_op(op: Op) -> bool {
    matches!(
        op,
        Op::SPort
            | Op::NotSPort
            | Op::DPort
            | Op::NotDPort
            | Op::SPortPriv
            | Op::NotSPortPriv
            | Op::DPortPriv
            | Op::NotDPortPriv
            | Op::SAddr
            | Op::NotSAddr
            | Op::DAddr
            | Op::NotDAddr
            | Op::Protocol
            | Op::Family
            | Op::State
    )
}

/// Whether `op` needs no values (the privileged-port tests).
pub(super) fn takes_no_values(op: Op) -> bool {
    matches!(
        op,
        Op::SPortPriv | Op::NotSPortPriv | Op::DPortPriv | Op::NotDPortPriv
    )
}

/// The values of socket operator `op` on an argument of type `ty`, or a
/// diagnostic (reported here).
pub(super) fn values(
    d: &mut Diags,
    op: Op,
    op_at: &Spanned<String>,
    ty: ArgType,
    values: &[&Spanned<String>],
) -> Option<Values> {
    let name = op_at.value.as_str();
    if ty == ArgType::Sockaddr
        && matches!(
            op,
            Op::DPort
                | Op::NotDPort
                | Op::DPortPriv
                | Op::NotDPortPriv
                | Op::DAddr
                | Op::NotDAddr
                | Op::Protocol
                | Op::State
        )
    {
        d.at(
            op_at,
            format!("matchArgs {name} on a sockaddr argument: a sockaddr is one address and port, matched with SAddr, SPort and Family (Tetragon rejects {name} on it too)"),
        );
        return None;
    }
    if ty == ArgType::Skb && op == Op::State {
        d.at(
            op_at,
            format!("matchArgs {name} on an skb argument: a packet has no TCP state (State is matched on a sock; Tetragon rejects it on an skb too)"),
        );
        return None;
    }
    if takes_no_values(op) {
        return Some(Values::Ints(Vec::new()));
    }
    let max = if matches!(op, Op::SAddr | Op::NotSAddr | Op::DAddr | Op::NotDAddr) {
        MAX_CIDRS
    } else {
        vardr_common::generic::GEN_MAX_VALUES
    };
    if let Some(v) = values.get(max) {
        d.at(*v, format!("more than {max} values for {name}"));
        return None;
    }
    match op {
        Op::SAddr | Op::NotSAddr | Op::DAddr | Op::NotDAddr => {
            let mut out: Vec<IpNet> = Vec::new();
            for v in values {
                match parse_cidr(v.value.trim()) {
                    Ok(n) => out.push(n),
                    Err(e) => {
                        d.at(*v, format!("{name} value {e}"));
                        return None;
                    }
                }
            }
            Some(Values::Cidrs(out))
        }
        _ => {
            let mut out = Vec::new();
            for v in values {
                let s = v.value.trim();
                let n = match op {
                    Op::Protocol => protocol(s),
                    Op::Family => family(s),
                    Op::State => state(s),
                    _ => port_range(s),
                };
                match n {
                    Some(n) => out.push(n),
                    None => {
                        d.at(*v, format!("{name} value {s:?}: {}", expected(op)));
                        return None;
                    }
                }
            }
            Some(Values::Ints(out))
        }
    }
}

fn expected(op: Op) -> &'static str {
    match op {
        Op::Protocol => "a protocol (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_RAW, IPPROTO_SCTP, IPPROTO_MPTCP or a number)",
        Op::Family => "a family (AF_INET, AF_INET6, AF_UNIX or a number)",
        Op::State => "a TCP state (TCP_ESTABLISHED, TCP_SYN_SENT, ..., TCP_NEW_SYN_RECV)",
        _ => "a port (0 to 65535) or a range lo:hi",
    }
}

/// A port or a `lo:hi` range, as `lo << 16 | hi`.
fn port_range(s: &str) -> Option<u64> {
    let (lo, hi) = match s.split_once(':') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let p = s.parse::<u16>().ok()?;
            (p, p)
        }
    };
    (lo <= hi).then_some(u64::from(lo) << 16 | u64::from(hi))
}

const PROTOCOLS: [(&str, u64); 7] = [
    ("IPPROTO_ICMP", 1),
    ("IPPROTO_TCP", 6),
    ("IPPROTO_UDP", 17),
    ("IPPROTO_ICMPV6", 58),
    ("IPPROTO_SCTP", 132),
    ("IPPROTO_RAW", 255),
    ("IPPROTO_MPTCP", 262),
];

const FAMILIES: [(&str, u64); 3] = [("AF_UNIX", 1), ("AF_INET", 2), ("AF_INET6", 10)];

/// TCP states, numbered as the kernel numbers them from 1.
const STATES: [&str; 12] = [
    "TCP_ESTABLISHED",
    "TCP_SYN_SENT",
    "TCP_SYN_RECV",
    "TCP_FIN_WAIT1",
    "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT",
    "TCP_CLOSE",
    "TCP_CLOSE_WAIT",
    "TCP_LAST_ACK",
    "TCP_LISTEN",
    "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
];

fn named(table: &[(&str, u64)], s: &str, max: u64) -> Option<u64> {
    table
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .or_else(|| s.parse::<u64>().ok().filter(|v| *v <= max))
}

fn protocol(s: &str) -> Option<u64> {
    named(&PROTOCOLS, s, u64::from(u16::MAX))
}

fn family(s: &str) -> Option<u64> {
    named(&FAMILIES, s, u64::from(u16::MAX))
}

fn state(s: &str) -> Option<u64> {
    STATES
        .iter()
        .position(|n| *n == s)
        .map(|i| i as u64 + 1)
        .or_else(|| s.parse::<u64>().ok().filter(|v| (1..=12).contains(v)))
}

/// A protocol's name as Tetragon writes it (`IPPROTO_TCP`), else its number.
pub fn protocol_name(n: u16) -> String {
    PROTOCOLS
        .iter()
        .find(|(_, v)| *v == u64::from(n))
        .map_or_else(|| n.to_string(), |(name, _)| (*name).to_string())
}

/// A family's name (`AF_INET`), else its number.
pub fn family_name(n: u16) -> String {
    FAMILIES
        .iter()
        .find(|(_, v)| *v == u64::from(n))
        .map_or_else(|| n.to_string(), |(name, _)| (*name).to_string())
}

/// A socket type's name (`SOCK_STREAM`), else its number.
pub fn type_name(n: u16) -> String {
    match n {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        5 => "SOCK_SEQPACKET".into(),
        _ => n.to_string(),
    }
}

/// A TCP state's name, empty for 0 (not a TCP socket, or unread).
pub fn state_name(n: u8) -> String {
    match n {
        0 => String::new(),
        n => STATES
            .get(usize::from(n) - 1)
            .map_or_else(|| n.to_string(), |s| (*s).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(port_range("443"), Some(443 << 16 | 443));
        assert_eq!(port_range("1024:65535"), Some(1024 << 16 | 65535));
        assert_eq!(port_range("10:1"), None);
        assert_eq!(port_range("65536"), None);
    }

    #[test]
    fn names_both_ways() {
        assert_eq!(protocol("IPPROTO_TCP"), Some(6));
        assert_eq!(protocol("17"), Some(17));
        assert_eq!(protocol_name(6), "IPPROTO_TCP");
        assert_eq!(family("AF_INET6"), Some(10));
        assert_eq!(family_name(2), "AF_INET");
        assert_eq!(state("TCP_SYN_SENT"), Some(2));
        assert_eq!(state_name(2), "TCP_SYN_SENT");
        assert_eq!(state_name(0), "");
        assert_eq!(state("TCP_NOPE"), None);
    }
}
