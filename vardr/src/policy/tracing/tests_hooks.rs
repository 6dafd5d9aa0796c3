//! `kprobes` and `tracepoints`: what they become, and what is refused.
use super::{
    generic::{ArgType, BinaryOp, HookPoint, Op, Values},
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
    let p = parse_ok(&format!(
        "{HEAD}  options: [{{name: policy-mode, value: monitor}}]
  kprobes:
  - call: security_file_open
    args: [{{index: 0, type: file}}]
    selectors:
    - matchActions: [{{action: Override, argError: -1}}]
"
    ));
    let a = p.hooks[0].selectors[0].actions;
    assert!(a.post && a.override_error.is_none(), "{a:?}");
}

/// Seed 001's Sigkill with `argError: -1` ("EPERM returned to the
/// caller"), written as Tetragon takes it: Override and Sigkill.
#[test]
fn kprobe_override_with_sigkill() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Postfix, values: [/nc]}}]
      matchActions: [{{action: Override, argError: -1}}, {{action: Sigkill}}]
    - matchArgs: [{{index: 0, operator: Postfix, values: [/curl]}}]
      matchActions: [{{action: Override, argError: -13}}]
"
    ));
    let s = &p.hooks[0].selectors;
    assert_eq!(s[0].actions.override_error, Some(-1));
    assert!(s[0].actions.sigkill && s[0].actions.post);
    assert_eq!(s[1].actions.override_error, Some(-13));
    assert!(!s[1].actions.sigkill);
}

/// Override is a kprobe's: a tracepoint cannot change a call's result,
/// and it needs the error to return.
#[test]
fn override_elsewhere_or_without_an_error_is_refused() {
    let e = parse_err(&format!(
        "{HEAD}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_mkdir
    args: [{{index: 5}}]
    selectors:
    - matchActions: [{{action: Override, argError: -1}}]
  kprobes:
  - call: security_file_open
    args: [{{index: 0, type: file}}]
    selectors:
    - matchActions: [{{action: Override}}]
  uprobes:
  - path: /usr/bin/true
    symbols: [main]
    selectors:
    - matchActions: [{{action: Override, argError: -1}}]
"
    ));
    has(
        &e,
        11,
        31,
        "action Override on tracepoints: a tracepoint cannot change what the call returns",
    );
    has(
        &e,
        16,
        31,
        "Override needs argError, the negative errno the call returns",
    );
    has(
        &e,
        21,
        31,
        "action Override on uprobes: not yet supported by vardr",
    );
}

/// A uprobe entry: one hook per symbol, then one per file offset.
#[test]
fn uprobe_symbols_and_offsets() {
    let p = parse_ok(&format!(
        "{HEAD}  uprobes:
  - path: /usr/lib/x86_64-linux-gnu/libc.so.6
    symbols: [mkdir]
    offsets: [0x1234, 4096]
"
    ));
    let points: Vec<(String, &HookPoint)> =
        p.hooks.iter().map(|h| (h.name.clone(), &h.point)).collect();
    let up = |symbol: &str, offset| HookPoint::Uprobe {
        path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        symbol: symbol.into(),
        offset,
    };
    assert_eq!(
        points,
        vec![
            ("t.uprobes.0.0".to_string(), &up("mkdir", 0)),
            ("t.uprobes.0.1".to_string(), &up("", 0x1234)),
            ("t.uprobes.0.2".to_string(), &up("", 4096)),
        ]
    );
    assert_eq!(
        p.hooks[1].point.target(),
        "/usr/lib/x86_64-linux-gnu/libc.so.6:0x1234"
    );
    let e = parse_err(&format!(
        "{HEAD}  uprobes:
  - path: /bin/true
    addrs: [0x401000]
  - path: /bin/false
"
    ));
    has(&e, 7, 11, "uprobes path /bin/true: addrs (name symbols, or give file offsets in offsets): not yet supported by vardr");
    has(&e, 9, 11, "uprobes path /bin/false: no symbols or offsets");
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
    assert_eq!(b.op, BinaryOp::In);
    assert_eq!(b.paths, ["/bin/sh", "/usr/bin/bash"]);
    assert_eq!(s[1].binaries.as_ref().unwrap().op, BinaryOp::NotIn);
    assert!(s[0].parent_binaries.is_none());
}

