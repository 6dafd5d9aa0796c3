//! The kernel objects an enforcer works with: its maps by name, and what
//! keeps its programs attached — either the programs it loaded itself, or
//! the links of a pinned set it adopted from an earlier agent.
use std::{collections::HashMap, path::Path};

use aya::{
    maps::{Map, MapData},
    programs::links::{FdLink, PinnedLink},
    Ebpf,
};

use super::BackendError;

/// Maps by name (taken out of the loaded object, or opened from pins).
#[derive(Default)]
pub struct MapSet(HashMap<String, Map>);

impl MapSet {
    /// Moves every map out of `ebpf` (the programs keep their own
    /// references in the kernel).
    pub fn take_all(ebpf: &mut Ebpf) -> Self {
        let names: Vec<String> = ebpf.maps().map(|(n, _)| n.to_string()).collect();
        Self(
            names
                .into_iter()
                .filter_map(|n| ebpf.take_map(&n).map(|m| (n, m)))
                .collect(),
        )
    }

    /// Opens every map pinned in `dir` (file name = map name).
    pub fn from_pins(dir: &Path) -> Result<Self, BackendError> {
        let io = |e| BackendError::Io(format!("reading {}", dir.display()), e);
        let mut out = HashMap::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let map = MapData::from_pin(e.path())
                .and_then(Map::from_map_data)
                .map_err(|source| BackendError::PinnedMap {
                    path: e.path(),
                    source,
                })?;
            out.insert(name, map);
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &'static str) -> Result<&Map, BackendError> {
        self.0.get(name).ok_or(BackendError::MissingMap(name))
    }

    pub fn get_mut(&mut self, name: &'static str) -> Result<&mut Map, BackendError> {
        self.0.get_mut(name).ok_or(BackendError::MissingMap(name))
    }

    pub fn take(&mut self, name: &'static str) -> Result<Map, BackendError> {
        self.0.remove(name).ok_or(BackendError::MissingMap(name))
    }

    /// Second handles on the maps named: another thread writes through
    /// them while this set keeps serving.
    pub fn handles(&self, names: &[&'static str]) -> Result<Self, BackendError> {
        let mut out = HashMap::new();
        for &name in names {
            let fd = super::sys::fd(self.get(name)?)
                .ok_or(BackendError::MissingMap(name))?
                .try_clone_to_owned()
                .map_err(|e| BackendError::Io(format!("dup {name}"), e))?;
            let map = MapData::from_fd(fd)
                .and_then(Map::from_map_data)
                .map_err(|source| BackendError::Map { name, source })?;
            out.insert(name.to_string(), map);
        }
        Ok(Self(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Map)> {
        self.0.iter().map(|(n, m)| (n.as_str(), m))
    }
}

/// What keeps the programs attached. Dropping it detaches them, unless
/// their links are pinned.
pub enum Programs {
    /// Loaded and attached by this agent.
    Loaded(Box<Ebpf>),
    /// Attached by an earlier agent; held through its pinned links.
    Adopted(Vec<FdLink>),
}

impl Programs {
    /// Opens every link pinned in `dir`: held open, they stay attached
    /// even once their pins are removed.
    pub fn adopt(dir: &Path) -> Result<Self, BackendError> {
        let io = |e| BackendError::Io(format!("reading {}", dir.display()), e);
        let mut links = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let path = e.map_err(io)?.path();
            let link = PinnedLink::from_pin(&path).map_err(|source| BackendError::PinnedLink {
                path: path.clone(),
                source,
            })?;
            links.push(FdLink::from(link));
        }
        Ok(Self::Adopted(links))
    }
}
