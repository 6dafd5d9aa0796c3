//! SIGHUP through a signalfd, so the agent knows who asked for a reload:
//! with `--enforce`, a process the policy governs may not change the
//! policy in force (`vardr policy apply`, or editing the file and sending
//! SIGHUP, would otherwise undo every rule).
use std::{io, time::SystemTime};

use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal},
    signalfd::{SfdFlags, SignalFd},
};
use tokio::io::unix::AsyncFd;

pub struct ReloadSignal {
    fd: AsyncFd<SignalFd>,
}

impl ReloadSignal {
    /// Blocks SIGHUP in this thread, and so in every thread it starts
    /// later, and reads it from a signalfd instead. Call before the agent
    /// starts any thread: a thread without the block would take SIGHUP's
    /// default action (the end of the process).
    pub fn new() -> io::Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGHUP);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // SAFETY: the signalfd owns its descriptor, which stays open and
        // unchanged for as long as the AsyncFd owns the signalfd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Waits for SIGHUP; the pids that sent it (0: the kernel).
    pub async fn recv(&mut self) -> io::Result<Vec<u32>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let mut senders = Vec::new();
            while let Some(info) = guard.get_inner_mut().read_signal()? {
                senders.push(info.ssi_pid);
            }
            guard.clear_ready();
            if !senders.is_empty() {
                return Ok(senders);
            }
        }
    }
}

/// A reload request of `vardr policy apply`: the requester's pid, then the
/// policy file.
pub fn request_text(pid: u32, policy: &std::path::Path) -> String {
    format!("{pid}\n{}", policy.display())
}

/// The policy file of a request, if `sender` wrote it: the pid must be the
/// sender's and the file no older than the sender process (a request left
/// by another process for a pid it predicted is ignored).
pub fn request_of(text: &str, modified: SystemTime, sender: u32) -> Option<std::path::PathBuf> {
    let (pid, path) = text.split_once('\n')?;
    if pid.trim().parse::<u32>().ok()? != sender {
        return None;
    }
    let started = started_at(sender)?;
    // Start times are kept in clock ticks (10 ms).
    let slack = std::time::Duration::from_millis(20);
    (modified + slack >= started).then(|| std::path::PathBuf::from(path.trim()))
}

/// When process `pid` started, as wall-clock time.
fn started_at(pid: u32) -> Option<SystemTime> {
    let start_ns = crate::process::start_ticks(pid)?.checked_mul(vardr_common::NS_PER_TICK)?;
    let now_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let now_boot_ns = now_boot.tv_sec() as u64 * 1_000_000_000 + now_boot.tv_nsec() as u64;
    let age = std::time::Duration::from_nanos(now_boot_ns.checked_sub(start_ns)?);
    SystemTime::now().checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_only_for_the_process_that_wrote_it() {
        let me = std::process::id();
        let text = request_text(me, std::path::Path::new("/etc/vardr/other.yaml"));
        let now = SystemTime::now();
        assert_eq!(
            request_of(&text, now, me),
            Some("/etc/vardr/other.yaml".into())
        );
        // Another sender, or a file written before the sender started.
        assert_eq!(request_of(&text, now, me + 1), None);
        let long_ago = now - std::time::Duration::from_secs(3600 * 24 * 365);
        assert_eq!(request_of(&text, long_ago, me), None);
        assert_eq!(request_of("/etc/vardr/other.yaml", now, me), None);
    }
}
