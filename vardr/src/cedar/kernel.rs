//! What Layer 1 does for Cedar policies.
//!
//! A `forbid` with verdict deny, any principal, and a resource the kernel
//! can match on its own (a file or directory for opens, a binary or
//! directory for exec, one CIDR with an optional port and protocol for
//! connect) is compiled into a Layer 1 deny rule: it is enforced before
//! the syscall completes. Other forbids get report-only ("observe") rules,
//! so the kernel reports the opens and connects they need to see; exec
//! needs none, every exec is reported.
use ipnet::IpNet;
use serde_json::Value;

use super::{eval::actions_of, Action, CedarSet, Verdict};
use crate::policy::{self, Hook, Protocol, Rule, Severity};

/// Layer 1 rules derived from a Cedar set.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KernelRules {
    /// Deny rules named `cedar:<policy>`.
    pub enforced: Vec<Rule>,
    /// Report-only rules named `cedar-observe:<policy>`.
    pub observe: Vec<Rule>,
    /// Policies that are enforced in the kernel.
    pub kernel_enforced: Vec<String>,
    /// What the user should know (a policy Layer 2 cannot fully see).
    pub warnings: Vec<String>,
}

/// A resource scope the kernel can match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// `resource == Vardr::File::"p"`.
    File(String),
    /// `resource == Vardr::Binary::"p"`.
    Binary(String),
    /// `resource in Vardr::Dir::"d"` (kept as "d/"): what is below d.
    Prefix(String),
}

impl Scope {
    /// Whether the scope names a resource of `action` at all (Cedar never
    /// matches a File for exec, or a Binary for an open).
    fn fits(&self, action: Action) -> bool {
        match (self, action) {
            (Scope::Prefix(_), _) => true,
            (Scope::File(_), a) => a == Action::Open || a == Action::Write,
            (Scope::Binary(_), a) => a == Action::Exec,
        }
    }
}

fn path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= policy::MAX_PATH_LEN
        && !p.contains('\0')
        && !p.contains("//")
        && !p.split('/').any(|c| c == "." || c == "..")
}

/// A directory id as the agent builds them: absolute, normalized, no
/// trailing slash (except the root).
fn dir_ok(d: &str) -> bool {
    path_ok(d) && (d == "/" || !d.ends_with('/'))
}

fn prefix(d: &str) -> Scope {
    Scope::Prefix(if d == "/" {
        "/".into()
    } else {
        format!("{d}/")
    })
}

fn scope_of(resource: &Value) -> Option<Scope> {
    let ty = resource["entity"]["type"].as_str()?;
    let id = resource["entity"]["id"].as_str()?;
    match (resource["op"].as_str()?, ty) {
        ("==", "Vardr::File") if path_ok(id) => Some(Scope::File(id.to_string())),
        ("==", "Vardr::Binary") if path_ok(id) => Some(Scope::Binary(id.to_string())),
        ("in", "Vardr::Dir") if dir_ok(id) => Some(prefix(id)),
        _ => None,
    }
}

/// What an observation can watch: the scope, `is T in Dir`, or a
/// `resource.path like "/dir/*"` in the condition.
fn observed_scope(json: &Value) -> Option<Scope> {
    let r = &json["resource"];
    if let Some(s) = scope_of(r) {
        return Some(s);
    }
    let dir = match (r["op"].as_str(), r["in"]["entity"]["type"].as_str()) {
        (Some("is"), Some("Vardr::Dir")) => r["in"]["entity"]["id"].as_str().map(str::to_string),
        // The kernel reports a directory opened as "/opt/app/" under the
        // "/opt/app/" prefix anyway.
        _ => super::slice::path_dir(&json["conditions"], false),
    }?;
    dir_ok(&dir).then(|| prefix(&dir))
}

/// Directory ids with a trailing slash never match (the agent names
/// directories without one); say so rather than let a policy sit idle.
fn trailing_slash_dirs(json: &Value, name: &str, out: &mut Vec<String>) {
    for scope in [&json["principal"], &json["resource"]] {
        for e in [&scope["entity"], &scope["in"]["entity"]] {
            if e["type"] == "Vardr::Dir" {
                if let Some(id) = e["id"].as_str().filter(|d| *d != "/" && d.ends_with('/')) {
                    out.push(format!(
                        "Cedar policy {name}: Vardr::Dir::{id:?} never matches: directory ids have no trailing slash"
                    ));
                }
            }
        }
    }
}

