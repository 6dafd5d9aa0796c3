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
    os::unix::fs::MetadataExt,
    path::Path,
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

/// The cgroup ids (v2: the directories' inode numbers) of the pods of
/// each namespace in `wanted`, found below `root`.
pub fn cgroups(
    root: &Path,
    pods: &HashMap<String, String>,
    wanted: &HashSet<&str>,
) -> HashMap<String, HashSet<u64>> {
    let mut out: HashMap<String, HashSet<u64>> = HashMap::new();
    if pods.is_empty() || wanted.is_empty() {
        return out;
    }
    walk(root, 0, &mut |path, name| {
        let ns = pod_of_cgroup(name)
            .and_then(|uid| pods.get(&uid))
            .filter(|ns| wanted.contains(ns.as_str()))?;
        if let Ok(m) = std::fs::metadata(path) {
            out.entry(ns.clone()).or_default().insert(m.ino());
        }
        // A pod's cgroup is not inside another's: no need to look below.
        Some(())
    });
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
        assert_eq!(found.get("payments"), Some(&HashSet::from([ino(&pod)])));
        assert!(!found.contains_key("web"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
