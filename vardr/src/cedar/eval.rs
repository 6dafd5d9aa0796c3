//! The Layer 2 engine: one policy set per action, so an event is checked
//! only against the policies that can apply to it.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use cedar_policy::{Authorizer, Decision, Policy};

use super::{
    request::{self, Action, Ask},
    slice::Slices,
    CedarSet, PolicyMeta,
};
use crate::policy::Severity;

/// A Layer 2 verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Alert,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Alert => "alert",
            Verdict::Deny => "deny",
        }
    }
}

/// What Layer 2 concluded for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The policies that decided, by name, sorted.
    pub policies: Vec<String>,
    /// A deciding deny policy asks for the process to be killed.
    pub kill: bool,
    /// Highest severity among the deciding policies.
    pub severity: String,
}

pub struct Engine {
    by_action: HashMap<Action, Slices>,
    meta: HashMap<String, PolicyMeta>,
    authorizer: Authorizer,
    /// Policies skipped on some event because they failed to evaluate.
    policy_errors: AtomicU64,
    memo: Mutex<request::Memo>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(&CedarSet::default())
    }
}

/// Which actions a policy's action scope can match (from its JSON form:
/// `All`, `==` one action, `in` one or a list).
pub(super) fn actions_of(p: &Policy) -> Vec<Action> {
    let Ok(json) = p.to_json() else {
        return Action::ALL.to_vec();
    };
    let scope = &json["action"];
    let named = |e: &serde_json::Value| e["id"].as_str().and_then(Action::from_name);
    let mut out: Vec<Action> = match scope["op"].as_str() {
        Some("==") => named(&scope["entity"]).into_iter().collect(),
        Some("in") => {
            let list: Vec<&serde_json::Value> = match scope["entities"].as_array() {
                Some(l) => l.iter().collect(),
                None => vec![&scope["entity"]],
            };
            list.into_iter()
                .filter_map(named)
                .flat_map(|a| a.members().iter().copied())
                .collect()
        }
        _ => Action::ALL.to_vec(),
    };
    out.sort_by_key(|a| *a as u8);
    out.dedup();
    out
}

impl Engine {
    pub fn new(set: &CedarSet) -> Self {
        let mut by_action: HashMap<Action, Slices> = HashMap::new();
        let mut meta = HashMap::new();
        for (p, m) in &set.policies {
            for a in actions_of(p) {
                // Names are unique (checked when loading).
                by_action.entry(a).or_default().add(p);
            }
            meta.insert(m.name.clone(), m.clone());
        }
        Self {
            by_action,
            meta,
            authorizer: Authorizer::new(),
            policy_errors: AtomicU64::new(0),
            memo: Mutex::default(),
        }
    }

    /// Whether there are no policies (every policy applies to some action).
    pub fn is_empty(&self) -> bool {
        self.by_action.is_empty()
    }

    /// Policy evaluation errors so far.
    pub fn policy_errors(&self) -> u64 {
        self.policy_errors.load(Ordering::Relaxed)
    }

    /// Whether any policy can apply to `action`.
    pub fn covers(&self, action: Action) -> bool {
        self.by_action.contains_key(&action)
    }

    /// `Ok(None)`: no policy applies. Errors are per event (a value Cedar
    /// cannot represent, a policy that failed on this input); the caller
    /// counts them.
    pub fn evaluate(&self, ask: &Ask) -> Result<Option<Outcome>, String> {
        let Some(slices) = self.by_action.get(&ask.action) else {
            return Ok(None);
        };
        let (req, ents, sets) = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            request::build(ask, &mut memo, |p, r| slices.matching(p, r))?
        };
        // Each group answers with its satisfied forbids (decision Deny) or
        // else its satisfied permits; together they are Cedar's answer for
        // the whole set: any forbid wins, then any permit.
        let mut forbids: Vec<&PolicyMeta> = Vec::new();
        let mut permits: Vec<&PolicyMeta> = Vec::new();
        for set in sets {
            let resp = self.authorizer.is_authorized(&req, set, &ents);
            let diag = resp.diagnostics();
            for e in diag.errors() {
                // Cedar skips a policy that errors and keeps the decision
                // of the others; count it so it is never silent.
                tracing::debug!("Layer 2 policy error: {e}");
                self.policy_errors.fetch_add(1, Ordering::Relaxed);
            }
            let reasons = diag
                .reason()
                .filter_map(|id| self.meta.get::<str>(id.as_ref()));
            match resp.decision() {
                Decision::Deny => forbids.extend(reasons),
                Decision::Allow => permits.extend(reasons),
            }
        }
        let (verdict, deciding) = if forbids.iter().any(|m| m.verdict == Verdict::Deny) {
            (Verdict::Deny, forbids)
        } else if !forbids.is_empty() {
            (Verdict::Alert, forbids)
        } else if !permits.is_empty() {
            (Verdict::Allow, permits)
        } else {
            return Ok(None);
        };
        // Only the policies that carry the verdict decide: an alert beside a
        // deny is listed, but only a deny policy can ask for a kill.
        let mut policies: Vec<String> = deciding.iter().map(|m| m.name.clone()).collect();
        policies.sort();
        let kill = verdict == Verdict::Deny
            && deciding
                .iter()
                .any(|m| m.verdict == Verdict::Deny && m.kill);
        let severity = deciding
            .iter()
            .map(|m| m.severity.as_str())
            .max_by_key(|s| Severity::parse(s).unwrap_or_default())
            .unwrap_or("medium")
            .to_string();
        Ok(Some(Outcome {
            verdict,
            policies,
            kill,
            severity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc, time::SystemTime};

    use super::*;
    use crate::{
        cedar::{parse_text, request::tests::proc, Target},
        process::ProcessInfo,
    };

    fn engine(text: &str) -> Engine {
        Engine::new(&parse_text(text, Path::new("t.cedar")).unwrap_or_else(|e| panic!("{e}")))
    }

    fn ask<'a>(action: Action, p: &'a ProcessInfo, target: Target) -> Ask<'a> {
        Ask {
            action,
            process: p,
            target,
            hook: "file_open",
            flags: 0,
            backend: "lsm",
            layer1: "allow",
            rule: "",
            time: SystemTime::now(),
        }
    }

