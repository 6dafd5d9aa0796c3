//! Governance checks, rule decisions and event emission shared by the hooks.
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_probe_read_kernel,
    },
    maps::lpm_trie::Key,
    Global,
};
use vardr_common::{
    Action, BackendKind, Config, EventKind, Hook, InodeKey, InodeRule, KernelOffsets, Operation,
    PathRules, PidKey, PolicyEvent, RuleRef, Verdict, CONFIG_SLOTS, EVENT_PATH_LEN,
    MAX_DENTRY_DEPTH, NS_PER_TICK, PATH_KEY_LEN,
};

use crate::maps::{
    exempt_pid_start, inode_rule, CONFIG, CONFIG_SLOT, EXEMPT_TASKS, IDENTITY_SCRATCH, LOST_EVENTS,
    POLICY_EVENTS,
};

pub const PF_KTHREAD: u32 = 0x0020_0000;

// SAFETY: all-zero is a valid `KernelOffsets` (plain integers); the agent
// sets the real values at load.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(unsafe { core::mem::zeroed() });

/// LSM verdicts: "operation not permitted", "permission denied".
static DENY_EPERM: i32 = -1;
static DENY_EACCES: i32 = -13;

/// The LSM return value that denies with EPERM. Read through
/// `read_volatile`, so LLVM cannot turn "deny or 0" into a negation of
/// the condition: verifiers before 6.13 lose the range of a negation and
/// reject the program (an LSM program must return a value in [-4095, 0]).
#[inline(always)]
pub fn eperm() -> i32 {
    // SAFETY: a read of an immutable static.
    unsafe { core::ptr::read_volatile(&DENY_EPERM) }
}

/// [`eperm`] for EACCES.
#[inline(always)]
pub fn eacces() -> i32 {
    // SAFETY: a read of an immutable static.
    unsafe { core::ptr::read_volatile(&DENY_EACCES) }
}

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    OFFSETS.load()
}

/// A copy of the config in force, so one program run sees one consistent
/// version. A reload writes the other slot and then flips `CONFIG_SLOT`
/// (one aligned 4-byte store), so the slot copied here is never being
/// written: the agent waits a grace period before reusing a slot.
#[inline(always)]
pub fn config() -> Option<Config> {
    let slot = CONFIG_SLOT.get(0).copied().unwrap_or(0) & (CONFIG_SLOTS - 1);
    CONFIG.get(slot).copied()
}

/// Start time of a task's process (its thread group leader) in clock
/// ticks since boot, the unit userspace reads from `/proc/PID/stat`.
#[inline(always)]
pub fn process_start_ticks(task: *const u8) -> u64 {
    let off = offsets();
    let leader: *const u8 = read(task, off.task_group_leader).unwrap_or(task);
    read::<u64>(leader, off.task_start_boottime).unwrap_or(0) / NS_PER_TICK
}

/// Whether the process recorded in the exempt-task map for `tgid` (and
/// started at `start`) runs a binary that is exempt under the rules in force.
#[inline(always)]
fn exempt_by_binary(tgid: u32, start: u64, generation: u32) -> bool {
    let Some(t) = EXEMPT_TASKS.get_ptr(tgid) else {
        return false;
    };
    // SAFETY: pointer into a map value returned by lookup.
    let t = unsafe { *t };
    if t.start_ticks != start {
        return false;
    }
    let key = InodeKey {
        generation,
        dev: t.dev,
        ino: t.ino,
    };
    inode_rule(&key).is_some_and(|r| r.exempt != 0)
}

pub use crate::{header::fill_header, identity::read};

/// Identity (device, inode) of a `struct file *`, through its dentry as the
/// identity walk sees it (on overlayfs `f_inode` can be the real inode; an
/// overlay's dentry stands for its real one, see [`crate::identity`]).
#[inline(always)]
pub fn file_identity(file: *const u8, generation: u32) -> Option<InodeKey> {
    let off = offsets();
    let dentry: *const u8 = read(file, off.file_f_path + off.path_dentry)?;
    dentry_identity(crate::identity::real_dentry(dentry, &off), generation)
}

/// Identity of a dentry's inode, as it is (no overlay mapping).
#[inline(always)]
fn dentry_identity(dentry: *const u8, generation: u32) -> Option<InodeKey> {
    let (dev, ino) = crate::identity::plain_key(dentry, &offsets())?;
    Some(InodeKey {
        generation,
        dev,
        ino,
    })
}

/// The current process's program, as an identity-map entry (exempt,
/// interpreter, rules), when it has one.
#[inline(always)]
pub fn current_program(generation: u32) -> Option<InodeRule> {
    let off = offsets();
    // SAFETY: helper without arguments; the task is only read through probes.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm: *const u8 = read(task, off.task_mm)?;
    let exe: *const u8 = read(mm, off.mm_exe_file)?;
    let key = file_identity(exe, generation)?;
    inode_rule(&key)
}

