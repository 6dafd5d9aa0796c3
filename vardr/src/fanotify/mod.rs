//! The fallback backend's deny path for files and exec: fanotify permission
//! events (`FAN_OPEN_PERM`, `FAN_OPEN_EXEC_PERM`) on inode marks of the
//! governed objects, answered by a dedicated thread of the agent.
//!
//! The kernel asks before it completes the open or exec, about the object
//! it resolved: paths, symlinks, `/proc/self/fd` reopens, file handles and
//! io_uring all arrive as the same inode. `FAN_DENY` fails the open or exec
//! with EPERM.
//!
//! Each rule set gets its own group (and thread). A reload marks the new
//! group first, then drains and closes the old one: while both exist an
//! open needs both to allow it, so no instant has no rules. Closing a group
//! (also when the agent exits or is killed) releases its pending events as
//! allowed; while the agent is stopped, governed opens wait (killably).
mod cgroup_guard;
mod decide;
pub mod lease;
pub mod marks;
mod task;

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::fanotify::{
        EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
        Response,
    },
};
use tokio::sync::mpsc::UnboundedSender;
use vardr_common::{BackendKind, EventHeader, EventKind, Hook, Verdict};

pub use decide::{Access, Rules};
pub use marks::MarkStats;
pub use task::is_kernel_thread;

use crate::{agent::response::within, compile::RuleSet, events::PolicyMatch, process};

#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    #[error("fanotify_init(FAN_CLASS_CONTENT): {0}")]
    Init(Errno),
    #[error("inotify_init (new directories below governed ones): {0}")]
    Inotify(Errno),
    #[error("cannot start the fanotify thread: {0}")]
    Thread(std::io::Error),
}

/// Creates a permission-event group: FAN_CLASS_CONTENT, the thread id in
/// events (to read the open's flags), unlimited queue and marks (the agent
/// bounds its marks itself).
fn new_group() -> Result<Fanotify, Errno> {
    Fanotify::init(
        InitFlags::FAN_CLASS_CONTENT
            | InitFlags::FAN_CLOEXEC
            | InitFlags::FAN_NONBLOCK
            | InitFlags::FAN_REPORT_TID
            | InitFlags::FAN_UNLIMITED_QUEUE
            | InitFlags::FAN_UNLIMITED_MARKS,
        EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
    )
}

/// Whether this kernel gives permission events (`vardr probe`).
pub fn probe() -> Result<(), Errno> {
    new_group().map(drop)
}

/// Who is governed and how, fixed for the agent's life.
#[derive(Clone, Debug)]
pub struct Options {
    pub enforce: bool,
    /// Serve the file hooks (`FAN_OPEN_PERM`).
    pub file: bool,
    /// Serve exec (`FAN_OPEN_EXEC_PERM`); only with `enforce` (audit and
    /// alert on exec are reported by `sched_process_exec`, after the exec).
    pub exec: bool,
    /// `--scope-cgroup`, relative to the cgroup v2 root.
    pub scope: Option<String>,
    /// The agent's `vardr.service` cgroup, exempt.
    pub agent_cgroup: Option<String>,
    /// Their cgroup ids: membership is decided by ids when known, so a
    /// renamed cgroup (cgroup2 allows it) is still itself.
    pub scope_id: Option<u64>,
    pub agent_cgroup_id: Option<u64>,
    /// Refuse governed moves into the agent's cgroup and writes of its
    /// files (off in a PID namespace of its own: see `Config`).
    pub protect_agent_cgroup: bool,
    /// Ids of the cgroups above the agent's (the root left out): their
    /// files other than the membership ones reach the agent too.
    pub agent_above: Vec<u64>,
    pub cgroup_root: PathBuf,
    pub max_marks: usize,
}

impl Options {
    /// Whether cgroup `cg` (relative to the root) is inside the scope
    /// (everything is, without one).
    pub fn in_scope(&self, cg: &str) -> bool {
        match (self.scope_id, &self.scope) {
            (Some(id), _) => crate::kernel::cgroup::within_id(&self.cgroup_root, cg, id),
            (None, Some(s)) => within(cg, s),
            (None, None) => true,
        }
    }

