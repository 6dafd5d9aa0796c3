//! TracingPolicy kprobe and tracepoint hooks ("generic hooks"): what the
//! kernel side is told about each hook and what it reports. They run in
//! an object of their own (`vardr-ebpf/src/generic.rs`), loaded only when
//! a policy has such hooks; each attachment carries its slot as the BPF
//! cookie, and the hook's config is found under (generation, slot).

/// Arguments read per hook (Tetragon allows more; vardr reads five).
pub const GEN_MAX_ARGS: usize = 5;
/// Selectors per hook, Tetragon's limit.
pub const GEN_MAX_SELECTORS: usize = 5;
/// `matchArgs` entries per selector, Tetragon's limit.
pub const GEN_MAX_MATCHES: usize = 5;
/// Room for arguments, selectors and matches in the kernel's records: a
/// power of two, so that the programs can mask an index into range (the
/// limits above are what userspace fills).
pub const GEN_SLOTS: usize = 8;
/// Values of an integer `matchArgs` entry.
pub const GEN_MAX_VALUES: usize = 8;
/// Bytes kept of a string argument, with its NUL.
pub const GEN_STR_LEN: usize = 256;
/// Bytes of a string a `matchArgs` value is compared with, its NUL
/// included (values are at most `GEN_MATCH_STR_LEN - 1` bytes).
pub const GEN_MATCH_STR_LEN: usize = 128;
/// A string-match key: the match's id (4 bytes, big endian so that it is
/// a prefix), then the string (reversed for Postfix) and, for Equal, its NUL.
pub const GEN_STR_KEY_LEN: usize = 4 + GEN_MATCH_STR_LEN;

// Argument kinds ([`GenArg::kind`]).
pub const GEN_ARG_NONE: u32 = 0;
/// An integer of `size` bytes (`signed`), from a register or the record.
pub const GEN_ARG_INT: u32 = 1;
/// `char *` into user memory (a syscall's argument).
pub const GEN_ARG_STR_USER: u32 = 2;
/// `char *` into kernel memory.
pub const GEN_ARG_STR_KERNEL: u32 = 3;
/// A tracepoint's `__data_loc char[]`: a u32 whose low 16 bits are the
/// string's offset in the record.
pub const GEN_ARG_DATA_LOC: u32 = 4;
/// A tracepoint's `char name[N]`, in the record.
pub const GEN_ARG_CHAR_ARRAY: u32 = 5;
/// `struct filename *`: its `name`.
pub const GEN_ARG_FILENAME: u32 = 6;
/// `struct file *`: the path of `f_path`.
pub const GEN_ARG_FILE: u32 = 7;
/// `struct path *`.
pub const GEN_ARG_PATH: u32 = 8;
/// `struct linux_binprm *`: the path of its `file`.
pub const GEN_ARG_BINPRM: u32 = 9;
/// A file descriptor (an int) of the calling task: the path of its file.
pub const GEN_ARG_FD: u32 = 12;
/// A buffer in user memory (a system call's) whose size is another
/// argument ([`GenArg::size`] is then where that argument is); its first
/// bytes are copied, the size given goes in the event's integer.
pub const GEN_ARG_BUF_USER: u32 = 13;
/// The same in kernel memory (a kernel function's).
pub const GEN_ARG_BUF_KERNEL: u32 = 14;
/// `struct sock *`: read into a [`GenSock`] in the argument's buffer.
pub const GEN_ARG_SOCK: u32 = 10;
/// `struct sockaddr *` (kernel memory): family, address and port into a
/// [`GenSock`] (`sport`, `saddr`: what Tetragon's SPort and SAddr match).
pub const GEN_ARG_SOCKADDR: u32 = 11;
/// `struct cred *`: the ids, the capability sets and the user namespace,
/// as a [`GenCred`] in the argument's buffer.
pub const GEN_ARG_CRED: u32 = 15;
/// `struct sk_buff *`: its IP and TCP/UDP headers and a few fields, as a
/// [`GenSkb`] in the argument's buffer.
pub const GEN_ARG_SKB: u32 = 16;

