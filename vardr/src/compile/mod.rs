//! Compiles a validated [`Policy`] into the entries of the Layer 1 maps.
//!
//! Entries are generation-free here; the loader adds the generation byte
//! when it writes them, so the same rule set can go into either half.
pub mod bundle;
mod domains;
mod net;
mod paths;

use std::{collections::HashMap, os::unix::fs::MetadataExt};

use vardr_common::{Action as KAction, InodeRule, RuleRef};

use crate::{
    events::RuleInfo,
    policy::{Action, Hook, Policy},
};

pub use domains::DomainEntry;
pub use net::{NetEntry, NET_ANY_PROTOCOL};
pub use paths::{PathEntry, PathTable};

/// Map capacities; a policy that does not fit is rejected with a clear error.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub path_entries: usize,
    pub inode_entries: usize,
    pub net4_entries: usize,
    pub net6_entries: usize,
    pub domain_entries: usize,
    pub exempt_pids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            path_entries: 1 << 17,
            inode_entries: 1 << 17,
            net4_entries: 1 << 17,
            net6_entries: 1 << 17,
            domain_entries: 1 << 16,
            exempt_pids: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "policy needs {needed} {what} entries, more than the limit of {limit} (see --max-rules)"
    )]
    TooMany {
        what: &'static str,
        needed: usize,
        limit: usize,
    },
}

/// Identity of a file as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Kernel-internal dev_t: MAJOR << 20 | MINOR.
    pub dev: u32,
    pub ino: u64,
}

impl Identity {
    /// Identities the kernel may see for the file at `path` (following
    /// symlinks, as exec does); see [`IdentityLookup`].
    pub fn of(path: &str) -> std::io::Result<Vec<Self>> {
        IdentityLookup::new()
            .of_many(&[path])
            .pop()
            .unwrap_or_else(|| Err(std::io::ErrorKind::NotFound.into()))
    }

    /// `stat()`'s identity, and the superblock device of the mount when it
    /// differs (btrfs subvolumes report their own device, while the
    /// kernel's inode is on the file system's). For a file or directory of
    /// an overlay, only `stat()`'s (which the fallback backend matches) and
    /// `true`: the hooks know it by its real file, which only the kernel can
    /// tell (the overlay's own identity can be shared by files of two
    /// layers).
    fn stat_of(path: &str, mountinfo: &str) -> std::io::Result<(Vec<Self>, bool)> {
        let md = std::fs::metadata(path)?;
        let dev = md.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let stat_dev = (major << 20) | (minor & 0xfffff);
        let mut ids = vec![Self {
            dev: stat_dev,
            ino: md.ino(),
        }];
        let overlay = nix::sys::statfs::statfs(path)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC);
        if overlay {
            return Ok((ids, true));
        }
        let canonical = std::fs::canonicalize(path)?;
        if let Some(sb) = crate::kernel::mounts::sb_dev_in(mountinfo, &canonical) {
            if sb != stat_dev {
                ids.push(Self {
                    dev: sb,
                    ino: md.ino(),
                });
            }
        }
        Ok((ids, false))
    }
}

/// Looks up identities for many paths: mountinfo is read once, paths whose
/// directory does not exist are skipped without a `stat` each (big rule
/// sets name many files in few directories), and files of overlays are
/// asked of the kernel in batches ([`crate::kernel::identity`]).
pub struct IdentityLookup {
    mountinfo: String,
    dirs: HashMap<String, bool>,
    /// The kernel lookup failed once in this lookup (not retried).
    kernel_failed: bool,
}

impl Default for IdentityLookup {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityLookup {
    pub fn new() -> Self {
        Self {
            mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            dirs: HashMap::new(),
            kernel_failed: false,
        }
    }

