//! Tracepoint format files (`<tracefs>/events/<subsystem>/<event>/format`):
//! the layout of the record a tracepoint program receives.
use std::path::{Path, PathBuf};

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type with the name taken out: `"const char *"`,
    /// `"__data_loc char[]"`, `"char[16]"` (for `char comm[16]`), `"int"`.
    pub c_type: String,
    /// Byte offset in the record.
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

impl Field {
    /// A dynamic array: the field holds `offset | len << 16` of data kept
    /// further in the record.
    pub fn is_data_loc(&self) -> bool {
        self.c_type.starts_with("__data_loc")
    }

    /// A pointer (to user or kernel memory: the format does not say which).
    pub fn is_pointer(&self) -> bool {
        self.c_type.ends_with('*')
    }

    /// A fixed-size string in the record (`char comm[16]`).
    pub fn is_char_array(&self) -> bool {
        self.c_type
            .strip_prefix("char[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|len| !len.is_empty())
    }
}

/// A parsed format file.
#[derive(Debug, Clone)]
pub struct Format {
    pub name: String,
    /// The id `perf_event_open(2)` takes for this tracepoint.
    pub id: u32,
    /// In file order, the `common_` fields included: Tetragon's tracepoint
    /// argument `index` counts them too.
    pub fields: Vec<Field>,
}

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("invalid tracepoint name {0:?}: it must be a single path component")]
    InvalidName(String),
    #[error("tracepoint {subsystem}/{event} does not exist on this kernel")]
    NotFound { subsystem: String, event: String },
    #[error("{}/events not found: tracefs is not mounted there", root.display())]
    NoTracefs { root: PathBuf },
    // The errors below are not `#[source]`s: the message includes them,
    // and `{:#}` would print them twice.
    #[error("reading {}: {}", path.display(), crate::kernel::errno_name(err))]
    Io { path: PathBuf, err: std::io::Error },
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("the format has no {0} line")]
    Incomplete(&'static str),
    #[error("{}: {error}", path.display())]
    Malformed {
        path: PathBuf,
        error: Box<TracefsError>,
    },
}

/// Parses the text of a format file. Lines it does not know are skipped
/// (newer kernels may add some), but a malformed `field:` line is an error:
/// a record read at wrong offsets would be silently wrong.
pub fn parse_format(text: &str) -> Result<Format, TracefsError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |reason: String| TracefsError::Parse {
            line: i + 1,
            reason,
        };
        if line.starts_with("print fmt:") {
            // The rest is C expressions, which may contain anything.
            break;
        } else if let Some(rest) = line.strip_prefix("field:") {
            fields.push(parse_field(rest).map_err(err)?);
        } else if let Some(v) = line.strip_prefix("name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("ID:") {
            let v = v.trim();
            id = Some(
                v.parse::<u32>()
                    .map_err(|_| err(format!("ID {v:?} is not a number")))?,
            );
        }
    }
    Ok(Format {
        name: name.ok_or(TracefsError::Incomplete("name:"))?,
        id: id.ok_or(TracefsError::Incomplete("ID:"))?,
        fields,
    })
}

/// `<decl>;\toffset:N;\tsize:N;\tsigned:N;` (after `field:`).
fn parse_field(rest: &str) -> Result<Field, String> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default();
    let (c_type, name) = split_decl(decl).ok_or_else(|| format!("bad declaration {decl:?}"))?;
    let (mut offset, mut size, mut signed) = (None, None, None);
    for part in parts.filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once(':') else {
            return Err(format!("expected key:value, found {part:?}"));
        };
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key} of {name}: {value:?} is not a number"))
        };
        match key {
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = Some(number()? != 0),
            // Unknown attributes from a newer kernel do not move the field.
            _ => {}
        }
    }
    Ok(Field {
        offset: offset.ok_or_else(|| format!("{name} has no offset"))?,
        size: size.ok_or_else(|| format!("{name} has no size"))?,
        // Printed since Linux 2.6.33; absent means an unsigned field.
        signed: signed.unwrap_or(false),
        name,
        c_type,
    })
}

