//! The long-running agent: loads the policy into the kernel, streams events,
//! reloads on SIGHUP, and removes everything it attached when it stops.
pub mod appear;
mod compile_job;
pub mod control;
mod generic_hooks;
mod heap;
pub mod persist;
pub mod reload_signal;
pub mod requests;
pub mod response;
pub mod sd_notify;
pub mod status;
pub mod tracing_policies;

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    api,
    backend::{self, ApplyStats, BackendChoice, Enforcer, Plan},
    cedar,
    compile::{
        bundle::{self, Bundle, BundleError},
        Limits,
    },
    events::{self, Clock, Event, JsonEvent, Layer2, PolicyMatch, RuleInfo},
    fanotify, kernel,
    metrics::{self, MatchLabels, Metrics, TypeLabel},
    policy,
    probe::{self, Backend},
    process::{ProcessCache, ProcessInfo},
    sinks::{Output, RotatingFile, Sinks},
};
use response::Responder;
use tracing_policies::ApiPolicies;

use crate::api::tetragon::policies::{Envelope, Loaded, PolicyRequest, Refused};
use status::{HookStatus, ReloadStatus, Status};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("vardr agent must run as root: loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")]
    NotRoot,
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Plan(#[from] backend::PlanError),
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error(transparent)]
    Status(#[from] status::StatusError),
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
    // Transparent: with a "{0}" message and the error as its source too,
    // `{:#}` printed the message twice.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),
    #[error(transparent)]
    Cgroup(#[from] kernel::cgroup::CgroupError),
    #[error("{dir} belongs to a running agent (pid {pid}) for the same scope; stop it first")]
    PinOwned { dir: PathBuf, pid: u32 },
}

/// `vardr agent` settings.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub policy: PathBuf,
    pub enforce: bool,
    pub backend: BackendChoice,
    pub scope_cgroup: Option<PathBuf>,
    /// The kubelet's pod log root (`TracingPolicyNamespaced`).
    pub k8s_pod_logs: PathBuf,
    pub limits: Limits,
    pub runtime_dir: PathBuf,
    pub output: Output,
    /// JSON lines file, rotated at `export_max_bytes`, keeping `export_keep` old files.
    pub export_file: Option<PathBuf>,
    pub export_max_bytes: u64,
    pub export_keep: usize,
    pub metrics_addr: Option<SocketAddr>,
    /// Leave programs, links and maps pinned in force when the agent exits.
    pub keep_enforcing: bool,
    /// Never adopt a pinned set: load fresh programs beside it.
    pub reload_programs: bool,
    /// bpffs directory of this scope's pinned sets.
    pub pin_dir: PathBuf,
    /// Where Tetragon's gRPC API is served (`None`: `tetragon.sock` in
    /// the runtime directory).
    pub tetragon_socket: Option<PathBuf>,
    /// Report the server name of every TLS connection and map addresses
    /// back to the names DNS answered with.
    pub tls_capture: bool,
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
        // The kernel's built-in denies: a governed process attaching to or
        // signalling an exempt one; one leaving the rules by its cgroup.
        let builtin = match id {
            vardr_common::RULE_PROTECT_EXEMPT => Some("protect-exempt-processes"),
            vardr_common::RULE_PROTECT_SCOPE => Some("protect-scope"),
            vardr_common::RULE_UNREADABLE_HELLO => Some("unreadable-client-hello"),
            vardr_common::RULE_PATHS_UNREADABLE => Some("path-rules-unreadable"),
            vardr_common::RULE_PACKET_FRAMES => Some("packet-frames"),
            vardr_common::RULE_NONE => return None,
            _ => None,
        };
        if let Some(rule) = builtin {
            return Some(RuleInfo {
                policy_name: "vardr".into(),
                rule: rule.into(),
                severity: "high".into(),
                message: None,
                tags: Vec::new(),
                observe: false,
            });
        }
        self.current
            .get(&id)
            .or_else(|| self.previous.get(&id))
            .cloned()
    }

    fn replace(&mut self, rules: HashMap<u32, RuleInfo>) {
        self.previous = std::mem::replace(&mut self.current, rules);
    }
}

/// Answers a request (`vardr policy apply`, a TracingPolicy command) once
/// the reload it asked for is in force or rejected.
pub type Waiter = Box<dyn FnOnce(Result<(), Refused>) + Send>;

pub fn waiter(tx: tokio::sync::oneshot::Sender<Result<(), Refused>>) -> Waiter {
    Box::new(move |r| {
        let _ = tx.send(r);
    })
}

fn load_rules(
    path: &Path,
    extra: &[crate::policy::tracing::TracingPolicy],
    first_id: u32,
    limits: &Limits,
) -> Result<Bundle, AgentError> {
    let b = bundle::load(path, extra, first_id, limits)?;
    for w in &b.rules.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let absent = &b.rules.absent_binaries;
    if !absent.is_empty() {
        // A policy may name 100 000 binaries not installed: a few tell.
        const SHOWN: usize = 10;
        let more = match absent.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        tracing::info!(
            "{}: not installed, matched by path until they appear: {}{more}",
            path.display(),
            absent[..absent.len().min(SHOWN)].join(", ")
        );
    }
    for w in &b.cedar.warnings {
        tracing::warn!("{w}");
    }
    for name in &b.kernel.kernel_enforced {
        tracing::info!("Cedar policy {name} is enforced in the kernel (Layer 1)");
    }
    Ok(b)
}

/// Open flags that make an open a write (O_WRONLY, O_RDWR, O_CREAT,
/// O_TRUNC, O_APPEND).
fn writes(flags: u32) -> bool {
    let f = flags as i32;
    f & (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) != 0
}

/// A process the cache does not know, from what the kernel said.
fn unknown_process(h: &vardr_common::EventHeader) -> ProcessInfo {
    ProcessInfo {
        exec_id: String::new(),
        pid: h.pid,
        start_boot_ns: 0,
        uid: h.uid,
        gid: h.gid,
        auid: None,
        binary: events::c_str(&h.comm),
        arguments: String::new(),
        args_truncated: false,
        cwd: String::new(),
        start_time: std::time::SystemTime::UNIX_EPOCH,
        cgroup_id: h.cgroup_id,
        cgroup: String::new(),
        container_id: None,
        creds: None,
        origin: "unknown",
        parent: None,
        json: Default::default(),
    }
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
    layer2: cedar::Engine,
    responder: Responder,
    /// Layer 1's verdict on an exec that goes ahead (audit or alert), by
    /// pid with its time, until that exec's own event arrives. Only the LSM
    /// backend decides before the exec; the fallback reports after it.
    exec_verdicts: HashMap<u32, (u64, &'static str)>,
    /// Names the frames of kprobe stack traces (kallsyms read at the first).
    stacks: events::stack::Symbolizer,
    pod_source: generic_hooks::PodSource,
    /// Named binaries not installed at the last load (see [`appear`]).
    awaited: appear::Awaited,
    persist: persist::Persist,
    /// The fanotify deny path of the fallback backend, when it runs.
    fanotify: Option<fanotify::Service>,
    /// Reloads are prepared on a thread of their own; results come back here.
    reloads: tokio::sync::mpsc::UnboundedSender<Prepared>,
    /// A reload is being prepared.
    reloading: bool,
    /// The file (and API TracingPolicies) of a reload asked for while
    /// another was being prepared.
    /// `None` as the file: the policy file in force when it is prepared.
    queued_reload: Option<(Option<PathBuf>, ApiPolicies)>,
    /// Who waits for the reload in preparation, and for the queued one.
    waiters: Vec<Waiter>,
    queued_waiters: Vec<Waiter>,
    /// Names DNS answers gave addresses (`--tls-capture`).
    names: crate::names::NameCache,
    /// Domain rules in force, for the DNS names of plain connects.
    domain_rules: Vec<crate::names::DomainRule>,
    /// TracingPolicies added through the API: in force, and as last asked
    /// for (what the next reload compiles).
    api_policies: ApiPolicies,
    api_desired: ApiPolicies,
    /// The policy file's TracingPolicies, for listings.
    file_policies: Vec<Loaded>,
    /// TracingPolicy kprobes and tracepoints (loaded for the first policy
    /// that has some).
    generic: Option<crate::hooks::GenericHooks>,
    /// Where the hooks' reader task sends their events.
    generic_tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    /// Deleting the entries the last reload replaced: the generation the
    /// next reload writes into, so it waits for this first.
    retiring: Option<std::thread::JoinHandle<()>>,
}

/// The listing entries of the policy file's TracingPolicies (those the API
/// added come after them in `b.tracing`).
fn file_policies(b: &Bundle) -> Vec<Loaded> {
    let n = b.policy.tracing_policies.len();
    b.tracing
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, t)| tracing_policies::file_entry(i as u64 + 1, t))
        .collect()
}

