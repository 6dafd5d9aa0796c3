//! TracingPolicy kprobe and tracepoint hooks at run time: their BPF object
//! (loaded the first time a policy has such hooks), one attachment per
//! hook with its slot as the BPF cookie, and generations switched in one
//! map write, as the native rules are.
//!
//! A reload stages the new generation beside the one in force (config,
//! hooks under fresh slots, string values, binaries) and attaches it: the
//! new attachments find nothing under the old generation and stay quiet.
//! The commit flips `GEN_SLOT`; the old attachments, which then find
//! nothing under the new generation, are detached and their entries
//! deleted. No call runs half old, half new.
mod compile;
mod fmod_ret;
pub mod pods;
mod process_filters;

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray},
    programs::{BtfTracePoint, KProbe, TracePoint},
    Ebpf, EbpfLoader,
};
use vardr_common::{
    generic::{FollowKey, GenConfig, GenHook, GenKey, PodKey, GEN_BIN_EXEMPT_BIT, GEN_STR_KEY_LEN},
    InodeKey, PidKey, NS_PER_TICK,
};

pub use compile::kprobe_function;
use compile::{Attach, CompiledHook};

use crate::{
    backend::perf_attach::{self, CookieLink, Target},
    compile::{IdentityLookup, RuleSet},
    events::HookMeta,
    kernel::mounts,
    policy::tracing::generic::GenericHook,
};

const KPROBE_PROG: &str = "vardr_generic_kprobe";
const KRETPROBE_PROG: &str = "vardr_generic_kretprobe";
const UPROBE_PROG: &str = "vardr_generic_uprobe";
/// Copies of the tracepoint program (see the BPF side): a tracepoint takes
/// each program once, so hooks on one tracepoint in force at once (both
/// generations during a reload included) use different copies.
const TRACEPOINT_PROGS: [&str; 8] = [
    "vardr_generic_tp0",
    "vardr_generic_tp1",
    "vardr_generic_tp2",
    "vardr_generic_tp3",
    "vardr_generic_tp4",
    "vardr_generic_tp5",
    "vardr_generic_tp6",
    "vardr_generic_tp7",
];
/// Copies of the LSM program: each is loaded for one LSM hook and attached
/// once, so every `lsmhooks` hook in force (both generations during a
/// reload included) takes one of its own.
const LSM_PROGS: [&str; 16] = [
    "vardr_generic_lsm0",
    "vardr_generic_lsm1",
    "vardr_generic_lsm2",
    "vardr_generic_lsm3",
    "vardr_generic_lsm4",
    "vardr_generic_lsm5",
    "vardr_generic_lsm6",
    "vardr_generic_lsm7",
    "vardr_generic_lsm8",
    "vardr_generic_lsm9",
    "vardr_generic_lsm10",
    "vardr_generic_lsm11",
    "vardr_generic_lsm12",
    "vardr_generic_lsm13",
    "vardr_generic_lsm14",
    "vardr_generic_lsm15",
];
/// `lsmhooks` hooks a generation may have: half the copies, so that a
/// reload can always stage a new set beside the one in force.
const MAX_LSM_HOOKS: usize = LSM_PROGS.len() / 2;
const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("TracingPolicy hook {hook}: {why}")]
    Hook { hook: String, why: String },
    #[error("loading the TracingPolicy hooks' BPF object: {0}")]
    Load(String),
    #[error("TracingPolicy hooks' map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Who the hooks govern: the agent and the scope, as the native rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct Governance {
    pub enforce: bool,
    pub agent_tgid: u32,
    pub agent_start_ticks: u64,
    pub agent_cgroup_id: u64,
    pub scope_cgroup_id: u64,
    pub scope_level: u32,
}

/// What a generation wrote, to delete when it is retired.
#[derive(Default)]
struct Written {
    hooks: Vec<GenKey>,
    strings: Vec<Key<[u8; GEN_STR_KEY_LEN]>>,
    binaries: Vec<InodeKey>,
    pids: Vec<PidKey>,
    /// `GEN_FOLLOW` entries the generation needs (shared with the other
    /// generation's when both follow a binary).
    follow: Vec<FollowKey>,
    /// Kubernetes namespaces its `TracingPolicyNamespaced` hooks are for.
    namespaces: HashSet<String>,
}

/// A generation attached beside the one in force, not yet switched to.
/// Dropped without [`GenericHooks::commit`], its attachments detach.
pub struct Staged {
    generation: u32,
    links: Vec<Attached>,
    metas: Vec<(u32, Arc<HookMeta>)>,
}

