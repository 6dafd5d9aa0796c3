//! VM tier: boot pinned Debian kernels with virtme-ng under QEMU (software
//! emulation; no KVM here) over the host's root filesystem, and run the
//! integration test binaries inside, VM-only tests included.
use std::{
    collections::VecDeque,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::run::{cargo, strip_ansi, Tally};

struct Variant {
    name: &'static str,
    /// Directory under the kernel cache (see scripts/setup.sh).
    kernel: &'static str,
    /// Extra kernel command line.
    append: Option<&'static str>,
    /// Backend the probe must report for every hook on this boot.
    expect: &'static str,
    /// Integration test binaries to run (by name prefix): each backend's
    /// tests run where that backend is the one the kernel offers.
    tests: &'static [&'static str],
    /// Tests of those binaries left out on this boot (`--skip`).
    skip: &'static [&'static str],
}

const VARIANTS: &[Variant] = &[
    // The tier is CPU-bound under emulation and boots two kernels at a time
    // (6.1 then the fallback boot beside 6.12): the lists balance the two
    // lanes. Every LSM scenario runs on 6.1 or 6.12, and the bypass rows
    // whose hooks differ between the two kernels on both.
    Variant {
        name: "6.1",
        kernel: "6.1",
        append: None,
        expect: "lsm",
        // The LSM scenarios that do not run on 6.12, and the whole bypass
        // catalog (which denies files and execs through every hook).
        tests: &["vm_lsm", "vm_bypass_lsm"],
        skip: &[
            "lsm_server_names",
            "lsm_shipped_policies",
            "lsm_reload_under_load",
            "lsm_network_rules",
            "lsm_reload",
            "lsm_tracing_policies",
            "lsm_file_rules",
            "lsm_exec_rules",
            "lsm_scope_escape",
        ],
    },
    Variant {
        name: "6.12",
        kernel: "6.12",
        append: None,
        expect: "lsm",
        // The Debian package under systemd, persistence, the TLS scenario,
        // the LSM scenarios that exercise each hook kind, the kernel side
        // of a reload and the scope escape (cgroup hooks), and of the bypass catalog the rows whose hooks
        // differ between 6.1 and 6.12 (file_truncate, backing files of
        // overlays, executable mappings). Layer 2 (Cedar) runs on the host
        // only: its kernel side is Layer 1's maps.
        tests: &[
            "vm_lsm",
            "vm_bypass_lsm",
            "vm_package",
            "vm_persist",
            "host_agent",
        ],
        skip: &[
            "lsm_audit_mode",
            "vm_kprobe_hooks",
            "vm_skb_kprobe",
            "lsm_bypass_attempts",
            "lsm_exempt_pid_reuse",
            "lsm_exemptions",
            "lsm_installed_after_start",
            "vm_exec_allowlist",
            "vm_exempt_takeover",
            "vm_identity_follows_rename",
            "vm_interpreters",
        ],
    },
    // Same kernel with BPF LSM left out of the LSM list: the fallback must take over.
    Variant {
        name: "6.12-nobpflsm",
        kernel: "6.12",
        append: Some("lsm=lockdown,capability,landlock,yama,apparmor"),
        expect: "fallback",
        // The package again: the service's system call filter with the
        // fallback's fanotify and tracepoints. Of vm_lsm only the probe
        // check (its scenarios would skip: no LSM here).
        tests: &["vm_lsm", "enforce_fallback", "vm_package"],
        skip: &["lsm_"],
    },
];

/// Virtual CPUs per guest (`VARDR_VM_CPUS`, default 1). Under software
/// emulation a kernel that patches its own code (BPF trampolines attached
/// and detached, static keys at boot) on one vCPU while another runs it
/// died now and then: a stale breakpoint hit after the patch completed
/// ("Oops: int3" in `bpf_lsm_file_open`, a boot panic in
/// `sched_clock_cpu`). One vCPU has no such race, and two guests side by
/// side keep both host cores busy.
fn vm_cpus() -> String {
    std::env::var("VARDR_VM_CPUS")
        .ok()
        .filter(|c| c.parse::<u32>().is_ok_and(|n| n > 0))
        .unwrap_or_else(|| "1".into())
}

