//! The decision for one opened object, with the kernel programs' semantics
//! (vardr-ebpf `shared.rs`: longest path match per hook, path vs identity
//! by specificity, deny > alert > allow > observe), evaluated in userspace
//! on the object the kernel is about to open.
use std::{collections::HashMap, sync::RwLock};

use vardr_common::{Action, Hook, InodeRule, PathRules, RuleRef, Verdict};

use super::marks::Walked;
use crate::{
    backend::PathMaps,
    compile::{Identity, RuleSet},
};

/// The rule set a fanotify group decides with: what the BPF maps hold.
#[derive(Debug, Default)]
pub struct Rules {
    paths: PathSource,
    inodes: HashMap<Identity, InodeRule>,
    /// Inodes found below governed directories when the marks were
    /// planned, with the rules their path had: they follow the inode
    /// (renames out, hard links), ranking after the compiled identities.
    /// Written by the thread that follows new directories.
    pub walked: RwLock<HashMap<Identity, Walked>>,
    /// Exempt pids and the start time (clock ticks) of the process that
    /// had the pid when the rules were put in force: a process that gets
    /// the pid later is not exempt (as in the programs' `EXEMPT_PIDS`).
    pub exempt_pids: HashMap<u32, u64>,
    pub has_exempt_binaries: bool,
}

/// Logs a failed path-map lookup, at most once a second (each open of a
/// governed object would log it).
fn unreadable_paths(path: &str, e: &std::io::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::error!(
            "looking up {path} in the path maps: {e}; governed objects are refused (rule path-rules-unreadable) while the maps cannot be read"
        );
    }
}

/// Where the path rules are looked up.
#[derive(Debug)]
enum PathSource {
    /// The compiled keys (exact paths end with NUL, prefixes with `/`),
    /// sorted: the rule set's own entries, not a copy. Used while the
    /// marks are planned, before the maps are written.
    Entries(std::sync::Arc<crate::compile::PathTable>),
    /// The maps in force, once written: the compiled entries can go.
    Maps(PathMaps),
}

impl Default for PathSource {
    fn default() -> Self {
        Self::Entries(Default::default())
    }
}

impl Rules {
    pub fn new(set: &RuleSet) -> Self {
        Self {
            paths: PathSource::Entries(set.paths.clone()),
            inodes: set.inodes.iter().copied().collect(),
            walked: RwLock::new(HashMap::new()),
            exempt_pids: set
                .exempt_pids
                .iter()
                .filter_map(|&p| crate::process::start_ticks(p).map(|t| (p, t)))
                .collect(),
            has_exempt_binaries: set.has_exempt_binaries,
        }
    }

    /// Looks paths up in `maps` (the same rules, written to the kernel)
    /// from now on, and lets go of the compiled entries.
    pub fn read_paths_from(&mut self, maps: PathMaps) {
        self.paths = PathSource::Maps(maps);
    }

    /// What an LPM lookup of `path` gives: the exact key, else the longest
    /// prefix key (prefix keys end at a `/`).
    pub fn by_path(&self, path: &str) -> PathRules {
        let paths = match &self.paths {
            PathSource::Entries(e) => e,
            PathSource::Maps(m) => {
                return m.lookup(path.as_bytes()).unwrap_or_else(|e| {
                    // Not seen in practice (the maps are ours and alive).
                    // Deciding as if no path rule applied would let a
                    // denied open through: the governed object is refused
                    // (with `--enforce`), whatever else applies to it.
                    unreadable_paths(path, &e);
                    PathRules {
                        slots: [RuleRef {
                            rule_id: vardr_common::RULE_PATHS_UNREADABLE,
                            action: Action::Deny as u32,
                        }; 3],
                        specificity: u32::MAX,
                        _pad: 0,
                    }
                });
            }
        };
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        let find = |key: &[u8]| paths.find(key);
        if let Some(r) = find(&key) {
            return r;
        }
        let bytes = path.as_bytes();
        for (i, _) in bytes.iter().enumerate().rev().filter(|(_, b)| **b == b'/') {
            if let Some(r) = find(&bytes[..=i]) {
                return r;
            }
        }
        PathRules::default()
    }

