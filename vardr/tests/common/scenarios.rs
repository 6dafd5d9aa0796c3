//! End-to-end scenarios run against a real agent, once per backend: on the
//! host with the fallback backend (scoped to a test cgroup) and in the VM
//! tier with BPF LSM. The assertions differ only in how a denial shows.
use std::{net::TcpListener, path::Path, process::Output};

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    agent::{which, AgentRun},
    killed, sh, sh_in, stderr, test_cgroup, TempDir,
};

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Lsm => "lsm",
        _ => "fallback",
    }
}

fn policy(rules: &str) -> String {
    format!("apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: test\nspec:\n{rules}")
}

fn start(b: Backend, cgroup: &Path, policy: &str, enforce: bool) -> AgentRun {
    let cg = cgroup.to_str().unwrap().to_string();
    let mut args = vec!["--backend", backend_name(b), "--scope-cgroup", &cg];
    if enforce {
        args.push("--enforce");
    }
    AgentRun::start(policy, &args)
}

/// A denial as each backend shows it: the LSM hook's error (the shell
/// prints `lsm_message`), or death by SIGKILL from the fallback.
fn assert_blocked(b: Backend, o: &Output, what: &str, lsm_message: &str) {
    match b {
        Backend::Lsm => {
            assert!(!o.status.success(), "{what}: not denied");
            assert!(stderr(o).contains(lsm_message), "{what}: {}", stderr(o));
        }
        _ => assert!(
            killed(o),
            "{what}: not killed: {:?} {}",
            o.status,
            stderr(o)
        ),
    }
}

/// A denied open: EPERM.
pub fn assert_open_blocked(b: Backend, o: &Output, what: &str) {
    assert_blocked(b, o, what, "Operation not permitted");
}

/// A denied exec: EACCES.
pub fn assert_exec_blocked(b: Backend, o: &Output, what: &str) {
    assert_blocked(b, o, what, "Permission denied");
}

/// The event's binary is `cmd` (reported as executed: `/bin/cat` or
/// `/usr/bin/cat`, by PATH order).
fn assert_binary(ev: &Value, cmd: &str) {
    let bin = ev["process"]["binary"].as_str().unwrap_or_default();
    assert_eq!(std::fs::canonicalize(bin).ok(), Some(which(cmd)), "{ev}");
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {:?} {}", o.status, stderr(o));
}

fn is(ev: &Value, hook: &str, rule: &str) -> bool {
    ev["hook"] == hook && ev["rule"] == rule
}

fn path_of(ev: &Value) -> &str {
    let a = &ev["args"][0];
    a["file_arg"]["path"]
        .as_str()
        .or_else(|| a["linux_binprm_arg"]["path"].as_str())
        .unwrap_or("")
}