fn kernel_cache() -> PathBuf {
    std::env::var_os("VARDR_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vardr/kernels"))
}

fn vmlinuz(kernel: &str) -> Result<PathBuf> {
    let dir = kernel_cache().join(kernel);
    let version = fs::read_to_string(dir.join(".ready")).with_context(|| {
        format!(
            "kernel {kernel} not in {} (run cargo xtask setup --vm)",
            dir.display()
        )
    })?;
    Ok(dir
        .join("root/boot")
        .join(format!("vmlinuz-{}", version.trim())))
}

/// Builds the binaries and returns the integration test executables
/// (release profile, as the host tiers: the same build serves both).
fn build_tests() -> Result<Vec<PathBuf>> {
    let out = cargo()
        .args([
            "test",
            "--release",
            "-p",
            "vardr",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut exes = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(exe)) = (is_test, msg["executable"].as_str()) {
            exes.push(PathBuf::from(exe));
        }
    }
    if exes.is_empty() {
        bail!("no integration test binaries found");
    }
    Ok(exes)
}

/// The guest kernel panicked before any test ran (no result to count).
#[derive(Debug)]
struct EarlyPanic(String);

impl std::fmt::Display for EarlyPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the kernel panicked before the tests ran: {}", self.0)
    }
}

impl std::error::Error for EarlyPanic {}

/// A subset of the VM tier, for development (the suite runs everything).
#[derive(Default)]
pub struct Selection {
    /// Test binaries by name (empty: each kernel's whole list).
    pub only: Vec<String>,
    /// Test name filter handed to the binaries.
    pub filter: String,
}

