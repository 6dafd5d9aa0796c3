//! File opens: `lsm/file_open` (deny with EPERM) and, where BPF LSM is not
//! usable, the open syscall tracepoints (SIGKILL; the open itself happens).
use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_send_signal,
        generated::bpf_probe_read_user_str,
    },
    macros::{lsm, tracepoint},
    maps::lpm_trie::Key,
    programs::{LsmContext, TracePointContext},
};
use vardr_common::{
    Action, BackendKind, Config, Hook, Operation, PathRules, RuleRef, Verdict, PATH_KEY_LEN,
};

use crate::{
    maps::{exact_path_rules, path_rules_at, FAN_LEASE, OVL_OPENS, PATH_SCRATCH, PENDING_OPENS},
    shared::{
        conclude_op, conclude_path, config, current_program, eacces, emit, eperm, governed,
        hook_bit, identity_rules, offsets, pick, read, stronger, verdict, Report,
    },
};

const SIGKILL: u32 = 9;
const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;

pub type PathKey = Key<[u8; PATH_KEY_LEN]>;

/// Opens that can change the file: write access, create, truncate, append.
#[inline(always)]
fn write_intent(flags: u32) -> bool {
    flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC | O_APPEND) != 0
}

/// Looks up the path in the scratch key (`n` bytes at `data[1..]`, NUL
/// included); all-`None` rules when nothing matches.
#[inline(always)]
pub fn path_rules(key: *mut PathKey, generation: u32, n: u32) -> PathRules {
    if n == 0 {
        return PathRules::default();
    }
    // SAFETY: `key` is this CPU's scratch slot.
    unsafe {
        (*key).data[0] = generation as u8;
        // An exact path (the key ends with its NUL) is in the hash; only
        // prefixes are in the LPM trie.
        if let Some(r) = exact_path_rules(generation, &(*key).data, n) {
            return r;
        }
        (*key).prefix_len = (1 + n) * 8;
        path_rules_at(generation, &*key).unwrap_or_default()
    }
}

/// Path rules for an executable whose path the kernel could not give
/// (`bpf_d_path` fails past 255 bytes: a long memfd name, a deep tree):
/// those of `/`, so an exec allowlist (a deny on `/`) fails closed.
#[inline(always)]
pub fn unknown_path_rules(key: *mut PathKey, generation: u32) -> PathRules {
    // SAFETY: `key` is this CPU's scratch slot.
    unsafe {
        (*key).data[1] = b'/';
        (*key).data[2] = 0;
    }
    path_rules(key, generation, 2)
}

/// Whether any file rule could apply to an open with these flags.
#[inline(always)]
fn file_rules_apply(cfg: &Config, flags: u32) -> bool {
    let open = cfg.active_mask & hook_bit(Hook::FileOpen) != 0;
    let write = cfg.active_mask & hook_bit(Hook::FileWrite) != 0 && write_intent(flags);
    open || write
}

/// The rule deciding an open of the path in `key` (and, when known, the
/// file's identity rules), and its hook.
#[inline(always)]
fn rule_for_open(
    cfg: &Config,
    key: *mut PathKey,
    n: u32,
    by_identity: PathRules,
    flags: u32,
) -> (RuleRef, Hook) {
    let by_path = path_rules(key, cfg.generation, n);
    let (mut rule, mut hook) = (pick(&by_path, &by_identity, Hook::FileOpen), Hook::FileOpen);
    if write_intent(flags) {
        let w = pick(&by_path, &by_identity, Hook::FileWrite);
        (rule, hook) = stronger(rule, hook, w, Hook::FileWrite);
    }
    (rule, hook)
}

/// Decides an open of the path in `key` (and, when known, the file's
/// identity rules); reports a match; returns whether to block.
#[inline(always)]
fn decide_open(
    cfg: &Config,
    key: *mut PathKey,
    n: u32,
    by_identity: PathRules,
    flags: u32,
    backend: BackendKind,
) -> bool {
    let (rule, hook) = rule_for_open(cfg, key, n, by_identity, flags);
    let path = if n > 0 {
        Some(key as *const PathKey)
    } else {
        None
    };
    conclude_path(cfg, hook, &rule, backend, flags, path)
}

