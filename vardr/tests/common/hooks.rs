//! TracingPolicy tracepoints and kprobes end to end: selectors evaluated
//! in the kernel, Sigkill from the hook, NoPost, audit mode, a reload that
//! detaches, and Tetragon's `process_tracepoint` / `process_kprobe` events.
use std::{os::unix::process::ExitStatusExt, path::Path, time::Duration};

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    agent::which,
    killed,
    scenarios::{policy, start},
    sh, sh_in, test_cgroup, TempDir,
};

fn tracepoint_tp(dir: &Path) -> String {
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: tp-hooks
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    message: "exec seen by a tracepoint"
    tags: [vardr.test]
    args:
    - index: 4
      type: string
    - index: 5
    selectors:
    - matchArgs:
      - index: 4
        operator: Postfix
        values: ["/forbidden-bin"]
      matchActions:
      - action: Sigkill
    - matchArgs:
      - index: 4
        operator: Prefix
        values: ["{dir}/quiet/"]
      matchActions:
      - action: Sigkill
      - action: NoPost
    - matchArgs:
      - index: 4
        operator: Equal
        values: ["{dir}/reported-bin"]
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    - index: 6
    selectors:
    - matchArgs:
      - index: 5
        operator: Equal
        values: ["{dir}/blocked-dir"]
      matchActions:
      - action: Sigkill
    - matchArgs:
      - index: 6
        operator: Equal
        values: ["0x1c0"]
      - index: 5
        operator: NotPrefix
        values: ["/proc"]
"#,
        dir = dir.display()
    )
}

fn tracepoint(e: &Value) -> &Value {
    &e["process_tracepoint"]
}

/// Waits for a `process_tracepoint` event whose first argument is `path`.
fn tp_event(agent: &mut super::agent::AgentRun, what: &str, path: &str) -> Value {
    let ev = agent.event(what, |e| tracepoint(e)["args"][0]["string_arg"] == path);
    tracepoint(&ev).clone()
}

pub fn tracepoint_hooks(b: Backend) {
    let t = TempDir::new("hooks");
    let dir = t.path();
    std::fs::create_dir_all(dir.join("quiet")).unwrap();
    let forbidden = dir.join("forbidden-bin");
    let reported = dir.join("reported-bin");
    let quiet = dir.join("quiet/bin");
    for p in [&forbidden, &reported, &quiet] {
        std::fs::copy(which("true"), p).unwrap();
    }
    let tp = dir.join("tp.yaml");
    std::fs::write(&tp, tracepoint_tp(dir)).unwrap();
    let cg = test_cgroup("hooks");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let mut agent = start(b, &cg.path, &pol, true);

    // Sigkill from the tracepoint, inside the scope only.
    let run = |p: &Path| sh_in(&cg.path, &p.display().to_string());
    let o = run(&forbidden);
    assert!(killed(&o), "forbidden-bin ran: {:?}", o.status);
    let ev = tp_event(
        &mut agent,
        "forbidden-bin killed",
        forbidden.to_str().unwrap(),
    );
    assert_eq!(ev["subsys"], "sched", "{ev}");
    assert_eq!(ev["event"], "sched_process_exec", "{ev}");
    assert_eq!(ev["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(ev["policy_name"], "tp-hooks", "{ev}");
    assert_eq!(ev["rule"], "tp-hooks.tracepoints.0.0", "{ev}");
    assert_eq!(ev["message"], "exec seen by a tracepoint", "{ev}");
    assert_eq!(ev["tags"], serde_json::json!(["vardr.test"]), "{ev}");
    // Argument 5 (`pid_t pid`, type from the format) is the process's pid.
    assert_eq!(ev["args"][1]["int_arg"], ev["process"]["pid"], "{ev}");
    let o = sh(&forbidden.display().to_string());
    assert!(
        o.status.success(),
        "forbidden-bin outside the scope: {:?}",
        o.status
    );

    // Post only: runs, reported.
    let o = run(&reported);
    assert!(o.status.success(), "reported-bin: {:?}", o.status);
    let ev = tp_event(&mut agent, "reported-bin", reported.to_str().unwrap());
    assert_eq!(ev["action"], "KPROBE_ACTION_POST", "{ev}");
    assert_eq!(ev["verdict"], "alert", "{ev}");
    assert_eq!(ev["rule"], "tp-hooks.tracepoints.0.2", "{ev}");

    // NoPost: killed without an event.
    let o = run(&quiet);
    assert!(killed(&o), "quiet/bin ran: {:?}", o.status);

    // A syscall tracepoint: the path in user memory, the mode by value.
    let blocked = dir.join("blocked-dir");
    let o = sh_in(&cg.path, &format!("mkdir {}", blocked.display()));
    assert!(killed(&o), "mkdir blocked-dir: {:?}", o.status);
    let ev = agent.event("mkdir blocked-dir", |e| {
        tracepoint(e)["event"] == "sys_enter_mkdir"
            && tracepoint(e)["args"][0]["string_arg"] == blocked.to_str().unwrap()
    });
    assert_eq!(tracepoint(&ev)["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    let private = dir.join("private-dir");
    let o = sh_in(&cg.path, &format!("mkdir -m 700 {}", private.display()));
    assert!(o.status.success(), "mkdir -m 700: {:?}", o.status);
    let ev = agent.event("mkdir -m 700", |e| {
        tracepoint(e)["args"][0]["string_arg"] == private.to_str().unwrap()
    });
    assert_eq!(tracepoint(&ev)["args"][1]["size_arg"], 0o700, "{ev}");
    assert_eq!(tracepoint(&ev)["verdict"], "alert", "{ev}");

    let seen = agent.events_after(Duration::from_millis(500));
    assert!(
        !seen
            .iter()
            .any(|e| tracepoint(e)["args"][0]["string_arg"] == quiet.to_str().unwrap()),
        "NoPost call reported"
    );

    // A reload with other selectors puts the old ones out of force.
    std::fs::write(
        &tp,
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: tp-hooks\nspec:\n  tracepoints:\n  - subsystem: sched\n    event: sched_process_exec\n    args:\n    - index: 4\n      type: string\n    selectors:\n    - matchArgs:\n      - index: 4\n        operator: Equal\n        values: [\"/nonexistent\"]\n",
    )
    .unwrap();
    let s = agent.reload();
    assert_eq!(s["last_reload"]["ok"], true, "{s}");
    let o = run(&forbidden);
    assert!(
        o.status.success(),
        "forbidden-bin after the reload: {:?}",
        o.status
    );
    drop(agent);

    // Audit mode: nothing killed, the event says what would have happened.
    std::fs::write(&tp, tracepoint_tp(dir)).unwrap();
    let mut agent = start(b, &cg.path, &pol, false);
    let o = run(&forbidden);
    assert!(
        o.status.success(),
        "forbidden-bin without --enforce: {:?} (signal {:?})",
        o.status,
        o.status.signal()
    );
    let ev = tp_event(
        &mut agent,
        "forbidden-bin audited",
        forbidden.to_str().unwrap(),
    );
    assert_eq!(ev["verdict"], "audit", "{ev}");
    assert_eq!(ev["action"], "KPROBE_ACTION_POST", "{ev}");
    assert_eq!(ev["intended_action"], "KPROBE_ACTION_SIGKILL", "{ev}");
}
