//! A selector's process filters on kprobes, tracepoints and uprobes:
//! `matchPIDs`, `matchNamespaces` and `matchCapabilities`, with Tetragon's
//! meaning and limits, evaluated in the kernel (`vardr_gen_process`).
use std::str::FromStr;

use serde_saphyr::Spanned;
use vardr_common::{
    generic::{GEN_MAX_PID_FILTERS, GEN_MAX_SET_VALUES},
    NS_CGROUP, NS_IPC, NS_KINDS, NS_MNT, NS_NET, NS_PID, NS_PID_FOR_CHILDREN, NS_TIME,
    NS_TIME_FOR_CHILDREN, NS_USER, NS_UTS,
};

use super::{
    schema::{
        CapabilitiesSelector, List, NamespaceChangesSelector, NamespaceSelector, PidSelector,
    },
    validate::items,
};
use crate::policy::validate::Diags;

/// Namespace kinds: Tetragon's name, the `NS_*` index, and the name of the
/// `/proc/<pid>/ns/` link that shows it.
pub const NAMESPACES: [(&str, usize, &str); NS_KINDS] = [
    ("Uts", NS_UTS, "uts"),
    ("Ipc", NS_IPC, "ipc"),
    ("Mnt", NS_MNT, "mnt"),
    ("Pid", NS_PID, "pid"),
    ("PidForChildren", NS_PID_FOR_CHILDREN, "pid_for_children"),
    ("Net", NS_NET, "net"),
    ("Time", NS_TIME, "time"),
    ("TimeForChildren", NS_TIME_FOR_CHILDREN, "time_for_children"),
    ("Cgroup", NS_CGROUP, "cgroup"),
    ("User", NS_USER, "user"),
];

/// The lowest inode number a namespace has: the initial namespaces have
/// fixed numbers just below `0xF0000000` (time, cgroup, pid, user, uts,
/// ipc; net and mnt too since 6.18), the others are allocated from
/// `0xF0000000` up.
const LOWEST_NS_INUM: u32 = 0xEFFF_FFF8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFilters {
    pub pids: Vec<PidFilter>,
    pub namespaces: Vec<NsFilter>,
    pub caps: Option<CapsFilter>,
    /// `matchNamespaceChanges`.
    pub ns_changes: Option<NsChanges>,
    /// `matchCapabilityChanges`: as `matchCapabilities`, on the
    /// capabilities the set gained since the process's exec.
    pub caps_changes: Option<CapsFilter>,
}

impl ProcessFilters {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.namespaces.is_empty()
            && self.caps.is_none()
            && self.ns_changes.is_none()
            && self.caps_changes.is_none()
    }
}

/// The `matchNamespaceChanges` entry: `In`, one of the kinds differs from
/// the process's at its exec; `NotIn`, none does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsChanges {
    pub in_: bool,
    /// `NS_*` indexes.
    pub kinds: Vec<usize>,
}

/// One `matchPIDs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidFilter {
    pub in_: bool,
    pub values: Vec<u32>,
    /// `isNamespacePID`: the pid as the process's own pid namespace numbers it.
    pub namespace_pid: bool,
    /// `followForks`: the process or one of its ancestors.
    pub follow_forks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsValue {
    /// `host_ns`: the namespace of the host's init (PID 1), read when the
    /// hook is loaded.
    Host,
    Inum(u32),
}

/// One `matchNamespaces` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsFilter {
    /// `NS_*` index.
    pub kind: usize,
    pub in_: bool,
    pub values: Vec<NsValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapSet {
    Effective,
    Inheritable,
    Permitted,
}

/// The `matchCapabilities` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsFilter {
    pub set: CapSet,
    /// `In`: the set has one of the capabilities; `NotIn`: none of them.
    pub in_: bool,
    pub mask: u64,
    /// `isNamespaceCapability`: holds only outside the host's user namespace.
    pub namespace: bool,
}

/// `In` or `NotIn` (Tetragon accepts no other operator here).
fn set_op(d: &mut Diags, op: &Spanned<String>, filter: &str) -> Option<bool> {
    match op.value.as_str() {
        "In" => Some(true),
        "NotIn" => Some(false),
        other => {
            d.at(op, format!("{filter} operator {other:?}: In or NotIn"));
            None
        }
    }
}