/// How long a pod seen without its cgroup is looked for again soon.
const POD_CGROUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct GenericHooks {
    ebpf: Ebpf,
    hooks: BpfHashMap<MapData, GenKey, GenHook>,
    strings: LpmTrie<MapData, [u8; GEN_STR_KEY_LEN], u32>,
    binaries: BpfHashMap<MapData, InodeKey, u64>,
    pids: BpfHashMap<MapData, PidKey, u64>,
    config: Array<MapData, GenConfig>,
    slot: Array<MapData, u32>,
    lost: PerCpuArray<MapData, u64>,
    generation: u32,
    links: Vec<Attached>,
    next_slot: u32,
    metas: HashMap<u32, Arc<HookMeta>>,
    written: [Written; 2],
    tracefs: PathBuf,
    /// When the exec tracking was attached, in clock ticks since boot.
    tracked_since_ticks: u64,
    /// The LSM hook each copy of the LSM program is loaded for.
    lsm_loaded: [Option<String>; LSM_PROGS.len()],
    follow: BpfHashMap<MapData, FollowKey, u64>,
    /// The `GEN_FOLLOW` bit of each binary a `followChildren` selector
    /// named since the object was loaded: processes keep the bits they got,
    /// so a bit is never given to another binary.
    follow_bits: HashMap<FollowKey, u32>,
    pods: BpfHashMap<MapData, PodKey, u8>,
    /// The `GEN_PODS` id of each Kubernetes namespace named since the
    /// object was loaded (never given to another).
    pod_ids: HashMap<String, u32>,
    /// The `GEN_PODS` entries written.
    pods_written: HashSet<PodKey>,
    /// Pods governed per namespace at the last look (logged on change).
    pod_cgroups: HashMap<String, usize>,
    /// The pod log root was missing at the last look (warned once).
    pod_root_missing: bool,
    /// Pods of the governed namespaces seen in the log root whose cgroup
    /// was not found at the last sync, and when each was first seen so:
    /// the agent looks again soon for the new ones only (a finished pod
    /// keeps its log directory but not its cgroup).
    pods_without_cgroup: HashMap<String, std::time::Instant>,
    /// The kubelet's pod log root and the cgroup tree the pods are found
    /// in (see [`pods`]).
    pod_source: (PathBuf, PathBuf),
    /// Whether this kernel's BTF showed where `struct sock` and
    /// `struct sk_buff` keep what `sock` and `skb` arguments read.
    reads_sock: bool,
    reads_skb: bool,
}

/// An attachment, and the tracepoint copy it uses (tracepoint id, copy).
/// Fields drop in order: the kprobe detaches before its override program,
/// which so takes every decision the kprobe left.
struct Attached {
    link: Link,
    /// A return probe's return.
    ret: Option<CookieLink>,
    override_: Option<fmod_ret::OverrideLink>,
    slot: u32,
    copy: Option<(u32, usize)>,
    /// The copy of the LSM program an `lsmhooks` hook uses.
    lsm_copy: Option<usize>,
}

