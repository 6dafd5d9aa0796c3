//! Which backend each hook gets: the probe's choice, or a forced one.
use serde::Serialize;

use crate::probe::{Backend, HookBackend, HookKind, Report};

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum BackendChoice {
    /// The strongest backend the probe finds usable for each hook.
    #[default]
    Auto,
    Lsm,
    Fallback,
    Audit,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Plan {
    pub file: HookBackend,
    pub exec: HookBackend,
    pub network: HookBackend,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--backend {wanted} cannot serve the {hook} hook on this kernel: {reason}")]
    Unusable {
        wanted: &'static str,
        hook: HookKind,
        reason: String,
    },
}

impl Plan {
    pub fn hooks(&self) -> [&HookBackend; 3] {
        [&self.file, &self.exec, &self.network]
    }

    pub fn from_probe(report: &Report, choice: BackendChoice) -> Result<Self, PlanError> {
        let pick = |hook: HookKind| -> Result<HookBackend, PlanError> {
            let auto = report
                .backend(hook)
                .cloned()
                .unwrap_or_else(|| crate::probe::choose(report, hook));
            let (wanted, name) = match choice {
                BackendChoice::Auto => return Ok(auto),
                BackendChoice::Lsm => (Backend::Lsm, "lsm"),
                BackendChoice::Fallback => (Backend::Fallback, "fallback"),
                BackendChoice::Audit => (Backend::Audit, "audit"),
            };
            // A stronger backend can always run a weaker one's programs
            // (audit uses the fallback programs with enforcement off).
            let usable = match wanted {
                Backend::Lsm => auto.backend == Backend::Lsm,
                Backend::Fallback => fallback_usable(report, hook),
                _ => auto.backend != Backend::None,
            };
            if !usable {
                return Err(PlanError::Unusable {
                    wanted: name,
                    hook,
                    reason: auto.reason,
                });
            }
            Ok(HookBackend {
                hook,
                backend: wanted,
                reason: format!("forced with --backend {name}"),
            })
        };
        Ok(Self {
            file: pick(HookKind::File)?,
            exec: pick(HookKind::Exec)?,
            network: pick(HookKind::Network)?,
        })
    }
}

fn fallback_usable(r: &Report, hook: HookKind) -> bool {
    let loads = |t: &str| r.program(t).is_some_and(|c| c.ok);
    match hook {
        HookKind::File => loads("tracepoint") && r.bpf_send_signal.ok,
        HookKind::Exec => loads("tp_btf") && r.bpf_send_signal.ok,
        HookKind::Network => loads("cgroup_sock_addr") && r.cgroup2.ok,
    }
}
