//! Every event vardr writes decodes with Tetragon's own messages, and the
//! fields Tetragon consumers key on come out with the values vardr meant.
use std::{net::IpAddr, sync::Arc, time::SystemTime};

use vardr_common::{BackendKind, EventHeader, Hook, Operation, Verdict};

use super::{decode, pb};
use crate::{
    events::{JsonEvent, PolicyMatch, RuleInfo},
    process::{sample, ProcessInfo},
};

fn header() -> EventHeader {
    EventHeader {
        kind: 0,
        _pad: 0,
        boot_ns: 1,
        tid: 4243,
        pid: 4242,
        uid: 1000,
        gid: 1000,
        cgroup_id: 77,
        comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
    }
}

fn chain() -> Arc<ProcessInfo> {
    let init = sample(1, "/sbin/init", "/", None);
    let bash = sample(900, "/usr/bin/bash", "/user.slice", Some(init));
    sample(4242, "/usr/bin/curl", "/user.slice", Some(bash))
}

fn line(e: &JsonEvent) -> String {
    serde_json::to_string(e).expect("events serialize")
}

fn decoded(e: &JsonEvent) -> pb::GetEventsResponse {
    let l = line(e);
    decode(&l).unwrap_or_else(|err| panic!("{err}: {l}"))
}

fn lsm(e: &pb::GetEventsResponse) -> &pb::ProcessLsm {
    match &e.event {
        Some(pb::get_events_response::Event::ProcessLsm(l)) => l,
        other => panic!("not a process_lsm: {other:?}"),
    }
}

fn policy_match(hook: Hook, op: Operation, backend: BackendKind, verdict: Verdict) -> PolicyMatch {
    let connect = hook == Hook::Connect;
    PolicyMatch {
        header: header(),
        hook,
        backend,
        verdict,
        rule_id: 3,
        flags: (libc::O_WRONLY | libc::O_TRUNC) as u32,
        op,
        path: (!connect).then(|| "/etc/shadow".to_string()),
        remote: connect.then(|| ("2001:db8::1".parse::<IpAddr>().expect("ip"), 443, 6)),
    }
}

fn rule() -> RuleInfo {
    RuleInfo {
        policy_name: "default".into(),
        rule: "protect-credentials".into(),
        severity: "critical".into(),
        message: Some("Credentials \"read\"".into()),
        tags: vec!["observability.filesystem".into(), "credentials".into()],
        observe: false,
    }
}

#[test]
fn exec_and_exit_decode_with_process_parent_and_ancestors() {
    let p = chain();
    let e = decoded(&JsonEvent::exec(&p, "node-a"));
    assert_eq!(e.node_name, "node-a");
    assert!(e.time.is_some());
    let Some(pb::get_events_response::Event::ProcessExec(x)) = e.event else {
        panic!("not a process_exec")
    };
    let proc = x.process.expect("process");
    assert_eq!(proc.pid.map(|v| v.value), Some(4242));
    assert_eq!(proc.uid.map(|v| v.value), Some(1000));
    assert_eq!(proc.binary, "/usr/bin/curl");
    assert_eq!(proc.exec_id, "id-4242");
    assert_eq!(proc.parent_exec_id, "id-900");
    assert!(proc.start_time.is_some());
    assert_eq!(x.parent.expect("parent").binary, "/usr/bin/bash");
    assert_eq!(x.ancestors.len(), 1);
    assert_eq!(x.ancestors[0].binary, "/sbin/init");

    // Credentials from the exec event are Tetragon's `process_credentials`.
    let mut q = (*p).clone();
    q.creds = Some(crate::events::Creds {
        uid: 1000,
        gid: 1000,
        euid: 0,
        egid: 1000,
        suid: 0,
        sgid: 1000,
        fsuid: 0,
        fsgid: 1000,
    });
    let e = decoded(&JsonEvent::exec(&q, "node-a"));
    let Some(pb::get_events_response::Event::ProcessExec(x)) = e.event else {
        panic!("not a process_exec")
    };
    let c = x
        .process
        .expect("process")
        .process_credentials
        .expect("credentials");
    assert_eq!(c.uid.map(|v| v.value), Some(1000));
    assert_eq!(c.euid.map(|v| v.value), Some(0));
    assert_eq!(c.fsgid.map(|v| v.value), Some(1000));

    // Killed by SIGKILL: status 0, signal named.
    let e = decoded(&JsonEvent::exit(&p, 9, "node-a", SystemTime::UNIX_EPOCH));
    let Some(pb::get_events_response::Event::ProcessExit(x)) = e.event else {
        panic!("not a process_exit")
    };
    assert_eq!(x.signal, "SIGKILL");
    assert_eq!(x.status, 0);
    let e = decoded(&JsonEvent::exit(
        &p,
        3 << 8,
        "node-a",
        SystemTime::UNIX_EPOCH,
    ));
    let Some(pb::get_events_response::Event::ProcessExit(x)) = e.event else {
        panic!("not a process_exit")
    };
    assert_eq!((x.status, x.signal.as_str()), (3, ""));
}

