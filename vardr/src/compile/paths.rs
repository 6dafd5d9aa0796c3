//! Path entries for the LPM trie, with inherited rules folded in.
//!
//! An LPM lookup returns only the single longest matching key, so each key
//! must carry, per hook, the rule of its own longest matching ancestor when
//! it has none of its own: with `deny /etc/` (file_open) and `deny writes
//! /etc/hosts` (file_write), the key `/etc/hosts` must still deny opens.
use vardr_common::{Hook, PathRules, RuleRef};

use super::rank;

/// A path key (without the generation byte) and its folded rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEntry<'a> {
    /// Path bytes; exact paths end with their NUL, prefixes with `/`.
    pub key: &'a [u8],
    pub rules: PathRules,
}

impl<'a> PathEntry<'a> {
    /// The file or directory this key names: `/a/b` for `/a/b\0` and `/a/b/`.
    pub fn fs_path_str(&self) -> Option<&'a str> {
        let k = self.key.strip_suffix(&[0]).unwrap_or(self.key);
        let s = std::str::from_utf8(k).ok()?;
        Some(s.strip_suffix('/').filter(|s| !s.is_empty()).unwrap_or(s))
    }

    /// Significant bits of the key.
    pub fn prefix_bits(&self) -> u32 {
        (self.key.len() * 8) as u32
    }

    /// An exact key (ends with its NUL), not a prefix.
    pub fn is_exact(&self) -> bool {
        self.key.last() == Some(&0)
    }
}

/// Key of an exact path: the NUL keeps `/etc/shadow` from matching `/etc/shadow2`.
pub fn exact_key(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 1);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k
}

/// Where an entry's key lies in [`PathTable::bufs`].
#[derive(Clone, Copy, Debug)]
struct Slot {
    start: u32,
    /// Keys are at most a path (4 KiB) and a NUL long.
    len: u16,
    buf: u16,
    /// [`PathRules::slots`]: its specificity is the key's length (32 bytes
    /// a slot instead of 40).
    rules: [RuleRef; 3],
}

/// Path entries sorted by key, their keys end to end in a few buffers (the
/// policy's own lists, adopted, and one for the other keys): 200 000 keys
/// as vectors of their own cost a heap block and a 24-byte handle each
/// (twice the bytes of the keys).
#[derive(Clone, Default)]
pub struct PathTable {
    bufs: Vec<Vec<u8>>,
    slots: Vec<Slot>,
}

impl PathTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn key<'a>(bufs: &'a [Vec<u8>], s: &Slot) -> &'a [u8] {
        let start = s.start as usize;
        &bufs[usize::from(s.buf)][start..start + usize::from(s.len)]
    }

    fn entry(&self, s: &Slot) -> PathEntry<'_> {
        PathEntry {
            key: Self::key(&self.bufs, s),
            rules: Self::rules(s),
        }
    }

    fn rules(s: &Slot) -> PathRules {
        PathRules {
            slots: s.rules,
            specificity: u32::from(s.len),
            _pad: 0,
        }
    }

    pub fn get(&self, i: usize) -> Option<PathEntry<'_>> {
        self.slots.get(i).map(|s| self.entry(s))
    }

    pub fn iter(&self) -> impl Iterator<Item = PathEntry<'_>> + Clone {
        self.slots.iter().map(|s| self.entry(s))
    }

    /// The rules of exactly `key`, if it is an entry.
    pub fn find(&self, key: &[u8]) -> Option<PathRules> {
        self.slots
            .binary_search_by(|s| Self::key(&self.bufs, s).cmp(key))
            .ok()
            .map(|i| Self::rules(&self.slots[i]))
    }
}

impl std::fmt::Debug for PathTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Report-only (observe) rules rank lowest and never replace a rule
/// inherited from a shorter key.
pub struct Builder {
    /// Every key as added, each with its one rule, sorted and merged in
    /// place by [`Builder::finish`]: a hash map of 200 000 byte-string keys
    /// took twice the memory at its peak (growth doubles the table), and a
    /// list of adds beside the entries made from it took 8 MiB more.
    table: PathTable,
}