    /// The identity walk: `chain[0]` is the object, then each directory
    /// above it. The first entry with rules decides: the object's own rules
    /// at depth 0, a directory's subtree rules above (exact entries cover
    /// their inode only).
    pub fn by_identity(&self, chain: &[Identity]) -> PathRules {
        for (depth, id) in chain.iter().enumerate() {
            if let Some(r) = self.inodes.get(id).filter(|r| r.has_rules != 0) {
                if depth == 0 {
                    return r.own;
                }
                if r.exact == 0 {
                    return r.rules;
                }
            }
            let walked = self.walked.read().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = walked.get(id) {
                let r = if depth == 0 { w.own } else { w.below };
                if r.slots.iter().any(|s| s.action != Action::None as u32) {
                    return r;
                }
            }
        }
        PathRules::default()
    }

    /// Whether a process running the binary with this identity is exempt.
    pub fn exempt_binary(&self, id: &Identity) -> bool {
        self.has_exempt_binaries && self.inodes.get(id).is_some_and(|r| r.exempt != 0)
    }
}

fn rank(r: &RuleRef) -> u8 {
    crate::compile::rank(r)
}

/// The stronger of two matches: deny > alert > allow > observe > none.
pub fn stronger(a: RuleRef, a_hook: Hook, b: RuleRef, b_hook: Hook) -> (RuleRef, Hook) {
    if rank(&b) > rank(&a) {
        (b, b_hook)
    } else {
        (a, a_hook)
    }
}

/// The kernel's `pick`: the more specific source wins; on a tie, the
/// stronger action; a report-only rule never wins over a real one.
pub fn pick(by_path: &PathRules, by_identity: &PathRules, hook: Hook) -> RuleRef {
    let h = hook as usize;
    let (rp, ri) = (by_path.slots[h], by_identity.slots[h]);
    let (none, observe) = (Action::None as u32, Action::Observe as u32);
    if rp.action == none {
        ri
    } else if ri.action == none || (ri.action == observe && rp.action != observe) {
        rp
    } else if rp.action == observe && ri.action != observe {
        ri
    } else if by_path.specificity > by_identity.specificity {
        rp
    } else if by_identity.specificity > by_path.specificity {
        ri
    } else {
        stronger(rp, hook, ri, hook).0
    }
}

/// What the object is being opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// FAN_OPEN_PERM: file_open (and file_write with write intent).
    pub open: bool,
    /// The open may write (known from the syscall, or unknown: assumed).
    pub write: bool,
    /// FAN_OPEN_EXEC_PERM.
    pub exec: bool,
}

/// The rule that decides, with its hook; `None` when nothing matched.
pub fn rule_for(
    by_path: &PathRules,
    by_identity: &PathRules,
    a: Access,
) -> Option<(RuleRef, Hook)> {
    let mut best = (RuleRef::default(), Hook::FileOpen);
    if a.open {
        best = (pick(by_path, by_identity, Hook::FileOpen), Hook::FileOpen);
        if a.write {
            let w = pick(by_path, by_identity, Hook::FileWrite);
            best = stronger(best.0, best.1, w, Hook::FileWrite);
        }
    }
    if a.exec {
        let e = pick(by_path, by_identity, Hook::Exec);
        best = stronger(best.0, best.1, e, Hook::Exec);
    }
    (best.0.action != Action::None as u32).then_some(best)
}

