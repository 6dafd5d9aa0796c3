//! JSON shaped like Tetragon's export: one object per line, keyed by the
//! event type (`process_exec`, `process_exit`, `process_lsm`), with
//! `node_name` and `time`.
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vardr_common::{BackendKind, EventHeader, Hook, Operation, Verdict};

use super::{c_str, PolicyMatch};
use crate::process::ProcessInfo;

/// Converts `bpf_ktime_get_boot_ns()` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at boot, in ns since the epoch.
    boot_epoch_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
            .unwrap_or(0);
        Self {
            boot_epoch_ns: wall - boot,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = (self.boot_epoch_ns + boot_ns as i128).max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// What the agent knows about a rule id.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleInfo {
    pub policy_name: String,
    pub rule: String,
    pub severity: String,
    /// A TracingPolicy hook's `message` and `tags` (Tetragon's fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A report-only rule generated for a Cedar policy: the event is not
    /// a Layer 1 match.
    #[serde(skip)]
    pub observe: bool,
}

/// A process as events show it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Process {
    pub exec_id: String,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    pub cwd: String,
    pub binary: String,
    pub arguments: String,
    /// How the process became known (execve, procFS, clone), plus truncArgs.
    pub flags: String,
    /// Empty when unknown (a Timestamp in Tetragon's schema: no empty string).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_exec_id: Option<String>,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The container id again, under Tetragon's name for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
    /// All of the process's ids (Tetragon's `ProcessCredentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_credentials: Option<super::Creds>,
}

impl Process {
    pub fn from_info(p: &ProcessInfo) -> Self {
        let mut flags = p.origin.to_string();
        if p.args_truncated {
            flags.push_str(" truncArgs");
        }
        Self {
            exec_id: p.exec_id.clone(),
            pid: p.pid,
            tid: None,
            uid: p.uid,
            gid: p.gid,
            auid: p.auid,
            cwd: p.cwd.clone(),
            binary: p.binary.clone(),
            arguments: p.arguments.clone(),
            flags,
            start_time: rfc3339(p.start_time),
            parent_exec_id: p.parent.as_ref().map(|p| p.exec_id.clone()),
            cgroup_id: p.cgroup_id,
            cgroup: p.cgroup.clone(),
            container_id: p.container_id.clone(),
            docker: p.container_id.clone(),
            process_credentials: p.creds,
        }
    }

    /// A process the cache does not know (started and gone between scans).
    pub(super) fn from_header(h: &EventHeader) -> Self {
        Self {
            exec_id: String::new(),
            pid: h.pid,
            tid: Some(h.tid),
            uid: h.uid,
            gid: h.gid,
            auid: None,
            cwd: String::new(),
            binary: c_str(&h.comm),
            arguments: String::new(),
            flags: "unknown".into(),
            start_time: String::new(),
            parent_exec_id: None,
            cgroup_id: h.cgroup_id,
            cgroup: String::new(),
            container_id: None,
            docker: None,
            process_credentials: None,
        }
    }
}

/// What Layer 2 (Cedar) concluded about an event, after the fact.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Layer2 {
    /// allow, alert or deny.
    pub verdict: &'static str,
    /// The Cedar policies that decided.
    pub policies: Vec<String>,
    pub severity: String,
    /// For a deny whose policy asks `@response("kill")`: what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct ProcessExec {
    pub process: Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer2: Option<Layer2>,
}