impl Default for Builder {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl Builder {
    /// Room for `adds` keys, `bytes` bytes of them not in adopted lists.
    pub fn with_capacity(adds: usize, bytes: usize) -> Self {
        Self {
            table: PathTable {
                bufs: vec![Vec::with_capacity(bytes)],
                slots: Vec::with_capacity(adds),
            },
        }
    }

    /// Adds the exact keys of every path of `list`, whose buffer becomes
    /// one of the table's (no copy of 100 000 paths).
    pub fn add_list(&mut self, list: crate::policy::PathList, hook: Hook, r: RuleRef) {
        let buf = self.table.bufs.len();
        let (bytes, ends) = list.into_parts();
        let (Ok(buf), Some(&end)) = (u16::try_from(buf), ends.last()) else {
            // No paths; or past 65 535 lists (never: one per rule and kind),
            // then copied.
            for i in 0..ends.len() {
                let start = if i == 0 { 0 } else { ends[i - 1] as usize };
                self.add(&bytes[start..ends[i] as usize], hook, r);
            }
            return;
        };
        debug_assert_eq!(end as usize, bytes.len());
        self.table.bufs.push(bytes);
        let mut start = 0u32;
        for e in ends {
            self.push_slot(buf, start, e - start, hook, r);
            start = e;
        }
    }

    /// Adds a rule; on the same key and hook the stronger action wins (of
    /// equal ones the rule listed first: the lower id).
    pub fn add(&mut self, key: &[u8], hook: Hook, r: RuleRef) {
        self.add_parts(key, None, hook, r);
    }

    /// Adds the exact key of `path` (its bytes and a NUL: `/etc/shadow`
    /// must not match `/etc/shadow2`).
    pub fn add_exact(&mut self, path: &str, hook: Hook, r: RuleRef) {
        self.add_parts(path.as_bytes(), Some(0), hook, r);
    }

    fn add_parts(&mut self, key: &[u8], last: Option<u8>, hook: Hook, r: RuleRef) {
        let own = &mut self.table.bufs[0];
        let start = own.len();
        own.extend_from_slice(key);
        own.extend(last);
        // A table past 4 GiB is cut short by the rule limits long before.
        let len = (own.len() - start) as u32;
        self.push_slot(0, start as u32, len, hook, r);
    }

    fn push_slot(&mut self, buf: u16, start: u32, len: u32, hook: Hook, r: RuleRef) {
        let mut rules = [RuleRef::default(); 3];
        keep_stronger(&mut rules[hook as usize], r);
        // Validated paths are far shorter than 64 KiB.
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        self.table.slots.push(Slot {
            start,
            len,
            buf,
            rules,
        });
    }

