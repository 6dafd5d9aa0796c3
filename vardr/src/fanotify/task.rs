//! What the agent learns about the thread behind a permission event, from
//! /proc: its process, cgroup, executable, and the open's write intent.
use std::os::unix::fs::MetadataExt;

use crate::compile::Identity;

const PF_KTHREAD: u64 = 0x0020_0000;

/// `MAJOR << 20 | MINOR`: the kernel-internal device number rules use.
pub fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

/// Identity of a `stat` result.
pub fn identity(md: &std::fs::Metadata) -> Identity {
    Identity {
        dev: kernel_dev(md.dev()),
        ino: md.ino(),
    }
}

/// The thread group (process) of thread `tid`, from `/proc/TID/status`.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Real uid and gid of a thread.
pub fn ids_of(tid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in `/proc/PID/stat`).
pub fn is_kernel_thread(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields follow the last ')' (the command may hold spaces and parens);
    // flags is the 9th field, the 7th after the command.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// The command name of a thread, as the kernel's `comm`.
pub fn comm_of(tid: u32) -> [u8; vardr_common::COMM_LEN] {
    let mut out = [0u8; vardr_common::COMM_LEN];
    if let Ok(c) = std::fs::read_to_string(format!("/proc/{tid}/comm")) {
        let c = c.trim_end_matches('\n').as_bytes();
        let n = c.len().min(out.len() - 1);
        out[..n].copy_from_slice(&c[..n]);
    }
    out
}

/// x86_64 syscall numbers whose open flags sit in a register.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const OPEN: u64 = 2;
    pub const CREAT: u64 = 85;
    pub const OPENAT: u64 = 257;
    pub const OPEN_BY_HANDLE_AT: u64 = 304;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
}

/// Whether open flags ask for write access, creation, truncation or append.
pub fn flags_write(flags: u64) -> bool {
    let f = flags as i32;
    f & (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) != 0
}

/// Open flags of the syscall thread `tid` is blocked in, from
/// `/proc/PID/task/TID/syscall` (the registers saved at syscall entry,
/// which the process cannot change while the thread waits). `None` when
/// the flags are not in a register: io_uring, `openat2` (its flags sit in
/// user memory another thread could rewrite), an open made by the kernel
/// for some other syscall, or another architecture. Callers treat `None`
/// as a possible write (fail closed).
pub fn open_flags(pid: u32, tid: u32) -> Option<u64> {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    flags_once_blocked(
        || std::fs::read_to_string(&path).ok(),
        || std::thread::sleep(std::time::Duration::from_micros(50)),
    )
}

/// Reads of `/proc/PID/task/TID/syscall` until the thread is asleep. The
/// kernel reports "running" for a thread not yet asleep: one that queued
/// its permission event and was preempted (or still runs on another CPU)
/// on its way to wait for the answer. It gets there soon, since its open
/// waits for the agent; read as a write meanwhile, a read-only open of a
/// write-governed file (a cgroup's `cgroup.procs`) was refused. ~10 ms at
/// most, then `None` (fail closed).
fn flags_once_blocked(
    mut read: impl FnMut() -> Option<String>,
    mut pause: impl FnMut(),
) -> Option<u64> {
    for attempt in 0..200 {
        let text = read()?;
        if text.trim() != "running" {
            return parse_syscall(&text);
        }
        if attempt < 20 {
            std::thread::yield_now();
        } else {
            pause();
        }
    }
    None
}

/// Open flags from the text of `/proc/PID/task/TID/syscall`.
pub fn parse_syscall(text: &str) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = text.split_whitespace();
        let nr: u64 = f.next()?.parse().ok()?;
        let args: Vec<u64> = f
            .take(6)
            .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .collect();
        let arg = |i: usize| args.get(i).copied();
        match nr {
            nr::OPEN => arg(1),
            nr::OPENAT | nr::OPEN_BY_HANDLE_AT => arg(2),
            nr::CREAT => Some((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
            // The kernel opens the binary (and its ELF interpreter) to run it.
            nr::EXECVE | nr::EXECVEAT => Some(libc::O_RDONLY as u64),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = text;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_from_the_syscall_registers() {
        // openat(AT_FDCWD, name, O_WRONLY|O_CREAT, 0644)
        let t = "257 0xffffffffffffff9c 0x7ffd1234 0x41 0x1a4 0x0 0x0 0x7ffd0000 0x7f0000";
        assert_eq!(parse_syscall(t), Some(0x41));
        assert!(flags_write(0x41));
        assert_eq!(
            parse_syscall("2 0x7ffd1234 0x0 0x0 0x0 0x0 0x0 0x1 0x2"),
            Some(0)
        );
        assert!(!flags_write(0));
        // io_uring_enter, openat2, "running": unknown.
        assert_eq!(parse_syscall("426 0x3 0x1 0x0 0x1 0x0 0x0 0x1 0x2"), None);
        assert_eq!(parse_syscall("437 0x3 0x1 0x0 0x18 0x0 0x0 0x1 0x2"), None);
        assert_eq!(parse_syscall("running"), None);
        assert!(flags_write(
            parse_syscall("85 0x1 0x1a4 0 0 0 0 0x1 0x2").unwrap()
        ));
    }

    #[test]
    fn a_thread_not_yet_asleep_is_read_again() {
        let mut texts = vec!["257 0xffffffffffffff9c 0x7ffd1234 0x0 0x0 0x0 0x0 0x1 0x2"];
        texts.extend(["running\n"; 30]);
        let mut reads = 0;
        let flags = flags_once_blocked(
            || {
                reads += 1;
                texts.pop().map(str::to_string)
            },
            || {},
        );
        assert_eq!(flags, Some(0), "a read-only openat once asleep");
        assert_eq!(reads, 31);
        // Never asleep: unknown (the caller fails closed).
        assert_eq!(flags_once_blocked(|| Some("running".into()), || {}), None);
        // The thread is gone: unknown.
        assert_eq!(flags_once_blocked(|| None, || {}), None);
    }

    #[test]
    fn this_process_is_not_a_kernel_thread_but_kthreadd_is() {
        assert!(!is_kernel_thread(std::process::id()));
        assert_eq!(tgid_of(std::process::id()), Some(std::process::id()));
        // kthreadd is pid 2 in the initial pid namespace.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(is_kernel_thread(2));
        }
    }
}
