//! Writing rule sets and config into the BPF maps.
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie},
    Ebpf, Pod,
};
use vardr_common::{
    Config, InodeKey, InodeRule, PathRules, PidKey, RuleRef, NET4_KEY_LEN, NET6_KEY_LEN,
    NET_KEY_HEAD_BITS, PATH_KEY_LEN,
};

use super::BackendError;
use crate::{bpf::maps as names, compile::RuleSet};

/// Keys written for one generation, so they can be deleted later.
#[derive(Default)]
pub struct Written {
    paths: Vec<Key<[u8; PATH_KEY_LEN]>>,
    inodes: Vec<InodeKey>,
    pids: Vec<PidKey>,
    net4: Vec<Key<[u8; NET4_KEY_LEN]>>,
    net6: Vec<Key<[u8; NET6_KEY_LEN]>>,
}

/// Entries in force after an apply.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ApplyStats {
    pub path_entries: usize,
    pub inode_entries: usize,
    pub net4_entries: usize,
    pub net6_entries: usize,
    pub exempt_pids: usize,
}

impl Written {
    pub fn stats(&self) -> ApplyStats {
        ApplyStats {
            path_entries: self.paths.len(),
            inode_entries: self.inodes.len(),
            net4_entries: self.net4.len(),
            net6_entries: self.net6.len(),
            exempt_pids: self.pids.len(),
        }
    }
}

fn merr(name: &'static str) -> impl Fn(aya::maps::MapError) -> BackendError {
    move |source| BackendError::Map { name, source }
}

pub fn write_config(ebpf: &mut Ebpf, cfg: &Config) -> Result<(), BackendError> {
    let name = names::CONFIG;
    let map = ebpf.map_mut(name).ok_or(BackendError::MissingMap(name))?;
    let mut arr: Array<_, Config> = Array::try_from(map).map_err(merr(name))?;
    arr.set(0, *cfg, 0).map_err(merr(name))
}

fn lpm<'a, const N: usize, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<&'a mut aya::maps::MapData, [u8; N], V>, BackendError> {
    let map = ebpf.map_mut(name).ok_or(BackendError::MissingMap(name))?;
    LpmTrie::try_from(map).map_err(merr(name))
}

fn hash<'a, K: Pod, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut aya::maps::MapData, K, V>, BackendError> {
    let map = ebpf.map_mut(name).ok_or(BackendError::MissingMap(name))?;
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
    ebpf: &mut Ebpf,
    set: &RuleSet,
    generation: u32,
    w: &mut Written,
) -> Result<(), BackendError> {
    {
        let name = names::PATH_RULES;
        let mut m = lpm::<PATH_KEY_LEN, PathRules>(ebpf, name)?;
        for e in &set.paths {
            let mut data = [0u8; PATH_KEY_LEN];
            data[0] = generation as u8;
            data[1..1 + e.key.len()].copy_from_slice(&e.key);
            let key = Key::new(8 + e.prefix_bits(), data);
            m.insert(&key, e.rules, 0).map_err(merr(name))?;
            w.paths.push(key);
        }
    }
    {
        let name = names::INODE_RULES;
        let mut m = hash::<InodeKey, InodeRule>(ebpf, name)?;
        for (id, rule) in &set.inodes {
            let key = InodeKey {
                generation,
                dev: id.dev,
                ino: id.ino,
            };
            m.insert(key, *rule, 0).map_err(merr(name))?;
            w.inodes.push(key);
        }
    }
    {
        let name = names::EXEMPT_PIDS;
        let mut m = hash::<PidKey, u32>(ebpf, name)?;
        for &tgid in &set.exempt_pids {
            let key = PidKey { generation, tgid };
            m.insert(key, 1, 0).map_err(merr(name))?;
            w.pids.push(key);
        }
    }
    {
        let name = names::NET4_RULES;
        let mut m = lpm::<NET4_KEY_LEN, RuleRef>(ebpf, name)?;
        for e in &set.net4 {
            let key =
                net_key::<NET4_KEY_LEN, 4>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            m.insert(&key, e.rule, 0).map_err(merr(name))?;
            w.net4.push(key);
        }
    }
    {
        let name = names::NET6_RULES;
        let mut m = lpm::<NET6_KEY_LEN, RuleRef>(ebpf, name)?;
        for e in &set.net6 {
            let key =
                net_key::<NET6_KEY_LEN, 16>(generation, e.protocol, e.port, &e.addr, e.prefix_len);
            m.insert(&key, e.rule, 0).map_err(merr(name))?;
            w.net6.push(key);
        }
    }
    Ok(())
}

/// Removes entries; failures are logged (a leftover entry of an inactive
/// generation is never consulted).
pub fn delete(ebpf: &mut Ebpf, w: &Written) {
    fn log<T>(r: Result<T, aya::maps::MapError>, name: &str) {
        if let Err(e) = r {
            tracing::debug!("removing old entry from {name}: {e}");
        }
    }
    if let Ok(mut m) = lpm::<PATH_KEY_LEN, PathRules>(ebpf, names::PATH_RULES) {
        for k in &w.paths {
            log(m.remove(k), names::PATH_RULES);
        }
    }
    if let Ok(mut m) = hash::<InodeKey, InodeRule>(ebpf, names::INODE_RULES) {
        for k in &w.inodes {
            log(m.remove(k), names::INODE_RULES);
        }
    }
    if let Ok(mut m) = hash::<PidKey, u32>(ebpf, names::EXEMPT_PIDS) {
        for k in &w.pids {
            log(m.remove(k), names::EXEMPT_PIDS);
        }
    }
    if let Ok(mut m) = lpm::<NET4_KEY_LEN, RuleRef>(ebpf, names::NET4_RULES) {
        for k in &w.net4 {
            log(m.remove(k), names::NET4_RULES);
        }
    }
    if let Ok(mut m) = lpm::<NET6_KEY_LEN, RuleRef>(ebpf, names::NET6_RULES) {
        for k in &w.net6 {
            log(m.remove(k), names::NET6_RULES);
        }
    }
}
