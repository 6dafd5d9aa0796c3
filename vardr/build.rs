//! Builds the BPF programs of `vardr-ebpf` with the nightly toolchain and
//! bpf-linker (`scripts/setup.sh build` installs both) into OUT_DIR, and
//! generates the gRPC API code from `proto/`.
//!
//! The BPF build is what aya-build 0.2 does (nightly cargo, `-Z
//! build-std=core`, BTF, `bpf_target_arch` cfg), with one difference: the
//! inner cargo's output is kept, not relayed line by line as
//! `cargo:warning` (a wall of "Compiling ..." warnings on every build). A
//! successful build shows only the BPF crate's own compiler warnings; a
//! failed one prints everything the inner cargo said.
use std::{
    ffi::OsString,
    io::{BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _};
use cargo_metadata::{diagnostic::DiagnosticLevel, Message};

/// Tetragon's API (`proto/tetragon/`, vendored unchanged): message types
/// with protobuf's JSON mapping (pbjson, unknown fields ignored, as
/// Tetragon's consumers decode) and the `FineGuidanceSensors` service.
fn tetragon_api() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let descriptors = out.join("tetragon_descriptors.bin");
    let include = protoc_bin_vendored::include_path().context("vendored protoc includes")?;
    let files = [PathBuf::from("../proto/tetragon/sensors.proto")];
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .build_client(true)
        .build_server(true)
        // Methods vardr does not serve answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_protos(&files, &[PathBuf::from("../proto"), include])
        .context("compiling proto/tetragon")?;
    let set = std::fs::read(&descriptors).context("reading the Tetragon descriptor set")?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)
        .context("registering the Tetragon descriptors")?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".tetragon"])
        .context("generating Tetragon's JSON mapping")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // gRPC API: protoc comes from a crate, so nothing needs installing.
    let protoc = protoc_bin_vendored::protoc_bin_path().context("vendored protoc")?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .compile_protos(&["../proto/vardr/v1/events.proto"], &["../proto"])
        .context("compiling proto/vardr/v1/events.proto")?;
    tetragon_api()?;

    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "vardr-ebpf")
        .ok_or_else(|| anyhow!("vardr-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("vardr-ebpf manifest has no parent"))?;
    build_ebpf(ebpf.name.as_str(), root_dir.as_std_path())
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set"))
}

/// `cargo +nightly build` of the BPF crate's binaries, copied to OUT_DIR.
fn build_ebpf(name: &str, root_dir: &Path) -> anyhow::Result<()> {
    // The build script depends on the BPF crate's library through the
    // build-dependency; this covers its binaries too.
    println!("cargo:rerun-if-changed={}", root_dir.display());
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let target = match env("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        "little" => "bpfel-unknown-none",
        other => bail!("unsupported endian {other}"),
    };
    let arch = env("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64".to_string()
    } else {
        arch
    };

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", name])
        .args(["--bins", "--message-format=json", "--release"])
        .args(["--target", target, "-Z", "build-std=core"])
        // Apart from OUT_DIR's files: cargo flocks its own target dir.
        .arg("--target-dir")
        .arg(out_dir.join("aya-build/target").join(name));
    let rustflags: OsString = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f")
    .into();
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer build's compiler is the stable one: let rustup pick.
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");

    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?} (is rustup installed? scripts/setup.sh build)"))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut executables = Vec::new();
    let mut messages = Vec::new();
    for message in Message::parse_stream(stdout) {
        match message.context("the BPF build's cargo wrote invalid JSON")? {
            Message::CompilerArtifact(a) => {
                if let Some(exe) = a.executable {
                    executables.push((a.target.name, exe.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(m) => {
                let rendered = m.message.rendered.unwrap_or_default();
                if m.message.level == DiagnosticLevel::Warning {
                    // The BPF crate's own warnings: worth seeing.
                    for line in rendered.lines() {
                        println!("cargo:warning=vardr-ebpf: {line}");
                    }
                }
                messages.push(rendered);
            }
            Message::TextLine(line) => messages.push(line),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the BPF build")?;
    let stderr = stderr
        .join()
        .map_err(|_| anyhow!("reading the BPF build's output failed"))?;
    if !status.success() {
        // Shown by cargo when the build script fails.
        eprintln!("{}", messages.join("\n"));
        eprintln!("{stderr}");
        bail!("building the BPF programs failed ({status}): {cmd:?}");
    }
    for (name, exe) in executables {
        let dst = out_dir.join(&name);
        std::fs::copy(&exe, &dst)
            .with_context(|| format!("copy {} to {}", exe.display(), dst.display()))?;
    }
    Ok(())
}