/// Rules by identity for a `struct file *`: walks from its dentry up to the
/// file system root and returns the first (deepest) entry with rules, or
/// all-`None` rules. (Not an `Option`: LLVM may spill the uninitialized
/// payload of a `None`, which the verifier rejects.)
#[inline(always)]
pub fn identity_rules(file: *const u8, cfg: &Config) -> PathRules {
    let off = offsets();
    match read::<*const u8>(file, off.file_f_path + off.path_dentry) {
        Some(dentry) => identity_walk(dentry, cfg, false),
        None => PathRules::default(),
    }
}

/// Rules by identity for a dentry, walking up its directory chain. With
/// `below`, the dentry's own inode is skipped: the rules a new file put at
/// this name would get from the directories above it.
#[inline(always)]
pub fn identity_walk(start: *const u8, cfg: &Config, below: bool) -> PathRules {
    // No identity entry in force: nothing to walk for (up to 32 lookups).
    if cfg.has_identities == 0 {
        return PathRules::default();
    }
    if vardr_identity_walk(scalar(start), cfg.generation, below as u32) == 0 {
        return PathRules::default();
    }
    match IDENTITY_SCRATCH.get_ptr(0) {
        // SAFETY: this CPU's slot, just written.
        Some(r) => unsafe { *r },
        None => PathRules::default(),
    }
}

/// [`identity_walk`]'s walk, its rules left in [`IDENTITY_SCRATCH`]
/// (returns 1 when written).
///
/// A global function: the kernel verifies it once per program, on its
/// own, instead of once per call in every state its caller reaches it
/// with: a program that walks two or three dentries cost the verifier
/// hundreds of thousands of instructions, seconds of every agent start on
/// a slow machine.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_identity_walk(start: u64, generation: u32, below: u32) -> u32 {
    let rules = walk_identities(start as *const u8, generation, below != 0);
    match IDENTITY_SCRATCH.get_ptr_mut(0) {
        Some(out) => {
            // SAFETY: this CPU's slot.
            unsafe { *out = rules };
            1
        }
        None => 0,
    }
}

