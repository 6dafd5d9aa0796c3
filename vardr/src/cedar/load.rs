//! Reading Cedar files: parse, validate against the shipped schema, read
//! annotations; every problem becomes a `file:line:column` diagnostic.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    str::FromStr,
};

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode, Validator};

use super::{schema, PolicyMeta, Verdict};
use crate::policy::{Diagnostic, PolicyError, Severity};

/// Validated Cedar policies from one or more files.
#[derive(Clone, Debug, Default)]
pub struct CedarSet {
    /// Policies renamed to their [`PolicyMeta::name`].
    pub policies: Vec<(Policy, PolicyMeta)>,
    /// Where each policy came from, by name.
    pub sources: HashMap<String, PathBuf>,
    /// The validator's warnings (e.g. a policy that can never apply), as
    /// `file:line:column: message`.
    pub warnings: Vec<String>,
}

impl CedarSet {
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Reads and validates `files`; names must be unique across them.
pub fn load_files(files: &[PathBuf]) -> Result<CedarSet, PolicyError> {
    let mut set = CedarSet::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|source| PolicyError::Read {
            path: f.clone(),
            source,
        })?;
        let one = parse_text(&text, f)?;
        for (p, meta) in one.policies {
            if let Some(other) = set.sources.get(&meta.name) {
                return Err(PolicyError::Invalid {
                    path: f.clone(),
                    diagnostics: vec![at(
                        &text,
                        find(&text, &format!("\"{}\"", meta.name)),
                        format!(
                            "policy id {:?} is already used in {}",
                            meta.name,
                            other.display()
                        ),
                    )],
                });
            }
            set.sources.insert(meta.name.clone(), f.clone());
            set.policies.push((p, meta));
        }
        set.warnings.extend(one.warnings);
    }
    Ok(set)
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, col)
}

fn at(text: &str, offset: usize, message: String) -> Diagnostic {
    let (line, column) = line_col(text, offset);
    Diagnostic {
        line,
        column,
        message,
    }
}

fn find(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or(0)
}

/// First labelled offset of a Cedar diagnostic, and its message with the
/// label's text when that adds something.
fn diagnostic(text: &str, e: &dyn miette::Diagnostic) -> Diagnostic {
    let label = e.labels().and_then(|mut l| l.next());
    let offset = label.as_ref().map_or(0, |l| l.offset());
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message.push_str(&format!(" ({help})"));
    }
    at(text, offset, message)
}

/// Parses and validates one file's text; `path` names it in errors and in
/// the default policy names.
pub fn parse_text(text: &str, path: &Path) -> Result<CedarSet, PolicyError> {
    let invalid = |diagnostics| PolicyError::Invalid {
        path: path.into(),
        diagnostics,
    };
    let parsed = PolicySet::from_str(text)
        .map_err(|errs| invalid(errs.iter().map(|e| diagnostic(text, e)).collect()))?;
    if parsed.templates().next().is_some() {
        return Err(invalid(vec![at(
            text,
            find(text, "?"),
            "policy templates (?principal, ?resource) are not supported".into(),
        )]));
    }
    // Policies in the order they are written: the parser numbers them
    // policy0, policy1, ...
    let mut numbered: Vec<(usize, &Policy)> = parsed
        .policies()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .trim_start_matches("policy")
                .parse()
                .unwrap_or(usize::MAX);
            (n, p)
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);

    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into(),
    );
    // Errors name policies as the user knows them (`@id` or file#N), not
    // by the parser's internal numbering.
    let names: HashMap<String, String> = numbered
        .iter()
        .map(|(n, p)| {
            let name = p
                .annotation("id")
                .map_or_else(|| format!("{file}#{n}"), str::to_string);
            (p.id().to_string(), name)
        })
        .collect();
    let result = Validator::new(schema().clone()).validate(&parsed, ValidationMode::Strict);
    let mut diags: Vec<Diagnostic> = result
        .validation_errors()
        .map(|e| {
            let mut d = diagnostic(text, e);
            let id = e.policy_id().to_string();
            if let Some(name) = names.get(&id) {
                d.message = d.message.replace(&format!("`{id}`"), &format!("`{name}`"));
            }
            d
        })
        .collect();
    if !diags.is_empty() {
        diags.sort_by_key(|d| (d.line, d.column));
        return Err(invalid(diags));
    }
    let rename = |id: &str, msg: String| match names.get(id) {
        Some(name) => msg.replace(&format!("`{id}`"), &format!("`{name}`")),
        None => msg,
    };
    let warnings: Vec<String> = result
        .validation_warnings()
        .map(|w| {
            let d = diagnostic(text, w);
            let msg = rename(w.policy_id().as_ref(), d.message);
            format!("{}:{}:{}: warning: {msg}", path.display(), d.line, d.column)
        })
        .collect();
    let mut set = CedarSet {
        warnings,
        ..Default::default()
    };
    for (n, p) in numbered {
        let meta = meta_of(p, &file, n)
            .map_err(|(needle, msg)| invalid(vec![at(text, find(text, &needle), msg)]))?;
        if set.sources.contains_key(&meta.name) {
            return Err(invalid(vec![at(
                text,
                find(text, &format!("\"{}\"", meta.name)),
                format!("policy id {:?} is used twice", meta.name),
            )]));
        }
        set.sources.insert(meta.name.clone(), path.into());
        let renamed = p.new_id(PolicyId::new(meta.name.clone()));
        set.policies.push((renamed, meta));
    }
    Ok(set)
}

