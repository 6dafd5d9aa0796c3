//! A TracingPolicy hook's process filters end to end: `matchNamespaces`
//! (with `host_ns`), `matchPIDs` (`isNamespacePID`, `followForks`),
//! `matchCapabilities`, `matchNamespaceChanges` and
//! `matchCapabilityChanges`, evaluated in the kernel on a syscall
//! tracepoint.
use std::path::Path;

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    killed,
    scenarios::{policy, start},
    sh_in, test_cgroup, TempDir,
};

fn policy_yaml(dir: &Path) -> String {
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: proc-filters
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/ns/"]}}]
      matchNamespaces:
      - namespace: Pid
        operator: NotIn
        values: [host_ns]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/pid/"]}}]
      matchPIDs:
      - operator: In
        isNamespacePID: true
        values: [1]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/fork/"]}}]
      matchPIDs:
      - operator: In
        isNamespacePID: true
        followForks: true
        values: [1]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/caps/"]}}]
      matchCapabilities:
      - type: Effective
        operator: NotIn
        values: [CAP_SYS_ADMIN]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/"]}}]
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/bin/"]}}]
      matchBinaries:
      - operator: In
        values: ["{d}/mkdir-copy"]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/parent/"]}}]
      matchParentBinaries:
      - operator: In
        values: ["{d}/sh-copy"]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/binprefix/"]}}]
      matchBinaries:
      - operator: Prefix
        values: ["/nowhere/", "{d}/tools/"]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/binpostfix/"]}}]
      matchBinaries:
      - operator: NotPostfix
        values: ["/mkdir"]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/parentprefix/"]}}]
      matchParentBinaries:
      - operator: Prefix
        values: ["{d}/tools/"]
      matchActions: [{{action: Sigkill}}]
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/follow/"]}}]
      matchBinaries:
      - operator: In
        followChildren: true
        values: ["{d}/follow-sh"]
      matchActions: [{{action: Sigkill}}]
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/nschange/"]}}]
      matchNamespaceChanges: [{{operator: In, values: [Uts]}}]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 5, operator: Prefix, values: ["{d}/capchange/"]}}]
      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: [CAP_SYS_ADMIN]
      matchActions: [{{action: Sigkill}}]
"#,
        d = dir.display()
    )
}

/// The rule of the event for `mkdir path`.
fn rule_for(agent: &mut super::agent::AgentRun, path: &Path) -> Value {
    let p = path.to_str().unwrap();
    let ev = agent.event(p, |e| e["process_tracepoint"]["args"][0]["string_arg"] == p);
    ev["process_tracepoint"]["rule"].clone()
}

