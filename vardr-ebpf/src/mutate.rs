//! Changes to the file system tree, checked as what they do to a governed
//! file (`lsm/path_*`, EPERM):
//!
//! - a mutation (unlink, rmdir, truncate, create, mkdir, symlink, and both
//!   names of a rename or the new name of a link) is a `file_write` of that
//!   path;
//! - moving or linking a file away from where a `file_open`, `file_write`
//!   or `exec` deny covers it is denied, unless the rule travels with the
//!   file's identity or covers the new place too (the file would escape).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use vardr_common::{Action, BackendKind, Config, Hook, Operation, PathRules};

use crate::{
    resolve::{resolve, Resolved},
    shared::{
        conclude_op, config, eperm, governed, hook_bit, identity_walk, offsets, pick, read,
        travelling_rules,
    },
};

const RENAME_EXCHANGE: u32 = 1 << 1;

/// Hooks whose rules a move or link can escape.
#[inline(always)]
fn any_file_hook() -> u32 {
    hook_bit(Hook::FileOpen) | hook_bit(Hook::FileWrite) | hook_bit(Hook::Exec)
}

/// A mutation of the resolved path: its `file_write` rule decides.
#[inline(always)]
fn mutation(cfg: &Config, r: *const Resolved, op: Operation) -> bool {
    // SAFETY: `r` is this CPU's scratch slot, filled by `resolve`.
    let rule = unsafe { pick(&(*r).by_path, &(*r).by_identity, Hook::FileWrite) };
    conclude_op(
        cfg,
        Hook::FileWrite,
        &rule,
        op,
        0,
        Resolved::path(r),
        BackendKind::Lsm,
    )
}

/// The file at `from` gets a name at `to`: blocks when a deny covers it
/// where it is, does not travel with its inode (`travelling`), and does not
/// cover a new file at `to` (`to_identity`: its rules by identity there).
#[inline(always)]
fn escape(
    cfg: &Config,
    from: *const Resolved,
    travelling: &PathRules,
    to: *const Resolved,
    to_identity: &PathRules,
    op: Operation,
) -> bool {
    let deny = Action::Deny as u32;
    for hook in [Hook::FileOpen, Hook::FileWrite, Hook::Exec] {
        // SAFETY: both are this CPU's scratch slots, filled by `resolve`.
        let (here, there) = unsafe {
            (
                pick(&(*from).by_path, &(*from).by_identity, hook),
                pick(&(*to).by_path, to_identity, hook),
            )
        };
        if here.action != deny
            || travelling.slots[hook as usize].action == deny
            || there.action == deny
        {
            continue;
        }
        return conclude_op(
            cfg,
            hook,
            &here,
            op,
            0,
            Resolved::path(from),
            BackendKind::Lsm,
        );
    }
    false
}

/// The file at `dentry`, seen through `vfsmnt` (null: by identity only),
/// decided as a write.
#[inline(always)]
pub fn write_of(vfsmnt: *const u8, dentry: *const u8, op: Operation) -> i32 {
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !governed(cfg, hook_bit(Hook::FileWrite)) {
        return 0;
    }
    match resolve(0, cfg, vfsmnt, dentry) {
        Some(r) if mutation(cfg, r, op) => eperm(),
        _ => 0,
    }
}

/// The common shape of the hooks that add or remove one name in a
/// directory: `dir` is the directory's `struct path *`.
#[inline(always)]
fn one_name(dir: *const u8, dentry: *const u8, op: Operation) -> i32 {
    match read::<*const u8>(dir, offsets().path_mnt) {
        Some(mnt) => write_of(mnt, dentry, op),
        None => 0,
    }
}

#[lsm(hook = "path_unlink")]
pub fn vardr_path_unlink(ctx: LsmContext) -> i32 {
    // path_unlink(const struct path *dir, struct dentry *dentry), then the previous verdict.
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    one_name(ctx.arg(0), ctx.arg(1), Operation::Unlink)
}

