//! Host tier: ways around a file or exec rule, tried against the fallback
//! backend, whose deny path is fanotify permission events. Each test runs
//! its own agent scoped to a fresh test cgroup; the syscalls are made by
//! this test process while it sits in that cgroup (so only it is governed),
//! and each test asserts that the operation failed with EPERM, nothing was
//! read or changed, a deny event names the resolved object, and the allowed
//! neighbour still opens the same way.
mod common;

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    agent::{which, AgentRun},
    require_backend, serial, sh_in, stderr, test_cgroup, TempDir,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;
use vardr::{kernel::cgroup::OwnedCgroup, probe::Backend::Fallback};

/// The governed tree: `dir/` denied for opens (with `dir/public` allowed),
/// `notes` denied for writes, `bin/denied` and `noexec/` denied for exec;
/// `hardlink` is a second name of `dir/secret` made before the agent starts.
struct Fixture {
    agent: AgentRun,
    cg: OwnedCgroup,
    t: TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Fixture {
    fn start(test: &str, enforce: bool) -> Option<Self> {
        if !require_backend(test, Fallback) {
            return None;
        }
        if let Err(e) = vardr::fanotify::probe() {
            eprintln!("SKIPPED {test}: fanotify_init(FAN_CLASS_CONTENT): {e}");
            return None;
        }
        let serial = serial();
        let t = TempDir::new("bypass-fan");
        let d = t.path().display().to_string();
        std::fs::create_dir_all(t.join("dir/sub")).unwrap();
        std::fs::write(t.join("dir/secret"), "secret\n").unwrap();
        std::fs::write(t.join("dir/public"), "public\n").unwrap();
        std::fs::write(t.join("dir/sub/deep"), "deep\n").unwrap();
        std::fs::write(t.join("notes"), "orig\n").unwrap();
        std::fs::hard_link(t.join("dir/secret"), t.join("hardlink")).unwrap();
        std::os::unix::fs::symlink(t.join("dir/secret"), t.join("link")).unwrap();
        std::fs::create_dir_all(t.join("bin")).unwrap();
        std::fs::create_dir_all(t.join("noexec")).unwrap();
        let truebin = which("true");
        std::fs::copy(&truebin, t.join("bin/denied")).unwrap();
        std::fs::copy(&truebin, t.join("bin/allowed")).unwrap();
        std::fs::copy(&truebin, t.join("noexec/tool")).unwrap();
        let policy = format!(
            "apiVersion: vardr.dev/v1
kind: Policy
metadata:
  name: bypass
spec:
  rules:
    - {{ name: deny-dir, hook: file_open, action: deny, match: {{ prefixes: [{d}/dir] }} }}
    - {{ name: allow-public, hook: file_open, action: allow, match: {{ paths: [{d}/dir/public] }} }}
    - {{ name: no-write-notes, hook: file_write, action: deny, match: {{ paths: [{d}/notes] }} }}
    - {{ name: no-denied, hook: exec, action: deny, match: {{ binaries: [{d}/bin/denied] }} }}
    - {{ name: no-exec-dir, hook: exec, action: deny, match: {{ prefixes: [{d}/noexec] }} }}
"
        );
        let cg = test_cgroup("bypass");
        let cgp = cg.path.to_str().unwrap().to_string();
        let mut args = vec!["--backend", "fallback", "--scope-cgroup", &cgp];
        if enforce {
            args.push("--enforce");
        }
        let agent = AgentRun::start(&policy, &args);
        Some(Self {
            agent,
            cg,
            t,
            _serial: serial,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.t.join(rel)
    }

    /// Runs `f` with this process inside the test cgroup (so the agent
    /// governs it), then moves it back.
    fn inside<T>(&self, f: impl FnOnce() -> T) -> T {
        let _in = Joined::new(&self.cg.path);
        f()
    }

    /// Asserts a deny event for `path` (as the kernel resolved it).
    fn deny_event(&mut self, hook: &str, rule: &str, path: &Path) -> Value {
        let want = path.to_string_lossy().into_owned();
        let ev = self
            .agent
            .policy_event(&format!("{rule} deny of {want}"), |e| {
                e["hook"] == hook
                    && e["rule"] == rule
                    && e["verdict"] == "deny"
                    && path_of(e) == want
            });
        assert_eq!(ev["backend"], "fanotify", "{ev}");
        assert_eq!(ev["process"]["pid"], std::process::id(), "{ev}");
        ev
    }

    /// The denied file is unchanged (read from outside the scope).
    fn assert_secret_untouched(&self) {
        assert_eq!(std::fs::read(self.path("dir/secret")).unwrap(), b"secret\n");
    }
}

/// This process, moved into a cgroup until dropped. Governed there, it
/// cannot move itself out again (the agent refuses that): a helper started
/// before the move, outside the scope, moves it back.
struct Joined {
    mover: Option<std::process::Child>,
}

impl Joined {
    fn new(cg: &Path) -> Self {
        let root = vardr::kernel::cgroup::root().unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let back = root.join(rel).join("cgroup.procs");
        let mover = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read pid && echo $pid > {}", back.display()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).unwrap();
        Self { mover: Some(mover) }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        use std::io::Write;
        let Some(mut mover) = self.mover.take() else {
            return;
        };
        if let Some(mut stdin) = mover.stdin.take() {
            let _ = writeln!(stdin, "{}", std::process::id());
        }
        match mover.wait() {
            Ok(s) if s.success() => {}
            other => eprintln!("moving the test process back out of its cgroup failed: {other:?}"),
        }
    }
}

fn path_of(ev: &Value) -> &str {
    let a = &ev["args"][0];
    a["file_arg"]["path"]
        .as_str()
        .or_else(|| a["linux_binprm_arg"]["path"].as_str())
        .unwrap_or("")
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `open(2)`; the file's contents or the errno.
fn read_with(open: impl FnOnce() -> i32) -> Result<Vec<u8>, i32> {
    let fd = open();
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default())
}

fn open_read(p: &Path) -> Result<Vec<u8>, i32> {
    let c = cstr(p);
    // SAFETY: open with a valid NUL-terminated path.
    read_with(|| unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })
}

fn assert_eperm(r: &Result<Vec<u8>, i32>, what: &str) {
    assert_eq!(r, &Err(libc::EPERM), "{what}: not denied with EPERM");
}

#[test]
fn absolute_path() {
    // Bypass class: none (the baseline the tracepoint also saw).
    let Some(mut f) = Fixture::start("absolute_path", true) else {
        return;
    };
    let (secret, public) = f.inside(|| {
        (
            open_read(&f.path("dir/secret")),
            open_read(&f.path("dir/public")),
        )
    });
    assert_eperm(&secret, "absolute path");
    assert_eq!(public.unwrap(), b"public\n");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    // Outside the scope nothing is governed.
    assert_eq!(open_read(&f.path("dir/secret")).unwrap(), b"secret\n");
    assert!(f.agent.stop().success());
}

#[test]
fn relative_path() {
    // Bypass class: relative path (openat against a directory fd, and cwd).
    let Some(mut f) = Fixture::start("relative_path", true) else {
        return;
    };
    let dir = std::fs::File::open(f.path("dir")).unwrap();
    let rel = |name: &str| {
        let c = CString::new(name).unwrap();
        // SAFETY: openat with a valid directory fd and path.
        read_with(|| unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) })
    };
    let (secret, public) = f.inside(|| (rel("secret"), rel("public")));
    assert_eperm(&secret, "relative path");
    assert_eq!(public.unwrap(), b"public\n");
    let o = sh_in(
        &f.cg.path,
        &format!("cd {} && exec cat secret", f.path("dir").display()),
    );
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "cd + cat: {:?}",
        o.status
    );
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    f.assert_secret_untouched();
    assert!(f.agent.stop().success());
}

