//! Types shared by the vardr BPF programs and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads it from
//! maps and writes it into the ring buffer, and userspace reads the same bytes.
#![no_std]

pub mod generic;

/// Bytes of an LPM path key: one generation byte, then the path and its NUL.
/// 256 is the largest key data an LPM trie accepts.
pub const PATH_KEY_LEN: usize = 256;
/// Longest path a rule can name (bytes, without the NUL).
pub const PATH_MAX_RULE: usize = PATH_KEY_LEN - 2;
/// Room for a path in an event.
pub const EVENT_PATH_LEN: usize = 256;
/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;
/// Net LPM key: generation, protocol, port (big endian), then the address.
pub const NET4_KEY_LEN: usize = 4 + 4;
pub const NET6_KEY_LEN: usize = 4 + 16;
/// Bits of a net key before the address (generation, protocol, port).
pub const NET_KEY_HEAD_BITS: u32 = 32;

/// Kind of record at the start of every ring buffer entry.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Policy = 2,
    Fork = 3,
    Exit = 4,
    /// A DNS response a governed socket received ([`DnsEvent`]).
    Dns = 5,
    /// A TracingPolicy kprobe or tracepoint hook's call ([`generic::GenericEvent`]).
    Generic = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Policy),
            3 => Some(Self::Fork),
            4 => Some(Self::Exit),
            5 => Some(Self::Dns),
            6 => Some(Self::Generic),
            _ => None,
        }
    }
}

/// Bytes of command line an exec event carries (NUL-separated arguments).
pub const ARGS_LEN: usize = 1024;
/// [`ExecEvent::flags`]: the arguments were cut at [`ARGS_LEN`].
pub const EXEC_ARGS_TRUNCATED: u32 = 1;
/// [`ExecEvent::flags`]: `path` holds the executed file's path, built in
/// the kernel from its dentries up to the global root. Unset when the path
/// is too long or too deep for the walk, or when the file is not the one
/// `filename` names (a script: the kernel runs its interpreter).
pub const EXEC_PATH_RESOLVED: u32 = 2;
/// [`ExecEvent::flags`]: `cwd` holds the working directory (`fs->pwd`).
pub const EXEC_CWD_RESOLVED: u32 = 4;
/// [`ExecEvent::flags`]: the credential fields were read from `task->cred`.
pub const EXEC_CREDS: u32 = 8;

/// What a rule asks for. `None` means no rule of that hook covers the key.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None = 0,
    Allow = 1,
    Deny = 2,
    Alert = 3,
    /// Report only, for Layer 2 (generated from Cedar policies): ranks below
    /// every other action, so it never overrides a rule, and its events say
    /// "allow".
    Observe = 4,
}

/// The governed operations; also the slot index in [`PathRules`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    FileOpen = 0,
    FileWrite = 1,
    Exec = 2,
    Connect = 3,
}

impl Hook {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::FileOpen),
            1 => Some(Self::FileWrite),
            2 => Some(Self::Exec),
            3 => Some(Self::Connect),
            _ => None,
        }
    }
}

/// Which kind of program produced an event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Lsm = 1,
    Fallback = 2,
    Audit = 3,
    /// fanotify permission events answered by the agent (userspace only:
    /// no BPF program writes it).
    Fanotify = 4,
}

impl BackendKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Lsm),
            2 => Some(Self::Fallback),
            3 => Some(Self::Audit),
            4 => Some(Self::Fanotify),
            _ => None,
        }
    }
}

/// Verdict recorded in an event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow = 0,
    /// Denied in the kernel (the syscall failed or the process was killed).
    Deny = 1,
    /// Would have been denied, but enforcement is off for this hook.
    Audit = 2,
    /// An alert rule matched; nothing was blocked.
    Alert = 3,
}

impl Verdict {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Allow),
            1 => Some(Self::Deny),
            2 => Some(Self::Audit),
            3 => Some(Self::Alert),
            _ => None,
        }
    }
}

/// A rule reference stored in the rule maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleRef {
    pub rule_id: u32,
    /// An [`Action`] as `u32`.
    pub action: u32,
}

/// Value of the path LPM trie: the effective rule for each path hook at this
/// prefix (file_open, file_write, exec). Userspace folds inherited rules in,
/// because an LPM lookup returns only the single longest match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathRules {
    pub slots: [RuleRef; 3],
    /// Length of the path key these rules belong to: when a path match and
    /// an identity match disagree, the more specific (longer) one wins.
    pub specificity: u32,
    pub _pad: u32,
}

