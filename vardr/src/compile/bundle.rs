//! Everything one policy file names, loaded and compiled together: the
//! YAML rules, its Cedar files, and the Layer 1 rules derived from them.
//! One error anywhere rejects the whole bundle, so a reload is atomic.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use super::{compile, CompileError, Limits, RuleSet};
use crate::{
    cedar::{self, kernel::KernelRules, CedarSet},
    policy::{self, tracing::TracingPolicy, Action, Hook, Policy, PolicyError, Protocol, Rule},
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Compile {
        path: PathBuf,
        #[source]
        source: CompileError,
    },
}

/// A policy with its Cedar set and TracingPolicies, compiled.
#[derive(Debug)]
pub struct Bundle {
    pub policy: Policy,
    pub cedar: CedarSet,
    pub kernel: KernelRules,
    /// The policy file's TracingPolicies, then those added through the API.
    pub tracing: Vec<TracingPolicy>,
    pub rules: RuleSet,
}

/// A policy file and everything it names, validated, not compiled.
#[derive(Debug)]
pub struct Parsed {
    /// Its rules are the YAML rules, the Cedar-derived ones, then the
    /// TracingPolicies' (in `tracing` order).
    pub policy: Policy,
    pub cedar: CedarSet,
    pub kernel: KernelRules,
    pub tracing: Vec<TracingPolicy>,
    /// How many of `policy.rules` are the YAML's own.
    pub own_rules: usize,
}