/// Every hook, operation, backend and verdict vardr reports, for a known
/// and an unknown process (one that exited before the agent saw it).
#[test]
fn every_policy_event_decodes_as_process_lsm() {
    let hooks = [Hook::FileOpen, Hook::FileWrite, Hook::Exec, Hook::Connect];
    let backends = [
        BackendKind::Lsm,
        BackendKind::Fallback,
        BackendKind::Audit,
        BackendKind::Fanotify,
    ];
    let verdicts = [
        Verdict::Deny,
        Verdict::Audit,
        Verdict::Alert,
        Verdict::Allow,
    ];
    let p = chain();
    let mut n = 0;
    for hook in hooks {
        for op in (0..64).map_while(Operation::from_u32) {
            for backend in backends {
                for verdict in verdicts {
                    let m = policy_match(hook, op, backend, verdict);
                    for proc in [Some(p.as_ref()), None] {
                        let e = JsonEvent::policy(
                            &m,
                            proc,
                            Some(rule()),
                            None,
                            "n",
                            SystemTime::UNIX_EPOCH,
                        );
                        let d = decoded(&e);
                        let l = lsm(&d);
                        assert_eq!(l.policy_name, "default");
                        assert_eq!(l.message, "Credentials \"read\"");
                        assert_eq!(l.tags, ["observability.filesystem", "credentials"]);
                        assert!(!l.function_name.is_empty());
                        assert_eq!(
                            l.process.as_ref().and_then(|p| p.pid).map(|v| v.value),
                            Some(4242)
                        );
                        n += 1;
                    }
                }
            }
        }
    }
    assert!(n > 1000, "{n} combinations");
}

#[test]
fn denies_carry_tetragon_actions_and_typed_args() {
    let p = chain();
    let ev = |m: &PolicyMatch| {
        decoded(&JsonEvent::policy(
            m,
            Some(&p),
            Some(rule()),
            None,
            "n",
            SystemTime::UNIX_EPOCH,
        ))
    };
    let d = ev(&policy_match(
        Hook::FileWrite,
        Operation::Hook,
        BackendKind::Lsm,
        Verdict::Deny,
    ));
    let l = lsm(&d);
    assert_eq!(l.action(), pb::KprobeAction::Override);
    let Some(pb::kprobe_argument::Arg::FileArg(f)) = &l.args[0].arg else {
        panic!("no file_arg: {l:?}")
    };
    assert_eq!(
        (f.path.as_str(), f.flags.as_str()),
        ("/etc/shadow", "O_WRONLY|O_TRUNC")
    );

    let d = ev(&policy_match(
        Hook::Exec,
        Operation::Hook,
        BackendKind::Fallback,
        Verdict::Deny,
    ));
    let l = lsm(&d);
    assert_eq!(l.action(), pb::KprobeAction::Sigkill);
    let Some(pb::kprobe_argument::Arg::LinuxBinprmArg(b)) = &l.args[0].arg else {
        panic!("no linux_binprm_arg: {l:?}")
    };
    assert_eq!(b.path, "/etc/shadow");

    let d = ev(&policy_match(
        Hook::Connect,
        Operation::Hook,
        BackendKind::Lsm,
        Verdict::Alert,
    ));
    let l = lsm(&d);
    assert_eq!(l.action(), pb::KprobeAction::Post);
    let Some(pb::kprobe_argument::Arg::SockArg(s)) = &l.args[0].arg else {
        panic!("no sock_arg: {l:?}")
    };
    assert_eq!((s.daddr.as_str(), s.dport), ("2001:db8::1", 443));
    assert_eq!(
        (s.family.as_str(), s.protocol.as_str()),
        ("AF_INET6", "IPPROTO_TCP")
    );
}