#[test]
fn match_binaries_by_path_strings() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchBinaries: [{{operator: Prefix, values: [/usr/local/, /opt/]}}]
    - matchBinaries: [{{operator: NotPostfix, values: [/sh, bash]}}]
"
    ));
    let s = &p.hooks[0].selectors;
    let b = s[0].binaries.as_ref().unwrap();
    assert_eq!(b.op, BinaryOp::Prefix);
    assert_eq!(b.paths, ["/usr/local/", "/opt/"]);
    assert_eq!(s[1].binaries.as_ref().unwrap().op, BinaryOp::NotPostfix);
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchBinaries: [{{operator: Postfix, values: [\"\"]}}]
"
    ));
    has(&e, 10, 23, "matchBinaries value \"\": 1 to");
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchBinaries: [{{operator: Prefix, values: [/usr/], followChildren: true}}]
"
    ));
    has(&e, 10, 23, "matchBinaries followChildren: with In or NotIn");
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchBinaries: [{{operator: In, values: [/usr/sbin/nginx], followChildren: true}}]
      matchParentBinaries: [{{operator: In, values: [/usr/bin/sh]}}]
"
    ));
    let s = &p.hooks[0].selectors[0];
    assert!(s.binaries.as_ref().is_some_and(|b| b.follow_children));
    assert!(s
        .parent_binaries
        .as_ref()
        .is_some_and(|b| !b.follow_children));
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchParentBinaries: [{{operator: In, values: [/usr/bin/sh], followChildren: true}}]
"
    ));
    has(
        &e,
        10,
        29,
        "matchParentBinaries followChildren: not yet supported by vardr on matchParentBinaries",
    );
}

