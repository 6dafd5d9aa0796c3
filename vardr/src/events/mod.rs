//! Ring buffer records -> typed events -> Tetragon-shaped JSON.
mod json;

pub use json::{
    backend_name, exec_line, hook_name, rfc3339, verdict_name, Body, Clock, JsonEvent, Layer2,
    Process, RuleInfo,
};

mod compact;
pub use compact::compact;

pub mod generic;
pub mod stack;
pub use generic::{GenericCall, HookMeta};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vardr_common::{
    BackendKind, DnsEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, Hook,
    Operation, PolicyEvent, Verdict, ARGS_LEN, DNS_PAYLOAD_LEN, EVENT_PATH_LEN,
    EXEC_ARGS_TRUNCATED, EXEC_CREDS, EXEC_CWD_RESOLVED, EXEC_PATH_RESOLVED,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {got} bytes, expected {want}")]
    Size {
        kind: EventKind,
        got: usize,
        want: usize,
    },
    #[error("unknown {0} value {1}")]
    Field(&'static str, u32),
}

/// A decoded policy match.
#[derive(Debug, Clone)]
pub struct PolicyMatch {
    pub header: EventHeader,
    pub hook: Hook,
    pub backend: BackendKind,
    pub verdict: Verdict,
    pub rule_id: u32,
    pub flags: u32,
    /// The kernel operation, when not the hook's own (unlink, rename, an
    /// executable mapping, ...).
    pub op: Operation,
    /// Path for file and exec hooks; the server name of a TLS ClientHello.
    pub path: Option<String>,
    /// Destination for connect.
    pub remote: Option<(IpAddr, u16, u8)>,
}

/// A decoded exec.
#[derive(Debug, Clone)]
pub struct Exec {
    pub header: EventHeader,
    pub ppid: u32,
    /// `None` when unset (`u32::MAX`).
    pub auid: Option<u32>,
    pub filename: String,
    /// The executed file's path as the kernel resolved it (from the global
    /// root); `None` when unknown (too long, or a script: the kernel runs
    /// its interpreter).
    pub path: Option<String>,
    /// The working directory at the exec, from the kernel.
    pub cwd: Option<String>,
    /// Credentials after the exec.
    pub creds: Option<Creds>,
    /// When the process started (boot-clock ns), 0 when unknown.
    pub start_ns: u64,
    /// argv without argv[0], joined by spaces (Tetragon's `arguments`).
    pub arguments: String,
    pub args_truncated: bool,
}

/// A process's credentials (Tetragon's `ProcessCredentials` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
}

/// A decoded kernel event.
#[derive(Debug, Clone)]
pub enum Event {
    Exec(Exec),
    Fork {
        header: EventHeader,
        child_pid: u32,
    },
    Exit {
        header: EventHeader,
        exit_code: u32,
    },
    Policy(PolicyMatch),
    /// A DNS response (UDP payload, possibly cut) a scoped socket received.
    Dns {
        header: EventHeader,
        payload: Vec<u8>,
    },
    /// A TracingPolicy kprobe's or tracepoint's call.
    Generic(Box<GenericCall>),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork { header, .. } | Event::Exit { header, .. } | Event::Dns { header, .. } => {
                header
            }
            Event::Policy(p) => &p.header,
            Event::Generic(c) => &c.header,
        }
    }
}