/// Reads and validates the policy at `path`, the Cedar and TracingPolicy
/// files it names, and adds the rules of `extra` (TracingPolicies added
/// at run time).
pub fn parse(path: &Path, extra: &[TracingPolicy]) -> Result<Parsed, PolicyError> {
    let mut pol = policy::load(path)?;
    let own_rules = pol.rules.len();
    let cedar = cedar::load_files(&pol.cedar)?;
    let kernel = cedar::kernel::compile(&cedar);
    pol.rules.extend(kernel.enforced.iter().cloned());
    pol.rules.extend(kernel.observe.iter().cloned());
    let mut tracing = pol
        .tracing_policies
        .iter()
        .map(|f| policy::tracing::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    tracing.extend(extra.iter().cloned());
    let mut names: HashSet<&str> = pol.rules.iter().map(|r| r.name.as_str()).collect();
    let mut seen = HashSet::new();
    for t in &tracing {
        let key = (t.namespace.as_deref(), t.name.as_str());
        let clash = !seen.insert(key) || t.rules.iter().any(|r| !names.insert(r.name.as_str()));
        if clash {
            return Err(PolicyError::Invalid {
                path: t.source.clone(),
                diagnostics: vec![policy::Diagnostic {
                    line: 1,
                    column: 1,
                    message: format!(
                        "TracingPolicy {:?} is loaded twice, or its rule names clash with the policy's",
                        t.name
                    ),
                }],
            });
        }
    }
    lifted_denies(&pol.rules, &tracing)?;
    pol.rules
        .extend(tracing.iter().flat_map(|t| t.rules.iter().cloned()));
    Ok(Parsed {
        policy: pol,
        cedar,
        kernel,
        tracing,
        own_rules,
    })
}

/// Whether rule `inner` is strictly more specific than `outer` on the same
/// hook, so the longest match lets `inner` decide where they overlap.
fn more_specific(inner: &Rule, outer: &Rule) -> bool {
    if inner.hook != outer.hook {
        return false;
    }
    let inside = |x: &str| {
        outer
            .prefixes
            .iter()
            .any(|p| x.starts_with(p.as_str()) && x.len() > p.len())
    };
    let files = inner
        .paths
        .iter()
        .chain(inner.prefixes.iter().map(String::as_str))
        .chain(&inner.binaries)
        .any(inside);
    let net = inner.hook == Hook::Connect
        && inner.cidrs.iter().any(|c| {
            outer.cidrs.iter().any(|o| {
                o.contains(c) && (o != c || (outer.ports.is_empty() && !inner.ports.is_empty()))
            })
        });
    files || net
}

/// In Tetragon each TracingPolicy's deny holds on its own; here the rules
/// join one set where the most specific rule decides. So a rule that is
/// not a deny (an alert, an allow) and more specific than a deny, where one
/// of the two comes from a TracingPolicy, would silently lift that deny:
/// refused, naming both.
fn lifted_denies(own: &[Rule], tracing: &[TracingPolicy]) -> Result<(), PolicyError> {
    let lifts = |r: &Rule| matches!(r.action, Action::Alert | Action::Allow);
    let mut diagnostics = Vec::new();
    let mut source = None;
    for t in tracing {
        for tr in &t.rules {
            let others = own.iter().map(|r| (r, None)).chain(
                tracing
                    .iter()
                    .filter(|o| o.name != t.name)
                    .flat_map(|o| o.rules.iter().map(move |r| (r, Some(o.name.as_str())))),
            );
            for (o, from) in others {
                let (deny, lifter) = if tr.action == Action::Deny && lifts(o) {
                    (tr, o)
                } else if o.action == Action::Deny && lifts(tr) {
                    (o, tr)
                } else {
                    continue;
                };
                if more_specific(lifter, deny) {
                    let other = from.map_or_else(
                        || format!("the policy's rule {}", o.name),
                        |n| format!("TracingPolicy {n}'s rule {}", o.name),
                    );
                    source.get_or_insert_with(|| t.source.clone());
                    diagnostics.push(policy::Diagnostic {
                        line: tr.line,
                        column: 1,
                        message: format!(
                            "{} ({:?}) and {other} ({:?}) overlap: the more specific {} would lift the deny {} there (in Tetragon the deny holds); make them not overlap",
                            tr.name, tr.action, o.action, lifter.name, deny.name
                        ),
                    });
                }
            }
        }
    }
    match source {
        None => Ok(()),
        Some(path) => Err(PolicyError::Invalid { path, diagnostics }),
    }
}

/// Order in which the kernel tries network buckets: (protocol, port),
/// (any, port), (protocol, any), (any, any); the first hit wins.
fn bucket_order(protocol: Protocol, port: u16) -> u8 {
    match (protocol == Protocol::Any, port == 0) {
        (false, false) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (true, true) => 3,
    }
}

/// Whether YAML rule `y` wins over Cedar rule `c` for some connect both
/// match: `y` is tried in an earlier bucket, or in the same bucket with a
/// longer prefix inside `c`'s network.
fn net_shadows(y: &Rule, c: &Rule) -> bool {
    let ports = |r: &Rule| {
        if r.ports.is_empty() {
            vec![0]
        } else {
            r.ports.clone()
        }
    };
    let fits = |a: u16, b: u16| a == 0 || b == 0 || a == b;
    let proto_fits =
        y.protocol == Protocol::Any || c.protocol == Protocol::Any || y.protocol == c.protocol;
    if !proto_fits {
        return false;
    }
    ports(y).into_iter().any(|yp| {
        ports(c).into_iter().filter(|cp| fits(yp, *cp)).any(|cp| {
            let (by, bc) = (bucket_order(y.protocol, yp), bucket_order(c.protocol, cp));
            y.cidrs.iter().any(|n| {
                c.cidrs.iter().any(|m| {
                    let overlap = m.contains(n) || n.contains(m);
                    overlap
                        && (by < bc
                            || (by == bc && m.contains(n) && n.prefix_len() > m.prefix_len()))
                })
            })
        })
    })
}

/// Where a YAML `allow` or `alert` is more specific than a Cedar forbid
/// compiled into the kernel, the YAML rule decides there (longest match
/// wins) and no event reaches Layer 2: say so. On the very same key the
/// deny wins, so that is no overlap.
fn shadowed_cedar(rules: &[Rule]) -> Vec<String> {
    let (cedar, yaml): (Vec<&Rule>, Vec<&Rule>) =
        rules.iter().partition(|r| r.name.starts_with("cedar:"));
    let mut out = Vec::new();
    for c in cedar {
        for y in yaml
            .iter()
            .filter(|y| y.hook == c.hook && matches!(y.action, Action::Allow | Action::Alert))
        {
            // Exact keys end with a NUL, as in the kernel's trie.
            let inside = |p: &str, exact: bool| {
                let len = p.len() + usize::from(exact);
                c.prefixes
                    .iter()
                    .any(|cp| p.starts_with(cp.as_str()) && len > cp.len())
            };
            let paths = y.paths.iter().chain(&y.binaries).any(|p| inside(p, true))
                || y.prefixes.iter().any(|p| inside(p, false));
            if paths || (y.hook == Hook::Connect && net_shadows(y, c)) {
                out.push(format!(
                    "Cedar policy {} is enforced in the kernel, but the more specific rule {} ({:?}) decides where they overlap; Layer 2 does not see those events",
                    c.name.trim_start_matches("cedar:"),
                    y.name,
                    y.action
                ));
            }
        }
    }
    out
}

/// [`parse`], then compiles the rules, numbering them from `first_id`.
/// Events of a TracingPolicy's rules name that policy.
pub fn load(
    path: &Path,
    extra: &[TracingPolicy],
    first_id: u32,
    limits: &Limits,
) -> Result<Bundle, BundleError> {
    let t = std::time::Instant::now();
    let mut p = parse(path, extra)?;
    let parsed = t.elapsed();
    // Before the compile moves the path lists out of the rules.
    let shadowed = shadowed_cedar(&p.policy.rules);
    let mut rules =
        compile(&mut p.policy, first_id, limits).map_err(|source| BundleError::Compile {
            path: path.into(),
            source,
        })?;
    // Rule ids follow `policy.rules`, whose tail is the TracingPolicies'.
    let mut id = first_id + (p.policy.rules.len() - tracing_rules(&p.tracing)) as u32;
    for t in &p.tracing {
        for _ in &t.rules {
            if let Some(info) = rules.rules.get_mut(&id) {
                info.policy_name.clone_from(&t.name);
            }
            id += 1;
        }
    }
    rules.warnings.extend(p.kernel.warnings.iter().cloned());
    rules.warnings.extend(shadowed);
    tracing::debug!(
        parse_ms = parsed.as_millis() as u64,
        compile_ms = (t.elapsed() - parsed).as_millis() as u64,
        "policy {} loaded",
        path.display()
    );
    Ok(Bundle {
        policy: p.policy,
        cedar: p.cedar,
        kernel: p.kernel,
        tracing: p.tracing,
        rules,
    })
}

fn tracing_rules(t: &[TracingPolicy]) -> usize {
    t.iter().map(|t| t.rules.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_carve_outs_inside_kernel_enforced_cedar_are_reported() {
        let dir = std::env::temp_dir().join(format!("vardr-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("p.cedar"),
            "@id(\"ssh\") forbid (principal, action in Vardr::Action::\"open\", resource in Vardr::Dir::\"/etc/ssh\");\n\
             @id(\"net\") forbid (principal, action == Vardr::Action::\"connect\", resource) when { resource.ip.isInRange(ip(\"10.0.0.0/8\")) };\n\
             @id(\"ssh22\") forbid (principal, action == Vardr::Action::\"connect\", resource) when { resource.ip.isInRange(ip(\"10.0.0.0/8\")) && resource.port == 22 && resource.protocol == \"tcp\" };\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("p.yaml"),
            concat!(
                "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  cedar: [p.cedar]\n  rules:\n",
                "    - {name: moduli, hook: file_open, action: allow, match: {paths: [/etc/ssh/moduli]}}\n",
                "    - {name: web, hook: connect, action: alert, match: {cidrs: [10.1.0.0/16], ports: [443]}}\n",
                "    - {name: other, hook: file_open, action: allow, match: {paths: [/etc/hosts]}}\n",
                "    - {name: same-key, hook: file_open, action: alert, match: {prefixes: [/etc/ssh]}}\n",
                "    - {name: other-port, hook: connect, action: alert, match: {cidrs: [10.0.0.0/8], ports: [443]}}\n",
            ),
        )
        .unwrap();
        let b = load(
            &dir.join("p.yaml"),
            &[],
            1,
            &super::super::Limits::default(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        let w = b.unwrap().rules.warnings;
        // Not warned: the same key (deny wins on it), another port than
        // the Cedar rule's, a path outside it.
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("ssh ") && w[0].contains("moduli"), "{w:?}");
        assert!(w[1].contains("net ") && w[1].contains("web"), "{w:?}");
        assert!(
            w[2].contains("net ") && w[2].contains("other-port"),
            "{w:?}"
        );
    }
    /// A policy file's TracingPolicy and one added at run time join the
    /// policy: their events name them, duplicates and carve-outs are told.
    #[test]
    fn tracing_policies_join_the_policy_under_their_own_names() {
        let dir = std::env::temp_dir().join(format!("vardr-bundle-tp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tp = |name: &str, value: &str| {
            format!(
                "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: {name}}}\nspec:\n  lsmhooks:\n  - hook: file_open\n    args: [{{index: 0, type: file}}]\n    selectors:\n    - matchArgs: [{{index: 0, operator: Prefix, values: [\"{value}\"]}}]\n      matchActions: [{{action: Override, argError: -1}}]\n"
            )
        };
        std::fs::write(dir.join("etc.yaml"), tp("etc-block", "/etc/")).unwrap();
        std::fs::write(
            dir.join("p.yaml"),
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  tracing_policies: [etc.yaml]\n  rules:\n    - {name: hosts, hook: file_open, action: allow, match: {paths: [/srv/hosts]}}\n",
        )
        .unwrap();
        let api = policy::tracing::parse(&tp("var-block", "/var/"), Path::new("api")).unwrap();
        let limits = super::super::Limits::default();
        let b = load(&dir.join("p.yaml"), std::slice::from_ref(&api), 10, &limits).unwrap();
        let names: Vec<&str> = b.tracing.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["etc-block", "var-block"]);
        let mut by_policy: Vec<(&str, &str)> = b
            .rules
            .rules
            .values()
            .map(|r| (r.policy_name.as_str(), r.rule.as_str()))
            .collect();
        by_policy.sort();
        assert_eq!(
            by_policy,
            [
                ("etc-block", "etc-block.file_open.0.0"),
                ("t", "hosts"),
                ("var-block", "var-block.file_open.0.0")
            ]
        );
        // An allow or alert more specific than a deny, one of them from a
        // TracingPolicy, would lift the deny: refused.
        std::fs::write(
            dir.join("lift.yaml"),
            "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  tracing_policies: [etc.yaml]\n  rules:\n    - {name: hosts, hook: file_open, action: allow, match: {paths: [/etc/hosts]}}\n",
        )
        .unwrap();
        let err =
            load(&dir.join("lift.yaml"), &[], 10, &limits).expect_err("allow lifts a TP deny");
        assert!(
            err.to_string()
                .contains("the more specific hosts would lift the deny etc-block"),
            "{err}"
        );
        let alert = policy::tracing::parse(
            &tp("shadow-alert", "/etc/ssh/").replace("Override, argError: -1", "Post"),
            Path::new("api"),
        )
        .unwrap();
        let err = load(&dir.join("p.yaml"), &[alert], 10, &limits).expect_err("alert lifts a deny");
        assert!(err.to_string().contains("shadow-alert"), "{err}");
        // The same TracingPolicy twice (file and API) is refused.
        let again = policy::tracing::load(&dir.join("etc.yaml")).unwrap();
        let err = load(&dir.join("p.yaml"), &[again], 10, &limits).expect_err("loaded twice");
        assert!(err.to_string().contains("etc-block"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