/// The verdict to report and whether to deny, as the kernel's `verdict`.
pub fn verdict(rule: &RuleRef, enforce: bool) -> Option<(Verdict, bool)> {
    match rule.action {
        x if x == Action::Deny as u32 => Some(if enforce {
            (Verdict::Deny, true)
        } else {
            (Verdict::Audit, false)
        }),
        x if x == Action::Alert as u32 => Some((Verdict::Alert, false)),
        x if x == Action::Observe as u32 => Some((Verdict::Allow, false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, Limits};

    fn rules(yaml_rules: &str) -> Rules {
        let y = format!(
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n  rules:\n{yaml_rules}"
        );
        let mut p = crate::policy::parse(&y, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        Rules::new(&compile(&mut p, 1, &Limits::default()).unwrap())
    }

    const READ: Access = Access {
        open: true,
        write: false,
        exec: false,
    };

    #[test]
    fn longest_path_match_and_allow_carve_out() {
        let r = rules(concat!(
            "    - { name: d, hook: file_open, action: deny, match: { prefixes: [/nonexistent-vardr/d] } }\n",
            "    - { name: a, hook: file_open, action: allow, match: { paths: [/nonexistent-vardr/d/ok] } }\n",
            "    - { name: w, hook: file_write, action: deny, match: { paths: [/nonexistent-vardr/w] } }\n",
        ));
        let none = PathRules::default();
        let decide =
            |p: &str, a| rule_for(&r.by_path(p), &none, a).map(|(x, h)| (x.rule_id, x.action, h));
        let deny = Action::Deny as u32;
        assert_eq!(
            decide("/nonexistent-vardr/d/x", READ),
            Some((1, deny, Hook::FileOpen))
        );
        assert_eq!(
            decide("/nonexistent-vardr/d", READ),
            Some((1, deny, Hook::FileOpen))
        );
        assert_eq!(
            decide("/nonexistent-vardr/d/ok", READ),
            Some((2, Action::Allow as u32, Hook::FileOpen))
        );
        assert_eq!(decide("/nonexistent-vardr/dd", READ), None);
        assert_eq!(decide("/nonexistent-vardr/w", READ), None);
        let write = Access {
            write: true,
            ..READ
        };
        assert_eq!(
            decide("/nonexistent-vardr/w", write),
            Some((3, deny, Hook::FileWrite))
        );
    }

    #[test]
    fn identity_of_a_directory_covers_files_below_it_by_any_path() {
        let dir = std::env::temp_dir().join(format!("vardr-fan-decide-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = rules(&format!(
            "    - {{ name: d, hook: file_open, action: deny, match: {{ prefixes: [{}] }} }}\n",
            dir.display()
        ));
        let ids = Identity::of(dir.to_str().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let file = Identity { dev: 0, ino: 1 };
        // A file renamed out of the directory keeps no path match, but a
        // directory identity above it decides (here: the chain says so).
        let got = rule_for(&PathRules::default(), &r.by_identity(&[file, ids[0]]), READ);
        assert_eq!(got.map(|(x, _)| x.rule_id), Some(1));
        // The directory itself: its own rules (YAML prefixes cover it).
        let own = rule_for(&PathRules::default(), &r.by_identity(&[ids[0]]), READ);
        assert_eq!(own.map(|(x, _)| x.rule_id), Some(1));
    }

    /// A path map that cannot be read refuses the governed object rather
    /// than deciding as if no path rule applied (fail closed).
    #[test]
    fn unreadable_path_maps_fail_closed() {
        let mut r = rules(
            "    - { name: a, hook: file_open, action: allow, match: { paths: [/nonexistent-vardr/ok] } }\n",
        );
        // Not a map: every lookup fails.
        let not_a_map: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        r.read_paths_from(PathMaps::new(1, Some(not_a_map), None));
        let got = r.by_path("/nonexistent-vardr/ok");
        let picked =
            rule_for(&got, &PathRules::default(), READ).map(|(x, h)| (x.rule_id, x.action, h));
        assert_eq!(
            picked,
            Some((
                vardr_common::RULE_PATHS_UNREADABLE,
                Action::Deny as u32,
                Hook::FileOpen
            ))
        );
        assert_eq!(
            verdict(
                &RuleRef {
                    rule_id: vardr_common::RULE_PATHS_UNREADABLE,
                    action: Action::Deny as u32
                },
                true
            ),
            Some((Verdict::Deny, true))
        );
    }

    #[test]
    fn audit_without_enforce_and_observe_reports_allow() {
        let deny = RuleRef {
            rule_id: 1,
            action: Action::Deny as u32,
        };
        assert_eq!(verdict(&deny, true), Some((Verdict::Deny, true)));
        assert_eq!(verdict(&deny, false), Some((Verdict::Audit, false)));
        let obs = RuleRef {
            rule_id: 2,
            action: Action::Observe as u32,
        };
        assert_eq!(verdict(&obs, true), Some((Verdict::Allow, false)));
        assert_eq!(verdict(&RuleRef::default(), true), None);
    }
}