/// A `sock` or `sockaddr` argument as the programs read it, in the
/// argument's string buffer. Ports in host order; IPv4 addresses in the
/// first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenSock {
    pub family: u16,
    pub protocol: u16,
    pub type_: u16,
    pub sport: u16,
    pub dport: u16,
    /// TCP state (`TCP_ESTABLISHED` ...).
    pub state: u8,
    /// Non-zero: read (a null or unreadable pointer leaves 0).
    pub valid: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// An `skb` argument as read (Tetragon's `skb_arg`): the packet's
/// addresses, ports and protocol from its headers, as a [`GenSock`] first
/// (so the socket operators match it), then what the `sk_buff` says.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenSkb {
    pub sock: GenSock,
    pub len: u32,
    pub priority: u32,
    pub mark: u32,
    pub hash: u32,
}

/// A `cred` argument as read (Tetragon's `process_credentials_arg`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenCred {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// Inode number of the credentials' user namespace (0: unread).
    pub user_ns: u32,
    /// Non-zero: read (a null pointer leaves 0).
    pub valid: u32,
    pub cap_permitted: u64,
    pub cap_effective: u64,
    pub cap_inheritable: u64,
}

/// Where and how one argument is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenArg {
    pub kind: u32,
    /// A kprobe: the argument's register (0 to 5, x86-64 calling
    /// convention); a tracepoint: the field's offset in the record.
    pub src: u32,
    /// Bytes of an integer or of a `char[N]`; for a buffer, where its
    /// size argument is (as `src`).
    pub size: u32,
    /// Non-zero: a signed integer (sign-extended to 64 bits).
    pub signed: u32,
}

// Operators ([`GenMatch::op`]). Integer operators compare the argument as
// a 64-bit value; string operators look the string up in `GEN_STRINGS`.
pub const GEN_OP_EQ: u32 = 1;
pub const GEN_OP_NE: u32 = 2;
pub const GEN_OP_GT: u32 = 3;
pub const GEN_OP_LT: u32 = 4;
/// Any bit of any value set in the argument.
pub const GEN_OP_MASK: u32 = 5;
pub const GEN_OP_STR_EQ: u32 = 16;
pub const GEN_OP_STR_NE: u32 = 17;
pub const GEN_OP_PREFIX: u32 = 18;
pub const GEN_OP_NOT_PREFIX: u32 = 19;
pub const GEN_OP_POSTFIX: u32 = 20;
pub const GEN_OP_NOT_POSTFIX: u32 = 21;
// Operators on a `sock` or `sockaddr` argument ([`GenSock`]). Ports and
// the numbers (protocol, family, state) compare with the match's values
// (a port value is a range: `lo << 16 | hi`); addresses look the
// argument's up in `GEN_STRINGS` (key: the match's id, the family, the
// address; prefix: the CIDR's).
pub const GEN_OP_SPORT: u32 = 32;
pub const GEN_OP_NOT_SPORT: u32 = 33;
pub const GEN_OP_DPORT: u32 = 34;
pub const GEN_OP_NOT_DPORT: u32 = 35;
/// The port is below 1024.
pub const GEN_OP_SPORT_PRIV: u32 = 36;
pub const GEN_OP_NOT_SPORT_PRIV: u32 = 37;
pub const GEN_OP_DPORT_PRIV: u32 = 38;
pub const GEN_OP_NOT_DPORT_PRIV: u32 = 39;
pub const GEN_OP_SADDR: u32 = 40;
pub const GEN_OP_NOT_SADDR: u32 = 41;
pub const GEN_OP_DADDR: u32 = 42;
pub const GEN_OP_NOT_DADDR: u32 = 43;
pub const GEN_OP_PROTOCOL: u32 = 44;
pub const GEN_OP_FAMILY: u32 = 45;
pub const GEN_OP_STATE: u32 = 46;
/// Bytes of an address key's data: the match id, the family, the address.
pub const GEN_ADDR_KEY_LEN: usize = 4 + 1 + 16;