#[lsm(hook = "path_rmdir")]
pub fn vardr_path_rmdir(ctx: LsmContext) -> i32 {
    // path_rmdir(const struct path *dir, struct dentry *dentry).
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    one_name(ctx.arg(0), ctx.arg(1), Operation::Rmdir)
}

#[lsm(hook = "path_mkdir")]
pub fn vardr_path_mkdir(ctx: LsmContext) -> i32 {
    // path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    one_name(ctx.arg(0), ctx.arg(1), Operation::Mkdir)
}

#[lsm(hook = "path_mknod")]
pub fn vardr_path_mknod(ctx: LsmContext) -> i32 {
    // path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode,
    // unsigned int dev): mknod(2), and open(O_CREAT) of a name that does not
    // exist yet, before the file is created.
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    one_name(ctx.arg(0), ctx.arg(1), Operation::Create)
}

#[lsm(hook = "path_symlink")]
pub fn vardr_path_symlink(ctx: LsmContext) -> i32 {
    // path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    one_name(ctx.arg(0), ctx.arg(1), Operation::Symlink)
}

#[lsm(hook = "path_truncate")]
pub fn vardr_path_truncate(ctx: LsmContext) -> i32 {
    // path_truncate(const struct path *path): truncate(2) (and ftruncate(2)
    // before 6.2); O_TRUNC opens are file_open's.
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let path: *const u8 = ctx.arg(0);
    let Some(dentry) = read::<*const u8>(path, offsets().path_dentry) else {
        return 0;
    };
    one_name(path, dentry, Operation::Truncate)
}

#[lsm(hook = "path_link")]
pub fn vardr_path_link(ctx: LsmContext) -> i32 {
    // path_link(struct dentry *old_dentry, const struct path *new_dir,
    // struct dentry *new_dentry); both on the same mount (EXDEV before).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let (old, dir, new): (*const u8, *const u8, *const u8) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !governed(cfg, any_file_hook()) {
        return 0;
    }
    let Some(mnt) = read::<*const u8>(dir, offsets().path_mnt) else {
        return 0;
    };
    let (Some(from), Some(to)) = (resolve(0, cfg, mnt, old), resolve(1, cfg, mnt, new)) else {
        return 0;
    };
    if mutation(cfg, to, Operation::Link) {
        return eperm();
    }
    let travelling = travelling_rules(old, cfg);
    let to_identity = identity_walk(new, cfg, true);
    if escape(cfg, from, &travelling, to, &to_identity, Operation::Link) {
        return eperm();
    }
    0
}

#[lsm(hook = "path_rename")]
pub fn vardr_path_rename(ctx: LsmContext) -> i32 {
    // path_rename(const struct path *old_dir, struct dentry *old_dentry,
    // const struct path *new_dir, struct dentry *new_dentry, unsigned int
    // flags); both on the same mount (EXDEV before).
    let prev: i32 = ctx.arg(5);
    if prev != 0 {
        return prev;
    }
    let (old, dir, new): (*const u8, *const u8, *const u8) = (ctx.arg(1), ctx.arg(2), ctx.arg(3));
    let flags: u32 = ctx.arg(4);
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !governed(cfg, any_file_hook()) {
        return 0;
    }
    let Some(mnt) = read::<*const u8>(dir, offsets().path_mnt) else {
        return 0;
    };
    let (Some(from), Some(to)) = (resolve(0, cfg, mnt, old), resolve(1, cfg, mnt, new)) else {
        return 0;
    };
    // The old name goes away and the new one is made or replaced.
    if mutation(cfg, from, Operation::Rename) || mutation(cfg, to, Operation::Rename) {
        return eperm();
    }
    let travelling = travelling_rules(old, cfg);
    let to_identity = identity_walk(new, cfg, true);
    if escape(cfg, from, &travelling, to, &to_identity, Operation::Rename) {
        return eperm();
    }
    if flags & RENAME_EXCHANGE != 0 {
        let travelling = travelling_rules(new, cfg);
        let from_identity = identity_walk(old, cfg, true);
        if escape(
            cfg,
            to,
            &travelling,
            from,
            &from_identity,
            Operation::Rename,
        ) {
            return eperm();
        }
    }
    0
}
