//! Network entries: one LPM key per (protocol, port, CIDR).
//!
//! The kernel looks up (protocol, port), (any protocol, port), (protocol,
//! any port), then (any, any), and the first hit wins: a rule naming a port
//! is more specific than one that does not. Within one bucket the
//! longest prefix wins, so an allow carves exceptions out of a deny CIDR.
//! IPv4-mapped IPv6 destinations are looked up in the IPv4 table.
use std::collections::BTreeMap;

use ipnet::IpNet;
use vardr_common::RuleRef;

use super::rank;
use crate::policy::{Protocol, Rule};

/// Protocol byte meaning "any".
pub const NET_ANY_PROTOCOL: u8 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetEntry<const N: usize> {
    pub protocol: u8,
    /// 0: any port.
    pub port: u16,
    pub addr: [u8; N],
    pub prefix_len: u8,
    pub rule: RuleRef,
}

type Key<const N: usize> = (u8, u16, [u8; N], u8);

#[derive(Default)]
pub struct Builder {
    v4: BTreeMap<Key<4>, RuleRef>,
    v6: BTreeMap<Key<16>, RuleRef>,
}

fn put<const N: usize>(m: &mut BTreeMap<Key<N>, RuleRef>, k: Key<N>, r: RuleRef) {
    let e = m.entry(k).or_default();
    if rank(&r) > rank(e) {
        *e = r;
    }
}

impl Builder {
    pub fn add(&mut self, rule: &Rule, r: RuleRef) {
        let proto = match rule.protocol {
            Protocol::Any => NET_ANY_PROTOCOL,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        };
        let ports: Vec<u16> = if rule.ports.is_empty() {
            vec![0]
        } else {
            rule.ports.clone()
        };
        for net in &rule.cidrs {
            for &port in &ports {
                match net {
                    IpNet::V4(n) => put(
                        &mut self.v4,
                        (proto, port, n.addr().octets(), n.prefix_len()),
                        r,
                    ),
                    IpNet::V6(n) => put(
                        &mut self.v6,
                        (proto, port, n.addr().octets(), n.prefix_len()),
                        r,
                    ),
                }
            }
        }
    }

    pub fn finish(self) -> (Vec<NetEntry<4>>, Vec<NetEntry<16>>) {
        fn out<const N: usize>(m: BTreeMap<Key<N>, RuleRef>) -> Vec<NetEntry<N>> {
            m.into_iter()
                .map(|((protocol, port, addr, prefix_len), rule)| NetEntry {
                    protocol,
                    port,
                    addr,
                    prefix_len,
                    rule,
                })
                .collect()
        }
        (out(self.v4), out(self.v6))
    }
}
