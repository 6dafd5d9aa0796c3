//! Events as Cedar requests: principal, action, resource, context and the
//! two entities they need (the process, with its ancestry flattened into
//! its parents, and the resource).
//!
//! Entities are built with `cedar-policy-core` (the engine behind
//! `cedar-policy`, same version): from plain values, and into a store that
//! skips the transitive-closure pass, which the facade always runs and
//! which cost most of an event's time. The ancestry is flattened here, so
//! the closure is already complete.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    str::FromStr,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use cedar_policy_core::ast::{Entity as CoreEntity, EntityUID as Uid, PartialValue};
use smol_str::SmolStr;

use crate::process::ProcessInfo;

/// The Cedar action of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Open,
    Write,
    Exec,
    Connect,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Open, Action::Write, Action::Exec, Action::Connect];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Write => "write",
            Action::Exec => "exec",
            Action::Connect => "connect",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Actions `action in Vardr::Action::"<self>"` covers.
    pub fn members(self) -> &'static [Action] {
        match self {
            Action::Open => &[Action::Open, Action::Write],
            Action::Write => &[Action::Write],
            Action::Exec => &[Action::Exec],
            Action::Connect => &[Action::Connect],
        }
    }
}

/// What the event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File(String),
    Binary(String),
    Endpoint {
        ip: IpAddr,
        port: u16,
        /// "tcp", "udp" or "any".
        protocol: &'static str,
        /// The TLS server name, on a `tls_client_hello` event.
        sni: Option<String>,
        /// Names DNS answered with for `ip` (`--tls-capture`).
        dns_names: Vec<String>,
    },
}

/// One event, as Layer 2 sees it.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    pub action: Action,
    pub process: &'a ProcessInfo,
    pub target: Target,
    pub hook: &'static str,
    pub flags: u32,
    pub backend: &'static str,
    pub layer1: &'static str,
    pub rule: &'a str,
    pub time: SystemTime,
}

struct Types {
    process: EntityTypeName,
    binary: EntityTypeName,
    dir: EntityTypeName,
    file: EntityTypeName,
    endpoint: EntityTypeName,
    service: EntityTypeName,
    cgroup: EntityTypeName,
    container: EntityTypeName,
    action: EntityTypeName,
}

fn types() -> &'static Types {
    static T: OnceLock<Types> = OnceLock::new();
    T.get_or_init(|| {
        let t = |n: &str| match EntityTypeName::from_str(&format!("{}::{n}", super::NAMESPACE)) {
            Ok(t) => t,
            // Constant names, covered by the unit tests.
            Err(e) => panic!("entity type {n}: {e}"),
        };
        Types {
            process: t("Process"),
            binary: t("Binary"),
            dir: t("Dir"),
            file: t("File"),
            endpoint: t("Endpoint"),
            service: t("Service"),
            cgroup: t("Cgroup"),
            container: t("Container"),
            action: t("Action"),
        }
    })
}

fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

pub fn action_uid(a: Action) -> EntityUid {
    uid(&types().action, a.as_str())
}

/// `/usr/bin/curl` -> `/usr/bin`, `/usr`, `/`.
fn dirs_of(path: &str) -> impl Iterator<Item = &str> {
    let abs = path.starts_with('/');
    path.char_indices()
        .filter(move |&(i, c)| abs && c == '/' && i + 1 < path.len())
        .map(move |(i, _)| if i == 0 { "/" } else { &path[..i] })
}

/// `/a/b` -> `/a/b`, `/a`, `/`.
fn cgroups_of(path: &str) -> impl Iterator<Item = &str> {
    let own = (path.starts_with('/')).then_some(path);
    own.into_iter().chain(dirs_of(path))
}

/// The core form of an entity id (what entities store).
fn core_uid(t: &EntityTypeName, id: &str) -> Uid {
    uid(t, id).into()
}

/// What one process image is `in` by itself: its binary and that binary's
/// directories, its services, cgroups and container.
fn own_parents(q: &ProcessInfo, out: &mut HashSet<Uid>) {
    let t = types();
    if !q.binary.is_empty() {
        out.insert(core_uid(&t.binary, &q.binary));
        out.extend(dirs_of(&q.binary).map(|d| core_uid(&t.dir, d)));
    }
    for part in q.cgroup.split('/') {
        if part.ends_with(".service") {
            out.insert(core_uid(&t.service, part));
        }
    }
    out.extend(cgroups_of(&q.cgroup).map(|c| core_uid(&t.cgroup, c)));
    if let Some(c) = &q.container_id {
        out.insert(core_uid(&t.container, c));
    }
}

