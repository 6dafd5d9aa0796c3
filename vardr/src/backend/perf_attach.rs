//! Attaching a loaded program to a tracepoint or a kprobe with a BPF cookie
//! (what `bpf_get_attach_cookie` returns), which aya 0.14 supports only for
//! uprobes: a perf event for the probe, then a `BPF_PERF_EVENT` link that
//! carries the cookie (Linux 5.15+).
use std::{
    ffi::CString,
    fmt, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::kernel::errno_name;

/// Where the kernel lists its PMUs (perf event sources).
const PMU_DEVICES: &str = "/sys/bus/event_source/devices";

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;

/// What to attach to.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// A tracepoint, by the id of its tracefs `format` (see
    /// [`crate::kernel::tracefs`]).
    Tracepoint { id: u32 },
    /// The entry of a kernel function, or its return with `ret`.
    Kprobe { function: &'a str, ret: bool },
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tracepoint { id } => write!(f, "tracepoint id {id}"),
            Self::Kprobe {
                function,
                ret: false,
            } => write!(f, "kprobe on {function}"),
            Self::Kprobe {
                function,
                ret: true,
            } => write!(f, "kretprobe on {function}"),
        }
    }
}

/// Keeps the program attached until dropped (closes link fd and perf event
/// fd, in that order: fields drop in declaration order).
#[derive(Debug)]
pub struct CookieLink {
    link: OwnedFd,
    perf: OwnedFd,
}

impl CookieLink {
    /// The BPF link, e.g. to pin it.
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// The perf event the program runs on.
    pub fn perf_event(&self) -> BorrowedFd<'_> {
        self.perf.as_fd()
    }
}

// The errors are not `#[source]`s: each message includes its errno, and
// `{:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "{target}: the kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe \
         missing): kprobes are not available on this kernel"
    )]
    NoKprobePmu { target: String },
    #[error("{target}: kprobe PMU: {}: {reason}", path.display())]
    KprobePmu {
        target: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{target}: the function name contains a NUL byte")]
    BadFunctionName { target: String },
    #[error("{target}: kernel function {function} not found: {}", errno_name(err))]
    FunctionNotFound {
        target: String,
        function: String,
        err: io::Error,
    },
    #[error("{target}: perf_event_open failed: {}{hint}", errno_name(err))]
    PerfEventOpen {
        target: String,
        err: io::Error,
        hint: &'static str,
    },
    #[error("{target}: BPF_LINK_CREATE failed: {}{hint}", errno_name(err))]
    LinkCreate {
        target: String,
        err: io::Error,
        hint: &'static str,
    },
}

impl CookieLink {
    /// The BPF link (to pin: the pin keeps the probe attached).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// Attaches `prog` (a kprobe program for a kprobe, a tracepoint program
/// for a tracepoint) to `target`; the program reads `cookie` with
/// `bpf_get_attach_cookie`.
pub fn attach(
    prog: BorrowedFd<'_>,
    target: Target<'_>,
    cookie: u64,
) -> Result<CookieLink, AttachError> {
    let event = PerfEvent::new(target, Path::new(PMU_DEVICES))?;
    let perf = event.open().map_err(|err| open_error(target, err))?;
    let link = link_create(prog, perf.as_fd(), cookie).map_err(|err| AttachError::LinkCreate {
        target: target.to_string(),
        hint: link_hint(&err),
        err,
    })?;
    Ok(CookieLink { link, perf })
}

/// Whether the kernel has the kprobe PMU (kprobes without tracefs).
pub fn kprobes_available() -> bool {
    pmu_type(&Path::new(PMU_DEVICES).join("kprobe")).is_ok()
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (Linux 4.1): the
/// kernel takes the fields after `size` as zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The bitfield (`disabled`, `inherit`, ...): all clear.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    /// `kprobe_func`: a pointer to the function's name.
    config1: u64,
    /// `probe_offset`: from the function's entry.
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<PerfEventAttr>() == 112);
    assert!(offset_of!(PerfEventAttr, flags) == 40);
    assert!(offset_of!(PerfEventAttr, wakeup_events) == 48);
    assert!(offset_of!(PerfEventAttr, config1) == 56);
    assert!(offset_of!(PerfEventAttr, sample_regs_intr) == 96);
};

