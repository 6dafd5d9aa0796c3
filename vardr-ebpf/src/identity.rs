//! The identity (device, inode) the identity maps are keyed on, shared by
//! the agent's hooks and the iterator that tells userspace what the hooks
//! will see for a file (`identity_iter.rs`).
//!
//! On an overlay whose layers lie on different file systems (without
//! `xino=on`), the kernel gives every layer's files the overlay's device and
//! their own inode numbers, so files of two layers can share an overlay
//! (device, inode). So a dentry of an overlay stands for its real one: the
//! (top) lower layer's when it has one (the file `stat` reports, before
//! and after a copy-up), else the upper layer's; and the identity walk goes
//! up the real dentry's own directories. That also keeps the rules of a
//! governed file or directory that is a layer of a new overlay.
//!
//! The mapping is done once, before the walk's loop: the verifier explores
//! every branch of a loop body on every iteration.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use vardr_common::{KernelOffsets, OVERLAYFS_SUPER_MAGIC, OVL_STACK_IN_DENTRY, OVL_STACK_IN_INODE};

/// Reads a kernel value at `base + off`, or `None` if the read faults.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }.ok()
}

/// (device, inode) of a dentry's inode, without any mapping.
#[inline(always)]
pub fn plain_key(dentry: *const u8, off: &KernelOffsets) -> Option<(u32, u64)> {
    let inode: *const u8 = read(dentry, off.dentry_d_inode)?;
    let ino: u64 = read(inode, off.inode_i_ino)?;
    let sb: *const u8 = read(inode, off.inode_i_sb)?;
    let dev: u32 = read(sb, off.super_block_s_dev)?;
    Some((dev, ino))
}

/// The dentry the identity of `dentry` is read from: for an overlay's, its
/// real one (an overlay's layer can be on an overlay itself: the kernel
/// stacks two deep at most); any other dentry itself.
#[inline(always)]
pub fn real_dentry(dentry: *const u8, off: &KernelOffsets) -> *const u8 {
    let once = real_once(dentry, off);
    if once == dentry {
        return dentry;
    }
    real_once(once, off)
}

/// The upper and the (top) lower dentry of an overlay's dentry (null where
/// there is none, both null for any other dentry).
#[inline(always)]
pub fn layers(dentry: *const u8, off: &KernelOffsets) -> (*const u8, *const u8) {
    let none = (core::ptr::null(), core::ptr::null());
    let kind = off.ovl_lower_kind;
    if kind != OVL_STACK_IN_DENTRY && kind != OVL_STACK_IN_INODE {
        return none;
    }
    let inode = match read::<*const u8>(dentry, off.dentry_d_inode) {
        Some(i) if !i.is_null() => i,
        _ => return none,
    };
    let Some(sb) = read::<*const u8>(inode, off.inode_i_sb) else {
        return none;
    };
    if read::<u64>(sb, off.super_block_s_magic) != Some(OVERLAYFS_SUPER_MAGIC) {
        return none;
    }
    let oi = inode.wrapping_sub(off.ovl_inode_vfs_inode as usize);
    let entry = if kind == OVL_STACK_IN_INODE {
        read::<*const u8>(oi, off.ovl_inode_oe)
    } else {
        read::<*const u8>(dentry, off.dentry_d_fsdata)
    };
    let mut lower = core::ptr::null();
    if let Some(oe) = entry.filter(|e| !e.is_null()) {
        if read::<u32>(oe, off.ovl_entry_numlower).is_some_and(|n| n > 0) {
            lower = read::<*const u8>(oe, off.ovl_entry_lower_dentry).unwrap_or(lower);
        }
    }
    let upper = read::<*const u8>(oi, off.ovl_inode_upper).unwrap_or(core::ptr::null());
    (upper, lower)
}

#[inline(always)]
fn real_once(dentry: *const u8, off: &KernelOffsets) -> *const u8 {
    let (upper, lower) = layers(dentry, off);
    if !lower.is_null() {
        lower
    } else if !upper.is_null() {
        upper
    } else {
        dentry
    }
}