/// What a process is `in` through itself and its ancestors, memoized by
/// exec id: siblings share their parent's set.
fn ancestry(p: &ProcessInfo, memo: &mut Memo) -> Arc<HashSet<Uid>> {
    // An exec_id names a process, which keeps it across an exec (or a
    // cgroup move): the set is reused only for the same image and cgroup.
    if let Some(hit) = memo.ancestry.get(&p.exec_id) {
        if hit.binary == p.binary && hit.cgroup == p.cgroup {
            return hit.set.clone();
        }
    }
    let out = Arc::new(parents_of(p, memo));
    if !p.exec_id.is_empty() {
        memo.remember_ancestry(p, out.clone());
    }
    out
}

/// Everything a process is `in`: its own binary, cgroups and so on
/// (always fresh), its parent, and the parent's ancestry.
fn parents_of(p: &ProcessInfo, memo: &mut Memo) -> HashSet<Uid> {
    // Cloning the parent's set copies its table without rehashing.
    let mut out = match p.parent.as_deref() {
        Some(parent) => {
            let mut set = (*ancestry(parent, memo)).clone();
            set.insert(core_uid(&types().process, &parent.exec_id));
            set
        }
        None => HashSet::new(),
    };
    own_parents(p, &mut out);
    out
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

fn text(v: &str) -> PartialValue {
    PartialValue::from(v)
}

fn long(v: u32) -> PartialValue {
    PartialValue::from(i64::from(v))
}

/// The process entity, built from values directly: nothing to evaluate.
fn principal(p: &ProcessInfo, memo: &mut Memo) -> CoreEntity {
    let mut attrs: Vec<(SmolStr, PartialValue)> = vec![
        ("exec_id".into(), text(&p.exec_id)),
        ("pid".into(), long(p.pid)),
        ("uid".into(), long(p.uid)),
        ("gid".into(), long(p.gid)),
        ("binary".into(), text(&p.binary)),
        ("args".into(), text(&p.arguments)),
        ("cwd".into(), text(&p.cwd)),
        ("cgroup".into(), text(&p.cgroup)),
    ];
    if let Some(a) = p.auid {
        attrs.push(("auid".into(), long(a)));
    }
    if let Some(c) = &p.container_id {
        attrs.push(("container_id".into(), text(c)));
    }
    let parents = parents_of(p, memo);
    CoreEntity::new_with_attr_partial_value(
        core_uid(&types().process, &p.exec_id),
        attrs,
        HashSet::new(),
        parents,
        [],
    )
}

fn resource(target: &Target) -> Result<CoreEntity, String> {
    let t = types();
    let with_path = |ty: &EntityTypeName, path: &str| {
        CoreEntity::new_with_attr_partial_value(
            core_uid(ty, path),
            [("path".into(), text(path))],
            HashSet::new(),
            dirs_of(path).map(|d| core_uid(&t.dir, d)).collect(),
            [],
        )
    };
    match target {
        Target::File(p) => Ok(with_path(&t.file, p)),
        Target::Binary(p) => Ok(with_path(&t.binary, p)),
        Target::Endpoint {
            ip,
            port,
            protocol,
            sni,
            dns_names,
        } => Entity::new(
            uid(&t.endpoint, &endpoint_id(ip, *port, protocol)),
            HashMap::from_iter(
                [
                    (
                        "ip".to_string(),
                        RestrictedExpression::new_ip(ip.to_string()),
                    ),
                    (
                        "port".into(),
                        RestrictedExpression::new_long((*port).into()),
                    ),
                    ("protocol".into(), s(protocol)),
                    (
                        "dns_names".into(),
                        RestrictedExpression::new_set(dns_names.iter().map(|n| s(n))),
                    ),
                ]
                .into_iter()
                .chain(sni.as_deref().map(|n| ("sni".to_string(), s(n)))),
            ),
            HashSet::new(),
        )
        .map(|e| e.as_ref().clone())
        .map_err(|e| e.to_string()),
    }
}

fn endpoint_id(ip: &IpAddr, port: u16, protocol: &str) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
    }
}

