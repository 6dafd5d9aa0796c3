//! Userspace event pipeline throughput on one core: decode, enrich from the
//! process cache, serialize to JSON. Prints ns per event and events per
//! second per stage, and the ratio to the decode-only baseline measured in
//! the same run. `cargo bench -p vardr --bench pipeline` for numbers;
//! under `cargo test` (debug build) it runs a short smoke pass.
use std::time::{Duration, Instant, SystemTime};

use vardr::{
    events::{self, Clock, Event, JsonEvent},
    process::ProcessCache,
};
use vardr_common::{EventHeader, EventKind, ExecEvent, ARGS_LEN, EVENT_PATH_LEN};

fn exec_record(pid: u32, ppid: u32) -> Vec<u8> {
    let mut filename = [0u8; EVENT_PATH_LEN];
    let name = b"/usr/bin/curl";
    filename[..name.len()].copy_from_slice(name);
    let mut args = [0u8; ARGS_LEN];
    let argv = b"curl\0-sS\0--retry\0\x33\0https://example.invalid/api/v1/items?page=2\0";
    args[..argv.len()].copy_from_slice(argv);
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"curl");
    let ev = ExecEvent {
        header: EventHeader {
            kind: EventKind::Exec as u32,
            _pad: 0,
            boot_ns: 1_000_000_000,
            tid: pid,
            pid,
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            comm,
        },
        ppid,
        auid: 1000,
        flags: 0,
        args_len: argv.len() as u32,
        filename,
        args,
    };
    // SAFETY: ExecEvent is repr(C) plain data; we copy its bytes.
    unsafe {
        std::slice::from_raw_parts(
            (&ev as *const ExecEvent).cast::<u8>(),
            std::mem::size_of::<ExecEvent>(),
        )
    }
    .to_vec()
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
    // A chain of shells as parents, so events carry ancestors.
    let mut cache = ProcessCache::new("bench-node");
    let base = 4_000_000u32;
    let t0 = SystemTime::now();
    for depth in 0..6u32 {
        let Event::Exec(e) =
            events::decode(&exec_record(base + depth, base + depth.saturating_sub(1))).unwrap()
        else {
            unreachable!()
        };
        cache.on_exec(&e, t0);
    }
    let records: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| exec_record(base + 100 + i, base + 5))
        .collect();
    let rec = |i: usize| &records[i % records.len()];

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
            sink +=
                serde_json::to_string(&JsonEvent::exec(&p, "bench-node")).map_or(0, |s| s.len());
        }
    });
    let stages = [decode, enrich, serialize];
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
