//! The BPF objects built from `vardr-ebpf` and embedded in the binary.
/// Agent programs and maps (exec tracking, enforcement hooks).
pub static AGENT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr"));
/// One trivial program per program type, for `vardr probe`.
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr-probe"));
/// The iterator that reports the identities the hooks see for the agent's
/// open files (`kernel::identity`).
pub static IDENTITY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr-identity"));

/// TracingPolicy kprobe and tracepoint hooks (`hooks`), loaded only for
/// policies that have some.
pub static GENERIC_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr-generic"));

/// Hands the pages of the embedded objects back to the page cache. Each
/// load reads its whole object (several MiB with its debug and BTF
/// sections); the agent then never reads it until its next load, which
/// faults the pages in again from the binary. They are read-only pages of
/// the executable's file mapping, so dropping them changes no content.
pub fn release_object_pages() {
    // Only pages of a read-only mapping of a file: in anything else (a
    // packed, self-extracting binary) they would come back as zeros.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let file_backed = |start: usize, end: usize| {
        maps.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (Some(range), Some(perms), _, _, Some(inode)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            let Some((a, b)) = range.split_once('-') else {
                return false;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                return false;
            };
            a <= start && end <= b && perms.starts_with("r-") && inode != "0"
        })
    };
    let page = crate::kernel::page_size();
    for obj in [AGENT_OBJECT, PROBE_OBJECT, IDENTITY_OBJECT, GENERIC_OBJECT] {
        let (start, end) = (obj.as_ptr() as usize, obj.as_ptr() as usize + obj.len());
        // Whole pages inside the object only.
        let first = start.next_multiple_of(page);
        let last = end / page * page;
        let Some(addr) = std::ptr::NonNull::new(first as *mut std::ffi::c_void) else {
            continue;
        };
        if last <= first || !file_backed(first, last) {
            continue;
        }
        // SAFETY: the range lies inside a `'static` read-only byte array of
        // the binary's file mapping: its pages refault with the same bytes,
        // and no reference into it is invalidated.
        if let Err(e) = unsafe {
            nix::sys::mman::madvise(
                addr,
                last - first,
                nix::sys::mman::MmapAdvise::MADV_DONTNEED,
            )
        } {
            tracing::debug!("releasing the embedded BPF objects' pages: {e}");
        }
    }
}