#[test]
fn symlink() {
    // Bypass class: a symlink outside the denied directory pointing in.
    let Some(mut f) = Fixture::start("symlink", true) else {
        return;
    };
    std::os::unix::fs::symlink(f.path("dir/public"), f.path("publink")).unwrap();
    let (secret, public) = f.inside(|| (open_read(&f.path("link")), open_read(&f.path("publink"))));
    assert_eperm(&secret, "symlink");
    assert_eq!(public.unwrap(), b"public\n");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

#[test]
fn hard_link_made_before() {
    // Bypass class: a hard link to a denied file, made outside the denied
    // directory before the policy loaded (the inode's mark follows it).
    let Some(mut f) = Fixture::start("hard_link_made_before", true) else {
        return;
    };
    let r = f.inside(|| open_read(&f.path("hardlink")));
    assert_eperm(&r, "hard link");
    f.deny_event("file_open", "deny-dir", &f.path("hardlink"));
    f.assert_secret_untouched();
    assert!(f.agent.stop().success());
}

#[test]
fn hard_link_made_after() {
    // Bypass class: a hard link made while the policy is in force.
    let Some(mut f) = Fixture::start("hard_link_made_after", true) else {
        return;
    };
    std::fs::hard_link(f.path("dir/sub/deep"), f.path("late-link")).unwrap();
    let r = f.inside(|| open_read(&f.path("late-link")));
    assert_eperm(&r, "hard link made after");
    f.deny_event("file_open", "deny-dir", &f.path("late-link"));
    assert!(f.agent.stop().success());
}

#[test]
fn dot_dot_path() {
    // Bypass class: `..` components (the text is not the resolved path).
    let Some(mut f) = Fixture::start("dot_dot_path", true) else {
        return;
    };
    let p = f.path("dir/sub/../secret");
    let q = f.path("dir/sub/../public");
    let (secret, public) = f.inside(|| (open_read(&p), open_read(&q)));
    assert_eperm(&secret, "..");
    assert_eq!(public.unwrap(), b"public\n");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

#[test]
fn proc_self_root() {
    // Bypass class: /proc/self/root/... (a path that does not start with
    // the rule's prefix).
    let Some(mut f) = Fixture::start("proc_self_root", true) else {
        return;
    };
    let via = |rel: &str| PathBuf::from(format!("/proc/self/root{}", f.path(rel).display()));
    let (secret, public) =
        f.inside(|| (open_read(&via("dir/secret")), open_read(&via("dir/public"))));
    assert_eperm(&secret, "/proc/self/root");
    assert_eq!(public.unwrap(), b"public\n");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

#[test]
fn proc_self_fd_reopen_of_o_path() {
    // Bypass class: an O_PATH descriptor (no open check) reopened through
    // /proc/self/fd/N.
    let Some(mut f) = Fixture::start("proc_self_fd_reopen_of_o_path", true) else {
        return;
    };
    let reopen = |rel: &str| {
        let c = cstr(&f.path(rel));
        // SAFETY: open with a valid path; the fd is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        assert!(fd >= 0, "O_PATH open: {}", std::io::Error::last_os_error());
        // SAFETY: fd was just returned by open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        open_read(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))
    };
    let (secret, public) = f.inside(|| (reopen("dir/secret"), reopen("dir/public")));
    assert_eperm(&secret, "/proc/self/fd reopen");
    assert_eq!(public.unwrap(), b"public\n");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

/// `struct file_handle` with room for any handle.
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

#[test]
fn open_by_handle_at() {
    // Bypass class: name_to_handle_at + open_by_handle_at (no path at all
    // at open time; needs CAP_DAC_READ_SEARCH, which root has).
    let Some(mut f) = Fixture::start("open_by_handle_at", true) else {
        return;
    };
    let mount = std::fs::File::open(f.t.path()).unwrap();
    let by_handle = |rel: &str| {
        let c = cstr(&f.path(rel));
        let mut h = FileHandle {
            handle_bytes: 128,
            handle_type: 0,
            f_handle: [0; 128],
        };
        let mut mount_id: i32 = 0;
        // SAFETY: name_to_handle_at with a valid path, a handle buffer of
        // the declared size and an int for the mount id.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c.as_ptr(),
                &mut h as *mut FileHandle,
                &mut mount_id as *mut i32,
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: open_by_handle_at with a directory fd on the same file
        // system and the handle filled in above.
        read_with(|| unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                &mut h as *mut FileHandle,
                libc::O_RDONLY,
            ) as i32
        })
    };
    // dir/sub/deep has one name only: a handle names the inode, and the
    // kernel reports whichever name it finds for it.
    let (secret, public) = f.inside(|| (by_handle("dir/sub/deep"), by_handle("dir/public")));
    assert_eperm(&secret, "open_by_handle_at");
    assert_eq!(public.unwrap(), b"public\n");
    let ev = f.deny_event("file_open", "deny-dir", &f.path("dir/sub/deep"));
    assert_eq!(ev["function_name"], "fanotify_open_perm");
    assert!(f.agent.stop().success());
}

mod uring {
    //! Just enough of io_uring (raw syscalls) to submit one OPENAT.
    use std::{ffi::CStr, os::fd::FromRawFd};

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }

    #[repr(C)]
    struct Sqe {
        opcode: u8,
        flags: u8,
        ioprio: u16,
        fd: i32,
        off: u64,
        addr: u64,
        len: u32,
        open_flags: u32,
        user_data: u64,
        pad: [u64; 3],
    }

    #[repr(C)]
    struct Cqe {
        user_data: u64,
        res: i32,
        flags: u32,
    }

    const IORING_OP_OPENAT: u8 = 18;
    const IORING_ENTER_GETEVENTS: u32 = 1;
    const OFF_SQ_RING: i64 = 0;
    const OFF_CQ_RING: i64 = 0x800_0000;
    const OFF_SQES: i64 = 0x1000_0000;

    /// A ring, or why io_uring is unusable here.
    pub struct Ring {
        fd: std::os::fd::OwnedFd,
        p: Params,
        sq: *mut u8,
        cq: *mut u8,
        sqes: *mut Sqe,
        sizes: [usize; 3],
    }

    fn map(fd: i32, len: usize, off: i64) -> Result<*mut u8, String> {
        // SAFETY: a shared mapping of the ring fd at an io_uring offset.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(p.cast())
    }

    impl Ring {
        pub fn new() -> Result<Self, String> {
            let mut p = Params::default();
            // SAFETY: io_uring_setup with a zeroed params struct.
            let fd =
                unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p as *mut Params) };
            if fd < 0 {
                return Err(format!(
                    "io_uring_setup: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let fd = fd as i32;
            // SAFETY: fd was just returned by io_uring_setup.
            let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            let sizes = [
                p.sq_off.array as usize + p.sq_entries as usize * 4,
                p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>(),
                p.sq_entries as usize * std::mem::size_of::<Sqe>(),
            ];
            let sq = map(fd, sizes[0], OFF_SQ_RING)?;
            let cq = map(fd, sizes[1], OFF_CQ_RING)?;
            let sqes = map(fd, sizes[2], OFF_SQES)?.cast::<Sqe>();
            Ok(Self {
                fd: owned,
                p,
                sq,
                cq,
                sqes,
                sizes,
            })
        }

        /// IORING_OP_OPENAT of `path` read-only; the fd or -errno.
        pub fn openat(&mut self, path: &CStr) -> i32 {
            use std::os::fd::AsRawFd;
            use std::sync::atomic::{AtomicU32, Ordering};
            // SAFETY: offsets from io_uring_setup inside the mapped rings;
            // head and tail are shared with the kernel, so atomics.
            unsafe {
                let tail = &*(self.sq.add(self.p.sq_off.tail as usize) as *const AtomicU32);
                let mask = *(self.sq.add(self.p.sq_off.ring_mask as usize) as *const u32);
                let t = tail.load(Ordering::Acquire);
                let idx = t & mask;
                self.sqes.add(idx as usize).write(Sqe {
                    opcode: IORING_OP_OPENAT,
                    flags: 0,
                    ioprio: 0,
                    fd: libc::AT_FDCWD,
                    off: 0,
                    addr: path.as_ptr() as u64,
                    len: 0,
                    open_flags: libc::O_RDONLY as u32,
                    user_data: 7,
                    pad: [0; 3],
                });
                *(self.sq.add(self.p.sq_off.array as usize) as *mut u32).add(idx as usize) = idx;
                tail.store(t.wrapping_add(1), Ordering::Release);
                let rc = libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd.as_raw_fd(),
                    1u32,
                    1u32,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<u8>(),
                    0usize,
                );
                if rc < 0 {
                    return -std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                }
                let head = &*(self.cq.add(self.p.cq_off.head as usize) as *const AtomicU32);
                let cmask = *(self.cq.add(self.p.cq_off.ring_mask as usize) as *const u32);
                let h = head.load(Ordering::Acquire);
                let cqe = (self.cq.add(self.p.cq_off.cqes as usize) as *const Cqe)
                    .add((h & cmask) as usize)
                    .read();
                head.store(h.wrapping_add(1), Ordering::Release);
                cqe.res
            }
        }
    }

    impl Drop for Ring {
        fn drop(&mut self) {
            // SAFETY: unmapping exactly what `new` mapped.
            unsafe {
                libc::munmap(self.sq.cast(), self.sizes[0]);
                libc::munmap(self.cq.cast(), self.sizes[1]);
                libc::munmap(self.sqes.cast(), self.sizes[2]);
            }
        }
    }
}

#[test]
fn io_uring_openat() {
    // Bypass class: io_uring IORING_OP_OPENAT (no open syscall at all).
    let Some(mut f) = Fixture::start("io_uring_openat", true) else {
        return;
    };
    let mut ring = match uring::Ring::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIPPED io_uring_openat: {e}");
            return;
        }
    };
    let (secret, public) = (cstr(&f.path("dir/secret")), cstr(&f.path("dir/public")));
    let (s, p) = f.inside(|| (ring.openat(&secret), ring.openat(&public)));
    assert_eq!(s, -libc::EPERM, "io_uring openat of the denied file");
    assert!(p >= 0, "io_uring openat of the allowed file: {p}");
    // SAFETY: p is the fd io_uring opened.
    let pf = unsafe { OwnedFd::from_raw_fd(p) };
    assert_eq!(
        std::fs::read(format!("/proc/self/fd/{}", pf.as_raw_fd())).unwrap(),
        b"public\n"
    );
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