/// A reload prepared off the event loop: the policy parsed and compiled,
/// its rules written under the unused generation, not yet in force.
struct Prepared {
    path: PathBuf,
    api: ApiPolicies,
    result: Result<(Bundle, backend::Staged, Option<fanotify::Planned>), AgentError>,
    started: std::time::Instant,
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
                let layer1 = self
                    .exec_verdicts
                    .remove(&p.pid)
                    .filter(|(at, _)| e.header.boot_ns.saturating_sub(*at) < 1_000_000_000)
                    .map_or("allow", |(_, v)| v);
                if self.layer2.covers(cedar::Action::Exec) {
                    let ask = cedar::Ask {
                        action: cedar::Action::Exec,
                        process: &p,
                        target: cedar::Target::Binary(p.binary.clone()),
                        hook: "exec",
                        flags: 0,
                        backend: self.exec_backend(),
                        layer1,
                        rule: "",
                        time,
                    };
                    if let Some(l) = self.layer2(&ask, e.header.boot_ns) {
                        let mut j = JsonEvent::exec(&p, &self.node);
                        j.set_layer2(l);
                        return self.emit(&j);
                    }
                }
                // The common case: the line from the serialized forms the
                // cache keeps (the same bytes serde would write).
                let line = events::exec_line(&p, &self.node);
                self.count_event("process_exec");
                self.sinks
                    .publish_serialized(crate::sinks::Published::exec(&p, line));
                None
            }
            Event::Fork { header, child_pid } => {
                self.exec_verdicts.remove(&child_pid);
                self.cache
                    .on_fork(header.pid, child_pid, header.boot_ns, time);
                None
            }
            Event::Exit { header, exit_code } => {
                self.exec_verdicts.remove(&header.pid);
                self.cache
                    .on_exit(header.pid)
                    // Kernel threads have no binary and are not reported.
                    .filter(|p| !p.binary.is_empty())
                    .map(|p| JsonEvent::exit(&p, exit_code, &self.node, time))
            }
            Event::Generic(c) => {
                let Some(meta) = self.generic.as_ref().and_then(|g| g.meta(c.slot)) else {
                    tracing::debug!(slot = c.slot, "call of a hook no longer known");
                    return Ok(());
                };
                let p = self.cache.get(c.header.pid);
                let mut j = JsonEvent::generic(&c, &meta, p.as_deref(), &self.node, time);
                self.stacks.fill(&c, &mut j);
                if let Some(rule) = c.selector.and_then(|s| meta.rules.get(s as usize)) {
                    let labels = MatchLabels {
                        rule: rule.clone(),
                        verdict: j.verdict().unwrap_or("alert").into(),
                    };
                    self.metrics.policy_matches.get_or_create(&labels).inc();
                }
                Some(j)
            }
            Event::Policy(mut m) => {
                if m.rule_id == vardr_common::RULE_NONE
                    && m.op == vardr_common::Operation::Hook
                    && !self.name_rule(&mut m)
                {
                    // A plain connect reported for its DNS names only.
                    return Ok(());
                }
                let p = self.cache.get(m.header.pid);
                let mut rule = self.catalog.get(m.rule_id);
                // A report-only rule for Layer 2: not a Layer 1 match.
                let observed = rule.as_ref().is_some_and(|r| r.observe);
                if observed {
                    rule = None;
                    m.verdict = vardr_common::Verdict::Allow;
                }
                if let Some(r) = &rule {
                    let labels = MatchLabels {
                        rule: r.rule.clone(),
                        verdict: events::verdict_name(m.verdict).into(),
                    };
                    self.metrics.policy_matches.get_or_create(&labels).inc();
                }
                let label = self.hook_label(m.hook);
                if m.hook == vardr_common::Hook::Exec
                    && !observed
                    && m.backend == vardr_common::BackendKind::Lsm
                    && m.verdict != vardr_common::Verdict::Deny
                {
                    if self.exec_verdicts.len() >= 4096 {
                        self.exec_verdicts.clear();
                    }
                    self.exec_verdicts.insert(
                        m.header.pid,
                        (m.header.boot_ns, events::verdict_name(m.verdict)),
                    );
                }
                let mut j =
                    JsonEvent::policy(&m, p.as_deref(), rule.clone(), label, &self.node, time);
                if let Some((ip, _, _)) = m.remote {
                    let names = self.names.names(ip, std::time::Instant::now());
                    if !names.is_empty() {
                        j.set_dns_names(names);
                    }
                }
                let fallback;
                let process = match p.as_deref() {
                    Some(p) => p,
                    None => {
                        fallback = unknown_process(&m.header);
                        &fallback
                    }
                };
                if m.op == vardr_common::Operation::TlsClientHello {
                    if let Some(r) = self.on_client_hello(&m, process) {
                        j.set_response(r);
                    }
                }
                if m.op == vardr_common::Operation::CloneIntoCgroup
                    && m.backend == vardr_common::BackendKind::Fallback
                    && m.verdict == vardr_common::Verdict::Deny
                {
                    // No LSM refused the child: it is ended now.
                    let r = self.responder.end_escaped(m.flags, m.header.boot_ns);
                    if r == "killed" {
                        tracing::warn!(pid = process.pid, child = m.flags, "a child started outside the rules (clone3 CLONE_INTO_CGROUP): child killed");
                    }
                    j.set_response(r);
                }
                if m.op == vardr_common::Operation::NameConnect
                    && m.verdict == vardr_common::Verdict::Deny
                {
                    let enforcer = &self.enforcer;
                    let r = self.responder.end(process, m.header.boot_ns, &|pid| {
                        enforcer.exempt_by_binary(pid)
                    });
                    if r == "killed" {
                        self.metrics.tls_kills.inc();
                        tracing::warn!(pid = process.pid, binary = %process.binary, "connect to a denied DNS name: process killed");
                    }
                    j.set_response(r);
                }
                let l2 = self.layer2_of_match(&m, process, rule.as_ref(), label, time);
                let has_l2 = l2.is_some();
                if let Some(l) = l2 {
                    j.set_layer2(l);
                }
                // Observations only matter when a Cedar policy decided.
                (!observed || has_l2).then_some(j)
            }
            Event::Dns { payload, .. } => {
                match crate::names::dns::parse_response(&payload) {
                    Ok(answers) => {
                        self.metrics.dns_answers.inc_by(answers.len() as u64);
                        self.names.insert(&answers, std::time::Instant::now());
                    }
                    Err(e) => {
                        self.metrics.dns_parse_errors.inc();
                        tracing::debug!("DNS response not understood: {e}");
                    }
                }
                None
            }
        };
        if let Some(j) = json {
            self.emit(&j)?;
        }
        Ok(())
    }

    /// A plain connect the kernel reported so its DNS names can be checked
    /// against the domain rules: on a match it becomes that rule's event
    /// (a deny kills the process, after the fact); returns whether to
    /// report it.
    fn name_rule(&mut self, m: &mut events::PolicyMatch) -> bool {
        let Some((ip, _, _)) = m.remote else {
            return false;
        };
        let names = self.names.names(ip, std::time::Instant::now());
        let Some(r) = crate::names::rules::decide(&self.domain_rules, &names) else {
            return false;
        };
        m.rule_id = r.rule_id;
        m.verdict = match r.action {
            crate::policy::Action::Deny if self.responder.enforce => vardr_common::Verdict::Deny,
            crate::policy::Action::Deny => vardr_common::Verdict::Audit,
            _ => vardr_common::Verdict::Alert,
        };
        // Deny of a plain connect is a kill after the fact, which the JSON
        // names as the fallback's tracepoint kills are named.
        m.op = vardr_common::Operation::NameConnect;
        true
    }

    /// Counts a ClientHello; after a denied one (dropped in the kernel, so
    /// the connection would hang until TCP gives up) ends the process.
    fn on_client_hello(
        &mut self,
        m: &events::PolicyMatch,
        process: &ProcessInfo,
    ) -> Option<String> {
        self.metrics
            .tls_server_names
            .get_or_create(&TypeLabel {
                r#type: events::verdict_name(m.verdict).into(),
            })
            .inc();
        if m.verdict != vardr_common::Verdict::Deny {
            return None;
        }
        // The process that connected the socket must have been running at
        // the connect (`flags`: ms from the connect to the hello), or its
        // pid now names another one.
        let connected_ns = m
            .header
            .boot_ns
            .saturating_sub(u64::from(m.flags) * 1_000_000);
        let enforcer = &self.enforcer;
        let r = self
            .responder
            .end(process, connected_ns, &|pid| enforcer.exempt_by_binary(pid));
        if r == "killed" {
            self.metrics.tls_kills.inc();
            tracing::warn!(pid = process.pid, binary = %process.binary, server_name = ?m.path, "TLS server name denied: process killed");
        }
        Some(r)
    }

    fn exec_backend(&self) -> &'static str {
        match self.enforcer.plan().exec.backend {
            Backend::Lsm => "lsm",
            Backend::Fallback => "fallback",
            _ => "audit",
        }
    }

    /// Layer 2 for a Layer 1 report.
    fn layer2_of_match(
        &mut self,
        m: &events::PolicyMatch,
        process: &ProcessInfo,
        rule: Option<&RuleInfo>,
        backend_label: Option<&'static str>,
        time: std::time::SystemTime,
    ) -> Option<Layer2> {
        use vardr_common::Hook as K;
        let (action, target) = match (m.hook, &m.path, &m.remote) {
            (K::FileOpen | K::FileWrite, Some(path), _) => (
                if m.hook == K::FileWrite || writes(m.flags) {
                    cedar::Action::Write
                } else {
                    cedar::Action::Open
                },
                cedar::Target::File(path.clone()),
            ),
            (K::Exec, Some(path), _) => (cedar::Action::Exec, cedar::Target::Binary(path.clone())),
            (K::Connect, _, Some((ip, port, proto))) => (
                cedar::Action::Connect,
                cedar::Target::Endpoint {
                    // ::ffff:a.b.c.d is the IPv4 host it names, as the
                    // kernel's rules treat it.
                    ip: ip.to_canonical(),
                    port: *port,
                    protocol: match proto {
                        6 => "tcp",
                        17 => "udp",
                        _ => "any",
                    },
                    sni: m
                        .path
                        .clone()
                        .filter(|_| m.op == vardr_common::Operation::TlsClientHello),
                    dns_names: self.names.names(*ip, std::time::Instant::now()),
                },
            ),
            _ => return None,
        };
        if !self.layer2.covers(action) {
            return None;
        }
        let rule_name = rule.map(|r| r.rule.clone()).unwrap_or_default();
        let ask = cedar::Ask {
            action,
            process,
            target,
            // A ClientHello is a connect's second look: policies that act
            // once per connection test `context.hook == "connect"`.
            hook: if m.op == vardr_common::Operation::TlsClientHello {
                "tls_client_hello"
            } else {
                events::hook_name(m.hook)
            },
            flags: m.flags,
            backend: backend_label.unwrap_or(events::backend_name(m.backend)),
            layer1: events::verdict_name(m.verdict),
            rule: &rule_name,
            time,
        };
        self.layer2(&ask, m.header.boot_ns)
    }

    /// Evaluates the Cedar policies; runs the kill response on a deny.
    fn layer2(&mut self, ask: &cedar::Ask, boot_ns: u64) -> Option<Layer2> {
        let started = std::time::Instant::now();
        let errors_before = self.layer2.policy_errors();
        let result = self.layer2.evaluate(ask);
        self.metrics
            .layer2_eval_seconds
            .observe(started.elapsed().as_secs_f64());
        // The engine's count restarts with each reload; the metric must not.
        let new_errors = self.layer2.policy_errors().saturating_sub(errors_before);
        if new_errors > 0 {
            self.metrics.layer2_policy_errors.inc_by(new_errors);
        }
        let out = match result {
            Ok(Some(o)) => o,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(pid = ask.process.pid, "Layer 2 cannot evaluate event: {e}");
                self.metrics.layer2_request_errors.inc();
                return None;
            }
        };
        self.metrics
            .layer2_verdicts
            .get_or_create(&TypeLabel {
                r#type: out.verdict.as_str().into(),
            })
            .inc();
        let response = out.kill.then(|| {
            let enforcer = &self.enforcer;
            let r = self.responder.kill(ask.process, ask.layer1, boot_ns, &|pid| {
                enforcer.exempt_by_binary(pid)
            });
            if r == "killed" {
                self.metrics.layer2_kills.inc();
                tracing::warn!(pid = ask.process.pid, binary = %ask.process.binary, policies = ?out.policies, "Layer 2 deny: process killed");
            }
            r
        });
        Some(Layer2 {
            verdict: out.verdict.as_str(),
            policies: out.policies,
            severity: out.severity,
            response,
        })
    }

    /// A record of the TracingPolicy hooks' ring buffer.
    fn handle_generic(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match events::generic::decode(bytes) {
            Ok(c) => self.handle(Event::Generic(Box::new(c))),
            Err(e) => {
                tracing::warn!("dropping malformed hook event: {e}");
                Ok(())
            }
        }
    }

    fn emit(&mut self, j: &JsonEvent) -> std::io::Result<()> {
        self.count_event(j.kind());
        self.sinks.publish(j);
        Ok(())
    }

    fn count_event(&mut self, kind: &'static str) {
        let labels = TypeLabel {
            r#type: kind.into(),
        };
        self.metrics.events.get_or_create(&labels).inc();
    }

    /// Processes up to `limit` records (all with `None`); returns how many
    /// (the limit: more may be waiting).
    fn drain(
        &mut self,
        ring: &mut crate::backend::ring::EventRing,
        limit: Option<usize>,
    ) -> std::io::Result<usize> {
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
        Ok(n)
    }

    /// Everything queued in both buffers, lifecycle first (a policy event's
    /// process must be known before it); returns how many records.
    fn drain_all(&mut self, rings: &mut crate::backend::Rings) -> std::io::Result<usize> {
        Ok(self.drain(&mut rings.lifecycle, None)? + self.drain(&mut rings.policy, None)?)
    }

    /// SIGHUP: the file named by `vardr policy apply`, or the current one.
    /// A reload asked for by process `sender` (`None`: a sender the kernel
    /// does not vouch for) of `path` (`None`: the policy file in force),
    /// answered on `reply` once done. With `--enforce`, refused when the
    /// policy governs the sender.
    fn reload(&mut self, sender: Option<u32>, path: Option<PathBuf>, reply: Option<Waiter>) {
        if let Err(r) = self.may_change_policy(sender, "the reload") {
            if let Some(reply) = reply {
                reply(Err(r));
            }
            return;
        }
        self.start_reload(path, reply);
    }

    /// With `--enforce`, a process the policy governs may not change it.
    fn may_change_policy(&mut self, sender: Option<u32>, what: &str) -> Result<(), Refused> {
        let enforcer = &self.enforcer;
        let governed = sender.is_none_or(|pid| {
            self.responder
                .governs(pid, &|p| enforcer.exempt_by_binary(p))
        });
        if !(self.opts.enforce && governed) {
            return Ok(());
        }
        let who = sender.map_or(
            "a sender the kernel does not name (sigqueue, SIGIO)".to_string(),
            |p| format!("pid {p}"),
        );
        let error = format!(
            "refused: {what} was asked for by {who}, which the policy in force governs; a governed process cannot change the policy (ask from outside its scope, e.g. `systemctl reload vardr`)"
        );
        tracing::warn!("policy change {error}");
        self.metrics.policy_reload_errors.inc();
        self.status.last_reload = ReloadStatus {
            seq: self.status.last_reload.seq + 1,
            ok: false,
            at: status::now(),
            error: Some(error.clone()),
        };
        self.save_status();
        Err(Refused::new(tonic::Code::PermissionDenied, error))
    }

    /// Reloads `path` (`None`: the policy file in force) with the API
    /// TracingPolicies last asked for.
    fn start_reload(&mut self, path: Option<PathBuf>, reply: Option<Waiter>) {
        // The API set only grows from what was asked before: the latest
        // set carries every earlier change.
        let api = self.api_desired.clone();
        if self.reloading {
            // One queued reload, once the one in preparation is done: the
            // latest file asked for and the latest API set. Only a request
            // for another file is superseded; the others ride along.
            let queued = self.queued_reload.take().and_then(|(p, _)| p);
            if let (Some(old), Some(new)) = (&queued, &path) {
                if old != new {
                    for w in self.queued_waiters.drain(..) {
                        w(Err(Refused::new(
                            tonic::Code::Aborted,
                            format!("superseded by a request for {}", new.display()),
                        )));
                    }
                }
            }
            self.queued_reload = Some((path.or(queued), api));
            self.queued_waiters.extend(reply);
            return;
        }
        self.waiters.extend(reply);
        let path = path.unwrap_or_else(|| self.opts.policy.clone());
        self.prepare_reload(path, api);
    }

    /// A TracingPolicy command from Tetragon's API: listings are answered
    /// at once; changes go through a reload like a policy file's, and are
    /// answered when it is done.
    fn tracing_request(&mut self, env: Envelope) {
        if let PolicyRequest::List { reply } = env.request {
            let mut all = self.file_policies.clone();
            all.extend(self.api_policies.listing());
            for (i, l) in all.iter_mut().enumerate() {
                l.id = i as u64 + 1;
                l.enforced = self.opts.enforce;
            }
            let _ = reply.send(all);
            return;
        }
        if let Err(r) = self.may_change_policy(env.pid, "the TracingPolicy change") {
            match env.request {
                PolicyRequest::Add { reply, .. }
                | PolicyRequest::Delete { reply, .. }
                | PolicyRequest::Enable { reply, .. } => {
                    let _ = reply.send(Err(r));
                }
                PolicyRequest::List { .. } => {}
            }
            return;
        }
        let (change, reply) = self.api_desired.change(env.request, &self.file_policies);
        if let tracing_policies::Change::Reload(next) = change {
            self.api_desired = next;
            self.start_reload(None, reply);
        }
    }

    /// Parses, compiles and writes the policy at `path` on a thread of its
    /// own: the event loop keeps draining events, serving the API and
    /// metrics meanwhile. [`Agent::finish_reload`] puts it in force.
    fn prepare_reload(&mut self, path: PathBuf, api: ApiPolicies) {
        let started = std::time::Instant::now();
        let staging = match self.enforcer.staging() {
            Ok(s) => s,
            Err(e) => {
                // Answered through the loop like any reload: in preparation
                // until then, so no other reload starts meanwhile.
                self.reloading = true;
                let _ = self.reloads.send(Prepared {
                    path,
                    api,
                    result: Err(e.into()),
                    started,
                });
                return;
            }
        };
        let (first_id, limits, tx) = (self.catalog.next_id, self.opts.limits, self.reloads.clone());
        let fan_opts = self.fanotify.as_ref().map(|f| f.options().clone());
        let retiring = self.retiring.take();
        self.reloading = true;
        let spawned = std::thread::Builder::new()
            .name("vardr-reload".into())
            .spawn(move || {
                let work = || {
                    // The slot of the old generation must be empty before
                    // the new one goes in (see `backend::generation`).
                    if let Some(r) = retiring {
                        let _ = r.join();
                    }
                    let b = load_rules(&path, &api.enabled(), first_id, &limits)?;
                    // The fanotify marks are planned (stat of every
                    // governed path) while the maps are written.
                    let t = std::time::Instant::now();
                    let (staged, planned) = std::thread::scope(|s| {
                        let planning = fan_opts.as_ref().map(|o| {
                            s.spawn(|| {
                                let t = std::time::Instant::now();
                                let p = fanotify::plan(o, &b.rules);
                                tracing::debug!(
                                    ms = t.elapsed().as_millis() as u64,
                                    "reload: fanotify marks planned"
                                );
                                p
                            })
                        });
                        let staged = staging.write(&b.rules);
                        tracing::debug!(
                            ms = t.elapsed().as_millis() as u64,
                            "reload: rule maps written"
                        );
                        let planned = planning.map(|p| p.join());
                        (staged, planned)
                    });
                    let planned = match planned {
                        Some(Err(_)) => {
                            return Err(AgentError::Io(std::io::Error::other(
                                "planning the fanotify marks panicked",
                            )))
                        }
                        Some(Ok(p)) => Some(p),
                        None => None,
                    };
                    Ok((b, staged?, planned))
                };
                // A panic must still answer: the loop waits for this reload.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                    .unwrap_or_else(|_| {
                        Err(AgentError::Io(std::io::Error::other(
                            "the reload thread panicked",
                        )))
                    });
                let _ = tx.send(Prepared {
                    path,
                    api,
                    result,
                    started,
                });
            });
        if let Err(e) = spawned {
            self.reloading = false;
            tracing::error!("policy reload: cannot start its thread: {e}");
            self.api_desired = self.api_policies.clone();
            for w in self.waiters.drain(..) {
                w(Err(Refused::new(
                    tonic::Code::Unavailable,
                    format!("cannot start the reload thread: {e}"),
                )));
            }
        }
    }

    /// Puts a prepared reload in force (one config switch; the fanotify
    /// marks of the fallback follow), or reports why it was rejected.
    fn finish_reload(&mut self, p: Prepared) {
        self.reloading = false;
        let seq = self.status.last_reload.seq + 1;
        let (path, api) = (p.path, p.api);
        let result = p.result.and_then(|(b, staged, planned)| {
            let gov = generic_hooks::governance(&self.enforcer, self.opts.enforce);
            let hooks_staged = generic_hooks::stage(
                &mut self.generic,
                &generic_hooks::of(&b),
                &b.rules,
                gov,
                &self.generic_tx,
                &self.pod_source,
            )
            .map_err(generic_hooks::hook_error)?;
            let t = std::time::Instant::now();
            let (stats, retired) = self.enforcer.commit(&b.rules, staged)?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "reload: committed");
            generic_hooks::commit(&mut self.generic, hooks_staged)?;
            // The reload is in force: a failed pin is reported, not undone.
            if let Err(e) = self.pin_generic() {
                tracing::error!("the reloaded TracingPolicy hooks are not pinned: they stop with the agent ({e})");
            }
            // The old generation is dropped on a thread too, after a grace period.
            self.retiring = Some(std::thread::spawn(move || {
                retired.delete();
                heap::release_free_memory();
            }));
            if let (Some(f), Some(mut planned)) = (self.fanotify.as_mut(), planned) {
                planned.read_paths_from(self.enforcer.path_maps());
                let t = std::time::Instant::now();
                f.apply_planned(planned)?;
                tracing::debug!(ms = t.elapsed().as_millis() as u64, "reload: fanotify marks applied");
            }
            Ok((b, stats))
        });
        match result {
            Ok((mut b, stats)) => {
                let hash = persist::policy_hash(&path, &b.policy.named_files());
                tracing::info!(policy = %b.policy.name, rules = b.rules.rule_count(), cedar = b.cedar.len(), ms = p.started.elapsed().as_millis() as u64, "policy reloaded from {}", path.display());
                self.metrics.policy_reloads.inc();
                self.record_maps(&stats);
                self.catalog.next_id += b.rules.rule_count() as u32;
                self.awaited = appear::Awaited::new(std::mem::take(&mut b.rules.absent_binaries));
                self.file_policies = file_policies(&b);
                self.domain_rules = std::mem::take(&mut b.rules.domain_rules);
                self.catalog.replace(b.rules.rules);
                // Kernel rules and Cedar set switch together: the maps
                // are in force, now the engine that reads their reports.
                self.layer2 = cedar::Engine::new(&b.cedar);
                self.responder.exempt_pids = b.policy.exempt_pids.iter().copied().collect();
                self.opts.policy = path.clone();
                self.api_policies = api;
                let dir = self.opts.runtime_dir.join(tracing_policies::DIR_NAME);
                if let Err(e) = self.api_policies.save(&dir) {
                    tracing::warn!(
                        "cannot keep the API's TracingPolicies in {}: {e}",
                        dir.display()
                    );
                }
                self.status.policy_path = path;
                self.status.policy_name = b.policy.name;
                self.status.rules = self.catalog.current.len();
                self.status.cedar_policies = b.cedar.len();
                self.status.kernel_enforced = b.kernel.kernel_enforced;
                self.status.hooks =
                    hook_status(self.enforcer.plan(), &self.enforcer, self.fanotify.as_ref());
                let name = self.status.policy_name.clone();
                self.pin_policy(&name, hash);
                self.status.last_reload = ReloadStatus {
                    seq,
                    ok: true,
                    at: status::now(),
                    error: None,
                };
            }
            Err(e) => {
                tracing::error!("policy reload rejected, previous policy stays in force: {e}");
                // What this reload asked of the API did not go in force;
                // a queued reload still carries the later requests.
                self.api_desired = self
                    .queued_reload
                    .as_ref()
                    .map_or_else(|| self.api_policies.clone(), |q| q.1.clone());
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
        heap::release_free_memory();
        let answer = match &self.status.last_reload.error {
            None => Ok(()),
            Some(e) => Err(Refused::new(tonic::Code::InvalidArgument, e.clone())),
        };
        for w in self.waiters.drain(..) {
            w(answer.clone());
        }
        if let Some((next, api)) = self.queued_reload.take() {
            self.waiters = std::mem::take(&mut self.queued_waiters);
            let next = next.unwrap_or_else(|| self.opts.policy.clone());
            self.prepare_reload(next, api);
        }
    }

    /// Loss is never silent: a warning, a metric and an event whenever the
    /// kernel's count grows.
    fn check_lost(&mut self) -> std::io::Result<()> {
        let lost = self.enforcer.lost_events().unwrap_or(0)
            + self.generic.as_ref().map_or(0, |g| g.lost_events());
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
            self.touch_pins();
            self.status.events_lost = lost;
            self.save_status();
        }
        Ok(())
    }

    /// Brings the pods a namespaced TracingPolicy governs up to date;
    /// whether a pod's cgroup is still to be found (look again soon).
    fn sync_pods(&mut self) -> bool {
        let Some(g) = self.generic.as_mut() else {
            return false;
        };
        if let Err(e) = g.sync_pods() {
            tracing::warn!("TracingPolicyNamespaced pods: {e}");
        }
        g.pods_pending()
    }

    fn tick(&mut self) -> std::io::Result<()> {
        self.check_lost()?;
        let appeared = self.awaited.appeared();
        if !appeared.is_empty() {
            tracing::info!(
                "{} installed: reloading the policy to match by identity too",
                appeared.join(", ")
            );
            // The agent's own request: the policy file in force.
            self.reload(Some(std::process::id()), None, None);
        }
        // Pods started or gone since: a namespaced TracingPolicy's hooks
        // follow them (the pod log root's watch brings news sooner).
        self.sync_pods();
        self.ticks += 1;
        if self.ticks.is_multiple_of(30) {
            self.cache.sweep_dead();
        }
        self.cache.prune();
        self.metrics.process_cache_size.set(self.cache.len() as i64);
        Ok(())
    }

    fn record_maps(&self, stats: &ApplyStats) {
        use crate::bpf::maps;
        let l = &self.opts.limits;
        // Each generation's inner maps are created with the limits' capacity.
        for (map, entries, limit) in [
            (
                maps::PATH_RULES,
                stats.path_entries - stats.exact_path_entries,
                l.path_entries,
            ),
            (maps::EXACT_PATHS, stats.exact_path_entries, l.path_entries),
            (maps::INODE_RULES, stats.inode_entries, l.inode_entries),
            (maps::NET4_RULES, stats.net4_entries, l.net4_entries),
            (maps::NET6_RULES, stats.net6_entries, l.net6_entries),
            (maps::DOMAIN_RULES, stats.domain_entries, l.domain_entries),
            (maps::EXEMPT_PIDS, stats.exempt_pids, l.exempt_pids),
        ] {
            self.metrics.set_map(map, entries, limit);
        }
    }

    fn save_status(&self) {
        if let Err(e) = status::write(&self.opts.runtime_dir, &self.status) {
            tracing::warn!("cannot write status: {e}");
        }
    }
}

