//! The YAML shape, as written by users (positions kept for errors).
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A value and the line and column where the document names it: what a
/// diagnostic needs. serde-saphyr's `Spanned` keeps two full locations
/// (88 bytes for a string); a policy with 100 000 paths per kind keeps
/// 300 000 of these while it compiles.
#[derive(Debug, Clone, Default)]
pub struct At<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<T>::deserialize(d)?;
        // Positions past 4 G lines or columns saturate (no policy has them).
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Self {
            line: narrow(s.referenced.line()),
            column: narrow(s.referenced.column()),
            value: s.value,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDoc {
    pub api_version: At<String>,
    pub kind: At<String>,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: At<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub exempt_pids: Vec<At<u32>>,
    #[serde(default)]
    pub exempt_binaries: Vec<At<String>>,
    /// Programs that run scripts: their opens of a file are checked against
    /// the exec rules, as an exec of that file.
    #[serde(default)]
    pub interpreters: Vec<At<String>>,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Layer 2 Cedar files, relative to this file.
    #[serde(default)]
    pub cedar: Vec<At<String>>,
    /// Tetragon TracingPolicy files, relative to this file.
    #[serde(default)]
    pub tracing_policies: Vec<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub name: At<String>,
    pub hook: At<String>,
    pub action: At<String>,
    #[serde(default)]
    pub severity: Option<At<String>>,
    #[serde(rename = "match")]
    pub matches: At<MatchDoc>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    #[serde(default)]
    pub paths: super::path_list::PathListDoc,
    #[serde(default)]
    pub prefixes: Vec<At<String>>,
    #[serde(default)]
    pub binaries: super::path_list::PathListDoc,
    #[serde(default)]
    pub cidrs: Vec<At<String>>,
    #[serde(default)]
    pub ports: Vec<At<u32>>,
    #[serde(default)]
    pub protocol: Option<At<String>>,
    /// Connect rules: TLS server names, exact or `*.suffix`.
    #[serde(default)]
    pub domains: Vec<At<String>>,
}
