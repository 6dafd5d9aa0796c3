//! TracingPolicies added at run time (Tetragon's `AddTracingPolicy`,
//! `vardr tracingpolicy add`). They are kept as YAML files in the runtime
//! directory, so a restarted agent (or an upgrade) puts them back in force;
//! the directory is on tmpfs: to keep one across reboots, list its file in
//! the policy's `spec.tracing_policies`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use tonic::Code;

use crate::{
    api::tetragon::policies::{Key, Loaded, PolicyRequest, Refused},
    policy::tracing::{self, TracingPolicy},
};

pub const DIR_NAME: &str = "tracing-policies";
const DISABLED: &str = ".disabled";

#[derive(Clone, Debug)]
struct Entry {
    id: u64,
    yaml: String,
    policy: TracingPolicy,
    enabled: bool,
}

/// The TracingPolicies added through the API.
#[derive(Clone, Debug, Default)]
pub struct ApiPolicies {
    entries: BTreeMap<Key, Entry>,
    next_id: u64,
}

/// A change asked for, before it is in force.
pub enum Change {
    /// A new set of API policies to put in force with a reload.
    Reload(ApiPolicies),
    /// Nothing to change (enable of an enabled policy).
    None,
}

fn key_of(p: &TracingPolicy) -> Key {
    Key::new(p.name.clone(), p.namespace.clone().unwrap_or_default())
}

/// Kubernetes object names: lowercase letters, digits, `-` and `.` (so a
/// name is also a safe file name), short enough for a file name with its
/// suffixes (255 bytes).
fn check_name(key: &Key) -> Result<(), Refused> {
    let ok = |s: &str| {
        !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let short = key.name.len() + key.namespace.len() <= 200;
    if key.name.is_empty() || !ok(&key.name) || !ok(&key.namespace) || !short {
        return Err(Refused::new(
            Code::InvalidArgument,
            format!(
                "metadata.name {key:?}: a TracingPolicy name is lowercase letters, digits, '-' and '.', at most 200 bytes with its namespace"
            ),
        ));
    }
    Ok(())
}

/// Sets aside every kept policy file (`NAME.yaml.rejected`): they no
/// longer compile with the policy file.
pub fn reject_all(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for e in read.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(&format!(".yaml{DISABLED}")) {
            let to = dir.join(format!("{name}.rejected"));
            if let Err(err) = std::fs::rename(e.path(), &to) {
                ::tracing::error!("cannot set aside {}: {err}", e.path().display());
            }
        }
    }
}

