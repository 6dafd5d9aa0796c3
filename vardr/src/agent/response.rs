//! Layer 2's optional response to a deny: kill the process, after the fact.
//! The same exemptions and scope as Layer 1 apply, and `--enforce` is the
//! master switch.
use std::{
    collections::HashSet,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use crate::process::{self, ProcessInfo};

/// Who may be killed.
#[derive(Debug, Default, Clone)]
pub struct Responder {
    pub enforce: bool,
    pub agent_pid: u32,
    pub exempt_pids: HashSet<u32>,
    /// `--scope-cgroup`, relative to the cgroup root ("/vardr-test").
    pub scope: Option<String>,
    /// The agent's cgroup when it is the dedicated `vardr.service` unit
    /// (exempt, as in the kernel).
    pub agent_cgroup: Option<String>,
    /// Their ids: membership by id holds when a cgroup is renamed.
    pub scope_id: Option<u64>,
    pub agent_cgroup_id: Option<u64>,
}

/// Whether cgroup path `cg` is `scope` or below it.
pub(crate) fn within(cg: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty() || cg == scope || cg.strip_prefix(scope).is_some_and(|r| r.starts_with('/'))
}

/// When a process started, in ns since boot (field 22 of /proc/PID/stat,
/// in clock ticks; boot-based like the kernel's event stamps).
fn start_boot_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(ticks.saturating_mul(1_000_000_000 / hz))
}

