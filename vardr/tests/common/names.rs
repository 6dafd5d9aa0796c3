//! TLS server names and DNS (`--tls-capture`, domain rules), once per
//! backend. Everything runs in a network namespace the test makes, inside
//! the test cgroup: an OpenSSL server, a plain server that counts what
//! each connection delivered, a DNS server on 127.0.0.1:53, and clients
//! (curl with the system OpenSSL; hand-made ClientHellos, as a client with
//! its own TLS stack sends them). No packet leaves the namespace.
use std::{path::Path, process::Command};

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    scenarios::{policy, start},
    sh_in, stderr, test_cgroup, TempDir,
};

const HELLO: &str = include_str!("names/hello.py");
const ECHO: &str = include_str!("names/echo_server.py");
const DNS: &str = include_str!("names/dns_server.py");
const RESOLVE: &str = include_str!("names/resolve.py");
const HELLO_STATIC: &str = include_str!("names/hello_static.c");

/// Whether the tools the scenario drives are installed (skip otherwise).
pub fn tools_available(test: &str) -> bool {
    for tool in ["openssl", "curl", "python3", "unshare", "ip", "cc"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED {test}: {tool} is needed (TLS server, clients, network namespace)");
            return false;
        }
    }
    true
}

fn tls_events(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["function_name"] == "tls_client_hello")
        .collect()
}

/// TLS events for `name` (events carry it lowercase, as matched).
fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    tls_events(events)
        .into_iter()
        .filter(|e| e["server_name"] == name)
        .collect()
}

/// One line `KEY=VALUE` of the script's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

