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
    sh, sh_in, stderr, test_cgroup, TempDir,
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
      - index: 5
        operator: Prefix
        values: ["{dir}/rl-"]
      matchActions:
      - action: Post
        rateLimit: 1h
        rateLimitScope: global
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

    // Post with rateLimit (global scope): the same call from two processes
    // is posted once within the hour; another call is posted.
    let (rl_a, rl_b) = (dir.join("rl-a"), dir.join("rl-b"));
    let o = sh_in(
        &cg.path,
        &format!(
            "mkdir {a} && rmdir {a} && mkdir {a} && mkdir {b}",
            a = rl_a.display(),
            b = rl_b.display()
        ),
    );
    assert!(o.status.success(), "mkdir rl-*: {:?}", o.status);
    agent.event("mkdir rl-b", |e| {
        tracepoint(e)["args"][0]["string_arg"] == rl_b.to_str().unwrap()
    });

    let seen = agent.events_after(Duration::from_millis(500));
    assert!(
        !seen
            .iter()
            .any(|e| tracepoint(e)["args"][0]["string_arg"] == quiet.to_str().unwrap()),
        "NoPost call reported"
    );
    let rl_a_events = seen
        .iter()
        .filter(|e| tracepoint(e)["args"][0]["string_arg"] == rl_a.to_str().unwrap())
        .count();
    assert_eq!(
        rl_a_events, 1,
        "a rate-limited call posted {rl_a_events} times"
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

fn kprobe_tp(dir: &Path, port: u16, port2: u16) -> String {
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: kp-hooks
spec:
  kprobes:
  - call: "do_mkdirat"
    syscall: false
    args:
    - index: 0
      type: "int"
    - index: 1
      type: "filename"
    - index: 2
      type: "int"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Equal"
        values: ["kp-test"]
      matchActions:
      - action: Sigkill
  - call: "fd_install"
    syscall: false
    args:
    - index: 0
      type: int
    - index: 1
      type: "file"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Equal"
        values: ["{dir}/tetragon"]
      matchActions:
      - action: Sigkill
  - call: "__sys_setresuid"
    syscall: false
    args:
    - index: 0
      type: "int"
    - index: 1
      type: "int"
    - index: 2
      type: "int"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Equal"
        values: ["0"]
  - call: "sys_openat"
    syscall: true
    args:
    - index: 1
      type: "string"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Prefix"
        values: ["{dir}/sysblocked/"]
      matchActions:
      - action: Sigkill
  - call: "security_bprm_check"
    syscall: false
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchBinaries:
      - operator: "In"
        values: ["{dir}/shell"]
      matchActions:
      - action: Sigkill
  - call: "security_file_open"
    syscall: false
    args:
    - index: 0
      type: "file"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values: ["{dir}/override"]
      matchActions:
      - action: Override
        argError: -1
    - matchArgs:
      - index: 0
        operator: "Equal"
        values: ["{dir}/override-kill"]
      matchActions:
      - action: Override
        argError: -13
      - action: Sigkill
  - call: "sys_openat"
    syscall: true
    return: true
    args:
    - index: 1
      type: "string"
    returnArg:
      index: 0
      type: "int"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Prefix"
        values: ["{dir}/ret/"]
      matchReturnArgs:
      - index: 0
        operator: "Equal"
        values: ["-2"]
    - matchArgs:
      - index: 1
        operator: "Prefix"
        values: ["{dir}/retkill/"]
      matchReturnArgs:
      - index: 0
        operator: "Equal"
        values: ["-2"]
      matchReturnActions:
      - action: Sigkill
  - call: "tcp_connect"
    syscall: false
    args:
    - index: 0
      type: "sock"
    selectors:
    - matchArgs:
      - index: 0
        operator: "DPort"
        values: ["1:2", "{port}"]
      - index: 0
        operator: "DAddr"
        values: ["127.0.0.0/8"]
      - index: 0
        operator: "NotSPortPriv"
      matchActions:
      - action: Sigkill
  - call: "security_socket_connect"
    syscall: false
    args:
    - index: 1
      type: "sockaddr"
    selectors:
    - matchArgs:
      - index: 1
        operator: "SPort"
        values: ["{port2}"]
      - index: 1
        operator: "Family"
        values: ["AF_INET"]
      matchActions:
      - action: Override
        argError: -111
"#,
        dir = dir.display()
    )
}

