//! The config, the agent's cgroups and exempt processes in the BPF maps
//! (rule sets: see [`super::generation`]).
use aya::{
    maps::{Array, HashMap},
    Pod,
};
use vardr_common::{Config, ExemptTask, InodeKey, CONFIG_SLOTS};

use super::{generation::Generation, objects::MapSet, BackendError};
use crate::{bpf::maps as names, compile::RuleSet};

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
pub fn exempt_by_binary(
    maps: &MapSet,
    rules: Option<&Generation>,
    pid: u32,
    start: u64,
    generation: u32,
) -> bool {
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
    rules
        .and_then(|g| g.inode_rule(&key))
        .is_some_and(|r| r.exempt != 0)
}

fn hash<'a, K: Pod, V: Pod>(
    maps: &'a mut MapSet,
    name: &'static str,
) -> Result<HashMap<&'a mut aya::maps::MapData, K, V>, BackendError> {
    let map = maps.get_mut(name)?;
    HashMap::try_from(map).map_err(merr(name))
}
