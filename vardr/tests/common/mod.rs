//! Helpers shared by the kernel-tier tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Returns false (after printing why) when the test cannot run here.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root to load BPF programs");
    false
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vardr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `argv` through `sh -c` after moving the shell into `cgroup`
/// (so the command runs inside it from its first instruction).
pub fn run_in_cgroup(cgroup: &Path, argv: &str) -> std::process::Output {
    let script = format!("echo $$ > {}/cgroup.procs && exec {argv}", cgroup.display());
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("spawn sh")
}