fn secs_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn context(a: &Ask) -> Result<Context, String> {
    let secs = secs_of(a.time);
    Context::from_pairs([
        ("hook".to_string(), s(a.hook)),
        (
            "flags".into(),
            RestrictedExpression::new_long(a.flags.into()),
        ),
        ("backend".into(), s(a.backend)),
        ("layer1".into(), s(a.layer1)),
        ("rule".into(), s(a.rule)),
        (
            "time".into(),
            RestrictedExpression::new_datetime(
                humantime::format_rfc3339_seconds(a.time).to_string(),
            ),
        ),
        (
            "hour".into(),
            RestrictedExpression::new_long(((secs / 3600) % 24) as i64),
        ),
    ])
    .map_err(|e| e.to_string())
}

/// `Vardr::Action::"write"` in `Vardr::Action::"open"`, as the schema says.
fn write_action() -> &'static CoreEntity {
    static E: OnceLock<CoreEntity> = OnceLock::new();
    E.get_or_init(|| {
        let open = action_uid(Action::Open);
        Entity::new_no_attrs(action_uid(Action::Write), HashSet::from([open]))
            .as_ref()
            .clone()
    })
}

/// Entries kept before a memo table starts over (a reload also does).
const MEMO_LIMIT: usize = 8192;

/// A memoized ancestry set, with the image it was computed for.
struct MemoAncestry {
    binary: String,
    cgroup: String,
    set: Arc<HashSet<Uid>>,
}

/// Work shared between events: the ancestry sets of processes (siblings
/// share their parent's), principals seen before (a process that opens
/// many files), and the last context (events of one second share it).
#[derive(Default)]
pub struct Memo {
    ancestry: HashMap<String, MemoAncestry>,
    principals: HashMap<String, CachedPrincipal>,
    /// Processes seen once: a principal is cached from its second event
    /// (an exec is usually the only event of its process).
    seen: HashSet<String>,
    context: Option<(ContextKey, Context)>,
}

/// A principal entity and the attributes it was built from: a hit must
/// still describe the same process (the test suite changes a uid in
/// place; the agent's cache never does, but a stale answer is never safe).
#[derive(Clone)]
struct CachedPrincipal {
    attrs: (u32, u32, Option<u32>, String, String, String, String),
    entity: CoreEntity,
}

fn attrs_key(p: &ProcessInfo) -> (u32, u32, Option<u32>, String, String, String, String) {
    (
        p.uid,
        p.gid,
        p.auid,
        p.binary.clone(),
        p.arguments.clone(),
        p.cwd.clone(),
        p.cgroup.clone(),
    )
}

fn same_attrs(c: &CachedPrincipal, p: &ProcessInfo) -> bool {
    let a = &c.attrs;
    (a.0, a.1, a.2) == (p.uid, p.gid, p.auid)
        && a.3 == p.binary
        && a.4 == p.arguments
        && a.5 == p.cwd
        && a.6 == p.cgroup
}

#[derive(Clone, PartialEq, Eq)]
struct ContextKey {
    hook: &'static str,
    flags: u32,
    backend: &'static str,
    layer1: &'static str,
    rule: String,
    secs: u64,
}

impl Memo {
    fn remember_ancestry(&mut self, p: &ProcessInfo, set: Arc<HashSet<Uid>>) {
        if self.ancestry.len() >= MEMO_LIMIT {
            self.ancestry.clear();
        }
        self.ancestry.insert(
            p.exec_id.clone(),
            MemoAncestry {
                binary: p.binary.clone(),
                cgroup: p.cgroup.clone(),
                set,
            },
        );
    }

    fn principal(&mut self, p: &ProcessInfo) -> CoreEntity {
        if let Some(hit) = self.principals.get(&p.exec_id) {
            if same_attrs(hit, p) {
                return hit.entity.clone();
            }
        }
        let entity = principal(p, self);
        if !p.exec_id.is_empty() {
            if self.seen.contains(&p.exec_id) {
                if self.principals.len() >= MEMO_LIMIT {
                    self.principals.clear();
                }
                let cached = CachedPrincipal {
                    attrs: attrs_key(p),
                    entity: entity.clone(),
                };
                self.principals.insert(p.exec_id.clone(), cached);
            } else {
                if self.seen.len() >= MEMO_LIMIT {
                    self.seen.clear();
                }
                self.seen.insert(p.exec_id.clone());
            }
        }
        entity
    }

