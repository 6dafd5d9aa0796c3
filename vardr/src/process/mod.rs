//! The process cache: every live process, seeded from /proc at start and
//! kept current from fork, exec and exit events, so each event can say
//! which process did it, who started that process, and where it runs.
mod procfs;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;

pub use procfs::{cgroup_of, container_id, start_ticks};

/// A process for unit tests.
#[cfg(test)]
pub(crate) fn sample(
    pid: u32,
    binary: &str,
    cgroup: &str,
    parent: Option<Arc<ProcessInfo>>,
) -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        exec_id: format!("id-{pid}"),
        pid,
        start_boot_ns: 0,
        uid: 1000,
        gid: 1000,
        auid: None,
        binary: binary.into(),
        arguments: "-c x".into(),
        args_truncated: false,
        cwd: "/".into(),
        start_time: SystemTime::UNIX_EPOCH,
        cgroup_id: 1,
        cgroup: cgroup.into(),
        container_id: None,
        creds: None,
        origin: "execve",
        parent,
        json: JsonCache::default(),
    })
}

use crate::events::{Clock, Creds, Exec};
use crate::kernel::cgroup::CgroupPaths;

/// Serialized forms of a process, made once when first needed (a process
/// image never changes once in the cache). Not part of the value: a clone
/// starts empty, and two caches always compare equal.
#[derive(Debug, Default)]
pub struct JsonCache {
    /// The process as events show it (`Process` without `tid`).
    pub(crate) process: std::sync::OnceLock<(String, std::ops::Range<usize>)>,
    /// This process and its ancestors, nearest first, comma-separated, up
    /// to [`MAX_ANCESTORS`]: the `ancestors` array of its grandchildren's
    /// events starts with its parent's.
    pub(crate) lineage: std::sync::OnceLock<String>,
}

impl Clone for JsonCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for JsonCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// How long an exited process stays resolvable for late events.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// Ancestors listed in an event, nearest first.
pub const MAX_ANCESTORS: usize = 16;

/// One process image (a pid between two execs).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// The process (pid and start time) on this node: base64 of
    /// `node:boot-id:start-ns:pid`, from boot-time values only, so every agent
    /// (before and after a restart) gives a live process the same id. An
    /// exec without a fork keeps the process's id.
    pub exec_id: String,
    pub pid: u32,
    /// When the task started, in boot-clock ns, at the kernel's clock-tick
    /// resolution (what /proc/PID/stat says).
    pub start_boot_ns: u64,
    pub uid: u32,
    pub gid: u32,
    pub auid: Option<u32>,
    pub binary: String,
    /// argv without argv[0], joined by spaces (as Tetragon's `arguments`).
    pub arguments: String,
    pub args_truncated: bool,
    pub cwd: String,
    pub start_time: SystemTime,
    pub cgroup_id: u64,
    pub cgroup: String,
    pub container_id: Option<String>,
    /// All of its ids, when known (from the exec event or /proc).
    pub creds: Option<Creds>,
    /// How the process became known: "execve", "procFS" or "clone".
    pub origin: &'static str,
    pub parent: Option<Arc<ProcessInfo>>,
    pub json: JsonCache,
}

impl ProcessInfo {
    pub fn ppid(&self) -> u32 {
        self.parent.as_ref().map_or(0, |p| p.pid)
    }

    /// Parent's parent first, up to [`MAX_ANCESTORS`].
    pub fn ancestors(&self) -> Vec<Arc<ProcessInfo>> {
        let mut out = Vec::new();
        let mut cur = self.parent.as_ref().and_then(|p| p.parent.clone());
        while let Some(p) = cur {
            if out.len() == MAX_ANCESTORS {
                break;
            }
            cur = p.parent.clone();
            out.push(p);
        }
        out
    }
}

