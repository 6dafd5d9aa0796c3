//! Writing rule sets and config into the BPF maps.
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie},
    Pod,
};
use vardr_common::{
    Config, ExemptTask, InodeKey, InodeRule, PathRules, PidKey, RuleRef, CONFIG_SLOTS,
    DOMAIN_KEY_LEN, NET4_KEY_LEN, NET6_KEY_LEN, NET_KEY_HEAD_BITS, PATH_KEY_LEN,
};

use super::{batch, objects::MapSet, BackendError};
use crate::{bpf::maps as names, compile::RuleSet};

/// Path-sized keys as written: each key's prefix length and the bytes the
/// prefix covers (the rest of the 256-byte key is zeros), packed in one
/// buffer. A record of 200 000 paths then takes a few MiB instead of 52
/// (or 14 as one allocation per key).
#[derive(Default)]
struct PathKeys {
    bytes: Vec<u8>,
    /// Per key: where its bytes end in `bytes`, and its prefix length.
    ends: Vec<(u32, u16)>,
}

impl PathKeys {
    fn push(&mut self, k: &Key<[u8; PATH_KEY_LEN]>) {
        let n = (k.prefix_len() as usize).div_ceil(8).min(PATH_KEY_LEN);
        self.bytes.extend_from_slice(&k.data()[..n]);
        // At most 256 bytes per key and 2^17 keys: u32 offsets suffice;
        // prefix lengths are at most 2048 bits.
        self.ends
            .push((self.bytes.len() as u32, k.prefix_len() as u16));
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn keys(&self) -> impl Iterator<Item = Key<[u8; PATH_KEY_LEN]>> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(end, prefix_len)| {
            let end = end as usize;
            let mut data = [0u8; PATH_KEY_LEN];
            data[..end - start].copy_from_slice(&self.bytes[start..end]);
            start = end;
            Key::new(u32::from(prefix_len), data)
        })
    }
}

/// Keys written for one generation, so they can be deleted later.
#[derive(Default)]
pub struct Written {
    paths: PathKeys,
    inodes: Vec<InodeKey>,
    pids: Vec<PidKey>,
    net4: Vec<Key<[u8; NET4_KEY_LEN]>>,
    net6: Vec<Key<[u8; NET6_KEY_LEN]>>,
    /// Domain keys have the path keys' size: recorded the same way.
    domains: PathKeys,
}

/// Entries in force after an apply.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ApplyStats {
    pub path_entries: usize,
    pub inode_entries: usize,
    pub net4_entries: usize,
    pub net6_entries: usize,
    pub domain_entries: usize,
    pub exempt_pids: usize,
}

impl Written {
    pub fn stats(&self) -> ApplyStats {
        ApplyStats {
            path_entries: self.paths.len(),
            inode_entries: self.inodes.len(),
            net4_entries: self.net4.len(),
            net6_entries: self.net6.len(),
            domain_entries: self.domains.len(),
            exempt_pids: self.pids.len(),
        }
    }
}

fn merr(name: &'static str) -> impl Fn(aya::maps::MapError) -> BackendError {
    move |source| BackendError::Map { name, source }
}

/// Writes `cfg` into config slot `slot` (not the one in force).
pub fn write_config(maps: &mut MapSet, slot: u32, cfg: &Config) -> Result<(), BackendError> {
    let name = names::CONFIG;
    let map = maps.get_mut(name)?;
    let mut arr: Array<_, Config> = Array::try_from(map).map_err(merr(name))?;
    arr.set(slot % CONFIG_SLOTS, *cfg, 0).map_err(merr(name))
}

/// Records the cgroups above the agent's (replacing what an earlier agent
/// of an adopted set recorded).
pub fn write_agent_above(maps: &mut MapSet, ids: &[u64]) -> Result<(), BackendError> {
    let name = names::AGENT_ABOVE;
    let mut m: HashMap<_, u64, u32> = HashMap::try_from(maps.get_mut(name)?).map_err(merr(name))?;
    let old: Vec<u64> = m.keys().filter_map(Result::ok).collect();
    for k in old.iter().filter(|k| !ids.contains(k)) {
        m.remove(k).map_err(merr(name))?;
    }
    for id in ids {
        m.insert(id, 1, 0).map_err(merr(name))?;
    }
    Ok(())
}

