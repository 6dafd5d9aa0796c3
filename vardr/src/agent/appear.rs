//! Binaries a policy names that were not installed when it was loaded.
//! They are matched by path meanwhile; when one appears, the agent reloads
//! its policy (as SIGHUP does) so the kernel also matches it by identity
//! (hard links, renames, other mount namespaces).
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// What a directory's metadata says of its entries: a file created, linked
/// or renamed into it changes its modification time; another directory
/// (a symlink retargeted, a mount) another device or inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(dir: &Path) -> Option<Self> {
        let m = std::fs::metadata(dir).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// When the directory last changed, by its modification or change
    /// time (an archive tool may set the first back; not the second).
    fn changed(&self) -> SystemTime {
        let at = |(s, ns): (i64, i64)| {
            SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
        };
        at(self.mtime).max(at(self.ctime))
    }
}

/// A change this close before the last look may not show in the times
/// (their granularity: a jiffy, or 1–2 s on some file systems): the
/// directory is looked into again until its last change is older.
const GRANULARITY: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Dir {
    /// The directory as last looked into (`None`: not there).
    seen: Option<Stamp>,
    /// When it was last looked into.
    looked: SystemTime,
    paths: Vec<String>,
}

impl Default for Dir {
    fn default() -> Self {
        Self {
            seen: None,
            looked: SystemTime::UNIX_EPOCH,
            paths: Vec::new(),
        }
    }
}

/// Awaited binaries by directory: each tick costs one `stat` per directory,
/// and the binaries of a directory are looked for only when it changed (a
/// policy can name 100 000 binaries not installed).
#[derive(Debug, Default)]
pub struct Awaited {
    dirs: BTreeMap<PathBuf, Dir>,
    /// Dangling symbolic links: their target appears elsewhere, without a
    /// change to their directory; looked for at every tick.
    links: Vec<String>,
    /// Directories looked into, for tests.
    looks: u64,
}

impl Awaited {
    pub fn new(paths: Vec<String>) -> Self {
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        let mut links = Vec::new();
        for p in paths {
            if std::fs::symlink_metadata(&p).is_ok() {
                links.push(p);
                continue;
            }
            let dir = Path::new(&p)
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf();
            dirs.entry(dir).or_default().paths.push(p);
        }
        Self {
            dirs,
            links,
            looks: 0,
        }
    }

    /// The awaited binaries that exist now, no longer awaited: a reload
    /// that fails does not make the agent retry for them.
    pub fn appeared(&mut self) -> Vec<String> {
        self.appeared_at(SystemTime::now())
    }

    fn appeared_at(&mut self, at: SystemTime) -> Vec<String> {
        let (found, links) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|p| Path::new(p).exists());
        self.links = links;
        let mut now: Vec<String> = found;
        for (dir, d) in self.dirs.iter_mut() {
            let stamp = Stamp::of(dir);
            let look =
                stamp.is_some_and(|s| d.seen != Some(s) || s.changed() + GRANULARITY >= d.looked);
            d.seen = stamp;
            if look {
                d.looked = at;
                self.looks += 1;
                let (found, still): (Vec<String>, Vec<String>) = std::mem::take(&mut d.paths)
                    .into_iter()
                    .partition(|p| Path::new(p).exists());
                d.paths = still;
                now.extend(found);
            }
        }
        self.dirs.retain(|_, d| !d.paths.is_empty());
        now
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.links.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_binary_once_when_it_appears() {
        let dir = std::env::temp_dir().join(format!("vardr-appear-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nc = dir.join("nc").to_string_lossy().into_owned();
        let ncat = dir.join("ncat").to_string_lossy().into_owned();
        let mut a = Awaited::new(vec![nc.clone(), ncat.clone()]);
        assert!(a.appeared().is_empty());
        std::fs::write(&nc, b"").unwrap();
        assert_eq!(a.appeared(), [nc]);
        assert!(a.appeared().is_empty(), "reported once");
        assert!(!a.is_empty(), "ncat still awaited");
        std::fs::write(&ncat, b"").unwrap();
        assert_eq!(a.appeared(), [ncat]);
        assert!(a.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory that does not change is not looked into again (its
    /// binaries are not searched for at each tick); one created later, or
    /// a new file in one, is.
    #[test]
    fn looks_into_a_directory_only_when_it_changed() {
        let base = std::env::temp_dir().join(format!("vardr-appear-dir-{}", std::process::id()));
        let dir = base.join("later");
        let tool = dir.join("tool").to_string_lossy().into_owned();
        let mut a = Awaited::new(vec![tool.clone()]);
        assert!(a.appeared().is_empty(), "no directory yet");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&tool, b"").unwrap();
        assert_eq!(a.appeared(), [tool], "directory created with it");
        assert!(a.is_empty());

        let other = dir.join("other").to_string_lossy().into_owned();
        let mut a = Awaited::new(vec![other.clone()]);
        // Unchanged since: looked into once more (a change in the same
        // timestamp tick as the look would not show), then not again.
        let now = SystemTime::now();
        assert!(a.appeared_at(now).is_empty());
        assert!(a.appeared_at(now + Duration::from_secs(10)).is_empty());
        let looks = a.looks;
        assert!(a.appeared_at(now + Duration::from_secs(20)).is_empty());
        assert_eq!(a.looks, looks, "an unchanged directory is not searched");
        // Any change to it shows (the file created now).
        std::fs::write(&other, b"").unwrap();
        assert_eq!(a.appeared(), [other]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A dangling link is awaited by its target, which can appear in
    /// another directory: looked for at every tick.
    #[test]
    fn a_dangling_link_appears_with_its_target() {
        let base = std::env::temp_dir().join(format!("vardr-appear-link-{}", std::process::id()));
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::create_dir_all(base.join("opt")).unwrap();
        let link = base.join("bin/tool");
        std::os::unix::fs::symlink(base.join("opt/tool"), &link).unwrap();
        let link = link.to_string_lossy().into_owned();
        let mut a = Awaited::new(vec![link.clone()]);
        assert!(a.appeared().is_empty());
        // Old times on the link's directory: only the target changes.
        let old = std::fs::FileTimes::new()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        std::fs::File::open(base.join("bin"))
            .unwrap()
            .set_times(old)
            .unwrap();
        std::fs::write(base.join("opt/tool"), b"").unwrap();
        assert_eq!(a.appeared(), [link]);
        assert!(a.is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
