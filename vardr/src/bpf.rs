//! The BPF objects built from `vardr-ebpf` and embedded in the binary.
use aya::{Ebpf, EbpfError, EbpfLoader};
use vardr_common::KernelOffsets;

/// Agent programs and maps (exec tracking, enforcement hooks).
pub static AGENT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr"));
/// One trivial program per program type, for `vardr probe`.
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vardr-probe"));

/// Program names in [`AGENT_OBJECT`].
pub mod progs {
    pub const EXEC: &str = "vardr_exec";
    pub const LSM_FILE_OPEN: &str = "vardr_file_open";
}

/// Map names in [`AGENT_OBJECT`].
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const FILE_RULES: &str = "FILE_RULES";
}

/// Loads the agent object (maps created, programs not yet loaded) with the
/// kernel struct offsets the programs need.
pub fn load_agent(offsets: &KernelOffsets) -> Result<Ebpf, EbpfError> {
    EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .load(AGENT_OBJECT)
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
pub fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {e}");
    }
}
