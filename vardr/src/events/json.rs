//! JSON shaped like Tetragon's export: one object per line, keyed by the
//! event type (`process_exec`, `process_lsm`), with `node_name` and `time`.
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vardr_common::{BackendKind, EventHeader, Hook, Verdict};

use super::{c_str, Event, PolicyMatch};

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

/// What the agent knows about a rule id.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleInfo {
    pub policy_name: String,
    pub rule: String,
    pub severity: String,
}

#[derive(Serialize, Debug)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    pub comm: String,
    pub cgroup_id: u64,
}

impl Process {
    fn from_header(h: &EventHeader, binary: Option<String>) -> Self {
        Self {
            pid: h.pid,
            tid: h.tid,
            uid: h.uid,
            gid: h.gid,
            binary,
            comm: c_str(&h.comm),
            cgroup_id: h.cgroup_id,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct ProcessExec {
    pub process: Process,
}

/// One hook argument, named as Tetragon names them.
#[derive(Serialize, Debug)]
pub enum Arg {
    #[serde(rename = "file_arg")]
    File { path: String, flags: u32 },
    #[serde(rename = "linux_binprm_arg")]
    LinuxBinprm { path: String },
    #[serde(rename = "sock_arg")]
    Sock {
        family: &'static str,
        protocol: &'static str,
        daddr: String,
        dport: u16,
    },
}

#[derive(Serialize, Debug)]
pub struct ProcessLsm {
    pub process: Process,
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
    /// lsm, fallback or audit.
    pub backend: &'static str,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    ProcessExec(ProcessExec),
    ProcessLsm(ProcessLsm),
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
    }
}

fn function_name(p: &PolicyMatch) -> &'static str {
    match (p.backend, p.hook) {
        (BackendKind::Lsm, Hook::FileOpen | Hook::FileWrite) => "security_file_open",
        (BackendKind::Lsm, Hook::Exec) => "security_bprm_check",
        (BackendKind::Lsm, Hook::Connect) => "security_socket_connect",
        (_, Hook::FileOpen | Hook::FileWrite) => "sys_openat",
        (_, Hook::Exec) => "sched_process_exec",
        (_, Hook::Connect) => "cgroup_sock_addr",
    }
}

fn args(p: &PolicyMatch) -> Vec<Arg> {
    match (p.hook, &p.path, &p.remote) {
        (Hook::Connect, _, Some((ip, port, proto))) => vec![Arg::Sock {
            family: if ip.is_ipv4() { "AF_INET" } else { "AF_INET6" },
            protocol: match proto {
                6 => "tcp",
                17 => "udp",
                _ => "any",
            },
            daddr: ip.to_string(),
            dport: *port,
        }],
        (Hook::Exec, Some(path), _) => vec![Arg::LinuxBinprm { path: path.clone() }],
        (_, Some(path), _) => vec![Arg::File {
            path: path.clone(),
            flags: p.flags,
        }],
        _ => Vec::new(),
    }
}

impl JsonEvent {
    /// `binary` is the process's executable when known; `rule` what the
    /// agent knows of the matched rule; `backend` overrides the kernel's
    /// label when the agent runs that hook in audit-only mode.
    pub fn new(
        ev: &Event,
        clock: &Clock,
        node_name: &str,
        binary: Option<String>,
        rule: Option<RuleInfo>,
        backend: Option<&'static str>,
    ) -> Self {
        let body = match ev {
            Event::Exec { header, filename } => Body::ProcessExec(ProcessExec {
                process: Process::from_header(header, Some(filename.clone())),
            }),
            Event::Policy(p) => Body::ProcessLsm(ProcessLsm {
                process: Process::from_header(&p.header, binary),
                hook: hook_name(p.hook),
                function_name: function_name(p),
                args: args(p),
                rule,
                rule_id: p.rule_id,
                verdict: verdict_name(p.verdict),
                backend: backend.unwrap_or(backend_name(p.backend)),
            }),
        };
        Self {
            body,
            node_name: node_name.to_string(),
            time: humantime::format_rfc3339_nanos(clock.wall(ev.header().boot_ns)).to_string(),
        }
    }
}
