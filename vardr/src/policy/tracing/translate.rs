//! One `lsmhooks` entry to native rules: one rule per selector.
use serde_saphyr::Spanned;

use super::{
    actions, matchargs,
    schema::{Arg, List, LsmHookSpec, Selector},
    validate::{items, non_empty, set},
    NOT_YET,
};
use crate::policy::{validate::Diags, Diagnostic, Hook, Rule, Severity};

/// Tetragon's limits (docs "Selectors", "Limitations"; `MAX_SELECTORS` and
/// `MAX_ACTIONS` in its BPF code), kept so that a policy vardr accepts
/// also loads in Tetragon.
pub(super) const MAX_SELECTORS: usize = 5;
pub(super) const MAX_MATCH_ARGS: usize = 5;
pub(super) const MAX_ACTIONS: usize = 3;

/// The LSM hooks vardr can run, and what each becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    FileOpen,
    Exec,
    Connect,
}

impl Kind {
    pub(super) const ALL: [Kind; 3] = [Kind::FileOpen, Kind::Exec, Kind::Connect];

    /// Tetragon's name: the LSM hook without `security_`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::FileOpen => "file_open",
            Kind::Exec => "bprm_check_security",
            Kind::Connect => "socket_connect",
        }
    }

    pub(super) fn hook(self) -> Hook {
        match self {
            Kind::FileOpen => Hook::FileOpen,
            Kind::Exec => Hook::Exec,
            Kind::Connect => Hook::Connect,
        }
    }

    /// The arguments vardr reads, as (index, Tetragon type): the kernel's
    /// `file_open(struct file *)`, `bprm_check_security(struct linux_binprm
    /// *)` and `socket_connect(struct socket *, struct sockaddr *, int)`.
    pub(super) fn args(self) -> &'static [(u32, &'static str)] {
        match self {
            Kind::FileOpen => &[(0, "file")],
            Kind::Exec => &[(0, "linux_binprm")],
            Kind::Connect => &[(0, "socket"), (1, "sockaddr")],
        }
    }
}

/// A rule and where it came from, for the overlap check.
pub(super) struct Translated {
    pub rule: Rule,
    /// Index in `lsmhooks`.
    pub hook_spec: usize,
    pub selector: usize,
    pub pos: Pos,
}

pub(super) fn lsm_hook(
    d: &mut Diags,
    policy: &str,
    i: usize,
    h: &Spanned<LsmHookSpec>,
    out: &mut Vec<Translated>,
) {
    let spec = &h.value;
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == spec.hook.value) else {
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        d.at(
            &spec.hook,
            format!(
                "lsmhooks hook {:?}: {NOT_YET} (supported: {})",
                spec.hook.value,
                names.join(", ")
            ),
        );
        return;
    };
    let message = set(&spec.message).and_then(|m| message(d, m));
    let tags = non_empty(&spec.tags)
        .map(|t| tags(d, t))
        .unwrap_or_default();
    let declared = args(d, kind, &spec.args);
    let selectors: Vec<_> = items(&spec.selectors).collect();
    if selectors.is_empty() {
        d.at(
            &spec.hook,
            format!("hook {} has no selectors: it would report every call; {NOT_YET} (add a selector with matchArgs)", kind.name()),
        );
    }
    for (j, s) in selectors.into_iter().enumerate() {
        if j == MAX_SELECTORS {
            d.at(
                s,
                format!("more than {MAX_SELECTORS} selectors: Tetragon allows at most {MAX_SELECTORS} per hook"),
            );
        }
        if let Some(mut rule) = selector(d, kind, &declared, s, rule_name(policy, kind, i, j)) {
            rule.message.clone_from(&message);
            rule.tags.clone_from(&tags);
            out.push(Translated {
                rule,
                hook_spec: i,
                selector: j,
                pos: pos(s),
            });
        }
    }
}

/// Tetragon's bounds on a hook's `message` and `tags`: a message of at
/// least 2 characters, cut to 256; at most 16 tags of at least 2
/// characters, each cut to 128.
const MESSAGE_LEN: (usize, usize) = (2, 256);
const MAX_TAGS: usize = 16;
const TAG_LEN: (usize, usize) = (2, 128);

