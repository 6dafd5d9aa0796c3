//! A selector's process filters (`matchPIDs`, `matchNamespaces`,
//! `matchCapabilities`) into its [`GenSelector`], with `host_ns` resolved
//! to the inode number of the host's (the initial) namespace.
use std::path::{Path, PathBuf};

use vardr_common::{
    generic::{
        GenSelector, GEN_CAPS_EFFECTIVE, GEN_CAPS_INHERITABLE, GEN_CAPS_PERMITTED, GEN_PID_FOLLOW,
        GEN_PID_NAMESPACE, GEN_PROC_CAPS, GEN_PROC_CAPS_CHANGES, GEN_PROC_NAMESPACES,
        GEN_PROC_NS_CHANGES, GEN_PROC_PIDS, GEN_SET_IN, GEN_SET_NOT_IN,
    },
    NS_CGROUP, NS_IPC, NS_MNT, NS_NET, NS_PID, NS_PID_FOR_CHILDREN, NS_TIME, NS_TIME_FOR_CHILDREN,
    NS_USER, NS_UTS,
};

use crate::policy::tracing::process_filters::{
    CapSet, CapsFilter, NsValue, ProcessFilters, NAMESPACES,
};

/// Where the kernel's initial namespaces are: fixed inode numbers
/// (`include/uapi/linux/nsfs.h`), for net and mnt only since 6.18.
fn initial_inum(kind: usize, fixed_mnt_net: bool) -> Option<u32> {
    Some(match kind {
        NS_IPC => 0xEFFF_FFFF,
        NS_UTS => 0xEFFF_FFFE,
        NS_USER => 0xEFFF_FFFD,
        NS_PID | NS_PID_FOR_CHILDREN => 0xEFFF_FFFC,
        NS_CGROUP => 0xEFFF_FFFB,
        NS_TIME | NS_TIME_FOR_CHILDREN => 0xEFFF_FFFA,
        NS_NET if fixed_mnt_net => 0xEFFF_FFF9,
        NS_MNT if fixed_mnt_net => 0xEFFF_FFF8,
        _ => return None,
    })
}

/// Resolves `host_ns` and checks that the kernel has a namespace kind.
pub struct HostNamespaces {
    proc: PathBuf,
    fixed_mnt_net: bool,
    /// The offsets the hooks read namespaces with (`None` in tests).
    offsets: Option<vardr_common::KernelOffsets>,
}

impl HostNamespaces {
    pub fn system() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            fixed_mnt_net: crate::kernel::btf::kernel_at_least(6, 18),
            offsets: crate::kernel::btf::kernel_offsets().ok(),
        }
    }

    /// Whether the kernel has namespaces of `kind`: the agent's own link
    /// exists.
    fn check_kind(&self, kind: usize) -> Result<(), String> {
        let link = NAMESPACES[kind].2;
        let own = self.proc.join("self/ns").join(link);
        if std::fs::symlink_metadata(&own).is_err() {
            return Err(format!(
                "this kernel has no {link} namespaces ({} is missing)",
                own.display()
            ));
        }
        // The hooks read the namespace through offsets from the kernel's
        // BTF: without them every task would look namespace-less.
        if let Some(off) = &self.offsets {
            let through_nsproxy = kind != NS_PID && kind != NS_USER;
            if off.ns_inum[kind] == 0 || (through_nsproxy && off.nsproxy_ns[kind] == 0) {
                return Err(format!(
                    "the kernel's BTF does not show where a task's {link} namespace is"
                ));
            }
        }
        Ok(())
    }

    /// The inode number of the host's namespace of `kind`: the initial
    /// one's fixed number, or (net and mnt before 6.18) that of PID 1's,
    /// which needs the agent to see the host's PID 1 (as Tetragon's
    /// `hostPID`).
    fn host(&self, kind: usize) -> Result<u32, String> {
        self.check_kind(kind)?;
        let link = NAMESPACES[kind].2;
        if let Some(n) = initial_inum(kind, self.fixed_mnt_net) {
            return Ok(n);
        }
        // PID 1 is the host's init only if it is in the initial pid
        // namespace (an agent in a container without the host's pids
        // would otherwise take its container's namespace for the host's).
        let instead = "name the namespace's inode number instead";
        let init_pid = link_inum(&self.proc.join("1/ns/pid"))
            .map_err(|e| format!("host_ns: {e}; {instead}"))?;
        if Some(init_pid) != initial_inum(NS_PID, false) {
            return Err(format!(
                "host_ns: PID 1 here is not the host's init (its pid namespace is {init_pid}: the agent does not see the host's processes); {instead}"
            ));
        }
        let init = self.proc.join("1/ns").join(link);
        link_inum(&init).map_err(|e| format!("host_ns: {e}; {instead}"))
    }
}

