//! Builds the BPF programs of `vardr-ebpf` with the nightly toolchain and
//! bpf-linker (`scripts/setup.sh build` installs both) into OUT_DIR, and
//! generates the gRPC API code from `proto/`.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // gRPC API: protoc comes from a crate, so nothing needs installing.
    let protoc = protoc_bin_vendored::protoc_bin_path().context("vendored protoc")?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .compile_protos(&["../proto/vardr/v1/events.proto"], &["../proto"])
        .context("compiling proto/vardr/v1/events.proto")?;

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
        .ok_or_else(|| anyhow!("vardr-ebpf manifest has no parent"))?
        .as_str();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
