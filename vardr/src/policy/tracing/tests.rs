//! What vardr runs: supported policies and the rules they become.
use std::path::Path;

use ipnet::IpNet;

use super::*;
use crate::policy::{Action, Hook, Protocol, Severity};

pub(super) const HEAD: &str =
    "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n";

pub(super) fn parse_ok(y: &str) -> TracingPolicy {
    parse(y, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn parse_err(y: &str) -> String {
    match parse(y, Path::new("t.yaml")) {
        Ok(p) => panic!("accepted: {p:#?}"),
        Err(e) => e.to_string(),
    }
}

/// A `file_open` hook (lines 6-11) whose selectors start on line 12.
pub(super) fn file_open(selectors: &str) -> String {
    format!("{HEAD}  lsmhooks:\n  - hook: file_open\n    args:\n    - index: 0\n      type: file\n    selectors:\n{selectors}")
}

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn file_open_equal_and_prefix() {
    let p = parse_ok(&file_open(
        "    - matchArgs:
      - index: 0
        operator: Equal
        values: [/etc/shadow, /etc/gshadow]
      matchActions:
      - action: Override
        argError: -1
    - matchArgs:
      - index: 0
        operator: Prefix
        values: [/etc/ssh/]
",
    ));
    assert_eq!(p.name, "t");
    assert_eq!(p.namespace, None);
    assert_eq!(p.rules.len(), 2);
    let (deny, alert) = (&p.rules[0], &p.rules[1]);
    assert_eq!(deny.name, "t.file_open.0.0");
    assert_eq!(deny.hook, Hook::FileOpen);
    assert_eq!(deny.action, Action::Deny);
    assert_eq!(deny.severity, Severity::Medium);
    assert_eq!(deny.paths, ["/etc/shadow", "/etc/gshadow"]);
    assert_eq!(deny.line, 12);
    assert_eq!(alert.name, "t.file_open.0.1");
    assert_eq!(alert.action, Action::Alert);
    assert_eq!(alert.prefixes, ["/etc/ssh/"]);
    // A string prefix "/etc/ssh/" does not match the directory "/etc/ssh".
    assert!(!alert.prefix_covers_dir);
    assert_eq!(alert.line, 19);
}

#[test]
fn message_and_tags_travel_with_every_rule_of_the_hook() {
    let long = "m".repeat(300);
    let y = file_open(
        "    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]
    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/ssh/]}]
",
    )
    .replace(
        "    selectors:\n",
        &format!("    message: {long}\n    tags: [observability.filesystem, \"cred\\\"s\"]\n    selectors:\n"),
    );
    let p = parse_ok(&y);
    assert_eq!(p.rules.len(), 2);
    for r in &p.rules {
        // Cut to Tetragon's 256 characters; tags as written.
        assert_eq!(r.message.as_deref(), Some(&long[..256]));
        assert_eq!(r.tags, ["observability.filesystem", "cred\"s"]);
    }
    let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    let e = parse_err(
        &file_open("    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n")
            .replace(
                "    selectors:\n",
                &format!(
                    "    message: x\n    tags: [{}]\n    selectors:\n",
                    many.join(", ")
                ),
            ),
    );
    assert!(e.contains("message \"x\" is too short"), "{e}");
    assert!(e.contains("17 tags: Tetragon allows at most 16"), "{e}");
}

#[test]
fn exec_equal_is_a_binary_and_prefix_a_directory() {
    let p = parse_ok(&format!(
        "{HEAD}  lsmhooks:
  - hook: bprm_check_security
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: [/usr/bin/nc, /usr/bin/ncat]}}]
      matchActions: [{{action: Sigkill}}]
    - matchArgs: [{{index: 0, operator: Prefix, values: [/tmp/, /dev/shm/]}}]
"
    ));
    let r = &p.rules;
    assert_eq!(r[0].hook, Hook::Exec);
    assert_eq!(r[0].action, Action::Deny, "Sigkill refuses the exec");
    assert_eq!(r[0].binaries, ["/usr/bin/nc", "/usr/bin/ncat"]);
    assert!(r[0].paths.is_empty());
    assert_eq!(r[0].name, "t.bprm_check_security.0.0");
    assert_eq!(r[1].prefixes, ["/tmp/", "/dev/shm/"]);
    assert_eq!(
        r[1].action,
        Action::Alert,
        "no matchActions: Tetragon posts"
    );
}

#[test]
fn socket_connect_addresses_ports_protocol_family() {
    let p = parse_ok(&format!(
        "{HEAD}  lsmhooks:
  - hook: socket_connect
    args:
    - {{index: 0, type: socket}}
    - {{index: 1, type: sockaddr}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: SAddr, values: [169.254.169.254, 10.0.0.0/8, 'fd00::/8']}}
      - {{index: 1, operator: SPort, values: [80, \"443\"]}}
      - {{index: 0, operator: Protocol, values: [IPPROTO_TCP]}}
      matchActions: [{{action: Override, argError: -111}}, {{action: Post}}]
    - matchArgs:
      - {{index: 1, operator: Family, values: [AF_INET6]}}
      - {{index: 1, operator: sport, values: [53]}}
      - {{index: 0, operator: Protocol, values: ['17']}}
    - matchArgs:
      - {{index: 1, operator: SAddr, values: [192.0.2.0/24, '2001:db8::/32']}}
      - {{index: 1, operator: Family, values: [AF_INET]}}
"
    ));
    let r = &p.rules;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].hook, Hook::Connect);
    assert_eq!(r[0].action, Action::Deny);
    assert_eq!(
        r[0].cidrs,
        nets(&["169.254.169.254/32", "10.0.0.0/8", "fd00::/8"])
    );
    assert_eq!(r[0].ports, [80, 443]);
    assert_eq!(r[0].protocol, Protocol::Tcp);
    // Family alone: every address of that family.
    assert_eq!(r[1].cidrs, nets(&["::/0"]));
    assert_eq!(r[1].protocol, Protocol::Udp);
    assert_eq!(r[1].action, Action::Alert);
    // Family narrows SAddr.
    assert_eq!(r[2].cidrs, nets(&["192.0.2.0/24"]));
    assert!(r[2].ports.is_empty());
    assert_eq!(r[2].protocol, Protocol::Any);
}

