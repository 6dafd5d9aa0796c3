//! Which inodes a fanotify group marks for a rule set: every governed
//! object that exists, so the kernel asks the agent about exactly those.
//!
//! - an exact path: its inode (a directory: its own opens, `FAN_ONDIR`);
//! - a prefix: the directory and every directory below it, with
//!   `FAN_EVENT_ON_CHILD` (their direct children report through them), and
//!   every file below it (an inode mark follows the file across renames and
//!   hard links, so a file moved out of a denied directory stays governed).
//!
//! The walk is bounded ([`MAX_MARKS`]): directories are marked before
//! files, so past the bound every file is still seen through its directory
//! (only a rename out or a hard link made elsewhere escapes it).
use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use nix::sys::{
    fanotify::{Fanotify, MarkFlags, MaskFlags},
    inotify::{self, AddWatchFlags, Inotify, WatchDescriptor},
    statfs::{self, FsType},
};
use vardr_common::{Action, Hook, PathRules};

use super::{task, Rules};
use crate::compile::{Identity, RuleSet};

/// Most inodes one rule set may mark.
pub const MAX_MARKS: usize = 65_536;

/// What was marked.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MarkStats {
    pub marked: usize,
    /// Inodes left unmarked because of [`MAX_MARKS`].
    pub over_limit: usize,
    /// Marks the kernel refused.
    pub failed: usize,
}

/// Pseudo file systems never marked: the agent reads /proc while it
/// answers events, and must never wait on itself.
fn pseudo_fs(dir: &Path) -> bool {
    const SKIP: [FsType; 7] = [
        statfs::PROC_SUPER_MAGIC,
        statfs::SYSFS_MAGIC,
        statfs::CGROUP2_SUPER_MAGIC,
        statfs::CGROUP_SUPER_MAGIC,
        statfs::DEBUGFS_MAGIC,
        statfs::TRACEFS_MAGIC,
        FsType(0xcafe_4a11), // bpffs
    ];
    statfs::statfs(dir).is_ok_and(|s| SKIP.contains(&s.filesystem_type()))
}

/// The events a path entry's rules need.
fn mask_of(rules: &vardr_common::PathRules, exec: bool) -> MaskFlags {
    let set = |h: Hook| rules.slots[h as usize].action != Action::None as u32;
    let mut m = MaskFlags::empty();
    if set(Hook::FileOpen) || set(Hook::FileWrite) {
        m |= MaskFlags::FAN_OPEN_PERM;
    }
    if exec && set(Hook::Exec) {
        m |= MaskFlags::FAN_OPEN_EXEC_PERM;
    }
    m
}

/// One inode to mark.
pub struct Mark {
    pub path: PathBuf,
    pub mask: MaskFlags,
}

/// The marks for a rule set, and the identities the walk found below
/// governed directories with the rules their path had then.
#[derive(Default)]
pub struct MarkPlan {
    pub marks: Vec<Mark>,
    /// Directories below governed prefixes, watched for new directories
    /// (which get this mask).
    pub follow: Vec<(PathBuf, MaskFlags)>,
    /// Existing files named by exact paths: their directory is watched, and
    /// a new file under the same name (a replacement) is marked.
    pub names: Vec<(PathBuf, std::ffi::OsString, MaskFlags)>,
    pub walked: HashMap<Identity, Walked>,
    pub over_limit: usize,
}

/// Rules an inode found by the walk keeps wherever it moves: its own (what
/// its path matched) and, for a directory, those of what lies below it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Walked {
    pub own: PathRules,
    pub below: PathRules,
}

/// The rules an inode found below a governed directory keeps.
fn walked(rules: &Rules, path: &Path, md: &std::fs::Metadata) -> Option<Walked> {
    let p = path.to_str()?;
    let below = if md.is_dir() {
        rules.by_path(&format!("{p}/"))
    } else {
        PathRules::default()
    };
    Some(Walked {
        own: rules.by_path(p),
        below,
    })
}

struct Planner<'a> {
    rules: &'a Rules,
    limit: usize,
    done: HashMap<Identity, MaskFlags>,
    walked_dirs: std::collections::HashSet<(Identity, u64)>,
    plan: MarkPlan,
}

