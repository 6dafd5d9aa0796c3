//! The long-running agent: loads the programs, streams events, and removes
//! everything it attached when it stops.
use std::io::Write;

use aya::{
    maps::{MapData, RingBuf},
    programs::BtfTracePoint,
    Btf, Ebpf,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    bpf,
    events::{self, Clock, JsonEvent},
    kernel,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("vardr agent must run as root: loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")]
    NotRoot,
    #[error("this kernel cannot run vardr: {0}")]
    Btf(#[from] kernel::btf::BtfError),
    #[error("loading the BPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Loads and attaches the exec tracker.
fn attach_exec(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), AgentError> {
    let name = bpf::progs::EXEC;
    let err = |source| AgentError::Program { name, source };
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(AgentError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(err)?;
    prog.load("sched_process_exec", btf).map_err(err)?;
    prog.attach().map_err(err)?;
    Ok(())
}

/// Runs until SIGINT or SIGTERM, writing one JSON event per line to `out`.
pub async fn run(mut out: impl Write) -> Result<(), AgentError> {
    if !kernel::is_root() {
        return Err(AgentError::NotRoot);
    }
    let offsets = kernel::btf::kernel_offsets()?;
    bpf::raise_memlock_limit();
    let btf = Btf::from_sys_fs().map_err(|e| AgentError::Load(e.into()))?;
    let mut ebpf = bpf::load_agent(&offsets)?;
    attach_exec(&mut ebpf, &btf)?;

    let events_map = ebpf.take_map(bpf::maps::EVENTS).ok_or(AgentError::Map {
        name: bpf::maps::EVENTS,
        source: aya::maps::MapError::InvalidName {
            name: bpf::maps::EVENTS.into(),
        },
    })?;
    let ring = RingBuf::try_from(events_map).map_err(|source| AgentError::Map {
        name: bpf::maps::EVENTS,
        source,
    })?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| AgentError::Io(e.into()))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let clock = Clock::now();
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();

    tracing::info!(
        kernel = %kernel::release(),
        "vardr agent running: one JSON line per exec on stdout; SIGINT/SIGTERM stops it"
    );
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &clock, &node, &mut out)?;
                guard.clear_ready();
            }
        }
    }
    // Drain what the kernel produced before the signal, then detach.
    drain(ring.get_mut(), &clock, &node, &mut out)?;
    drop(ring);
    drop(ebpf);
    tracing::info!("vardr agent stopped; all programs detached");
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &Clock,
    node: &str,
    out: &mut impl Write,
) -> Result<(), AgentError> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(ev) => {
                let json = JsonEvent::new(&ev, clock, node);
                serde_json::to_writer(&mut *out, &json).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Err(e) => tracing::warn!("dropping malformed event: {e}"),
        }
    }
    out.flush()?;
    Ok(())
}