fn hook_status(
    plan: &Plan,
    enforcer: &Enforcer,
    fan: Option<&fanotify::Service>,
) -> Vec<HookStatus> {
    plan.hooks()
        .iter()
        .map(|h| {
            let served = fan.and_then(|f| fanotify_role(f, h.hook));
            HookStatus {
                hook: h.hook.to_string(),
                backend: h.backend.to_string(),
                enforcing: enforcer.enforcing(h.hook),
                reason: match &served {
                    Some(what) => format!("{what}; {}", h.reason),
                    None => h.reason.clone(),
                },
                fanotify: served.is_some(),
            }
        })
        .collect()
}

/// What fanotify does for `hook`, if it serves it.
fn fanotify_role(f: &fanotify::Service, hook: probe::HookKind) -> Option<String> {
    let o = f.options();
    let m = f.marks();
    let marks = format!(
        "{} inode marks{}",
        m.marked,
        if m.over_limit > 0 {
            format!(", {} objects over the limit", m.over_limit)
        } else {
            String::new()
        }
    );
    match hook {
        probe::HookKind::File if o.file => Some(format!(
            "fanotify FAN_OPEN_PERM answered by the agent: a denied open fails with EPERM on the resolved object ({marks}); {}",
            if f.holds_lease() {
                "the pinned open tracepoints stand by and take over (SIGKILL, by path) when the agent is gone"
            } else {
                "the open tracepoints are not attached"
            }
        )),
        probe::HookKind::Exec if o.exec => Some(format!(
            "fanotify FAN_OPEN_EXEC_PERM: a denied exec fails with EPERM ({marks}); SIGKILL at sched_process_exec stays as second line (memfd, copies)"
        )),
        _ => None,
    }
}