/// The program path an exec names, made absolute against the caller's
/// working directory and cleaned of `//` and `.` (the kernel hands over
/// the name as written: `./sh` or `//bin/sh` must read as `/bin/sh`).
/// `..` is kept: collapsing it as text would be wrong through a symlink,
/// and would let a caller dress a program up as another one.
pub fn absolute(filename: &str, cwd: &str) -> String {
    let joined;
    if clean_absolute(filename) {
        return filename.to_string();
    }
    let path = if filename.starts_with('/') {
        filename
    } else if cwd.starts_with('/') && !filename.is_empty() {
        joined = format!("{cwd}/{filename}");
        &joined
    } else {
        return filename.to_string();
    };
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The program an exec ran: the name it was given, made absolute against
/// the working directory, as long as that name says which file it is; the
/// kernel's resolved path when it does not (`..` through a possible
/// symlink, a descriptor's `/dev/fd/N`, a relative name without a known
/// working directory). The name is kept otherwise so `/bin/sh` stays
/// `/bin/sh` (not the `/usr/bin/dash` it links to), as policies name it.
pub fn binary(e: &Exec, cwd: &str) -> String {
    let name = &e.filename;
    let by_fd = name.starts_with("/dev/fd/") || name.starts_with("/proc/self/fd/");
    if clean_absolute(name) && !by_fd {
        return name.clone();
    }
    let vague = name.is_empty()
        || by_fd
        || (!name.starts_with('/') && !cwd.starts_with('/'))
        || name.split('/').any(|c| c == "..");
    match &e.path {
        Some(p) if vague => p.clone(),
        _ => absolute(name, cwd),
    }
}

/// An absolute path with nothing to clean: no `//`, no component that
/// starts with a dot (so no `.` or `..`), no trailing `/`. One pass.
fn clean_absolute(p: &str) -> bool {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.len() == 1 {
        return true;
    }
    let bad = b.windows(2).fold(false, |bad, w| {
        bad | ((w[0] == b'/') & ((w[1] == b'/') | (w[1] == b'.')))
    });
    !bad && b[b.len() - 1] != b'/'
}

/// Length of a clock tick (`/proc/PID/stat` start times are in ticks).
pub fn tick_ns() -> u64 {
    static TICK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        1_000_000_000 / hz
    })
}

/// A boot-clock time cut to whole clock ticks, as /proc reports a task's
/// start: the fork event (a few µs after the task started) and /proc agree.
pub fn to_tick(boot_ns: u64) -> u64 {
    let t = tick_ns();
    boot_ns / t * t
}

/// `node` is `node:boot-id`; `start_boot_ns` is the task's start in
/// boot-clock ns at tick resolution.
pub fn exec_id(node: &str, start_boot_ns: u64, pid: u32) -> String {
    // `node:start:pid` on the stack when it fits (it does for any
    // reasonable node name), then straight into the output's base64.
    let mut buf = [0u8; 160];
    let raw_len = node.len() + 32;
    let mut heap;
    let raw: &mut [u8] = if raw_len <= buf.len() {
        &mut buf[..raw_len]
    } else {
        heap = vec![0u8; raw_len];
        &mut heap
    };
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        raw[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(node.as_bytes());
    put(b":");
    put(itoa::Buffer::new().format(start_boot_ns).as_bytes());
    put(b":");
    put(itoa::Buffer::new().format(pid).as_bytes());
    let mut out = String::with_capacity(n.div_ceil(3) * 4);
    base64::engine::general_purpose::STANDARD.encode_string(&raw[..n], &mut out);
    out
}

/// Hashing of kernel-assigned numbers (pids, cgroup ids): a multiply,
/// not SipHash (no one picks these keys to collide).
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v.into());
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

pub struct ProcessCache {
    node: String,
    by_pid: IdMap<u32, Arc<ProcessInfo>>,
    exited: VecDeque<(Instant, u32, String)>,
    cgroups: CgroupPaths,
}

impl ProcessCache {
    /// exec_ids name `node` and this boot (the kernel's boot id), so they
    /// stay unique across reboots although start times restart from zero.
    pub fn new(node: &str) -> Self {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let boot: String = boot.trim().chars().filter(|c| *c != '-').take(8).collect();
        let mut c = Self::for_boot(&format!("{node}:{boot}"));
        c.cgroups = CgroupPaths::new();
        c
    }

    /// A cache whose exec_ids start with `prefix` (`node:boot`), with no
    /// cgroup paths but those it is told ([`ProcessCache::cgroups`]).
    pub fn for_boot(prefix: &str) -> Self {
        Self {
            node: prefix.to_string(),
            by_pid: IdMap::default(),
            exited: VecDeque::new(),
            cgroups: CgroupPaths::detached(),
        }
    }

    /// The cgroup id -> path cache.
    pub fn cgroups(&mut self) -> &mut CgroupPaths {
        &mut self.cgroups
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.by_pid.get(&pid).cloned()
    }