/// A selector's process filters.
pub(super) struct Lists<'a> {
    pub pids: &'a List<PidSelector>,
    pub namespaces: &'a List<NamespaceSelector>,
    pub caps: &'a List<CapabilitiesSelector>,
    pub ns_changes: &'a List<NamespaceChangesSelector>,
    pub caps_changes: &'a List<CapabilitiesSelector>,
}

pub(super) fn parse(d: &mut Diags, l: Lists<'_>) -> ProcessFilters {
    let Lists {
        pids,
        namespaces,
        caps,
        ns_changes,
        caps_changes,
    } = l;
    let mut pid_filters = Vec::new();
    for (i, p) in items(pids).enumerate() {
        if i == GEN_MAX_PID_FILTERS {
            d.at(
                p,
                format!(
                    "more than {GEN_MAX_PID_FILTERS} matchPIDs entries in a selector: {}",
                    super::NOT_YET
                ),
            );
            break;
        }
        pid_filters.extend(pid_filter(d, p));
    }
    ProcessFilters {
        pids: pid_filters,
        namespaces: namespace_filters(d, namespaces),
        caps: caps_filter(d, caps, "matchCapabilities"),
        ns_changes: namespace_changes(d, ns_changes),
        caps_changes: caps_filter(d, caps_changes, "matchCapabilityChanges"),
    }
}