pub fn file_rules(b: Backend) {
    let t = TempDir::new("file");
    let dir = t.join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("secret"), "secret\n").unwrap();
    std::fs::write(dir.join("public"), "public\n").unwrap();
    std::fs::write(t.join("notes"), "orig\n").unwrap();
    std::fs::write(t.join("watched"), "w\n").unwrap();
    std::fs::create_dir(t.join("exactdir")).unwrap();
    std::fs::write(t.join("exactdir/f"), "f\n").unwrap();
    let d = t.path().display();
    let p = policy(&format!(
        "  rules:
    - name: deny-dir
      hook: file_open
      action: deny
      severity: high
      match: {{ prefixes: [{d}/dir] }}
    - name: allow-public
      hook: file_open
      action: allow
      match: {{ paths: [{d}/dir/public] }}
    - name: no-write-notes
      hook: file_write
      action: deny
      match: {{ paths: [{d}/notes] }}
    - name: watch
      hook: file_open
      action: alert
      match: {{ paths: [{d}/watched] }}
    - name: exact-dir
      hook: file_open
      action: deny
      match: {{ paths: [{d}/exactdir] }}
"
    ));
    let cg = test_cgroup("file");
    let mut agent = start(b, &cg.path, &p, true);

    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/dir/secret")),
        "deny prefix",
    );
    let o = sh_in(&cg.path, &format!("exec cat {d}/dir/public"));
    assert_ok(&o, "allow exception");
    assert_eq!(o.stdout, b"public\n");
    assert_ok(
        &sh_in(&cg.path, &format!("exec cat {d}/notes")),
        "read of write-protected file",
    );
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("echo x >> {d}/notes")),
        "append",
    );
    assert_eq!(
        std::fs::read(t.join("notes")).unwrap(),
        b"orig\n",
        "file changed"
    );
    assert_ok(
        &sh_in(&cg.path, &format!("exec cat {d}/watched")),
        "alert rule",
    );
    // An exact path names that file or directory only, not what is below it.
    assert_ok(
        &sh_in(&cg.path, &format!("exec cat {d}/exactdir/f")),
        "below an exact path",
    );
    // The allowed file replaced by a new inode (write + rename) stays allowed:
    // the path rule is more specific than the directory's identity.
    std::fs::write(dir.join("public.new"), "public\n").unwrap();
    std::fs::rename(dir.join("public.new"), dir.join("public")).unwrap();
    assert_ok(
        &sh_in(&cg.path, &format!("exec cat {d}/dir/public")),
        "replaced allowed file",
    );
    // Outside the scope nothing is governed.
    assert_ok(
        &sh(&format!("exec cat {d}/dir/secret")),
        "outside the cgroup",
    );

    let ev = agent.policy_event("deny-dir", |e| is(e, "file_open", "deny-dir"));
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["backend"], backend_name(b));
    assert_eq!(ev["severity"], "high");
    assert_eq!(ev["policy_name"], "test");
    assert_eq!(path_of(&ev), format!("{d}/dir/secret"));
    assert_eq!(ev["process"]["arguments"], format!("{d}/dir/secret"));
    assert_binary(&ev, "cat");
    let ev = agent.policy_event("no-write-notes", |e| is(e, "file_write", "no-write-notes"));
    assert_eq!(ev["verdict"], "deny");
    let ev = agent.policy_event("watch", |e| is(e, "file_open", "watch"));
    assert_eq!(ev["verdict"], "alert");
    // The allowed public file and the outside open produced no deny events.
    assert!(agent
        .policy_events()
        .iter()
        .all(|e| path_of(e) != format!("{d}/dir/public")));
    assert!(agent.stop().success());
}

pub fn exec_rules(b: Backend) {
    let t = TempDir::new("exec");
    let d = t.path().display();
    let truebin = which("true");
    std::fs::copy(&truebin, t.join("denied")).unwrap();
    std::fs::hard_link(t.join("denied"), t.join("hardlink")).unwrap();
    std::os::unix::fs::symlink(t.join("denied"), t.join("symlink")).unwrap();
    std::fs::create_dir(t.join("noexec")).unwrap();
    std::fs::copy(&truebin, t.join("noexec/tool")).unwrap();
    let p = policy(&format!(
        "  rules:
    - name: no-denied
      hook: exec
      action: deny
      match: {{ binaries: [{d}/denied] }}
    - name: no-exec-dir
      hook: exec
      action: deny
      match: {{ prefixes: [{d}/noexec] }}
"
    ));
    let cg = test_cgroup("exec");
    let mut agent = start(b, &cg.path, &p, true);
    for name in ["denied", "hardlink", "symlink", "noexec/tool"] {
        assert_exec_blocked(b, &sh_in(&cg.path, &format!("exec {d}/{name}")), name);
    }
    // Renaming does not change the identity.
    std::fs::rename(t.join("hardlink"), t.join("renamed")).unwrap();
    assert_exec_blocked(b, &sh_in(&cg.path, &format!("exec {d}/renamed")), "renamed");
    assert_ok(
        &sh_in(&cg.path, &format!("exec {}", truebin.display())),
        "unrelated binary",
    );
    assert_ok(&sh(&format!("exec {d}/denied")), "outside the cgroup");
    let ev = agent.policy_event("no-denied", |e| is(e, "exec", "no-denied"));
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["backend"], backend_name(b));
    agent.policy_event("no-exec-dir", |e| is(e, "exec", "no-exec-dir"));
    assert!(agent.stop().success());
}