#[test]
fn path_in_unfaulted_page() {
    // Bypass class: the path string sits in a file-backed page not yet
    // faulted in (a tracepoint's non-faulting read of it fails).
    let Some(mut f) = Fixture::start("path_in_unfaulted_page", true) else {
        return;
    };
    let mut bytes = f.path("dir/secret").as_os_str().as_bytes().to_vec();
    bytes.push(0);
    std::fs::write(f.path("pathfile"), &bytes).unwrap();
    let file = std::fs::File::open(f.path("pathfile")).unwrap();
    // SAFETY: a private read-only mapping of a small file, never touched
    // by this process before the kernel reads the path from it.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: the mapping holds a NUL-terminated path.
    let r = f.inside(|| {
        read_with(|| unsafe { libc::open(page as *const libc::c_char, libc::O_RDONLY) })
    });
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(page, 4096) };
    assert_eperm(&r, "path in an unfaulted page");
    f.deny_event("file_open", "deny-dir", &f.path("dir/secret"));
    assert!(f.agent.stop().success());
}

#[test]
fn renamed_out_of_denied_dir() {
    // Bypass class: a file moved out of a denied directory (its inode mark
    // and the rules it had move with it).
    let Some(mut f) = Fixture::start("renamed_out_of_denied_dir", true) else {
        return;
    };
    std::fs::rename(f.path("dir/sub/deep"), f.path("moved")).unwrap();
    let r = f.inside(|| open_read(&f.path("moved")));
    assert_eperm(&r, "renamed out");
    f.deny_event("file_open", "deny-dir", &f.path("moved"));
    assert_eq!(std::fs::read(f.path("moved")).unwrap(), b"deep\n");
    assert!(f.agent.stop().success());
}