#[test]
fn match_parent_binaries() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchParentBinaries: [{{operator: NotIn, values: [/usr/sbin/sshd]}}]
"
    ));
    let s = &p.hooks[0].selectors[0];
    let b = s.parent_binaries.as_ref().unwrap();
    assert_eq!(b.op, BinaryOp::NotIn);
    assert_eq!(b.paths, ["/usr/sbin/sshd"]);
    assert!(s.binaries.is_none());
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchParentBinaries: [{{operator: Prefix, values: [/usr/]}}]
"
    ));
    let b = p.hooks[0].selectors[0].parent_binaries.as_ref().unwrap();
    assert_eq!(b.op, BinaryOp::Prefix);
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchParentBinaries: [{{operator: Regex, values: [/usr/]}}]
"
    ));
    has(
        &e,
        10,
        29,
        "matchParentBinaries operator Regex: not yet supported",
    );
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
    - matchData: [{{index: 0, operator: Equal, values: [x]}}]
      matchArgs: [{{index: 2, operator: Mask, values: [\"1\"]}}]
      matchActions: [{{action: Override, argError: 5}}]
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
        "kprobes call do_sys_openat2: return: true needs returnArg",
    );
    has(&e, 11, 13, "type \"char_buf\" needs sizeArgIndex");
    has(&e, 15, 18, "selector matchData: not yet supported by vardr");
    has(
        &e,
        16,
        40,
        "matchArgs Mask compares numbers: argument 2 is a string",
    );
    has(&e, 17, 51, "argError 5: a negative errno, -1 to -4095");
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

/// matchNamespaceChanges and matchCapabilityChanges: what changed since
/// the process's exec, with Tetragon's names and one entry each.
#[test]
fn namespace_and_capability_changes() {
    use crate::policy::tracing::process_filters::CapSet;
    use vardr_common::{NS_MNT, NS_USER};
    let p = parse_ok(&format!(
        "{HEAD}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_execve
    selectors:
    - matchNamespaceChanges: [{{operator: In, values: [Mnt, User, Mnt]}}]
      matchCapabilityChanges:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: [CAP_SYS_ADMIN]
      matchActions: [{{action: Sigkill}}]
    - matchNamespaceChanges: [{{operator: NotIn, values: [Net]}}]
"
    ));
    let f = &p.hooks[0].selectors[0].process;
    let n = f.ns_changes.as_ref().expect("namespace changes");
    assert!(n.in_);
    assert_eq!(n.kinds, [NS_MNT, NS_USER]);
    let c = f.caps_changes.as_ref().expect("capability changes");
    assert_eq!(
        (c.set, c.in_, c.mask, c.namespace),
        (CapSet::Effective, true, 1 << 21, true)
    );
    assert!(f.caps.is_none());
    assert!(!p.hooks[0].selectors[1]
        .process
        .ns_changes
        .as_ref()
        .is_some_and(|n| n.in_));
    let e = parse_err(&format!(
        "{HEAD}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_execve
    selectors:
    - matchNamespaceChanges: [{{operator: Equal, values: [Mnt]}}]
    - matchNamespaceChanges: [{{operator: In, values: [Mount]}}]
    - matchNamespaceChanges:
      - {{operator: In, values: [Mnt]}}
      - {{operator: In, values: [Pid]}}
    - matchCapabilityChanges: [{{type: Effective, operator: In, values: [CAP_NOPE]}}]
"
    ));
    has(
        &e,
        10,
        31,
        "matchNamespaceChanges operator \"Equal\": In or NotIn",
    );
    has(
        &e,
        11,
        31,
        "matchNamespaceChanges value \"Mount\": one of Uts, Ipc, Mnt",
    );
    has(
        &e,
        14,
        9,
        "more than one matchNamespaceChanges entry in a selector",
    );
    has(
        &e,
        15,
        73,
        "matchCapabilityChanges value \"CAP_NOPE\": not a capability",
    );
}

#[test]
fn process_filters_pids_namespaces_and_capabilities() {
    use crate::policy::tracing::process_filters::{CapSet, NsValue};
    use vardr_common::{NS_MNT, NS_PID};
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchNamespaces:
      - namespace: Pid
        operator: NotIn
        values: [host_ns]
      - namespace: Mnt
        operator: In
        values: [4026531841, host_ns]
      matchPIDs:
      - operator: NotIn
        followForks: true
        isNamespacePID: true
        values: [0, 1]
      matchCapabilities:
      - type: Permitted
        operator: In
        values: [CAP_SYS_ADMIN, CAP_NET_RAW]
      matchActions: [{{action: Sigkill}}]
"
    ));
    let f = &p.hooks[0].selectors[0].process;
    assert_eq!(f.namespaces.len(), 2);
    assert_eq!((f.namespaces[0].kind, f.namespaces[0].in_), (NS_PID, false));
    assert_eq!(f.namespaces[0].values, [NsValue::Host]);
    assert_eq!(f.namespaces[1].kind, NS_MNT);
    assert_eq!(
        f.namespaces[1].values,
        [NsValue::Inum(4_026_531_841), NsValue::Host]
    );
    let pid = &f.pids[0];
    assert!(!pid.in_ && pid.follow_forks && pid.namespace_pid);
    assert_eq!(pid.values, [0, 1]);
    let c = f.caps.as_ref().unwrap();
    assert_eq!(c.set, CapSet::Permitted);
    assert_eq!(c.mask, 1 << 21 | 1 << 13);
    assert!(c.in_ && !c.namespace);
}

#[test]
fn process_filter_mistakes_are_named_with_positions() {
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_bprm_check
    args: [{{index: 0, type: linux_binprm}}]
    selectors:
    - matchNamespaces:
      - {{namespace: Pid, operator: NotIn, values: [\"1\"]}}
      - {{namespace: Pidd, operator: In, values: [host_ns]}}
      - {{namespace: Net, operator: Equal, values: [host_ns]}}
      matchPIDs:
      - {{operator: In, values: [1, 2, 3, 4, 5]}}
      matchCapabilities:
      - {{type: Bounding, operator: In, values: [CAP_SYS_ADMIN]}}
    - matchCapabilities:
      - {{operator: NotIn, values: [CAP_NOPE]}}
"
    ));
    has(
        &e,
        11,
        52,
        "matchNamespaces Pid value \"1\": no namespace has this inode number",
    );
    has(
        &e,
        12,
        21,
        "matchNamespaces namespace \"Pidd\": one of Uts, Ipc, Mnt, Pid",
    );
    has(
        &e,
        13,
        36,
        "matchNamespaces operator \"Equal\": In or NotIn",
    );
    has(&e, 15, 32, "matchPIDs needs 1 to 4 values");
    has(&e, 17, 16, "matchCapabilities type \"Bounding\"");
    has(
        &e,
        19,
        36,
        "matchCapabilities value \"CAP_NOPE\": not a capability",
    );
}

/// Seed 003's block-443-for-wget: a `sock` argument and DPort.
#[test]
fn sock_and_sockaddr_arguments() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: tcp_connect
    args: [{{index: 0, type: sock}}]
    selectors:
    - matchBinaries: [{{operator: In, values: [/usr/bin/wget]}}]
      matchArgs:
      - {{index: 0, operator: DPort, values: [443, \"8000:8080\"]}}
      - {{index: 0, operator: NotDAddr, values: [127.0.0.0/8, \"::1\"]}}
      - {{index: 0, operator: Protocol, values: [IPPROTO_TCP]}}
      - {{index: 0, operator: State, values: [TCP_SYN_SENT]}}
      - {{index: 0, operator: SPortPriv}}
      matchActions: [{{action: Sigkill}}]
  - call: security_socket_connect
    args: [{{index: 1, type: sockaddr}}]
    selectors:
    - matchArgs:
      - {{index: 1, operator: SAddr, values: [10.0.0.0/8]}}
      - {{index: 1, operator: Family, values: [AF_INET]}}
      matchActions: [{{action: Override, argError: -111}}]
"
    ));
    let m = &p.hooks[0].selectors[0].matches;
    assert_eq!(p.hooks[0].args[0].ty, ArgType::Sock);
    assert_eq!(m[0].op, Op::DPort);
    assert_eq!(
        m[0].values,
        Values::Ints(vec![443 << 16 | 443, 8000 << 16 | 8080])
    );
    assert_eq!(m[1].op, Op::NotDAddr);
    assert!(matches!(&m[1].values, Values::Cidrs(c) if c.len() == 2));
    assert_eq!(m[2].values, Values::Ints(vec![6]));
    assert_eq!(m[3].values, Values::Ints(vec![2]));
    assert_eq!(m[4].op, Op::SPortPriv);
    let m = &p.hooks[1].selectors[0].matches;
    assert_eq!(p.hooks[1].args[0].ty, ArgType::Sockaddr);
    assert_eq!(m[1].values, Values::Ints(vec![2]));
}

/// What a socket argument cannot be or be matched with.
#[test]
fn socket_mistakes_are_named() {
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_socket_connect
    args: [{{index: 1, type: sockaddr}}, {{index: 0, type: int}}]
    selectors:
    - matchArgs:
      - {{index: 1, operator: DPort, values: [443]}}
      - {{index: 0, operator: SPort, values: [1]}}
      - {{index: 1, operator: Equal, values: [x]}}
      - {{index: 1, operator: SAddr, values: [10.0.0.1/8]}}
      - {{index: 1, operator: SPort, values: [\"70000\"]}}
  - call: sys_connect
    syscall: true
    args: [{{index: 1, type: sockaddr}}]
  tracepoints:
  - subsystem: sock
    event: inet_sock_set_state
    args: [{{index: 5, type: sock}}]
"
    ));
    has(
        &e,
        11,
        30,
        "matchArgs DPort on a sockaddr argument: a sockaddr is one address and port",
    );
    has(
        &e,
        12,
        30,
        "matchArgs SPort compares a socket: argument 0 is a int",
    );
    has(
        &e,
        13,
        30,
        "matchArgs Equal on a sockaddr argument: it is matched with SAddr, SPort",
    );
    has(&e, 14, 46, "SAddr value \"10.0.0.1/8\" has host bits set");
    has(
        &e,
        15,
        46,
        "SPort value \"70000\": a port (0 to 65535) or a range lo:hi",
    );
    has(
        &e,
        18,
        29,
        "type \"sockaddr\": a system call's arguments are user values",
    );
    has(&e, 22, 29, "type \"sock\": on kprobes and lsmhooks only");
}

/// An `skb` argument (a kernel function's, or a tracepoint's `skbaddr`):
/// the socket operators but State.
#[test]
fn skb_arguments() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: ip_output
    args: [{{index: 2, type: skb}}]
    selectors:
    - matchArgs:
      - {{index: 2, operator: DPort, values: [53]}}
      - {{index: 2, operator: DAddr, values: [127.0.0.0/8]}}
      - {{index: 2, operator: Protocol, values: [IPPROTO_UDP]}}
      - {{index: 2, operator: Family, values: [AF_INET]}}
      matchActions: [{{action: Sigkill}}]
  tracepoints:
  - subsystem: net
    event: net_dev_queue
    args: [{{index: 4, type: skb}}]
    selectors:
    - matchArgs: [{{index: 4, operator: NotSPortPriv}}]
"
    ));
    assert_eq!(p.hooks[0].args[0].ty, ArgType::Skb);
    let m = &p.hooks[0].selectors[0].matches;
    assert_eq!(m[0].values, Values::Ints(vec![53 << 16 | 53]));
    assert!(matches!(&m[1].values, Values::Cidrs(c) if c.len() == 1));
    assert_eq!(m[2].values, Values::Ints(vec![17]));
    assert_eq!(m[3].values, Values::Ints(vec![2]));
    assert_eq!(p.hooks[1].args[0].ty, ArgType::Skb);
    assert_eq!(p.hooks[1].selectors[0].matches[0].op, Op::NotSPortPriv);
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: ip_output
    args: [{{index: 2, type: skb}}]
    selectors:
    - matchArgs:
      - {{index: 2, operator: State, values: [TCP_SYN_SENT]}}
      - {{index: 2, operator: Equal, values: [x]}}
  - call: sys_sendto
    syscall: true
    args: [{{index: 0, type: skb}}]
  uprobes:
  - path: /bin/true
    symbols: [main]
    args: [{{index: 0, type: skb}}]
"
    ));
    has(
        &e,
        11,
        30,
        "matchArgs State on an skb argument: a packet has no TCP state",
    );
    has(
        &e,
        12,
        30,
        "matchArgs Equal on an skb argument: it is matched with SPort, DPort, SAddr, DAddr (and their Not and Priv forms), Protocol and Family",
    );
    has(
        &e,
        15,
        29,
        "type \"skb\": a system call's arguments are user values",
    );
    has(&e, 19, 29, "type \"skb\": a user function's argument is");
}

/// `call: "list:NAME"`: one hook per function of the list, with the
/// entry's arguments and selectors; a `syscalls` list makes them system
/// call probes.
#[test]
fn kprobe_lists() {
    let p = parse_ok(&format!(
        "{HEAD}  lists:
  - name: dups
    type: syscalls
    values: [sys_dup, dup2, x64/sys_dup3]
  - name: opens
    values: [do_sys_openat2, vfs_open]
  kprobes:
  - call: list:dups
    args: [{{index: 0, type: int}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: [\"7\"]}}]
      matchActions: [{{action: Sigkill}}]
  - call: list:opens
"
    ));
    let points: Vec<_> = p
        .hooks
        .iter()
        .map(|h| (&h.point, h.name.as_str()))
        .collect();
    let kp = |call: &str, syscall: bool| HookPoint::Kprobe {
        call: call.into(),
        syscall,
    };
    assert_eq!(
        points,
        vec![
            (&kp("sys_dup", true), "t.kprobes.0"),
            (&kp("sys_dup2", true), "t.kprobes.0"),
            (&kp("sys_dup3", true), "t.kprobes.0"),
            (&kp("do_sys_openat2", false), "t.kprobes.1"),
            (&kp("vfs_open", false), "t.kprobes.1"),
        ]
    );
    assert!(p.hooks[..3]
        .iter()
        .all(|h| h.selectors.len() == 1 && h.selectors[0].actions.sigkill));
    let e = parse_err(&format!(
        "{HEAD}  lists:
  - name: dups
    type: syscalls
    values: [i386/sys_dup]
  - name: empty
  - name: ftrace
    type: generated_ftrace
    pattern: \"^vfs_.*\"
  - name: odd
    type: functions
    values: [x]
  kprobes:
  - call: list:dups
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: [\"7\"]}}]
  - call: list:missing
"
    ));
    has(
        &e,
        7,
        11,
        "lists (list \"dups\"): value \"i386/sys_dup\": ABI i386: not yet supported by vardr",
    );
    has(&e, 10, 11, "lists (list \"empty\") has no values");
    has(
        &e,
        11,
        11,
        "lists (list \"ftrace\"): type generated_ftrace: not yet supported by vardr",
    );
    has(
        &e,
        14,
        11,
        "lists (list \"odd\"): type \"functions\" is not a list type",
    );
    has(
        &e,
        21,
        11,
        "kprobes call \"list:missing\": no list named \"missing\" in spec.lists",
    );
    // A list that is wrong is reported once, not again at its kprobe.
    assert!(
        !e.contains("t.yaml:18:") && !e.contains("t.yaml:20:"),
        "{e}"
    );
}

/// A return probe: the value's type, and matchReturnArgs on it.
#[test]
fn return_probes_with_match_return_args() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args: [{{index: 1, type: string}}]
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: [/etc/]}}]
      matchReturnArgs: [{{index: 0, operator: LT, values: [\"0\"]}}]
"
    ));
    let h = &p.hooks[0];
    assert_eq!(h.ret, Some(ArgType::Int));
    assert_eq!(h.selectors[0].ret_matches[0].op, Op::LessThan);
    assert_eq!(h.selectors[0].ret_matches[0].values, Values::Ints(vec![0]));
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: a
    returnArg: {{index: 0, type: int}}
  - call: b
    return: true
    returnArg: {{index: 0, type: file}}
    returnArgAction: TrackSock
  - call: c
    args: [{{index: 0, type: int}}]
    selectors:
    - matchReturnArgs: [{{index: 0, operator: Equal, values: [\"1\"]}}]
  - call: d
    return: true
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchReturnArgs: [{{index: 0, operator: Prefix, values: [x]}}]
"
    ));
    has(&e, 8, 24, "returnArg without return: true");
    has(&e, 9, 11, "returnArgAction: not yet supported by vardr");
    has(
        &e,
        11,
        33,
        "returnArg type \"file\": not yet supported by vardr",
    );
    has(
        &e,
        16,
        25,
        "matchReturnArgs: only on a kprobe with return: true and returnArg",
    );
    has(
        &e,
        21,
        46,
        "matchArgs Prefix compares strings: argument 0 is a int",
    );
}

/// matchReturnActions: at the return, when matchReturnArgs hold; only
/// on return probes, and nothing that needs the call not to have run.
#[test]
fn return_actions() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args: [{{index: 1, type: string}}]
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchArgs: [{{index: 1, operator: Prefix, values: [/etc/]}}]
      matchReturnArgs: [{{index: 0, operator: Equal, values: [\"-2\"]}}]
      matchReturnActions: [{{action: Sigkill}}, {{action: NoPost}}]
    - matchReturnActions: [{{action: Signal, argSig: 10}}]
    - matchArgs: [{{index: 1, operator: Prefix, values: [/tmp/]}}]
"
    ));
    let s = &p.hooks[0].selectors;
    let r = s[0].ret_actions.as_ref().expect("return actions");
    assert!(r.sigkill && !r.post, "{r:?}");
    assert_eq!(s[1].ret_actions.as_ref().and_then(|r| r.signal), Some(10));
    assert!(s[1].ret_actions.as_ref().is_some_and(|r| r.post));
    assert!(s[2].ret_actions.is_none());
    // The entry's actions are apart: none here.
    assert!(!s[0].actions.sigkill);
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: a
    args: [{{index: 0, type: int}}]
    selectors:
    - matchReturnActions: [{{action: Sigkill}}]
  - call: b
    return: true
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchReturnActions: [{{action: Override, argError: -1}}]
    - matchReturnActions: [{{action: Post, rateLimit: 1m}}]
    - matchActions: [{{action: NoPost}}]
      matchReturnActions: [{{action: Sigkill}}]
    - matchActions: [{{action: Post, rateLimit: 1m}}]
      matchReturnActions: [{{action: Signal, argSig: 10}}]
"
    ));
    for line in [17, 19] {
        has(
            &e,
            line,
            21,
            "matchReturnActions Sigkill/Signal with NoPost or a rateLimit in matchActions",
        );
    }
    has(
        &e,
        10,
        27,
        "matchReturnActions: only on a kprobe with return: true and returnArg",
    );
    has(
        &e,
        15,
        37,
        "matchReturnActions Override: the function has run by its return",
    );
    has(
        &e,
        16,
        54,
        "action Post with rateLimit: not yet supported by vardr",
    );
}

/// Seed 003's sys_write, without FollowFD (deprecated in Tetragon): the
/// descriptor is resolved to its file in the kernel; the written bytes
/// are a char_buf sized by the count argument.
#[test]
fn fd_and_char_buf_arguments() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: sys_write
    syscall: true
    args:
    - {{index: 0, type: fd}}
    - {{index: 1, type: char_buf, sizeArgIndex: 3}}
    - {{index: 2, type: size_t}}
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: [/etc/passwd]}}]
      matchActions: [{{action: Sigkill}}]
"
    ));
    let h = &p.hooks[0];
    assert_eq!(h.args[0].ty, ArgType::Fd);
    assert_eq!(
        (h.args[1].ty, h.args[1].size_arg),
        (ArgType::CharBuf, Some(2))
    );
    assert_eq!(
        h.selectors[0].matches[0].values,
        Values::Strings(vec!["/etc/passwd".into()])
    );
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: sys_write
    syscall: true
    args:
    - {{index: 0, type: int, sizeArgIndex: 2}}
    - {{index: 1, type: char_buf, sizeArgIndex: 9}}
    - {{index: 2, type: char_buf, sizeArgIndex: 1}}
    selectors:
    - matchArgs: [{{index: 2, operator: Equal, values: [x]}}]
