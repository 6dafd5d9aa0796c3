//! The identity (device, inode) the kernel hooks see for a file, asked of
//! the kernel itself.
//!
//! `stat` tells it for most files, not for files of an overlay: the hooks
//! know those by their real file (`vardr-ebpf/src/identity.rs`), whose
//! device `stat` does not report. So the agent opens such files and runs a
//! `task_file` iterator that computes, with the hooks' own code, the
//! identity of each of its open descriptors.
use std::{
    collections::HashMap,
    io::Read as _,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
    sync::Mutex,
};

use aya::{programs::Iter, Ebpf, EbpfLoader};
use nix::{fcntl::OFlag, sys::stat::Mode};

const PROGRAM: &str = "vardr_identity_fds";
/// Descriptors opened per iterator run.
const CHUNK: usize = 256;
/// One record of the iterator: fd, device, inode (u64 each).
const RECORD: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Btf(#[from] super::btf::BtfError),
    #[error("loading the identity iterator: {0}")]
    Load(String),
    #[error("running the identity iterator: {0}")]
    Run(String),
    #[error("reading the identity iterator: {0}")]
    Read(#[from] std::io::Error),
}

/// The loaded iterator.
pub struct KernelIdentity {
    ebpf: Ebpf,
}

/// The iterator of this process, loaded on first use and kept: a reload's
/// compile reuses it (a load reads the kernel's BTF and verifies the
/// program again, most of a small reload's time under emulation).
static SHARED: Mutex<Option<KernelIdentity>> = Mutex::new(None);

/// Runs `f` with this process's iterator, loading it first if needed.
pub fn with_shared<T>(f: impl FnOnce(&mut KernelIdentity) -> T) -> Result<T, IdentityError> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    match &mut *shared {
        Some(k) => Ok(f(k)),
        None => {
            let mut k = KernelIdentity::load()?;
            let out = f(&mut k);
            *shared = Some(k);
            Ok(out)
        }
    }
}

impl KernelIdentity {
    /// Loads the iterator (root, kernel BTF, BPF iterators: Linux 5.8+).
    pub fn load() -> Result<Self, IdentityError> {
        let t = std::time::Instant::now();
        let offsets = super::btf::kernel_offsets()?;
        let offsets_ms = t.elapsed().as_millis() as u64;
        crate::bpf::raise_memlock_limit();
        let me = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("TARGET_TGID", &me, true)
            .load(crate::bpf::IDENTITY_OBJECT)
            .map_err(|e| IdentityError::Load(e.to_string()))?;
        let object_ms = t.elapsed().as_millis() as u64;
        let btf = super::btf::shared_aya_btf().map_err(|e| IdentityError::Load(e.to_string()))?;
        let btf_ms = t.elapsed().as_millis() as u64;
        program(&mut ebpf)?
            .load("task_file", &btf)
            .map_err(|e| IdentityError::Load(e.to_string()))?;
        tracing::debug!(
            offsets_ms,
            object_ms,
            btf_ms,
            total_ms = t.elapsed().as_millis() as u64,
            "identity iterator loaded"
        );
        Ok(Self { ebpf })
    }

    /// The hooks' identity of each path (symlinks followed, as `stat`
    /// does); `None` for a path that cannot be opened.
    pub fn resolve(&mut self, paths: &[&Path]) -> Result<Vec<Option<(u32, u64)>>, IdentityError> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(CHUNK) {
            let fds: Vec<Option<OwnedFd>> = chunk
                .iter()
                .map(|p| nix::fcntl::open(*p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok())
                .collect();
            let seen = self.run()?;
            out.extend(fds.iter().map(|fd| {
                fd.as_ref()
                    .and_then(|fd| u32::try_from(fd.as_raw_fd()).ok())
                    .and_then(|fd| seen.get(&fd).copied())
            }));
        }
        Ok(out)
    }

    /// One pass of the iterator over this process's descriptors.
    fn run(&mut self) -> Result<HashMap<u32, (u32, u64)>, IdentityError> {
        let run = |e: aya::programs::ProgramError| IdentityError::Run(e.to_string());
        let prog = program(&mut self.ebpf)?;
        let id = prog.attach().map_err(run)?;
        let link = prog.take_link(id).map_err(run)?;
        let mut file = link
            .into_file()
            .map_err(|e| IdentityError::Run(e.to_string()))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let word = |b: &[u8]| b.try_into().map(u64::from_ne_bytes).unwrap_or(u64::MAX);
        Ok(buf
            .chunks_exact(RECORD)
            .filter_map(|r| {
                let fd = u32::try_from(word(&r[0..8])).ok()?;
                let dev = u32::try_from(word(&r[8..16])).ok()?;
                Some((fd, (dev, word(&r[16..24]))))
            })
            .collect())
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Iter, IdentityError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| IdentityError::Load(format!("no program {PROGRAM}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| IdentityError::Load(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// On a plain file system the hooks' identity is `stat`'s.
    #[test]
    fn plain_files_are_known_by_stat() {
        if !crate::kernel::is_root() || !super::super::btf::available() {
            eprintln!("skipped: the identity iterator needs root and kernel BTF");
            return;
        }
        let mut k = match KernelIdentity::load() {
            Ok(k) => k,
            Err(e) => panic!("the identity iterator does not load: {e}"),
        };
        let dir = std::env::temp_dir().join(format!("vardr-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("f");
        std::fs::write(&file, b"x").expect("write");
        let missing = dir.join("missing");
        let got = k.resolve(&[&file, &missing, &dir]).expect("resolve");
        let md = std::fs::metadata(&file).expect("stat");
        let (maj, min) = (libc::major(md.dev()), libc::minor(md.dev()));
        let dev = (maj << 20) | (min & 0xfffff);
        // A plain file system (not an overlay): stat's device unless the
        // mount's superblock differs (btrfs subvolumes).
        let (kdev, kino) = got[0].expect("the file is seen");
        assert_eq!(kino, md.ino());
        let sb = crate::kernel::mounts::sb_dev_in(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            &std::fs::canonicalize(&file).expect("canonical"),
        );
        assert!(kdev == dev || Some(kdev) == sb, "{kdev:#x} vs {dev:#x}");
        assert_eq!(got[1], None);
        assert!(got[2].is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
