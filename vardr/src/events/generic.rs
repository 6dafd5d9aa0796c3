//! Calls of TracingPolicy kprobe and tracepoint hooks: decoded from the
//! generic hooks' ring buffer and written as Tetragon's `process_kprobe`
//! and `process_tracepoint`.
use std::{sync::Arc, time::SystemTime};

use serde::Serialize;
use vardr_common::{
    generic::{
        GenCred, GenSkb, GenSock, GenericEvent, GEN_ACT_AUDIT, GEN_ACT_OVERRIDE, GEN_ACT_RETURN,
        GEN_ACT_RET_SIGKILL, GEN_ACT_RET_SIGNAL, GEN_ACT_SIGKILL, GEN_ACT_SIGNAL, GEN_MAX_ARGS,
        GEN_STACK_DEPTH,
    },
    EventHeader, EventKind,
};

use super::{
    c_str,
    json::{Body, JsonEvent, Process},
    DecodeError,
};
use crate::{
    policy::tracing::generic::{ArgType, HookPoint},
    process::ProcessInfo,
};

/// One call a hook reported.
#[derive(Debug, Clone)]
pub struct GenericCall {
    pub header: EventHeader,
    pub slot: u32,
    /// The selector that matched (none: a hook without selectors).
    pub selector: Option<u32>,
    /// `GEN_ACT_*`.
    pub actions: u32,
    pub signal: u32,
    /// What an Override made the call return (0: not overridden).
    pub error: i32,
    /// A return probe's value (with `GEN_ACT_RETURN`).
    pub ret: u64,
    /// Per argument (the hook's first [`GEN_MAX_ARGS`]).
    pub ints: Vec<u64>,
    pub strs: Vec<String>,
    /// The same buffers read as a `sock` or `sockaddr` argument.
    pub socks: Vec<GenSock>,
    /// The same buffers' bytes (a `char_buf` argument's copy).
    pub bytes: Vec<Vec<u8>>,
    /// Return addresses of the kernel and user stacks, innermost first
    /// (Post with `kernelStackTrace`, `userStackTrace`).
    pub kstack: Vec<u64>,
    pub ustack: Vec<u64>,
}

pub fn decode(bytes: &[u8]) -> Result<GenericCall, DecodeError> {
    let ev: GenericEvent = super::read(bytes, EventKind::Generic)?;
    Ok(GenericCall {
        header: ev.header,
        slot: ev.slot,
        selector: (ev.selector != u32::MAX).then_some(ev.selector),
        actions: ev.actions,
        signal: ev.signal,
        error: ev.error,
        ret: ev.ret,
        ints: ev.ints[..GEN_MAX_ARGS].to_vec(),
        strs: ev.strs[..GEN_MAX_ARGS].iter().map(|s| c_str(s)).collect(),
        socks: ev.strs[..GEN_MAX_ARGS]
            .iter()
            .map(|s| record_of(s))
            .collect(),
        bytes: ev.strs[..GEN_MAX_ARGS].iter().map(|s| s.to_vec()).collect(),
        kstack: frames(&ev.kstack, ev.kstack_len),
        ustack: frames(&ev.ustack, ev.ustack_len),
    })
}

fn frames(all: &[u64; GEN_STACK_DEPTH], n: u32) -> Vec<u64> {
    all[..(n as usize).min(GEN_STACK_DEPTH)].to_vec()
}

/// The record (a [`GenSock`], a [`GenCred`]) the kernel wrote at the start
/// of an argument's buffer; a shorter buffer leaves the rest default.
fn record_of<T: aya::Pod + Default>(buf: &[u8]) -> T {
    let mut r = T::default();
    let n = std::mem::size_of::<T>().min(buf.len());
    // SAFETY: T is plain data (`Pod`): any bytes are a value; at most its
    // size is copied, from a buffer at least that long.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), (&raw mut r).cast::<u8>(), n);
    }
    r
}

/// An address of `family` from its bytes (IPv4 in the first four).
fn addr(family: u16, bytes: &[u8; 16]) -> String {
    match family {
        2 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        10 => std::net::Ipv6Addr::from(*bytes).to_string(),
        _ => String::new(),
    }
}

/// What the agent knows of an attached hook, to name its calls.
#[derive(Debug)]
pub struct HookMeta {
    pub policy: String,
    pub point: HookPoint,
    /// The argument types, `auto` resolved.
    pub args: Vec<ArgType>,
    /// Rule name per selector (`<hook>.<selector>`).
    pub rules: Vec<String>,
    pub message: Option<String>,
    pub tags: Vec<String>,
    /// A return probe's value type.
    pub ret: Option<ArgType>,
}

