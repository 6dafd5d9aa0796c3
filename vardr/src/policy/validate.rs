//! Semantic checks, all collected so one run reports every problem.
use std::{collections::HashSet, path::Path};

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::{
    path_list::PathListDoc,
    schema::{At, MatchDoc, PolicyDoc, RuleDoc},
    Action, Diagnostic, Hook, PathList, Policy, Protocol, Rule, Severity, API_VERSION, KIND,
};

/// Longest path a rule can name, in bytes (an LPM key holds 256 bytes: a
/// generation byte, the path, and the NUL that marks exact paths).
pub const MAX_PATH_LEN: usize = vardr_common::PATH_MAX_RULE;

pub(super) struct Diags(pub(super) Vec<Diagnostic>);

/// A value of a document and where it stands there.
pub(super) trait Located<T> {
    fn value(&self) -> &T;
    /// 1-based line and column.
    fn position(&self) -> (u64, u64);
}

impl<T> Located<T> for Spanned<T> {
    fn value(&self) -> &T {
        &self.value
    }
    fn position(&self) -> (u64, u64) {
        (self.referenced.line(), self.referenced.column())
    }
}

impl<T> Located<T> for At<T> {
    fn value(&self) -> &T {
        &self.value
    }
    fn position(&self) -> (u64, u64) {
        (self.line.into(), self.column.into())
    }
}

impl Diags {
    pub(super) fn at<T>(&mut self, s: &impl Located<T>, message: impl Into<String>) {
        let (line, column) = s.position();
        self.0.push(Diagnostic {
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
        });
    }
}

