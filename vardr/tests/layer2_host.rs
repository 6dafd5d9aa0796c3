//! Host tier: Layer 2 (Cedar) with a real agent. Enforcement (the kill
//! response and kernel-compiled forbids) is scoped to a test cgroup.
mod common;

use std::{process::Command, time::Duration};

use common::{
    agent::{which, AgentRun},
    require_root, serial, sh, sh_in, test_cgroup, TempDir,
};
use serde_json::Value;

/// A policy YAML naming `cedar.cedar` next to it.
fn policy_with_cedar(rules: &str) -> String {
    format!(
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata:\n  name: l2\nspec:\n  cedar: [cedar.cedar]\n  rules: {rules}\n"
    )
}

/// Starts an agent whose policy directory already holds `cedar`.
fn start(cedar: &str, args: &[&str]) -> AgentRun {
    // AgentRun writes the YAML into a fresh directory; the Cedar file must
    // be there first, so the YAML names it by absolute path instead.
    let dir = TempDir::new("cedar");
    let file = dir.join("cedar.cedar");
    std::fs::write(&file, cedar).unwrap();
    let yaml = policy_with_cedar("[]").replace("[cedar.cedar]", &format!("[{}]", file.display()));
    let agent = AgentRun::start(&yaml, args);
    // Keep the Cedar file with the agent's own directory for reloads.
    std::fs::copy(&file, agent.dir.join("cedar.cedar")).unwrap();
    agent
}

/// A copy of /bin/sh with a unique name: processes it starts are
/// recognisable by ancestry.
fn unique_shell(dir: &TempDir, name: &str) -> String {
    let p = dir.join(name);
    std::fs::copy(which("sh"), &p).unwrap();
    p.to_string_lossy().into_owned()
}

fn exec_event<'a>(events: &'a [Value], binary: &str, args: &str) -> Option<&'a Value> {
    events.iter().find_map(|e| {
        let ex = e.get("process_exec")?;
        (ex["process"]["binary"] == binary && ex["process"]["arguments"] == args).then_some(ex)
    })
}

fn wait_exec(agent: &mut AgentRun, binary: &str, args: &str) -> Value {
    let ev = agent.event(&format!("exec {binary} {args}"), |e| {
        e.get("process_exec").is_some_and(|ex| {
            ex["process"]["binary"] == binary && ex["process"]["arguments"] == args
        })
    });
    ev["process_exec"].clone()
}

#[test]
fn verdicts_follow_ancestry_permits_and_observed_opens() {
    if !require_root("verdicts_follow_ancestry_permits_and_observed_opens") {
        return;
    }
    let _serial = serial();
    let t = TempDir::new("l2-verdicts");
    let shell = unique_shell(&t, "l2shell");
    let echo = which("echo").to_string_lossy().into_owned();
    let truebin = which("true").to_string_lossy().into_owned();
    let secret = t.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "k").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cedar = format!(
        r#"
@id("to-test-port") @verdict("alert")
forbid (principal, action == Vardr::Action::"connect", resource)
when {{ resource.port == {port} && resource.ip.isLoopback() }};

@id("echo-under-l2shell") @response("kill") @severity("high")
forbid (principal in Vardr::Binary::"{shell}", action == Vardr::Action::"exec", resource == Vardr::Binary::"{echo}");

@id("secret-reads") @verdict("alert")
forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"{secret}")
unless {{ principal.uid == 4242 }};