/// A kernel pointer as a plain number, for a global function's argument
/// (the verifier refuses a typed pointer where the prototype has an
/// integer): copied through the probe helper, which yields a scalar.
#[inline(always)]
pub fn scalar(p: *const u8) -> u64 {
    let v = p as u64;
    // SAFETY: reads the local `v`.
    unsafe { bpf_probe_read_kernel(&v as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn walk_identities(start: *const u8, generation: u32, below: bool) -> PathRules {
    let off = offsets();
    let mut dentry = start;
    if below {
        match read::<*const u8>(start, off.dentry_d_parent) {
            Some(parent) if parent != start => dentry = parent,
            _ => return PathRules::default(),
        }
    }
    // An overlay's dentry stands for its real one, whose own directories
    // are walked (mapped once, out of the loop).
    dentry = crate::identity::real_dentry(dentry, &off);
    let mut leaf = !below;
    for _ in 0..MAX_DENTRY_DEPTH {
        if let Some(key) = dentry_identity(dentry, generation) {
            if let Some(r) = inode_rule(&key) {
                // The inode itself has its own rules; an exact-path entry
                // governs that inode, not its subtree.
                if r.has_rules != 0 {
                    if leaf {
                        return r.own;
                    }
                    if r.exact == 0 {
                        return r.rules;
                    }
                }
            }
        }
        leaf = false;
        let Some(parent) = read::<*const u8>(dentry, off.dentry_d_parent) else {
            break;
        };
        if parent == dentry {
            break;
        }
        dentry = parent;
    }
    PathRules::default()
}

/// Rules that travel with a dentry's inode wherever it is moved or linked:
/// its own identity entry (for itself and, for a directory named as a
/// prefix, for its subtree). Slot by slot the stronger of the two.
#[inline(always)]
pub fn travelling_rules(dentry: *const u8, cfg: &Config) -> PathRules {
    if cfg.has_identities == 0 {
        return PathRules::default();
    }
    let generation = cfg.generation;
    let off = offsets();
    let real = crate::identity::real_dentry(dentry, &off);
    let Some(key) = dentry_identity(real, generation) else {
        return PathRules::default();
    };
    let Some(r) = inode_rule(&key) else {
        return PathRules::default();
    };
    if r.has_rules == 0 {
        return PathRules::default();
    }
    let mut out = r.own;
    if r.exact == 0 {
        for h in 0..3 {
            if r.rules.slots[h].action == Action::Deny as u32 {
                out.slots[h] = r.rules.slots[h];
            }
        }
    }
    out
}

#[inline(always)]
pub fn hook_bit(hook: Hook) -> u32 {
    1 << hook as u32
}

/// Whether rules apply to the current task: not exempt and inside the scope.
/// Process exemptions (the agent, exempt pids, exempt binaries) hold only
/// for the process that had them: each is checked against the start time
/// of the current process, so a reused pid inherits nothing.
#[inline(always)]
pub fn governed(cfg: &Config, hooks: u32) -> bool {
    cfg.active_mask & hooks != 0 && governed_task(cfg)
}

/// [`governed`] whatever the rules: whether they would apply to the current task.
#[inline(always)]
pub fn governed_task(cfg: &Config) -> bool {
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
    let flags: u32 = read(task, off.task_flags).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return false;
    }
    !exempt_process(cfg, task, tgid)
}

/// Whether process `tgid` (its task `task`) is exempt as a process: the
/// agent, an exempt pid or a process running an exempt binary, each held
/// against the process's start time.
#[inline(always)]
pub fn exempt_process(cfg: &Config, task: *const u8, tgid: u32) -> bool {
    if tgid != cfg.agent_tgid && cfg.has_exempt_pids == 0 && cfg.has_exempt_binaries == 0 {
        return false;
    }
    let start = process_start_ticks(task);
    if tgid == cfg.agent_tgid && start == cfg.agent_start_ticks {
        return true;
    }
    if cfg.has_exempt_pids != 0 {
        let key = PidKey {
            generation: cfg.generation,
            tgid,
        };
        if let Some(s) = exempt_pid_start(&key) {
            if s == start {
                return true;
            }
        }
    }
    cfg.has_exempt_binaries != 0 && exempt_by_binary(tgid, start, cfg.generation)
}

/// The stronger of two matches: deny > alert > allow > none.
#[inline(always)]
pub fn stronger(a: RuleRef, a_hook: Hook, b: RuleRef, b_hook: Hook) -> (RuleRef, Hook) {
    let rank = |r: &RuleRef| match r.action {
        x if x == Action::Deny as u32 => 4,
        x if x == Action::Alert as u32 => 3,
        x if x == Action::Allow as u32 => 2,
        x if x == Action::Observe as u32 => 1,
        _ => 0,
    };
    if rank(&b) > rank(&a) {
        (b, b_hook)
    } else {
        (a, a_hook)
    }
}

/// The rule for `hook` from a path match and an identity match: the more
/// specific source wins (so an allow on `/etc/hosts` beats the identity of
/// `/etc`); on a tie, the stronger action. A report-only (observe) rule
/// never wins over a real one, however specific.
#[inline(always)]
pub fn pick(by_path: &PathRules, by_identity: &PathRules, hook: Hook) -> RuleRef {
    let h = hook as usize;
    let (rp, ri) = (by_path.slots[h], by_identity.slots[h]);
    let observe = Action::Observe as u32;
    if rp.action == Action::None as u32 {
        ri
    } else if ri.action == Action::None as u32 || (ri.action == observe && rp.action != observe) {
        rp
    } else if rp.action == observe && ri.action != observe {
        ri
    } else if by_path.specificity > by_identity.specificity {
        rp
    } else if by_identity.specificity > by_path.specificity {
        ri
    } else {
        stronger(rp, hook, ri, hook).0
    }
}

/// Outcome of a matched rule: the verdict to report and whether to block.
#[inline(always)]
pub fn verdict(cfg: &Config, hook: Hook, rule: &RuleRef) -> Option<(Verdict, bool)> {
    if rule.action == Action::Deny as u32 {
        if cfg.enforce_mask & hook_bit(hook) != 0 {
            Some((Verdict::Deny, true))
        } else {
            Some((Verdict::Audit, false))
        }
    } else if rule.action == Action::Alert as u32 {
        Some((Verdict::Alert, false))
    } else if rule.action == Action::Observe as u32 {
        Some((Verdict::Allow, false))
    } else {
        None
    }
}

/// Counts an event its ring buffer had no room for (`which`: one of
/// `LOST_LIFECYCLE`, `LOST_POLICY`).
#[inline(always)]
pub fn count_lost(which: u32) {
    if let Some(n) = LOST_EVENTS.get_ptr_mut(which) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *n += 1 };
    }
}

/// What a policy event says beyond the header.
pub struct Report {
    pub hook: Hook,
    pub backend: BackendKind,
    pub verdict: Verdict,
    pub rule_id: u32,
    pub flags: u32,
    pub family: u16,
    pub port: u16,
    pub protocol: u32,
    pub addr: [u8; 16],
    /// [`Operation`] as u32.
    pub op: u32,
}