/// Key of the inode map: a file's identity, so hard links, symlinks and
/// renames of a binary do not escape its rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub generation: u32,
    /// Kernel-internal `dev_t` of the file system (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    pub ino: u64,
}

/// Value of the inode map: the folded rules of the path this file or
/// directory had when the policy was loaded. The kernel walks a file's
/// dentry chain up to its file system root and uses the first entry found,
/// so bind mounts, chroots and other mount namespaces (which change the
/// path, not the inodes) do not escape a rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeRule {
    /// Rules for what lies below this directory (or, with `exact`, unused).
    pub rules: PathRules,
    /// Rules for this inode itself: what a path lookup of its own name
    /// gives (a rule on a directory's subtree need not cover the directory:
    /// in Cedar a directory is not `in` itself).
    pub own: PathRules,
    /// Non-zero: processes running this binary are exempt from every rule.
    pub exempt: u32,
    /// Non-zero: `rules` is meaningful (an exempt-only entry has none).
    pub has_rules: u32,
    /// Non-zero: the rules came from an exact path, so they apply to this
    /// inode only, not to what lies below it.
    pub exact: u32,
    /// Non-zero: this binary runs scripts; what a process running it opens
    /// is checked against the exec rules.
    pub interpreter: u32,
}

/// Deepest directory nesting the identity walk follows.
pub const MAX_DENTRY_DEPTH: u32 = 32;

/// Key of the exempt-pid map. The value is the process's start time in
/// clock ticks since boot (`/proc/PID/stat` field 22), so a process that
/// reuses the pid later is not exempt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PidKey {
    pub generation: u32,
    pub tgid: u32,
}

/// A process exempt because of the binary it executed: value of the
/// exempt-task map (key: tgid). Written at exec from the file the kernel
/// executes (never from `mm->exe_file`, which a process can change),
/// copied to children at fork, removed at exit. The identity is checked
/// against the rules in force at each use, so a reload that drops the
/// binary from `exempt_binaries` ends the exemption at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExemptTask {
    /// Start time of the process in clock ticks since boot, as in
    /// `/proc/PID/stat`: an entry never applies to a reused pid.
    pub start_ticks: u64,
    /// Identity of the executed binary.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// The fallback's file rules answered by a live agent's fanotify group
/// (`--keep-enforcing`): while `until_ns` (CLOCK_BOOTTIME) lies ahead, the
/// pinned open tracepoints stand by; they take over when the lease lapses,
/// or at once when process `holder_tgid` exits (before its group closes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanotifyLease {
    pub holder_tgid: u32,
    pub _pad: u32,
    pub until_ns: u64,
    /// The holder's start time ([`NS_PER_TICK`] ticks since boot). An
    /// agent in a PID namespace knows only its own pid there, not the
    /// kernel's: its exit is recognised by this too (a false match only
    /// hands the file rules back to the tracepoints early).
    pub holder_start_ticks: u64,
}

/// Nanoseconds per `USER_HZ` clock tick (100 Hz), the unit of start times
/// in `/proc/PID/stat` that userspace can read for any process.
pub const NS_PER_TICK: u64 = 10_000_000;

/// Slots of `LOST_EVENTS`: events the lifecycle buffer (exec, fork, exit)
/// and the policy buffer had no room for.
pub const LOST_LIFECYCLE: u32 = 0;
pub const LOST_POLICY: u32 = 1;

/// Cgroup levels above the agent's whose files are protected (`AGENT_ABOVE`).
pub const AGENT_ANCESTORS: usize = 8;

/// Slots of the config array: a reload writes the unused slot, then flips
/// [`Config`] selection with one 4-byte write of the slot map, so no
/// program ever copies a config that is half old and half new.
pub const CONFIG_SLOTS: u32 = 2;

