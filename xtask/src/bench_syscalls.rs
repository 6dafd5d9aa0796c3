//! `cargo xtask bench syscalls`: what enforcement costs per syscall. The
//! same workload (open+close, exec of a small binary, TCP connect+close on
//! loopback) runs with no agent, with the agent in audit mode, enforcing
//! 10 / 1 000 / 100 000 rules of each kind (none matching the workload, one
//! matching a sibling path), and optionally under a peer agent; every number
//! is printed with its ratio to the no-agent baseline of the same run.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::run::{self, cargo};

pub struct Opts {
    pub quick: bool,
    /// `lsm`, `fallback` or `auto`.
    pub backend: String,
    /// Use already built binaries (inside the VM the tree is read-only).
    pub no_build: bool,
    /// A command that starts another agent to measure side by side.
    pub peer: Option<String>,
}

struct Paths {
    vardr: PathBuf,
    workload: PathBuf,
}

fn build(no_build: bool) -> Result<Paths> {
    let root = crate::workspace_root();
    let vardr = root.join("target/release/vardr");
    if no_build {
        // Inside the VM there is no cargo and the tree is read-only.
        return Ok(Paths {
            vardr,
            workload: newest(&root.join("target/release/deps"), "syscalls-")?,
        });
    }
    run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    let out = cargo()
        .args([
            "bench",
            "-p",
            "vardr",
            "--bench",
            "syscalls",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    let workload = out
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|v| v["target"]["name"] == "syscalls")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the syscalls benchmark binary")?;
    Ok(Paths { vardr, workload })
}

fn newest(dir: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(prefix) && !n.contains('.')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .context("no built syscalls benchmark (run cargo bench -p vardr --bench syscalls --no-run)")
}

/// Everything the workload touches, and the cgroup it runs in.
struct Bench {
    dir: PathBuf,
    cgroup: PathBuf,
    exec: (String, Option<String>),
}

impl Bench {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("vardr-bench-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work"))?;
        std::fs::write(dir.join("work/target"), "x")?;
        std::fs::write(dir.join("work/other"), "x")?;
        std::fs::write(dir.join("work/other-tp"), "x")?;
        std::fs::copy("/bin/true", dir.join("work/other-bin"))?;
        let root = cgroup2_root()?;
        let cgroup = root.join(format!("vardr-bench-{}", std::process::id()));
        std::fs::create_dir(&cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        // A static binary when there is one (busybox-static), as exec target.
        let exec = if Path::new("/bin/busybox").exists() {
            ("/bin/busybox".to_string(), Some("true".to_string()))
        } else {
            ("/bin/true".to_string(), None)
        };
        Ok(Self { dir, cgroup, exec })
    }

    fn policy(&self, n: usize) -> String {
        let w = self.dir.join("work");
        let w = w.display();
        let mut files = format!("[{w}/other");
        let mut execs = format!("[{w}/other-bin");
        let mut nets = String::from("[127.0.0.2/32");
        for i in 1..n {
            let _ = write!(files, ", /var/lib/vardr-bench/f{i}");
            let _ = write!(execs, ", /var/lib/vardr-bench/bin{i}");
            let _ = write!(
                nets,
                ", 10.{}.{}.{}/32",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            );
        }
        format!(
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: bench-{n}\nspec:\n  rules:\n\
             \x20 - {{name: files, hook: file_open, action: deny, match: {{paths: {files}]}}}}\n\
             \x20 - {{name: execs, hook: exec, action: deny, match: {{paths: {execs}]}}}}\n\
             \x20 - {{name: nets, hook: connect, action: deny, match: {{cidrs: {nets}]}}}}\n"
        )
    }

    /// `policy(10)` plus an allow rule on the file the workload opens: the
    /// open is governed (a map hit with LSM, a fanotify round trip to the
    /// agent with the fallback) and allowed.
    fn policy_governed(&self) -> String {
        let w = self.dir.join("work/target");
        format!(
            "{}\x20 - {{name: governed, hook: file_open, action: allow, match: {{paths: [{}]}}}}\n",
            self.policy(10),
            w.display()
        )
    }

    /// `policy(10)` plus a Tetragon TracingPolicy (`lsmhooks` `file_open`,
    /// Equal, Override) on another file: what a TracingPolicy hook costs
    /// beside the native rules (it compiles into the same maps).
    fn policy_tracing(&self) -> Result<String> {
        self.with_tracing_policy(
            "tracing-policy.yaml",
            &format!(
                "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: bench-file-open\nspec:\n  lsmhooks:\n  - hook: file_open\n    args: [{{index: 0, type: file}}]\n    selectors:\n    - matchArgs: [{{index: 0, operator: Equal, values: [\"{}\"]}}]\n      matchActions: [{{action: Override, argError: -1}}]\n",
                self.dir.join("work/other-tp").display()
            ),
        )
    }

    /// `policy(10)` naming the TracingPolicy `yaml`, written to `file`.
    fn with_tracing_policy(&self, file: &str, yaml: &str) -> Result<String> {
        let tp = self.dir.join(file);
        std::fs::write(&tp, yaml)?;
        Ok(format!(
            "{}  tracing_policies: [{}]\n",
            self.policy(10),
            tp.display()
        ))
    }

    /// `policy(10)` plus a TracingPolicy tracepoint on `sys_enter_openat`
    /// that reads the file name (user memory) and tries one Equal/Sigkill
    /// selector on another file: what a kprobe/tracepoint hook of vardr's
    /// generic object costs per open (its program runs on every openat of
    /// the scope).
    fn policy_hook(&self) -> Result<String> {
        self.with_tracing_policy(
            "tracing-hook.yaml",
            &format!(
                "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: bench-openat-hook\nspec:\n  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_openat\n    args: [{{index: 6, type: string}}, {{index: 7, type: int}}]\n    selectors:\n    - matchArgs: [{{index: 6, operator: Equal, values: [\"{}\"]}}]\n      matchActions: [{{action: Sigkill}}]\n",
                self.dir.join("work/other-tp").display()
            ),
        )
    }

    /// Runs the workload inside the bench cgroup; returns its JSON.
    fn workload(&self, p: &Paths, iters: usize) -> Result<Value> {
        self.workload_after(p, iters, "")
    }

    /// The workload, with shell run in its process before its exec
    /// (`prefix`, ending in `&& `).
    fn workload_after(&self, p: &Paths, iters: usize, prefix: &str) -> Result<Value> {
        let mut cmd = format!(
            "echo $$ > {}/cgroup.procs && {prefix}exec {} --file {} --exec {} --iters {iters}",
            self.cgroup.display(),
            p.workload.display(),
            self.dir.join("work/target").display(),
            self.exec.0
        );
        if let Some(a) = &self.exec.1 {
            let _ = write!(cmd, " --exec-arg {a}");
        }
        let out = Command::new("/bin/sh").arg("-c").arg(cmd).output()?;
        if !out.status.success() {
            bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .context("cgroup v2 is not mounted")
}

struct AgentRun {
    child: Child,
    run_dir: PathBuf,
    start_ms: f64,
    started_at: std::time::SystemTime,
}

fn status(run_dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(run_dir.join("status.json")).ok()?).ok()
}