    /// Learns every process already running, parents before children.
    pub fn seed_from_proc(&mut self, clock: &Clock) {
        let mut procs = procfs::scan(clock);
        procs.sort_by_key(|p| (p.start_time, p.pid));
        for p in procs {
            self.cgroups.insert(p.cgroup_id, &p.cgroup);
            let parent = self.by_pid.get(&p.ppid).cloned();
            let info = ProcessInfo {
                exec_id: exec_id(&self.node, p.start_boot_ns, p.pid),
                pid: p.pid,
                start_boot_ns: p.start_boot_ns,
                uid: p.uid,
                gid: p.gid,
                auid: p.auid,
                binary: p.binary,
                arguments: p.argv.get(1..).unwrap_or_default().join(" "),
                args_truncated: false,
                cwd: p.cwd,
                start_time: p.start_time,
                cgroup_id: p.cgroup_id,
                container_id: container_id(&p.cgroup),
                cgroup: p.cgroup,
                creds: p.creds,
                origin: "procFS",
                parent,
                json: JsonCache::default(),
            };
            self.by_pid.insert(p.pid, Arc::new(info));
        }
    }

    /// A new process: a copy of its parent's image until it execs.
    /// `boot_ns` is the fork event's time.
    pub fn on_fork(&mut self, parent_pid: u32, child_pid: u32, boot_ns: u64, time: SystemTime) {
        let parent = self.by_pid.get(&parent_pid).cloned();
        let start = to_tick(boot_ns);
        let info = match &parent {
            Some(p) => ProcessInfo {
                exec_id: exec_id(&self.node, start, child_pid),
                pid: child_pid,
                start_boot_ns: start,
                start_time: time,
                origin: "clone",
                parent: Some(p.clone()),
                json: JsonCache::default(),
                ..(**p).clone()
            },
            None => ProcessInfo {
                exec_id: exec_id(&self.node, start, child_pid),
                pid: child_pid,
                start_boot_ns: start,
                uid: 0,
                gid: 0,
                auid: None,
                binary: String::new(),
                arguments: String::new(),
                args_truncated: false,
                cwd: String::new(),
                start_time: time,
                cgroup_id: 0,
                cgroup: String::new(),
                container_id: None,
                creds: None,
                origin: "clone",
                parent: None,
                json: JsonCache::default(),
            },
        };
        self.by_pid.insert(child_pid, Arc::new(info));
    }

    /// A new image for `e.header.pid`; its parent is the process that forked it.
    pub fn on_exec(&mut self, e: &Exec, time: SystemTime) -> Arc<ProcessInfo> {
        let pid = e.header.pid;
        let prior = self.by_pid.get(&pid).cloned();
        // The parent is the forker's image, kept by the pre-exec record.
        let parent = prior
            .as_ref()
            .and_then(|p| p.parent.clone())
            .filter(|p| p.pid == e.ppid)
            .or_else(|| self.by_pid.get(&e.ppid).cloned());
        // Everything from the event (the kernel's view at the exec); what
        // it could not say, from the process's previous image.
        let (cgroup, container) = match self.cgroups.get(e.header.cgroup_id) {
            Some(c) => (c.path.clone(), c.container_id.clone()),
            None => prior
                .as_ref()
                .filter(|p| p.cgroup_id == e.header.cgroup_id)
                .map(|p| (p.cgroup.clone(), p.container_id.clone()))
                .unwrap_or_default(),
        };
        let cwd = e
            .cwd
            .clone()
            .or_else(|| prior.as_ref().map(|p| p.cwd.clone()))
            .unwrap_or_default();
        // The task started at its fork (the kernel says when; else the
        // fork event's time), not at this exec.
        let start = Some(to_tick(e.start_ns))
            .filter(|&s| s != 0 && s <= e.header.boot_ns)
            .or_else(|| {
                prior
                    .as_ref()
                    .map(|p| p.start_boot_ns)
                    .filter(|&s| s != 0 && s <= e.header.boot_ns)
            })
            .unwrap_or_else(|| to_tick(e.header.boot_ns));
        let info = Arc::new(ProcessInfo {
            exec_id: exec_id(&self.node, start, pid),
            pid,
            start_boot_ns: start,
            uid: e.header.uid,
            gid: e.header.gid,
            auid: e.auid,
            binary: binary(e, &cwd),
            arguments: e.arguments.clone(),
            args_truncated: e.args_truncated,
            cwd,
            start_time: time,
            cgroup_id: e.header.cgroup_id,
            container_id: container,
            cgroup,
            creds: e.creds,
            origin: "execve",
            parent,
            json: JsonCache::default(),
        });
        self.by_pid.insert(pid, info.clone());
        info
    }