/// NUL-separated arguments without the first, joined by spaces (empty
/// arguments left out); a trailing partial argument is kept. One
/// allocation.
pub fn join_args(buf: &[u8]) -> String {
    let mut out = String::new();
    let mut first = true;
    for a in buf.split(|&b| b == 0).filter(|a| !a.is_empty()) {
        if first {
            first = false;
            out.reserve(buf.len());
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        match std::str::from_utf8(a) {
            Ok(t) => out.push_str(t),
            Err(_) => out.push_str(&String::from_utf8_lossy(a)),
        }
    }
    out
}

/// Reads a `T` from a record of exactly its size.
fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() != want {
        return Err(DecodeError::Size {
            kind,
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: the length matches and T is a repr(C) plain-data record for
    // which every bit pattern is valid; read_unaligned copes with alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// C string in a fixed buffer, up to its first NUL.
pub fn c_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    lossy(&buf[..end])
}

/// UTF-8 text, invalid sequences replaced (the check alone when valid).
fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// An exec record for tests and benchmarks: `path` and `cwd` are given as
/// the kernel resolved them (`None`: not resolved).
#[allow(clippy::too_many_arguments)]
pub fn exec_record(
    header: EventHeader,
    start_ns: u64,
    ppid: u32,
    auid: u32,
    filename: &str,
    path: Option<&str>,
    cwd: Option<&str>,
    creds: Option<Creds>,
    argv: &[u8],
) -> Vec<u8> {
    fn put(dst: &mut [u8; EVENT_PATH_LEN], s: &str) {
        let n = s.len().min(EVENT_PATH_LEN - 1);
        dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
    let mut ev = ExecEvent {
        header,
        ppid,
        auid,
        flags: 0,
        args_len: 0,
        euid: 0,
        egid: 0,
        suid: 0,
        sgid: 0,
        fsuid: 0,
        fsgid: 0,
        start_ns: 0,
        filename: [0; EVENT_PATH_LEN],
        path: [0; EVENT_PATH_LEN],
        cwd: [0; EVENT_PATH_LEN],
        args: [0; ARGS_LEN],
    };
    ev.start_ns = start_ns;
    put(&mut ev.filename, filename);
    if let Some(p) = path {
        put(&mut ev.path, p);
        ev.flags |= EXEC_PATH_RESOLVED;
    }
    if let Some(c) = cwd {
        put(&mut ev.cwd, c);
        ev.flags |= EXEC_CWD_RESOLVED;
    }
    if let Some(c) = creds {
        (ev.euid, ev.egid, ev.suid, ev.sgid, ev.fsuid, ev.fsgid) =
            (c.euid, c.egid, c.suid, c.sgid, c.fsuid, c.fsgid);
        ev.flags |= EXEC_CREDS;
    }
    let n = argv.len().min(ARGS_LEN);
    ev.args[..n].copy_from_slice(&argv[..n]);
    ev.args_len = n as u32;
    if argv.len() > ARGS_LEN {
        ev.flags |= EXEC_ARGS_TRUNCATED;
    }
    // SAFETY: ExecEvent is repr(C) plain data; its bytes are copied out.
    unsafe {
        std::slice::from_raw_parts(
            (&ev as *const ExecEvent).cast::<u8>(),
            std::mem::size_of::<ExecEvent>(),
        )
    }
    .to_vec()
}

/// An exec record read in place: the fixed fields one by one and the
/// strings straight from their buffers (no copy of the 2 KiB record).
fn decode_exec(bytes: &[u8]) -> Result<Exec, DecodeError> {
    use std::mem::offset_of;
    let want = std::mem::size_of::<ExecEvent>();
    if bytes.len() != want {
        return Err(DecodeError::Size {
            kind: EventKind::Exec,
            got: bytes.len(),
            want,
        });
    }
    let u32_at = |off: usize| {
        u32::from_ne_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
    };
    let field = |off: usize, len: usize| &bytes[off..off + len];
    let header = read::<EventHeader>(
        field(
            offset_of!(ExecEvent, header),
            std::mem::size_of::<EventHeader>(),
        ),
        EventKind::Exec,
    )?;
    let flags = u32_at(offset_of!(ExecEvent, flags));
    let auid = u32_at(offset_of!(ExecEvent, auid));
    let n = (u32_at(offset_of!(ExecEvent, args_len)) as usize).min(ARGS_LEN);
    let path_field = |off: usize, flag: u32| {
        (flags & flag != 0)
            .then(|| c_str(field(off, EVENT_PATH_LEN)))
            .filter(|p| p.starts_with('/'))
    };
    Ok(Exec {
        header,
        ppid: u32_at(offset_of!(ExecEvent, ppid)),
        auid: (auid != u32::MAX).then_some(auid),
        filename: c_str(field(offset_of!(ExecEvent, filename), EVENT_PATH_LEN)),
        path: path_field(offset_of!(ExecEvent, path), EXEC_PATH_RESOLVED),
        cwd: path_field(offset_of!(ExecEvent, cwd), EXEC_CWD_RESOLVED),
        creds: (flags & EXEC_CREDS != 0).then(|| Creds {
            uid: header.uid,
            gid: header.gid,
            euid: u32_at(offset_of!(ExecEvent, euid)),
            egid: u32_at(offset_of!(ExecEvent, egid)),
            suid: u32_at(offset_of!(ExecEvent, suid)),
            sgid: u32_at(offset_of!(ExecEvent, sgid)),
            fsuid: u32_at(offset_of!(ExecEvent, fsuid)),
            fsgid: u32_at(offset_of!(ExecEvent, fsgid)),
        }),
        start_ns: u64::from_ne_bytes(
            field(offset_of!(ExecEvent, start_ns), 8)
                .try_into()
                .unwrap_or([0; 8]),
        ),
        arguments: join_args(field(offset_of!(ExecEvent, args), n)),
        args_truncated: flags & EXEC_ARGS_TRUNCATED != 0,
    })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < std::mem::size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let kind_raw = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = EventKind::from_u32(kind_raw).ok_or(DecodeError::UnknownKind(kind_raw))?;
    match kind {
        EventKind::Exec => decode_exec(bytes).map(Event::Exec),
        EventKind::Generic => generic::decode(bytes).map(|c| Event::Generic(Box::new(c))),
        EventKind::Fork => {
            let ev: ForkEvent = read(bytes, kind)?;
            Ok(Event::Fork {
                header: ev.header,
                child_pid: ev.child_pid,
            })
        }
        EventKind::Exit => {
            let ev: ExitEvent = read(bytes, kind)?;
            Ok(Event::Exit {
                header: ev.header,
                exit_code: ev.exit_code,
            })
        }
        EventKind::Policy => {
            let ev: PolicyEvent = read(bytes, kind)?;
            let hook = Hook::from_u32(ev.hook).ok_or(DecodeError::Field("hook", ev.hook))?;
            // A packet socket's frame has no address (its ethertype and
            // family are carried in `flags`).
            let packet = ev.family == vardr_common::AF_PACKET || ev.family == vardr_common::AF_XDP;
            let remote = (hook == Hook::Connect && !packet).then(|| {
                let ip = if ev.family == 2 {
                    IpAddr::V4(Ipv4Addr::new(
                        ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                    ))
                } else {
                    IpAddr::V6(Ipv6Addr::from(ev.addr))
                };
                (ip, ev.port, ev.protocol as u8)
            });
            Ok(Event::Policy(PolicyMatch {
                header: ev.header,
                hook,
                backend: BackendKind::from_u32(ev.backend)
                    .ok_or(DecodeError::Field("backend", ev.backend))?,
                verdict: Verdict::from_u32(ev.verdict)
                    .ok_or(DecodeError::Field("verdict", ev.verdict))?,
                rule_id: ev.rule_id,
                // A packet socket's: ethertype, and the family above it.
                flags: if packet {
                    ev.protocol | u32::from(ev.family) << 24
                } else {
                    ev.flags
                },
                op: Operation::from_u32(ev.op).ok_or(DecodeError::Field("op", ev.op))?,
                path: if ev.op == Operation::TlsClientHello as u32 {
                    // As the kernel matched it: names have no case.
                    Some(c_str(&ev.path).to_ascii_lowercase())
                } else {
                    (hook != Hook::Connect).then(|| c_str(&ev.path))
                },
                remote,
            }))
        }
        EventKind::Dns => {
            let ev: DnsEvent = read(bytes, kind)?;
            let n = (ev.len as usize).min(DNS_PAYLOAD_LEN);
            Ok(Event::Dns {
                header: ev.header,
                payload: ev.payload[..n].to_vec(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vardr_common::{COMM_LEN, EVENT_PATH_LEN};

    pub(crate) fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        EventHeader {
            kind: kind as u32,
            _pad: 0,
            boot_ns: 42,
            tid: 7,
            pid: 7,
            uid: 1000,
            gid: 1000,
            cgroup_id: 99,
            comm,
        }
    }

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data value for the test.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn policy_event(hook: Hook) -> PolicyEvent {
        let mut path = [0u8; EVENT_PATH_LEN];
        path[..11].copy_from_slice(b"/etc/shadow");
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        PolicyEvent {
            header: header(EventKind::Policy),
            hook: hook as u32,
            backend: BackendKind::Lsm as u32,
            verdict: Verdict::Audit as u32,
            rule_id: 3,
            flags: 0,
            family: 2,
            port: 8080,
            protocol: 6,
            op: 0,
            addr,
            path,
        }
    }

    #[test]
    fn decodes_exec_with_arguments() {
        let argv = b"echo\0hello\0wor";
        let mut rec = exec_record(
            header(EventKind::Exec),
            0,
            1,
            u32::MAX,
            "/bin/ech",
            None,
            None,
            None,
            argv,
        );
        // The truncation flag as the kernel sets it.
        rec[std::mem::offset_of!(ExecEvent, flags)] |= EXEC_ARGS_TRUNCATED as u8;
        match decode(&rec).unwrap() {
            Event::Exec(e) => {
                assert_eq!(e.filename, "/bin/ech");
                assert_eq!(e.header.pid, 7);
                assert_eq!(e.arguments, "hello wor");
                assert!(e.args_truncated);
                assert_eq!(e.auid, None);
                assert_eq!(e.path, None);
                assert_eq!(e.cwd, None);
                assert_eq!(e.creds, None);
                assert_eq!(c_str(&e.header.comm), "true");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_the_kernels_path_cwd_and_credentials() {
        let creds = Creds {
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 1000,
            suid: 0,
            sgid: 1000,
            fsuid: 0,
            fsgid: 1000,
        };
        let rec = exec_record(
            header(EventKind::Exec),
            5_000,
            1,
            1000,
            "./su",
            Some("/usr/bin/su"),
            Some("/usr/bin"),
            Some(creds),
            b"./su\0-\0",
        );
        let Event::Exec(e) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(e.filename, "./su");
        assert_eq!(e.path.as_deref(), Some("/usr/bin/su"));
        assert_eq!(e.cwd.as_deref(), Some("/usr/bin"));
        assert_eq!(e.creds, Some(creds));
        assert_eq!(e.start_ns, 5_000);
        assert_eq!(e.auid, Some(1000));
        assert_eq!(e.arguments, "-");
        assert_eq!(join_args(b"a\0\0b\0c d\0"), "b c d");
        assert_eq!(join_args(b"\0a\0"), "");
        assert!(!e.args_truncated);
        // A flag without a path (or a path that is not absolute) is no path.
        let mut rec = exec_record(
            header(EventKind::Exec),
            0,
            1,
            0,
            "x",
            None,
            Some(""),
            None,
            b"",
        );
        rec[std::mem::offset_of!(ExecEvent, flags)] |= EXEC_PATH_RESOLVED as u8;
        let Event::Exec(e) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!((e.path, e.cwd), (None, None));
        // A record of the wrong size is refused, not read past.
        assert!(matches!(
            decode(&rec[..rec.len() - 1]),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn decodes_fork_and_exit() {
        let ev = ExitEvent {
            header: header(EventKind::Exit),
            exit_code: 9,
            _pad: 0,
        };
        assert!(matches!(
            decode(&bytes(&ev)).unwrap(),
            Event::Exit { exit_code: 9, .. }
        ));
        let ev = ForkEvent {
            header: header(EventKind::Fork),
            child_pid: 8,
            _pad: 0,
        };
        assert!(matches!(
            decode(&bytes(&ev)).unwrap(),
            Event::Fork { child_pid: 8, .. }
        ));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0u8; 3]).unwrap_err(), DecodeError::Short(3));
        let mut b = bytes(&header(EventKind::Exec));
        assert!(matches!(decode(&b), Err(DecodeError::Size { .. })));
        b[0] = 77;
        assert_eq!(decode(&b).unwrap_err(), DecodeError::UnknownKind(77));
        let mut ev = policy_event(Hook::FileOpen);
        ev.verdict = 99;
        assert_eq!(
            decode(&bytes(&ev)).unwrap_err(),
            DecodeError::Field("verdict", 99)
        );
    }

    #[test]
    fn decodes_file_and_connect_matches() {
        let Event::Policy(p) = decode(&bytes(&policy_event(Hook::FileOpen))).unwrap() else {
            panic!()
        };
        assert_eq!(p.verdict, Verdict::Audit);
        assert_eq!(p.path.as_deref(), Some("/etc/shadow"));
        assert!(p.remote.is_none());
        let Event::Policy(p) = decode(&bytes(&policy_event(Hook::Connect))).unwrap() else {
            panic!()
        };
        assert_eq!(p.remote, Some(("127.0.0.1".parse().unwrap(), 8080, 6)));
        assert!(p.path.is_none());
    }

    #[test]
    fn decodes_a_server_name_and_a_dns_response() {
        let mut ev = policy_event(Hook::Connect);
        ev.op = Operation::TlsClientHello as u32;
        ev.path = [0; EVENT_PATH_LEN];
        ev.path[..11].copy_from_slice(b"Example.COM");
        let Event::Policy(p) = decode(&bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(p.path.as_deref(), Some("example.com"));
        assert_eq!(p.remote, Some(("127.0.0.1".parse().unwrap(), 8080, 6)));
        let mut dns = DnsEvent {
            header: header(EventKind::Dns),
            len: 3,
            _pad: 0,
            payload: [7; DNS_PAYLOAD_LEN],
        };
        let Event::Dns { payload, .. } = decode(&bytes(&dns)).unwrap() else {
            panic!()
        };
        assert_eq!(payload, vec![7, 7, 7]);
        // A length beyond the buffer is cut to it, never read past it.
        dns.len = u32::MAX;
        let Event::Dns { payload, .. } = decode(&bytes(&dns)).unwrap() else {
            panic!()
        };
        assert_eq!(payload.len(), DNS_PAYLOAD_LEN);
    }

    #[test]
    fn decodes_the_operation() {
        let mut ev = policy_event(Hook::FileWrite);
        ev.op = Operation::Rename as u32;
        let Event::Policy(p) = decode(&bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(p.op, Operation::Rename);
        ev.op = 99;
        assert_eq!(
            decode(&bytes(&ev)).unwrap_err(),
            DecodeError::Field("op", 99)
        );
    }
}
