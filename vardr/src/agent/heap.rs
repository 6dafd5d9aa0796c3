//! Gives the heap freed after a start or a reload back to the kernel.
//!
//! Parsing a big policy and the kernel's BTF allocates tens of MiB that are
//! freed a moment later; glibc keeps such memory in its arenas (one per
//! thread that allocated, so the compile and reload threads' too), and the
//! agent's resident size would stay at its peak.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas, under
    // their locks; it touches no memory Rust owns.
    unsafe {
        libc::malloc_trim(0);
    }
}
