//! Processes no rule applies to (the agent, exempt pids and binaries, PID
//! 1, kernel threads, members of the agent's cgroup, processes outside the
//! scope) cannot be taken over by a governed process: attaching with
//! ptrace, writing their memory (`process_vm_writev`, `/proc/PID/mem`) or
//! taking their descriptors (`pidfd_getfd`) would act without its rules.
//! All pass `ptrace_access_check` in attach mode. Reading (`ps`, `/proc/PID/maps`)
//! stays allowed. The matching half, a traced process that executes an
//! exempt binary getting no exemption, is in `process.rs`.
//!
//! Nor can a governed process stop them: `task_kill` refuses its signals
//! to an exempt process (the agent without `--keep-enforcing` takes the
//! rules with it), except to its own child (a governed script may end the
//! exempt tool it started), and SIGHUP to the agent (a reload of the
//! policy, which `vardr policy apply` sends).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use vardr_common::{Action, BackendKind, Hook, Operation, RuleRef, RULE_PROTECT_EXEMPT};

use crate::shared::{
    conclude_op, config, eperm, exempt_process, governed, hook_bit, offsets, read, PF_KTHREAD,
};

const PTRACE_MODE_ATTACH: u32 = 0x02;
const SIGHUP: i32 = 1;

/// A governed process touching an exempt one: the kernel's built-in deny
/// (rule id 0), enforced where exec rules are.
fn protect(cfg: &vardr_common::Config, op: Operation, flags: u32) -> i32 {
    let rule = RuleRef {
        action: Action::Deny as u32,
        rule_id: RULE_PROTECT_EXEMPT,
    };
    if conclude_op(cfg, Hook::Exec, &rule, op, flags, None, BackendKind::Lsm) {
        eperm()
    } else {
        0
    }
}

/// The config in force and `target`'s tgid, when a governed process acts
/// on `target` and `target` is exempt (with `all`: or no rule applies to
/// it for another reason, [`ungoverned`]).
#[inline(always)]
fn governed_on_exempt(target: *const u8, all: bool) -> Option<(vardr_common::Config, u32)> {
    let cfg = config()?;
    let any = hook_bit(Hook::FileOpen)
        | hook_bit(Hook::FileWrite)
        | hook_bit(Hook::Exec)
        | hook_bit(Hook::Connect);
    if !governed(&cfg, any) {
        return None;
    }
    let tgid = read::<u32>(target, offsets().task_tgid)?;
    let out = exempt_process(&cfg, target, tgid) || (all && ungoverned(&cfg, target, tgid));
    out.then_some((cfg, tgid))
}

/// Whether no rule applies to `target` (tgid `tgid`) beyond exemptions:
/// PID 1, a kernel thread, a member of the agent's cgroup, a process
/// outside the scope.
#[inline(always)]
pub fn ungoverned(cfg: &vardr_common::Config, target: *const u8, tgid: u32) -> bool {
    if tgid == 1 {
        return true;
    }
    let off = offsets();
    if read::<u32>(target, off.task_flags).unwrap_or(0) & PF_KTHREAD != 0 {
        return true;
    }
    let Some(cg) = read::<*const u8>(target, off.task_cgroups)
        .and_then(|cs| read::<*const u8>(cs, off.css_set_dfl_cgrp))
    else {
        return false;
    };
    let id_of = |cg: *const u8| {
        read::<*const u8>(cg, off.cgroup_kn).and_then(|kn| read::<u64>(kn, off.kernfs_node_id))
    };
    if cfg.agent_cgroup_id != 0 && id_of(cg) == Some(cfg.agent_cgroup_id) {
        return true;
    }
    if cfg.scope_cgroup_id == 0 || off.cgroup_ancestors == 0 {
        return false;
    }
    // `ancestors[level]` is the cgroup's ancestor at that depth (itself at its own).
    let level = read::<i32>(cg, off.cgroup_level).unwrap_or(0);
    if level < cfg.scope_level as i32 {
        return true;
    }
    let slot = off.cgroup_ancestors + 8 * u64::from(cfg.scope_level & 0xff);
    read::<*const u8>(cg, slot).and_then(id_of) != Some(cfg.scope_cgroup_id)
}

#[lsm(hook = "task_kill")]
pub fn vardr_task_kill(ctx: LsmContext) -> i32 {
    // task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
    //           const struct cred *cred).
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let target: *const u8 = ctx.arg(0);
    let sig: i32 = ctx.arg(2);
    // Signal 0 only asks whether the process exists.
    if sig == 0 {
        return 0;
    }
    let Some((cfg, tgid)) = governed_on_exempt(target, false) else {
        return 0;
    };
    if sig == SIGHUP && tgid == cfg.agent_tgid {
        return 0;
    }
    let me = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let parent = read::<*const u8>(target, offsets().task_real_parent)
        .and_then(|p| read::<u32>(p, offsets().task_tgid));
    if parent == Some(me) {
        return 0;
    }
    protect(&cfg, Operation::Signal, sig as u32)
}

/// Nor can it change their resource limits (`prlimit`): a CPU-time limit
/// ends the agent by the kernel's own SIGKILL, which `task_kill` never sees.
#[lsm(hook = "task_setrlimit")]
pub fn vardr_task_setrlimit(ctx: LsmContext) -> i32 {
    // task_setrlimit(struct task_struct *p, unsigned int resource,
    //                struct rlimit *new_rlim).
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let target: *const u8 = ctx.arg(0);
    let resource: u32 = ctx.arg(1);
    match governed_on_exempt(target, true) {
        Some((cfg, _)) => protect(&cfg, Operation::Rlimit, resource),
        None => 0,
    }
}

#[lsm(hook = "ptrace_access_check")]
pub fn vardr_ptrace_access_check(ctx: LsmContext) -> i32 {
    // ptrace_access_check(struct task_struct *child, unsigned int mode).
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let child: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    match governed_on_exempt(child, true) {
        Some((cfg, _)) => protect(&cfg, Operation::Ptrace, 0),
        None => 0,
    }
}