/// Puts config slot `slot` in force: one 4-byte map write.
pub fn select_config(maps: &mut MapSet, slot: u32) -> Result<(), BackendError> {
    let name = names::CONFIG_SLOT;
    let map = maps.get_mut(name)?;
    let mut arr: Array<_, u32> = Array::try_from(map).map_err(merr(name))?;
    arr.set(0, slot % CONFIG_SLOTS, 0).map_err(merr(name))
}

/// The config slot in force.
pub fn selected_config(maps: &MapSet) -> Result<u32, BackendError> {
    let name = names::CONFIG_SLOT;
    let arr: Array<_, u32> = Array::try_from(maps.get(name)?).map_err(merr(name))?;
    Ok(arr.get(&0, 0).map_err(merr(name))? % CONFIG_SLOTS)
}

/// The config in slot `slot`.
pub fn read_config(maps: &MapSet, slot: u32) -> Result<Config, BackendError> {
    let name = names::CONFIG;
    let arr: Array<_, Config> = Array::try_from(maps.get(name)?).map_err(merr(name))?;
    arr.get(&(slot % CONFIG_SLOTS), 0).map_err(merr(name))
}

/// Records running processes that execute an exempt binary (by what
/// `/proc/PID/exe` names: they were exec'd before the kernel side could
/// see it, at agent start or before a reload that made the binary
/// exempt). Processes exec'd from now on are recorded by the kernel at
/// exec. Returns how many were recorded.
pub fn seed_exempt_tasks(maps: &mut MapSet, set: &RuleSet) -> Result<usize, BackendError> {
    if !set.has_exempt_binaries {
        return Ok(0);
    }
    let exempt: std::collections::HashSet<(u32, u64)> = set
        .inodes
        .iter()
        .filter(|(_, r)| r.exempt != 0)
        .map(|(id, _)| (id.dev, id.ino))
        .collect();
    let name = names::EXEMPT_TASKS;
    let mut m = hash::<u32, ExemptTask>(maps, name)?;
    let mut n = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Ok(0);
    };
    let procs: Vec<(u32, u64, String)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter_map(|pid| {
            crate::process::start_ticks(pid).map(|start| (pid, start, format!("/proc/{pid}/exe")))
        })
        .collect();
    let exes: Vec<&str> = procs.iter().map(|(_, _, exe)| exe.as_str()).collect();
    let found = crate::compile::IdentityLookup::new().of_many(&exes);
    for ((pid, start, _), ids) in procs.iter().zip(found) {
        let (pid, start) = (*pid, *start);
        let Ok(ids) = ids else {
            continue;
        };
        let Some(id) = ids.iter().find(|i| exempt.contains(&(i.dev, i.ino))) else {
            continue;
        };
        // The pid must still be the process whose binary was read.
        if crate::process::start_ticks(pid) != Some(start) {
            continue;
        }
        let t = ExemptTask {
            start_ticks: start,
            dev: id.dev,
            _pad: 0,
            ino: id.ino,
        };
        m.insert(pid, t, 0).map_err(merr(name))?;
        n += 1;
    }
    Ok(n)
}

/// See [`super::Enforcer::exempt_by_binary`]; a map that cannot be read
/// exempts nobody.
pub fn exempt_by_binary(maps: &MapSet, pid: u32, start: u64, generation: u32) -> bool {
    let task = maps
        .get(names::EXEMPT_TASKS)
        .ok()
        .and_then(|m| HashMap::<_, u32, ExemptTask>::try_from(m).ok())
        .and_then(|m| m.get(&pid, 0).ok());
    let Some(t) = task.filter(|t| t.start_ticks == start) else {
        return false;
    };
    let key = InodeKey {
        generation,
        dev: t.dev,
        ino: t.ino,
    };
    maps.get(names::INODE_RULES)
        .ok()
        .and_then(|m| HashMap::<_, InodeKey, InodeRule>::try_from(m).ok())
        .and_then(|m| m.get(&key, 0).ok())
        .is_some_and(|r| r.exempt != 0)
}