/// Runtime settings read by every program, slot 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Generation (0 or 1) of the rule entries in force. A reload writes the
    /// other generation, then flips this: no instant has half a rule set.
    pub generation: u32,
    /// Bit per [`Hook`]: deny in the kernel. Clear: emit `audit` events only.
    pub enforce_mask: u32,
    /// Bit per [`Hook`]: the hook has at least one rule.
    pub active_mask: u32,
    /// Non-zero: look processes up in the exempt maps.
    pub has_exempt_pids: u32,
    pub has_exempt_binaries: u32,
    /// The agent's own process (exempt).
    pub agent_tgid: u32,
    /// The agent's own cgroup (exempt).
    pub agent_cgroup_id: u64,
    /// When non-zero, rules apply only inside this cgroup v2 subtree.
    pub scope_cgroup_id: u64,
    /// Level of `scope_cgroup_id` (root = 0).
    pub scope_level: u32,
    /// Non-zero: some binary is an interpreter (see [`InodeRule::interpreter`]).
    pub has_interpreters: u32,
    /// Start time of the agent process in clock ticks since boot: the
    /// agent is exempt by pid *and* start time, so a process that reuses
    /// its pid after it died is not.
    pub agent_start_ticks: u64,
    /// Non-zero: the rule set has identity entries (otherwise the programs
    /// skip the walk up the directories).
    pub has_identities: u32,
    /// Non-zero: governed processes may not move into the agent's cgroup
    /// nor write its files. Off when the agent runs in a PID namespace of
    /// its own: its service manager is then not PID 1 and looks governed.
    pub protect_agent_cgroup: u32,
    /// `NAMES_*` bits: what the socket programs look at beyond addresses.
    pub names: u32,
    /// Non-zero: some connect rule denies, so governed processes may not
    /// send frames built by hand (`AF_PACKET`): no rule can be checked on
    /// them (see [`RULE_PACKET_FRAMES`]).
    pub packet_frames: u32,
}

/// [`Config::names`]: report every TLS server name (`--tls-capture`).
pub const NAMES_TLS: u32 = 1;
/// [`Config::names`]: hand DNS responses to the agent.
pub const NAMES_DNS: u32 = 2;
/// [`Config::names`]: the rule set has domain rules (`DOMAIN_RULES`).
pub const NAMES_RULES: u32 = 4;
/// [`Config::names`]: one of them denies (hellos that cannot be read are
/// then refused).
pub const NAMES_DENY: u32 = 8;

/// Domain LPM key: one generation byte, then the server name reversed
/// (`moc.elpmaxe`) and a NUL, so a `*.example.com` rule is a prefix.
pub const DOMAIN_KEY_LEN: usize = 256;
/// Bytes of a DNS response an event carries: the EDNS buffer size most
/// resolvers use (DNS flag day 2020); a longer answer is cut and not used.
pub const DNS_PAYLOAD_LEN: usize = 1232;

/// A DNS response received by a socket in the agent's cgroup scope.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// Socket cgroup and uid; the task fields are whoever ran the softirq.
    pub header: EventHeader,
    /// Bytes used in `payload`.
    pub len: u32,
    pub _pad: u32,
    pub payload: [u8; DNS_PAYLOAD_LEN],
}

