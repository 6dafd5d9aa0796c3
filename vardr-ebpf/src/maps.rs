//! Maps shared by all programs. Each rule map is an array of two inner
//! maps, one per generation ([`Config::generation`] picks one): a reload
//! fills a fresh inner map, swaps it in, and the config switches to it in
//! one write; the old inner map is then dropped whole.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{self, ArrayOfMaps},
    macros::{btf_map, map},
    maps::{lpm_trie::Key, Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use vardr_common::{
    Config, ExemptTask, FanotifyLease, InodeKey, InodeRule, PathRules, PidKey, RuleRef,
    CONFIG_SLOTS, DOMAIN_KEY_LEN, NET4_KEY_LEN, NET6_KEY_LEN, PATH_KEY_LEN,
};

/// Rule generations: the one in force and the one a reload prepares.
const GENERATIONS: usize = 2;
/// Capacity of the inner maps' templates; userspace creates the real ones
/// with the capacities of its limits (hash and LPM inner maps may differ
/// in size from their template).
const TEMPLATE: usize = 1;
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Lifecycle events (exec, fork, exit): a buffer of their own, so a flood
/// of policy events cannot push out what the process cache is built from.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// Policy events (denies, alerts, audits, reports for Layer 2).
#[map]
pub static POLICY_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Ring buffer reservations that failed (events lost), per CPU:
/// [`vardr_common::LOST_LIFECYCLE`] and [`vardr_common::LOST_POLICY`].
#[map]
pub static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Two config slots; `CONFIG_SLOT` says which one is in force.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(CONFIG_SLOTS, 0);

#[map]
pub static CONFIG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// The cgroups above the agent's `vardr.service` (by id, the root left
/// out): writing their files (`cgroup.kill`, `cgroup.freeze`,
/// `memory.max`) reaches the agent too.
#[map]
pub static AGENT_ABOVE: HashMap<u64, u32> =
    HashMap::with_max_entries(vardr_common::AGENT_ANCESTORS as u32, 0);

/// Whether a live agent's fanotify group answers the fallback's file rules.
#[map]
pub static FAN_LEASE: Array<FanotifyLease> = Array::with_max_entries(1, 0);

/// Opens the standing-by tracepoints would deny, left to fanotify: thread
/// id -> rule id (high 32 bits) and hook. If the agent dies while such an
/// open waits, its group lets it through; the syscall exit kills then.
#[map]
pub static PENDING_OPENS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1 << 14, 0);

/// Overlay opens in flight, by thread: the real dentries (upper, lower) of
/// an overlay file whose open `file_open` let through, so the open of the
/// real file overlayfs makes behind it (with the layer's path, where the
/// caller's path rules do not apply) is not decided a second time.
#[map]
pub static OVL_OPENS: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(1 << 12, 0);

/// Path prefix rules: key = generation byte, path (ending with `/`).
#[btf_map]
pub static PATH_RULES: ArrayOfMaps<
    btf_maps::LpmTrie<[u8; PATH_KEY_LEN], PathRules, TEMPLATE>,
    GENERATIONS,
> = ArrayOfMaps::new();

/// Exact path rules: key = generation byte, path, NUL, zeros to the end.
/// A hash: inserting 100 000 paths costs a fraction of the LPM trie's, and
/// a lookup is one hash of the key instead of a walk down the trie.
#[btf_map]
pub static EXACT_PATHS: ArrayOfMaps<
    btf_maps::HashMap<[u8; PATH_KEY_LEN], PathRules, TEMPLATE, NO_PREALLOC>,
    GENERATIONS,
> = ArrayOfMaps::new();

/// Exec rules and exempt binaries by file identity.
#[btf_map]
pub static INODE_RULES: ArrayOfMaps<
    btf_maps::HashMap<InodeKey, InodeRule, TEMPLATE, NO_PREALLOC>,
    GENERATIONS,
> = ArrayOfMaps::new();

/// Exempt pids of the policy; value: the process's start time in ticks.
#[btf_map]
pub static EXEMPT_PIDS: ArrayOfMaps<
    btf_maps::HashMap<PidKey, u64, TEMPLATE, NO_PREALLOC>,
    GENERATIONS,
> = ArrayOfMaps::new();

/// Processes exempt by the binary they executed (key: tgid), kept by the
/// exec, fork and exit programs. When full, a new process is not exempt.
#[map]
pub static EXEMPT_TASKS: HashMap<u32, ExemptTask> =
    HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// CIDR rules: key = generation, protocol, port (BE), address.
#[btf_map]
pub static NET4_RULES: ArrayOfMaps<
    btf_maps::LpmTrie<[u8; NET4_KEY_LEN], RuleRef, TEMPLATE>,
    GENERATIONS,
> = ArrayOfMaps::new();

#[btf_map]
pub static NET6_RULES: ArrayOfMaps<
    btf_maps::LpmTrie<[u8; NET6_KEY_LEN], RuleRef, TEMPLATE>,
    GENERATIONS,
> = ArrayOfMaps::new();