impl Report {
    /// A file or exec match (no network fields).
    #[inline(always)]
    pub fn path(
        hook: Hook,
        backend: BackendKind,
        verdict: Verdict,
        rule_id: u32,
        flags: u32,
    ) -> Self {
        Self {
            hook,
            backend,
            verdict,
            rule_id,
            flags,
            family: 0,
            port: 0,
            protocol: 0,
            addr: [0; 16],
            op: Operation::Hook as u32,
        }
    }
}

/// Reports a file or exec match, if it asks for a report, and returns
/// whether to block; `path` is the scratch key holding the path, if any.
#[inline(always)]
pub fn conclude_path(
    cfg: &Config,
    hook: Hook,
    rule: &RuleRef,
    backend: BackendKind,
    flags: u32,
    path: Option<*const Key<[u8; PATH_KEY_LEN]>>,
) -> bool {
    conclude_op(cfg, hook, rule, Operation::Hook, flags, path, backend)
}

/// [`conclude_path`] for an operation other than the hook's own.
#[inline(always)]
pub fn conclude_op(
    cfg: &Config,
    hook: Hook,
    rule: &RuleRef,
    op: Operation,
    flags: u32,
    path: Option<*const Key<[u8; PATH_KEY_LEN]>>,
    backend: BackendKind,
) -> bool {
    let Some((verdict, block)) = verdict(cfg, hook, rule) else {
        return false;
    };
    // SAFETY: `k` points at a scratch key (generation byte, then the path).
    let path = path.map_or(0, |k| scalar(unsafe { (*k).data.as_ptr().add(1) }));
    let what = hook as u32 | (backend as u32) << 8 | (verdict as u32) << 16 | (op as u32) << 24;
    vardr_emit_path(what, rule.rule_id, flags, path);
    block
}

/// Emits a file or exec policy event: `what` packs hook, backend, verdict
/// and operation (a byte each, low to high), `path` is the address of the
/// path bytes (0: none), copied with the probe helper.
///
/// A global function (see [`vardr_identity_walk`]): a hook that can
/// report from several places no longer has the verifier walk the whole
/// event (and its 255-byte path copy) at each of them.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vardr_emit_path(what: u32, rule_id: u32, flags: u32, path: u64) -> u32 {
    let Some(mut entry) = POLICY_EVENTS.reserve::<PolicyEvent>(0) else {
        count_lost(vardr_common::LOST_POLICY);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry of the right size; the
    // path is read through the probe helper (a failed read leaves none).
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Policy);
        (*ev).hook = what & 0xff;
        (*ev).backend = (what >> 8) & 0xff;
        (*ev).verdict = (what >> 16) & 0xff;
        (*ev).op = what >> 24;
        (*ev).rule_id = rule_id;
        (*ev).flags = flags;
        (*ev).family = 0;
        (*ev).port = 0;
        (*ev).protocol = 0;
        (*ev).addr = [0; 16];
        let copied = path != 0
            && aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                (*ev).path.as_mut_ptr() as *mut core::ffi::c_void,
                (EVENT_PATH_LEN - 1) as u32,
                path as *const core::ffi::c_void,
            ) == 0;
        if !copied {
            (*ev).path[0] = 0;
        }
        (*ev).path[EVENT_PATH_LEN - 1] = 0;
    }
    entry.submit(0);
    1
}

/// Emits a policy event; `path` is a path key (generation byte first) or none.
#[inline(always)]
pub fn emit(r: &Report, path: Option<*const Key<[u8; PATH_KEY_LEN]>>) {
    let Some(mut entry) = POLICY_EVENTS.reserve::<PolicyEvent>(0) else {
        count_lost(vardr_common::LOST_POLICY);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved ring buffer entry of the right size; `path`
    // points at this CPU's scratch key.
    unsafe {
        fill_header(&mut (*ev).header, EventKind::Policy);
        (*ev).hook = r.hook as u32;
        (*ev).backend = r.backend as u32;
        (*ev).verdict = r.verdict as u32;
        (*ev).rule_id = r.rule_id;
        (*ev).flags = r.flags;
        (*ev).family = r.family;
        (*ev).port = r.port;
        (*ev).protocol = r.protocol;
        (*ev).op = r.op;
        (*ev).addr = r.addr;
        match path {
            Some(k) => core::ptr::copy_nonoverlapping(
                (*k).data.as_ptr().add(1),
                (*ev).path.as_mut_ptr(),
                EVENT_PATH_LEN - 1,
            ),
            None => (*ev).path[0] = 0,
        }
        (*ev).path[EVENT_PATH_LEN - 1] = 0;
    }
    entry.submit(0);
}
