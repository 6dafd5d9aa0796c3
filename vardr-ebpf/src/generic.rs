//! TracingPolicy kprobe, tracepoint, uprobe and LSM hooks ("generic
//! hooks"): one program per kind (copies of the tracepoint and LSM ones),
//! attached once per hook with the hook's slot as the BPF cookie. Each
//! run reads the hook's arguments as its config says, tries its selectors
//! in order (in the kernel, as Tetragon does), carries out the first
//! matching selector's actions and reports.
//!
//! An object of its own: the agent loads it only for a policy with such
//! hooks, and an agent that adopted a pinned set (which has no object to
//! load programs from) can still run them.
#![no_std]
#![no_main]

#[path = "header.rs"]
mod header;
#[path = "identity.rs"]
mod identity;
#[path = "path_walk.rs"]
mod path_walk;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_send_signal,
        generated as raw,
        generated::{
            bpf_get_attach_cookie, bpf_get_stack, bpf_probe_read_kernel_str,
            bpf_probe_read_user_str,
        },
    },
    macros::{btf_tracepoint, kprobe, kretprobe, lsm, map, tracepoint, uprobe},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, LsmContext, ProbeContext, RetProbeContext, TracePointContext,
    },
    EbpfContext, Global,
};
use vardr_common::{
    generic::{
        FollowKey, GenCallKey, GenConfig, GenCred, GenExe, GenHook, GenKey, GenMatch, GenRateKey,
        GenSkb, GenSock, GenericEvent, PodKey, GEN_ACT_AUDIT, GEN_ACT_KSTACK, GEN_ACT_OVERRIDE,
        GEN_ACT_POST, GEN_ACT_RETURN, GEN_ACT_RET_SIGKILL, GEN_ACT_RET_SIGNAL, GEN_ACT_SIGKILL,
        GEN_ACT_SIGNAL, GEN_ACT_USTACK, GEN_ARG_BINPRM, GEN_ARG_BUF_KERNEL, GEN_ARG_BUF_USER,
        GEN_ARG_CHAR_ARRAY, GEN_ARG_CRED, GEN_ARG_DATA_LOC, GEN_ARG_FD, GEN_ARG_FILE,
        GEN_ARG_FILENAME, GEN_ARG_INT, GEN_ARG_PATH, GEN_ARG_SKB, GEN_ARG_SOCK, GEN_ARG_SOCKADDR,
        GEN_ARG_STR_KERNEL, GEN_ARG_STR_USER, GEN_BIN_EXEMPT_BIT, GEN_BIN_IN, GEN_BIN_NOT_IN,
        GEN_CAPS_EFFECTIVE, GEN_CAPS_INHERITABLE, GEN_CAPS_PERMITTED, GEN_HOOK_SYSCALL,
        GEN_MATCH_STR_LEN, GEN_MAX_ARGS, GEN_MAX_MATCHES, GEN_MAX_PID_FILTERS, GEN_MAX_RET_MATCHES,
        GEN_MAX_SELECTORS, GEN_MAX_SET_VALUES, GEN_MAX_VALUES, GEN_OP_DADDR, GEN_OP_DPORT,
        GEN_OP_DPORT_PRIV, GEN_OP_EQ, GEN_OP_FAMILY, GEN_OP_GT, GEN_OP_LT, GEN_OP_MASK, GEN_OP_NE,
        GEN_OP_NOT_DADDR, GEN_OP_NOT_DPORT, GEN_OP_NOT_DPORT_PRIV, GEN_OP_NOT_POSTFIX,
        GEN_OP_NOT_SADDR, GEN_OP_NOT_SPORT, GEN_OP_NOT_SPORT_PRIV, GEN_OP_POSTFIX, GEN_OP_PREFIX,
        GEN_OP_PROTOCOL, GEN_OP_SADDR, GEN_OP_SPORT, GEN_OP_SPORT_PRIV, GEN_OP_STR_EQ,
        GEN_PID_FOLLOW, GEN_PID_FOLLOW_DEPTH, GEN_PID_NAMESPACE, GEN_PROC_CAPS,
        GEN_PROC_CAPS_CHANGES, GEN_PROC_NAMESPACES, GEN_PROC_NS_CHANGES, GEN_PROC_PIDS,
        GEN_RATE_PROCESS, GEN_RATE_THREAD, GEN_RET_MATCH_BASE, GEN_RET_SIGNED, GEN_SET_IN,
        GEN_SLOTS, GEN_STACK_DEPTH, GEN_STR_KEY_LEN, GEN_STR_LEN,
    },
    EventKind, InodeKey, KernelOffsets, PidKey, NS_KINDS, NS_PER_TICK, NS_PID, NS_USER,
};

use crate::{
    header::fill_header,
    identity::read,
    path_walk::{build_path, Walk},
};

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// SAFETY: all-zero is a valid `KernelOffsets` (plain integers); the agent
// sets the real values at load.
#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(unsafe { core::mem::zeroed() });

const PF_KTHREAD: u32 = 0x0020_0000;
const SIGKILL: u32 = 9;
/// `pt_regs.di` on x86-64: a syscall wrapper's only argument is the
/// `pt_regs` of the syscall.
const PT_REGS_DI: usize = 112;

/// The generation in force (index into [`GEN_CONFIG`]).
#[map]
static GEN_SLOT: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(2, 0);

/// Hooks by (generation, slot).
#[map]
static GEN_HOOKS: HashMap<GenKey, GenHook> = HashMap::with_max_entries(256, 0);

/// The cgroups of the pods of each Kubernetes namespace a
/// `TracingPolicyNamespaced` names (kept by the agent as pods come and go).
#[map]
static GEN_PODS: HashMap<PodKey, u8> = HashMap::with_max_entries(16384, 0);