    /// Marks `pid` gone; it stays resolvable for a grace period.
    pub fn on_exit(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        let p = self.by_pid.get(&pid).cloned()?;
        self.exited
            .push_back((Instant::now(), pid, p.exec_id.clone()));
        Some(p)
    }

    /// Queues processes that are gone without an exit event (lost events,
    /// or exits while the agent was starting), so the cache cannot leak.
    pub fn sweep_dead(&mut self) {
        let queued: std::collections::HashSet<u32> = self.exited.iter().map(|e| e.1).collect();
        let dead: Vec<u32> = self
            .by_pid
            .keys()
            .copied()
            .filter(|pid| !queued.contains(pid))
            .filter(|&pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
            .collect();
        for pid in dead {
            self.on_exit(pid);
        }
    }

    /// Drops exited processes whose grace period is over.
    pub fn prune(&mut self) {
        self.prune_before(Instant::now() - EXIT_GRACE);
    }

    fn prune_before(&mut self, cutoff: Instant) {
        while let Some((at, pid, id)) = self.exited.front() {
            if *at > cutoff {
                break;
            }
            // The pid may have been reused by a newer process meanwhile.
            if self.by_pid.get(pid).is_some_and(|p| &p.exec_id == id) {
                self.by_pid.remove(pid);
            }
            self.exited.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Exec;
    use vardr_common::{EventHeader, EventKind};

    #[test]
    fn exec_names_are_made_absolute_and_clean() {
        assert_eq!(absolute("/bin/sh", "/x"), "/bin/sh");
        assert_eq!(absolute("//bin/./sh", "/x"), "/bin/sh");
        assert_eq!(absolute("./sh", "/bin"), "/bin/sh");
        // `..` stays: /tmp/l may be a symlink, so this is not /usr/sbin/x.
        assert_eq!(
            absolute("/tmp/l/../../usr/sbin/x", "/"),
            "/tmp/l/../../usr/sbin/x"
        );
        assert_eq!(absolute("../bin/sh", "/usr/lib"), "/usr/lib/../bin/sh");
        // No working directory known, or no name: keep what was written.
        assert_eq!(absolute("sh", ""), "sh");
        assert_eq!(absolute("", "/x"), "");
        assert_eq!(absolute("/", "/x"), "/");
        assert_eq!(absolute("/a/", "/x"), "/a");
        assert_eq!(absolute("/a/.b/./c", "/x"), "/a/.b/c");
        assert!(
            clean_absolute("/usr/bin/x.y") && !clean_absolute("/usr/.x") && !clean_absolute("x")
        );
    }

    fn exec(pid: u32, ppid: u32, bin: &str, argv: &[&str]) -> Exec {
        Exec {
            header: EventHeader {
                kind: EventKind::Exec as u32,
                _pad: 0,
                boot_ns: 100 * SEC,
                tid: pid,
                pid,
                uid: 1000,
                gid: 1000,
                cgroup_id: 1,
                comm: [0; 16],
            },
            ppid,
            auid: Some(1000),
            filename: bin.into(),
            path: None,
            cwd: None,
            creds: None,
            start_ns: 0,
            arguments: argv.get(1..).unwrap_or_default().join(" "),
            args_truncated: false,
        }
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn binary_is_the_name_unless_only_the_kernels_path_says_which_file() {
        let mut e = exec(1, 0, "/bin/sh", &["sh"]);
        e.path = Some("/usr/bin/dash".into());
        // The name as policies write it, not the symlink's target.
        assert_eq!(binary(&e, "/"), "/bin/sh");
        e.filename = "./sh".into();
        assert_eq!(binary(&e, "/bin"), "/bin/sh");
        for vague in ["/dev/fd/3", "/proc/self/fd/4", "../x/sh", "/tmp/l/../sh"] {
            e.filename = vague.into();
            assert_eq!(binary(&e, "/tmp"), "/usr/bin/dash", "{vague}");
        }
        e.filename = "sh".into();
        assert_eq!(binary(&e, ""), "/usr/bin/dash");
        // Without the kernel's path: the name as before.
        e.path = None;
        e.filename = "/dev/fd/3".into();
        assert_eq!(binary(&e, "/"), "/dev/fd/3");
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn tree_of_fork_and_exec_gives_ancestry() {
        let mut c = ProcessCache::for_boot("node1");
        c.on_exec(&exec(100_001, 1, "/bin/bash", &["bash"]), t(1));
        c.on_fork(100_001, 100_002, 2 * SEC, t(2));
        let sh = c.on_exec(&exec(100_002, 100_001, "/bin/sh", &["sh", "-c", "x"]), t(3));
        c.on_fork(100_002, 100_003, 4 * SEC + 1234, t(4));
        let leaf = c.on_exec(&exec(100_003, 100_002, "/bin/sleep", &["sleep", "1"]), t(5));
        assert_eq!(leaf.arguments, "1");
        assert_eq!(leaf.parent.as_ref().unwrap().exec_id, sh.exec_id);
        assert_eq!(leaf.ppid(), 100_002);
        let anc: Vec<_> = leaf.ancestors().iter().map(|a| a.binary.clone()).collect();
        assert_eq!(anc, vec!["/bin/bash"]);
        // exec ids are unique per process and come from its start time
        // (the fork, at clock-tick resolution), not from the exec.
        assert_ne!(leaf.exec_id, sh.exec_id);
        assert_eq!(leaf.exec_id, exec_id("node1", 4 * SEC, 100_003));
        assert_ne!(exec_id("node1", 5, 1), exec_id("node2", 5, 1));
        let long = "n".repeat(300);
        for (node, start, pid) in [
            ("node1", 0, 0),
            ("x:y", u64::MAX, u32::MAX),
            (long.as_str(), 7, 9),
        ] {
            assert_eq!(
                exec_id(node, start, pid),
                base64::engine::general_purpose::STANDARD.encode(format!("{node}:{start}:{pid}"))
            );
        }
    }

    #[test]
    fn exec_id_from_proc_matches_the_fork_event_and_survives_a_restart() {
        // A process this test starts: the fork event's time (just after
        // the task's start) and /proc give the same id.
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let from_proc = procfs::start_boot_ns(pid).unwrap();
        let fork_event_ns = from_proc + 3_000; // a few µs later, same tick
        let mut before = ProcessCache::for_boot("n");
        before.on_fork(std::process::id(), pid, fork_event_ns, t(1));
        let id_before = before.get(pid).unwrap().exec_id.clone();
        // A new agent learns it from /proc.
        let mut after = ProcessCache::for_boot("n");
        after.seed_from_proc(&Clock::now());
        let id_after = after.get(pid).unwrap().exec_id.clone();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(id_before, id_after);
        assert_eq!(id_after, exec_id("n", from_proc, pid));
        // The agent's own clock plays no part.
        assert_eq!(to_tick(from_proc), from_proc);
    }

    #[test]
    fn exits_are_pruned_after_the_grace_period_without_leaking() {
        let mut c = ProcessCache::for_boot("n");
        for pid in 200_000..200_100 {
            c.on_fork(1, pid, SEC, t(1));
            c.on_exec(&exec(pid, 1, "/bin/true", &["true"]), t(2));
            c.on_exit(pid);
        }
        assert_eq!(c.len(), 100);
        c.prune_before(Instant::now() + Duration::from_secs(1));
        assert_eq!(c.len(), 0);
        assert!(c.exited.is_empty());
    }

    #[test]
    fn sweep_finds_processes_that_died_silently() {
        let mut c = ProcessCache::for_boot("n");
        // Far above pid_max: no such process.
        c.on_exec(&exec(u32::MAX - 7, 1, "/bin/gone", &["gone"]), t(1));
        c.on_exec(&exec(std::process::id(), 1, "/bin/me", &["me"]), t(1));
        c.sweep_dead();
        c.prune_before(Instant::now() + Duration::from_secs(1));
        assert!(c.get(u32::MAX - 7).is_none());
        assert!(c.get(std::process::id()).is_some());
    }

    #[test]
    fn reused_pid_survives_the_old_exit() {
        let mut c = ProcessCache::for_boot("n");
        c.on_exec(&exec(300_000, 1, "/bin/a", &["a"]), t(1));
        c.on_exit(300_000);
        c.on_fork(1, 300_000, 2 * SEC, t(2));
        c.on_exec(&exec(300_000, 1, "/bin/b", &["b"]), t(3));
        c.prune_before(Instant::now() + Duration::from_secs(1));
        assert_eq!(c.get(300_000).unwrap().binary, "/bin/b");
    }
}
