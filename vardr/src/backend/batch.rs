//! `BPF_MAP_UPDATE_BATCH`: many entries per system call when rule sets are
//! large (aya has no batch API). Kernels or maps without it fall back to
//! one update per entry.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{maps::Map, Pod};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Entries per call: keys and values of one chunk stay small in memory.
pub const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The descriptor of a hash or LPM trie map.
pub fn fd(map: &Map) -> Option<BorrowedFd<'_>> {
    match map {
        Map::HashMap(d) | Map::LpmTrie(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

/// Writes `keys[i] -> values[i]` (same length) in one call. `Ok(false)`
/// when the kernel has no batch update for this map: nothing was written.
pub fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> std::io::Result<bool> {
    debug_assert_eq!(keys.len(), values.len());
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_MAP_UPDATE_BATCH) reads `count` keys and values from
    // the two slices, which outlive the call, and writes only `count`.
    let Err(e) = (unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }) else {
        return Ok(true);
    };
    match e.raw_os_error() {
        // No batch operations for this map (ENOTSUPP is 524): refused
        // before any entry was written.
        Some(libc::EOPNOTSUPP | 524) => Ok(false),
        // A kernel before 5.6 does not know the command: EINVAL, and the
        // count it would have written back (entries done) is untouched.
        Some(libc::EINVAL) if attr.count as usize == keys.len() && !keys.is_empty() => Ok(false),
        _ => Err(e),
    }
}

/// The `elem` member of `union bpf_attr` (`BPF_MAP_UPDATE_ELEM`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// Writes one entry.
pub fn update_one<K: Pod, V: Pod>(fd: BorrowedFd<'_>, key: &K, value: &V) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_ref(value) as u64,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_MAP_UPDATE_ELEM) reads one key and one value, which
    // outlive the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` expects, and every
/// pointer in it valid for what the kernel reads or writes during the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: the caller vouches for `attr`; the kernel reads at most its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes all `entries`, [`CHUNK`] per call (one per call where the kernel
/// has no batch update); `record` sees each key before it is tried, so a
/// caller can remove what an error left half written.
pub fn write_all<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    entries: impl IntoIterator<Item = (K, V)>,
    mut record: impl FnMut(&K),
) -> std::io::Result<()> {
    let mut keys = Vec::with_capacity(CHUNK);
    let mut values = Vec::with_capacity(CHUNK);
    let mut batched = true;
    let mut flush = |keys: &mut Vec<K>, values: &mut Vec<V>| -> std::io::Result<()> {
        if batched && !update(fd, keys, values)? {
            batched = false;
        }
        if !batched {
            for (k, v) in keys.iter().zip(values.iter()) {
                update_one(fd, k, v)?;
            }
        }
        keys.clear();
        values.clear();
        Ok(())
    };
    for (k, v) in entries {
        record(&k);
        keys.push(k);
        values.push(v);
        if keys.len() == CHUNK {
            flush(&mut keys, &mut values)?;
        }
    }
    if !keys.is_empty() {
        flush(&mut keys, &mut values)?;
    }
    Ok(())
}