/// One `matchArgs` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenMatch {
    /// Index into [`GenHook::args`].
    pub arg: u32,
    pub op: u32,
    /// Integer values used (string values are in `GEN_STRINGS`).
    pub nvalues: u32,
    /// A string match's id in `GEN_STRINGS` keys.
    pub id: u32,
    pub values: [u64; GEN_MAX_VALUES],
}

// Actions of a selector ([`GenSelector::actions`], bits).
/// Report the call (Tetragon's Post, the default).
pub const GEN_ACT_POST: u32 = 1;
/// Kill the caller (with `--enforce`).
pub const GEN_ACT_SIGKILL: u32 = 2;
/// Send [`GenSelector::signal`] (with `--enforce`).
pub const GEN_ACT_SIGNAL: u32 = 4;
/// The event is a return probe's: [`GenericEvent::ret`] holds the value.
pub const GEN_ACT_RETURN: u32 = 1 << 30;
/// Fail the call with [`GenSelector::arg_error`] instead of running the
/// function (with `--enforce`; kprobes on error-injectable functions).
pub const GEN_ACT_OVERRIDE: u32 = 8;
/// The event's actions: at the return, `matchReturnActions` killed the
/// caller (or, with [`GEN_ACT_AUDIT`], would have).
pub const GEN_ACT_RET_SIGKILL: u32 = 1 << 16;
/// The event's actions: at the return, `matchReturnActions` sent
/// [`GenericEvent::signal`].
pub const GEN_ACT_RET_SIGNAL: u32 = 1 << 17;
/// Post with `kernelStackTrace`: the event carries the call's kernel stack
/// ([`GenericEvent::kstack`]; kprobes only).
pub const GEN_ACT_KSTACK: u32 = 1 << 8;
/// Post with `userStackTrace`: the caller's user stack
/// ([`GenericEvent::ustack`]; kprobes only).
pub const GEN_ACT_USTACK: u32 = 1 << 9;
/// Frames of a stack trace kept in an event (deeper frames are cut).
pub const GEN_STACK_DEPTH: usize = 32;
/// The event's actions: the enforcement actions were not carried out
/// (`--enforce` is off): the event reports what would have happened.
pub const GEN_ACT_AUDIT: u32 = 1 << 31;

// `matchBinaries` ([`GenSelector::binaries`]).
pub const GEN_BIN_ANY: u32 = 0;
pub const GEN_BIN_IN: u32 = 1;
pub const GEN_BIN_NOT_IN: u32 = 2;
/// Bit of `GEN_BINARIES` values: an exempt binary.
pub const GEN_BIN_EXEMPT_BIT: u32 = 63;

// Process filters of a selector ([`GenSelector::process`], bits).
pub const GEN_PROC_PIDS: u32 = 1;
pub const GEN_PROC_NAMESPACES: u32 = 2;
pub const GEN_PROC_CAPS: u32 = 4;
/// `matchNamespaceChanges`: namespaces other than at the process's exec.
pub const GEN_PROC_NS_CHANGES: u32 = 8;
/// `matchCapabilityChanges`: capabilities gained since the exec.
pub const GEN_PROC_CAPS_CHANGES: u32 = 16;

/// `In` / `NotIn` of the process filters (0: the entry is unused).
pub const GEN_SET_IN: u32 = 1;
pub const GEN_SET_NOT_IN: u32 = 2;

// `rateLimitScope` ([`GenSelector::rate_scope`]): whose calls count as
// the same.
pub const GEN_RATE_THREAD: u32 = 0;
pub const GEN_RATE_PROCESS: u32 = 1;
pub const GEN_RATE_GLOBAL: u32 = 2;