#[test]
fn lost_events_decode_as_an_event_tetragon_does_not_know() {
    let d = decoded(&JsonEvent::lost(3, 10, "n"));
    assert!(d.event.is_none());
    assert_eq!(d.node_name, "n");
}

mod hooks {
    use std::sync::Arc;

    use vardr_common::generic::{GEN_ACT_AUDIT, GEN_ACT_OVERRIDE, GEN_ACT_POST, GEN_ACT_SIGKILL};

    use super::{chain, decoded, header, pb};
    use crate::{
        events::{GenericCall, HookMeta, JsonEvent},
        policy::tracing::generic::{ArgType, HookPoint},
    };

    fn call(actions: u32, error: i32) -> GenericCall {
        GenericCall {
            header: header(),
            slot: 1,
            selector: Some(0),
            actions,
            signal: 0,
            error,
            ret: 0,
            ints: vec![u64::MAX, 0, 4096, 7, 0],
            strs: vec![
                String::new(),
                "test".into(),
                String::new(),
                "/tmp/tetragon".into(),
                "/usr/bin/true".into(),
            ],
            socks: vec![Default::default(); 5],
            bytes: vec![b"hello world".to_vec(); 5],
            kstack: Vec::new(),
            ustack: Vec::new(),
        }
    }

    /// Stack traces (Post with kernelStackTrace, userStackTrace) decode as
    /// Tetragon's StackTraceEntry lists; a stack the kernel could not take
    /// is said.
    #[test]
    fn stack_traces_decode_as_tetragon_s() {
        use vardr_common::generic::{GEN_ACT_KSTACK, GEN_ACT_POST, GEN_ACT_USTACK};
        let meta = Arc::new(HookMeta {
            policy: "kp".into(),
            point: HookPoint::Kprobe {
                call: "fd_install".into(),
                syscall: false,
            },
            args: vec![],
            rules: vec!["kp.kprobes.0.0".into()],
            message: None,
            tags: vec![],
            ret: None,
        });
        let mut c = call(GEN_ACT_POST | GEN_ACT_KSTACK | GEN_ACT_USTACK, 0);
        c.kstack = vec![0xffff_ffff_8100_0150, 0xffff_ffff_8100_0010];
        // This process's own code: placed in its executable.
        c.ustack = vec![stack_traces_decode_as_tetragon_s as *const () as u64];
        c.header.pid = std::process::id();
        let mut j = JsonEvent::generic(&c, &meta, None, "n", std::time::SystemTime::UNIX_EPOCH);
        crate::events::stack::Symbolizer::default().fill(&c, &mut j);
        let Some(pb::get_events_response::Event::ProcessKprobe(k)) = decoded(&j).event else {
            panic!("not a process_kprobe");
        };
        assert_eq!(k.kernel_stack_trace.len(), 2);
        assert_eq!(k.kernel_stack_trace[0].address, 0xffff_ffff_8100_0150);
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert_eq!(k.user_stack_trace.len(), 1);
        assert_eq!(
            std::path::Path::new(&k.user_stack_trace[0].module),
            exe.as_path()
        );
        assert!(k.user_stack_trace[0].offset > 0);
        // Asked for, not taken.
        let mut c = call(GEN_ACT_POST | GEN_ACT_USTACK, 0);
        c.ustack.clear();
        let mut j = JsonEvent::generic(&c, &meta, None, "n", std::time::SystemTime::UNIX_EPOCH);
        crate::events::stack::Symbolizer::default().fill(&c, &mut j);
        let v = serde_json::to_value(&j).expect("json");
        assert_eq!(
            v["process_kprobe"]["stack_trace_error"], "the kernel could not take the stack",
            "{v}"
        );
    }