#[test]
fn monitor_mode_turns_denies_into_alerts() {
    let y = file_open(
        "    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]
      matchActions: [{action: Override, argError: -1}]
  options:
  - name: policy-mode
    value: monitor
",
    );
    assert_eq!(parse_ok(&y).rules[0].action, Action::Alert);
    let y = y.replace("monitor", "enforce");
    assert_eq!(parse_ok(&y).rules[0].action, Action::Deny);
}

#[test]
fn ordered_selectors_that_agree_are_accepted() {
    // Specific deny first, general alert after: Tetragon's first match and
    // vardr's most specific match agree.
    let p = parse_ok(&file_open(
        "    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]
      matchActions: [{action: Override, argError: -1}]
    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}]
",
    ));
    assert_eq!(p.rules.len(), 2);
}

#[test]
fn rule_names_are_valid_and_unique() {
    let y = file_open(
        "    - matchArgs: [{index: 0, operator: Equal, values: [/a]}]
    - matchArgs: [{index: 0, operator: Equal, values: [/b]}]
  - hook: file_open
    args: [{index: 0, type: file}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: [/c]}]
",
    )
    .replace("name: t", "name: \"my policy/x\"");
    let p = parse_ok(&y);
    let names: Vec<_> = p.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "my_policy_x.file_open.0.0",
            "my_policy_x.file_open.0.1",
            "my_policy_x.file_open.1.0"
        ]
    );
}

#[test]
fn kubectl_export_metadata_is_accepted() {
    let y = file_open("    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n")
        .replace(
            "  name: t\n",
            "  name: t\n  labels: {app: x}\n  annotations: {note: y}\n  uid: 0b6e\n  resourceVersion: \"42\"\n  generation: 1\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n  managedFields: [{manager: kubectl, fieldsV1: {\"f:spec\": {}}}]\n",
        );
    // Defaults spelled out, as the API server returns them, change nothing.
    let y = y.replace(
        "      type: file\n",
        "      type: file\n      resolve: \"\"\n      returnCopy: false\n      maxData: false\n      sizeArgIndex: 0\n",
    );
    let y = y.replace(
        "values: [/etc/shadow]}]\n",
        "values: [/etc/shadow]}]\n      matchActions: [{action: Post, rateLimit: \"\", kernelStackTrace: false, imaHash: false}]\n",
    );
    let p = parse_ok(&y);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].action, Action::Alert);
}

/// In the spirit of Tetragon's examples/tracingpolicy/lsm_file_open.yaml,
/// without its process selector; quoted values and a leading `---`.
#[test]
fn tetragon_lsm_file_open_example() {
    let p = parse_ok(
        "---
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: \"lsm-file-open\"
spec:
  lsmhooks:
  - hook: \"file_open\"
    args:
      - index: 0
        type: \"file\"
    selectors:
    - matchArgs:
      - index: 0
        operator: \"Equal\"
        values:
        - \"/etc/passwd\"
        - \"/etc/shadow\"
",
    );
    assert_eq!(p.rules[0].paths, ["/etc/passwd", "/etc/shadow"]);
    assert_eq!(p.rules[0].action, Action::Alert);
}

#[test]
fn detects_tracing_policies() {
    assert!(is_tracing_policy(&file_open("")));
    assert!(is_tracing_policy(
        "# x\napiVersion: \"cilium.io/v1alpha1\" # c\n"
    ));
    assert!(is_tracing_policy("kind: TracingPolicyNamespaced\n"));
    assert!(!is_tracing_policy(
        "apiVersion: vardr.dev/v1\nkind: Policy\nspec:\n  kind: TracingPolicy\n"
    ));
}

#[test]
fn shipped_tetragon_policies_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let dir = root.join("tetragon");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(is_tracing_policy(&text), "{}", path.display());
        let p = load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Rules (lsmhooks) or hooks of their own (kprobes, tracepoints).
        assert!(
            !p.rules.is_empty() || !p.hooks.is_empty(),
            "{}",
            path.display()
        );
        assert!(p.rules.is_empty() || p.rules.iter().any(|r| r.action == Action::Deny));
        n += 1;
    }
    assert!(n >= 3, "{n} files in {}", dir.display());
    // The native policies are not mistaken for TracingPolicies.
    let native = std::fs::read_to_string(root.join("default.yaml")).unwrap();
    assert!(!is_tracing_policy(&native));
}

#[test]
fn features_table_has_a_row_each() {
    let t = markdown_table();
    assert_eq!(t.lines().count(), FEATURES.len() + 2);
    assert!(t.contains("| kprobes | partly |"));
    assert!(t.contains("| uprobes | partly |"));
    assert!(t.contains("| lists | partly |"));
    assert!(t.contains("| fentries, usdts, loader, enforcers, selectorsMacros | not yet |"));
}