/// One argument as Tetragon's `KprobeArgument`.
#[derive(Serialize, Debug)]
pub enum Arg {
    #[serde(rename = "int_arg")]
    Int(i32),
    #[serde(rename = "uint_arg")]
    Uint(u32),
    #[serde(rename = "long_arg")]
    Long(i64),
    #[serde(rename = "size_arg")]
    Size(u64),
    #[serde(rename = "string_arg")]
    String(String),
    #[serde(rename = "file_arg")]
    File { path: String },
    #[serde(rename = "path_arg")]
    Path { path: String },
    #[serde(rename = "linux_binprm_arg")]
    LinuxBinprm { path: String },
    #[serde(rename = "sock_arg")]
    Sock {
        family: String,
        #[serde(rename = "type")]
        type_: String,
        protocol: String,
        saddr: String,
        daddr: String,
        sport: u16,
        dport: u16,
        #[serde(skip_serializing_if = "String::is_empty")]
        state: String,
    },
    /// A `char_buf`'s first bytes, base64 (the JSON of protobuf bytes).
    #[serde(rename = "bytes_arg")]
    Bytes(String),
    #[serde(rename = "sockaddr_arg")]
    Sockaddr {
        family: String,
        addr: String,
        port: u16,
    },
    #[serde(rename = "process_credentials_arg")]
    Cred(Box<Credentials>),
    /// Tetragon's `KprobeSkb` (`sec_path_len`/`sec_path_olen` not read:
    /// absent, which the JSON mapping reads as 0).
    #[serde(rename = "skb_arg")]
    Skb {
        hash: u32,
        len: u32,
        priority: u32,
        mark: u32,
        saddr: String,
        daddr: String,
        sport: u16,
        dport: u16,
        proto: u16,
        protocol: String,
        family: String,
    },
}

/// Tetragon's `ProcessCredentials` (`securebits` not read).
#[derive(Serialize, Debug)]
pub struct Credentials {
    #[serde(flatten)]
    pub ids: super::Creds,
    pub caps: Caps,
    pub user_ns: UserNs,
}

