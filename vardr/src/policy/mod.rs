//! vardr policy files (`apiVersion: vardr.dev/v1`, `kind: Policy`): parsing
//! and validation with `file:line:column` errors.
mod path_list;
mod schema;
pub mod tracing;
mod validate;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use ipnet::IpNet;

pub use path_list::PathList;
pub use validate::MAX_PATH_LEN;

pub const API_VERSION: &str = "vardr.dev/v1";
pub const KIND: &str = "Policy";

/// The operation a rule governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// Any open of a file (read or write).
    FileOpen,
    /// Opens with write intent: O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND.
    FileWrite,
    Exec,
    Connect,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::FileOpen => "file_open",
            Hook::FileWrite => "file_write",
            Hook::Exec => "exec",
            Hook::Connect => "connect",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Block in the kernel (with `--enforce`); an `audit` event otherwise.
    Deny,
    /// Report only.
    Alert,
    /// Carve an exception out of a shorter deny/alert match of the same hook.
    Allow,
    /// Report to Layer 2 only (generated for Cedar policies, never written
    /// in YAML): never shadows another rule, and the event says "allow".
    Observe,
}

/// Ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// `info`, `low`, `medium`, `high` or `critical`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub hook: Hook,
    pub action: Action,
    pub severity: Severity,
    /// Exact paths.
    pub paths: PathList,
    /// Directory subtrees, normalized to end with `/`.
    pub prefixes: Vec<String>,
    /// Exec only: binaries matched by path and by file identity.
    pub binaries: PathList,
    pub cidrs: Vec<IpNet>,
    /// Empty: any port.
    pub ports: Vec<u16>,
    pub protocol: Protocol,
    /// Connect only: TLS server names (`evil.example`, `*.example.com`),
    /// matched in the kernel on the ClientHello.
    pub domains: Vec<crate::names::DomainPattern>,
    /// Whether `prefixes` also govern the directory itself (YAML rules do;
    /// rules compiled from Cedar do not: a directory is not `in` itself).
    pub prefix_covers_dir: bool,
    /// Line of the rule in its file.
    pub line: u64,
    /// TracingPolicy `message` and `tags`, carried by the rule's events.
    pub message: Option<String>,
    pub tags: Vec<String>,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub source: PathBuf,
    pub rules: Vec<Rule>,
    pub exempt_pids: Vec<u32>,
    pub exempt_binaries: Vec<String>,
    /// Interpreters (by file identity): what they open is checked against
    /// the exec rules.
    pub interpreters: Vec<String>,
    /// Layer 2 Cedar files (resolved against the policy file's directory).
    pub cedar: Vec<PathBuf>,
    /// Tetragon TracingPolicy files (resolved like `cedar`), compiled with
    /// this policy's rules.
    pub tracing_policies: Vec<PathBuf>,
}

impl Policy {
    /// The files the policy names (Cedar, then TracingPolicies).
    pub fn named_files(&self) -> Vec<PathBuf> {
        self.cedar
            .iter()
            .chain(&self.tracing_policies)
            .cloned()
            .collect()
    }
}

/// One problem in a policy file, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.path, .diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(path: &Path, diags: &[Diagnostic]) -> String {
    struct D<'a>(&'a Path, &'a [Diagnostic]);
    impl fmt::Display for D<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, d) in self.1.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.0.display(),
                    d.line,
                    d.column,
                    d.message
                )?;
            }
            Ok(())
        }
    }
    D(path, diags).to_string()
}

/// Reads and validates a policy file. The YAML is parsed as it is read:
/// a policy of 100 000 paths per kind is a 7.5 MB file, which need not be
/// in memory beside what is parsed from it.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let file = std::fs::File::open(path).map_err(|source| PolicyError::Read {
        path: path.into(),
        source,
    })?;
    let reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let doc: schema::PolicyDoc = serde_saphyr::from_reader_with_options(reader, options())
        .map_err(|e| yaml_error(&e, path))?;
    validate::validate(doc, path).map_err(|diagnostics| PolicyError::Invalid {
        path: path.into(),
        diagnostics,
    })
}

/// Parses and validates policy text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
    let doc: schema::PolicyDoc = parse_yaml(text, path)?;
    validate::validate(doc, path).map_err(|diagnostics| PolicyError::Invalid {
        path: path.into(),
        diagnostics,
    })
}

/// The YAML document of a policy file, with the parser's error at its
/// position.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, PolicyError> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| yaml_error(&e, path))
}

fn yaml_error(e: &serde_saphyr::Error, path: &Path) -> PolicyError {
    let (line, column) = e
        .location()
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    PolicyError::Invalid {
        path: path.into(),
        diagnostics: vec![Diagnostic {
            line,
            column,
            message: first_line(&e.to_string()),
        }],
    }
}

/// The parser's defaults guard against YAML bombs with a budget of 250 000
/// nodes; a policy with hundreds of thousands of paths or networks is
/// legitimate, so the node and event budgets are raised (aliases stay capped).
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 8_000_000;
    budget.max_events = 32_000_000;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o
}

/// serde-saphyr renders a source snippet after the message; keep the message.
/// Without a snippet (parsing from a reader) the message starts with
/// "error: line L column C: ", which the diagnostic says already.
fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or(s).trim();
    let l = l.strip_prefix("error: ").unwrap_or(l);
    let positioned = l.split_once(": ").filter(|(head, _)| {
        head.strip_prefix("line ")
            .and_then(|h| h.split_once(" column "))
            .is_some_and(|(a, b)| {
                a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
            })
    });
    positioned.map_or(l, |(_, rest)| rest).to_string()
}