    fn meta(point: HookPoint) -> Arc<HookMeta> {
        Arc::new(HookMeta {
            policy: "kp".into(),
            point,
            args: vec![
                ArgType::Int,
                ArgType::Filename,
                ArgType::SizeT,
                ArgType::File,
                ArgType::LinuxBinprm,
            ],
            rules: vec!["kp.kprobes.0.0".into()],
            message: Some("seen".into()),
            tags: vec!["t1".into()],
            ret: None,
        })
    }

    /// Every argument type, each action, both hook kinds: Tetragon's
    /// messages decode them, with the values vardr wrote.
    #[test]
    fn kprobe_and_tracepoint_calls_decode_as_tetragon_s() {
        let kp = meta(HookPoint::Kprobe {
            call: "do_mkdirat".into(),
            syscall: false,
        });
        let override_kill = GEN_ACT_POST | GEN_ACT_OVERRIDE | GEN_ACT_SIGKILL;
        for (actions, error, want) in [
            (GEN_ACT_POST | GEN_ACT_SIGKILL, 0, pb::KprobeAction::Sigkill),
            (
                GEN_ACT_POST | GEN_ACT_SIGKILL | GEN_ACT_AUDIT,
                0,
                pb::KprobeAction::Post,
            ),
            (GEN_ACT_POST, 0, pb::KprobeAction::Post),
            (
                GEN_ACT_POST | GEN_ACT_OVERRIDE,
                -1,
                pb::KprobeAction::Override,
            ),
            (override_kill, -13, pb::KprobeAction::Override),
            (override_kill | GEN_ACT_AUDIT, 0, pb::KprobeAction::Post),
        ] {
            let j = JsonEvent::generic(
                &call(actions, error),
                &kp,
                Some(&chain()),
                "n",
                std::time::SystemTime::UNIX_EPOCH,
            );
            let Some(pb::get_events_response::Event::ProcessKprobe(k)) = decoded(&j).event else {
                panic!("not a process_kprobe");
            };
            // vardr's fields: what was done, what would have been.
            let v = serde_json::to_value(&j).expect("json");
            let v = &v["process_kprobe"];
            let audit = actions & GEN_ACT_AUDIT != 0;
            let enforcing = actions & (GEN_ACT_SIGKILL | GEN_ACT_OVERRIDE) != 0;
            let verdict = match (enforcing, audit) {
                (true, false) => "deny",
                (true, true) => "audit",
                (false, _) => "alert",
            };
            assert_eq!(v["verdict"], verdict, "{v}");
            let errno = match error {
                -1 => "EPERM",
                -13 => "EACCES",
                _ => "",
            };
            assert_eq!(v["override_error"].as_str().unwrap_or(""), errno, "{v}");
            let killed = actions & GEN_ACT_SIGKILL != 0 && !audit;
            assert_eq!(v["signal"].as_str() == Some("SIGKILL"), killed, "{v}");
            if actions == override_kill | GEN_ACT_AUDIT {
                assert_eq!(v["intended_action"], "KPROBE_ACTION_OVERRIDE", "{v}");
            }
            assert_eq!(k.function_name, "do_mkdirat");
            assert_eq!(k.policy_name, "kp");
            assert_eq!(k.action, want as i32);
            assert_eq!(k.message, "seen");
            assert_eq!(k.tags, ["t1"]);
            assert_eq!(
                k.process.as_ref().and_then(|p| p.pid).map(|v| v.value),
                Some(4242)
            );
            assert_eq!(
                k.parent.as_ref().map(|p| p.binary.as_str()),
                Some("/usr/bin/bash")
            );
            use pb::kprobe_argument::Arg;
            let args: Vec<_> = k.args.iter().map(|a| a.arg.clone()).collect();
            assert_eq!(args[0], Some(Arg::IntArg(-1)));
            assert_eq!(args[1], Some(Arg::StringArg("test".into())));
            assert_eq!(args[2], Some(Arg::SizeArg(4096)));
            match &args[3] {
                Some(Arg::FileArg(f)) => assert_eq!(f.path, "/tmp/tetragon"),
                other => panic!("{other:?}"),
            }
            match &args[4] {
                Some(Arg::LinuxBinprmArg(b)) => assert_eq!(b.path, "/usr/bin/true"),
                other => panic!("{other:?}"),
            }
        }
        let tp = meta(HookPoint::Tracepoint {
            subsystem: "sched".into(),
            event: "sched_process_exec".into(),
        });
        let j = JsonEvent::generic(
            &call(GEN_ACT_POST, 0),
            &tp,
            None,
            "n",
            std::time::SystemTime::UNIX_EPOCH,
        );
        let Some(pb::get_events_response::Event::ProcessTracepoint(t)) = decoded(&j).event else {
            panic!("not a process_tracepoint");
        };
        assert_eq!(
            (t.subsys.as_str(), t.event.as_str()),
            ("sched", "sched_process_exec")
        );
        assert_eq!(t.action, pb::KprobeAction::Post as i32);
        assert_eq!(t.args.len(), 5);
    }