/// Key of `GEN_RATE`: a call as `rateLimit` tells calls apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenRateKey {
    pub slot: u32,
    pub selector: u32,
    /// The thread, the process or 0, as the scope says.
    pub scope: u64,
    pub ints: [u64; GEN_MAX_ARGS],
    /// A hash (FNV-1a) of each string argument, up to its NUL.
    pub strs: [u64; GEN_MAX_ARGS],
}

/// Values of one `matchPIDs` or `matchNamespaces` entry, Tetragon's limit.
pub const GEN_MAX_SET_VALUES: usize = 4;
/// `matchPIDs` entries of a selector.
pub const GEN_MAX_PID_FILTERS: usize = 4;
/// Ancestors a `followForks` entry looks at besides the process itself
/// (Tetragon follows its parent chain up to ten entries as well).
pub const GEN_PID_FOLLOW_DEPTH: usize = 10;

// `matchPIDs` flags ([`GenPidFilter::flags`]).
/// Compare the pid as the process's own pid namespace numbers it.
pub const GEN_PID_NAMESPACE: u32 = 1;
/// The process or one of its ancestors.
pub const GEN_PID_FOLLOW: u32 = 2;

/// One `matchPIDs` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenPidFilter {
    /// `GEN_SET_*`.
    pub op: u32,
    pub flags: u32,
    pub nvalues: u32,
    pub _pad: u32,
    pub values: [u32; GEN_MAX_SET_VALUES],
}

/// A `matchNamespaces` entry for one namespace kind (the selector's
/// array is indexed by `NS_*` kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenNsFilter {
    /// `GEN_SET_*`; 0 when the selector does not filter on this kind.
    pub op: u32,
    pub nvalues: u32,
    /// Namespace inode numbers (`host_ns` resolved by the agent).
    pub values: [u32; GEN_MAX_SET_VALUES],
}

// `matchCapabilities` sets ([`GenSelector::caps_set`]).
pub const GEN_CAPS_EFFECTIVE: u32 = 0;
pub const GEN_CAPS_INHERITABLE: u32 = 1;
pub const GEN_CAPS_PERMITTED: u32 = 2;

/// One selector: every match must hold (and `matchBinaries` and the
/// process filters); the first selector that holds decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenSelector {
    pub nmatches: u32,
    pub actions: u32,
    pub signal: u32,
    /// `GEN_BIN_*`.
    pub binaries: u32,
    /// This selector's bit in `GEN_BINARIES` values.
    pub bin_bit: u32,
    /// The selector's rule, named in events.
    pub rule_id: u32,
    /// `GEN_PROC_*`: the process filters this selector has.
    pub process: u32,
    pub npids: u32,
    /// `matchCapabilities`: `GEN_SET_*`, the set (`GEN_CAPS_*`), and with
    /// `isNamespaceCapability` the host's user namespace (the filter
    /// then holds only outside it; 0 otherwise).
    pub caps_op: u32,
    pub caps_set: u32,
    pub caps_host_userns: u32,
    /// `matchParentBinaries`: `GEN_BIN_*`, and its bit in `GEN_BINARIES`.
    pub parent_binaries: u32,
    pub parent_bin_bit: u32,
    /// Override's `argError`: the negative errno the call returns.
    pub arg_error: i32,
    /// `matchReturnArgs` entries, in `matches[GEN_RET_MATCH_BASE..]`.
    pub nret_matches: u32,
    /// Post's `rateLimitScope` (`GEN_RATE_*`), with [`Self::rate_limit_ns`].
    pub rate_scope: u32,
    /// `matchBinaries` Prefix/Postfix and their Not forms: the `GEN_OP_*`
    /// string operator (0: none) and the id of its values in
    /// `GEN_STRINGS`, tried on the path of the process's executable.
    pub bin_str_op: u32,
    pub bin_str_id: u32,
    /// The same for `matchParentBinaries`, on the parent's executable.
    pub parent_bin_str_op: u32,
    pub parent_bin_str_id: u32,
    /// `matchReturnActions`, at a return probe's return when the value
    /// passed `matchReturnArgs`: `GEN_ACT_POST`, `GEN_ACT_SIGKILL`,
    /// `GEN_ACT_SIGNAL` (with [`Self::ret_signal`]). Without the field:
    /// `GEN_ACT_POST`.
    pub ret_actions: u32,
    pub ret_signal: u32,
    /// `matchNamespaceChanges`: `GEN_SET_*` and the `NS_*` kinds (bits)
    /// compared with the process's at its exec.
    pub ns_changes_op: u32,
    pub ns_changes: u32,
    /// `matchCapabilityChanges`: as `caps_*`, on the capabilities the set
    /// gained since the exec ([`Self::caps_changes_mask`]).
    pub caps_changes_op: u32,
    pub caps_changes_set: u32,
    pub caps_changes_host_userns: u32,
    pub _pad_changes: u32,
    /// Capability bits: the filter's values.
    pub caps_mask: u64,
    pub caps_changes_mask: u64,
    /// `matchBinaries` with `followChildren`: the `GEN_FOLLOW` bits of its
    /// binaries; a process whose [`GenExe::follow`] has one of them ran
    /// one, or descends from one that did (0: no followChildren).
    pub follow_mask: u64,
    /// Post's `rateLimit`: after an event, the same call (same hook,
    /// arguments and scope) is not posted again for this long (0: always).
    pub rate_limit_ns: u64,
    pub pids: [GenPidFilter; GEN_MAX_PID_FILTERS],
    pub namespaces: [GenNsFilter; crate::NS_KINDS],
    pub matches: [GenMatch; GEN_SLOTS],
}

