//! Host tier: Layer 1 with the fallback backend (tracepoints + SIGKILL,
//! cgroup socket hooks), every rule scoped to a test cgroup, so nothing
//! outside it can be denied or killed.
mod common;

use common::{require_backend, scenarios};
use vardr::probe::Backend::Fallback;

#[test]
fn fallback_file_rules() {
    if require_backend("fallback_file_rules", Fallback) {
        scenarios::file_rules(Fallback);
    }
}

#[test]
fn fallback_exec_rules() {
    if require_backend("fallback_exec_rules", Fallback) {
        scenarios::exec_rules(Fallback);
    }
}

#[test]
fn fallback_network_rules() {
    if require_backend("fallback_network_rules", Fallback)
        && scenarios::python_available("fallback_network_rules")
    {
        scenarios::network_rules(Fallback);
    }
}

#[test]
fn fallback_server_names() {
    if require_backend("fallback_server_names", Fallback)
        && common::names::tools_available("fallback_server_names")
    {
        common::names::server_names(Fallback);
    }
}

#[test]
fn fallback_tracepoint_hooks() {
    if require_backend("fallback_tracepoint_hooks", Fallback) {
        common::hooks::tracepoint_hooks(Fallback);
    }
}

/// A `TracingPolicyNamespaced`: the pods of its namespace only.
#[test]
fn fallback_namespaced_policies() {
    if require_backend("fallback_namespaced_policies", Fallback) {
        common::hooks_namespaced::namespaced_policies(Fallback);
    }
}

/// `skb` arguments from the `net:net_dev_queue` tracepoint.
#[test]
fn fallback_skb_hooks() {
    if require_backend("fallback_skb_hooks", Fallback) {
        common::hooks_skb::skb_hooks(Fallback, common::hooks_skb::SkbHook::Tracepoint);
    }
}

#[test]
fn fallback_process_filter_hooks() {
    if require_backend("fallback_process_filter_hooks", Fallback) {
        common::hooks_process::process_filter_hooks(Fallback);
    }
}

#[test]
fn fallback_uprobe_hooks() {
    if require_backend("fallback_uprobe_hooks", Fallback) {
        common::hooks::uprobe_hooks(Fallback);
    }
}

#[test]
fn fallback_audit_mode() {
    if require_backend("fallback_audit_mode", Fallback) {
        scenarios::audit_mode(Fallback);
    }
}

#[test]
fn fallback_exemptions() {
    if require_backend("fallback_exemptions", Fallback) {
        scenarios::exemptions(Fallback);
    }
}

#[test]
fn fallback_reload() {
    if require_backend("fallback_reload", Fallback) {
        scenarios::reload(Fallback);
    }
}

#[test]
fn fallback_reload_under_load() {
    if require_backend("fallback_reload_under_load", Fallback) {
        scenarios::reload_under_load(Fallback);
    }
}

#[test]
fn audit_backend_never_blocks() {
    if require_backend("audit_backend_never_blocks", Fallback) {
        scenarios::audit_backend();
    }
}

#[test]
fn fallback_shipped_policies() {
    if require_backend("fallback_shipped_policies", Fallback)
        && scenarios::python_available("fallback_shipped_policies")
    {
        scenarios::shipped_policies(Fallback);
    }
}

#[test]
fn fallback_installed_after_start() {
    if require_backend("fallback_installed_after_start", Fallback) {
        scenarios::installed_after_start(Fallback);
    }
}

#[test]
fn fallback_scope_escape() {
    if require_backend("fallback_scope_escape", Fallback)
        && scenarios::fanotify_required("fallback_scope_escape")
    {
        scenarios::scope_escape(Fallback);
    }
}

#[test]
fn fallback_exempt_pid_reuse() {
    if require_backend("fallback_exempt_pid_reuse", Fallback)
        && scenarios::fanotify_required("fallback_exempt_pid_reuse")
    {
        scenarios::exempt_pid_reuse(Fallback);
    }
}

#[test]
fn fallback_tracing_policies() {
    if require_backend("fallback_tracing_policies", Fallback) {
        common::tetragon::tracing_policies(Fallback);
    }
}

/// `lsmhooks` that need a BPF LSM hook of their own are refused at start
/// here (the host has no usable BPF LSM); the VM tier runs them.
#[test]
fn fallback_lsm_hooks_refused() {
    if !common::require_root("fallback_lsm_hooks_refused") {
        return;
    }
    let report = vardr::probe::run();
    if report.program("lsm").is_some_and(|c| c.ok) && report.bpf_lsm_enabled.ok {
        eprintln!("SKIPPED fallback_lsm_hooks_refused: this kernel runs BPF LSM programs (vm_lsm_generic_hooks covers them)");
        return;
    }
    common::hooks_lsm::lsm_hooks_refused(Fallback);
}
