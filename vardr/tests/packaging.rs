//! The Debian package, as `cargo xtask deb` builds it (with the profile
//! of this test build, to reuse it: release in `cargo xtask test`): its files, conffiles and maintainer scripts, and
//! the unit checked by `systemd-analyze verify`. Installing, upgrading and
//! removing it under a running systemd is the VM tier's `vm_package`.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::TempDir;

/// The profile this test was built with: its binary is already there.
const PROFILE: &str = if cfg!(debug_assertions) {
    "dev"
} else {
    "release"
};

const TEST: &str = "deb_package_has_binary_unit_conffiles_docs_and_scripts";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn stdout(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn deb_package_has_binary_unit_conffiles_docs_and_scripts() {
    if !available("cargo-deb", "--version") || !available("dpkg-deb", "--version") {
        eprintln!("SKIPPED {TEST}: cargo-deb or dpkg-deb not installed (scripts/setup.sh deb)");
        return;
    }
    let tmp = TempDir::new("deb");
    let out = stdout(
        Command::new("cargo")
            .current_dir(workspace())
            .args(["xtask", "deb", "--profile", PROFILE, "--output"])
            .arg(tmp.0.join("out")),
    );
    let deb = PathBuf::from(out.lines().last().expect("the package's path").trim());
    assert!(deb.is_file(), "{}", deb.display());
    assert!(
        deb.starts_with(tmp.0.join("out")),
        "{} not in --output",
        deb.display()
    );

    // Files.
    let files = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let unit_path = if files.contains("./usr/lib/systemd/system/vardr.service") {
        "usr/lib/systemd/system/vardr.service"
    } else {
        "lib/systemd/system/vardr.service"
    };
    for f in [
        "./usr/bin/vardr",
        "./etc/vardr/policy.yaml",
        "./etc/vardr/vardr.env",
        "./usr/share/man/man1/vardr.1.gz",
        "./usr/share/man/man1/vardr-agent.1.gz",
        "./usr/share/man/man1/vardr-policy-apply.1.gz",
        "./usr/share/bash-completion/completions/vardr",
        "./usr/share/zsh/vendor-completions/_vardr",
        "./usr/share/fish/vendor_completions.d/vardr.fish",
        "./usr/share/doc/vardr/README.md",
        "./usr/share/doc/vardr/examples/layer2.cedar",
        "./usr/share/doc/vardr/examples/tetragon/file-open-block.yaml",
    ] {
        assert!(files.contains(f), "{f} missing from the package:\n{files}");
    }
    assert!(files.contains(unit_path), "no unit:\n{files}");
    assert!(
        !files.contains("man1/vardr-generate"),
        "the hidden generate command has no man page"
    );

    // Control: conffiles and maintainer scripts.
    let ctrl = tmp.0.join("DEBIAN");
    stdout(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    let read = |name: &str| {
        std::fs::read_to_string(ctrl.join(name)).unwrap_or_else(|e| panic!("DEBIAN/{name}: {e}"))
    };
    let conffiles = read("conffiles");
    assert!(conffiles.contains("/etc/vardr/policy.yaml"), "{conffiles}");
    assert!(conffiles.contains("/etc/vardr/vardr.env"), "{conffiles}");
    let control = read("control");
    assert!(control.contains("Package: vardr"), "{control}");
    assert!(control.contains("Section: admin"), "{control}");
    let postinst = read("postinst");
    assert!(
        postinst.contains("deb-systemd-helper") && postinst.contains("enable"),
        "install enables the unit:\n{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-invoke") && postinst.contains("start"),
        "install starts the unit:\n{postinst}"
    );
    assert!(
        postinst.contains("restart"),
        "upgrade restarts the unit:\n{postinst}"
    );
    let prerm = read("prerm");
    assert!(prerm.contains("stop"), "removal stops the unit:\n{prerm}");
    assert!(
        prerm.contains("vardr unpin --help") && prerm.contains("/usr/bin/vardr unpin"),
        "removal removes pins, guarded:\n{prerm}"
    );
    let postrm = read("postrm");
    assert!(
        postrm.contains("purge") && postrm.contains("rm -rf /etc/vardr /var/log/vardr"),
        "purge removes the configuration:\n{postrm}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        stdout(Command::new("sh").arg("-n").arg(ctrl.join(script)));
    }

    // Contents: the shipped default policy, man pages, a working binary.
    let root = tmp.0.join("root");
    stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert_eq!(
        std::fs::read(root.join("etc/vardr/policy.yaml")).expect("policy"),
        std::fs::read(workspace().join("policies/default.yaml")).expect("default policy")
    );
    let version = stdout(Command::new(root.join("usr/bin/vardr")).arg("--version"));
    assert!(version.starts_with("vardr "), "{version}");
    let page = stdout(Command::new("zcat").arg(root.join("usr/share/man/man1/vardr-agent.1.gz")));
    assert!(
        page.contains(".TH") && page.contains("enforce"),
        "man page:\n{page}"
    );
    let env = std::fs::read_to_string(root.join("etc/vardr/vardr.env")).expect("env file");
    assert!(
        env.lines()
            .any(|l| l.starts_with("VARDR_AGENT_ARGS=") && !l.contains("--enforce")),
        "the package starts in audit mode:\n{env}"
    );

    // The unit: systemd accepts every directive. The binary it runs is the
    // extracted one (it is not installed on this machine).
    if !available("systemd-analyze", "--version") {
        eprintln!("note: systemd-analyze not installed; unit not verified");
        return;
    }
    let unit = std::fs::read_to_string(root.join(unit_path)).expect("unit");
    assert!(unit.contains("Type=notify"), "{unit}");
    let bin = root.join("usr/bin/vardr");
    let checked = tmp.0.join("vardr.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/bin/vardr", &bin.display().to_string()),
    )
    .expect("write unit");
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&checked)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {}\n{err}",
        o.status
    );
}