@id("true-with-marker")
permit (principal, action == Vardr::Action::"exec", resource == Vardr::Binary::"{truebin}")
when {{ principal.args like "*l2-permit*" }};
"#,
        secret = secret.display()
    );
    let mut agent = start(&cedar, &[]);
    assert_eq!(agent.status()["cedar_policies"], 4);

    // Connects are observed (any address) and Cedar decides on the port.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ev = agent.policy_event("observed connect", |e| {
        e["args"][0]["sock_arg"]["dport"] == port
    });
    assert_eq!(ev["verdict"], "allow", "{ev}");
    assert_eq!(ev["layer2"]["verdict"], "alert", "{ev}");
    assert_eq!(ev["layer2"]["policies"][0], "to-test-port");
    drop(listener);

    // Started by the unique shell: deny after the fact. Audit mode (no
    // --enforce) reports the kill it would do and does nothing.
    let o = sh(&format!("{shell} -c '{echo} l2-one; {truebin}'"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "l2-one\n");
    let ex = wait_exec(&mut agent, &echo, "l2-one");
    assert_eq!(ex["layer2"]["verdict"], "deny", "{ex}");
    assert_eq!(ex["layer2"]["policies"][0], "echo-under-l2shell");
    assert_eq!(ex["layer2"]["severity"], "high");
    assert_eq!(
        ex["layer2"]["response"],
        "audit: would kill (enforcement off)"
    );
    // The same binary from another shell: no Cedar policy applies.
    sh(&format!("{echo} l2-two"));
    let ex = wait_exec(&mut agent, &echo, "l2-two");
    assert!(ex.get("layer2").is_none(), "{ex}");

    // A permit marks the event allow.
    Command::new(&truebin).arg("l2-permit").status().unwrap();
    let ex = wait_exec(&mut agent, &truebin, "l2-permit");
    assert_eq!(ex["layer2"]["verdict"], "allow", "{ex}");

    // Opens below the directory are reported (an observe rule in the
    // kernel) with Layer 1 verdict allow, and Cedar alerts on them.
    let key = secret.join("key");
    let o = sh(&format!("cat {}", key.display()));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "k");
    let key_s = key.to_string_lossy().into_owned();
    let ev = agent.policy_event("observed open", |e| {
        e["args"][0]["file_arg"]["path"] == key_s.as_str()
    });
    assert_eq!(ev["verdict"], "allow", "{ev}");
    assert!(ev.get("rule").is_none(), "{ev}");
    assert_eq!(ev["layer2"]["verdict"], "alert", "{ev}");
    assert_eq!(ev["layer2"]["policies"][0], "secret-reads");
    // An open elsewhere is not reported at all: by the time a later
    // observed open arrives, it would have (events keep their order).
    std::fs::write(t.join("plain"), "p").unwrap();
    std::fs::write(secret.join("key2"), "k2").unwrap();
    sh(&format!(
        "cat {}; cat {}/key2",
        t.join("plain").display(),
        secret.display()
    ));
    let key2 = secret.join("key2").to_string_lossy().into_owned();
    agent.policy_event("second observed open", |e| {
        e["args"][0]["file_arg"]["path"] == key2.as_str()
    });
    let plain = t.join("plain").to_string_lossy().into_owned();
    let other = agent
        .events
        .iter()
        .filter(|e| e["process_lsm"]["args"][0]["file_arg"]["path"] == plain.as_str())
        .count();
    assert_eq!(other, 0);
    assert!(agent.stop().success());
}

