//! Ring buffer records -> typed events -> Tetragon-shaped JSON.
mod json;

pub use json::{
    backend_name, hook_name, rfc3339, verdict_name, Body, Clock, JsonEvent, Layer2, Process,
    RuleInfo,
};

mod compact;
pub use compact::compact;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vardr_common::{
    BackendKind, DnsEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, Hook,
    Operation, PolicyEvent, Verdict, ARGS_LEN, DNS_PAYLOAD_LEN, EXEC_ARGS_TRUNCATED,
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
    /// argv, including argv[0].
    pub argv: Vec<String>,
    pub args_truncated: bool,
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
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork { header, .. } | Event::Exit { header, .. } | Event::Dns { header, .. } => {
                header
            }
            Event::Policy(p) => &p.header,
        }
    }
}

/// NUL-separated arguments; a trailing partial argument is kept.
fn split_args(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
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
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < std::mem::size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let kind_raw = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = EventKind::from_u32(kind_raw).ok_or(DecodeError::UnknownKind(kind_raw))?;
    match kind {
        EventKind::Exec => {
            let ev: ExecEvent = read(bytes, kind)?;
            let n = (ev.args_len as usize).min(ARGS_LEN);
            Ok(Event::Exec(Exec {
                header: ev.header,
                ppid: ev.ppid,
                auid: (ev.auid != u32::MAX).then_some(ev.auid),
                filename: c_str(&ev.filename),
                argv: split_args(&ev.args[..n]),
                args_truncated: ev.flags & EXEC_ARGS_TRUNCATED != 0,
            }))
        }
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
            let remote = (hook == Hook::Connect).then(|| {
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
                flags: ev.flags,
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
        let mut filename = [0u8; EVENT_PATH_LEN];
        filename[..8].copy_from_slice(b"/bin/echo"[..8].as_ref());
        let mut args = [0u8; ARGS_LEN];
        let argv = b"echo\0hello\0wor";
        args[..argv.len()].copy_from_slice(argv);
        let ev = ExecEvent {
            header: header(EventKind::Exec),
            ppid: 1,
            auid: u32::MAX,
            flags: EXEC_ARGS_TRUNCATED,
            args_len: argv.len() as u32,
            filename,
            args,
        };
        match decode(&bytes(&ev)).unwrap() {
            Event::Exec(e) => {
                assert_eq!(e.filename, "/bin/ech");
                assert_eq!(e.header.pid, 7);
                assert_eq!(e.argv, vec!["echo", "hello", "wor"]);
                assert!(e.args_truncated);
                assert_eq!(e.auid, None);
                assert_eq!(c_str(&e.header.comm), "true");
            }
            other => panic!("{other:?}"),
        }
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
