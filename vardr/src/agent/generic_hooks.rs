//! The agent's side of TracingPolicy kprobes and tracepoints: their object
//! is loaded the first time a policy has such hooks, and its events are
//! read by a task of their own and handed to the event loop.
use tokio::{io::unix::AsyncFd, sync::mpsc::UnboundedSender};

use super::AgentError;
use crate::{
    backend::Enforcer,
    compile::{bundle::Bundle, RuleSet},
    hooks::{GenericHooks, Governance, HookError, Staged},
    policy::tracing::generic::GenericHook,
};

/// The kprobe and tracepoint hooks of a bundle's TracingPolicies.
pub fn of(b: &Bundle) -> Vec<&GenericHook> {
    b.tracing.iter().flat_map(|t| t.hooks.iter()).collect()
}

/// Who the hooks govern: the enforcer's agent and scope.
pub fn governance(e: &Enforcer, enforce: bool) -> Governance {
    let c = e.config();
    Governance {
        enforce,
        agent_tgid: c.agent_tgid,
        agent_start_ticks: c.agent_start_ticks,
        agent_cgroup_id: c.agent_cgroup_id,
        scope_cgroup_id: c.scope_cgroup_id,
        scope_level: c.scope_level,
    }
}

/// Where a `TracingPolicyNamespaced`'s pods are found: the kubelet's pod
/// log root, and the cgroup tree their cgroups are looked for in.
#[derive(Clone, Debug)]
pub struct PodSource {
    pub pod_logs: std::path::PathBuf,
    pub cgroups: std::path::PathBuf,
}

impl PodSource {
    /// Below the scope cgroup when there is one, else from the root.
    pub fn new(pod_logs: std::path::PathBuf, scope: Option<&std::path::Path>) -> Self {
        let cgroups = scope.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
            crate::kernel::cgroup::root().unwrap_or_else(|e| {
                // Without cgroup v2 no pod's cgroup id is what the hooks see.
                tracing::warn!("TracingPolicyNamespaced policies will govern no pod: {e}");
                "/sys/fs/cgroup".into()
            })
        });
        Self { pod_logs, cgroups }
    }
}

/// Stages `hooks`, loading the object first if this is the first time
/// (its events then go to `tx`). `None` when there is nothing to do.
pub fn stage(
    slot: &mut Option<GenericHooks>,
    hooks: &[&GenericHook],
    set: &RuleSet,
    gov: Governance,
    tx: &UnboundedSender<Vec<u8>>,
    pods: &PodSource,
) -> Result<Option<Staged>, HookError> {
    if hooks.is_empty() && slot.as_ref().is_none_or(|g| g.attached() == 0) {
        return Ok(None);
    }
    if slot.is_none() {
        let (mut g, ring) = GenericHooks::load()?;
        g.set_pod_source(pods.pod_logs.clone(), pods.cgroups.clone());
        spawn_reader(ring, tx.clone())?;
        *slot = Some(g);
    }
    match slot.as_mut() {
        Some(g) => g.stage(hooks, set, gov).map(Some),
        None => Ok(None),
    }
}

pub fn commit(slot: &mut Option<GenericHooks>, staged: Option<Staged>) -> Result<(), AgentError> {
    if let (Some(g), Some(s)) = (slot.as_mut(), staged) {
        g.commit(s).map_err(hook_error)?;
        tracing::info!(
            hooks = g.attached(),
            "TracingPolicy kprobes and tracepoints in force"
        );
    }
    Ok(())
}

pub fn hook_error(e: HookError) -> AgentError {
    AgentError::Io(std::io::Error::other(e.to_string()))
}

/// Reads the hooks' ring buffer on a task of its own.
fn spawn_reader(
    ring: crate::backend::ring::EventRing,
    tx: UnboundedSender<Vec<u8>>,
) -> Result<(), HookError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and
    // unchanged for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| HookError::Load(format!("polling the hooks' ring buffer: {e}")))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if tx.send(item.to_vec()).is_err() {
                    return;
                }
            }
            guard.clear_ready();
        }
    });
    Ok(())
}

/// How soon the agent looks again for the cgroup of a pod it has seen in
/// the log root but not below the cgroup root, and for how long.
pub const POD_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
pub const POD_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Watches the pod log root on a task of its own and says on `tx` when
/// pods came or went. A root that does not exist (yet), or that goes, is
/// looked for again every 2 s (the agent's tick syncs meanwhile).
pub fn watch_pods(dir: std::path::PathBuf, tx: UnboundedSender<()>) {
    use crate::hooks::pods::PodWatch;
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            if dir.is_dir() {
                // SAFETY: the watch owns its inotify fd, which stays open
                // and unchanged for as long as the AsyncFd owns the watch.
                let watch = PodWatch::new(&dir).and_then(|w| {
                    unsafe { AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }
                        .map_err(|e| errno(e.into()))
                });
                match watch {
                    Ok(fd) => {
                        // Pods made before the watch: the caller syncs at start
                        // and at every tick; one more look costs little.
                        if tx.send(()).is_err() {
                            return;
                        }
                        loop {
                            let Ok(mut guard) = fd.readable().await else {
                                break;
                            };
                            match guard.try_io(|w| w.get_ref().drain().map_err(Into::into)) {
                                Ok(Ok(true)) => {
                                    if tx.send(()).is_err() {
                                        return;
                                    }
                                }
                                Ok(Ok(false)) | Err(_) => {}
                                // Root removed or the queue overflowed
                                // (which only delays news to the tick).
                                Ok(Err(_)) => break,
                            }
                        }
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(
                            "watching the pod log root {}: {e}; new pods are found every 2 s instead",
                            dir.display()
                        );
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
}

fn errno(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