impl AgentRun {
    fn start(
        p: &Paths,
        b: &Bench,
        policy: &str,
        backend: &str,
        enforce: bool,
        tag: &str,
    ) -> Result<Self> {
        let run_dir = b.dir.join(format!("run-{tag}"));
        let policy_path = b.dir.join(format!("policy-{tag}.yaml"));
        std::fs::write(&policy_path, policy)?;
        let mut cmd = Command::new(&p.vardr);
        cmd.arg("agent")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--runtime-dir")
            .arg(&run_dir)
            .arg("--scope-cgroup")
            .arg(&b.cgroup)
            .args([
                "--backend",
                backend,
                "--output",
                "none",
                "--max-rules",
                "262144",
            ])
            .env("VARDR_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if enforce {
            cmd.arg("--enforce");
        }
        let t = Instant::now();
        let started_at = std::time::SystemTime::now();
        let mut child = cmd.spawn()?;
        while status(&run_dir).is_none() {
            if child.try_wait()?.is_some() {
                bail!("agent exited during start");
            }
            if t.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                bail!("agent did not start in 300 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self {
            child,
            run_dir,
            start_ms: t.elapsed().as_secs_f64() * 1e3,
            started_at,
        })
    }

    fn cpu_ms(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        ticks * 10.0 // USER_HZ is 100 on Linux
    }