pub fn validate(doc: PolicyDoc, path: &Path) -> Result<Policy, Vec<Diagnostic>> {
    let mut d = Diags(Vec::new());
    if doc.api_version.value != API_VERSION {
        d.at(
            &doc.api_version,
            format!(
                "apiVersion must be {API_VERSION}, not {:?}",
                doc.api_version.value
            ),
        );
    }
    if doc.kind.value != KIND {
        d.at(
            &doc.kind,
            format!("kind must be {KIND}, not {:?}", doc.kind.value),
        );
    }
    let name = doc.metadata.name.value.clone();
    if name.trim().is_empty() {
        d.at(&doc.metadata.name, "metadata.name must not be empty");
    }
    let exempt_binaries = doc
        .spec
        .exempt_binaries
        .iter()
        .filter_map(|b| abs_path(&mut d, b, "exempt_binaries entry"))
        .collect();
    let interpreters = doc
        .spec
        .interpreters
        .iter()
        .filter_map(|b| abs_path(&mut d, b, "interpreters entry"))
        .collect();
    let mut exempt_pids = Vec::new();
    for p in &doc.spec.exempt_pids {
        if p.value == 0 {
            d.at(p, "exempt_pids: 0 is not a process id");
        } else {
            exempt_pids.push(p.value);
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cedar = Vec::new();
    for c in &doc.spec.cedar {
        let f = base.join(&c.value);
        if c.value.trim().is_empty() {
            d.at(c, "cedar: empty file name");
        } else if !f.is_file() {
            d.at(c, format!("cedar: {} is not a file", f.display()));
        } else {
            cedar.push(f);
        }
    }
    let mut tracing_policies = Vec::new();
    for t in &doc.spec.tracing_policies {
        let f = base.join(&t.value);
        if t.value.trim().is_empty() {
            d.at(t, "tracing_policies: empty file name");
        } else if !f.is_file() {
            d.at(
                t,
                format!("tracing_policies: {} is not a file", f.display()),
            );
        } else {
            tracing_policies.push(f);
        }
    }
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for r in doc.spec.rules {
        if !names.insert(r.name.value.clone()) {
            d.at(&r.name, format!("duplicate rule name {:?}", r.name.value));
        }
        if let Some(rule) = rule(&mut d, r) {
            rules.push(rule);
        }
    }
    if d.0.is_empty() {
        Ok(Policy {
            name,
            source: path.into(),
            rules,
            exempt_pids,
            exempt_binaries,
            interpreters,
            cedar,
            tracing_policies,
        })
    } else {
        d.0.sort_by_key(|x| (x.line, x.column));
        Err(d.0)
    }
}

fn rule(d: &mut Diags, mut r: RuleDoc) -> Option<Rule> {
    let before = d.0.len();
    let name = r.name.value.clone();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        d.at(
            &r.name,
            "rule name must be non-empty letters, digits, '-', '_' or '.'",
        );
    }
    let hook = match r.hook.value.as_str() {
        "file_open" => Some(Hook::FileOpen),
        "file_write" => Some(Hook::FileWrite),
        "exec" => Some(Hook::Exec),
        "connect" => Some(Hook::Connect),
        other => {
            d.at(
                &r.hook,
                format!("unknown hook {other:?}: expected file_open, file_write, exec or connect"),
            );
            None
        }
    };
    let action = match r.action.value.as_str() {
        "deny" => Some(Action::Deny),
        "alert" => Some(Action::Alert),
        "allow" => Some(Action::Allow),
        other => {
            d.at(
                &r.action,
                format!("unknown action {other:?}: expected deny, alert or allow"),
            );
            None
        }
    };
    let severity = match &r.severity {
        None => Severity::default(),
        Some(s) => {
            match Severity::parse(&s.value) {
                Some(v) => v,
                None => {
                    let other = &s.value;
                    d.at(s, format!("unknown severity {other:?}: expected info, low, medium, high or critical"));
                    Severity::default()
                }
            }
        }
    };
    // The path lists move into the rule: with 100 000 entries a copy
    // doubled the parse's peak.
    let mut take = |list: &mut Vec<At<String>>, what: &str| -> (bool, Vec<String>) {
        let raw = std::mem::take(list);
        let named = !raw.is_empty();
        // A fresh vector: collecting in place would keep the list's larger
        // allocation (its items carry positions) for the policy's life.
        let mut out = Vec::with_capacity(raw.len());
        out.extend(raw.into_iter().filter_map(|p| take_abs_path(d, p, what)));
        (named, out)
    };
    let (named_prefixes, prefixes) = take(&mut r.matches.value.prefixes, "prefix");
    let (named_paths, paths) = take_list(d, &mut r.matches.value.paths, "path");
    let (named_binaries, binaries) = take_list(d, &mut r.matches.value.binaries, "binary");
    let prefixes: Vec<String> = prefixes
        .into_iter()
        .map(|p| if p.ends_with('/') { p } else { format!("{p}/") })
        .collect();
    let m: &MatchDoc = &r.matches.value;
    let mut cidrs = Vec::new();
    for c in &m.cidrs {
        match parse_cidr(&c.value) {
            Ok(n) => cidrs.push(n),
            Err(e) => d.at(c, e),
        }
    }
    let mut ports = Vec::new();
    for p in &m.ports {
        match u16::try_from(p.value) {
            Ok(v) if v > 0 => ports.push(v),
            _ => d.at(p, format!("port {} out of range 1-65535", p.value)),
        }
    }
    let protocol = match &m.protocol {
        None => Protocol::Any,
        Some(p) => match p.value.as_str() {
            "any" => Protocol::Any,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                d.at(
                    p,
                    format!("unknown protocol {other:?}: expected tcp, udp or any"),
                );
                Protocol::Any
            }
        },
    };
    let mut domains = Vec::new();
    for n in &m.domains {
        match crate::names::DomainPattern::parse(&n.value) {
            Ok(p) => domains.push(p),
            Err(e) => d.at(n, e.to_string()),
        }
    }
    let (hook, action) = (hook?, action?);
    let file_like = !paths.is_empty() || !prefixes.is_empty();
    let net_like = !cidrs.is_empty() || !ports.is_empty() || m.protocol.is_some();
    match hook {
        Hook::FileOpen | Hook::FileWrite => {
            if net_like || !binaries.is_empty() || !m.domains.is_empty() {
                d.at(
                    &r.matches,
                    format!("{} rules match paths and prefixes only", hook.as_str()),
                );
            }
            if !file_like && !named_paths && !named_prefixes {
                d.at(&r.matches, "match needs at least one path or prefix");
            }
        }
        Hook::Exec => {
            if net_like || !m.domains.is_empty() {
                d.at(
                    &r.matches,
                    "exec rules match binaries, paths and prefixes only",
                );
            }
            if !file_like && !named_binaries && !named_paths && !named_prefixes {
                d.at(
                    &r.matches,
                    "match needs at least one binary, path or prefix",
                );
            }
        }
        Hook::Connect => {
            if file_like || !binaries.is_empty() {
                d.at(
                    &r.matches,
                    "connect rules match cidrs, ports and protocol, or domains",
                );
            }
            if !m.domains.is_empty() && net_like {
                d.at(
                    &r.matches,
                    "a domain rule matches the TLS server name alone: write cidrs, ports and protocol in a rule of their own",
                );
            } else if m.cidrs.is_empty() && m.ports.is_empty() && m.domains.is_empty() {
                d.at(&r.matches, "match needs at least one cidr, port or domain");
            }
        }
    }
    if d.0.len() != before {
        return None;
    }
    if hook == Hook::Connect && cidrs.is_empty() && domains.is_empty() {
        // Ports alone: any address of either family.
        cidrs = vec!["0.0.0.0/0".parse().ok()?, "::/0".parse().ok()?];
    }
    Some(Rule {
        name,
        hook,
        action,
        severity,
        paths,
        prefixes,
        binaries,
        cidrs,
        ports,
        protocol,
        domains,
        prefix_covers_dir: true,
        message: None,
        tags: Vec::new(),
        line: r.name.line.into(),
    })
}