/// A network condition: one CIDR, optional port and protocol.
#[derive(Debug, Default, PartialEq)]
struct NetCond {
    cidr: Option<IpNet>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    /// Anything else in the condition.
    other: bool,
}

fn resource_attr(v: &Value, attr: &str) -> bool {
    v["."]["left"]["Var"] == "resource" && v["."]["attr"] == attr
}

/// Splits a `when` body on `&&` and reads the terms the kernel understands.
fn net_terms(body: &Value, out: &mut NetCond) {
    if let Some(and) = body.get("&&") {
        net_terms(&and["left"], out);
        net_terms(&and["right"], out);
        return;
    }
    if let Some([attr, arg]) = body
        .get("isInRange")
        .and_then(|v| v.as_array())
        .map(|v| v.as_slice())
    {
        let lit = arg["ip"][0]["Value"].as_str().and_then(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        });
        if resource_attr(attr, "ip") && out.cidr.is_none() {
            if let Some(n) = lit {
                out.cidr = Some(n.trunc());
                return;
            }
        }
    }
    if let Some(eq) = body.get("==") {
        if resource_attr(&eq["left"], "port") && out.port.is_none() {
            if let Some(p) = eq["right"]["Value"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            {
                if p > 0 {
                    out.port = Some(p);
                    return;
                }
            }
        }
        if resource_attr(&eq["left"], "protocol") && out.protocol.is_none() {
            match eq["right"]["Value"].as_str() {
                Some("tcp") => {
                    out.protocol = Some(Protocol::Tcp);
                    return;
                }
                Some("udp") => {
                    out.protocol = Some(Protocol::Udp);
                    return;
                }
                _ => {}
            }
        }
    }
    out.other = true;
}

fn rule(name: String, hook: Hook, action: policy::Action, severity: Severity) -> Rule {
    Rule {
        name,
        hook,
        action,
        severity,
        paths: Default::default(),
        prefixes: Vec::new(),
        binaries: Default::default(),
        cidrs: Vec::new(),
        ports: Vec::new(),
        protocol: Protocol::Any,
        // In Cedar a directory is not `in` itself.
        domains: Vec::new(),
        prefix_covers_dir: false,
        message: None,
        tags: Vec::new(),
        line: 0,
    }
}

fn with_scope(mut r: Rule, scope: &Scope) -> Rule {
    match scope {
        Scope::Binary(p) if r.hook == Hook::Exec => r.binaries.push(p),
        Scope::File(p) | Scope::Binary(p) => r.paths.push(p),
        Scope::Prefix(p) => r.prefixes.push(p.clone()),
    }
    r
}

/// The Layer 1 deny rules for a policy the kernel can enforce alone.
fn enforceable(json: &Value, actions: &[Action], name: &str, sev: Severity) -> Option<Vec<Rule>> {
    if json["principal"]["op"] != "All" {
        return None;
    }
    let conditions = json["conditions"].as_array()?;
    let has = |a| actions.contains(&a);
    let mut out = Vec::new();
    let rname = format!("cedar:{name}");
    let file = has(Action::Open) || has(Action::Write);
    if file || has(Action::Exec) {
        let scope = scope_of(&json["resource"])?;
        // Every action must be one Cedar can match on this resource, or the
        // kernel would deny what Cedar never would.
        if !conditions.is_empty() || !actions.iter().all(|a| scope.fits(*a)) {
            return None;
        }
        // Layer 1 has "any open" and "open for write", not "read-only open".
        match (has(Action::Open), has(Action::Write)) {
            (true, true) => out.push(rule(
                rname.clone(),
                Hook::FileOpen,
                policy::Action::Deny,
                sev,
            )),
            (false, true) => out.push(rule(
                rname.clone(),
                Hook::FileWrite,
                policy::Action::Deny,
                sev,
            )),
            (true, false) => return None,
            (false, false) => {}
        }
        if has(Action::Exec) {
            out.push(rule(rname.clone(), Hook::Exec, policy::Action::Deny, sev));
        }
        out = out.into_iter().map(|r| with_scope(r, &scope)).collect();
    }
    if has(Action::Connect) {
        if json["resource"]["op"] != "All"
            || conditions.len() != 1
            || conditions[0]["kind"] != "when"
        {
            return None;
        }
        let mut c = NetCond::default();
        net_terms(&conditions[0]["body"], &mut c);
        if c.other {
            return None;
        }
        let cidr = c.cidr?;
        // The kernel checks IPv4-mapped IPv6 destinations against the IPv4
        // rules; a mapped CIDR would sit in a table it never consults.
        if matches!(cidr, IpNet::V6(n) if n.addr().to_ipv4_mapped().is_some()) {
            return None;
        }
        let mut r = rule(rname, Hook::Connect, policy::Action::Deny, sev);
        r.cidrs.push(cidr);
        r.ports.extend(c.port);
        r.protocol = c.protocol.unwrap_or_default();
        out.push(r);
    }
    Some(out)
}