pub fn server_names(b: Backend) {
    let t = TempDir::new("names");
    let d = t.path();
    for (f, body) in [
        ("hello.py", HELLO),
        ("echo_server.py", ECHO),
        ("dns_server.py", DNS),
        ("resolve.py", RESOLVE),
    ] {
        std::fs::write(d.join(f), body).unwrap();
    }
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=vardr-test", "-keyout"])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl req: {}", stderr(&o));
    // A statically linked client writing its own hello.
    let c = d.join("hello_static.c");
    std::fs::write(&c, HELLO_STATIC).unwrap();
    let o = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(d.join("hello_static"))
        .arg(&c)
        .output()
        .expect("cc (the C compiler) is needed for the statically linked client");
    assert!(o.status.success(), "cc -static: {}", stderr(&o));
    let p = policy(
        "  rules:
    - name: no-evil
      hook: connect
      action: deny
      match: { domains: [evil.test, '*.bad.test'] }
    - name: but-this-one
      hook: connect
      action: allow
      match: { domains: [ok.bad.test] }
    - name: watch
      hook: connect
      action: alert
      match: { domains: [watch.test] }
    - name: plain-port
      hook: connect
      action: alert
      match: { cidrs: [127.0.0.2/32], ports: [9] }
",
    );
    let cg = test_cgroup("names");
    let mut agent = start(b, &cg.path, &p, true);
    let out = run_clients(&cg.path, d);

    // curl (system OpenSSL): allowed names complete, denied ones are
    // killed after the kernel dropped their ClientHello.
    assert_eq!(field(&out, "watch"), "200", "alert rule lets it through");
    assert_eq!(
        field(&out, "okbad"),
        "200",
        "allow carves out of *.bad.test"
    );
    assert_eq!(field(&out, "fine"), "200");
    assert_eq!(field(&out, "evil"), "137", "denied name: killed");
    assert_eq!(field(&out, "xbad"), "137", "suffix rule, upper case");
    // Hand-made hellos: every way of dressing up a denied name, and hellos
    // the kernel cannot read, are refused; clean ones are answered.
    for case in [
        "upper", "dot", "dots", "late", "nul", "split1", "split5", "split6", "split20", "records",
        "retry",
    ] {
        assert_eq!(
            field(&out, case),
            "137",
            "raw hello {case:?} must be refused"
        );
    }
    for case in ["rawfine", "noname", "staticfine"] {
        assert_eq!(field(&out, case), "answered", "raw hello {case:?}");
    }
    assert_eq!(
        field(&out, "staticevil"),
        "137",
        "static client, denied name"
    );
    // The plain server logs every read: one from each answered hello (two
    // raw, one static), one from the first (clean) hello of "retry";
    // nothing from a refused one.
    let counts = std::fs::read_to_string(d.join("echo.log")).unwrap_or_default();
    let reads: Vec<u64> = counts
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(
        reads.len(),
        4,
        "only the clean hellos reach the server (bytes per read: {reads:?})"
    );

    let events = agent.policy_events_until(
        "6 evil.test denies, the watch.test and x.bad.test hellos, 7 unreadable hellos",
        |evs| {
            named(evs, "evil.test").len() >= 6
                && !named(evs, "watch.test").is_empty()
                && !named(evs, "x.bad.test").is_empty()
                && tls_events(evs)
                    .into_iter()
                    .filter(|e| e["rule"] == "unreadable-client-hello")
                    .count()
                    >= 7
        },
    );
    let deny = named(&events, "evil.test");
    assert_eq!(deny[0]["verdict"], "deny");
    assert_eq!(deny[0]["rule"], "no-evil");
    assert_eq!(deny[0]["response"], "killed");
    assert!(
        deny[0]["process"]["binary"]
            .as_str()
            .is_some_and(|b| b.ends_with("/curl")),
        "{:#}",
        deny[0]
    );
    assert_eq!(deny[0]["args"][1]["string_arg"], "evil.test");
    assert_eq!(deny[0]["args"][0]["sock_arg"]["dport"], 8443);
    let watch = named(&events, "watch.test");
    assert_eq!(
        watch.first().map(|e| e["verdict"].clone()),
        Some("alert".into())
    );
    // curl, upper case and the trailing dot (reported lowercase and
    // without it, as matched), the name after 40 other extensions, the
    // second hello of "retry", and the static client.
    assert_eq!(named(&events, "evil.test").len(), 6, "{events:#?}");
    // curl's x.BAD.test, under the suffix rule.
    let bad = named(&events, "x.bad.test");
    assert_eq!(
        bad.first().map(|e| e["rule"].clone()),
        Some("no-evil".into()),
        "{events:#?}"
    );
    let unreadable = tls_events(&events)
        .into_iter()
        .filter(|e| e["rule"] == "unreadable-client-hello")
        .count();
    assert_eq!(
        unreadable, 7,
        "split (after 1, 5, 6 and 20 bytes), fragmented, NUL and empty-label hellos: {events:#?}"
    );
    // --tls-capture is off: allowed hellos without a rule are not reported.
    assert!(named(&events, "fine.test").is_empty(), "{events:#?}");
    assert!(agent.stop().success());

    // --tls-capture: every hello is reported, and DNS answers name the
    // addresses of connect and TLS events; a plain connect to an address
    // DNS gave a denied name is killed after the fact.
    let mut agent = super::agent::AgentRun::start(
        &p,
        &[
            "--backend",
            if b == Backend::Lsm { "lsm" } else { "fallback" },
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--tls-capture",
            "--enforce",
        ],
    );
    let out = run_dns_clients(&cg.path, d);
    assert_eq!(field(&out, "plain"), "127.0.0.2");
    assert_eq!(field(&out, "named"), "200");
    assert_eq!(field(&out, "namekill"), "137", "{out}");
    let events = agent.policy_events_until(
        "the plain-port alert, the named.test hello and the dns_name_connect deny",
        |evs| {
            evs.iter().any(|e| e["rule"] == "plain-port")
                && !named(evs, "named.test").is_empty()
                && evs.iter().any(|e| e["function_name"] == "dns_name_connect")
        },
    );
    let plain = events
        .iter()
        .find(|e| e["rule"] == "plain-port")
        .unwrap_or_else(|| panic!("connect alert: {events:#?}"));
    assert_eq!(plain["dns_names"][0], "plain.test", "{plain:#}");
    let tls = named(&events, "named.test");
    assert_eq!(
        tls.first().map(|e| e["verdict"].clone()),
        Some("allow".into())
    );
    assert_eq!(tls[0]["dns_names"][0], "named.test", "{:#}", tls[0]);
    assert!(
        tls[0].get("rule").is_none(),
        "no rule matched: {:#}",
        tls[0]
    );
    let by_name = events
        .iter()
        .find(|e| e["function_name"] == "dns_name_connect")
        .unwrap_or_else(|| panic!("plain connect by a denied name: {events:#?}"));
    assert_eq!(by_name["rule"], "no-evil", "{by_name:#}");
    assert_eq!(by_name["verdict"], "deny");
    assert_eq!(by_name["action"], "KPROBE_ACTION_SIGKILL");
    assert_eq!(by_name["response"], "killed");
    assert_eq!(by_name["dns_names"][0], "x.bad.test");
    // Connects to addresses no domain rule names are not reported.
    assert!(
        !events
            .iter()
            .any(|e| e["function_name"] == "dns_name_connect" && e["rule"] != "no-evil"),
        "{events:#?}"
    );
    assert!(agent.stop().success());
}