/// An absolute, normalized path the kernel can report back verbatim.
pub(super) fn abs_path(d: &mut Diags, p: &impl Located<String>, what: &str) -> Option<String> {
    match path_problem(p.value(), what) {
        Some(e) => {
            d.at(p, e);
            None
        }
        None => Some(p.value().clone()),
    }
}

/// A list checked as it was read: its wrong entries (the only ones with
/// positions) are reported, its paths move into the rule.
fn take_list(d: &mut Diags, list: &mut PathListDoc, what: &str) -> (bool, PathList) {
    let named = list.named();
    for p in std::mem::take(&mut list.bad) {
        take_abs_path(d, p, what);
    }
    (named, std::mem::take(&mut list.paths))
}

/// [`abs_path`] of an owned value: the string moves (big lists are not
/// copied).
fn take_abs_path(d: &mut Diags, p: At<String>, what: &str) -> Option<String> {
    match path_problem(&p.value, what) {
        Some(e) => {
            d.at(&p, e);
            None
        }
        None => Some(p.value),
    }
}

/// Why `v` is not a path a rule can name, if it is not.
pub(super) fn path_problem(v: &str, what: &str) -> Option<String> {
    if !v.starts_with('/') {
        Some(format!("{what} {v:?} must be absolute"))
    } else if v.contains('\0') {
        Some(format!("{what} {v:?} contains NUL"))
    } else if v.len() > MAX_PATH_LEN {
        Some(format!(
            "{what} is {} bytes; the longest path a rule can name is {MAX_PATH_LEN} bytes",
            v.len()
        ))
    } else if v.contains("//") || v.split('/').any(|c| c == "." || c == "..") {
        Some(format!("{what} {v:?} must be normalized (no '//', '.' or '..'): the kernel reports resolved paths"))
    } else {
        None
    }
}