/// `python3 -c` sending one UDP datagram to `host:port` without connecting;
/// prints the errno (0 on success).
fn sendto(cgroup: &Path, host: &str, port: u16) -> i32 {
    let script = format!(
        "python3 -c 'import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n  s.sendto(b\"x\", (\"{host}\",{port})); print(0)\nexcept OSError as e: print(e.errno)'"
    );
    let o = sh_in(cgroup, &script);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python3 said: {:?} {}", o.stdout, stderr(&o)))
}

/// `python3 -c` connecting to `host:port`; prints the errno (0 on success).
fn connect(cgroup: Option<&Path>, family: &str, host: &str, port: u16) -> i32 {
    let script = format!(
        "python3 -c 'import socket,sys\ns=socket.socket(socket.{family})\ntry:\n  s.connect((\"{host}\",{port})); print(0)\nexcept OSError as e: print(e.errno)'"
    );
    let o = match cgroup {
        Some(cg) => sh_in(cg, &script),
        None => sh(&script),
    };
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python3 said: {:?} {}", o.stdout, stderr(&o)))
}

pub fn python_available(test: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED {test}: python3 is needed to make test connections");
    }
    ok
}

pub fn network_rules(b: Backend) {
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let (dp, op) = (
        denied.local_addr().unwrap().port(),
        open.local_addr().unwrap().port(),
    );
    let p = policy(&format!(
        "  rules:
    - name: no-port
      hook: connect
      action: deny
      match: {{ cidrs: [127.0.0.0/8], ports: [{dp}], protocol: tcp }}
    - name: no-udp
      hook: connect
      action: deny
      match: {{ cidrs: [127.0.0.1], ports: [{dp}], protocol: udp }}
"
    ));
    let cg = test_cgroup("net");
    let mut agent = start(b, &cg.path, &p, true);
    let want = if b == Backend::Lsm {
        libc::ECONNREFUSED
    } else {
        libc::EPERM
    };
    assert_eq!(
        connect(Some(&cg.path), "AF_INET", "127.0.0.1", dp),
        want,
        "IPv4"
    );
    assert_eq!(
        connect(Some(&cg.path), "AF_INET6", "::ffff:127.0.0.1", dp),
        want,
        "IPv4-mapped IPv6 must not bypass an IPv4 rule"
    );
    assert_eq!(
        connect(Some(&cg.path), "AF_INET", "127.0.0.1", op),
        0,
        "other port"
    );
    assert_eq!(
        connect(None, "AF_INET", "127.0.0.1", dp),
        0,
        "outside the cgroup"
    );
    // Unconnected UDP sends are checked too (cgroup sendmsg hooks on both backends).
    assert_eq!(sendto(&cg.path, "127.0.0.1", dp), libc::EPERM, "UDP sendto");
    assert_eq!(
        sendto(&cg.path, "127.0.0.1", op),
        0,
        "UDP sendto to another port"
    );
    let ev = agent.policy_event("no-port", |e| is(e, "connect", "no-port"));
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["args"][0]["sock_arg"]["daddr"], "127.0.0.1");
    assert_eq!(ev["args"][0]["sock_arg"]["dport"], dp);
    assert_eq!(ev["args"][0]["sock_arg"]["protocol"], "tcp");
    assert!(agent.stop().success());
}

