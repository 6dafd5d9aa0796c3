//! Talking to a running agent: `vardr policy apply` and `vardr status`.
use std::{path::Path, time::Duration};

use nix::unistd::Pid;

use super::status::{self, ReloadStatus, Status, StatusError};
use crate::policy;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error("agent pid {0} is not running (stale status file)")]
    Stale(u32),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent rejected the policy; the previous policy stays in force:\n{0}")]
    Rejected(String),
}

/// The status of a live agent.
pub fn running(dir: &Path) -> Result<Status, ControlError> {
    let s = status::read(dir)?;
    if nix::sys::signal::kill(Pid::from_raw(s.pid as i32), None).is_err() {
        return Err(ControlError::Stale(s.pid));
    }
    Ok(s)
}

/// Validates `file` here, asks the agent to load it (over its control
/// socket, which tells the agent who asks), and waits for its answer.
pub fn apply(dir: &Path, file: &Path, wait: Duration) -> Result<ReloadStatus, ControlError> {
    policy::load(file)?;
    let abs =
        std::fs::canonicalize(file).map_err(|e| ControlError::Io(file.display().to_string(), e))?;
    running(dir)?;
    let socket = dir.join(super::requests::SOCKET_NAME);
    match super::requests::apply(dir, &abs, wait) {
        Ok(Ok(())) => Ok(status::read(dir)?.last_reload),
        Ok(Err(reason)) => Err(ControlError::Rejected(reason)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err(ControlError::Timeout(wait))
        }
        Err(e) => Err(ControlError::Io(socket.display().to_string(), e)),
    }
}