/// The inode number of the namespace a `/proc/PID/ns/` link names
/// (`pid:[4026531836]`).
fn link_inum(link: &Path) -> Result<u32, String> {
    let target =
        std::fs::read_link(link).map_err(|e| format!("cannot read {}: {e}", link.display()))?;
    let text = target.to_string_lossy();
    text.split_once(":[")
        .and_then(|(_, n)| n.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{}: unexpected link {text:?}", link.display()))
}

fn op(in_: bool) -> u32 {
    if in_ {
        GEN_SET_IN
    } else {
        GEN_SET_NOT_IN
    }
}

/// Fills `out`'s process filters from `filters`.
pub fn fill(
    filters: &ProcessFilters,
    out: &mut GenSelector,
    host: &HostNamespaces,
) -> Result<(), String> {
    for (i, p) in filters.pids.iter().enumerate() {
        let f = &mut out.pids[i];
        f.op = op(p.in_);
        f.nvalues = p.values.len() as u32;
        f.values[..p.values.len()].copy_from_slice(&p.values);
        if p.namespace_pid {
            f.flags |= GEN_PID_NAMESPACE;
        }
        if p.follow_forks {
            f.flags |= GEN_PID_FOLLOW;
        }
        out.npids += 1;
        out.process |= GEN_PROC_PIDS;
    }
    for n in &filters.namespaces {
        let name = NAMESPACES[n.kind].0;
        let what = |e: String| format!("matchNamespaces {name}: {e}");
        // For plain inode numbers too: the kernel must have the kind.
        host.check_kind(n.kind).map_err(what)?;
        let f = &mut out.namespaces[n.kind];
        f.op = op(n.in_);
        for (k, v) in n.values.iter().enumerate() {
            f.values[k] = match v {
                NsValue::Host => host.host(n.kind).map_err(what)?,
                NsValue::Inum(i) => *i,
            };
        }
        f.nvalues = n.values.len() as u32;
        out.process |= GEN_PROC_NAMESPACES;
    }
    if let Some(c) = &filters.caps {
        (
            out.caps_op,
            out.caps_set,
            out.caps_mask,
            out.caps_host_userns,
        ) = caps_fields(c, host, "matchCapabilities")?;
        out.process |= GEN_PROC_CAPS;
    }
    if let Some(n) = &filters.ns_changes {
        for &kind in &n.kinds {
            host.check_kind(kind)
                .map_err(|e| format!("matchNamespaceChanges {}: {e}", NAMESPACES[kind].0))?;
            out.ns_changes |= 1 << kind;
        }
        out.ns_changes_op = op(n.in_);
        out.process |= GEN_PROC_NS_CHANGES;
    }
    if let Some(c) = &filters.caps_changes {
        (
            out.caps_changes_op,
            out.caps_changes_set,
            out.caps_changes_mask,
            out.caps_changes_host_userns,
        ) = caps_fields(c, host, "matchCapabilityChanges")?;
        out.process |= GEN_PROC_CAPS_CHANGES;
    }
    Ok(())
}

/// A capability filter's operator, set, mask and (`isNamespaceCapability`)
/// the host's user namespace, as the selector holds them.
fn caps_fields(
    c: &CapsFilter,
    host: &HostNamespaces,
    field: &str,
) -> Result<(u32, u32, u64, u32), String> {
    let set = match c.set {
        CapSet::Effective => GEN_CAPS_EFFECTIVE,
        CapSet::Inheritable => GEN_CAPS_INHERITABLE,
        CapSet::Permitted => GEN_CAPS_PERMITTED,
    };
    let host_userns = if c.namespace {
        host.host(NS_USER)
            .map_err(|e| format!("{field} isNamespaceCapability: {e}"))?
    } else {
        0
    };
    Ok((op(c.in_), set, c.mask, host_userns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tracing::process_filters::{CapsFilter, NsFilter, PidFilter};

    fn ns_filter(kind: usize, values: Vec<NsValue>) -> ProcessFilters {
        ProcessFilters {
            namespaces: vec![NsFilter {
                kind,
                in_: true,
                values,
            }],
            ..ProcessFilters::default()
        }
    }

    #[test]
    fn filters_fill_the_selector_and_host_ns_is_the_initial_namespace() {
        let proc = std::env::temp_dir().join(format!("vardr-ns-{}", std::process::id()));
        std::fs::create_dir_all(proc.join("self/ns")).unwrap();
        std::fs::create_dir_all(proc.join("1/ns")).unwrap();
        for l in ["pid", "mnt", "user"] {
            std::os::unix::fs::symlink(format!("{l}:[4026532100]"), proc.join("self/ns").join(l))
                .unwrap();
        }
        std::os::unix::fs::symlink("mnt:[4026531841]", proc.join("1/ns/mnt")).unwrap();
        std::os::unix::fs::symlink("pid:[4026531836]", proc.join("1/ns/pid")).unwrap();
        let host = HostNamespaces {
            proc: proc.clone(),
            fixed_mnt_net: false,
            offsets: None,
        };
        let filters = ProcessFilters {
            pids: vec![PidFilter {
                in_: false,
                values: vec![1, 7],
                namespace_pid: true,
                follow_forks: true,
            }],
            namespaces: vec![NsFilter {
                kind: NS_PID,
                in_: false,
                values: vec![NsValue::Host, NsValue::Inum(4_026_532_000)],
            }],
            caps: Some(CapsFilter {
                set: CapSet::Permitted,
                in_: true,
                mask: 1 << 21,
                namespace: false,
            }),
            ns_changes: Some(crate::policy::tracing::process_filters::NsChanges {
                in_: true,
                kinds: vec![NS_PID, NS_MNT],
            }),
            caps_changes: Some(CapsFilter {
                set: CapSet::Effective,
                in_: false,
                mask: 1 << 7,
                namespace: true,
            }),
        };
        let mut sel = GenSelector::default();
        fill(&filters, &mut sel, &host).unwrap();
        assert_eq!(
            sel.process,
            GEN_PROC_PIDS
                | GEN_PROC_NAMESPACES
                | GEN_PROC_CAPS
                | GEN_PROC_NS_CHANGES
                | GEN_PROC_CAPS_CHANGES
        );
        assert_eq!(sel.ns_changes, 1 << NS_PID | 1 << NS_MNT);
        assert_eq!(sel.ns_changes_op, GEN_SET_IN);
        assert_eq!(
            (
                sel.caps_changes_op,
                sel.caps_changes_set,
                sel.caps_changes_mask
            ),
            (GEN_SET_NOT_IN, GEN_CAPS_EFFECTIVE, 1 << 7)
        );
        // isNamespaceCapability: the host's user namespace (fixed number).
        assert_eq!(sel.caps_changes_host_userns, 0xEFFF_FFFD);
        assert_eq!(sel.npids, 1);
        assert_eq!(sel.pids[0].op, GEN_SET_NOT_IN);
        assert_eq!(sel.pids[0].flags, GEN_PID_NAMESPACE | GEN_PID_FOLLOW);
        assert_eq!(&sel.pids[0].values[..2], &[1, 7]);
        let ns = sel.namespaces[NS_PID];
        assert_eq!((ns.op, ns.nvalues), (GEN_SET_NOT_IN, 2));
        // The initial pid namespace, not the agent's own.
        assert_eq!(&ns.values[..2], &[0xEFFF_FFFC, 4_026_532_000]);
        assert_eq!(sel.namespaces[NS_NET].op, 0, "kinds not named stay unused");
        assert_eq!((sel.caps_set, sel.caps_mask), (GEN_CAPS_PERMITTED, 1 << 21));

        // Mnt before 6.18: PID 1's; with fixed numbers, the initial one.
        let mut sel = GenSelector::default();
        fill(&ns_filter(NS_MNT, vec![NsValue::Host]), &mut sel, &host).unwrap();
        assert_eq!(sel.namespaces[NS_MNT].values[0], 4_026_531_841);
        let fixed = HostNamespaces {
            proc: proc.clone(),
            fixed_mnt_net: true,
            offsets: None,
        };
        fill(&ns_filter(NS_MNT, vec![NsValue::Host]), &mut sel, &fixed).unwrap();
        assert_eq!(sel.namespaces[NS_MNT].values[0], 0xEFFF_FFF8);

        // A kind the kernel lacks (no link of the agent's own), even with
        // an inode number.
        let err = fill(
            &ns_filter(NS_TIME, vec![NsValue::Inum(4_026_532_000)]),
            &mut GenSelector::default(),
            &host,
        )
        .unwrap_err();
        assert!(err.contains("no time namespaces"), "{err}");
        // Offsets the BTF did not give: refused rather than read as 0.
        let blind = HostNamespaces {
            proc: proc.clone(),
            fixed_mnt_net: true,
            offsets: Some(vardr_common::KernelOffsets::default()),
        };
        let err = fill(&ns_filter(NS_PID, vec![NsValue::Host]), &mut sel, &blind).unwrap_err();
        assert!(err.contains("BTF does not show"), "{err}");
        // A PID 1 that is not the host's init: no host_ns for Mnt.
        std::fs::remove_file(proc.join("1/ns/pid")).unwrap();
        std::os::unix::fs::symlink("pid:[4026532999]", proc.join("1/ns/pid")).unwrap();
        let err = fill(&ns_filter(NS_MNT, vec![NsValue::Host]), &mut sel, &host).unwrap_err();
        assert!(err.contains("not the host's init"), "{err}");
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
