//! Developer tasks: `cargo xtask setup|agent|test|vm-test`.
mod bench;
mod bench_apparmor;
mod bench_auditd;
mod bench_syscalls;
mod bench_tls;
mod bpf_stats;
mod deb;
mod run;
mod vm;

use std::{path::PathBuf, time::Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use run::{cargo, Tally};

#[derive(Parser)]
#[command(about = "vardr developer tasks (setup, run, tests, VM tests)")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building (and with --vm, the VM tier) needs. Idempotent.
    Setup {
        /// Also install qemu, virtme-ng and the pinned test kernels.
        #[arg(long)]
        vm: bool,
    },
    /// Set up, build in release mode and run `vardr agent` with the shipped
    /// default policy in audit mode. Extra arguments go to `vardr agent`.
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole test suite: lint, unit, host integration and VM tiers.
    Test {
        /// Skip the VM tier.
        #[arg(long)]
        no_vm: bool,
        /// Kernels for the VM tier (see vm-test).
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Benchmarks: userspace pipeline throughput, and exec events end to end
    /// (root). Every number comes with its ratio to a baseline measured in
    /// the same run.
    Bench {
        /// A short run (what the test suite uses to keep it working).
        #[arg(long)]
        quick: bool,
        #[command(subcommand)]
        what: Option<BenchWhat>,
    },
    /// Build the Debian package (cargo-deb): the binary, vardr.service,
    /// /etc/vardr (policy and agent flags, as conffiles), man pages and
    /// shell completions. Prints the package's path.
    Deb(deb::DebArgs),
    /// Boot pinned Debian kernels under QEMU and run the end-to-end tests inside.
    VmTest {
        /// 6.1, 6.12, 6.12-nobpflsm (6.12 booted without BPF LSM) or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only these test binaries (of the kernel's list), e.g. vm_lsm.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Only tests whose name contains this (passed to each test binary).
        #[arg(long)]
        filter: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Per-syscall cost of enforcement: open, exec, connect under no agent,
    /// audit, and 10 / 1 000 / 100 000 rules per kind (root).
    Syscalls {
        /// Backend for the agent: auto, lsm or fallback.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Use already built binaries (the VM runner uses this).
        #[arg(long)]
        no_build: bool,
        /// Also measure under another agent started by this shell command.
        #[arg(long)]
        peer: Option<String>,
        /// Run it inside the Debian 6.12 VM, with the LSM backend.
        #[arg(long)]
        vm: bool,
    },
    /// What reading TLS server names costs: handshakes per second and
    /// download throughput against a local OpenSSL server, with no agent,
    /// with domain rules, and with --tls-capture (root).
    Tls {
        /// Backend for the agent: auto, lsm or fallback.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
}

/// `cargo xtask bench tls` on the release build.
fn bench_tls(quick: bool, backend: String) -> Result<()> {
    run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    bench_tls::run(
        &bench_tls::Opts { quick, backend },
        &workspace_root().join("target/release/vardr"),
    )
}

/// Errors are printed as their chain of causes, without the backtrace
/// anyhow would add under RUST_BACKTRACE: the tail of a CI log is then
/// the failure digest and the error, not twenty frames of `main`.
fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup { vm } => setup(vm),
        Task::Agent { args } => agent(args),
        Task::Test { no_vm, kernel } => test(no_vm, &kernel),
        Task::Bench { quick, what: None } => {
            setup(false)?;
            bench::run(&bench::BenchOpts { quick })
        }
        Task::Bench {
            quick,
            what:
                Some(BenchWhat::Syscalls {
                    backend,
                    no_build,
                    peer,
                    vm,
                }),
        } => {
            if vm {
                setup(true)?;
                return vm::bench(quick);
            }
            if !no_build {
                setup(false)?;
            }
            bench_syscalls::run(&bench_syscalls::Opts {
                quick,
                backend,
                no_build,
                peer,
            })
        }
        Task::Bench {
            quick,
            what: Some(BenchWhat::Tls { backend }),
        } => {
            setup(false)?;
            bench_tls(quick, backend)
        }
        Task::Deb(args) => {
            run::status(
                std::process::Command::new("bash")
                    .arg(workspace_root().join("scripts/setup.sh"))
                    .args(["build", "deb"]),
            )?;
            let deb = deb::build(&args)?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::VmTest {
            kernel,
            only,
            filter,
        } => {
            setup(true)?;
            let mut tally = Tally::default();
            let sel = vm::Selection {
                only,
                filter: filter.unwrap_or_default(),
            };
            vm::run(&kernel, &sel, &mut tally)?;
            tally.finish()
        }
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `vm` adds what the VM tier needs, the packaging test's cargo-deb too.
fn setup(vm: bool) -> Result<()> {
    let script = workspace_root().join("scripts/setup.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).arg("build");
    if vm {
        cmd.args(["vm", "deb"]);
    }
    run::status(&mut cmd)
}

/// `scripts/setup.sh vm deb` (or only `deb`) running beside the first
/// tiers; its output is kept and printed when it is waited for.
struct BackgroundSetup {
    child: std::io::Result<std::process::Child>,
    log: PathBuf,
}

impl BackgroundSetup {
    fn start(vm: bool) -> Self {
        let log = workspace_root().join("target/setup-background.log");
        let child = std::fs::create_dir_all(workspace_root().join("target"))
            .and_then(|()| std::fs::File::create(&log))
            .and_then(|f| {
                let mut cmd = std::process::Command::new("bash");
                cmd.arg(workspace_root().join("scripts/setup.sh"));
                if vm {
                    cmd.arg("vm");
                }
                cmd.arg("deb")
                    .stdin(std::process::Stdio::null())
                    .stdout(f.try_clone()?)
                    .stderr(f)
                    .spawn()
            });
        Self { child, log }
    }

    fn wait(self) -> Result<()> {
        let status = self.child?.wait()?;
        print!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        if !status.success() {
            bail!("scripts/setup.sh (VM and packaging tools) failed: {status}");
        }
        Ok(())
    }
}

fn agent(args: Vec<String>) -> Result<()> {
    println!("[agent] 1/3 setup: build tools (scripts/setup.sh build)");
    setup(false)?;
    println!("[agent] 2/3 build: vardr and its BPF programs, release mode (the first build takes a few minutes)");
    run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    let root = workspace_root();
    let mut cmd = std::process::Command::new(root.join("target/release/vardr"));
    cmd.arg("agent");
    if !args
        .iter()
        .any(|a| a == "--policy" || a.starts_with("--policy="))
    {
        cmd.arg("--policy").arg(root.join("policies/default.yaml"));
    }
    let mode = if args.iter().any(|a| a == "--enforce") {
        "enforce mode: matches are blocked"
    } else {
        "audit mode: matches are reported, nothing is blocked; `cargo xtask agent -- --enforce` blocks"
    };
    cmd.args(&args);
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!(
        "[agent] 3/3 run: {} ({mode}); events on stdout, Ctrl-C stops",
        line.join(" ")
    );
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    bail!("cannot start vardr: {err}")
}

fn test(no_vm: bool, kernel: &str) -> Result<()> {
    let start = Instant::now();
    let mut tally = Tally::default();
    let tier = |name: &str, tally: &mut Tally, f: &mut dyn FnMut(&mut Tally) -> Result<()>| {
        let t = Instant::now();
        println!("\n==== tier: {name} ====");
        let r = f(tally);
        let secs = t.elapsed().as_secs_f64();
        tally.times.push((name.to_string(), secs, r.is_ok()));
        println!(
            "==== tier {name}: {} in {secs:.1}s ====",
            if r.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(e) = &r {
            eprintln!("tier {name}: {e:#}");
            tally.record(&format!("tier {name}: {e:#}"));
        }
    };
    // The build tools first (lint needs them); the VM and packaging tools
    // (downloads, apt, cargo-deb) install in the background meanwhile and
    // are waited for before the tiers that use them.
    tier("setup", &mut tally, &mut |_| setup(false));
    let mut background = Some(BackgroundSetup::start(!no_vm));
    tier("lint", &mut tally, &mut |_| {
        run::status(cargo().args(["fmt", "--all", "--check"]))?;
        run::status(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "vardr-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The BPF crate only builds for the BPF target, with nightly.
        run::status(cargo().args([
            "+nightly",
            "clippy",
            "-p",
            "vardr-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
    });
    // Every test tier builds with the release profile: the dependencies
    // (cedar, tonic, aya, ...) then compile once for the tests, the
    // benchmarks and the VM guests (which run the release agent), instead of
    // once per profile. On two cores that is minutes of CI.
    tier("unit", &mut tally, &mut |t| {
        run::tests(
            cargo().args([
                "test",
                "--release",
                // Every test binary runs, so the tally counts them all.
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "vardr-ebpf",
                "--lib",
                "--bins",
            ]),
            t,
        )
    });
    tier(
        "setup (VM, packaging)",
        &mut tally,
        &mut |_| match background.take() {
            Some(b) => b.wait(),
            None => Ok(()),
        },
    );
    tier("host integration", &mut tally, &mut |t| {
        run::tests(
            cargo().args([
                "test",
                "--release",
                "--no-fail-fast",
                "-p",
                "vardr",
                // Integration tests only: the unit tier already ran the lib and bin tests.
                "--test",
                "*",
                "--",
                "--show-output",
                "--test-threads=1",
            ]),
            t,
        )
    });
    // Benchmarks keep working: short passes, no timing thresholds.
    tier("bench smoke", &mut tally, &mut |_| {
        bench::run(&bench::BenchOpts { quick: true })?;
        bench_tls(true, "auto".into())?;
        bench_syscalls::run(&bench_syscalls::Opts {
            quick: true,
            backend: "auto".into(),
            no_build: false,
            peer: None,
        })
    });
    if no_vm {
        println!("VM tier skipped (--no-vm)");
    } else {
        tier("vm", &mut tally, &mut |t| {
            vm::run(kernel, &vm::Selection::default(), t)
        });
    }
    println!("\n==== tier times ====");
    for (name, secs, ok) in &tally.times {
        println!(
            "  {name:<18} {secs:>7.1}s  {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    println!("  {:<18} {:>7.1}s", "total", start.elapsed().as_secs_f64());
    tally.finish()
}
