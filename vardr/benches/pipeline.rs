//! Userspace event pipeline throughput on one core: decode, enrich from the
//! process cache, serialize to JSON. Prints ns per event and events per
//! second per stage, and the ratio to the decode-only baseline measured in
//! the same run. `cargo bench -p vardr --bench pipeline` for numbers;
//! under `cargo test` (debug build) it runs a short smoke pass.
use std::time::{Duration, Instant, SystemTime};

use vardr::{
    events::{self, Clock, Creds, Event, JsonEvent},
    process::ProcessCache,
};
use vardr_common::{EventHeader, EventKind};

/// Boot-clock now-ish: events of a machine up for a few days.
const BOOT_NS: u64 = 3 * 86_400 * 1_000_000_000 + 123_456_789;
/// Cgroup ids as the kernel numbers them (kernfs inode numbers).
const CGROUPS: [(u64, &str); 4] = [
    (4_127, "/system.slice/cron.service"),
    (
        9_842,
        "/system.slice/docker-3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f.scope",
    ),
    (11_305, "/user.slice/user-1000.slice/session-4.scope"),
    (12_001, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c1e2a9b.slice/cri-containerd-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9.scope"),
];

/// An exec record as the kernel writes it: a process `pid` forked by
/// `ppid` running `binary` from `cwd` in cgroup `cg`.
#[allow(clippy::too_many_arguments)]
fn exec_record(
    pid: u32,
    ppid: u32,
    uid: u32,
    cg: u64,
    binary: &str,
    cwd: &str,
    argv: &[u8],
    at: u64,
) -> Vec<u8> {
    let mut comm = [0u8; 16];
    let name = binary.rsplit('/').next().unwrap_or(binary).as_bytes();
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name[..n]);
    events::exec_record(
        EventHeader {
            kind: EventKind::Exec as u32,
            _pad: 0,
            boot_ns: at,
            tid: pid,
            pid,
            uid,
            gid: uid,
            cgroup_id: cg,
            comm,
        },
        at - 1_800_000,
        ppid,
        uid,
        binary,
        Some(binary),
        Some(cwd),
        Some(Creds {
            uid,
            gid: uid,
            euid: uid,
            egid: uid,
            suid: uid,
            sgid: uid,
            fsuid: uid,
            fsgid: uid,
        }),
        argv,
    )
}