    /// A return probe's `matchReturnActions`: `return_action` says what was
    /// done at the return (Post in audit mode, with the intent beside it);
    /// the entry's `action` stays Post.
    #[test]
    fn return_actions_decode_as_tetragon_s() {
        use vardr_common::generic::{GEN_ACT_RETURN, GEN_ACT_RET_SIGKILL};
        let mut m = meta(HookPoint::Kprobe {
            call: "sys_openat".into(),
            syscall: true,
        });
        Arc::get_mut(&mut m).expect("only holder").ret = Some(ArgType::Int);
        for audit in [false, true] {
            let mut c = call(
                GEN_ACT_POST
                    | GEN_ACT_RETURN
                    | GEN_ACT_RET_SIGKILL
                    | if audit { GEN_ACT_AUDIT } else { 0 },
                0,
            );
            c.ret = (-2i64) as u64;
            let j = JsonEvent::generic(&c, &m, None, "n", std::time::SystemTime::UNIX_EPOCH);
            let Some(pb::get_events_response::Event::ProcessKprobe(k)) = decoded(&j).event else {
                panic!("not a process_kprobe");
            };
            let want = if audit {
                pb::KprobeAction::Post
            } else {
                pb::KprobeAction::Sigkill
            };
            assert_eq!(k.return_action, want as i32, "audit {audit}");
            assert_eq!(k.action, pb::KprobeAction::Post as i32);
            let v = serde_json::to_value(&j).expect("json");
            let v = &v["process_kprobe"];
            assert_eq!(v["return"]["int_arg"], -2, "{v}");
            if audit {
                assert_eq!(v["verdict"], "audit", "{v}");
                assert_eq!(v["intended_action"], "KPROBE_ACTION_SIGKILL", "{v}");
                assert!(v["signal"].is_null(), "{v}");
            } else {
                assert_eq!(v["verdict"], "deny", "{v}");
                assert_eq!(v["signal"], "SIGKILL", "{v}");
            }
        }
    }

