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
    pub exempt_binaries: HashSet<String>,
    /// `--scope-cgroup`, relative to the cgroup root ("/vardr-test").
    pub scope: Option<String>,
}

/// Whether cgroup path `cg` is `scope` or below it.
fn within(cg: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty() || cg == scope || cg.strip_prefix(scope).is_some_and(|r| r.starts_with('/'))
}

impl Responder {
    /// `--scope-cgroup` as a path relative to the cgroup v2 root.
    pub fn scope_of(scope_cgroup: Option<&Path>) -> Option<String> {
        let dir = scope_cgroup?;
        let root = crate::kernel::cgroup::root().ok()?;
        let rel = dir.strip_prefix(&root).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// Kills `p` for a Layer 2 deny; returns what happened, for the event.
    pub fn kill(&self, p: &ProcessInfo, layer1: &str) -> String {
        if layer1 == "deny" {
            return "none: Layer 1 already blocked it".into();
        }
        if !self.enforce {
            return "audit: would kill (enforcement off)".into();
        }
        if p.pid <= 1
            || p.pid == self.agent_pid
            || p.binary.is_empty()
            || self.exempt_pids.contains(&p.pid)
            || self.exempt_binaries.contains(&p.binary)
        {
            return "none: exempt process".into();
        }
        // A pidfd pins the process: whatever happens to the pid after this,
        // the signal goes to the process checked below.
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid as libc::c_int, 0) };
        if fd < 0 {
            return format!("failed: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by pidfd_open and is owned by no one else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let cg = process::cgroup_of(p.pid);
        // The agent's own unit is exempt, as it is in the kernel.
        if cg
            .as_deref()
            .is_some_and(|c| c.split('/').any(|part| part == "vardr.service"))
        {
            return "none: exempt process".into();
        }
        if let Some(scope) = &self.scope {
            if !cg.as_deref().is_some_and(|c| within(c, scope)) {
                return "none: outside --scope-cgroup".into();
            }
        }
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

    #[test]
    fn no_kill_without_enforce_for_exempt_or_already_blocked() {
        let p = crate::process::sample(std::process::id(), "/bin/x", "/", None);
        let mut r = Responder::default();
        assert!(r.kill(&p, "audit").starts_with("audit:"));
        r.enforce = true;
        assert!(r.kill(&p, "deny").starts_with("none: Layer 1"));
        r.agent_pid = p.pid;
        assert_eq!(r.kill(&p, "allow"), "none: exempt process");
        r.agent_pid = 0;
        r.exempt_binaries.insert("/bin/x".into());
        assert_eq!(r.kill(&p, "allow"), "none: exempt process");
    }
}
