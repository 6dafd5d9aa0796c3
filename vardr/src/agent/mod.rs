//! The long-running agent: loads the policy into the kernel, streams events,
//! reloads on SIGHUP, and removes everything it attached when it stops.
pub mod control;
pub mod status;

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    api,
    backend::{self, ApplyStats, BackendChoice, Enforcer, Plan},
    compile::{self, Limits, RuleSet},
    events::{self, Clock, Event, JsonEvent, RuleInfo},
    kernel,
    metrics::{self, MatchLabels, Metrics, TypeLabel},
    policy,
    probe::{self, Backend},
    process::ProcessCache,
    sinks::{Output, RotatingFile, Sinks},
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
    pub output: Output,
    /// JSON lines file, rotated at `export_max_bytes`, keeping `export_keep` old files.
    pub export_file: Option<PathBuf>,
    pub export_max_bytes: u64,
    pub export_keep: usize,
    pub metrics_addr: Option<SocketAddr>,
}

/// Records handled before the event loop looks at signals and ticks again.
const DRAIN_BATCH: usize = 4096;

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

struct Agent {
    opts: AgentOptions,
    enforcer: Enforcer,
    catalog: Catalog,
    status: Status,
    clock: Clock,
    node: String,
    cache: ProcessCache,
    sinks: Sinks,
    metrics: Metrics,
    lost_reported: u64,
    ticks: u64,
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

    /// Enriches one kernel event from the process cache and exports it.
    fn handle(&mut self, ev: Event) -> std::io::Result<()> {
        let time = self.clock.wall(ev.header().boot_ns);
        let json = match ev {
            Event::Exec(e) => {
                let p = self.cache.on_exec(&e, time);
                Some(JsonEvent::exec(&p, &self.node))
            }
            Event::Fork { header, child_pid } => {
                self.cache.on_fork(header.pid, child_pid, time);
                None
            }
            Event::Exit { header, exit_code } => self
                .cache
                .on_exit(header.pid)
                // Kernel threads have no binary and are not reported.
                .filter(|p| !p.binary.is_empty())
                .map(|p| JsonEvent::exit(&p, exit_code, &self.node, time)),
            Event::Policy(m) => {
                let p = self.cache.get(m.header.pid);
                let rule = self.catalog.get(m.rule_id);
                if let Some(r) = &rule {
                    let labels = MatchLabels {
                        rule: r.rule.clone(),
                        verdict: events::verdict_name(m.verdict).into(),
                    };
                    self.metrics.policy_matches.get_or_create(&labels).inc();
                }
                let label = self.hook_label(m.hook);
                Some(JsonEvent::policy(
                    &m,
                    p.as_deref(),
                    rule,
                    label,
                    &self.node,
                    time,
                ))
            }
        };
        if let Some(j) = json {
            self.emit(&j)?;
        }
        Ok(())
    }

    fn emit(&mut self, j: &JsonEvent) -> std::io::Result<()> {
        let labels = TypeLabel {
            r#type: j.kind().into(),
        };
        self.metrics.events.get_or_create(&labels).inc();
        self.sinks.publish(j);
        Ok(())
    }

