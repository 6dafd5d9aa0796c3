//! The AppArmor peer of the syscall benchmark: a profile that denies the
//! open of the file and the exec of the binary the 10-rule policy denies,
//! and allows everything else, what an AppArmor user writes for the same
//! paths. The workload enters it at its exec (`/proc/self/attr/apparmor/exec`),
//! so no other process of the machine is confined; the profile is removed
//! when the peer drops. AppArmor mediates paths but not connect addresses
//! (upstream kernels), so the connect column measures only the profile's
//! presence.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Where `scripts/setup.sh vm` unpacks Debian's `apparmor` package: its
/// parser, without installing the package (whose service would load the
/// distribution's profiles into the kernel it runs on). Under /opt, which
/// the VM guests see (their /var/cache is a tmpfs).
const UNPACKED_PARSERS: [&str; 2] = [
    "/opt/vardr-apparmor/root/sbin/apparmor_parser",
    "/opt/vardr-apparmor/root/usr/sbin/apparmor_parser",
];

pub struct AppArmorPeer {
    parser: PathBuf,
    profile: PathBuf,
    name: String,
}

impl AppArmorPeer {
    /// Loads the profile and shows that it denies the open of `file` and
    /// the exec of `binary` from `cgroup` while it allows `allowed`; the
    /// reason when it cannot run here.
    pub fn prepare(
        dir: &Path,
        file: &Path,
        binary: &Path,
        allowed: &Path,
        cgroup: &Path,
    ) -> Result<Self, String> {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|e| e.trim() == "Y");
        if !enabled {
            return Err(
                "this kernel runs without AppArmor (the VM boots have it: cargo xtask bench syscalls --vm)"
                    .into(),
            );
        }
        if !Path::new("/sys/kernel/security/apparmor/.load").exists() {
            return Err("AppArmor's securityfs interface is not mounted".into());
        }
        let parser = find_parser().ok_or(
            "apparmor_parser not found (cargo xtask setup --vm unpacks it under /opt/vardr-apparmor)",
        )?;
        remove_stale_profiles();
        let name = format!("vardr-bench-{}", std::process::id());
        let profile = dir.join("apparmor.profile");
        let quoted = |p: &Path| format!("\"{}\"", p.display());
        std::fs::write(
            &profile,
            format!(
                "profile {name} {{\n  file,\n  network,\n  capability,\n  signal,\n  ptrace,\n  unix,\n  \
                 deny {} rw,\n  deny {} x,\n}}\n",
                quoted(file),
                quoted(binary)
            ),
        )
        .map_err(|e| e.to_string())?;
        parse(&parser, "--replace", &profile)?;
        let peer = Self {
            parser,
            profile,
            name,
        };
        // It must enforce before it is measured, and let the workload's
        // own open through.
        let try_cmd = |what: &str| {
            Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && {}exec {what}",
                    cgroup.display(),
                    peer.exec_prefix()
                ))
                .output()
                .map_err(|e| e.to_string())
        };
        let denied_open = try_cmd(&format!("cat {}", file.display()))?;
        // A confined process's exec is what the profile judges (the exec
        // that enters it is judged by the caller's).
        let denied_exec = try_cmd(&format!("/bin/sh -c '{}'", binary.display()))?;
        let allowed_open = try_cmd(&format!("cat {}", allowed.display()))?;
        let refused = |o: &std::process::Output| {
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied")
        };
        if !refused(&denied_open) || !refused(&denied_exec) || !allowed_open.status.success() {
            return Err(format!(
                "the AppArmor profile did not deny as written (open: {}, exec: {}, allowed open: {})",
                denied_open.status, denied_exec.status, allowed_open.status
            ));
        }
        Ok(peer)
    }

    /// Shell that confines what the next `exec` starts.
    pub fn exec_prefix(&self) -> String {
        format!(
            "echo 'exec {}' > /proc/self/attr/apparmor/exec && ",
            self.name
        )
    }
}

impl Drop for AppArmorPeer {
    fn drop(&mut self) {
        if let Err(e) = parse(&self.parser, "--remove", &self.profile) {
            eprintln!("removing the benchmark's AppArmor profile: {e}");
        }
    }
}

/// Profiles of earlier runs that were stopped before removing theirs
/// (their names carry the pid of a run no longer there).
fn remove_stale_profiles() {
    let Ok(list) = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles") else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix("vardr-bench-")
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::write("/sys/kernel/security/apparmor/.remove", name);
        }
    }
}

fn find_parser() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("apparmor_parser"))
                .find(|p| p.is_file())
        })
        .or_else(|| {
            UNPACKED_PARSERS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
}

/// `apparmor_parser <op>` on the profile file; no cache, and no
/// configuration file (the package is not installed).
fn parse(parser: &Path, op: &str, profile: &Path) -> Result<(), String> {
    let out = Command::new(parser)
        .args(["--config-file=/dev/null", op, "--skip-cache"])
        .arg(profile)
        .output()
        .map_err(|e| format!("{}: {e}", parser.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apparmor_parser {op}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
