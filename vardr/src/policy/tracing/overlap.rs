//! Where a deny and an alert of one policy overlap, Tetragon and vardr may
//! decide differently: Tetragon applies the first matching selector of a
//! hook (and runs every hook, so across hooks a deny wins), vardr the most
//! specific rule (a tie goes to deny). A policy whose outcome would differ
//! is rejected rather than run with other semantics. The check compares
//! values pairwise, so a rule naming nested values of its own may be
//! flagged where the finer value would in fact agree: it errs on the side
//! of rejecting.
use std::cmp::Ordering;

use ipnet::IpNet;

use super::translate::{at, Translated};
use crate::policy::{validate::Diags, Action, Hook, Protocol, Rule};

pub(super) fn check(d: &mut Diags, rules: &[Translated]) {
    for (i, b) in rules.iter().enumerate() {
        for a in &rules[..i] {
            if a.rule.hook == b.rule.hook && a.rule.action != b.rule.action {
                if let Some(m) = conflict(a, b) {
                    at(d, b.pos, m);
                }
            }
        }
    }
}

/// `a` comes before `b` in the file.
fn conflict(a: &Translated, b: &Translated) -> Option<String> {
    let same_hook = a.hook_spec == b.hook_spec;
    let tetragon = if same_hook {
        a.rule.action
    } else {
        Action::Deny
    };
    let pairs = if a.rule.hook == Hook::Connect {
        net_pairs(&a.rule, &b.rule)
    } else {
        path_pairs(&a.rule, &b.rule)
    };
    for (ord, what) in pairs {
        let vardr = match ord {
            Ordering::Greater => a.rule.action,
            Ordering::Less => b.rule.action,
            Ordering::Equal => Action::Deny,
        };
        if vardr != tetragon {
            let how = if same_hook {
                "applies the first matching selector"
            } else {
                "runs both hooks and the deny wins"
            };
            return Some(format!(
                "selector overlaps lsmhooks[{}].selectors[{}] on {what}: Tetragon {how} ({}), vardr the most specific match ({}); not yet supported by vardr: make the matches disjoint",
                a.hook_spec,
                a.selector,
                name(tetragon),
                name(vardr)
            ));
        }
    }
    None
}

fn name(a: Action) -> &'static str {
    match a {
        Action::Deny => "deny",
        Action::Alert => "alert",
        Action::Allow => "allow",
        Action::Observe => "observe",
    }
}

/// A path key: the value and whether it is exact (a prefix ends with '/').
type PathKey<'a> = (&'a str, bool);

fn path_keys(r: &Rule) -> impl Iterator<Item = PathKey<'_>> {
    let exact = r.paths.iter().chain(&r.binaries).map(|p| (p, true));
    exact.chain(r.prefixes.iter().map(|p| (p.as_str(), false)))
}

/// Overlapping key pairs: how `a`'s key compares to `b`'s in specificity
/// (an exact key is one NUL longer than its path, as in the kernel's trie),
/// and the more specific value.
fn path_pairs(a: &Rule, b: &Rule) -> Vec<(Ordering, String)> {
    let mut out = Vec::new();
    for ka in path_keys(a) {
        for kb in path_keys(b) {
            let overlap = match (ka.1, kb.1) {
                (true, true) => ka.0 == kb.0,
                (true, false) => ka.0.starts_with(kb.0),
                (false, true) => kb.0.starts_with(ka.0),
                (false, false) => ka.0.starts_with(kb.0) || kb.0.starts_with(ka.0),
            };
            if overlap {
                let (sa, sb) = (ka.0.len() + ka.1 as usize, kb.0.len() + kb.1 as usize);
                let finer = if sa >= sb { ka.0 } else { kb.0 };
                out.push((sa.cmp(&sb), format!("{finer:?}")));
            }
        }
    }
    out
}

/// The same for connect rules: a rule naming ports beats one that does
/// not, then a named protocol beats any, then the longer prefix.
fn net_pairs(a: &Rule, b: &Rule) -> Vec<(Ordering, String)> {
    let ports =
        a.ports.is_empty() || b.ports.is_empty() || a.ports.iter().any(|p| b.ports.contains(p));
    let proto =
        a.protocol == Protocol::Any || b.protocol == Protocol::Any || a.protocol == b.protocol;
    if !ports || !proto {
        return Vec::new();
    }
    let rank = |r: &Rule, n: &IpNet| {
        (
            !r.ports.is_empty(),
            r.protocol != Protocol::Any,
            n.prefix_len(),
        )
    };
    let mut out = Vec::new();
    for na in &a.cidrs {
        for nb in &b.cidrs {
            if na.contains(nb) || nb.contains(na) {
                let finer = if na.prefix_len() >= nb.prefix_len() {
                    na
                } else {
                    nb
                };
                out.push((rank(a, na).cmp(&rank(b, nb)), finer.to_string()));
            }
        }
    }
    out
}