/// A pidfd of `pid`, which pins the process: whatever happens to the pid
/// after this, a signal through it goes to the process checked next. The
/// error is the response to report (`what`: the process's name in it).
fn pidfd_of(pid: u32, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(format!(
            "none: {what} gone ({})",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned by pidfd_open and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// SIGKILL through a pidfd: `killed`, or why not.
fn sigkill(pidfd: &OwnedFd) -> String {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no
    // siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        "killed".into()
    } else {
        format!("failed: {}", std::io::Error::last_os_error())
    }
}

impl Responder {
    /// `--scope-cgroup` as a path relative to the cgroup v2 root.
    pub fn scope_of(scope_cgroup: Option<&Path>) -> Option<String> {
        let dir = scope_cgroup?;
        let root = crate::kernel::cgroup::root().ok()?;
        let rel = dir.strip_prefix(&root).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// The agent's own cgroup, if it is `.../vardr.service`.
    pub fn own_service_cgroup() -> Option<String> {
        process::cgroup_of(std::process::id()).filter(|c| c.ends_with("/vardr.service"))
    }

    /// Whether the rules apply to process `pid`, as the kernel decides it:
    /// not PID 1, the agent, a kernel thread, an exempt pid or binary, a
    /// member of the agent's cgroup, or outside the scope. A process that
    /// is gone counts as governed (nothing shows it was not).
    pub fn governs(&self, pid: u32, exempt_by_binary: &dyn Fn(u32) -> bool) -> bool {
        if pid <= 1 || pid == self.agent_pid {
            return false;
        }
        let Some(cg) = process::cgroup_of(pid) else {
            return true;
        };
        if crate::fanotify::is_kernel_thread(pid)
            || self.exempt_pids.contains(&pid)
            || exempt_by_binary(pid)
        {
            return false;
        }
        let root = crate::kernel::cgroup::root().ok();
        let by_id = |id: Option<u64>, path: Option<&str>| match (id, &root) {
            (Some(id), Some(root)) => crate::kernel::cgroup::within_id(root, &cg, id),
            _ => path.is_some_and(|p| within(&cg, p)),
        };
        if self.agent_cgroup.is_some() && by_id(self.agent_cgroup_id, self.agent_cgroup.as_deref())
        {
            return false;
        }
        self.scope.is_none() || by_id(self.scope_id, self.scope.as_deref())
    }

    /// Kills `p` for a Layer 2 deny about an event at `event_boot_ns`;
    /// returns what happened, for the event. `exempt_by_binary` says
    /// whether the kernel holds the process exempt by the binary it
    /// executed (never decided from `/proc/PID/exe`, which a process can
    /// point elsewhere).
    pub fn kill(
        &self,
        p: &ProcessInfo,
        layer1: &str,
        event_boot_ns: u64,
        exempt_by_binary: &dyn Fn(u32) -> bool,
    ) -> String {
        if layer1 == "deny" {
            return "none: Layer 1 already blocked it".into();
        }
        self.end(p, event_boot_ns, exempt_by_binary)
    }

    /// Kills the child `pid` a governed process started where no rule
    /// applies to it (`clone3` with `CLONE_INTO_CGROUP`, which only the LSM
    /// can refuse), reported at its fork at `event_boot_ns`. It is outside
    /// the scope by definition: only the agent and PID 1 are spared. The
    /// pid is the kernel's global one: an agent in a PID namespace of its
    /// own cannot name it. The process must have started within a second
    /// before the event (it was created right before it): any other is
    /// another process that has the pid now.
    pub fn end_escaped(&self, pid: u32, event_boot_ns: u64) -> String {
        if !self.enforce {
            return "audit: would kill the child (enforcement off)".into();
        }
        if pid <= 1 || pid == self.agent_pid {
            return "none: exempt process".into();
        }
        if crate::kernel::in_child_pid_namespace() {
            return "none: the agent runs in a PID namespace of its own".into();
        }
        let pidfd = match pidfd_of(pid, "child") {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        match start_boot_ns(pid) {
            Some(start) if start <= event_boot_ns && event_boot_ns - start <= 1_000_000_000 => {}
            Some(_) => return "none: child gone (pid reused)".into(),
            None => return "none: child gone".into(),
        }
        sigkill(&pidfd)
    }

    /// Kills `p` (with the checks of [`Responder::kill`]) whatever Layer 1
    /// did: the end of a connection whose ClientHello a domain deny
    /// dropped, which would otherwise hang until TCP gives up.
    pub fn end(
        &self,
        p: &ProcessInfo,
        event_boot_ns: u64,
        exempt_by_binary: &dyn Fn(u32) -> bool,
    ) -> String {
        if !self.enforce {
            return "audit: would kill (enforcement off)".into();
        }
        if p.pid <= 1
            || p.pid == self.agent_pid
            || p.binary.is_empty()
            || self.exempt_pids.contains(&p.pid)
        {
            return "none: exempt process".into();
        }
        let pidfd = match pidfd_of(p.pid, "process") {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        // The pid may have been reused since the event (events can wait in
        // the ring buffer): a process started after the event is another.
        match start_boot_ns(p.pid) {
            Some(start) if start <= event_boot_ns => {}
            Some(_) => return "none: process gone (pid reused)".into(),
            None => return "none: process gone".into(),
        }
        // Exempt binaries as the kernel recorded them at exec (the name an
        // exec was given, and the exe link, are the process's to choose).
        if exempt_by_binary(p.pid) {
            return "none: exempt process".into();
        }
        let cg = process::cgroup_of(p.pid);
        if let (Some(agent), Some(c)) = (&self.agent_cgroup, &cg) {
            if within(c, agent) {
                return "none: exempt process".into();
            }
        }
        if let Some(scope) = &self.scope {
            if !cg.as_deref().is_some_and(|c| within(c, scope)) {
                return "none: outside --scope-cgroup".into();
            }
        }
        sigkill(&pidfd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_a_path_prefix_by_component() {
        assert!(within("/vardr-test/a", "/vardr-test"));
        assert!(within("/vardr-test", "/vardr-test/"));
        assert!(!within("/vardr-test2", "/vardr-test"));
        assert!(within("/anything", "/"));
    }

    /// An escaped child is spared without `--enforce`, when it is PID 1 or
    /// the agent, and when its pid names a process started after the
    /// event (reused).
    #[test]
    fn escaped_child_kill_checks() {
        // A child of this test as the target: a regression kills it, never
        // the test binary.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let mut r = Responder::default();
        assert!(r.end_escaped(pid, u64::MAX).starts_with("audit:"));
        r.enforce = true;
        assert!(r.end_escaped(1, u64::MAX).starts_with("none: exempt"));
        r.agent_pid = pid;
        assert!(r.end_escaped(pid, u64::MAX).starts_with("none: exempt"));
        r.agent_pid = 0;
        if !crate::kernel::in_child_pid_namespace() {
            // Started after boot time 0, and long before "now + 1 h": not
            // the process of either event.
            assert_eq!(r.end_escaped(pid, 0), "none: child gone (pid reused)");
            let later = start_boot_ns(pid).expect("start") + 3_600_000_000_000;
            assert_eq!(r.end_escaped(pid, later), "none: child gone (pid reused)");
            let at = start_boot_ns(pid).expect("start") + 1_000_000;
            assert_eq!(r.end_escaped(pid, at), "killed");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn no_kill_without_enforce_for_exempt_or_already_blocked() {
        let p = crate::process::sample(std::process::id(), "/bin/x", "/", None);
        let mut r = Responder::default();
        let no = |_| false;
        assert!(r.kill(&p, "audit", u64::MAX, &no).starts_with("audit:"));
        r.enforce = true;
        assert!(r
            .kill(&p, "deny", u64::MAX, &no)
            .starts_with("none: Layer 1"));
        r.agent_pid = p.pid;
        assert_eq!(r.kill(&p, "allow", u64::MAX, &no), "none: exempt process");
        r.agent_pid = 0;
        // The kernel says this process executed an exempt binary.
        let me = p.pid;
        assert_eq!(
            r.kill(&p, "allow", u64::MAX, &|pid| pid == me),
            "none: exempt process"
        );
    }

    #[test]
    fn a_process_started_after_the_event_is_not_the_one_to_kill() {
        // This test process, as if an event about its pid came at boot:
        // the pid must be taken for reused, and nothing is signalled.
        let p = crate::process::sample(std::process::id(), "/bin/x", "/", None);
        let r = Responder {
            enforce: true,
            ..Default::default()
        };
        assert_eq!(
            r.kill(&p, "allow", 0, &|_| false),
            "none: process gone (pid reused)"
        );
        assert!(start_boot_ns(std::process::id()).is_some_and(|s| s > 0));
    }
}
