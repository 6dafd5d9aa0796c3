//! Host tier: the process cache and the event pipeline with a real agent
//! (observation only: the policy has no rules, nothing can be denied).
mod common;

use std::{
    io::{Read, Write},
    process::Command,
    time::Duration,
};

use common::{
    agent::{AgentRun, VARDR},
    require_root, serial, sh_in, test_cgroup, TempDir,
};
use serde_json::Value;

const NO_RULES: &str =
    "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: observe\nspec:\n  rules: []\n";

fn exec_of<'a>(ev: &'a Value, binary_suffix: &str, args: &str) -> Option<&'a Value> {
    let p = &ev.get("process_exec")?["process"];
    (p["binary"].as_str()?.ends_with(binary_suffix) && p["arguments"] == args).then_some(p)
}

#[test]
fn process_tree_has_exec_ids_ancestry_and_exit() {
    if !require_root("process_tree_has_exec_ids_ancestry_and_exit") {
        return;
    }
    let _serial = serial();
    let mut agent = AgentRun::start(NO_RULES, &[]);
    let marker = format!("tree-{}", std::process::id());
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "/bin/sh -c 'exec /bin/sleep 0.01 && true' {marker}; exit 3"
        ))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));

    let sleep = agent.event("sleep exec", |e| exec_of(e, "/sleep", "0.01").is_some());
    let p = &sleep["process_exec"]["process"];
    let parent = &sleep["process_exec"]["parent"];
    let ancestors = sleep["process_exec"]["ancestors"].as_array().unwrap();
    // sleep replaced the inner sh; its parent is the outer sh; then this test.
    assert!(
        parent["binary"].as_str().unwrap().ends_with("/sh"),
        "{sleep}"
    );
    assert!(
        parent["arguments"].as_str().unwrap().contains(&marker),
        "{sleep}"
    );
    assert_eq!(p["parent_exec_id"], parent["exec_id"]);
    assert_eq!(ancestors[0]["pid"], std::process::id());
    assert_eq!(
        ancestors[0]["flags"], "procFS",
        "the test process predates the agent"
    );
    assert_ne!(p["exec_id"], parent["exec_id"]);
    assert!(p["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(!p["cwd"].as_str().unwrap().is_empty());

    // Each image has its own exec_id; exits carry the image's exec_id and status.
    let sleep_id = p["exec_id"].clone();
    let exit = agent.event("sleep exit", |e| {
        e["process_exit"]["process"]["exec_id"] == sleep_id
    });
    assert_eq!(exit["process_exit"]["status"], 0);
    let parent_id = parent["exec_id"].clone();
    let exit = agent.event("outer sh exit", |e| {
        e["process_exit"]["process"]["exec_id"] == parent_id
    });
    assert_eq!(exit["process_exit"]["status"], 3);

    // A killed process reports its signal.
    let _ = Command::new("/bin/sh").arg("-c").arg("kill -9 $$").status();
    agent.event("killed sh", |e| e["process_exit"]["signal"] == "SIGKILL");
    assert!(agent.stop().success());
}

/// What the kernel knew at the exec: the working directory, the cgroup
/// (a new one, which the agent has never seen: its path comes from the
/// id), the credentials, and the file a `..` or descriptor name ran.
#[test]
fn exec_carries_the_kernels_cwd_cgroup_credentials_and_path() {
    if !require_root("exec_carries_the_kernels_cwd_cgroup_credentials_and_path") {
        return;
    }
    let _serial = serial();
    let mut agent = AgentRun::start(NO_RULES, &[]);
    let dir = TempDir::new("enrich");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::copy("/bin/true", dir.join("sub/tru")).unwrap();
    let cg = test_cgroup("enrich");
    let cg_rel = format!(
        "/{}",
        cg.path
            .strip_prefix(vardr::kernel::cgroup::root().unwrap())
            .unwrap()
            .display()
    );
    let marker = format!("enrich-{}", std::process::id());
    // A relative name through `..`, run from a directory the process
    // leaves at once (the old /proc read saw the new one, or nothing).
    let o = sh_in(
        &cg.path,
        &format!(
            "cd {}/sub/deeper && exec ../tru {marker}",
            dir.path().display()
        ),
    );
    assert!(o.status.success(), "{o:?}");
    let ev = agent.event("exec of ../tru", |e| exec_of(e, "/tru", &marker).is_some());
    let p = &ev["process_exec"]["process"];
    let want_dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        p["cwd"].as_str().unwrap(),
        want_dir.join("sub/deeper").to_str().unwrap(),
        "{ev}"
    );
    assert_eq!(
        p["binary"].as_str().unwrap(),
        want_dir.join("sub/tru").to_str().unwrap(),
        "the kernel's path, not the name with `..`: {ev}"
    );
    assert_eq!(p["cgroup"].as_str().unwrap(), cg_rel, "{ev}");
    assert_eq!(p["cgroup_id"], cg.id().unwrap(), "{ev}");
    let c = &p["process_credentials"];
    // SAFETY: getters without preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(
        (c["uid"].as_u64(), c["euid"].as_u64()),
        (Some(uid.into()), Some(uid.into())),
        "{ev}"
    );
    assert_eq!(
        (c["gid"].as_u64(), c["fsgid"].as_u64()),
        (Some(gid.into()), Some(gid.into())),
        "{ev}"
    );
    drop(dir);
    drop(cg);
    assert!(agent.stop().success());
}

