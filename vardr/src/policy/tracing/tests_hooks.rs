//! `kprobes` and `tracepoints`: what they become, and what is refused.
use super::{
    generic::{ArgType, HookPoint, Op, Values},
    tests::{parse_err, parse_ok, HEAD},
    tests_unsupported::has,
};

/// Seed 003's do_mkdirat policy, with its Sigkill.
#[test]
fn a_kprobe_with_a_filename_match_and_sigkill() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: \"do_mkdirat\"
    syscall: false
    args:
    - index: 0
      type: \"int\"
    - index: 1
      type: \"filename\"
    - index: 2
      type: \"int\"
    selectors:
    - matchArgs:
      - index: 1
        operator: \"Equal\"
        values:
        - \"test\"
      matchActions:
      - action: Sigkill
"
    ));
    assert!(p.rules.is_empty());
    let h = &p.hooks[0];
    assert_eq!(h.name, "t.kprobes.0");
    assert_eq!(
        h.point,
        HookPoint::Kprobe {
            call: "do_mkdirat".into(),
            syscall: false
        }
    );
    let types: Vec<_> = h.args.iter().map(|a| a.ty).collect();
    assert_eq!(types, [ArgType::Int, ArgType::Filename, ArgType::Int]);
    let s = &h.selectors[0];
    assert!(s.actions.sigkill && s.actions.post);
    assert_eq!(s.matches[0].arg, 1);
    assert_eq!(s.matches[0].op, Op::Equal);
    assert_eq!(s.matches[0].values, Values::Strings(vec!["test".into()]));
}

#[test]
fn tracepoint_args_integers_nopost_and_signal() {
    let p = parse_ok(&format!(
        "{HEAD}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_kill
    args:
    - index: 5
    - index: 6
      type: int
    selectors:
    - matchArgs:
      - index: 6
        operator: Equal
        values: [\"9\", \"0x13\", \"-1\"]
      - index: 5
        operator: GT
        values: [\"100\"]
      matchActions:
      - action: Signal
        argSig: 19
      - action: NoPost
"
    ));
    let h = &p.hooks[0];
    assert_eq!(h.args[0].ty, ArgType::Auto);
    let s = &h.selectors[0];
    assert_eq!(s.actions.signal, Some(19));
    assert!(!s.actions.post && !s.actions.sigkill);
    assert_eq!(s.matches[0].values, Values::Ints(vec![9, 0x13, u64::MAX]));
    assert_eq!(s.matches[1].op, Op::GreaterThan);
}

#[test]
fn monitor_mode_reports_instead_of_killing() {
    let p = parse_ok(&format!(
        "{HEAD}  options: [{{name: policy-mode, value: monitor}}]
  kprobes:
  - call: fd_install
    args: [{{index: 1, type: file}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: [/etc/]}}]
      matchActions: [{{action: Sigkill}}, {{action: NoPost}}]
"
    ));
    let a = p.hooks[0].selectors[0].actions;
    assert!(a.post && !a.sigkill, "{a:?}");
}

#[test]
fn match_binaries_in_and_not_in() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchBinaries: [{{operator: In, values: [/bin/sh, /usr/bin/bash]}}]
      matchActions: [{{action: Sigkill}}]
    - matchBinaries: [{{operator: NotIn, values: [/usr/bin/sudo]}}]
"
    ));
    let s = &p.hooks[0].selectors;
    let b = s[0].binaries.as_ref().unwrap();
    assert!(b.in_);
    assert_eq!(b.paths, ["/bin/sh", "/usr/bin/bash"]);
    assert!(!s[1].binaries.as_ref().unwrap().in_);
}

#[test]
fn what_kprobes_and_tracepoints_cannot_do_yet_is_named() {
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: do_sys_openat2
    return: true
    args:
    - index: 1
      type: char_buf
    - index: 2
      type: string
    selectors:
    - matchNamespaces: [{{namespace: Pid, operator: NotIn, values: [host_ns]}}]
      matchArgs: [{{index: 2, operator: Mask, values: [\"1\"]}}]
      matchActions: [{{action: Override, argError: -1}}]
    - matchArgs: [{{index: 2, operator: Equal, values: [\"{long}\"]}}]
  - call: sys_x
    args: [{{index: 0}}]
  tracepoints:
  - subsystem: \"../x\"
    event: y
",
        long = "a".repeat(200)
    ));
    has(
        &e,
        7,
        11,
        "return probes (return: true): not yet supported by vardr",
    );
    has(&e, 11, 13, "type \"char_buf\": not yet supported by vardr");
    has(
        &e,
        15,
        24,
        "selector matchNamespaces: not yet supported by vardr on kprobes and tracepoints",
    );
    has(
        &e,
        16,
        40,
        "matchArgs Mask compares numbers: argument 2 is a string",
    );
    has(
        &e,
        17,
        31,
        "action Override on kprobes and tracepoints: not yet supported by vardr",
    );
    has(
        &e,
        18,
        56,
        "matchArgs value of 200 bytes: vardr compares 127 at most",
    );
    has(&e, 20, 20, "args index 0: a kprobe argument needs a type");
    has(
        &e,
        22,
        16,
        "tracepoint name \"../x\": letters, digits and _ only",
    );
}
