//! VM tier: persistent enforcement with the LSM backend
//! (`cargo xtask vm-test`): the same restart proof as the host's fallback run.
mod common;

use common::{persist, require_backend, scenarios};
use vardr::probe::Backend::Lsm;

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_restarts_without_gap() {
    if require_backend("lsm_restarts_without_gap", Lsm)
        && scenarios::python_available("lsm_restarts_without_gap")
    {
        // Under software emulation loading programs takes seconds, adopting
        // them does not: the same 20 restarts as the host's, with loops
        // paced for the emulated CPU.
        persist::restarts_without_gap(Lsm, 20, 0.05);
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_other_layout_and_other_scope() {
    if require_backend("lsm_other_layout_and_other_scope", Lsm) {
        persist::other_layout_and_other_scope(Lsm);
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_adopted_set_drops_unfinished_reload() {
    if require_backend("lsm_adopted_set_drops_unfinished_reload", Lsm)
        && scenarios::python_available("lsm_adopted_set_drops_unfinished_reload")
    {
        persist::adopted_set_drops_unfinished_reload(Lsm);
    }
}
