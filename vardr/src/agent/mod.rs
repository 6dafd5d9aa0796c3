//! The long-running agent: loads the policy into the kernel, streams events,
//! reloads on SIGHUP, and removes everything it attached when it stops.
pub mod control;
pub mod status;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    backend::{self, BackendChoice, Enforcer, Plan},
    compile::{self, Limits, RuleSet},
    events::{self, Clock, Event, JsonEvent, RuleInfo},
    kernel, policy,
    probe::{self, Backend},
};
use status::{HookStatus, ReloadStatus, Status};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("vardr agent must run as root: loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")]
    NotRoot,
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error("{path}: {source}")]
    Compile {
        path: PathBuf,
        #[source]
        source: compile::CompileError,
    },
    #[error(transparent)]
    Plan(#[from] backend::PlanError),
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error(transparent)]
    Status(#[from] status::StatusError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `vardr agent` settings.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub policy: PathBuf,
    pub enforce: bool,
    pub backend: BackendChoice,
    pub scope_cgroup: Option<PathBuf>,
    pub limits: Limits,
    pub runtime_dir: PathBuf,
}

/// Rule ids of the current and the previous rule set, so events queued
/// before a reload still name their rule.
#[derive(Default)]
struct Catalog {
    current: HashMap<u32, RuleInfo>,
    previous: HashMap<u32, RuleInfo>,
    next_id: u32,
}

impl Catalog {
    fn get(&self, id: u32) -> Option<RuleInfo> {
        self.current
            .get(&id)
            .or_else(|| self.previous.get(&id))
            .cloned()
    }

    fn replace(&mut self, rules: HashMap<u32, RuleInfo>) {
        self.previous = std::mem::replace(&mut self.current, rules);
    }
}

fn load_rules(
    path: &Path,
    first_id: u32,
    limits: &Limits,
) -> Result<(policy::Policy, RuleSet), AgentError> {
    let pol = policy::load(path)?;
    let set = compile::compile(&pol, first_id, limits).map_err(|source| AgentError::Compile {
        path: path.into(),
        source,
    })?;
    for w in &set.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok((pol, set))
}

/// Last exec'd binary per pid, from exec events: names the binary of a
/// process that is already gone (killed) when its policy event is written.
/// Bounded; the process cache of a later version replaces it.
#[derive(Default)]
struct RecentExecs(HashMap<u32, String>);

impl RecentExecs {
    const MAX: usize = 32768;

    fn record(&mut self, pid: u32, binary: &str) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(pid, binary.to_string());
    }

    fn binary(&self, pid: u32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|| self.0.get(&pid).cloned())
    }
}

struct Agent {
    opts: AgentOptions,
    execs: RecentExecs,
    enforcer: Enforcer,
    catalog: Catalog,
    status: Status,
    clock: Clock,
    node: String,
    lost_reported: u64,
}

impl Agent {
    fn hook_label(&self, hook: vardr_common::Hook) -> Option<&'static str> {
        let plan = self.enforcer.plan();
        let b = match hook {
            vardr_common::Hook::FileOpen | vardr_common::Hook::FileWrite => plan.file.backend,
            vardr_common::Hook::Exec => plan.exec.backend,
            vardr_common::Hook::Connect => plan.network.backend,
        };
        (b == Backend::Audit).then_some("audit")
    }

    fn write_event(&mut self, ev: &Event, out: &mut impl Write) -> std::io::Result<()> {
        let (binary, rule, label) = match ev {
            Event::Policy(p) => (
                self.execs.binary(p.header.pid),
                self.catalog.get(p.rule_id),
                self.hook_label(p.hook),
            ),
            Event::Exec { header, filename } => {
                self.execs.record(header.pid, filename);
                (None, None, None)
            }
        };
        let json = JsonEvent::new(ev, &self.clock, &self.node, binary, rule, label);
        serde_json::to_writer(&mut *out, &json)?;
        out.write_all(b"\n")
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>, out: &mut impl Write) -> std::io::Result<()> {
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(ev) => self.write_event(&ev, out)?,
                Err(e) => tracing::warn!("dropping malformed event: {e}"),
            }
        }
        out.flush()
    }

    /// SIGHUP: the file named by `vardr policy apply`, or the current one.
    fn reload(&mut self) {
        let req = status::request_path(&self.opts.runtime_dir);
        let path = match std::fs::read_to_string(&req) {
            Ok(p) => {
                let _ = std::fs::remove_file(&req);
                PathBuf::from(p.trim())
            }
            Err(_) => self.opts.policy.clone(),
        };
        let seq = self.status.last_reload.seq + 1;
        let result =
            load_rules(&path, self.catalog.next_id, &self.opts.limits).and_then(|(pol, set)| {
                self.enforcer.apply(&set)?;
                Ok((pol, set))
            });
        match result {
            Ok((pol, set)) => {
                tracing::info!(policy = %pol.name, rules = set.rule_count(), "policy reloaded from {}", path.display());
                self.catalog.next_id += set.rule_count() as u32;
                self.catalog.replace(set.rules);
                self.opts.policy = path.clone();
                self.status.policy_path = path;
                self.status.policy_name = pol.name;
                self.status.rules = self.catalog.current.len();
                self.status.last_reload = ReloadStatus {
                    seq,
                    ok: true,
                    at: status::now(),
                    error: None,
                };
            }
            Err(e) => {
                tracing::error!("policy reload rejected, previous policy stays in force: {e}");
                self.status.last_reload = ReloadStatus {
                    seq,
                    ok: false,
                    at: status::now(),
                    error: Some(e.to_string()),
                };
            }
        }
        self.save_status();
    }

    /// Loss is never silent: a warning and an event whenever the count grows.
    fn check_lost(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        let lost = self.enforcer.lost_events().unwrap_or(0);
        if lost > self.lost_reported {
            let delta = lost - self.lost_reported;
            tracing::warn!(
                lost = delta,
                total = lost,
                "kernel dropped events: ring buffer full"
            );
            let ev = serde_json::json!({
                "events_lost": {"count": delta, "total": lost},
                "node_name": self.node,
                "time": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            });
            serde_json::to_writer(&mut *out, &ev)?;
            out.write_all(b"\n")?;
            out.flush()?;
            self.lost_reported = lost;
            self.status.events_lost = lost;
            self.save_status();
        }
        Ok(())
    }

    fn save_status(&self) {
        if let Err(e) = status::write(&self.opts.runtime_dir, &self.status) {
            tracing::warn!("cannot write status: {e}");
        }
    }
}