pub fn process_filter_hooks(b: Backend) {
    let t = TempDir::new("procfilt");
    let dir = t.path();
    for sub in [
        "ns",
        "pid",
        "fork",
        "caps",
        "bin",
        "parent",
        "tools",
        "binprefix",
        "binpostfix",
        "parentprefix",
        "follow",
        "nschange",
        "capchange",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // Writable for the unprivileged process below.
    std::fs::set_permissions(
        dir.join("capchange"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // Named by matchBinaries: it must exist when the policy loads.
    let copy = dir.join("mkdir-copy");
    std::fs::copy(super::agent::which("mkdir"), &copy).unwrap();
    let sh_copy = dir.join("sh-copy");
    std::fs::copy(super::agent::which("sh"), &sh_copy).unwrap();
    let follow_sh = dir.join("follow-sh");
    std::fs::copy(super::agent::which("sh"), &follow_sh).unwrap();
    // Named by matchBinaries Prefix: by its path, created after the load.
    let tool = dir.join("tools/mk");
    let tp = dir.join("tp.yaml");
    std::fs::write(&tp, policy_yaml(dir)).unwrap();
    let cg = test_cgroup("procfilt");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let mut agent = start(b, &cg.path, &pol, true);
    let rule = |i: usize| Value::from(format!("proc-filters.tracepoints.0.{i}"));
    let mkdir = |script: &str| sh_in(&cg.path, script);
    // `unshare --pid` without --fork: the shell stays outside, its first
    // child is the new namespace's pid 1 (and the shell reports its fate).
    let in_newns = |cmd: String| {
        let o = sh_in(
            &cg.path,
            &format!("unshare --pid sh -c '{cmd}; echo rc=$?'"),
        );
        assert!(o.status.success(), "unshare: {o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // matchNamespaces Pid NotIn host_ns: only in another pid namespace.
    let host = dir.join("ns/host");
    let o = mkdir(&format!("mkdir {}", host.display()));
    assert!(
        o.status.success() && host.is_dir(),
        "mkdir in the host ns: {o:?}"
    );
    assert_eq!(rule_for(&mut agent, &host), rule(4));
    let inner = dir.join("ns/inner");
    let out = in_newns(format!("mkdir {}", inner.display()));
    assert_eq!(out, "rc=137", "mkdir in a new pid ns");
    assert_eq!(rule_for(&mut agent, &inner), rule(0));

    // matchPIDs In [1] isNamespacePID: the new namespace's first process
    // only; with followForks its children too.
    let first = dir.join("pid/first");
    let out = in_newns(format!("mkdir {}", first.display()));
    assert_eq!(out, "rc=137", "mkdir as pid 1 of its namespace");
    assert_eq!(rule_for(&mut agent, &first), rule(1));
    let child = dir.join("pid/child");
    let out = in_newns(format!("sh -c \"mkdir {}; echo rc=\\$?\"", child.display()));
    assert!(
        out.starts_with("rc=0") && child.is_dir(),
        "pid 2 of its namespace: {out:?}"
    );
    assert_eq!(rule_for(&mut agent, &child), rule(4));
    let forked = dir.join("fork/child");
    let out = in_newns(format!(
        "sh -c \"mkdir {}; echo rc=\\$?\"",
        forked.display()
    ));
    assert!(
        out.starts_with("rc=137"),
        "followForks, a child of pid 1: {out:?}"
    );
    assert_eq!(rule_for(&mut agent, &forked), rule(2));

    // matchCapabilities Effective NotIn [CAP_SYS_ADMIN]: root keeps it;
    // without it in the bounding set, the exec'd mkdir has it no more.
    let root = dir.join("caps/root");
    let o = mkdir(&format!("mkdir {}", root.display()));
    assert!(
        o.status.success() && root.is_dir(),
        "mkdir with CAP_SYS_ADMIN: {o:?}"
    );
    assert_eq!(rule_for(&mut agent, &root), rule(4));
    let dropped = dir.join("caps/dropped");
    let o = mkdir(&format!(
        "setpriv --bounding-set=-sys_admin mkdir {}",
        dropped.display()
    ));
    assert!(killed(&o), "mkdir without CAP_SYS_ADMIN: {o:?}");
    assert_eq!(rule_for(&mut agent, &dropped), rule(3));

    // matchBinaries by what the process executed (recorded at its exec):
    // a copy of mkdir that is listed, the system's that is not.
    let listed = dir.join("bin/listed");
    let o = mkdir(&format!("{} {}", copy.display(), listed.display()));
    assert!(killed(&o), "the listed binary: {o:?}");
    let other = dir.join("bin/other");
    let o = mkdir(&format!("mkdir {}", other.display()));
    assert!(
        o.status.success() && other.is_dir(),
        "another binary: {o:?}"
    );

    // matchBinaries Prefix / NotPostfix: by the path of the executable,
    // built in the kernel (a binary installed after the policy loaded too).
    std::fs::copy(super::agent::which("mkdir"), &tool).unwrap();
    let by_tool = dir.join("binprefix/by-tool");
    let o = mkdir(&format!("{} {}", tool.display(), by_tool.display()));
    assert!(killed(&o), "a binary under the prefix: {o:?}");
    let by_mkdir = dir.join("binprefix/by-mkdir");
    let o = mkdir(&format!("mkdir {}", by_mkdir.display()));
    assert!(
        o.status.success() && by_mkdir.is_dir(),
        "a binary outside the prefix: {o:?}"
    );
    let by_tool = dir.join("binpostfix/by-tool");
    let o = mkdir(&format!("{} {}", tool.display(), by_tool.display()));
    assert!(
        killed(&o),
        "a binary whose path does not end in /mkdir: {o:?}"
    );
    let by_mkdir = dir.join("binpostfix/by-mkdir");
    let o = mkdir(&format!("mkdir {}", by_mkdir.display()));
    assert!(
        o.status.success() && by_mkdir.is_dir(),
        "mkdir, whose path ends in /mkdir: {o:?}"
    );

    // matchParentBinaries Prefix: mkdir run by a shell under the prefix.
    let tool_sh = dir.join("tools/sh");
    std::fs::copy(super::agent::which("sh"), &tool_sh).unwrap();
    let by_tool_sh = dir.join("parentprefix/by-tool-sh");
    let o = mkdir(&format!(
        "{} -c 'mkdir {}; echo rc=$?'",
        tool_sh.display(),
        by_tool_sh.display()
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rc=137"),
        "child of a shell under the prefix: {out:?} {o:?}"
    );
    let by_sh = dir.join("parentprefix/by-sh");
    let o = mkdir(&format!("sh -c 'mkdir {}; echo rc=$?'", by_sh.display()));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rc=0") && by_sh.is_dir(),
        "child of a shell outside the prefix: {out:?}"
    );

    // matchParentBinaries: mkdir run by the listed shell, not by another.
    let by_copy = dir.join("parent/by-copy");
    let o = mkdir(&format!(
        "{} -c 'mkdir {}; echo rc=$?'",
        sh_copy.display(),
        by_copy.display()
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rc=137"),
        "child of the listed shell: {out:?} {o:?}"
    );
    let by_sh = dir.join("parent/by-sh");
    let o = mkdir(&format!("sh -c 'mkdir {}; echo rc=$?'", by_sh.display()));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rc=0") && by_sh.is_dir(),
        "child of another shell: {out:?}"
    );

    // matchNamespaceChanges In [Uts]: a process that left its exec's UTS
    // namespace (unshare(2), no exec since) dies at its mkdir; one that
    // left its IPC namespace does not, nor one that execs after the
    // unshare (the exec records the new namespaces).
    let unshare_mkdir = |flags: u32, path: &Path| {
        format!(
            "perl -e 'syscall(272, {flags}) == 0 or die \"unshare: $!\"; mkdir(\"{}\") or die \"mkdir: $!\"'",
            path.display()
        )
    };
    const CLONE_NEWUTS: u32 = 0x0400_0000;
    const CLONE_NEWIPC: u32 = 0x0800_0000;
    const CLONE_NEWUSER: u32 = 0x1000_0000;
    let uts = dir.join("nschange/uts");
    let o = mkdir(&unshare_mkdir(CLONE_NEWUTS, &uts));
    assert!(killed(&o), "mkdir after unshare(CLONE_NEWUTS): {o:?}");
    // Each hook on the tracepoint reports the call: this one's event.
    agent.event("nschange", |e| {
        e["process_tracepoint"]["args"][0]["string_arg"] == uts.to_str().unwrap()
            && e["process_tracepoint"]["rule"] == "proc-filters.tracepoints.3.0"
    });
    let ipc = dir.join("nschange/ipc");
    let o = mkdir(&unshare_mkdir(CLONE_NEWIPC, &ipc));
    assert!(
        o.status.success() && ipc.is_dir(),
        "mkdir after unshare(CLONE_NEWIPC): {o:?}"
    );
    let exec = dir.join("nschange/exec");
    let o = mkdir(&format!("unshare --uts mkdir {}", exec.display()));
    assert!(
        o.status.success() && exec.is_dir(),
        "mkdir exec'd in a new UTS namespace: {o:?}"
    );

    // matchCapabilityChanges Effective In [CAP_SYS_ADMIN]: an unprivileged
    // process that gains it (in a user namespace of its own) dies at its
    // mkdir; without the unshare it has none to gain.
    let as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let gained = dir.join("capchange/gained");
    let o = mkdir(&format!(
        "{as_nobody} {}",
        unshare_mkdir(CLONE_NEWUSER, &gained)
    ));
    assert!(killed(&o), "mkdir after unshare(CLONE_NEWUSER): {o:?}");
    // Each hook on the tracepoint reports the call: this one's event.
    agent.event("capchange", |e| {
        e["process_tracepoint"]["args"][0]["string_arg"] == gained.to_str().unwrap()
            && e["process_tracepoint"]["rule"] == "proc-filters.tracepoints.3.1"
    });
    let plain = dir.join("capchange/plain");
    let o = mkdir(&format!(
        "{as_nobody} perl -e 'mkdir(\"{}\") or die \"mkdir: $!\"'",
        plain.display()
    ));
    assert!(
        o.status.success() && plain.is_dir(),
        "mkdir without a gain: {o:?}"
    );

    // matchBinaries followChildren: what the listed shell starts, however
    // deep and after an exec, matches; the same mkdir from another shell
    // does not.
    let follow = |script: String| {
        let o = mkdir(&script);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let child = dir.join("follow/child");
    let out = follow(format!(
        "{} -c 'mkdir {}; echo rc=$?'",
        follow_sh.display(),
        child.display()
    ));
    assert!(
        out.contains("rc=137"),
        "a child of the listed shell: {out:?}"
    );
    let deep = dir.join("follow/deep");
    let out = follow(format!(
        "{} -c 'exec sh -c \"sh -c \\\"mkdir {}\\\"; echo rc=\\$?\"'",
        follow_sh.display(),
        deep.display()
    ));
    assert!(
        out.contains("rc=137"),
        "a grandchild, after an exec: {out:?}"
    );
    let other = dir.join("follow/other");
    let out = follow(format!("sh -c 'mkdir {}; echo rc=$?'", other.display()));
    assert!(
        out.contains("rc=0") && other.is_dir(),
        "a child of another shell: {out:?}"
    );
    // A reload keeps the followed binary listed (the old generation's
    // entry is shared with the new one's, not deleted with the old).
    let r = agent.reload();
    assert_eq!(r["last_reload"]["ok"], true, "{r}");
    let after = dir.join("follow/after-reload");
    let out = follow(format!(
        "{} -c 'mkdir {}; echo rc=$?'",
        follow_sh.display(),
        after.display()
    ));
    assert!(
        out.contains("rc=137"),
        "a child of the listed shell after a reload: {out:?}"
    );
    // Killed by the followChildren selector, the hook's event says so.
    let c = child.to_str().unwrap();
    agent.event("followChildren kill", |e| {
        let t = &e["process_tracepoint"];
        t["args"][0]["string_arg"] == c
            && t["rule"] == "proc-filters.tracepoints.2.0"
            && t["action"] == "KPROBE_ACTION_SIGKILL"
    });
}