    /// An `lsmhooks` hook of its own writes `process_lsm` with the hook as
    /// `function_name`; a `cred` argument decodes as Tetragon's
    /// `process_credentials_arg`.
    #[test]
    fn lsm_hook_calls_and_credentials_decode_as_tetragon_s() {
        use vardr_common::generic::GenCred;
        let meta = Arc::new(HookMeta {
            policy: "creds".into(),
            point: HookPoint::Lsm {
                hook: "task_fix_setuid".into(),
            },
            args: vec![ArgType::Cred, ArgType::Cred, ArgType::Int],
            rules: vec!["creds.lsmhooks.0.0".into()],
            message: None,
            tags: vec![],
            ret: None,
        });
        let mut c = call(GEN_ACT_POST | GEN_ACT_OVERRIDE, -1);
        let new = GenCred {
            uid: 1000,
            euid: 1000,
            gid: 100,
            user_ns: 0xEFFF_FFFD,
            valid: 1,
            cap_effective: 1 << 21,
            // CAP_CHOWN, CAP_DAC_OVERRIDE (Tetragon: DAC_OVERRIDE), CAP_SYS_ADMIN.
            cap_permitted: (1 << 21) | 0b11,
            ..GenCred::default()
        };
        // SAFETY: GenCred is plain integers; its bytes go where the kernel
        // writes them, at the start of the argument's buffer.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&raw const new).cast::<u8>(),
                std::mem::size_of::<GenCred>(),
            )
        };
        c.bytes[0] = raw.to_vec();
        c.bytes[1] = vec![0; std::mem::size_of::<GenCred>()];
        c.ints[2] = 1;
        let j = JsonEvent::generic(&c, &meta, None, "n", std::time::SystemTime::UNIX_EPOCH);
        let v = serde_json::to_value(&j).expect("json");
        assert_eq!(v["process_lsm"]["backend"], "lsm", "{v}");
        assert_eq!(v["process_lsm"]["override_error"], "EPERM", "{v}");
        let Some(pb::get_events_response::Event::ProcessLsm(l)) = decoded(&j).event else {
            panic!("not a process_lsm: {v}");
        };
        assert_eq!(l.function_name, "task_fix_setuid");
        assert_eq!(l.action(), pb::KprobeAction::Override);
        use pb::kprobe_argument::Arg;
        let Some(Arg::ProcessCredentialsArg(p)) = &l.args[0].arg else {
            panic!("no process_credentials_arg: {:?}", l.args[0]);
        };
        assert_eq!(p.uid.as_ref().map(|v| v.value), Some(1000));
        assert_eq!(p.gid.as_ref().map(|v| v.value), Some(100));
        let caps = p.caps.as_ref().expect("caps");
        assert_eq!(caps.effective, [pb::CapabilitiesType::CapSysAdmin as i32]);
        assert_eq!(
            caps.permitted,
            [
                pb::CapabilitiesType::CapChown as i32,
                pb::CapabilitiesType::DacOverride as i32,
                pb::CapabilitiesType::CapSysAdmin as i32
            ]
        );
        let ns = p.user_ns.as_ref().and_then(|u| u.ns.as_ref()).expect("ns");
        assert!(ns.is_host && ns.inum == 0xEFFF_FFFD);
        // An unread (null) cred: zeros, no capabilities.
        let Some(Arg::ProcessCredentialsArg(p)) = &l.args[1].arg else {
            panic!("no process_credentials_arg: {:?}", l.args[1]);
        };
        assert!(p.caps.as_ref().is_some_and(|c| c.effective.is_empty()));
    }

    /// An `skb` argument decodes as Tetragon's KprobeSkb.
    #[test]
    fn an_skb_argument_decodes_as_tetragon_s() {
        use vardr_common::generic::{GenSkb, GenSock};
        let meta = Arc::new(HookMeta {
            policy: "kp".into(),
            point: HookPoint::Kprobe {
                call: "ip_output".into(),
                syscall: false,
            },
            args: vec![ArgType::Skb, ArgType::Skb],
            rules: vec!["kp.kprobes.0.0".into()],
            message: None,
            tags: vec![],
            ret: None,
        });
        let mut c = call(GEN_ACT_POST, 0);
        let skb = GenSkb {
            sock: GenSock {
                family: 2,
                protocol: 17,
                sport: 40000,
                dport: 53,
                valid: 1,
                saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..GenSock::default()
            },
            len: 61,
            priority: 6,
            mark: 0x42,
            hash: 0xdead_beef,
        };
        // SAFETY: GenSkb is plain integers; its bytes go where the kernel
        // writes them, at the start of the argument's buffer.
        let raw = unsafe {
            std::slice::from_raw_parts((&raw const skb).cast::<u8>(), std::mem::size_of::<GenSkb>())
        };
        c.bytes[0] = raw.to_vec();
        // An unreadable packet: nothing but zeros.
        c.bytes[1] = vec![0; std::mem::size_of::<GenSkb>()];
        let j = JsonEvent::generic(&c, &meta, None, "n", std::time::SystemTime::UNIX_EPOCH);
        let Some(pb::get_events_response::Event::ProcessKprobe(k)) = decoded(&j).event else {
            panic!("not a process_kprobe");
        };
        use pb::kprobe_argument::Arg;
        match &k.args[0].arg {
            Some(Arg::SkbArg(s)) => {
                assert_eq!(
                    (s.family.as_str(), s.protocol.as_str(), s.proto),
                    ("AF_INET", "IPPROTO_UDP", 17)
                );
                assert_eq!(
                    (s.saddr.as_str(), s.daddr.as_str()),
                    ("127.0.0.1", "10.1.2.3")
                );
                assert_eq!((s.sport, s.dport, s.len), (40000, 53, 61));
                assert_eq!((s.priority, s.mark, s.hash), (6, 0x42, 0xdead_beef));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&k.args[1].arg, Some(Arg::SkbArg(s)) if s.len == 0 && s.saddr.is_empty()));
    }

    /// A `sock` and a `sockaddr` argument decode as Tetragon's KprobeSock
    /// and KprobeSockaddr, a `char_buf` as bytes, an `fd` as its file, a
    /// return probe's value as its `return`.
    #[test]
    fn socket_arguments_and_a_return_value_decode_as_tetragon_s() {
        use vardr_common::generic::GenSock;
        let meta = Arc::new(HookMeta {
            policy: "kp".into(),
            point: HookPoint::Kprobe {
                call: "tcp_connect".into(),
                syscall: false,
            },
            args: vec![
                ArgType::Sock,
                ArgType::Sockaddr,
                ArgType::CharBuf,
                ArgType::Fd,
            ],
            rules: vec!["kp.kprobes.0.0".into()],
            message: None,
            tags: vec![],
            ret: Some(ArgType::Int),
        });
        let mut c = call(GEN_ACT_POST, 0);
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        c.socks[0] = GenSock {
            family: 2,
            protocol: 6,
            type_: 1,
            sport: 40000,
            dport: 443,
            state: 2,
            valid: 1,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        c.ints[2] = 5;
        c.strs[3] = "/etc/passwd".into();
        c.socks[1] = GenSock {
            family: 10,
            sport: 8080,
            valid: 1,
            saddr: v6,
            ..GenSock::default()
        };
        // A return probe's event: the value, typed as its returnArg.
        c.actions |= vardr_common::generic::GEN_ACT_RETURN;
        c.ret = (-2i64) as u64;
        let j = JsonEvent::generic(&c, &meta, None, "n", std::time::SystemTime::UNIX_EPOCH);
        let Some(pb::get_events_response::Event::ProcessKprobe(k)) = decoded(&j).event else {
            panic!("not a process_kprobe");
        };
        use pb::kprobe_argument::Arg;
        assert_eq!(
            k.r#return.as_ref().and_then(|r| r.arg.clone()),
            Some(Arg::IntArg(-2))
        );
        assert_eq!(k.return_action, pb::KprobeAction::Post as i32);
        match &k.args[0].arg {
            Some(Arg::SockArg(s)) => {
                assert_eq!(
                    (s.family.as_str(), s.r#type.as_str(), s.protocol.as_str()),
                    ("AF_INET", "SOCK_STREAM", "IPPROTO_TCP")
                );
                assert_eq!(
                    (s.saddr.as_str(), s.daddr.as_str()),
                    ("127.0.0.1", "10.1.2.3")
                );
                assert_eq!((s.sport, s.dport), (40000, 443));
                assert_eq!(s.state, "TCP_SYN_SENT");
            }
            other => panic!("{other:?}"),
        }
        // A char_buf: the bytes the kernel copied, as many as the size said.
        assert_eq!(k.args[2].arg, Some(Arg::BytesArg(b"hello".to_vec())));
        // An fd: its file.
        match &k.args[3].arg {
            Some(Arg::FileArg(f)) => assert_eq!(f.path, "/etc/passwd"),
            other => panic!("{other:?}"),
        }
        match &k.args[1].arg {
            Some(Arg::SockaddrArg(a)) => {
                assert_eq!(
                    (a.family.as_str(), a.addr.as_str(), a.port),
                    ("AF_INET6", "::1", 8080)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
