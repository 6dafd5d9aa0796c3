//! Executable mappings of files, checked as an exec of the file
//! (`lsm/mmap_file`, `lsm/file_mprotect`, EACCES): the dynamic loader run
//! on a denied binary (`ld.so /path/denied`) maps it without an exec.
//! Only `exec` denies act here (alerts and observations stay with the
//! exec itself), and a process mapping its own program (which the exec
//! already decided) is skipped.
use aya_ebpf::{bindings::path, helpers::bpf_d_path, macros::lsm, programs::LsmContext};
use vardr_common::{Action, BackendKind, Config, Hook, Operation, PathRules, PATH_KEY_LEN};

use crate::{
    file::{path_rules, unknown_path_rules, PathKey},
    maps::PATH_SCRATCH,
    resolve::{resolve, Resolved},
    shared::{
        conclude_op, config, eacces, governed, hook_bit, identity_rules, offsets, pick, read,
    },
};

const PROT_EXEC: u64 = 0x4;
const VM_EXEC: u64 = 0x4;

/// The inode behind a `struct file *`.
#[inline(always)]
fn inode_of(file: *const u8) -> Option<*const u8> {
    let off = offsets();
    let dentry: *const u8 = read(file, off.file_f_path + off.path_dentry)?;
    read(dentry, off.dentry_d_inode)
}

/// Whether `file` is the current process's own program (`mm->exe_file`).
#[inline(always)]
fn is_own_program(file: *const u8) -> bool {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    let Some(mm) = read::<*const u8>(task, off.task_mm) else {
        return false;
    };
    let Some(exe) = read::<*const u8>(mm, off.mm_exe_file) else {
        return false;
    };
    if exe.is_null() {
        return false;
    }
    match (inode_of(exe), inode_of(file)) {
        (Some(a), Some(b)) => !a.is_null() && a == b,
        _ => false,
    }
}

/// Whether exec rules can apply to mapping `file` executable here.
#[inline(always)]
fn applies(cfg: &Config, file: *const u8) -> bool {
    !file.is_null() && governed(cfg, hook_bit(Hook::Exec)) && !is_own_program(file)
}

/// Reports and returns whether to block, for an exec deny only.
#[inline(always)]
fn decide(
    cfg: &Config,
    by_path: &PathRules,
    by_identity: &PathRules,
    op: Operation,
    prot: u32,
    path: Option<*const PathKey>,
) -> bool {
    let rule = pick(by_path, by_identity, Hook::Exec);
    rule.action == Action::Deny as u32
        && conclude_op(cfg, Hook::Exec, &rule, op, prot, path, BackendKind::Lsm)
}

#[lsm(hook = "mmap_file")]
pub fn vardr_mmap_file(ctx: LsmContext) -> i32 {
    // mmap_file(struct file *file, unsigned long reqprot, unsigned long
    // prot, unsigned long flags), then the previous verdict.
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !applies(cfg, file) {
        return 0;
    }
    let by_identity = identity_rules(file, cfg);
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let off = offsets();
    // SAFETY: `file` is the hook's trusted, non-null `struct file *`,
    // `f_path` its offset from BTF; the buffer is this CPU's scratch key
    // after the generation byte.
    let n = unsafe {
        bpf_d_path(
            file.add(off.file_f_path as usize) as *mut path,
            (*key).data.as_mut_ptr().add(1) as *mut _,
            (PATH_KEY_LEN - 1) as u32,
        )
    };
    let n = n.max(0) as u32;
    let by_path = if n > 1 {
        path_rules(key, cfg.generation, n)
    } else {
        unknown_path_rules(key, cfg.generation)
    };
    let path = (n > 1).then_some(key as *const PathKey);
    if decide(
        cfg,
        &by_path,
        &by_identity,
        Operation::MmapExec,
        prot as u32,
        path,
    ) {
        eacces()
    } else {
        0
    }
}

#[lsm(hook = "file_mprotect")]
pub fn vardr_file_mprotect(ctx: LsmContext) -> i32 {
    // file_mprotect(struct vm_area_struct *vma, unsigned long reqprot,
    // unsigned long prot): a mapping made executable later.
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let vma: *const u8 = ctx.arg(0);
    let off = offsets();
    // Already executable: decided when it was mapped.
    if read::<u64>(vma, off.vma_vm_flags).unwrap_or(0) & VM_EXEC != 0 {
        return 0;
    }
    let Some(file) = read::<*const u8>(vma, off.vma_vm_file) else {
        return 0;
    };
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !applies(cfg, file) {
        return 0;
    }
    let (Some(mnt), Some(dentry)) = (
        read::<*const u8>(file, off.file_f_path + off.path_mnt),
        read::<*const u8>(file, off.file_f_path + off.path_dentry),
    ) else {
        return 0;
    };
    let Some(r) = resolve(0, cfg, mnt, dentry) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, filled by `resolve`.
    let (by_path, by_identity) = unsafe { ((*r).by_path, (*r).by_identity) };
    if decide(
        cfg,
        &by_path,
        &by_identity,
        Operation::MprotectExec,
        prot as u32,
        Resolved::path(r),
    ) {
        eacces()
    } else {
        0
    }
}
