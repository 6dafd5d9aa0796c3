//! Rule generations. Each rule map of the programs is an array of two inner
//! maps, one per generation (`Config::generation` picks the one in force).
//! A reload creates fresh inner maps, fills them, puts them in the unused
//! slot and switches the config; the old inner maps are then dropped whole:
//! no mass delete, no record of keys, and a restarted agent adopts the
//! generation in force by reading the slot the config names.
use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{lpm_trie::Key, ArrayOfMaps, MapData},
    Pod,
};
use vardr_common::{
    InodeKey, InodeRule, PathRules, PidKey, RuleRef, DOMAIN_KEY_LEN, NET4_KEY_LEN, NET6_KEY_LEN,
    NET_KEY_HEAD_BITS, PATH_KEY_LEN,
};

use super::{
    objects::MapSet,
    sys::{self, MapShape},
    BackendError,
};
use crate::{
    bpf::maps as names,
    compile::{Limits, RuleSet},
};

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// As the programs' templates have it (the kernel compares the flags of an
/// inner map with its template's).
const BPF_F_NO_PREALLOC: u32 = 1;

/// The rule maps, in the order [`Generation`] keeps their inner maps.
pub const RULE_MAPS: [&str; 7] = [
    names::PATH_RULES,
    names::EXACT_PATHS,
    names::INODE_RULES,
    names::EXEMPT_PIDS,
    names::NET4_RULES,
    names::NET6_RULES,
    names::DOMAIN_RULES,
];
const PATHS: usize = 0;
const EXACT: usize = 1;
const INODES: usize = 2;
const PIDS: usize = 3;
const NET4: usize = 4;
const NET6: usize = 5;
const DOMAINS: usize = 6;

/// The shape of an inner map like its template in the programs (`V`:
/// the value type; `scalar_value` when it is a number, not a struct).
fn shape<K, V>(map_type: u32, max_entries: usize, scalar_value: bool) -> MapShape {
    MapShape {
        scalar_value,
        map_type,
        key_size: std::mem::size_of::<K>() as u32,
        value_size: std::mem::size_of::<V>() as u32,
        // Neither LPM tries nor these hashes preallocate: the capacity
        // costs nothing until used.
        max_entries: max_entries.clamp(1, u32::MAX as usize) as u32,
        flags: BPF_F_NO_PREALLOC,
    }
}

fn shapes(l: &Limits) -> [MapShape; 7] {
    [
        shape::<Key<[u8; PATH_KEY_LEN]>, PathRules>(BPF_MAP_TYPE_LPM_TRIE, l.path_entries, false),
        shape::<[u8; PATH_KEY_LEN], PathRules>(BPF_MAP_TYPE_HASH, l.path_entries, false),
        shape::<InodeKey, InodeRule>(BPF_MAP_TYPE_HASH, l.inode_entries, false),
        shape::<PidKey, u64>(BPF_MAP_TYPE_HASH, l.exempt_pids, true),
        shape::<Key<[u8; NET4_KEY_LEN]>, RuleRef>(BPF_MAP_TYPE_LPM_TRIE, l.net4_entries, false),
        shape::<Key<[u8; NET6_KEY_LEN]>, RuleRef>(BPF_MAP_TYPE_LPM_TRIE, l.net6_entries, false),
        shape::<Key<[u8; DOMAIN_KEY_LEN]>, RuleRef>(BPF_MAP_TYPE_LPM_TRIE, l.domain_entries, false),
    ]
}

/// Entries in force after an apply.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ApplyStats {
    /// Exact paths and prefixes together.
    pub path_entries: usize,
    /// Of which exact paths (in their hash map).
    pub exact_path_entries: usize,
    pub inode_entries: usize,
    pub net4_entries: usize,
    pub net6_entries: usize,
    pub domain_entries: usize,
    pub exempt_pids: usize,
}

