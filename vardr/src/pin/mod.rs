//! Persistent enforcement: a loaded program set pinned in bpffs, so it
//! stays in force after the agent exits, and is found, drained and removed
//! by the next agent once that one enforces.
//!
//! ```text
//! <pin-dir>/<set-id>/meta      JSON SetMeta (blob map, see blob.rs)
//!                    catalog   JSON rule id -> rule (blob map)
//!                    alive     last time the agent was alive (unix ns)
//!                    maps/<NAME>
//!                    links/<program>-<link id>
//! ```
mod blob;
mod sys;

pub(crate) use sys::link_by_id;

use std::{
    collections::HashSet,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::Ebpf;
use serde::{Deserialize, Serialize};

pub use blob::Counter;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/vardr";
const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

const META: &str = "meta";
const CATALOG: &str = "catalog";
const ALIVE: &str = "alive";
const LOST_REPORTED: &str = "lost-reported";
const MAPS: &str = "maps";
const LINKS: &str = "links";
/// Links of the TracingPolicy kprobes, tracepoints and uprobes: apart from
/// `links`, which an adopting agent takes as its own programs'; these are
/// replaced by the next agent's hooks once they are attached.
const GEN_LINKS: &str = "gen-links";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Map(PathBuf, #[source] aya::maps::MapError),
    #[error("pinning {0}: {1}")]
    Pin(PathBuf, #[source] aya::pin::PinError),
    #[error("{0}: not a pinned vardr document")]
    Corrupt(PathBuf),
    #[error("{0}: {1}")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("{0} is not on a BPF file system (bpffs); pins can only live there")]
    NotBpffs(PathBuf),
    #[error(transparent)]
    Mount(#[from] crate::kernel::mounts::MountError),
    #[error("listing BPF links: {0}")]
    Links(#[source] aya::programs::links::LinkError),
    #[error(transparent)]
    Ring(#[from] crate::backend::ring::RingError),
}

/// Backend of one hook, as the set was loaded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookBackend {
    pub hook: String,
    pub backend: String,
    pub enforcing: bool,
}

/// What a pinned set is: written by the agent that loaded it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetMeta {
    /// [`vardr_common::LAYOUT_VERSION`] of the agent that loaded the set.
    pub layout: u32,
    pub agent_version: String,
    pub set_id: String,
    pub policy_name: String,
    pub policy_path: PathBuf,
    /// FNV-1a 64 of the policy file and its Cedar files, hex.
    pub policy_hash: String,
    /// "enforce" or "audit".
    pub mode: String,
    pub hooks: Vec<HookBackend>,
    /// Unix ns.
    pub started_at: u64,
    pub agent_pid: u32,
    /// The agent's start time (`/proc/PID/stat` field 22, clock ticks since
    /// boot): a pid alone could be reused by another process.
    pub agent_start_ticks: u64,
    /// `--scope-cgroup` (cgroup id, 0 = everything) the set governs.
    pub scope_cgroup_id: u64,
    pub scope_cgroup: Option<PathBuf>,
    /// Unix ns when the agent stopped cleanly and left the set in force.
    #[serde(default)]
    pub stopped_at: Option<u64>,
    /// What an agent must match to adopt the set instead of loading its
    /// own beside it: the BPF object, the backend of each hook and the map
    /// sizes (see `Enforcer::build_key`). Empty: never adopted.
    #[serde(default)]
    pub build: String,
}

/// One rule of a pinned set's catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: u32,
    pub policy_name: String,
    pub rule: String,
    pub severity: String,
    pub observe: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

pub fn now_ns() -> u64 {
    unix_ns(SystemTime::now())
}

/// FNV-1a 64 over the given byte strings, hex.
pub fn fnv_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Fnv::default();
    for p in parts {
        h.update(p);
        h.end_part();
    }
    h.hex()
}

/// FNV-1a over parts fed piece by piece ([`fnv_hex`] of whole parts).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Separates the parts, so ("ab", "c") and ("a", "bc") differ.
    pub fn end_part(&mut self) {
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

pub use crate::process::start_ticks;

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// A pin directory: the sets of one scope.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub root: PathBuf,
}

/// A set found in the pin directory.
#[derive(Debug)]
pub struct PinnedSet {
    pub id: String,
    pub dir: PathBuf,
    pub meta: Result<SetMeta, String>,
    /// Unix ns the owning agent last said it was alive.
    pub alive_at: Option<u64>,
    /// Kernel-side drops the owning agent had already reported.
    pub lost_reported: u64,
}

impl PinnedSet {
    /// Whether the agent that loaded the set still runs (same pid, same
    /// start time).
    pub fn owner_running(&self) -> bool {
        self.meta.as_ref().is_ok_and(|m| {
            m.stopped_at.is_none() && start_ticks(m.agent_pid) == Some(m.agent_start_ticks)
        })
    }

    /// Whether this agent can read the set's maps.
    pub fn same_layout(&self) -> bool {
        self.meta
            .as_ref()
            .is_ok_and(|m| m.layout == vardr_common::LAYOUT_VERSION)
    }

    /// Whether an agent of build `build` can adopt the set as it is.
    pub fn adoptable(&self, build: &str) -> bool {
        self.same_layout()
            && self
                .meta
                .as_ref()
                .is_ok_and(|m| !m.build.is_empty() && m.build == build)
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join(MAPS)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.dir.join(LINKS)
    }

    /// How long the set has enforced with no agent, if its agent is gone.
    pub fn unattended(&self) -> Option<Duration> {
        if self.owner_running() {
            return None;
        }
        let since = self
            .alive_at
            .or(self.meta.as_ref().ok().map(|m| m.started_at))?;
        Some(Duration::from_nanos(now_ns().saturating_sub(since)))
    }

    fn map(&self, name: &str) -> Result<aya::maps::MapData, PinError> {
        let path = self.dir.join(MAPS).join(name);
        aya::maps::MapData::from_pin(&path).map_err(|e| PinError::Map(path, e))
    }

    /// Exempts `tgid` (the agent taking over) in the set's config, so the
    /// old set's rules do not hit the new agent while both run. Only for a
    /// set of the same layout.
    pub fn exempt_agent(&self, tgid: u32) -> Result<(), PinError> {
        use aya::maps::{Array, Map};
        let (cname, sname) = (crate::bpf::maps::CONFIG, crate::bpf::maps::CONFIG_SLOT);
        let cpath = self.dir.join(MAPS).join(cname);
        let spath = self.dir.join(MAPS).join(sname);
        let cerr = |e| PinError::Map(cpath.clone(), e);
        let serr = |e| PinError::Map(spath.clone(), e);
        let mut configs: Array<_, vardr_common::Config> =
            Array::try_from(Map::Array(self.map(cname)?)).map_err(cerr)?;
        let mut selector: Array<_, u32> =
            Array::try_from(Map::Array(self.map(sname)?)).map_err(serr)?;
        // As a reload does: write the slot not in force, then switch.
        let slot = selector.get(&0, 0).map_err(serr)? % vardr_common::CONFIG_SLOTS;
        let mut cfg = configs.get(&slot, 0).map_err(cerr)?;
        cfg.agent_tgid = tgid;
        cfg.agent_start_ticks = start_ticks(tgid).unwrap_or(0);
        let next = 1 - slot;
        configs.set(next, cfg, 0).map_err(cerr)?;
        selector.set(0, next, 0).map_err(serr)
    }

    /// The set's event ring buffers, lifecycle then policy (same layout only).
    pub fn events(&self) -> Result<crate::backend::Rings, PinError> {
        let ring = |name: &'static str| {
            crate::backend::ring::EventRing::from_data(name, self.map(name)?)
                .map_err(PinError::Ring)
        };
        Ok(crate::backend::Rings {
            lifecycle: ring(crate::bpf::maps::EVENTS)?,
            policy: ring(crate::bpf::maps::POLICY_EVENTS)?,
        })
    }

    /// Events the set's programs could not queue (same layout only).
    pub fn lost_events(&self) -> Result<u64, PinError> {
        use aya::maps::{Map, PerCpuArray};
        let name = crate::bpf::maps::LOST_EVENTS;
        let path = self.dir.join(MAPS).join(name);
        let err = |e| PinError::Map(path.clone(), e);
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.map(name)?)).map_err(err)?;
        let mut total = 0;
        for slot in [vardr_common::LOST_LIFECYCLE, vardr_common::LOST_POLICY] {
            total += arr.get(&slot, 0).map_err(err)?.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// The rule catalog, when it can be read.
    pub fn catalog(&self) -> Result<Vec<CatalogEntry>, PinError> {
        let path = self.dir.join(CATALOG);
        let bytes = blob::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| PinError::Json(path, e))
    }

    /// Removes the set: first its links (the programs stop running), then
    /// its maps and documents. Errors are collected, not fatal: whatever
    /// can be removed is.
    pub fn unpin_links(&self) -> Vec<String> {
        let mut errs = remove_entries(&self.dir.join(GEN_LINKS));
        errs.extend(remove_entries(&self.dir.join(LINKS)));
        errs
    }

    /// How many TracingPolicy hook links the set holds.
    pub fn generic_links(&self) -> usize {
        std::fs::read_dir(self.dir.join(GEN_LINKS)).map_or(0, |d| d.count())
    }

    pub fn remove(&self) -> Vec<String> {
        remove_set_dir(&self.dir)
    }
}

