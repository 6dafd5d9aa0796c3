//! Layer 2 (Cedar) evaluation time per event on one core, with 10, 100 and
//! 1000 policies: p50, p99 and the events per second one core sustains.
//! Ratios are against a one-policy set measured in the same run. Policies
//! are spread over exec, open and connect like a real set (an event is only
//! checked against its action's policies, and only against those whose
//! principal, resource or path prefix it matches); "all on exec" puts every
//! policy on exec; "unscoped" policies name no entity or path, so every one
//! is evaluated for every event: the worst case. `cargo bench -p vardr --bench layer2`;
//! with `--smoke` (or a debug build) a short pass.
use std::{
    path::Path,
    sync::Arc,
    time::{Instant, SystemTime},
};

use vardr::{
    cedar::{self, Action, Ask, Engine, Target},
    process::ProcessInfo,
};

fn process(
    pid: u32,
    binary: &str,
    cgroup: &str,
    parent: Option<Arc<ProcessInfo>>,
) -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        exec_id: format!("bench-{pid}"),
        pid,
        start_boot_ns: 0,
        uid: 1000,
        gid: 1000,
        auid: Some(1000),
        binary: binary.into(),
        arguments: "-sS --retry 3 https://example.invalid/api/v1/items?page=2".into(),
        args_truncated: false,
        cwd: "/srv/app".into(),
        start_time: SystemTime::UNIX_EPOCH,
        cgroup_id: 1,
        cgroup: cgroup.into(),
        container_id: None,
        creds: None,
        origin: "execve",
        parent,
        json: Default::default(),
    })
}

/// `n` policies no index can narrow: every one is evaluated per event.
fn unscoped(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "forbid (principal, action == Vardr::Action::\"exec\", resource) when {{ principal.uid == {} }};\n",
                100_000 + i
            )
        })
        .collect()
}

/// `n` policies of the shapes users write; `spread` cycles actions.
fn policies(n: usize, spread: bool) -> String {
    let mut s = String::new();
    for i in 0..n {
        let action = if spread { i % 3 } else { 0 };
        let p = match (action, i % 4) {
            (0, 0) => format!(
                "forbid (principal in Vardr::Binary::\"/usr/sbin/svc{i}\", action == Vardr::Action::\"exec\", resource in Vardr::Dir::\"/bin\");\n"
            ),
            (0, 1) => format!(
                "@verdict(\"alert\") forbid (principal, action == Vardr::Action::\"exec\", resource) when {{ resource.path like \"/opt/tool{i}/*\" && principal.uid != 0 }};\n"
            ),
            (0, 2) => format!(
                "forbid (principal in Vardr::Service::\"unit{i}.service\", action == Vardr::Action::\"exec\", resource) unless {{ resource.path == \"/usr/bin/env\" }};\n"
            ),
            (0, _) => format!(
                "permit (principal, action == Vardr::Action::\"exec\", resource == Vardr::Binary::\"/usr/local/bin/app{i}\") when {{ principal.args like \"*--safe*\" }};\n"
            ),
            (1, _) => format!(
                "@verdict(\"alert\") forbid (principal, action in Vardr::Action::\"open\", resource in Vardr::Dir::\"/etc/app{i}\") unless {{ principal.uid == 0 }};\n"
            ),
            _ => format!(
                "forbid (principal, action == Vardr::Action::\"connect\", resource) when {{ resource.port == {} && principal.binary != \"/usr/bin/ssh\" }};\n",
                1000 + i
            ),
        };
        s.push_str(&p);
    }
    s
}

fn engine(text: &str) -> Engine {
    match cedar::parse_text(text, Path::new("bench.cedar")) {
        Ok(set) => Engine::new(&set),
        Err(e) => panic!("benchmark policies: {e}"),
    }
}

struct Row {
    name: String,
    policies: usize,
    p50: f64,
    p99: f64,
    mean: f64,
}

