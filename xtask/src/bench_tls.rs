//! `cargo xtask bench tls`: what reading TLS server names costs. A local
//! OpenSSL server on loopback; clients in a cgroup the agent governs:
//! full handshakes per second (`openssl s_time -new`) and the throughput
//! of one download (`curl`). Measured with no agent, with the agent
//! enforcing 10 domain rules (none matching), and with `--tls-capture`
//! (every hello reported, DNS answers read), alternating with the baseline
//! over rounds; every number is printed with its ratio to the baselines
//! measured just before and after it.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::bench_syscalls::median;

pub struct Opts {
    pub quick: bool,
    /// `lsm`, `fallback` or `auto`.
    pub backend: String,
}

/// A configuration: the agent's extra flags, or none for the baseline.
struct Config {
    name: &'static str,
    agent: Option<&'static [&'static str]>,
}

const CONFIGS: [Config; 2] = [
    Config {
        name: "enforce, 10 domain rules",
        agent: Some(&["--enforce"]),
    },
    Config {
        name: "enforce, 10 domain rules + --tls-capture",
        agent: Some(&["--enforce", "--tls-capture"]),
    },
];

/// One measurement: handshakes per second, download MB/s.
#[derive(Clone, Copy, Default)]
struct Sample {
    handshakes: f64,
    mbps: f64,
}

