//! Tetragon TracingPolicy files (`apiVersion: cilium.io/v1alpha1`): parsed
//! with Tetragon's whole schema, checked against what vardr can run, and
//! translated to native [`Rule`]s. Whatever vardr cannot run with
//! Tetragon's meaning is rejected with a `file:line:column` diagnostic
//! naming it; nothing is dropped silently. See [`FEATURES`].
mod actions;
pub mod generic;
mod lists;
mod matchargs;
mod overlap;
pub mod process_filters;
mod schema;
pub mod sock_ops;
mod support;
mod translate;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hooks;
#[cfg(test)]
mod tests_unsupported;

use std::path::{Path, PathBuf};

pub use support::{markdown_table, Feature, Support, FEATURES};

use super::{PolicyError, Rule};

pub const API_VERSION: &str = "cilium.io/v1alpha1";
pub const KIND: &str = "TracingPolicy";
pub const KIND_NAMESPACED: &str = "TracingPolicyNamespaced";
/// How every rejected feature is described.
const NOT_YET: &str = "not yet supported by vardr";

/// A validated TracingPolicy, as native rules.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingPolicy {
    pub name: String,
    /// `metadata.namespace` of a `TracingPolicyNamespaced`: its hooks
    /// govern that namespace's pods only.
    pub namespace: Option<String>,
    pub source: PathBuf,
    /// One per selector, named `<policy>.<hook>.<lsmhooks index>.<selector
    /// index>`, severity medium, `line` the selector's.
    pub rules: Vec<Rule>,
    /// Its `kprobes` and `tracepoints`, which run as hooks of their own.
    pub hooks: Vec<generic::GenericHook>,
}

/// Reads and validates a TracingPolicy file.
pub fn load(path: &Path) -> Result<TracingPolicy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates TracingPolicy text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<TracingPolicy, PolicyError> {
    let doc: schema::TracingPolicyDoc = super::parse_yaml(text, path)?;
    validate::validate(doc, path).map_err(|diagnostics| PolicyError::Invalid {
        path: path.into(),
        diagnostics,
    })
}

/// Whether `text` looks like a Tetragon policy rather than a vardr one, from
/// its top-level `apiVersion` and `kind` lines, without parsing it: either a
/// `cilium.io/` apiVersion or a TracingPolicy kind is enough, so that a
/// mistake in the other is reported by the TracingPolicy parser.
pub fn is_tracing_policy(text: &str) -> bool {
    let content = |l: &&str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && !t.starts_with("---")
    };
    // Top-level keys are indented as the first one (a whole document may be).
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(top) = text.lines().find(content).map(indent) else {
        return false;
    };
    text.lines().filter(content).any(|line| {
        if indent(line) != top {
            return false;
        }
        let Some((key, value)) = line.trim_start().split_once(':') else {
            return false;
        };
        // Drop a trailing comment and quotes.
        let value = value.split(" #").next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        match key {
            "apiVersion" => value.starts_with("cilium.io/"),
            "kind" => value == KIND || value == KIND_NAMESPACED,
            _ => false,
        }
    })
}
