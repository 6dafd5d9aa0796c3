//! Persistent enforcement scenarios (`--keep-enforcing`), shared by the
//! host tier (fallback backend) and the VM tier (LSM backend). Every test
//! pins into a bpffs of its own, mounted on a temp directory and unmounted
//! on drop: whatever happens, its pins (and so its programs) go with it.
use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;
use vardr::probe::Backend;

use super::{agent::AgentRun, agent::VARDR, sh_in, test_cgroup, TempDir};

/// A private bpffs instance; unmounting it drops every pin in it.
pub struct Bpffs {
    dir: TempDir,
}

impl Bpffs {
    pub fn mount(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .expect("mount a bpffs for the test");
        Self { dir }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("vardr")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// Child processes of a test, stopped (STOP file, then SIGKILL) on drop.
struct Loops {
    stop: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Loops {
    /// Creates the stop file and collects each loop's "tries failures" line.
    fn finish(&mut self) -> Vec<(&'static str, u64, u64, String)> {
        std::fs::write(&self.stop, "").unwrap();
        let mut out = Vec::new();
        for (name, mut c) in self.children.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(s) = c.try_wait().unwrap() {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut text = String::new();
            if let Some(mut o) = c.stdout.take() {
                let _ = o.read_to_string(&mut text);
            }
            let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (tries, bad) = match (f.next().flatten(), f.next().flatten()) {
                (Some(t), Some(b)) => (t, b),
                // No report: the loop died (killed, crashed) or hung.
                _ => (0, u64::MAX),
            };
            out.push((name, tries, bad, format!("{status:?} {text}")));
        }
        out
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        for (_, c) in &mut self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

fn spawn_in(cgroup: &Path, script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && {script}",
            cgroup.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loop")
}

fn policy(name: &str, dir: &Path, port: u16, extra: &str) -> String {
    let d = dir.display();
    format!(
        "apiVersion: vardr.dev/v1
kind: Policy
metadata:
  name: {name}
spec:
  rules:
    - name: no-secret
      hook: file_open
      action: deny
      match: {{ paths: [{d}/secret.txt] }}
    - name: no-vault
      hook: file_open
      action: deny
      match: {{ prefixes: [{d}/vault] }}
    - name: no-tool
      hook: exec
      action: deny
      match: {{ binaries: [{d}/denied-true] }}
    - name: no-port
      hook: connect
      action: deny
      match: {{ cidrs: [127.0.0.1/32], ports: [{port}], protocol: tcp }}
{extra}"
    )
}

fn agent(b: Backend, cg: &Path, pins: &Path, policy: &str) -> AgentRun {
    agent_with(b, cg, pins, policy, "json")
}

/// `output`: "none" keeps the loops' flood of events off the test's pipe.
fn agent_with(b: Backend, cg: &Path, pins: &Path, policy: &str, output: &str) -> AgentRun {
    agent_args(b, cg, pins, policy, output, &[])
}

fn agent_args(
    b: Backend,
    cg: &Path,
    pins: &Path,
    policy: &str,
    output: &str,
    extra: &[&str],
) -> AgentRun {
    let (cg, pins) = (cg.to_str().unwrap(), pins.to_str().unwrap());
    let backend = if b == Backend::Lsm { "lsm" } else { "fallback" };
    let mut args = vec![
        "--backend",
        backend,
        "--scope-cgroup",
        cg,
        "--enforce",
        "--keep-enforcing",
        "--pin-dir",
        pins,
        "--output",
        output,
    ];
    args.extend_from_slice(extra);
    AgentRun::start(policy, &args)
}

fn sigkill(a: &mut AgentRun) {
    kill(Pid::from_raw(a.pid() as i32), Signal::SIGKILL).unwrap();
    a.stop();
}

fn pinned_sets(pins: &Path) -> Vec<String> {
    std::fs::read_dir(pins)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn status_json(pins: &Path, runtime: &Path) -> Value {
    let out = Command::new(&*VARDR)
        .args(["status", "--json", "--runtime-dir"])
        .arg(runtime)
        .arg("--pin-dir")
        .arg(pins)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "vardr status: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The proof the issue asks for: denied open, exec and connect tried in
/// loops (and an allowed open that must never fail) inside the test
/// cgroup, while the agent is restarted 20 times (10 in the VM tier, every
/// kind of restart still among them): clean stops, SIGKILLs, restarts with
/// a changed policy that keeps the same denials, fresh programs, other
/// map sizes and a reload in between.
/// `restarts` of the agent; `pause` (seconds) between tries of each loop
/// (the VM tier runs under software emulation).
pub fn restarts_without_gap(b: Backend, restarts: usize, pause: f64) {
    let bpffs = Bpffs::mount("bpffs");
    let pins = bpffs.pin_dir();
    let dir = TempDir::new("persist");
    let d = dir.path();
    std::fs::write(d.join("secret.txt"), "secret\n").unwrap();
    std::fs::write(d.join("allowed.txt"), "allowed\n").unwrap();
    std::fs::create_dir(d.join("vault")).unwrap();
    std::fs::copy("/bin/true", d.join("denied-true")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })
    };
    let cg = test_cgroup("persist");
    let policy_a = policy("persist-a", d, port, "");
    let mut current = agent(b, &cg.path, &pins, &policy_a);
    assert_eq!(pinned_sets(&pins).len(), 1, "one set pinned");

    // A second agent for the same scope must not take a running agent's set.
    let second = Command::new(&*VARDR)
        .args(["agent", "--policy"])
        .arg(current.policy_path())
        .arg("--runtime-dir")
        .arg(dir.join("second-run"))
        .args(["--backend", "fallback", "--scope-cgroup"])
        .arg(&cg.path)
        .arg("--pin-dir")
        .arg(&pins)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("belongs to a running agent"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let stop = d.join("STOP");
    let (s, dd) = (stop.display(), d.display());
    let mut loops = Loops {
        stop: stop.clone(),
        children: Vec::new(),
    };
    // Denied open and exec: a try that succeeded is a breach (the fallback
    // kills the process instead, the LSM refuses: no success either).
    loops.children.push((
        "denied open+exec",
        spawn_in(
            &cg.path,
            &format!(
                "exec python3 -c '
import os, subprocess, time
n = b = 0
q = subprocess.DEVNULL
while not os.path.exists(\"{s}\"):
    for argv in ([\"/bin/cat\", \"{dd}/secret.txt\"], [\"{dd}/denied-true\"]):
        try:
            if subprocess.call(argv, stdout=q, stderr=q) == 0:
                b += 1
        except OSError:
            pass
    n += 1
    time.sleep({pause})
print(n, b)'"
            ),
        ),
    ));
    loops.children.push((
        "denied connect",
        spawn_in(
            &cg.path,
            &format!(
                "exec python3 -c '
import os, socket, time
n = b = 0
while not os.path.exists(\"{s}\"):
    c = socket.socket()
    c.settimeout(2)
    try:
        c.connect((\"127.0.0.1\", {port}))
        b += 1
    except OSError:
        pass
    c.close()
    n += 1
    time.sleep(0.002 + {pause})
print(n, b)'"
            ),
        ),
    ));
    // The allowed open: one long-lived process, which must never fail or be killed.
    loops.children.push((
        "allowed open",
        spawn_in(
            &cg.path,
            &format!(
                "exec python3 -c '
import os, time
n = f = 0
while not os.path.exists(\"{s}\"):
    try:
        with open(\"{dd}/allowed.txt\") as fh:
            if fh.read() != \"allowed\\n\":
                f += 1
    except OSError:
        f += 1
    n += 1
    time.sleep(0.001 + {pause})
print(n, f)'"
            ),
        ),
    ));
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut late_checked = false;
    let mut unattended_seen = false;
    // From here on the agents size their rule maps differently (a set of
    // another layout): the 15th of 20 restarts, the 8th of 10.
    let resize_at = if restarts >= 15 {
        14
    } else {
        restarts.saturating_sub(3)
    };
    for i in 0..restarts {
        let changed = i % 4 >= 2;
        let crash = i % 2 == 1;
        // Mostly the next agent adopts the pinned set (same build); every
        // fifth loads fresh programs beside it, as an upgrade does. From
        // `resize_at` on, the agents size their rule maps differently:
        // that set has another layout and cannot be adopted.
        let resized = restarts >= 8 && i == resize_at;
        let fresh = i % 5 == 4 || resized;
        let set_before = pinned_sets(&pins);
        if crash {
            sigkill(&mut current);
        } else {
            assert!(current.stop().success(), "clean stop {i}");
        }
        // With no agent, the pins enforce. The first time, leave a denied
        // open in the ring buffer for the next agent to deliver late.
        let late = d.join("vault").join(format!("late-{i}"));
        if !late_checked {
            std::fs::write(&late, "x").unwrap();
            let o = sh_in(&cg.path, &format!("cat {} >/dev/null", late.display()));
            assert!(!o.status.success(), "denied while no agent runs");
            let st = status_json(&pins, &current.runtime_dir());
            let p = &st["pinned"][0];
            assert_eq!(st["running"], false, "{st}");
            assert_eq!(p["agent"], "down", "{st}");
            assert_eq!(p["policy_name"], "persist-a", "{st}");
            assert!(p["policy_hash"].as_str().is_some_and(|h| h.len() == 16));
            assert!(p["unattended_secs"].is_u64(), "{st}");
        }
        let pol = if changed {
            policy(
                &format!("persist-b{i}"),
                d,
                port,
                &format!(
                    "    - name: extra-{i}\n      hook: file_open\n      action: alert\n      match: {{ paths: [{dd}/other-{i}] }}\n"
                ),
            )
        } else {
            policy_a.clone()
        };
        let output = if late_checked { "none" } else { "json" };
        let t = Instant::now();
        let mut extra = Vec::new();
        if restarts >= 8 && i >= resize_at {
            extra.extend(["--max-rules", "65536"]);
        }
        if fresh && !resized {
            extra.push("--reload-programs");
        }
        current = agent_args(b, &cg.path, &pins, &pol, output, &extra);
        eprintln!(
            "restart {i} ({}, {}): running after {} ms",
            if crash { "SIGKILL" } else { "clean stop" },
            if resized {
                "maps resized"
            } else if fresh {
                "fresh programs"
            } else {
                "adopted"
            },
            t.elapsed().as_millis()
        );
        let took = current.log_line("took over pinned set");
        if fresh {
            assert!(took.contains("programs are detached"), "{took}");
            assert_ne!(pinned_sets(&pins), set_before, "a new set replaced the old");
        } else {
            assert!(took.contains("adopted its programs"), "{took}");
            assert_eq!(pinned_sets(&pins), set_before, "the set was adopted");
        }
        if took.contains("unattended_s=") && !took.contains("unattended_s=-") {
            unattended_seen = true;
        }
        if !late_checked {
            let late_name = late.to_str().unwrap().to_string();
            let ev = current.policy_event("queued while no agent ran", |e| {
                e["args"][0]["file_arg"]["path"] == late_name.as_str()
            });
            assert_eq!(ev["rule"], "no-vault", "named from the old set's catalog");
            assert_eq!(ev["verdict"], "deny");
            late_checked = true;
        }
        let sets = pinned_sets(&pins);
        assert_eq!(
            sets.len(),
            1,
            "the old set is gone after the takeover: {sets:?}"
        );
        if i == restarts / 2 {
            // A reload of a pinned set: the same generation switch.
            let st = current.reload();
            assert_eq!(st["last_reload"]["ok"], true, "{st}");
        }
    }
    let took = started.elapsed();
    let results = loops.finish();
    done.store(true, Ordering::Relaxed);
    let _ = acceptor.join();
    eprintln!(
        "{restarts} restarts in {:.1} s; loops: {results:?}",
        took.as_secs_f64()
    );
    for (name, tries, bad, raw) in &results {
        assert!(*tries > 0, "{name} never ran: {raw}");
        assert_eq!(*bad, 0, "{name}: {bad} of {tries} tries went wrong: {raw}");
    }
    assert!(unattended_seen, "the takeover reports unattended time");

    // The last agent leaves its set pinned; `vardr unpin` lifts it.
    assert!(current.stop().success());
    let o = sh_in(&cg.path, &format!("cat {dd}/secret.txt"));
    assert!(!o.status.success(), "still enforced with no agent");
    let out = Command::new(&*VARDR)
        .arg("unpin")
        .arg("--pin-dir")
        .arg(&pins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pinned_sets(&pins).is_empty());
    // The kernel detaches a released LSM link after an RCU grace period
    // (seconds under emulation, with a dozen LSM programs): wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let o = loop {
        let o = sh_in(&cg.path, &format!("cat {dd}/secret.txt"));
        if o.status.success() || std::time::Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(o.status.success(), "unpin lifts the rules");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "secret\n");
    drop(bpffs);
}

/// Fallback with `--keep-enforcing`: while the agent runs, its fanotify
/// group decides file opens (EPERM, also for a relative path the open
/// tracepoints cannot resolve); the pinned tracepoints stand by and take
/// over the moment the agent dies, not when its lease would lapse.
pub fn fanotify_lease_handover() {
    let bpffs = Bpffs::mount("bpffs");
    let pins = bpffs.pin_dir();
    let dir = TempDir::new("lease");
    let d = dir.path();
    let dd = d.display();
    std::fs::write(d.join("secret.txt"), "secret\n").unwrap();
    let cg = test_cgroup("lease");
    let mut a = agent(
        Backend::Fallback,
        &cg.path,
        &pins,
        &policy("lease", d, 9, ""),
    );
    let st = status_json(&pins, &a.runtime_dir());
    let file = &st["hooks"][0];
    assert_eq!(file["hook"], "file", "{st}");
    assert!(
        file["reason"].as_str().unwrap_or("").contains("stand by"),
        "{st}"
    );
    for (what, script) in [
        ("absolute path", format!("cat {dd}/secret.txt")),
        ("relative path", format!("cd {dd} && cat ./secret.txt")),
    ] {
        let o = sh_in(&cg.path, &script);
        assert!(!o.status.success(), "{what}: read");
        assert!(
            !super::killed(&o),
            "{what}: killed, not refused (tracepoints did not stand by)"
        );
        assert!(
            super::stderr(&o).contains("Operation not permitted"),
            "{what}: {}",
            super::stderr(&o)
        );
    }
    let killed_at = Instant::now();
    sigkill(&mut a);
    let o = sh_in(&cg.path, &format!("cat {dd}/secret.txt"));
    let after = killed_at.elapsed();
    assert!(
        super::killed(&o),
        "after the agent died: {:?} {}",
        o.status,
        super::stderr(&o)
    );
    // Well inside the lease's 2 s: the exit program ended it.
    assert!(
        after < Duration::from_millis(1500),
        "checked too late to tell ({after:?})"
    );
    drop(bpffs);
}

/// Without --keep-enforcing nothing is pinned, and stopping lifts the rules.
pub fn no_keep_leaves_nothing(b: Backend) {
    let bpffs = Bpffs::mount("bpffs");
    let pins = bpffs.pin_dir();
    let dir = TempDir::new("nokeep");
    let d = dir.path();
    std::fs::write(d.join("secret.txt"), "secret\n").unwrap();
    let cg = test_cgroup("nokeep");
    let backend = if b == Backend::Lsm { "lsm" } else { "fallback" };
    let mut a = AgentRun::start(
        &policy("nokeep", d, 9, ""),
        &[
            "--backend",
            backend,
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--enforce",
            "--pin-dir",
            pins.to_str().unwrap(),
        ],
    );
    let o = sh_in(&cg.path, &format!("cat {}/secret.txt", d.display()));
    assert!(!o.status.success());
    assert!(
        pinned_sets(&pins).is_empty(),
        "nothing pinned without the flag"
    );
    assert!(a.stop().success());
    let o = sh_in(&cg.path, &format!("cat {}/secret.txt", d.display()));
    assert!(o.status.success(), "stopping lifts the rules");
}

/// An old set with another layout version is removed without its maps
/// being read; a set of another scope is left alone.
pub fn other_layout_and_other_scope(b: Backend) {
    use vardr::pin::{PinDir, SetMeta};
    let bpffs = Bpffs::mount("bpffs");
    let pins = PinDir::new(bpffs.pin_dir());
    pins.prepare().unwrap();
    let cg = test_cgroup("layout");
    let fake = |id: &str, layout: u32, scope: u64| SetMeta {
        layout,
        agent_version: "0.0.1".into(),
        set_id: id.into(),
        policy_name: "old".into(),
        policy_path: "/old.yaml".into(),
        policy_hash: "0".repeat(16),
        mode: "enforce".into(),
        hooks: Vec::new(),
        started_at: vardr::pin::now_ns() - 5_000_000_000,
        agent_pid: u32::MAX - 9,
        agent_start_ticks: 1,
        scope_cgroup_id: scope,
        scope_cgroup: None,
        stopped_at: None,
        build: String::new(),
    };
    let scope_id = cg.id().unwrap();
    let other = pins
        .create_set(
            &fake("0-old-layout", vardr_common::LAYOUT_VERSION ^ 1, scope_id),
            &[],
        )
        .unwrap();
    // Its "ring buffer" is not one: reading it as this layout's would fail.
    let bogus: aya::maps::Array<aya::maps::MapData, u32> = aya::maps::Array::create(1, 0).unwrap();
    bogus.pin(other.dir.join("maps").join("EVENTS")).unwrap();
    let foreign = pins
        .create_set(&fake("1-other-scope", vardr_common::LAYOUT_VERSION, 1), &[])
        .unwrap();
    let dir = TempDir::new("layout");
    let mut a = agent(b, &cg.path, &pins.root, &policy("new", dir.path(), 9, ""));
    let line = a.log_line("another map layout");
    assert!(line.contains("0-old-layout"), "{line}");
    a.log_line("took over pinned set");
    assert!(!other.dir.exists(), "old-layout set removed");
    assert!(foreign.dir.exists(), "another scope's set is left alone");
    assert!(a.stop().success());
    // Left: the foreign set and the new agent's own.
    assert_eq!(pinned_sets(&pins.root).len(), 2);
}

/// A process that lives across a restart keeps its exec_id: its child,
/// reported by the next agent, names it as parent with the id the first
/// agent gave it.
pub fn exec_id_survives_restart() {
    let dir = TempDir::new("execid");
    let go = dir.join("go");
    let marker = format!("execid-{}", std::process::id());
    let policy =
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: none\nspec:\n  rules: []\n";
    let mut first = AgentRun::start(policy, &[]);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "while [ ! -e {} ]; do sleep 0.05; done; /bin/echo {marker}",
            go.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let sh = first.event("the shell's exec", |e| {
        e["process_exec"]["process"]["pid"] == pid
    });
    let sh_id = sh["process_exec"]["process"]["exec_id"].clone();
    assert!(first.stop().success());
    let mut second = AgentRun::start(policy, &[]);
    std::fs::write(&go, "").unwrap();
    let echo = second.event("the child's exec", |e| {
        e["process_exec"]["process"]["arguments"] == marker.as_str()
    });
    assert_eq!(echo["process_exec"]["process"]["parent_exec_id"], sh_id);
    assert_eq!(echo["process_exec"]["parent"]["exec_id"], sh_id);
    let _ = child.wait();
    assert!(second.stop().success());
}

/// An agent that died in the middle of a reload leaves inner rule maps in
/// the slot of the generation not in force. The next agent adopts the
/// set, and its first apply switches to that generation: the leftovers
/// must be gone by then, or a rule nobody wrote would come into force.
pub fn adopted_set_drops_unfinished_reload(b: Backend) {
    use aya::maps::{lpm_trie::Key, Array, ArrayOfMaps, LpmTrie, Map, MapData};
    use vardr_common::{Action, Config, RuleRef, NET4_KEY_LEN, NET_KEY_HEAD_BITS};
    let bpffs = Bpffs::mount("bpffs");
    let pins = bpffs.pin_dir();
    let dir = TempDir::new("stale");
    let cg = test_cgroup("stale");
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let pol = policy("stale", dir.path(), 9, "");
    let mut first = agent(b, &cg.path, &pins, &pol);
    assert!(first.stop().success());
    let sets = pinned_sets(&pins);
    assert_eq!(sets.len(), 1);
    let maps = pins.join(&sets[0]).join("maps");
    let pinned = |name: &str| MapData::from_pin(maps.join(name)).unwrap();
    let slot: Array<_, u32> = Array::try_from(Map::Array(pinned("CONFIG_SLOT"))).unwrap();
    let configs: Array<_, Config> = Array::try_from(Map::Array(pinned("CONFIG"))).unwrap();
    let in_force = configs
        .get(&slot.get(&0, 0).unwrap(), 0)
        .unwrap()
        .generation;
    // What a reload cut short by SIGKILL leaves: a deny of the open port
    // in an inner map put in the next generation's slot, before the switch.
    const BPF_F_NO_PREALLOC: u32 = 1;
    let mut net4: LpmTrie<MapData, [u8; NET4_KEY_LEN], RuleRef> =
        LpmTrie::create(16, BPF_F_NO_PREALLOC).unwrap();
    let mut data = [0u8; NET4_KEY_LEN];
    data[0] = (1 - in_force) as u8;
    data[2..4].copy_from_slice(&open_port.to_be_bytes());
    data[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let rule = RuleRef {
        rule_id: 424_242,
        action: Action::Deny as u32,
    };
    net4.insert(&Key::new(NET_KEY_HEAD_BITS + 32, data), rule, 0)
        .unwrap();
    let mut outer: ArrayOfMaps<MapData, LpmTrie<MapData, [u8; NET4_KEY_LEN], RuleRef>> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(pinned("NET4_RULES"))).unwrap();
    outer.set(1 - in_force, &net4, 0).unwrap();
    drop((outer, net4));

    let mut second = agent(b, &cg.path, &pins, &pol);
    let line = second.log_line("unfinished reload");
    assert!(line.contains("slots=1"), "{line}");
    second.log_line("adopted its programs");
    let connect = |port: u16| {
        sh_in(
            &cg.path,
            &format!(
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
            ),
        )
        .status
        .success()
    };
    assert!(connect(open_port), "the leftover deny is not in force");
    // One more switch, back to the first generation: still open.
    let st = second.reload();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert!(connect(open_port), "still open after a reload");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    let pol = policy("stale-2", dir.path(), closed_port, "");
    std::fs::write(second.policy_path(), pol).unwrap();
    let st = second.reload();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert!(!connect(closed_port), "the policy's own deny holds");
    assert!(second.stop().success());
    drop(bpffs);
}

/// A TracingPolicy that stops a `mkdir` in `dir/sub/`: a syscall
/// tracepoint's Sigkill (every kernel has them), or with `kprobe` an
/// Override of `security_path_mkdir` (EPERM, the directory never made).
/// Which kind of TracingPolicy hook blocks the mkdir.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GenKind {
    /// A syscall tracepoint with Sigkill.
    Tracepoint,
    /// A kprobe on `security_path_mkdir` with Override (and its fmod_ret).
    Kprobe,
    /// An `lsmhooks` `path_mkdir` hook of its own with Override.
    Lsm,
}

fn mkdir_block_tp(dir: &Path, sub: &str, kind: GenKind) -> String {
    let d = dir.display();
    let hook = if kind == GenKind::Lsm {
        format!(
            r#"  lsmhooks:
  - hook: path_mkdir
    args:
    - index: 0
      type: path
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: ["{d}/{sub}"]}}]
      matchActions: [{{action: Override, argError: -1}}]
"#
        )
    } else if kind == GenKind::Kprobe {
        format!(
            r#"  kprobes:
  - call: security_path_mkdir
    args:
    - index: 0
      type: path
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: ["{d}/{sub}"]}}]
      matchActions: [{{action: Override, argError: -1}}]
"#
        )
    } else {
        format!(
            r#"  tracepoints:
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/{sub}/"]}}]
      matchActions: [{{action: Sigkill}}]
"#
        )
    };
    format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: block-mkdir-{sub}\nspec:\n{hook}"
    )
}

/// TracingPolicy hooks stay in force with `--keep-enforcing` (seed 002's
/// persistent enforcement): the stopped agent's hook goes on blocking;
/// the next agent's hooks replace it once attached; `vardr unpin` lifts
/// them. A kprobe's Override pins its fmod_ret link too.
pub fn generic_hooks_persist(b: Backend, kind: GenKind) {
    let bpffs = Bpffs::mount("bpffs");
    let pins = bpffs.pin_dir();
    let dir = TempDir::new("genpersist");
    let d = dir.path();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        std::fs::write(d.join(format!("{sub}.yaml")), mkdir_block_tp(d, sub, kind)).unwrap();
    }
    let cg = test_cgroup("genpersist");
    let blocked = |sub: &str, name: &str| -> bool {
        let path = d.join(sub).join(name);
        let o = sh_in(&cg.path, &format!("mkdir {}", path.display()));
        if kind != GenKind::Tracepoint {
            // Override: the call fails and nothing is made.
            !o.status.success() && !super::killed(&o) && !path.exists()
        } else {
            super::killed(&o)
        }
    };
    let made = |sub: &str, name: &str| -> bool {
        let path = d.join(sub).join(name);
        sh_in(&cg.path, &format!("mkdir {}", path.display()))
            .status
            .success()
            && path.exists()
    };
    let vardr_policy = |sub: &str| {
        super::scenarios::policy(&format!(
            "  rules: []\n  tracing_policies: [{}]\n",
            d.join(format!("{sub}.yaml")).display()
        ))
    };
    let gen_links = || -> usize {
        pinned_sets(&pins)
            .iter()
            .map(|s| std::fs::read_dir(pins.join(s).join("gen-links")).map_or(0, |r| r.count()))
            .sum()
    };
    // A kprobe with Override pins its fmod_ret link beside its own.
    let per_hook = if kind == GenKind::Kprobe { 2 } else { 1 };

    let mut a = agent(b, &cg.path, &pins, &vardr_policy("a"));
    assert!(blocked("a", "1"), "agent a's hook blocks");
    assert_eq!(gen_links(), per_hook, "the hook's links are pinned");
    assert!(a.stop().success());
    assert!(
        blocked("a", "2"),
        "with no agent, the pinned hook still blocks"
    );
    assert!(made("b", "1"), "b is not governed yet");

    // The next agent, with another TracingPolicy: its hook replaces the
    // pinned one (the set is adopted, the same build).
    let mut b2 = agent(b, &cg.path, &pins, &vardr_policy("b"));
    assert!(made("a", "3"), "a's hook is gone");
    assert!(blocked("b", "2"), "agent b's hook blocks");
    assert_eq!(gen_links(), per_hook, "only b's links are pinned");
    assert!(b2.stop().success());
    assert!(blocked("b", "3"), "b's pinned hook blocks");

    // `vardr unpin` lifts it, and leaves nothing.
    let o = Command::new(&*VARDR)
        .args(["unpin", "--pin-dir"])
        .arg(&pins)
        .output()
        .expect("vardr unpin");
    assert!(
        o.status.success(),
        "unpin: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(made("b", "4"), "unpinned, the hook is gone");
    assert!(pinned_sets(&pins).is_empty(), "nothing left pinned");
    drop(bpffs);
}
