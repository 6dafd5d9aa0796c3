//! What vardr rejects, each at its position and by name.
use super::{
    generic::HookPoint,
    tests::{file_open, parse_err, parse_ok, HEAD},
};

/// Asserts that `err` has a diagnostic at `line:col` containing `msg`.
#[track_caller]
pub(super) fn has(err: &str, line: u64, col: u64, msg: &str) {
    let at = format!("t.yaml:{line}:{col}: ");
    assert!(
        err.lines().any(|l| l.starts_with(&at) && l.contains(msg)),
        "no {at}...{msg} in:\n{err}"
    );
}

#[test]
fn process_selectors_make_an_lsm_hook_of_its_own() {
    // Native rules have no process selectors: the entry runs as a BPF LSM
    // hook with its selectors in the kernel, as a kprobe's.
    let p = parse_ok(&file_open(
        "    - matchBinaries:
      - operator: In
        values: [/usr/bin/cat]
      matchPIDs:
      - {operator: NotIn, values: [1]}
      matchNamespaces: [{namespace: Pid, operator: In, values: [host_ns]}]
      matchCapabilities: [{operator: In, values: [CAP_SYS_ADMIN]}]
      matchArgs: [{index: 0, operator: Equal, values: [/etc/passwd]}]
",
    ));
    assert!(p.rules.is_empty(), "{p:#?}");
    let h = &p.hooks[0];
    assert_eq!(
        h.point,
        HookPoint::Lsm {
            hook: "file_open".into()
        }
    );
    assert_eq!(h.name, "t.lsmhooks.0");
    let s = &h.selectors[0];
    assert_eq!(
        s.binaries.as_ref().map(|b| b.paths.clone()),
        Some(vec!["/usr/bin/cat".to_string()])
    );
    assert!(!s.process.is_empty());
    assert_eq!(s.matches.len(), 1);
    // No matchActions: Post, as in Tetragon.
    assert!(s.actions.post && s.actions.override_error.is_none());
}
#[test]
fn unsupported_operators_values_and_actions() {
    // What native rules cannot say runs as a BPF LSM hook of its own:
    // Postfix, a prefix that is not a directory, NoPost, rateLimit,
    // Signal, Override with its own errno.
    let p = parse_ok(&file_open(
        "    - matchArgs: [{index: 0, operator: Postfix, values: [passwd]}]
    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/passw, /etc]}]
      matchActions: [{action: NoPost}]
    - matchArgs: [{index: 0, operator: Equal, values: [/etc/passwd]}]
      matchActions: [{action: Post, rateLimit: 1m}, {action: Override, argError: -13}, {action: Signal, argSig: 9}]
