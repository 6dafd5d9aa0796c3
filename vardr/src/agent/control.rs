//! Talking to a running agent: `vardr policy apply` and `vardr status`.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

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

/// Validates `file` here, asks the agent to load it, and waits for its answer.
pub fn apply(dir: &Path, file: &Path, wait: Duration) -> Result<ReloadStatus, ControlError> {
    policy::load(file)?;
    let abs =
        std::fs::canonicalize(file).map_err(|e| ControlError::Io(file.display().to_string(), e))?;
    let before = running(dir)?;
    let req = status::request_path(dir);
    let text = super::reload_signal::request_text(std::process::id(), &abs);
    std::fs::write(&req, text.as_bytes())
        .map_err(|e| ControlError::Io(req.display().to_string(), e))?;
    nix::sys::signal::kill(Pid::from_raw(before.pid as i32), Signal::SIGHUP)
        .map_err(|e| ControlError::Io(format!("signal agent {}", before.pid), e.into()))?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(now) = status::read(dir) {
            if now.last_reload.seq > before.last_reload.seq {
                return match now.last_reload.error {
                    None => Ok(now.last_reload),
                    Some(e) => Err(ControlError::Rejected(e)),
                };
            }
        }
    }
    Err(ControlError::Timeout(wait))
}