struct Setup {
    dir: PathBuf,
    cgroup: PathBuf,
    server: Child,
    port: u16,
    vardr: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Setup {
    fn new(vardr: PathBuf, size_mib: usize) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("vardr-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let o = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=bench",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(&dir)
            .output()?;
        if !o.status.success() {
            bail!("openssl req: {}", String::from_utf8_lossy(&o.stderr));
        }
        let mut f = std::fs::File::create(dir.join("big.bin"))?;
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..size_mib {
            f.write_all(&chunk)?;
        }
        let port = free_port()?;
        // -WWW serves files from its directory; outside the governed cgroup.
        let server = Command::new("openssl")
            .args(["s_server", "-WWW", "-quiet", "-cert", "cert.pem"])
            .args(["-key", "key.pem", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("openssl s_server did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let cgroup = crate::bench_syscalls::cgroup2_root()?
            .join(format!("vardr-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup)?;
        Ok(Self {
            dir,
            cgroup,
            server,
            port,
            vardr,
        })
    }

    /// Runs `script` with `sh -c` inside the governed cgroup; its stdout.
    fn governed(&self, script: &str) -> Result<String> {
        let o = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && {script}",
                self.cgroup.display()
            ))
            .stderr(Stdio::null())
            .output()?;
        if !o.status.success() {
            bail!("client failed: {script}");
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn sample(&self, seconds: u32) -> Result<Sample> {
        let port = self.port;
        let out = self.governed(&format!(
            "openssl s_time -connect 127.0.0.1:{port} -new -time {seconds} 2>/dev/null"
        ))?;
        // "N connections in T real seconds, B bytes read per connection"
        let handshakes = out
            .lines()
            .find(|l| l.contains("connections in") && l.contains("real seconds"))
            .and_then(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let n: f64 = w.first()?.parse().ok()?;
                let t: f64 = w.get(3)?.parse().ok()?;
                (t > 0.0).then(|| n / t)
            })
            .with_context(|| format!("no handshake count in openssl s_time output:\n{out}"))?;
        let out = self.governed(&format!(
            "curl -sk --resolve bench.test:{port}:127.0.0.1 https://bench.test:{port}/big.bin -o /dev/null -w '%{{speed_download}}'"
        ))?;
        let bps: f64 = out
            .trim()
            .parse()
            .with_context(|| format!("curl speed {out:?}"))?;
        Ok(Sample {
            handshakes,
            mbps: bps / 1e6,
        })
    }

    fn agent(&self, backend: &str, flags: &[&str]) -> Result<Child> {
        let policy = self.dir.join("policy.yaml");
        let names: Vec<String> = (0..10).map(|i| format!("blocked{i}.example")).collect();
        std::fs::write(
            &policy,
            format!(
                "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: bench-tls\nspec:\n  rules:\n    - name: names\n      hook: connect\n      action: deny\n      match: {{ domains: [{}] }}\n",
                names.join(", ")
            ),
        )?;
        let run = self.dir.join("run");
        let _ = std::fs::remove_dir_all(&run);
        let mut child = Command::new(&self.vardr)
            .arg("agent")
            .arg("--policy")
            .arg(&policy)
            .arg("--runtime-dir")
            .arg(&run)
            .arg("--scope-cgroup")
            .arg(&self.cgroup)
            .args(["--backend", backend, "--output", "none"])
            .args(flags)
            .env("VARDR_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let t = Instant::now();
        while !run.join("status.json").exists() {
            if child.try_wait()?.is_some() {
                bail!("agent exited during start");
            }
            if t.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("agent did not start in 300 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(child)
    }
}

fn stop(mut child: Child) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok(())
}

pub fn run(o: &Opts, vardr: &Path) -> Result<()> {
    println!("== TLS server names: handshakes and throughput ==");
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED bench tls: needs root");
        return Ok(());
    }
    for tool in ["openssl", "curl"] {
        if !have(tool) {
            println!("SKIPPED bench tls: {tool} is not installed");
            return Ok(());
        }
    }
    let (rounds, seconds, size) = if o.quick { (1, 1, 16) } else { (3, 3, 256) };
    let s = Setup::new(vardr.to_path_buf(), size)?;
    // A B A C A ... per round: each ratio against the baselines around it.
    let mut before = s.sample(seconds)?;
    let mut baselines = vec![before];
    let mut ratios: Vec<Vec<(f64, f64)>> = vec![Vec::new(); CONFIGS.len()];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for _ in 0..rounds {
        for (i, c) in CONFIGS.iter().enumerate() {
            let flags = c.agent.unwrap_or(&[]);
            let agent = s.agent(&o.backend, flags)?;
            let m = s.sample(seconds);
            stop(agent)?;
            let m = m?;
            let after = s.sample(seconds)?;
            let base = |f: fn(&Sample) -> f64| ((f(&before) + f(&after)) / 2.0).max(1e-9);
            ratios[i].push((
                m.handshakes / base(|x| x.handshakes),
                m.mbps / base(|x| x.mbps),
            ));
            samples[i].push(m);
            baselines.push(after);
            before = after;
        }
    }
    println!(
        "TLS with the agent reading server names ({rounds} round(s), {seconds} s of handshakes, {size} MiB download; median ratio to the no-agent baselines around each run)"
    );
    println!(
        "{:<44} {:>12} {:>8} {:>10} {:>8}",
        "configuration", "handshakes/s", "ratio", "MB/s", "ratio"
    );
    let hs = median(baselines.iter().map(|x| x.handshakes).collect());
    let mb = median(baselines.iter().map(|x| x.mbps).collect());
    println!(
        "{:<44} {:>12.0} {:>7.2}x {:>10.0} {:>7.2}x",
        "no agent (baseline)", hs, 1.0, mb, 1.0
    );
    let mut rows = vec![json!({"config": "no agent", "handshakes_per_sec": hs, "mb_per_sec": mb})];
    for (i, c) in CONFIGS.iter().enumerate() {
        let hs = median(samples[i].iter().map(|x| x.handshakes).collect());
        let mb = median(samples[i].iter().map(|x| x.mbps).collect());
        let rh = median(ratios[i].iter().map(|r| r.0).collect());
        let rm = median(ratios[i].iter().map(|r| r.1).collect());
        let spread = |f: fn(&(f64, f64)) -> f64| {
            let v: Vec<f64> = ratios[i].iter().map(f).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.2}-{hi:.2}")
        };
        println!(
            "{:<44} {:>12.0} {:>7.2}x {:>10.0} {:>7.2}x   spread {} / {}",
            c.name,
            hs,
            rh,
            mb,
            rm,
            spread(|r| r.0),
            spread(|r| r.1)
        );
        rows.push(json!({"config": c.name, "handshakes_per_sec": hs, "handshake_ratio": rh, "mb_per_sec": mb, "throughput_ratio": rm, "rounds": rounds}));
    }
    println!(
        "{}",
        json!({"benchmark": "tls", "quick": o.quick, "rows": rows})
    );
    Ok(())
}