",
    ));
    let h = &p.hooks[0];
    assert!(p.rules.is_empty() && h.selectors.len() == 3, "{p:#?}");
    assert!(!h.selectors[1].actions.post);
    let a = h.selectors[2].actions;
    assert_eq!(a.override_error, Some(-13));
    assert_eq!(a.signal, Some(9));
    assert!(a.rate_limit.is_some());
    // What neither can run is named at its position.
    let e = parse_err(&file_open(
        "    - matchArgs: [{index: 0, operator: Equal, values: [/etc/passwd]}]
      matchActions: [{action: Override}]
    - matchArgs: [{index: 0, operator: Sideways, values: [x]}]
    - matchArgs: [{index: 0, operator: Mask, values: ['1']}]
      matchActions: [{action: GetUrl, argUrl: http://x}]
",
    ));
    has(&e, 13, 31, "Override needs argError");
    has(
        &e,
        14,
        40,
        "matchArgs operator Sideways: not yet supported by vardr",
    );
    has(
        &e,
        15,
        40,
        "matchArgs Mask compares numbers: argument 0 is a file",
    );
    has(&e, 16, 31, "action GetUrl: not yet supported by vardr");
    assert_eq!(e.lines().count(), 4, "{e}");
}
#[test]
fn other_sections_are_rejected_by_name() {
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_file_open
    syscall: false
  tracepoints: [{{subsystem: syscalls, event: sys_enter_open}}]
  uprobes: [{{path: /bin/bash, symbols: [readline]}}]
  usdts: [{{path: /x, provider: p, name: n}}]
  lists: [{{name: allcalls, type: generated_syscalls}}]
  loader: true
  podSelector: {{matchLabels: {{app: web}}}}
  options: [{{name: disable-kprobe-multi, value: \"1\"}}]
"
    ));
    has(&e, 11, 18, "usdts (path \"/x\")");
    has(
        &e,
        12,
        18,
        "lists (list \"allcalls\"): type generated_syscalls: not yet supported by vardr",
    );
    has(&e, 13, 11, "loader: not yet supported by vardr");
    has(&e, 14, 16, "podSelector: not yet supported by vardr");
    has(
        &e,
        15,
        20,
        "options: option \"disable-kprobe-multi\": not yet supported by vardr",
    );
}

#[test]
fn namespaced_kind_short_tags_and_arg_fields() {
    let y = file_open("    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n")
        .replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
        .replace("  name: t\n", "  name: t\n  namespace: web\n")
        .replace(
            "      type: file\n",
            "      type: file\n      resolve: f_path\n    - index: 1\n      type: int\n    message: hi\n    tags: [a]\n",
        );
    let e = parse_err(&y);
    // The kind itself is accepted (with its namespace).
    assert!(!e.contains("TracingPolicyNamespaced"), "{e}");
    has(
        &e,
        12,
        16,
        "args index 0: resolve: not yet supported by vardr",
    );
    // A message of two characters is Tetragon's shortest; tags need two.
    assert!(!e.contains("message"), "{e}");
    has(
        &e,
        16,
        12,
        "tag \"a\" is too short: Tetragon needs at least 2 characters",
    );
}

/// A `TracingPolicyNamespaced`: its hooks carry the namespace (its
/// lsmhooks run as hooks of their own, never as native rules, which would
/// govern every pod); the namespace is required and must be a name.
#[test]
fn namespaced_policies_carry_their_namespace() {
    let y = file_open("    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n")
        .replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
        .replace("  name: t\n", "  name: t\n  namespace: payments\n");
    let p = parse_ok(&y);
    assert!(p.rules.is_empty(), "{:?}", p.rules);
    assert_eq!(p.namespace.as_deref(), Some("payments"));
    assert_eq!(p.hooks.len(), 1);
    assert_eq!(p.hooks[0].namespace.as_deref(), Some("payments"));
    let e = parse_err(&y.replace("  namespace: payments\n", ""));
    has(
        &e,
        2,
        7,
        "a TracingPolicyNamespaced needs metadata.namespace",
    );
    let e = parse_err(&y.replace("namespace: payments", "namespace: Pay_ments"));
    has(
        &e,
        5,
        14,
        "metadata.namespace \"Pay_ments\" is not a Kubernetes namespace name",
    );
}

#[test]
fn socket_connect_mistakes() {
    let e = parse_err(&format!(
        "{HEAD}  lsmhooks:
  - hook: socket_connect
    args: [{{index: 0, type: sock}}, {{index: 1, type: sockaddr}}]
    selectors:
    - matchArgs:
      - {{index: 1, operator: DAddr, values: [10.0.0.0/8]}}
      - {{index: 1, operator: SPort, values: ['1000:2000']}}
      - {{index: 0, operator: Protocol, values: [IPPROTO_TCP, IPPROTO_UDP]}}
      - {{index: 2, operator: Equal, values: ['16']}}
      - {{index: 1, operator: Family, values: [AF_UNIX]}}
      matchActions: [{{action: Override, argError: 111}}]
"
    ));
    // Native rules cannot say it (a sock argument, port ranges, two
    // protocols): checked as a BPF LSM hook, whose argument types the
    // kernel's BTF checks at load (argument 0 is a struct socket *).
    has(
        &e,
        11,
        30,
        "DAddr on a sockaddr argument: a sockaddr is one address and port",
    );
    has(&e, 14, 17, "matchArgs index 2: no such entry in args");
    has(&e, 16, 51, "argError 111: a negative errno");
    assert_eq!(e.lines().count(), 3, "{e}");
}
#[test]
fn typos_are_errors_with_positions() {
    let e = parse_err(&file_open(
        "    - matchArg: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n",
    ));
    has(&e, 12, 7, "unknown field `matchArg`");
    let e = parse_err(&format!("{HEAD}  lsmhook: []\n"));
    has(&e, 6, 3, "unknown field `lsmhook`");
    // Any LSM hook is accepted; whether the kernel has it is checked at
    // load (its BTF names every hook).
    let p = parse_ok(&file_open("").replace("hook: file_open", "hook: file_opn"));
    assert_eq!(
        p.hooks[0].point,
        HookPoint::Lsm {
            hook: "file_opn".into()
        }
    );
    let e = parse_err(&file_open("").replace("hook: file_open", "hook: security_file_open"));
    has(
        &e,
        7,
        11,
        "lsmhooks hook \"security_file_open\": an LSM hook's name without security_",
    );
}

#[test]
fn tetragon_limits_are_enforced() {
    let sel = "    - matchArgs: [{index: 0, operator: Equal, values: [/x]}]\n";
    let e = parse_err(&file_open(&sel.repeat(6)));
    has(
        &e,
        17,
        7,
        "more than 5 selectors: Tetragon allows at most 5 per hook",
    );
    let filters = "{index: 0, operator: Equal, values: [/x]}, ".repeat(6);
    let e = parse_err(&file_open(&format!(
        "    - matchArgs: [{filters}]\n      matchActions: [{{action: Post}}, {{action: Post}}, {{action: Post}}, {{action: Post}}]\n"
    )));
    assert!(
        e.contains("more than 5 matchArgs: Tetragon allows at most 5 per selector"),
        "{e}"
    );
    assert!(
        e.contains("more than 3 matchActions: Tetragon allows at most 3 per selector"),
        "{e}"
    );
    let values = (0..9)
        .map(|i| format!("/f{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let e = parse_err(&file_open(&format!(
        "    - matchArgs: [{{index: 0, operator: Equal, values: [{values}]}}]\n"
    )));
    assert!(
        e.contains("more than 8 values: Tetragon allows at most 8 per file filter"),
        "{e}"
    );
}

#[test]
fn hooks_without_selectors_report_every_call() {
    // As in Tetragon; native rules cannot, so these are LSM hooks.
    let p = parse_ok(&file_open("").replace("    selectors:\n", ""));
    assert!(p.rules.is_empty() && p.hooks[0].selectors.is_empty());
    let p = parse_ok(&file_open("    - matchActions: [{action: Post}]\n"));
    assert!(p.rules.is_empty() && p.hooks[0].selectors[0].matches.is_empty());
    let e = parse_err(&format!("{HEAD}  lsmhooks: []\n"));
    has(&e, 6, 3, "spec has no lsmhooks");
}
#[test]
fn first_match_order_that_vardr_cannot_keep_is_rejected() {
    // Tetragon: /etc/shadow hits the Post selector first and is not
    // blocked; vardr would deny it (the exact path is more specific).
    let e = parse_err(&file_open(
        "    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}]
    - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]
      matchActions: [{action: Sigkill}]
",
    ));
    has(&e, 13, 7, "selector overlaps lsmhooks[0].selectors[0] on \"/etc/shadow\": Tetragon applies the first matching selector (alert), vardr the most specific match (deny)");
    // Across hooks Tetragon runs both and the deny wins; vardr would let
    // the more specific alert win.
    let e = parse_err(&file_open(
        "    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}]
      matchActions: [{action: Override, argError: -13}]
  - hook: file_open
    args: [{index: 0, type: file}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: [/etc/hosts]}]
",
    ));
    has(
        &e,
        17,
        7,
        "runs both hooks and the deny wins (deny), vardr the most specific match (alert)",
    );
}