/// The inner maps of one generation, in [`RULE_MAPS`] order (`None`: an
/// empty slot, read as no rules).
pub struct Generation {
    maps: Vec<Option<MapData>>,
    pub stats: ApplyStats,
}

fn io(name: &'static str, what: &'static str) -> impl Fn(std::io::Error) -> BackendError {
    move |e| BackendError::Io(format!("{name}: {what}"), e)
}

fn net_key<const N: usize, const A: usize>(
    generation: u32,
    proto: u8,
    port: u16,
    addr: &[u8; A],
    prefix: u8,
) -> Key<[u8; N]> {
    let mut data = [0u8; N];
    data[0] = generation as u8;
    data[1] = proto;
    data[2..4].copy_from_slice(&port.to_be_bytes());
    data[4..4 + A].copy_from_slice(addr);
    Key::new(NET_KEY_HEAD_BITS + u32::from(prefix), data)
}

impl Generation {
    /// Creates empty inner maps with the capacities of `limits` and writes
    /// `set` into them, keys under `generation`. Nothing reads them until
    /// [`Generation::install`] and the config switch; on error they are
    /// simply dropped.
    pub fn write(set: &RuleSet, generation: u32, limits: &Limits) -> Result<Self, BackendError> {
        let mut maps = Vec::with_capacity(RULE_MAPS.len());
        for (name, shape) in RULE_MAPS.into_iter().zip(shapes(limits)) {
            let fd = sys::create_map(shape, name).map_err(io(name, "creating an inner map"))?;
            let data = MapData::from_fd(fd).map_err(|source| BackendError::Map { name, source })?;
            maps.push(Some(data));
        }
        let w = |i: usize| match &maps[i] {
            Some(m) => Ok(m.fd().as_fd()),
            None => Err(BackendError::MissingMap(RULE_MAPS[i])),
        };
        // Exact paths (the key ends with its NUL) go to the hash, prefixes
        // to the LPM trie: an exact key can only ever match itself. The
        // hash (most entries of big sets) is written on a thread of its
        // own beside all the other maps: each map has its own locks.
        // Few prefixes: listed; the exact entries are read where they lie.
        let prefixes: Vec<_> = set.paths.iter().filter(|e| !e.is_exact()).collect();
        let (exact_count, rest) = std::thread::scope(|s| {
            let exact_job = s.spawn(|| {
                let fd = w(EXACT)?;
                let entries = set
                    .paths
                    .iter()
                    .filter(|e| e.is_exact())
                    .map(|e| (path_data(generation, e.key), e.rules));
                write(fd, names::EXACT_PATHS, entries)
            });
            let rest = write_others(set, &prefixes, generation, &w);
            let exact_count = exact_job.join().unwrap_or_else(|_| {
                Err(BackendError::Io(
                    "writing the exact paths".into(),
                    std::io::Error::other("thread panicked"),
                ))
            });
            (exact_count, rest)
        });
        let mut stats = rest?;
        stats.exact_path_entries = exact_count?;
        stats.path_entries += stats.exact_path_entries;
        Ok(Self { maps, stats })
    }

    /// The inner maps of `generation` in an adopted set.
    pub fn open(outer: &MapSet, generation: u32) -> Result<Self, BackendError> {
        let mut maps = Vec::with_capacity(RULE_MAPS.len());
        for name in RULE_MAPS {
            let arr: ArrayOfMaps<&MapData, MapData> = ArrayOfMaps::try_from(outer.get(name)?)
                .map_err(|source| BackendError::Map { name, source })?;
            match arr.get(&generation, 0) {
                Ok(m) => maps.push(Some(m)),
                Err(aya::maps::MapError::KeyNotFound) => maps.push(None),
                Err(source) => return Err(BackendError::Map { name, source }),
            }
        }
        Ok(Self {
            maps,
            stats: ApplyStats::default(),
        })
    }

