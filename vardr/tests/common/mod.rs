//! Helpers shared by the kernel-tier tests.
#![allow(dead_code)]

pub mod agent;
pub mod hooks;
pub mod hooks_lsm;
pub mod hooks_namespaced;
pub mod hooks_process;
pub mod hooks_skb;
pub mod names;
pub mod persist;
pub mod scenarios;
pub mod tetragon;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use vardr::{
    kernel::cgroup::{self, OwnedCgroup},
    probe::{self, Backend, HookKind},
};

/// Tests that each run an agent seeing every exec on the host take turns
/// (within one test binary): one test's exec storm must not rotate another's
/// export file or skew its counts.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Returns false (after printing why) when the test cannot run here.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root to load BPF programs");
    false
}

/// Whether `backend` can serve every hook here; prints the skip reason if not.
/// `VARDR_EXPECT_BACKEND` (set by the VM runner) turns a skip of the
/// expected backend into a failure.
pub fn require_backend(test: &str, backend: Backend) -> bool {
    if !require_root(test) {
        return false;
    }
    let report = probe::run();
    let plan = vardr::backend::Plan::from_probe(
        &report,
        match backend {
            Backend::Lsm => vardr::backend::BackendChoice::Lsm,
            Backend::Fallback => vardr::backend::BackendChoice::Fallback,
            _ => vardr::backend::BackendChoice::Audit,
        },
    );
    match plan {
        Ok(_) => true,
        Err(e) => {
            let expected = std::env::var("VARDR_EXPECT_BACKEND").ok();
            let name = if backend == Backend::Lsm {
                "lsm"
            } else {
                "fallback"
            };
            assert_ne!(
                expected.as_deref(),
                Some(name),
                "{test}: {name} expected here: {e}"
            );
            let _ = report.backend(HookKind::File);
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vardr-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh cgroup for one test, removed on drop.
pub fn test_cgroup(tag: &str) -> OwnedCgroup {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = cgroup::root().expect("cgroup v2 mounted");
    OwnedCgroup::create(
        &root,
        &format!("vardr-test-{tag}-{}-{n}", std::process::id()),
    )
    .expect("create test cgroup")
}

/// Runs `script` with `sh -c` after moving the shell into `cgroup`, so the
/// command is governed from its first instruction.
pub fn sh_in(cgroup: &Path, script: &str) -> Output {
    let script = format!("echo $$ > {}/cgroup.procs && {script}", cgroup.display());
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("spawn sh")
}

/// Runs `script` with `sh -c` outside any test cgroup.
pub fn sh(script: &str) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("spawn sh")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Killed by SIGKILL (the fallback's way of denying).
pub fn killed(o: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(9) || o.status.code() == Some(137)
}
