//! cgroup v2: where it is mounted, ids and levels (what BPF programs compare).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::mounts::{self, MountError};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cgroup v2 is not mounted (no cgroup2 entry in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not inside the cgroup v2 mount {1}")]
    Outside(PathBuf, PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.into(),
        source,
    }
}

/// The cgroup v2 mount point.
pub fn root() -> Result<PathBuf, CgroupError> {
    mounts::find("cgroup2")?.ok_or(CgroupError::NoCgroup2)
}

/// A cgroup's id: on cgroup v2 the inode number of its directory, which is
/// what `bpf_get_current_cgroup_id()` returns.
pub fn id(path: &Path) -> Result<u64, CgroupError> {
    Ok(std::fs::metadata(path).map_err(io(path))?.ino())
}

/// Whether the cgroup at `rel` (relative to `root`, "/a/b") is the cgroup
/// with id `id` or below it, by ids: a cgroup renamed since (cgroup2
/// directories can be renamed) is still itself.
pub fn within_id(root: &Path, rel: &str, id: u64) -> bool {
    let mut p = Some(Path::new(rel));
    while let Some(dir) = p {
        let full = root.join(dir.strip_prefix("/").unwrap_or(dir));
        if std::fs::metadata(&full).is_ok_and(|m| m.ino() == id) {
            return true;
        }
        p = dir.parent();
    }
    false
}

/// The ids of the cgroups above `path` (a cgroup directory under `root`),
/// nearest first, the root itself left out, at most `max`.
pub fn ancestor_ids(root: &Path, path: &Path, max: usize) -> Vec<u64> {
    path.ancestors()
        .skip(1)
        .take_while(|p| p.starts_with(root) && *p != root)
        .filter_map(|p| id(p).ok())
        .take(max)
        .collect()
}

/// Depth below the cgroup v2 root (the root is level 0).
pub fn level(root: &Path, path: &Path) -> Result<u32, CgroupError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| CgroupError::Outside(path.into(), root.into()))?;
    Ok(rel.components().count() as u32)
}

/// The cgroup v2 directory of a process (from /proc/PID/cgroup, `0::` line).
pub fn of_pid(root: &Path, pid: u32) -> Result<PathBuf, CgroupError> {
    let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    Ok(root.join(rel.trim_start_matches('/')))
}

/// A cgroup this process created; removed (after its processes left) on drop.
#[derive(Debug)]
pub struct OwnedCgroup {
    pub path: PathBuf,
}

impl OwnedCgroup {
    pub fn create(parent: &Path, name: &str) -> Result<Self, CgroupError> {
        let path = parent.join(name);
        std::fs::create_dir(&path).map_err(io(&path))?;
        Ok(Self { path })
    }

    pub fn id(&self) -> Result<u64, CgroupError> {
        id(&self.path)
    }

    /// Moves a process into this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(io(&procs))
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        // Processes still inside keep the directory busy; a few retries cover
        // children that are exiting right now.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        tracing::warn!("cannot remove cgroup {}", self.path.display());
    }
}

/// Ids and paths of cgroup v2 directories, for events that carry only the
/// id (`bpf_get_current_cgroup_id()`): a hit is a hash lookup; a miss asks
/// the kernel for the directory of that id (`open_by_handle_at` with the
/// 8-byte kernfs handle on the cgroup2 mount, root only), then scans the
/// tree, learning every directory on the way. Ids the kernel no longer
/// knows are remembered as unknown for a second, so a burst of events from
/// a removed cgroup costs one scan.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    /// The mount's root directory, the handle's reference point.
    mount_fd: Option<std::os::fd::OwnedFd>,
    known: crate::process::IdMap<u64, CgroupEntry>,
    unknown: std::collections::HashMap<u64, std::time::Instant>,
}

/// A cgroup as events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Relative to the cgroup v2 root ("/user.slice/x.scope"; "/" for the root).
    pub path: String,
    /// The container id a container runtime put in the path, if any.
    pub container_id: Option<String>,
}

/// Entries kept before the cache starts over (cgroups come and go with
/// containers and sessions).
const MAX_CGROUPS: usize = 1 << 14;
/// How long an id that resolved to nothing is not looked up again.
const UNKNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Directories a scan visits at most.
const MAX_SCAN: usize = 1 << 16;
/// `FILEID_KERNFS` (include/linux/exportfs.h).
const FILEID_KERNFS: i32 = 0xfe;

impl CgroupPaths {
    /// A cache over the cgroup v2 mount, if there is one.
    pub fn new() -> Self {
        match root() {
            Ok(r) => Self::at(r),
            Err(e) => {
                tracing::debug!("cgroup paths unknown: {e}");
                Self::empty(None)
            }
        }
    }