/// String `matchArgs` values: match id, then the value.
#[map]
static GEN_STRINGS: LpmTrie<[u8; GEN_STR_KEY_LEN], u32> =
    LpmTrie::with_max_entries(8192, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// `matchBinaries` and exempt binaries by file identity: a bit per
/// selector that lists the binary, [`GEN_BIN_EXEMPT_BIT`] for exempt ones.
#[map]
static GEN_BINARIES: HashMap<InodeKey, u64> = HashMap::with_max_entries(4096, 0);

/// What each process executed (see [`GenExe`]). A process it has no
/// entry for goes by its `mm->exe_file`: one that started before the
/// object was loaded, or (the map full) one exempt by no binary.
#[map]
static GEN_EXE: HashMap<u32, GenExe> =
    HashMap::with_max_entries(1 << 16, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Exempt pids (value: the process's start time in ticks).
/// The binaries `followChildren` selectors name, by identity, each with
/// its bit (see [`GenExe::follow`]).
#[map]
static GEN_FOLLOW: HashMap<FollowKey, u64> = HashMap::with_max_entries(256, 0);

#[map]
static GEN_EXEMPT_PIDS: HashMap<PidKey, u64> = HashMap::with_max_entries(1024, 0);

/// Overrides decided by a kprobe, for the hook's `fmod_ret` program on
/// the same function (assembled by the agent), which runs next at the
/// function's entry, takes the entry out and returns its error instead
/// of running the function.
#[map]
static GEN_OVERRIDE: HashMap<GenCallKey, i32> = HashMap::with_max_entries(4096, 0);

/// When each call a `rateLimit` counts was last posted (ns since boot).
#[map]
static GEN_RATE: LruHashMap<GenRateKey, u64> = LruHashMap::with_max_entries(8192, 0);

/// The rate-limit key being built.
#[map]
static GEN_RATE_SCRATCH: PerCpuArray<GenRateKey> = PerCpuArray::with_max_entries(1, 0);

/// Return probes' calls, from entry (where the selectors chose) to
/// return (where `matchReturnArgs` is checked and the event posted).
#[map]
static GEN_RET: HashMap<GenCallKey, GenericEvent> =
    HashMap::with_max_entries(4096, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map]
static GEN_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Events the ring buffer had no room for, per CPU, and calls skipped
/// because they interrupted another hook's run on the CPU.
#[map]
static GEN_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero while a hook runs on this CPU. The per-CPU scratch maps hold
/// one call: kprobe and tracepoint programs never nest on a CPU (the
/// kernel's `bpf_prog_active`), but an LSM program in an interrupt
/// (networking hooks in softirq) could cut into any of them, and one of
/// them into an LSM program. The interrupting call is skipped (counted
/// lost) rather than overwrite the arguments the other is judging.
#[map]
static GEN_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The event being built (too big for the stack).
#[map]
static GEN_SCRATCH: PerCpuArray<GenericEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
static GEN_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

#[map]
static GEN_KEY: PerCpuArray<Key<[u8; GEN_STR_KEY_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// Where a hook's program runs, which says where its arguments are and
/// how an Override happens.
const AT_KPROBE: u32 = 0;
const AT_TRACEPOINT: u32 = 1;
/// A BPF LSM program: the arguments are the hook's, as 64-bit words at its
/// context; an Override is the program's return value.
const AT_LSM: u32 = 2;

#[kprobe]
pub fn vardr_generic_kprobe(ctx: ProbeContext) -> u32 {
    run(ctx.as_ptr(), AT_KPROBE);
    0
}

/// A return probe's return: the call kept at its entry gets the value,
/// is checked against the selector's `matchReturnArgs` and posted.
#[kretprobe]
pub fn vardr_generic_kretprobe(ctx: RetProbeContext) -> u32 {
    returned(ctx.as_ptr());
    0
}

/// `pt_regs.ax` on x86-64: the return value.
const PT_REGS_AX: u64 = 80;

#[inline(always)]
fn returned(ctx: *mut c_void) {
    // SAFETY: the context of the program that runs.
    let slot = unsafe { bpf_get_attach_cookie(ctx) };
    let call = GenCallKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        slot,
    };
    let Some(saved) = GEN_RET.get_ptr_mut(call) else {
        return;
    };
    let raw = read::<u64>(ctx as *const u8, PT_REGS_AX).unwrap_or(0);
    // SAFETY: the kept call (a map value) is read and written in place.
    unsafe {
        let (generation, selector) = ((*saved).generation, (*saved).selector);
        let mut keep = true;
        // matchReturnActions; a policy changed since the entry posts.
        let (mut ret_actions, mut ret_signal) = (GEN_ACT_POST, 0);
        if let Some(hook) = hook_config(generation as u64, slot) {
            let ret = hook.ret;
            let v = extend(raw, ret & 0xff, ret & GEN_RET_SIGNED != 0);
            (*saved).ret = v;
            if (selector as usize) < GEN_MAX_SELECTORS {
                let sel = &hook.selectors[selector as usize & (GEN_SLOTS - 1)];
                (ret_actions, ret_signal) = (sel.ret_actions, sel.ret_signal);
                let n = sel.nret_matches;
                for k in 0..GEN_MAX_RET_MATCHES {
                    if k as u32 >= bound(&n) {
                        break;
                    }
                    let mt = &sel.matches[(GEN_RET_MATCH_BASE + k) & (GEN_SLOTS - 1)];
                    if !int_match(mt, v) {
                        keep = false;
                        break;
                    }
                }
            }
        } else {
            // The policy changed since the entry: its value as it is.
            (*saved).ret = raw;
        }
        if keep && ret_actions & (GEN_ACT_SIGKILL | GEN_ACT_SIGNAL) != 0 {
            let kill = ret_actions & GEN_ACT_SIGKILL != 0;
            (*saved).actions |= if kill {
                GEN_ACT_RET_SIGKILL
            } else {
                GEN_ACT_RET_SIGNAL
            };
            if !kill {
                (*saved).signal = ret_signal;
            }
            let enforce = GEN_CONFIG.get(generation).is_some_and(|c| c.enforce != 0);
            if enforce {
                // Signals the task the call returns to, which the hook
                // governed at the entry.
                bpf_send_signal(if kill { SIGKILL } else { ret_signal });
            } else {
                (*saved).actions |= GEN_ACT_AUDIT;
            }
        }
        if keep && ret_actions & GEN_ACT_POST != 0 {
            (*saved).actions |= GEN_ACT_RETURN;
            if GEN_EVENTS.output::<GenericEvent>(&*saved, 0).is_err() {
                if let Some(n) = GEN_LOST.get_ptr_mut(0) {
                    *n += 1;
                }
            }
        }
    }
    let _ = GEN_RET.remove(call);
}

/// A user function's entry: its arguments are in the registers, as a
/// kernel function's.
#[uprobe]
pub fn vardr_generic_uprobe(ctx: ProbeContext) -> u32 {
    run(ctx.as_ptr(), AT_KPROBE);
    0
}

/// Copies of the tracepoint program: the kernel keeps one program list per
/// tracepoint and refuses a program in it twice, so two hooks on one
/// tracepoint (two policies, or the old and the new generation during a
/// reload) each need a program of their own. Userspace loads the copies
/// it uses.
macro_rules! tracepoint_copies {
    ($($name:ident),*) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            run(ctx.as_ptr(), AT_TRACEPOINT);
            0
        }
    )*};
}

tracepoint_copies!(
    vardr_generic_tp0,
    vardr_generic_tp1,
    vardr_generic_tp2,
    vardr_generic_tp3,
    vardr_generic_tp4,
    vardr_generic_tp5,
    vardr_generic_tp6,
    vardr_generic_tp7
);

/// Copies of the LSM program: a BPF LSM program is loaded for one hook and
/// attached once, so each `lsmhooks` hook in force (both generations
/// during a reload included) takes a copy of its own, loaded for its LSM
/// hook when first needed.
macro_rules! lsm_copies {
    ($($name:ident),*) => {$(
        #[lsm]
        pub fn $name(ctx: LsmContext) -> i32 {
            lsm_verdict(run(ctx.as_ptr(), AT_LSM))
        }
    )*};
}

lsm_copies!(
    vardr_generic_lsm0,
    vardr_generic_lsm1,
    vardr_generic_lsm2,
    vardr_generic_lsm3,
    vardr_generic_lsm4,
    vardr_generic_lsm5,
    vardr_generic_lsm6,
    vardr_generic_lsm7,
    vardr_generic_lsm8,
    vardr_generic_lsm9,
    vardr_generic_lsm10,
    vardr_generic_lsm11,
    vardr_generic_lsm12,
    vardr_generic_lsm13,
    vardr_generic_lsm14,
    vardr_generic_lsm15
);

/// What an LSM program returns for an Override's error: the kernel (6.12
/// on) accepts only 0 or an errno between -4095 and -1 from an LSM hook,
/// and userspace allows nothing else; anything else still refuses (-EPERM).
#[inline(always)]
fn lsm_verdict(error: i32) -> i32 {
    let e = bound(&error);
    if e == 0 {
        0
    } else if (-4095..0).contains(&e) {
        e
    } else {
        -1
    }
}

#[inline(always)]
fn offsets() -> KernelOffsets {
    OFFSETS.load()
}

/// Runs the hook the program was attached for, unless another runs on
/// this CPU (see [`GEN_BUSY`]); returns an LSM program's error (0: the
/// call goes ahead).
#[inline(always)]
fn run(ctx: *mut c_void, at: u32) -> i32 {
    let Some(busy) = GEN_BUSY.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's flag; a program runs on one CPU to its end.
    unsafe {
        if *busy != 0 {
            if let Some(n) = GEN_LOST.get_ptr_mut(0) {
                *n += 1;
            }
            return 0;
        }
        *busy = 1;
    }
    let error = run_hook(ctx, at);
    // Looked up again: a pointer kept across the call would take a slot
    // of the program's stack.
    if let Some(busy) = GEN_BUSY.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { *busy = 0 };
    }
    error
}

