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