/// Removes a set directory: links first (the programs stop), then maps and
/// documents.
fn remove_set_dir(dir: &Path) -> Vec<String> {
    let mut errs = remove_entries(&dir.join(GEN_LINKS));
    errs.extend(remove_entries(&dir.join(LINKS)));
    errs.extend(remove_entries(&dir.join(MAPS)));
    for d in [GEN_LINKS, LINKS, MAPS] {
        let p = dir.join(d);
        if let Err(e) = std::fs::remove_dir(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errs.push(format!("{}: {e}", p.display()));
            }
        }
    }
    errs.extend(remove_entries(dir));
    if let Err(e) = std::fs::remove_dir(dir) {
        errs.push(format!("{}: {e}", dir.display()));
    }
    errs
}

/// Unlinks every file in `dir` (not subdirectories).
fn remove_entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Err(err) = std::fs::remove_file(e.path()) {
            errs.push(format!("{}: {err}", e.path().display()));
        }
    }
    errs
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Makes sure the directory exists on a bpffs: mounts bpffs at
    /// /sys/fs/bpf when the directory lies below it and nothing is mounted
    /// there. That mount is left in place on purpose: unmounting a bpffs
    /// drops every pin in it.
    pub fn prepare(&self) -> Result<(), PinError> {
        let bpffs_root = Path::new(BPFFS_ROOT);
        if self.root.starts_with(bpffs_root) && !is_bpffs(bpffs_root) {
            let (at, guard) = crate::kernel::mounts::ensure("bpf", bpffs_root)?;
            if let Some(g) = guard {
                g.keep();
                tracing::info!("mounted bpffs on {}", at.display());
            }
        }
        std::fs::create_dir_all(&self.root).map_err(|e| PinError::Io(self.root.clone(), e))?;
        if !is_bpffs(&self.root) {
            return Err(PinError::NotBpffs(self.root.clone()));
        }
        Ok(())
    }

    /// Whether the directory exists on a bpffs (nothing is pinned otherwise).
    pub fn exists(&self) -> bool {
        is_bpffs(&self.root)
    }

    /// Every set in the directory, oldest first.
    pub fn sets(&self) -> Vec<PinnedSet> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<PinnedSet> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let dir = e.path();
                let meta = blob::read(&dir.join(META))
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                let alive_at = Counter::open(&dir.join(ALIVE)).ok().and_then(|c| c.get());
                let lost_reported = Counter::open(&dir.join(LOST_REPORTED))
                    .ok()
                    .and_then(|c| c.get())
                    .unwrap_or(0);
                PinnedSet {
                    id: e.file_name().to_string_lossy().into_owned(),
                    dir,
                    meta,
                    alive_at,
                    lost_reported,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Removes the directory itself when no set is left in it.
    pub fn remove_if_empty(&self) {
        let _ = std::fs::remove_dir(&self.root);
    }

    /// Creates the directory of a new set and writes its documents.
    pub fn create_set(&self, meta: &SetMeta, catalog: &[CatalogEntry]) -> Result<OwnSet, PinError> {
        let dir = self.root.join(&meta.set_id);
        for d in [dir.clone(), dir.join(MAPS), dir.join(LINKS)] {
            std::fs::create_dir_all(&d).map_err(|e| PinError::Io(d.clone(), e))?;
        }
        let set = OwnSet {
            alive: Counter::create(&dir.join(ALIVE), now_ns())?,
            lost_reported: Counter::create(&dir.join(LOST_REPORTED), 0)?,
            dir,
        };
        set.write_meta(meta)?;
        set.write_catalog(catalog)?;
        Ok(set)
    }
}