#[inline(always)]
fn run_hook(ctx: *mut c_void, at: u32) -> i32 {
    let kprobe = at == AT_KPROBE;
    let generation = GEN_SLOT.get(0).copied().unwrap_or(0) & 1;
    let Some(cfg) = GEN_CONFIG.get(generation).copied() else {
        return 0;
    };
    // SAFETY: the context of the program that runs.
    let slot = unsafe { bpf_get_attach_cookie(ctx) } as u32;
    let key = GenKey { generation, slot };
    // SAFETY: a lookup; the value is copied by the fields read below.
    let Some(hook) = (unsafe { GEN_HOOKS.get(key) }) else {
        return 0;
    };
    if !governed(&cfg, generation) {
        return 0;
    }
    if hook.pods != 0 && vardr_gen_pod(hook.pods as u64) == 0 {
        return 0;
    }
    let (nargs, nselectors, flags) = (hook.nargs, hook.nselectors, hook.flags);
    // A return probe's call is kept from here to its return.
    let returns = kprobe && hook.ret != 0;
    // This thread's call, for a return probe or an Override only: other
    // calls do without the helper.
    let call = || GenCallKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        slot: slot as u64,
    };
    let Some(ev) = GEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // The argument source: the probe's registers (a syscall's own, behind
    // its wrapper's), or the tracepoint's record.
    let mut base = ctx as u64;
    if kprobe && flags & GEN_HOOK_SYSCALL != 0 {
        base = read::<u64>(ctx as *const u8, PT_REGS_DI as u64).unwrap_or(0);
    }
    let base = scalar(base);
    for i in 0..GEN_MAX_ARGS as u32 {
        if i >= bound(&nargs) {
            break;
        }
        vardr_gen_arg(base, generation as u64, slot as u64, i as u64);
        let kind = hook.args[i as usize & (GEN_SLOTS - 1)].kind;
        if kind == GEN_ARG_CRED || kind == GEN_ARG_SKB {
            vardr_gen_record(base, generation as u64, slot as u64, i as u64);
        }
    }
    let mut picked = u32::MAX;
    for s in 0..GEN_MAX_SELECTORS as u32 {
        if s >= bound(&nselectors) {
            break;
        }
        // The process filters first, from here: called from the selector's
        // function their frames would exceed the 512 bytes of stack the
        // kernel allows a chain of calls.
        let process = hook.selectors[s as usize & (GEN_SLOTS - 1)].process;
        if process != 0 && vardr_gen_process(generation as u64, slot as u64, s as u64) == 0 {
            continue;
        }
        if vardr_gen_selector(generation as u64, slot as u64, s as u64) != 0 {
            picked = s;
            break;
        }
    }
    if nselectors > 0 && picked == u32::MAX {
        if returns {
            // A call kept from an entry whose return was missed is not
            // this call's.
            let _ = GEN_RET.remove(call());
        }
        return 0;
    }
    let (mut actions, mut signal, mut rule_id, mut arg_error) = (GEN_ACT_POST, 0, 0, 0);
    let (mut rate_ns, mut rate_scope) = (0, 0);
    if (picked as usize) < GEN_MAX_SELECTORS {
        let sel = &hook.selectors[picked as usize & (GEN_SLOTS - 1)];
        actions = sel.actions;
        signal = sel.signal;
        rule_id = sel.rule_id;
        arg_error = sel.arg_error;
        rate_ns = sel.rate_limit_ns;
        rate_scope = sel.rate_scope;
    }
    let mut error = 0;
    if actions & GEN_ACT_OVERRIDE != 0 {
        if cfg.enforce != 0 {
            if at == AT_LSM {
                // The program's return value fails the call.
                error = arg_error;
            } else if GEN_OVERRIDE.insert(call(), arg_error, 0).is_ok() {
                // Without room (4096 threads between this probe and the
                // function) the call goes ahead, and the event does not
                // claim the Override.
                error = arg_error;
            } else {
                actions &= !GEN_ACT_OVERRIDE;
            }
        } else {
            actions |= GEN_ACT_AUDIT;
        }
    }
    if actions & (GEN_ACT_SIGKILL | GEN_ACT_SIGNAL) != 0 {
        if cfg.enforce != 0 {
            let sig = if actions & GEN_ACT_SIGKILL != 0 {
                SIGKILL
            } else {
                signal
            };
            // An LSM hook can refuse the call the killed process is in
            // (a kprobe cannot: the call completes before the signal).
            if at == AT_LSM && sig == SIGKILL && error == 0 {
                error = -1;
            }
            // SAFETY: signals the current task, which the hook governs.
            unsafe { bpf_send_signal(sig) };
        } else {
            actions |= GEN_ACT_AUDIT;
        }
    }
    if actions & GEN_ACT_POST != 0
        && rate_ns != 0
        && rate_limited(slot, picked, rate_ns, rate_scope)
    {
        actions &= !GEN_ACT_POST;
    }
    if actions & GEN_ACT_POST == 0 {
        if returns {
            let _ = GEN_RET.remove(call());
        }
        return error;
    }
    // SAFETY: this CPU's scratch event; the arguments were read into it above.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Generic);
        (*ev).slot = slot;
        (*ev).selector = picked;
        (*ev).actions = actions;
        (*ev).signal = signal;
        (*ev).rule_id = rule_id;
        (*ev).generation = generation;
        (*ev).error = error;
        (*ev).ret = 0;
        (*ev).kstack_len = 0;
        (*ev).ustack_len = 0;
        if at == AT_KPROBE && actions & GEN_ACT_KSTACK != 0 {
            (*ev).kstack_len = stack(ctx, (*ev).kstack.as_mut_ptr(), 0);
        }
        if at == AT_KPROBE && actions & GEN_ACT_USTACK != 0 {
            (*ev).ustack_len = stack(ctx, (*ev).ustack.as_mut_ptr(), BPF_F_USER_STACK);
        }
        if returns {
            // Posted at the return, with the value. Without room the call
            // is counted lost.
            // By reference: a copy of the event would not fit the stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let kept = GEN_RET.insert(call(), &*ev, 0);
            if kept.is_err() {
                if let Some(n) = GEN_LOST.get_ptr_mut(0) {
                    *n += 1;
                }
            }
            return error;
        }
        if GEN_EVENTS.output::<GenericEvent>(&*ev, 0).is_err() {
            if let Some(n) = GEN_LOST.get_ptr_mut(0) {
                *n += 1;
            }
        }
    }
    error
}

/// Cgroup levels looked at for a pod's cgroup (kubelet puts pods at 2 to
/// 4; what runs in them may nest deeper, below).
const POD_LEVELS: i32 = 16;

/// Whether the current task runs in a pod of namespace id `pods` (1) or
/// not (0): its cgroup, or one of its ancestors, is one of the pod cgroups
/// listed (so a cgroup a container makes below its own, however deep, is
/// still the pod's). A global function: the lookups stay out of the
/// hook's frame.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_pod(pods: u64) -> u32 {
    for level in 1..POD_LEVELS {
        // SAFETY: helper with a plain level; 0 once past the task's own.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cgroup == 0 {
            return 0;
        }
        let key = PodKey {
            pods: pods as u32,
            _pad: 0,
            cgroup,
        };
        // SAFETY: a lookup; only its presence is read.
        if unsafe { GEN_PODS.get(key) }.is_some() {
            return 1;
        }
    }
    0
}

/// `BPF_F_USER_STACK`: the user stack of the current task.
const BPF_F_USER_STACK: u64 = 1 << 8;

/// The stack of the probed call into `frames` (GEN_STACK_DEPTH slots of a
/// map value): how many frames it holds (0: none could be taken).
#[inline(always)]
fn stack(ctx: *mut c_void, frames: *mut u64, flags: u64) -> u32 {
    const BYTES: u32 = (GEN_STACK_DEPTH * 8) as u32;
    // SAFETY: a kprobe's context; `frames` has BYTES bytes of the scratch
    // event (map memory), which the helper fills at most.
    let n = unsafe { bpf_get_stack(ctx, frames as *mut c_void, BYTES, flags) };
    if n > 0 {
        (n as u32 / 8).min(GEN_STACK_DEPTH as u32)
    } else {
        0
    }
}

/// Post's `rateLimit`: whether the same call (this hook's selector, the
/// same arguments, from the same thread, process or anyone, as the scope
/// says) was posted less than `limit_ns` ago; if not, it is now.
#[inline(always)]
fn rate_limited(slot: u32, selector: u32, limit_ns: u64, scope: u32) -> bool {
    let (Some(k), Some(ev)) = (GEN_RATE_SCRATCH.get_ptr_mut(0), GEN_SCRATCH.get_ptr(0)) else {
        return false;
    };
    let id = bpf_get_current_pid_tgid();
    // SAFETY: this CPU's key slot and scratch event (its arguments read).
    unsafe {
        (*k).slot = slot;
        (*k).selector = selector;
        (*k).scope = match scope {
            GEN_RATE_THREAD => id,
            GEN_RATE_PROCESS => id >> 32,
            _ => 0,
        };
        for i in 0..GEN_MAX_ARGS {
            (*k).ints[i] = (*ev).ints[i];
            (*k).strs[i] = vardr_gen_str_hash(i as u64);
        }
        let now = bpf_ktime_get_ns();
        // The key by reference: a copy would take 136 bytes of the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let last = GEN_RATE.get(&*k).copied();
        if last.is_some_and(|t| now.wrapping_sub(t) < limit_ns) {
            return true;
        }
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = GEN_RATE.insert(&*k, now, 0);
    }
    false
}

/// FNV-1a of string argument `i` of the scratch event, up to its NUL.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_str_hash(i: u64) -> u64 {
    let Some(ev) = GEN_SCRATCH.get_ptr(0) else {
        return 0;
    };
    let i = i as usize & (GEN_SLOTS - 1);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for j in 0..GEN_STR_LEN {
        // SAFETY: this CPU's scratch event, indexes in range.
        let c = unsafe { (*ev).strs[i][j] };
        if c == 0 {
            break;
        }
        h = (h ^ c as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The config of hook (`generation`, `slot`), as a global function's
/// arguments name it (the map value: fields are read from it, not kept).
#[inline(always)]
fn hook_config(generation: u64, slot: u64) -> Option<&'static GenHook> {
    let key = GenKey {
        generation: generation as u32,
        slot: slot as u32,
    };
    // SAFETY: a lookup; callers read fields from the value within the call.
    unsafe { GEN_HOOKS.get(key) }
}

/// A loop's data-dependent bound, read anew at each check: LLVM cannot
/// then merge it with the loop's constant bound into one equality test
/// (`i == min(n, 5)`), which older verifiers (6.1) cannot prove ends and
/// follow until they give up.
#[inline(always)]
fn bound<T: Copy>(v: &T) -> T {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(v) }
}

/// A pointer as a plain number, for a global function's argument (the
/// verifier refuses a context pointer where the prototype has an
/// integer): copied through the probe helper, which yields a scalar.
#[inline(always)]
fn scalar(v: u64) -> u64 {
    // SAFETY: reads the local `v`.
    unsafe { bpf_probe_read_kernel(&v as *const u64) }.unwrap_or(0)
}

/// Whether the hooks apply to the current task: PID 1, kernel threads, the
/// agent (its cgroup, its process) and exempt pids and binaries are left
/// alone, and with a scope only its cgroup subtree is governed.
#[inline(always)]
fn governed(cfg: &GenConfig, generation: u32) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == 1 {
        return false;
    }
    // SAFETY: helpers without pointer arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if cfg.agent_cgroup_id != 0 && cgroup == cfg.agent_cgroup_id {
        return false;
    }
    if cfg.scope_cgroup_id != 0 {
        // SAFETY: helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(cfg.scope_level as i32) };
        if id != cfg.scope_cgroup_id {
            return false;
        }
    }
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if read::<u32>(task, off.task_flags).unwrap_or(0) & PF_KTHREAD != 0 {
        return false;
    }
    let start = start_ticks(task, &off);
    if tgid == cfg.agent_tgid && start == cfg.agent_start_ticks {
        return false;
    }
    if cfg.has_exempt_pids != 0 {
        // SAFETY: a lookup, copied at once.
        let s = unsafe { GEN_EXEMPT_PIDS.get(PidKey { generation, tgid }) }.copied();
        if s == Some(start) {
            return false;
        }
    }
    cfg.has_binaries == 0 || binaries(generation) & (1 << GEN_BIN_EXEMPT_BIT) == 0
}