/// Capability sets by name (`CAP_SYS_ADMIN`, ...).
#[derive(Serialize, Debug)]
pub struct Caps {
    pub permitted: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct UserNs {
    pub ns: Ns,
}

#[derive(Serialize, Debug)]
pub struct Ns {
    pub inum: u32,
    pub is_host: bool,
}

/// The initial user namespace's inode number (`PROC_USER_INIT_INO`).
const HOST_USER_NS: u32 = 0xEFFF_FFFD;

/// The names of the capabilities in `set` (bit n: capability n).
fn cap_names(set: u64) -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.into_iter()
        .filter(|c| c.index() < 64 && set & (1u64 << c.index()) != 0)
        // Tetragon's enum names this one without its prefix.
        .map(|c| match c {
            caps::Capability::CAP_DAC_OVERRIDE => "DAC_OVERRIDE".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn credentials(c: &GenCred) -> Credentials {
    Credentials {
        ids: super::Creds {
            uid: c.uid,
            gid: c.gid,
            euid: c.euid,
            egid: c.egid,
            suid: c.suid,
            sgid: c.sgid,
            fsuid: c.fsuid,
            fsgid: c.fsgid,
        },
        caps: Caps {
            permitted: cap_names(c.cap_permitted),
            effective: cap_names(c.cap_effective),
            inheritable: cap_names(c.cap_inheritable),
        },
        user_ns: UserNs {
            ns: Ns {
                inum: c.user_ns,
                is_host: c.user_ns == HOST_USER_NS,
            },
        },
    }
}

fn arg(ty: ArgType, int: u64, s: &str, sk: &GenSock, bytes: &[u8]) -> Arg {
    use crate::policy::tracing::sock_ops::{family_name, protocol_name, state_name, type_name};
    match ty {
        ArgType::Int => Arg::Int(int as i32),
        ArgType::Uint32 => Arg::Uint(int as u32),
        ArgType::Int64 => Arg::Long(int as i64),
        ArgType::Uint64 | ArgType::SizeT | ArgType::Auto => Arg::Size(int),
        ArgType::String | ArgType::Filename => Arg::String(s.to_string()),
        // A descriptor as Tetragon shows a followed one: its file.
        ArgType::File | ArgType::Fd => Arg::File {
            path: s.to_string(),
        },
        ArgType::Path => Arg::Path {
            path: s.to_string(),
        },
        ArgType::LinuxBinprm => Arg::LinuxBinprm {
            path: s.to_string(),
        },
        ArgType::Sock => Arg::Sock {
            family: family_name(sk.family),
            type_: type_name(sk.type_),
            protocol: protocol_name(sk.protocol),
            saddr: addr(sk.family, &sk.saddr),
            daddr: addr(sk.family, &sk.daddr),
            sport: sk.sport,
            dport: sk.dport,
            state: state_name(sk.state),
        },
        // `int` is the size the caller gave; the kernel copied at most
        // the buffer's length.
        ArgType::CharBuf => {
            use base64::Engine as _;
            let n = usize::try_from(int).unwrap_or(usize::MAX).min(bytes.len());
            Arg::Bytes(base64::engine::general_purpose::STANDARD.encode(&bytes[..n]))
        }
        ArgType::Cred => Arg::Cred(Box::new(credentials(&record_of(bytes)))),
        ArgType::Sockaddr => Arg::Sockaddr {
            family: family_name(sk.family),
            addr: addr(sk.family, &sk.saddr),
            port: sk.sport,
        },
        ArgType::Skb => {
            let b: GenSkb = record_of(bytes);
            let sk = &b.sock;
            Arg::Skb {
                hash: b.hash,
                len: b.len,
                priority: b.priority,
                mark: b.mark,
                saddr: addr(sk.family, &sk.saddr),
                daddr: addr(sk.family, &sk.daddr),
                sport: sk.sport,
                dport: sk.dport,
                proto: sk.protocol,
                protocol: protocol_name(sk.protocol),
                family: family_name(sk.family),
            }
        }
    }
}

/// `process_kprobe`, `process_tracepoint`, `process_uprobe` or an
/// `lsmhooks` hook's `process_lsm`: Tetragon's fields, then
/// vardr's (`rule`, `verdict`, `intended_action`, `backend`).
#[derive(Serialize, Debug)]
pub struct ProcessHook {
    pub process: Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
    /// A kprobe's function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_name: Option<String>,
    /// A uprobe's file and symbol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// A uprobe's file offset (instead of a symbol; a string, as the
    /// protobuf JSON mapping writes 64-bit numbers).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "offset_string"
    )]
    pub offset: Option<u64>,
    /// A tracepoint's subsystem and event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsys: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub args: Vec<Arg>,
    /// A return probe's value, typed as its `returnArg`.
    #[serde(rename = "return", skip_serializing_if = "Option::is_none")]
    pub ret: Option<Arg>,
    /// What the kernel did: `KPROBE_ACTION_OVERRIDE` (the call failed;
    /// a Sigkill with it is in `signal`), `KPROBE_ACTION_SIGKILL`,
    /// `KPROBE_ACTION_SIGNAL` or `KPROBE_ACTION_POST` (reported only, also
    /// when `--enforce` is off and the selector asked for more: see
    /// `intended_action`).
    pub action: &'static str,
    pub policy_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A return probe's: `KPROBE_ACTION_POST` (posted at the return).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_action: Option<&'static str>,
    /// The selector's rule, `<policy>.<kprobes|tracepoints>.<i>.<selector>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// deny (killed or signalled), audit (would have been: `--enforce` is
    /// off) or alert (reported only).
    pub verdict: &'static str,
    /// What the selector asks for when enforcement is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intended_action: Option<&'static str>,
    /// kprobe or tracepoint.
    pub backend: &'static str,
    /// The signal sent (Signal, Sigkill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// What an Override made the call return, by its errno's name (`EPERM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_error: Option<String>,
    /// Tetragon's stack traces (kprobes: Post with `kernelStackTrace`,
    /// `userStackTrace`), innermost frame first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack_trace: Vec<super::stack::StackEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_stack_trace: Vec<super::stack::StackEntry>,
    /// A stack the selector asked for that the kernel could not take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_trace_error: Option<&'static str>,
}

fn offset_string<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The action that stopped the call or its caller: an Override first (the
/// call did not happen), then a signal.
fn enforcing_action(actions: u32) -> Option<&'static str> {
    if actions & GEN_ACT_OVERRIDE != 0 {
        Some("KPROBE_ACTION_OVERRIDE")
    } else if actions & GEN_ACT_SIGKILL != 0 {
        Some("KPROBE_ACTION_SIGKILL")
    } else if actions & GEN_ACT_SIGNAL != 0 {
        Some("KPROBE_ACTION_SIGNAL")
    } else {
        None
    }
}

/// What `matchReturnActions` did at the return (or would have, in audit).
fn return_action(actions: u32) -> Option<&'static str> {
    if actions & GEN_ACT_RET_SIGKILL != 0 {
        Some("KPROBE_ACTION_SIGKILL")
    } else if actions & GEN_ACT_RET_SIGNAL != 0 {
        Some("KPROBE_ACTION_SIGNAL")
    } else {
        None
    }
}