pub fn audit_mode(b: Backend) {
    let t = TempDir::new("audit");
    std::fs::write(t.join("secret"), "s\n").unwrap();
    let d = t.path().display();
    let p = policy(&format!(
        "  rules:\n    - name: deny-secret\n      hook: file_open\n      action: deny\n      match: {{ paths: [{d}/secret] }}\n"
    ));
    let cg = test_cgroup("audit");
    let mut agent = start(b, &cg.path, &p, false);
    let o = sh_in(&cg.path, &format!("exec cat {d}/secret"));
    assert_ok(&o, "audit mode must not block");
    assert_eq!(o.stdout, b"s\n");
    let ev = agent.policy_event("audit", |e| is(e, "file_open", "deny-secret"));
    assert_eq!(ev["verdict"], "audit");
    let st = agent.vardr(&[
        "status",
        "--json",
        "--runtime-dir",
        agent.runtime_dir().to_str().unwrap(),
    ]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["mode"], "audit");
    assert!(st["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["enforcing"] == false));
    assert!(agent.stop().success());
}

/// `--backend audit --enforce`: the audit backend never blocks, says so in
/// every event and in `vardr status`.
pub fn audit_backend() {
    let t = TempDir::new("auditbe");
    std::fs::write(t.join("secret"), "s\n").unwrap();
    let d = t.path().display();
    let p = policy(&format!(
        "  rules:\n    - name: deny-secret\n      hook: file_open\n      action: deny\n      match: {{ paths: [{d}/secret] }}\n"
    ));
    let cg = test_cgroup("auditbe");
    let cgp = cg.path.to_str().unwrap().to_string();
    let mut agent = AgentRun::start(
        &p,
        &["--backend", "audit", "--enforce", "--scope-cgroup", &cgp],
    );
    agent.log_line("cannot be enforced on this kernel");
    let o = sh_in(&cg.path, &format!("exec cat {d}/secret"));
    assert_ok(&o, "audit backend must not block");
    let ev = agent.policy_event("audit", |e| is(e, "file_open", "deny-secret"));
    assert_eq!(ev["verdict"], "audit");
    assert_eq!(ev["backend"], "audit");
    assert_binary(&ev, "cat");
    let st = agent.vardr(&[
        "status",
        "--json",
        "--runtime-dir",
        agent.runtime_dir().to_str().unwrap(),
    ]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["mode"], "enforce");
    for h in st["hooks"].as_array().unwrap() {
        assert_eq!(h["backend"], "audit");
        assert_eq!(h["enforcing"], false);
    }
    assert!(agent.stop().success());
}

pub fn exemptions(b: Backend) {
    let t = TempDir::new("exempt");
    std::fs::write(t.join("secret"), "s\n").unwrap();
    let d = t.path().display();
    let head = which("head");
    let p = policy(&format!(
        "  exempt_binaries: [{}]\n  rules:\n    - name: deny-secret\n      hook: file_open\n      action: deny\n      match: {{ paths: [{d}/secret] }}\n",
        head.display()
    ));
    let cg = test_cgroup("exempt");
    let mut agent = start(b, &cg.path, &p, true);
    assert_ok(
        &sh_in(&cg.path, &format!("exec {} {d}/secret", head.display())),
        "exempt binary",
    );
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/secret")),
        "not exempt",
    );
    assert!(agent.stop().success());
}

pub fn reload(b: Backend) {
    use std::io::Write;
    let t = TempDir::new("reload");
    std::fs::write(t.join("a"), "a\n").unwrap();
    std::fs::write(t.join("b"), "b\n").unwrap();
    let d = t.path().display();
    let deny = |f: &str, extra: &str| {
        policy(&format!(
            "{extra}  rules:\n    - name: deny-{f}\n      hook: file_open\n      action: deny\n      match: {{ paths: [{d}/{f}] }}\n"
        ))
    };
    let cg = test_cgroup("reload");
    let mut agent = start(b, &cg.path, &deny("a", ""), true);
    let rd = agent.runtime_dir();
    let rd = rd.to_str().unwrap();
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/a")),
        "a before reload",
    );

    // `vardr policy apply` swaps the whole rule set.
    let pb = t.join("b.yaml");
    std::fs::write(&pb, deny("b", "")).unwrap();
    let o = agent.vardr(&["policy", "apply", pb.to_str().unwrap(), "--runtime-dir", rd]);
    assert_ok(&o, "apply");
    assert_ok(
        &sh_in(&cg.path, &format!("exec cat {d}/a")),
        "a after reload",
    );
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/b")),
        "b after reload",
    );

    // A bad file is rejected with its position; the running policy stays.
    let bad = t.join("bad.yaml");
    std::fs::write(&bad, deny("b", "").replace("file_open", "file_opn")).unwrap();
    let o = agent.vardr(&[
        "policy",
        "apply",
        bad.to_str().unwrap(),
        "--runtime-dir",
        rd,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.yaml:8:"), "{}", stderr(&o));
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/b")),
        "b after rejected apply",
    );

    // SIGHUP reloads the current file; exempt_pids exempts a running process.
    let mut waiter = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs; read x; exec cat {d}/b",
            cg.path.display()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(
        &pb,
        deny("b", &format!("  exempt_pids: [{}]\n", waiter.id())),
    )
    .unwrap();
    let st = agent.reload();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    writeln!(waiter.stdin.take().unwrap()).unwrap();
    let o = waiter.wait_with_output().unwrap();
    assert_ok(&o, "exempt pid");
    assert_eq!(o.stdout, b"b\n");
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/b")),
        "b for others",
    );

    // A broken file on SIGHUP: rejected by the agent, old rules stay, status says why.
    std::fs::write(
        &pb,
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: x}\nspec: {rules: [{name: y}]}\n",
    )
    .unwrap();
    let st = agent.reload();
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &format!("exec cat {d}/b")),
        "b after rejected reload",
    );
    assert_eq!(st["last_reload"]["ok"], false);
    assert_eq!(st["last_reload"]["seq"], 3);
    let err = st["last_reload"]["error"].as_str().unwrap();
    assert!(err.contains("b.yaml:4:"), "{err}");
    assert!(agent.stop().success());
    // Stopped: nothing is governed any more.
    assert_ok(&sh_in(&cg.path, &format!("exec cat {d}/b")), "after stop");
}