#[derive(Serialize, Debug)]
pub struct ProcessExit {
    pub process: Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// Exit status (when not killed by a signal).
    pub status: u32,
    /// Terminating signal, e.g. "SIGKILL".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// One hook argument, named as Tetragon names them.
#[derive(Serialize, Debug)]
pub enum Arg {
    /// `flags` is a string, as in Tetragon's `KprobeFile`: the open flags
    /// by name (`O_WRONLY|O_TRUNC`); `open_flags` has them as a number.
    #[serde(rename = "file_arg")]
    File {
        path: String,
        flags: String,
        open_flags: u32,
    },
    #[serde(rename = "linux_binprm_arg")]
    LinuxBinprm { path: String },
    #[serde(rename = "sock_arg")]
    Sock {
        family: &'static str,
        protocol: &'static str,
        daddr: String,
        dport: u16,
    },
    /// A TLS server name (Tetragon's `string_arg`).
    #[serde(rename = "string_arg")]
    String(String),
    /// The signal of a refused `kill` (Tetragon's `int_arg`).
    #[serde(rename = "int_arg")]
    Int(i32),
}

#[derive(Serialize, Debug)]
pub struct ProcessLsm {
    pub process: Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// file_open, file_write, exec or connect.
    pub hook: &'static str,
    /// The kernel function or program that decided.
    pub function_name: &'static str,
    pub args: Vec<Arg>,
    #[serde(flatten)]
    pub rule: Option<RuleInfo>,
    pub rule_id: u32,
    /// deny (blocked in the kernel), audit (would deny; enforcement off) or alert.
    pub verdict: &'static str,
    /// What the kernel did, as Tetragon's `KprobeAction`: OVERRIDE (the
    /// operation failed with an error), SIGKILL (the fallback's tracepoints
    /// killed the process) or POST (reported only).
    pub action: &'static str,
    /// lsm, fallback or audit.
    pub backend: &'static str,
    /// TLS server name of a `tls_client_hello` (also its `string_arg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Names DNS answered with for the destination address (`--tls-capture`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// What the agent did after the kernel dropped a denied ClientHello
    /// (`killed`, or why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer2: Option<Layer2>,
}

#[derive(Serialize, Debug)]
pub struct EventsLost {
    pub count: u64,
    pub total: u64,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    ProcessExec(ProcessExec),
    ProcessExit(ProcessExit),
    /// Boxed: by far the largest body.
    ProcessLsm(Box<ProcessLsm>),
    ProcessKprobe(Box<super::generic::ProcessHook>),
    ProcessTracepoint(Box<super::generic::ProcessHook>),
    ProcessUprobe(Box<super::generic::ProcessHook>),
    /// An `lsmhooks` hook run by the generic hooks (its selectors in the
    /// kernel): Tetragon's `process_lsm`, with the hooks' fields.
    #[serde(rename = "process_lsm")]
    ProcessLsmHook(Box<super::generic::ProcessHook>),
    EventsLost(EventsLost),
}

/// One exported event.
#[derive(Serialize, Debug)]
pub struct JsonEvent {
    #[serde(flatten)]
    pub body: Body,
    pub node_name: String,
    pub time: String,
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Audit => "audit",
        Verdict::Alert => "alert",
    }
}

pub fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::FileOpen => "file_open",
        Hook::FileWrite => "file_write",
        Hook::Exec => "exec",
        Hook::Connect => "connect",
    }
}

pub fn backend_name(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Lsm => "lsm",
        BackendKind::Fallback => "fallback",
        BackendKind::Audit => "audit",
        BackendKind::Fanotify => "fanotify",
    }
}

fn function_name(p: &PolicyMatch) -> &'static str {
    match p.op {
        Operation::Hook => {}
        Operation::Unlink => return "security_path_unlink",
        Operation::Rmdir => return "security_path_rmdir",
        Operation::Rename => return "security_path_rename",
        Operation::Link => return "security_path_link",
        Operation::Truncate => return "security_path_truncate",
        Operation::Create => return "security_path_mknod",
        Operation::Mkdir => return "security_path_mkdir",
        Operation::Symlink => return "security_path_symlink",
        Operation::MmapExec => return "security_mmap_file",
        Operation::MprotectExec => return "security_file_mprotect",
        Operation::ScriptOpen => return "security_file_open",
        Operation::Chmod => return "security_path_chmod",
        Operation::Chown => return "security_path_chown",
        Operation::SetXattr => return "security_inode_setxattr",
        Operation::RemoveXattr => return "security_inode_removexattr",
        Operation::SetAcl => return "security_inode_set_acl",
        Operation::RemoveAcl => return "security_inode_remove_acl",
        Operation::SetFlags => return "security_file_ioctl",
        Operation::FileTruncate => return "security_file_truncate",
        Operation::Ptrace => return "security_ptrace_access_check",
        Operation::Signal => return "security_task_kill",
        Operation::CloneIntoCgroup if p.backend == BackendKind::Fallback => {
            return "sched_process_fork"
        }
        Operation::CloneIntoCgroup => return "security_task_alloc",
        Operation::Rlimit => return "security_task_setrlimit",
        Operation::TlsClientHello => return "tls_client_hello",
        Operation::NameConnect => return "dns_name_connect",
        Operation::Send if p.backend == BackendKind::Lsm => return "security_socket_sendmsg",
        Operation::Send => return "cgroup_skb_egress",
        Operation::PacketSend => return "security_socket_sendmsg",
        Operation::PacketSocket => return "sys_socket",
    }
    match (p.backend, p.hook) {
        (BackendKind::Lsm, Hook::FileOpen | Hook::FileWrite) => "security_file_open",
        (BackendKind::Lsm, Hook::Exec) => "security_bprm_check",
        (BackendKind::Lsm, Hook::Connect) => "security_socket_connect",
        (BackendKind::Fanotify, Hook::Exec) => "fanotify_open_exec_perm",
        (BackendKind::Fanotify, _) => "fanotify_open_perm",
        (_, Hook::FileOpen | Hook::FileWrite) => "sys_openat",
        (_, Hook::Exec) => "sched_process_exec",
        (_, Hook::Connect) => "cgroup_sock_addr",
    }
}