    /// Puts these inner maps in slot `generation` of the rule maps (not
    /// the slot in force: nothing reads them until the config switches).
    /// An empty inner map is left out: an empty slot reads as no rules.
    /// Each change of a map of maps waits for an RCU grace period in the
    /// kernel, so the maps go in side by side (one wait for all).
    pub fn install(&self, outer: &MapSet, generation: u32) -> Result<(), BackendError> {
        let counts = [
            self.stats.path_entries - self.stats.exact_path_entries,
            self.stats.exact_path_entries,
            self.stats.inode_entries,
            self.stats.exempt_pids,
            self.stats.net4_entries,
            self.stats.net6_entries,
            self.stats.domain_entries,
        ];
        std::thread::scope(|s| {
            let jobs: Vec<_> = RULE_MAPS
                .into_iter()
                .zip(&self.maps)
                .zip(counts)
                .map(|((name, inner), n)| {
                    s.spawn(move || -> Result<(), BackendError> {
                        let inner = inner.as_ref().ok_or(BackendError::MissingMap(name))?;
                        let fd = outer
                            .get(name)
                            .ok()
                            .and_then(sys::fd)
                            .ok_or(BackendError::MissingMap(name))?;
                        if n == 0 {
                            // A slot left over from a failed commit must not
                            // be read as this generation's.
                            clear_one(fd, name, generation);
                            return Ok(());
                        }
                        let value = inner.fd().as_fd().as_raw_fd() as u32;
                        sys::update_one(fd, &generation, &value)
                            .map_err(io(name, "installing an inner map"))
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(BackendError::Io(
                        "installing the rule maps".into(),
                        std::io::Error::other("thread panicked"),
                    ))
                })
            })
        })
    }

    /// Waits until no program still runs that read the config before the
    /// last switch: a map-of-maps update returns only after an RCU grace
    /// period, and BPF programs run inside RCU read-side sections. The
    /// update sets one slot of `generation` (this generation's, no longer
    /// in force) to the map it already holds. False when no slot holds one
    /// of these maps (then nothing is left to drop either).
    pub fn wait_for_readers(&self, outer: &MapSet, generation: u32) -> bool {
        for (name, inner) in RULE_MAPS.into_iter().zip(&self.maps) {
            let (Some(inner), Some(fd)) = (inner, outer.get(name).ok().and_then(sys::fd)) else {
                continue;
            };
            if !matches!(sys::lookup::<u32, u32>(fd, &generation), Ok(Some(_))) {
                continue;
            }
            let value = inner.fd().as_fd().as_raw_fd() as u32;
            match sys::update_one(fd, &generation, &value) {
                Ok(()) => return true,
                Err(e) => tracing::debug!("grace period through {name}: {e}"),
            }
        }
        false
    }

    /// Descriptors of the path maps, to read them back
    /// ([`super::PathMaps`]); `generation` is the one they were written for.
    pub fn path_maps(&self, generation: u32) -> std::io::Result<super::PathMaps> {
        let dup = |i: usize| {
            self.maps[i]
                .as_ref()
                .map(|m| m.fd().as_fd().try_clone_to_owned())
                .transpose()
        };
        Ok(super::PathMaps::new(generation, dup(EXACT)?, dup(PATHS)?))
    }

    /// The identity entry of `key`, if any.
    pub fn inode_rule(&self, key: &InodeKey) -> Option<InodeRule> {
        let map = self.maps[INODES].as_ref()?;
        sys::lookup(map.fd().as_fd(), key).ok().flatten()
    }
}

/// Empties slot `generation` of the rule maps: the kernel frees its inner
/// maps once no program holds them. Failures are logged (a slot the config
/// does not name is never read).
pub fn clear(outer: &MapSet, generation: u32) -> usize {
    // Side by side, as in `Generation::install`.
    std::thread::scope(|s| {
        let jobs: Vec<_> = RULE_MAPS
            .into_iter()
            .filter_map(|name| outer.get(name).ok().and_then(sys::fd).map(|fd| (name, fd)))
            .map(|(name, fd)| s.spawn(move || clear_one(fd, name, generation)))
            .collect();
        jobs.into_iter()
            .map(|j| j.join())
            .filter(|r| matches!(r, Ok(true)))
            .count()
    })
}