#[test]
fn exec_storm_yields_every_event_or_an_exact_loss_count() {
    if !require_root("exec_storm_yields_every_event_or_an_exact_loss_count") {
        return;
    }
    let _serial = serial();
    const N: usize = 2000;
    let mut agent = AgentRun::start(NO_RULES, &["--output", "json"]);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {N} ]; do /bin/true storm; i=$((i+1)); done"
        ))
        .spawn()
        .unwrap();
    let loop_pid = child.id();
    assert!(child.wait().unwrap().success());
    let events = agent.events_after(Duration::from_secs(3));
    let seen = events
        .iter()
        .filter_map(|e| exec_of(e, "/true", "storm"))
        .filter(|p| p["parent_exec_id"].is_string())
        .count();
    let lost = lost_count(&events);
    if lost == 0 {
        assert_eq!(
            seen, N,
            "no loss reported, so every exec must be there (loop pid {loop_pid})"
        );
    } else {
        assert!(seen + lost as usize >= N, "seen {seen} + lost {lost} < {N}");
    }
    assert!(agent.stop().success());
}

/// A loopback port nothing listens on (connects to it are refused: each
/// one is a quick alert) and a policy `name` alerting on connects to it
/// (rule `knock`).
fn knock_policy(name: &str) -> (u16, String) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let policy = format!(
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  rules:\n    - {{name: knock, hook: connect, action: alert, match: {{cidrs: [127.0.0.1/32], ports: [{port}]}}}}\n"
    );
    (port, policy)
}

/// A shell command connecting to `port` on loopback `n` times.
fn connect_flood(n: u64, port: u16) -> String {
    format!("python3 -c 'import socket\nfor _ in range({n}):\n  s=socket.socket()\n  try: s.connect((\"127.0.0.1\",{port}))\n  except OSError: pass\n  s.close()'")
}

/// Events the agent reported lost.
fn lost_count(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|e| e["events_lost"]["count"].as_u64())
        .sum()
}