/// Kernel struct offsets read from BTF in userspace (aya has no CO-RE field
/// relocations), handed to the programs as read-only globals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub file_f_path: u64,
    pub path_dentry: u64,
    pub dentry_d_inode: u64,
    pub dentry_d_parent: u64,
    pub file_f_inode: u64,
    pub file_f_flags: u64,
    pub file_f_mode: u64,
    pub inode_i_ino: u64,
    pub inode_i_sb: u64,
    pub super_block_s_dev: u64,
    pub super_block_s_magic: u64,
    pub binprm_file: u64,
    pub binprm_filename: u64,
    pub task_flags: u64,
    pub task_mm: u64,
    pub task_pid: u64,
    pub task_tgid: u64,
    pub task_real_parent: u64,
    pub task_exit_code: u64,
    pub task_signal: u64,
    /// `signal_struct.live`: threads of the group still running.
    pub signal_live: u64,
    /// 0 when the kernel has no audit support.
    pub task_loginuid: u64,
    pub mm_arg_start: u64,
    pub mm_arg_end: u64,
    pub mm_exe_file: u64,
    pub socket_type: u64,
    pub task_group_leader: u64,
    /// `task_struct.start_boottime` (ns since boot, suspend included).
    pub task_start_boottime: u64,
    /// `dentry.d_name.name`: the name's pointer inside the dentry.
    pub dentry_d_name_name: u64,
    pub path_mnt: u64,
    pub vfsmount_mnt_root: u64,
    /// `struct mount` embeds the `struct vfsmount` at this offset.
    pub mount_mnt: u64,
    pub mount_mnt_parent: u64,
    pub mount_mnt_mountpoint: u64,
    pub vma_vm_file: u64,
    pub vma_vm_flags: u64,
    /// `task_struct.fs` and `fs_struct.root`: the caller's root, the mount
    /// hooks given only a dentry resolve through.
    pub task_fs: u64,
    pub fs_struct_root: u64,
    pub dentry_d_sb: u64,
    pub vfsmount_mnt_sb: u64,
    /// `task_struct.ptrace`: non-zero while the task is traced.
    pub task_ptrace: u64,
    /// Another task's cgroup v2: `task_struct.cgroups`,
    /// `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`, `cgroup.level`
    /// and `cgroup.ancestors` (0 when the kernel has no `ancestors`).
    pub task_cgroups: u64,
    pub css_set_dfl_cgrp: u64,
    pub cgroup_kn: u64,
    pub kernfs_node_id: u64,
    pub cgroup_level: u64,
    pub cgroup_ancestors: u64,
    /// `linux_binprm.interp`: the name of the file the kernel runs, a copy
    /// of `filename` when a script named an interpreter.
    pub binprm_interp: u64,
    /// `fs_struct.pwd`: the working directory.
    pub fs_struct_pwd: u64,
    /// `task_struct.cred` and the ids in `struct cred`.
    pub task_cred: u64,
    pub cred_uid: u64,
    pub cred_gid: u64,
    pub cred_suid: u64,
    pub cred_sgid: u64,
    pub cred_euid: u64,
    pub cred_egid: u64,
    pub cred_fsuid: u64,
    pub cred_fsgid: u64,
    /// overlayfs: where `struct ovl_inode` embeds its VFS inode, its upper
    /// dentry, and where the lower stack (`struct ovl_entry`) is (see
    /// [`ovl_lower_kind`](Self::ovl_lower_kind)).
    pub ovl_inode_vfs_inode: u64,
    pub ovl_inode_upper: u64,
    /// `ovl_inode.oe` (6.5+).
    pub ovl_inode_oe: u64,
    /// `dentry.d_fsdata` (the lower stack before 6.5).
    pub dentry_d_fsdata: u64,
    /// [`OVL_STACK_NONE`] (no overlay mapping), [`OVL_STACK_IN_DENTRY`] or
    /// [`OVL_STACK_IN_INODE`].
    pub ovl_lower_kind: u64,
    /// `struct ovl_entry`: the number of lower layers (u32) and the first
    /// lower layer's dentry.
    pub ovl_entry_numlower: u64,
    pub ovl_entry_lower_dentry: u64,
    /// Namespaces (TracingPolicy `matchNamespaces`), by [`NS_KINDS`] index:
    /// where `nsproxy` keeps each kind's pointer (0: not through `nsproxy`,
    /// or the kernel has no such namespace) and where its struct keeps
    /// `ns.inum`.
    pub task_nsproxy: u64,
    pub nsproxy_ns: [u64; NS_KINDS],
    pub ns_inum: [u64; NS_KINDS],
    /// A task's pid and its active pid namespace: `task_struct.thread_pid`,
    /// `pid.level`, `pid.numbers`, the size of a `struct upid` and its
    /// `nr` and `ns`.
    pub task_thread_pid: u64,
    pub pid_level: u64,
    pub pid_numbers: u64,
    pub upid_size: u64,
    pub upid_nr: u64,
    pub upid_ns: u64,
    /// `cred.user_ns` and the capability sets (`kernel_cap_t`, 64 bits).
    pub cred_user_ns: u64,
    pub cred_cap_effective: u64,
    pub cred_cap_inheritable: u64,
    pub cred_cap_permitted: u64,
    /// `struct sock` (TracingPolicy `sock` arguments): `__sk_common`'s
    /// family, state, local port (host order), remote port (network
    /// order), IPv4 addresses and IPv6 addresses, and the sock's protocol
    /// and type (all 0 when the kernel's BTF lacks them).
    pub skc_family: u64,
    pub skc_state: u64,
    pub skc_num: u64,
    pub skc_dport: u64,
    pub skc_rcv_saddr: u64,
    pub skc_daddr: u64,
    pub skc_v6_rcv_saddr: u64,
    pub skc_v6_daddr: u64,
    pub sk_protocol: u64,
    pub sk_type: u64,
    /// A task's open files (TracingPolicy `fd` arguments): `task_struct.files`,
    /// `files_struct.fdt`, `fdtable.max_fds` and `fdtable.fd`.
    pub task_files: u64,
    pub files_fdt: u64,
    pub fdtable_max_fds: u64,
    pub fdtable_fd: u64,
    /// `struct sk_buff` (TracingPolicy `skb` arguments): `head`, the
    /// network header's offset from it, `len`, `priority`, `mark` and
    /// `hash` (all 0 when the kernel's BTF lacks them).
    pub skb_head: u64,
    pub skb_network_header: u64,
    pub skb_len: u64,
    pub skb_priority: u64,
    pub skb_mark: u64,
    pub skb_hash: u64,
    /// `socket.sk` and `msghdr.msg_name`: the destination of a send
    /// (`socket_sendmsg` on sockets no cgroup hook sees: raw, ICMP, SCTP).
    pub socket_sk: u64,
    pub msghdr_name: u64,
}