pub fn run(which: &str, sel: &Selection, tally: &mut Tally) -> Result<()> {
    let selected: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| which == "all" || v.name == which)
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = VARIANTS.iter().map(|v| v.name).collect();
        bail!("unknown kernel {which}; choose one of {names:?} or all");
    }
    let exes = build_tests()?;
    let root = crate::workspace_root();
    // The packaging test installs revision 1, then upgrades to revision 2.
    let package_test = |v: &&Variant| {
        v.tests.contains(&"vm_package")
            && (sel.only.is_empty() || sel.only.iter().any(|o| o == "vm_package"))
    };
    let debs = if selected.iter().any(package_test) {
        build_debs(&root.join("target/vm-debs"))?
    } else {
        String::new()
    };
    // The guests run the release build (what ships; a debug build spends
    // most of an agent start parsing BTF and relocating programs, which
    // emulation makes seconds). The test binaries find it in VARDR_BIN.
    crate::run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    let vardr = root.join("target/release/vardr");
    let logs = root.join("target/vm-logs");
    fs::create_dir_all(&logs)?;
    // Each guest has one vCPU (see `vm_cpus`): two boots side by side keep
    // both host cores busy.
    let jobs = std::env::var("VARDR_VM_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|&j| j > 0)
        .unwrap_or(2);
    println!("booting {} kernel(s), {jobs} at a time", selected.len());
    let queue = std::sync::Mutex::new(selected.iter().copied().collect::<VecDeque<_>>());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some(v) = next else { break };
                let t = Instant::now();
                println!(
                    "---- VM {} (expect backend {}): booting ----",
                    v.name, v.expect
                );
                let log = logs.join(format!("{}.log", v.name));
                let mut lines = Vec::new();
                let mut outcome = boot(v, sel, &vardr, &debs, &exes, &log, &mut lines);
                // A kernel that dies while booting under software emulation
                // (seen once: an early exception before any test ran) gets
                // one more boot.
                if let Err(e) = &outcome {
                    if e.downcast_ref::<EarlyPanic>().is_some() {
                        println!("---- VM {}: {e}; booting it again ----", v.name);
                        lines.clear();
                        outcome = boot(v, sel, &vardr, &debs, &exes, &log, &mut lines);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                if let Ok(mut d) = done.lock() {
                    d.push((v.name, lines, outcome, secs));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|d| VARIANTS.iter().position(|v| v.name == d.0));
    // A kernel with no outcome (its worker died) is a failure, never a pass.
    let mut failed: Vec<&str> = selected
        .iter()
        .map(|v| v.name)
        .filter(|n| !done.iter().any(|d| d.0 == *n))
        .collect();
    for (name, lines, outcome, secs) in done {
        // Counted here, one kernel after the other, so each test binary's
        // summary meets its own SKIPPED lines.
        for l in &lines {
            tally.line(l);
        }
        match outcome {
            Ok(()) => println!("---- VM {name}: ok in {secs:.1}s ----"),
            Err(e) => {
                println!("---- VM {name}: FAILED in {secs:.1}s: {e:#} ----");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        tally.tier_failures += 1;
        bail!(
            "VM tier failed on {failed:?} (full logs in {})",
            logs.display()
        );
    }
    Ok(())
}

/// Two revisions of the package (dev profile, as the tests): the paths,
/// colon-separated, for `VARDR_TEST_DEBS`.
fn build_debs(dir: &Path) -> Result<String> {
    let _ = fs::remove_dir_all(dir);
    let mut paths = Vec::new();
    for revision in ["1", "2"] {
        let deb = crate::deb::build(&crate::deb::DebArgs {
            profile: "release".into(),
            output: Some(dir.join(revision)),
            revision: Some(revision.into()),
        })?;
        paths.push(deb.display().to_string());
    }
    Ok(paths.join(":"))
}

fn boot(
    v: &Variant,
    sel: &Selection,
    vardr: &Path,
    debs: &str,
    exes: &[PathBuf],
    log: &Path,
    lines: &mut Vec<String>,
) -> Result<()> {
    let kernel = vmlinuz(v.kernel)?;
    let mut script = format!(
        // The agent runs from a tmpfs of the guest: from the host's files
        // (9p) every start read its 30 MB in again under emulation (an
        // adopting restart took 4 s instead of 2). RUSTC_BOOTSTRAP lets the
        // stable-built test harness print each test's duration
        // (`--report-time`): where the VM tier's time goes.
        "bin=/run/vardr-test-bin; mkdir -p $bin && mount -t tmpfs -o size=256m vardr-test-bin $bin && cp {} $bin/vardr || {{ echo 'cannot copy the agent into the guest tmpfs'; exit 1; }}; \
         export VARDR_EXPECT_BACKEND={} VARDR_TEST_DEBS={debs} VARDR_BIN=$bin/vardr RUST_BACKTRACE=1 RUSTC_BOOTSTRAP=1; rc=0; uname -r; $bin/vardr probe || rc=1; ",
        vardr.display(),
        v.expect,
    );
    let wanted = |exe: &PathBuf| {
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        v.tests
            .iter()
            .filter(|t| sel.only.is_empty() || sel.only.iter().any(|o| o == *t))
            .any(|t| name.starts_with(&format!("{t}-")))
    };
    let skip: String = v.skip.iter().map(|t| format!(" --skip {t}")).collect();
    for exe in exes.iter().filter(|e| wanted(e)) {
        script.push_str(&format!(
            "{} --include-ignored --test-threads=1 --show-output --color=never -Z unstable-options --report-time{skip} {} || rc=1; ",
            exe.display(),
            sel.filter
        ));
    }
    // The console can lose its last lines at power-off: the result also goes
    // to a file in a directory shared read-write with the guest.
    let out_dir = log.with_extension("out");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
    script.push_str(&format!(
        "echo $rc > {}/result; echo VARDR_VM_RESULT=$rc; sync; sleep 1",
        out_dir.display()
    ));
    let mut cmd = Command::new("timeout");
    cmd.args([
        "--kill-after=10",
        "2400",
        "vng",
        "-v",
        "--disable-kvm",
        "--memory",
        "1G",
        "--cpus",
    ])
    .arg(vm_cpus())
    .arg("-r")
    .arg(&kernel)
    .arg(format!("--rwdir={}", out_dir.display()));
    // No KASLR: the one early boot panic seen under emulation came right
    // after its setup, and the tests do not need it.
    let append = match v.append {
        Some(a) => format!("nokaslr {a}"),
        None => "nokaslr".to_string(),
    };
    cmd.arg("--append").arg(append);
    // The command travels base64-encoded on the kernel command line, which
    // holds 2048 bytes on x86: a long test list overflowed it (the kernel
    // died at boot). Run a script from the shared directory instead.
    let run = out_dir.join("run.sh");
    fs::write(&run, &script)?;
    cmd.arg("--").arg(format!("sh {}", run.display()));
    // The guest console arrives on vng's stderr: read both through one pipe.
    let (reader, writer) = std::io::pipe()?;
    // Its own process group, so a hung boot can be ended with everything
    // it started (timeout, vng, qemu).
    use std::os::unix::process::CommandExt;
    cmd.current_dir(crate::workspace_root())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn().context("spawn vng (is virtme-ng installed?)")?;
    drop(cmd); // closes our copies of the pipe's write end
    let mut full = String::new();
    let mut result = None;
    let (mut tests_started, mut panic) = (false, None);
    for line in BufReader::new(reader).lines() {
        let line = strip_ansi(&line?);
        full.push_str(&line);
        full.push('\n');
        if let Some(rc) = line.trim().strip_prefix("VARDR_VM_RESULT=") {
            result = rc.parse::<i32>().ok();
        }
        tests_started |= line.trim_start().starts_with("running ");
        if !tests_started
            && panic.is_none()
            && (line.contains("PANIC: early exception")
                || line.contains("Kernel panic - not syncing"))
        {
            panic = Some(line.trim().to_string());
            // The process group this function created (timeout, vng, qemu).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Kernel log lines go to the log file only; each line says which
        // kernel it comes from (boots run side by side).
        if !line.starts_with('[') {
            println!("  [{}] {line}", v.name);
        }
        lines.push(line);
    }
    let status = child.wait()?;
    fs::write(log, &full)?;
    if let Some(p) = panic {
        return Err(EarlyPanic(p).into());
    }
    let result = result.or_else(|| {
        fs::read_to_string(out_dir.join("result"))
            .ok()
            .and_then(|r| r.trim().parse().ok())
    });
    match result {
        Some(0) => Ok(()),
        Some(rc) => bail!("tests in the VM failed (rc {rc}); log: {}", log.display()),
        None => bail!(
            "VM did not report a result (vng {status}); log: {}",
            log.display()
        ),
    }
}

/// `cargo xtask bench syscalls --vm`: the syscall benchmark with the LSM
/// backend inside the 6.12 VM, where AppArmor runs too (its peer is
/// measured there). Timings are under software emulation: only the ratios
/// of the same run mean anything.
pub fn bench(quick: bool) -> Result<()> {
    crate::run::status(cargo().args(["build", "--release", "-p", "vardr"]))?;
    crate::run::status(cargo().args(["bench", "-p", "vardr", "--bench", "syscalls", "--no-run"]))?;
    crate::run::status(cargo().args(["build", "-p", "xtask"]))?;
    let root = crate::workspace_root();
    let kernel = vmlinuz("6.12")?;
    let xtask = root.join("target/debug/xtask");
    // vng's own status says nothing of the guest's script (it is 255 after
    // a clean power-off here): the script's status comes back in a file.
    let out_dir = root.join("target/vm-logs/bench.out");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
    let result = out_dir.join("result");
    let script = format!(
        "cd {} && {} bench {} syscalls --backend lsm --no-build; echo $? > {}; sync",
        root.display(),
        xtask.display(),
        if quick { "--quick" } else { "" },
        result.display()
    );
    let st = Command::new("vng")
        .args(["-v", "--disable-kvm", "--memory", "2G", "--cpus"])
        .arg(vm_cpus())
        .arg("-r")
        .arg(&kernel)
        .arg(format!("--rwdir={}", out_dir.display()))
        .arg("--")
        .arg(&script)
        .current_dir(&root)
        .status()?;
    match fs::read_to_string(&result).map(|r| r.trim().to_string()) {
        Ok(rc) if rc == "0" => {}
        Ok(rc) => bail!("the benchmark failed in the VM (exit status {rc})"),
        Err(_) => bail!("the VM reported no result (vng {st})"),
    }
    Ok(())
}
