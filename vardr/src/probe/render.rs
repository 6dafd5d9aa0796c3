//! Human-readable probe table.
use std::fmt::Write as _;

use super::{Check, Report};

fn row(out: &mut String, name: &str, c: &Check) {
    let mark = if c.ok { "yes" } else { "NO" };
    let _ = writeln!(out, "  {name:<20} {mark:<4} {}", c.detail);
}

pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let lsm_list = r
        .lsm_list
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |l| l.join(","));
    let _ = writeln!(out, "kernel    {}", r.kernel_release);
    let _ = writeln!(out, "LSM list  {lsm_list}");
    if !r.root {
        out.push_str("(not root: program load checks skipped)\n");
    }
    out.push_str("\nkernel features\n");
    row(&mut out, "BTF", &r.btf);
    row(&mut out, "BPF LSM enabled", &r.bpf_lsm_enabled);
    row(&mut out, "bpf_send_signal", &r.bpf_send_signal);
    row(&mut out, "ring buffer", &r.ring_buffer);
    row(&mut out, "bpffs", &r.bpffs);
    row(&mut out, "cgroup v2", &r.cgroup2);
    row(&mut out, "fanotify perm", &r.fanotify);
    out.push_str("\nprogram types (try-load)\n");
    for p in &r.programs {
        row(&mut out, &p.program_type, &p.check);
    }
    out.push_str("\nenforcement backends\n");
    for b in &r.backends {
        let _ = writeln!(out, "  {:<8} {:<9} {}", b.hook, b.backend, b.reason);
    }
    out
}
