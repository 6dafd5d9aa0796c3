//! The YAML shape, as written by users (positions kept for errors).
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDoc {
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub exempt_pids: Vec<Spanned<u32>>,
    #[serde(default)]
    pub exempt_binaries: Vec<Spanned<String>>,
    /// Programs that run scripts: their opens of a file are checked against
    /// the exec rules, as an exec of that file.
    #[serde(default)]
    pub interpreters: Vec<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Layer 2 Cedar files, relative to this file.
    #[serde(default)]
    pub cedar: Vec<Spanned<String>>,
    /// Tetragon TracingPolicy files, relative to this file.
    #[serde(default)]
    pub tracing_policies: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub name: Spanned<String>,
    pub hook: Spanned<String>,
    pub action: Spanned<String>,
    #[serde(default)]
    pub severity: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Spanned<MatchDoc>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    pub binaries: Vec<Spanned<String>>,
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub ports: Vec<Spanned<u32>>,
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// Connect rules: TLS server names, exact or `*.suffix`.
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
}