/// Starts the fanotify deny path for the hooks the fallback serves; `None`
/// (and the tracepoints keep the hooks) when the kernel refuses it.
fn start_fanotify(
    plan: &Plan,
    opts: &AgentOptions,
    events: tokio::sync::mpsc::UnboundedSender<PolicyMatch>,
) -> Option<fanotify::Service> {
    // With --keep-enforcing a fanotify group ends with its agent: the
    // pinned open tracepoints stand by and take the file rules over then.
    let file = plan.file.backend == Backend::Fallback;
    let exec = plan.exec.backend == Backend::Fallback && opts.enforce;
    if !file && !exec {
        return None;
    }
    let fo = fanotify::Options {
        enforce: opts.enforce,
        file,
        exec,
        scope: Responder::scope_of(opts.scope_cgroup.as_deref()),
        agent_cgroup: Responder::own_service_cgroup(),
        scope_id: opts
            .scope_cgroup
            .as_deref()
            .and_then(|p| kernel::cgroup::id(p).ok()),
        agent_cgroup_id: Responder::own_service_cgroup().and_then(|c| {
            let root = kernel::cgroup::root().ok()?;
            kernel::cgroup::id(&root.join(c.trim_start_matches('/'))).ok()
        }),
        protect_agent_cgroup: !kernel::in_child_pid_namespace(),
        agent_above: crate::backend::agent_ancestors(
            &kernel::cgroup::root().ok()?,
            std::process::id(),
        ),
        cgroup_root: kernel::cgroup::root().ok()?,
        max_marks: fanotify::marks::MAX_MARKS,
    };
    match fanotify::Service::start(fo, events) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("{e}: fanotify unavailable; file rules stay with SIGKILL at the open tracepoints and exec with SIGKILL at sched_process_exec");
            None
        }
    }
}