    /// Whether cgroup `cg` is one of those above the agent's.
    pub fn above_agent(&self, cg: &str) -> bool {
        !self.agent_above.is_empty()
            && crate::kernel::cgroup::id(&self.cgroup_root.join(cg.trim_start_matches('/')))
                .is_ok_and(|id| self.agent_above.contains(&id))
    }

    /// Whether cgroup `cg` is the agent's service cgroup or below it.
    pub fn in_agent(&self, cg: &str) -> bool {
        match (self.agent_cgroup_id, &self.agent_cgroup) {
            (Some(id), _) => crate::kernel::cgroup::within_id(&self.cgroup_root, cg, id),
            (None, Some(a)) => within(cg, a),
            (None, None) => false,
        }
    }
}

/// State shared with the answering threads.
struct Shared {
    opts: Options,
    agent_pid: u32,
    events: UnboundedSender<PolicyMatch>,
    answered: AtomicU64,
    denied: AtomicU64,
    /// The kernel's record of processes exempt by the binary they executed.
    exempt_tasks: std::sync::OnceLock<crate::backend::ExemptTasks>,
    /// Set with `--keep-enforcing`: the pinned open tracepoints stand by
    /// while it holds.
    lease: std::sync::OnceLock<lease::Lease>,
    /// Moves out of the rules by cgroup (with the file rules).
    guard: Option<cgroup_guard::CgroupGuard>,
}

/// A stop request a polling thread sees at once: the flag, and an eventfd
/// in its poll set (a reload does not wait out a poll timeout).
struct Stop {
    flag: AtomicBool,
    wake: Option<nix::sys::eventfd::EventFd>,
}

