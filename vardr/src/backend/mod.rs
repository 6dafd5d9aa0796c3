//! Layer 1 loader: attaches the programs of the chosen backend for each hook
//! and writes compiled rule sets into the maps, switching atomically.
mod generation;
mod maps;
mod objects;
mod path_lookup;
pub mod perf_attach;
mod plan;
pub mod ring;
pub(crate) mod sys;

use std::{fs::File, path::PathBuf};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, Lsm, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use vardr_common::{Config, Hook as KHook};

pub use generation::ApplyStats;
pub use path_lookup::PathMaps;

/// The exempt-task map (tgid -> binary executed, start time).
pub type ExemptTasks = aya::maps::HashMap<MapData, u32, vardr_common::ExemptTask>;
pub use plan::{BackendChoice, Plan, PlanError};

use crate::{
    bpf,
    compile::{Limits, RuleSet},
    kernel::{self, cgroup, mounts},
    probe::{Backend, HookKind},
};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Btf(#[from] kernel::btf::BtfError),
    #[error("loading the BPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(transparent)]
    Ring(#[from] ring::RingError),
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("BPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("pinned BPF map {path}: {source}")]
    PinnedMap {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinned BPF link {path}: {source}")]
    PinnedLink {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinned set {0} governs another scope (cgroup id {1}, not {2})")]
    OtherScope(PathBuf, u64, u64),
    #[error("BPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// How the enforcer is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Deny in the kernel (otherwise matches produce `audit` events).
    pub enforce: bool,
    /// Govern only this cgroup v2 subtree.
    pub scope_cgroup: Option<PathBuf>,
    pub limits: Limits,
    /// fanotify serves the file hooks: the open tracepoints are not
    /// attached (they would kill and report the same opens again).
    pub fanotify_file: bool,
    /// fanotify answers file opens under a lease while the open
    /// tracepoints stand by (`--keep-enforcing`): their syscall exits are
    /// watched too.
    pub fanotify_lease: bool,
    /// `--tls-capture`: report TLS server names and learn DNS answers.
    pub tls_capture: bool,
}

/// The rule maps, for writing the next rule set on another thread.
pub struct Staging {
    maps: objects::MapSet,
    next: u32,
    limits: Limits,
}

/// A rule set written into fresh inner maps, not yet in force.
pub struct Staged {
    maps: objects::MapSet,
    rules: generation::Generation,
    next: u32,
}

impl Staging {
    /// Writes `set` into fresh inner maps for the unused generation;
    /// nothing reads them until [`Enforcer::commit`].
    pub fn write(self, set: &RuleSet) -> Result<Staged, BackendError> {
        let rules = generation::Generation::write(set, self.next, &self.limits)?;
        Ok(Staged {
            maps: self.maps,
            rules,
            next: self.next,
        })
    }
}

/// The generation a commit replaced.
pub struct Retired {
    maps: objects::MapSet,
    rules: Option<generation::Generation>,
    generation: u32,
}

impl Retired {
    /// Empties its slot once no program that read the old config before
    /// the switch still runs (it may still be looking its rules up); the
    /// kernel then frees the old inner maps whole.
    pub fn delete(self) {
        // None: the first rule set of fresh maps replaced nothing.
        let Some(old) = self.rules else {
            return;
        };
        if !old.wait_for_readers(&self.maps, self.generation) {
            // Its slots are empty already (a kind with no entries is never
            // installed); a failed barrier falls back to a pause.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        generation::clear(&self.maps, self.generation);
    }
}

/// The loaded programs and maps. Dropping it detaches everything that is
/// not pinned.
pub struct Enforcer {
    maps: objects::MapSet,
    programs: objects::Programs,
    plan: Plan,
    config: Config,
    /// Config slot in force (see `vardr_common::CONFIG_SLOTS`).
    config_slot: u32,
    /// The inner maps of the generation in force, when there are rules.
    rules: Option<generation::Generation>,
    /// Capacities of the inner maps a reload creates.
    limits: Limits,
    // Keep the cgroup fd alive as long as the programs.
    _cgroup_fd: Option<File>,
}

/// What an agent must share with a pinned set to adopt it: the BPF object
/// (programs and map layouts), the backend of each hook, which programs
/// are attached and the map sizes. The kernel's offsets and BTF are in the
/// release: pins do not survive a reboot anyway.
pub fn build_key(plan: &Plan, opts: &Options) -> String {
    let l = &opts.limits;
    let shape = format!(
        "{}|{}|{}|{}|file={},lease={}|{},{},{},{},{},{}",
        kernel::release(),
        plan.file.backend,
        plan.exec.backend,
        plan.network.backend,
        opts.fanotify_file,
        opts.fanotify_lease,
        l.path_entries,
        l.inode_entries,
        l.net4_entries,
        l.net6_entries,
        l.exempt_pids,
        l.domain_entries
    );
    crate::pin::fnv_hex([bpf::AGENT_OBJECT, shape.as_bytes()])
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, BackendError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(BackendError::MissingProgram(name))?
        .try_into()
        .map_err(|source| BackendError::Program { name, source })
}

/// What `--tls-capture` turns on in the socket programs: every TLS server
/// name reported, and DNS responses for the agent's name cache.
fn names_capture(opts: &Options) -> u32 {
    if opts.tls_capture {
        vardr_common::NAMES_TLS | vardr_common::NAMES_DNS
    } else {
        0
    }
}

fn perr(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> BackendError {
    move |source| BackendError::Program { name, source }
}

impl Enforcer {
    /// Loads the object, writes the initial config (no rules active), then
    /// attaches the programs of `plan`. Nothing can be denied before the
    /// first [`Enforcer::apply`].
    pub fn start(plan: Plan, opts: &Options) -> Result<Self, BackendError> {
        let offsets = kernel::btf::kernel_offsets()?;
        bpf::raise_memlock_limit();
        let sock_addr_backend = if plan.network.backend == Backend::Lsm {
            vardr_common::BackendKind::Lsm
        } else {
            vardr_common::BackendKind::Fallback
        } as u32;
        // Without the LSM's `task_alloc`, a child started in another cgroup
        // is caught at fork (and ended by the agent).
        let fork_scope_check = u32::from(plan.file.backend != Backend::Lsm);
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("SOCK_ADDR_BACKEND", &sock_addr_backend, true)
            .override_global("FORK_SCOPE_CHECK", &fork_scope_check, true)
            .load(bpf::AGENT_OBJECT)?;
        // aya's loader parses the kernel's BTF for itself (~17 MiB, freed
        // with the loader); the programs' loads take the shared parse,
        // asked for only now so that the two are never in memory at once.
        let btf = kernel::btf::shared_aya_btf().map_err(|e| BackendError::Load(e.into()))?;
        // The programs' instructions hold the map fds already; the maps
        // themselves are kept apart, as an adopted set's are.
        let mut maps = objects::MapSet::take_all(&mut ebpf);

        let root = cgroup::root()?;
        let (scope_id, scope_level) = match &opts.scope_cgroup {
            Some(p) => (cgroup::id(p)?, cgroup::level(&root, p)?),
            None => (0, 0),
        };
        let me = std::process::id();
        let agent_start_ticks = crate::process::start_ticks(me).unwrap_or(0);
        let config = Config {
            generation: 0,
            enforce_mask: 0,
            active_mask: 0,
            has_exempt_pids: 0,
            has_exempt_binaries: 0,
            agent_tgid: me,
            agent_cgroup_id: own_service_cgroup(&root, me),
            scope_cgroup_id: scope_id,
            scope_level,
            has_interpreters: 0,
            agent_start_ticks,
            has_identities: 0,
            protect_agent_cgroup: u32::from(!crate::kernel::in_child_pid_namespace()),
            names: names_capture(opts),
            packet_frames: 0,
        };
        maps::write_config(&mut maps, 0, &config)?;
        maps::select_config(&mut maps, 0)?;
        maps::write_agent_above(&mut maps, &agent_ancestors(&root, me))?;

        let mut this = Self {
            maps,
            programs: objects::Programs::Loaded(Box::new(ebpf)),
            plan,
            config,
            config_slot: 0,
            rules: None,
            limits: opts.limits,
            _cgroup_fd: None,
        };
        this.config.enforce_mask = this.enforce_mask(opts.enforce);
        this.attach(
            &btf,
            &root,
            opts.scope_cgroup.as_deref(),
            opts.fanotify_file,
            opts.fanotify_lease,
        )?;
        this.log_verifier_work();
        Ok(this)
    }

    /// What the kernel's verifier went through per loaded program (debug
    /// log): where an agent start spends its time on a slow machine.
    fn log_verifier_work(&self) {
        let objects::Programs::Loaded(ebpf) = &self.programs else {
            return;
        };
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let mut total = 0u64;
        for (name, p) in ebpf.programs() {
            let Ok(info) = p.info() else { continue };
            let n = info.verified_instruction_count().unwrap_or(0);
            total += u64::from(n);
            tracing::debug!(program = name, verified_insns = n, "program loaded");
        }
        tracing::debug!(verified_insns = total, "programs loaded");
    }

    /// Adopts a set an earlier agent pinned, loaded from the same build
    /// with the same plan: its programs never stop (nothing is loaded or
    /// attached), this agent takes its exemption over in its config and
    /// becomes the one that switches its rules. Its rules stay in force
    /// until the first [`Enforcer::apply`].
    pub fn adopt(
        plan: Plan,
        opts: &Options,
        maps_dir: &std::path::Path,
        links_dir: &std::path::Path,
    ) -> Result<Self, BackendError> {
        let programs = objects::Programs::adopt(links_dir)?;
        let mut maps = objects::MapSet::from_pins(maps_dir)?;
        let slot = maps::selected_config(&maps)?;
        let mut config = maps::read_config(&maps, slot)?;
        let root = cgroup::root()?;
        let scope_id = match &opts.scope_cgroup {
            Some(p) => cgroup::id(p)?,
            None => 0,
        };
        if config.scope_cgroup_id != scope_id {
            return Err(BackendError::OtherScope(
                maps_dir.to_path_buf(),
                config.scope_cgroup_id,
                scope_id,
            ));
        }
        let me = std::process::id();
        config.agent_tgid = me;
        config.agent_start_ticks = crate::process::start_ticks(me).unwrap_or(0);
        config.agent_cgroup_id = own_service_cgroup(&root, me);
        config.protect_agent_cgroup = u32::from(!crate::kernel::in_child_pid_namespace());
        config.names = names_capture(opts)
            | (config.names & (vardr_common::NAMES_RULES | vardr_common::NAMES_DENY));
        maps::write_agent_above(&mut maps, &agent_ancestors(&root, me))?;
        let rules = Some(generation::Generation::open(&maps, config.generation)?);
        // What a reload interrupted by the agent's death left in the other
        // slot: never read, freed now.
        let slots = generation::clear(&maps, 1 - config.generation);
        if slots > 0 {
            tracing::info!(
                slots,
                "dropped the rules of an unfinished reload from the adopted set"
            );
        }
        let mut this = Self {
            maps,
            programs,
            plan,
            config,
            config_slot: slot,
            rules,
            limits: opts.limits,
            _cgroup_fd: None,
        };
        this.config.enforce_mask = this.enforce_mask(opts.enforce);
        let next = 1 - slot;
        maps::write_config(&mut this.maps, next, &this.config)?;
        maps::select_config(&mut this.maps, next)?;
        this.config_slot = next;
        Ok(this)
    }

    /// Whether the programs were adopted from a pinned set.
    pub fn adopted(&self) -> bool {
        matches!(self.programs, objects::Programs::Adopted(_))
    }

    /// The config in force (who is governed, the generation).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Enforcement bit per kernel hook: on only where the backend can block.
    fn enforce_mask(&self, enforce: bool) -> u32 {
        if !enforce {
            return 0;
        }
        let mut mask = 0;
        let mut set = |h: KHook, b: Backend| {
            if matches!(b, Backend::Lsm | Backend::Fallback) {
                mask |= 1 << h as u32;
            }
        };
        set(KHook::FileOpen, self.plan.file.backend);
        set(KHook::FileWrite, self.plan.file.backend);
        set(KHook::Exec, self.plan.exec.backend);
        set(KHook::Connect, self.plan.network.backend);
        mask
    }

    fn attach(
        &mut self,
        btf: &Btf,
        root: &std::path::Path,
        scope: Option<&std::path::Path>,
        fanotify_file: bool,
        fanotify_lease: bool,
    ) -> Result<(), BackendError> {
        let objects::Programs::Loaded(ebpf) = &mut self.programs else {
            return Ok(());
        };
        let ebpf: &mut Ebpf = ebpf;
        // Process lifecycle events for the process cache, on every backend.
        for (name, tp) in [
            (bpf::progs::EXEC, "sched_process_exec"),
            (bpf::progs::FORK, "sched_process_fork"),
            (bpf::progs::EXIT, "sched_process_exit"),
        ] {
            let p: &mut BtfTracePoint = prog(ebpf, name)?;
            p.load(tp, btf).map_err(perr(name))?;
            p.attach().map_err(perr(name))?;
        }

        match self.plan.file.backend {
            Backend::Lsm => {
                attach_lsm(ebpf, btf, bpf::progs::LSM_FILE_OPEN, "file_open")?;
                attach_lsm(ebpf, btf, bpf::progs::LSM_TASK_ALLOC, "task_alloc")?;
                for (name, hook) in bpf::progs::LSM_PATH_HOOKS {
                    attach_lsm(ebpf, btf, name, hook)?;
                }
                for (name, hook) in bpf::progs::LSM_OPTIONAL_FILE_HOOKS {
                    let p: &mut Lsm = prog(ebpf, name)?;
                    match p.load(hook, btf) {
                        Ok(()) => {
                            p.attach().map_err(perr(name))?;
                        }
                        // file_truncate: before 6.2 ftruncate(2) passes path_truncate.
                        Err(aya::programs::ProgramError::Btf(
                            aya::BtfError::UnknownBtfTypeName { .. },
                        )) => tracing::debug!("LSM hook {hook} not in this kernel"),
                        Err(e) => return Err(perr(name)(e)),
                    }
                }
            }
            Backend::Fallback if fanotify_file => {}
            Backend::Fallback | Backend::Audit => {
                // Needed only to look the tracepoint ids up: a tracefs this
                // agent mounted is unmounted once they are attached (the
                // guard drops at the end of this arm), so an agent that is
                // killed later leaves no mount behind.
                let (_, _tracefs) =
                    mounts::ensure("tracefs", std::path::Path::new("/sys/kernel/tracing"))?;
                let exits: &[(&str, &str, bool)] = if fanotify_lease {
                    &bpf::progs::OPEN_EXIT_TRACEPOINTS
                } else {
                    &[]
                };
                for &(name, tp, required) in bpf::progs::OPEN_TRACEPOINTS.iter().chain(exits) {
                    let p: &mut TracePoint = prog(ebpf, name)?;
                    p.load().map_err(perr(name))?;
                    match p.attach("syscalls", tp) {
                        Ok(_) => {}
                        Err(e) if !required => {
                            tracing::debug!("tracepoint syscalls/{tp} unavailable: {e}")
                        }
                        Err(e) => return Err(perr(name)(e)),
                    }
                }
            }
            Backend::None => {}
        }
        match self.plan.exec.backend {
            Backend::Lsm => {
                attach_lsm(ebpf, btf, bpf::progs::LSM_BPRM_CHECK, "bprm_check_security")?;
                for (name, hook) in bpf::progs::LSM_MAP_HOOKS {
                    attach_lsm(ebpf, btf, name, hook)?;
                }
                attach_lsm(ebpf, btf, bpf::progs::LSM_PTRACE, "ptrace_access_check")?;
                attach_lsm(ebpf, btf, bpf::progs::LSM_TASK_KILL, "task_kill")?;
                attach_lsm(ebpf, btf, bpf::progs::LSM_TASK_SETRLIMIT, "task_setrlimit")?;
            }
            Backend::Fallback | Backend::Audit => {
                let name = bpf::progs::EXEC_FALLBACK;
                let p: &mut BtfTracePoint = prog(ebpf, name)?;
                p.load("sched_process_exec", btf).map_err(perr(name))?;
                p.attach().map_err(perr(name))?;
            }
            Backend::None => {}
        }
        // `socket_connect` does not see unconnected UDP sends (`sendto`) nor
        // TCP Fast Open, so the LSM backend adds the cgroup programs for
        // those (they skip what `socket_connect` already decided).
        let sock_addr: &[&'static str] = match self.plan.network.backend {
            Backend::Lsm => {
                attach_lsm(ebpf, btf, bpf::progs::LSM_SOCKET_CONNECT, "socket_connect")?;
                attach_lsm(ebpf, btf, bpf::progs::LSM_SOCKET_SENDMSG, "socket_sendmsg")?;
                &bpf::progs::SOCK_ADDR
            }
            Backend::Fallback | Backend::Audit => {
                // Packet sockets: no cgroup program sees their frames. A
                // kernel without system call tracepoints leaves them
                // unchecked: said, not fatal (the rest still holds).
                let tracefs =
                    mounts::ensure("tracefs", std::path::Path::new("/sys/kernel/tracing"));
                let name = bpf::progs::PACKET_SOCKET_FALLBACK;
                let p: &mut TracePoint = prog(ebpf, name)?;
                p.load().map_err(perr(name))?;
                let attached = match &tracefs {
                    Ok(_) => p
                        .attach("syscalls", "sys_enter_socket")
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("tracefs: {e}")),
                };
                if let Err(e) = attached {
                    tracing::warn!(
                        "AF_PACKET and AF_XDP sockets are not checked: tracepoint syscalls/sys_enter_socket: {e}"
                    );
                }
                drop(tracefs);
                &bpf::progs::SOCK_ADDR
            }
            Backend::None => &[],
        };
        if !sock_addr.is_empty() {
            let target = scope.unwrap_or(root);
            let fd = File::open(target)
                .map_err(|e| BackendError::Io(format!("open cgroup {}", target.display()), e))?;
            for &name in sock_addr {
                let p: &mut CgroupSockAddr = prog(ebpf, name)?;
                p.load().map_err(perr(name))?;
                // On 5.7+ aya attaches with a BPF link, which always coexists
                // with other programs and must be created with flags 0 (Single).
                p.attach(&fd, CgroupAttachMode::Single)
                    .map_err(perr(name))?;
            }
            // Raw, ICMP and SCTP sockets of governed processes, recorded
            // for egress, which drops their packets to denied addresses
            // (the LSM backend also judges their sends at `socket_sendmsg`).
            for name in [bpf::progs::RAW_SOCK_CREATE, bpf::progs::RAW_SOCK_RELEASE] {
                let p: &mut CgroupSock = prog(ebpf, name)?;
                p.load().map_err(perr(name))?;
                p.attach(&fd, CgroupAttachMode::Single)
                    .map_err(perr(name))?;
            }
            // Server names: idle (one config read per packet) until the
            // config asks for them, so a reload can turn them on.
            for (name, at) in [
                (bpf::progs::TLS_EGRESS, CgroupSkbAttachType::Egress),
                (bpf::progs::DNS_INGRESS, CgroupSkbAttachType::Ingress),
            ] {
                let p: &mut CgroupSkb = prog(ebpf, name)?;
                p.load().map_err(perr(name))?;
                p.attach(&fd, at, CgroupAttachMode::Single)
                    .map_err(perr(name))?;
            }
            self._cgroup_fd = Some(fd);
        }
        Ok(())
    }

    /// Replaces the rule set: writes it into fresh inner maps of the unused
    /// generation, switches the config to it in one map write, then drops
    /// the old generation. On error the running rule set stays in force.
    pub fn apply(&mut self, set: &RuleSet) -> Result<ApplyStats, BackendError> {
        let staged = self.staging()?.write(set)?;
        let (stats, retired) = self.commit(set, staged)?;
        retired.delete();
        Ok(stats)
    }

    /// Handles on the rule maps for writing the next rule set on another
    /// thread ([`Staging::write`]) while this enforcer keeps serving; then
    /// [`Enforcer::commit`] puts it in force.
    pub fn staging(&self) -> Result<Staging, BackendError> {
        Ok(Staging {
            maps: self.maps.handles(&generation::RULE_MAPS)?,
            next: 1 - self.config.generation,
            limits: self.limits,
        })
    }

    /// Puts a staged rule set in force: its inner maps go in the unused
    /// slot, then the config (generation included) switches in one map
    /// write. Returns what is in force and the old generation, to drop once
    /// running programs are done with it ([`Retired::delete`], which may
    /// run on another thread).
    pub fn commit(
        &mut self,
        set: &RuleSet,
        staged: Staged,
    ) -> Result<(ApplyStats, Retired), BackendError> {
        let Staged { maps, rules, next } = staged;
        if next != 1 - self.config.generation {
            return Err(BackendError::Io(
                "staged rule set".into(),
                std::io::Error::other("written for a generation no longer unused"),
            ));
        }
        let mut cfg = self.config;
        cfg.generation = next;
        cfg.active_mask = set.active_mask;
        cfg.packet_frames = u32::from(set.connect_deny);
        cfg.has_exempt_pids = u32::from(!set.exempt_pids.is_empty());
        cfg.has_exempt_binaries = u32::from(set.has_exempt_binaries);
        cfg.has_interpreters = u32::from(set.has_interpreters);
        cfg.has_identities = u32::from(set.inodes.iter().any(|(_, r)| r.has_rules != 0));
        let deny = vardr_common::Action::Deny as u32;
        cfg.names = (cfg.names & !(vardr_common::NAMES_RULES | vardr_common::NAMES_DENY))
            | if set.domains.is_empty() {
                0
            } else {
                vardr_common::NAMES_RULES
            }
            | if set.domains.iter().any(|d| d.rule.action == deny) {
                vardr_common::NAMES_DENY
            } else {
                0
            };
        // The unused slot: no program reads it (the last switch was a
        // grace period ago), so it can be written at leisure; the switch
        // itself is one 4-byte write.
        // A failure before the switch leaves the slot in force untouched;
        // the unused slot is overwritten by the next reload.
        let slot = 1 - self.config_slot;
        rules.install(&maps, next)?;
        maps::write_config(&mut self.maps, slot, &cfg)?;
        maps::select_config(&mut self.maps, slot)?;
        self.config = cfg;
        self.config_slot = slot;
        match maps::seed_exempt_tasks(&mut self.maps, set) {
            Ok(n) if n > 0 => tracing::debug!("{n} running processes exempt by their binary"),
            Ok(_) => {}
            Err(e) => tracing::warn!("recording processes of exempt binaries: {e}"),
        }
        let stats = rules.stats;
        let old = self.rules.replace(rules);
        Ok((
            stats,
            Retired {
                maps,
                rules: old,
                generation: 1 - next,
            },
        ))
    }

    /// Pins every map and attached link in `set`: they stay in force when
    /// this process exits.
    pub fn pin(&self, set: &crate::pin::OwnSet) -> Result<usize, crate::pin::PinError> {
        match &self.programs {
            objects::Programs::Loaded(ebpf) => set.pin_objects(self.maps.iter(), ebpf),
            // Adopted from pins: they are pinned already.
            objects::Programs::Adopted(links) => Ok(links.len()),
        }
    }

    /// The agent's exempt `vardr.service` cgroup, if it runs in one.
    pub fn agent_cgroup_id(&self) -> Option<u64> {
        (self.config.agent_cgroup_id != 0).then_some(self.config.agent_cgroup_id)
    }

    /// The cgroup the rules are scoped to (0: everything).
    pub fn scope_cgroup_id(&self) -> u64 {
        self.config.scope_cgroup_id
    }

    /// Ends the agent's own exemption, before it exits leaving the programs
    /// pinned: whoever reuses its pid must not inherit it. (The
    /// `vardr.service` cgroup stays exempt: cgroup ids are never reused, and
    /// the next agent starts in it.)
    pub fn release_exemption(&mut self) -> Result<(), BackendError> {
        let mut cfg = self.config;
        cfg.agent_tgid = 0;
        cfg.agent_start_ticks = 0;
        let slot = 1 - self.config_slot;
        maps::write_config(&mut self.maps, slot, &cfg)?;
        maps::select_config(&mut self.maps, slot)?;
        self.config = cfg;
        self.config_slot = slot;
        Ok(())
    }

    /// Whether the kernel blocks matches of `hook`.
    pub fn enforcing(&self, hook: HookKind) -> bool {
        let h = match hook {
            HookKind::File => KHook::FileOpen,
            HookKind::Exec => KHook::Exec,
            HookKind::Network => KHook::Connect,
        };
        self.config.enforce_mask & (1 << h as u32) != 0
    }

    /// The path maps of the rule set in force, for the fanotify deny path
    /// to decide with what the programs read. `None` before the first
    /// rule set (or when their descriptors cannot be duplicated, logged).
    pub fn path_maps(&self) -> Option<PathMaps> {
        let rules = self.rules.as_ref()?;
        rules
            .path_maps(self.config.generation)
            .inspect_err(|e| tracing::warn!("cannot share the path maps with the fanotify deny path, it keeps its own copy: {e}"))
            .ok()
    }

    /// A handle on the exempt-task map for another thread: the fanotify
    /// deny path decides exemptions from what the programs recorded at exec.
    pub fn exempt_tasks(&self) -> Option<ExemptTasks> {
        use std::os::fd::AsFd;
        let aya::maps::Map::HashMap(d) = self.maps.get(bpf::maps::EXEMPT_TASKS).ok()? else {
            return None;
        };
        let fd = d.fd().as_fd().try_clone_to_owned().ok()?;
        let data = MapData::from_fd(fd).ok()?;
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).ok()
    }

    /// A handle on the fanotify lease for the answering thread (see
    /// [`crate::fanotify::lease`]).
    pub fn fanotify_lease(&self) -> Option<crate::fanotify::lease::LeaseMap> {
        use std::os::fd::AsFd;
        let aya::maps::Map::Array(d) = self.maps.get(bpf::maps::FAN_LEASE).ok()? else {
            return None;
        };
        let fd = d.fd().as_fd().try_clone_to_owned().ok()?;
        let data = MapData::from_fd(fd).ok()?;
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).ok()
    }

    /// Whether the kernel holds process `pid` exempt by the binary it
    /// executed (recorded at exec, checked against its start time and the
    /// exempt binaries in force), as the BPF programs decide it.
    pub fn exempt_by_binary(&self, pid: u32) -> bool {
        if self.config.has_exempt_binaries == 0 {
            return false;
        }
        let Some(start) = crate::process::start_ticks(pid) else {
            return false;
        };
        maps::exempt_by_binary(
            &self.maps,
            self.rules.as_ref(),
            pid,
            start,
            self.config.generation,
        )
    }

    /// Takes the event ring buffers (once): lifecycle, then policy.
    pub fn take_events(&mut self) -> Result<Rings, BackendError> {
        let mut take = |name: &'static str| {
            let map = self.maps.take(name)?;
            ring::EventRing::new(name, map).map_err(BackendError::Ring)
        };
        Ok(Rings {
            lifecycle: take(bpf::maps::EVENTS)?,
            policy: take(bpf::maps::POLICY_EVENTS)?,
        })
    }

    /// Events the kernel could not queue (a ring buffer full), summed over
    /// CPUs and both buffers.
    pub fn lost_events(&self) -> Result<u64, BackendError> {
        let name = bpf::maps::LOST_EVENTS;
        let map = self.maps.get(name)?;
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| BackendError::Map { name, source })?;
        let mut total = 0;
        for slot in [vardr_common::LOST_LIFECYCLE, vardr_common::LOST_POLICY] {
            let vals = arr
                .get(&slot, 0)
                .map_err(|source| BackendError::Map { name, source })?;
            total += vals.iter().sum::<u64>();
        }
        Ok(total)
    }
}

/// The two event ring buffers: lifecycle events (exec, fork, exit) apart
/// from policy events, so a flood of the latter cannot push out the former.
pub struct Rings {
    pub lifecycle: ring::EventRing,
    pub policy: ring::EventRing,
}

fn attach_lsm(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    hook: &str,
) -> Result<(), BackendError> {
    let p: &mut Lsm = prog(ebpf, name)?;
    let t = std::time::Instant::now();
    p.load(hook, btf).map_err(perr(name))?;
    let loaded = t.elapsed();
    p.attach().map_err(perr(name))?;
    tracing::debug!(
        program = name,
        load_ms = loaded.as_millis() as u64,
        attach_ms = (t.elapsed() - loaded).as_millis() as u64,
        "LSM program attached"
    );
    Ok(())
}

/// The cgroups above the agent's `vardr.service` (none without one).
pub fn agent_ancestors(root: &std::path::Path, pid: u32) -> Vec<u64> {
    if own_service_cgroup(root, pid) == 0 {
        return Vec::new();
    }
    cgroup::of_pid(root, pid)
        .map(|p| cgroup::ancestor_ids(root, &p, vardr_common::AGENT_ANCESTORS))
        .unwrap_or_default()
}

/// The agent's cgroup, when it is the dedicated `vardr.service` unit: the
/// seed exempts the service's cgroup. A shared cgroup (a login session, a
/// test runner) is not exempted: only the agent process itself is.
fn own_service_cgroup(root: &std::path::Path, pid: u32) -> u64 {
    match cgroup::of_pid(root, pid) {
        Ok(p) if p.file_name().is_some_and(|n| n == "vardr.service") => cgroup::id(&p).unwrap_or(0),
        _ => 0,
    }
}
