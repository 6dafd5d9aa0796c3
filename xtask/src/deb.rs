//! `cargo xtask deb`: the Debian package, built with cargo-deb from the
//! metadata in vardr/Cargo.toml, with man pages and shell completions
//! generated from the CLI definition (`vardr generate`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run::{cargo, status};

#[derive(clap::Args)]
pub struct DebArgs {
    /// Cargo profile of the packaged binary (dev is faster to build; the
    /// packaging test uses it).
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Directory for the .deb (default target/debian).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Debian revision (the part after the version's dash): a higher one
    /// makes an upgrade of the same version.
    #[arg(long)]
    pub revision: Option<String>,
}

fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "release" | "bench" => "release",
        other => other,
    }
}

/// Man pages (gzipped, as Debian wants them) and completions into
/// target/<profile>/packaging, where vardr/Cargo.toml's assets take them
/// from.
fn generate(vardr: &Path, out: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(out);
    let man = out.join("man");
    status(Command::new(vardr).arg("generate").arg("man").arg(&man))?;
    status(
        Command::new(vardr)
            .arg("generate")
            .arg("completions")
            .arg(out.join("completions")),
    )?;
    for page in fs::read_dir(&man)? {
        status(Command::new("gzip").arg("-9nf").arg(page?.path()))?;
    }
    Ok(())
}

/// Builds the package; returns its path.
pub fn build(args: &DebArgs) -> Result<PathBuf> {
    let root = crate::workspace_root();
    status(cargo().args(["build", "-p", "vardr", "--profile", &args.profile]))?;
    let bin_dir = root.join("target").join(profile_dir(&args.profile));
    generate(&bin_dir.join("vardr"), &bin_dir.join("packaging"))?;
    let out_dir = args
        .output
        .clone()
        .unwrap_or_else(|| root.join("target/debian"));
    fs::create_dir_all(&out_dir)?;
    let mut cmd = cargo();
    cmd.args([
        "deb",
        "-p",
        "vardr",
        "--no-build",
        "--profile",
        &args.profile,
    ])
    .arg("--output")
    .arg(&out_dir);
    if let Some(r) = &args.revision {
        cmd.args(["--deb-revision", r]);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("spawn {cmd:?} (is cargo-deb installed? scripts/setup.sh deb)"))?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", out.status);
    }
    // cargo-deb prints the package's path last.
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not name the package it built")?;
    Ok(path)
}