fn args(p: &PolicyMatch) -> Vec<Arg> {
    if matches!(p.op, Operation::Signal | Operation::Rlimit)
        || (p.op == Operation::CloneIntoCgroup && p.backend == BackendKind::Fallback)
    {
        // The signal, the resource, or the child's pid.
        return vec![Arg::Int(p.flags as i32)];
    }
    if matches!(p.op, Operation::PacketSend | Operation::PacketSocket) {
        return vec![Arg::Sock {
            family: if p.flags >> 24 == u32::from(vardr_common::AF_XDP) {
                "AF_XDP"
            } else {
                "AF_PACKET"
            },
            protocol: ethertype_name(p.flags & 0xff_ffff),
            daddr: String::new(),
            dport: 0,
        }];
    }
    match (p.hook, &p.path, &p.remote) {
        (Hook::Connect, name, Some((ip, port, proto))) => {
            let mut args = vec![sock_arg(ip, *port, *proto)];
            if let Some(n) = name.as_ref().filter(|_| p.op == Operation::TlsClientHello) {
                args.push(Arg::String(n.clone()));
            }
            args
        }
        (Hook::Exec, Some(path), _) => vec![Arg::LinuxBinprm { path: path.clone() }],
        (_, Some(path), _) => vec![Arg::File {
            path: path.clone(),
            flags: open_flags_name(p.flags),
            open_flags: p.flags,
        }],
        _ => Vec::new(),
    }
}

/// A packet socket's protocol (an ethertype, `ETH_P_*`; empty when the
/// hook could not read it).
fn ethertype_name(t: u32) -> &'static str {
    match t {
        vardr_common::PACKET_PROTO_UNKNOWN => "",
        0 => "ETH_P_NONE",
        0x0003 => "ETH_P_ALL",
        0x0800 => "ETH_P_IP",
        0x0806 => "ETH_P_ARP",
        0x86dd => "ETH_P_IPV6",
        0x8100 => "ETH_P_8021Q",
        _ => "ETH_P_OTHER",
    }
}

fn sock_arg(ip: &std::net::IpAddr, port: u16, proto: u8) -> Arg {
    Arg::Sock {
        family: if ip.is_ipv4() { "AF_INET" } else { "AF_INET6" },
        // Named as Tetragon's `KprobeSock.protocol`.
        protocol: match proto {
            0 => "IPPROTO_IP",
            1 => "IPPROTO_ICMP",
            6 => "IPPROTO_TCP",
            17 => "IPPROTO_UDP",
            58 => "IPPROTO_ICMPV6",
            132 => "IPPROTO_SCTP",
            255 => "IPPROTO_RAW",
            _ => "IPPROTO_UNKNOWN",
        },
        daddr: ip.to_string(),
        dport: port,
    }
}

/// Open flags by name: the access mode, then the flags that change what
/// an open does (`O_RDONLY`, `O_WRONLY|O_CREAT|O_TRUNC`).
pub fn open_flags_name(flags: u32) -> String {
    let mut out = String::from(match flags & libc::O_ACCMODE as u32 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
    ] {
        if flags & bit as u32 != 0 {
            out.push('|');
            out.push_str(name);
        }
    }
    out
}

