//! BPF system calls aya 0.14 has no API for: `BPF_MAP_UPDATE_BATCH` (many
//! entries per call when rule sets are large; kernels or maps without it
//! fall back to one update per entry), creating a standalone inner map,
//! and deleting an entry of a map of maps.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// The descriptor of a hash, LPM trie or array-of-maps map.
pub fn fd(map: &Map) -> Option<BorrowedFd<'_>> {
    match map {
        Map::HashMap(d) | Map::LpmTrie(d) | Map::ArrayOfMaps(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

/// The `map_create` member of `union bpf_attr` (up to the map's name; the
/// kernel takes the rest as zero).
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
}

const BPF_MAP_CREATE: libc::c_long = 0;

/// The shape of a map to create.
#[derive(Clone, Copy, Debug)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// The template's value is a number, not a struct (see [`sized_btf`]).
    pub scalar_value: bool,
}

/// Creates a map described by BTF, as the programs' inner map templates
/// are: Linux 6.1 refuses an inner map whose BTF-ness differs from its
/// template's (it compares the `bpf_timer` offset, "none" being -ENOENT
/// with BTF and -EINVAL without). The BTF is a minimal one of the right
/// sizes ([`sized_btf`]); `name` is cut to the kernel's 15 bytes.
pub fn create_map(shape: MapShape, name: &str) -> std::io::Result<OwnedFd> {
    let btf = load_btf(&sized_btf(
        shape.key_size,
        shape.value_size,
        shape.scalar_value,
    ))?;
    let mut attr = CreateAttr {
        map_type: shape.map_type,
        key_size: shape.key_size,
        value_size: shape.value_size,
        max_entries: shape.max_entries,
        map_flags: shape.flags,
        btf_fd: btf.as_raw_fd() as u32,
        btf_key_type_id: SIZED_KEY,
        btf_value_type_id: SIZED_VALUE,
        ..Default::default()
    };
    let n = name.len().min(attr.map_name.len() - 1);
    attr.map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: bpf(BPF_MAP_CREATE) reads the attributes above; no pointers.
    let fd = unsafe { bpf_fd(BPF_MAP_CREATE, &mut attr) }?;
    // SAFETY: a successful BPF_MAP_CREATE returns a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Type ids in [`sized_btf`]: the key struct and the value struct.
const SIZED_KEY: u32 = 3;
const SIZED_VALUE: u32 = 5;

/// BTF with two structs of `key_size` and `value_size` bytes (a byte array
/// each): [1] `u8`, [2] `u8[key_size]`, [3] `struct k { d }`, [4]
/// `u8[value_size]`, [5] `struct v { d }`. A struct key also satisfies
/// the LPM trie's BTF check. With `scalar_value`, [5] is an integer of
/// `value_size` bytes instead: Linux 6.1 also tells a number from a struct
/// without a timer (-EINVAL against -ENOENT) when it matches an inner map
/// with its template.
pub fn sized_btf(key_size: u32, value_size: u32, scalar_value: bool) -> Vec<u8> {
    const KIND_INT: u32 = 1;
    const KIND_ARRAY: u32 = 3;
    const KIND_STRUCT: u32 = 4;
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    // Names: "" at 0, "u8" at 1, "k" at 4, "v" at 6, "d" at 8.
    let strings = b"\0u8\0k\0v\0d\0";
    let mut types: Vec<u32> = vec![
        // [1] int u8: name, info, size, then encoding/offset/bits.
        1,
        info(KIND_INT, 0),
        1,
        8,
    ];
    for (name, size) in [(4, key_size), (6, value_size)] {
        // [2]/[4] array: no name, size 0; elem type, index type, count.
        types.extend([0, info(KIND_ARRAY, 0), 0, 1, 1, size]);
        let array = if name == 4 { 2 } else { 4 };
        if name == 6 && scalar_value {
            // [5] int of `size` bytes.
            types.extend([name, info(KIND_INT, 0), size, size * 8]);
        } else {
            // [3]/[5] struct of one member `d` at bit offset 0.
            types.extend([name, info(KIND_STRUCT, 1), size, 8, array, 0]);
        }
    }
    let type_len = (types.len() * 4) as u32;
    let mut out = Vec::with_capacity(24 + type_len as usize + strings.len());
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    for v in [24, 0, type_len, type_len, strings.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for t in types {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(strings);
    out
}

/// The `btf_load` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// Explicit, so the tail is zero: a kernel refuses an attribute whose
    /// bytes past the fields it knows are not (Linux 6.1 ends here).
    _zero: u32,
}

const BPF_BTF_LOAD: libc::c_long = 18;

/// Loads BTF into the kernel.
fn load_btf(btf: &[u8]) -> std::io::Result<OwnedFd> {
    let mut attr = BtfLoadAttr {
        btf: btf.as_ptr() as u64,
        btf_size: btf.len() as u32,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_BTF_LOAD) reads `btf_size` bytes from `btf`, which
    // outlives the call; no log buffer.
    let fd = unsafe { bpf_fd(BPF_BTF_LOAD, &mut attr) }?;
    // SAFETY: a successful BPF_BTF_LOAD returns a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// Deletes `key`; `Ok(false)` when there was no such entry.
pub fn delete<K: Pod>(fd: BorrowedFd<'_>, key: &K) -> std::io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_MAP_DELETE_ELEM) reads one key, which outlives the call.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// The value of `key`, if any.
pub fn lookup<K: Pod, V: Pod + Default>(fd: BorrowedFd<'_>, key: &K) -> std::io::Result<Option<V>> {
    let mut value = V::default();
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(&mut value) as u64,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_MAP_LOOKUP_ELEM) reads one key and writes one value
    // of the map's sizes, which the caller's types have (checked by the
    // map's creation with those sizes).
    match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
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
    // SAFETY: as this function's contract.
    unsafe { bpf_fd(cmd, attr) }.map(|_| ())
}

/// `bpf(cmd, attr, sizeof attr)`, returning what the call returned.
///
/// # Safety
/// As [`bpf`].
pub(crate) unsafe fn bpf_fd<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<i32> {
    // SAFETY: the caller vouches for `attr`; the kernel reads at most its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    };
    if r >= 0 {
        Ok(r as i32)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes all `entries`, [`CHUNK`] per call (one per call where the kernel
/// has no batch update). Returns how many were written.
pub fn write_all<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    entries: impl IntoIterator<Item = (K, V)>,
) -> std::io::Result<usize> {
    let mut written = 0;
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
        written += 1;
        keys.push(k);
        values.push(v);
        if keys.len() == CHUNK {
            flush(&mut keys, &mut values)?;
        }
    }
    if !keys.is_empty() {
        flush(&mut keys, &mut values)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_btf_has_the_layout_the_kernel_reads() {
        let b = sized_btf(260, 28, false);
        assert_eq!(&b[..4], &[0x9f, 0xeb, 1, 0]);
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let (hdr, type_len, str_off, str_len) = (word(4), word(12), word(16), word(20));
        assert_eq!(hdr, 24);
        // int (4 words), then per side an array (6) and a struct (6).
        assert_eq!(type_len, (4 + 2 * (6 + 6)) * 4);
        assert_eq!(str_off, type_len);
        assert_eq!(b.len(), (24 + type_len + str_len) as usize);
        let ty = |w: usize| word(24 + w * 4);
        // [3] struct k: size 260, its member's type is [2] of 260 bytes.
        assert_eq!(ty(4 + 6 + 2), 260);
        assert_eq!(ty(4 + 5), 260);
        // [5] struct v: size 28.
        assert_eq!(ty(4 + 12 + 6 + 2), 28);
        // A number instead: [5] is an int of 8 bytes, 64 bits.
        let b = sized_btf(8, 8, true);
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(word(12), (4 + 12 + 6 + 4) * 4);
        let ty = |w: usize| word(24 + w * 4);
        assert_eq!(ty(4 + 12 + 6 + 1) >> 24, 1);
        assert_eq!((ty(4 + 12 + 6 + 2), ty(4 + 12 + 6 + 3)), (8, 64));
    }
}