fn namespace_changes(d: &mut Diags, list: &List<NamespaceChangesSelector>) -> Option<NsChanges> {
    let entries: Vec<_> = items(list).collect();
    if let Some(extra) = entries.get(1) {
        d.at(
            *extra,
            "more than one matchNamespaceChanges entry in a selector: list the namespaces in one",
        );
        return None;
    }
    let e = entries.first()?;
    let in_ = match e.value.operator.as_str() {
        "In" => true,
        "NotIn" => false,
        other => {
            d.at(
                *e,
                format!("matchNamespaceChanges operator {other:?}: In or NotIn"),
            );
            return None;
        }
    };
    if e.value.values.is_empty() {
        d.at(*e, "matchNamespaceChanges needs at least one namespace");
        return None;
    }
    let mut kinds = Vec::new();
    for v in &e.value.values {
        let Some(&(_, kind, _)) = NAMESPACES.iter().find(|(n, _, _)| n == v) else {
            let names: Vec<&str> = NAMESPACES.iter().map(|(n, _, _)| *n).collect();
            d.at(
                *e,
                format!(
                    "matchNamespaceChanges value {v:?}: one of {}",
                    names.join(", ")
                ),
            );
            return None;
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Some(NsChanges { in_, kinds })
}

fn pid_filter(d: &mut Diags, p: &Spanned<PidSelector>) -> Option<PidFilter> {
    let spec = &p.value;
    let in_ = set_op(d, &spec.operator, "matchPIDs")?;
    let values = &spec.values.value;
    if values.is_empty() || values.len() > GEN_MAX_SET_VALUES {
        d.at(
            &spec.values,
            format!(
                "matchPIDs needs 1 to {GEN_MAX_SET_VALUES} values (Tetragon's limit), not {}",
                values.len()
            ),
        );
        return None;
    }
    Some(PidFilter {
        in_,
        values: values.clone(),
        namespace_pid: spec.is_namespace_pid.unwrap_or(false),
        follow_forks: spec.follow_forks.unwrap_or(false),
    })
}

fn namespace_filters(d: &mut Diags, list: &List<NamespaceSelector>) -> Vec<NsFilter> {
    let mut out: Vec<NsFilter> = Vec::new();
    for e in items(list) {
        let spec = &e.value;
        let name = spec.namespace.value.as_str();
        let Some(&(_, kind, _)) = NAMESPACES.iter().find(|(n, _, _)| *n == name) else {
            let names: Vec<&str> = NAMESPACES.iter().map(|(n, _, _)| *n).collect();
            d.at(
                &spec.namespace,
                format!(
                    "matchNamespaces namespace {name:?}: one of {}",
                    names.join(", ")
                ),
            );
            continue;
        };
        if out.iter().any(|f| f.kind == kind) {
            d.at(
                &spec.namespace,
                format!("matchNamespaces names {name} twice in one selector: list its values in one entry"),
            );
            continue;
        }
        let Some(in_) = set_op(d, &spec.operator, "matchNamespaces") else {
            continue;
        };
        let values: Vec<&Spanned<String>> = items(&spec.values).collect();
        if values.is_empty() || values.len() > GEN_MAX_SET_VALUES {
            d.at(
                &spec.namespace,
                format!(
                    "matchNamespaces {name} needs 1 to {GEN_MAX_SET_VALUES} values (Tetragon's limit), not {}",
                    values.len()
                ),
            );
            continue;
        }
        let mut parsed = Vec::new();
        for v in values {
            match ns_value(&v.value) {
                Ok(x) => parsed.push(x),
                Err(why) => d.at(
                    v,
                    format!("matchNamespaces {name} value {:?}: {why}", v.value),
                ),
            }
        }
        if parsed.len() == items(&spec.values).count() {
            out.push(NsFilter {
                kind,
                in_,
                values: parsed,
            });
        }
    }
    out
}

/// `host_ns` or a namespace's inode number. A small number is refused: it
/// is no namespace's (they are 4026531832 and up), so the entry would
/// never (In) or always (NotIn) hold, which is not what anyone means.
fn ns_value(v: &str) -> Result<NsValue, String> {
    if v == "host_ns" {
        return Ok(NsValue::Host);
    }
    let n: u32 = v.trim().parse().map_err(|_| {
        "an inode number (see `lsns` or `readlink /proc/PID/ns/KIND`) or host_ns".to_string()
    })?;
    if n < LOWEST_NS_INUM {
        return Err(format!(
            "no namespace has this inode number (they are {LOWEST_NS_INUM} and up); for the host's namespace write host_ns"
        ));
    }
    Ok(NsValue::Inum(n))
}

/// `matchCapabilities` or `matchCapabilityChanges` (`field`).
fn caps_filter(
    d: &mut Diags,
    list: &List<CapabilitiesSelector>,
    field: &str,
) -> Option<CapsFilter> {
    let entries: Vec<_> = items(list).collect();
    if let Some(extra) = entries.get(1) {
        d.at(
            *extra,
            format!(
                "more than one {field} entry in a selector: Tetragon allows one type per selector"
            ),
        );
        return None;
    }
    let spec = &entries.first()?.value;
    let set = match spec.type_.as_ref().map(|t| t.value.as_str()) {
        None | Some("Effective") => CapSet::Effective,
        Some("Inheritable") => CapSet::Inheritable,
        Some("Permitted") => CapSet::Permitted,
        Some(other) => {
            let at = spec.type_.as_ref().map_or(&spec.operator, |t| t);
            d.at(
                at,
                format!("{field} type {other:?}: Effective, Inheritable or Permitted"),
            );
            return None;
        }
    };
    let in_ = set_op(d, &spec.operator, field)?;
    let values: Vec<&Spanned<String>> = items(&spec.values).collect();
    if values.is_empty() {
        d.at(&spec.operator, format!("{field} needs at least one value"));
        return None;
    }
    let mut mask = 0u64;
    for v in values {
        match caps::Capability::from_str(v.value.trim()) {
            Ok(c) => mask |= c.bitmask(),
            Err(_) => {
                d.at(
                    v,
                    format!(
                        "{field} value {:?}: not a capability (CAP_CHOWN, CAP_SYS_ADMIN, ...)",
                        v.value
                    ),
                );
                return None;
            }
        }
    }
    Some(CapsFilter {
        set,
        in_,
        mask,
        namespace: spec.is_namespace_capability.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_values_are_inodes_or_host_ns() {
        assert_eq!(ns_value("host_ns"), Ok(NsValue::Host));
        assert_eq!(ns_value("4026531836"), Ok(NsValue::Inum(4_026_531_836)));
        // The seed's `Pid NotIn ["1"]`: no namespace is inode 1.
        let err = ns_value("1").unwrap_err();
        assert!(err.contains("host_ns"), "{err}");
        assert!(ns_value("pid:[4026531836]").is_err());
    }

    #[test]
    fn capability_names_are_bits() {
        let c = caps::Capability::from_str("CAP_SYS_ADMIN").unwrap();
        assert_eq!(c.bitmask(), 1 << 21);
        assert!(caps::Capability::from_str("CAP_NOPE").is_err());
    }
}