/// Empties one slot when it holds a map (a lookup costs no grace period).
fn clear_one(fd: std::os::fd::BorrowedFd<'_>, name: &str, generation: u32) -> bool {
    if !matches!(sys::lookup::<u32, u32>(fd, &generation), Ok(Some(_))) {
        return false;
    }
    match sys::delete(fd, &generation) {
        Ok(cleared) => cleared,
        Err(e) => {
            tracing::debug!("clearing generation {generation} of {name}: {e}");
            false
        }
    }
}

/// A path key's bytes: the generation, the path, zeros to the end.
pub(super) fn path_data(generation: u32, key: &[u8]) -> [u8; PATH_KEY_LEN] {
    let mut data = [0u8; PATH_KEY_LEN];
    data[0] = generation as u8;
    let n = key.len().min(PATH_KEY_LEN - 1);
    data[1..1 + n].copy_from_slice(&key[..n]);
    data
}

/// Writes every rule map but the exact paths' (`path_entries`: the
/// prefixes only).
fn write_others<'m>(
    set: &RuleSet,
    prefixes: &[crate::compile::PathEntry],
    generation: u32,
    w: &impl Fn(usize) -> Result<std::os::fd::BorrowedFd<'m>, BackendError>,
) -> Result<ApplyStats, BackendError> {
    let g = generation as u8;
    let mut stats = ApplyStats {
        path_entries: write(
            w(PATHS)?,
            names::PATH_RULES,
            prefixes.iter().map(|e| {
                let key = Key::new(8 + e.prefix_bits(), path_data(generation, e.key));
                (key, e.rules)
            }),
        )?,
        ..ApplyStats::default()
    };
    stats.inode_entries = write(
        w(INODES)?,
        names::INODE_RULES,
        set.inodes.iter().map(|(id, rule)| {
            let key = InodeKey {
                generation,
                dev: id.dev,
                ino: id.ino,
            };
            (key, *rule)
        }),
    )?;
    // Exempt is the process that has the pid now; none: nothing to exempt.
    let pids: Vec<(PidKey, u64)> = set
        .exempt_pids
        .iter()
        .filter_map(|&tgid| match crate::process::start_ticks(tgid) {
            Some(start) => Some((PidKey { generation, tgid }, start)),
            None => {
                tracing::warn!("exempt pid {tgid}: no such process; not exempted");
                None
            }
        })
        .collect();
    stats.exempt_pids = write(w(PIDS)?, names::EXEMPT_PIDS, pids)?;
    stats.net4_entries = write(
        w(NET4)?,
        names::NET4_RULES,
        set.net4.iter().map(|e| {
            let key =
                net_key::<NET4_KEY_LEN, 4>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            (key, e.rule)
        }),
    )?;
    stats.net6_entries = write(
        w(NET6)?,
        names::NET6_RULES,
        set.net6.iter().map(|e| {
            let key =
                net_key::<NET6_KEY_LEN, 16>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            (key, e.rule)
        }),
    )?;
    stats.domain_entries = write(
        w(DOMAINS)?,
        names::DOMAIN_RULES,
        set.domains.iter().map(|e| {
            let mut data = [0u8; DOMAIN_KEY_LEN];
            data[0] = g;
            let n = e.key.len().min(DOMAIN_KEY_LEN - 1);
            data[1..1 + n].copy_from_slice(&e.key[..n]);
            (Key::new(8 + e.bits, data), e.rule)
        }),
    )?;
    Ok(stats)
}

fn write<K: Pod, V: Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &'static str,
    entries: impl IntoIterator<Item = (K, V)>,
) -> Result<usize, BackendError> {
    sys::write_all(fd, entries).map_err(io(name, "map update"))
}
