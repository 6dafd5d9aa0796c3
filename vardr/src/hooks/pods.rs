//! Which cgroups belong to the pods of a Kubernetes namespace, for the
//! hooks of a `TracingPolicyNamespaced` (Tetragon's policy filter). Read
//! from the node itself, without the Kubernetes API: the kubelet makes a
//! directory per pod in its pod log root (`/var/log/pods/<namespace>_<pod
//! name>_<pod uid>`, every CRI runtime), and names each pod's cgroup after
//! its uid (`pod<uid>` with the cgroupfs driver, `kubepods-<qos>-pod<uid
//! with _ for ->.slice` with the systemd one); the pod's containers are
//! cgroups below it, which the hooks find as descendants in the kernel
//! (`bpf_get_current_ancestor_cgroup_id`), so only the pods' own cgroups
//! are listed.
use std::{
    collections::{HashMap, HashSet},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::Path,
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify},
};

/// Where the kubelet makes a directory per pod.
pub const POD_LOG_ROOT: &str = "/var/log/pods";

/// How deep below the root the pod cgroups are looked for
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod….slice`
/// is 3; nested runtimes add a few).
const MAX_DEPTH: usize = 8;

/// The pods of the pod log root `dir`: pod uid (with `_` for `-`, as the
/// systemd driver writes it) → namespace. A missing root: no pods.
pub fn pods(dir: &Path) -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (ns, uid) = parse_pod_dir(&name)?;
            Some((uid.replace('-', "_"), ns.to_string()))
        })
        .collect()
}

/// The pod log root, watched for pods coming and going: the kubelet makes
/// a pod's log directory after the pod's cgroup and before any of its
/// containers starts, so a sync on this news governs a new pod before its
/// first process runs (the agent's 2 s tick is the fallback).
pub struct PodWatch {
    inotify: Inotify,
}

impl PodWatch {
    pub fn new(dir: &Path) -> Result<Self, Errno> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_ONLYDIR,
        )?;
        Ok(Self { inotify })
    }

    /// Reads what is queued; whether the root changed. `Err(EAGAIN)` when
    /// nothing was (the readiness was stale). A root that was removed or
    /// replaced (`IN_IGNORED`) ends the watch: `Err(ENOENT)`.
    pub fn drain(&self) -> Result<bool, Errno> {
        let mut changed = false;
        loop {
            match self.inotify.read_events() {
                Ok(evs) if evs.is_empty() => break,
                Ok(evs) => {
                    if evs
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    {
                        return Err(Errno::ENOENT);
                    }
                    changed = true;
                }
                Err(Errno::EAGAIN) if changed => break,
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }
}

impl AsFd for PodWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

impl AsRawFd for PodWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }
}

/// `<namespace>_<pod name>_<uid>` (neither name can hold `_`).
fn parse_pod_dir(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || uid.len() < 8 {
        return None;
    }
    Some((ns, uid))
}

/// The pod uid a cgroup directory's name stands for (`_` for `-`).
fn pod_of_cgroup(name: &str) -> Option<String> {
    let uid = match name.strip_suffix(".slice") {
        // systemd: kubepods-besteffort-pod<uid>.slice, kubepods-pod<uid>.slice
        Some(slice) => slice.rsplit_once("-pod")?.1,
        // cgroupfs: pod<uid>
        None => name.strip_prefix("pod")?,
    };
    (uid.len() >= 8
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_'))
    .then(|| uid.replace('-', "_"))
}

/// The pods of the wanted namespaces, as found below the cgroup root.
#[derive(Debug, Default)]
pub struct Found {
    /// Namespace -> the cgroup ids (v2: the directories' inode numbers)
    /// of its pods.
    pub cgroups: HashMap<String, HashSet<u64>>,
    /// Pods of those namespaces (uids) with a log directory but no cgroup.
    pub without_cgroup: Vec<String>,
}

/// The cgroups of the pods of each namespace in `wanted`, found below
/// `root`.
pub fn cgroups(root: &Path, pods: &HashMap<String, String>, wanted: &HashSet<&str>) -> Found {
    let mut out = Found::default();
    if pods.is_empty() || wanted.is_empty() {
        return out;
    }
    let mut seen = HashSet::new();
    walk(root, 0, &mut |path, name| {
        let uid = pod_of_cgroup(name)?;
        let ns = pods.get(&uid).filter(|ns| wanted.contains(ns.as_str()))?;
        if let Ok(m) = std::fs::metadata(path) {
            out.cgroups.entry(ns.clone()).or_default().insert(m.ino());
            seen.insert(uid);
        }
        // A pod's cgroup is not inside another's: no need to look below.
        Some(())
    });
    out.without_cgroup = pods
        .iter()
        .filter(|(uid, ns)| wanted.contains(ns.as_str()) && !seen.contains(*uid))
        .map(|(uid, _)| uid.clone())
        .collect();
    out
}

/// Calls `f` on each directory below `dir`; does not descend where `f`
/// returns `Some`.
fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path, &str) -> Option<()>) {
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let name = e.file_name();
        if f(&path, &name.to_string_lossy()).is_none() {
            walk(&path, depth + 1, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d4f3f6a-8b1c-4e55-9c1b-6f2a7d3e9b10";

    #[test]
    fn pod_log_directories_name_namespace_and_uid() {
        assert_eq!(
            parse_pod_dir(&format!("payments_api-7d9f_{UID}")),
            Some(("payments", UID))
        );
        assert_eq!(parse_pod_dir("not-a-pod"), None);
        assert_eq!(parse_pod_dir("a_b_c_d"), None);
    }

    #[test]
    fn cgroup_names_of_both_drivers() {
        let uid = UID.replace('-', "_");
        assert_eq!(pod_of_cgroup(&format!("pod{UID}")), Some(uid.clone()));
        assert_eq!(
            pod_of_cgroup(&format!("kubepods-besteffort-pod{uid}.slice")),
            Some(uid.clone())
        );
        assert_eq!(
            pod_of_cgroup(&format!("kubepods-pod{uid}.slice")),
            Some(uid)
        );
        assert_eq!(pod_of_cgroup("kubepods-besteffort.slice"), None);
        assert_eq!(pod_of_cgroup("podman-1234.scope"), None);
        assert_eq!(pod_of_cgroup("system.slice"), None);
    }

    #[test]
    fn the_pods_of_a_namespace_and_their_containers() {
        let root = std::env::temp_dir().join(format!("vardr-pods-{}", std::process::id()));
        let logs = root.join("logs");
        let cg = root.join("cg");
        let other = "11111111-2222-3333-4444-555555555555";
        for d in [
            logs.join(format!("payments_api_{UID}")),
            logs.join(format!("web_front_{other}")),
            cg.join(format!("kubepods/besteffort/pod{UID}/ctr-a")),
            cg.join(format!("kubepods/besteffort/pod{other}/ctr-b")),
            cg.join("system.slice/sshd.service"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let pods = pods(&logs);
        assert_eq!(pods.len(), 2);
        let wanted = HashSet::from(["payments"]);
        let found = cgroups(&cg, &pods, &wanted);
        let ino = |p: &str| std::fs::metadata(cg.join(p)).unwrap().ino();
        let pod = format!("kubepods/besteffort/pod{UID}");
        assert_eq!(
            found.cgroups.get("payments"),
            Some(&HashSet::from([ino(&pod)]))
        );
        assert!(!found.cgroups.contains_key("web"));
        assert!(found.without_cgroup.is_empty());
        // A pod the kubelet has logged but whose cgroup is not there yet.
        let late = "66666666-7777-8888-9999-000000000000";
        std::fs::create_dir_all(logs.join(format!("payments_late_{late}"))).unwrap();
        let found = cgroups(&cg, &super::pods(&logs), &wanted);
        assert_eq!(found.without_cgroup, [late.replace('-', "_")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