fn lpm<'a, const N: usize, V: Pod>(
    maps: &'a mut MapSet,
    name: &'static str,
) -> Result<LpmTrie<&'a mut aya::maps::MapData, [u8; N], V>, BackendError> {
    let map = maps.get_mut(name)?;
    LpmTrie::try_from(map).map_err(merr(name))
}

fn hash<'a, K: Pod, V: Pod>(
    maps: &'a mut MapSet,
    name: &'static str,
) -> Result<HashMap<&'a mut aya::maps::MapData, K, V>, BackendError> {
    let map = maps.get_mut(name)?;
    HashMap::try_from(map).map_err(merr(name))
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

/// Writes every entry of `set` under `generation`, recording each key in
/// `w` as it goes, so that on error the caller can remove what was written.
pub fn write_rules(
    maps: &mut MapSet,
    set: &RuleSet,
    generation: u32,
    w: &mut Written,
) -> Result<(), BackendError> {
    {
        let name = names::PATH_RULES;
        let entries = set.paths.iter().map(|e| {
            let mut data = [0u8; PATH_KEY_LEN];
            data[0] = generation as u8;
            data[1..1 + e.key.len()].copy_from_slice(&e.key);
            (Key::new(8 + e.prefix_bits(), data), e.rules)
        });
        batched(maps, name, entries, |k| w.paths.push(k))?;
    }
    {
        let name = names::INODE_RULES;
        let entries = set.inodes.iter().map(|(id, rule)| {
            let key = InodeKey {
                generation,
                dev: id.dev,
                ino: id.ino,
            };
            (key, *rule)
        });
        batched(maps, name, entries, |k| w.inodes.push(*k))?;
    }
    {
        let name = names::EXEMPT_PIDS;
        let mut m = hash::<PidKey, u64>(maps, name)?;
        for &tgid in &set.exempt_pids {
            // Exempt is the process that has the pid now; none: nothing to exempt.
            let Some(start) = crate::process::start_ticks(tgid) else {
                tracing::warn!("exempt pid {tgid}: no such process; not exempted");
                continue;
            };
            let key = PidKey { generation, tgid };
            m.insert(key, start, 0).map_err(merr(name))?;
            w.pids.push(key);
        }
    }
    {
        let name = names::NET4_RULES;
        let entries = set.net4.iter().map(|e| {
            let key =
                net_key::<NET4_KEY_LEN, 4>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            (key, e.rule)
        });
        batched(maps, name, entries, |k| w.net4.push(*k))?;
    }
    {
        let name = names::NET6_RULES;
        let entries = set.net6.iter().map(|e| {
            let key =
                net_key::<NET6_KEY_LEN, 16>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            (key, e.rule)
        });
        batched(maps, name, entries, |k| w.net6.push(*k))?;
    }
    {
        let name = names::DOMAIN_RULES;
        let entries = set.domains.iter().map(|e| {
            let mut data = [0u8; DOMAIN_KEY_LEN];
            data[0] = generation as u8;
            let n = e.key.len().min(DOMAIN_KEY_LEN - 1);
            data[1..1 + n].copy_from_slice(&e.key[..n]);
            (Key::new(8 + e.bits, data), e.rule)
        });
        batched(maps, name, entries, |k| w.domains.push(k))?;
    }
    Ok(())
}

