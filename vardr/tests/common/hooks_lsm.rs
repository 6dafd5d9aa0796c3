//! TracingPolicy `lsmhooks` run as BPF LSM hooks of their own (any hook,
//! the kprobes' selectors and actions in the kernel): a hook native rules
//! have no equivalent of (`path_chmod`), and a `file_open` entry that needs
//! more than native rules say (Postfix, its own errno). Where the BPF LSM
//! does not run, the agent refuses such a policy and says why.
use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    agent::{which, AgentRun, VARDR},
    scenarios::{policy, start},
    sh, sh_in, stderr, test_cgroup, TempDir,
};

fn tracing_policy(dir: &Path, chmod: &Path, setpriv: &Path) -> String {
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: lsm-generic
spec:
  lsmhooks:
  - hook: path_chmod
    message: "chmod refused"
    tags: [vardr.test]
    args:
    - index: 0
      type: path
    - index: 1
      type: int
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{chmod}"]
      matchArgs:
      - index: 0
        operator: Prefix
        values: ["{d}/"]
      matchActions:
      - action: Override
        argError: -13
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/lsm-secret.txt"]
      matchActions:
      - action: Override
        argError: -2
  - hook: task_fix_setuid
    args:
    - index: 0
      type: cred
    - index: 1
      type: cred
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{setpriv}"]
"#,
        d = dir.display(),
        chmod = chmod.display(),
        setpriv = setpriv.display(),
    )
}