#[test]
fn tetragon_examples_report_everything_they_need() {
    // Shaped like examples/tracingpolicy/lsm_bprm_check.yaml.
    let e = parse_err(&format!(
        "{HEAD}  lsmhooks:
  - hook: \"bprm_check_security\"
    args:
      - index: 0
        type: \"linux_binprm\"
    selectors:
    - matchBinaries:
      - operator: \"In\"
        values: [\"/usr/bin/zsh\", \"/usr/bin/bash\"]
      matchArgs:
        - index: 0
          operator: \"Postfix\"
          values: [\"contrib/tester-progs/nop\"]
      matchActions:
        - action: Override
          argError: -1
        - action: Post
          imaHash: true
"
    ));
    // matchBinaries and Postfix run (as a BPF LSM hook); imaHash does not.
    has(
        &e,
        23,
        20,
        "action Post with imaHash: not yet supported by vardr",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    // Shaped like examples/tracingpolicy/tcp-connect-only-private-addrs.yaml:
    // runs as it is.
    let p = super::tests::parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: \"tcp_connect\"
    syscall: false
    args: [{{index: 0, type: \"sock\"}}]
    selectors:
    - matchArgs:
      - index: 0
        operator: \"NotDAddr\"
        values: [\"10.0.0.0/8\", \"127.0.0.0/8\"]
      matchActions: [{{action: Sigkill}}]
"
    ));
    assert_eq!(p.hooks[0].selectors[0].matches.len(), 1);
}
