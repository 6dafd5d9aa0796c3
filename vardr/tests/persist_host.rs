//! Host tier: persistent enforcement (`--keep-enforcing`, takeover at
//! restart, `vardr unpin`) with the fallback backend, scoped to a test
//! cgroup and pinned in a bpffs of the test's own.
mod common;

use common::{persist, require_backend, require_root, scenarios, serial};
use vardr::probe::Backend::Fallback;

#[test]
fn fallback_restarts_without_gap() {
    if require_backend("fallback_restarts_without_gap", Fallback)
        && scenarios::python_available("fallback_restarts_without_gap")
    {
        let _serial = serial();
        persist::restarts_without_gap(Fallback, 20, 0.0);
    }
}

#[test]
fn fallback_fanotify_lease_handover() {
    if require_backend("fallback_fanotify_lease_handover", Fallback)
        && scenarios::fanotify_required("fallback_fanotify_lease_handover")
    {
        let _serial = serial();
        persist::fanotify_lease_handover();
    }
}

#[test]
fn fallback_no_keep_leaves_nothing() {
    if require_backend("fallback_no_keep_leaves_nothing", Fallback) {
        let _serial = serial();
        persist::no_keep_leaves_nothing(Fallback);
    }
}

#[test]
fn fallback_other_layout_and_other_scope() {
    if require_backend("fallback_other_layout_and_other_scope", Fallback) {
        let _serial = serial();
        persist::other_layout_and_other_scope(Fallback);
    }
}

#[test]
fn exec_id_survives_restart() {
    if require_root("exec_id_survives_restart") {
        let _serial = serial();
        persist::exec_id_survives_restart();
    }
}

#[test]
fn fallback_adopted_set_drops_unfinished_reload() {
    if require_backend("fallback_adopted_set_drops_unfinished_reload", Fallback)
        && scenarios::python_available("fallback_adopted_set_drops_unfinished_reload")
    {
        let _serial = serial();
        persist::adopted_set_drops_unfinished_reload(Fallback);
    }
}

#[test]
fn fallback_generic_hooks_persist() {
    if require_backend("fallback_generic_hooks_persist", Fallback) {
        let _serial = serial();
        persist::generic_hooks_persist(Fallback, persist::GenKind::Tracepoint);
    }
}