impl Stop {
    fn new() -> Self {
        // Without an eventfd the threads still see the flag within a poll
        // timeout.
        let wake = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .ok();
        Self {
            flag: AtomicBool::new(false),
            wake,
        }
    }

    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(w) = &self.wake {
            let _ = w.write(1);
        }
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Polls `fd` for input, or this stop; `Ok(0)` on timeout.
    fn poll(&self, fd: BorrowedFd<'_>) -> nix::Result<i32> {
        let mut fds = vec![PollFd::new(fd, PollFlags::POLLIN)];
        if let Some(w) = &self.wake {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        poll(&mut fds, PollTimeout::from(100u16))
    }
}

struct Group {
    fan: Arc<Fanotify>,
    /// Every planned mark is in place: the group may hold the lease.
    armed: Arc<AtomicBool>,
    stop: Arc<Stop>,
    stop_follow: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    follower: Option<JoinHandle<()>>,
}

impl Group {
    /// Stops following directories (while events are still answered: the
    /// follower's own opens need answers), removes the marks so no new
    /// events arrive, then answers what is queued and closes the group
    /// (pending events nobody read are allowed by the kernel; the group in
    /// force still decides them).
    fn close(mut self) {
        self.stop_follow.set();
        if let Some(t) = self.follower.take() {
            let _ = t.join();
        }
        // Without this a busy system keeps the queue from ever draining
        // (a reload under load never finished).
        if let Err(e) = self.fan.mark(
            MarkFlags::FAN_MARK_FLUSH,
            MaskFlags::empty(),
            nix::fcntl::AT_FDCWD,
            None::<&str>,
        ) {
            tracing::warn!("fanotify: removing the marks of the old rule set: {e}");
        }
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop_follow.set();
        self.stop.set();
    }
}

/// A rule set's decisions and marks, worked out (the slow part: every
/// governed path looked up) before its group is made.
pub struct Planned {
    rules: Rules,
    plan: marks::MarkPlan,
}

impl Planned {
    /// Decides by the rule set's maps once they are written
    /// ([`Rules::read_paths_from`]).
    pub fn read_paths_from(&mut self, maps: Option<crate::backend::PathMaps>) {
        if let Some(m) = maps {
            self.rules.read_paths_from(m);
        }
    }
}

/// Plans the marks of `set` for a service with options `o`.
pub fn plan(o: &Options, set: &RuleSet) -> Planned {
    let mut rules = Rules::new(set);
    let mut plan = if o.file || o.exec {
        marks::plan(set, &rules, o.exec, o.max_marks)
    } else {
        marks::MarkPlan::default()
    };
    rules.walked = std::sync::RwLock::new(std::mem::take(&mut plan.walked));
    Planned { rules, plan }
}

/// The fanotify deny path: one group per rule set in force.
pub struct Service {
    shared: Arc<Shared>,
    current: Option<Group>,
    last: MarkStats,
}

impl Service {
    /// Checks that the kernel gives permission events; marks nothing yet.
    pub fn start(
        opts: Options,
        events: UnboundedSender<PolicyMatch>,
    ) -> Result<Self, FanotifyError> {
        new_group().map_err(FanotifyError::Init)?;
        let guard = if opts.file {
            let g = cgroup_guard::CgroupGuard::new(&opts);
            if g.is_none() && (opts.scope.is_some() || opts.agent_cgroup.is_some()) {
                tracing::warn!(
                    "cannot stat the cgroup2 root {}: a governed process can move out of the rules by writing cgroup.procs",
                    opts.cgroup_root.display()
                );
            }
            g
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                guard,
                opts,
                agent_pid: std::process::id(),
                events,
                answered: AtomicU64::new(0),
                denied: AtomicU64::new(0),
                exempt_tasks: std::sync::OnceLock::new(),
                lease: std::sync::OnceLock::new(),
            }),
            current: None,
            last: MarkStats::default(),
        })
    }

    /// Exempt binaries are decided from the exempt-task map the programs
    /// keep (written at exec from the file executed, never from
    /// `/proc/PID/exe`, which a process can change). Without it nobody is
    /// exempt by binary.
    pub fn set_exempt_tasks(&self, map: crate::backend::ExemptTasks) {
        let _ = self.shared.exempt_tasks.set(map);
    }

    /// The pinned open tracepoints stand by while the answering thread
    /// renews this lease (file rules only; see [`lease`]).
    pub fn set_lease(&self, map: lease::LeaseMap) {
        let _ = self.shared.lease.set(lease::Lease::new(map));
    }

    /// Whether a lease lets the open tracepoints stand by.
    pub fn holds_lease(&self) -> bool {
        self.shared.lease.get().is_some()
    }

    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Marks of the rule set in force.
    pub fn marks(&self) -> MarkStats {
        self.last
    }

    /// Puts `set` in force: a new group answers and is marked, then the
    /// old one is drained and closed. On error the old group stays. With
    /// `maps` (the set as written to the kernel) paths are looked up there.
    pub fn apply(
        &mut self,
        set: &RuleSet,
        maps: Option<crate::backend::PathMaps>,
    ) -> Result<MarkStats, FanotifyError> {
        let mut planned = plan(&self.shared.opts, set);
        planned.read_paths_from(maps);
        self.apply_planned(planned)
    }

    /// [`Service::apply`] of a rule set planned beforehand ([`plan`], which
    /// may run on another thread).
    pub fn apply_planned(&mut self, planned: Planned) -> Result<MarkStats, FanotifyError> {
        let Planned { rules, plan } = planned;
        let rules = Arc::new(rules);
        let fan = Arc::new(new_group().map_err(FanotifyError::Init)?);
        let watches = Arc::new(marks::Watches::new().map_err(FanotifyError::Inotify)?);
        let mut group = Group {
            fan: fan.clone(),
            armed: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(Stop::new()),
            stop_follow: Arc::new(Stop::new()),
            thread: None,
            follower: None,
        };
        // Answers permission events.
        group.thread = Some({
            let (fan, armed, stop, shared, rules) = (
                fan.clone(),
                group.armed.clone(),
                group.stop.clone(),
                self.shared.clone(),
                rules.clone(),
            );
            std::thread::Builder::new()
                .name("vardr-fanotify".into())
                .spawn(move || answer_loop(&fan, &armed, &stop, &rules, &shared))
                .map_err(FanotifyError::Thread)?
        });
        // Marks new directories. A thread of its own: listing a marked
        // directory raises an event the answering thread must answer.
        group.follower = Some({
            let (fan, stop, watches, limit) = (
                fan.clone(),
                group.stop_follow.clone(),
                watches.clone(),
                self.shared.opts.max_marks,
            );
            std::thread::Builder::new()
                .name("vardr-fan-dirs".into())
                .spawn(move || follow_loop(&fan, &watches, &stop, &rules, limit))
                .map_err(FanotifyError::Thread)?
        });
        let stats = marks::apply(&group.fan, &plan, &watches);
        if let Some(g) = &self.shared.guard {
            if let Err(e) = g.mark(&group.fan) {
                tracing::warn!("fanotify: cannot mark the cgroup2 file system ({e}): a governed process can move out of the rules by writing cgroup.procs");
            }
        }
        let o = &self.shared.opts;
        if stats.over_limit > 0 {
            tracing::warn!(
                marked = stats.marked,
                over_limit = stats.over_limit,
                "fanotify: more governed objects than {} marks; the rest are seen only through their directory (a rename out of it or a hard link made elsewhere escapes)",
                o.max_marks
            );
        }
        // A group that missed an object leaves the open tracepoints on
        // (both decide then: the tracepoints by path, with SIGKILL).
        group.armed.store(stats.failed == 0, Ordering::SeqCst);
        if let Some(old) = self.current.replace(group) {
            old.close();
        }
        self.last = stats;
        Ok(stats)
    }

    /// Permission events answered and denied so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.answered.load(Ordering::Relaxed),
            self.shared.denied.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // The tracepoints take over before the group lets anything through.
        if let Some(l) = self.shared.lease.get() {
            l.release();
        }
        if let Some(g) = self.current.take() {
            g.close();
        }
    }
}