#[test]
fn deny_kills_inside_the_scope_and_simple_forbids_run_in_the_kernel() {
    if !require_root("deny_kills_inside_the_scope_and_simple_forbids_run_in_the_kernel") {
        return;
    }
    let _serial = serial();
    let t = TempDir::new("l2-kill");
    let shell = unique_shell(&t, "l2killer");
    let sleep = which("sleep").to_string_lossy().into_owned();
    let forbidden = t.join("l2-forbidden");
    std::fs::copy(which("true"), &forbidden).unwrap();
    let locked = t.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(locked.join("f"), "inside").unwrap();
    let cedar = format!(
        r#"
@id("sleep-under-l2killer") @response("kill")
forbid (principal in Vardr::Binary::"{shell}", action == Vardr::Action::"exec", resource == Vardr::Binary::"{sleep}");

@id("forbidden-binary")
forbid (principal, action == Vardr::Action::"exec", resource == Vardr::Binary::"{}");

@id("locked-files")
forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"{}");
"#,
        forbidden.display(),
        locked.display()
    );
    let cg = test_cgroup("l2");
    let cg_path = cg.path.clone();
    let mut agent = start(
        &cedar,
        &["--enforce", "--scope-cgroup", cg_path.to_str().unwrap()],
    );
    let status = agent.status();
    assert_eq!(status["kernel_enforced"][0], "forbidden-binary", "{status}");
    assert_eq!(status["kernel_enforced"][1], "locked-files", "{status}");
    agent.log_line("Cedar policy forbidden-binary is enforced in the kernel");

    // Inside the scope: the sleep is killed after its exec is reported.
    let started = std::time::Instant::now();
    let o = sh_in(&cg_path, &format!("{shell} -c '{sleep} 7; echo rc=$?'"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "rc=137");
    assert!(started.elapsed() < Duration::from_secs(6));
    let ex = wait_exec(&mut agent, &sleep, "7");
    assert_eq!(ex["layer2"]["verdict"], "deny", "{ex}");
    assert_eq!(ex["layer2"]["response"], "killed", "{ex}");
    let pid = ex["process"]["pid"].as_u64().unwrap();
    let exit = agent.event("exit of the killed sleep", |e| {
        e["process_exit"]["process"]["pid"] == pid
    });
    assert_eq!(exit["process_exit"]["signal"], "SIGKILL");

    // Outside the scope the same thing is reported, never killed.
    let o = sh(&format!("{shell} -c '{sleep} 0.2; echo rc=$?'"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "rc=0");
    let ex = wait_exec(&mut agent, &sleep, "0.2");
    assert_eq!(ex["layer2"]["verdict"], "deny");
    assert_eq!(ex["layer2"]["response"], "none: outside --scope-cgroup");

    // The simple forbid never runs in the scope: Layer 1 stops it.
    let o = sh_in(&cg_path, &format!("{} l2; echo rc=$?", forbidden.display()));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rc=137") || out.contains("rc=126"), "{out}");
    let f = forbidden.to_string_lossy().into_owned();
    let ev = agent.policy_event("kernel-enforced Cedar forbid", |e| {
        e["hook"] == "exec" && e["args"][0]["linux_binprm_arg"]["path"] == f.as_str()
    });
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(ev["rule"], "cedar:forbidden-binary");
    assert_eq!(ev["layer2"]["verdict"], "deny");
    assert_eq!(ev["layer2"]["response"], Value::Null);

    // `in Dir` governs what is below the directory, not the directory
    // itself (Cedar's meaning), in the kernel too.
    let o = sh_in(
        &cg_path,
        &format!(
            "ls {0}; echo ls=$?; cat {0}/f; echo cat=$?",
            locked.display()
        ),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("f\nls=0"), "{out}");
    assert!(!out.contains("inside"), "{out}");
    assert!(agent.status()["kernel_enforced"].as_array().unwrap().len() == 2);
    assert!(agent.stop().success());
    drop(cg);
}

#[test]
fn reload_switches_cedar_atomically_and_keeps_the_old_set_on_error() {
    if !require_root("reload_switches_cedar_atomically_and_keeps_the_old_set_on_error") {
        return;
    }
    let _serial = serial();
    let echo = which("echo").to_string_lossy().into_owned();
    let alert = |marker: &str| {
        format!(
            "@id(\"{marker}\") @verdict(\"alert\")\nforbid (principal, action == Vardr::Action::\"exec\", resource == Vardr::Binary::\"{echo}\")\nwhen {{ principal.args == \"{marker}\" }};\n"
        )
    };
    let mut agent = start(&alert("l2-old"), &[]);
    let cedar_file = agent.dir.join("cedar.cedar");
    // From now on the YAML names the Cedar file beside it.
    std::fs::write(agent.policy_path(), policy_with_cedar("[]")).unwrap();

    // A broken Cedar file: rejected with its position; the old set stays.
    std::fs::write(
        &cedar_file,
        "forbid (principal, action, resource)\nwhen { nope };\n",
    )
    .unwrap();
    let s = agent.reload();
    assert_eq!(s["last_reload"]["ok"], false, "{s}");
    let err = s["last_reload"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("cedar.cedar:2:"), "{err}");
    Command::new(&echo).arg("l2-old").output().unwrap();
    let ex = wait_exec(&mut agent, &echo, "l2-old");
    assert_eq!(ex["layer2"]["verdict"], "alert", "{ex}");

    // A good one replaces it whole.
    std::fs::write(&cedar_file, alert("l2-new")).unwrap();
    let s = agent.reload();
    assert_eq!(s["last_reload"]["ok"], true, "{s}");
    Command::new(&echo).arg("l2-old").output().unwrap();
    Command::new(&echo).arg("l2-new").output().unwrap();
    let new = wait_exec(&mut agent, &echo, "l2-new");
    assert_eq!(new["layer2"]["policies"][0], "l2-new", "{new}");
    let events = agent.events_after(Duration::from_millis(500));
    let olds: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.get("process_exec"))
        .filter(|e| e["process"]["arguments"] == "l2-old")
        .collect();
    assert_eq!(olds.len(), 2, "{olds:?}");
    assert!(olds[1].get("layer2").is_none(), "{:?}", olds[1]);
    assert!(exec_event(&events, &echo, "l2-new").is_some());
    assert!(agent.stop().success());
}