    /// The identities of each path, or why it has none.
    pub fn of_many(&mut self, paths: &[&str]) -> Vec<std::io::Result<Vec<Identity>>> {
        let mut out = Vec::with_capacity(paths.len());
        let mut ask_kernel = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
                let exists = match self.dirs.get(dir) {
                    Some(&e) => e,
                    None => {
                        let e = std::path::Path::new(dir).is_dir();
                        self.dirs.insert(dir.to_string(), e);
                        e
                    }
                };
                if !exists {
                    out.push(Err(std::io::ErrorKind::NotFound.into()));
                    continue;
                }
            }
            out.push(match Identity::stat_of(path, &self.mountinfo) {
                Ok((ids, kernel)) => {
                    if kernel {
                        ask_kernel.push(i);
                    }
                    Ok(ids)
                }
                Err(e) => Err(e),
            });
        }
        if ask_kernel.is_empty() {
            return out;
        }
        let asked: Vec<&std::path::Path> = ask_kernel
            .iter()
            .map(|&i| std::path::Path::new(paths[i]))
            .collect();
        // The agent is root; a `policy validate` as another user compiles
        // without the kernel's view.
        if self.kernel_failed || !crate::kernel::is_root() {
            return out;
        }
        let found = crate::kernel::identity::with_shared(|k| k.resolve(&asked));
        match found {
            Ok(Ok(found)) => {
                for (&i, id) in ask_kernel.iter().zip(found) {
                    if let (Some((dev, ino)), Ok(ids)) = (id, &mut out[i]) {
                        let id = Identity { dev, ino };
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(
                "identities of {} file(s) on overlays unknown to the kernel hooks ({e}): \
                 they are matched by path only",
                asked.len()
            ),
            Err(e) => {
                self.kernel_failed = true;
                tracing::warn!(
                    "cannot ask the kernel for identities of files on overlays ({e}): \
                     they are matched by path only"
                );
            }
        }
        out
    }
}

/// Paths whose identities are looked up at a time.
const IDENTITY_CHUNK: usize = 4096;

/// Everything the loader writes for one policy.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub policy_name: String,
    pub rules: HashMap<u32, RuleInfo>,
    /// Sorted by key (as [`paths::Builder::finish`] makes them); shared
    /// with the fanotify deny path, which decides with the same entries.
    pub paths: std::sync::Arc<PathTable>,
    pub inodes: Vec<(Identity, InodeRule)>,
    pub net4: Vec<NetEntry<4>>,
    pub net6: Vec<NetEntry<16>>,
    /// TLS server-name patterns (connect rules with `domains`).
    pub domains: Vec<DomainEntry>,
    /// The same rules for the agent, which applies them to the DNS names
    /// of plain connects.
    pub domain_rules: Vec<crate::names::DomainRule>,
    pub exempt_pids: Vec<u32>,
    /// Bit per kernel hook that has at least one rule.
    pub active_mask: u32,
    /// Some connect rule denies: frames built by hand (`AF_PACKET`) are
    /// refused to governed processes.
    pub connect_deny: bool,
    pub has_exempt_binaries: bool,
    /// Some binary is listed in `interpreters`.
    pub has_interpreters: bool,
    /// Things the user should know (an exempt binary that does not
    /// exist, overlapping rules, ...).
    pub warnings: Vec<String>,
    /// Governed or exempt binaries that are not installed: matched by path
    /// until they appear, when a reload records their identity (the agent
    /// watches for them).
    pub absent_binaries: Vec<String>,
}

impl RuleSet {
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

pub fn kernel_hook(h: Hook) -> vardr_common::Hook {
    match h {
        Hook::FileOpen => vardr_common::Hook::FileOpen,
        Hook::FileWrite => vardr_common::Hook::FileWrite,
        Hook::Exec => vardr_common::Hook::Exec,
        Hook::Connect => vardr_common::Hook::Connect,
    }
}

fn kernel_action(a: Action) -> KAction {
    match a {
        Action::Deny => KAction::Deny,
        Action::Alert => KAction::Alert,
        Action::Allow => KAction::Allow,
        Action::Observe => KAction::Observe,
    }
}

/// Rank for conflicts on one key: deny > alert > allow > observe.
pub(crate) fn rank(r: &RuleRef) -> u8 {
    match r.action {
        x if x == KAction::Observe as u32 => 1,
        x if x == KAction::Deny as u32 => 4,
        x if x == KAction::Alert as u32 => 3,
        x if x == KAction::Allow as u32 => 2,
        _ => 0,
    }
}

/// Compiles `policy`, numbering its rules from `first_id` (ids stay unique
/// across reloads, so events in flight map to the rule that matched). The
/// exact paths and binaries of its path rules move into the compiled set
/// (200 000 paths are not kept twice); its other fields stay.
pub fn compile(
    policy: &mut Policy,
    first_id: u32,
    limits: &Limits,
) -> Result<RuleSet, CompileError> {
    let mut set = RuleSet {
        policy_name: policy.name.clone(),
        exempt_pids: policy.exempt_pids.clone(),
        ..Default::default()
    };
    // Sized once: doubling growth left a quarter of 200 000 adds unused.
    let path_rules_of = policy.rules.iter().filter(|r| r.hook != Hook::Connect);
    let path_adds = path_rules_of
        .clone()
        .map(|r| r.paths.len() + r.binaries.len() + 2 * r.prefixes.len())
        .sum();
    // The lists' keys stay in the lists' buffers; prefixes are copied.
    let key_bytes = path_rules_of
        .map(|r| 2 * r.prefixes.iter().map(|p| p.len() + 1).sum::<usize>())
        .sum();
    let mut path_rules = paths::Builder::with_capacity(path_adds, key_bytes);
    let mut net_rules = net::Builder::default();
    let mut domain_rules = domains::Builder::default();
    let mut inodes: HashMap<Identity, InodeRule> = HashMap::new();

    for (i, rule) in policy.rules.iter_mut().enumerate() {
        let id = first_id + i as u32;
        set.rules.insert(
            id,
            RuleInfo {
                policy_name: policy.name.clone(),
                rule: rule.name.clone(),
                severity: rule.severity.as_str().into(),
                message: rule.message.clone(),
                tags: rule.tags.clone(),
                observe: rule.action == Action::Observe,
            },
        );
        let r = RuleRef {
            rule_id: id,
            action: kernel_action(rule.action) as u32,
        };
        let hook = kernel_hook(rule.hook);
        set.active_mask |= 1 << hook as u32;
        set.connect_deny |= rule.hook == Hook::Connect && rule.action == Action::Deny;
        match rule.hook {
            Hook::FileOpen | Hook::FileWrite | Hook::Exec => {
                for b in &rule.binaries {
                    match std::fs::metadata(b) {
                        Ok(_) => {}
                        // Not installed (yet): an ordinary state, not a problem.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            set.absent_binaries.push(b.to_string());
                        }
                        Err(e) => set.warnings.push(format!(
                            "rule {}: binary {b}: {e}; matched by path only until a reload finds it",
                            rule.name
                        )),
                    }
                }
                // The lists' buffers become the keys' (the policy keeps the
                // rest of the rule).
                path_rules.add_list(std::mem::take(&mut rule.paths), hook, r);
                path_rules.add_list(std::mem::take(&mut rule.binaries), hook, r);
                for p in &rule.prefixes {
                    // The directory itself, and everything under it.
                    let dir = p.trim_end_matches('/');
                    if !dir.is_empty() && rule.prefix_covers_dir {
                        path_rules.add_exact(dir, hook, r);
                    }
                    path_rules.add(p.as_bytes(), hook, r);
                }
            }
            Hook::Connect if !rule.domains.is_empty() => {
                domain_rules.add(rule, r);
                set.domain_rules
                    .extend(rule.domains.iter().map(|p| crate::names::DomainRule {
                        pattern: p.clone(),
                        action: rule.action,
                        rule_id: id,
                    }));
            }
            Hook::Connect => net_rules.add(rule, r),
        }
    }
    let mut lookup = IdentityLookup::new();
    let exempt: Vec<&str> = policy.exempt_binaries.iter().map(String::as_str).collect();
    for (b, found) in policy.exempt_binaries.iter().zip(lookup.of_many(&exempt)) {
        match found {
            Ok(ids) => {
                for id in ids {
                    inodes.entry(id).or_default().exempt = 1;
                }
                set.has_exempt_binaries = true;
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    set.absent_binaries.push(b.clone());
                }
                set.warnings.push(format!(
                    "exempt binary {b}: {e}; not exempt until it is installed"
                ))
            }
        }
    }
    let interpreters: Vec<&str> = policy.interpreters.iter().map(String::as_str).collect();
    for (b, found) in policy
        .interpreters
        .iter()
        .zip(lookup.of_many(&interpreters))
    {
        match found {
            Ok(ids) => {
                for id in ids {
                    inodes.entry(id).or_default().interpreter = 1;
                }
                set.has_interpreters = true;
            }
            Err(e) => set.warnings.push(format!(
                "interpreter {b}: {e}; not treated as an interpreter until the next reload"
            )),
        }
    }
    // Sorted and once each (a list of 100 000 searched at each push took
    // quadratic time).
    set.absent_binaries.sort_unstable();
    set.absent_binaries.dedup();
    set.paths = std::sync::Arc::new(path_rules.finish());
    // Every governed path that exists also gets an identity entry, so the
    // kernel finds its rules whatever path the file is reached by.
    // What a path lookup of a directory's own name gives (the LPM trie's
    // answer for "/dir\0"): the rules for the directory inode itself.
    let all = set.paths.clone();
    let by_key = |k: &[u8]| all.find(k);
    let own_rules = |dir: &str| {
        let exact = paths::exact_key(dir);
        if let Some(r) = by_key(exact.as_slice()) {
            return r;
        }
        dir.char_indices()
            .rev()
            .filter(|(_, c)| *c == '/')
            .find_map(|(i, _)| by_key(&dir.as_bytes()[..=i]))
            .unwrap_or_default()
    };
    // Report-only keys get no identity entry: the kernel's walk up the
    // directory chain stops at the first entry it finds, and an
    // observation must never hide a real rule further up (a symlinked or
    // bind-mounted alias of a denied directory).
    let governed = all
        .iter()
        .filter(|e| !e.rules.slots.iter().all(|r| rank(r) <= 1))
        .filter_map(|e| e.fs_path_str().map(|p| (e, p)));
    // In chunks: big rule sets hold a few thousand paths at a time.
    let mut chunk: Vec<(PathEntry, &str)> = Vec::with_capacity(IDENTITY_CHUNK);
    let mut governed = governed.peekable();
    while governed.peek().is_some() {
        chunk.clear();
        chunk.extend(governed.by_ref().take(IDENTITY_CHUNK));
        let names: Vec<&str> = chunk.iter().map(|(_, p)| *p).collect();
        for ((e, fs_path), found) in chunk.iter().zip(lookup.of_many(&names)) {
            let Ok(ids) = found else {
                continue;
            };
            let exact = e.is_exact();
            let own = if exact { e.rules } else { own_rules(fs_path) };
            for id in ids {
                let entry = inodes.entry(id).or_default();
                // A directory named both exactly and as a prefix: the
                // prefix entry (which covers the subtree) wins.
                if entry.has_rules != 0 && entry.exact == 0 && exact {
                    continue;
                }
                entry.rules = e.rules;
                entry.own = own;
                entry.has_rules = 1;
                entry.exact = u32::from(exact);
            }
        }
    }
    (set.net4, set.net6) = net_rules.finish();
    set.domains = domain_rules.finish();
    set.inodes = inodes.into_iter().collect();