/// Records the real dentries of an overlay file whose open is let through
/// (see [`OVL_OPENS`]).
#[inline(always)]
fn remember_overlay_open(file: *const u8) {
    let off = offsets();
    let Some(dentry) = read::<*const u8>(file, off.file_f_path + off.path_dentry) else {
        return;
    };
    let (upper, lower) = crate::identity::layers(dentry, &off);
    if upper.is_null() && lower.is_null() {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OVL_OPENS.insert(tid, [upper as u64, lower as u64], 0);
}

/// Whether `file` is the real file behind the overlay open this thread
/// just made (the record is used once).
#[inline(always)]
fn behind_overlay_open(file: *const u8) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(v) = OVL_OPENS.get_ptr(tid) else {
        return false;
    };
    // SAFETY: pointer into a map value returned by lookup.
    let [upper, lower] = unsafe { *v };
    let _ = OVL_OPENS.remove(tid);
    let off = offsets();
    read::<*const u8>(file, off.file_f_path + off.path_dentry)
        .is_some_and(|d| d as u64 == upper || d as u64 == lower)
}

#[lsm(hook = "file_open")]
pub fn vardr_file_open(ctx: LsmContext) -> i32 {
    // file_open(struct file *file); the previous LSM's verdict follows the arguments.
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: *const u8 = ctx.arg(0);
    let Some(ref cfg) = config() else {
        return 0;
    };
    let off = offsets();
    let flags: u32 = read(file, off.file_f_flags).unwrap_or(0);
    // Moving into another cgroup is a write of its membership file.
    // (In audit mode it is reported and the file rules still decide.)
    if flags & O_ACCMODE != 0 {
        if let Some(verdict) = crate::scope::check_open(cfg, file, flags) {
            if verdict != 0 {
                return verdict;
            }
        }
    }
    // A read by an interpreter may be a script it is about to run.
    let script = cfg.has_interpreters != 0
        && cfg.active_mask & hook_bit(Hook::Exec) != 0
        && !write_intent(flags)
        && current_program(cfg.generation).is_some_and(|p| p.interpreter != 0);
    let hooks = hook_bit(Hook::FileOpen) | hook_bit(Hook::FileWrite);
    let hooks = if script {
        hooks | hook_bit(Hook::Exec)
    } else {
        hooks
    };
    if !(script || file_rules_apply(cfg, flags)) || !governed(cfg, hooks) {
        return 0;
    }
    // The real file an overlay opens behind the one the caller opened (in
    // the same thread, so governed alike): that open was decided already,
    // on the caller's path; this one carries the layer's path, where the
    // caller's path rules (an allow exception) would not apply.
    if behind_overlay_open(file) {
        return 0;
    }
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `file` is the hook's trusted `struct file *`, `f_path` its
    // offset from BTF; the buffer is this CPU's scratch key after the generation byte.
    let n = unsafe {
        bpf_d_path(
            file.add(off.file_f_path as usize) as *mut path,
            (*key).data.as_mut_ptr().add(1) as *mut _,
            (PATH_KEY_LEN - 1) as u32,
        )
    };
    let n = n.max(0) as u32;
    let by_identity = identity_rules(file, cfg);
    if decide_open(cfg, key, n, by_identity, flags, BackendKind::Lsm) {
        return eperm();
    }
    remember_overlay_open(file);
    if script {
        let by_path = path_rules(key, cfg.generation, n);
        let rule = pick(&by_path, &by_identity, Hook::Exec);
        let path = (n > 0).then_some(key as *const PathKey);
        if rule.action == Action::Deny as u32
            && conclude_op(
                cfg,
                Hook::Exec,
                &rule,
                Operation::ScriptOpen,
                flags,
                path,
                BackendKind::Lsm,
            )
        {
            return eacces();
        }
    }
    0
}

