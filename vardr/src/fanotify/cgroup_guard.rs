//! The fallback's half of "the rules follow a governed process" (the LSM
//! half is `file_open` in the kernel): a governed process may not move
//! itself or another process into the agent's cgroup (exempt) or out of
//! `--scope-cgroup` (where no rule applies).
//!
//! A move is a write to a cgroup's `cgroup.procs` or `cgroup.threads`, so
//! each group also marks the cgroup2 file system (`FAN_MARK_FILESYSTEM`,
//! `FAN_OPEN_PERM`: every mount of it, new cgroups included) and denies
//! opens for write of those files in a cgroup outside the rules. Any other
//! cgroup file gets an evictable ignore mark at its first open, so later
//! opens of it do not wait for the agent.
use std::{
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use nix::sys::fanotify::{Fanotify, MarkFlags, MaskFlags};

use super::Options;
use crate::agent::response::within;

/// The membership files a move writes.
const MEMBERSHIP: [&str; 2] = ["cgroup.procs", "cgroup.threads"];

pub struct CgroupGuard {
    /// Device of the cgroup2 file system.
    dev: u64,
    root: PathBuf,
}

/// What an open of a cgroup file is.
#[derive(Debug, PartialEq, Eq)]
pub enum Open {
    /// Not a move out of the rules.
    Harmless,
    /// Not a membership file: never a move.
    Other,
    /// A move into the cgroup at this path (relative to the cgroup2 root),
    /// or `None` when the path the agent sees does not reach the opened
    /// file (another mount namespace): counted as outside the rules.
    MoveOut(Option<String>),
}

impl CgroupGuard {
    /// A guard when there is something to guard: a scope, or the agent's
    /// own service cgroup.
    pub fn new(opts: &Options) -> Option<Self> {
        if opts.scope.is_none() && opts.agent_cgroup.is_none() {
            return None;
        }
        let md = std::fs::metadata(&opts.cgroup_root).ok()?;
        Some(Self {
            dev: std::os::unix::fs::MetadataExt::dev(&md),
            root: opts.cgroup_root.clone(),
        })
    }

    /// Marks the cgroup2 file system in `group`.
    pub fn mark(&self, group: &Fanotify) -> Result<(), nix::errno::Errno> {
        group.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
            MaskFlags::FAN_OPEN_PERM,
            nix::fcntl::AT_FDCWD,
            Some(&self.root),
        )
    }

    /// Whether an event's object is on the cgroup2 file system.
    pub fn covers(&self, st: &libc::stat) -> bool {
        st.st_dev == self.dev
    }

    /// Classifies an open of the file at `path` (as the agent sees the
    /// event's fd), whose identity is `st`; `write` is whether the opener
    /// asked for write access.
    pub fn classify(
        &self,
        opts: &Options,
        path: &str,
        st: &libc::stat,
        write: impl FnOnce() -> bool,
    ) -> Open {
        let p = Path::new(path);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !MEMBERSHIP.contains(&name) {
            return Open::Other;
        }
        if !write() {
            return Open::Harmless;
        }
        let target = self.target(p, st);
        let outside = match &target {
            Some(cg) => {
                opts.agent_cgroup.as_deref().is_some_and(|a| within(cg, a))
                    || opts.scope.as_deref().is_some_and(|s| !within(cg, s))
            }
            None => true,
        };
        if outside {
            Open::MoveOut(target)
        } else {
            Open::Harmless
        }
    }

    /// The cgroup (relative to the root) whose membership file `path` is,
    /// if that path, looked up by the agent, is the opened file.
    fn target(&self, path: &Path, st: &libc::stat) -> Option<String> {
        let md = std::fs::metadata(path).ok()?;
        let same = std::os::unix::fs::MetadataExt::dev(&md) == st.st_dev
            && std::os::unix::fs::MetadataExt::ino(&md) == st.st_ino;
        if !same {
            return None;
        }
        let rel = path.parent()?.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()).replace("//", "/"))
    }

    /// Opens of this file no longer reach the agent (the mark goes with
    /// the inode: it does not keep it in memory).
    pub fn ignore(group: &Fanotify, fd: BorrowedFd<'_>) {
        let flags = MarkFlags::FAN_MARK_ADD
            | MarkFlags::FAN_MARK_INODE
            | MarkFlags::FAN_MARK_IGNORED_MASK
            | MarkFlags::FAN_MARK_IGNORED_SURV_MODIFY
            | MarkFlags::FAN_MARK_EVICTABLE;
        if let Err(e) = group.mark::<_, Path>(flags, MaskFlags::FAN_OPEN_PERM, fd, None) {
            tracing::debug!("fanotify ignore mark on a cgroup file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(tag: &str, scope: Option<&str>, agent: Option<&str>) -> (CgroupGuard, Options) {
        let root = std::env::temp_dir().join(format!("vardr-guard-{tag}-{}", std::process::id()));
        let opts = Options {
            enforce: true,
            file: true,
            exec: false,
            scope: scope.map(str::to_string),
            agent_cgroup: agent.map(str::to_string),
            cgroup_root: root.clone(),
            max_marks: 10,
        };
        (CgroupGuard { dev: 0, root }, opts)
    }

    /// Creates `rel/name` below the guard's root; its path and stat.
    fn file(g: &CgroupGuard, rel: &str, name: &str) -> (String, libc::stat) {
        let dir = g.root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, "").unwrap();
        let md = std::fs::metadata(&p).unwrap();
        // SAFETY: a zeroed stat is a valid value; only dev and ino are read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = std::os::unix::fs::MetadataExt::dev(&md);
        st.st_ino = std::os::unix::fs::MetadataExt::ino(&md);
        (p.to_string_lossy().into_owned(), st)
    }

    #[test]
    fn moves_out_of_the_scope_or_into_the_agent_are_caught() {
        let (g, o) = guard("scope", Some("/scope"), Some("/system.slice/vardr.service"));
        let (inner, st) = file(&g, "/scope/inner", "cgroup.procs");
        assert_eq!(g.classify(&o, &inner, &st, || true), Open::Harmless);
        assert_eq!(g.classify(&o, &inner, &st, || false), Open::Harmless);
        let (out, st) = file(&g, "/elsewhere", "cgroup.threads");
        assert_eq!(
            g.classify(&o, &out, &st, || true),
            Open::MoveOut(Some("/elsewhere".into()))
        );
        let (root, st) = file(&g, "/", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &root, &st, || true),
            Open::MoveOut(Some("/".into()))
        );
        let (agent, st) = file(&g, "/system.slice/vardr.service", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &agent, &st, || true),
            Open::MoveOut(Some("/system.slice/vardr.service".into()))
        );
        let (other, st) = file(&g, "/elsewhere", "memory.max");
        assert_eq!(g.classify(&o, &other, &st, || true), Open::Other);
        // A path the agent resolves to another file: another namespace's view.
        let (_, st2) = file(&g, "/scope", "cgroup.procs");
        assert_eq!(g.classify(&o, &out, &st2, || true), Open::MoveOut(None));
        let _ = std::fs::remove_dir_all(&g.root);
    }

    #[test]
    fn without_a_scope_only_the_agent_cgroup_is_outside() {
        let (g, o) = guard("agent", None, Some("/system.slice/vardr.service"));
        let (any, st) = file(&g, "/user.slice", "cgroup.procs");
        assert_eq!(g.classify(&o, &any, &st, || true), Open::Harmless);
        let (agent, st) = file(&g, "/system.slice/vardr.service", "cgroup.procs");
        assert!(matches!(
            g.classify(&o, &agent, &st, || true),
            Open::MoveOut(_)
        ));
        let _ = std::fs::remove_dir_all(&g.root);
    }
}
