//! Host tier: the real binary, real BPF programs, on the running kernel.
//! Nothing here can deny or kill: the agent skeleton only observes.
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{agent::VARDR, require_root};
use nix::{sys::signal::Signal, unistd::Pid};

fn probe_json() -> serde_json::Value {
    let out = Command::new(&*VARDR)
        .args(["probe", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe --json prints JSON")
}

#[test]
fn probe_claims_only_what_loads() {
    if !require_root("probe_claims_only_what_loads") {
        return;
    }
    let r = probe_json();
    let uname = nix::sys::utsname::uname().unwrap();
    assert_eq!(r["kernel_release"], uname.release().to_str().unwrap());
    let prog_ok = |t: &str| {
        r["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["program_type"] == t)
            .unwrap_or_else(|| panic!("{t} not probed"))["ok"]
            .as_bool()
            .unwrap()
    };
    let backends = r["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3);
    for b in backends {
        let reason = b["reason"].as_str().unwrap();
        assert!(!reason.is_empty());
        if b["backend"] == "lsm" {
            assert!(prog_ok("lsm") && r["bpf_lsm_enabled"]["ok"] == true, "{b}");
        } else {
            // A weaker backend must say why LSM is out.
            assert!(reason.contains("no LSM"), "{b}");
        }
    }
    if !prog_ok("lsm") {
        eprintln!("host kernel refuses lsm programs; backends: {backends:?}");
    }
    // Nothing the probe mounted for itself stays mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let before = probe_json();
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts.lines().count(), after.lines().count(), "{before}");
}

#[test]
fn probe_table_names_every_hook() {
    let out = Command::new(&*VARDR).arg("probe").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["kernel", "program types", "file", "exec", "network"] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

/// Ids of loaded programs with this name (ids are never reused soon, so
/// programs of earlier agents still being freed do not confuse the test).
fn program_ids(name: &str) -> std::collections::HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .map(|p| p.id())
        .collect()
}

#[test]
fn agent_prints_exec_events_and_detaches_on_sigterm() {
    if !require_root("agent_prints_exec_events_and_detaches_on_sigterm") {
        return;
    }
    let before = program_ids("vardr_exec");
    let runtime = std::env::temp_dir().join(format!("vardr-host-agent-{}", std::process::id()));
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/default.yaml");
    let mut agent = Command::new(&*VARDR)
        .args(["agent", "--policy", policy, "--runtime-dir"])
        .arg(&runtime)
        .env("VARDR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let stdout = agent.stdout.take().unwrap();
    let stderr = agent.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((true, l));
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send((false, l));
        }
    });
    // Loading verifies every program: in the VM tier, under software
    // emulation beside another guest, that takes tens of seconds.
    let deadline = Instant::now() + Duration::from_secs(180);
    let wait_for = |pred: &dyn Fn(bool, &str) -> bool| -> Option<String> {
        while let Ok((is_out, l)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if pred(is_out, &l) {
                return Some(l);
            }
        }
        None
    };
    wait_for(&|is_out, l| !is_out && l.contains("agent running"))
        .expect("agent never became ready");
    let ours: Vec<u32> = program_ids("vardr_exec")
        .difference(&before)
        .copied()
        .collect();
    assert_eq!(ours.len(), 1, "the agent's exec program is not loaded");

    let child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    let mut child = child;
    child.wait().unwrap();
    let line = wait_for(&|is_out, l| is_out && l.contains(&format!("\"pid\":{pid},")))
        .expect("no exec event for /bin/true");
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    let p = &ev["process_exec"]["process"];
    assert_eq!(p["binary"], "/bin/true");
    assert_eq!(p["pid"], pid);
    assert_eq!(p["uid"], 0);
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    assert!(ev["node_name"].is_string());

    nix::sys::signal::kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    // The kernel frees a released program asynchronously (RCU), so allow it a moment.
    let gone = Instant::now() + Duration::from_secs(10);
    while program_ids("vardr_exec").contains(&ours[0]) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !program_ids("vardr_exec").contains(&ours[0]),
        "program left loaded"
    );
    assert!(
        !runtime.join("status.json").exists(),
        "status file left behind"
    );
    let _ = std::fs::remove_dir_all(&runtime);
}

#[test]
fn agent_without_root_fails_with_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&*VARDR);
    cmd.args([
        "agent",
        "--policy",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/default.yaml"),
    ]);
    if nix::unistd::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
