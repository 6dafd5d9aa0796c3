//! Everything one policy file names, loaded and compiled together: the
//! YAML rules, its Cedar files, and the Layer 1 rules derived from them.
//! One error anywhere rejects the whole bundle, so a reload is atomic.
use std::path::{Path, PathBuf};

use super::{compile, CompileError, Limits, RuleSet};
use crate::{
    cedar::{self, kernel::KernelRules, CedarSet},
    policy::{self, Action, Policy, PolicyError, Rule},
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

/// A policy with its Cedar set, compiled.
#[derive(Debug)]
pub struct Bundle {
    pub policy: Policy,
    pub cedar: CedarSet,
    pub kernel: KernelRules,
    pub rules: RuleSet,
}

/// Reads and validates the policy at `path` and the Cedar files it names.
pub fn parse(path: &Path) -> Result<(Policy, CedarSet, KernelRules), PolicyError> {
    let mut pol = policy::load(path)?;
    let cedar = cedar::load_files(&pol.cedar)?;
    let kernel = cedar::kernel::compile(&cedar);
    pol.rules.extend(kernel.enforced.iter().cloned());
    pol.rules.extend(kernel.observe.iter().cloned());
    Ok((pol, cedar, kernel))
}

/// Where a YAML `allow` or `alert` is more specific than a Cedar forbid
/// compiled into the kernel, the YAML rule decides there (longest match
/// wins) and no event reaches Layer 2: say so.
fn shadowed_cedar(rules: &[Rule]) -> Vec<String> {
    let (cedar, yaml): (Vec<&Rule>, Vec<&Rule>) =
        rules.iter().partition(|r| r.name.starts_with("cedar:"));
    let mut out = Vec::new();
    for c in cedar {
        for y in yaml
            .iter()
            .filter(|y| y.hook == c.hook && matches!(y.action, Action::Allow | Action::Alert))
        {
            let within = |p: &String| {
                c.prefixes.iter().any(|cp| p.starts_with(cp.as_str()))
                    || c.paths.iter().chain(&c.binaries).any(|e| e == p)
            };
            let paths = y.paths.iter().chain(&y.prefixes).chain(&y.binaries);
            let nets = y
                .cidrs
                .iter()
                .any(|n| c.cidrs.iter().any(|m| m.contains(n) || n.contains(m)));
            if paths.clone().any(within) || nets {
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
pub fn load(path: &Path, first_id: u32, limits: &Limits) -> Result<Bundle, BundleError> {
    let (policy, cedar, kernel) = parse(path)?;
    let mut rules = compile(&policy, first_id, limits).map_err(|source| BundleError::Compile {
        path: path.into(),
        source,
    })?;
    rules.warnings.extend(kernel.warnings.iter().cloned());
    rules.warnings.extend(shadowed_cedar(&policy.rules));
    Ok(Bundle {
        policy,
        cedar,
        kernel,
        rules,
    })
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
             @id(\"net\") forbid (principal, action == Vardr::Action::\"connect\", resource) when { resource.ip.isInRange(ip(\"10.0.0.0/8\")) };\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("p.yaml"),
            concat!(
                "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  cedar: [p.cedar]\n  rules:\n",
                "    - {name: moduli, hook: file_open, action: allow, match: {paths: [/etc/ssh/moduli]}}\n",
                "    - {name: web, hook: connect, action: alert, match: {cidrs: [10.1.0.0/16], ports: [443]}}\n",
                "    - {name: other, hook: file_open, action: allow, match: {paths: [/etc/hosts]}}\n",
            ),
        )
        .unwrap();
        let b = load(&dir.join("p.yaml"), 1, &super::super::Limits::default());
        let _ = std::fs::remove_dir_all(&dir);
        let w = b.unwrap().rules.warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("ssh") && w[0].contains("moduli"), "{w:?}");
        assert!(w[1].contains("net") && w[1].contains("web"), "{w:?}");
    }
}