/// Report-only rules so the kernel reports what the policy must see.
fn observation(json: &Value, actions: &[Action], name: &str, out: &mut KernelRules) {
    let rname = format!("cedar-observe:{name}");
    let (open, write) = (
        actions.contains(&Action::Open),
        actions.contains(&Action::Write),
    );
    if open || write {
        // Write-only policies watch the write slot, so the observation
        // never competes with a Layer 1 rule on plain opens.
        let hook = if open {
            Hook::FileOpen
        } else {
            Hook::FileWrite
        };
        match observed_scope(json) {
            Some(scope) => out.observe.push(with_scope(
                rule(rname.clone(), hook, policy::Action::Observe, Severity::Info),
                &scope,
            )),
            None => out.warnings.push(format!(
                "Cedar policy {name}: its opens are not scoped to a file or directory \
                 (resource == Vardr::File::\"...\" or resource in Vardr::Dir::\"...\"); \
                 it sees only opens that a Layer 1 rule reports"
            )),
        }
    }
    if actions.contains(&Action::Connect) {
        let mut c = NetCond::default();
        for cond in json["conditions"].as_array().into_iter().flatten() {
            if cond["kind"] == "when" {
                net_terms(&cond["body"], &mut c);
            }
        }
        let mut r = rule(
            rname,
            Hook::Connect,
            policy::Action::Observe,
            Severity::Info,
        );
        r.cidrs = match c.cidr {
            Some(n) => vec![n],
            None => vec!["0.0.0.0/0".parse().ok(), "::/0".parse().ok()]
                .into_iter()
                .flatten()
                .collect(),
        };
        out.observe.push(r);
    }
}