/// The enforcing run's clients, in a fresh network namespace.
fn run_clients(cg: &Path, d: &Path) -> String {
    let d = d.display();
    let curl = |key: &str, name: &str| {
        format!(
            "curl -sk --max-time 5 --resolve {name}:8443:127.0.0.1 https://{name}:8443/ -o /dev/null -w '{key}=%{{http_code}}\\n'; rc=$?; [ $rc -ne 0 ] && echo {key}=$((rc > 128 ? rc : rc + 1000))\n"
        )
    };
    let mut script = servers(&d.to_string());
    for (key, name) in [
        ("watch", "watch.test"),
        ("okbad", "ok.bad.test"),
        ("fine", "fine.test"),
        ("evil", "evil.test"),
        ("xbad", "x.BAD.test"),
    ] {
        script.push_str(&curl(key, name));
    }
    for (key, case) in [
        ("upper", "upper"),
        ("dot", "dot"),
        ("late", "late"),
        ("nul", "nul"),
        ("dots", "dots"),
        ("split1", "split1"),
        ("split5", "split5"),
        ("split6", "split6"),
        ("split20", "split20"),
        ("records", "records"),
        ("retry", "retry"),
        ("rawfine", "fine"),
        ("noname", "noname"),
    ] {
        script.push_str(&format!(
            "r=$(python3 {d}/hello.py 9443 {case}); rc=$?; if [ $rc -eq 0 ]; then echo {key}=$r; else echo {key}=$rc; fi\n"
        ));
    }
    for (key, name) in [("staticfine", "fine.test"), ("staticevil", "evil.test")] {
        script.push_str(&format!(
            "r=$({d}/hello_static 9443 {name}); rc=$?; if [ $rc -eq 0 ]; then echo {key}=$r; else echo {key}=$rc; fi\n"
        ));
    }
    script.push_str("sleep 0.5\n");
    in_netns(cg, &script)
}

/// The capture run's clients: DNS lookups, then a connect and a TLS
/// connection to the addresses they gave.
fn run_dns_clients(cg: &Path, d: &Path) -> String {
    let d = d.display();
    let mut script = servers(&d.to_string());
    script.push_str(&format!(
        "echo plain=$(python3 {d}/resolve.py plain.test)
python3 -c 'import socket
try: socket.create_connection((\"127.0.0.2\", 9), timeout=2)
except OSError: pass'
a=$(python3 {d}/resolve.py named.test)
curl -sk --max-time 5 --resolve named.test:8443:$a https://named.test:8443/ -o /dev/null -w 'named=%{{http_code}}\\n'
b=$(python3 {d}/resolve.py x.bad.test)
python3 -c 'import socket,time
s=socket.create_connection((\"'$b'\", 9443), timeout=2); time.sleep(5)'; echo namekill=$?
"
    ));
    in_netns(cg, &script)
}

/// Starts the servers and waits until they listen.
fn servers(d: &str) -> String {
    format!(
        "ip link set lo up
openssl s_server -accept 8443 -cert {d}/cert.pem -key {d}/key.pem -www -quiet >/dev/null 2>&1 &
S1=$!
python3 {d}/echo_server.py 9443 {d}/echo.log &
S2=$!
python3 {d}/dns_server.py plain.test=127.0.0.2 named.test=127.0.0.3 x.bad.test=127.0.0.4 &
S3=$!
for i in $(seq 100); do
  python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8443)); socket.create_connection((\"127.0.0.1\", 9443))' 2>/dev/null && break
  sleep 0.1
done
"
    )
}

/// Runs `script` in a new network namespace inside `cg`; every process it
/// started is gone when the namespace's shell ends (killed by its PID).
fn in_netns(cg: &Path, script: &str) -> String {
    let wrapped = format!("{script}kill $S1 $S2 $S3 2>/dev/null; wait 2>/dev/null; exit 0\n");
    let o = sh_in(
        cg,
        &format!("unshare -n sh -c '{}'", wrapped.replace('\'', "'\\''")),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "client script: {out}\n{}", stderr(&o));
    out
}