/// Tetragon's action for a match: a deny fails the operation (OVERRIDE),
/// except the fallback's file and exec tracepoints, which kill.
pub fn action_name(m: &PolicyMatch) -> &'static str {
    match (m.verdict, m.backend, m.hook) {
        (Verdict::Deny, BackendKind::Fallback, Hook::FileOpen | Hook::FileWrite | Hook::Exec) => {
            "KPROBE_ACTION_SIGKILL"
        }
        (Verdict::Deny, BackendKind::Fallback, _) if m.op == Operation::CloneIntoCgroup => {
            "KPROBE_ACTION_SIGKILL"
        }
        (Verdict::Deny, _, _)
            if matches!(m.op, Operation::NameConnect | Operation::PacketSocket) =>
        {
            "KPROBE_ACTION_SIGKILL"
        }
        (Verdict::Deny, _, _) => "KPROBE_ACTION_OVERRIDE",
        _ => "KPROBE_ACTION_POST",
    }
}

/// Signal names for exit events.
pub(super) fn signal_name(sig: u32) -> String {
    nix::sys::signal::Signal::try_from(sig as i32)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

pub(super) fn parent_of(p: &ProcessInfo) -> Option<Process> {
    p.parent.as_deref().map(Process::from_info)
}

impl JsonEvent {
    pub(super) fn new(body: Body, node: &str, time: SystemTime) -> Self {
        Self {
            body,
            node_name: node.to_string(),
            time: rfc3339(time),
        }
    }

    pub fn exec(p: &ProcessInfo, node: &str) -> Self {
        let body = Body::ProcessExec(ProcessExec {
            process: Process::from_info(p),
            parent: parent_of(p),
            ancestors: p
                .ancestors()
                .iter()
                .map(|a| Process::from_info(a))
                .collect(),
            layer2: None,
        });
        Self::new(body, node, p.start_time)
    }

    pub fn exit(p: &ProcessInfo, exit_code: u32, node: &str, time: SystemTime) -> Self {
        let sig = exit_code & 0x7f;
        let body = Body::ProcessExit(ProcessExit {
            process: Process::from_info(p),
            parent: parent_of(p),
            status: (exit_code >> 8) & 0xff,
            signal: (sig != 0).then(|| signal_name(sig)),
        });
        Self::new(body, node, time)
    }

    /// `backend` overrides the kernel's label when the agent runs that hook
    /// in audit-only mode.
    pub fn policy(
        m: &PolicyMatch,
        process: Option<&ProcessInfo>,
        rule: Option<RuleInfo>,
        backend: Option<&'static str>,
        node: &str,
        time: SystemTime,
    ) -> Self {
        let mut proc_json =
            process.map_or_else(|| Process::from_header(&m.header), Process::from_info);
        proc_json.tid = Some(m.header.tid);
        let body = Body::ProcessLsm(Box::new(ProcessLsm {
            process: proc_json,
            parent: process.and_then(parent_of),
            hook: hook_name(m.hook),
            function_name: function_name(m),
            args: args(m),
            rule,
            rule_id: m.rule_id,
            verdict: verdict_name(m.verdict),
            action: action_name(m),
            backend: backend.unwrap_or(backend_name(m.backend)),
            server_name: m.path.clone().filter(|_| m.op == Operation::TlsClientHello),
            dns_names: Vec::new(),
            response: None,
            layer2: None,
        }));
        Self::new(body, node, time)
    }

    pub fn lost(count: u64, total: u64, node: &str) -> Self {
        Self::new(
            Body::EventsLost(EventsLost { count, total }),
            node,
            SystemTime::now(),
        )
    }

    /// `process_exec`, `process_exit`, `process_lsm`, `process_kprobe`,
    /// `process_tracepoint`, `process_uprobe` or `events_lost`.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::ProcessExec(_) => "process_exec",
            Body::ProcessExit(_) => "process_exit",
            Body::ProcessLsm(_) => "process_lsm",
            Body::ProcessKprobe(_) => "process_kprobe",
            Body::ProcessTracepoint(_) => "process_tracepoint",
            Body::ProcessUprobe(_) => "process_uprobe",
            Body::ProcessLsmHook(_) => "process_lsm",
            Body::EventsLost(_) => "events_lost",
        }
    }

    /// The process the event is about, if any.
    pub fn process(&self) -> Option<&Process> {
        match &self.body {
            Body::ProcessExec(e) => Some(&e.process),
            Body::ProcessExit(e) => Some(&e.process),
            Body::ProcessLsm(e) => Some(&e.process),
            Body::ProcessKprobe(e)
            | Body::ProcessTracepoint(e)
            | Body::ProcessUprobe(e)
            | Body::ProcessLsmHook(e) => Some(&e.process),
            Body::EventsLost(_) => None,
        }
    }

    pub fn verdict(&self) -> Option<&'static str> {
        match &self.body {
            Body::ProcessLsm(e) => Some(e.verdict),
            Body::ProcessKprobe(e)
            | Body::ProcessTracepoint(e)
            | Body::ProcessUprobe(e)
            | Body::ProcessLsmHook(e) => Some(e.verdict),
            _ => None,
        }
    }

    pub fn layer2(&self) -> Option<&Layer2> {
        match &self.body {
            Body::ProcessExec(e) => e.layer2.as_ref(),
            Body::ProcessLsm(e) => e.layer2.as_ref(),
            _ => None,
        }
    }

    /// Attaches Layer 2's conclusion (exec and policy events only).
    /// Names DNS gave the destination of a connect or TLS event.
    pub fn set_dns_names(&mut self, names: Vec<String>) {
        if let Body::ProcessLsm(e) = &mut self.body {
            e.dns_names = names;
        }
    }

    /// What the agent did about a denied ClientHello.
    pub fn set_response(&mut self, r: String) {
        if let Body::ProcessLsm(e) = &mut self.body {
            e.response = Some(r);
        }
    }

    pub fn set_layer2(&mut self, l: Layer2) {
        match &mut self.body {
            Body::ProcessExec(e) => e.layer2 = Some(l),
            Body::ProcessLsm(e) => e.layer2 = Some(l),
            _ => {}
        }
    }
}

