//! Reads a generation's path rules back from its maps, as the programs
//! look them up: the exact key in the hash, else the longest prefix in the
//! LPM trie. The fanotify deny path decides with these instead of a copy
//! of every compiled entry (at 100 000 paths the copy was ~17 MiB of heap).
use std::os::fd::{AsFd, OwnedFd};

use aya::maps::lpm_trie::Key;
use vardr_common::{PathRules, PATH_KEY_LEN};

use super::{generation::path_data, sys};

/// Descriptors of one generation's path maps. They keep the maps alive
/// after the generation leaves the rule maps (a reload), so a decision
/// made with them never sees a half-emptied set.
#[derive(Debug)]
pub struct PathMaps {
    generation: u32,
    /// `None`: the generation has no such entries.
    exact: Option<OwnedFd>,
    prefixes: Option<OwnedFd>,
}

impl PathMaps {
    pub(crate) fn new(generation: u32, exact: Option<OwnedFd>, prefixes: Option<OwnedFd>) -> Self {
        Self {
            generation,
            exact,
            prefixes,
        }
    }

    /// The rules of `path` (no trailing NUL; a trailing `/` asks for what
    /// is below a directory).
    pub fn lookup(&self, path: &[u8]) -> std::io::Result<PathRules> {
        // An exact key is the path and its NUL; a longer path has none.
        if let Some(fd) = self
            .exact
            .as_ref()
            .filter(|_| path.len() < PATH_KEY_LEN - 1)
        {
            let mut key = [0u8; PATH_KEY_LEN];
            key[0] = self.generation as u8;
            key[1..=path.len()].copy_from_slice(path);
            if let Some(r) = sys::lookup::<_, PathRules>(fd.as_fd(), &key)? {
                return Ok(r);
            }
        }
        let Some(fd) = &self.prefixes else {
            return Ok(PathRules::default());
        };
        // Prefix keys are at most PATH_KEY_LEN - 1 bytes: a longer path
        // cut there still has every key that can match it as a prefix.
        let n = path.len().min(PATH_KEY_LEN - 1);
        let key = Key::new(8 + 8 * n as u32, path_data(self.generation, &path[..n]));
        Ok(sys::lookup::<_, PathRules>(fd.as_fd(), &key)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::{compile, Limits};

    fn policy(rules: &str) -> crate::policy::Policy {
        crate::policy::parse(
            &format!("apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {{name: t}}\nspec:\n  rules:\n{rules}"),
            std::path::Path::new("t.yaml"),
        )
        .unwrap()
    }

    /// The maps answer as the sorted entries did (the decisions' unit
    /// tests in `fanotify::decide` run on those).
    #[test]
    fn maps_answer_as_the_entries() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED maps_answer_as_the_entries: needs root to create BPF maps");
            return;
        }
        // The longest path a rule can name (254 bytes: its exact key and
        // NUL fill the 255 bytes after the generation's).
        let longest = format!("/nonexistent-vardr/{}", "l".repeat(254 - 19));
        assert_eq!(longest.len(), vardr_common::PATH_MAX_RULE);
        let mut p = policy(&format!(
            "{}{}{}{}    - {{name: l, hook: file_open, action: alert, match: {{paths: [{longest}]}}}}\n",
            "    - {name: d, hook: file_open, action: deny, match: {prefixes: [/nonexistent-vardr/etc]}}\n",
            "    - {name: a, hook: file_open, action: allow, match: {paths: [/nonexistent-vardr/etc/ok]}}\n",
            "    - {name: w, hook: file_write, action: deny, match: {paths: [/nonexistent-vardr/etc/w, /nonexistent-vardr/x]}}\n",
            "    - {name: s, hook: file_open, action: alert, match: {prefixes: [/nonexistent-vardr/etc/sub]}}\n",
        ));
        let one_more = format!("{longest}m");
        let set = compile(&mut p, 1, &Limits::default()).unwrap();
        let entries = crate::fanotify::Rules::new(&set);
        let mut governed = 0;
        for generation in [0, 1] {
            let g =
                super::super::generation::Generation::write(&set, generation, &Limits::default())
                    .unwrap();
            let maps = g.path_maps(generation).unwrap();
            let long = format!("/nonexistent-vardr/etc/{}", "x".repeat(400));
            for path in [
                "/nonexistent-vardr/etc",
                "/nonexistent-vardr/etc/",
                "/nonexistent-vardr/etc/ok",
                "/nonexistent-vardr/etc/ok2",
                "/nonexistent-vardr/etc/ok/",
                "/nonexistent-vardr/etc/w",
                "/nonexistent-vardr/etc/sub",
                "/nonexistent-vardr/etc/sub/f",
                "/nonexistent-vardr/etc/subx",
                "/nonexistent-vardr/x",
                "/nonexistent-vardr/xy",
                "/other",
                "/",
                long.as_str(),
                longest.as_str(),
                one_more.as_str(),
            ] {
                let want = entries.by_path(path);
                assert_eq!(maps.lookup(path.as_bytes()).unwrap(), want, "{path}");
                governed += usize::from(want != vardr_common::PathRules::default());
            }
        }
        // Most asked paths are governed: equal answers are not all "none".
        assert!(governed >= 2 * 9, "{governed}");
    }
}
