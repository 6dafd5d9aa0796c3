//! The auditd peer of the syscall benchmark: auditd with watch rules on the
//! file and the binary the 10-rule policy denies, what an auditd user sets
//! up for the same paths (audit records; it cannot deny). The daemon runs
//! on a configuration and log of its own in the benchmark's directory, and
//! the kernel's audit state is put back as it was found.
use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The key the benchmark's watch rules carry (and are removed by).
const KEY: &str = "vardr-bench";

pub struct AuditdPeer {
    dir: PathBuf,
    /// (path, permissions) of each watch: `r` for the file, `x` for the binary.
    watches: Vec<(PathBuf, &'static str)>,
}

/// auditd running with the watch rules; dropping it removes the rules,
/// stops the daemon and restores the audit `enabled` flag.
pub struct Running {
    child: Child,
    enabled_before: String,
    watches: Vec<(PathBuf, &'static str)>,
}

impl AuditdPeer {
    /// Installs auditd when missing and shows that it records a read of
    /// `file` by a process of `cgroup`; the reason when it cannot run here.
    pub fn prepare(dir: &Path, file: &Path, binary: &Path, cgroup: &Path) -> Result<Self, String> {
        if !have("auditctl") {
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-qq", "auditd"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok || !have("auditctl") {
                return Err("auditd is not installed and apt-get could not install it".into());
            }
        }
        let status = audit_status()?;
        if status.pid != "0" {
            return Err(format!(
                "an audit daemon already runs (pid {}): its rules and settings are not this benchmark's to change",
                status.pid
            ));
        }
        let dir = dir.join("auditd");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Debian's defaults where they matter for cost (asynchronous
        // incremental flush every 50 records, raw format); no disk space
        // action (auditd wants space_left above admin_space_left).
        let conf = dir.join("auditd.conf");
        std::fs::write(
            &conf,
            format!(
                "log_file = {}\nlog_format = RAW\nlog_group = root\nflush = INCREMENTAL_ASYNC\nfreq = 50\n\
                 max_log_file = 64\nnum_logs = 2\nmax_log_file_action = ROTATE\nspace_left = 2\n\
                 space_left_action = IGNORE\nadmin_space_left = 1\nadmin_space_left_action = IGNORE\n\
                 disk_full_action = IGNORE\ndisk_error_action = IGNORE\n",
                dir.join("audit.log").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // auditd refuses a configuration others can write.
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| e.to_string())?;
        let peer = Self {
            dir,
            watches: vec![(file.to_path_buf(), "r"), (binary.to_path_buf(), "x")],
        };
        let run = peer.start()?;
        let seen = run.records_read(&peer, file, cgroup);
        drop(run);
        if seen {
            Ok(peer)
        } else {
            Err("auditd ran with the watch rules but recorded no read of the watched file".into())
        }
    }

    /// Starts the daemon and adds the watch rules.
    pub fn start(&self) -> Result<Running, String> {
        let enabled_before = audit_status()?.enabled;
        let child = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("auditd: {e}"))?;
        let mut run = Running {
            child,
            enabled_before,
            watches: Vec::new(),
        };
        // Up once the kernel sends its records to it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if audit_status().is_ok_and(|s| s.pid == run.child.id().to_string()) {
                break;
            }
            if Instant::now() > deadline || run.child.try_wait().ok().flatten().is_some() {
                return Err(
                    "auditd did not start (see its configuration in the bench directory)".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (path, perm) in &self.watches {
            auditctl(&["-w", &path.display().to_string(), "-p", perm, "-k", KEY])?;
            run.watches.push((path.clone(), perm));
        }
        Ok(run)
    }
}

impl Running {
    /// Whether a read of `file` from `cgroup` reaches the daemon's log.
    fn records_read(&self, peer: &AuditdPeer, file: &Path, cgroup: &Path) -> bool {
        let _ = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec cat {} > /dev/null",
                cgroup.display(),
                file.display()
            ))
            .status();
        let log = peer.dir.join("audit.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&format!("key=\"{KEY}\""))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (path, perm) in &self.watches {
            let _ = auditctl(&["-W", &path.display().to_string(), "-p", perm, "-k", KEY]);
        }
        crate::bench_syscalls::stop_group(&mut self.child);
        let _ = auditctl(&["-e", &self.enabled_before]);
    }
}

struct AuditStatus {
    enabled: String,
    pid: String,
}

/// `auditctl -s`: fails where the kernel has no audit or this process may
/// not control it (a container).
fn audit_status() -> Result<AuditStatus, String> {
    let out = Command::new("auditctl")
        .arg("-s")
        .output()
        .map_err(|e| format!("auditctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the kernel's audit cannot be controlled here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::trim))
            .map(str::to_string)
    };
    match (field("enabled"), field("pid")) {
        (Some(enabled), Some(pid)) => Ok(AuditStatus { enabled, pid }),
        _ => Err(format!("unexpected auditctl -s output: {text}")),
    }
}

fn auditctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .map_err(|e| format!("auditctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