/// What keeps one hook attached (dropped: detached).
enum Link {
    Perf(CookieLink),
    Uprobe(
        #[expect(dead_code, reason = "held for its drop, which detaches")]
        aya::programs::uprobe::UProbeLink,
    ),
    /// A BPF LSM program's link.
    Lsm(OwnedFd),
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> HookError {
    move |source| HookError::Map { map, source }
}

/// Attaches the exec, fork and exit programs that record what each process
/// executed (`GEN_EXE`): `matchBinaries` and exempt binaries go by that
/// rather than by the executable a process may name for itself.
fn track_executables(ebpf: &mut Ebpf) -> Result<(), HookError> {
    let btf = crate::kernel::btf::shared_aya_btf().map_err(|e| HookError::Load(e.to_string()))?;
    for (name, tp) in [
        ("vardr_gen_exec", "sched_process_exec"),
        ("vardr_gen_fork", "sched_process_fork"),
        ("vardr_gen_exit", "sched_process_exit"),
    ] {
        let err = |e: String| HookError::Load(format!("{name}: {e}"));
        let p: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| err("missing from the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
        p.load(tp, &btf).map_err(|e| err(e.to_string()))?;
        p.attach().map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

impl GenericHooks {
    /// Loads the object (its maps; the programs load when first needed).
    /// Returns the hooks and their events' ring buffer.
    pub fn load() -> Result<(Self, crate::backend::ring::EventRing), HookError> {
        let offsets =
            crate::kernel::btf::kernel_offsets().map_err(|e| HookError::Load(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .load(crate::bpf::GENERIC_OBJECT)
            .map_err(|e| HookError::Load(e.to_string()))?;
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| HookError::Load(format!("map {name} missing")))
        };
        let events = crate::backend::ring::EventRing::new("GEN_EVENTS", take("GEN_EVENTS")?)
            .map_err(|e| HookError::Load(e.to_string()))?;
        let mut this = Self {
            hooks: take("GEN_HOOKS")?
                .try_into()
                .map_err(map_err("GEN_HOOKS"))?,
            strings: take("GEN_STRINGS")?
                .try_into()
                .map_err(map_err("GEN_STRINGS"))?,
            binaries: take("GEN_BINARIES")?
                .try_into()
                .map_err(map_err("GEN_BINARIES"))?,
            pids: take("GEN_EXEMPT_PIDS")?
                .try_into()
                .map_err(map_err("GEN_EXEMPT_PIDS"))?,
            config: take("GEN_CONFIG")?
                .try_into()
                .map_err(map_err("GEN_CONFIG"))?,
            slot: take("GEN_SLOT")?.try_into().map_err(map_err("GEN_SLOT"))?,
            lost: take("GEN_LOST")?.try_into().map_err(map_err("GEN_LOST"))?,
            follow: take("GEN_FOLLOW")?
                .try_into()
                .map_err(map_err("GEN_FOLLOW"))?,
            pods: take("GEN_PODS")?.try_into().map_err(map_err("GEN_PODS"))?,
            pod_ids: HashMap::new(),
            pods_written: HashSet::new(),
            pod_cgroups: HashMap::new(),
            pod_root_missing: false,
            pods_without_cgroup: HashMap::new(),
            pod_source: (
                PathBuf::from(pods::POD_LOG_ROOT),
                PathBuf::from("/sys/fs/cgroup"),
            ),
            // `skc_family` and `head` are never a struct's first member.
            reads_sock: offsets.skc_family != 0,
            reads_skb: offsets.skb_head != 0,
            ebpf,
            generation: 0,
            links: Vec::new(),
            next_slot: 1,
            metas: HashMap::new(),
            written: [Written::default(), Written::default()],
            tracefs: PathBuf::from(TRACEFS),
            tracked_since_ticks: 0,
            lsm_loaded: Default::default(),
            follow_bits: HashMap::new(),
        };
        track_executables(&mut this.ebpf)?;
        // Read after the attach: a process started in a later tick was seen.
        this.tracked_since_ticks = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map_or(0, |t| {
                (t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64) / NS_PER_TICK
            });
        Ok((this, events))
    }

    /// Calls the hooks' ring buffer had no room for, summed over CPUs.
    pub fn lost_events(&self) -> u64 {
        self.lost.get(&0, 0).map_or(0, |v| v.iter().sum::<u64>())
    }

    /// The links of the hooks in force, named, to pin with
    /// `--keep-enforcing`: pinned, they keep the hooks (and through them
    /// the programs and maps) in the kernel after the agent.
    pub fn links(&self) -> Result<Vec<(String, OwnedFd)>, HookError> {
        let dup = |what: &str, fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| HookError::Load(format!("{what}: {e}")))
        };
        let mut out = Vec::new();
        let mut uprobes = false;
        for a in &self.links {
            match &a.link {
                Link::Perf(l) => out.push((format!("hook-{}", a.slot), dup("link", l.link_fd())?)),
                Link::Lsm(l) => out.push((format!("hook-{}", a.slot), dup("link", l.as_fd())?)),
                Link::Uprobe(_) => uprobes = true,
            }
            if let Some(r) = &a.ret {
                out.push((
                    format!("hook-{}-return", a.slot),
                    dup("return link", r.link_fd())?,
                ));
            }
            if let Some(o) = &a.override_ {
                out.push((
                    format!("hook-{}-override", a.slot),
                    dup("override link", o.link_fd())?,
                ));
            }
        }
        // aya keeps a uprobe's link to itself: found by its program.
        if uprobes {
            let prog = self
                .ebpf
                .program(UPROBE_PROG)
                .and_then(|p| p.info().ok())
                .map(|i| i.id())
                .ok_or_else(|| HookError::Load(format!("program {UPROBE_PROG} not loaded")))?;
            for link in aya::programs::loaded_links() {
                let link = link.map_err(|e| HookError::Load(format!("listing links: {e}")))?;
                if link.program_id() == prog {
                    let fd = crate::pin::link_by_id(link.id())
                        .map_err(|e| HookError::Load(format!("link {}: {e}", link.id())))?;
                    out.push((format!("uprobe-{}", link.id()), fd));
                }
            }
        }
        Ok(out)
    }

    /// Whether a pod of a governed namespace is known but its cgroup was
    /// not found yet.
    pub fn pods_pending(&self) -> bool {
        let now = std::time::Instant::now();
        self.pods_without_cgroup
            .values()
            .any(|first| now.duration_since(*first) < POD_CGROUP_WAIT)
    }

    /// Where pods are found: the kubelet's pod log root, and the cgroup
    /// tree to look for their cgroups in (the scope cgroup, or the root).
    pub fn set_pod_source(&mut self, pod_log_root: PathBuf, cgroup_root: PathBuf) {
        self.pod_source = (pod_log_root, cgroup_root);
    }

    /// Brings `GEN_PODS` up to date with the pods on the node now, for the
    /// namespaces of both generations' `TracingPolicyNamespaced` hooks
    /// (called at every tick of the agent: a pod started since is governed
    /// from the next).
    pub fn sync_pods(&mut self) -> Result<(), HookError> {
        let wanted: HashSet<String> = self.written[0]
            .namespaces
            .union(&self.written[1].namespaces)
            .cloned()
            .collect();
        if wanted.is_empty() && self.pods_written.is_empty() {
            self.pods_without_cgroup.clear();
            return Ok(());
        }
        self.sync_pods_for(&wanted)
    }

    fn sync_pods_for(&mut self, wanted: &HashSet<String>) -> Result<(), HookError> {
        let (logs, root) = &self.pod_source;
        if !wanted.is_empty() && !logs.is_dir() && !self.pod_root_missing {
            tracing::warn!(
                "TracingPolicyNamespaced: no pod log root {} (not a Kubernetes node, or the kubelet keeps it elsewhere: --k8s-pod-logs): its hooks govern no process",
                logs.display()
            );
        }
        self.pod_root_missing = !logs.is_dir();
        let names: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        let pods::Found {
            cgroups: found,
            without_cgroup,
        } = pods::cgroups(root, &pods::pods(logs), &names);
        let now = std::time::Instant::now();
        self.pods_without_cgroup
            .retain(|uid, _| without_cgroup.contains(uid));
        for uid in without_cgroup {
            self.pods_without_cgroup.entry(uid).or_insert(now);
        }
        let mut desired = HashSet::new();
        for (ns, ids) in &found {
            let Some(&id) = self.pod_ids.get(ns) else {
                continue;
            };
            desired.extend(ids.iter().map(|&cgroup| PodKey {
                pods: id,
                _pad: 0,
                cgroup,
            }));
        }
        // Gone first (room for the new), and what is written is recorded
        // as it is: a failed insert leaves nothing unaccounted for.
        let gone: Vec<PodKey> = self.pods_written.difference(&desired).copied().collect();
        for k in gone {
            let _ = self.pods.remove(&k);
            self.pods_written.remove(&k);
        }
        for k in desired {
            if !self.pods_written.contains(&k) {
                self.pods.insert(k, 1, 0).map_err(map_err("GEN_PODS"))?;
                self.pods_written.insert(k);
            }
        }
        // Said once the kernel has them.
        for ns in wanted {
            let n = found.get(ns).map_or(0, HashSet::len);
            if self.pod_cgroups.get(ns) != Some(&n) {
                tracing::info!(
                    "TracingPolicyNamespaced: namespace {ns}: {n} pods governed (with their containers)"
                );
                self.pod_cgroups.insert(ns.clone(), n);
            }
        }
        Ok(())
    }

    /// How many hooks are attached.
    pub fn attached(&self) -> usize {
        self.links.len()
    }

    /// What is known of the hook attached under `slot`.
    pub fn meta(&self, slot: u32) -> Option<Arc<HookMeta>> {
        self.metas.get(&slot).cloned()
    }

    /// Attaches `hooks` as the next generation, beside the one in force.
    pub fn stage(
        &mut self,
        hooks: &[&GenericHook],
        set: &RuleSet,
        gov: Governance,
    ) -> Result<Staged, HookError> {
        let generation = 1 - self.generation;
        self.clear(generation);
        let mut written = Written::default();
        let staged = self.stage_into(generation, &mut written, hooks, set, gov);
        // Whatever was written goes with the generation: deleted by the
        // next stage or commit, or now if this one failed.
        self.written[generation as usize] = written;
        if staged.is_err() {
            self.clear(generation);
        }
        staged
    }

    fn stage_into(
        &mut self,
        generation: u32,
        written: &mut Written,
        hooks: &[&GenericHook],
        set: &RuleSet,
        gov: Governance,
    ) -> Result<Staged, HookError> {
        let mut next_bit = 0;
        let mut compiled = Vec::new();
        let tracepoints = hooks.iter().any(|h| {
            matches!(
                h.point,
                crate::policy::tracing::generic::HookPoint::Tracepoint { .. }
            )
        });
        // Format files are read from tracefs: mounted for the while if it
        // is not (and unmounted after, so a killed agent leaves no mount).
        let _tracefs = if tracepoints {
            Some(
                mounts::ensure("tracefs", Path::new(TRACEFS))
                    .map_err(|e| HookError::Load(format!("mounting tracefs: {e}")))?,
            )
        } else {
            None
        };
        let lsm_hooks = hooks
            .iter()
            .filter(|h| {
                matches!(
                    h.point,
                    crate::policy::tracing::generic::HookPoint::Lsm { .. }
                )
            })
            .count();
        if lsm_hooks > MAX_LSM_HOOKS {
            return Err(HookError::Load(format!(
                "{lsm_hooks} lsmhooks entries run as hooks of their own: at most {MAX_LSM_HOOKS} (so that a reload can stage the next set beside them); merge selectors into fewer entries per hook"
            )));
        }
        let host_ns = process_filters::HostNamespaces::system();
        for h in hooks {
            // An argument the programs could not read would match nothing,
            // silently: refused instead.
            use crate::policy::tracing::generic::ArgType;
            for a in &h.args {
                let missing = match a.ty {
                    ArgType::Sock if !self.reads_sock => Some("struct sock"),
                    ArgType::Skb if !self.reads_skb => Some("struct sk_buff"),
                    _ => None,
                };
                if let Some(what) = missing {
                    return Err(HookError::Hook {
                        hook: format!("{} ({})", h.point.target(), h.policy),
                        why: format!(
                            "argument {} of type {}: this kernel's BTF does not show where {what} keeps what vardr reads",
                            a.index,
                            a.ty.name()
                        ),
                    });
                }
            }
            let slot = self.next_slot;
            self.next_slot = self.next_slot.wrapping_add(1).max(1);
            let mut c =
                compile::compile(h, generation, slot, &self.tracefs, &host_ns, &mut next_bit)?;
            if let Some(ns) = &h.namespace {
                let next = self.pod_ids.len() as u32 + 1;
                c.config.pods = *self.pod_ids.entry(ns.clone()).or_insert(next);
                written.namespaces.insert(ns.clone());
            }
            compiled.push((slot, c));
        }
        // The pods' cgroups in place before a hook that needs them runs.
        if !written.namespaces.is_empty() {
            let mut wanted = written.namespaces.clone();
            wanted.extend(
                self.written[generation as usize ^ 1]
                    .namespaces
                    .iter()
                    .cloned(),
            );
            self.sync_pods_for(&wanted)?;
        }
        // Binaries by identity: matchBinaries' bits, and the exempt ones.
        let mut bits: HashMap<InodeKey, u64> = HashMap::new();
        let paths: Vec<&str> = compiled
            .iter()
            .flat_map(|(_, c)| c.binaries.iter().map(|(p, _)| p.as_str()))
            .collect();
        let found = IdentityLookup::new().of_many(&paths);
        let mut i = 0;
        for (_, c) in &compiled {
            for (path, bit) in &c.binaries {
                match &found[i] {
                    Ok(ids) => {
                        for id in ids {
                            let key = InodeKey {
                                generation,
                                dev: id.dev,
                                ino: id.ino,
                            };
                            *bits.entry(key).or_default() |= 1 << bit;
                        }
                    }
                    Err(e) => tracing::warn!(
                        "matchBinaries/matchParentBinaries {path}: {e}: no process runs it, so an In entry never holds for it and a NotIn entry always does (a binary installed later counts after a reload)"
                    ),
                }
                i += 1;
            }
        }
        self.follow_children(&mut compiled, written)?;
        for (id, rule) in &set.inodes {
            if rule.exempt != 0 {
                let key = InodeKey {
                    generation,
                    dev: id.dev,
                    ino: id.ino,
                };
                *bits.entry(key).or_default() |= 1 << GEN_BIN_EXEMPT_BIT;
            }
        }
        for (key, v) in &bits {
            self.binaries
                .insert(key, v, 0)
                .map_err(map_err("GEN_BINARIES"))?;
            written.binaries.push(*key);
        }
        for &pid in &set.exempt_pids {
            if let Some(start) = crate::process::start_ticks(pid) {
                let key = PidKey {
                    generation,
                    tgid: pid,
                };
                self.pids
                    .insert(key, start, 0)
                    .map_err(map_err("GEN_EXEMPT_PIDS"))?;
                written.pids.push(key);
            }
        }
        let cfg = GenConfig {
            enforce: u32::from(gov.enforce),
            agent_tgid: gov.agent_tgid,
            agent_start_ticks: gov.agent_start_ticks,
            agent_cgroup_id: gov.agent_cgroup_id,
            scope_cgroup_id: gov.scope_cgroup_id,
            scope_level: gov.scope_level,
            has_exempt_pids: u32::from(!written.pids.is_empty()),
            has_binaries: u32::from(!bits.is_empty()),
            _pad: 0,
            tracked_since_ticks: self.tracked_since_ticks,
        };
        self.config
            .set(generation, cfg, 0)
            .map_err(map_err("GEN_CONFIG"))?;
        let mut links = Vec::new();
        let mut metas = Vec::new();
        for (slot, c) in compiled {
            let CompiledHook {
                attach,
                config,
                strings,
                meta,
                ..
            } = c;
            for (data, bits) in strings {
                let key = Key::new(bits, data);
                self.strings
                    .insert(&key, 1, 0)
                    .map_err(map_err("GEN_STRINGS"))?;
                written.strings.push(key);
            }
            let key = GenKey { generation, slot };
            self.hooks
                .insert(key, config, 0)
                .map_err(map_err("GEN_HOOKS"))?;
            written.hooks.push(key);
            let busy: Vec<(u32, usize)> = self
                .links
                .iter()
                .chain(links.iter())
                .filter_map(|l: &Attached| l.copy)
                .collect();
            let lsm_busy: Vec<usize> = self
                .links
                .iter()
                .chain(links.iter())
                .filter_map(|l: &Attached| l.lsm_copy)
                .collect();
            links.push(self.attach(&attach, slot, &meta, &busy, &lsm_busy)?);
            metas.push((slot, meta));
        }
        Ok(Staged {
            generation,
            links,
            metas,
        })
    }

    /// Gives each `followChildren` binary its bit (the one it had, or the
    /// next free one), lists it in `GEN_FOLLOW` and fills the selectors'
    /// `follow_mask`. A bit is the binary's for the object's life; its
    /// entry goes with the last generation that follows it.
    fn follow_children(
        &mut self,
        compiled: &mut [(u32, CompiledHook)],
        written: &mut Written,
    ) -> Result<(), HookError> {
        let paths: Vec<&str> = compiled
            .iter()
            .flat_map(|(_, c)| c.follow.iter().map(|(_, p)| p.as_str()))
            .collect();
        if paths.is_empty() {
            return Ok(());
        }
        let found = IdentityLookup::new().of_many(&paths);
        let mut found = found.into_iter();
        for (_, c) in compiled.iter_mut() {
            for (s, path) in &c.follow {
                let ids = match found.next() {
                    Some(Ok(ids)) => ids,
                    Some(Err(e)) => {
                        tracing::warn!("matchBinaries followChildren {path}: {e}: no process runs it, so none descends from it (a binary installed later counts after a reload)");
                        continue;
                    }
                    None => continue,
                };
                for id in ids {
                    let key = FollowKey {
                        dev: id.dev,
                        _pad: 0,
                        ino: id.ino,
                    };
                    let next = self.follow_bits.len() as u32;
                    let bit = *self.follow_bits.entry(key).or_insert(next);
                    if bit >= 64 {
                        self.follow_bits.remove(&key);
                        return Err(HookError::Hook {
                            hook: c.meta.point.target(),
                            why: format!("matchBinaries followChildren {path}: more than 64 different binaries followed since the agent started (each keeps its bit in the processes that ran it); restart the agent to start over"),
                        });
                    }
                    self.follow
                        .insert(key, 1u64 << bit, 0)
                        .map_err(map_err("GEN_FOLLOW"))?;
                    written.follow.push(key);
                    c.config.selectors[*s & (vardr_common::generic::GEN_SLOTS - 1)].follow_mask |=
                        1u64 << bit;
                }
            }
        }
        Ok(())
    }

    /// Switches to a staged generation, detaches the old one's hooks and
    /// deletes its entries.
    pub fn commit(&mut self, staged: Staged) -> Result<(), HookError> {
        let Staged {
            generation,
            links,
            metas,
        } = staged;
        self.slot
            .set(0, generation, 0)
            .map_err(map_err("GEN_SLOT"))?;
        let old = 1 - generation;
        self.generation = generation;
        drop(std::mem::replace(&mut self.links, links));
        // Calls of the old hooks may still be queued: their names stay
        // known until the next switch.
        let previous: Vec<u32> = self.written[old as usize]
            .hooks
            .iter()
            .map(|k| k.slot)
            .collect();
        self.metas.retain(|s, _| previous.contains(s));
        self.metas.extend(metas);
        self.clear(old);
        Ok(())
    }

    /// Deletes what `generation` wrote.
    fn clear(&mut self, generation: u32) {
        let w = std::mem::take(&mut self.written[generation as usize]);
        for k in &w.hooks {
            let _ = self.hooks.remove(k);
        }
        for k in &w.strings {
            let _ = self.strings.remove(k);
        }
        for k in &w.binaries {
            let _ = self.binaries.remove(k);
        }
        for k in &w.pids {
            let _ = self.pids.remove(k);
        }
        // A binary no generation follows any more is no longer marked at
        // exec (its bit stays its own: processes keep the bits they got,
        // and a file that later takes its inode number gets none).
        let other = &self.written[1 - (generation as usize & 1)].follow;
        for k in w.follow.iter().filter(|k| !other.contains(k)) {
            let _ = self.follow.remove(k);
        }
    }

    fn attach(
        &mut self,
        a: &Attach,
        slot: u32,
        meta: &HookMeta,
        busy: &[(u32, usize)],
        lsm_busy: &[usize],
    ) -> Result<Attached, HookError> {
        let err = |why: String| HookError::Hook {
            hook: format!("{} ({})", meta.point.target(), meta.policy),
            why,
        };
        match a {
            Attach::Uprobe {
                path,
                symbol,
                offset,
            } => return self.attach_uprobe(path, symbol, *offset, slot, &err),
            Attach::Lsm { hook } => return self.attach_lsm(hook, slot, lsm_busy, &err),
            _ => {}
        }
        let (name, target, copy) = match a {
            Attach::Kprobe { function, .. } => {
                if !perf_attach::kprobes_available() {
                    return Err(err("this kernel has no kprobes (no kprobe PMU; `vardr probe` shows what it has)".into()));
                }
                let target = Target::Kprobe {
                    function,
                    ret: false,
                };
                (KPROBE_PROG, target, None)
            }
            Attach::Uprobe { .. } | Attach::Lsm { .. } => {
                return Err(err("not a perf attachment".into()))
            }
            Attach::Tracepoint { id } => {
                let free = (0..TRACEPOINT_PROGS.len()).find(|c| !busy.contains(&(*id, *c)));
                let Some(c) = free else {
                    return Err(err(format!(
                        "more than {} hooks on this tracepoint at once (during a reload, the old and the new policy's count together)",
                        TRACEPOINT_PROGS.len()
                    )));
                };
                (
                    TRACEPOINT_PROGS[c],
                    Target::Tracepoint { id: *id },
                    Some((*id, c)),
                )
            }
        };
        let fd = match a {
            Attach::Uprobe { .. } | Attach::Lsm { .. } => {
                return Err(err("not a perf attachment".into()))
            }
            Attach::Kprobe { .. } => self.program_fd(name).map_err(err)?,
            Attach::Tracepoint { .. } => {
                let prog = self
                    .ebpf
                    .program_mut(name)
                    .ok_or_else(|| err(format!("program {name} missing")))?;
                let p: &mut TracePoint = prog.try_into().map_err(|e| err(format!("{e}")))?;
                if p.fd().is_err() {
                    p.load().map_err(|e| err(format!("loading {name}: {e}")))?;
                }
                p.fd()
                    .map_err(|e| err(format!("{e}")))?
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| err(format!("dup: {e}")))?
            }
        };
        // The override program first: the kprobe's decisions are taken
        // from its first call on.
        let override_ = match a {
            Attach::Kprobe {
                function,
                override_: true,
                ..
            } => {
                let map = self
                    .ebpf
                    .map("GEN_OVERRIDE")
                    .and_then(crate::backend::sys::fd)
                    .ok_or_else(|| err("map GEN_OVERRIDE missing".into()))?;
                Some(fmod_ret::attach(function, slot, map).map_err(err)?)
            }
            _ => None,
        };
        // A return probe's return before its entry: a call kept at the
        // entry always finds its return attached.
        let ret = match a {
            Attach::Kprobe {
                function,
                ret: true,
                ..
            } => {
                let fd = self.program_fd(KRETPROBE_PROG).map_err(err)?;
                let target = Target::Kprobe {
                    function,
                    ret: true,
                };
                Some(
                    perf_attach::attach(fd.as_fd(), target, u64::from(slot))
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            _ => None,
        };
        let link = perf_attach::attach(fd.as_fd(), target, u64::from(slot))
            .map_err(|e| err(e.to_string()))?;
        Ok(Attached {
            link: Link::Perf(link),
            ret,
            override_,
            slot,
            copy,
            lsm_copy: None,
        })
    }

    /// A kprobe or kretprobe program of the object, loaded the first time
    /// (a copy of its descriptor).
    fn program_fd(&mut self, name: &str) -> Result<OwnedFd, String> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing"))?;
        let p: &mut KProbe = prog.try_into().map_err(|e| format!("{e}"))?;
        if p.fd().is_err() {
            p.load().map_err(|e| format!("loading {name}: {e}"))?;
        }
        p.fd()
            .map_err(|e| format!("{e}"))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("dup: {e}"))
    }

    /// A uprobe through aya, which carries the cookie itself.
    fn attach_uprobe(
        &mut self,
        path: &str,
        symbol: &str,
        offset: u64,
        slot: u32,
        err: &dyn Fn(String) -> HookError,
    ) -> Result<Attached, HookError> {
        use aya::programs::uprobe::{UProbe, UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
        let prog = self
            .ebpf
            .program_mut(UPROBE_PROG)
            .ok_or_else(|| err(format!("program {UPROBE_PROG} missing")))?;
        let p: &mut UProbe = prog.try_into().map_err(|e| err(format!("{e}")))?;
        if p.fd().is_err() {
            p.load()
                .map_err(|e| err(format!("loading {UPROBE_PROG}: {e}")))?;
        }
        let location = if symbol.is_empty() {
            UProbeAttachLocation::AbsoluteOffset(offset)
        } else {
            UProbeAttachLocation::Symbol(symbol)
        };
        let point = UProbeAttachPoint {
            location,
            cookie: Some(u64::from(slot)),
        };
        let id = p
            .attach(point, path, UProbeScope::AllProcesses)
            .map_err(|e| err(format!("{e:#}")))?;
        let link = p.take_link(id).map_err(|e| err(format!("{e}")))?;
        Ok(Attached {
            link: Link::Uprobe(link),
            ret: None,
            override_: None,
            slot,
            copy: None,
            lsm_copy: None,
        })
    }

    /// An `lsmhooks` hook: a copy of the LSM program no hook in force uses,
    /// loaded for `hook` (one already loaded for it if there is one),
    /// attached with the slot as its cookie.
    fn attach_lsm(
        &mut self,
        hook: &str,
        slot: u32,
        busy: &[usize],
        err: &dyn Fn(String) -> HookError,
    ) -> Result<Attached, HookError> {
        use aya::programs::Lsm;
        if !crate::probe::bpf_lsm_active() {
            return Err(err(
                "lsmhooks need the BPF LSM, which this kernel does not run (`bpf` is not in /sys/kernel/security/lsm: boot with lsm=...,bpf; `vardr probe` shows it); file_open, bprm_check_security and socket_connect entries that only match paths, binaries and addresses run on every backend as native rules, and a kprobe on security_<hook> with Sigkill works without the BPF LSM".into(),
            ));
        }
        let btf = crate::kernel::btf::shared_aya_btf().map_err(|e| err(e.to_string()))?;
        // A copy the kernel still has attached to the hook (a link pinned
        // by an earlier run, which this one could not replace) refuses a
        // second link (EBUSY): the next copy is tried.
        let mut refused: Vec<usize> = Vec::new();
        loop {
            let free = |c: &usize| !busy.contains(c) && !refused.contains(c);
            let copy = (0..LSM_PROGS.len())
                .filter(free)
                .find(|&c| self.lsm_loaded[c].as_deref() == Some(hook))
                .or_else(|| {
                    (0..LSM_PROGS.len())
                        .filter(free)
                        .find(|&c| self.lsm_loaded[c].is_none())
                })
                .or_else(|| (0..LSM_PROGS.len()).find(free));
            let Some(c) = copy else {
                return Err(err(format!(
                    "more than {} lsmhooks hooks at once (during a reload, the old and the new policy's count together)",
                    LSM_PROGS.len()
                )));
            };
            let name = LSM_PROGS[c];
            let prog: &mut Lsm = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| err(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| err(format!("{e}")))?;
            if self.lsm_loaded[c].as_deref() != Some(hook) {
                if self.lsm_loaded[c].take().is_some() {
                    // Loaded for another hook, attached nowhere now.
                    prog.unload()
                        .map_err(|e| err(format!("unloading {name}: {e}")))?;
                }
                prog.load(hook, &btf)
                    .map_err(|e| err(format!("loading its BPF LSM program: {}", short(&e))))?;
                self.lsm_loaded[c] = Some(hook.to_string());
            }
            let fd = prog.fd().map_err(|e| err(format!("{e}")))?;
            match perf_attach::lsm_link(fd.as_fd(), u64::from(slot)) {
                Ok(link) => {
                    return Ok(Attached {
                        link: Link::Lsm(link),
                        ret: None,
                        override_: None,
                        slot,
                        copy: None,
                        lsm_copy: Some(c),
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => refused.push(c),
                Err(e) => {
                    return Err(err(format!(
                        "attaching its BPF LSM program: {}",
                        crate::kernel::errno_name(&e)
                    )))
                }
            }
        }
    }
}

/// A program load error with the verifier's last lines, not its whole log.
fn short(e: &aya::programs::ProgramError) -> String {
    if let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        if io_error.raw_os_error() == Some(libc::EPERM) {
            // The LSM may be listed while the kernel (or the machine's
            // hypervisor) still refuses trampoline programs.
            return format!("{} (this kernel refuses BPF LSM programs: no BPF trampolines here; `vardr probe` shows it)", crate::kernel::errno_name(io_error));
        }
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        if tail.is_empty() {
            return crate::kernel::errno_name(io_error);
        }
        return format!("{}: {tail}", crate::kernel::errno_name(io_error));
    }
    e.to_string()
}
