//! VM tier: the Debian package under a real systemd. The VM's root file
//! system is the host's, read-only, and its PID 1 is virtme-ng's init: the
//! test lays a tmpfs overlay over the root and boots systemd as PID 1 of a
//! new PID and mount namespace chrooted there (systemd's container mode),
//! then installs, reconfigures, upgrades and removes the package that
//! `cargo xtask deb` built (the VM runner builds revisions 1 and 2 and
//! names them in `VARDR_TEST_DEBS`).
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const TEST: &str = "package_install_upgrade_remove_under_systemd";

/// systemd as PID 1 of its own namespaces, over a throwaway overlay root.
struct Systemd {
    base: PathBuf,
    unshare: Child,
    pid: u32,
}

impl Systemd {
    /// `share`: a host directory the container sees at the same path (the
    /// packages; the container's /tmp is its own, and a workspace may live
    /// under the host's /tmp).
    fn boot(base: &Path, share: &Path) -> Self {
        let root = base.join("root");
        let setup = format!(
            "set -e; mount -t tmpfs vardr-test {b}; mkdir -p {b}/upper {b}/work {r}; \
             mount -t overlay overlay -o lowerdir=/,upperdir={b}/upper,workdir={b}/work {r}; \
             for u in console-getty.service getty@.service serial-getty@.service getty.target; do \
               ln -sf /dev/null {r}/etc/systemd/system/$u; done; \
             rm -f {r}/usr/sbin/policy-rc.d {r}/var/lib/man-db/auto-update",
            b = base.display(),
            r = root.display()
        );
        // No xino: a tmpfs upper over the 9p root gives upper files the
        // overlay's device and small inode numbers that lower files have
        // too; the identity of a governed file (the default policy's
        // /etc/shadow) must not cover an unrelated one (dpkg's own files
        // in the upgrade; README "File identity").
        // The getty units would take over the VM's console; policy-rc.d
        // (a container image's "never start services") is not on a
        // stock Debian machine; man-db's trigger would index every man
        // page over 9p under emulation for minutes.
        run_ok("sh", &["-c", &setup]);
        let init = format!(
            "mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc && \
             mount --rbind /sys {r}/sys && mount -t tmpfs run {r}/run && \
             mount -t tmpfs tmp {r}/tmp && \
             mkdir -p {r}{s} && mount --bind {s} {r}{s} && \
             exec env container=vardr-test chroot {r} /lib/systemd/systemd --system \
               --unit=basic.target --show-status=false",
            r = root.display(),
            s = share.display()
        );
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &init])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let mut sd = Self {
            base: base.to_path_buf(),
            pid: 0,
            unshare,
        };
        let parent = sd.unshare.id().to_string();
        wait_for("systemd to start", Duration::from_secs(30), || {
            let o = Command::new("pgrep").args(["-P", &parent]).output().ok()?;
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        })
        .map(|pid| sd.pid = pid)
        .unwrap_or_else(|e| panic!("{e}"));
        wait_for(
            "systemd to finish booting",
            Duration::from_secs(180),
            || {
                let s = sd.sh("systemctl is-system-running").stdout;
                let s = String::from_utf8_lossy(&s).trim().to_string();
                matches!(s.as_str(), "running" | "degraded").then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        sd
    }

    /// Runs a shell command inside systemd's namespaces and root.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-r", "-w"])
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("spawn nsenter")
    }

    /// Runs it, asserts success, returns trimmed stdout.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        if !o.status.success() {
            // What the service said is the first thing to know.
            let journal = self.sh("journalctl -u vardr -o cat --no-pager -n 40");
            panic!(
                "{script}: {}\nstdout: {}\nstderr: {}\njournal of vardr.service:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// stdout of a command whose exit status does not matter
    /// (`systemctl is-active` is 3 for inactive).
    fn out(&self, script: &str) -> String {
        String::from_utf8_lossy(&self.sh(script).stdout)
            .trim()
            .to_string()
    }

    fn main_pid(&self) -> u32 {
        self.out("systemctl show -p MainPID --value vardr")
            .parse()
            .unwrap_or(0)
    }

    fn wait_active(&self, what: &str, not_pid: u32) -> u32 {
        wait_for(what, Duration::from_secs(240), || {
            let pid = self.main_pid();
            (self.out("systemctl is-active vardr") == "active" && pid != 0 && pid != not_pid)
                .then_some(pid)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                self.out("systemctl status --no-pager vardr; journalctl -u vardr --no-pager -n 40")
            )
        })
    }

    /// Appends to /etc/shadow (of the overlay) from outside the service:
    /// the default policy's `protect-credentials` rule governs it.
    fn shadow_write(&self) -> Output {
        self.sh("echo >> /etc/shadow")
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid != 0 {
            // A clean power-off stops the agent (no BPF program stays).
            let _ = self.sh("systemctl poweroff --no-block");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.unshare.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if !matches!(self.unshare.try_wait(), Ok(Some(_))) {
            // SIGKILL to the namespace's init ends every process in it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.base)
            .status();
    }
}

/// Progress on the console as it happens (libtest captures `eprintln!`
/// until the test ends; a VM boot that hangs would show nothing), with the
/// seconds since the first step: where the test's time goes.
fn step(what: &str) {
    use std::io::Write as _;
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let secs = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let _ = writeln!(std::io::stderr(), "vm_package: [{secs:6.1}s] {what}");
}

fn run_ok(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect("spawn");
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn assert_eperm(o: &Output, what: &str) {
    assert!(!o.status.success(), "{what} succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Operation not permitted"), "{what}: {err}");
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn package_install_upgrade_remove_under_systemd() {
    if !common::require_root(TEST) {
        return;
    }
    // Only in the VM: the test mounts an overlay and boots an init.
    let in_vm = std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("virtme"));
    let debs = std::env::var("VARDR_TEST_DEBS").unwrap_or_default();
    let debs: Vec<&str> = debs.split(':').filter(|d| !d.is_empty()).collect();
    if !in_vm || debs.len() != 2 {
        eprintln!("SKIPPED {TEST}: needs the VM runner (a virtme-ng VM, VARDR_TEST_DEBS with two revisions)");
        return;
    }
    let (first, second) = (debs[0], debs[1]);
    let base = PathBuf::from(format!("/tmp/vardr-pkg-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("mkdir");
    step("booting systemd");
    let share = Path::new(first)
        .parent()
        .and_then(Path::parent)
        .expect("package directory");
    let sd = Systemd::boot(&base, share);
    step("systemd running; dpkg -i (revision 1)");

    // Install: enabled, started in audit mode once the policy is in force,
    // in its own vardr.service cgroup.
    let out = sd.ok(&format!("dpkg -i {first} 2>&1"));
    eprintln!("dpkg -i: {out}");
    assert_eq!(sd.out("systemctl is-enabled vardr"), "enabled");
    let pid = sd.wait_active("vardr.service to start", 0);
    assert_eq!(
        sd.out("systemctl show -p ControlGroup --value vardr"),
        "/system.slice/vardr.service"
    );
    assert!(
        sd.ok(&format!("cat /proc/{pid}/cgroup"))
            .ends_with("/system.slice/vardr.service"),
        "the agent runs in its unit's cgroup"
    );
    // The unit's system call filter is in force (seccomp mode 2, filter).
    let seccomp = sd.ok(&format!("grep '^Seccomp:' /proc/{pid}/status"));
    assert!(seccomp.ends_with('2'), "no system call filter: {seccomp}");
    let text = sd.out("systemctl show -p StatusText --value vardr");
    assert!(text.starts_with("auditing policy default"), "{text}");
    let status = sd.ok("vardr status --json");
    assert!(status.contains("\"mode\": \"audit\""), "{status}");
    assert!(
        sd.shadow_write().status.success(),
        "audit mode blocks nothing"
    );
    // The journal gets plain text (no colour codes) and the default
    // policy starts without a warning.
    let journal = sd.out("journalctl -u vardr -o cat --no-pager");
    assert!(journal.contains("vardr agent running"), "{journal}");
    assert!(!journal.contains('\x1b'), "colour codes in the journal");
    // (The one warning allowed: this test's systemd runs in a PID
    // namespace of its own, which a real host's does not.)
    assert!(
        !journal
            .lines()
            .any(|l| l.contains(" WARN ") && !l.contains("PID namespace of its own")),
        "warnings at start: {journal}"
    );
    for page in ["vardr.1.gz", "vardr-agent.1.gz", "vardr-policy-apply.1.gz"] {
        sd.ok(&format!("test -s /usr/share/man/man1/{page}"));
    }

    step("installed; enforcing through vardr.env");
    // Enforcement through the env file.
    sd.ok("sed -i 's/^VARDR_AGENT_ARGS=/VARDR_AGENT_ARGS=--enforce /' /etc/vardr/vardr.env");
    sd.ok("systemctl restart vardr");
    let pid = sd.wait_active("vardr.service to restart enforcing", pid);
    assert!(sd
        .out("systemctl show -p StatusText --value vardr")
        .starts_with("enforcing policy default"));
    assert_eperm(&sd.shadow_write(), "a write to /etc/shadow while enforcing");

    step("reloads");
    // Reload: a good policy is applied, a bad one fails the reload and the
    // running policy stays in force.
    sd.ok("systemctl reload vardr");
    sd.ok(
        "cp /etc/vardr/policy.yaml /root/policy.good && echo 'bogus: 1' >> /etc/vardr/policy.yaml",
    );
    assert!(
        !sd.sh("systemctl reload vardr").status.success(),
        "an invalid policy fails the reload"
    );
    assert_eq!(sd.out("systemctl is-active vardr"), "active");
    assert_eq!(sd.main_pid(), pid, "a failed reload does not restart");
    let journal = sd.out("journalctl -u vardr -o cat --no-pager");
    assert!(
        journal.contains("policy.yaml:"),
        "the reload's error, with its position, is in the journal:\n{journal}"
    );
    assert_eperm(&sd.shadow_write(), "a write after a rejected reload");
    sd.ok("cp /root/policy.good /etc/vardr/policy.yaml && systemctl reload vardr");

    step("kill -9 of the agent");
    // From here through the upgrade, a loop outside the service keeps
    // trying the denied write (each try in a subshell: the fallback's
    // pinned tracepoints kill the writer while no agent answers). Not one
    // may succeed: the crash and the upgrade are restarts with no gap.
    sd.ok(
        "rm -f /run/gap-stop /run/gap-result; nohup sh -c 'n=0; b=0; \
         while [ ! -e /run/gap-stop ]; do \
           if ( : >> /etc/shadow ) 2>/dev/null; then b=$((b+1)); fi; \
           n=$((n+1)); sleep 0.02; \
         done; echo $n $b > /run/gap-result' >/dev/null 2>&1 &",
    );
    // A crash: systemd restarts the agent, and it enforces again.
    sd.ok(&format!("kill -9 {pid}"));
    let pid = sd.wait_active("vardr.service to come back after SIGKILL", pid);
    assert_eperm(&sd.shadow_write(), "a write after the restart");

    step("dpkg -i (revision 2)");
    // Upgrade: the service is restarted, the changed conffile is kept.
    sd.ok(&format!("dpkg -i {second} </dev/null 2>&1"));
    sd.wait_active("vardr.service after the upgrade", pid);
    assert!(sd.ok("cat /etc/vardr/vardr.env").contains("--enforce"));
    assert!(sd.ok("dpkg-query -W -f '${Version}' vardr").ends_with("-2"));
    assert_eperm(&sd.shadow_write(), "a write after the upgrade");
    sd.ok("touch /run/gap-stop");
    let result = wait_for("the write loop's result", Duration::from_secs(60), || {
        let r = sd.out("cat /run/gap-result 2>/dev/null");
        (!r.is_empty()).then_some(r)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut f = result.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (tries, breaches) = (f.next().flatten(), f.next().flatten());
    eprintln!("denied writes tried through the crash and the upgrade: {result}");
    assert!(tries.is_some_and(|n| n > 0), "the loop never ran: {result}");
    assert_eq!(breaches, Some(0), "denied writes that succeeded: {result}");

    step("dpkg -r");
    // Remove: the agent stops, enforcement ends, the configuration stays.
    sd.ok("dpkg -r vardr 2>&1");
    assert_ne!(sd.out("systemctl is-active vardr"), "active");
    sd.ok("test ! -e /usr/bin/vardr && test -f /etc/vardr/policy.yaml");
    assert!(
        sd.shadow_write().status.success(),
        "nothing is enforced after removal"
    );

    step("dpkg -P");
    // Purge: the configuration and logs go.
    sd.ok("dpkg -P vardr 2>&1");
    sd.ok("test ! -e /etc/vardr && test ! -e /var/log/vardr");
    drop(sd);
    let _ = std::fs::remove_dir_all(&base);
}