/// The attribute of the perf event to open, and the function name its
/// `config1` points to (heap data: it stays put when this moves).
struct PerfEvent {
    attr: PerfEventAttr,
    _function: Option<CString>,
}

impl PerfEvent {
    /// `devices` is where the PMUs are listed (a parameter for the tests).
    fn new(target: Target<'_>, devices: &Path) -> Result<Self, AttachError> {
        let mut attr = PerfEventAttr {
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            ..Default::default()
        };
        let function = match target {
            Target::Tracepoint { id } => {
                attr.type_ = PERF_TYPE_TRACEPOINT;
                attr.config = id.into();
                attr.sample_period = 1;
                attr.wakeup_events = 1;
                None
            }
            Target::Kprobe { function, ret } => {
                let pmu = devices.join("kprobe");
                let bad = |path: PathBuf, reason: String| AttachError::KprobePmu {
                    target: target.to_string(),
                    path,
                    reason,
                };
                attr.type_ = match pmu_type(&pmu) {
                    Ok(ty) => ty,
                    Err(PmuError::Missing) => {
                        return Err(AttachError::NoKprobePmu {
                            target: target.to_string(),
                        })
                    }
                    Err(PmuError::Bad(path, reason)) => return Err(bad(path, reason)),
                };
                if ret {
                    let path = pmu.join("format/retprobe");
                    let bit = match std::fs::read_to_string(&path) {
                        Ok(text) => retprobe_bit(&text)
                            .ok_or_else(|| bad(path, format!("unexpected format {text:?}")))?,
                        Err(e) => return Err(bad(path, errno_name(&e))),
                    };
                    attr.config = 1 << bit;
                }
                let name = CString::new(function).map_err(|_| AttachError::BadFunctionName {
                    target: target.to_string(),
                })?;
                attr.config1 = name.as_ptr() as u64;
                Some(name)
            }
        };
        Ok(Self {
            attr,
            _function: function,
        })
    }

    /// `perf_event_open(attr, pid -1, cpu 0, no group, CLOEXEC)`: every
    /// task; the program runs on every CPU whatever the event's.
    fn open(&self) -> io::Result<OwnedFd> {
        // SAFETY: perf_event_open reads `attr.size` bytes of `attr` and the
        // NUL-terminated name `config1` may point to, both owned by `self`
        // for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                std::ptr::from_ref(&self.attr),
                -1 as libc::c_int,
                0 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a successful perf_event_open returns a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

enum PmuError {
    /// No such PMU in this kernel.
    Missing,
    Bad(PathBuf, String),
}

/// The perf event type of the PMU in `dir` (its `type` file).
fn pmu_type(dir: &Path) -> Result<u32, PmuError> {
    let path = dir.join("type");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| PmuError::Bad(path, format!("{text:?} is not a PMU type"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PmuError::Missing),
        Err(e) => Err(PmuError::Bad(path, errno_name(&e))),
    }
}

/// The bit of `config` that makes a return probe, from the PMU's
/// `format/retprobe` ("config:0"). Any other field or a bit range is
/// refused rather than guessed at.
fn retprobe_bit(text: &str) -> Option<u32> {
    let bit: u32 = text.trim().strip_prefix("config:")?.parse().ok()?;
    (bit < u64::BITS).then_some(bit)
}

/// The `link_create` member of `union bpf_attr` for `BPF_PERF_EVENT`; the
/// kernel takes the rest of the union as zero.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    /// `link_create.perf_event.bpf_cookie`.
    bpf_cookie: u64,
}

const _: () = assert!(std::mem::offset_of!(LinkCreateAttr, bpf_cookie) == 16);

fn link_create(prog: BorrowedFd<'_>, perf: BorrowedFd<'_>, cookie: u64) -> io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: perf.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        flags: 0,
        bpf_cookie: cookie,
    };
    // SAFETY: bpf(BPF_LINK_CREATE) reads the attributes above (no pointers)
    // and at most their size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<LinkCreateAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful BPF_LINK_CREATE returns a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `link_create` of `union bpf_attr` for a tracing or LSM program: its
