//! Keeps the agent's resident memory near what it uses.
//!
//! Parsing a big policy and the kernel's BTF allocates tens of MiB that are
//! freed a moment later; glibc keeps such memory in its arenas (one per
//! thread that allocated, so the compile and reload threads' too), and the
//! agent's resident size would stay at its peak.

/// Allocations from this size up get pages of their own, returned to the
/// kernel when freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Called first thing in the agent. glibc raises its mmap threshold each
/// time a big block is freed (up to 32 MiB), after which big blocks come
/// from the heap and stay resident once freed: the kernel's BTF, parsed
/// and dropped by every program load, and the big vectors of a policy
/// parse would then keep the agent at its peak. A fixed threshold keeps
/// them out of the heap.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc's allocator parameters.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 0 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
        }
    }
}

/// Gives the heap freed after a start or a reload back to the kernel.
pub fn release_free_memory() {
    crate::bpf::release_object_pages();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas, under
    // their locks; it touches no memory Rust owns.
    unsafe {
        libc::malloc_trim(0);
    }
}