/// A JSON string (quotes included), escaped as serde_json escapes it.
fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    // Most strings need no escape: one pass the compiler can vectorize
    // (no early exit), then a single copy.
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

fn push_time(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    out.push('"');
    let _ = write!(out, "{}", humantime::format_rfc3339_nanos(t));
    out.push('"');
}

/// [`Process::from_info`] serialized (no `tid`), byte for byte what
/// serde_json writes for it.
/// Returns where the `start_time` text (without quotes) is in `out`.
fn write_process(out: &mut String, p: &ProcessInfo) -> std::ops::Range<usize> {
    out.push_str("{\"exec_id\":");
    push_str(out, &p.exec_id);
    out.push_str(",\"pid\":");
    push_u64(out, p.pid.into());
    out.push_str(",\"uid\":");
    push_u64(out, p.uid.into());
    out.push_str(",\"gid\":");
    push_u64(out, p.gid.into());
    if let Some(a) = p.auid {
        out.push_str(",\"auid\":");
        push_u64(out, a.into());
    }
    out.push_str(",\"cwd\":");
    push_str(out, &p.cwd);
    out.push_str(",\"binary\":");
    push_str(out, &p.binary);
    out.push_str(",\"arguments\":");
    push_str(out, &p.arguments);
    out.push_str(",\"flags\":\"");
    out.push_str(p.origin);
    if p.args_truncated {
        out.push_str(" truncArgs");
    }
    out.push_str("\",\"start_time\":");
    let t0 = out.len() + 1;
    push_time(out, p.start_time);
    let time = t0..out.len() - 1;
    if let Some(parent) = &p.parent {
        out.push_str(",\"parent_exec_id\":");
        push_str(out, &parent.exec_id);
    }
    out.push_str(",\"cgroup_id\":");
    push_u64(out, p.cgroup_id);
    if !p.cgroup.is_empty() {
        out.push_str(",\"cgroup\":");
        push_str(out, &p.cgroup);
    }
    if let Some(c) = &p.container_id {
        out.push_str(",\"container_id\":");
        push_str(out, c);
        out.push_str(",\"docker\":");
        push_str(out, c);
    }
    if let Some(c) = &p.creds {
        for (i, (k, v)) in [
            ("uid", c.uid),
            ("gid", c.gid),
            ("euid", c.euid),
            ("egid", c.egid),
            ("suid", c.suid),
            ("sgid", c.sgid),
            ("fsuid", c.fsuid),
            ("fsgid", c.fsgid),
        ]
        .into_iter()
        .enumerate()
        {
            out.push_str(if i == 0 {
                ",\"process_credentials\":{\""
            } else {
                ",\""
            });
            out.push_str(k);
            out.push_str("\":");
            push_u64(out, v.into());
        }
        out.push('}');
    }
    out.push('}');
    time
}

impl ProcessInfo {
    /// The process as events show it (without `tid`), serialized once.
    pub fn process_json(&self) -> &str {
        &self.process_json_and_time().0
    }