/// A kprobe on a syscall's wrapper: the arguments are in the `pt_regs`
/// the wrapper is given.
pub const GEN_HOOK_SYSCALL: u32 = 1;
/// [`GenHook::ret`]: the return value is signed.
pub const GEN_RET_SIGNED: u32 = 1 << 8;
/// Where a selector's `matchReturnArgs` entries are in its `matches`
/// (after the `matchArgs` entries, at most [`GEN_MAX_RET_MATCHES`]).
pub const GEN_RET_MATCH_BASE: usize = GEN_MAX_MATCHES;
pub const GEN_MAX_RET_MATCHES: usize = GEN_SLOTS - GEN_MAX_MATCHES;

/// One attached hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenHook {
    pub nargs: u32,
    pub nselectors: u32,
    pub flags: u32,
    /// A return probe's value: its size in bytes (4 or 8), with
    /// [`GEN_RET_SIGNED`] for a signed one; 0 for an entry probe.
    pub ret: u32,
    /// A `TracingPolicyNamespaced`'s hook: the id of its Kubernetes
    /// namespace in `GEN_PODS` (only calls from the cgroups listed there
    /// under it count); 0: every governed call.
    pub pods: u32,
    pub _pad: u32,
    pub args: [GenArg; GEN_SLOTS],
    pub selectors: [GenSelector; GEN_SLOTS],
}

/// Key of `GEN_PODS`: a cgroup (v2 id) of a pod of the namespace `pods`
/// stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub pods: u32,
    pub _pad: u32,
    pub cgroup: u64,
}

/// Key of `GEN_HOOKS`: a hook's slot (its attachment's cookie) in a generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GenKey {
    pub generation: u32,
    pub slot: u32,
}

/// Who the generic hooks govern, per generation (`GEN_CONFIG[generation]`;
/// `GEN_SLOT[0]` is the generation in force).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    /// Non-zero: carry out Sigkill and Signal (`--enforce`).
    pub enforce: u32,
    pub agent_tgid: u32,
    pub agent_start_ticks: u64,
    pub agent_cgroup_id: u64,
    /// When non-zero, hooks apply only inside this cgroup v2 subtree.
    pub scope_cgroup_id: u64,
    pub scope_level: u32,
    pub has_exempt_pids: u32,
    pub has_binaries: u32,
    pub _pad: u32,
    /// When the exec tracking began (clock ticks since boot): a process
    /// started later that `GEN_EXE` does not know (the map was full) is
    /// exempt by no binary.
    pub tracked_since_ticks: u64,
}