    fn context(&mut self, a: &Ask) -> Result<Context, String> {
        let key = ContextKey {
            hook: a.hook,
            flags: a.flags,
            backend: a.backend,
            layer1: a.layer1,
            rule: a.rule.to_string(),
            secs: secs_of(a.time),
        };
        if let Some((k, c)) = &self.context {
            if *k == key {
                return Ok(c.clone());
            }
        }
        let c = context(a)?;
        self.context = Some((key, c.clone()));
        Ok(c)
    }
}

/// The request and entities for one event. Errors (which the agent counts
/// and logs) come only from values Cedar cannot represent.
/// `pick` sees the principal and resource entities before they go into
/// the store (the engine chooses its policies with it).
pub fn build<T>(
    a: &Ask,
    memo: &mut Memo,
    pick: impl FnOnce(&CoreEntity, &CoreEntity) -> T,
) -> Result<(Request, Entities, T), String> {
    let p = memo.principal(a.process);
    let r = resource(&a.target)?;
    let req = Request::new(
        p.uid().clone().into(),
        action_uid(a.action),
        r.uid().clone().into(),
        memo.context(a)?,
        None,
    )
    .map_err(|e| e.to_string())?;
    // The principal's parents are already its whole ancestry, so the
    // store needs no transitive closure (cedar-policy's own constructors
    // always compute one: most of the cost of an event). Both entities are
    // built to the schema (a test checks it), so validation is skipped too.
    // `write` carries its action group (`write` in `open`).
    let picked = pick(&p, &r);
    let mut list = vec![p, r];
    if a.action == Action::Write {
        list.push(write_action().clone());
    }
    let core = cedar_policy_core::entities::Entities::from_entities(
        list,
        None::<&cedar_policy_core::entities::NoEntitiesSchema>,
        cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
        cedar_policy_core::extensions::Extensions::all_available(),
    )
    .map_err(|e| e.to_string())?;
    Ok((req, Entities::from(core), picked))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::process::sample as proc;

    #[test]
    fn dirs_and_cgroups() {
        assert_eq!(
            dirs_of("/usr/bin/curl").collect::<Vec<_>>(),
            ["/", "/usr", "/usr/bin"]
        );
        assert_eq!(dirs_of("/x").collect::<Vec<_>>(), ["/"]);
        assert_eq!(dirs_of("/usr/bin/").collect::<Vec<_>>(), ["/", "/usr"]);
        assert!(dirs_of("curl").next().is_none());
        assert_eq!(
            cgroups_of("/system.slice/a.service").collect::<Vec<_>>(),
            ["/system.slice/a.service", "/", "/system.slice"]
        );
    }

    #[test]
    fn entities_conform_to_the_schema() {
        let init = proc(1, "/sbin/init", "/init.scope", None);
        let sshd = proc(
            10,
            "/usr/sbin/sshd",
            "/system.slice/ssh.service",
            Some(init),
        );
        let sh = proc(20, "/bin/sh", "/system.slice/ssh.service", Some(sshd));
        for (action, target) in [
            (Action::Open, Target::File("/etc/shadow".into())),
            (Action::Exec, Target::Binary("/bin/sh".into())),
            (
                Action::Connect,
                Target::Endpoint {
                    ip: "::1".parse().unwrap(),
                    port: 22,
                    protocol: "tcp",
                    sni: Some("example.com".into()),
                    dns_names: vec!["example.com".into()],
                },
            ),
        ] {
            let ask = Ask {
                action,
                process: &sh,
                target,
                hook: "file_open",
                flags: 0,
                backend: "lsm",
                layer1: "allow",
                rule: "",
                time: SystemTime::now(),
            };
            let p = Entity::from(principal(ask.process, &mut Memo::default()));
            let r = Entity::from(resource(&ask.target).unwrap());
            Entities::from_entities([p.clone(), r.clone()], Some(super::super::schema()))
                .unwrap_or_else(|e| panic!("{action:?}: {e}"));
            Request::new(
                p.uid(),
                action_uid(action),
                r.uid(),
                context(&ask).unwrap(),
                Some(super::super::schema()),
            )
            .unwrap_or_else(|e| panic!("{action:?}: {e}"));
        }
    }
}