fn kprobe(e: &Value) -> &Value {
    &e["process_kprobe"]
}

/// A list of system calls hooked by one kprobe entry (`call: list:NAME`).
const LISTS_TP: &str = r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: kp-lists
spec:
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "dup2"]
  kprobes:
  - call: "list:dups"
    args:
    - index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["47"]
      matchActions:
      - action: Sigkill
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["46"]
      matchActions:
      - action: Post
        kernelStackTrace: true
        userStackTrace: true
"#;

pub fn kprobe_hooks(b: Backend) {
    let t = TempDir::new("kprobes");
    let dir = t.path();
    std::fs::write(dir.join("tetragon"), "secret").unwrap();
    std::fs::write(dir.join("override"), "secret").unwrap();
    std::fs::write(dir.join("override-kill"), "secret").unwrap();
    std::fs::create_dir_all(dir.join("sysblocked")).unwrap();
    std::fs::create_dir_all(dir.join("ret")).unwrap();
    std::fs::write(dir.join("ret/exists"), "x").unwrap();
    std::fs::create_dir_all(dir.join("retkill")).unwrap();
    std::fs::write(dir.join("retkill/exists"), "x").unwrap();
    std::fs::write(dir.join("sysblocked/x"), "x").unwrap();
    let shell = dir.join("shell");
    std::fs::copy(which("sh"), &shell).unwrap();
    // Loopback listeners: a kill at tcp_connect (sock), a refusal at
    // security_socket_connect (sockaddr), and seed 003's port 443.
    let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (port, port2) = (
        l1.local_addr().unwrap().port(),
        l2.local_addr().unwrap().port(),
    );
    let l443 = std::net::TcpListener::bind("127.0.0.1:443").ok();
    let tp = dir.join("kp.yaml");
    std::fs::write(&tp, kprobe_tp(dir, port, port2)).unwrap();
    let lists = dir.join("lists.yaml");
    std::fs::write(&lists, LISTS_TP).unwrap();
    // The shipped examples of seeds 001-003, as they are.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tetragon");
    let files: Vec<String> = [tp.clone(), lists]
        .into_iter()
        .chain(
            [
                "block-shell-exec.yaml",
                "kill-mkdir.yaml",
                "fd-install-sigkill.yaml",
                "detect-sudo.yaml",
                "block-443-for-wget.yaml",
                "sys-write-passwd.yaml",
            ]
            .map(|f| shipped.join(f)),
        )
        .map(|p| p.display().to_string())
        .collect();
    // fd-install-sigkill names /tmp/tetragon; removed however the test ends.
    struct Removed(&'static Path);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let tmp_target = Removed(Path::new("/tmp/tetragon"));
    std::fs::write(tmp_target.0, "secret").unwrap();
    let cg = test_cgroup("kprobes");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        files.join(", ")
    ));
    let mut agent = start(b, &cg.path, &pol, true);
    let d = dir.display();

    // do_mkdirat with the name as the caller wrote it (seed 003).
    let o = sh_in(&cg.path, &format!("cd {d} && mkdir kp-test"));
    assert!(killed(&o), "mkdir kp-test: {:?}", o.status);
    let ev = agent.event("do_mkdirat", |e| kprobe(e)["function_name"] == "do_mkdirat");
    let ev = kprobe(&ev);
    assert_eq!(ev["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    assert_eq!(ev["args"][1]["string_arg"], "kp-test", "{ev}");
    assert_eq!(ev["policy_name"], "kp-hooks", "{ev}");
    let o = sh_in(&cg.path, &format!("cd {d} && mkdir other"));
    assert!(o.status.success(), "mkdir other: {:?}", o.status);

    // `call: list:dups`: each system call of the list hooked.
    let libc = |call: &str| {
        sh_in(
            &cg.path,
            &format!("exec python3 -c 'import ctypes; l=ctypes.CDLL(None); l.{call}'"),
        )
    };
    for call in ["dup(47)", "dup2(47, 48)"] {
        let o = libc(call);
        assert!(killed(&o), "{call}: {:?}", o.status);
    }
    for f in ["sys_dup", "sys_dup2"] {
        let ev = agent.event(f, |e| {
            kprobe(e)["policy_name"] == "kp-lists" && kprobe(e)["function_name"] == f
        });
        assert_eq!(kprobe(&ev)["args"][0]["int_arg"], 47, "{ev}");
        assert_eq!(kprobe(&ev)["rule"], "kp-lists.kprobes.0.0", "{ev}");
    }
    let o = libc("dup(0)");
    assert!(o.status.success(), "dup(0): {:?}", o.status);
    // Post with kernelStackTrace and userStackTrace: the system call's
    // path through the kernel, named, and the caller's frame in libc.
    // (Alive a moment after: its user frames are placed in the files it
    // maps when the agent reads the event.)
    let o = libc("dup(46); import time; time.sleep(2)");
    assert!(o.status.success(), "dup(46): {:?}", o.status);
    let ev = agent.event("stack traces", |e| {
        kprobe(e)["policy_name"] == "kp-lists" && kprobe(e)["args"][0]["int_arg"] == 46
    });
    let ev = kprobe(&ev);
    assert_eq!(ev["rule"], "kp-lists.kprobes.0.1", "{ev}");
    let symbols: Vec<&str> = ev["kernel_stack_trace"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["symbol"].as_str()).collect())
        .unwrap_or_default();
    assert!(symbols.contains(&"do_syscall_64"), "{ev}");
    assert!(
        ev["user_stack_trace"][0]["module"]
            .as_str()
            .is_some_and(|m| m.contains("libc")),
        "{ev}"
    );

    // fd_install with a file argument (seed 002): the open's caller dies.
    let o = sh_in(&cg.path, &format!("cat {d}/tetragon"));
    assert!(killed(&o), "cat tetragon: {:?}", o.status);
    let ev = agent.event("fd_install", |e| {
        kprobe(e)["function_name"] == "fd_install" && kprobe(e)["policy_name"] == "kp-hooks"
    });
    let path = format!("{d}/tetragon");
    assert_eq!(
        kprobe(&ev)["args"][1]["file_arg"]["path"],
        path.as_str(),
        "{ev}"
    );
    let o = sh(&format!("cat {d}/tetragon"));
    assert!(o.status.success(), "cat outside the scope: {:?}", o.status);

    // __sys_setresuid reported (seed 003's sudo detection).
    let o = sh_in(
        &cg.path,
        "python3 -c 'import os; os.setresuid(-1, 0, -1)' || perl -e '$> = 0'",
    );
    assert!(o.status.success(), "setresuid: {:?}", o.status);
    let ev = agent.event("__sys_setresuid", |e| {
        kprobe(e)["function_name"] == "__sys_setresuid" && kprobe(e)["policy_name"] == "kp-hooks"
    });
    assert_eq!(kprobe(&ev)["args"][1]["int_arg"], 0, "{ev}");
    assert_eq!(kprobe(&ev)["verdict"], "alert", "{ev}");

    // A system call's own arguments (syscall: true): a user-memory string.
    let o = sh_in(&cg.path, &format!("cat {d}/sysblocked/x"));
    assert!(killed(&o), "cat sysblocked/x: {:?}", o.status);
    let ev = agent.event("sys_openat", |e| kprobe(e)["function_name"] == "sys_openat");
    assert_eq!(
        kprobe(&ev)["args"][0]["string_arg"],
        format!("{d}/sysblocked/x"),
        "{ev}"
    );

    // matchBinaries: the copied shell may not exec (its forked child is
    // killed in the exec, the shell goes on); /bin/sh may.
    let o = sh_in(
        &cg.path,
        &format!("{} -c '/bin/echo ran; echo after'", shell.display()),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("ran") && out.contains("after"),
        "exec from the listed shell: {out:?}"
    );
    let o = sh_in(
        &cg.path,
        &format!("{} -c 'exec /bin/echo ran'", shell.display()),
    );
    assert!(killed(&o), "exec from the listed shell: {:?}", o.status);
    let ev = agent.event("security_bprm_check", |e| {
        kprobe(e)["function_name"] == "security_bprm_check"
    });
    assert_eq!(
        kprobe(&ev)["process"]["binary"],
        shell.to_str().unwrap(),
        "{ev}"
    );
    let o = sh_in(&cg.path, "/bin/sh -c 'exec /bin/echo ran'");
    assert!(o.status.success(), "exec from /bin/sh: {:?}", o.status);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");

    // Override on a security_* function (an fmod_ret program beside the
    // kprobe): the open fails with argError, the caller lives on, the
    // file is untouched; with Sigkill too the caller dies and the open
    // (which would truncate) still never happens.
    let o = sh_in(&cg.path, &format!("cat {d}/override"));
    assert_eq!(o.status.code(), Some(1), "cat override: {:?}", o.status);
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "cat override: {}",
        stderr(&o)
    );
    let o = sh_in(&cg.path, &format!("echo pwned > {d}/override"));
    assert!(
        !o.status.success() && !killed(&o),
        "write override: {:?}",
        o.status
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("override")).unwrap(),
        "secret"
    );
    let ev = agent.event("security_file_open override", |e| {
        kprobe(e)["function_name"] == "security_file_open" && kprobe(e)["override_error"] == "EPERM"
    });
    let ev = kprobe(&ev);
    assert_eq!(ev["action"], "KPROBE_ACTION_OVERRIDE", "{ev}");
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(
        ev["args"][0]["file_arg"]["path"],
        format!("{d}/override"),
        "{ev}"
    );
    let o = sh_in(&cg.path, &format!("echo pwned > {d}/override-kill"));
    assert!(killed(&o), "write override-kill: {:?}", o.status);
    assert_eq!(
        std::fs::read_to_string(dir.join("override-kill")).unwrap(),
        "secret",
        "the open went ahead (O_TRUNC)"
    );
    let ev = agent.event("security_file_open override and kill", |e| {
        kprobe(e)["override_error"] == "EACCES"
    });
    assert_eq!(kprobe(&ev)["signal"], "SIGKILL", "{ev}");
    // Outside the scope the same open goes ahead.
    let o = sh(&format!("cat {d}/override"));
    assert!(
        o.status.success(),
        "cat override outside the scope: {:?}",
        o.status
    );
    // A function the kernel does not let a program fail: refused when
    // the policy is added, naming what is allowed; the agent goes on.
    let bad = dir.join("bad-override.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: bad-override\nspec:\n  kprobes:\n  - call: do_mkdirat\n    args: [{index: 1, type: filename}]\n    selectors:\n    - matchActions: [{action: Override, argError: -1}]\n",
    )
    .unwrap();
    let socket = agent.runtime_dir().join("tetragon.sock");
    let o = agent.vardr(&[
        "tracingpolicy",
        "add",
        bad.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "Override on do_mkdirat was accepted");
    assert!(
        stderr(&o).contains("does not let a program fail this function"),
        "{}",
        stderr(&o)
    );
    let o = sh_in(&cg.path, &format!("cat {d}/override"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "after the refused add: {:?}",
        o.status
    );

    // A return probe (syscall: true): the event comes at the return, with
    // the value, only for the calls matchReturnArgs lets through (ENOENT).
    let o = sh_in(&cg.path, &format!("cat {d}/ret/missing"));
    assert_eq!(o.status.code(), Some(1), "cat ret/missing: {:?}", o.status);
    let missing = format!("{d}/ret/missing");
    let ev = agent.event("sys_openat return", |e| {
        kprobe(e)["args"][0]["string_arg"] == missing.as_str()
    });
    let k = kprobe(&ev);
    assert_eq!(k["return"]["int_arg"], -2, "{ev}");
    assert_eq!(k["return_action"], "KPROBE_ACTION_POST", "{ev}");
    let o = sh_in(
        &cg.path,
        &format!("cat {d}/ret/exists; cat {d}/ret/missing2"),
    );
    assert!(!o.status.success(), "cat ret/missing2: {:?}", o.status);
    let missing2 = format!("{d}/ret/missing2");
    agent.event("sys_openat return 2", |e| {
        kprobe(e)["args"][0]["string_arg"] == missing2.as_str()
    });
    let exists = format!("{d}/ret/exists");
    let seen = agent.events_after(Duration::from_millis(300));
    assert!(
        !seen
            .iter()
            .any(|e| kprobe(e)["args"][0]["string_arg"] == exists.as_str()),
        "an open that succeeded was reported"
    );

    // matchReturnActions: the open that returned ENOENT kills its caller
    // after the call (it has run: the return value says so); one that
    // succeeded does not.
    let o = sh_in(&cg.path, &format!("cat {d}/retkill/missing"));
    assert!(killed(&o), "cat retkill/missing: {:?}", o.status);
    let retkill = format!("{d}/retkill/missing");
    let ev = agent.event("sys_openat return Sigkill", |e| {
        kprobe(e)["args"][0]["string_arg"] == retkill.as_str()
    });
    let k = kprobe(&ev);
    assert_eq!(k["return"]["int_arg"], -2, "{ev}");
    assert_eq!(k["return_action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    assert_eq!(k["verdict"], "deny", "{ev}");
    let o = sh_in(&cg.path, &format!("cat {d}/retkill/exists"));
    assert!(o.status.success(), "cat retkill/exists: {:?}", o.status);

    // A sock argument (tcp_connect): the destination port, address and
    // the local port, read in the kernel; the caller dies.
    let o = sh_in(
        &cg.path,
        &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'"),
    );
    assert!(killed(&o), "connect to {port}: {:?}", o.status);
    let ev = agent.event("tcp_connect", |e| {
        kprobe(e)["function_name"] == "tcp_connect" && kprobe(e)["policy_name"] == "kp-hooks"
    });
    let sock = &kprobe(&ev)["args"][0]["sock_arg"];
    assert_eq!(sock["dport"], port, "{ev}");
    assert_eq!(sock["daddr"], "127.0.0.1", "{ev}");
    assert_eq!(sock["family"], "AF_INET", "{ev}");
    assert_eq!(sock["protocol"], "IPPROTO_TCP", "{ev}");
    assert_eq!(sock["state"], "TCP_SYN_SENT", "{ev}");
    assert!(sock["sport"].as_u64().unwrap_or(0) >= 1024, "{ev}");
    // A sockaddr argument (security_socket_connect) with Override: the
    // connect is refused, the caller lives on.
    let o = sh_in(
        &cg.path,
        &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port2}'"),
    );
    assert!(
        !o.status.success() && !killed(&o),
        "connect to {port2}: {:?}",
        o.status
    );
    assert!(stderr(&o).contains("Connection refused"), "{}", stderr(&o));
    let ev = agent.event("security_socket_connect", |e| {
        kprobe(e)["function_name"] == "security_socket_connect"
    });
    let sa = &kprobe(&ev)["args"][0]["sockaddr_arg"];
    assert_eq!(sa["port"], port2, "{ev}");
    assert_eq!(sa["addr"], "127.0.0.1", "{ev}");
    assert_eq!(kprobe(&ev)["override_error"], "ECONNREFUSED", "{ev}");
    // Outside the scope both connect.
    let o = sh(&format!(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; exec 4<>/dev/tcp/127.0.0.1/{port2}'"
    ));
    assert!(
        o.status.success(),
        "connects outside the scope: {:?}",
        o.status
    );
    // Shipped block-443-for-wget (seed 003): wget dies, curl connects.
    assert!(
        Path::new("/usr/bin/wget").exists(),
        "no /usr/bin/wget (scripts/setup.sh vm installs it)"
    );
    assert!(l443.is_some(), "port 443 of the loopback is taken");
    let o = sh_in(
        &cg.path,
        "wget -q -T 2 -t 1 -O /dev/null http://127.0.0.1:443/",
    );
    assert!(killed(&o), "wget to 443: {:?}", o.status);
    agent.event("block-443-for-wget", |e| {
        kprobe(e)["policy_name"] == "block-443-for-wget"
    });
    let o = sh_in(&cg.path, "bash -c 'exec 3<>/dev/tcp/127.0.0.1/443'");
    assert!(o.status.success(), "another program to 443: {:?}", o.status);
    drop((l1, l2, l443));

    // Shipped sys-write-passwd (seed 003, without FollowFD): a write to
    // /etc/passwd (a file bound over it in a mount namespace of the
    // test's) kills the writer; the fd is resolved in the kernel, the
    // bytes and the count are reported.
    std::fs::write(dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let o = sh_in(
        &cg.path,
        &format!(
            "unshare -m sh -c 'mount --bind {d}/passwd /etc/passwd && echo pwned >> /etc/passwd'"
        ),
    );
    assert!(
        killed(&o),
        "write to /etc/passwd: {:?} {}",
        o.status,
        stderr(&o)
    );
    let ev = agent.event("sys-write-passwd", |e| {
        kprobe(e)["policy_name"] == "sys-write-passwd"
    });
    let k = kprobe(&ev);
    assert_eq!(k["args"][0]["file_arg"]["path"], "/etc/passwd", "{ev}");
    assert_eq!(k["args"][1]["bytes_arg"], "cHduZWQK", "{ev}"); // "pwned\n"
    assert_eq!(k["args"][2]["size_arg"], 6, "{ev}");
    assert_eq!(k["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    let o = sh_in(&cg.path, &format!("echo fine >> {d}/passwd"));
    assert!(
        o.status.success(),
        "a write to another file: {:?}",
        o.status
    );

    // Shipped block-shell-exec (seed 001): a shell outside the host's pid
    // namespace may not exec. `unshare --pid` without --fork leaves its
    // shell outside and makes that shell's first child the new
    // namespace's pid 1: a shell whose exec is killed.
    let o = sh_in(
        &cg.path,
        "unshare --pid sh -c '/bin/sh -c \"/bin/echo ran\"; echo rc=$?'",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.trim(), "rc=137", "a shell execs in a new pid namespace");
    let ev = agent.event("block-shell-exec", |e| {
        kprobe(e)["policy_name"] == "block-shell-exec"
    });
    // The exec failed with EPERM (Override) and the shell was killed.
    assert_eq!(kprobe(&ev)["action"], "KPROBE_ACTION_OVERRIDE", "{ev}");
    assert_eq!(kprobe(&ev)["override_error"], "EPERM", "{ev}");
    assert_eq!(kprobe(&ev)["signal"], "SIGKILL", "{ev}");

    // Shipped kill-mkdir (seed 003): `mkdir test`, as the name is written.
    let o = sh_in(&cg.path, &format!("cd {d} && mkdir test"));
    assert!(killed(&o), "mkdir test: {:?}", o.status);
    agent.event("kill-mkdir", |e| {
        kprobe(e)["policy_name"] == "kill-mkdir-test"
    });

    // Shipped fd-install-sigkill (seed 002): opening /tmp/tetragon.
    let o = sh_in(&cg.path, "cat /tmp/tetragon");
    assert!(killed(&o), "cat /tmp/tetragon: {:?}", o.status);
    agent.event("fd-install-sigkill", |e| {
        kprobe(e)["policy_name"] == "enforcement" && kprobe(e)["function_name"] == "fd_install"
    });
    drop(tmp_target);

    // Shipped detect-sudo (seed 003): the setresuid above was reported.
    let ev = agent.event("detect-sudo", |e| kprobe(e)["policy_name"] == "detect-sudo");
    assert_eq!(kprobe(&ev)["verdict"], "alert", "{ev}");
}

/// The C library the test itself runs with (the one `mkdir` loads too).
fn libc_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .map(str::to_string)
}

/// The offset in its file of the C library's `rmdir` (as a uprobe's
/// `offsets` names an instruction): its address in this process, placed
/// in the mapping of the file.
fn rmdir_offset() -> Option<u64> {
    // SAFETY: looks a symbol up in the loaded libraries.
    let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"rmdir".as_ptr()) } as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (lo, hi) = f.first()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let off = u64::from_str_radix(f.get(2)?, 16).ok()?;
        (lo <= addr && addr < hi && f.get(5)?.contains("/libc.so")).then(|| addr - lo + off)
    })
}