/// Layer 1 rules for `set`.
pub fn compile(set: &CedarSet) -> KernelRules {
    let mut out = KernelRules::default();
    for (p, meta) in &set.policies {
        if meta.verdict == Verdict::Allow {
            continue;
        }
        let Ok(json) = p.to_json() else {
            continue;
        };
        let actions = actions_of(p);
        trailing_slash_dirs(&json, &meta.name, &mut out.warnings);
        if meta.verdict == Verdict::Deny {
            if let Some(rules) = enforceable(
                &json,
                &actions,
                &meta.name,
                Severity::parse(&meta.severity).unwrap_or_default(),
            ) {
                if !rules.is_empty() {
                    out.enforced.extend(rules);
                    out.kernel_enforced.push(meta.name.clone());
                    continue;
                }
            }
        }
        observation(&json, &actions, &meta.name, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn kernel(text: &str) -> KernelRules {
        compile(
            &crate::cedar::parse_text(text, Path::new("k.cedar")).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn simple_forbids_become_kernel_rules() {
        let k = kernel(
            r#"
@id("shadow") forbid (principal, action in Vardr::Action::"open", resource == Vardr::File::"/etc/shadow");
@id("ssh-writes") forbid (principal, action == Vardr::Action::"write", resource in Vardr::Dir::"/etc/ssh");
@id("nc") forbid (principal, action == Vardr::Action::"exec", resource == Vardr::Binary::"/usr/bin/nc");
@id("tmp-exec") forbid (principal, action == Vardr::Action::"exec", resource in Vardr::Dir::"/tmp");
@id("ssh-out") forbid (principal, action == Vardr::Action::"connect", resource)
  when { resource.ip.isInRange(ip("10.1.2.3/8")) && resource.port == 22 && resource.protocol == "tcp" };
@id("meta") forbid (principal, action == Vardr::Action::"connect", resource)
  when { resource.ip.isInRange(ip("169.254.169.254")) };
"#,
        );
        assert_eq!(
            k.kernel_enforced,
            ["shadow", "ssh-writes", "nc", "tmp-exec", "ssh-out", "meta"]
        );
        assert!(k.observe.is_empty() && k.warnings.is_empty(), "{k:?}");
        let r = &k.enforced;
        assert_eq!(r[0].hook, Hook::FileOpen);
        assert_eq!(r[0].paths, ["/etc/shadow"]);
        assert_eq!(
            (r[1].hook, &r[1].prefixes[..]),
            (Hook::FileWrite, &["/etc/ssh/".to_string()][..])
        );
        assert_eq!(r[2].hook, Hook::Exec);
        assert_eq!(r[2].binaries, ["/usr/bin/nc"]);
        assert_eq!(r[3].prefixes, ["/tmp/"]);
        // A directory is not `in` itself in Cedar: the kernel rule must not
        // govern /tmp itself either.
        assert!(r.iter().all(|r| !r.prefix_covers_dir));
        assert_eq!(r[4].cidrs, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(
            (r[4].ports.as_slice(), r[4].protocol),
            (&[22u16][..], Protocol::Tcp)
        );
        assert_eq!(r[5].cidrs, ["169.254.169.254/32".parse::<IpNet>().unwrap()]);
        assert!(r
            .iter()
            .all(|r| r.action == policy::Action::Deny && r.name.starts_with("cedar:")));
    }

    #[test]
    fn forbids_the_kernel_would_enforce_more_strictly_stay_in_layer2() {
        let k = kernel(
            r#"
@id("both-on-binary") forbid (principal, action in [Vardr::Action::"open", Vardr::Action::"exec"], resource == Vardr::Binary::"/usr/bin/nc");
@id("slash") forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"/tmp/");
@id("is-in") @verdict("alert") forbid (principal, action == Vardr::Action::"write", resource is Vardr::File in Vardr::Dir::"/srv");
@id("like") @verdict("alert") forbid (principal, action in Vardr::Action::"open", resource) when { resource.path like "/opt/app/*" };
"#,
        );
        assert!(k.kernel_enforced.is_empty(), "{k:?}");
        assert!(k.enforced.is_empty(), "{k:?}");
        assert!(
            k.warnings
                .iter()
                .any(|w| w.contains("slash") && w.contains("trailing slash")),
            "{:?}",
            k.warnings
        );
        let obs: Vec<(&str, Hook, &[String])> = k
            .observe
            .iter()
            .map(|r| (r.name.as_str(), r.hook, r.prefixes.as_slice()))
            .collect();
        let both = &k
            .observe
            .iter()
            .find(|r| r.name == "cedar-observe:both-on-binary")
            .unwrap()
            .paths;
        assert_eq!(*both, ["/usr/bin/nc"]);
        assert!(
            obs.contains(&(
                "cedar-observe:is-in",
                Hook::FileWrite,
                &["/srv/".to_string()][..]
            )),
            "{obs:?}"
        );
        assert!(
            obs.contains(&(
                "cedar-observe:like",
                Hook::FileOpen,
                &["/opt/app/".to_string()][..]
            )),
            "{obs:?}"
        );
        assert!(!obs.iter().any(|o| o.0 == "cedar-observe:slash"), "{obs:?}");
    }

    #[test]
    fn conditional_or_alert_forbids_are_observed_not_enforced() {
        let k = kernel(
            r#"
@id("etc-non-root") forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"/etc")
  unless { principal.uid == 0 };
@id("read-only") forbid (principal, action == Vardr::Action::"open", resource == Vardr::File::"/x");
@id("curl-out") forbid (principal in Vardr::Binary::"/usr/bin/curl", action == Vardr::Action::"connect", resource)
  when { resource.ip.isInRange(ip("10.0.0.0/8")) };
@id("any-port-443") @verdict("alert") forbid (principal, action == Vardr::Action::"connect", resource)
  when { resource.port == 443 && principal.uid != 0 };
@id("unscoped") forbid (principal, action == Vardr::Action::"write", resource) when { resource.path like "*.key" };
@id("shell") forbid (principal in Vardr::Binary::"/usr/sbin/nginx", action == Vardr::Action::"exec", resource);
permit (principal, action, resource);
"#,
        );
        assert!(
            k.enforced.is_empty() && k.kernel_enforced.is_empty(),
            "{k:?}"
        );
        let names: Vec<_> = k.observe.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cedar-observe:etc-non-root",
                "cedar-observe:read-only",
                "cedar-observe:curl-out",
                "cedar-observe:any-port-443"
            ]
        );
        assert!(k
            .observe
            .iter()
            .all(|r| r.action == policy::Action::Observe));
        assert_eq!(k.observe[0].prefixes, ["/etc/"]);
        assert_eq!(k.observe[2].cidrs, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(k.observe[3].cidrs.len(), 2);
        assert_eq!(k.warnings.len(), 1);
        assert!(k.warnings[0].contains("unscoped"), "{:?}", k.warnings);
    }
}