/// Runs until SIGINT or SIGTERM, exporting events to `stdout` and the
/// configured sinks.
pub async fn run(opts: AgentOptions, stdout: Box<dyn Write + Send>) -> Result<(), AgentError> {
    if !kernel::is_root() {
        return Err(AgentError::NotRoot);
    }
    // First, before any thread starts (see ReloadSignal::new).
    let reload_signal = reload_signal::ReloadSignal::new()?;
    heap::configure();
    if kernel::in_child_pid_namespace() {
        tracing::warn!("the agent runs in a PID namespace of its own: the kernel knows it by another pid, so its own exemption holds only through its service cgroup (vardr.service), and `exempt_pids` are pids of this namespace; its service manager is not PID 1 here either, so moves into its cgroup are not refused; run it in the host's (e.g. hostPID)");
    }
    let pins = crate::pin::PinDir::new(&opts.pin_dir);
    let scope_id = match &opts.scope_cgroup {
        Some(p) => kernel::cgroup::id(p)?,
        None => 0,
    };
    let mut previous = persist::previous_sets(&pins, scope_id)?;
    let started = std::time::Instant::now();
    // Rule ids unused by the pinned sets: their queued events keep their names.
    let first_id = persist::first_free_rule_id(&previous);
    // TracingPolicies an earlier agent was given through the API.
    let api_dir = opts.runtime_dir.join(tracing_policies::DIR_NAME);
    let (mut api_policies, broken) = ApiPolicies::load(&api_dir);
    for e in broken {
        tracing::error!("TracingPolicy added through the API no longer loads, left out: {e}");
    }
    let compile = compile_job::CompileJob::spawn(
        opts.policy.clone(),
        api_policies.enabled(),
        !api_policies.is_empty(),
        first_id,
        opts.limits,
    )?;
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
    let (fan_tx, mut fan_rx) = tokio::sync::mpsc::unbounded_channel::<PolicyMatch>();
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::unbounded_channel::<Prepared>();
    let (control_tx, mut control_rx) =
        tokio::sync::mpsc::unbounded_channel::<requests::ApplyRequest>();
    let mut fan = start_fanotify(&plan, &opts, fan_tx);
    let backend_opts = backend::Options {
        enforce: opts.enforce,
        scope_cgroup: opts.scope_cgroup.clone(),
        limits: opts.limits,
        // With --keep-enforcing the open tracepoints stay attached
        // (pinned, they hold the file rules while no agent runs) and
        // stand by while this agent's fanotify group answers.
        fanotify_file: fan.as_ref().is_some_and(|f| f.options().file) && !opts.keep_enforcing,
        fanotify_lease: fan.as_ref().is_some_and(|f| f.options().file) && opts.keep_enforcing,
        tls_capture: opts.tls_capture,
    };
    let build = backend::build_key(&plan, &backend_opts);
    let adopted = if opts.reload_programs {
        None
    } else {
        persist::adopt(&mut previous, &build, &plan, &backend_opts)
    };
    for s in previous.iter().filter(|s| s.same_layout()) {
        // The old set's rules must not hit this agent while both run.
        if let Err(e) = s.exempt_agent(std::process::id()) {
            tracing::warn!(set = %s.id, "cannot exempt this agent in the pinned set: {e}");
        }
    }
    let started_enforcer = match adopted {
        Some((s, e)) => Ok((e, Some(s))),
        None => Enforcer::start(plan.clone(), &backend_opts).map(|e| (e, None)),
    };
    let t_programs = started.elapsed();
    // A policy error is the more useful one to report when both fail.
    let compiled = compile.join()?;
    let (mut enforcer, adopted) = started_enforcer?;
    let t_loaded = started.elapsed();
    if compiled.without_api {
        tracing_policies::reject_all(&api_dir);
        tracing::error!(
            "the TracingPolicies added through the API were set aside (renamed *.rejected in {})",
            api_dir.display()
        );
        api_policies = ApiPolicies::default();
    }
    let bundle = compiled.bundle;
    let file_policies = file_policies(&bundle);
    // TracingPolicy kprobes and tracepoints: attached once the rules are in force.
    let start_hooks: Vec<crate::policy::tracing::generic::GenericHook> =
        generic_hooks::of(&bundle).into_iter().cloned().collect();
    let Bundle {
        policy: pol,
        cedar: cedar_set,
        kernel: kernel_rules,
        rules: mut set,
        ..
    } = bundle;
    // The fanotify marks are planned (a stat of every governed path) while
    // the maps are written.
    let fan_opts = fan.as_ref().map(|f| f.options().clone());
    let (stats, planned) = std::thread::scope(|s| {
        let planning = fan_opts
            .as_ref()
            .map(|o| s.spawn(|| fanotify::plan(o, &set)));
        let stats = enforcer.apply(&set);
        (stats, planning.map(|p| p.join()))
    });
    let stats = stats?;
    let t_maps = started.elapsed();
    if let Some(f) = fan.as_mut() {
        if let Some(m) = enforcer.exempt_tasks() {
            f.set_exempt_tasks(m);
        }
        if opts.keep_enforcing && f.options().file {
            match enforcer.fanotify_lease() {
                Some(l) => f.set_lease(l),
                None => tracing::warn!("no fanotify lease map: file rules are decided by the open tracepoints too (SIGKILL)"),
            }
        }
        // Decisions read the maps just written; the compiled entries go.
        let m = match planned {
            Some(Ok(mut p)) => {
                p.read_paths_from(enforcer.path_maps());
                f.apply_planned(p)?
            }
            _ => f.apply(&set, enforcer.path_maps())?,
        };
        tracing::info!(
            marks = m.marked,
            over_limit = m.over_limit,
            failed = m.failed,
            "fanotify deny path in force"
        );
    }
    tracing::info!(
        // The policy compiles on its own thread while the programs load.
        policy_ms = compiled.took.as_millis() as u64,
        programs_ms = t_programs.as_millis() as u64,
        rules_ms = (started.elapsed() - t_loaded).as_millis() as u64,
        maps_ms = (t_maps - t_loaded).as_millis() as u64,
        "rules in force {} ms after start ({} path, {} identity, {} IPv4, {} IPv6 entries)",
        started.elapsed().as_millis(),
        stats.path_entries,
        stats.inode_entries,
        stats.net4_entries,
        stats.net6_entries
    );
    let (generic_tx, mut generic_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let mut generic = None;
    let pod_source =
        generic_hooks::PodSource::new(opts.k8s_pod_logs.clone(), opts.scope_cgroup.as_deref());
    {
        let refs: Vec<_> = start_hooks.iter().collect();
        let gov = generic_hooks::governance(&enforcer, opts.enforce);
        let staged = generic_hooks::stage(&mut generic, &refs, &set, gov, &generic_tx, &pod_source)
            .map_err(generic_hooks::hook_error)?;
        generic_hooks::commit(&mut generic, staged)?;
    }
    // An adopted set's events still queued name its rules.
    let mut catalog = adopted
        .as_ref()
        .map(persist::catalog_of)
        .unwrap_or_default();
    catalog.next_id = first_id + set.rule_count() as u32;
    let absent_binaries = std::mem::take(&mut set.absent_binaries);
    let domain_rules = std::mem::take(&mut set.domain_rules);
    catalog.replace(std::mem::take(&mut set.rules));
    // The compiled entries are in the maps: their copy goes now.
    drop(set);
    let hooks = hook_status(&plan, &enforcer, fan.as_ref());
    let mut persist = persist::Persist {
        pins,
        own: None,
        meta: None,
    };
    if opts.keep_enforcing {
        // Pinned before the ring buffer is taken out of the object.
        persist.pins.prepare()?;
        let started_at = crate::pin::now_ns();
        let me = std::process::id();
        let meta = crate::pin::SetMeta {
            layout: vardr_common::LAYOUT_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            set_id: adopted
                .as_ref()
                .map_or_else(|| format!("{started_at:x}-{me}"), |s| s.id.clone()),
            policy_name: pol.name.clone(),
            policy_path: opts.policy.clone(),
            policy_hash: persist::policy_hash(&opts.policy, &pol.named_files()),
            mode: if opts.enforce { "enforce" } else { "audit" }.into(),
            hooks: hooks
                .iter()
                .map(|h| crate::pin::HookBackend {
                    hook: h.hook.clone(),
                    backend: h.backend.clone(),
                    enforcing: h.enforcing,
                })
                .collect(),
            started_at,
            agent_pid: me,
            agent_start_ticks: crate::pin::start_ticks(me).unwrap_or(0),
            scope_cgroup_id: enforcer.scope_cgroup_id(),
            scope_cgroup: opts.scope_cgroup.clone(),
            stopped_at: None,
            build: build.clone(),
        };
        let own = match &adopted {
            Some(s) => {
                let own = crate::pin::OwnSet::adopt(s, &meta)?;
                own.write_catalog(&catalog.entries())?;
                own
            }
            None => {
                let own = persist.pins.create_set(&meta, &catalog.entries())?;
                match enforcer.pin(&own) {
                    Ok(links) => tracing::info!(
                        links,
                        "programs and maps pinned in {} (--keep-enforcing)",
                        own.dir.display()
                    ),
                    Err(e) => {
                        own.remove();
                        return Err(e.into());
                    }
                }
                own
            }
        };
        persist.own = Some(own);
        persist.meta = Some(meta);
    }
    // What loading the programs freed (the kernel's BTF, parsed by each
    // loader) goes back before the ring buffers are mapped: their pages
    // count in the resident size from then on.
    heap::release_free_memory();
    let mut rings = enforcer.take_events()?;

    let clock = Clock::now();
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Programs are attached: whatever starts from now on arrives as events,
    // and what ran before is read from /proc.
    let mut cache = ProcessCache::new(&node);
    cache.seed_from_proc(&clock);

    let status = Status {
        pid: std::process::id(),
        started_at: status::now(),
        kernel: kernel::release(),
        mode: if opts.enforce { "enforce" } else { "audit" }.into(),
        policy_path: opts.policy.clone(),
        policy_name: pol.name.clone(),
        rules: catalog.current.len(),
        scope_cgroup: opts.scope_cgroup.clone(),
        hooks,
        last_reload: ReloadStatus {
            seq: 0,
            ok: true,
            at: status::now(),
            error: None,
        },
        events_lost: 0,
        cedar_policies: cedar_set.len(),
        kernel_enforced: kernel_rules.kernel_enforced.clone(),
        pinned_set: None,
        took_over: Vec::new(),
    };
    let responder = Responder {
        enforce: opts.enforce,
        agent_pid: std::process::id(),
        exempt_pids: pol.exempt_pids.iter().copied().collect(),
        scope: Responder::scope_of(opts.scope_cgroup.as_deref()),
        agent_cgroup: Responder::own_service_cgroup(),
        scope_id: opts
            .scope_cgroup
            .as_deref()
            .and_then(|p| kernel::cgroup::id(p).ok()),
        agent_cgroup_id: enforcer.agent_cgroup_id(),
    };
    if opts.scope_cgroup.is_some() && responder.scope.is_none() {
        return Err(AgentError::Io(std::io::Error::other(
            "--scope-cgroup is not below the cgroup v2 root",
        )));
    }
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
        layer2: cedar::Engine::new(&cedar_set),
        responder,
        exec_verdicts: HashMap::new(),
        stacks: Default::default(),
        pod_source,
        awaited: appear::Awaited::new(absent_binaries),
        persist,
        fanotify: fan,
        reloads: reload_tx,
        reloading: false,
        queued_reload: None,
        retiring: None,
        waiters: Vec::new(),
        queued_waiters: Vec::new(),
        api_desired: api_policies.clone(),
        api_policies,
        file_policies,
        // A connect follows its lookup within seconds; an answer's TTL can
        // be 0, and a long one must not keep a name after the address moved.
        domain_rules,
        names: crate::names::NameCache::new(
            16_384,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(3600),
        ),
        generic,
        generic_tx,
    };
    agent.record_maps(&stats);
    agent.status.pinned_set = agent.persist.meta.as_ref().map(|m| m.set_id.clone());
    agent.pin_generic()?;
    if let Some(s) = adopted {
        agent.adopted(s, &mut rings)?;
    }
    // This agent's set enforces: the sets earlier agents left go now.
    agent.take_over(previous)?;
    agent.save_status();

    // Local API and metrics run beside the event loop until it ends.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let socket = agent.opts.runtime_dir.join(api::SOCKET_NAME);
    let listener = api::server::bind(&socket)?;
    let tetragon_socket = agent
        .opts
        .tetragon_socket
        .clone()
        .unwrap_or_else(|| agent.opts.runtime_dir.join(api::tetragon::SOCKET_NAME));
    if let Some(dir) = tetragon_socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tetragon_listener = api::server::bind(&tetragon_socket)?;
    let (tracing_client, mut tracing_rx) = api::tetragon::policies::Client::new();
    let api_task = {
        let (tx, m, enforce) = (agent.sinks.sender(), metrics.clone(), agent.opts.enforce);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            let listeners = [listener, tetragon_listener];
            if let Err(e) =
                api::server::serve(listeners, tx, m, tracing_client, enforce, shutdown).await
            {
                tracing::error!("event API stopped: {e}");
            }
        })
    };
    // `vardr policy apply` requests, with the kernel's word on who asks.
    let control_task = {
        let listener = requests::bind(&agent.opts.runtime_dir)?;
        tokio::spawn(requests::serve(listener, control_tx))
    };
    let metrics_task = agent.opts.metrics_addr.map(|addr| {
        let registry = Arc::new(metrics.registry());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, registry).await {
                tracing::error!("metrics endpoint {addr}: {e}");
            }
        })
    });

    let crate::backend::Rings { lifecycle, policy } = rings;
    // SAFETY: each ring buffer owns its map fd, which stays open and
    // unchanged for as long as its AsyncFd owns the ring buffer.
    let mut life_fd =
        unsafe { AsyncFd::register_with_interest(lifecycle, tokio::io::Interest::READABLE) }
            .map_err(|e| AgentError::Io(e.into()))?;
    // SAFETY: as above.
    let mut policy_fd =
        unsafe { AsyncFd::register_with_interest(policy, tokio::io::Interest::READABLE) }
            .map_err(|e| AgentError::Io(e.into()))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = reload_signal;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    let (pods_tx, mut pods_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    generic_hooks::watch_pods(agent.opts.k8s_pod_logs.clone(), pods_tx);
    // (next look, last look) while a pod's cgroup is still to be found.
    let mut pod_retry: Option<(tokio::time::Instant, tokio::time::Instant)> = None;

    // The parsed policy and whatever the start allocated on the way go
    // back to the kernel before the agent settles.
    drop((pol, cedar_set, kernel_rules));
    heap::release_free_memory();
    tracing::info!(
        policy = %agent.status.policy_name,
        rules = agent.status.rules,
        mode = %agent.status.mode,
        processes = agent.cache.len(),
        "vardr agent running, {}; SIGHUP reloads the policy; SIGINT/SIGTERM stops",
        agent.status.summary()
    );
    // systemd (Type=notify): started once the policy is in force.
    let notifier = sd_notify::Notifier::from_env();
    notifier.ready(&agent.status.summary());
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            senders = sighup.recv() => {
                for sender in senders? {
                    notifier.reloading();
                    agent.reload(sender, None, None);
                    if !agent.reloading {
                        notifier.ready(&agent.status.summary());
                    }
                }
            }
            Some(req) = control_rx.recv() => {
                notifier.reloading();
                let reply = req.reply;
                let reply: Waiter = Box::new(move |r: Result<(), Refused>| {
                    let _ = reply.send(r.map_err(|e| e.message));
                });
                agent.reload(req.pid, Some(req.path), Some(reply));
                if !agent.reloading {
                    notifier.ready(&agent.status.summary());
                }
            }
            Some(env) = tracing_rx.recv() => {
                notifier.reloading();
                agent.tracing_request(env);
                if !agent.reloading {
                    notifier.ready(&agent.status.summary());
                }
            }
            Some(prepared) = reload_rx.recv() => {
                agent.finish_reload(prepared);
                if !agent.reloading {
                    notifier.ready(&agent.status.summary());
                }
            }
            _ = tick.tick() => agent.tick()?,
            Some(()) = pods_rx.recv() => {
                while pods_rx.try_recv().is_ok() {}
                let now = tokio::time::Instant::now();
                pod_retry = agent.sync_pods().then(|| {
                    (now + generic_hooks::POD_RETRY, now + generic_hooks::POD_RETRY_FOR)
                });
            }
            _ = tokio::time::sleep_until(pod_retry.map_or_else(tokio::time::Instant::now, |r| r.0)), if pod_retry.is_some() => {
                let pending = agent.sync_pods();
                let now = tokio::time::Instant::now();
                pod_retry = pod_retry
                    .filter(|r| pending && now < r.1)
                    .map(|r| (now + generic_hooks::POD_RETRY, r.1));
            }
            _ = alive.tick() => agent.touch_pins(),
            Some(bytes) = generic_rx.recv() => {
                // The process that called is in the lifecycle buffer already.
                agent.drain(life_fd.get_mut(), Some(DRAIN_BATCH))?;
                agent.handle_generic(&bytes)?;
                while let Ok(bytes) = generic_rx.try_recv() {
                    agent.handle_generic(&bytes)?;
                }
                agent.sinks.flush();
            }
            Some(m) = fan_rx.recv() => {
                // The exec that started the process is in the ring buffer
                // already: the cache must know it before this event.
                agent.drain(life_fd.get_mut(), Some(DRAIN_BATCH))?;
                agent.handle(Event::Policy(m))?;
                while let Ok(m) = fan_rx.try_recv() {
                    agent.handle(Event::Policy(m))?;
                }
                agent.sinks.flush();
            }
            guard = life_fd.readable_mut() => {
                let mut guard = guard?;
                // Bounded batches: under an event storm, signals and the
                // loss check still get their turn between batches.
                if agent.drain(guard.get_inner_mut(), Some(DRAIN_BATCH))? < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
            guard = policy_fd.readable_mut() => {
                let mut guard = guard?;
                // The execs that started these processes first.
                agent.drain(life_fd.get_mut(), Some(DRAIN_BATCH))?;
                if agent.drain(guard.get_inner_mut(), Some(DRAIN_BATCH))? < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
        }
    }
    notifier.stopping();
    // Report what the kernel produced before the signal, then detach.
    agent.drain(life_fd.get_mut(), None)?;
    agent.drain(policy_fd.get_mut(), None)?;
    // Close the fanotify groups (pending opens are released as allowed),
    // then report what they decided.
    drop(agent.fanotify.take());
    while let Ok(m) = fan_rx.try_recv() {
        agent.handle(Event::Policy(m))?;
    }
    while let Ok(bytes) = generic_rx.try_recv() {
        agent.handle_generic(&bytes)?;
    }
    agent.sinks.flush();
    agent.check_lost()?;
    agent.leave_pinned();
    let _ = stop_tx.send(());
    // Subscribers' streams never end by themselves: a client that keeps
    // its connection open must not hold the agent up.
    let mut api_task = api_task;
    if tokio::time::timeout(Duration::from_secs(2), &mut api_task)
        .await
        .is_err()
    {
        tracing::info!("closing the gRPC connections still open");
        api_task.abort();
    }
    control_task.abort();
    let _ = std::fs::remove_file(agent.opts.runtime_dir.join(requests::SOCKET_NAME));
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&tetragon_socket);
    drop(life_fd);
    drop(policy_fd);
    status::remove(&agent.opts.runtime_dir);
    let kept = agent.persist.own.is_some();
    drop(agent);
    if kept {
        tracing::info!("vardr agent stopped; its programs stay pinned");
    } else {
        tracing::info!("vardr agent stopped; all programs detached");
    }
    Ok(())
}