/// The file a process executed (`GEN_EXE`, key: tgid), recorded by the
/// generic object at exec and copied at fork: `matchBinaries` and exempt
/// binaries go by it rather than by `mm->exe_file`, which a process may
/// change (`prctl(PR_SET_MM)`, in its own user namespace too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenExe {
    /// Start time of the process in clock ticks: an entry never applies
    /// to a reused pid.
    pub start_ticks: u64,
    pub dev: u32,
    /// Non-zero: executed under a tracer, which exempts nothing (the
    /// tracer would steer an exempt process).
    pub traced: u32,
    pub ino: u64,
    /// What the parent ran when it forked this process (`matchParentBinaries`;
    /// both 0: unknown). Kept across the process's own execs, and through
    /// its parent's exit.
    pub parent_dev: u32,
    pub _pad: u32,
    pub parent_ino: u64,
    /// `GEN_FOLLOW` bits of the binaries this process and its ancestors
    /// executed (set at exec, inherited at fork, never cleared): what
    /// `followChildren` selectors match.
    pub follow: u64,
    /// The capability sets (`GEN_CAPS_*` order) and namespaces (`NS_*`
    /// inode numbers) at the exec: what `matchCapabilityChanges` and
    /// `matchNamespaceChanges` compare with. A child forked before its
    /// own exec has its parent's.
    pub base_caps: [u64; 3],
    pub base_ns: [u32; crate::NS_KINDS],
    /// Non-zero: `base_caps` and `base_ns` were recorded.
    pub has_base: u32,
    pub _pad_base: u32,
}

/// A binary a `followChildren` selector names, by file identity: its key
/// in `GEN_FOLLOW`, whose value is the binary's bit (stable for the
/// object's life, across generations: processes keep the bits they got).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FollowKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// A thread's call of hook `slot`: the key of `GEN_OVERRIDE` (an
/// Override the kprobe decided, which the hook's `fmod_ret` program
/// returns) and of `GEN_RET` (a return probe's call, kept from entry to
/// return).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GenCallKey {
    pub pid_tgid: u64,
    pub slot: u64,
}

/// A hook's call that a selector matched (or any call of a hook without
/// selectors).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GenericEvent {
    pub header: crate::EventHeader,
    /// The hook's slot (its attachment's cookie).
    pub slot: u32,
    /// Index of the selector that matched, `u32::MAX` for none.
    pub selector: u32,
    /// `GEN_ACT_*` bits: what was done.
    pub actions: u32,
    pub signal: u32,
    pub rule_id: u32,
    pub generation: u32,
    /// What an Override made the call return (0: not overridden).
    pub error: i32,
    pub _pad: u32,
    /// A return probe's value ([`GEN_ACT_RETURN`]), sign-extended as
    /// the hook's `returnArg` type says.
    pub ret: u64,
    pub ints: [u64; GEN_SLOTS],
    /// String arguments, NUL-terminated (empty when unreadable).
    pub strs: [[u8; GEN_STR_LEN]; GEN_SLOTS],
    /// Frames in `kstack` and `ustack` (0 with the action: the kernel
    /// could not take the stack).
    pub kstack_len: u32,
    pub ustack_len: u32,
    /// Return addresses, innermost first ([`GEN_ACT_KSTACK`],
    /// [`GEN_ACT_USTACK`]).
    pub kstack: [u64; GEN_STACK_DEPTH],
    pub ustack: [u64; GEN_STACK_DEPTH],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain data; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::GenHook {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenExe {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FollowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenSock {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenSkb {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PodKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenCred {}
}