"
    ));
    has(&e, 10, 43, "sizeArgIndex is for a char_buf");
    has(&e, 11, 48, "sizeArgIndex 9: the argument holding the size");
    has(
        &e,
        14,
        40,
        "matchArgs on a char_buf argument: not yet supported",
    );
}

/// Seed 003's Post with rateLimit (its stack traces are not yet run).
#[test]
fn post_with_rate_limit() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: fd_install
    args: [{{index: 1, type: file}}]
    selectors:
    - matchArgs: [{{index: 1, operator: Equal, values: [/etc/passwd]}}]
      matchActions: [{{action: Post, rateLimit: 5m}}]
    - matchArgs: [{{index: 1, operator: Equal, values: [/etc/shadow]}}]
      matchActions: [{{action: Post, rateLimit: 500ms, rateLimitScope: process}}]
"
    ));
    let s = &p.hooks[0].selectors;
    assert_eq!(s[0].actions.rate_limit, Some((300_000_000_000, 0)));
    assert_eq!(s[1].actions.rate_limit, Some((500_000_000, 1)));
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: fd_install
    args: [{{index: 1, type: file}}]
    selectors:
    - matchActions: [{{action: Post, rateLimit: 5 minutes}}]
    - matchActions: [{{action: Post, rateLimit: 1m, rateLimitScope: pod}}]