/// Domain rules: key = generation, the server name reversed, NUL for an
/// exact name (see [`vardr_common::DOMAIN_KEY_LEN`]).
#[btf_map]
pub static DOMAIN_RULES: ArrayOfMaps<
    btf_maps::LpmTrie<[u8; DOMAIN_KEY_LEN], RuleRef, TEMPLATE>,
    GENERATIONS,
> = ArrayOfMaps::new();

// Lookups in the inner map of a generation. Values are copied out: an
// inner map is complete before it is swapped in and never written after.

#[inline(always)]
pub fn path_rules_at(generation: u32, key: &Key<[u8; PATH_KEY_LEN]>) -> Option<PathRules> {
    // SAFETY: the pointer comes from the lookup and is read at once.
    PATH_RULES
        .get_value_ptr_mut(generation, key)
        .map(|p| unsafe { *p })
}

/// The exact-path rules of the path in `key` (generation byte, then `n`
/// bytes of path and NUL). The hash compares whole keys, so the path is
/// copied into a zeroed per-CPU key first: whatever the caller's buffer
/// holds after the NUL cannot make a listed path miss.
#[inline(always)]
pub fn exact_path_rules(generation: u32, key: &[u8; PATH_KEY_LEN], n: u32) -> Option<PathRules> {
    // An empty slot (no exact paths in the policy): no copy, no lookup.
    let inner = EXACT_PATHS.get(generation)?;
    let dst = EXACT_SCRATCH.get_ptr_mut(0)?;
    // At most PATH_KEY_LEN - 1 path bytes follow the generation byte. The
    // length is read back through memory so LLVM cannot drop the mask as
    // redundant: the mask is what bounds the copy for the verifier (a
    // 255-byte key needs all of it).
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) } & 0xff;
    if n == 0 {
        return None;
    }
    // SAFETY: `dst` is this CPU's slot, 8-byte aligned (a map value) and
    // PATH_KEY_LEN bytes long; the copy of at most 255 bytes lands after
    // its first byte.
    unsafe {
        // Word stores, volatile so they stay stores (not a byte loop).
        let words = dst as *mut u64;
        for i in 0..PATH_KEY_LEN / 8 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        (*dst)[0] = generation as u8;
        if aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (dst as *mut u8).add(1) as *mut core::ffi::c_void,
            n,
            key.as_ptr().add(1) as *const core::ffi::c_void,
        ) != 0
        {
            return None;
        }
        // By reference: the 256-byte key must not be copied to the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        inner.get_ptr(&*dst).map(|p| *p)
    }
}

#[inline(always)]
pub fn inode_rule(key: &InodeKey) -> Option<InodeRule> {
    // SAFETY: as in `path_rules_at`.
    INODE_RULES
        .get_value_ptr_mut(key.generation, key)
        .map(|p| unsafe { *p })
}

#[inline(always)]
pub fn exempt_pid_start(key: &PidKey) -> Option<u64> {
    // SAFETY: as in `path_rules_at`.
    EXEMPT_PIDS
        .get_value_ptr_mut(key.generation, key)
        .map(|p| unsafe { *p })
}

#[inline(always)]
pub fn net4_rule(generation: u32, key: &Key<[u8; NET4_KEY_LEN]>) -> Option<RuleRef> {
    // SAFETY: as in `path_rules_at`.
    NET4_RULES
        .get_value_ptr_mut(generation, key)
        .map(|p| unsafe { *p })
}

#[inline(always)]
pub fn net6_rule(generation: u32, key: &Key<[u8; NET6_KEY_LEN]>) -> Option<RuleRef> {
    // SAFETY: as in `path_rules_at`.
    NET6_RULES
        .get_value_ptr_mut(generation, key)
        .map(|p| unsafe { *p })
}

#[inline(always)]
pub fn domain_rule(generation: u32, key: &Key<[u8; DOMAIN_KEY_LEN]>) -> Option<RuleRef> {
    // SAFETY: as in `path_rules_at`.
    DOMAIN_RULES
        .get_value_ptr_mut(generation, key)
        .map(|p| unsafe { *p })
}

/// Per-CPU room for a path key: too big for the 512-byte BPF stack.
#[map]
pub static PATH_SCRATCH: PerCpuArray<Key<[u8; PATH_KEY_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for an exact-path key (see [`exact_path_rules`]).
#[map]
pub static EXACT_SCRATCH: PerCpuArray<[u8; PATH_KEY_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the answer of `shared::vardr_identity_walk` (a global
/// function returns only a number).
#[map]
pub static IDENTITY_SCRATCH: PerCpuArray<PathRules> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the two paths of a rename or link (source, destination).
#[map]
pub static NAME_SCRATCH: PerCpuArray<crate::resolve::Resolved> =
    PerCpuArray::with_max_entries(2, 0);

/// Per-CPU room for the exec event's paths (executed file, working
/// directory): apart from [`NAME_SCRATCH`], which the policy hooks use.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<crate::resolve::Resolved> =
    PerCpuArray::with_max_entries(2, 0);
