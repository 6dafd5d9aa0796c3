//! Process lifecycle events for the userspace process cache: exec (with
//! arguments), fork (new processes, not threads) and exit.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel_str_bytes,
        generated::bpf_probe_read_user,
    },
    macros::{btf_tracepoint, map},
    maps::HashMap,
    programs::BtfTracePointContext,
    Global,
};
use vardr_common::{
    Action, BackendKind, EventKind, ExecEvent, ExemptTask, ExitEvent, ForkEvent, Hook, Operation,
    RuleRef, ARGS_LEN, EXEC_ARGS_TRUNCATED, EXEC_CREDS, EXEC_CWD_RESOLVED, EXEC_PATH_RESOLVED,
    RULE_PROTECT_SCOPE,
};

use crate::{
    guard::ungoverned,
    maps::{inode_rule, EVENTS, EXEMPT_TASKS, FAN_LEASE},
    resolve::path_into,
    scope::any_hook,
    shared::{
        conclude_op, config, count_lost, file_identity, fill_header, governed, offsets,
        process_start_ticks, read,
    },
};

/// A process is exempt by the binary the kernel executes for it now: the
/// file of the exec, not `mm->exe_file` (which the process can change).
/// An exec of anything else ends an inherited exemption, and so does an
/// exec under a tracer (`PTRACE_TRACEME` then exec of an exempt binary
/// would hand the tracer a process with the exemption).
#[inline(always)]
fn track_exemption(bprm: *const u8, task: *const u8) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let traced = read::<u32>(task, offsets().task_ptrace).unwrap_or(1) != 0;
    if let Some(cfg) = config() {
        if cfg.has_exempt_binaries != 0 && !traced {
            let file = read::<*const u8>(bprm, offsets().binprm_file);
            if let Some(key) = file.and_then(|f| file_identity(f, cfg.generation)) {
                if let Some(rule) = inode_rule(&key) {
                    if rule.exempt != 0 {
                        let t = ExemptTask {
                            start_ticks: process_start_ticks(task),
                            dev: key.dev,
                            _pad: 0,
                            ino: key.ino,
                        };
                        // When the map is full the process is simply not
                        // exempt: enforcement errs on the safe side.
                        let _ = EXEMPT_TASKS.insert(tgid, t, 0);
                        return;
                    }
                }
            }
        }
    }
    let _ = EXEMPT_TASKS.remove(tgid);
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn vardr_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // First, whatever happens to the event: a full ring buffer must not
    // leave the exemption of the previous image in place.
    track_exemption(bprm, task);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_lost(vardr_common::LOST_LIFECYCLE);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry; kernel and user memory
    // are read through probe helpers only.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Exec);
        let parent: *const u8 = read(task, off.task_real_parent).unwrap_or(core::ptr::null());
        (*ev).ppid = read(parent, off.task_tgid).unwrap_or(0);
        (*ev).auid = if off.task_loginuid != 0 {
            read(task, off.task_loginuid).unwrap_or(u32::MAX)
        } else {
            u32::MAX
        };
        (*ev).flags = 0;
        (*ev).filename[0] = 0;
        (*ev).path[0] = 0;
        (*ev).cwd[0] = 0;
        let name = read::<*const u8>(bprm, off.binprm_filename);
        if let Some(name) = name {
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).filename);
        }
        // The executed file, when it is the one the name names: a script's
        // interpreter replaced it (`interp` is then a copy of another name).
        let interp = read::<*const u8>(bprm, off.binprm_interp);
        if name.is_some() && interp == name {
            if let Some(file) = read::<*const u8>(bprm, off.binprm_file) {
                let mnt = read::<*const u8>(file, off.file_f_path + off.path_mnt);
                let dentry = read::<*const u8>(file, off.file_f_path + off.path_dentry);
                if let (Some(mnt), Some(dentry)) = (mnt, dentry) {
                    if path_into(0, mnt, dentry, (*ev).path.as_mut_ptr()) {
                        (*ev).flags |= EXEC_PATH_RESOLVED;
                    }
                }
            }
        }
        if let Some(fs) = read::<*const u8>(task, off.task_fs) {
            let mnt = read::<*const u8>(fs, off.fs_struct_pwd + off.path_mnt);
            let dentry = read::<*const u8>(fs, off.fs_struct_pwd + off.path_dentry);
            if let (Some(mnt), Some(dentry)) = (mnt, dentry) {
                if path_into(1, mnt, dentry, (*ev).cwd.as_mut_ptr()) {
                    (*ev).flags |= EXEC_CWD_RESOLVED;
                }
            }
        }
        (*ev).start_ns = {
            let leader: *const u8 = read(task, off.task_group_leader).unwrap_or(task);
            read::<u64>(leader, off.task_start_boottime).unwrap_or(0)
        };
        (*ev).euid = 0;
        (*ev).egid = 0;
        (*ev).suid = 0;
        (*ev).sgid = 0;
        (*ev).fsuid = 0;
        (*ev).fsgid = 0;
        if let Some(cred) = read::<*const u8>(task, off.task_cred) {
            if let (Some(euid), Some(egid), Some(suid), Some(sgid), Some(fsuid), Some(fsgid)) = (
                read::<u32>(cred, off.cred_euid),
                read::<u32>(cred, off.cred_egid),
                read::<u32>(cred, off.cred_suid),
                read::<u32>(cred, off.cred_sgid),
                read::<u32>(cred, off.cred_fsuid),
                read::<u32>(cred, off.cred_fsgid),
            ) {
                (*ev).euid = euid;
                (*ev).egid = egid;
                (*ev).suid = suid;
                (*ev).sgid = sgid;
                (*ev).fsuid = fsuid;
                (*ev).fsgid = fsgid;
                (*ev).flags |= EXEC_CREDS;
            }
        }
        // The new image's command line, from its stack.
        (*ev).args_len = 0;
        if let Some(mm) = read::<*const u8>(task, off.task_mm) {
            let start: u64 = read(mm, off.mm_arg_start).unwrap_or(0);
            let end: u64 = read(mm, off.mm_arg_end).unwrap_or(0);
            let mut len = end.saturating_sub(start);
            if len > ARGS_LEN as u64 {
                len = ARGS_LEN as u64;
                (*ev).flags |= EXEC_ARGS_TRUNCATED;
            }
            if len > 0
                && bpf_probe_read_user(
                    (*ev).args.as_mut_ptr() as *mut _,
                    len as u32,
                    start as *const _,
                ) == 0
            {
                (*ev).args_len = len as u32;
            }
        }
    }
    entry.submit(0);
    0
}

