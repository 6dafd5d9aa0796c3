//! Changes to a governed file that leave its content alone but change who
//! may do what with it: mode (setuid bits, permissions), owner, extended
//! attributes (file capabilities, security labels), POSIX ACLs, inode
//! flags (`chattr`) and `ftruncate(2)` on 6.2+. Each is a `file_write` of the file (EPERM). Timestamps are not
//! checked.
use aya_ebpf::{helpers::bpf_get_current_task, macros::lsm, programs::LsmContext};
use vardr_common::Operation;

use crate::{
    mutate::write_of,
    shared::{offsets, read},
};

/// A `struct path *`'s file, decided as a write.
#[inline(always)]
fn write_of_path(path: *const u8, op: Operation) -> i32 {
    let off = offsets();
    let (Some(mnt), Some(dentry)) = (
        read::<*const u8>(path, off.path_mnt),
        read::<*const u8>(path, off.path_dentry),
    ) else {
        return 0;
    };
    write_of(mnt, dentry, op)
}

/// The xattr hooks get a dentry only: its path is built through the
/// caller's root mount when the file lives on that mount's file system
/// (otherwise the rules by identity decide alone).
#[inline(always)]
fn write_of_dentry(dentry: *const u8, op: Operation) -> i32 {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mnt = read::<*const u8>(task, off.task_fs)
        .and_then(|fs| read::<*const u8>(fs, off.fs_struct_root + off.path_mnt))
        .filter(|mnt| {
            let sb = read::<*const u8>(*mnt, off.vfsmount_mnt_sb);
            sb.is_some() && sb == read::<*const u8>(dentry, off.dentry_d_sb)
        })
        .unwrap_or(core::ptr::null());
    write_of(mnt, dentry, op)
}

#[lsm(hook = "path_chmod")]
pub fn vardr_path_chmod(ctx: LsmContext) -> i32 {
    // path_chmod(const struct path *path, umode_t mode): chmod(2), fchmod(2).
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    write_of_path(ctx.arg(0), Operation::Chmod)
}

#[lsm(hook = "path_chown")]
pub fn vardr_path_chown(ctx: LsmContext) -> i32 {
    // path_chown(const struct path *path, kuid_t uid, kgid_t gid).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    write_of_path(ctx.arg(0), Operation::Chown)
}

#[lsm(hook = "inode_setxattr")]
pub fn vardr_inode_setxattr(ctx: LsmContext) -> i32 {
    // inode_setxattr(idmap, struct dentry *dentry, const char *name,
    // const void *value, size_t size, int flags).
    let prev: i32 = ctx.arg(6);
    if prev != 0 {
        return prev;
    }
    write_of_dentry(ctx.arg(1), Operation::SetXattr)
}

#[lsm(hook = "inode_removexattr")]
pub fn vardr_inode_removexattr(ctx: LsmContext) -> i32 {
    // inode_removexattr(idmap, struct dentry *dentry, const char *name).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    write_of_dentry(ctx.arg(1), Operation::RemoveXattr)
}

#[lsm(hook = "inode_set_acl")]
pub fn vardr_inode_set_acl(ctx: LsmContext) -> i32 {
    // inode_set_acl(idmap, struct dentry *dentry, const char *acl_name,
    // struct posix_acl *kacl) (6.2+: ACLs no longer pass inode_setxattr).
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    write_of_dentry(ctx.arg(1), Operation::SetAcl)
}

#[lsm(hook = "inode_remove_acl")]
pub fn vardr_inode_remove_acl(ctx: LsmContext) -> i32 {
    // inode_remove_acl(idmap, struct dentry *dentry, const char *acl_name) (6.2+).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    write_of_dentry(ctx.arg(1), Operation::RemoveAcl)
}

/// `FS_IOC_SETFLAGS` (`_IOW('f', 2, long)`), its 32-bit form
/// `FS_IOC32_SETFLAGS`, and `FS_IOC_FSSETXATTR` (`_IOW('X', 32, struct
/// fsxattr)`): the same numbers through the compat path.
const SETFLAGS: u32 = 0x4008_6602;
const SETFLAGS32: u32 = 0x4004_6602;
const FSSETXATTR: u32 = 0x401c_5820;
/// `FS_IOC_ENABLE_VERITY` (`_IOW('f', 133, struct fsverity_enable_arg)`):
/// makes the file read-only for good.
const ENABLE_VERITY: u32 = 0x4080_6685;

/// Inode flags through `ioctl`: `chattr +i` of a write-denied file would
/// lock out the writers the rule does not govern, `chattr -a` lift an
/// append-only guard. Every other command returns at once.
#[inline(always)]
fn set_flags(ctx: &LsmContext) -> i32 {
    // file_ioctl(struct file *file, unsigned int cmd, unsigned long arg).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let cmd: u32 = ctx.arg(1);
    if cmd != SETFLAGS && cmd != SETFLAGS32 && cmd != FSSETXATTR && cmd != ENABLE_VERITY {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    write_of_path(
        file.wrapping_add(offsets().file_f_path as usize),
        Operation::SetFlags,
    )
}

#[lsm(hook = "file_ioctl")]
pub fn vardr_file_ioctl(ctx: LsmContext) -> i32 {
    set_flags(&ctx)
}

#[lsm(hook = "file_ioctl_compat")]
pub fn vardr_file_ioctl_compat(ctx: LsmContext) -> i32 {
    // 6.8+: 32-bit programs' ioctls (same arguments).
    set_flags(&ctx)
}

#[lsm(hook = "file_truncate")]
pub fn vardr_file_truncate(ctx: LsmContext) -> i32 {
    // file_truncate(struct file *file) (6.2+): ftruncate(2) of a
    // descriptor opened for writing before the rule, or passed in.
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: *const u8 = ctx.arg(0);
    write_of_path(
        file.wrapping_add(offsets().file_f_path as usize),
        Operation::FileTruncate,
    )
}