/// The set this agent loaded and pinned, or adopted.
pub struct OwnSet {
    pub dir: PathBuf,
    alive: Counter,
    lost_reported: Counter,
}

impl OwnSet {
    /// Makes an adopted set this agent's own: its documents now describe
    /// this agent.
    pub fn adopt(set: &PinnedSet, meta: &SetMeta) -> Result<Self, PinError> {
        let mut own = Self {
            dir: set.dir.clone(),
            alive: Counter::open(&set.dir.join(ALIVE))?,
            lost_reported: Counter::open(&set.dir.join(LOST_REPORTED))?,
        };
        own.write_meta(meta)?;
        own.touch();
        Ok(own)
    }

    /// Removes the set (when pinning it failed half way).
    pub fn remove(&self) -> Vec<String> {
        remove_set_dir(&self.dir)
    }

    /// Records how many kernel-side drops the agent has reported.
    pub fn set_lost_reported(&mut self, n: u64) {
        if let Err(e) = self.lost_reported.set(n) {
            tracing::debug!(
                "cannot update {}: {e}",
                self.dir.join(LOST_REPORTED).display()
            );
        }
    }

    pub fn write_meta(&self, meta: &SetMeta) -> Result<(), PinError> {
        let path = self.dir.join(META);
        let bytes = serde_json::to_vec(meta).map_err(|e| PinError::Json(path.clone(), e))?;
        blob::write(&path, &bytes)
    }