impl Planner<'_> {
    /// Plans a mark of `path` (following symlinks, as identity entries do);
    /// returns false when it already has these events or is over the limit.
    fn add(&mut self, path: &Path, md: &std::fs::Metadata, mask: MaskFlags) -> bool {
        let id = task::identity(md);
        let had = self.done.get(&id).copied().unwrap_or(MaskFlags::empty());
        if had.contains(mask) {
            return false;
        }
        if self.plan.marks.len() >= self.limit {
            self.plan.over_limit += 1;
            return false;
        }
        let mut m = mask;
        if md.is_dir() {
            m |= MaskFlags::FAN_ONDIR;
        }
        self.plan.marks.push(Mark {
            path: path.to_path_buf(),
            mask: m,
        });
        self.done.insert(id, had | mask);
        true
    }

    /// Remembers the rules a walked inode had by its path.
    fn remember(&mut self, path: &Path, md: &std::fs::Metadata) {
        if let Some(w) = walked(self.rules, path, md) {
            self.plan.walked.insert(task::identity(md), w);
        }
    }

    /// The directory and everything below it: directories first (breadth
    /// first), then files.
    fn walk(&mut self, root: &Path, mask: MaskFlags) {
        let dir_mask = mask | MaskFlags::FAN_EVENT_ON_CHILD;
        let mut queue = VecDeque::from([root.to_path_buf()]);
        let mut files: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
        while let Some(dir) = queue.pop_front() {
            if pseudo_fs(&dir) {
                continue;
            }
            let Ok(md) = std::fs::metadata(&dir) else {
                continue;
            };
            self.add(&dir, &md, dir_mask);
            // Already walked with these events (nested prefixes, bind mounts).
            if !self.walked_dirs.insert((task::identity(&md), mask.bits())) {
                continue;
            }
            self.plan.follow.push((dir.clone(), mask));
            self.remember(&dir, &md);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                // Symlinks lead elsewhere: the target is decided by its own
                // path and identity when it is opened.
                if ft.is_dir() {
                    queue.push_back(e.path());
                } else if ft.is_file() || ft.is_block_device() || ft.is_char_device() {
                    if let Ok(md) = e.metadata() {
                        files.push((e.path(), md));
                    }
                }
            }
        }
        for (path, md) in files {
            if self.add(&path, &md, mask) {
                self.remember(&path, &md);
            }
        }
    }
}

/// Plans the marks of every governed object of `set` (`rules` is the same
/// set); with `exec`, exec rules get `FAN_OPEN_EXEC_PERM` too.
pub fn plan(set: &RuleSet, rules: &Rules, exec: bool, limit: usize) -> MarkPlan {
    let mut p = Planner {
        rules,
        limit,
        done: HashMap::new(),
        walked_dirs: Default::default(),
        plan: MarkPlan::default(),
    };
    let mut prefixes = Vec::new();
    // A YAML prefix also names its directory exactly: not a file that can
    // be replaced, so its parent needs no mark.
    let prefix_keys: std::collections::HashSet<&[u8]> = set
        .paths
        .iter()
        .filter(|e| e.key.last() == Some(&b'/'))
        .map(|e| e.key)
        .collect();
    // Parent directories, looked up once each: big rule sets name many
    // files of a few directories.
    let mut dirs: HashMap<PathBuf, Option<std::fs::Metadata>> = HashMap::new();
    let mut key_buf = Vec::new();
    // Exact objects and the prefix directories themselves first.
    for e in set.paths.iter() {
        let mask = mask_of(&e.rules, exec);
        let Some(fs_path) = e.fs_path_str().filter(|_| !mask.is_empty()) else {
            continue;
        };
        let path = Path::new(fs_path);
        let exact = e.key.last() == Some(&0);
        let dir_of_prefix = exact && {
            key_buf.clear();
            key_buf.extend_from_slice(&e.key[..e.key.len() - 1]);
            key_buf.push(b'/');
            prefix_keys.contains(key_buf.as_slice())
        };
        let parent = path
            .parent()
            .filter(|d| exact && !dir_of_prefix && !pseudo_fs(d));
        let parent_md = parent.map(|dir| match dirs.get(dir) {
            Some(md) => md.clone(),
            None => {
                let md = std::fs::metadata(dir).ok().filter(|m| m.is_dir());
                dirs.insert(dir.to_path_buf(), md.clone());
                md
            }
        });
        // No such directory: no such file either (nothing to mark).
        if parent_md.as_ref().is_some_and(Option::is_none) {
            continue;
        }
        let Ok(md) = std::fs::metadata(path) else {
            // A governed file that does not exist yet: its directory reports
            // its children, so the open that creates it is decided by path
            // (every open in that directory pays the round trip).
            if let (Some(dir), Some(Some(dmd))) = (parent, &parent_md) {
                p.add(dir, dmd, mask | MaskFlags::FAN_EVENT_ON_CHILD);
            }
            continue;
        };
        // An existing one: a later replacement under its name is marked
        // when it appears (inotify on the directory).
        if let (Some(dir), Some(name)) = (parent, path.file_name()) {
            p.plan
                .names
                .push((dir.to_path_buf(), name.to_os_string(), mask));
        }
        if exact || !md.is_dir() {
            if !path.parent().is_some_and(pseudo_fs) {
                p.add(path, &md, mask);
            }
        } else {
            prefixes.push((path.to_path_buf(), mask));
        }
    }
    for (path, mask) in prefixes {
        p.walk(&path, mask);
    }
    p.plan
}

/// Directories below governed prefixes, watched with inotify for new
/// subdirectories (which fanotify inode marks do not cover).
pub struct Watches {
    pub inotify: Inotify,
    /// Watch -> the directory's path when watched, and what to follow in it.
    pub dirs: Mutex<HashMap<WatchDescriptor, Follow>>,
    /// Marks made so far by this group (bounded by the limit).
    pub marked: AtomicUsize,
}