pub fn uprobe_hooks(b: Backend) {
    let (Some(libc), Some(rmdir)) = (libc_path(), rmdir_offset()) else {
        eprintln!("SKIPPED uprobe_hooks: no libc.so (with rmdir) mapped in this process");
        return;
    };
    let t = TempDir::new("uprobes");
    let dir = t.path();
    let tp = dir.join("up.yaml");
    std::fs::write(
        &tp,
        format!(
            r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: up-hooks
spec:
  uprobes:
  - path: "{libc}"
    symbols: ["mkdir"]
    message: "mkdir through the C library"
    args:
    - index: 0
      type: string
    - index: 1
      type: uint32
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/ublocked"]
      matchActions:
      - action: Sigkill
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{dir}/"]
  - path: "{libc}"
    offsets: [{rmdir}]
    args:
    - index: 0
      type: string
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/ogone"]
      matchActions:
      - action: Sigkill
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    let cg = test_cgroup("uprobes");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let mut agent = start(b, &cg.path, &pol, true);
    let uprobe = |e: &Value| e["process_uprobe"].clone();

    // Killed at the function's entry: the directory is never made.
    let blocked = dir.join("ublocked");
    let o = sh_in(&cg.path, &format!("mkdir {}", blocked.display()));
    assert!(killed(&o), "mkdir ublocked: {:?}", o.status);
    assert!(!blocked.exists(), "the killed mkdir made its directory");
    let ev = agent.event("uprobe mkdir ublocked", |e| {
        uprobe(e)["args"][0]["string_arg"] == blocked.to_str().unwrap()
    });
    let ev = uprobe(&ev);
    assert_eq!(ev["path"], libc.as_str(), "{ev}");
    assert_eq!(ev["symbol"], "mkdir", "{ev}");
    assert_eq!(ev["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    assert_eq!(ev["policy_name"], "up-hooks", "{ev}");

    // Reported, with the mode as the caller passed it.
    let ok = dir.join("uok");
    let o = sh_in(&cg.path, &format!("mkdir -m 750 {}", ok.display()));
    assert!(
        o.status.success() && ok.is_dir(),
        "mkdir uok: {:?}",
        o.status
    );
    let ev = agent.event("uprobe mkdir uok", |e| {
        uprobe(e)["args"][0]["string_arg"] == ok.to_str().unwrap()
    });
    assert_eq!(uprobe(&ev)["args"][1]["uint_arg"], 0o750, "{ev}");
    assert_eq!(uprobe(&ev)["verdict"], "alert", "{ev}");

    // By file offset (rmdir's first instruction): killed before it runs.
    let gone = dir.join("ogone");
    std::fs::create_dir(&gone).unwrap();
    let o = sh_in(&cg.path, &format!("rmdir {}", gone.display()));
    assert!(killed(&o), "rmdir ogone: {:?}", o.status);
    assert!(gone.is_dir(), "the killed rmdir removed its directory");
    let ev = agent.event("uprobe at an offset", |e| {
        uprobe(e)["args"][0]["string_arg"] == gone.to_str().unwrap()
    });
    let ev = uprobe(&ev);
    assert_eq!(ev["offset"], rmdir.to_string(), "{ev}");
    assert!(ev.get("symbol").is_none(), "{ev}");
    assert_eq!(ev["action"], "KPROBE_ACTION_SIGKILL", "{ev}");

    // Outside the scope the same call is neither killed nor reported.
    let outside = dir.join("outside/ublocked");
    let o = sh(&format!("mkdir -p {}", outside.display()));
    assert!(
        o.status.success() && outside.is_dir(),
        "mkdir outside: {:?}",
        o.status
    );
}