/// Each sample is a new process (an exec event): nothing about the
/// principal itself is cached, only its parents' ancestry (siblings share it).
fn measure(name: &str, n: usize, e: &Engine, asks: &[Ask], samples: usize) -> Row {
    for a in asks.iter().take(samples / 10) {
        std::hint::black_box(e.evaluate(a).ok());
    }
    let mut ns: Vec<f64> = asks
        .iter()
        .skip(samples / 10)
        .map(|a| {
            let t = Instant::now();
            std::hint::black_box(e.evaluate(a).ok());
            t.elapsed().as_nanos() as f64
        })
        .collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
    Row {
        name: name.into(),
        policies: n,
        p50: pct(0.50),
        p99: pct(0.99),
        mean: ns.iter().sum::<f64>() / ns.len() as f64,
    }
}

fn main() {
    let smoke = cfg!(debug_assertions) || std::env::args().any(|a| a == "--smoke");
    let samples = if smoke { 300 } else { 20_000 };
    // An exec six processes deep, as events from a service look.
    let mut parent = None;
    for (depth, bin) in [
        "/sbin/init",
        "/usr/sbin/cron",
        "/bin/sh",
        "/bin/bash",
        "/usr/bin/python3",
        "/usr/bin/curl",
    ]
    .iter()
    .enumerate()
    {
        parent = Some(process(
            100 + depth as u32,
            bin,
            "/system.slice/cron.service",
            parent,
        ));
    }
    let now = SystemTime::now();
    let children: Vec<Arc<ProcessInfo>> = (0..samples + samples / 10)
        .map(|i| {
            process(
                10_000 + i as u32,
                "/usr/bin/curl",
                "/system.slice/cron.service",
                parent.clone(),
            )
        })
        .collect();
    let asks: Vec<Ask> = children
        .iter()
        .map(|p| Ask {
            action: Action::Exec,
            process: p,
            target: Target::Binary("/usr/bin/curl".into()),
            hook: "exec",
            flags: 0,
            backend: "lsm",
            layer1: "allow",
            rule: "",
            time: now,
        })
        .collect();
    let mut rows = vec![measure(
        "baseline (1 policy)",
        1,
        &engine(&policies(1, false)),
        &asks,
        samples,
    )];
    for n in [10, 100, 1000] {
        rows.push(measure(
            "spread over actions",
            n,
            &engine(&policies(n, true)),
            &asks,
            samples,
        ));
    }
    for n in [10, 100, 1000] {
        rows.push(measure(
            "all on exec",
            n,
            &engine(&policies(n, false)),
            &asks,
            samples,
        ));
    }
    for n in [10, 100, 1000] {
        rows.push(measure(
            "unscoped (worst)",
            n,
            &engine(&unscoped(n)),
            &asks,
            samples,
        ));
    }
    let base = rows[0].p50;
    println!(
        "Layer 2 evaluation per event ({samples} samples per row{})",
        if smoke { ", smoke" } else { "" }
    );
    println!(
        "{:<22} {:>8} {:>10} {:>10} {:>12} {:>7}",
        "set", "policies", "p50 µs", "p99 µs", "events/s", "ratio"
    );
    for r in &rows {
        println!(
            "{:<22} {:>8} {:>10.2} {:>10.2} {:>12.0} {:>6.1}x",
            r.name,
            r.policies,
            r.p50 / 1e3,
            r.p99 / 1e3,
            1e9 / r.mean,
            r.p50 / base
        );
    }
    println!(
        "Events arriving faster than events/s queue in the 8 MiB ring buffer; when it is full the kernel drops them and counts them (events_lost event, vardr_kernel_events_lost_total). Layer 1 enforcement does not wait for Layer 2."
    );
    let json: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!({"set": r.name, "policies": r.policies, "p50_ns": r.p50, "p99_ns": r.p99, "events_per_sec": 1e9 / r.mean}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"benchmark": "layer2", "smoke": smoke, "samples": samples, "rows": json})
    );
}
