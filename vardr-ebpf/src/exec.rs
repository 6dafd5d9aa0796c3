//! Exec enforcement: `lsm/bprm_check_security` (EACCES), and the fallback
//! SIGKILL at `sched_process_exec`, before the first instruction.
use aya_ebpf::{
    bindings::path,
    helpers::{bpf_d_path, bpf_probe_read_kernel_str_bytes, bpf_send_signal},
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use vardr_common::{BackendKind, Config, Hook, PathRules, PATH_KEY_LEN};

use crate::{
    file::{path_rules, unknown_path_rules, PathKey},
    maps::PATH_SCRATCH,
    shared::{
        conclude_path, config, eacces, governed, hook_bit, identity_rules, offsets, pick, read,
    },
};

const SIGKILL: u32 = 9;

/// Combines identity and path matches, reports, returns whether to block.
#[inline(always)]
fn decide_exec(
    cfg: &Config,
    by_identity: PathRules,
    key: *mut PathKey,
    n: i64,
    backend: BackendKind,
) -> bool {
    let by_path = if n > 1 {
        path_rules(key, cfg.generation, n as u32)
    } else if backend == BackendKind::Lsm {
        unknown_path_rules(key, cfg.generation)
    } else {
        // The fallback has the name as written: a relative one is not a failure.
        PathRules::default()
    };
    let rule = pick(&by_path, &by_identity, Hook::Exec);
    let path = if n > 1 {
        Some(key as *const PathKey)
    } else {
        None
    };
    conclude_path(cfg, Hook::Exec, &rule, backend, 0, path)
}

#[lsm(hook = "bprm_check_security")]
pub fn vardr_bprm_check(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let bprm: *const u8 = ctx.arg(0);
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !governed(cfg, hook_bit(Hook::Exec)) {
        return 0;
    }
    let off = offsets();
    // SAFETY: a typed load from the hook's trusted `struct linux_binprm *`,
    // so the verifier knows the result is a `struct file *` for bpf_d_path.
    let file = unsafe { *(bprm.add(off.binprm_file as usize) as *const *const u8) };
    if file.is_null() {
        return 0;
    }
    let by_identity = identity_rules(file, cfg);
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `f_path` offset from BTF; buffer is the scratch key after its generation byte.
    let n = unsafe {
        bpf_d_path(
            file.add(off.file_f_path as usize) as *mut path,
            (*key).data.as_mut_ptr().add(1) as *mut _,
            (PATH_KEY_LEN - 1) as u32,
        )
    };
    if decide_exec(cfg, by_identity, key, n, BackendKind::Lsm) {
        eacces()
    } else {
        0
    }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn vardr_exec_fallback(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    let Some(ref cfg) = config() else {
        return 0;
    };
    if !governed(cfg, hook_bit(Hook::Exec)) {
        return 0;
    }
    let off = offsets();
    let by_identity = match read::<*const u8>(bprm, off.binprm_file) {
        Some(file) if !file.is_null() => identity_rules(file, cfg),
        _ => PathRules::default(),
    };
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // The name as passed to execve: only absolute names can match path rules.
    let mut n: i64 = 0;
    if let Some(name) = read::<*const u8>(bprm, off.binprm_filename) {
        // SAFETY: kernel string read through the probe helper into the scratch key.
        unsafe {
            let dst = &mut (&mut (*key).data)[1..];
            if let Ok(s) = bpf_probe_read_kernel_str_bytes(name, dst) {
                if s.first() == Some(&b'/') {
                    n = s.len() as i64 + 1;
                }
            }
        }
    }
    if decide_exec(cfg, by_identity, key, n, BackendKind::Fallback) {
        // SAFETY: signals the current task, which has just been given the new image.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}