    /// Processes up to `limit` records (all with `None`); returns whether
    /// the limit was reached, so more may be waiting.
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        limit: Option<usize>,
    ) -> std::io::Result<bool> {
        let mut n = 0;
        while limit.is_none_or(|l| n < l) {
            let Some(item) = ring.next() else {
                break;
            };
            n += 1;
            let decoded = events::decode(&item);
            drop(item);
            match decoded {
                Ok(ev) => {
                    tracing::trace!(kind = ev.header().kind, pid = ev.header().pid, "event");
                    self.handle(ev)?
                }
                Err(e) => tracing::warn!("dropping malformed event: {e}"),
            }
        }
        self.sinks.flush();
        Ok(limit.is_some_and(|l| n >= l))
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
                let stats = self.enforcer.apply(&set)?;
                Ok((pol, set, stats))
            });
        match result {
            Ok((pol, set, stats)) => {
                tracing::info!(policy = %pol.name, rules = set.rule_count(), "policy reloaded from {}", path.display());
                self.metrics.policy_reloads.inc();
                self.record_maps(&stats);
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
                self.metrics.policy_reload_errors.inc();
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

    /// Loss is never silent: a warning, a metric and an event whenever the
    /// kernel's count grows.
    fn check_lost(&mut self) -> std::io::Result<()> {
        let lost = self.enforcer.lost_events().unwrap_or(0);
        if lost > self.lost_reported {
            let delta = lost - self.lost_reported;
            tracing::warn!(
                lost = delta,
                total = lost,
                "kernel dropped events: ring buffer full"
            );
            self.metrics.kernel_events_lost.inc_by(delta);
            self.emit(&JsonEvent::lost(delta, lost, &self.node))?;
            self.sinks.flush();
            self.lost_reported = lost;
            self.status.events_lost = lost;
            self.save_status();
        }
        Ok(())
    }

    fn tick(&mut self) -> std::io::Result<()> {
        self.check_lost()?;
        self.ticks += 1;
        if self.ticks.is_multiple_of(30) {
            self.cache.sweep_dead();
        }
        self.cache.prune();
        self.metrics.process_cache_size.set(self.cache.len() as i64);
        Ok(())
    }

    fn record_maps(&self, stats: &ApplyStats) {
        let l = &self.opts.limits;
        let m = &self.metrics;
        m.set_map(
            crate::bpf::maps::PATH_RULES,
            stats.path_entries,
            2 * l.path_entries,
        );
        m.set_map(
            crate::bpf::maps::INODE_RULES,
            stats.inode_entries,
            2 * l.inode_entries,
        );
        m.set_map(
            crate::bpf::maps::NET4_RULES,
            stats.net4_entries,
            2 * l.net4_entries,
        );
        m.set_map(
            crate::bpf::maps::NET6_RULES,
            stats.net6_entries,
            2 * l.net6_entries,
        );
        m.set_map(
            crate::bpf::maps::EXEMPT_PIDS,
            stats.exempt_pids,
            2 * l.exempt_pids,
        );
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

/// Runs until SIGINT or SIGTERM, exporting events to `stdout` and the
/// configured sinks.
pub async fn run(opts: AgentOptions, stdout: Box<dyn Write + Send>) -> Result<(), AgentError> {
    if !kernel::is_root() {
        return Err(AgentError::NotRoot);
    }
    let started = std::time::Instant::now();
    let (pol, set) = load_rules(&opts.policy, 1, &opts.limits)?;
    let t_policy = started.elapsed();
    let report = probe::run();
    let plan = Plan::from_probe(&report, opts.backend)?;
    for h in plan.hooks() {
        tracing::info!(hook = %h.hook, backend = %h.backend, "{}", h.reason);
        if opts.enforce && matches!(h.backend, Backend::Audit | Backend::None) {
            tracing::warn!("--enforce: the {} hook cannot be enforced on this kernel; its matches are audited only", h.hook);
        }
    }
    status::create_dir(&opts.runtime_dir)?;
    let file = match &opts.export_file {
        Some(p) => Some(
            RotatingFile::open(p, opts.export_max_bytes, opts.export_keep).map_err(|e| {
                AgentError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                ))
            })?,
        ),
        None => None,
    };
    let mut enforcer = Enforcer::start(
        plan.clone(),
        &backend::Options {
            enforce: opts.enforce,
            scope_cgroup: opts.scope_cgroup.clone(),
            limits: opts.limits,
        },
    )?;
    let t_loaded = started.elapsed();
    let stats = enforcer.apply(&set)?;
    tracing::info!(
        policy_ms = t_policy.as_millis() as u64,
        programs_ms = (t_loaded - t_policy).as_millis() as u64,
        rules_ms = (started.elapsed() - t_loaded).as_millis() as u64,
        "rules in force {} ms after start ({} path, {} identity, {} IPv4, {} IPv6 entries)",
        started.elapsed().as_millis(),
        stats.path_entries,
        stats.inode_entries,
        stats.net4_entries,
        stats.net6_entries
    );
    let ring = enforcer.take_events()?;

    let clock = Clock::now();
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Programs are attached: whatever starts from now on arrives as events,
    // and what ran before is read from /proc.
    let mut cache = ProcessCache::new(&node);
    cache.seed_from_proc(&clock);

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
    let metrics = Metrics::default();
    let sinks = Sinks::new(opts.output, stdout, file);
    let mut agent = Agent {
        opts,
        enforcer,
        catalog,
        status,
        clock,
        node,
        cache,
        sinks,
        metrics: metrics.clone(),
        lost_reported: 0,
        ticks: 0,
    };
    agent.record_maps(&stats);
    agent.save_status();

    // Local API and metrics run beside the event loop until it ends.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let socket = agent.opts.runtime_dir.join(api::SOCKET_NAME);
    let api_task = {
        let (tx, m, socket) = (agent.sinks.sender(), metrics.clone(), socket.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = api::server::serve(&socket, tx, m, shutdown).await {
                tracing::error!("event API stopped: {e}");
            }
        })
    };
    let metrics_task = agent.opts.metrics_addr.map(|addr| {
        let registry = Arc::new(metrics.registry());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, registry).await {
                tracing::error!("metrics endpoint {addr}: {e}");
            }
        })
    });

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
        processes = agent.cache.len(),
        "vardr agent running: events on stdout; SIGHUP reloads the policy; SIGINT/SIGTERM stops"
    );
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => agent.reload(),
            _ = tick.tick() => agent.tick()?,
            guard = ring_fd.readable_mut() => {
                let mut guard = guard?;
                // Bounded batches: under an event storm, signals and the
                // loss check still get their turn between batches.
                if !agent.drain(guard.get_inner_mut(), Some(DRAIN_BATCH))? {
                    guard.clear_ready();
                }
            }
        }
    }
    // Report what the kernel produced before the signal, then detach.
    agent.drain(ring_fd.get_mut(), None)?;
    agent.check_lost()?;
    let _ = stop_tx.send(());
    let _ = api_task.await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&socket);
    drop(ring_fd);
    status::remove(&agent.opts.runtime_dir);
    drop(agent);
    tracing::info!("vardr agent stopped; all programs detached");
    Ok(())
}
