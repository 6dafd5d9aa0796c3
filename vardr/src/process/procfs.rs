//! Reading processes from /proc: the cache's seed, and the details an exec
//! event does not carry (cwd, cgroup path).
use std::time::SystemTime;

use crate::events::Clock;

pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub auid: Option<u32>,
    pub binary: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub start_time: SystemTime,
    /// Boot-clock ns, at clock-tick resolution.
    pub start_boot_ns: u64,
    pub cgroup_id: u64,
    pub cgroup: String,
    pub creds: Option<crate::events::Creds>,
}

fn read(pid: u32, what: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{what}")).ok()
}

fn link(pid: u32, what: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/{what}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// When a process started (`/proc/PID/stat` field 22), in boot-clock ns.
#[cfg(test)]
pub fn start_boot_ns(pid: u32) -> Option<u64> {
    let stat = read(pid, "stat")?;
    let rest = stat.rsplit_once(')')?.1;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks.saturating_mul(super::tick_ns()))
}

pub fn cwd_of(pid: u32) -> Option<String> {
    link(pid, "cwd")
}

/// cgroup v2 path of a process (the `0::` line).
pub fn cgroup_of(pid: u32) -> Option<String> {
    read(pid, "cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// A container id (64 hex digits) in a cgroup path, as container runtimes
/// name their cgroups (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `/docker/<id>`, `crio-<id>`, ...).
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.split('/').rev().find_map(|seg| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = seg.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// The four ids of a `Uid:` or `Gid:` line: real, effective, saved, fs.
fn status_all(status: &str, key: &str) -> Option<[u32; 4]> {
    let mut it = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .map(|v| v.parse::<u32>().ok());
    Some([it.next()??, it.next()??, it.next()??, it.next()??])
}

/// Credentials from `/proc/PID/status`.
fn creds(status: &str) -> Option<crate::events::Creds> {
    let [uid, euid, suid, fsuid] = status_all(status, "Uid:")?;
    let [gid, egid, sgid, fsgid] = status_all(status, "Gid:")?;
    Some(crate::events::Creds {
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
    })
}

/// Start time of a process in clock ticks since boot (`/proc/PID/stat`
/// field 22): with the pid, it names one process, never a later one that
/// reuses the pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = read(pid, "stat")?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every process in /proc (kernel threads included; they have no binary).
pub fn scan(clock: &Clock) -> Vec<ProcEntry> {
    let tick = super::tick_ns();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = read(pid, "stat") else {
            continue;
        };
        // Fields after the parenthesized comm, which may contain spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state): ppid is field 4, starttime field 22.
        let ppid = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        let start_ticks: u64 = f.get(19).and_then(|v| v.parse().ok()).unwrap_or(0);
        let boot_ns = start_ticks.saturating_mul(tick);
        let status = read(pid, "status").unwrap_or_default();
        let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let cgroup = cgroup_of(pid).unwrap_or_default();
        let cgroup_id = crate::kernel::cgroup::root()
            .ok()
            .and_then(|r| crate::kernel::cgroup::id(&r.join(cgroup.trim_start_matches('/'))).ok())
            .unwrap_or(0);
        out.push(ProcEntry {
            pid,
            ppid,
            // Real ids, as the exec event's header has them (the
            // effective ones are in the credentials).
            uid: status_all(&status, "Uid:").map_or(0, |ids| ids[0]),
            gid: status_all(&status, "Gid:").map_or(0, |ids| ids[0]),
            auid: read(pid, "loginuid")
                .and_then(|s| s.trim().parse().ok())
                .filter(|&a| a != u32::MAX),
            binary: link(pid, "exe").unwrap_or_default(),
            argv,
            cwd: cwd_of(pid).unwrap_or_default(),
            start_time: clock.wall(boot_ns),
            start_boot_ns: boot_ns,
            cgroup_id,
            cgroup,
            creds: creds(&status),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_runtime_cgroup_names() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
            )),
            Some(id.clone())
        );
        assert_eq!(container_id(&format!("/docker/{id}")), Some(id.clone()));
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
    }

    #[test]
    fn scan_finds_this_process_with_its_parent() {
        let clock = Clock::now();
        let me = std::process::id();
        let procs = scan(&clock);
        let p = procs.iter().find(|p| p.pid == me).expect("self in /proc");
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(!p.binary.is_empty());
        assert!(p.start_time <= SystemTime::now());
        assert!(start_ticks(std::process::id()).is_some_and(|t| t > 0));
        let c = p.creds.expect("credentials");
        // SAFETY: getters without preconditions.
        let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
        assert_eq!((c.uid, c.euid), (uid, euid));
        assert_eq!(p.uid, uid, "the real uid, as exec events have it");
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