pub(super) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = match s.parse::<IpNet>() {
        Ok(n) => n,
        // A bare address means that one host.
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => return Err(format!("{s:?} is not a CIDR or IP address")),
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::*;

    fn parse_ok(y: &str) -> Policy {
        parse(y, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(y: &str) -> String {
        parse(y, Path::new("t.yaml")).unwrap_err().to_string()
    }

    const HEAD: &str = "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n";

    #[test]
    fn parses_every_rule_kind() {
        let p = parse_ok(&format!(
            "{HEAD}  exempt_pids: [42]\n  exempt_binaries: [/usr/sbin/sshd]\n  rules:
    - name: shadow
      hook: file_open
      action: deny
      severity: high
      match:
        paths: [/etc/shadow]
        prefixes: [/etc/ssh]
    - name: nc
      hook: exec
      action: deny
      match:
        binaries: [/usr/bin/nc]
    - name: meta
      hook: connect
      action: alert
      match:
        cidrs: [169.254.169.254/32, 'fd00::/8', 10.1.2.3]
        ports: [80, 443]
        protocol: tcp
"
        ));
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.exempt_pids, vec![42]);
        assert_eq!(p.rules[0].prefixes, vec!["/etc/ssh/"]);
        assert_eq!(p.rules[0].severity, Severity::High);
        assert_eq!(p.rules[0].line, 9);
        assert_eq!(p.rules[2].cidrs.len(), 3);
        assert_eq!(p.rules[2].protocol, Protocol::Tcp);
    }

    #[test]
    fn errors_carry_file_line_column() {
        let e = parse_err(&format!(
            "{HEAD}  rules:
    - name: bad
      hook: file_open
      action: deny
      match:
        paths: [etc/shadow]
"
        ));
        assert!(e.starts_with("t.yaml:11:"), "{e}");
        assert!(e.contains("must be absolute"), "{e}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = parse_err(&format!(
            "{HEAD}  rules:
    - name: a
      hook: file_opn
      action: deny
      match: {{ paths: [/x] }}
    - name: b
      hook: connect
      action: block
      match: {{ cidrs: [10.0.0.1/8] }}
"
        ));
        assert!(e.contains("t.yaml:8:13: unknown hook \"file_opn\""), "{e}");
        assert!(e.contains("t.yaml:13:15: unknown action \"block\""), "{e}");
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn rejects_unnormalized_and_long_paths() {
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        let e = parse_err(&format!(
            "{HEAD}  rules:\n    - name: a\n      hook: file_write\n      action: deny\n      match: {{ paths: [/etc/../x, {long}] }}\n"
        ));
        assert!(e.contains("must be normalized"), "{e}");
        assert!(e.contains("longest path a rule can name"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_and_mismatched_matchers() {
        let e = parse_err(&format!(
            "{HEAD}  rules:\n    - name: a\n      hook: exec\n      action: deny\n      match: {{ cidrs: [10.0.0.0/8] }}\n"
        ));
        assert!(e.contains("exec rules match binaries"), "{e}");
        let e = parse_err(&format!("{HEAD}  rulez: []\n"));
        assert!(e.contains("t.yaml:6:"), "{e}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_err("apiVersion: [\n");
        assert!(e.starts_with("t.yaml:"), "{e}");
        let e = parse_err(&format!(
            "{HEAD}  rules:\n    - name: x\n      hook: exec\n"
        ));
        assert!(e.contains("missing field"), "{e}");
    }

    /// A file is parsed as it is read: the same policy and the same
    /// diagnostics as from text, without the reader's "line L column C"
    /// prefix repeated in the message.
    #[test]
    fn files_parse_as_text_does() {
        let dir = std::env::temp_dir().join(format!("vardr-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.yaml");
        let good = format!(
            "{HEAD}  rules:\n    - {{name: a, hook: file_open, action: deny, match: {{paths: [/a, /b], prefixes: [/c]}}}}\n"
        );
        std::fs::write(&f, &good).unwrap();
        let from_file = crate::policy::load(&f).unwrap();
        let from_text = parse_ok(&good);
        assert_eq!(from_file.rules[0].paths, from_text.rules[0].paths);
        assert_eq!(from_file.rules[0].prefixes, vec!["/c/".to_string()]);
        let bad = format!("{HEAD}  rules: [{{name: a, hook: exec]\n");
        std::fs::write(&f, &bad).unwrap();
        let e = crate::policy::load(&f).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("t.yaml:6:"), "{e}");
        assert!(!e.contains("line 6 column"), "{e}");
        assert!(!e.contains("error: "), "{e}");
    }

    #[test]
    fn domain_rules_match_names_alone_and_report_bad_patterns() {
        let p = parse_ok(&format!(
            "{HEAD}  rules:\n    - name: d\n      hook: connect\n      action: deny\n      match: {{ domains: [Evil.Example., '*.example.com'] }}\n"
        ));
        let r = &p.rules[0];
        assert!(r.cidrs.is_empty(), "a domain rule covers no address: {r:?}");
        assert_eq!(r.domains.len(), 2);
        assert_eq!(r.domains[0].to_string(), "evil.example");
        let e = parse_err(&format!(
            "{HEAD}  rules:
    - name: a
      hook: connect
      action: deny
      match: {{ domains: [evil.example], ports: [443] }}
    - name: b
      hook: connect
      action: deny
      match: {{ domains: ['ev*l.example', 'bücher.example'] }}
    - name: c
      hook: file_open
      action: deny
      match: {{ domains: [evil.example] }}
"
        ));
        assert!(e.contains("matches the TLS server name alone"), "{e}");
        assert!(e.contains("ev*l.example"), "{e}");
        assert!(e.contains("xn--"), "IDNs are written in punycode: {e}");
        assert!(e.contains("file_open rules match paths"), "{e}");
    }

    #[test]
    fn ports_only_connect_rule_covers_both_families() {
        let p = parse_ok(&format!(
            "{HEAD}  rules:\n    - name: smtp\n      hook: connect\n      action: deny\n      match: {{ ports: [25] }}\n"
        ));
        assert_eq!(p.rules[0].cidrs.len(), 2);
    }
}