/// Fallback: the path as the caller wrote it (absolute paths only), then SIGKILL.
#[inline(always)]
fn fallback_open(filename: *const u8, flags: u32) -> u32 {
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !file_rules_apply(cfg, flags)
        || !governed(cfg, hook_bit(Hook::FileOpen) | hook_bit(Hook::FileWrite))
    {
        return 0;
    }
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: user memory is only read through the probe helper, into the scratch key.
    let n = unsafe {
        bpf_probe_read_user_str(
            (*key).data.as_mut_ptr().add(1) as *mut _,
            (PATH_KEY_LEN - 1) as u32,
            filename as *const _,
        )
    };
    // SAFETY: scratch key read.
    if n <= 1 || unsafe { (*key).data[1] } != b'/' {
        return 0;
    }
    if fanotify_answers() {
        // fanotify decides (EPERM) and reports; a deny is remembered for
        // the syscall exit, in case the agent dies while the open waits.
        let (rule, hook) = rule_for_open(cfg, key, n as u32, PathRules::default(), flags);
        if verdict(cfg, hook, &rule).is_some_and(|(_, block)| block) {
            let tid = bpf_get_current_pid_tgid() as u32;
            let v = (u64::from(rule.rule_id) << 32) | hook as u64;
            let _ = PENDING_OPENS.insert(tid, v, 0);
        }
        return 0;
    }
    if decide_open(
        cfg,
        key,
        n as u32,
        PathRules::default(),
        flags,
        BackendKind::Fallback,
    ) {
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

/// A live agent's fanotify group decides file opens (with EPERM, on the
/// resolved object): these tracepoints stand by until its lease lapses.
#[inline(always)]
fn fanotify_answers() -> bool {
    let Some(lease) = FAN_LEASE.get(0) else {
        return false;
    };
    // SAFETY: helper without arguments.
    lease.until_ns > unsafe { bpf_ktime_get_boot_ns() }
}

/// Syscall exit of an open the tracepoints left to fanotify as a deny: if
/// it succeeded with no agent answering any more, the agent died while it
/// waited and its group let it through. Killed, as the tracepoints would.
#[inline(always)]
fn fallback_open_exit(ret: i64) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(v) = (unsafe { PENDING_OPENS.get(tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_OPENS.remove(tid);
    if ret < 0 || fanotify_answers() {
        return 0;
    }
    let hook = if v as u32 == Hook::FileWrite as u32 {
        Hook::FileWrite
    } else {
        Hook::FileOpen
    };
    emit(
        &Report::path(
            hook,
            BackendKind::Fallback,
            Verdict::Deny,
            (v >> 32) as u32,
            0,
        ),
        None,
    );
    // SAFETY: signals the current task only.
    unsafe { bpf_send_signal(SIGKILL) };
    0
}

/// sys_exit_* records: common fields, the syscall number, then `ret` at 16.
#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: offset of `ret` in every sys_exit record.
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[tracepoint]
pub fn vardr_sys_exit_openat(ctx: TracePointContext) -> u32 {
    fallback_open_exit(exit_ret(&ctx))
}

#[tracepoint]
pub fn vardr_sys_exit_openat2(ctx: TracePointContext) -> u32 {
    fallback_open_exit(exit_ret(&ctx))
}

#[tracepoint]
pub fn vardr_sys_exit_open(ctx: TracePointContext) -> u32 {
    fallback_open_exit(exit_ret(&ctx))
}

#[tracepoint]
pub fn vardr_sys_exit_creat(ctx: TracePointContext) -> u32 {
    fallback_open_exit(exit_ret(&ctx))
}

// Syscall tracepoint records: 8 bytes of common fields, the syscall number,
// then each argument in an 8-byte slot from offset 16.

#[tracepoint]
pub fn vardr_sys_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the sys_enter_openat record (dfd, filename, flags, mode).
    let (name, flags) = unsafe { (ctx.read_at::<u64>(24), ctx.read_at::<u64>(32)) };
    match (name, flags) {
        (Ok(n), Ok(f)) => fallback_open(n as *const u8, f as u32),
        _ => 0,
    }
}

#[tracepoint]
pub fn vardr_sys_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: sys_enter_openat2 record (dfd, filename, how, usize); how->flags is the first u64.
    unsafe {
        let (Ok(name), Ok(how)) = (ctx.read_at::<u64>(24), ctx.read_at::<u64>(32)) else {
            return 0;
        };
        let flags = aya_ebpf::helpers::bpf_probe_read_user(how as *const u64).unwrap_or(0);
        fallback_open(name as *const u8, flags as u32)
    }
}

#[tracepoint]
pub fn vardr_sys_open(ctx: TracePointContext) -> u32 {
    // SAFETY: sys_enter_open record (filename, flags, mode).
    let (name, flags) = unsafe { (ctx.read_at::<u64>(16), ctx.read_at::<u64>(24)) };
    match (name, flags) {
        (Ok(n), Ok(f)) => fallback_open(n as *const u8, f as u32),
        _ => 0,
    }
}

#[tracepoint]
pub fn vardr_sys_creat(ctx: TracePointContext) -> u32 {
    // SAFETY: sys_enter_creat record (pathname, mode); creat means O_CREAT|O_WRONLY|O_TRUNC.
    match unsafe { ctx.read_at::<u64>(16) } {
        Ok(n) => fallback_open(n as *const u8, O_CREAT | 1 | O_TRUNC),
        Err(_) => 0,
    }
}