/// Writes a rule map's entries many per system call (see [`batch`]).
fn batched<K: Pod, V: Pod>(
    maps: &mut MapSet,
    name: &'static str,
    entries: impl IntoIterator<Item = (K, V)>,
    record: impl FnMut(&K),
) -> Result<(), BackendError> {
    let map = maps.get_mut(name)?;
    let fd = batch::fd(map).ok_or_else(|| {
        BackendError::Io(
            format!("{name}: not a hash or LPM trie map"),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    batch::write_all(fd, entries, record)
        .map_err(|e| BackendError::Io(format!("{name}: map update"), e))
}

/// Removes entries; failures are logged (a leftover entry of an inactive
/// generation is never consulted).
pub fn delete(maps: &mut MapSet, w: &Written) {
    fn log<T>(r: Result<T, aya::maps::MapError>, name: &str) {
        if let Err(e) = r {
            tracing::debug!("removing old entry from {name}: {e}");
        }
    }
    if let Ok(mut m) = lpm::<PATH_KEY_LEN, PathRules>(maps, names::PATH_RULES) {
        for k in w.paths.keys() {
            log(m.remove(&k), names::PATH_RULES);
        }
    }
    if let Ok(mut m) = hash::<InodeKey, InodeRule>(maps, names::INODE_RULES) {
        for k in &w.inodes {
            log(m.remove(k), names::INODE_RULES);
        }
    }
    if let Ok(mut m) = hash::<PidKey, u64>(maps, names::EXEMPT_PIDS) {
        for k in &w.pids {
            log(m.remove(k), names::EXEMPT_PIDS);
        }
    }
    if let Ok(mut m) = lpm::<NET4_KEY_LEN, RuleRef>(maps, names::NET4_RULES) {
        for k in &w.net4 {
            log(m.remove(k), names::NET4_RULES);
        }
    }
    if let Ok(mut m) = lpm::<NET6_KEY_LEN, RuleRef>(maps, names::NET6_RULES) {
        for k in &w.net6 {
            log(m.remove(k), names::NET6_RULES);
        }
    }
    if let Ok(mut m) = lpm::<DOMAIN_KEY_LEN, RuleRef>(maps, names::DOMAIN_RULES) {
        for k in w.domains.keys() {
            log(m.remove(&k), names::DOMAIN_RULES);
        }
    }
}

/// The entries of an adopted set: those of `generation` (in force) are
/// recorded for the next apply to delete; those of the other generation
/// are what a reload interrupted by the agent's death left behind, never
/// consulted, and deleted now. Returns the record and how many were deleted.
pub fn scan(maps: &mut MapSet, generation: u32) -> Result<(Written, usize), BackendError> {
    let mut w = Written::default();
    let mut stale = Written::default();
    let g = generation as u8;
    let name = names::PATH_RULES;
    for k in lpm::<PATH_KEY_LEN, PathRules>(maps, name)?.keys() {
        let k = k.map_err(merr(name))?;
        if k.data()[0] == g {
            &mut w.paths
        } else {
            &mut stale.paths
        }
        .push(&k);
    }
    let name = names::INODE_RULES;
    let keys = hash::<InodeKey, InodeRule>(maps, name)?.keys().collect();
    split(
        name,
        keys,
        |k| k.generation == generation,
        &mut w.inodes,
        &mut stale.inodes,
    )?;
    let name = names::EXEMPT_PIDS;
    let keys = hash::<PidKey, u64>(maps, name)?.keys().collect();
    split(
        name,
        keys,
        |k| k.generation == generation,
        &mut w.pids,
        &mut stale.pids,
    )?;
    let name = names::NET4_RULES;
    let keys = lpm::<NET4_KEY_LEN, RuleRef>(maps, name)?.keys().collect();
    split(
        name,
        keys,
        |k| k.data()[0] == g,
        &mut w.net4,
        &mut stale.net4,
    )?;
    let name = names::NET6_RULES;
    let keys = lpm::<NET6_KEY_LEN, RuleRef>(maps, name)?.keys().collect();
    split(
        name,
        keys,
        |k| k.data()[0] == g,
        &mut w.net6,
        &mut stale.net6,
    )?;
    let name = names::DOMAIN_RULES;
    for k in lpm::<DOMAIN_KEY_LEN, RuleRef>(maps, name)?.keys() {
        let k = k.map_err(merr(name))?;
        if k.data()[0] == g {
            &mut w.domains
        } else {
            &mut stale.domains
        }
        .push(&k);
    }
    let s = stale.stats();
    let n = s.path_entries
        + s.inode_entries
        + s.net4_entries
        + s.net6_entries
        + s.domain_entries
        + s.exempt_pids;
    delete(maps, &stale);
    Ok((w, n))
}

/// Sorts the keys of one map into those of the generation in force and the rest.
fn split<K>(
    name: &'static str,
    keys: Vec<Result<K, aya::maps::MapError>>,
    current: impl Fn(&K) -> bool,
    ours: &mut Vec<K>,
    stale: &mut Vec<K>,
) -> Result<(), BackendError> {
    for k in keys {
        let k = k.map_err(merr(name))?;
        if current(&k) { &mut *ours } else { &mut *stale }.push(k);
    }
    Ok(())
}
