//! A `task_file` iterator that tells the agent which identity the hooks see
//! for the files it holds open: for each descriptor of the process
//! `TARGET_TGID`, one record (fd, device, inode) computed by the very code
//! the hooks use (`identity.rs`). Userspace cannot compute it with `stat`
//! for overlay files (see `identity.rs`).
#![no_std]
#![no_main]

#[path = "identity.rs"]
mod identity;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_get_current_pid_tgid, bpf_seq_write},
    Global,
};
use vardr_common::KernelOffsets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// SAFETY: all-zero is a valid `KernelOffsets` (plain integers); the agent
// sets the real values at load.
#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(unsafe { core::mem::zeroed() });

/// The process whose descriptors are reported (the agent).
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);

/// `struct bpf_iter__task_file`: the iterator's context.
#[repr(C)]
struct TaskFileCtx {
    meta: *const BpfIterMeta,
    task: *const u8,
    fd: u32,
    file: *const u8,
}

/// `struct bpf_iter_meta` starts with the seq_file the output goes to.
#[repr(C)]
struct BpfIterMeta {
    seq: *mut seq_file,
}

/// One output record.
#[repr(C)]
struct Record {
    fd: u64,
    dev: u64,
    ino: u64,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn vardr_identity_fds(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const TaskFileCtx;
    // SAFETY: the kernel passes a `bpf_iter__task_file`. Each field is
    // loaded once (volatile): the verifier types a load of it as "maybe
    // null", so a null check holds only for the register it was made on.
    let (meta, task, fd, file) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx).meta),
            core::ptr::read_volatile(&raw const (*ctx).task),
            core::ptr::read_volatile(&raw const (*ctx).fd),
            core::ptr::read_volatile(&raw const (*ctx).file),
        )
    };
    if task.is_null() || file.is_null() || meta.is_null() {
        return 0;
    }
    let off = OFFSETS.load();
    let target = TARGET_TGID.load();
    // Only the reading process's descriptors (it is the agent: the
    // iterator runs in its read()).
    let me = (bpf_get_current_pid_tgid() >> 32) as u32;
    if me != target {
        return 0;
    }
    let Some(tgid) = identity::read::<u32>(task, off.task_tgid) else {
        return 0;
    };
    if tgid != target {
        return 0;
    }
    let Some(dentry) = identity::read::<*const u8>(file, off.file_f_path + off.path_dentry) else {
        return 0;
    };
    let real = identity::real_dentry(dentry, &off);
    let Some((dev, ino)) = identity::plain_key(real, &off) else {
        return 0;
    };
    let rec = Record {
        fd: u64::from(fd),
        dev: u64::from(dev),
        ino,
    };
    // SAFETY: `meta` is the kernel's, non-null; `rec` lives on the stack.
    unsafe {
        let seq = core::ptr::read_volatile(&raw const (*meta).seq);
        bpf_seq_write(
            seq,
            (&rec as *const Record).cast(),
            core::mem::size_of::<Record>() as u32,
        );
    }
    0
}
