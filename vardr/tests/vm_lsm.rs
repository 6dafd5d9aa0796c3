//! VM tier: the LSM backend end to end. The development kernel refuses
//! trampoline programs, so these run inside QEMU (`cargo xtask vm-test`).
//! `VARDR_EXPECT_BACKEND` (set by the VM runner) states what the probe must
//! find on the booted kernel, so a missing LSM fails instead of skipping.
mod common;

use common::{require_backend, require_root, scenarios};
use vardr::probe::{self, Backend, Backend::Lsm, HookKind};

fn expected_backend() -> Option<Backend> {
    match std::env::var("VARDR_EXPECT_BACKEND").ok()?.as_str() {
        "lsm" => Some(Backend::Lsm),
        "fallback" => Some(Backend::Fallback),
        "audit" => Some(Backend::Audit),
        other => panic!("bad VARDR_EXPECT_BACKEND {other}"),
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn probe_reports_expected_backends() {
    if !require_root("probe_reports_expected_backends") {
        return;
    }
    let report = probe::run();
    eprintln!("{}", probe::table(&report));
    let Some(want) = expected_backend() else {
        eprintln!("SKIPPED probe_reports_expected_backends: VARDR_EXPECT_BACKEND not set");
        return;
    };
    for hook in HookKind::ALL {
        let got = report.backend(hook).expect("backend listed");
        assert_eq!(got.backend, want, "{hook}: {}", got.reason);
    }
    // The claim must match what actually loads.
    assert_eq!(
        want == Backend::Lsm,
        report.program("lsm").is_some_and(|c| c.ok) && report.bpf_lsm_enabled.ok
    );
}

macro_rules! lsm_test {
    ($name:ident, $scenario:ident) => {
        #[test]
        #[ignore = "VM tier: run by `cargo xtask vm-test`"]
        fn $name() {
            if require_backend(stringify!($name), Lsm) {
                scenarios::$scenario(Lsm);
            }
        }
    };
}

lsm_test!(lsm_file_rules, file_rules);
lsm_test!(lsm_exec_rules, exec_rules);
lsm_test!(lsm_audit_mode, audit_mode);
lsm_test!(lsm_exemptions, exemptions);
lsm_test!(lsm_reload, reload);
lsm_test!(lsm_reload_under_load, reload_under_load);
lsm_test!(lsm_bypass_attempts, bypass_attempts);
lsm_test!(lsm_installed_after_start, installed_after_start);
lsm_test!(lsm_scope_escape, scope_escape);
lsm_test!(lsm_exempt_pid_reuse, exempt_pid_reuse);

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_tracing_policies() {
    if require_backend("lsm_tracing_policies", Lsm) {
        common::tetragon::tracing_policies(Lsm);
    }
}

/// TracingPolicy kprobes (the seeds' do_mkdirat, fd_install,
/// __sys_setresuid and security_bprm_check, a syscall's own arguments):
/// kprobes exist on the VM kernels, not on the development host. They do
/// not need the LSM: this runs on 6.1 and in the fallback boot.
#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn vm_kprobe_hooks() {
    if !require_root("vm_kprobe_hooks") {
        return;
    }
    if !vardr::backend::perf_attach::kprobes_available() {
        eprintln!("SKIPPED vm_kprobe_hooks: this kernel has no kprobe PMU");
        return;
    }
    let b = expected_backend().unwrap_or(Backend::Fallback);
    common::hooks::kprobe_hooks(b);
}

/// A TracingPolicy `skb` argument from a kprobe (`ip_output`): the
/// packet's headers read and matched in the kernel. Where vm_kprobe_hooks
/// runs.
#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn vm_skb_kprobe() {
    if !require_root("vm_skb_kprobe") {
        return;
    }
    if !vardr::backend::perf_attach::kprobes_available() {
        eprintln!("SKIPPED vm_skb_kprobe: this kernel has no kprobe PMU");
        return;
    }
    let b = expected_backend().unwrap_or(Backend::Fallback);
    common::hooks_skb::skb_hooks(b, common::hooks_skb::SkbHook::Kprobe);
}

/// `lsmhooks` as BPF LSM hooks of their own (any hook, selectors in the
/// kernel), on both LSM kernels: the verifiers differ. (The fallback
/// boot's refusal of them is `enforce_fallback`'s.)
#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn vm_lsm_generic_hooks() {
    if require_backend("vm_lsm_generic_hooks", Lsm) {
        common::hooks_lsm::lsm_hooks();
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_server_names() {
    if require_backend("lsm_server_names", Lsm)
        && common::names::tools_available("lsm_server_names")
    {
        common::names::server_names(Lsm);
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_network_rules() {
    if require_backend("lsm_network_rules", Lsm) && scenarios::python_available("lsm_network_rules")
    {
        scenarios::network_rules(Lsm);
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_shipped_policies() {
    if require_backend("lsm_shipped_policies", Lsm)
        && scenarios::python_available("lsm_shipped_policies")
    {
        scenarios::shipped_policies(Lsm);
    }
}