/// The message events carry (cut as Tetragon cuts it, with a warning).
fn message(d: &mut Diags, m: &Spanned<String>) -> Option<String> {
    let text = m.value.as_str();
    if text.chars().count() < MESSAGE_LEN.0 {
        d.at(
            m,
            format!(
                "message {text:?} is too short: Tetragon needs at least {} characters",
                MESSAGE_LEN.0
            ),
        );
        return None;
    }
    Some(cut(text, MESSAGE_LEN.1, "message"))
}

fn tags(d: &mut Diags, t: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
    if t.value.len() > MAX_TAGS {
        d.at(
            t,
            format!("{} tags: Tetragon allows at most {MAX_TAGS}", t.value.len()),
        );
        return Vec::new();
    }
    t.value
        .iter()
        .filter_map(|tag| {
            if tag.value.chars().count() < TAG_LEN.0 {
                d.at(
                    tag,
                    format!(
                        "tag {:?} is too short: Tetragon needs at least {} characters",
                        tag.value, TAG_LEN.0
                    ),
                );
                return None;
            }
            Some(cut(&tag.value, TAG_LEN.1, "tag"))
        })
        .collect()
}

/// `text` cut to `max` characters; a cut is logged (Tetragon warns too).
fn cut(text: &str, max: usize, what: &str) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => {
            tracing::warn!("TracingPolicy {what} longer than {max} characters: cut to {max}");
            text[..end].to_string()
        }
        None => text.to_string(),
    }
}

/// A kprobe's or tracepoint's `message` and `tags` (their `message` is a
/// plain string: its errors point at the hook).
pub(super) fn message_and_tags(
    d: &mut Diags,
    anchor: &Spanned<String>,
    m: Option<&str>,
    t: &List<String>,
) -> (Option<String>, Vec<String>) {
    let message = m.filter(|m| !m.is_empty()).and_then(|text| {
        let spanned = Spanned {
            value: text.to_string(),
            referenced: anchor.referenced,
            defined: anchor.defined,
        };
        message(d, &spanned)
    });
    let tags = non_empty(t).map(|t| tags(d, t)).unwrap_or_default();
    (message, tags)
}

/// `<policy>.<hook>.<lsmhooks index>.<selector index>`: unique within the
/// policy, and valid as a native rule name (other characters become `_`).
fn rule_name(policy: &str, kind: Kind, i: usize, j: usize) -> String {
    format!("{}.{}.{i}.{j}", safe_name(policy), kind.name())
}

