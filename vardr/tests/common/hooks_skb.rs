//! TracingPolicy `skb` arguments end to end: a packet's headers read in the
//! kernel, matched with the socket operators (a Sigkill on one UDP port,
//! a Post on another, nothing on a third) and reported as Tetragon's
//! `skb_arg`. From the `net:net_dev_queue` tracepoint (every kernel: the
//! host tier) and from a kprobe on `ip_output` (the VM tier).
use std::path::Path;

use serde_json::Value;
use vardr::probe::Backend;

use super::{
    killed,
    scenarios::{policy, start},
    sh_in, test_cgroup, TempDir,
};

/// Where the hook is and which of its arguments is the `sk_buff`.
pub enum SkbHook {
    /// `net:net_dev_queue`, field 4 (`void *skbaddr`), in the sender's
    /// context on loopback.
    Tracepoint,
    /// `ip_output(net, sk, skb)`: argument 2.
    Kprobe,
}

const KILL_PORT: u16 = 39071;
const POST_PORT: u16 = 39072;
const OTHER_PORT: u16 = 39073;

fn tracing_policy(hook: &SkbHook) -> String {
    let (section, index) = match hook {
        SkbHook::Tracepoint => (
            "tracepoints:\n  - subsystem: net\n    event: net_dev_queue".to_string(),
            4,
        ),
        SkbHook::Kprobe => ("kprobes:\n  - call: ip_output".to_string(), 2),
    };
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: skb-hooks
spec:
  {section}
    args:
    - index: {index}
      type: skb
    selectors:
    - matchArgs:
      - index: {index}
        operator: DPort
        values: ["{KILL_PORT}"]
      - index: {index}
        operator: Protocol
        values: [IPPROTO_UDP]
      matchActions:
      - action: Sigkill
    - matchArgs:
      - index: {index}
        operator: DPort
        values: ["{POST_PORT}"]
      - index: {index}
        operator: DAddr
        values: [127.0.0.0/8]
      - index: {index}
        operator: NotSPortPriv
"#
    )
}

/// A UDP datagram of `n` bytes to 127.0.0.1:`port` from the test cgroup.
fn send_udp(cgroup: &Path, port: u16, n: usize) -> std::process::Output {
    sh_in(
        cgroup,
        &format!(
            "exec python3 -c 'import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b\"x\"*{n}, (\"127.0.0.1\",{port}))'"
        ),
    )
}

fn hook_event(e: &Value) -> &Value {
    if e["process_tracepoint"].is_object() {
        &e["process_tracepoint"]
    } else {
        &e["process_kprobe"]
    }
}

fn skb_of(e: &Value) -> &Value {
    &hook_event(e)["args"][0]["skb_arg"]
}

pub fn skb_hooks(b: Backend, hook: SkbHook) {
    let t = TempDir::new("skb");
    let tp = t.path().join("skb.yaml");
    std::fs::write(&tp, tracing_policy(&hook)).unwrap();
    let cg = test_cgroup("skb");
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let mut agent = start(b, &cg.path, &pol, true);

    // DPort and Protocol hold: the sender is killed from the hook.
    let o = send_udp(&cg.path, KILL_PORT, 10);
    assert!(killed(&o), "UDP to the Sigkill port: {:?}", o.status);
    let ev = agent.event("skb Sigkill", |e| skb_of(e)["dport"] == KILL_PORT);
    let h = hook_event(&ev);
    assert_eq!(h["action"], "KPROBE_ACTION_SIGKILL", "{ev}");
    assert_eq!(
        h["rule"],
        format!("skb-hooks.{}.0.0", section(&hook)),
        "{ev}"
    );

    // The Post selector: the packet as Tetragon's skb_arg.
    let o = send_udp(&cg.path, POST_PORT, 100);
    assert!(o.status.success(), "UDP to the Post port: {:?}", o.status);
    let ev = agent.event("skb Post", |e| skb_of(e)["dport"] == POST_PORT);
    let h = hook_event(&ev);
    assert_eq!(h["action"], "KPROBE_ACTION_POST", "{ev}");
    assert_eq!(h["verdict"], "alert", "{ev}");
    let skb = skb_of(&ev);
    assert_eq!(skb["family"], "AF_INET", "{ev}");
    assert_eq!(skb["protocol"], "IPPROTO_UDP", "{ev}");
    assert_eq!(skb["proto"], 17, "{ev}");
    assert_eq!(skb["saddr"], "127.0.0.1", "{ev}");
    assert_eq!(skb["daddr"], "127.0.0.1", "{ev}");
    assert!(skb["sport"].as_u64().unwrap_or(0) >= 1024, "{ev}");
    // 100 bytes of data, an 8-byte UDP and a 20-byte IP header at least.
    assert!(skb["len"].as_u64().unwrap_or(0) >= 128, "{ev}");

    // Another port: no selector holds, nothing is posted or killed.
    let o = send_udp(&cg.path, OTHER_PORT, 10);
    assert!(o.status.success(), "UDP to another port: {:?}", o.status);
    let seen = agent.events_after(std::time::Duration::from_millis(500));
    assert!(
        !seen.iter().any(|e| skb_of(e)["dport"] == OTHER_PORT),
        "a packet no selector matches was posted"
    );
}

fn section(hook: &SkbHook) -> &'static str {
    match hook {
        SkbHook::Tracepoint => "tracepoints",
        SkbHook::Kprobe => "kprobes",
    }
}