"
    ));
    has(
        &e,
        10,
        48,
        "rateLimit \"5 minutes\": a duration such as 500ms",
    );
    has(
        &e,
        11,
        68,
        "rateLimitScope \"pod\": thread, process or global",
    );
}

/// NotifyEnforcer is said to need what Debian's kernels lack.
#[test]
fn notify_enforcer_is_refused_with_why() {
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: security_file_open
    selectors:
    - matchActions: [{{action: NotifyEnforcer, argError: -1}}]
"
    ));
    has(
        &e,
        9,
        31,
        "action NotifyEnforcer: not yet supported by vardr (an enforcer fails a system call on its way out",
    );
}

/// Post with stack traces: on kprobes (Tetragon's process_kprobe has
/// them), refused elsewhere by name.
#[test]
fn stack_traces_on_kprobes() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: fd_install
    args: [{{index: 1, type: file}}]
    selectors:
    - matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
    - matchActions: [{{action: Post, rateLimit: 1m, kernelStackTrace: true}}]
"
    ));
    let s = &p.hooks[0].selectors;
    assert!(s[0].actions.kernel_stack && s[0].actions.user_stack);
    assert!(s[1].actions.kernel_stack && !s[1].actions.user_stack);
    let e = parse_err(&format!(
        "{HEAD}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_mkdir
    selectors:
    - matchActions: [{{action: Post, userStackTrace: true}}]
  kprobes:
  - call: fd_install
    selectors:
    - matchActions: [{{action: Sigkill, kernelStackTrace: true}}]
"
    ));
    has(
        &e,
        10,
        31,
        "action Post with userStackTrace: on kprobes only (Tetragon's process_kprobe carries stack traces; its tracepoints events have none)",
    );
    has(
        &e,
        14,
        58,
        "action Sigkill with kernelStackTrace: stack traces go with Post (as in Tetragon)",
    );
}

/// A `cred` argument: on kernel functions and LSM hooks, reported only.
#[test]
fn cred_arguments() {
    let p = parse_ok(&format!(
        "{HEAD}  kprobes:
  - call: commit_creds
    args: [{{index: 0, type: cred}}]
  lsmhooks:
  - hook: task_fix_setuid
    args: [{{index: 0, type: cred}}, {{index: 1, type: cred}}]
"
    ));
    assert_eq!(p.hooks.len(), 2);
    assert!(p.hooks.iter().all(|h| h.args[0].ty == ArgType::Cred));
    let e = parse_err(&format!(
        "{HEAD}  kprobes:
  - call: sys_setuid
    syscall: true
    args: [{{index: 0, type: cred}}]
  - call: commit_creds
    args: [{{index: 0, type: cred}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Equal, values: [\"0\"]}}]
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_setuid
    args: [{{index: 5, type: cred}}]
"
    ));
    has(
        &e,
        9,
        29,
        "type \"cred\": a system call's arguments are user values",
    );
    has(
        &e,
        13,
        40,
        "matchArgs on a cred argument: not yet supported by vardr (it is reported only)",
    );
    has(&e, 17, 29, "type \"cred\": on kprobes and lsmhooks only");
}
