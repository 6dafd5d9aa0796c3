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
//!
//! The file is named as the agent's own mount of cgroup2 names it: the
//! event's fd is reopened there by its file handle (`O_PATH`, which raises
//! no event). The path the opener used can be anything: a bind mount of
//! `cgroup.procs` onto a file called `x`, a mount in another namespace.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::sys::fanotify::{Fanotify, MarkFlags, MaskFlags};

use super::Options;

/// The membership files a move writes.
const MEMBERSHIP: [&str; 2] = ["cgroup.procs", "cgroup.threads"];

pub struct CgroupGuard {
    /// Device of the cgroup2 file system.
    dev: u64,
    root: PathBuf,
    /// The agent's mount of cgroup2, where events' files are reopened by
    /// handle (`open_by_handle_at` refuses an `O_PATH` mount fd).
    root_fd: Option<OwnedFd>,
}

/// `struct file_handle` with room for the largest handle (`MAX_HANDLE_SZ`).
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; 128],
}

/// What an open of a cgroup file is.
#[derive(Debug, PartialEq, Eq)]
pub enum Open {
    /// Not a move out of the rules.
    Harmless,
    /// Not a membership file: never a move.
    Other,
    /// A move into the cgroup at this path (relative to the cgroup2 root),
    /// or a write to a file of the agent's cgroup; `None` when the path
    /// the agent sees does not reach the opened file (another mount
    /// namespace): counted as outside the rules.
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
        let root_fd = CString::new(opts.cgroup_root.as_os_str().as_encoded_bytes())
            .ok()
            .and_then(|c| {
                // SAFETY: a NUL-terminated path; the fd returned is owned here.
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                // SAFETY: `fd` is a descriptor this call just opened.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            });
        Some(Self {
            dev: std::os::unix::fs::MetadataExt::dev(&md),
            root: opts.cgroup_root.clone(),
            root_fd,
        })
    }

    /// The path of the event's file in the agent's mount of cgroup2, from
    /// its file handle; `None` when the kernel cannot do that.
    pub fn own_path(&self, fd: BorrowedFd<'_>) -> Option<String> {
        let root = self.root_fd.as_ref()?;
        let mut h = Handle {
            bytes: 128,
            kind: 0,
            data: [0; 128],
        };
        let mut mount_id = 0;
        // SAFETY: `h` is a file_handle header followed by `bytes` bytes of
        // room; the empty path with AT_EMPTY_PATH names `fd` itself.
        let r = unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                (&raw mut h).cast(),
                &mut mount_id,
                libc::AT_EMPTY_PATH,
            )
        };
        if r != 0 {
            return None;
        }
        // SAFETY: `h` holds the handle the kernel just wrote. O_PATH opens
        // raise no fanotify event (this thread answers them).
        let own = unsafe {
            libc::open_by_handle_at(
                root.as_raw_fd(),
                (&raw mut h).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if own < 0 {
            return None;
        }
        // SAFETY: `own` is a descriptor this call just opened.
        let own = unsafe { OwnedFd::from_raw_fd(own) };
        std::fs::read_link(format!("/proc/self/fd/{}", own.as_raw_fd()))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
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

    /// Classifies an open of the file at `path` (in the agent's mount,
    /// [`CgroupGuard::own_path`]), whose identity is `st`; `write` is
    /// whether the opener asked for write access (asked only for a
    /// membership file). Without a `trusted` path (no file handle), every
    /// file counts as a membership file.
    pub fn classify(
        &self,
        opts: &Options,
        path: &str,
        trusted: bool,
        st: &libc::stat,
        write: impl FnOnce() -> bool,
    ) -> Open {
        let p = Path::new(path);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Any file of the agent's own cgroup (`cgroup.kill`, `cgroup.freeze`,
        // `memory.max`) could stop or starve it: never ignored.
        let dir = trusted.then(|| self.relative_dir(p)).flatten();
        let protected = |d: &str| opts.protect_agent_cgroup && opts.in_agent(d);
        // Files of the cgroups above it act on it too (`cgroup.kill` of
        // `system.slice`); their membership files are moves, decided below.
        let above = |d: &str| {
            opts.protect_agent_cgroup && !MEMBERSHIP.contains(&name) && opts.above_agent(d)
        };
        if let Some(dir) = dir.filter(|d| protected(d) || above(d)) {
            return if write() {
                Open::MoveOut(Some(dir))
            } else {
                Open::Harmless
            };
        }
        // A name the agent could not check may be any file's.
        if trusted && !MEMBERSHIP.contains(&name) {
            return Open::Other;
        }
        if !write() {
            return Open::Harmless;
        }
        let target = self.target(p, st);
        let outside = match &target {
            Some(cg) => protected(cg) || !opts.in_scope(cg),
            None => true,
        };
        if outside {
            Open::MoveOut(target)
        } else {
            Open::Harmless
        }
    }

    /// The directory of `path` relative to the root (`/a/b`).
    fn relative_dir(&self, path: &Path) -> Option<String> {
        let rel = path.parent()?.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()).replace("//", "/"))
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
        self.relative_dir(path)
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
            scope_id: None,
            agent_cgroup_id: None,
            protect_agent_cgroup: true,
            agent_above: Vec::new(),
            cgroup_root: root.clone(),
            max_marks: 10,
        };
        (
            CgroupGuard {
                dev: 0,
                root,
                root_fd: None,
            },
            opts,
        )
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
        assert_eq!(g.classify(&o, &inner, true, &st, || true), Open::Harmless);
        assert_eq!(g.classify(&o, &inner, true, &st, || false), Open::Harmless);
        let (out, st) = file(&g, "/elsewhere", "cgroup.threads");
        assert_eq!(
            g.classify(&o, &out, true, &st, || true),
            Open::MoveOut(Some("/elsewhere".into()))
        );
        let (root, st) = file(&g, "/", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &root, true, &st, || true),
            Open::MoveOut(Some("/".into()))
        );
        let (agent, st) = file(&g, "/system.slice/vardr.service", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &agent, true, &st, || true),
            Open::MoveOut(Some("/system.slice/vardr.service".into()))
        );
        let (kill, st) = file(&g, "/system.slice/vardr.service", "cgroup.kill");
        assert!(matches!(
            g.classify(&o, &kill, true, &st, || true),
            Open::MoveOut(_)
        ));
        assert_eq!(g.classify(&o, &kill, true, &st, || false), Open::Harmless);
        let (other, st) = file(&g, "/elsewhere", "memory.max");
        assert_eq!(g.classify(&o, &other, true, &st, || true), Open::Other);
        // A path the agent resolves to another file: another namespace's view.
        let (_, st2) = file(&g, "/scope", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &out, true, &st2, || true),
            Open::MoveOut(None)
        );
        // A name the agent could not check: any file may be a membership file.
        assert_eq!(
            g.classify(&o, &other, false, &st, || true),
            Open::MoveOut(Some("/elsewhere".into()))
        );
        // The cgroups above the agent's: their files stop or starve it too,
        // their membership files are ordinary moves.
        let mut o = o;
        o.agent_above = vec![crate::kernel::cgroup::id(&g.root.join("system.slice")).unwrap()];
        let (parent_kill, st) = file(&g, "/system.slice", "cgroup.kill");
        assert_eq!(
            g.classify(&o, &parent_kill, true, &st, || true),
            Open::MoveOut(Some("/system.slice".into()))
        );
        assert_eq!(
            g.classify(&o, &parent_kill, true, &st, || false),
            Open::Harmless
        );
        let (parent_procs, st) = file(&g, "/system.slice", "cgroup.procs");
        assert_eq!(
            g.classify(&o, &parent_procs, true, &st, || true),
            Open::MoveOut(Some("/system.slice".into())),
            "outside the scope"
        );
        let (sibling, st) = file(&g, "/user.slice", "cgroup.kill");
        assert_eq!(g.classify(&o, &sibling, true, &st, || true), Open::Other);
        let _ = std::fs::remove_dir_all(&g.root);
    }

    #[test]
    fn a_file_is_named_by_the_agents_mount_whatever_path_opened_it() {
        let Ok(root) = crate::kernel::cgroup::root() else {
            eprintln!("SKIPPED a_file_is_named_by_the_agents_mount: no cgroup2");
            return;
        };
        let opts = Options {
            enforce: true,
            file: true,
            exec: false,
            scope: Some("/x".into()),
            agent_cgroup: None,
            scope_id: None,
            agent_cgroup_id: None,
            protect_agent_cgroup: true,
            agent_above: Vec::new(),
            cgroup_root: root.clone(),
            max_marks: 10,
        };
        let g = CgroupGuard::new(&opts).expect("guard");
        // Through a symlink elsewhere: still the cgroup root's cgroup.procs.
        let link = std::env::temp_dir().join(format!("vardr-guard-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(root.join("cgroup.procs"), &link).unwrap();
        let f = std::fs::File::open(&link).unwrap();
        let _ = std::fs::remove_file(&link);
        match g.own_path(std::os::fd::AsFd::as_fd(&f)) {
            Some(p) => assert_eq!(Path::new(&p), root.join("cgroup.procs")),
            None if !nix::unistd::geteuid().is_root() => {
                eprintln!(
                    "SKIPPED a_file_is_named_by_the_agents_mount: open_by_handle_at needs root"
                )
            }
            None => panic!("no file handle for a cgroup2 file"),
        }
    }

    #[test]
    fn a_renamed_scope_is_still_the_scope() {
        let (g, mut o) = guard("renamed", Some("/scope"), None);
        let (_, _) = file(&g, "/scope/inner", "cgroup.procs");
        o.scope_id = Some(std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(g.root.join("scope")).unwrap(),
        ));
        std::fs::rename(g.root.join("scope"), g.root.join("elsewhere")).unwrap();
        let p = g.root.join("elsewhere/inner/cgroup.procs");
        let md = std::fs::metadata(&p).unwrap();
        // SAFETY: a zeroed stat is a valid value; only dev and ino are read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = std::os::unix::fs::MetadataExt::dev(&md);
        st.st_ino = std::os::unix::fs::MetadataExt::ino(&md);
        let p = p.to_string_lossy();
        assert_eq!(g.classify(&o, &p, true, &st, || true), Open::Harmless);
        let (out, st) = file(&g, "/other", "cgroup.procs");
        assert!(matches!(
            g.classify(&o, &out, true, &st, || true),
            Open::MoveOut(_)
        ));
        let _ = std::fs::remove_dir_all(&g.root);
    }

    #[test]
    fn without_a_scope_only_the_agent_cgroup_is_outside() {
        let (g, o) = guard("agent", None, Some("/system.slice/vardr.service"));
        let (any, st) = file(&g, "/user.slice", "cgroup.procs");
        assert_eq!(g.classify(&o, &any, true, &st, || true), Open::Harmless);
        let (agent, st) = file(&g, "/system.slice/vardr.service", "cgroup.procs");
        assert!(matches!(
            g.classify(&o, &agent, true, &st, || true),
            Open::MoveOut(_)
        ));
        let _ = std::fs::remove_dir_all(&g.root);
    }
}