#[test]
fn observations_never_hide_layer1_rules() {
    if !require_root("observations_never_hide_layer1_rules") {
        return;
    }
    let _serial = serial();
    let t = TempDir::new("l2-shadow");
    let (real, w) = (t.join("real"), t.join("w"));
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(real.join("f"), "secret").unwrap();
    // A longer alias of the denied directory: its identity is the real
    // directory's, and an observation there must not outrank the deny.
    let alias = t.join("alias-of-the-real-directory");
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    // Root runs the tests: these Cedar policies never decide, they only
    // make the kernel observe.
    let cedar = format!(
        r#"
@verdict("alert") forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"{}") unless {{ principal.uid == 0 }};
@verdict("alert") forbid (principal, action in Vardr::Action::"open", resource in Vardr::Dir::"{}") unless {{ principal.uid == 0 }};
"#,
        alias.display(),
        w.display()
    );
    let rules = format!(
        "\n    - {{name: deny-real, hook: file_open, action: deny, match: {{prefixes: [{}]}}}}\n    - {{name: alert-w, hook: file_write, action: alert, match: {{prefixes: [{}]}}}}\n",
        real.display(),
        w.display()
    );
    let dir = TempDir::new("l2-shadow-policy");
    let file = dir.join("cedar.cedar");
    std::fs::write(&file, cedar).unwrap();
    let yaml = policy_with_cedar(&rules).replace("[cedar.cedar]", &format!("[{}]", file.display()));
    let cg = test_cgroup("l2shadow");
    let mut agent = AgentRun::start(
        &yaml,
        &["--enforce", "--scope-cgroup", cg.path.to_str().unwrap()],
    );
    let o = sh_in(&cg.path, &format!("cat {}/f", real.display()));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("secret"));
    let f = real.join("f").to_string_lossy().into_owned();
    let ev = agent.policy_event("deny of the real directory", |e| {
        e["args"][0]["file_arg"]["path"] == f.as_str()
    });
    assert_eq!(
        (ev["verdict"].as_str(), ev["rule"].as_str()),
        (Some("deny"), Some("deny-real")),
        "{ev}"
    );
    // A write: the Layer 1 write alert wins over the open observation.
    let g = w.join("g").to_string_lossy().into_owned();
    sh_in(&cg.path, &format!("echo x > {g}"));
    let ev = agent.policy_event("write alert", |e| {
        e["args"][0]["file_arg"]["path"] == g.as_str()
    });
    assert_eq!(
        (ev["verdict"].as_str(), ev["rule"].as_str()),
        (Some("alert"), Some("alert-w")),
        "{ev}"
    );
    assert!(agent.stop().success());
    drop(cg);
}
