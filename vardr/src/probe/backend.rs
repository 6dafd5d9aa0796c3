//! Which enforcement backend each hook gets, from the probe's findings.
use serde::Serialize;

use super::Report;

/// The governed operations.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    File,
    Exec,
    Network,
}

impl HookKind {
    pub const ALL: [HookKind; 3] = [HookKind::File, HookKind::Exec, HookKind::Network];
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            HookKind::File => "file",
            HookKind::Exec => "exec",
            HookKind::Network => "network",
        })
    }
}

/// How a hook is enforced, strongest first.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// BPF LSM hook: the operation fails before it happens.
    Lsm,
    /// Tracepoint + SIGKILL, or cgroup socket hooks.
    Fallback,
    /// Events only; nothing can be blocked.
    Audit,
    /// Not even events.
    None,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Backend::Lsm => "lsm",
            Backend::Fallback => "fallback",
            Backend::Audit => "audit",
            Backend::None => "none",
        })
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HookBackend {
    pub hook: HookKind,
    pub backend: Backend,
    /// What the backend does, and why a stronger one is not used.
    pub reason: String,
}

/// Why BPF LSM cannot be used here, or `None` when it can.
fn lsm_unusable(r: &Report) -> Option<String> {
    if !r.btf.ok {
        return Some(format!("no BTF: {}", r.btf.detail));
    }
    if !r.bpf_lsm_enabled.ok {
        return Some(r.bpf_lsm_enabled.detail.clone());
    }
    match r.program("lsm") {
        Some(c) if c.ok => None,
        Some(c) if c.detail.contains("EPERM") => Some(
            "lsm program load fails with EPERM: this kernel refuses trampoline programs".into(),
        ),
        Some(c) => Some(format!("lsm program: {}", c.detail)),
        None => Some("lsm not probed".into()),
    }
}

fn loads(r: &Report, t: &str) -> bool {
    r.program(t).is_some_and(|c| c.ok)
}

/// Picks the strongest backend the probe found usable for `hook`.
pub fn choose(r: &Report, hook: HookKind) -> HookBackend {
    let pick = |backend, reason: String| HookBackend {
        hook,
        backend,
        reason,
    };
    let no_lsm = match lsm_unusable(r) {
        None => {
            let what = match hook {
                HookKind::File => "lsm/file_open returns EPERM",
                HookKind::Exec => "lsm/bprm_check_security returns EACCES",
                HookKind::Network => "lsm/socket_connect returns ECONNREFUSED; lsm/socket_sendmsg EPERM for raw, ICMP and SCTP sends, and for AF_PACKET frames while connect rules deny",
            };
            return pick(Backend::Lsm, what.into());
        }
        Some(why) => why,
    };
    if !r.ring_buffer.ok {
        return pick(
            Backend::None,
            format!("{no_lsm}; no ring buffer: {}", r.ring_buffer.detail),
        );
    }
    let signal = r.bpf_send_signal.ok;
    let (fallback, what, observe) = match hook {
        HookKind::File => (
            signal && loads(r, "raw_tracepoint"),
            "SIGKILL at openat/openat2/open entry (the open itself is not prevented)",
            loads(r, "raw_tracepoint"),
        ),
        HookKind::Exec => (
            signal && (loads(r, "tp_btf") || loads(r, "raw_tracepoint")),
            "SIGKILL at sched_process_exec, before the first instruction",
            loads(r, "tp_btf") || loads(r, "raw_tracepoint"),
        ),
        HookKind::Network => (
            loads(r, "cgroup_sock_addr") && r.cgroup2.ok,
            "cgroup connect4/6 and sendmsg4/6 return EPERM; raw, ICMP and SCTP sends dropped at cgroup egress; AF_PACKET sockets of governed processes killed at socket() while connect rules deny",
            loads(r, "raw_tracepoint"),
        ),
    };
    if fallback {
        let what = match hook {
            HookKind::File if r.fanotify.ok => "fanotify FAN_OPEN_PERM: the agent decides on the opened object and a denied open fails with EPERM (the SIGKILL tracepoints serve only if fanotify fails)".to_string(),
            HookKind::Exec if r.fanotify.ok => "fanotify FAN_OPEN_EXEC_PERM: a denied exec fails with EPERM (with --enforce); SIGKILL at sched_process_exec as second line".to_string(),
            HookKind::File | HookKind::Exec => format!("{what}; no fanotify: {}", r.fanotify.detail),
            HookKind::Network => what.to_string(),
        };
        return pick(Backend::Fallback, format!("{what}; no LSM: {no_lsm}"));
    }
    if observe {
        return pick(
            Backend::Audit,
            format!("events only, nothing blocked; no LSM: {no_lsm}; fallback unusable"),
        );
    }
    pick(
        Backend::None,
        format!("no usable program type; no LSM: {no_lsm}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Check, ProgramCheck};

    fn report(lsm: Check, bpf_lsm: bool, others_ok: bool) -> Report {
        let prog = |t: &str, c: Check| ProgramCheck {
            program_type: t.into(),
            check: c,
        };
        let other = || {
            if others_ok {
                Check::ok("loads")
            } else {
                Check::fail("load failed: EINVAL")
            }
        };
        Report {
            kernel_release: "test".into(),
            root: true,
            btf: Check::ok("btf"),
            lsm_list: Some(vec!["capability".into()]),
            bpf_lsm_enabled: if bpf_lsm {
                Check::ok("bpf in LSM list")
            } else {
                Check::fail("bpf not in LSM list (capability)")
            },
            programs: vec![
                prog("lsm", lsm),
                prog("tp_btf", other()),
                prog("raw_tracepoint", other()),
                prog("cgroup_sock_addr", other()),
            ],
            bpf_send_signal: Check::ok("yes"),
            ring_buffer: Check::ok("yes"),
            bpffs: Check::ok("yes"),
            cgroup2: Check::ok("yes"),
            fanotify: Check::ok("yes"),
            backends: vec![],
        }
    }

    #[test]
    fn lsm_when_it_loads() {
        let r = report(Check::ok("loads"), true, true);
        for h in HookKind::ALL {
            assert_eq!(choose(&r, h).backend, Backend::Lsm);
        }
    }

    #[test]
    fn trampoline_eperm_falls_back_and_says_why() {
        let r = report(
            Check::fail("load failed: EPERM (Operation not permitted)"),
            true,
            true,
        );
        for h in HookKind::ALL {
            let b = choose(&r, h);
            assert_eq!(b.backend, Backend::Fallback, "{h}");
            assert!(b.reason.contains("trampoline"), "{}", b.reason);
        }
    }

    #[test]
    fn bpf_not_in_lsm_list_is_the_reason() {
        let r = report(Check::ok("loads"), false, true);
        let b = choose(&r, HookKind::File);
        assert_eq!(b.backend, Backend::Fallback);
        assert!(b.reason.contains("bpf not in LSM list"), "{}", b.reason);
    }

    #[test]
    fn nothing_loads_means_none() {
        let r = report(Check::fail("load failed: EINVAL"), true, false);
        assert_eq!(choose(&r, HookKind::Exec).backend, Backend::None);
    }

    #[test]
    fn no_signal_helper_means_audit_for_exec() {
        let mut r = report(Check::fail("load failed: EPERM"), true, true);
        r.bpf_send_signal = Check::fail("no");
        assert_eq!(choose(&r, HookKind::Exec).backend, Backend::Audit);
        // Network fallback does not need signals.
        assert_eq!(choose(&r, HookKind::Network).backend, Backend::Fallback);
    }
}
