//! Paths from dentry names: up to the mount root and across mounts, as
//! `d_path` would from the global root, where `bpf_d_path` is refused
//! (hooks outside the kernel's allow list). Shared by the agent's object
//! and the generic hooks' object.
use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel_str, maps::lpm_trie::Key};
use vardr_common::{KernelOffsets, PATH_KEY_LEN};

use crate::identity::read;

/// Path components kept (deeper paths are matched by identity only).
pub const MAX_COMPONENTS: usize = 32;
/// Steps of the walk: components plus mount crossings.
const MAX_STEPS: usize = MAX_COMPONENTS + 8;

/// A path being built: the key it ends up in (generation byte first), and
/// the dentries on the way.
#[repr(C)]
pub struct Walk {
    pub key: Key<[u8; PATH_KEY_LEN]>,
    /// Room for the last name read, which may run past the key.
    pub spill: [u8; PATH_KEY_LEN + 8],
    pub dentries: [u64; MAX_COMPONENTS],
    /// Path bytes in `key` with the NUL, 0 when unknown (too long, too deep).
    pub len: u32,
    pub _pad: u32,
}

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
pub fn build_path(r: *mut Walk, off: &KernelOffsets, vfsmnt: *const u8, dentry: *const u8) -> u32 {
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