/// How long a closing group answers what is queued before it closes and
/// leaves the rest to the kernel (allowed here, decided by the new group).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

fn answer_loop(fan: &Fanotify, armed: &AtomicBool, stop: &Stop, rules: &Rules, shared: &Shared) {
    let mut drain_until = None;
    loop {
        let stopping = stop.is_set();
        // Only a group that answers holds the lease (a closing one leaves it
        // to the group that replaces it).
        if let (false, Some(l)) = (stopping, shared.lease.get()) {
            if shared.opts.file && armed.load(Ordering::SeqCst) {
                l.renew();
            }
        }
        if stopping {
            let until = *drain_until.get_or_insert_with(|| std::time::Instant::now() + DRAIN_LIMIT);
            if std::time::Instant::now() >= until {
                return;
            }
        }
        if !stopping {
            match stop.poll(fan.as_fd()) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("fanotify poll: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        match fan.read_events() {
            Ok(events) => {
                for ev in &events {
                    answer(fan, ev, rules, shared);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) if stopping => return,
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("fanotify read: {e}");
                if stopping {
                    return;
                }
            }
        }
    }
}

fn follow_loop(fan: &Fanotify, watches: &marks::Watches, stop: &Stop, rules: &Rules, limit: usize) {
    while !stop.is_set() {
        match stop.poll(watches.inotify.as_fd()) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("inotify poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        if let Ok(events) = watches.inotify.read_events() {
            for ev in events {
                follow(fan, watches, rules, limit, ev);
            }
        }
    }
}

/// A new directory below a governed one gets marks like those of the load.
fn follow(
    fan: &Fanotify,
    watches: &marks::Watches,
    rules: &Rules,
    limit: usize,
    ev: nix::sys::inotify::InotifyEvent,
) {
    use nix::sys::inotify::AddWatchFlags as F;
    if ev.mask.contains(F::IN_Q_OVERFLOW) {
        tracing::warn!("inotify queue overflow: new directories below governed ones may be unmarked until the next reload");
        return;
    }
    if ev.mask.contains(F::IN_IGNORED) {
        watches.forget(ev.wd);
        return;
    }
    let (Some(f), Some(name)) = (watches.dir(ev.wd), ev.name) else {
        return;
    };
    let path = f.dir.join(&name);
    if ev.mask.contains(F::IN_ISDIR) {
        if let Some(mask) = f.subtree {
            marks::follow_new_dir(fan, watches, rules, path, mask, limit);
        }
    } else if let Some(mask) = f.names.get(&name) {
        marks::follow_new_file(fan, watches, &path, *mask);
    }
}

fn answer(fan: &Fanotify, ev: &FanotifyEvent, rules: &Rules, shared: &Shared) {
    let Some(fd) = ev.fd() else {
        return; // queue overflow: no permission event carries no fd
    };
    if !ev.check_version() {
        return;
    }
    let deny = decide(fan, ev, fd, rules, shared);
    let r = if deny {
        shared.denied.fetch_add(1, Ordering::Relaxed);
        Response::FAN_DENY
    } else {
        Response::FAN_ALLOW
    };
    shared.answered.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = fan.write_response(FanotifyResponse::new(fd, r)) {
        tracing::debug!("fanotify response: {e}");
    }
}

/// The path of an event's fd, as the agent sees it.
fn fd_path(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_suffix(" (deleted)")
                .map(str::to_string)
                .unwrap_or(s)
        })
        .unwrap_or_default()
}

