//! Exempt processes (the agent, exempt pids, exempt binaries) cannot be
//! taken over by a governed process: attaching with ptrace, writing their
//! memory (`process_vm_writev`, `/proc/PID/mem`) or taking their
//! descriptors (`pidfd_getfd`) would act with their exemption. All pass
//! `ptrace_access_check` in attach mode. Reading (`ps`, `/proc/PID/maps`)
//! stays allowed. The matching half, a traced process that executes an
//! exempt binary getting no exemption, is in `process.rs`.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use vardr_common::{Action, BackendKind, Hook, Operation, RuleRef};

use crate::shared::{
    conclude_op, config, eperm, exempt_process, governed, hook_bit, offsets, read,
};

const PTRACE_MODE_ATTACH: u32 = 0x02;

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
    let Some(ref cfg) = config() else {
        return 0;
    };
    let any = hook_bit(Hook::FileOpen)
        | hook_bit(Hook::FileWrite)
        | hook_bit(Hook::Exec)
        | hook_bit(Hook::Connect);
    if !governed(cfg, any) {
        return 0;
    }
    let Some(tgid) = read::<u32>(child, offsets().task_tgid) else {
        return 0;
    };
    if !exempt_process(cfg, child, tgid) {
        return 0;
    }
    // A built-in deny (rule id 0), enforced where exec rules are.
    let rule = RuleRef {
        action: Action::Deny as u32,
        rule_id: 0,
    };
    if conclude_op(
        cfg,
        Hook::Exec,
        &rule,
        Operation::Ptrace,
        0,
        None,
        BackendKind::Lsm,
    ) {
        eperm()
    } else {
        0
    }
}
