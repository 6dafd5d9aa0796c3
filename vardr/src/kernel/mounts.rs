//! Pseudo-filesystem mounts (securityfs, bpffs, tracefs, cgroup2).
//!
//! The agent mounts what it needs and unmounts, on drop, only what it mounted.
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        fstype: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// First mount point of a filesystem type, from /proc/self/mountinfo.
pub fn find(fstype: &str) -> Result<Option<PathBuf>, MountError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(parse_mountinfo(&info, fstype))
}

/// Mountinfo line: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
fn parse_mountinfo(info: &str, fstype: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// Superblock device (`MAJOR << 20 | MINOR`, the kernel's encoding) of the
/// mount holding `path` (absolute, canonical): the `maj:min` column of the
/// longest matching mount point. This is `inode->i_sb->s_dev`, which can
/// differ from `stat().st_dev` (overlayfs reports the real file system's
/// device for files).
pub fn sb_dev_of(path: &Path) -> Option<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    sb_dev_in(&info, path)
}

/// `sb_dev_of` against a mountinfo text read once for many paths.
pub fn sb_dev_in(info: &str, path: &Path) -> Option<u32> {
    let mut best: Option<(usize, u32)> = None;
    for line in info.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(_), Some(dev), Some(_), Some(mp)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let mp = PathBuf::from(unescape(mp));
        if !path.starts_with(&mp) {
            continue;
        }
        let len = mp.as_os_str().len();
        let Some((maj, min)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
            continue;
        };
        // Later lines of the same mount point are mounted on top: keep the last.
        if best.is_none_or(|(l, _)| len >= l) {
            best = Some((len, (maj << 20) | (min & 0xfffff)));
        }
    }
    best.map(|(_, d)| d)
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A mount this process made; unmounted when dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Leaves the mount in place when the guard goes away.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.target, MntFlags::MNT_DETACH) {
            tracing::warn!("cannot unmount {}: {e}", self.target.display());
        }
    }
}

/// Where `fstype` is mounted; mounts it at `default_target` when it is not.
/// The guard is `Some` only when this call mounted it.
pub fn ensure(
    fstype: &str,
    default_target: &Path,
) -> Result<(PathBuf, Option<MountGuard>), MountError> {
    if let Some(p) = find(fstype)? {
        return Ok((p, None));
    }
    mount(
        Some(fstype),
        default_target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount {
        fstype: fstype.into(),
        target: default_target.into(),
        source,
    })?;
    tracing::debug!("mounted {fstype} on {}", default_target.display());
    Ok((
        default_target.to_path_buf(),
        Some(MountGuard {
            target: default_target.to_path_buf(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 22 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
36 22 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
40 22 0:33 / /mnt/with\\040space rw - tmpfs none rw
";

    #[test]
    fn finds_cgroup2_not_cgroup_v1() {
        assert_eq!(
            parse_mountinfo(INFO, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_mountinfo(INFO, "cgroup"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(parse_mountinfo(INFO, "bpf"), None);
    }

    #[test]
    fn superblock_device_of_longest_mount() {
        assert_eq!(
            sb_dev_in(INFO, Path::new("/sys/fs/cgroup/unified/x")),
            Some(30)
        );
        assert_eq!(sb_dev_in(INFO, Path::new("/sys/kernel")), Some(21));
        assert_eq!(sb_dev_in(INFO, Path::new("/etc")), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(
            parse_mountinfo(INFO, "tmpfs"),
            Some(PathBuf::from("/mnt/with space"))
        );
    }
}