/// `tracing` member (target 0: the program's own, a cookie).
#[repr(C)]
struct TracingLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    target_btf_id: u32,
    _pad: u32,
    cookie: u64,
}

const BPF_LSM_MAC: u32 = 27;

/// Attaches a loaded BPF LSM program to the hook it was loaded for, with
/// `cookie` for `bpf_get_attach_cookie` (Linux 5.19+; aya 0.14 attaches
/// without one). Dropped, the link detaches.
pub fn lsm_link(prog: BorrowedFd<'_>, cookie: u64) -> io::Result<OwnedFd> {
    let attr = TracingLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_LSM_MAC,
        flags: 0,
        target_btf_id: 0,
        _pad: 0,
        cookie,
    };
    // SAFETY: bpf(BPF_LINK_CREATE) reads the attributes above (no pointers)
    // and at most their size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<TracingLinkAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful BPF_LINK_CREATE returns a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_error(target: Target<'_>, err: io::Error) -> AttachError {
    let kprobe = matches!(target, Target::Kprobe { .. });
    let hint = match err.raw_os_error() {
        Some(libc::ENOENT) => {
            if let Target::Kprobe { function, .. } = target {
                return AttachError::FunctionNotFound {
                    target: target.to_string(),
                    function: function.to_owned(),
                    err,
                };
            }
            ": no tracepoint has this id"
        }
        Some(libc::EPERM | libc::EACCES) => ": perf events need CAP_PERFMON or CAP_SYS_ADMIN",
        Some(libc::EINVAL) if kprobe => {
            ": the function cannot be probed (on the kprobe blocklist, notrace or inlined)"
        }
        // Linux 6.7+ (and stable kernels) refuse a name several functions share.
        Some(libc::EADDRNOTAVAIL) if kprobe => ": several kernel functions have this name",
        _ => "",
    };
    AttachError::PerfEventOpen {
        target: target.to_string(),
        err,
        hint,
    }
}