fn hook_status(plan: &Plan, enforcer: &Enforcer) -> Vec<HookStatus> {
    plan.hooks()
        .iter()
        .map(|h| HookStatus {
            hook: h.hook.to_string(),
            backend: h.backend.to_string(),
            enforcing: enforcer.enforcing(h.hook),
            reason: h.reason.clone(),
        })
        .collect()
}

/// Runs until SIGINT or SIGTERM, writing one JSON event per line to `out`.
pub async fn run(opts: AgentOptions, mut out: impl Write) -> Result<(), AgentError> {
    if !kernel::is_root() {
        return Err(AgentError::NotRoot);
    }
    let (pol, set) = load_rules(&opts.policy, 1, &opts.limits)?;
    let report = probe::run();
    let plan = Plan::from_probe(&report, opts.backend)?;
    for h in plan.hooks() {
        tracing::info!(hook = %h.hook, backend = %h.backend, "{}", h.reason);
        if opts.enforce && matches!(h.backend, Backend::Audit | Backend::None) {
            tracing::warn!("--enforce: the {} hook cannot be enforced on this kernel; its matches are audited only", h.hook);
        }
    }
    status::create_dir(&opts.runtime_dir)?;
    let mut enforcer = Enforcer::start(
        plan.clone(),
        &backend::Options {
            enforce: opts.enforce,
            scope_cgroup: opts.scope_cgroup.clone(),
            limits: opts.limits,
        },
    )?;
    let stats = enforcer.apply(&set)?;
    tracing::debug!(?stats, "rules written");

    let ring = enforcer.take_events()?;
    let mut catalog = Catalog {
        next_id: 1 + set.rule_count() as u32,
        ..Default::default()
    };
    catalog.replace(set.rules);
    let status = Status {
        pid: std::process::id(),
        started_at: status::now(),
        kernel: kernel::release(),
        mode: if opts.enforce { "enforce" } else { "audit" }.into(),
        policy_path: opts.policy.clone(),
        policy_name: pol.name.clone(),
        rules: catalog.current.len(),
        scope_cgroup: opts.scope_cgroup.clone(),
        hooks: hook_status(&plan, &enforcer),
        last_reload: ReloadStatus {
            seq: 0,
            ok: true,
            at: status::now(),
            error: None,
        },
        events_lost: 0,
    };
    let mut agent = Agent {
        opts,
        execs: RecentExecs::default(),
        enforcer,
        catalog,
        status,
        clock: Clock::now(),
        node: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        lost_reported: 0,
    };
    agent.save_status();

    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut ring_fd =
        unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| AgentError::Io(e.into()))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));

    tracing::info!(
        policy = %pol.name,
        rules = agent.status.rules,
        mode = %agent.status.mode,
        "vardr agent running: JSON events on stdout; SIGHUP reloads the policy; SIGINT/SIGTERM stops"
    );
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => agent.reload(),
            _ = tick.tick() => agent.check_lost(&mut out)?,
            guard = ring_fd.readable_mut() => {
                let mut guard = guard?;
                agent.drain(guard.get_inner_mut(), &mut out)?;
                guard.clear_ready();
            }
        }
    }
    // Report what the kernel produced before the signal, then detach.
    agent.drain(ring_fd.get_mut(), &mut out)?;
    agent.check_lost(&mut out)?;
    drop(ring_fd);
    status::remove(&agent.opts.runtime_dir);
    drop(agent);
    tracing::info!("vardr agent stopped; all programs detached");
    Ok(())
}
