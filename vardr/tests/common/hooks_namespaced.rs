//! `TracingPolicyNamespaced` end to end: a policy of one Kubernetes
//! namespace governs the processes of that namespace's pods only, found
//! as the kubelet lays them out (a pod log directory per pod, a cgroup per
//! pod named after its uid, its containers below), including a pod that
//! starts after the policy (found through a watch on the pod log root).
use std::{path::Path, time::Duration};

use vardr::{kernel::cgroup::OwnedCgroup, probe::Backend};

use super::{
    agent::AgentRun,
    killed,
    scenarios::{backend_name, policy},
    sh_in, test_cgroup, TempDir,
};

/// Nested cgroups, removed innermost first (also when a test fails).
struct Tree(Vec<OwnedCgroup>);

impl Tree {
    /// `kubepods/pod<uid>/<container>` below `scope`; returns the container.
    fn pod(&mut self, scope: &Path, uid: &str) -> std::path::PathBuf {
        let kubepods = scope.join("kubepods");
        if !kubepods.exists() {
            self.0
                .push(OwnedCgroup::create(scope, "kubepods").expect("kubepods"));
        }
        let pod = OwnedCgroup::create(&kubepods, &format!("pod{uid}")).expect("pod cgroup");
        let ctr = OwnedCgroup::create(&pod.path, "ctr").expect("container cgroup");
        let path = ctr.path.clone();
        self.0.push(pod);
        self.0.push(ctr);
        path
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        while let Some(c) = self.0.pop() {
            drop(c);
        }
    }
}

const UID_A: &str = "0d4f3f6a-8b1c-4e55-9c1b-6f2a7d3e9b10";
const UID_B: &str = "7a1e5c2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d";
const UID_C: &str = "c3b2a190-8f7e-4d6c-b5a4-938271605f4e";
const UID_D: &str = "5e4d3c2b-1a09-4f8e-9d7c-6b5a49382716";

pub fn namespaced_policies(b: Backend) {
    let t = TempDir::new("nspol");
    let logs = t.path().join("pods");
    std::fs::create_dir_all(logs.join(format!("payments_api_{UID_A}"))).unwrap();
    std::fs::create_dir_all(logs.join(format!("web_front_{UID_B}"))).unwrap();
    let blocked = t.path().join("blocked-dir");
    let tp = t.path().join("ns.yaml");
    std::fs::write(
        &tp,
        format!(
            r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicyNamespaced
metadata:
  name: ns-mkdir
  namespace: payments
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_mkdir
    args:
    - index: 5
      type: string
    selectors:
    - matchArgs:
      - index: 5
        operator: Equal
        values: ["{}"]
      matchActions:
      - action: Sigkill
"#,
            blocked.display()
        ),
    )
    .unwrap();
    let cg = test_cgroup("nspol");
    let mut tree = Tree(Vec::new());
    let pod_a = tree.pod(&cg.path, UID_A);
    let pod_b = tree.pod(&cg.path, UID_B);
    let pol = policy(&format!(
        "  rules: []\n  tracing_policies: [{}]\n",
        tp.display()
    ));
    let scope = cg.path.display().to_string();
    let logs_arg = logs.display().to_string();
    let mut agent = AgentRun::start(
        &pol,
        &[
            "--backend",
            backend_name(b),
            "--scope-cgroup",
            &scope,
            "--enforce",
            "--k8s-pod-logs",
            &logs_arg,
        ],
    );
    let mkdir = |cgroup: &Path| {
        let o = sh_in(cgroup, &format!("mkdir {}", blocked.display()));
        let _ = std::fs::remove_dir(&blocked);
        o
    };

    // A pod of the namespace: its container is governed.
    let o = mkdir(&pod_a);
    assert!(killed(&o), "mkdir in a payments pod: {:?}", o.status);
    let ev = agent.event("namespaced kill", |e| {
        e["process_tracepoint"]["policy_name"] == "ns-mkdir"
    });
    assert_eq!(
        ev["process_tracepoint"]["action"], "KPROBE_ACTION_SIGKILL",
        "{ev}"
    );
    // A cgroup the container makes below its own is still the pod's.
    let nested = OwnedCgroup::create(&pod_a, "nested").expect("nested cgroup");
    let nested_path = nested.path.clone();
    tree.0.push(nested);
    let o = mkdir(&nested_path);
    assert!(killed(&o), "mkdir nested in a payments pod: {:?}", o.status);
    // Another namespace's pod, and a process in no pod: not governed.
    let o = mkdir(&pod_b);
    assert!(o.status.success(), "mkdir in a web pod: {:?}", o.status);
    let o = mkdir(&cg.path);
    assert!(o.status.success(), "mkdir outside the pods: {:?}", o.status);

    // A pod of the namespace that starts now, as the kubelet starts one:
    // its cgroup, then its log directory, then its containers. The agent
    // watches the log root: the pod is governed as soon as it is logged,
    // before its first process (not at the agent's next 2 s look: a
    // missing watch fails this 3 times in 4).
    let governed = |agent: &mut AgentRun, n: usize| {
        agent.log_line(&format!("namespace payments: {n} pods governed"));
    };
    governed(&mut agent, 1);
    let pod_c = tree.pod(&cg.path, UID_C);
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(logs.join(format!("payments_worker_{UID_C}"))).unwrap();
    governed(&mut agent, 2);
    let latency = t0.elapsed();
    println!("a new pod was governed {latency:?} after its log directory appeared");
    assert!(
        latency < Duration::from_millis(500),
        "a new pod was governed only after {latency:?}: the log root watch did not bring it"
    );
    let o = mkdir(&pod_c);
    assert!(killed(&o), "mkdir in a new payments pod: {:?}", o.status);
    // A pod whose log directory comes before its cgroup: looked for again
    // until the cgroup is there.
    std::fs::create_dir_all(logs.join(format!("payments_batch_{UID_D}"))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pod_d = tree.pod(&cg.path, UID_D);
    let t1 = std::time::Instant::now();
    governed(&mut agent, 3);
    let latency = t1.elapsed();
    println!("a pod whose cgroup came late was governed {latency:?} after its cgroup");
    assert!(
        latency < Duration::from_millis(1000),
        "a late cgroup was found only after {latency:?}: not looked for again soon"
    );
    let o = mkdir(&pod_d);
    assert!(
        killed(&o),
        "mkdir in a late-cgroup payments pod: {:?}",
        o.status
    );
    drop(agent);
}
