//! The agent's status file (`<runtime-dir>/status.json`), read by
//! `vardr status` and `vardr policy apply`, and the apply request file.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_RUNTIME_DIR: &str = "/run/vardr";
const STATUS: &str = "status.json";

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct HookStatus {
    pub hook: String,
    pub backend: String,
    pub enforcing: bool,
    pub reason: String,
    /// fanotify permission events serve this hook (fallback backend).
    #[serde(default)]
    pub fanotify: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ReloadStatus {
    /// Increments on every reload attempt.
    pub seq: u64,
    pub ok: bool,
    pub at: String,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Status {
    pub pid: u32,
    pub started_at: String,
    pub kernel: String,
    /// "enforce" or "audit".
    pub mode: String,
    pub policy_path: PathBuf,
    pub policy_name: String,
    pub rules: usize,
    pub scope_cgroup: Option<PathBuf>,
    pub hooks: Vec<HookStatus>,
    pub last_reload: ReloadStatus,
    pub events_lost: u64,
    /// Layer 2 Cedar policies in force.
    #[serde(default)]
    pub cedar_policies: usize,
    /// Cedar policies compiled into Layer 1 (enforced in the kernel).
    #[serde(default)]
    pub kernel_enforced: Vec<String>,
    /// The set this agent pinned (`--keep-enforcing`).
    #[serde(default)]
    pub pinned_set: Option<String>,
    /// Sets earlier agents left pinned, taken over at start.
    #[serde(default)]
    pub took_over: Vec<super::persist::Takeover>,
}

impl Status {
    /// One line for people: "auditing policy default (4 rules)",
    /// "enforcing policy default (4 rules; audit only: file)", plus a
    /// rejected last reload. systemd shows it in `systemctl status`.
    pub fn summary(&self) -> String {
        let enforcing = self.mode == "enforce";
        let mut s = format!(
            "{} policy {} ({} rules",
            if enforcing { "enforcing" } else { "auditing" },
            self.policy_name,
            self.rules
        );
        let audit_only: Vec<&str> = self
            .hooks
            .iter()
            .filter(|h| !h.enforcing)
            .map(|h| h.hook.as_str())
            .collect();
        if enforcing && !audit_only.is_empty() {
            s.push_str(&format!("; audit only: {}", audit_only.join(", ")));
        }
        s.push(')');
        if let Some(e) = &self.last_reload.error {
            s.push_str(&format!("; last reload REJECTED: {e}"));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no running agent found ({path}: {source}); is `vardr agent` running with --runtime-dir {dir}?")]
    NotRunning {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, #[source] serde_json::Error),
}

pub fn status_path(dir: &Path) -> PathBuf {
    dir.join(STATUS)
}

/// Creates the runtime directory, readable by root only.
pub fn create_dir(dir: &Path) -> Result<(), StatusError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StatusError::Io(dir.into(), e))
}

/// Writes the status atomically (temp file + rename).
pub fn write(dir: &Path, s: &Status) -> Result<(), StatusError> {
    let path = status_path(dir);
    let tmp = dir.join(".status.json.tmp");
    let json = serde_json::to_vec_pretty(s).map_err(|e| StatusError::Parse(path.clone(), e))?;
    std::fs::write(&tmp, json).map_err(|e| StatusError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StatusError::Io(path, e))
}

pub fn read(dir: &Path) -> Result<Status, StatusError> {
    let path = status_path(dir);
    let text = std::fs::read(&path).map_err(|source| StatusError::NotRunning {
        path: path.clone(),
        dir: dir.into(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| StatusError::Parse(path, e))
}

/// Removes the status file when the agent stops.
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(status_path(dir));
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, enforcing: bool) -> HookStatus {
        HookStatus {
            hook: name.into(),
            backend: "fallback".into(),
            enforcing,
            reason: String::new(),
            fanotify: false,
        }
    }

    #[test]
    fn summary_says_what_is_in_force() {
        let mut s = Status {
            mode: "audit".into(),
            policy_name: "default".into(),
            rules: 4,
            hooks: vec![hook("file", false), hook("exec", false)],
            ..Default::default()
        };
        assert_eq!(s.summary(), "auditing policy default (4 rules)");
        s.mode = "enforce".into();
        s.hooks[1].enforcing = true;
        assert_eq!(
            s.summary(),
            "enforcing policy default (4 rules; audit only: file)"
        );
        s.last_reload.error = Some("x.yaml:3:5: unknown field".into());
        assert!(s
            .summary()
            .ends_with("; last reload REJECTED: x.yaml:3:5: unknown field"));
    }
}
