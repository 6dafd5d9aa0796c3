//! Network entries: one LPM key per (protocol, port, CIDR).
//!
//! The kernel looks up (protocol, port), (any protocol, port), (protocol,
//! any port), then (any, any), and the first hit wins: a rule naming a port
//! is more specific than one that does not. Within one bucket the
//! longest prefix wins, so an allow carves exceptions out of a deny CIDR.
//! IPv4-mapped IPv6 destinations are looked up in the IPv4 table.
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

/// Every (key, rule) as added, sorted and merged once in
/// [`Builder::finish`] (a tree map of 100 000 networks took twice the
/// memory of the list).
#[derive(Default)]
pub struct Builder {
    v4: Vec<(Key<4>, RuleRef)>,
    v6: Vec<(Key<16>, RuleRef)>,
}

/// One entry per key: the stronger action wins, of equal ones the rule
/// listed first (the lower id).
fn merge<const N: usize>(adds: &mut Vec<(Key<N>, RuleRef)>) {
    adds.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.rule_id.cmp(&b.1.rule_id)));
    adds.dedup_by(|later, first| {
        if later.0 != first.0 {
            return false;
        }
        if rank(&later.1) > rank(&first.1) {
            first.1 = later.1;
        }
        true
    });
}

fn is_observe(r: &RuleRef) -> bool {
    r.action == vardr_common::Action::Observe as u32
}

/// Whether network `outer` (address, prefix length) contains `inner`.
fn covers<const N: usize>(outer: (&[u8; N], u8), inner: (&[u8; N], u8)) -> bool {
    if outer.1 > inner.1 {
        return false;
    }
    let bits = outer.1 as usize;
    let (full, rest) = (bits / 8, bits % 8);
    if outer.0[..full] != inner.0[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        outer.0[full] & mask == inner.0[full] & mask
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
                    IpNet::V4(n) => self
                        .v4
                        .push(((proto, port, n.addr().octets(), n.prefix_len()), r)),
                    IpNet::V6(n) => self
                        .v6
                        .push(((proto, port, n.addr().octets(), n.prefix_len()), r)),
                }
            }
        }
    }

    /// An observe entry inside a real rule's network of the same bucket
    /// would win the longest-prefix match and hide that rule: it is dropped
    /// (the real rule reports those connects itself, or allows them).
    pub fn finish(self) -> (Vec<NetEntry<4>>, Vec<NetEntry<16>>) {
        fn out<const N: usize>(mut m: Vec<(Key<N>, RuleRef)>) -> Vec<NetEntry<N>> {
            merge(&mut m);
            // Only observe entries can be shadowed: most sets have none,
            // and need no list of the real ones.
            if m.iter().any(|(_, r)| is_observe(r)) {
                let real: Vec<Key<N>> = m
                    .iter()
                    .filter(|(_, r)| !is_observe(r))
                    .map(|(k, _)| *k)
                    .collect();
                m.retain(|(k, r)| {
                    !(is_observe(r)
                        && real
                            .iter()
                            .any(|o| (o.0, o.1) == (k.0, k.1) && covers((&o.2, o.3), (&k.2, k.3))))
                });
            }
            // Mapped in place (same size and alignment): no second list.
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

#[cfg(test)]
mod tests {
    use vardr_common::Action;

    use super::*;
    use crate::policy::{self, Hook, Severity};

    fn rule(action: policy::Action, cidrs: &[&str], ports: &[u16]) -> Rule {
        Rule {
            name: "r".into(),
            hook: Hook::Connect,
            action,
            severity: Severity::Medium,
            paths: Default::default(),
            prefixes: vec![],
            binaries: Default::default(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ports: ports.to_vec(),
            protocol: Protocol::Any,
            domains: Vec::new(),
            prefix_covers_dir: true,
            message: None,
            tags: Vec::new(),
            line: 0,
        }
    }

    fn r(id: u32, a: Action) -> RuleRef {
        RuleRef {
            rule_id: id,
            action: a as u32,
        }
    }

    #[test]
    fn observe_entries_inside_real_networks_are_dropped() {
        let mut b = Builder::default();
        b.add(
            &rule(policy::Action::Deny, &["10.0.0.0/8"], &[]),
            r(1, Action::Deny),
        );
        b.add(
            &rule(
                policy::Action::Observe,
                &["10.1.0.0/16", "0.0.0.0/0", "::/0"],
                &[],
            ),
            r(9, Action::Observe),
        );
        // Another bucket (a port) does not shadow the any-port bucket.
        b.add(
            &rule(policy::Action::Allow, &["192.168.0.0/16"], &[22]),
            r(2, Action::Allow),
        );
        b.add(
            &rule(policy::Action::Observe, &["192.168.1.0/24"], &[]),
            r(9, Action::Observe),
        );
        let (v4, v6) = b.finish();
        let nets: Vec<(u16, [u8; 4], u8, u32)> = v4
            .iter()
            .map(|e| (e.port, e.addr, e.prefix_len, e.rule.rule_id))
            .collect();
        assert_eq!(
            nets,
            [
                (0, [0, 0, 0, 0], 0, 9),
                (0, [10, 0, 0, 0], 8, 1),
                (0, [192, 168, 1, 0], 24, 9),
                (22, [192, 168, 0, 0], 16, 2),
            ]
        );
        assert_eq!(v6.len(), 1);
    }

    #[test]
    fn covers_checks_partial_bytes() {
        assert!(covers((&[10, 0, 0, 0], 8), (&[10, 1, 0, 0], 16)));
        assert!(covers((&[10, 128, 0, 0], 9), (&[10, 200, 0, 0], 16)));
        assert!(!covers((&[10, 128, 0, 0], 9), (&[10, 100, 0, 0], 16)));
        assert!(!covers((&[10, 1, 0, 0], 16), (&[10, 0, 0, 0], 8)));
    }

    #[test]
    fn one_entry_per_key_the_stronger_or_first_listed_rule() {
        let mut b = Builder::default();
        b.add(
            &rule(policy::Action::Alert, &["10.0.0.1/32"], &[]),
            r(4, Action::Alert),
        );
        b.add(
            &rule(policy::Action::Allow, &["10.0.0.1/32"], &[]),
            r(1, Action::Allow),
        );
        b.add(
            &rule(policy::Action::Alert, &["10.0.0.1/32"], &[]),
            r(3, Action::Alert),
        );
        b.add(
            &rule(policy::Action::Deny, &["10.0.0.2/32"], &[]),
            r(5, Action::Deny),
        );
        let (v4, _) = b.finish();
        let nets: Vec<([u8; 4], u32)> = v4.iter().map(|e| (e.addr, e.rule.rule_id)).collect();
        assert_eq!(nets, [([10, 0, 0, 1], 3), ([10, 0, 0, 2], 5)]);
    }
}
