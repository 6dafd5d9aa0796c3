//! Exempt processes (the agent, exempt pids, exempt binaries) cannot be
//! taken over by a governed process: attaching with ptrace, writing their
//! memory (`process_vm_writev`, `/proc/PID/mem`) or taking their
//! descriptors (`pidfd_getfd`) would act with their exemption. All pass
//! `ptrace_access_check` in attach mode. Reading (`ps`, `/proc/PID/maps`)
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
    conclude_op, config, eperm, exempt_process, governed, hook_bit, offsets, read,
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
/// on `target` and `target` is exempt.
#[inline(always)]
fn governed_on_exempt(target: *const u8) -> Option<(vardr_common::Config, u32)> {
    let cfg = config()?;
    let any = hook_bit(Hook::FileOpen)
        | hook_bit(Hook::FileWrite)
        | hook_bit(Hook::Exec)
        | hook_bit(Hook::Connect);
    if !governed(&cfg, any) {
        return None;
    }
    let tgid = read::<u32>(target, offsets().task_tgid)?;
    exempt_process(&cfg, target, tgid).then_some((cfg, tgid))
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
    let Some((cfg, tgid)) = governed_on_exempt(target) else {
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
    match governed_on_exempt(child) {
        Some((cfg, _)) => protect(&cfg, Operation::Ptrace, 0),
        None => 0,
    }
}
