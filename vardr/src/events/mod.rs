//! Ring buffer records -> typed events -> Tetragon-shaped JSON.
mod json;

pub use json::{Clock, JsonEvent};

use vardr_common::{EventHeader, EventKind, ExecEvent, FileEvent, Verdict};

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
    #[error("unknown verdict {0}")]
    UnknownVerdict(u32),
}

/// A decoded kernel event.
#[derive(Debug, Clone)]
pub enum Event {
    Exec {
        header: EventHeader,
        filename: String,
    },
    FileOpen {
        header: EventHeader,
        rule_id: u32,
        verdict: Verdict,
        path: String,
    },
}

/// Reads a `T` from the start of a record of exactly its size.
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
            Ok(Event::Exec {
                header: ev.header,
                filename: c_str(&ev.filename),
            })
        }
        EventKind::FileOpen => {
            let ev: FileEvent = read(bytes, kind)?;
            Ok(Event::FileOpen {
                header: ev.header,
                rule_id: ev.rule_id,
                verdict: Verdict::from_u32(ev.verdict)
                    .ok_or(DecodeError::UnknownVerdict(ev.verdict))?,
                path: c_str(&ev.path),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vardr_common::{COMM_LEN, PATH_MAX};

    fn header(kind: EventKind) -> EventHeader {
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

    #[test]
    fn decodes_exec() {
        let mut filename = [0u8; PATH_MAX];
        filename[..9].copy_from_slice(b"/bin/true");
        let ev = ExecEvent {
            header: header(EventKind::Exec),
            filename,
        };
        match decode(&bytes(&ev)).unwrap() {
            Event::Exec { header, filename } => {
                assert_eq!(filename, "/bin/true");
                assert_eq!(header.pid, 7);
                assert_eq!(c_str(&header.comm), "true");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0u8; 3]).unwrap_err(), DecodeError::Short(3));
        let mut b = bytes(&header(EventKind::Exec));
        assert!(matches!(decode(&b), Err(DecodeError::Size { .. })));
        b[0] = 77;
        assert_eq!(decode(&b).unwrap_err(), DecodeError::UnknownKind(77));
    }

    #[test]
    fn decodes_file_verdict() {
        let mut path = [0u8; PATH_MAX];
        path[..11].copy_from_slice(b"/etc/shadow");
        let ev = FileEvent {
            header: header(EventKind::FileOpen),
            rule_id: 3,
            verdict: Verdict::Audit as u32,
            path,
        };
        match decode(&bytes(&ev)).unwrap() {
            Event::FileOpen {
                verdict,
                path,
                rule_id,
                ..
            } => {
                assert_eq!(verdict, Verdict::Audit);
                assert_eq!(path, "/etc/shadow");
                assert_eq!(rule_id, 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
