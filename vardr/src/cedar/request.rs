//! Events as Cedar requests: principal, action, resource, context and the
//! two entities they need (the process, with its ancestry flattened into
//! its parents, and the resource).
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    str::FromStr,
    sync::OnceLock,
    time::SystemTime,
};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};

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
    },
}

/// The process an event belongs to.
pub type Subject = ProcessInfo;

/// One event, as Layer 2 sees it.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    pub action: Action,
    pub process: &'a Subject,
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

/// Everything a process is `in`: its ancestors and what they all run in.
fn parents_of(p: &ProcessInfo) -> HashSet<EntityUid> {
    let t = types();
    let mut out = HashSet::new();
    let mut cur = Some(p);
    let mut first = true;
    while let Some(q) = cur {
        if !first {
            out.insert(uid(&t.process, &q.exec_id));
        }
        first = false;
        if !q.binary.is_empty() {
            out.insert(uid(&t.binary, &q.binary));
            out.extend(dirs_of(&q.binary).map(|d| uid(&t.dir, d)));
        }
        for part in q.cgroup.split('/') {
            if part.ends_with(".service") {
                out.insert(uid(&t.service, part));
            }
        }
        out.extend(cgroups_of(&q.cgroup).map(|c| uid(&t.cgroup, c)));
        if let Some(c) = &q.container_id {
            out.insert(uid(&t.container, c));
        }
        cur = q.parent.as_deref();
    }
    out
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

fn principal(p: &ProcessInfo) -> Result<Entity, String> {
    let mut attrs = HashMap::from([
        ("exec_id".to_string(), s(&p.exec_id)),
        ("pid".into(), RestrictedExpression::new_long(p.pid.into())),
        ("uid".into(), RestrictedExpression::new_long(p.uid.into())),
        ("gid".into(), RestrictedExpression::new_long(p.gid.into())),
        ("binary".into(), s(&p.binary)),
        ("args".into(), s(&p.arguments)),
        ("cwd".into(), s(&p.cwd)),
        ("cgroup".into(), s(&p.cgroup)),
    ]);
    if let Some(a) = p.auid {
        attrs.insert("auid".into(), RestrictedExpression::new_long(a.into()));
    }
    if let Some(c) = &p.container_id {
        attrs.insert("container_id".into(), s(c));
    }
    Entity::new(uid(&types().process, &p.exec_id), attrs, parents_of(p)).map_err(|e| e.to_string())
}

fn resource(target: &Target) -> Result<Entity, String> {
    let t = types();
    let with_path = |ty: &EntityTypeName, path: &str| {
        let parents = dirs_of(path).map(|d| uid(&t.dir, d)).collect();
        Entity::new(
            uid(ty, path),
            HashMap::from([("path".to_string(), s(path))]),
            parents,
        )
    };
    match target {
        Target::File(p) => with_path(&t.file, p),
        Target::Binary(p) => with_path(&t.binary, p),
        Target::Endpoint { ip, port, protocol } => Entity::new(
            uid(&t.endpoint, &endpoint_id(ip, *port, protocol)),
            HashMap::from([
                (
                    "ip".to_string(),
                    RestrictedExpression::new_ip(ip.to_string()),
                ),
                (
                    "port".into(),
                    RestrictedExpression::new_long((*port).into()),
                ),
                ("protocol".into(), s(protocol)),
            ]),
            HashSet::new(),
        ),
    }
    .map_err(|e| e.to_string())
}

fn endpoint_id(ip: &IpAddr, port: u16, protocol: &str) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
    }
}

fn context(a: &Ask) -> Result<Context, String> {
    let secs = a
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
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
                humantime::format_rfc3339_millis(a.time).to_string(),
            ),
        ),
        (
            "hour".into(),
            RestrictedExpression::new_long(((secs / 3600) % 24) as i64),
        ),
    ])
    .map_err(|e| e.to_string())
}

fn action_entities() -> &'static Entities {
    static E: OnceLock<Entities> = OnceLock::new();
    E.get_or_init(|| match super::schema().action_entities() {
        Ok(e) => e,
        // Derived from the shipped schema, covered by the unit tests.
        Err(e) => panic!("action entities of the shipped schema: {e}"),
    })
}

/// The request and entities for one event. Errors (which the agent counts
/// and logs) come only from values Cedar cannot represent.
pub fn build(a: &Ask) -> Result<(Request, Entities), String> {
    let p = principal(a.process)?;
    let r = resource(&a.target)?;
    let req = Request::new(p.uid(), action_uid(a.action), r.uid(), context(a)?, None)
        .map_err(|e| e.to_string())?;
    // Both entities are built to the schema (a test checks it), so the
    // store skips validation on the hot path. The action entities carry
    // the action groups (`write` in `open`).
    let ents = action_entities()
        .clone()
        .add_entities([p, r], None)
        .map_err(|e| e.to_string())?;
    Ok((req, ents))
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
            let p = principal(ask.process).unwrap();
            let r = resource(&ask.target).unwrap();
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
