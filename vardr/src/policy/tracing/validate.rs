//! The document as a whole: apiVersion, kind, metadata and every `spec`
//! section. Sections vardr does not run are rejected one by one, so one run
//! lists everything a policy would need that vardr lacks.
use std::path::Path;

use serde_saphyr::Spanned;

use super::{
    generic, lists, overlap,
    schema::{List, Opt, OptionSpec, Spec, TracingPolicyDoc},
    translate, TracingPolicy, API_VERSION, KIND, KIND_NAMESPACED, NOT_YET,
};
use crate::policy::{validate::Diags, Action, Diagnostic};

pub(super) fn validate(
    doc: TracingPolicyDoc,
    path: &Path,
) -> Result<TracingPolicy, Vec<Diagnostic>> {
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
    let kind = doc.kind.value.as_str();
    let namespaced = kind == KIND_NAMESPACED;
    if !namespaced && kind != KIND {
        d.at(
            &doc.kind,
            format!("kind must be {KIND} or {KIND_NAMESPACED}, not {kind:?}"),
        );
    }
    let name = doc.metadata.name.value.clone();
    if name.trim().is_empty() {
        d.at(&doc.metadata.name, "metadata.name must not be empty");
    }
    let namespace = doc.metadata.namespace.as_ref().map(|n| n.value.clone());
    if namespaced {
        // Only the calls of that namespace's pods count (see hooks/pods.rs).
        match &doc.metadata.namespace {
            None => d.at(
                &doc.kind,
                format!("a {KIND_NAMESPACED} needs metadata.namespace: the Kubernetes namespace whose pods it governs"),
            ),
            Some(ns) if !is_dns_label(&ns.value) => d.at(
                ns,
                format!(
                    "metadata.namespace {:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)",
                    ns.value
                ),
            ),
            Some(_) => {}
        }
    }
    if let (Some(ns), KIND) = (&doc.metadata.namespace, kind) {
        // Kubernetes drops it for a cluster-wide object; say so instead.
        d.at(
            ns,
            format!("metadata.namespace: a {KIND} is cluster-wide and has no namespace"),
        );
    }
    let spec = &doc.spec.value;
    let before = d.0.len();
    unsupported_sections(&mut d, spec);
    let other_sections = d.0.len() != before;
    let monitor = policy_mode(&mut d, &spec.options);

    let mut rules = Vec::new();
    let mut hooks = Vec::new();
    for (i, hook) in items(&spec.lsmhooks).enumerate() {
        // As native rules where they say it all (those run on every
        // backend); otherwise as a BPF LSM hook of its own, which has the
        // kprobes' selectors and actions but needs the BPF LSM. A
        // namespaced policy's always are: native rules govern every pod.
        let mut native = Diags(Vec::new());
        let mut translated = Vec::new();
        translate::lsm_hook(&mut native, &name, i, hook, &mut translated);
        if namespaced && native.0.is_empty() {
            native.at(&hook.value.hook, format!("a {KIND_NAMESPACED}'s hook"));
        }
        if native.0.is_empty() {
            rules.extend(translated);
        } else {
            let before = d.0.len();
            let h = generic::lsm(&mut d, &name, i, hook, monitor);
            if let (Some(h), Some(why)) = (&h, native.0.first()) {
                // Said, because the two differ: native rules match files
                // by identity on every backend; a hook of its own needs the
                // BPF LSM and compares path strings, as kprobes do.
                tracing::info!(
                    "TracingPolicy {name}: lsmhooks[{i}] ({}) runs as a BPF LSM hook of its own, not as native rules ({}): paths are compared as strings and the BPF LSM is needed",
                    h.point.target(),
                    why.message
                );
            }
            debug_assert!(h.is_some() || d.0.len() > before);
            hooks.extend(h);
        }
    }
    let defined: Vec<String> = items(&spec.lists)
        .map(|l| l.value.name.value.clone())
        .collect();
    let lists = lists::lists(&mut d, &spec.lists);
    for (i, k) in items(&spec.kprobes).enumerate() {
        match lists::calls(&mut d, &lists, &defined, &k.value.call) {
            None => {}
            Some(None) => hooks.extend(generic::kprobe(&mut d, &name, i, k, monitor, None)),
            // One hook per function, all under the entry's name; what is
            // wrong with the entry is wrong for each: said once.
            Some(Some(list)) => {
                for call in &list.calls {
                    match generic::kprobe(&mut d, &name, i, k, monitor, Some((call, list.syscall)))
                    {
                        Some(h) => hooks.push(h),
                        None => break,
                    }
                }
            }
        }
    }
    for (i, t) in items(&spec.tracepoints).enumerate() {
        hooks.extend(generic::tracepoint(&mut d, &name, i, t, monitor));
    }
    for (i, u) in items(&spec.uprobes).enumerate() {
        hooks.extend(generic::uprobe(&mut d, &name, i, u, monitor));
    }
    let hooks_declared = items(&spec.kprobes).next().is_some()
        || items(&spec.tracepoints).next().is_some()
        || items(&spec.uprobes).next().is_some();
    if items(&spec.lsmhooks).next().is_none() && !hooks_declared && !other_sections {
        d.at(
            &doc.spec,
            "spec has no lsmhooks, kprobes, tracepoints or uprobes: the policy would do nothing in vardr",
        );
    }
    if monitor {
        // Tetragon's monitor mode elides Override and Sigkill and still
        // posts the event: an alert.
        for r in &mut rules {
            r.rule.action = Action::Alert;
        }
    }
    if namespaced {
        for h in &mut hooks {
            h.namespace = namespace.clone();
        }
    }
    overlap::check(&mut d, &rules);
    if d.0.is_empty() {
        Ok(TracingPolicy {
            name,
            namespace,
            source: path.into(),
            rules: rules.into_iter().map(|r| r.rule).collect(),
            hooks,
        })
    } else {
        d.0.sort_by_key(|x| (x.line, x.column));
        d.0.dedup();
        Err(d.0)
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The entries of a list field (absent, `null` and `[]` alike).
pub(super) fn items<T>(l: &List<T>) -> impl Iterator<Item = &Spanned<T>> {
    l.iter().flat_map(|v| v.value.iter())
}

/// A list field that has entries, for rejecting it.
pub(super) fn non_empty<T>(l: &List<T>) -> Option<&Spanned<Vec<Spanned<T>>>> {
    l.as_ref().filter(|v| !v.value.is_empty())
}

/// A field set to something other than Tetragon's default, which therefore
/// changes behaviour and must be supported to be accepted.
pub(super) fn set<T: Default + PartialEq>(o: &Opt<T>) -> Option<&Spanned<T>> {
    o.as_ref().filter(|v| v.value != T::default())
}

fn unsupported_sections(d: &mut Diags, s: &Spec) {
    let why = "use kprobes for the same function";
    for k in items(&s.fentries) {
        let call = &k.value.call;
        d.at(
            call,
            format!("fentries (call {:?}): {NOT_YET}: {why}", call.value),
        );
    }
    for u in items(&s.usdts) {
        let p = &u.value.path;
        d.at(p, format!("usdts (path {:?}): {NOT_YET}", p.value));
    }
    if let Some(l) = set(&s.loader) {
        d.at(l, format!("loader: {NOT_YET} (no loader events)"));
    }
    let workloads =
        "(it has no Kubernetes workload filtering: the rules would apply to every process)";
    for (field, sel) in [
        ("podSelector", &s.pod_selector),
        ("containerSelector", &s.container_selector),
        ("hostSelector", &s.host_selector),
        ("nodeSelector", &s.node_selector),
    ] {
        if let Some(sel) = sel {
            d.at(sel, format!("{field}: {NOT_YET} {workloads}"));
        }
    }
    if let Some(e) = non_empty(&s.enforcers) {
        d.at(e, format!("enforcers: {NOT_YET}"));
    }
    if let Some(m) = s.selectors_macros.as_ref().filter(|m| !m.value.is_empty()) {
        d.at(m, format!("selectorsMacros: {NOT_YET}"));
    }
}

/// `policy-mode` is the one option vardr understands; true for `monitor`.
fn policy_mode(d: &mut Diags, options: &List<OptionSpec>) -> bool {
    let mut monitor = false;
    for o in items(options) {
        let (name, value) = (&o.value.name, &o.value.value);
        if name.value != "policy-mode" {
            d.at(name, format!("options: option {:?}: {NOT_YET}", name.value));
            continue;
        }
        match value.as_ref().map(|v| (v, v.value.as_str())) {
            Some((_, "enforce")) => monitor = false,
            Some((_, "monitor")) => monitor = true,
            Some((v, other)) => d.at(
                v,
                format!("policy-mode must be enforce or monitor, not {other:?}"),
            ),
            None => d.at(name, "policy-mode needs a value: enforce or monitor"),
        }
    }
    monitor
}