impl ApiPolicies {
    /// Reads the policies a previous agent kept in `dir`; a file that no
    /// longer validates (an upgrade changed what is supported) is skipped
    /// with its error, the others stay in force.
    pub fn load(dir: &Path) -> (Self, Vec<String>) {
        let mut set = Self::default();
        let mut errors = Vec::new();
        let read = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (set, errors),
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                return (set, errors);
            }
        };
        let mut files: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let enabled = name.ends_with(".yaml");
            if !enabled && !name.ends_with(&format!(".yaml{DISABLED}")) {
                continue;
            }
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|yaml| {
                    tracing::parse(&yaml, &path)
                        .map(|p| (yaml, p))
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok((yaml, policy)) => {
                    let key = key_of(&policy);
                    if let Err(r) = check_name(&key) {
                        errors.push(format!("{}: {}", path.display(), r.message));
                    } else if set.entries.get(&key).is_some_and(|e| e.enabled) {
                        // An interrupted save left both states: enabled wins.
                        errors.push(format!("{}: {key} is also kept enabled", path.display()));
                    } else {
                        set.insert(yaml, policy, enabled);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    fn insert(&mut self, yaml: String, policy: TracingPolicy, enabled: bool) {
        self.next_id += 1;
        let entry = Entry {
            id: self.next_id,
            yaml,
            policy,
            enabled,
        };
        self.entries.insert(key_of(&entry.policy), entry);
    }

    /// Writes the set to `dir`: one file per policy, `NAME.yaml` or
    /// `NAME.yaml.disabled`; files of policies no longer in the set go.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut keep = Vec::new();
        let mut failed = None;
        for (key, e) in &self.entries {
            let base = if key.namespace.is_empty() {
                key.name.clone()
            } else {
                format!("{}_{}", key.namespace, key.name)
            };
            let file = if e.enabled {
                format!("{base}.yaml")
            } else {
                format!("{base}.yaml{DISABLED}")
            };
            let tmp = dir.join(format!(".{file}.tmp"));
            let written =
                std::fs::write(&tmp, &e.yaml).and_then(|()| std::fs::rename(&tmp, dir.join(&file)));
            match written {
                Ok(()) => keep.push(file),
                Err(err) => failed = Some(err),
            }
        }
        // Deleted policies' files go even when a write failed.
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) && !name.ends_with(".rejected") {
                if let Err(err) = std::fs::remove_file(entry.path()) {
                    failed = Some(err);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The enabled policies, to compile with the policy file.
    pub fn enabled(&self) -> Vec<TracingPolicy> {
        self.entries
            .values()
            .filter(|e| e.enabled)
            .map(|e| e.policy.clone())
            .collect()
    }

    pub fn listing(&self) -> Vec<Loaded> {
        self.entries
            .iter()
            .map(|(key, e)| Loaded {
                id: e.id,
                key: key.clone(),
                enabled: e.enabled,
                rules: e.policy.rules.len(),
                source: "the API".into(),
                hooks: hooks(&e.policy),
                enforced: false,
            })
            .collect()
    }

    /// The set `req` asks for. `file_policies` are those of the policy
    /// file: their names are taken, and the API does not change them.
    pub fn change(
        &self,
        req: PolicyRequest,
        file_policies: &[Loaded],
    ) -> (Change, Option<super::Waiter>) {
        let from_file = |key: &Key| file_policies.iter().any(|l| &l.key == key);
        let file_owned = |key: &Key| {
            Refused::new(
                Code::FailedPrecondition,
                format!("TracingPolicy {key} comes from the policy file's spec.tracing_policies: edit the file and reload"),
            )
        };
        let refuse = |reply: super::Waiter, r: Refused| {
            reply(Err(r));
            (Change::None, None)
        };
        match req {
            PolicyRequest::Add { yaml, reply } => {
                let reply = super::waiter(reply);
                let policy = match tracing::parse(&yaml, Path::new("<AddTracingPolicy>")) {
                    Ok(p) => p,
                    Err(e) => {
                        return refuse(reply, Refused::new(Code::InvalidArgument, e.to_string()))
                    }
                };
                let key = key_of(&policy);
                if let Err(r) = check_name(&key) {
                    return refuse(reply, r);
                }
                if self.entries.contains_key(&key) || from_file(&key) {
                    return refuse(
                        reply,
                        Refused::new(
                            Code::AlreadyExists,
                            format!("TracingPolicy {key} exists; delete it first"),
                        ),
                    );
                }
                let mut next = self.clone();
                next.insert(yaml, policy, true);
                (Change::Reload(next), Some(reply))
            }
            PolicyRequest::Delete { key, reply } => {
                let reply = super::waiter(reply);
                if from_file(&key) {
                    return refuse(reply, file_owned(&key));
                }
                let mut next = self.clone();
                if next.entries.remove(&key).is_none() {
                    return refuse(reply, not_found(&key));
                }
                (Change::Reload(next), Some(reply))
            }
            PolicyRequest::Enable {
                key,
                enabled,
                reply,
            } => {
                let reply = super::waiter(reply);
                if from_file(&key) {
                    return refuse(reply, file_owned(&key));
                }
                let mut next = self.clone();
                let Some(e) = next.entries.get_mut(&key) else {
                    return refuse(reply, not_found(&key));
                };
                if e.enabled == enabled {
                    reply(Ok(()));
                    return (Change::None, None);
                }
                e.enabled = enabled;
                (Change::Reload(next), Some(reply))
            }
            PolicyRequest::List { reply } => {
                let mut all = file_policies.to_vec();
                all.extend(self.listing());
                let _ = reply.send(all);
                (Change::None, None)
            }
        }
    }
}

fn not_found(key: &Key) -> Refused {
    Refused::new(Code::NotFound, format!("no TracingPolicy {key}"))
}

/// Tetragon's "sensors" of a policy: the hooks its rules use, and its
/// kprobes, tracepoints and uprobes (`kprobes:do_mkdirat`, ...).
pub fn hooks(p: &TracingPolicy) -> Vec<String> {
    let mut h: Vec<String> = p
        .rules
        .iter()
        .map(|r| r.hook.as_str().to_string())
        .chain(
            p.hooks
                .iter()
                .map(|g| format!("{}:{}", g.point.section(), g.point.target())),
        )
        .collect();
    h.sort();
    h.dedup();
    h
}

/// The listing entry of a policy named by the policy file.
pub fn file_entry(id: u64, p: &TracingPolicy) -> Loaded {
    Loaded {
        id,
        key: key_of(p),
        enabled: true,
        rules: p.rules.len(),
        source: p.source.display().to_string(),
        hooks: hooks(p),
        enforced: false,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    fn yaml(name: &str) -> String {
        format!(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: {name}}}\nspec:\n  lsmhooks:\n  - hook: file_open\n    args: [{{index: 0, type: file}}]\n    selectors:\n    - matchArgs: [{{index: 0, operator: Equal, values: [/etc/shadow]}}]\n"
        )
    }

    /// Applies `req`; returns the new set, or the refusal.
    fn apply(
        set: &ApiPolicies,
        make: impl FnOnce(oneshot::Sender<Result<(), Refused>>) -> PolicyRequest,
        files: &[Loaded],
    ) -> Result<Option<ApiPolicies>, Refused> {
        let (tx, mut rx) = oneshot::channel();
        let (change, waiter) = set.change(make(tx), files);
        match change {
            Change::Reload(next) => {
                assert!(waiter.is_some(), "a reload is answered when done");
                Ok(Some(next))
            }
            Change::None => rx.try_recv().expect("answered at once").map(|()| None),
        }
    }

    #[test]
    fn add_disable_delete_and_what_is_refused() {
        let none = ApiPolicies::default();
        let one = apply(
            &none,
            |reply| PolicyRequest::Add {
                yaml: yaml("a"),
                reply,
            },
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(one.enabled().len(), 1);
        let dup = apply(
            &one,
            |reply| PolicyRequest::Add {
                yaml: yaml("a"),
                reply,
            },
            &[],
        );
        assert_eq!(dup.unwrap_err().code, Code::AlreadyExists);
        let bad = apply(
            &one,
            |reply| PolicyRequest::Add {
                yaml: yaml("b").replace("lsmhooks", "kprobes"),
                reply,
            },
            &[],
        );
        assert_eq!(bad.unwrap_err().code, Code::InvalidArgument);
        let key = Key::new("a".into(), String::new());
        let off = apply(
            &one,
            |reply| PolicyRequest::Enable {
                key: key.clone(),
                enabled: false,
                reply,
            },
            &[],
        )
        .unwrap()
        .unwrap();
        assert!(off.enabled().is_empty());
        assert_eq!(off.listing().len(), 1);
        // Enabling what is enabled changes nothing and needs no reload.
        let same = apply(
            &one,
            |reply| PolicyRequest::Enable {
                key: key.clone(),
                enabled: true,
                reply,
            },
            &[],
        );
        assert!(same.unwrap().is_none());
        let gone = apply(
            &one,
            |reply| PolicyRequest::Delete {
                key: key.clone(),
                reply,
            },
            &[],
        )
        .unwrap()
        .unwrap();
        assert!(gone.listing().is_empty());
        let missing = apply(
            &gone,
            |reply| PolicyRequest::Delete {
                key: key.clone(),
                reply,
            },
            &[],
        );
        assert_eq!(missing.unwrap_err().code, Code::NotFound);
        // The policy file's own are changed in the file.
        let file = file_entry(1, &one.enabled()[0]);
        let owned = apply(&none, |reply| PolicyRequest::Delete { key, reply }, &[file]);
        assert_eq!(owned.unwrap_err().code, Code::FailedPrecondition);
    }

    #[test]
    fn saved_policies_come_back_with_their_state() {
        let dir = std::env::temp_dir().join(format!("vardr-tp-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut set = ApiPolicies::default();
        for (name, enabled) in [("on", true), ("off", false)] {
            let p = tracing::parse(&yaml(name), Path::new("t")).unwrap();
            set.insert(yaml(name), p, enabled);
        }
        set.save(&dir).unwrap();
        std::fs::write(dir.join("broken.yaml"), "kind: TracingPolicy\n").unwrap();
        let (back, errors) = ApiPolicies::load(&dir);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let state: Vec<(String, bool)> = back
            .listing()
            .into_iter()
            .map(|l| (l.key.name, l.enabled))
            .collect();
        assert_eq!(
            state,
            [("off".to_string(), false), ("on".to_string(), true)]
        );
        // Deleting one removes its file.
        let mut fewer = back.clone();
        fewer.entries.remove(&Key::new("off".into(), String::new()));
        fewer.save(&dir).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["on.yaml"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
