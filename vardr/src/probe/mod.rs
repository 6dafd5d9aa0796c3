//! `vardr probe`: what this kernel can do, checked by trying, not by reading
//! config flags, and which enforcement backend each hook gets.
mod backend;
mod loads;
mod render;

use serde::Serialize;

pub use backend::{choose, Backend, HookBackend, HookKind};
pub use render::table;

use crate::kernel::{self, mounts};

/// Outcome of one check, with the reason in words.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Whether a program type loads here (and, for probes, can be attached).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProgramCheck {
    /// lsm, tp_btf, tracepoint, raw_tracepoint, cgroup_sock_addr, cgroup_skb
    /// (TLS server names, DNS), iter (identities of overlay files), uprobe, kprobe.
    pub program_type: String,
    #[serde(flatten)]
    pub check: Check,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub kernel_release: String,
    pub root: bool,
    pub btf: Check,
    /// Active LSMs, from /sys/kernel/security/lsm.
    pub lsm_list: Option<Vec<String>>,
    pub bpf_lsm_enabled: Check,
    pub programs: Vec<ProgramCheck>,
    pub bpf_send_signal: Check,
    pub ring_buffer: Check,
    pub bpffs: Check,
    pub cgroup2: Check,
    /// fanotify permission events (the fallback's deny path for files and exec).
    pub fanotify: Check,
    pub backends: Vec<HookBackend>,
}

impl Report {
    pub fn program(&self, program_type: &str) -> Option<&Check> {
        self.programs
            .iter()
            .find(|p| p.program_type == program_type)
            .map(|p| &p.check)
    }

    pub fn backend(&self, hook: HookKind) -> Option<&HookBackend> {
        self.backends.iter().find(|b| b.hook == hook)
    }
}

/// Runs every check. Needs root for the load checks; without it they fail
/// with a reason that says so.
pub fn run() -> Report {
    let root = kernel::is_root();
    let btf = if kernel::btf::available() {
        Check::ok(kernel::btf::VMLINUX_BTF)
    } else {
        Check::fail(format!("{} missing", kernel::btf::VMLINUX_BTF))
    };
    let lsm_list = read_lsm_list();
    let bpf_lsm_enabled = match &lsm_list {
        Ok(list) if list.iter().any(|l| l == "bpf") => Check::ok("bpf in LSM list"),
        Ok(list) => Check::fail(format!("bpf not in LSM list ({})", list.join(","))),
        Err(e) => Check::fail(e.clone()),
    };
    let programs = if root {
        loads::programs()
    } else {
        loads::not_root()
    };
    let bpf_send_signal = loads::send_signal(root);
    let ring_buffer = loads::ring_buffer(root);
    let bpffs = mount_check("bpf");
    let cgroup2 = mount_check("cgroup2");
    let fanotify = match crate::fanotify::probe() {
        Ok(()) => Check::ok("FAN_CLASS_CONTENT group: FAN_OPEN_PERM, FAN_OPEN_EXEC_PERM"),
        Err(e) => Check::fail(format!("fanotify_init(FAN_CLASS_CONTENT): {e}")),
    };
    let mut report = Report {
        kernel_release: kernel::release(),
        root,
        btf,
        lsm_list: lsm_list.ok(),
        bpf_lsm_enabled,
        programs,
        bpf_send_signal,
        ring_buffer,
        bpffs,
        cgroup2,
        fanotify,
        backends: Vec::new(),
    };
    report.backends = HookKind::ALL.iter().map(|&h| choose(&report, h)).collect();
    report
}

fn mount_check(fstype: &str) -> Check {
    match mounts::find(fstype) {
        Ok(Some(p)) => Check::ok(format!("mounted at {}", p.display())),
        Ok(None) => Check::fail("not mounted (the agent mounts it when needed)"),
        Err(e) => Check::fail(e.to_string()),
    }
}

/// Reads the active LSM list, mounting securityfs for the read if needed.
/// Whether the kernel runs the BPF LSM (`bpf` among the active LSMs).
pub fn bpf_lsm_active() -> bool {
    read_lsm_list().is_ok_and(|l| l.iter().any(|m| m == "bpf"))
}

fn read_lsm_list() -> Result<Vec<String>, String> {
    const SECURITYFS: &str = "/sys/kernel/security";
    let (dir, _guard) = mounts::ensure("securityfs", std::path::Path::new(SECURITYFS))
        .map_err(|e| format!("securityfs unavailable: {e}"))?;
    let text = std::fs::read_to_string(dir.join("lsm"))
        .map_err(|e| format!("cannot read {}/lsm: {e}", dir.display()))?;
    Ok(text
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}