/// Program names in [`AGENT_OBJECT`].
pub mod progs {
    pub const EXEC: &str = "vardr_exec";
    pub const FORK: &str = "vardr_fork";
    pub const EXIT: &str = "vardr_exit";
    pub const LSM_FILE_OPEN: &str = "vardr_file_open";
    pub const LSM_BPRM_CHECK: &str = "vardr_bprm_check";
    pub const LSM_SOCKET_CONNECT: &str = "vardr_socket_connect";
    /// Sends with a destination on raw, ICMP and SCTP sockets.
    pub const LSM_SOCKET_SENDMSG: &str = "vardr_socket_sendmsg";
    /// Exempt processes cannot be attached to by governed ones.
    pub const LSM_PTRACE: &str = "vardr_ptrace_access_check";
    /// Exempt processes cannot be signalled by governed ones.
    pub const LSM_TASK_KILL: &str = "vardr_task_kill";
    /// Processes no rule applies to keep their resource limits.
    pub const LSM_TASK_SETRLIMIT: &str = "vardr_task_setrlimit";
    /// Governed processes cannot start a child in another cgroup.
    pub const LSM_TASK_ALLOC: &str = "vardr_task_alloc";
    pub const EXEC_FALLBACK: &str = "vardr_exec_fallback";
    /// Fallback: `socket(AF_PACKET)` of governed processes while connect
    /// rules deny (SIGKILL), at `syscalls/sys_enter_socket`.
    pub const PACKET_SOCKET_FALLBACK: &str = "vardr_sys_socket";
    /// LSM programs beside `file_open` for the file rules: changes to the
    /// tree (program, LSM hook).
    pub const LSM_PATH_HOOKS: [(&str, &str); 13] = [
        ("vardr_path_unlink", "path_unlink"),
        ("vardr_path_rmdir", "path_rmdir"),
        ("vardr_path_mkdir", "path_mkdir"),
        ("vardr_path_mknod", "path_mknod"),
        ("vardr_path_symlink", "path_symlink"),
        ("vardr_path_truncate", "path_truncate"),
        ("vardr_path_link", "path_link"),
        ("vardr_path_rename", "path_rename"),
        ("vardr_path_chmod", "path_chmod"),
        ("vardr_path_chown", "path_chown"),
        ("vardr_inode_setxattr", "inode_setxattr"),
        ("vardr_inode_removexattr", "inode_removexattr"),
        ("vardr_file_ioctl", "file_ioctl"),
    ];
    /// File hooks that not every kernel has (program, LSM hook): 6.2
    /// brought the first three (before, `ftruncate(2)` passed
    /// `path_truncate` and ACLs the xattr hooks), 6.8 the compat ioctl
    /// hook (before, `file_ioctl` saw those too).
    pub const LSM_OPTIONAL_FILE_HOOKS: [(&str, &str); 4] = [
        ("vardr_file_truncate", "file_truncate"),
        ("vardr_inode_set_acl", "inode_set_acl"),
        ("vardr_inode_remove_acl", "inode_remove_acl"),
        ("vardr_file_ioctl_compat", "file_ioctl_compat"),
    ];
    /// LSM programs beside `bprm_check_security` for the exec rules:
    /// executable mappings (program, LSM hook).
    pub const LSM_MAP_HOOKS: [(&str, &str); 2] = [
        ("vardr_mmap_file", "mmap_file"),
        ("vardr_file_mprotect", "file_mprotect"),
    ];
    /// Fallback open tracepoints: (program, syscalls/ tracepoint, required).
    /// `open` and `creat` do not exist on every architecture.
    pub const OPEN_TRACEPOINTS: [(&str, &str, bool); 4] = [
        ("vardr_sys_openat", "sys_enter_openat", true),
        ("vardr_sys_openat2", "sys_enter_openat2", false),
        ("vardr_sys_open", "sys_enter_open", false),
        ("vardr_sys_creat", "sys_enter_creat", false),
    ];
    /// Their syscall exits, attached with `--keep-enforcing` while
    /// fanotify answers: an open left to fanotify as a deny that succeeded
    /// because the agent died while it waited is killed there.
    pub const OPEN_EXIT_TRACEPOINTS: [(&str, &str, bool); 4] = [
        ("vardr_sys_exit_openat", "sys_exit_openat", true),
        ("vardr_sys_exit_openat2", "sys_exit_openat2", false),
        ("vardr_sys_exit_open", "sys_exit_open", false),
        ("vardr_sys_exit_creat", "sys_exit_creat", false),
    ];
    /// Cgroup network programs: the fallback's network backend, and on the
    /// LSM backend the complement of `socket_connect` (UDP sends, TFO).
    pub const SOCK_ADDR: [&str; 4] = [
        "vardr_connect4",
        "vardr_connect6",
        "vardr_sendmsg4",
        "vardr_sendmsg6",
    ];
    /// Server names, attached beside [`SOCK_ADDR`]: TLS ClientHellos
    /// leaving (domain rules, `--tls-capture`) and DNS responses arriving.
    pub const TLS_EGRESS: &str = "vardr_tls_egress";
    /// Record (and forget) the raw, ICMP and SCTP sockets of governed
    /// processes; the egress program drops their packets to denied
    /// addresses.
    pub const RAW_SOCK_CREATE: &str = "vardr_raw_sock_create";
    pub const RAW_SOCK_RELEASE: &str = "vardr_raw_sock_release";
    pub const DNS_INGRESS: &str = "vardr_dns_ingress";
}

/// Map names in [`AGENT_OBJECT`].
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const POLICY_EVENTS: &str = "POLICY_EVENTS";
    pub const LOST_EVENTS: &str = "LOST_EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const CONFIG_SLOT: &str = "CONFIG_SLOT";
    pub const EXEMPT_TASKS: &str = "EXEMPT_TASKS";
    pub const FAN_LEASE: &str = "FAN_LEASE";
    pub const AGENT_ABOVE: &str = "AGENT_ABOVE";
    pub const PATH_RULES: &str = "PATH_RULES";
    pub const EXACT_PATHS: &str = "EXACT_PATHS";
    pub const INODE_RULES: &str = "INODE_RULES";
    pub const EXEMPT_PIDS: &str = "EXEMPT_PIDS";
    pub const NET4_RULES: &str = "NET4_RULES";
    pub const NET6_RULES: &str = "NET6_RULES";
    pub const DOMAIN_RULES: &str = "DOMAIN_RULES";
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
pub fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {e}");
    }
}
