//! Documents (JSON) and counters kept in bpffs beside the pinned programs:
//! bpffs holds only BPF objects, so a document lives in a standalone array
//! map of 4 KiB chunks (the first 8 bytes give its length). Their format
//! never changes with the layout version, so any agent can read any set's
//! metadata.
use std::path::Path;

use aya::maps::{Array, Map, MapData};

use super::PinError;

const CHUNK: usize = 4096;
const HEAD: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Chunk([u8; CHUNK]);

// SAFETY: a plain byte array; every bit pattern is valid.
unsafe impl aya::Pod for Chunk {}

fn map_err(path: &Path) -> impl Fn(aya::maps::MapError) -> PinError + '_ {
    move |e| PinError::Map(path.into(), e)
}

/// Writes `bytes` as a new map pinned at `path`, replacing any previous
/// one in a single rename (a reader sees the old or the new document).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), PinError> {
    let total = HEAD + bytes.len();
    let n = total.div_ceil(CHUNK) as u32;
    let mut arr: Array<MapData, Chunk> = Array::create(n, 0).map_err(map_err(path))?;
    let mut data = Vec::with_capacity(n as usize * CHUNK);
    data.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    data.extend_from_slice(bytes);
    data.resize(n as usize * CHUNK, 0);
    for (i, c) in data.chunks_exact(CHUNK).enumerate() {
        let mut chunk = Chunk([0; CHUNK]);
        chunk.0.copy_from_slice(c);
        arr.set(i as u32, chunk, 0).map_err(map_err(path))?;
    }
    // bpffs refuses names with a dot.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push("-new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    arr.pin(&tmp).map_err(|e| PinError::Pin(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| PinError::Io(path.into(), e))
}

/// Reads a document written by [`write`].
pub fn read(path: &Path) -> Result<Vec<u8>, PinError> {
    let data = MapData::from_pin(path).map_err(map_err(path))?;
    let arr: Array<MapData, Chunk> = Array::try_from(Map::Array(data)).map_err(map_err(path))?;
    let mut out = Vec::new();
    for i in 0..arr.len() {
        out.extend_from_slice(&arr.get(&i, 0).map_err(map_err(path))?.0);
    }
    let mut len = [0u8; HEAD];
    len.copy_from_slice(out.get(..HEAD).ok_or(PinError::Corrupt(path.into()))?);
    let len = u64::from_le_bytes(len) as usize;
    out.drain(..HEAD);
    if len > out.len() {
        return Err(PinError::Corrupt(path.into()));
    }
    out.truncate(len);
    Ok(out)
}

/// A pinned one-slot counter (a timestamp), updated in place.
pub struct Counter(Array<MapData, u64>);

impl Counter {
    pub fn create(path: &Path, value: u64) -> Result<Self, PinError> {
        let mut arr: Array<MapData, u64> = Array::create(1, 0).map_err(map_err(path))?;
        arr.set(0, value, 0).map_err(map_err(path))?;
        arr.pin(path).map_err(|e| PinError::Pin(path.into(), e))?;
        // `pin` consumed the handle: reopen it from the pin.
        Self::open(path)
    }

    pub fn open(path: &Path) -> Result<Self, PinError> {
        let data = MapData::from_pin(path).map_err(map_err(path))?;
        Ok(Self(
            Array::try_from(Map::Array(data)).map_err(map_err(path))?,
        ))
    }

    pub fn get(&self) -> Option<u64> {
        self.0.get(&0, 0).ok()
    }

    pub fn set(&mut self, v: u64) -> Result<(), aya::maps::MapError> {
        self.0.set(0, v, 0)
    }
}
