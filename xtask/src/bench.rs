//! `cargo xtask bench`: benchmarks that print ratios against a baseline
//! measured in the same run (the machines are shared and noisy).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::run::{self, cargo};

const NO_RULES: &str =
    "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: bench\nspec:\n  rules: []\n";

pub struct BenchOpts {
    pub quick: bool,
}

pub fn run(opts: &BenchOpts) -> Result<()> {
    println!("== userspace pipeline (one core) ==");
    let mut c = cargo();
    c.args(["bench", "-p", "vardr", "--bench", "pipeline"]);
    if opts.quick {
        c.args(["--", "--smoke"]);
    }
    run::status(&mut c)?;
    println!("\n== Layer 2 (Cedar) evaluation per event (one core) ==");
    let mut c = cargo();
    c.args(["bench", "-p", "vardr", "--bench", "layer2"]);
    if opts.quick {
        c.args(["--", "--smoke"]);
    }
    run::status(&mut c)?;
    println!("\n== exec events end to end ==");
    exec_rate(opts)
}

/// A running release agent writing events to a file.
struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn start(root: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, NO_RULES)?;
        let mut child = Command::new(root.join("target/release/vardr"))
            .arg("agent")
            .arg("--policy")
            .arg(&policy)
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .args([
                "--output",
                "none",
                "--export-max-size",
                "1G",
                "--export-file",
            ])
            .arg(dir.join("events.json"))
            .env("VARDR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start vardr agent")?;
        // Ready when the status file exists.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("run/status.json").exists() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                bail!("agent did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            dir: dir.into(),
        })
    }

    /// SIGTERM, wait, and return the exported lines.
    fn stop(mut self) -> Result<String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        Ok(std::fs::read_to_string(self.dir.join("events.json"))?)
    }
}

/// Runs `/bin/true MARKER` from `threads` threads for `secs`; returns execs done.
fn storm(threads: usize, secs: f64, marker: &str) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (done, stop, marker) = (done.clone(), stop.clone(), marker.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if Command::new("/bin/true").arg(&marker).status().is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed)
}

fn exec_rate(opts: &BenchOpts) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED exec events end to end: needs root");
        return Ok(());
    }
    let root = crate::workspace_root();
    run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    let secs = if opts.quick { 1.0 } else { 5.0 };
    let levels: &[usize] = if opts.quick { &[1] } else { &[1, 2, 4, 8] };
    let dir = std::env::temp_dir().join(format!("vardr-bench-{}", std::process::id()));
    println!(
        "{:>8} {:>12} {:>12} {:>10} {:>10} {:>8}",
        "threads", "execs/s", "events/s", "received", "lost", "ratio"
    );
    let mut rows = Vec::new();
    for &threads in levels {
        let _ = std::fs::remove_dir_all(&dir);
        // Baseline: the same storm without the agent, in the same run.
        let base = storm(threads, secs, "bench-baseline") as f64 / secs;
        let agent = Agent::start(&root, &dir)?;
        let marker = format!("bench-{threads}");
        let started = Instant::now();
        let done = storm(threads, secs, &marker);
        let elapsed = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        let exported = agent.stop()?;
        let received = exported
            .lines()
            .filter(|l| {
                l.starts_with("{\"process_exec\"")
                    && l.contains(&format!("\"arguments\":\"{marker}\""))
            })
            .count() as u64;
        let lost: u64 = exported
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["events_lost"]["count"].as_u64())
            .sum();
        let rate = done as f64 / elapsed;
        println!(
            "{threads:>8} {rate:>12.0} {:>12.0} {received:>10} {lost:>10} {:>7.2}x",
            received as f64 / elapsed,
            rate / base
        );
        rows.push(serde_json::json!({
            "threads": threads, "execs_per_sec": rate, "baseline_execs_per_sec": base,
            "events_received": received, "execs": done, "events_lost": lost
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("ratio = exec rate with the agent / without it, same thread count, same run");
    println!(
        "{}",
        serde_json::json!({"benchmark": "exec_end_to_end", "seconds": secs, "rows": rows})
    );
    Ok(())
}
