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
        // Under software emulation an agent start takes 10-20 s even when
        // it adopts the pinned programs (the host's 20 restarts took 7.5
        // minutes of the VM tier): 10 restarts, every kind of the host's
        // among them, with loops paced for the emulated CPU.
        persist::restarts_without_gap(Lsm, 10, 0.05);
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

/// Seed 002's persistent enforcement with a kprobe: an Override of
/// `security_path_mkdir` (its kprobe and fmod_ret links pinned) goes on
/// refusing with the agent stopped. Kprobes exist on the VM kernels only.
#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_generic_hooks_persist() {
    if require_backend("lsm_generic_hooks_persist", Lsm) {
        if !vardr::backend::perf_attach::kprobes_available() {
            eprintln!("SKIPPED lsm_generic_hooks_persist: this kernel has no kprobe PMU");
            return;
        }
        persist::generic_hooks_persist(Lsm, persist::GenKind::Kprobe);
    }
}

/// The same with an `lsmhooks` hook of its own (`path_mkdir` with
/// Override): its BPF LSM link is pinned and goes on refusing.
#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_lsmhooks_persist() {
    if require_backend("lsm_lsmhooks_persist", Lsm) {
        persist::generic_hooks_persist(Lsm, persist::GenKind::Lsm);
    }
}