/// The `GEN_BINARIES` bits of the current process's executable.
#[inline(always)]
fn binaries(generation: u32) -> u64 {
    vardr_gen_binaries(generation as u64, 0)
}

/// The process's start time in clock ticks, as `/proc/PID/stat` has it.
#[inline(always)]
fn start_ticks(task: *const u8, off: &KernelOffsets) -> u64 {
    let leader: *const u8 = read(task, off.task_group_leader).unwrap_or(task);
    read::<u64>(leader, off.task_start_boottime).unwrap_or(0) / NS_PER_TICK
}

/// (device, inode) of a file, through overlay mappings, as the agent
/// keys binaries.
#[inline(always)]
fn file_key(file: *const u8, off: &KernelOffsets) -> Option<(u32, u64)> {
    let dentry = read::<*const u8>(file, off.file_f_path + off.path_dentry)?;
    identity::plain_key(identity::real_dentry(dentry, off), off)
}

/// The current process's `GEN_EXE` entry, if it is its own (not a
/// reused pid's).
#[inline(always)]
fn recorded(tgid: u32, task: *const u8, off: &KernelOffsets) -> Option<&'static GenExe> {
    // SAFETY: a lookup; the value stays valid while the program runs (the
    // callers read a few fields of it, not a copy on their stack). An
    // exec of another thread of the same process, on another CPU, can
    // replace the entry meanwhile and the kernel may reuse the old element
    // at once: such a reader can see a mix of the two execs' values, as it
    // would reading the task's own state while that exec runs.
    unsafe { GEN_EXE.get(tgid) }.filter(|e| e.start_ticks == start_ticks(task, off))
}

/// What `matchCapabilityChanges` and `matchNamespaceChanges` compare with:
/// the capability sets (`GEN_CAPS_*` order) and namespaces of `task`,
/// which is the current task (the namespaces are read as the current's).
#[inline(always)]
fn baseline_of(task: *const u8, off: &KernelOffsets, e: &mut GenExe) {
    if let Some(cred) = read::<*const u8>(task, off.task_cred) {
        e.base_caps[GEN_CAPS_EFFECTIVE as usize] =
            read::<u64>(cred, off.cred_cap_effective).unwrap_or(0);
        e.base_caps[GEN_CAPS_INHERITABLE as usize] =
            read::<u64>(cred, off.cred_cap_inheritable).unwrap_or(0);
        e.base_caps[GEN_CAPS_PERMITTED as usize] =
            read::<u64>(cred, off.cred_cap_permitted).unwrap_or(0);
    }
    for k in 0..NS_KINDS {
        e.base_ns[k] = vardr_gen_ns_now(k as u64);
    }
    e.has_base = 1;
}

/// The current task's namespace of kind `k` ([`ns_inum`]), in a global
/// function: inlined in a loop over the kinds, its branches took the exec
/// program past the 6.1 verifier's limit.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_ns_now(k: u64) -> u32 {
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    ns_inum(task, k as usize & 15)
}

/// Whether a task is traced now.
#[inline(always)]
fn traced_now(task: *const u8, off: &KernelOffsets) -> bool {
    read::<u32>(task, off.task_ptrace).unwrap_or(1) != 0
}

/// Records what the process executes (the file of the exec, after any
/// interpreter: what `mm->exe_file` is at this point, before the process
/// can change it).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn vardr_gen_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = read::<*const u8>(bprm, off.binprm_file).and_then(|f| file_key(f, &off));
    if let Some((dev, ino)) = key {
        // The parent stays what it was at fork; the followed binaries
        // run so far stay, with this one's if it is followed.
        let (parent_dev, parent_ino, follow) = recorded(tgid, task, &off)
            .map_or((0, 0, 0), |o| (o.parent_dev, o.parent_ino, o.follow));
        let followed = FollowKey { dev, _pad: 0, ino };
        // SAFETY: a lookup; the value is copied.
        let bit = unsafe { GEN_FOLLOW.get(followed) }.copied().unwrap_or(0);
        let mut e = GenExe {
            start_ticks: start_ticks(task, &off),
            dev,
            traced: traced_now(task, &off) as u32,
            ino,
            parent_dev,
            parent_ino,
            follow: follow | bit,
            ..GenExe::default()
        };
        baseline_of(task, &off, &mut e);
        if GEN_EXE.insert(tgid, e, 0).is_ok() {
            return 0;
        }
    }
    let _ = GEN_EXE.remove(tgid);
    0
}

/// A child process runs its parent's executable until it execs; its
/// parent is what the parent runs now, whatever happens to the parent
/// later (exit and reparenting included).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn vardr_gen_fork(ctx: BtfTracePointContext) -> i32 {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child: *const u8 = ctx.arg(1);
    let off = offsets();
    let pid: u32 = read(child, off.task_pid).unwrap_or(0);
    let tgid: u32 = read(child, off.task_tgid).unwrap_or(0);
    if pid == 0 || pid != tgid {
        return 0; // a thread, not a process
    }
    let ptgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: helper without arguments; the task is only read through probes.
    let parent = unsafe { bpf_get_current_task() } as *const u8;
    let mut e = GenExe::default();
    let (dev, ino, traced, follow) = match recorded(ptgid, parent, &off) {
        Some(p) => {
            // The parent's exec is the child's until it execs.
            e.base_caps = p.base_caps;
            e.base_ns = p.base_ns;
            e.has_base = p.has_base;
            (p.dev, p.ino, p.traced != 0, p.follow)
        }
        // A parent that started before the tracking did: what it names
        // as its executable now (what it descends from is unknown).
        None => match exe_identity(parent, &off) {
            Some((dev, ino)) => (dev, ino, traced_now(parent, &off), 0),
            None => return 0,
        },
    };
    // The parent's executable counts for its children even if it was
    // followed only after the parent executed it.
    let parent_exe = FollowKey { dev, _pad: 0, ino };
    // SAFETY: a lookup; the value is copied.
    let follow = follow | unsafe { GEN_FOLLOW.get(parent_exe) }.copied().unwrap_or(0);
    e.start_ticks = start_ticks(child, &off);
    e.dev = dev;
    // A child traced from its birth (PTRACE_O_TRACEFORK) is traced.
    e.traced = (traced || traced_now(child, &off)) as u32;
    e.ino = ino;
    e.parent_dev = dev;
    e.parent_ino = ino;
    e.follow = follow;
    if e.has_base == 0 {
        // A parent from before the tracking: its state now is the best
        // known (the child is a copy of it).
        baseline_of(parent, &off, &mut e);
    }
    let _ = GEN_EXE.insert(tgid, e, 0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn vardr_gen_exit(_ctx: BtfTracePointContext) -> i32 {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // The process ends with its last thread.
    let Some(signal) = read::<*const u8>(task, off.task_signal) else {
        return 0;
    };
    if read::<i32>(signal, off.signal_live).unwrap_or(1) == 0 {
        let _ = GEN_EXE.remove((bpf_get_current_pid_tgid() >> 32) as u32);
    }
    0
}

/// [`binaries`]' lookup, a global function: the kernel verifies the walk
/// to the executable's identity (with its overlay cases) once, not in
/// every state of the selectors that ask (on 6.1 their combinations
/// exceeded the verifier's limit on pending branches).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_binaries(generation: u64, parent: u64) -> u64 {
    let generation = generation as u32;
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let own = recorded(tgid, task, &off);
    let identity = if parent != 0 {
        // `matchParentBinaries`: what the parent ran when it forked us.
        match own.filter(|e| e.parent_dev != 0 || e.parent_ino != 0) {
            Some(e) => Some((e.parent_dev, e.parent_ino, false)),
            None => read::<*const u8>(task, off.task_real_parent).and_then(|p| {
                let ptgid = read::<u32>(p, off.task_tgid)?;
                match recorded(ptgid, p, &off) {
                    Some(e) => Some((e.dev, e.ino, false)),
                    None => exe_identity(p, &off).map(|(d, i)| (d, i, false)),
                }
            }),
        }
    } else {
        match own {
            // Traced at its exec, or since.
            Some(e) => Some((e.dev, e.ino, e.traced != 0 || traced_now(task, &off))),
            None => exe_identity(task, &off).map(|(dev, ino)| {
                // Unknown to the tracking though started after it began (the
                // map was full): no exemption on a name the process chose.
                let since = GEN_CONFIG
                    .get(generation)
                    .map_or(0, |c| c.tracked_since_ticks);
                let late = since != 0 && start_ticks(task, &off) > since;
                (dev, ino, late || traced_now(task, &off))
            }),
        }
    };
    let Some((dev, ino, no_exemption)) = identity else {
        return 0;
    };
    let key = InodeKey {
        generation,
        dev,
        ino,
    };
    // SAFETY: a lookup, copied at once.
    let bits = unsafe { GEN_BINARIES.get(key) }.copied().unwrap_or(0);
    if no_exemption {
        bits & !(1u64 << GEN_BIN_EXEMPT_BIT)
    } else {
        bits
    }
}

