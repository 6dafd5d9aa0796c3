//! Paths of dentries the path hooks are given: built from the dentry names
//! up to the mount root and across mounts, as `d_path` would from the
//! global root (`bpf_d_path` is refused on these hooks: they are not in
//! the kernel's sleepable LSM hook list).
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;
use vardr_common::{Config, PathRules, EVENT_PATH_LEN, PATH_KEY_LEN};

use crate::{
    file::{path_rules, PathKey},
    maps::{EXEC_SCRATCH, NAME_SCRATCH},
    shared::{identity_walk, offsets, read, scalar},
};

/// Path components kept (deeper paths are matched by identity only).
pub const MAX_COMPONENTS: usize = 32;
/// Steps of the walk: components plus mount crossings.
const MAX_STEPS: usize = MAX_COMPONENTS + 8;

/// A dentry resolved for a decision: its path (as a path key) and the
/// rules found by path and by identity.
#[repr(C)]
pub struct Resolved {
    pub key: PathKey,
    /// Room for the last name read, which may run past the key.
    pub spill: [u8; PATH_KEY_LEN + 8],
    pub dentries: [u64; MAX_COMPONENTS],
    /// Path bytes in `key` with the NUL, 0 when unknown (too long, too deep).
    pub len: u32,
    pub _pad: u32,
    pub by_path: PathRules,
    pub by_identity: PathRules,
}

impl Resolved {
    /// The path key for an event, when the path is known.
    #[inline(always)]
    pub fn path(this: *const Resolved) -> Option<*const PathKey> {
        // SAFETY: `this` is a per-CPU scratch slot.
        if unsafe { (*this).len } > 0 {
            Some(this as *const PathKey)
        } else {
            None
        }
    }
}

/// Resolves `dentry`, seen through the mount `vfsmnt`, into scratch slot
/// `slot`.
#[inline(always)]
pub fn resolve(
    slot: u32,
    cfg: &Config,
    vfsmnt: *const u8,
    dentry: *const u8,
) -> Option<*mut Resolved> {
    let n = vardr_build_path(SCRATCH_NAME, slot, scalar(vfsmnt), scalar(dentry));
    let r = NAME_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: `r` is this CPU's scratch slot.
    unsafe {
        (*r).len = n;
        (*r).by_path = path_rules(r as *mut PathKey, cfg.generation, n);
        (*r).by_identity = identity_walk(dentry, cfg, false);
    }
    Some(r)
}

/// Writes the path of `dentry` seen through the mount `vfsmnt` (from the
/// global root) into `out` as a C string, using scratch slot `slot` of
/// [`EXEC_SCRATCH`]; returns whether it is known (not too long, not too
/// deep, readable). The event programs' twin of [`resolve`], with their
/// own scratch map: a policy hook that interrupts them cannot overwrite it.
#[inline(always)]
pub fn path_into(slot: u32, vfsmnt: *const u8, dentry: *const u8, out: *mut u8) -> bool {
    let n = vardr_build_path(SCRATCH_EXEC, slot, scalar(vfsmnt), scalar(dentry));
    let Some(r) = EXEC_SCRATCH.get_ptr_mut(slot) else {
        return false;
    };
    if n == 0 {
        return false;
    }
    // SAFETY: `r` is this CPU's scratch slot, `out` has EVENT_PATH_LEN
    // bytes; the key holds the generation byte, then the path and its NUL
    // (`n` bytes with the NUL, at most PATH_KEY_LEN - 1).
    unsafe {
        core::ptr::copy_nonoverlapping((*r).key.data.as_ptr().add(1), out, EVENT_PATH_LEN - 1);
        *out.add(EVENT_PATH_LEN - 1) = 0;
    }
    true
}

/// [`build_path`] into slot `slot` of [`NAME_SCRATCH`] or [`EXEC_SCRATCH`].
///
/// A global function: the kernel verifies it once per program, on its own,
/// instead of once per call with every state its caller reaches it in (a
/// hook resolving two paths cost the verifier up to 600 000 instructions,
/// seconds of every agent start on a slow machine).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_build_path(map: u32, slot: u32, vfsmnt: u64, dentry: u64) -> u32 {
    let r = if map == SCRATCH_EXEC {
        EXEC_SCRATCH.get_ptr_mut(slot)
    } else {
        NAME_SCRATCH.get_ptr_mut(slot)
    };
    match r {
        Some(r) => build_path(r, vfsmnt as *const u8, dentry as *const u8),
        None => 0,
    }
}