struct Stage {
    name: &'static str,
    ns_per_event: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(name: &'static str, n: usize, rounds: usize, mut f: impl FnMut(usize)) -> Stage {
    for i in 0..n / 10 {
        f(i); // warm-up
    }
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    Stage {
        name,
        ns_per_event: median(times),
    }
}

fn main() {
    let smoke = cfg!(debug_assertions) || std::env::args().any(|a| a == "--smoke");
    let (n, rounds) = if smoke { (2_000, 1) } else { (200_000, 5) };
    let clock = Clock::now();
    // A chain of shells as parents, so events carry ancestors (systemd,
    // cron, sh, bash, python3, sh), then leaves of the last shell spread
    // over a few cgroups and programs.
    let mut cache = ProcessCache::new("bench-node");
    for (id, path) in CGROUPS {
        cache.cgroups().insert(id, path);
    }
    let chain: [(u32, u32, &str, &[u8]); 6] = [
        (1, 0, "/usr/lib/systemd/systemd", b"/sbin/init\0splash\0"),
        (812, 1, "/usr/sbin/cron", b"/usr/sbin/cron\0-f\0"),
        (
            40_211,
            812,
            "/usr/bin/sh",
            b"/bin/sh\0-c\0/opt/jobs/sync.sh\0",
        ),
        (
            40_213,
            40_211,
            "/usr/bin/bash",
            b"bash\0/opt/jobs/sync.sh\0",
        ),
        (
            40_230,
            40_213,
            "/usr/bin/python3.11",
            b"python3\0/opt/jobs/fetch.py\0--all\0",
        ),
        (
            40_377,
            40_230,
            "/usr/bin/dash",
            b"/bin/sh\0-c\0curl -sS https://example.com\0",
        ),
    ];
    let t0 = SystemTime::now();
    for (i, (pid, ppid, bin, argv)) in chain.iter().enumerate() {
        let rec = exec_record(
            *pid,
            *ppid,
            0,
            CGROUPS[0].0,
            bin,
            "/",
            argv,
            BOOT_NS + i as u64 * 1_000_000,
        );
        let Ok(Event::Exec(e)) = events::decode(&rec) else {
            unreachable!()
        };
        cache.on_exec(&e, t0);
    }
    let programs: [(&str, &str, &[u8]); 4] = [
        (
            "/usr/bin/curl",
            "/srv/app",
            b"curl\0-sS\0--retry\x003\0https://example.com/api/v1/items?page=2\0",
        ),
        (
            "/usr/bin/git",
            "/srv/app/repo",
            b"git\0fetch\0--prune\0origin\0",
        ),
        (
            "/usr/local/bin/node",
            "/srv/app/web",
            b"node\0/srv/app/web/server.js\0--port\x008080\0",
        ),
        (
            "/usr/bin/grep",
            "/var/log",
            b"grep\0-E\0error|warn\0/var/log/syslog\0",
        ),
    ];
    let records: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let (bin, cwd, argv) = programs[i as usize % programs.len()];
            let cg = CGROUPS[i as usize % CGROUPS.len()].0;
            exec_record(
                41_000 + i * 7,
                40_377,
                1000,
                cg,
                bin,
                cwd,
                argv,
                BOOT_NS + 10_000_000 + u64::from(i) * 50_000,
            )
        })
        .collect();
    let rec = |i: usize| &records[i % records.len()];

    // The fast JSON path writes exactly what serde writes.
    if let Ok(Event::Exec(e)) = events::decode(rec(1)) {
        let p = cache.on_exec(&e, clock.wall(e.header.boot_ns));
        let want = serde_json::to_string(&JsonEvent::exec(&p, "bench-node")).unwrap();
        assert_eq!(events::exec_line(&p, "bench-node"), want);
        assert!(!p.cgroup.is_empty() && p.creds.is_some() && p.cwd == "/srv/app/repo");
    }

    let mut sink = 0usize;
    let decode = run("decode", n, rounds, |i| {
        sink += matches!(events::decode(rec(i)), Ok(Event::Exec(_))) as usize;
    });
    let enrich = run("decode+enrich", n, rounds, |i| {
        if let Ok(Event::Exec(e)) = events::decode(rec(i)) {
            sink += cache.on_exec(&e, clock.wall(e.header.boot_ns)).pid as usize;
        }
    });
    let serialize = run("decode+enrich+json", n, rounds, |i| {
        if let Ok(Event::Exec(e)) = events::decode(rec(i)) {
            let p = cache.on_exec(&e, clock.wall(e.header.boot_ns));
            sink += events::exec_line(&p, "bench-node").len();
        }
    });
    let serde = run("...+json (serde)", n, rounds, |i| {
        if let Ok(Event::Exec(e)) = events::decode(rec(i)) {
            let p = cache.on_exec(&e, clock.wall(e.header.boot_ns));
            sink +=
                serde_json::to_string(&JsonEvent::exec(&p, "bench-node")).map_or(0, |s| s.len());
        }
    });
    let stages = [decode, enrich, serialize, serde];
    let base_ns = stages[0].ns_per_event;
    println!(
        "pipeline benchmark ({} events x {rounds} rounds{})",
        n,
        if smoke { ", smoke" } else { "" }
    );
    println!(
        "{:<22} {:>10} {:>14} {:>8}",
        "stage", "ns/event", "events/s", "ratio"
    );
    for s in &stages {
        println!(
            "{:<22} {:>10.0} {:>14.0} {:>7.1}x",
            s.name,
            s.ns_per_event,
            1e9 / s.ns_per_event,
            s.ns_per_event / base_ns
        );
    }
    let json: Vec<_> = stages
        .iter()
        .map(|s| serde_json::json!({"stage": s.name, "ns_per_event": s.ns_per_event, "events_per_sec": 1e9 / s.ns_per_event}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"benchmark": "pipeline", "smoke": smoke, "events": n, "stages": json})
    );
    assert!(sink > 0);
    std::hint::black_box(Duration::ZERO);
}