/// Splits `const char * pathname` into (`const char *`, `pathname`) and
/// `char comm[16]` into (`char[16]`, `comm`): the dimension goes with the
/// type, as the kernel itself records it. `__data_loc char[] filename`
/// has its brackets before the name and is split like a scalar.
fn split_decl(decl: &str) -> Option<(String, String)> {
    let (head, dims) = match decl.find('[') {
        Some(i) if decl.ends_with(']') => decl.split_at(i),
        _ => (decl, ""),
    };
    let head = head.trim_end();
    let start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let (ty, name) = head.split_at(start);
    let ty = ty.trim();
    if name.is_empty() || ty.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((format!("{ty}{dims}"), name.to_owned()))
}

/// Reads and parses `<root>/events/<subsystem>/<event>/format`; `root` is
/// where tracefs is mounted (normally `/sys/kernel/tracing`).
pub fn read_format(root: &Path, subsystem: &str, event: &str) -> Result<Format, TracefsError> {
    for name in [subsystem, event] {
        // The names come from policies: they must not leave the events tree.
        if name.is_empty() || name.contains(['/', '\0']) || name.contains("..") {
            return Err(TracefsError::InvalidName(name.to_owned()));
        }
    }
    let path = root
        .join("events")
        .join(subsystem)
        .join(event)
        .join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if root.join("events").is_dir() {
                TracefsError::NotFound {
                    subsystem: subsystem.to_owned(),
                    event: event.to_owned(),
                }
            } else {
                TracefsError::NoTracefs {
                    root: root.to_owned(),
                }
            });
        }
        Err(err) => return Err(TracefsError::Io { path, err }),
    };
    parse_format(&text).map_err(|e| TracefsError::Malformed {
        path,
        error: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MKDIRAT: &str = "name: sys_enter_mkdirat
ID: 890
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * pathname;\toffset:24;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx, pathname: 0x%08lx, mode: 0x%08lx\", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->pathname)), ((unsigned long)(REC->mode))
";

    const EXEC: &str = "name: sched_process_exec
ID: 312
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;

print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid
";

    fn field(f: &Format, name: &str) -> Field {
        f.fields
            .iter()
            .find(|x| x.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no field {name}"))
    }

    #[test]
    fn parses_a_syscall_tracepoint() {
        let f = parse_format(MKDIRAT).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("sys_enter_mkdirat", 890));
        let names: Vec<_> = f.fields.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "__syscall_nr",
                "dfd",
                "pathname",
                "mode"
            ]
        );
        assert_eq!(
            field(&f, "common_type"),
            Field {
                name: "common_type".into(),
                c_type: "unsigned short".into(),
                offset: 0,
                size: 2,
                signed: false,
            }
        );
        assert!(field(&f, "common_pid").signed);
        let path = field(&f, "pathname");
        assert_eq!(
            (path.c_type.as_str(), path.offset, path.size),
            ("const char *", 24, 8)
        );
        assert!(path.is_pointer() && !path.is_data_loc() && !path.is_char_array());
        let mode = field(&f, "mode");
        assert_eq!((mode.c_type.as_str(), mode.offset), ("umode_t", 32));
        assert!(!mode.is_pointer());
    }

    #[test]
    fn parses_a_data_loc_string() {
        let f = parse_format(EXEC).unwrap();
        assert_eq!(
            (f.name.as_str(), f.id, f.fields.len()),
            ("sched_process_exec", 312, 7)
        );
        let file = &f.fields[4];
        assert_eq!(file.name, "filename");
        assert_eq!(file.c_type, "__data_loc char[]");
        assert_eq!((file.offset, file.size, file.signed), (8, 4, false));
        assert!(file.is_data_loc() && !file.is_pointer() && !file.is_char_array());
    }

    #[test]
    fn array_dimensions_go_with_the_type() {
        let text = "name: t\nID: 1\nformat:\n\
            \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:24;\tsize:28;\tsigned:0;\n\
            \tfield:const char *const * argv;\toffset:56;\tsize:8;\tsigned:0;\n\
            \tfield:char name[];\toffset:64;\tsize:0;\tsigned:0;\n";
        let f = parse_format(text).unwrap();
        let comm = &f.fields[0];
        assert_eq!(
            (comm.name.as_str(), comm.c_type.as_str()),
            ("comm", "char[16]")
        );
        assert_eq!((comm.offset, comm.size), (8, 16));
        assert!(comm.is_char_array() && !comm.is_pointer());
        let saddr = &f.fields[1];
        assert_eq!(saddr.name, "saddr");
        assert_eq!(saddr.c_type, "__u8[sizeof(struct sockaddr_in6)]");
        assert!(!saddr.is_char_array());
        let argv = &f.fields[2];
        assert_eq!(
            (argv.name.as_str(), argv.c_type.as_str()),
            ("argv", "const char *const *")
        );
        assert!(argv.is_pointer());
        // No length: a flexible array, not a fixed-size string.
        assert!(!f.fields[3].is_char_array());
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        let text = "name: t\nID: 1\nformat:\n\tfield:int a;\toffset:x;\tsize:4;\tsigned:1;\n";
        let e = parse_format(text).unwrap_err();
        assert!(matches!(e, TracefsError::Parse { line: 4, .. }), "{e:?}");
        assert!(e.to_string().starts_with("line 4: offset of a"), "{e}");

        let no_size = "name: t\nID: 1\n\tfield:int a;\toffset:0;\tsigned:1;\n";
        let e = parse_format(no_size).unwrap_err();
        assert_eq!(e.to_string(), "line 3: a has no size");

        let no_name = "name: t\nID: 1\n\tfield:*;\toffset:0;\tsize:8;\tsigned:0;\n";
        assert!(matches!(
            parse_format(no_name),
            Err(TracefsError::Parse { line: 3, .. })
        ));

        let bad_id = "name: t\nID: many\n";
        assert!(matches!(
            parse_format(bad_id),
            Err(TracefsError::Parse { line: 2, .. })
        ));

        let e = parse_format("name: t\nformat:\n").unwrap_err();
        assert_eq!(e.to_string(), "the format has no ID: line");
    }

    #[test]
    fn print_fmt_ends_the_fields() {
        let text = format!("{MKDIRAT}\tfield:garbage\n");
        assert_eq!(parse_format(&text).unwrap().fields.len(), 8);
    }

    #[test]
    fn reads_from_a_tracefs_tree() {
        let root = std::env::temp_dir().join(format!("vardr-tracefs-{}", std::process::id()));
        let dir = root.join("events/syscalls/sys_enter_mkdirat");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("format"), MKDIRAT).unwrap();
        let bad = root.join("events/syscalls/bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("format"), "name: bad\n").unwrap();

        let f = read_format(&root, "syscalls", "sys_enter_mkdirat").unwrap();
        assert_eq!((f.id, f.fields.len()), (890, 8));

        let e = read_format(&root, "syscalls", "sys_enter_nope").unwrap_err();
        assert!(matches!(e, TracefsError::NotFound { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "tracepoint syscalls/sys_enter_nope does not exist on this kernel"
        );

        let e = read_format(&root, "syscalls", "bad").unwrap_err();
        assert!(matches!(e, TracefsError::Malformed { .. }), "{e:?}");
        assert!(
            e.to_string()
                .ends_with("bad/format: the format has no ID: line"),
            "{e}"
        );

        for (sub, ev) in [
            ("..", "x"),
            ("syscalls", "../../etc"),
            ("a/b", "c"),
            ("", "x"),
            ("s", "x..y"),
        ] {
            let e = read_format(&root, sub, ev).unwrap_err();
            assert!(
                matches!(e, TracefsError::InvalidName(_)),
                "{sub}/{ev}: {e:?}"
            );
        }

        let missing = root.join("not-mounted");
        let e = read_format(&missing, "syscalls", "sys_enter_mkdirat").unwrap_err();
        assert!(matches!(e, TracefsError::NoTracefs { .. }), "{e:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