/// Reads the annotations vardr gives meaning to; an error names the text
/// to point at and what is wrong.
fn meta_of(p: &Policy, file: &str, n: usize) -> Result<PolicyMeta, (String, String)> {
    let name = p
        .annotation("id")
        .map_or_else(|| format!("{file}#{n}"), str::to_string);
    let bad = |key: &str, value: &str, want: &str| {
        (
            format!("@{key}(\"{value}\")"),
            format!("policy {name}: @{key}(\"{value}\"): expected {want}"),
        )
    };
    let verdict = match (p.effect(), p.annotation("verdict")) {
        (Effect::Forbid, None | Some("deny")) => Verdict::Deny,
        (Effect::Forbid, Some("alert")) => Verdict::Alert,
        (Effect::Forbid, Some(v)) => return Err(bad("verdict", v, "\"deny\" or \"alert\"")),
        (Effect::Permit, None | Some("allow")) => Verdict::Allow,
        (Effect::Permit, Some(v)) => {
            return Err(bad(
                "verdict",
                v,
                "\"allow\" on a permit (write forbid for deny or alert)",
            ))
        }
    };
    let kill = match p.annotation("response") {
        None | Some("none") => false,
        Some("kill") if verdict == Verdict::Deny => true,
        Some("kill") => {
            return Err((
                "@response(\"kill\")".into(),
                format!("policy {name}: @response(\"kill\") needs a forbid with verdict deny"),
            ))
        }
        Some(v) => return Err(bad("response", v, "\"kill\" or \"none\"")),
    };
    let severity = match p.annotation("severity") {
        None => "medium".to_string(),
        Some(s) if Severity::parse(s).is_some() => s.to_string(),
        Some(v) => return Err(bad("severity", v, "info, low, medium, high or critical")),
    };
    Ok(PolicyMeta {
        name,
        verdict,
        kill,
        severity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CedarSet, String> {
        parse_text(text, Path::new("t.cedar")).map_err(|e| e.to_string())
    }

    #[test]
    fn shipped_schema_parses() {
        let _ = schema();
    }

    #[test]
    fn names_verdicts_and_responses_come_from_annotations() {
        let set = parse(
            r#"
@id("no-shell-from-nginx")
@response("kill")
@severity("high")
forbid (principal in Vardr::Binary::"/usr/sbin/nginx", action == Vardr::Action::"exec", resource)
when { resource.path like "*/sh" };

@verdict("alert")
forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"/etc")
unless { principal.uid == 0 };

permit (principal, action == Vardr::Action::"connect", resource);
"#,
        )
        .unwrap();
        let metas: Vec<_> = set.policies.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(metas[0].name, "no-shell-from-nginx");
        assert!(metas[0].kill);
        assert_eq!(metas[0].severity, "high");
        assert_eq!(metas[1].name, "t.cedar#1");
        assert_eq!(metas[1].verdict, Verdict::Alert);
        assert_eq!(metas[2].verdict, Verdict::Allow);
        assert_eq!(set.policies[2].0.id().to_string(), "t.cedar#2");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("forbid (principal, action, resource)\nwhen { principal.uid == };\n")
            .unwrap_err();
        assert!(e.starts_with("t.cedar:2:"), "{e}");
    }

    #[test]
    fn schema_errors_have_positions() {
        let e = parse(
            "forbid (principal, action == Vardr::Action::\"exec\", resource)\nwhen {\n  principal.nope == 1\n};\n",
        )
        .unwrap_err();
        assert!(e.starts_with("t.cedar:3:3:"), "{e}");
        assert!(e.contains("nope"), "{e}");
        assert!(e.contains("`t.cedar#0`"), "{e}");
        let e = parse("forbid (principal, action == Vardr::Action::\"read\", resource);\n")
            .unwrap_err();
        assert!(e.starts_with("t.cedar:1:"), "{e}");
    }

    #[test]
    fn bad_annotations_are_rejected_where_written() {
        let e = parse("forbid (principal, action, resource);\n\n@verdict(\"maybe\")\nforbid (principal, action, resource);\n").unwrap_err();
        assert!(e.starts_with("t.cedar:3:1: policy t.cedar#1"), "{e}");
        let e = parse("@response(\"kill\")\npermit (principal, action, resource);\n").unwrap_err();
        assert!(e.contains("needs a forbid"), "{e}");
        let e = parse("@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\npermit (principal, action, resource);\n").unwrap_err();
        assert!(e.contains("used twice"), "{e}");
    }
}