/// A flood of policy events that overflows their ring buffer (the agent
/// is stopped while it runs) costs none of the exec events that happen
/// meanwhile: lifecycle events have a buffer of their own.
#[test]
fn policy_flood_does_not_push_out_exec_events() {
    if !require_root("policy_flood_does_not_push_out_exec_events") {
        return;
    }
    if !common::scenarios::python_available("policy_flood_does_not_push_out_exec_events") {
        return;
    }
    let _serial = serial();
    let (port, policy) = knock_policy("flood");
    let cg = common::test_cgroup("flood");
    let scope = cg.path.to_str().unwrap().to_string();
    let mut agent = AgentRun::start(&policy, &["--scope-cgroup", &scope, "--output", "json"]);
    let agent_pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    const N: usize = 50;
    // The shell joins the cgroup first (the fallback's agent answers that
    // move), then waits for a line before flooding and exec'ing.
    let mut run = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && echo in && read go && {} && i=0; while [ $i -lt {N} ]; do /bin/true flood-exec; i=$((i+1)); done",
            cg.path.display(),
            connect_flood(40_000, port)
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(run.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "in");
    // The agent reads nothing while stopped: the policy buffer fills up.
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    run.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let flood = run.wait_with_output().unwrap();
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(flood.status.success(), "{}", common::stderr(&flood));
    let events = agent.events_after(Duration::from_secs(5));
    let lost = lost_count(&events);
    let alerts = events
        .iter()
        .filter(|e| e["process_lsm"]["rule"] == "knock")
        .count();
    // The flood did overflow the policy buffer...
    assert!(
        lost > 0,
        "no loss: the flood did not fill the policy buffer ({alerts} alerts)"
    );
    // ... and yet every exec of the same time is there.
    let seen = events
        .iter()
        .filter_map(|e| exec_of(e, "/true", "flood-exec"))
        .count();
    assert_eq!(
        seen, N,
        "execs lost to a policy flood ({lost} policy events lost)"
    );
    assert!(agent.stop().success());
}

/// 40 000 policy events (~14 MB) pass through their 4 MiB buffer while the
/// agent reads: records run past its end and around, and each arrives
/// whole (the buffer's pages are mapped once; a record that wraps is read
/// in two pieces).
#[test]
fn policy_events_that_wrap_their_buffer_arrive_whole() {
    if !require_root("policy_events_that_wrap_their_buffer_arrive_whole") {
        return;
    }
    if !common::scenarios::python_available("policy_events_that_wrap_their_buffer_arrive_whole") {
        return;
    }
    let _serial = serial();
    let (port, policy) = knock_policy("wrap");
    let cg = common::test_cgroup("wrap");
    let scope = cg.path.to_str().unwrap().to_string();
    let mut agent = AgentRun::start(&policy, &["--scope-cgroup", &scope, "--output", "json"]);
    const N: u64 = 40_000;
    let run = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && {}",
            cg.path.display(),
            connect_flood(N, port)
        ))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", common::stderr(&run));
    let events = agent.events_after(Duration::from_secs(5));
    let lost = lost_count(&events);
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["process_lsm"]["rule"] == "knock")
        .collect();
    let wrong = alerts
        .iter()
        .filter(|e| e["process_lsm"]["args"][0]["sock_arg"]["dport"] != port)
        .count();
    assert_eq!(wrong, 0, "alerts with another port: {:?}", alerts.first());
    assert_eq!(
        alerts.len() as u64 + lost,
        N,
        "every connect is an alert or a counted loss ({lost} lost)"
    );
    assert!(
        !agent.stderr.iter().any(|l| l.contains("malformed")),
        "{:?}",
        agent.stderr
    );
    assert!(agent.stop().success());
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(body: &str, line_start: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{body}"))
}