    fn process_json_and_time(&self) -> &(String, std::ops::Range<usize>) {
        self.json.process.get_or_init(|| {
            let mut s = String::with_capacity(384);
            let time = write_process(&mut s, self);
            (s, time)
        })
    }

    /// This process and its ancestors, nearest first, up to
    /// [`crate::process::MAX_ANCESTORS`], comma-separated: the
    /// `ancestors` array of its grandchildren, serialized once.
    pub fn lineage_json(&self) -> &str {
        self.json.lineage.get_or_init(|| {
            let mut s = String::from(self.process_json());
            let mut cur = self.parent.as_deref();
            let mut n = 1;
            while let Some(p) = cur {
                if n == crate::process::MAX_ANCESTORS {
                    break;
                }
                s.push(',');
                s.push_str(p.process_json());
                cur = p.parent.as_deref();
                n += 1;
            }
            s
        })
    }
}

/// The `process_exec` line of a process (no Layer 2 verdict): byte for
/// byte `serde_json::to_string(&JsonEvent::exec(p, node))`, built from
/// the serialized forms the process and its ancestors keep.
pub fn exec_line(p: &ProcessInfo, node: &str) -> String {
    let (own, time) = p.process_json_and_time();
    let parent = p.parent.as_deref();
    let lineage = parent
        .and_then(|q| q.parent.as_deref())
        .map(ProcessInfo::lineage_json);
    let mut out = String::with_capacity(
        own.len()
            + parent.map_or(0, |q| q.process_json().len())
            + lineage.map_or(0, str::len)
            + node.len()
            + 128,
    );
    out.push_str("{\"process_exec\":{\"process\":");
    out.push_str(own);
    if let Some(q) = parent {
        out.push_str(",\"parent\":");
        out.push_str(q.process_json());
    }
    if let Some(l) = lineage {
        out.push_str(",\"ancestors\":[");
        out.push_str(l);
        out.push(']');
    }
    out.push_str("},\"node_name\":");
    push_str(&mut out, node);
    // An exec's time is its start: the text the process object has.
    out.push_str(",\"time\":\"");
    out.push_str(own.get(time.clone()).unwrap_or_default());
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(backend: BackendKind, hook: Hook, flags: u32) -> PolicyMatch {
        PolicyMatch {
            header: EventHeader {
                kind: 0,
                _pad: 0,
                boot_ns: 1,
                tid: 7,
                pid: 7,
                uid: 0,
                gid: 0,
                cgroup_id: 1,
                comm: [0; vardr_common::COMM_LEN],
            },
            hook,
            backend,
            verdict: Verdict::Deny,
            rule_id: 1,
            flags,
            op: Operation::Hook,
            path: Some("/etc/shadow".into()),
            remote: None,
        }
    }

    /// The `process_lsm` object a match is written as (no process known).
    fn lsm_json(m: &PolicyMatch) -> serde_json::Value {
        let j = serde_json::to_value(JsonEvent::policy(
            m,
            None,
            None,
            None,
            "n",
            SystemTime::UNIX_EPOCH,
        ))
        .unwrap();
        j["process_lsm"].clone()
    }

    /// Tetragon's schema has `file_arg.flags` as a string and an `action`
    /// enum: a number there fails a protobuf JSON decode.
    #[test]
    fn lsm_deny_decodes_as_tetragon_shapes_it() {
        let m = deny(
            BackendKind::Lsm,
            Hook::FileWrite,
            libc::O_WRONLY as u32 | libc::O_TRUNC as u32,
        );
        let e = &lsm_json(&m);
        assert_eq!(e["args"][0]["file_arg"]["flags"], "O_WRONLY|O_TRUNC", "{e}");
        assert_eq!(e["args"][0]["file_arg"]["open_flags"], 0o1001, "{e}");
        assert_eq!(e["action"], "KPROBE_ACTION_OVERRIDE", "{e}");
    }

    /// A refused packet socket: no address, the ethertype named; the
    /// fallback's refusal is a kill.
    #[test]
    fn packet_frames_name_their_socket_and_what_was_done() {
        for (backend, op, function, action) in [
            (
                BackendKind::Lsm,
                Operation::PacketSend,
                "security_socket_sendmsg",
                "KPROBE_ACTION_OVERRIDE",
            ),
            (
                BackendKind::Fallback,
                Operation::PacketSocket,
                "sys_socket",
                "KPROBE_ACTION_SIGKILL",
            ),
        ] {
            let known = backend == BackendKind::Fallback;
            let proto = if known {
                0x0800
            } else {
                vardr_common::PACKET_PROTO_UNKNOWN
            };
            let family = u32::from(vardr_common::AF_PACKET) << 24;
            let mut m = deny(backend, Hook::Connect, proto | family);
            m.op = op;
            m.path = None;
            let e = &lsm_json(&m);
            assert_eq!(e["function_name"], function, "{e}");
            assert_eq!(e["action"], action, "{e}");
            assert_eq!(e["args"][0]["sock_arg"]["family"], "AF_PACKET", "{e}");
            let name = if known { "ETH_P_IP" } else { "" };
            assert_eq!(e["args"][0]["sock_arg"]["protocol"], name, "{e}");
        }
    }

    /// The fallback's report of a child started outside the rules: the
    /// fork, the child's pid, and a kill.
    #[test]
    fn escaped_child_on_the_fallback_is_a_kill_at_fork() {
        let mut m = deny(BackendKind::Fallback, Hook::FileWrite, 4242);
        m.op = Operation::CloneIntoCgroup;
        m.path = Some(String::new());
        let e = &lsm_json(&m);
        assert_eq!(e["function_name"], "sched_process_fork", "{e}");
        assert_eq!(e["action"], "KPROBE_ACTION_SIGKILL", "{e}");
        assert_eq!(e["args"][0]["int_arg"], 4242, "{e}");
        m.backend = BackendKind::Lsm;
        assert_eq!(function_name(&m), "security_task_alloc");
        assert_eq!(action_name(&m), "KPROBE_ACTION_OVERRIDE");
    }

    #[test]
    fn exec_line_is_what_serde_writes() {
        use crate::process::sample;
        use std::sync::Arc;
        let mut parent = sample(1, "/sbin/init", "/", None);
        // Deeper than MAX_ANCESTORS, with strings that need escaping.
        for i in 0..20u32 {
            let mut p = (*sample(
                100 + i,
                &format!("/usr/bin/sh\"{i}\\\n\u{1}\u{7f}é/"),
                "/user.slice/a b",
                Some(parent.clone()),
            ))
            .clone();
            p.auid = (i % 2 == 0).then_some(1000 + i);
            p.args_truncated = i % 3 == 0;
            p.origin = if i % 2 == 0 { "execve" } else { "clone" };
            p.start_time =
                SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + i as u64);
            p.container_id = (i % 4 == 0).then(|| "c".repeat(64));
            p.cgroup = if i % 5 == 0 { String::new() } else { p.cgroup };
            p.cwd = "/tmp/\u{8}\u{c}\t\r".into();
            p.creds = (i % 2 == 1).then_some(crate::events::Creds {
                uid: 1,
                gid: 2,
                euid: 0,
                egid: 4,
                suid: 5,
                sgid: 6,
                fsuid: 7,
                fsgid: u32::MAX,
            });
            parent = Arc::new(p);
            for node in ["node-a", "n\"x"] {
                let want = serde_json::to_string(&JsonEvent::exec(&parent, node)).unwrap();
                assert_eq!(exec_line(&parent, node), want);
            }
        }
        // No parent: neither parent nor ancestors.
        let lone = sample(5, "/x", "", None);
        let want = serde_json::to_string(&JsonEvent::exec(&lone, "n")).unwrap();
        assert_eq!(exec_line(&lone, "n"), want);
    }

    #[test]
    fn actions_name_what_the_kernel_did() {
        let kill = deny(BackendKind::Fallback, Hook::FileOpen, 0);
        assert_eq!(action_name(&kill), "KPROBE_ACTION_SIGKILL");
        let refused = deny(BackendKind::Fallback, Hook::Connect, 0);
        assert_eq!(action_name(&refused), "KPROBE_ACTION_OVERRIDE");
        let fan = deny(BackendKind::Fanotify, Hook::Exec, 0);
        assert_eq!(action_name(&fan), "KPROBE_ACTION_OVERRIDE");
        let mut alert = deny(BackendKind::Lsm, Hook::FileOpen, 0);
        alert.verdict = Verdict::Alert;
        assert_eq!(action_name(&alert), "KPROBE_ACTION_POST");
        assert_eq!(open_flags_name(0), "O_RDONLY");
        assert_eq!(
            open_flags_name((libc::O_RDWR | libc::O_CREAT | libc::O_APPEND) as u32),
            "O_RDWR|O_CREAT|O_APPEND"
        );
    }
}
