//! JSON shaped like Tetragon's export: one object per line, keyed by the
//! event type (`process_exec`, `process_lsm`), with `node_name` and `time`.
use std::time::{Duration, SystemTime};

use serde::Serialize;
use vardr_common::{EventHeader, Verdict};

use super::{c_str, Event};

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

#[derive(Serialize, Debug)]
pub struct FileArg {
    pub path: String,
}

#[derive(Serialize, Debug)]
pub struct Arg {
    pub file_arg: FileArg,
}

#[derive(Serialize, Debug)]
pub struct ProcessLsm {
    pub process: Process,
    pub function_name: &'static str,
    pub args: Vec<Arg>,
    pub rule_id: u32,
    /// deny (blocked in the kernel) or audit (would deny; enforcement off).
    pub verdict: &'static str,
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

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Audit => "audit",
    }
}

impl JsonEvent {
    pub fn new(ev: &Event, clock: &Clock, node_name: &str) -> Self {
        let (boot_ns, body) = match ev {
            Event::Exec { header, filename } => (
                header.boot_ns,
                Body::ProcessExec(ProcessExec {
                    process: Process::from_header(header, Some(filename.clone())),
                }),
            ),
            Event::FileOpen {
                header,
                rule_id,
                verdict,
                path,
            } => (
                header.boot_ns,
                Body::ProcessLsm(ProcessLsm {
                    process: Process::from_header(header, None),
                    function_name: "security_file_open",
                    args: vec![Arg {
                        file_arg: FileArg { path: path.clone() },
                    }],
                    rule_id: *rule_id,
                    verdict: verdict_name(*verdict),
                }),
            ),
        };
        Self {
            body,
            node_name: node_name.to_string(),
            time: humantime::format_rfc3339_nanos(clock.wall(boot_ns)).to_string(),
        }
    }
}