/// Builds the path of the current process's executable (`mm->exe_file`,
/// from its dentries up to the global root), or with `parent` that of its
/// parent now (`real_parent`), in this CPU's `GEN_WALK` slot: 1 when
/// built; 0 without an executable (a kernel thread) or a path (too long,
/// too deep). A global function, verified once, apart from the string
/// lookup ([`vardr_gen_walk_listed`]): in one function the verifier tried
/// the lookup once per length the walk can end with (past its 1 M limit).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_exe_path(parent: u64) -> u32 {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let mut task = unsafe { bpf_get_current_task() } as *const u8;
    if parent != 0 {
        task = read::<*const u8>(task, off.task_real_parent).unwrap_or(core::ptr::null());
        if task.is_null() {
            return 0;
        }
    }
    let Some(exe) = read::<*const u8>(task, off.task_mm)
        .filter(|mm| !mm.is_null())
        .and_then(|mm| read::<*const u8>(mm, off.mm_exe_file))
        .filter(|f| !f.is_null())
    else {
        return 0;
    };
    let p = exe.wrapping_add(off.file_f_path as usize);
    let (Some(mnt), Some(dentry), Some(w)) = (
        read::<*const u8>(p, off.path_mnt),
        read::<*const u8>(p, off.path_dentry),
        GEN_WALK.get_ptr_mut(0),
    ) else {
        return 0;
    };
    if mnt.is_null() || dentry.is_null() {
        return 0;
    }
    let n = build_path(w, &off, mnt, dentry);
    // The walk's component count is done with: the slot's `len` now holds
    // the path's length with its NUL, for `vardr_gen_walk_listed`.
    // SAFETY: this CPU's walk slot.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*w).len), n) };
    (n > 0) as u32
}

/// Whether the path [`vardr_gen_exe_path`] built (its length with the NUL
/// in the slot's `len`) starts or ends with one of string match `id`'s
/// values, as `op` asks (1) or not (0). A global function.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_walk_listed(id: u64, op: u64) -> u32 {
    let Some(w) = GEN_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's walk slot: the generation byte, then the path and
    // its NUL (`len` bytes, fewer than GEN_STR_LEN). The length is read
    // back through memory and masked: one unknown bound for the verifier
    // instead of a state per length a search for the NUL could end at.
    let (s, len) = unsafe {
        let len = core::ptr::read_volatile(&(*w).len).wrapping_sub(1) & (GEN_STR_LEN as u32 - 1);
        ((*w).key.data.as_ptr().add(1), len as usize)
    };
    string_listed_len(s, len, id as u32, op as u32) as u32
}

/// The identity of what a task names as its executable (`mm->exe_file`).
#[inline(always)]
fn exe_identity(task: *const u8, off: &KernelOffsets) -> Option<(u32, u64)> {
    let mm = read::<*const u8>(task, off.task_mm)?;
    let exe = read::<*const u8>(mm, off.mm_exe_file)?;
    file_key(exe, off)
}

/// Reads argument `i` of hook (`generation`, `slot`) from `base` (the
/// registers or the record) into the scratch event.
///
/// A global function: the kernel verifies it once, on its own, rather
/// than once per argument in every state of its caller.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_arg(base: u64, generation: u64, slot: u64, i: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let i = i as usize & (GEN_SLOTS - 1);
    let arg = hook.args[i];
    let Some(ev) = GEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch event, `i` in range.
    let (int, out) = unsafe { (&mut (*ev).ints[i], (*ev).strs[i].as_mut_ptr()) };
    *int = 0;
    // SAFETY: `out` has GEN_STR_LEN bytes.
    unsafe { *out = 0 };
    let base = base as *const u8;
    let src = arg.src as u64;
    let off = offsets();
    match arg.kind {
        GEN_ARG_INT => {
            let v = match arg.size {
                1 => read::<u8>(base, src).map(|v| v as u64),
                2 => read::<u16>(base, src).map(|v| v as u64),
                4 => read::<u32>(base, src).map(|v| v as u64),
                _ => read::<u64>(base, src),
            }
            .unwrap_or(0);
            *int = extend(v, arg.size, arg.signed != 0);
        }
        GEN_ARG_STR_USER | GEN_ARG_STR_KERNEL | GEN_ARG_FILENAME => {
            let mut p = read::<u64>(base, src).unwrap_or(0);
            // `struct filename` starts with `const char *name`.
            if arg.kind == GEN_ARG_FILENAME {
                p = read::<u64>(p as *const u8, 0).unwrap_or(0);
            }
            // SAFETY: `out` has GEN_STR_LEN bytes; the helpers cope with any address.
            unsafe {
                let n = if arg.kind == GEN_ARG_STR_USER {
                    bpf_probe_read_user_str(
                        out as *mut c_void,
                        GEN_STR_LEN as u32,
                        p as *const c_void,
                    )
                } else {
                    bpf_probe_read_kernel_str(
                        out as *mut c_void,
                        GEN_STR_LEN as u32,
                        p as *const c_void,
                    )
                };
                if n < 0 {
                    *out = 0;
                }
            }
        }
        GEN_ARG_DATA_LOC => {
            let loc = read::<u32>(base, src).unwrap_or(0);
            let p = base.wrapping_add((loc & 0xffff) as usize);
            // SAFETY: as above.
            unsafe {
                if bpf_probe_read_kernel_str(
                    out as *mut c_void,
                    GEN_STR_LEN as u32,
                    p as *const c_void,
                ) < 0
                {
                    *out = 0;
                }
            }
        }
        GEN_ARG_CHAR_ARRAY => {
            let n = (arg.size as usize).min(GEN_STR_LEN - 1);
            let p = base.wrapping_add(src as usize);
            // SAFETY: as above; at most GEN_STR_LEN bytes with the NUL.
            unsafe {
                if bpf_probe_read_kernel_str(out as *mut c_void, (n + 1) as u32, p as *const c_void)
                    < 0
                {
                    *out = 0;
                }
            }
        }
        GEN_ARG_FILE | GEN_ARG_PATH | GEN_ARG_BINPRM | GEN_ARG_FD => {
            // The argument is its path (the pointer is not kept: calls on
            // one path compare equal, for rateLimit).
            let mut p = read::<u64>(base, src).unwrap_or(0) as *const u8;
            if arg.kind == GEN_ARG_BINPRM {
                p = read::<*const u8>(p, off.binprm_file).unwrap_or(core::ptr::null());
            }
            if arg.kind == GEN_ARG_FD {
                // The low 32 bits are the descriptor, whatever the width
                // of the register or field.
                let fd = p as u64 as u32 as i32;
                *int = fd as i64 as u64;
                p = fd_file(fd, &off);
            }
            // A `struct path` is the file's `f_path`.
            if arg.kind != GEN_ARG_PATH {
                p = p.wrapping_add(off.file_f_path as usize);
            }
            let mnt = read::<*const u8>(p, off.path_mnt);
            let dentry = read::<*const u8>(p, off.path_dentry);
            if let (Some(mnt), Some(dentry), Some(w)) = (mnt, dentry, GEN_WALK.get_ptr_mut(0)) {
                if !mnt.is_null() && !dentry.is_null() && build_path(w, &off, mnt, dentry) > 0 {
                    // SAFETY: this CPU's walk slot: the generation byte, then
                    // the path and its NUL (fewer than GEN_STR_LEN bytes).
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            (*w).key.data.as_ptr().add(1),
                            out,
                            GEN_STR_LEN - 1,
                        );
                        *out.add(GEN_STR_LEN - 1) = 0;
                    }
                }
            }
        }
        GEN_ARG_BUF_USER | GEN_ARG_BUF_KERNEL => {
            let p = read::<u64>(base, src).unwrap_or(0);
            let size = read::<u64>(base, arg.size as u64).unwrap_or(0);
            *int = size;
            let n = if size > GEN_STR_LEN as u64 {
                GEN_STR_LEN as u32
            } else {
                size as u32
            };
            if n > 0 {
                // SAFETY: `out` has GEN_STR_LEN bytes, `n` at most that; the
                // helpers cope with any address.
                let r = unsafe {
                    if arg.kind == GEN_ARG_BUF_USER {
                        raw::bpf_probe_read_user(out as *mut c_void, n, p as *const c_void)
                    } else {
                        raw::bpf_probe_read_kernel(out as *mut c_void, n, p as *const c_void)
                    }
                };
                if r < 0 {
                    *int = 0;
                }
            }
        }
        // Read by `vardr_gen_record`, called beside this function: here
        // its frame would take the chain past 512 bytes of stack.
        GEN_ARG_CRED | GEN_ARG_SKB => {}
        GEN_ARG_SOCK | GEN_ARG_SOCKADDR => {
            let p = read::<u64>(base, src).unwrap_or(0) as *const u8;
            let sk = out as *mut GenSock;
            // SAFETY: the argument's buffer (GEN_STR_LEN bytes, 8-aligned
            // after the integers) holds a GenSock.
            unsafe {
                *sk = GenSock::default();
                if !p.is_null() {
                    if arg.kind == GEN_ARG_SOCK {
                        read_sock(p, &off, &mut *sk);
                    } else {
                        read_sockaddr(p, &mut *sk);
                    }
                }
            }
        }
        _ => {}
    }
    1
}

