//! SIGHUP through a signalfd, so the agent knows who asked for a reload:
//! with `--enforce`, a process the policy governs may not change the
//! policy in force (`vardr policy apply`, or editing the file and sending
//! SIGHUP, would otherwise undo every rule).
use std::io;

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

    /// Waits for SIGHUP; who sent each: `None` when the kernel cannot vouch
    /// for the sender (`rt_sigqueueinfo` lets a caller write any pid into
    /// the signal; SIGIO through `F_SETSIG` carries no pid at all).
    pub async fn recv(&mut self) -> io::Result<Vec<Option<u32>>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let mut senders = Vec::new();
            while let Some(info) = guard.get_inner_mut().read_signal()? {
                senders.push(sender_of(info.ssi_code, info.ssi_pid));
            }
            guard.clear_ready();
            if !senders.is_empty() {
                return Ok(senders);
            }
        }
    }
}

/// `kill(2)` and `tgkill(2)` fill the sender's pid in themselves.
fn sender_of(code: i32, pid: u32) -> Option<u32> {
    const SI_USER: i32 = 0;
    const SI_TKILL: i32 = -6;
    matches!(code, SI_USER | SI_TKILL).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kill_and_tgkill_name_their_sender() {
        assert_eq!(sender_of(0, 42), Some(42));
        assert_eq!(sender_of(-6, 42), Some(42));
        // SI_QUEUE: the caller wrote the pid; SIGIO's POLL_IN: no pid.
        assert_eq!(sender_of(-1, 1), None);
        assert_eq!(sender_of(1, 7), None);
    }
}