/// The scratch maps [`vardr_build_path`] writes to.
const SCRATCH_NAME: u32 = 0;
const SCRATCH_EXEC: u32 = 1;

/// Writes the path of `dentry` under `vfsmnt` into `r.key` after the
/// generation byte; returns its length with the NUL, or 0 when it is
/// longer than a key, deeper than [`MAX_COMPONENTS`], or unreadable.
///
/// The component count lives in the scratch slot and is read and written
/// through volatile accesses: the verifier then sees it as a bounded
/// unknown instead of a constant per path, so the walk's states merge
/// (with a register count it explores every (step, count) pair and every
/// exit separately, past its 1M instruction limit).
#[inline(always)]
fn build_path(r: *mut Resolved, vfsmnt: *const u8, dentry: *const u8) -> u32 {
    let off = offsets();
    // SAFETY: this CPU's scratch slot.
    let count = unsafe { core::ptr::addr_of_mut!((*r).len) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(count, 0) };
    let mut mnt = vfsmnt.wrapping_sub(off.mount_mnt as usize);
    let mut d = dentry;
    let mut at_root = false;
    for _ in 0..MAX_STEPS {
        let Some(root) = read::<*const u8>(mnt, off.mount_mnt + off.vfsmount_mnt_root) else {
            return 0;
        };
        if d == root {
            let Some(parent) = read::<*const u8>(mnt, off.mount_mnt_parent) else {
                return 0;
            };
            if parent == mnt || parent.is_null() {
                at_root = true;
                break;
            }
            let Some(mountpoint) = read::<*const u8>(mnt, off.mount_mnt_mountpoint) else {
                return 0;
            };
            d = mountpoint;
            mnt = parent;
            continue;
        }
        let Some(parent) = read::<*const u8>(d, off.dentry_d_parent) else {
            return 0;
        };
        if parent == d {
            at_root = true;
            break;
        }
        // SAFETY: this CPU's scratch slot; the index is checked and masked.
        unsafe {
            let n = core::ptr::read_volatile(count) as usize;
            if n >= MAX_COMPONENTS {
                return 0;
            }
            (*r).dentries[n & (MAX_COMPONENTS - 1)] = d as u64;
            core::ptr::write_volatile(count, (n + 1) as u32);
        }
        d = parent;
    }
    if !at_root {
        return 0;
    }
    // SAFETY: this CPU's scratch slot.
    let n = unsafe { core::ptr::read_volatile(count) } as usize;
    if n > MAX_COMPONENTS {
        return 0;
    }
    // SAFETY: this CPU's scratch slot.
    let data = unsafe { (*r).key.data.as_mut_ptr() };
    if n == 0 {
        // SAFETY: within the key.
        unsafe {
            *data.add(1) = b'/';
            *data.add(2) = 0;
        }
        return 2;
    }
    // Path bytes written after the generation byte, without the NUL.
    let mut pos: usize = 0;
    for i in 0..MAX_COMPONENTS {
        if i >= n {
            break;
        }
        // SAFETY: this CPU's scratch slot; the index is masked into range.
        let d = unsafe { (*r).dentries[(n - 1 - i) & (MAX_COMPONENTS - 1)] } as *const u8;
        let Some(name) = read::<*const u8>(d, off.dentry_d_name_name) else {
            return 0;
        };
        if pos > PATH_KEY_LEN - 4 {
            return 0;
        }
        let p = pos & 0xff;
        // SAFETY: at most 2 + 255 + PATH_KEY_LEN bytes into the slot, which
        // holds the key and the spill room after it; the name is read
        // through the probe helper.
        let got = unsafe {
            *data.add(1 + p) = b'/';
            bpf_probe_read_kernel_str(
                data.add(2 + p) as *mut c_void,
                PATH_KEY_LEN as u32,
                name as *const c_void,
            )
        };
        if got <= 0 {
            return 0;
        }
        pos = p + got as usize;
    }
    if pos + 1 > PATH_KEY_LEN - 1 {
        return 0;
    }
    (pos + 1) as u32
}