fn link_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EINVAL) => {
            ": not a BPF program of the target's type, or a kernel before 5.15 \
             (no BPF links on perf events)"
        }
        Some(libc::EPERM) => ": needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN",
        Some(libc::EEXIST) => ": the perf event has a program already",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/bus/event_source/devices` with a kprobe PMU whose
    /// files are `files` (name, content).
    struct Devices(PathBuf);

    impl Devices {
        fn new(tag: &str, files: &[(&str, &str)]) -> Self {
            let root = std::env::temp_dir()
                .join(format!("vardr-perf-attach-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("kprobe/format")).unwrap();
            for (name, content) in files {
                std::fs::write(root.join("kprobe").join(name), content).unwrap();
            }
            Self(root)
        }
    }

    impl Drop for Devices {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn kprobe(function: &str, ret: bool) -> Target<'_> {
        Target::Kprobe { function, ret }
    }

    #[test]
    fn retprobe_bit_is_parsed_strictly() {
        assert_eq!(retprobe_bit("config:0\n"), Some(0));
        assert_eq!(retprobe_bit("config:63"), Some(63));
        for bad in ["config:64", "config:0-1", "config1:0", "", "config:", "0"] {
            assert_eq!(retprobe_bit(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_kprobe_pmu_says_so() {
        let dir = std::env::temp_dir().join(format!("vardr-no-pmu-{}", std::process::id()));
        let e = PerfEvent::new(kprobe("do_mkdirat", false), &dir)
            .err()
            .unwrap();
        assert!(matches!(e, AttachError::NoKprobePmu { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "kprobe on do_mkdirat: the kernel has no kprobe PMU \
             (/sys/bus/event_source/devices/kprobe missing): kprobes are not available on this kernel"
        );
    }

    #[test]
    fn kprobe_attr_names_the_function() {
        let d = Devices::new("ok", &[("type", "8\n"), ("format/retprobe", "config:0\n")]);
        let ev = PerfEvent::new(kprobe("do_mkdirat", false), &d.0).unwrap();
        assert_eq!((ev.attr.type_, ev.attr.size, ev.attr.config), (8, 112, 0));
        assert_eq!(ev.attr.config2, 0);
        // SAFETY: config1 points to the name `ev` owns, NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr(ev.attr.config1 as *const libc::c_char) };
        assert_eq!(name.to_bytes(), b"do_mkdirat");

        let ev = PerfEvent::new(kprobe("do_mkdirat", true), &d.0).unwrap();
        assert_eq!((ev.attr.type_, ev.attr.config), (8, 1));
        let d = Devices::new(
            "bit5",
            &[("type", "8\n"), ("format/retprobe", "config:5\n")],
        );
        let ev = PerfEvent::new(kprobe("f", true), &d.0).unwrap();
        assert_eq!(ev.attr.config, 1 << 5);
    }

    #[test]
    fn unusable_pmu_files_are_errors() {
        let d = Devices::new("bad-type", &[("type", "kprobe\n")]);
        let e = PerfEvent::new(kprobe("f", false), &d.0).err().unwrap();
        assert!(
            e.to_string().contains("\"kprobe\\n\" is not a PMU type"),
            "{e}"
        );

        // An entry probe does not need the retprobe format; a return probe does.
        let d = Devices::new("no-ret", &[("type", "8\n")]);
        assert!(PerfEvent::new(kprobe("f", false), &d.0).is_ok());
        let e = PerfEvent::new(kprobe("f", true), &d.0).err().unwrap();
        let text = e.to_string();
        assert!(text.starts_with("kretprobe on f: kprobe PMU: "), "{text}");
        assert!(text.ends_with("kprobe/format/retprobe: ENOENT (No such file or directory)"));

        let e = PerfEvent::new(kprobe("a\0b", false), &d.0).err().unwrap();
        assert!(matches!(e, AttachError::BadFunctionName { .. }), "{e:?}");
    }

    #[test]
    fn tracepoint_attr() {
        let ev = PerfEvent::new(Target::Tracepoint { id: 890 }, Path::new("/nonexistent")).unwrap();
        let a = &ev.attr;
        assert_eq!(
            (a.type_, a.size, a.config),
            (PERF_TYPE_TRACEPOINT, 112, 890)
        );
        assert_eq!((a.sample_period, a.wakeup_events, a.flags), (1, 1, 0));
    }

    #[test]
    fn error_messages_name_the_failure() {
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            open_error(kprobe("foo", false), enoent()).to_string(),
            "kprobe on foo: kernel function foo not found: ENOENT (No such file or directory)"
        );
        assert_eq!(
            open_error(Target::Tracepoint { id: 7 }, enoent()).to_string(),
            "tracepoint id 7: perf_event_open failed: ENOENT (No such file or directory): \
             no tracepoint has this id"
        );
        let e = AttachError::LinkCreate {
            target: kprobe("foo", true).to_string(),
            err: io::Error::from_raw_os_error(libc::EINVAL),
            hint: link_hint(&io::Error::from_raw_os_error(libc::EINVAL)),
        };
        assert!(
            e.to_string().starts_with(
                "kretprobe on foo: BPF_LINK_CREATE failed: EINVAL (Invalid argument): "
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_tracepoint_id_is_refused() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let e = attach(null.as_fd(), Target::Tracepoint { id: u32::MAX }, 1)
            .err()
            .unwrap();
        // ENOENT as root, EACCES without CAP_PERFMON.
        assert!(matches!(e, AttachError::PerfEventOpen { .. }), "{e}");
    }

    /// Needs root and tracefs mounted: a descriptor that is no BPF program
    /// is refused by BPF_LINK_CREATE, and the perf event is closed again.
    #[test]
    fn non_program_fd_is_refused() {
        let root = Path::new("/sys/kernel/tracing");
        let format =
            match crate::kernel::tracefs::read_format(root, "syscalls", "sys_enter_mkdirat") {
                Ok(f) if crate::kernel::is_root() => f,
                Ok(_) => return eprintln!("skipped: needs root"),
                Err(e) => return eprintln!("skipped: {e}"),
            };
        let null = std::fs::File::open("/dev/null").unwrap();
        let e = attach(null.as_fd(), Target::Tracepoint { id: format.id }, 1)
            .err()
            .unwrap();
        match e {
            AttachError::LinkCreate { ref err, .. } => {
                assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{e}")
            }
            _ => panic!("{e}"),
        }
    }
}
