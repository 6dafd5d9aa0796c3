//! Trivial programs, one per program type, that `vardr probe` tries to load
//! to learn what this kernel really accepts (a feature flag is not proof:
//! on some kernels every trampoline program fails with EPERM).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{
        btf_tracepoint, cgroup_skb, cgroup_sock_addr, kprobe, lsm, raw_tracepoint, tracepoint,
        uprobe,
    },
    programs::{
        BtfTracePointContext, LsmContext, ProbeContext, RawTracePointContext, SkBuffContext,
        SockAddrContext, TracePointContext,
    },
};

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[cgroup_sock_addr(connect4)]
pub fn probe_sock_addr(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn probe_skb(_ctx: SkBuffContext) -> i32 {
    1
}

#[uprobe]
pub fn probe_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// A `task_file` iterator (the agent's overlay identities use one).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn probe_iter(_ctx: *mut core::ffi::c_void) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