/// Namespace kinds, in Tetragon's order (its `matchNamespaces` names).
pub const NS_KINDS: usize = 10;
pub const NS_UTS: usize = 0;
pub const NS_IPC: usize = 1;
pub const NS_MNT: usize = 2;
/// The task's active pid namespace (through `thread_pid`).
pub const NS_PID: usize = 3;
pub const NS_PID_FOR_CHILDREN: usize = 4;
pub const NS_NET: usize = 5;
pub const NS_TIME: usize = 6;
pub const NS_TIME_FOR_CHILDREN: usize = 7;
pub const NS_CGROUP: usize = 8;
/// The user namespace of the task's credentials.
pub const NS_USER: usize = 9;

/// Overlay dentries keep their overlay identity (the layout is unknown).
pub const OVL_STACK_NONE: u64 = 0;
/// The lower stack is the dentry's `d_fsdata` (up to 6.4).
pub const OVL_STACK_IN_DENTRY: u64 = 1;
/// The lower stack is `ovl_inode.oe` (6.5+).
pub const OVL_STACK_IN_INODE: u64 = 2;
/// `super_block.s_magic` of overlayfs.
pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

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
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    /// Audit (login) uid, `u32::MAX` when unset.
    pub auid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Bytes used in `args`.
    pub args_len: u32,
    /// Credentials after the exec (a set-user-ID binary has changed them);
    /// the real uid and gid are in the header. Valid with [`EXEC_CREDS`].
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// Start of the process (its thread group leader's `start_boottime`,
    /// ns since boot): with the pid, it names the process.
    pub start_ns: u64,
    /// The name the caller passed to execve (`bprm->filename`), as written:
    /// possibly relative, `/dev/fd/N` for `fexecve`.
    pub filename: [u8; EVENT_PATH_LEN],
    /// The executed file's path from the global root, with
    /// [`EXEC_PATH_RESOLVED`].
    pub path: [u8; EVENT_PATH_LEN],
    /// The working directory from the global root, with [`EXEC_CWD_RESOLVED`].
    pub cwd: [u8; EVENT_PATH_LEN],
    pub args: [u8; ARGS_LEN],
}

/// A new process (not a thread): `sched_process_fork`. The header is the parent's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}

/// A process ended: its thread group leader passed `sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code`: exit status << 8 | terminating signal.
    pub exit_code: u32,
    pub _pad: u32,
}