/// The opener's process and cgroup when rules apply to it (not exempt,
/// inside the scope), as the programs' `governed` decides.
fn governed(shared: &Shared, rules: &Rules, tid: u32) -> Option<(u32, Option<String>)> {
    let o = &shared.opts;
    // A thread that is gone no longer waits for the answer.
    let pid = task::tgid_of(tid)?;
    if pid <= 1 || pid == shared.agent_pid {
        return None;
    }
    let cg = process::cgroup_of(pid);
    if o.scope.is_some() && !cg.as_deref().is_some_and(|c| o.in_scope(c)) {
        return None;
    }
    if cg.as_deref().is_some_and(|c| o.in_agent(c)) {
        return None;
    }
    let exempt_pid = rules
        .exempt_pids
        .get(&pid)
        .is_some_and(|&t| process::start_ticks(pid) == Some(t));
    if task::is_kernel_thread(pid) || exempt_pid {
        return None;
    }
    if rules.has_exempt_binaries && exempt_by_binary(shared, rules, pid) {
        return None;
    }
    Some((pid, cg))
}

/// What the cgroup guard concluded about an open on cgroup2.
enum Guarded {
    /// A governed process leaving the rules: deny (or audit); reported.
    Decided(bool),
    /// Not a membership file or one of the agent's: once no rule names it,
    /// later opens of it need not reach the agent.
    Other,
    /// Left to the rules.
    Harmless,
}

/// An open on the cgroup2 file system: a governed process moving itself
/// or another out of the rules is denied (built-in rule `protect-scope`).
fn decide_cgroup_open(
    guard: &cgroup_guard::CgroupGuard,
    ev: &FanotifyEvent,
    fd: std::os::fd::BorrowedFd<'_>,
    st: &libc::stat,
    rules: &Rules,
    shared: &Shared,
) -> Guarded {
    let o = &shared.opts;
    let Ok(tid) = u32::try_from(ev.pid()) else {
        return Guarded::Harmless;
    };
    // Named as the agent's mount names it, not by the opener's path (a bind
    // mount of cgroup.procs onto another name must not pass for another
    // file). Without a handle the name cannot be trusted (see classify).
    let (path, trusted) = match guard.own_path(fd) {
        Some(p) => (p, true),
        None => (fd_path(fd.as_raw_fd()), false),
    };
    let write = || {
        task::tgid_of(tid)
            .and_then(|pid| task::open_flags(pid, tid))
            .is_none_or(task::flags_write)
    };
    let target = match guard.classify(o, &path, trusted, st, write) {
        cgroup_guard::Open::Other => return Guarded::Other,
        cgroup_guard::Open::Harmless => return Guarded::Harmless,
        cgroup_guard::Open::MoveOut(target) => target,
    };
    let Some((pid, cg)) = governed(shared, rules, tid) else {
        return Guarded::Harmless;
    };
    tracing::debug!(
        pid,
        ?target,
        "governed process writing a cgroup file outside the rules"
    );
    let verdict = if o.enforce {
        Verdict::Deny
    } else {
        Verdict::Audit
    };
    let access = Access {
        open: true,
        write: true,
        exec: false,
    };
    report(
        shared,
        tid,
        pid,
        cg.as_deref(),
        Hook::FileWrite,
        verdict,
        vardr_common::RULE_PROTECT_SCOPE,
        &path,
        access,
    );
    Guarded::Decided(o.enforce)
}