#[test]
fn grpc_stream_export_file_and_metrics_agree() {
    if !require_root("grpc_stream_export_file_and_metrics_agree") {
        return;
    }
    let _serial = serial();
    let t = TempDir::new("export");
    let export = t.join("events.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut agent = AgentRun::start(
        NO_RULES,
        &[
            "--export-file",
            export.to_str().unwrap(),
            "--export-max-size",
            "64K",
            "--export-keep",
            "2",
            "--metrics-addr",
            &metrics_addr,
            "--output",
            "none",
        ],
    );
    let marker = format!("grpc-{}", std::process::id());
    let rd = agent.runtime_dir();
    // A copy of echo with a name no other process on the host runs (the
    // agent sees every exec here, other tests' and tools' included).
    let echo = t.join(&format!("echo-{marker}"));
    std::fs::copy("/bin/echo", &echo).unwrap();
    // A subscriber that wants three execs of that echo.
    let sub = Command::new(&*VARDR)
        .args([
            "events",
            "--type",
            "process_exec",
            "--binary",
            echo.to_str().unwrap(),
            "--count",
            "3",
            "-o",
            "json",
        ])
        .arg("--runtime-dir")
        .arg(&rd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        Command::new(&echo).arg(&marker).output().unwrap();
    }
    // Unrelated traffic the filter must drop.
    Command::new("/bin/true").arg(&marker).status().unwrap();
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(streamed.len(), 3, "{streamed:?}");
    for l in &streamed {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(
            exec_of(&v, &format!("/echo-{marker}"), &marker).is_some(),
            "{l}"
        );
    }
    // The export file holds the very lines the stream carried.
    std::thread::sleep(Duration::from_secs(1));
    // Other activity on the host (the agent sees every exec) may have
    // rotated the file already: look in the kept files too.
    let exported: String = [
        t.join("events.json.2"),
        t.join("events.json.1"),
        export.clone(),
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .collect();
    for l in &streamed {
        assert!(exported.lines().any(|e| e == l), "not exported: {l}");
    }
    // Enough traffic to rotate the 64K export file.
    for _ in 0..120 {
        Command::new("/bin/true")
            .arg(format!("{marker}-{}", "x".repeat(200)))
            .status()
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let body = http_get(port, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(metric(&body, "vardr_events_total{type=\"process_exec\"}") >= 124.0);
    assert!(metric(&body, "vardr_process_cache_size") > 10.0);
    assert_eq!(metric(&body, "vardr_kernel_events_lost_total"), 0.0);
    assert_eq!(metric(&body, "vardr_policy_reloads_total"), 0.0);
    assert!(metric(&body, "vardr_map_capacity{map=\"PATH_RULES\"}") > 0.0);
    assert!(http_get(port, "/nope").starts_with("HTTP/1.1 404"));
    assert!(agent.stop().success());

    // Rotated within its limits.
    for f in [
        t.join("events.json.2"),
        t.join("events.json.1"),
        export.clone(),
    ] {
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 64 * 1024, "{} is {len} bytes", f.display());
    }
    assert!(t.join("events.json.1").exists(), "no rotation happened");
    assert!(!t.join("events.json.3").exists(), "kept more than 2 files");
}

#[test]
fn metrics_count_matches_and_reloads() {
    if !require_root("metrics_count_matches_and_reloads") {
        return;
    }
    let _serial = serial();
    let t = TempDir::new("metrics");
    std::fs::write(t.join("watched"), "w\n").unwrap();
    let policy = format!(
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: m\nspec:\n  rules:\n    - name: watch\n      hook: file_open\n      action: alert\n      match: {{ paths: [{}] }}\n",
        t.join("watched").display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Audit mode and an alert rule: nothing can be blocked.
    let mut agent = AgentRun::start(&policy, &["--metrics-addr", &addr]);
    for _ in 0..2 {
        std::fs::read(t.join("watched")).unwrap();
    }
    agent.policy_event("alert", |e| e["rule"] == "watch");
    assert_eq!(agent.reload()["last_reload"]["ok"], true);
    std::fs::write(agent.policy_path(), "not: [a policy").unwrap();
    assert_eq!(agent.reload()["last_reload"]["ok"], false);
    std::thread::sleep(Duration::from_millis(500));
    let body = http_get(port, "/metrics");
    assert_eq!(
        metric(
            &body,
            "vardr_policy_matches_total{rule=\"watch\",verdict=\"alert\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&body, "vardr_events_total{type=\"process_lsm\"}"),
        2.0
    );
    assert_eq!(metric(&body, "vardr_policy_reloads_total"), 1.0);
    assert_eq!(metric(&body, "vardr_policy_reload_errors_total"), 1.0);
    // An exact path: in the hash of exact paths, not the prefix trie.
    assert_eq!(metric(&body, "vardr_map_entries{map=\"EXACT_PATHS\"}"), 1.0);
    assert_eq!(metric(&body, "vardr_map_entries{map=\"PATH_RULES\"}"), 0.0);
    assert!(agent.stop().success());
}

#[test]
fn exit_is_reported_when_the_last_thread_ends() {
    if !require_root("exit_is_reported_when_the_last_thread_ends") {
        return;
    }
    let _serial = serial();
    let py = Command::new("python3").arg("-c").arg("pass").status();
    if !py.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED exit_is_reported_when_the_last_thread_ends: python3 needed");
        return;
    }
    let mut agent = AgentRun::start(NO_RULES, &[]);
    // The main thread leaves first (pthread_exit); another thread ends the
    // process 300 ms later with status 5.
    let marker = format!("threads-{}", std::process::id());
    let script = format!(
        "import threading, os, time, ctypes, sys\n\
         threading.Thread(target=lambda: (time.sleep(0.3), os._exit(5))).start()\n\
         ctypes.CDLL(None).pthread_exit(None)  # {marker}"
    );
    let st = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(5));
    // (python3 may be a shim that execs the real interpreter: match the
    // final image, whose command line carries the marker.)
    let is_ours = |p: &Value| {
        p["binary"].as_str().is_some_and(|b| b.ends_with("python3"))
            && p["arguments"].as_str().is_some_and(|a| a.contains(&marker))
    };
    let exit = agent.event("python exit", |e| is_ours(&e["process_exit"]["process"]));
    assert_eq!(exit["process_exit"]["status"], 5, "{exit}");
    let exits = agent
        .events_after(Duration::from_secs(1))
        .iter()
        .filter(|e| is_ours(&e["process_exit"]["process"]))
        .count();
    assert_eq!(exits, 1, "one exit per process, when its last thread ends");
    assert!(agent.stop().success());
}

/// A reload is prepared on a thread of its own: while a 100 000-rule
/// policy is parsed, compiled and written, the agent keeps delivering
/// events and answering its metrics endpoint.
#[test]
fn events_and_metrics_flow_during_a_big_reload() {
    if !require_root("events_and_metrics_flow_during_a_big_reload") {
        return;
    }
    let _serial = serial();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = AgentRun::start(NO_RULES, &["--metrics-addr", &addr]);
    // Alert rules in audit mode: nothing can be blocked. The paths lie in a
    // directory that does not exist, the networks in 10.0.0.0/8.
    let n = 100_000;
    let mut paths = String::from("[/nonexistent-vardr-reload/f0");
    let mut nets = String::from("[10.0.0.0/32");
    for i in 1..n {
        use std::fmt::Write as _;
        let _ = write!(paths, ", /nonexistent-vardr-reload/f{i}");
        let _ = write!(
            nets,
            ", 10.{}.{}.{}/32",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
    }
    std::fs::write(
        agent.policy_path(),
        format!(
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: big\nspec:\n  rules:\n\
             \x20 - {{name: files, hook: file_open, action: alert, match: {{paths: {paths}]}}}}\n\
             \x20 - {{name: nets, hook: connect, action: alert, match: {{cidrs: {nets}]}}}}\n"
        ),
    )
    .unwrap();
    let execs = |body: &str| metric(body, "vardr_events_total{type=\"process_exec\"}");
    let status = agent.runtime_dir().join("status.json");
    let seq = || {
        std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|s| s["last_reload"]["seq"].as_u64())
            .unwrap_or(0)
    };
    let before = seq();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("/bin/true").status();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let started = std::time::Instant::now();
    // Exec counts scraped while the reload is still in preparation.
    let mut during = Vec::new();
    while seq() == before {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the reload did not finish"
        );
        let body = http_get(port, "/metrics");
        if seq() == before {
            during.push(execs(&body));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let s = agent.status();
    assert_eq!(s["last_reload"]["ok"], true, "{s}");
    assert_eq!(s["policy_name"], "big", "{s}");
    if during.len() < 3 {
        eprintln!(
            "SKIPPED events_and_metrics_flow_during_a_big_reload: the reload took {took:?}, too short to observe"
        );
        assert!(agent.stop().success());
        return;
    }
    let (first, last) = (during[0], during[during.len() - 1]);
    assert!(
        last > first,
        "no exec event was delivered during the {took:?} reload ({} metric scrapes answered, exec count stayed {first})",
        during.len()
    );
    eprintln!(
        "reload of {n} rules per kind took {took:?}: {} metric scrapes answered and {} exec events delivered meanwhile",
        during.len(),
        last - first
    );
    assert!(agent.stop().success());
}
