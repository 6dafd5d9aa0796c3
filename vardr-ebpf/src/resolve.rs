//! Paths of dentries the path hooks are given: built from the dentry names
//! up to the mount root and across mounts, as `d_path` would from the
//! global root (`bpf_d_path` is refused on these hooks: they are not in
//! the kernel's sleepable LSM hook list).
use vardr_common::{Config, PathRules, EVENT_PATH_LEN};

use crate::{
    file::{path_rules, PathKey},
    maps::{EXEC_SCRATCH, NAME_SCRATCH},
    path_walk::{build_path, Walk},
    shared::{identity_walk, offsets, scalar},
};

/// A dentry resolved for a decision: its path (as a path key) and the
/// rules found by path and by identity.
#[repr(C)]
pub struct Resolved {
    pub walk: Walk,
    pub by_path: PathRules,
    pub by_identity: PathRules,
}

impl Resolved {
    /// The path key for an event, when the path is known.
    #[inline(always)]
    pub fn path(this: *const Resolved) -> Option<*const PathKey> {
        // SAFETY: `this` is a per-CPU scratch slot.
        if unsafe { (*this).walk.len } > 0 {
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
        (*r).walk.len = n;
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
        core::ptr::copy_nonoverlapping((*r).walk.key.data.as_ptr().add(1), out, EVENT_PATH_LEN - 1);
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
        // SAFETY: `walk` is the slot's first field.
        Some(r) => build_path(
            unsafe { core::ptr::addr_of_mut!((*r).walk) },
            &offsets(),
            vfsmnt as *const u8,
            dentry as *const u8,
        ),
        None => 0,
    }
}

/// The scratch maps [`vardr_build_path`] writes to.
const SCRATCH_NAME: u32 = 0;
const SCRATCH_EXEC: u32 = 1;