    let check = |what, needed: usize, limit| {
        if needed > limit {
            Err(CompileError::TooMany {
                what,
                needed,
                limit,
            })
        } else {
            Ok(())
        }
    };
    check("path", set.paths.len(), limits.path_entries)?;
    check("binary identity", set.inodes.len(), limits.inode_entries)?;
    check("IPv4 network", set.net4.len(), limits.net4_entries)?;
    check("IPv6 network", set.net6.len(), limits.net6_entries)?;
    check("domain", set.domains.len(), limits.domain_entries)?;
    check("exempt pid", set.exempt_pids.len(), limits.exempt_pids)?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy;

    fn policy(rules: &str) -> Policy {
        let y = format!(
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n  rules:\n{rules}"
        );
        policy::parse(&y, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn domain_rules_go_to_the_domain_map_only() {
        let set = compile(
            &mut policy(
                "    - name: d
      hook: connect
      action: deny
      match: { domains: ['*.example.com', evil.example] }
    - name: a
      hook: connect
      action: allow
      match: { domains: [ok.example.com] }
",
            ),
            1,
            &Limits::default(),
        )
        .unwrap();
        assert!(set.net4.is_empty() && set.net6.is_empty(), "{set:?}");
        assert_eq!(set.domains.len(), 3);
        let key = |k: &str| {
            set.domains
                .iter()
                .find(|e| e.key == k.as_bytes())
                .map(|e| e.rule.action)
        };
        assert_eq!(key("moc.elpmaxe."), Some(KAction::Deny as u32));
        assert_eq!(key("elpmaxe.live\0"), Some(KAction::Deny as u32));
        assert_eq!(key("moc.elpmaxe.ko\0"), Some(KAction::Allow as u32));
        assert_eq!(set.active_mask, 1 << vardr_common::Hook::Connect as u32);
    }

    /// Frames built by hand are refused only while some connect rule
    /// denies (an alert rule alone refuses nothing).
    #[test]
    fn packet_frames_follow_connect_denies() {
        let rule = |action: &str| {
            format!("    - name: n\n      hook: connect\n      action: {action}\n      match: {{ cidrs: [10.0.0.0/8] }}\n")
        };
        let limits = Limits::default();
        let deny = compile(&mut policy(&rule("deny")), 1, &limits).unwrap();
        assert!(deny.connect_deny);
        let alert = compile(&mut policy(&rule("alert")), 1, &limits).unwrap();
        assert!(!alert.connect_deny);
        let file = "    - name: f\n      hook: file_open\n      action: deny\n      match: { paths: [/a] }\n";
        assert!(!compile(&mut policy(file), 1, &limits).unwrap().connect_deny);
    }

    #[test]
    fn limits_are_enforced_with_a_clear_error() {
        let mut p = policy("    - name: a\n      hook: file_open\n      action: deny\n      match: { paths: [/a, /b, /c] }\n");
        let limits = Limits {
            path_entries: 2,
            ..Default::default()
        };
        let e = compile(&mut p, 1, &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy needs 3 path entries, more than the limit of 2 (see --max-rules)"
        );
    }

    #[test]
    fn a_directory_inode_has_its_own_rules_apart_from_its_subtree() {
        let dir = std::env::temp_dir().join(format!("vardr-own-{}", std::process::id()));
        let (sub, yaml_dir) = (dir.join("sub"), dir.join("yaml"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(&yaml_dir).unwrap();
        let mut p = policy(&format!(
            "    - name: y\n      hook: file_open\n      action: deny\n      match: {{ prefixes: [{}] }}\n",
            yaml_dir.display()
        ));
        // As compiled from Cedar `resource in Vardr::Dir::".../sub"`.
        let mut c = p.rules[0].clone();
        c.name = "cedar:c".into();
        c.prefixes = vec![format!("{}/", sub.display())];
        c.prefix_covers_dir = false;
        p.rules.push(c);
        let set = compile(&mut p, 1, &Limits::default()).unwrap();
        let ids = |d: &std::path::Path| Identity::of(d.to_str().unwrap()).unwrap();
        let entry = |d: &std::path::Path| {
            let id = ids(d)[0];
            set.inodes
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, r)| *r)
                .unwrap()
        };
        let open = vardr_common::Hook::FileOpen as usize;
        let (cedar, yaml) = (entry(&sub), entry(&yaml_dir));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cedar.rules.slots[open].rule_id, 2, "below the directory");
        assert_eq!(
            cedar.own.slots[open].action,
            KAction::None as u32,
            "not the directory itself"
        );
        assert_eq!(yaml.rules.slots[open].rule_id, 1);
        assert_eq!(
            yaml.own.slots[open].rule_id, 1,
            "YAML prefixes cover the directory too"
        );
    }

    #[test]
    fn binaries_get_identity_and_path_entries() {
        let mut p = policy("    - name: sh\n      hook: exec\n      action: deny\n      match: { binaries: [/bin/sh, /nonexistent/x] }\n");
        let set = compile(&mut p, 10, &Limits::default()).unwrap();
        assert_eq!(set.inodes.len(), 1);
        let exec = set.inodes[0].1.rules.slots[vardr_common::Hook::Exec as usize];
        assert_eq!(exec.rule_id, 10);
        assert_eq!(set.paths.len(), 2);
        // Not installed is not a warning: the agent watches for it.
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        assert_eq!(set.absent_binaries, ["/nonexistent/x"]);
        assert_eq!(set.rules[&10].rule, "sh");
        assert_eq!(set.active_mask, 1 << vardr_common::Hook::Exec as u32);
    }

    #[test]
    fn an_exec_allowlist_denies_below_the_root() {
        let mut p = policy("    - name: all\n      hook: exec\n      action: deny\n      match: { prefixes: [/] }\n    - name: sys\n      hook: exec\n      action: allow\n      match: { prefixes: [/usr] }\n");
        let set = compile(&mut p, 1, &Limits::default()).unwrap();
        let exec = vardr_common::Hook::Exec as usize;
        let key = |k: &[u8]| {
            set.paths
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.rules.slots[exec])
        };
        assert_eq!(key(b"/").map(|r| r.rule_id), Some(1), "{:?}", set.paths);
        assert_eq!(key(b"/usr/").map(|r| r.action), Some(KAction::Allow as u32));
        let root = Identity::of("/").unwrap()[0];
        let (_, r) = set.inodes.iter().find(|(i, _)| *i == root).unwrap();
        assert_eq!(r.rules.slots[exec].action, KAction::Deny as u32);
    }

    #[test]
    fn interpreters_are_marked_by_identity() {
        let y = "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n  interpreters: [/bin/sh, /nonexistent/sh]\n";
        let mut p = policy::parse(y, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let set = compile(&mut p, 1, &Limits::default()).unwrap();
        assert!(set.has_interpreters);
        let sh = Identity::of("/bin/sh").unwrap()[0];
        let (_, r) = set.inodes.iter().find(|(i, _)| *i == sh).unwrap();
        assert_eq!((r.interpreter, r.has_rules, r.exempt), (1, 0, 0));
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    }
}
