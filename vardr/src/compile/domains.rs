//! Domain entries: one LPM key per server-name pattern. The kernel looks a
//! ClientHello's name up reversed (`moc.elpmaxe.www\0`), so the longest
//! match is the most specific pattern: `www.example.com` before
//! `*.example.com`, and an allow carves exceptions out of a wider deny.
use std::collections::BTreeMap;

use vardr_common::RuleRef;

use super::rank;
use crate::policy::Rule;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEntry {
    /// The key after the generation byte.
    pub key: Vec<u8>,
    /// Prefix length of `key`, in bits.
    pub bits: u32,
    pub rule: RuleRef,
}

#[derive(Default)]
pub struct Builder(BTreeMap<(Vec<u8>, u32), RuleRef>);

impl Builder {
    /// The rule's patterns; where two rules name the same one, the
    /// stronger action wins.
    pub fn add(&mut self, rule: &Rule, r: RuleRef) {
        for p in &rule.domains {
            let e = self.0.entry(p.kernel_key()).or_default();
            if rank(&r) > rank(e) {
                *e = r;
            }
        }
    }

    pub fn finish(self) -> Vec<DomainEntry> {
        self.0
            .into_iter()
            .map(|((key, bits), rule)| DomainEntry { key, bits, rule })
            .collect()
    }
}