/// LSM only: paths are resolved by the kernel, and rules follow inodes, so
/// the usual tricks reach the same file and are denied.
pub fn bypass_attempts(b: Backend) {
    let t = TempDir::new("bypass");
    let dir = t.join("dir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("secret"), "secret\n").unwrap();
    std::os::unix::fs::symlink(dir.join("secret"), t.join("link")).unwrap();
    std::fs::create_dir(t.join("bind")).unwrap();
    let d = t.path().display();
    let p = policy(&format!(
        "  rules:\n    - name: deny-dir\n      hook: file_open\n      action: deny\n      match: {{ prefixes: [{d}/dir] }}\n"
    ));
    let cg = test_cgroup("bypass");
    let mut agent = start(b, &cg.path, &p, true);
    let tries = [
        ("relative path", format!("cd {d}/dir && exec cat secret")),
        ("dot-dot", format!("exec cat {d}/dir/sub/../secret")),
        ("symlink", format!("exec cat {d}/link")),
        ("/proc/self/fd reopen", format!("exec 3< {d} && exec cat /proc/self/fd/3/dir/secret")),
        (
            "bind mount",
            format!("mount --bind {d}/dir {d}/bind && cat {d}/bind/secret; rc=$?; umount {d}/bind; exit $rc"),
        ),
        (
            "mount namespace",
            format!("exec unshare -m sh -c 'mount --bind {d}/dir /mnt && exec cat /mnt/secret'"),
        ),
    ];
    for (what, script) in &tries {
        assert_open_blocked(b, &sh_in(&cg.path, script), what);
    }
    // chroot: a jail holding a static busybox and the directory bind-mounted in.
    let busybox = std::path::Path::new("/bin/busybox");
    if busybox.exists() {
        let jail = t.join("jail");
        std::fs::create_dir_all(jail.join("bin")).unwrap();
        std::fs::create_dir_all(jail.join("data")).unwrap();
        std::fs::copy(busybox, jail.join("bin/busybox")).unwrap();
        let j = jail.display();
        let o = sh_in(
            &cg.path,
            &format!("mount --bind {d}/dir {j}/data && chroot {j} /bin/busybox cat /data/secret; rc=$?; umount {j}/data; exit $rc"),
        );
        assert_open_blocked(b, &o, "chroot");
    } else {
        eprintln!("CHECK NOT RUN (the test goes on): chroot bypass: /bin/busybox (busybox-static) not installed");
    }
    // Every attempt was reported with the path the kernel resolved.
    let n = agent
        .policy_events()
        .iter()
        .filter(|e| is(e, "file_open", "deny-dir") && e["verdict"] == "deny")
        .count();
    assert!(n >= tries.len(), "only {n} deny events");
    assert!(agent.stop().success());
    assert_eq!(std::fs::read(dir.join("secret")).unwrap(), b"secret\n");
}

/// The shipped policies do what they say (the parts that can be tried
/// safely: no writes happen, and no traffic leaves loopback).
pub fn shipped_policies(b: Backend) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cg = test_cgroup("shipped");
    let cgp = cg.path.to_str().unwrap().to_string();
    // An append-open that writes nothing: harmless even if it were allowed.
    let append = |path: &str| format!("exec python3 -c \"open('{path}', 'a').close()\"");

    let default = std::fs::read_to_string(repo.join("policies/default.yaml")).unwrap();
    let mut agent = AgentRun::start(
        &default,
        &[
            "--backend",
            backend_name(b),
            "--scope-cgroup",
            &cgp,
            "--enforce",
        ],
    );
    let before = std::fs::metadata("/etc/shadow")
        .unwrap()
        .modified()
        .unwrap();
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &append("/etc/shadow")),
        "default: write-open /etc/shadow",
    );
    assert_eq!(
        std::fs::metadata("/etc/shadow")
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_ok(
        &sh_in(&cg.path, "exec cat /etc/shadow > /dev/null"),
        "default: reading shadow is only an alert",
    );
    let ev = agent.policy_event("read-shadow", |e| is(e, "file_open", "read-shadow"));
    assert_eq!(ev["verdict"], "alert");
    let ev = agent.policy_event("protect-credentials", |e| {
        is(e, "file_write", "protect-credentials")
    });
    assert_eq!(ev["verdict"], "deny");
    assert!(agent.stop().success());

    let examples = repo.join("policies/examples");
    let no_tmp = std::fs::read_to_string(examples.join("no-shells-from-tmp.yaml")).unwrap();
    let mut agent = AgentRun::start(
        &no_tmp,
        &[
            "--backend",
            backend_name(b),
            "--scope-cgroup",
            &cgp,
            "--enforce",
        ],
    );
    let t = TempDir::new("shipped");
    std::fs::copy(which("true"), t.join("dropper")).unwrap();
    if t.path().starts_with("/tmp") {
        assert_exec_blocked(
            b,
            &sh_in(&cg.path, &format!("exec {}/dropper", t.path().display())),
            "exec from /tmp",
        );
        agent.policy_event("no-exec-tmp", |e| is(e, "exec", "no-exec-tmp"));
    } else {
        eprintln!(
            "CHECK NOT RUN (the test goes on): exec from /tmp: the temp dir is {}",
            t.path().display()
        );
    }
    assert_ok(&sh_in(&cg.path, "exec /bin/true"), "exec from /bin");
    assert!(agent.stop().success());

    let ro_etc = std::fs::read_to_string(examples.join("allow-exceptions.yaml")).unwrap();
    let mut agent = AgentRun::start(
        &ro_etc,
        &[
            "--backend",
            backend_name(b),
            "--scope-cgroup",
            &cgp,
            "--enforce",
        ],
    );
    assert_open_blocked(
        b,
        &sh_in(&cg.path, &append("/etc/hostname")),
        "allow-exceptions: /etc is read-only",
    );
    assert_ok(
        &sh_in(&cg.path, "exec cat /etc/hostname"),
        "allow-exceptions: reads stay allowed",
    );
    agent.policy_event("etc-read-only", |e| is(e, "file_write", "etc-read-only"));
    assert!(agent.stop().success());
}