fn lsm(e: &Value) -> &Value {
    &e["process_lsm"]
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn event(agent: &mut AgentRun, hook: &str, path: &str) -> Value {
    agent.event(&format!("{hook} {path}"), |e| {
        let l = lsm(e);
        l["function_name"] == hook
            && l["policy_name"] == "lsm-generic"
            && (l["args"][0]["path_arg"]["path"] == path
                || l["args"][0]["file_arg"]["path"] == path)
    })
}

/// Everything denied here is in `dir`: the file's mode, and what `cat`
/// reads, show whether the call ran.
fn assert_denied(cg: &Path, victim: &Path, secret: &Path, when: &str) {
    let o = sh_in(cg, &format!("chmod 600 {}", victim.display()));
    assert!(
        !o.status.success() && stderr(&o).contains("Permission denied"),
        "chmod by the listed binary {when}: {:?} {}",
        o.status,
        stderr(&o)
    );
    assert_eq!(mode(victim), 0o644, "the mode changed {when}");
    let o = sh_in(cg, &format!("cat {}", secret.display()));
    assert!(
        !o.status.success() && stderr(&o).contains("No such file or directory"),
        "open of the secret {when}: {:?} {}",
        o.status,
        stderr(&o)
    );
}

pub fn lsm_hooks() {
    let t = TempDir::new("lsmgen");
    let dir = t.path();
    let victim = dir.join("victim");
    std::fs::write(&victim, "v").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = dir.join("lsm-secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    // A copy of chmod: another file, which matchBinaries does not list.
    let other_chmod = dir.join("other-chmod");
    std::fs::copy(which("chmod"), &other_chmod).unwrap();
    let chmod = std::fs::canonicalize(which("chmod")).unwrap();
    let setpriv = std::fs::canonicalize(which("setpriv")).unwrap();
    let tp = dir.join("lsm.yaml");
    std::fs::write(&tp, tracing_policy(dir, &chmod, &setpriv)).unwrap();
    let cg = test_cgroup("lsmgen");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let mut agent = start(Backend::Lsm, &cg.path, &pol, true);
    let v = victim.to_str().unwrap();
    let s = secret.to_str().unwrap();

    // 1. path_chmod: refused with the policy's errno for the listed binary.
    assert_denied(&cg.path, &victim, &secret, "under the policy");
    let ev = event(&mut agent, "path_chmod", v);
    let l = lsm(&ev);
    assert_eq!(l["action"], "KPROBE_ACTION_OVERRIDE", "{ev}");
    assert_eq!(l["verdict"], "deny", "{ev}");
    assert_eq!(l["backend"], "lsm", "{ev}");
    assert_eq!(l["override_error"], "EACCES", "{ev}");
    assert_eq!(l["message"], "chmod refused", "{ev}");
    assert_eq!(l["args"][1]["int_arg"], 0o600, "{ev}");
    assert_eq!(l["rule"], "lsm-generic.lsmhooks.0.0", "{ev}");
    // matchBinaries in the kernel: another binary may; outside the scope too.
    let o = sh_in(&cg.path, &format!("{} 640 {v}", other_chmod.display()));
    assert!(o.status.success(), "chmod by a copy: {}", stderr(&o));
    assert_eq!(mode(&victim), 0o640);
    let o = sh(&format!("chmod 644 {v}"));
    assert!(
        o.status.success(),
        "chmod outside the scope: {}",
        stderr(&o)
    );

    // 2. file_open with Postfix and its own errno (not a native rule).
    let ev = event(&mut agent, "file_open", s);
    let l = lsm(&ev);
    assert_eq!(l["override_error"], "ENOENT", "{ev}");
    assert_eq!(l["action"], "KPROBE_ACTION_OVERRIDE", "{ev}");
    let o = sh(&format!("cat {s}"));
    assert!(o.status.success(), "open outside the scope: {}", stderr(&o));

    // 3. A cred argument: task_fix_setuid's new and old credentials.
    let o = sh_in(
        &cg.path,
        "setpriv --reuid=65534 --regid=65534 --clear-groups true",
    );
    assert!(o.status.success(), "setpriv: {}", stderr(&o));
    let ev = agent.event("task_fix_setuid", |e| {
        lsm(e)["function_name"] == "task_fix_setuid"
            && lsm(e)["args"][0]["process_credentials_arg"]["uid"] == 65534
    });
    let l = lsm(&ev);
    let (new, old) = (
        &l["args"][0]["process_credentials_arg"],
        &l["args"][1]["process_credentials_arg"],
    );
    assert_eq!(new["euid"], 65534, "{ev}");
    assert_eq!(old["uid"], 0, "{ev}");
    assert!(
        old["caps"]["effective"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "CAP_SYS_ADMIN")),
        "{ev}"
    );
    assert_eq!(old["user_ns"]["ns"]["is_host"], true, "{ev}");
    assert_eq!(l["verdict"], "alert", "{ev}");

    // 4. Reloads: each generation takes other copies of the program; the
    // hooks hold through every switch.
    for i in 0..3 {
        let r = agent.reload();
        assert_eq!(r["last_reload"]["ok"], true, "reload {i}: {r}");
        assert_denied(&cg.path, &victim, &secret, &format!("after reload {i}"));
    }
    agent.stop();

    // 5. Without --enforce: reported as what would have happened.
    let mut agent = start(Backend::Lsm, &cg.path, &pol, false);
    let o = sh_in(&cg.path, &format!("chmod 600 {v}"));
    assert!(o.status.success(), "chmod in audit mode: {}", stderr(&o));
    assert_eq!(mode(&victim), 0o600);
    let ev = event(&mut agent, "path_chmod", v);
    assert_eq!(lsm(&ev)["verdict"], "audit", "{ev}");
    assert_eq!(
        lsm(&ev)["intended_action"],
        "KPROBE_ACTION_OVERRIDE",
        "{ev}"
    );
    agent.stop();
}

/// Where the BPF LSM does not run, the agent refuses the policy at start,
/// naming the hook and why, rather than running without it.
pub fn lsm_hooks_refused(b: Backend) {
    let t = TempDir::new("lsmgen-no");
    let dir = t.path();
    let tp = dir.join("lsm.yaml");
    std::fs::write(
        &tp,
        tracing_policy(
            dir,
            Path::new("/usr/bin/chmod"),
            Path::new("/usr/bin/setpriv"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        policy(&format!(
            "  rules: []\n  tracing_policies: [{}]\n",
            tp.display()
        )),
    )
    .unwrap();
    let cg = test_cgroup("lsmgen-no");
    let mut child = std::process::Command::new(&*VARDR)
        .arg("agent")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .args(["--backend", super::scenarios::backend_name(b)])
        .arg("--scope-cgroup")
        .arg(&cg.path)
        .arg("--enforce")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vardr agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent ran a policy with lsmhooks it cannot load");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("path_chmod (lsm-generic)")
            && (err.contains("lsmhooks need the BPF LSM")
                || err.contains("this kernel refuses BPF LSM programs")),
        "{err}"
    );
}