    /// Keys in sorted order put every ancestor before its descendants, so a
    /// stack of open ancestors gives each key its inherited rules in one pass.
    pub fn finish(self) -> PathTable {
        let PathTable { bufs, mut slots } = self.table;
        let key = |s: &Slot| PathTable::key(&bufs, s);
        // Adds come in rule order, so among a key's adds the first added
        // has the lowest rule id (each add sets one slot). An unstable sort
        // needs no buffer (a stable one took half the entries' size).
        let id = |s: &Slot| s.rules.iter().map(|r| r.rule_id).max();
        slots.sort_unstable_by(|a, b| key(a).cmp(key(b)).then_with(|| id(a).cmp(&id(b))));
        slots.dedup_by(|later, first| {
            if key(later) != key(first) {
                return false;
            }
            for (slot, r) in first.rules.iter_mut().zip(later.rules) {
                keep_stronger(slot, r);
            }
            true
        });
        if slots.len() < slots.capacity() / 4 * 3 {
            slots.shrink_to_fit();
        }
        let mut stack: Vec<usize> = Vec::new();
        for i in 0..slots.len() {
            while let Some(&top) = stack.last() {
                if key(&slots[i]).starts_with(key(&slots[top])) {
                    break;
                }
                stack.pop();
            }
            let inherited = stack.last().map(|&parent| slots[parent].rules);
            let is_prefix = key(&slots[i]).last() != Some(&0);
            if let Some(inherited) = inherited {
                for (slot, inherited) in slots[i].rules.iter_mut().zip(inherited) {
                    // An observe rule must not shadow a real rule above it.
                    if rank(slot) == 0 || (rank(slot) == 1 && rank(&inherited) > 1) {
                        *slot = inherited;
                    }
                }
            }
            // Exact keys (ending in NUL) are never a prefix of another key.
            if is_prefix {
                stack.push(i);
            }
        }
        PathTable { bufs, slots }
    }
}

fn keep_stronger(slot: &mut RuleRef, r: RuleRef) {
    if rank(&r) > rank(slot) {
        *slot = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vardr_common::Action;

    fn r(id: u32, a: Action) -> RuleRef {
        RuleRef {
            rule_id: id,
            action: a as u32,
        }
    }

    /// What an LPM lookup of `path` (an exact lookup key) would return.
    fn lookup(entries: &PathTable, path: &str) -> Option<PathRules> {
        let k = exact_key(path);
        entries
            .iter()
            .filter(|e| k.starts_with(e.key))
            .max_by_key(|e| e.key.len())
            .map(|e| e.rules)
    }

    #[test]
    fn allow_carves_out_of_deny_prefix() {
        let mut b = Builder::default();
        b.add(b"/etc/", Hook::FileOpen, r(1, Action::Deny));
        b.add_exact("/etc/hosts", Hook::FileOpen, r(2, Action::Allow));
        let e = b.finish();
        assert_eq!(
            lookup(&e, "/etc/passwd").unwrap().slots[0],
            r(1, Action::Deny)
        );
        assert_eq!(
            lookup(&e, "/etc/hosts").unwrap().slots[0],
            r(2, Action::Allow)
        );
        assert_eq!(
            lookup(&e, "/etc/hosts.allow").unwrap().slots[0],
            r(1, Action::Deny)
        );
        assert!(lookup(&e, "/etcetera").is_none());
    }

    #[test]
    fn other_hooks_inherit_through_a_longer_key() {
        let mut b = Builder::default();
        b.add(b"/etc/", Hook::FileOpen, r(1, Action::Deny));
        b.add_exact("/etc/hosts", Hook::FileWrite, r(2, Action::Deny));
        b.add(b"/etc/ssh/", Hook::Exec, r(3, Action::Alert));
        let e = b.finish();
        let hosts = lookup(&e, "/etc/hosts").unwrap();
        assert_eq!(hosts.slots[Hook::FileOpen as usize], r(1, Action::Deny));
        assert_eq!(hosts.slots[Hook::FileWrite as usize], r(2, Action::Deny));
        let key = lookup(&e, "/etc/ssh/key").unwrap();
        assert_eq!(key.slots[Hook::FileOpen as usize], r(1, Action::Deny));
        assert_eq!(key.slots[Hook::Exec as usize], r(3, Action::Alert));
    }

    #[test]
    fn nested_prefixes_and_siblings() {
        let mut b = Builder::default();
        b.add(b"/a/", Hook::FileOpen, r(1, Action::Deny));
        b.add(b"/a/b/", Hook::FileOpen, r(2, Action::Allow));
        b.add(b"/a/b/c/", Hook::FileWrite, r(3, Action::Deny));
        b.add(b"/a/c/", Hook::FileWrite, r(4, Action::Deny));
        let e = b.finish();
        let c = lookup(&e, "/a/b/c/f").unwrap();
        assert_eq!(c.slots[0], r(2, Action::Allow));
        assert_eq!(c.slots[1], r(3, Action::Deny));
        // /a/c/ must not inherit from its sibling /a/b/c/.
        let sib = lookup(&e, "/a/c/f").unwrap();
        assert_eq!(sib.slots[0], r(1, Action::Deny));
        assert_eq!(sib.slots[1], r(4, Action::Deny));
    }

    #[test]
    fn observe_rules_never_shadow_real_rules() {
        // Rule 9 is report-only (a Cedar observation).
        let mut b = Builder::default();
        b.add(b"/etc/", Hook::FileOpen, r(1, Action::Deny));
        b.add(b"/etc/ssh/", Hook::FileOpen, r(9, Action::Observe));
        b.add(b"/var/", Hook::FileOpen, r(9, Action::Observe));
        b.add_exact("/var/log/x", Hook::FileOpen, r(2, Action::Allow));
        b.add_exact("/srv/x", Hook::FileOpen, r(3, Action::Allow));
        b.add_exact("/srv/x", Hook::FileOpen, r(9, Action::Observe));
        let e = b.finish();
        assert_eq!(
            lookup(&e, "/etc/ssh/k").unwrap().slots[0],
            r(1, Action::Deny)
        );
        assert_eq!(
            lookup(&e, "/var/lib/y").unwrap().slots[0],
            r(9, Action::Observe)
        );
        assert_eq!(
            lookup(&e, "/var/log/x").unwrap().slots[0],
            r(2, Action::Allow)
        );
        assert_eq!(lookup(&e, "/srv/x").unwrap().slots[0], r(3, Action::Allow));
    }

    #[test]
    fn stronger_action_wins_on_the_same_key() {
        let mut b = Builder::default();
        b.add_exact("/x", Hook::FileOpen, r(1, Action::Allow));
        b.add_exact("/x", Hook::FileOpen, r(2, Action::Deny));
        b.add_exact("/x", Hook::FileOpen, r(3, Action::Alert));
        assert_eq!(
            b.finish().get(0).unwrap().rules.slots[0],
            r(2, Action::Deny)
        );
    }

    #[test]
    fn of_equal_actions_on_a_key_the_rule_listed_first_wins() {
        let mut b = Builder::default();
        b.add_exact("/x", Hook::FileOpen, r(5, Action::Deny));
        b.add(b"/y/", Hook::FileOpen, r(1, Action::Alert));
        b.add_exact("/x", Hook::FileOpen, r(2, Action::Deny));
        b.add_exact("/x", Hook::FileOpen, r(3, Action::Allow));
        let e = b.finish();
        assert_eq!(e.len(), 2, "one entry per key");
        assert_eq!(lookup(&e, "/x").unwrap().slots[0], r(2, Action::Deny));
    }

    /// A policy list's buffer becomes the table's: its keys match as
    /// exact keys added one by one would, merged with those of the
    /// same path.
    #[test]
    fn adopted_lists_are_exact_keys() {
        let list: crate::policy::PathList = ["/etc/hosts", "/srv/a"].into_iter().collect();
        let mut b = Builder::default();
        b.add(b"/etc/", Hook::FileOpen, r(1, Action::Deny));
        b.add_list(list, Hook::FileWrite, r(2, Action::Alert));
        b.add_exact("/srv/a", Hook::FileWrite, r(3, Action::Deny));
        b.add_list(Default::default(), Hook::Exec, r(4, Action::Deny));
        let e = b.finish();
        assert_eq!(e.len(), 3, "{e:?}");
        let hosts = lookup(&e, "/etc/hosts").unwrap();
        assert_eq!(hosts.slots[Hook::FileOpen as usize], r(1, Action::Deny));
        assert_eq!(hosts.slots[Hook::FileWrite as usize], r(2, Action::Alert));
        assert_eq!(e.find(b"/etc/hosts\0").map(|r| r.specificity), Some(11));
        assert_eq!(lookup(&e, "/srv/a").unwrap().slots[1], r(3, Action::Deny));
        assert!(lookup(&e, "/srv/ab").is_none());
    }
}