/// The kernel operation behind a policy event, beyond the hook's own
/// (open, exec, connect): mutations of a path are `file_write` matches,
/// executable mappings are `exec` matches.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// The hook's own operation (`file_open`, `bprm_check_security`, ...).
    Hook = 0,
    Unlink = 1,
    Rmdir = 2,
    Rename = 3,
    Link = 4,
    Truncate = 5,
    /// A new file: `mknod(2)` or `open(O_CREAT)` of a path that does not exist.
    Create = 6,
    Mkdir = 7,
    Symlink = 8,
    MmapExec = 9,
    MprotectExec = 10,
    /// An interpreter opened a file the exec rules deny (a script).
    ScriptOpen = 11,
    Chmod = 12,
    Chown = 13,
    SetXattr = 14,
    RemoveXattr = 15,
    /// `ftruncate(2)` (6.2+; earlier kernels pass `path_truncate`).
    FileTruncate = 16,
    /// A governed process attaching to an exempt one (ptrace, memory
    /// writes, `pidfd_getfd`): built-in, rule id 0.
    Ptrace = 17,
    /// A governed process signalling an exempt one (`flags`: the signal):
    /// built-in, rule id 0.
    Signal = 18,
    /// A governed process starting a child in another cgroup (`clone3`
    /// with `CLONE_INTO_CGROUP`): built-in, [`RULE_PROTECT_SCOPE`].
    CloneIntoCgroup = 19,
    /// A governed process changing a resource limit of a process no rule
    /// applies to (`prlimit`; `flags`: the resource): built-in, rule id 0.
    Rlimit = 20,
    /// A TLS ClientHello leaving a socket: `path` holds the server name
    /// (SNI), the address fields the destination.
    TlsClientHello = 21,
    /// A connect whose destination DNS named with a denied or alerted
    /// domain (userspace only: the kernel reports the connect with
    /// [`RULE_NONE`], the agent matches its DNS names).
    NameConnect = 22,
    /// A send with a destination on a socket no cgroup connect or sendmsg
    /// hook sees (raw, ICMP echo, SCTP).
    Send = 23,
    /// A frame built by hand (`AF_PACKET`) sent by a governed process
    /// while connect rules deny (LSM `socket_sendmsg`; `protocol`: the
    /// socket's ethertype): built-in, [`RULE_PACKET_FRAMES`].
    PacketSend = 24,
    /// A governed process making an `AF_PACKET` socket while connect rules
    /// deny (the fallback's `socket()` tracepoint, which cannot tell a
    /// send from a receive: SIGKILL): built-in, [`RULE_PACKET_FRAMES`].
    PacketSocket = 25,
    /// A POSIX ACL set (6.2+: no longer an xattr hook's).
    SetAcl = 26,
    /// A POSIX ACL removed (6.2+).
    RemoveAcl = 27,
    /// Inode flags set through `ioctl` (`chattr`: immutable, append-only;
    /// `FS_IOC_SETFLAGS`, `FS_IOC_FSSETXATTR`).
    SetFlags = 28,
}

/// Rule id of the built-in deny of a governed process attaching to or
/// signalling an exempt one.
pub const RULE_PROTECT_EXEMPT: u32 = 0;
/// Rule id of the built-in deny of a governed process leaving the rules by
/// changing its cgroup (into the agent's, out of the scope).
pub const RULE_PROTECT_SCOPE: u32 = u32::MAX;
/// Rule id of the built-in deny of a ClientHello the kernel cannot read
/// to its server name (split over packets or TLS records, malformed, a
/// name with bytes no host name has) while domain rules are in force.
pub const RULE_UNREADABLE_HELLO: u32 = u32::MAX - 1;
/// Rule id of a report no rule asked for (`--tls-capture`).
pub const RULE_NONE: u32 = u32::MAX - 2;
/// Rule id of the fanotify deny path's refusal when it cannot read its
/// own path maps (userspace only): it fails closed.
pub const RULE_PATHS_UNREADABLE: u32 = u32::MAX - 3;
/// Rule id of the built-in refusal of frames built by hand (`AF_PACKET`)
/// to governed processes while connect rules deny: a frame names no
/// destination the socket layer checks, so it could reach any.
pub const RULE_PACKET_FRAMES: u32 = u32::MAX - 4;
/// `AF_PACKET`.
pub const AF_PACKET: u16 = 17;
/// `AF_XDP` (an XSK's frames are built by hand too).
pub const AF_XDP: u16 = 44;
/// A packet socket's ethertype, in a policy event's `protocol`, when the
/// hook cannot read it (beyond any 16-bit ethertype).
pub const PACKET_PROTO_UNKNOWN: u32 = 1 << 16;

impl Operation {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Hook,
            1 => Self::Unlink,
            2 => Self::Rmdir,
            3 => Self::Rename,
            4 => Self::Link,
            5 => Self::Truncate,
            6 => Self::Create,
            7 => Self::Mkdir,
            8 => Self::Symlink,
            9 => Self::MmapExec,
            10 => Self::MprotectExec,
            11 => Self::ScriptOpen,
            12 => Self::Chmod,
            13 => Self::Chown,
            14 => Self::SetXattr,
            15 => Self::RemoveXattr,
            16 => Self::FileTruncate,
            17 => Self::Ptrace,
            18 => Self::Signal,
            19 => Self::CloneIntoCgroup,
            20 => Self::Rlimit,
            21 => Self::TlsClientHello,
            22 => Self::NameConnect,
            23 => Self::Send,
            24 => Self::PacketSend,
            25 => Self::PacketSocket,
            26 => Self::SetAcl,
            27 => Self::RemoveAcl,
            28 => Self::SetFlags,
            _ => return None,
        })
    }
}