/// A policy name as a rule name's first part (other characters become `_`).
pub(super) fn safe_name(policy: &str) -> String {
    policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks `args` against what vardr reads for the hook; returns the
/// declared indices (Tetragon's `matchArgs` may only name those).
fn args(d: &mut Diags, kind: Kind, args: &List<Arg>) -> Vec<u32> {
    let mut declared = Vec::new();
    for a in items(args) {
        let a = &a.value;
        let idx = a.index.value;
        let Some(&(_, ty)) = kind.args().iter().find(|(i, _)| *i == idx) else {
            let reads: Vec<_> = kind
                .args()
                .iter()
                .map(|(i, t)| format!("index {i} ({t})"))
                .collect();
            d.at(
                &a.index,
                format!(
                    "args index {idx}: {NOT_YET} for hook {} (it reads {})",
                    kind.name(),
                    reads.join(", ")
                ),
            );
            continue;
        };
        match &a.type_ {
            Some(t) if t.value == ty => {}
            Some(t) => d.at(
                t,
                format!(
                    "args index {idx}: type {:?} is not supported for hook {}: expected {ty:?}",
                    t.value,
                    kind.name()
                ),
            ),
            None => d.at(
                &a.index,
                format!(
                    "args index {idx}: type missing: vardr expects {ty:?} for hook {}",
                    kind.name()
                ),
            ),
        }
        let extra = |f: &str| format!("args index {idx}: {f}: {NOT_YET}");
        for (field, v) in [
            ("resolve", set(&a.resolve)),
            ("label", set(&a.label)),
            ("source", set(&a.source)),
            ("btfType", set(&a.btf_type)),
            ("btfTypeModule", set(&a.btf_type_module)),
        ] {
            if let Some(v) = v {
                d.at(v, extra(field));
            }
        }
        if let Some(v) = set(&a.size_arg_index) {
            d.at(v, extra("sizeArgIndex"));
        }
        for (field, v) in [
            ("returnCopy", set(&a.return_copy)),
            ("maxData", set(&a.max_data)),
        ] {
            if let Some(v) = v {
                d.at(v, extra(field));
            }
        }
        if !declared.contains(&idx) {
            declared.push(idx);
        }
    }
    declared
}

fn selector(
    d: &mut Diags,
    kind: Kind,
    declared: &[u32],
    s: &Spanned<Selector>,
    name: String,
) -> Option<Rule> {
    let before = d.0.len();
    let sel = &s.value;
    let process = [
        ("matchPIDs", non_empty(&sel.match_pids).map(pos)),
        ("matchBinaries", non_empty(&sel.match_binaries).map(pos)),
        (
            "matchParentBinaries",
            non_empty(&sel.match_parent_binaries).map(pos),
        ),
        ("matchNamespaces", non_empty(&sel.match_namespaces).map(pos)),
        (
            "matchNamespaceChanges",
            non_empty(&sel.match_namespace_changes).map(pos),
        ),
        (
            "matchCapabilities",
            non_empty(&sel.match_capabilities).map(pos),
        ),
        (
            "matchCapabilityChanges",
            non_empty(&sel.match_capability_changes).map(pos),
        ),
        ("matchWorkloads", sel.match_workloads.as_ref().map(pos)),
    ];
    for (field, p) in process {
        if let Some(p) = p {
            let why = "(native rules have no process selectors)";
            at(d, p, format!("{field}: {NOT_YET} {why}"));
        }
    }
    let other = [
        ("matchData", non_empty(&sel.match_data).map(pos)),
        (
            "matchReturnArgs",
            non_empty(&sel.match_return_args).map(pos),
        ),
        (
            "matchReturnActions",
            non_empty(&sel.match_return_actions).map(pos),
        ),
        ("macros", non_empty(&sel.macros).map(pos)),
        ("label", set(&sel.label).map(pos)),
    ];
    for (field, p) in other {
        if let Some(p) = p {
            at(d, p, format!("{field}: {NOT_YET}"));
        }
    }
    let action = actions::action(d, &sel.match_actions);
    let filters: Vec<_> = items(&sel.match_args).collect();
    if filters.is_empty() {
        d.at(
            s,
            format!(
                "selector without matchArgs matches every {} call: {NOT_YET}",
                kind.name()
            ),
        );
    }
    if let Some(f) = filters.get(MAX_MATCH_ARGS) {
        d.at(*f, format!("more than {MAX_MATCH_ARGS} matchArgs: Tetragon allows at most {MAX_MATCH_ARGS} per selector"));
    }
    let m = matchargs::translate(d, kind, declared, &filters);
    if d.0.len() != before {
        return None;
    }
    Some(Rule {
        name,
        hook: kind.hook(),
        action: action?,
        severity: Severity::Medium,
        paths: m.paths.iter().collect(),
        prefixes: m.prefixes,
        binaries: m.binaries.iter().collect(),
        cidrs: m.cidrs,
        ports: m.ports,
        protocol: m.protocol,
        // Tetragon's Prefix is a string prefix: "/etc/" does not match "/etc".
        domains: Vec::new(),
        prefix_covers_dir: false,
        line: s.referenced.line(),
        message: None,
        tags: Vec::new(),
    })
}

/// A position, for fields of different types in one list.
#[derive(Clone, Copy)]
pub(super) struct Pos(u64, u64);

pub(super) fn pos<T>(s: &Spanned<T>) -> Pos {
    Pos(s.referenced.line().max(1), s.referenced.column().max(1))
}

pub(super) fn at(d: &mut Diags, p: Pos, message: String) {
    d.0.push(Diagnostic {
        line: p.0,
        column: p.1,
        message,
    });
}
