//! Per-program cost measured by the kernel: with `BPF_ENABLE_STATS`
//! (`kernel.bpf_stats_enabled` while the returned descriptor is open) every
//! program counts its runs and their total run time, natively, also where
//! the LSM itself can only run emulated.
use std::{collections::BTreeMap, os::fd::OwnedFd, time::SystemTime};

use serde_json::{json, Value};

/// Statistics stay on while this lives (the kernel counts the open
/// descriptors).
pub struct Enabled {
    _fd: OwnedFd,
}

pub fn enable() -> Result<Enabled, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(|fd| Enabled { _fd: fd })
        .map_err(|e| format!("BPF_ENABLE_STATS: {e}"))
}

/// Run count and total run time (ns) of each vardr program loaded since
/// `since`, by name (the kernel keeps 15 characters of it).
pub fn snapshot(since: SystemTime) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        let Some(name) = p.name_as_str().filter(|n| n.starts_with("vardr_")) else {
            continue;
        };
        if p.loaded_at().is_none_or(|t| t < since) {
            continue;
        }
        let e = out.entry(name.to_string()).or_default();
        e.0 += p.run_count();
        e.1 += p.run_time().as_nanos() as u64;
    }
    out
}

/// What ran between two snapshots: `{name: {runs, avg_ns}}`, programs
/// that did not run left out.
pub fn delta(before: &BTreeMap<String, (u64, u64)>, after: &BTreeMap<String, (u64, u64)>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, &(runs, ns)) in after {
        let (r0, n0) = before.get(name).copied().unwrap_or_default();
        let runs = runs.saturating_sub(r0);
        if runs == 0 {
            continue;
        }
        let avg = ns.saturating_sub(n0) as f64 / runs as f64;
        out.insert(name.clone(), json!({"runs": runs, "avg_ns": avg}));
    }
    Value::Object(out)
}
