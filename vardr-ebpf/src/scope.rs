//! The rules follow a governed process wherever it moves: it cannot move
//! itself (or another process) into the agent's cgroup, whose members are
//! exempt, nor out of `--scope-cgroup`, outside which no rule applies.
//!
//! A move is a write to a cgroup's `cgroup.procs` or `cgroup.threads`: it
//! is refused at the open for write (`file_open`), where the target is the
//! file's directory, whatever path or mount of cgroup2 the caller used. A
//! child can also start in another cgroup (`clone3` with
//! `CLONE_INTO_CGROUP`); `task_alloc` cannot see that target, so a
//! governed process cannot use `CLONE_INTO_CGROUP` at all.
use aya_ebpf::{bindings::path, helpers::bpf_d_path, macros::lsm, programs::LsmContext};
use vardr_common::{
    Action, BackendKind, Config, Hook, Operation, RuleRef, MAX_DENTRY_DEPTH, PATH_KEY_LEN,
    RULE_PROTECT_SCOPE,
};

use crate::{
    maps::{AGENT_ABOVE, PATH_SCRATCH},
    shared::{conclude_op, config, eperm, governed, hook_bit, offsets, read},
};

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Any rule kind: a process governed for any of them is held to its cgroup.
#[inline(always)]
pub fn any_hook() -> u32 {
    hook_bit(Hook::FileOpen)
        | hook_bit(Hook::FileWrite)
        | hook_bit(Hook::Exec)
        | hook_bit(Hook::Connect)
}

/// The first 8 bytes of a name and the next `n` (NUL included), little endian.
const fn le(b: &[u8], from: usize, n: usize) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < n {
        let c = if from + i < b.len() { b[from + i] } else { 0 };
        v |= (c as u64) << (8 * i);
        i += 1;
    }
    v
}

const PROCS: (u64, u64, u64) = (
    le(b"cgroup.procs", 0, 8),
    le(b"cgroup.procs", 8, 5),
    0xff_ffff_ffff,
);
const THREADS: (u64, u64, u64) = (
    le(b"cgroup.threads", 0, 8),
    le(b"cgroup.threads", 8, 7),
    0xff_ffff_ffff_ffff,
);

/// Where a cgroup directory `dir` (a cgroup2 dentry) stands: in the
/// agent's cgroup or below it (exempt), and in the scope or below it. A
/// cgroup's id is its kernfs inode number.
#[inline(always)]
fn place(cfg: &Config, dir: *const u8) -> (bool, bool) {
    let off = offsets();
    let (mut in_agent, mut in_scope) = (false, cfg.scope_cgroup_id == 0);
    let mut dentry = dir;
    for _ in 0..MAX_DENTRY_DEPTH {
        let Some(inode) = read::<*const u8>(dentry, off.dentry_d_inode) else {
            break;
        };
        let ino: u64 = read(inode, off.inode_i_ino).unwrap_or(0);
        in_agent |=
            cfg.protect_agent_cgroup != 0 && cfg.agent_cgroup_id != 0 && ino == cfg.agent_cgroup_id;
        in_scope |= ino == cfg.scope_cgroup_id;
        let Some(parent) = read::<*const u8>(dentry, off.dentry_d_parent) else {
            break;
        };
        if parent == dentry {
            break;
        }
        dentry = parent;
    }
    (in_agent, in_scope)
}