/// A governed operation that matched a deny or alert rule.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PolicyEvent {
    pub header: EventHeader,
    /// [`Hook`] as u32.
    pub hook: u32,
    /// [`BackendKind`] as u32.
    pub backend: u32,
    /// [`Verdict`] as u32.
    pub verdict: u32,
    pub rule_id: u32,
    /// Open flags (file hooks); milliseconds from the connect to a TLS
    /// ClientHello (`Operation::TlsClientHello`).
    pub flags: u32,
    /// AF_INET / AF_INET6 (connect).
    pub family: u16,
    /// Host byte order (connect).
    pub port: u16,
    /// IPPROTO_TCP / IPPROTO_UDP, 0 when unknown (connect).
    pub protocol: u32,
    /// [`Operation`] as u32.
    pub op: u32,
    /// IPv4 in the first 4 bytes, or IPv6 (connect).
    pub addr: [u8; 16],
    /// Path as the hook saw it (file and exec hooks).
    pub path: [u8; EVENT_PATH_LEN],
}

/// Bump when a map definition (type, key, value, meaning of a field) or an
/// event changes in a way the sizes below do not show. 2: `Config`,
/// `InodeRule` and `PolicyEvent` padding became interpreter and operation
/// fields. 3: the `FAN_LEASE` map. 4: `Operation::Signal`. 5:
/// `Operation::CloneIntoCgroup`, `Operation::Rlimit`, [`RULE_PROTECT_SCOPE`].
/// 6: the `AGENT_ABOVE` map, the `POLICY_EVENTS` ring buffer. 7: server
/// names (`DOMAIN_RULES`, `SOCK_OWNERS`, [`DnsEvent`],
/// `Operation::TlsClientHello`). 8: identities of overlay files are their
/// real file's (`INODE_RULES` keys changed meaning); exec events carry the
/// resolved path, the working directory and credentials. 9:
/// `Operation::Send`, the `RAW_OWNERS` map.
pub const MAP_REVISION: u32 = 9;

/// Version of everything a pinned set shares with the agent that reads it:
/// the map key and value types, the event records and [`MAP_REVISION`]. An
/// agent never reads the maps of a pinned set whose version differs.
pub const LAYOUT_VERSION: u32 = layout_version();

const fn layout_version() -> u32 {
    let parts = [
        MAP_REVISION as usize,
        PATH_KEY_LEN,
        NET4_KEY_LEN,
        NET6_KEY_LEN,
        EVENT_PATH_LEN,
        ARGS_LEN,
        core::mem::size_of::<RuleRef>(),
        core::mem::size_of::<PathRules>(),
        core::mem::size_of::<InodeKey>(),
        core::mem::size_of::<InodeRule>(),
        core::mem::size_of::<PidKey>(),
        core::mem::size_of::<Config>(),
        core::mem::size_of::<FanotifyLease>(),
        core::mem::size_of::<KernelOffsets>(),
        core::mem::size_of::<EventHeader>(),
        core::mem::size_of::<ExecEvent>(),
        core::mem::size_of::<ForkEvent>(),
        core::mem::size_of::<ExitEvent>(),
        core::mem::size_of::<PolicyEvent>(),
        core::mem::size_of::<DnsEvent>(),
        DOMAIN_KEY_LEN,
    ];
    // FNV-1a over the sizes.
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < parts.len() {
        let mut v = parts[i] as u32;
        let mut b = 0;
        while b < 4 {
            h ^= v & 0xff;
            h = h.wrapping_mul(0x0100_0193);
            v >>= 8;
            b += 1;
        }
        i += 1;
    }
    h
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::RuleRef {}
    unsafe impl aya::Pod for super::PathRules {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::InodeRule {}
    unsafe impl aya::Pod for super::PidKey {}
    unsafe impl aya::Pod for super::ExemptTask {}
    unsafe impl aya::Pod for super::FanotifyLease {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