    fn tree() -> (Arc<ProcessInfo>, Arc<ProcessInfo>) {
        let init = proc(1, "/sbin/init", "/init.scope", None);
        let nginx = proc(
            10,
            "/usr/sbin/nginx",
            "/system.slice/nginx.service",
            Some(init.clone()),
        );
        let sh = proc(20, "/bin/sh", "/system.slice/nginx.service", Some(nginx));
        let bash = proc(30, "/bin/bash", "/user.slice", Some(init));
        (sh, bash)
    }

    const POLICIES: &str = r#"
@id("shell-under-nginx") @response("kill") @severity("critical")
forbid (principal in Vardr::Binary::"/usr/sbin/nginx", action == Vardr::Action::"exec", resource in Vardr::Dir::"/bin");

@id("etc-by-non-root") @verdict("alert")
forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"/etc")
unless { principal.uid == 0 };

@id("nginx-web")
permit (principal in Vardr::Service::"nginx.service", action == Vardr::Action::"connect", resource)
when { resource.port == 443 };

@id("no-metadata")
forbid (principal, action == Vardr::Action::"connect", resource)
when { resource.ip.isInRange(ip("169.254.0.0/16")) };
"#;

    #[test]
    fn ancestry_decides_deny_with_kill() {
        let e = engine(POLICIES);
        let (sh, bash) = tree();
        let out = e
            .evaluate(&ask(Action::Exec, &sh, Target::Binary("/bin/sh".into())))
            .unwrap()
            .unwrap();
        assert_eq!(out.verdict, Verdict::Deny);
        assert_eq!(out.policies, ["shell-under-nginx"]);
        assert!(out.kill);
        assert_eq!(out.severity, "critical");
        // Same binary, not started by nginx: no policy applies.
        assert_eq!(
            e.evaluate(&ask(Action::Exec, &bash, Target::Binary("/bin/sh".into())))
                .unwrap(),
            None
        );
    }

    #[test]
    fn alert_with_unless_and_write_is_part_of_open() {
        let e = engine(POLICIES);
        let (sh, _) = tree();
        for a in [Action::Open, Action::Write] {
            let out = e
                .evaluate(&ask(a, &sh, Target::File("/etc/passwd".into())))
                .unwrap()
                .unwrap();
            assert_eq!(out.verdict, Verdict::Alert, "{a:?}");
            assert!(!out.kill);
        }
        let mut root = (*sh).clone();
        root.uid = 0;
        assert_eq!(
            e.evaluate(&ask(
                Action::Open,
                &root,
                Target::File("/etc/passwd".into())
            ))
            .unwrap(),
            None
        );
        assert_eq!(
            e.evaluate(&ask(Action::Open, &sh, Target::File("/etcetera".into())))
                .unwrap(),
            None
        );
    }

    #[test]
    fn permit_allows_and_forbid_overrides_it() {
        let e = engine(POLICIES);
        let (sh, bash) = tree();
        let ep = |ip: &str, port| Target::Endpoint {
            ip: ip.parse().unwrap(),
            port,
            protocol: "tcp",
            sni: None,
            dns_names: Vec::new(),
        };
        let out = e
            .evaluate(&ask(Action::Connect, &sh, ep("10.0.0.1", 443)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (out.verdict, out.policies),
            (Verdict::Allow, vec!["nginx-web".to_string()])
        );
        let out = e
            .evaluate(&ask(Action::Connect, &sh, ep("169.254.169.254", 443)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (out.verdict, out.policies),
            (Verdict::Deny, vec!["no-metadata".to_string()])
        );
        assert!(!out.kill);
        assert_eq!(
            e.evaluate(&ask(Action::Connect, &bash, ep("10.0.0.1", 443)))
                .unwrap(),
            None
        );
    }

    /// Slicing must never change Cedar's answer: compare with one
    /// authorization over the whole set.
    #[test]
    fn sliced_evaluation_matches_the_whole_set() {
        let text = format!(
            "{POLICIES}{}",
            r#"
@id("eq-principal") forbid (principal == Vardr::Process::"id-20", action, resource is Vardr::Binary);
@id("is-in") @verdict("alert") forbid (principal is Vardr::Process in Vardr::Cgroup::"/system.slice", action, resource is Vardr::File in Vardr::Dir::"/etc");
@id("any-exec") permit (principal, action == Vardr::Action::"exec", resource);
@id("dir-exec") forbid (principal, action == Vardr::Action::"exec", resource in Vardr::Dir::"/usr/sbin");
@id("like-dir") @verdict("alert") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource) when { principal.uid > 0 && resource.path like "/etc/*" };
@id("like-file") @verdict("alert") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource) when { resource.path like "/bin/s*" };
@id("dir-itself") @verdict("alert") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource) when { resource.path like "/srv/app/*" };
@id("eq-path") @verdict("alert") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource) when { resource.path == "/tmp/x" };
@id("like-or") @verdict("alert") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource) when { resource.path like "/nope/*" || principal.uid == 1000 };
"#
        );
        let set = parse_text(&text, Path::new("t.cedar")).unwrap();
        let e = Engine::new(&set);
        // The index is really used: exec policies fall into many groups.
        assert!(e.by_action[&Action::Exec].group_count() >= 6);
        let mut whole = cedar_policy::PolicySet::new();
        for (p, _) in &set.policies {
            whole.add(p.clone()).unwrap();
        }
        let (sh, bash) = tree();
        let targets = [
            (Action::Exec, Target::Binary("/bin/sh".into())),
            (Action::Exec, Target::Binary("/usr/sbin/nginx".into())),
            (Action::Open, Target::File("/etc/passwd".into())),
            (Action::Write, Target::File("/etc/x/y".into())),
            (Action::Open, Target::File("/tmp/x".into())),
            (Action::Open, Target::File("/srv/app/".into())),
            (Action::Open, Target::File("/srv/app/f".into())),
        ];
        for p in [&sh, &bash] {
            for (a, t) in &targets {
                let q = ask(*a, p, t.clone());
                let (req, ents, ()) =
                    request::build(&q, &mut request::Memo::default(), |_, _| ()).unwrap();
                let resp = Authorizer::new().is_authorized(&req, &whole, &ents);
                let mut want: Vec<String> =
                    resp.diagnostics().reason().map(|r| r.to_string()).collect();
                want.sort();
                let got = e.evaluate(&q).unwrap();
                let got_ids = got.as_ref().map(|o| o.policies.clone()).unwrap_or_default();
                assert_eq!(got_ids, want, "{a:?} {t:?} by {}", p.binary);
                if let Some(o) = got {
                    let allow = resp.decision() == Decision::Allow;
                    assert_eq!(o.verdict == Verdict::Allow, allow, "{a:?} {t:?}");
                }
            }
        }
    }

    #[test]
    fn policies_are_bucketed_by_action() {
        let e = engine(POLICIES);
        assert!(e.covers(Action::Write) && e.covers(Action::Exec) && e.covers(Action::Connect));
        let only_exec = engine("forbid (principal, action == Vardr::Action::\"exec\", resource);");
        assert!(only_exec.covers(Action::Exec));
        assert!(!only_exec.covers(Action::Open) && !only_exec.covers(Action::Connect));
        let any = engine("forbid (principal, action, resource) when { context.hour == 3 };");
        assert!(Action::ALL.iter().all(|a| any.covers(*a)));
    }

    #[test]
    fn context_carries_layer1_and_time() {
        let e = engine(
            "@verdict(\"alert\") forbid (principal, action, resource) when { context.layer1 == \"audit\" && context.time > datetime(\"2020-01-01\") };",
        );
        let (sh, _) = tree();
        let mut a = ask(Action::Exec, &sh, Target::Binary("/bin/sh".into()));
        assert_eq!(e.evaluate(&a).unwrap(), None);
        a.layer1 = "audit";
        assert_eq!(e.evaluate(&a).unwrap().unwrap().verdict, Verdict::Alert);
    }
}