/// Whether `file`, opened for write, is the `cgroup.procs` or
/// `cgroup.threads` of a cgroup outside the scope, or any file of the
/// agent's own cgroup or one below it (a move there is an exemption;
/// `cgroup.kill`, `cgroup.freeze`, `memory.max` stop or starve the agent).
#[inline(always)]
pub fn moves_out(cfg: &Config, file: *const u8) -> bool {
    if cfg.scope_cgroup_id == 0 && cfg.agent_cgroup_id == 0 {
        return false;
    }
    let off = offsets();
    let Some(dentry) = read::<*const u8>(file, off.file_f_path + off.path_dentry) else {
        return false;
    };
    let Some(sb) = read::<*const u8>(dentry, off.dentry_d_sb) else {
        return false;
    };
    if read::<u64>(sb, off.super_block_s_magic) != Some(CGROUP2_SUPER_MAGIC) {
        return false;
    }
    // Names this short are stored inside the dentry: 16 bytes are readable.
    let Some(name) = read::<*const u8>(dentry, off.dentry_d_name_name) else {
        return false;
    };
    let Some(words) = read::<[u64; 2]>(name, 0) else {
        return false;
    };
    let is = |(lo, hi, mask): (u64, u64, u64)| words[0] == lo && words[1] & mask == hi;
    let Some(dir) = read::<*const u8>(dentry, off.dentry_d_parent) else {
        return false;
    };
    let membership = is(PROCS) || is(THREADS);
    // A cgroup above the agent's: its other files (`cgroup.kill`,
    // `cgroup.freeze`, limits) act on the agent too.
    if !membership && cfg.protect_agent_cgroup != 0 && cfg.agent_cgroup_id != 0 {
        let ino = read::<*const u8>(dir, off.dentry_d_inode)
            .and_then(|inode| read::<u64>(inode, off.inode_i_ino))
            .unwrap_or(0);
        // SAFETY: a lookup in a hash map of plain values.
        if ino != 0 && unsafe { AGENT_ABOVE.get(ino) }.is_some() {
            return true;
        }
    }
    let (in_agent, in_scope) = place(cfg, dir);
    // Any file of the agent's cgroup or of one below it (a move into it,
    // its limits, cgroup.kill); membership files outside the scope.
    in_agent || (membership && !in_scope)
}

/// The built-in deny of a governed process leaving the rules (enforced
/// and reported where file writes are); whether to block.
#[inline(always)]
fn protect(cfg: &Config, op: Operation, flags: u32, file: Option<*const u8>) -> bool {
    let rule = RuleRef {
        action: Action::Deny as u32,
        rule_id: RULE_PROTECT_SCOPE,
    };
    let key = match (file, PATH_SCRATCH.get_ptr_mut(0)) {
        (Some(file), Some(key)) => {
            // SAFETY: `file` is the hook's trusted `struct file *`, `f_path`
            // its offset from BTF; the buffer is this CPU's scratch key.
            let n = unsafe {
                bpf_d_path(
                    file.add(offsets().file_f_path as usize) as *mut path,
                    (*key).data.as_mut_ptr().add(1) as *mut _,
                    (PATH_KEY_LEN - 1) as u32,
                )
            };
            (n > 0).then_some(key as *const _)
        }
        _ => None,
    };
    conclude_op(
        cfg,
        Hook::FileWrite,
        &rule,
        op,
        flags,
        key,
        BackendKind::Lsm,
    )
}

/// `file_open`'s part: an open for write of a cgroup's membership file.
/// Returns the LSM verdict when it decides.
#[inline(always)]
pub fn check_open(cfg: &Config, file: *const u8, flags: u32) -> Option<i32> {
    if !moves_out(cfg, file) || !governed(cfg, any_hook()) {
        return None;
    }
    Some(if protect(cfg, Operation::Hook, flags, Some(file)) {
        eperm()
    } else {
        0
    })
}

#[lsm(hook = "task_alloc")]
pub fn vardr_task_alloc(ctx: LsmContext) -> i32 {
    // task_alloc(struct task_struct *task, unsigned long clone_flags).
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    let Some(ref cfg) = config() else {
        return 0;
    };
    if (cfg.scope_cgroup_id == 0 && cfg.agent_cgroup_id == 0) || !governed(cfg, any_hook()) {
        return 0;
    }
    if protect(cfg, Operation::CloneIntoCgroup, 0, None) {
        eperm()
    } else {
        0
    }
}