/// What a watched directory's new entries get.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    pub dir: PathBuf,
    /// New subdirectories: walked and marked with these events.
    pub subtree: Option<MaskFlags>,
    /// New files under these names (governed exact paths): marked.
    pub names: HashMap<std::ffi::OsString, MaskFlags>,
}

impl Watches {
    pub fn new() -> Result<Self, nix::errno::Errno> {
        Ok(Self {
            inotify: Inotify::init(
                inotify::InitFlags::IN_NONBLOCK | inotify::InitFlags::IN_CLOEXEC,
            )?,
            dirs: Mutex::new(HashMap::new()),
            marked: AtomicUsize::new(0),
        })
    }

    /// Watches `dir` for new subdirectories (before its entries are read,
    /// so none is missed).
    fn watch(
        &self,
        dir: &Path,
        subtree: Option<MaskFlags>,
        name: Option<(&std::ffi::OsStr, MaskFlags)>,
    ) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        match self.inotify.add_watch(
            dir,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR,
        ) {
            Ok(wd) => {
                let f = dirs.entry(wd).or_insert_with(|| Follow {
                    dir: dir.to_path_buf(),
                    ..Default::default()
                });
                if let Some(m) = subtree {
                    f.subtree = Some(f.subtree.unwrap_or(MaskFlags::empty()) | m);
                }
                if let Some((n, m)) = name {
                    *f.names
                        .entry(n.to_os_string())
                        .or_insert(MaskFlags::empty()) |= m;
                }
            }
            Err(e) => tracing::debug!("inotify watch {}: {e}", dir.display()),
        }
    }

    /// What to follow in the directory a watch is on.
    pub fn dir(&self, wd: WatchDescriptor) -> Option<Follow> {
        let dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        dirs.get(&wd).cloned()
    }

    pub fn forget(&self, wd: WatchDescriptor) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        dirs.remove(&wd);
    }
}

/// A new file under a governed exact name (a replacement): mark it.
pub fn follow_new_file(group: &Fanotify, watches: &Watches, path: &Path, mask: MaskFlags) {
    if mark_one(group, path, mask) {
        watches.marked.fetch_add(1, Ordering::SeqCst);
    }
}

pub(super) fn mark_one(group: &Fanotify, path: &Path, mask: MaskFlags) -> bool {
    match group.mark(
        MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_INODE,
        mask,
        nix::fcntl::AT_FDCWD,
        Some(path),
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("fanotify mark {}: {e}", path.display());
            false
        }
    }
}

/// Adds the planned marks to `group`; directories below governed
/// prefixes are watched for new subdirectories first.
pub fn apply(group: &Fanotify, plan: &MarkPlan, watches: &Watches) -> MarkStats {
    let mut stats = MarkStats {
        over_limit: plan.over_limit,
        ..Default::default()
    };
    for (dir, mask) in &plan.follow {
        watches.watch(dir, Some(*mask), None);
    }
    for (dir, name, mask) in &plan.names {
        watches.watch(dir, None, Some((name, *mask)));
    }
    for m in &plan.marks {
        if mark_one(group, &m.path, m.mask) {
            stats.marked += 1;
        } else if m.path.symlink_metadata().is_ok() {
            // Refused, not gone since the walk (a removed object needs no mark).
            stats.failed += 1;
        }
    }
    watches.marked.store(stats.marked, Ordering::SeqCst);
    stats
}

fn remember(rules: &Rules, id: Identity, w: Walked) {
    let mut walked = rules.walked.write().unwrap_or_else(|e| e.into_inner());
    walked.insert(id, w);
}

/// A directory that appeared below a governed directory (made or moved
/// in): watch it, mark it and what it holds, and remember the rules its
/// inodes have by path, as the walk at load time does.
pub fn follow_new_dir(
    group: &Fanotify,
    watches: &Watches,
    rules: &Rules,
    dir: PathBuf,
    mask: MaskFlags,
    limit: usize,
) {
    let dir_mask = mask | MaskFlags::FAN_EVENT_ON_CHILD | MaskFlags::FAN_ONDIR;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        if watches.marked.load(Ordering::SeqCst) >= limit {
            tracing::warn!(
                "fanotify: mark limit reached; {} and what it holds are not marked",
                d.display()
            );
            return;
        }
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if !md.is_dir() || pseudo_fs(&d) {
            continue;
        }
        watches.watch(&d, Some(mask), None);
        if mark_one(group, &d, dir_mask) {
            watches.marked.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(w) = walked(rules, &d, &md) {
            remember(rules, task::identity(&md), w);
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let Ok(md) = e.metadata() else { continue };
                if mark_one(group, &e.path(), mask) {
                    watches.marked.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(w) = walked(rules, &e.path(), &md) {
                    remember(rules, task::identity(&md), w);
                }
            }
        }
    }
}
