//! Types shared by the vardr BPF programs and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into
//! maps and ring buffers and the userspace side reads the same bytes back.
#![no_std]

/// Longest path (with its NUL) a rule or event carries. 256 is also the
/// largest key an LPM trie accepts, which is why path rules are limited to it.
pub const PATH_MAX: usize = 256;
/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;

/// Kind of record at the start of every ring buffer entry.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    FileOpen = 2,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::FileOpen),
            _ => None,
        }
    }
}

/// What a matched rule asks for, as stored in the rule maps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow = 0,
    Deny = 1,
}

/// Verdict recorded in an event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow = 0,
    /// Denied in the kernel (the syscall failed or the process was killed).
    Deny = 1,
    /// Would have been denied, but enforcement is off.
    Audit = 2,
}

impl Verdict {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Allow),
            1 => Some(Self::Deny),
            2 => Some(Self::Audit),
            _ => None,
        }
    }
}

/// Common head of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_boot_ns()` at the hook.
    pub boot_ns: u64,
    /// Thread id (kernel `pid`).
    pub tid: u32,
    /// Process id (kernel `tgid`).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// A successful exec (`sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub filename: [u8; PATH_MAX],
}

/// A governed file open that matched a rule.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: EventHeader,
    pub rule_id: u32,
    pub verdict: u32,
    pub path: [u8; PATH_MAX],
}

/// Value of a path rule in the file LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    pub rule_id: u32,
    /// A [`RuleAction`] as `u32`.
    pub action: u32,
}

/// Runtime switches read by every program, in slot 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 1: deny in the kernel; 0: audit only (emit events, never block).
    pub enforce: u32,
    /// Cgroup level of `scope_cgroup_id` (0 = root); used with
    /// `bpf_get_current_ancestor_cgroup_id`.
    pub scope_level: u32,
    /// When non-zero, rules apply only to tasks inside this cgroup v2 subtree.
    pub scope_cgroup_id: u64,
}

/// Kernel struct offsets read from BTF in userspace (aya has no CO-RE field
/// relocations), handed to the programs as read-only globals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `offsetof(struct file, f_path)`
    pub file_f_path: u64,
    /// `offsetof(struct linux_binprm, filename)`
    pub binprm_filename: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with no padding-dependent
    // invariants; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::PathRule {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