/// The file behind descriptor `fd` of the current task (null if none).
#[inline(always)]
fn fd_file(fd: i32, off: &KernelOffsets) -> *const u8 {
    if fd < 0 {
        return core::ptr::null();
    }
    // SAFETY: the current task, read through the probe helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let fdt = read::<*const u8>(task, off.task_files)
        .and_then(|files| read::<*const u8>(files, off.files_fdt));
    let Some(fdt) = fdt else {
        return core::ptr::null();
    };
    let max = read::<u32>(fdt, off.fdtable_max_fds).unwrap_or(0);
    if fd as u32 >= max {
        return core::ptr::null();
    }
    read::<*const u8>(fdt, off.fdtable_fd)
        .and_then(|array| read::<*const u8>(array, fd as u64 * 8))
        .unwrap_or(core::ptr::null())
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// What a `struct sock` shows: family, protocol, type, state, ports and
/// addresses (`sk_common`'s).
#[inline(always)]
fn read_sock(p: *const u8, off: &KernelOffsets, sk: &mut GenSock) {
    let Some(family) = read::<u16>(p, off.skc_family) else {
        return;
    };
    sk.family = family;
    sk.protocol = read::<u16>(p, off.sk_protocol).unwrap_or(0);
    sk.type_ = read::<u16>(p, off.sk_type).unwrap_or(0);
    sk.state = read::<u8>(p, off.skc_state).unwrap_or(0);
    sk.sport = read::<u16>(p, off.skc_num).unwrap_or(0);
    sk.dport = u16::from_be(read::<u16>(p, off.skc_dport).unwrap_or(0));
    if family == AF_INET {
        let s = read::<[u8; 4]>(p, off.skc_rcv_saddr).unwrap_or([0; 4]);
        let d = read::<[u8; 4]>(p, off.skc_daddr).unwrap_or([0; 4]);
        sk.saddr[..4].copy_from_slice(&s);
        sk.daddr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        sk.saddr = read::<[u8; 16]>(p, off.skc_v6_rcv_saddr).unwrap_or([0; 16]);
        sk.daddr = read::<[u8; 16]>(p, off.skc_v6_daddr).unwrap_or([0; 16]);
    }
    sk.valid = 1;
}

/// Argument `i` of hook (`generation`, `slot`), a `struct cred *` or a
/// `struct sk_buff *`, into the scratch event as a [`GenCred`] or a
/// [`GenSkb`]. A global function, as [`vardr_gen_arg`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_record(base: u64, generation: u64, slot: u64, i: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let i = i as usize & (GEN_SLOTS - 1);
    let (src, kind) = (hook.args[i].src as u64, hook.args[i].kind);
    let Some(ev) = GEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let p = read::<u64>(base as *const u8, src).unwrap_or(0) as *const u8;
    // SAFETY: this CPU's scratch event, `i` in range; the argument's buffer
    // (GEN_STR_LEN bytes, 8-aligned after the integers) holds the record.
    unsafe {
        let buf = (*ev).strs[i].as_mut_ptr();
        if kind == GEN_ARG_CRED {
            let c = buf as *mut GenCred;
            *c = GenCred::default();
            if !p.is_null() {
                read_cred(p, &mut *c);
            }
        } else {
            let b = buf as *mut GenSkb;
            *b = GenSkb::default();
            if !p.is_null() {
                read_skb(p, &mut *b);
            }
        }
    }
    0
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `skb->network_header` when not set (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

/// A packet's addresses and protocol from its IP header (version 4 or 6,
/// at `head + network_header`) and its ports from the TCP or UDP header
/// right after it (IPv4 options counted; IPv6 extension headers not
/// walked: their packets show the extension as protocol and no ports),
/// as Tetragon reads an `skb`. The IP header rather than
/// `transport_header`, which on the receive path points at the network
/// header until IP has run. A packet whose IP header cannot be read is
/// left invalid: no operator holds for it.
#[inline(always)]
fn read_skb(p: *const u8, b: &mut GenSkb) {
    let off = offsets();
    if off.skb_head == 0 {
        return;
    }
    b.len = read::<u32>(p, off.skb_len).unwrap_or(0);
    b.priority = read::<u32>(p, off.skb_priority).unwrap_or(0);
    b.mark = read::<u32>(p, off.skb_mark).unwrap_or(0);
    b.hash = read::<u32>(p, off.skb_hash).unwrap_or(0);
    let Some(head) = read::<*const u8>(p, off.skb_head) else {
        return;
    };
    let nh = read::<u16>(p, off.skb_network_header).unwrap_or(HEADER_UNSET);
    // A new buffer's network header is 0 (only the MAC and transport
    // headers start as unset) until IP sets it: before that, `head` holds
    // no IP header, whatever its bytes say.
    if head.is_null() || nh == HEADER_UNSET || nh == 0 {
        return;
    }
    let ip = head.wrapping_add(nh as usize);
    let Some(v) = read::<u8>(ip, 0) else {
        return;
    };
    let sk = &mut b.sock;
    let (proto, transport) = match v >> 4 {
        4 => {
            // A header shorter than 20 bytes is no IPv4 header.
            if v & 15 < 5 {
                return;
            }
            sk.family = AF_INET;
            let s = read::<[u8; 4]>(ip, 12).unwrap_or([0; 4]);
            let d = read::<[u8; 4]>(ip, 16).unwrap_or([0; 4]);
            sk.saddr[..4].copy_from_slice(&s);
            sk.daddr[..4].copy_from_slice(&d);
            (read::<u8>(ip, 9).unwrap_or(0), ((v & 15) as usize) * 4)
        }
        6 => {
            sk.family = AF_INET6;
            sk.saddr = read::<[u8; 16]>(ip, 8).unwrap_or([0; 16]);
            sk.daddr = read::<[u8; 16]>(ip, 24).unwrap_or([0; 16]);
            (read::<u8>(ip, 6).unwrap_or(0), 40)
        }
        _ => return,
    };
    sk.protocol = proto as u16;
    // A fragment past the first carries no TCP or UDP header.
    let later_fragment =
        sk.family == AF_INET && u16::from_be(read::<u16>(ip, 6).unwrap_or(0)) & 0x1fff != 0;
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && !later_fragment {
        let t = ip.wrapping_add(transport);
        sk.sport = u16::from_be(read::<u16>(t, 0).unwrap_or(0));
        sk.dport = u16::from_be(read::<u16>(t, 2).unwrap_or(0));
    }
    sk.valid = 1;
}

/// The fields of a `struct cred` Tetragon reports.
#[inline(always)]
fn read_cred(p: *const u8, c: &mut GenCred) {
    let off = offsets();
    let id = |o: u64| read::<u32>(p, o).unwrap_or(0);
    c.uid = id(off.cred_uid);
    c.gid = id(off.cred_gid);
    c.euid = id(off.cred_euid);
    c.egid = id(off.cred_egid);
    c.suid = id(off.cred_suid);
    c.sgid = id(off.cred_sgid);
    c.fsuid = id(off.cred_fsuid);
    c.fsgid = id(off.cred_fsgid);
    let caps = |o: u64| read::<u64>(p, o).unwrap_or(0);
    c.cap_permitted = caps(off.cred_cap_permitted);
    c.cap_effective = caps(off.cred_cap_effective);
    c.cap_inheritable = caps(off.cred_cap_inheritable);
    let inum = off.ns_inum[NS_USER];
    c.user_ns = match read::<*const u8>(p, off.cred_user_ns) {
        Some(ns) if !ns.is_null() && inum != 0 => read::<u32>(ns, inum).unwrap_or(0),
        _ => 0,
    };
    c.valid = 1;
}

/// A `struct sockaddr` (kernel memory): its family, port and address, in
/// `sport` and `saddr` (what Tetragon's SPort and SAddr match on it).
#[inline(always)]
fn read_sockaddr(p: *const u8, sk: &mut GenSock) {
    let Some(family) = read::<u16>(p, 0) else {
        return;
    };
    sk.family = family;
    // `sin_port` and `sin6_port` are both at 2.
    sk.sport = u16::from_be(read::<u16>(p, 2).unwrap_or(0));
    if family == AF_INET {
        let a = read::<[u8; 4]>(p, 4).unwrap_or([0; 4]);
        sk.saddr[..4].copy_from_slice(&a);
    } else if family == AF_INET6 {
        sk.saddr = read::<[u8; 16]>(p, 8).unwrap_or([0; 16]);
    }
    sk.valid = 1;
}

/// An integer of `size` bytes as 64 bits (sign-extended if `signed`).
#[inline(always)]
fn extend(v: u64, size: u32, signed: bool) -> u64 {
    match (size, signed) {
        (1, true) => v as u8 as i8 as i64 as u64,
        (2, true) => v as u16 as i16 as i64 as u64,
        (4, true) => v as u32 as i32 as i64 as u64,
        (1, false) => v & 0xff,
        (2, false) => v & 0xffff,
        (4, false) => v & 0xffff_ffff,
        _ => v,
    }
}

/// The `followChildren` bits of the current process (0: not tracked, or
/// none). A global function: its map lookup stays out of the selector's
/// frame.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_follow() -> u64 {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    recorded(tgid, task, &off).map_or(0, |e| e.follow)
}

/// Whether selector `s` of hook (`generation`, `slot`) holds for the
/// arguments in the scratch event (1) or not (0). A global function, as
/// [`vardr_gen_arg`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_selector(generation: u64, slot: u64, s: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let s = s as usize & (GEN_SLOTS - 1);
    let sel = &hook.selectors[s];
    if sel.binaries == GEN_BIN_IN || sel.binaries == GEN_BIN_NOT_IN {
        let mut listed = binaries(generation as u32) & (1u64 << (sel.bin_bit & 63)) != 0;
        // followChildren: or one of the binaries ran in this process's
        // lineage.
        let follow = sel.follow_mask;
        if !listed && follow != 0 {
            listed = vardr_gen_follow() & follow != 0;
        }
        if listed != (sel.binaries == GEN_BIN_IN) {
            return 0;
        }
    }
    for (op, id, parent) in [
        (sel.bin_str_op, sel.bin_str_id, 0),
        (sel.parent_bin_str_op, sel.parent_bin_str_id, 1),
    ] {
        if op != 0 {
            let found = vardr_gen_exe_path(parent) != 0
                && vardr_gen_walk_listed(u64::from(id), u64::from(op)) != 0;
            if found != (op == GEN_OP_PREFIX || op == GEN_OP_POSTFIX) {
                return 0;
            }
        }
    }
    if sel.parent_binaries == GEN_BIN_IN || sel.parent_binaries == GEN_BIN_NOT_IN {
        let bits = vardr_gen_binaries(generation, 1);
        let listed = bits & (1u64 << (sel.parent_bin_bit & 63)) != 0;
        if listed != (sel.parent_binaries == GEN_BIN_IN) {
            return 0;
        }
    }
    let n = sel.nmatches;
    for m in 0..GEN_MAX_MATCHES {
        if m as u32 >= bound(&n) {
            break;
        }
        if vardr_gen_match(generation, slot, s as u64, m as u64) == 0 {
            return 0;
        }
    }
    1
}