/// Non-zero (set by the loader) where no LSM refuses `clone3` with
/// `CLONE_INTO_CGROUP` (the fallback): a governed process's child started
/// where no rule applies to it is reported here, and the agent ends it.
#[unsafe(no_mangle)]
pub static FORK_SCOPE_CHECK: Global<u32> = Global::new(0);

/// Processes reported as started outside the rules, by tgid: their start
/// time. A process they fork before the agent ends them is reported too
/// (its parent is no longer governed by cgroup). Forgotten at exit.
#[map]
static ESCAPED: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// A governed parent's new process `child` (tgid `tgid`) in a cgroup the
/// rules do not cover (outside the scope, the agent's), or any child of
/// such a process: reported under the built-in scope rule, with the
/// child's pid in `flags`.
#[inline(always)]
fn escaped(child: *const u8, tgid: u32) {
    let Some(ref cfg) = config() else {
        return;
    };
    if cfg.scope_cgroup_id == 0 && cfg.agent_cgroup_id == 0 {
        return;
    }
    let ptgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a lookup in a hash map of plain values.
    let from_escaped = unsafe { ESCAPED.get(ptgid) }.is_some_and(|start| {
        // SAFETY: helper without arguments; the current task is the parent.
        *start == process_start_ticks(unsafe { bpf_get_current_task() } as *const u8)
    });
    if !from_escaped && (!governed(cfg, any_hook()) || !ungoverned(cfg, child, tgid)) {
        return;
    }
    // Full (4096 escaped processes at once): still reported and ended, only
    // their own children would go unseen.
    let _ = ESCAPED.insert(tgid, process_start_ticks(child), 0);
    let rule = RuleRef {
        action: Action::Deny as u32,
        rule_id: RULE_PROTECT_SCOPE,
    };
    conclude_op(
        cfg,
        Hook::FileWrite,
        &rule,
        Operation::CloneIntoCgroup,
        tgid,
        None,
        BackendKind::Fallback,
    );
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn vardr_fork(ctx: BtfTracePointContext) -> i32 {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child: *const u8 = ctx.arg(1);
    let off = offsets();
    let pid: u32 = read(child, off.task_pid).unwrap_or(0);
    let tgid: u32 = read(child, off.task_tgid).unwrap_or(0);
    if pid == 0 || pid != tgid {
        return 0; // a thread, not a process
    }
    // A child inherits its parent's exemption (same binary, until it execs).
    let ptgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = EXEMPT_TASKS.get_ptr(ptgid) {
        // SAFETY: pointer into a map value returned by lookup; the current
        // task is the parent.
        let mut t = unsafe { *p };
        let parent = unsafe { bpf_get_current_task() } as *const u8;
        if t.start_ticks == process_start_ticks(parent) {
            t.start_ticks = process_start_ticks(child);
            let _ = EXEMPT_TASKS.insert(tgid, t, 0);
        }
    }
    if FORK_SCOPE_CHECK.load() != 0 {
        escaped(child, tgid);
    }
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count_lost(vardr_common::LOST_LIFECYCLE);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Fork);
        (*ev).child_pid = pid;
        (*ev)._pad = 0;
    }
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn vardr_exit(_ctx: BtfTracePointContext) -> i32 {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // The process ends with its last thread: `signal->live` has already been
    // decremented here. (Not "the leader exits": a leader can pthread_exit
    // early, and a non-leader's exec kills the old leader.)
    let Some(signal) = read::<*const u8>(task, off.task_signal) else {
        return 0;
    };
    if read::<i32>(signal, off.signal_live).unwrap_or(1) != 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = EXEMPT_TASKS.remove(tgid);
    if FORK_SCOPE_CHECK.load() != 0 {
        let _ = ESCAPED.remove(tgid);
    }
    // The agent holding the fanotify lease is ending: its group closes
    // (and lets everything pending through) only after this point, so the
    // open tracepoints take over before any open goes unanswered.
    if let Some(lease) = FAN_LEASE.get_ptr_mut(0) {
        // SAFETY: pointer into the single-entry array, valid for this call.
        unsafe {
            if (*lease).holder_tgid == tgid
                || (*lease).holder_start_ticks == process_start_ticks(task)
            {
                (*lease).until_ns = 0;
            }
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_lost(vardr_common::LOST_LIFECYCLE);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Exit);
        (*ev).exit_code = read(task, off.task_exit_code).unwrap_or(0);
        (*ev)._pad = 0;
    }
    entry.submit(0);
    0
}