/// `-1` → `EPERM`; a number no errno has stays a number.
fn errno_name(error: i32) -> String {
    match nix::errno::Errno::from_raw(error.saturating_neg()) {
        nix::errno::Errno::UnknownErrno => error.to_string(),
        e => format!("{e:?}"),
    }
}

impl JsonEvent {
    /// The line for a hook's call; `process` from the cache, if it knows it.
    pub fn generic(
        c: &GenericCall,
        meta: &Arc<HookMeta>,
        process: Option<&ProcessInfo>,
        node: &str,
        time: SystemTime,
    ) -> Self {
        let mut proc_json =
            process.map_or_else(|| Process::from_header(&c.header), Process::from_info);
        proc_json.tid = Some(c.header.tid);
        let audit = c.actions & GEN_ACT_AUDIT != 0;
        let enforced = enforcing_action(c.actions).filter(|_| !audit);
        let at_return = return_action(c.actions);
        let (verdict, intended) = match (enforcing_action(c.actions).or(at_return), audit) {
            (Some(a), true) => ("audit", Some(a)),
            (Some(_), false) => ("deny", None),
            (None, _) => ("alert", None),
        };
        let kill = GEN_ACT_SIGKILL | GEN_ACT_RET_SIGKILL;
        let signalled = !audit && c.actions & (kill | GEN_ACT_SIGNAL | GEN_ACT_RET_SIGNAL) != 0;
        let signal = signalled.then(|| {
            let sig = if c.actions & kill != 0 { 9 } else { c.signal };
            super::json::signal_name(sig)
        });
        let override_error = (c.error != 0).then(|| errno_name(c.error));
        let returned = c.actions & GEN_ACT_RETURN != 0;
        let args = meta
            .args
            .iter()
            .enumerate()
            .take(GEN_MAX_ARGS)
            .map(|(i, ty)| {
                arg(
                    *ty,
                    c.ints.get(i).copied().unwrap_or(0),
                    c.strs.get(i).map_or("", |s| s.as_str()),
                    &c.socks.get(i).copied().unwrap_or_default(),
                    c.bytes.get(i).map_or(&[][..], |b| b.as_slice()),
                )
            })
            .collect();
        let (mut path, mut symbol, mut offset) = (None, None, None);
        let (function_name, subsys, event, backend) = match &meta.point {
            HookPoint::Kprobe { call, .. } => (Some(call.clone()), None, None, "kprobe"),
            HookPoint::Tracepoint { subsystem, event } => (
                None,
                Some(subsystem.clone()),
                Some(event.clone()),
                "tracepoint",
            ),
            HookPoint::Uprobe {
                path: p,
                symbol: s,
                offset: o,
            } => {
                path = Some(p.clone());
                if s.is_empty() {
                    offset = Some(*o);
                } else {
                    symbol = Some(s.clone());
                }
                (None, None, None, "uprobe")
            }
            // Tetragon names an LSM event's function by the hook.
            HookPoint::Lsm { hook } => (Some(hook.clone()), None, None, "lsm"),
        };
        let body = ProcessHook {
            process: proc_json,
            parent: process.and_then(super::json::parent_of),
            ancestors: process
                .map(|p| {
                    p.ancestors()
                        .iter()
                        .map(|a| Process::from_info(a))
                        .collect()
                })
                .unwrap_or_default(),
            function_name,
            path,
            symbol,
            offset,
            subsys,
            event,
            args,
            ret: returned.then(|| {
                arg(
                    meta.ret.unwrap_or(ArgType::Int64),
                    c.ret,
                    "",
                    &GenSock::default(),
                    &[],
                )
            }),
            return_action: returned
                .then(|| at_return.filter(|_| !audit).unwrap_or("KPROBE_ACTION_POST")),
            action: enforced.unwrap_or("KPROBE_ACTION_POST"),
            policy_name: meta.policy.clone(),
            message: meta.message.clone().unwrap_or_default(),
            tags: meta.tags.clone(),
            rule: c.selector.and_then(|s| meta.rules.get(s as usize)).cloned(),
            verdict,
            intended_action: intended,
            backend,
            signal,
            override_error,
            kernel_stack_trace: Vec::new(),
            user_stack_trace: Vec::new(),
            stack_trace_error: None,
        };
        let body = match meta.point {
            HookPoint::Kprobe { .. } => Body::ProcessKprobe(Box::new(body)),
            HookPoint::Tracepoint { .. } => Body::ProcessTracepoint(Box::new(body)),
            HookPoint::Uprobe { .. } => Body::ProcessUprobe(Box::new(body)),
            HookPoint::Lsm { .. } => Body::ProcessLsmHook(Box::new(body)),
        };
        Self::new(body, node, time)
    }
}