    pub fn write_catalog(&self, catalog: &[CatalogEntry]) -> Result<(), PinError> {
        let path = self.dir.join(CATALOG);
        let bytes = serde_json::to_vec(catalog).map_err(|e| PinError::Json(path.clone(), e))?;
        blob::write(&path, &bytes)
    }

    /// Records that the agent is alive now.
    pub fn touch(&mut self) {
        if let Err(e) = self.alive.set(now_ns()) {
            tracing::debug!("cannot update {}: {e}", self.dir.join(ALIVE).display());
        }
    }

    /// Pins the links of the TracingPolicy hooks in force, in place of
    /// those pinned before (an earlier generation's, or the adopted set's
    /// agent's, whose hooks detach now: the caller's are attached).
    /// Returns how many were pinned.
    pub fn pin_generic(&self, links: &[(String, OwnedFd)]) -> Result<usize, PinError> {
        let dir = self.dir.join(GEN_LINKS);
        if let Some(e) = remove_entries(&dir).into_iter().next() {
            return Err(PinError::Io(
                dir.clone(),
                std::io::Error::other(format!("removing an earlier pin: {e}")),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| PinError::Io(dir.clone(), e))?;
        for (name, fd) in links {
            let path = dir.join(name);
            sys::pin_fd(fd.as_fd(), &path).map_err(|e| PinError::Io(path.clone(), e))?;
        }
        Ok(links.len())
    }

    /// Pins every map of `ebpf` and every BPF link attached to one of its
    /// programs, whatever code attached it: the kernel's list of links is
    /// the one source of truth.
    pub fn pin_objects<'a>(
        &self,
        maps: impl Iterator<Item = (&'a str, &'a aya::maps::Map)>,
        ebpf: &Ebpf,
    ) -> Result<usize, PinError> {
        for (name, map) in maps {
            // bpffs refuses names with a dot (".rodata").
            let path = self.dir.join(MAPS).join(name.replace('.', "_"));
            map.pin(&path).map_err(|e| PinError::Pin(path.clone(), e))?;
        }
        let mut ours: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
        for (name, prog) in ebpf.programs() {
            if let Ok(info) = prog.info() {
                ours.insert(info.id(), name.to_string());
            }
        }
        let mut pinned = HashSet::new();
        for link in aya::programs::loaded_links() {
            let link = link.map_err(PinError::Links)?;
            let Some(prog) = ours.get(&link.program_id()) else {
                continue;
            };
            let path = self.dir.join(LINKS).join(format!("{prog}-{}", link.id()));
            let fd = sys::link_by_id(link.id()).map_err(|e| PinError::Io(path.clone(), e))?;
            sys::pin_fd(fd.as_fd(), &path).map_err(|e| PinError::Io(path.clone(), e))?;
            pinned.insert(link.id());
        }
        Ok(pinned.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(layout: u32, build: &str) -> PinnedSet {
        PinnedSet {
            id: "x".into(),
            dir: PathBuf::from("/nonexistent"),
            meta: Ok(SetMeta {
                layout,
                agent_version: "0".into(),
                set_id: "x".into(),
                policy_name: "p".into(),
                policy_path: PathBuf::from("/p.yaml"),
                policy_hash: "0".repeat(16),
                mode: "enforce".into(),
                hooks: Vec::new(),
                started_at: 0,
                agent_pid: 0,
                agent_start_ticks: 0,
                scope_cgroup_id: 0,
                scope_cgroup: None,
                stopped_at: None,
                build: build.into(),
            }),
            alive_at: None,
            lost_reported: 0,
        }
    }

    #[test]
    fn only_the_same_build_and_layout_is_adopted() {
        let ours = vardr_common::LAYOUT_VERSION;
        assert!(set(ours, "abc").adoptable("abc"));
        assert!(!set(ours, "abc").adoptable("abd"), "another build");
        assert!(!set(ours ^ 1, "abc").adoptable("abc"), "another layout");
        // Sets pinned before builds were recorded are never adopted.
        assert!(!set(ours, "").adoptable(""));
        let mut unreadable = set(ours, "abc");
        unreadable.meta = Err("corrupt".into());
        assert!(!unreadable.adoptable("abc"));
    }

    #[test]
    fn hash_separates_parts_and_is_stable() {
        assert_eq!(fnv_hex([b"a".as_slice()]), fnv_hex([b"a".as_slice()]));
        assert_ne!(
            fnv_hex([b"ab".as_slice(), b"c"]),
            fnv_hex([b"a".as_slice(), b"bc"])
        );
    }
}