/// Decides one event; reports what matters; returns whether to deny.
fn decide(
    fan: &Fanotify,
    ev: &FanotifyEvent,
    fd: std::os::fd::BorrowedFd<'_>,
    rules: &Rules,
    shared: &Shared,
) -> bool {
    let o = &shared.opts;
    // The object first, from the event's fd only: most events (siblings of
    // a governed file, processes touching what no rule names) stop here,
    // without reading /proc.
    // SAFETY: fstat on the event's fd, valid while `ev` lives, into a zeroed stat.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd.as_raw_fd(), &mut st) == 0).then_some(st)
    };
    let Some(st) = st else {
        return false;
    };
    let mut ignorable = false;
    if let Some(g) = shared.guard.as_ref().filter(|g| g.covers(&st)) {
        match decide_cgroup_open(g, ev, fd, &st, rules, shared) {
            Guarded::Decided(block) => return block,
            Guarded::Other => ignorable = true,
            Guarded::Harmless => {}
        }
    }
    let me = crate::compile::Identity {
        dev: task::kernel_dev(st.st_dev),
        ino: st.st_ino,
    };
    let path = fd_path(fd.as_raw_fd());
    let mut chain = vec![me];
    let mut dir = std::path::Path::new(&path).parent();
    while let Some(d) = dir.filter(|_| chain.len() < vardr_common::MAX_DENTRY_DEPTH as usize) {
        if let Ok(md) = std::fs::metadata(d) {
            chain.push(task::identity(&md));
        }
        dir = d.parent();
    }
    let by_path = if path.starts_with('/') {
        rules.by_path(&path)
    } else {
        Default::default()
    };
    let by_identity = rules.by_identity(&chain);
    let mask = ev.mask();
    let open = mask.contains(MaskFlags::FAN_OPEN_PERM) && o.file;
    let exec = mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) && o.exec;
    let worst = Access {
        open,
        write: open,
        exec,
    };
    if decide::rule_for(&by_path, &by_identity, worst).is_none() {
        if ignorable {
            cgroup_guard::CgroupGuard::ignore(fan, fd);
        }
        return false;
    }
    // Then who opens it.
    let Ok(tid) = u32::try_from(ev.pid()) else {
        return false;
    };
    let Some((pid, cg)) = governed(shared, rules, tid) else {
        return false;
    };
    let access = Access {
        open,
        // Unknown flags (io_uring, openat2, ...) count as a write.
        write: open && task::open_flags(pid, tid).is_none_or(task::flags_write),
        exec,
    };
    let Some((rule, hook)) = decide::rule_for(&by_path, &by_identity, access) else {
        return false;
    };
    let Some((verdict, block)) = decide::verdict(&rule, o.enforce) else {
        return false;
    };
    // Exec matches that let the exec go on are reported by
    // sched_process_exec; only the deny is this path's to report.
    if hook != Hook::Exec || block {
        report(
            shared,
            tid,
            pid,
            cg.as_deref(),
            hook,
            verdict,
            rule.rule_id,
            &path,
            access,
        );
    }
    block
}

/// As the programs decide it: the binary recorded at exec for this very
/// process (same start time) is exempt in the rules in force.
fn exempt_by_binary(shared: &Shared, rules: &Rules, pid: u32) -> bool {
    let Some(map) = shared.exempt_tasks.get() else {
        return false;
    };
    let Ok(t) = map.get(&pid, 0) else {
        return false;
    };
    process::start_ticks(pid) == Some(t.start_ticks)
        && rules.exempt_binary(&crate::compile::Identity {
            dev: t.dev,
            ino: t.ino,
        })
}

#[allow(clippy::too_many_arguments)]
fn report(
    shared: &Shared,
    tid: u32,
    pid: u32,
    cgroup: Option<&str>,
    hook: Hook,
    verdict: Verdict,
    rule_id: u32,
    path: &str,
    access: Access,
) {
    let (uid, gid) = task::ids_of(tid);
    let boot_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    let cgroup_id = cgroup
        .and_then(|c| {
            crate::kernel::cgroup::id(&shared.opts.cgroup_root.join(c.trim_start_matches('/'))).ok()
        })
        .unwrap_or(0);
    let flags = match hook {
        Hook::Exec => 0,
        _ => {
            task::open_flags(pid, tid).unwrap_or(if access.write { libc::O_RDWR as u64 } else { 0 })
        }
    };
    let m = PolicyMatch {
        header: EventHeader {
            kind: EventKind::Policy as u32,
            _pad: 0,
            boot_ns,
            tid,
            pid,
            uid,
            gid,
            cgroup_id,
            comm: task::comm_of(tid),
        },
        hook,
        backend: BackendKind::Fanotify,
        verdict,
        rule_id,
        flags: flags as u32,
        path: Some(path.to_string()),
        remote: None,
        op: vardr_common::Operation::Hook,
    };
    let _ = shared.events.send(m);
}