    /// Kernel memory of the agent's BPF maps, MiB: the sum of `memlock`
    /// over its map descriptors (since Linux 6.4 what each map really uses).
    fn maps_mib(&self) -> f64 {
        let pid = self.child.id();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return 0.0;
        };
        let mut bytes = 0.0;
        // A map the agent holds through several descriptors counts once.
        let mut seen = std::collections::HashSet::new();
        for fd in fds.flatten() {
            let is_map =
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map");
            if !is_map {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let id = info.lines().find_map(|l| l.strip_prefix("map_id:"));
            if !id.is_some_and(|id| seen.insert(id.trim().to_string())) {
                continue;
            }
            bytes += info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        bytes / (1024.0 * 1024.0)
    }

    /// Memory from /proc/PID/status, MiB: peak resident (VmHWM), resident
    /// now (VmRSS), and of it the agent's own anonymous memory (RssAnon:
    /// heap and stacks, without the binary's pages and the ring buffers the
    /// kernel maps into the agent).
    fn memory_mib(&self) -> Value {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        json!({
            "peak_rss_mib": field("VmHWM:"),
            "rss_mib": field("VmRSS:"),
            "anon_mib": field("RssAnon:"),
            "rings_mib": self.mapped_maps_mib(),
        })
    }

    /// Resident pages of the BPF maps the agent has mapped (its event ring
    /// buffers, each data area mapped twice), MiB: kernel memory, counted
    /// in `maps_mib` too, that VmRSS also counts.
    fn mapped_maps_mib(&self) -> f64 {
        let smaps =
            std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id())).unwrap_or_default();
        let mut in_map = false;
        let mut kib = 0.0;
        for l in smaps.lines() {
            let mut f = l.split_whitespace();
            match (f.next(), f.next()) {
                // A mapping's header: address range, perms, offset, dev, inode, name.
                (Some(range), Some(_)) if range.contains('-') && !range.ends_with(':') => {
                    in_map = l.ends_with("anon_inode:bpf-map");
                }
                (Some("Rss:"), Some(v)) if in_map => kib += v.parse::<f64>().unwrap_or(0.0),
                _ => {}
            }
        }
        kib / 1024.0
    }

    /// SIGHUP and wait for the reload to land; returns its duration and
    /// the most kernel memory the agent's maps took meanwhile (both
    /// generations live until the old one is dropped).
    fn reload_ms(&self) -> Result<(f64, f64)> {
        let before = status(&self.run_dir)
            .map(|s| s["last_reload"]["seq"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        let t = Instant::now();
        let mut maps_peak = self.maps_mib();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        // The maps are read every 50 ms: often enough to see both
        // generations, seldom enough not to slow the reload measured.
        let mut polls = 0u64;
        loop {
            if let Some(s) = status(&self.run_dir) {
                if s["last_reload"]["seq"].as_u64().unwrap_or(0) > before {
                    if s["last_reload"]["ok"] != true {
                        bail!("reload failed: {}", s["last_reload"]["error"]);
                    }
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    // The old generation goes a grace period after the switch.
                    for _ in 0..5 {
                        maps_peak = maps_peak.max(self.maps_mib());
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return Ok((ms, maps_peak));
                }
            }
            if polls.is_multiple_of(10) {
                maps_peak = maps_peak.max(self.maps_mib());
            }
            polls += 1;
            if t.elapsed() > Duration::from_secs(300) {
                bail!("reload did not finish");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs the workload; returns it and what the agent's programs cost
    /// meanwhile (kernel statistics, when they are on).
    fn measure(&self, b: &Bench, p: &Paths, iters: usize) -> Result<(Value, Value)> {
        let before = crate::bpf_stats::snapshot(self.started_at);
        let w = b.workload(p, iters)?;
        let after = crate::bpf_stats::snapshot(self.started_at);
        Ok((w, crate::bpf_stats::delta(&before, &after)))
    }

    fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        Ok(())
    }
}

/// One configuration of the syscall benchmark.
enum Config {
    Audit,
    Enforce(usize),
    Governed,
    Tracing,
    /// A TracingPolicy tracepoint hook (vardr's generic object).
    Hook,
    /// bpftrace SIGKILLing the same open and exec paths (Tetragon's
    /// mechanism): the shell command that runs it.
    Bpftrace(String),
    /// auditd with watch rules on the same file and binary.
    Auditd(crate::bench_auditd::AuditdPeer),
    /// An AppArmor profile denying the same file and binary.
    AppArmor(crate::bench_apparmor::AppArmorPeer),
    Peer(String),
}

impl Config {
    fn name(&self) -> String {
        match self {
            Self::Audit => "audit, 10 rules".into(),
            Self::Enforce(n) => format!("enforce, {n} rules/kind"),
            Self::Governed => "enforce, open governed".into(),
            Self::Tracing => "enforce, 10 rules + TracingPolicy".into(),
            Self::Hook => "enforce, 10 rules + tracepoint hook".into(),
            Self::Bpftrace(_) => "peer: bpftrace SIGKILL, same paths".into(),
            Self::Auditd(_) => "peer: auditd watch rules, same paths".into(),
            Self::AppArmor(_) => "peer: AppArmor deny rules, same paths".into(),
            Self::Peer(p) => format!("peer: {p}"),
        }
    }

    /// Starts what the configuration needs, runs the workload, stops it;
    /// the workload and what was measured about the agent (`reload` also
    /// times a reload).
    fn measure(
        &self,
        b: &Bench,
        paths: &Paths,
        o: &Opts,
        iters: usize,
        reload: bool,
    ) -> Result<(Value, Value)> {
        let (policy, enforce, tag) = match self {
            Self::Audit => (b.policy(10), false, "audit".to_string()),
            Self::Enforce(n) => (b.policy(*n), true, format!("e{n}")),
            Self::Governed => (b.policy_governed(), true, "gov".to_string()),
            Self::Tracing => (b.policy_tracing()?, true, "tp".to_string()),
            Self::Hook => (b.policy_hook()?, true, "hook".to_string()),
            Self::Auditd(peer) => {
                let running = peer.start().map_err(anyhow::Error::msg)?;
                let w = b.workload(paths, iters);
                drop(running);
                return Ok((w?, json!({})));
            }
            Self::AppArmor(peer) => {
                return Ok((
                    b.workload_after(paths, iters, &peer.exec_prefix())?,
                    json!({}),
                ));
            }
            Self::Bpftrace(peer) | Self::Peer(peer) => {
                use std::os::unix::process::CommandExt;
                // Its own process group: whatever the command starts is
                // stopped with it.
                let mut child = Command::new("/bin/sh")
                    .arg("-c")
                    .arg(peer)
                    .stdout(Stdio::null())
                    .process_group(0)
                    .spawn()?;
                std::thread::sleep(Duration::from_secs(5));
                let w = b.workload(paths, iters);
                stop_group(&mut child);
                return Ok((w?, json!({})));
            }
        };
        let a = AgentRun::start(paths, b, &policy, &o.backend, enforce, &tag)?;
        let cpu0 = a.cpu_ms();
        let (w, progs) = a.measure(b, paths, iters)?;
        let mut extra =
            json!({"agent_cpu_ms": a.cpu_ms() - cpu0, "start_ms": a.start_ms, "programs": progs});
        extra["maps_mib"] = json!(a.maps_mib());
        if reload && matches!(self, Self::Enforce(_)) {
            let (ms, maps_peak) = a.reload_ms()?;
            extra["reload_ms"] = json!(ms);
            extra["maps_reload_mib"] = json!(maps_peak);
            // The old generation is dropped on a thread after the switch.
            std::thread::sleep(Duration::from_millis(500));
        }
        // After the workload (and the reload): the steady state.
        if let (Some(e), Value::Object(m)) = (extra.as_object_mut(), a.memory_mib()) {
            e.extend(m);
        }
        a.stop()?;
        Ok((w, extra))
    }
}

/// The operations the workload times: (JSON key, column name).
const OPS: [(&str, &str); 3] = [
    ("open_close", "open+close"),
    ("exec", "exec"),
    ("tcp_connect_close", "connect+close"),
];

/// One configuration's rounds: the workload of each and its p50 ratio per
/// operation to the mean of the baselines measured just before and after.
struct Measured {
    name: String,
    rounds: Vec<Value>,
    ratios: Vec<[f64; 3]>,
    extra: Value,
}

fn p50(w: &Value, k: &str) -> f64 {
    w[k]["p50"].as_f64().unwrap_or(0.0)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(o: &Opts) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED bench syscalls: needs root");
        return Ok(());
    }
    let paths = build(o.no_build)?;
    let b = Bench::new()?;
    // Baseline and configurations alternate over rounds (A B A C A ... per
    // round): each ratio is against the baselines around it, so drift and
    // noise of a shared machine show as spread instead of as an effect.
    let rounds = if o.quick { 2 } else { 3 };
    let iters = if o.quick { 300 } else { 7_000 };
    let sizes: &[usize] = if o.quick {
        &[10]
    } else {
        &[10, 1_000, 100_000]
    };
    let mut configs = vec![Config::Audit];
    configs.extend(sizes.iter().map(|&n| Config::Enforce(n)));
    configs.push(Config::Governed);
    configs.push(Config::Tracing);
    configs.push(Config::Hook);
    if o.quick {
        // The smoke run keeps the benchmark working; installing and
        // measuring a peer is the full run's business.
        println!("peers bpftrace and auditd not measured: --quick (smoke run)");
    } else {
        match bpftrace_peer(&b) {
            Ok(cmd) => configs.push(Config::Bpftrace(cmd)),
            Err(why) => println!("peer bpftrace not measured: {why}"),
        }
        let w = b.dir.join("work");
        match crate::bench_auditd::AuditdPeer::prepare(
            &b.dir,
            &w.join("other"),
            &w.join("other-bin"),
            &b.cgroup,
        ) {
            Ok(p) => configs.push(Config::Auditd(p)),
            Err(why) => println!("peer auditd not measured: {why}"),
        }
    }
    // Nothing to install (the parser comes with the VM tools): measured in
    // the quick runs too, which is what the emulated VM run can afford.
    let w = b.dir.join("work");
    match crate::bench_apparmor::AppArmorPeer::prepare(
        &b.dir,
        &w.join("other"),
        &w.join("other-bin"),
        &w.join("target"),
        &b.cgroup,
    ) {
        Ok(p) => configs.push(Config::AppArmor(p)),
        Err(why) => println!("peer AppArmor (deny rules) not measured: {why}"),
    }
    if let Some(peer) = &o.peer {
        configs.push(Config::Peer(peer.clone()));
    }

    // Per-program run time, measured by the kernel (off again when this drops).
    let _stats = match crate::bpf_stats::enable() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("per-program run time not measured: {e}");
            None
        }
    };
    let mut baselines = vec![b.workload(&paths, iters)?];
    let mut measured: Vec<Measured> = configs
        .iter()
        .map(|c| Measured {
            name: c.name(),
            rounds: Vec::new(),
            ratios: Vec::new(),
            extra: json!({}),
        })
        .collect();
    for round in 0..rounds {
        for (c, m) in configs.iter().zip(measured.iter_mut()) {
            let (w, extra) = c.measure(&b, &paths, o, iters, round == 0)?;
            let before = baselines.last().cloned().unwrap_or_default();
            let after = b.workload(&paths, iters)?;
            let mut r = [0.0; 3];
            for (i, (k, _)) in OPS.iter().enumerate() {
                let base = ((p50(&before, k) + p50(&after, k)) / 2.0).max(1.0);
                r[i] = p50(&w, k) / base;
            }
            baselines.push(after);
            m.ratios.push(r);
            m.rounds.push(w);
            if round == 0 {
                m.extra = extra;
            }
        }
    }
    print_table(&baselines, &measured, &o.backend, rounds);
    Ok(())
}

fn print_table(baselines: &[Value], rows: &[Measured], backend: &str, rounds: usize) {
    println!(
        "\nbackend: {backend}; ns per operation, p50 / p99 (medians over {rounds} rounds), and the median p50 ratio to no agent ± half its range over the rounds (each round against the no-agent runs just before and after it)"
    );
    print!("{:<36}", "config");
    for (_, name) in OPS {
        print!(" {:>36}", name);
    }
    println!(
        " {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "cpu ms", "peak MiB", "rss MiB", "rings MiB", "anon MiB", "start ms", "reload ms"
    );
    println!("(peak / rss / anon: the agent's VmHWM, VmRSS and RssAnon after the workload and the reload; rings: the part of rss that is the ring buffers' kernel pages mapped into the agent)");
    let cell = |ws: &[Value], k: &str, ratio: Option<&[f64]>| {
        let p50 = median(ws.iter().map(|w| p50(w, k)).collect());
        let p99 = median(
            ws.iter()
                .map(|w| w[k]["p99"].as_f64().unwrap_or(0.0))
                .collect(),
        );
        let r = match ratio {
            Some(rs) => {
                let (lo, hi) = rs
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                format!("{:.2}x ±{:.2}", median(rs.to_vec()), (hi - lo) / 2.0)
            }
            None => "1.00x".to_string(),
        };
        format!(" {:>11.0} / {:>9.0} {:>12}", p50, p99, r)
    };
    let mut line = format!("{:<36}", format!("no agent ({} runs)", baselines.len()));
    for (k, _) in OPS {
        line.push_str(&cell(baselines, k, None));
    }
    println!("{line}");
    for m in rows {
        let mut line = format!("{:<36}", m.name);
        for (i, (k, _)) in OPS.iter().enumerate() {
            let rs: Vec<f64> = m.ratios.iter().map(|r| r[i]).collect();
            line.push_str(&cell(&m.rounds, k, Some(&rs)));
        }
        let f = |k: &str| {
            m.extra[k]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.0}"))
        };
        let mib = |k: &str| {
            m.extra[k]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        println!(
            "{line} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
            f("agent_cpu_ms"),
            mib("peak_rss_mib"),
            mib("rss_mib"),
            mib("rings_mib"),
            mib("anon_mib"),
            f("start_ms"),
            f("reload_ms")
        );
    }
    println!("\nkernel memory of the agent's BPF maps (memlock), MiB: in force / most during a reload (both generations live until the old one is dropped)");
    for m in rows {
        let v = |k: &str| {
            m.extra[k]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        println!(
            "{:<36} {:>8} / {:>8}",
            m.name,
            v("maps_mib"),
            v("maps_reload_mib")
        );
    }
    print_programs(rows);
    let json_rows: Vec<Value> = rows
        .iter()
        .map(
            |m| json!({"config": m.name, "rounds": m.rounds, "ratios": m.ratios, "agent": m.extra}),
        )
        .collect();
    println!(
        "{}",
        json!({"benchmark": "syscalls", "backend": backend, "rounds": rounds, "baselines": baselines, "rows": json_rows})
    );
}

/// The kernel's per-program statistics for each configuration: runs during
/// the workload and average run time.
fn print_programs(rows: &[Measured]) {
    if !rows.iter().any(|m| m.extra["programs"].is_object()) {
        return;
    }
    println!(
        "\nBPF programs during the workload (kernel run-time statistics): runs, average ns per run"
    );
    for m in rows {
        let Some(progs) = m.extra["programs"].as_object() else {
            continue;
        };
        let mut line = format!("{:<36}", m.name);
        if progs.is_empty() {
            line.push_str(" (none ran)");
        }
        for (p, v) in progs {
            let _ = write!(
                line,
                " {p}={}x{:.0}ns",
                v["runs"].as_u64().unwrap_or(0),
                v["avg_ns"].as_f64().unwrap_or(0.0)
            );
        }
        println!("{line}");
    }
}

/// A bpftrace program that SIGKILLs, inside the bench cgroup only, the
/// open of the denied file and the exec of the denied binary of the
/// 10-rule policy: the shell command that starts it, once it is shown to
/// kill. bpftrace is installed when missing (a Debian package).
fn bpftrace_peer(b: &Bench) -> std::result::Result<String, String> {
    let have = || {
        Command::new("bpftrace")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have() {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "bpftrace"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !have() {
            return Err("bpftrace is not installed and apt-get could not install it".into());
        }
    }
    let w = b.dir.join("work");
    let script = b.dir.join("peer.bt");
    let cg = b.cgroup.display();
    std::fs::write(
        &script,
        format!(
            "tracepoint:syscalls:sys_enter_openat /cgroup == cgroupid(\"{cg}\") && str(args->filename) == \"{f}\"/ {{ signal(\"KILL\"); }}\n\
             tracepoint:syscalls:sys_enter_execve /cgroup == cgroupid(\"{cg}\") && str(args->filename) == \"{x}\"/ {{ signal(\"KILL\"); }}\n",
            f = w.join("other").display(),
            x = w.join("other-bin").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    // bpftrace finds tracepoints in tracefs, which this host does not
    // mount: it gets one in a mount namespace of its own, gone with it.
    let cmd = format!(
        "exec unshare --mount sh -c 'mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; exec bpftrace --unsafe {}'",
        script.display()
    );
    // It must enforce before it is measured: the denied open dies.
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut killed = false;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(500));
        let probe = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {cg}/cgroup.procs && exec cat {}",
                w.join("other").display()
            ))
            .output()
            .map_err(|e| e.to_string())?;
        use std::os::unix::process::ExitStatusExt;
        if probe.status.signal() == Some(9) {
            killed = true;
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    stop_group(&mut child);
    if killed {
        Ok(cmd)
    } else {
        Err(
            "bpftrace ran but did not kill the denied open (tracepoints or signal() unavailable?)"
                .into(),
        )
    }
}

/// SIGTERM to the child's process group, SIGKILL after 10 s.
pub(crate) fn stop_group(child: &mut Child) {
    use nix::{
        sys::signal::{killpg, Signal},
        unistd::Pid,
    };
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The group is gone once no member is left.
        if killpg(group, None).is_err() {
            break;
        }
        let _ = child.try_wait();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}