    /// A cache over the cgroup v2 tree mounted at `root`.
    pub fn at(root: PathBuf) -> Self {
        use nix::{fcntl::OFlag, sys::stat::Mode};
        let fd = nix::fcntl::open(
            &root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok();
        let mut c = Self::empty(Some(root));
        c.mount_fd = fd;
        c
    }

    fn empty(root: Option<PathBuf>) -> Self {
        Self {
            root,
            mount_fd: None,
            known: Default::default(),
            unknown: std::collections::HashMap::new(),
        }
    }

    /// A cache that knows only what it is told ([`CgroupPaths::insert`]).
    pub fn detached() -> Self {
        Self::empty(None)
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Records what the caller learnt otherwise (a /proc scan).
    pub fn insert(&mut self, id: u64, path: &str) {
        if id == 0 {
            return;
        }
        if self.known.len() >= MAX_CGROUPS {
            self.known.clear();
        }
        self.known.insert(
            id,
            CgroupEntry {
                path: path.to_string(),
                container_id: crate::process::container_id(path),
            },
        );
        self.unknown.remove(&id);
    }

    /// The cgroup with this id, if the kernel still has it.
    pub fn get(&mut self, id: u64) -> Option<&CgroupEntry> {
        if id == 0 {
            return None;
        }
        if !self.known.contains_key(&id) {
            self.resolve(id)?;
        }
        self.known.get(&id)
    }

    fn resolve(&mut self, id: u64) -> Option<()> {
        let now = std::time::Instant::now();
        if self
            .unknown
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < UNKNOWN_FOR)
        {
            return None;
        }
        let found = self.by_handle(id).or_else(|| {
            self.scan();
            self.known.contains_key(&id).then_some(())
        });
        if found.is_none() {
            if self.unknown.len() >= MAX_CGROUPS {
                self.unknown.clear();
            }
            self.unknown.insert(id, now);
            tracing::debug!(id, "no cgroup with this id");
        }
        found
    }

    /// Asks the kernel for the directory of cgroup `id`.
    fn by_handle(&mut self, id: u64) -> Option<()> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let root = self.root.as_ref()?;
        let mount = self.mount_fd.as_ref()?;
        #[repr(C)]
        struct Handle {
            handle_bytes: u32,
            handle_type: i32,
            id: [u8; 8],
        }
        let mut h = Handle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `h` is a file_handle with 8 bytes of handle data.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&mut h as *mut Handle).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor just opened and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = full.strip_prefix(root).ok()?;
        let path = format!("/{}", rel.to_string_lossy());
        self.insert(id, &path);
        Some(())
    }

    /// Learns every cgroup directory (up to [`MAX_SCAN`]).
    fn scan(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut todo = vec![root.clone()];
        let mut seen = 0;
        while let Some(dir) = todo.pop() {
            seen += 1;
            if seen > MAX_SCAN {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            let path = format!("/{}", rel.to_string_lossy());
            if !self.known.contains_key(&meta.ino()) {
                self.insert(meta.ino(), &path);
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod paths_tests {
    use super::*;

    #[test]
    fn ids_resolve_to_paths_by_handle_or_scan_and_misses_are_remembered() {
        let Ok(root) = root() else {
            eprintln!("skipped: no cgroup v2 mount");
            return;
        };
        let own = of_pid(&root, std::process::id()).expect("own cgroup");
        let own_id = id(&own).expect("own cgroup id");
        let want = format!("/{}", own.strip_prefix(&root).unwrap().to_string_lossy());
        let mut c = CgroupPaths::at(root.clone());
        assert_eq!(c.get(own_id).map(|e| e.path.clone()), Some(want.clone()));
        // The scan path alone gives the same answer.
        let mut s = CgroupPaths::at(root.clone());
        s.mount_fd = None;
        assert_eq!(s.get(own_id).map(|e| e.path.clone()), Some(want));
        let root_id = id(&root).expect("root id");
        assert_eq!(s.get(root_id).map(|e| e.path.as_str()), Some("/"));
        // An id no cgroup has: unknown, and not scanned for again at once.
        let n = s.len();
        assert!(s.get(u64::MAX - 3).is_none());
        assert!(s.unknown.contains_key(&(u64::MAX - 3)));
        assert!(s.get(u64::MAX - 3).is_none());
        assert_eq!(s.len(), n);
        assert!(c.get(0).is_none());
    }

    #[test]
    fn inserted_paths_carry_their_container_id() {
        let mut c = CgroupPaths::detached();
        let id = "b".repeat(64);
        c.insert(7, &format!("/system.slice/docker-{id}.scope"));
        let e = c.get(7).expect("inserted");
        assert_eq!(e.container_id.as_deref(), Some(id.as_str()));
        // Detached: nothing to resolve a miss against.
        assert!(c.get(8).is_none());
    }
}