#[test]
fn directory_created_later() {
    // Bypass class: a directory made (or moved in) below a denied one after
    // the policy loaded. Inode marks do not cover it; the agent watches the
    // governed directories (inotify) and marks what appears. The window
    // between the mkdir and the marks is the agent's reaction time: the
    // test gives it 300 ms.
    let Some(mut f) = Fixture::start("directory_created_later", true) else {
        return;
    };
    std::fs::create_dir_all(f.path("dir/new/a/b")).unwrap();
    std::fs::write(f.path("dir/new/a/b/f"), "f\n").unwrap();
    std::fs::create_dir_all(f.path("elsewhere/x")).unwrap();
    std::fs::write(f.path("elsewhere/x/g"), "g\n").unwrap();
    std::fs::rename(f.path("elsewhere"), f.path("dir/moved-in")).unwrap();
    std::fs::create_dir_all(f.path("noexec/later")).unwrap();
    std::fs::copy(which("true"), f.path("noexec/later/tool")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (made, moved) = f.inside(|| {
        (
            open_read(&f.path("dir/new/a/b/f")),
            open_read(&f.path("dir/moved-in/x/g")),
        )
    });
    assert_eperm(&made, "file in a directory made later");
    assert_eperm(&moved, "file in a directory moved in later");
    let o = sh_in(
        &f.cg.path,
        &format!("exec {}", f.path("noexec/later/tool").display()),
    );
    assert_eq!(
        o.status.code(),
        Some(126),
        "exec in a directory made later: {:?} {}",
        o.status,
        stderr(&o)
    );
    f.deny_event("file_open", "deny-dir", &f.path("dir/new/a/b/f"));
    f.deny_event("file_open", "deny-dir", &f.path("dir/moved-in/x/g"));
    assert!(f.agent.stop().success());
}

#[test]
fn write_intent() {
    // Bypass class: write to a write-denied file by relative path, by
    // O_TRUNC, by append; reads stay allowed.
    let Some(mut f) = Fixture::start("write_intent", true) else {
        return;
    };
    let notes = cstr(&f.path("notes"));
    let open = |flags: i32| {
        // SAFETY: open with a valid path; the fd, if any, is closed at once.
        let fd = unsafe { libc::open(notes.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
        if fd < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            // SAFETY: fd was just returned by open.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(())
        }
    };
    let (trunc, append, rdwr, read) = f.inside(|| {
        (
            open(libc::O_WRONLY | libc::O_TRUNC),
            open(libc::O_WRONLY | libc::O_APPEND),
            open(libc::O_RDWR),
            open(libc::O_RDONLY),
        )
    });
    assert_eq!(trunc, Err(libc::EPERM), "O_TRUNC");
    assert_eq!(append, Err(libc::EPERM), "O_APPEND");
    assert_eq!(rdwr, Err(libc::EPERM), "O_RDWR");
    assert_eq!(read, Ok(()), "a read stays allowed");
    assert_eq!(
        std::fs::read(f.path("notes")).unwrap(),
        b"orig\n",
        "file changed"
    );
    f.deny_event("file_write", "no-write-notes", &f.path("notes"));
    assert!(f.agent.stop().success());
}

#[test]
fn governed_file_replaced_after_load() {
    // Bypass class: the governed file is replaced by a new inode after the
    // policy loaded (write + rename over it, as editors and passwd do): the
    // agent watches the directory (inotify) and marks the new inode when it
    // appears under the governed name; the test gives it 300 ms.
    let Some(mut f) = Fixture::start("governed_file_replaced_after_load", true) else {
        return;
    };
    std::fs::write(f.path("notes.new"), "new\n").unwrap();
    std::fs::rename(f.path("notes.new"), f.path("notes")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let notes = cstr(&f.path("notes"));
    // SAFETY: open with a valid path; a returned fd is closed at once.
    let r = f.inside(|| unsafe {
        libc::open(
            notes.as_ptr(),
            libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
        )
    });
    let errno = std::io::Error::last_os_error().raw_os_error();
    if r >= 0 {
        // SAFETY: r was just returned by open.
        drop(unsafe { OwnedFd::from_raw_fd(r) });
    }
    assert_eq!(
        (r, errno),
        (-1, Some(libc::EPERM)),
        "write-open of the replaced file"
    );
    assert_eq!(
        std::fs::read(f.path("notes")).unwrap(),
        b"new\n",
        "file changed"
    );
    f.deny_event("file_write", "no-write-notes", &f.path("notes"));
    assert!(f.agent.stop().success());
}

#[test]
fn exec_by_path_symlink_and_hard_link() {
    // Bypass class: exec of a denied binary by another name (symlink, hard
    // link, rename) and of anything below a denied directory.
    let Some(mut f) = Fixture::start("exec_by_path_symlink_and_hard_link", true) else {
        return;
    };
    std::os::unix::fs::symlink(f.path("bin/denied"), f.path("bin/sym")).unwrap();
    std::fs::hard_link(f.path("bin/denied"), f.path("bin/hard")).unwrap();
    for name in ["bin/denied", "bin/sym", "bin/hard", "noexec/tool"] {
        let o = sh_in(&f.cg.path, &format!("exec {}", f.path(name).display()));
        assert_eq!(
            o.status.code(),
            Some(126),
            "{name}: {:?} {}",
            o.status,
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("Operation not permitted"),
            "{name}: {}",
            stderr(&o)
        );
    }
    let o = sh_in(
        &f.cg.path,
        &format!("exec {}", f.path("bin/allowed").display()),
    );
    assert!(o.status.success(), "allowed binary: {:?}", o.status);
    let ev = f.agent.policy_event("exec deny", |e| {
        e["hook"] == "exec" && e["rule"] == "no-denied" && e["verdict"] == "deny"
    });
    assert_eq!(ev["backend"], "fanotify");
    assert_eq!(ev["function_name"], "fanotify_open_exec_perm");
    f.agent.policy_event("exec deny below a directory", |e| {
        e["hook"] == "exec" && e["rule"] == "no-exec-dir" && e["verdict"] == "deny"
    });
    assert!(f.agent.stop().success());
}

#[test]
fn agent_stopped_then_killed() {
    // Not a bypass: what an unresponsive agent means. While it is stopped a
    // governed open waits; when its fanotify fd closes (it was killed) the
    // kernel releases the open as allowed.
    let Some(mut f) = Fixture::start("agent_stopped_then_killed", true) else {
        return;
    };
    let agent = Pid::from_raw(f.agent.pid() as i32);
    nix::sys::signal::kill(agent, Signal::SIGSTOP).unwrap();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec cat {}",
            f.cg.path.display(),
            f.path("dir/secret").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let waiting = child.try_wait().unwrap().is_none();
    nix::sys::signal::kill(agent, Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let _ = f.agent.stop();
    assert!(waiting, "the open did not wait for the stopped agent");
    let status = status.expect("the open stayed blocked after the agent was killed");
    assert!(
        status.success(),
        "{status:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"secret\n", "released as allowed");
}

#[test]
fn audit_mode_reports_and_allows() {
    // Without --enforce: every bypass class reaches the same decision, and
    // nothing is denied (verdict audit).
    let Some(mut f) = Fixture::start("audit_mode_reports_and_allows", false) else {
        return;
    };
    let dir = std::fs::File::open(f.path("dir")).unwrap();
    let c = CString::new("secret").unwrap();
    let (abs, rel, link) = f.inside(|| {
        (
            open_read(&f.path("dir/secret")),
            // SAFETY: openat with a valid directory fd and path.
            read_with(|| unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) }),
            open_read(&f.path("hardlink")),
        )
    });
    assert_eq!(abs.unwrap(), b"secret\n");
    assert_eq!(rel.unwrap(), b"secret\n");
    assert_eq!(link.unwrap(), b"secret\n");
    let want = f.path("hardlink").to_string_lossy().into_owned();
    let ev = f.agent.policy_event("audit", |e| {
        e["rule"] == "deny-dir" && e["verdict"] == "audit" && path_of(e) == want
    });
    assert_eq!(ev["backend"], "fanotify");
    assert!(f
        .agent
        .policy_events()
        .iter()
        .all(|e| e["verdict"] != "deny"));
    let st = f.agent.status();
    let file = st["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "file")
        .unwrap()
        .clone();
    assert_eq!(file["fanotify"], true, "{file}");
    assert_eq!(file["enforcing"], false);
    assert!(f.agent.stop().success());
}