/// Whether the process filters of selector `s` (`matchCapabilities`,
/// `matchNamespaces`, `matchPIDs`) hold for the current task (1) or not
/// (0). A global function, as [`vardr_gen_arg`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_process(generation: u64, slot: u64, s: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let s = s as usize & (GEN_SLOTS - 1);
    let sel = &hook.selectors[s];
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if sel.process & GEN_PROC_CAPS != 0 {
        // isNamespaceCapability: only outside the host's user namespace.
        if sel.caps_host_userns != 0 && ns_inum(task, NS_USER) == sel.caps_host_userns {
            return 0;
        }
        let set = match sel.caps_set {
            GEN_CAPS_INHERITABLE => off.cred_cap_inheritable,
            GEN_CAPS_PERMITTED => off.cred_cap_permitted,
            _ => off.cred_cap_effective,
        };
        let caps = read::<*const u8>(task, off.task_cred)
            .and_then(|cred| read::<u64>(cred, set))
            .unwrap_or(0);
        if (caps & sel.caps_mask != 0) != (sel.caps_op == GEN_SET_IN) {
            return 0;
        }
    }
    if sel.process & GEN_PROC_NAMESPACES != 0 {
        for k in 0..NS_KINDS {
            if sel.namespaces[k].op != 0 && vardr_gen_ns(generation, slot, s as u64, k as u64) == 0
            {
                return 0;
            }
        }
    }
    if sel.process & (GEN_PROC_NS_CHANGES | GEN_PROC_CAPS_CHANGES) != 0
        && vardr_gen_changes(generation, slot, s as u64) == 0
    {
        return 0;
    }
    if sel.process & GEN_PROC_PIDS != 0 {
        let n = sel.npids;
        for p in 0..GEN_MAX_PID_FILTERS {
            if p as u32 >= bound(&n) {
                break;
            }
            if vardr_gen_pids(generation, slot, s as u64, p as u64) == 0 {
                return 0;
            }
        }
    }
    1
}

/// Whether `matchNamespaceChanges` and `matchCapabilityChanges` of
/// selector `s` hold (1) or not (0): the task's namespaces and capability
/// set against those recorded at its exec. A process the tracking has no
/// record of satisfies neither `In` nor `NotIn`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_changes(generation: u64, slot: u64, s: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let sel = &hook.selectors[s as usize & (GEN_SLOTS - 1)];
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(e) = recorded(tgid, task, &off).filter(|e| e.has_base != 0) else {
        return 0;
    };
    if sel.process & GEN_PROC_NS_CHANGES != 0 {
        let mut changed = false;
        for k in 0..NS_KINDS {
            if sel.ns_changes & (1 << k) == 0 {
                continue;
            }
            // Unreadable now or at the exec: no change known.
            let (now, then) = (vardr_gen_ns_now(k as u64), e.base_ns[k]);
            if now != 0 && then != 0 && now != then {
                changed = true;
                break;
            }
        }
        if changed != (sel.ns_changes_op == GEN_SET_IN) {
            return 0;
        }
    }
    if sel.process & GEN_PROC_CAPS_CHANGES != 0 {
        if sel.caps_changes_host_userns != 0
            && ns_inum(task, NS_USER) == sel.caps_changes_host_userns
        {
            return 0;
        }
        let (set, base) = match sel.caps_changes_set {
            GEN_CAPS_INHERITABLE => (
                off.cred_cap_inheritable,
                e.base_caps[GEN_CAPS_INHERITABLE as usize],
            ),
            GEN_CAPS_PERMITTED => (
                off.cred_cap_permitted,
                e.base_caps[GEN_CAPS_PERMITTED as usize],
            ),
            _ => (
                off.cred_cap_effective,
                e.base_caps[GEN_CAPS_EFFECTIVE as usize],
            ),
        };
        let now = read::<*const u8>(task, off.task_cred)
            .and_then(|cred| read::<u64>(cred, set))
            .unwrap_or(0);
        let gained = now & !base;
        if (gained & sel.caps_changes_mask != 0) != (sel.caps_changes_op == GEN_SET_IN) {
            return 0;
        }
    }
    1
}

/// Whether the `matchNamespaces` entry for namespace kind `k` of selector
/// `s` holds (1) or not (0).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_ns(generation: u64, slot: u64, s: u64, k: u64) -> u32 {
    // Masked: the verifier keeps a bound on the index even where the
    // compiler spills and reloads it (6.1 refused the pointer math).
    let k = k as usize & 15;
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let inum = ns_inum(task, k);
    if inum == 0 {
        // Unreadable (an exiting task has no nsproxy): the entry holds
        // neither way rather than as if no namespace were listed.
        return 0;
    }
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let Some(f) = hook.selectors[s as usize & (GEN_SLOTS - 1)]
        .namespaces
        .get(k)
    else {
        return 0;
    };
    let n = f.nvalues;
    let mut found = false;
    for v in 0..GEN_MAX_SET_VALUES {
        if v as u32 >= bound(&n) {
            break;
        }
        if f.values[v] == inum {
            found = true;
            break;
        }
    }
    (found == (f.op == GEN_SET_IN)) as u32
}

/// Whether `matchPIDs` entry `p` of selector `s` holds (1) or not (0):
/// the process's pid (in its own pid namespace with `isNamespacePID`),
/// with `followForks` also its ancestors', is (or is not) a value.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_pids(generation: u64, slot: u64, s: u64, p: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let f =
        &hook.selectors[s as usize & (GEN_SLOTS - 1)].pids[p as usize & (GEN_MAX_PID_FILTERS - 1)];
    let (op, flags, nvalues) = (f.op, f.flags, f.nvalues);
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let mut task = unsafe { bpf_get_current_task() } as *const u8;
    let levels = if flags & GEN_PID_FOLLOW != 0 {
        GEN_PID_FOLLOW_DEPTH + 1
    } else {
        1
    };
    let mut found = false;
    for level in 0..GEN_PID_FOLLOW_DEPTH + 1 {
        if level >= bound(&levels) || task.is_null() {
            break;
        }
        let pid = if flags & GEN_PID_NAMESPACE != 0 {
            ns_tgid(task, &off)
        } else {
            read::<u32>(task, off.task_tgid).unwrap_or(0)
        };
        for v in 0..GEN_MAX_SET_VALUES {
            if v as u32 >= bound(&nvalues) {
                break;
            }
            if f.values[v] == pid {
                found = true;
                break;
            }
        }
        if found {
            break;
        }
        task = read::<*const u8>(task, off.task_real_parent).unwrap_or(core::ptr::null());
    }
    (found == (op == GEN_SET_IN)) as u32
}

