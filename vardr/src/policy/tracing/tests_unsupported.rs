//! What vardr rejects, each at its position and by name.
use super::tests::{file_open, parse_err, HEAD};

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
fn process_selectors_are_rejected() {
    let e = parse_err(&file_open(
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
    let why = "not yet supported by vardr (native rules have no process selectors)";
    has(&e, 13, 9, &format!("matchBinaries: {why}"));
    has(&e, 16, 9, &format!("matchPIDs: {why}"));
    has(&e, 17, 24, &format!("matchNamespaces: {why}"));
    has(&e, 18, 26, &format!("matchCapabilities: {why}"));
}

#[test]
fn unsupported_operators_values_and_actions() {
    let e = parse_err(&file_open(
        "    - matchArgs: [{index: 0, operator: Postfix, values: [passwd]}]
    - matchArgs: [{index: 0, operator: Prefix, values: [/etc/passw, /etc]}]
      matchActions: [{action: NoPost}]
    - matchArgs: [{index: 0, operator: Equal, values: [/etc/passwd]}]
      matchActions: [{action: Post, rateLimit: 1m}, {action: Override}, {action: Signal, argSig: 9}]
    - matchArgs: [{index: 0, operator: Sideways, values: [x]}]
",
    ));
    has(&e, 12, 40, "matchArgs operator Postfix on file argument 0 of hook file_open: not yet supported by vardr");
    has(&e, 13, 57, "\"/etc/passw\" is a string prefix that is not a whole directory: not yet supported by vardr");
    has(
        &e,
        13,
        69,
        "\"/etc\" is a string prefix that is not a whole directory",
    );
    has(&e, 14, 31, "action NoPost: not yet supported by vardr");
    has(
        &e,
        16,
        48,
        "action Post with rateLimit: not yet supported by vardr",
    );
    has(&e, 16, 62, "Override needs a non-zero argError");
    has(&e, 16, 82, "action Signal: not yet supported by vardr");
    has(&e, 17, 40, "unknown matchArgs operator \"Sideways\"");
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
  lists: [{{name: syscalls, type: syscalls, values: [sys_dup]}}]
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
        "lists (list \"syscalls\"): not yet supported by vardr",
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
    has(
        &e,
        2,
        7,
        "kind TracingPolicyNamespaced: not yet supported by vardr",
    );
    has(
        &e,
        12,
        16,
        "args index 0: resolve: not yet supported by vardr",
    );
    has(
        &e,
        13,
        14,
        "args index 1: not yet supported by vardr for hook file_open (it reads index 0 (file))",
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
    has(
        &e,
        8,
        29,
        "type \"sock\" is not supported for hook socket_connect: expected \"socket\"",
    );
    has(
        &e,
        11,
        30,
        "DAddr on a sockaddr argument: Tetragon rejects it too",
    );
    has(
        &e,
        12,
        46,
        "port range \"1000:2000\": not yet supported by vardr",
    );
    has(
        &e,
        13,
        62,
        "more than one Protocol value: not yet supported by vardr",
    );
    has(
        &e,
        14,
        17,
        "matchArgs index 2 is not declared in the hook's args",
    );
    has(&e, 15, 47, "Family AF_UNIX: not yet supported by vardr");
    has(
        &e,
        16,
        51,
        "argError 111: an LSM hook returns a negative errno",
    );
    assert_eq!(e.lines().count(), 7, "{e}");
}

#[test]
fn typos_are_errors_with_positions() {
    let e = parse_err(&file_open(
        "    - matchArg: [{index: 0, operator: Equal, values: [/etc/shadow]}]\n",
    ));
    has(&e, 12, 7, "unknown field `matchArg`");
    let e = parse_err(&format!("{HEAD}  lsmhook: []\n"));
    has(&e, 6, 3, "unknown field `lsmhook`");
    let e = parse_err(&file_open("").replace("hook: file_open", "hook: file_opn"));
    has(&e, 7, 11, "lsmhooks hook \"file_opn\": not yet supported by vardr (supported: file_open, bprm_check_security, socket_connect)");
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
fn hooks_that_would_match_everything_are_rejected() {
    let e = parse_err(&file_open("").replace("    selectors:\n", ""));
    has(
        &e,
        7,
        11,
        "hook file_open has no selectors: it would report every call",
    );
    let e = parse_err(&file_open("    - matchActions: [{action: Post}]\n"));
    has(
        &e,
        12,
        7,
        "selector without matchArgs matches every file_open call",
    );
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
    has(&e, 13, 9, "matchBinaries");
    has(&e, 17, 21, "operator Postfix");
    has(
        &e,
        23,
        20,
        "action Post with imaHash: not yet supported by vardr",
    );
    assert_eq!(e.lines().count(), 3, "{e}");
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
