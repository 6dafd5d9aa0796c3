//! vardr's kernel side: exec tracking and Layer 1 enforcement hooks.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, lsm, map},
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, LsmContext},
    Global,
};
use vardr_common::{
    Config, EventHeader, EventKind, ExecEvent, FileEvent, KernelOffsets, PathRule, RuleAction,
    Verdict, COMM_LEN, PATH_MAX,
};

const EPERM: i32 = 1;

#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    file_f_path: 0,
    binprm_filename: 0,
});

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Path rules: longest prefix wins, so an allow under a deny prefix carves an exception.
#[map]
static FILE_RULES: LpmTrie<[u8; PATH_MAX], PathRule> = LpmTrie::with_max_entries(65536, 0);

/// Per-CPU room for a path key: too big for the 512-byte BPF stack.
#[map]
static PATH_SCRATCH: PerCpuArray<Key<[u8; PATH_MAX]>> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn fill_header(h: &mut EventHeader, kind: EventKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind as u32;
    h._pad = 0;
    // SAFETY: helpers without pointer arguments.
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.tid = pid_tgid as u32;
    h.pid = (pid_tgid >> 32) as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
}

/// Whether the current task is governed by the rules (cgroup scope).
#[inline(always)]
fn in_scope(cfg: &Config) -> bool {
    if cfg.scope_cgroup_id == 0 {
        return true;
    }
    // SAFETY: helper without pointer arguments.
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(cfg.scope_level as i32) };
    id == cfg.scope_cgroup_id
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn vardr_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer entry of the right size;
    // kernel memory is only read through probe helpers.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Exec);
        (*ev).filename[0] = 0;
        let off = OFFSETS.load().binprm_filename as usize;
        if let Ok(name) = bpf_probe_read_kernel(bprm.add(off) as *const *const u8) {
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).filename);
        }
    }
    entry.submit(0);
    0
}

#[lsm(hook = "file_open")]
pub fn vardr_file_open(ctx: LsmContext) -> i32 {
    // file_open(struct file *file); the previous LSM's verdict follows the hook's arguments.
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: *const u8 = ctx.arg(0);
    file_open_verdict(file)
}

#[inline(always)]
fn file_open_verdict(file: *const u8) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    if !in_scope(cfg) {
        return 0;
    }
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `key` is this CPU's scratch slot; `file` is the hook's trusted
    // `struct file *` and the offset of `f_path` comes from the kernel's BTF.
    let rule = unsafe {
        let fpath = file.add(OFFSETS.load().file_f_path as usize) as *mut path;
        let n = bpf_d_path(fpath, (*key).data.as_mut_ptr() as *mut _, PATH_MAX as u32);
        if n <= 0 {
            return 0;
        }
        // Only the resolved path (with its NUL) is significant for the match.
        (*key).prefix_len = (n as u32) * 8;
        match FILE_RULES.get(&*key) {
            Some(rule) => *rule,
            None => return 0,
        }
    };
    if rule.action != RuleAction::Deny as u32 {
        return 0;
    }
    let enforce = cfg.enforce != 0;
    if let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) {
        let ev = entry.as_mut_ptr();
        // SAFETY: `ev` is a reserved ring buffer entry; `key` is still this CPU's scratch.
        unsafe {
            fill_header(&mut (*ev).header, EventKind::FileOpen);
            (*ev).rule_id = rule.rule_id;
            (*ev).verdict = if enforce {
                Verdict::Deny
            } else {
                Verdict::Audit
            } as u32;
            (*ev).path = (*key).data;
        }
        entry.submit(0);
    }
    if enforce {
        -EPERM
    } else {
        0
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