/// The task's process id as its active pid namespace numbers it.
#[inline(always)]
fn ns_tgid(task: *const u8, off: &KernelOffsets) -> u32 {
    let leader = read::<*const u8>(task, off.task_group_leader).unwrap_or(task);
    let Some(pid) = read::<*const u8>(leader, off.task_thread_pid) else {
        return 0;
    };
    let level = read::<u32>(pid, off.pid_level).unwrap_or(0) as u64;
    read::<u32>(
        pid,
        off.pid_numbers + (level & 63) * off.upid_size + off.upid_nr,
    )
    .unwrap_or(0)
}

/// The inode number of the task's namespace of kind `k` (`NS_*`), 0 when
/// unreadable.
#[inline(always)]
fn ns_inum(task: *const u8, k: usize) -> u32 {
    let off = offsets();
    // Constant indexes only: the offsets then stay in registers (an index
    // computed at run time would need the whole struct on the stack).
    macro_rules! pick {
        ($($i:literal),*) => {
            match k {
                $($i => (off.nsproxy_ns[$i], off.ns_inum[$i]),)*
                _ => (0, 0),
            }
        };
    }
    let (member, inum) = pick!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    let ns = match k {
        NS_PID => read::<*const u8>(task, off.task_thread_pid).and_then(|pid| {
            let level = read::<u32>(pid, off.pid_level)? as u64;
            read::<*const u8>(
                pid,
                off.pid_numbers + (level & 63) * off.upid_size + off.upid_ns,
            )
        }),
        NS_USER => read::<*const u8>(task, off.task_cred)
            .and_then(|cred| read::<*const u8>(cred, off.cred_user_ns)),
        _ => {
            if member == 0 {
                return 0;
            }
            read::<*const u8>(task, off.task_nsproxy)
                .and_then(|nsproxy| read::<*const u8>(nsproxy, member))
        }
    };
    match ns {
        Some(ns) if !ns.is_null() && inum != 0 => read::<u32>(ns, inum).unwrap_or(0),
        _ => 0,
    }
}

/// Whether `matchArgs` entry `m` of selector `s` holds (1) or not (0).
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_gen_match(generation: u64, slot: u64, s: u64, m: u64) -> u32 {
    let Some(hook) = hook_config(generation, slot) else {
        return 0;
    };
    let (s, m) = (s as usize & (GEN_SLOTS - 1), m as usize & (GEN_SLOTS - 1));
    let mt = &hook.selectors[s].matches[m];
    let a = mt.arg as usize & (GEN_SLOTS - 1);
    let Some(ev) = GEN_SCRATCH.get_ptr(0) else {
        return 0;
    };
    let op = mt.op;
    if op >= GEN_OP_SPORT {
        // SAFETY: this CPU's scratch event, `a` in range; a sock or
        // sockaddr argument's buffer holds the GenSock it was read into.
        let sk = unsafe { &*((*ev).strs[a].as_ptr() as *const GenSock) };
        return sock_match(mt, sk, op) as u32;
    }
    if op >= GEN_OP_STR_EQ {
        // SAFETY: this CPU's scratch event, `a` in range.
        let found = string_listed(unsafe { (*ev).strs[a].as_ptr() }, mt.id, op);
        let positive = op == GEN_OP_STR_EQ || op == GEN_OP_PREFIX || op == GEN_OP_POSTFIX;
        return (found == positive) as u32;
    }
    // SAFETY: as above.
    let v = unsafe { (*ev).ints[a] };
    int_match(mt, v) as u32
}

/// Whether an integer operator holds for `v`.
#[inline(always)]
fn int_match(mt: &GenMatch, v: u64) -> bool {
    let (op, n) = (mt.op, mt.nvalues);
    let mut any = false;
    for k in 0..GEN_MAX_VALUES {
        if k as u32 >= bound(&n) {
            break;
        }
        let x = mt.values[k];
        let hit = match op {
            GEN_OP_EQ | GEN_OP_NE => v == x,
            GEN_OP_GT => (v as i64) > (x as i64),
            GEN_OP_LT => (v as i64) < (x as i64),
            GEN_OP_MASK => v & x != 0,
            _ => false,
        };
        if hit {
            any = true;
            break;
        }
    }
    if op == GEN_OP_NE {
        !any
    } else {
        any
    }
}

/// Whether a socket operator holds for `sk`. An unreadable socket
/// satisfies neither an operator nor its negation.
#[inline(always)]
fn sock_match(mt: &GenMatch, sk: &GenSock, op: u32) -> bool {
    if sk.valid == 0 {
        return false;
    }
    let negated = matches!(
        op,
        GEN_OP_NOT_SPORT
            | GEN_OP_NOT_DPORT
            | GEN_OP_NOT_SPORT_PRIV
            | GEN_OP_NOT_DPORT_PRIV
            | GEN_OP_NOT_SADDR
            | GEN_OP_NOT_DADDR
    );
    let hit = match op {
        GEN_OP_SADDR | GEN_OP_NOT_SADDR => addr_listed(sk.family, &sk.saddr, mt.id),
        GEN_OP_DADDR | GEN_OP_NOT_DADDR => addr_listed(sk.family, &sk.daddr, mt.id),
        GEN_OP_SPORT_PRIV | GEN_OP_NOT_SPORT_PRIV => sk.sport < 1024,
        GEN_OP_DPORT_PRIV | GEN_OP_NOT_DPORT_PRIV => sk.dport < 1024,
        _ => {
            let (v, range) = match op {
                GEN_OP_SPORT | GEN_OP_NOT_SPORT => (sk.sport as u64, true),
                GEN_OP_DPORT | GEN_OP_NOT_DPORT => (sk.dport as u64, true),
                GEN_OP_PROTOCOL => (sk.protocol as u64, false),
                GEN_OP_FAMILY => (sk.family as u64, false),
                _ => (sk.state as u64, false),
            };
            let n = mt.nvalues;
            let mut any = false;
            for k in 0..GEN_MAX_VALUES {
                if k as u32 >= bound(&n) {
                    break;
                }
                let x = mt.values[k];
                // A port value is a range: `lo << 16 | hi`.
                let hit = if range {
                    (x >> 16) <= v && v <= (x & 0xffff)
                } else {
                    v == x
                };
                if hit {
                    any = true;
                    break;
                }
            }
            any
        }
    };
    hit != negated
}

/// Whether address `addr` of `family` is in one of match `id`'s CIDRs.
#[inline(always)]
fn addr_listed(family: u16, addr: &[u8; 16], id: u32) -> bool {
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    let Some(k) = GEN_KEY.get_ptr_mut(0) else {
        return false;
    };
    let id = id.to_be_bytes();
    // SAFETY: this CPU's key slot; the indexes are constants below its
    // length. Bytes past the address do not count: every address entry's
    // prefix ends within it.
    unsafe {
        (*k).prefix_len = (GEN_STR_KEY_LEN * 8) as u32;
        let data = &mut (*k).data;
        data[0] = id[0];
        data[1] = id[1];
        data[2] = id[2];
        data[3] = id[3];
        data[4] = family as u8;
        for i in 0..16 {
            data[5 + i] = if family == AF_INET && i >= 4 {
                0
            } else {
                addr[i]
            };
        }
        GEN_STRINGS.get(&*k).is_some()
    }
}

/// Whether the string at `s` (NUL-terminated within GEN_STR_LEN) is one
/// of match `id`'s values: equal to one, starting with one, or ending with
/// one, as `op` asks.
// Index loops on purpose: each keeps the bound check the verifier needs.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn string_listed(s: *const u8, id: u32, op: u32) -> bool {
    // Length up to the NUL (GEN_STR_LEN - 1 at most).
    let mut len = GEN_STR_LEN - 1;
    for i in 0..GEN_STR_LEN - 1 {
        // SAFETY: within the argument's buffer.
        if unsafe { *s.add(i) } == 0 {
            len = i;
            break;
        }
    }
    string_listed_len(s, len, id, op)
}

/// [`string_listed`] for a string of known length `len` (below
/// GEN_STR_LEN) at `s`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn string_listed_len(s: *const u8, len: usize, id: u32, op: u32) -> bool {
    let Some(k) = GEN_KEY.get_ptr_mut(0) else {
        return false;
    };
    let postfix = op == GEN_OP_POSTFIX || op == GEN_OP_NOT_POSTFIX;
    let id = id.to_be_bytes();
    // SAFETY: this CPU's key slot; every index is below its length.
    unsafe {
        (*k).prefix_len = (GEN_STR_KEY_LEN * 8) as u32;
        (*k).data[0] = id[0];
        (*k).data[1] = id[1];
        (*k).data[2] = id[2];
        (*k).data[3] = id[3];
        let cap = GEN_MATCH_STR_LEN - 1;
        let data = &mut (&mut (*k).data)[4..];
        data.fill(0);
        if postfix {
            // The last `cap` bytes, reversed: a suffix becomes a prefix.
            for i in 0..GEN_MATCH_STR_LEN - 1 {
                if i >= bound(&len) || i >= cap {
                    break;
                }
                data[i] = *s.add((len - 1 - i) & (GEN_STR_LEN - 1));
            }
        } else {
            for i in 0..GEN_MATCH_STR_LEN - 1 {
                if i >= bound(&len) {
                    break;
                }
                data[i] = *s.add(i);
            }
            // A string cut here has no NUL: it cannot equal a value.
            if len > cap {
                data[cap] = 0xff;
            }
        }
        GEN_STRINGS.get(&*k).is_some()
    }
}
