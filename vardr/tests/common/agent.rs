//! Runs the real `vardr agent` binary and reads its JSON events.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use super::TempDir;

/// The binary under test: `VARDR_BIN` when set (the VM tier runs the
/// release build, the one that ships: loading programs is several times
/// faster than a debug build's under emulation), else cargo's own build.
pub static VARDR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("VARDR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vardr").into())
});

pub struct AgentRun {
    child: Option<Child>,
    lines: mpsc::Receiver<(bool, String)>,
    pub dir: TempDir,
    pub events: Vec<Value>,
    pub stderr: Vec<String>,
}

impl AgentRun {
    /// Writes `policy` to a file and starts the agent on it with `args`;
    /// returns once the agent says it is running.
    pub fn start(policy: &str, args: &[&str]) -> Self {
        Self::start_in(None, policy, args)
    }

    /// [`AgentRun::start`] with the agent moved into `cgroup` before it
    /// runs (as systemd starts it in `vardr.service`).
    pub fn start_in(cgroup: Option<&std::path::Path>, policy: &str, args: &[&str]) -> Self {
        let dir = TempDir::new("agent");
        let policy_path = dir.join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let mut cmd = Command::new(&*VARDR);
        if let Some(cg) = cgroup {
            use std::os::unix::{ffi::OsStrExt, process::CommandExt};
            let procs =
                std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
            // SAFETY: between fork and exec only async-signal-safe calls
            // (open, write, close) on memory prepared before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .arg("agent")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .args(args)
            .env("VARDR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vardr agent");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((true, l));
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send((false, l));
            }
        });
        let mut run = Self {
            child: Some(child),
            lines: rx,
            dir,
            events: Vec::new(),
            stderr: Vec::new(),
        };
        // Loading verifies every program: under the VM tier's software
        // emulation that takes tens of seconds on a busy machine.
        let ready = run.wait(Duration::from_secs(180), |is_out, l| {
            !is_out && l.contains("agent running")
        });
        if ready.is_none() {
            let status = run.stop();
            panic!("agent did not start ({status}):\n{}", run.stderr.join("\n"));
        }
        run
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Reads lines until `pred` matches one (returned) or time runs out.
    fn wait(&mut self, timeout: Duration, pred: impl Fn(bool, &str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (is_out, l) = self.lines.recv_timeout(left).ok()?;
            if is_out {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    check_tetragon_schema(&l);
                    self.events.push(v);
                }
            } else {
                self.stderr.push(l.clone());
            }
            if pred(is_out, &l) {
                return Some(l);
            }
        }
    }

    /// Waits for any event (a whole JSON line) matching `pred`.
    pub fn event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.events.iter().find(|e| pred(e)) {
            return v.clone();
        }
        let found = self.wait(Duration::from_secs(15), |is_out, l| {
            is_out
                && serde_json::from_str::<Value>(l)
                    .map(|v| pred(&v))
                    .unwrap_or(false)
        });
        match found {
            Some(l) => serde_json::from_str(&l).unwrap(),
            None => panic!("no event {what}; stderr:\n{}", self.stderr.join("\n")),
        }
    }

    /// Reads events for `d`, then returns all seen so far.
    pub fn events_after(&mut self, d: Duration) -> Vec<Value> {
        self.wait(d, |_, _| false);
        self.events.clone()
    }

    /// Waits for a policy event (`process_lsm`) matching `pred`.
    pub fn policy_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.events.iter().find(|e| pred(&e["process_lsm"])) {
            return v["process_lsm"].clone();
        }
        let found = self.wait(Duration::from_secs(10), |is_out, l| {
            is_out
                && serde_json::from_str::<Value>(l)
                    .map(|v| pred(&v["process_lsm"]))
                    .unwrap_or(false)
        });
        match found {
            Some(l) => serde_json::from_str::<Value>(&l).unwrap()["process_lsm"].clone(),
            None => panic!(
                "no policy event {what}; events: {:#?}\nstderr:\n{}",
                self.events,
                self.stderr.join("\n")
            ),
        }
    }

    /// Policy events seen so far, once `done` holds for them (waiting up
    /// to 10 s: the agent may be behind the test under load).
    pub fn policy_events_until(
        &mut self,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let evs = self.policy_events();
            if done(&evs) {
                return evs;
            }
            assert!(
                Instant::now() < deadline,
                "policy events never showed {what}: {evs:#?}\nstderr:\n{}",
                self.stderr.join("\n")
            );
        }
    }

    /// Policy events seen so far (after draining what is queued).
    pub fn policy_events(&mut self) -> Vec<Value> {
        self.wait(Duration::from_millis(300), |_, _| false);
        self.events
            .iter()
            .filter(|e| e.get("process_lsm").is_some())
            .map(|e| e["process_lsm"].clone())
            .collect()
    }

    /// The agent's status file.
    pub fn status(&self) -> Value {
        let out = self.vardr(&[
            "status",
            "--json",
            "--runtime-dir",
            self.runtime_dir().to_str().unwrap(),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Sends SIGHUP and waits until the agent has finished that reload
    /// (its status counts reload attempts); returns the new status.
    pub fn reload(&mut self) -> Value {
        let seq = |s: &Value| s["last_reload"]["seq"].as_u64().unwrap_or(0);
        let before = seq(&self.status());
        nix::sys::signal::kill(Pid::from_raw(self.pid() as i32), Signal::SIGHUP).unwrap();
        // Under the VM tier's emulation a reload that loads a program (a
        // TracingPolicy hook's) takes seconds of verification.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if seq(&s) > before {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "reload did not finish:\n{}",
                self.stderr.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stderr line containing `needle`.
    pub fn log_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.stderr.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait(Duration::from_secs(10), |is_out, l| {
            !is_out && l.contains(needle)
        })
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", self.stderr.join("\n")))
    }

    /// SIGTERM, then waits for exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = child.wait().expect("wait agent");
        // Collect the rest of the output.
        while let Ok((is_out, l)) = self.lines.recv_timeout(Duration::from_millis(500)) {
            if is_out {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    check_tetragon_schema(&l);
                    self.events.push(v);
                }
            } else {
                self.stderr.push(l);
            }
        }
        status
    }

    pub fn vardr(&self, args: &[&str]) -> std::process::Output {
        Command::new(&*VARDR)
            .args(args)
            .output()
            .expect("run vardr")
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// Resolves a command name to the real path of its binary.
pub fn which(cmd: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(cmd);
        if p.exists() {
            return std::fs::canonicalize(p).unwrap();
        }
    }
    panic!("{cmd} not found");
}

/// Every event the agent writes must decode with Tetragon's protobuf
/// messages (JSON mapping, unknown fields ignored), as Tetragon's
/// consumers read them.
fn check_tetragon_schema(line: &str) {
    match vardr::api::tetragon::decode(line) {
        Err(e) => panic!("event does not decode as tetragon.GetEventsResponse: {e}\n{line}"),
        // Unknown fields are skipped: a misnamed kind would decode empty.
        Ok(m) if m.event.is_none() && !line.starts_with("{\"events_lost\"") => {
            panic!("event decodes as no Tetragon event: {line}")
        }
        Ok(_) => {}
    }
}
