//! Try-loads of trivial programs and feature probes.
use std::path::Path;

use aya::{
    maps::MapType,
    programs::{
        BtfTracePoint, CgroupSkb, CgroupSockAddr, Iter, KProbe, Lsm, ProgramError, ProgramType,
        RawTracePoint, TracePoint, UProbe,
    },
    sys::{is_helper_supported, is_map_supported, BpfHelper},
    Btf, EbpfLoader,
};

use super::{Check, ProgramCheck};
use crate::{bpf::PROBE_OBJECT, kernel::errno_name};

const TYPES: [&str; 9] = [
    "lsm",
    "tp_btf",
    "tracepoint",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "cgroup_skb",
    "iter",
    "uprobe",
    "kprobe",
];

pub(super) fn not_root() -> Vec<ProgramCheck> {
    TYPES
        .iter()
        .map(|t| ProgramCheck {
            program_type: (*t).into(),
            check: Check::fail("not checked: loading programs needs root"),
        })
        .collect()
}

pub(super) fn programs() -> Vec<ProgramCheck> {
    crate::bpf::raise_memlock_limit();
    let mut ebpf = match EbpfLoader::new().load(PROBE_OBJECT) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("probe object failed to load: {e}");
            return TYPES
                .iter()
                .map(|t| ProgramCheck {
                    program_type: (*t).into(),
                    check: Check::fail(why.clone()),
                })
                .collect();
        }
    };
    // After the loader (which parses the kernel's BTF for itself): the
    // two parses are never in memory at once.
    let btf = crate::kernel::btf::shared_aya_btf().ok();
    let mut load =
        |prog: &str, f: &dyn Fn(&mut aya::programs::Program) -> Result<(), String>| match ebpf
            .program_mut(prog)
        {
            Some(p) => f(p),
            None => Err(format!("program {prog} missing from probe object")),
        };
    let need_btf =
        |btf: &Option<std::sync::Arc<Btf>>| btf.clone().ok_or_else(|| "no kernel BTF".to_string());
    let results: [(&str, Result<(), String>); 9] = [
        (
            "lsm",
            load("probe_lsm", &|p| {
                let btf = need_btf(&btf)?;
                as_prog::<Lsm>(p)?.load("file_open", &btf).map_err(why)
            }),
        ),
        (
            "tp_btf",
            load("probe_tp_btf", &|p| {
                let btf = need_btf(&btf)?;
                as_prog::<BtfTracePoint>(p)?
                    .load("sched_process_exec", &btf)
                    .map_err(why)
            }),
        ),
        (
            "tracepoint",
            load("probe_tracepoint", &|p| {
                as_prog::<TracePoint>(p)?.load().map_err(why)
            }),
        ),
        (
            "raw_tracepoint",
            load("probe_raw_tracepoint", &|p| {
                as_prog::<RawTracePoint>(p)?.load().map_err(why)
            }),
        ),
        (
            "cgroup_sock_addr",
            load("probe_sock_addr", &|p| {
                as_prog::<CgroupSockAddr>(p)?.load().map_err(why)
            }),
        ),
        (
            "cgroup_skb",
            load("probe_skb", &|p| {
                as_prog::<CgroupSkb>(p)?.load().map_err(why)
            }),
        ),
        (
            // The task_file iterator that tells the agent the identities of
            // files on overlays (kernel::identity).
            "iter",
            load("probe_iter", &|p| {
                let btf = need_btf(&btf)?;
                as_prog::<Iter>(p)?.load("task_file", &btf).map_err(why)
            }),
        ),
        (
            "uprobe",
            load("probe_uprobe", &|p| {
                as_prog::<UProbe>(p)?.load().map_err(why)?;
                pmu("uprobe", "CONFIG_UPROBE_EVENTS")
            }),
        ),
        (
            "kprobe",
            load("probe_kprobe", &|p| {
                as_prog::<KProbe>(p)?.load().map_err(why)?;
                pmu("kprobe", "CONFIG_KPROBES")
            }),
        ),
    ];
    results
        .into_iter()
        .map(|(t, r)| ProgramCheck {
            program_type: t.into(),
            check: match r {
                Ok(()) => Check::ok("loads"),
                Err(e) => Check::fail(e),
            },
        })
        .collect()
}

fn as_prog<'a, T>(p: &'a mut aya::programs::Program) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    p.try_into().map_err(|e: ProgramError| e.to_string())
}

/// A kprobe/uprobe program loads wherever the program type exists, but it can
/// only be attached through the matching perf PMU.
fn pmu(name: &str, config: &str) -> Result<(), String> {
    if Path::new(&format!("/sys/bus/event_source/devices/{name}")).exists() {
        Ok(())
    } else {
        Err(format!(
            "program loads, but there is no {name} PMU to attach it ({config} off)"
        ))
    }
}

/// One-line reason for a load failure.
fn why(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => {
            format!("load failed: {}", errno_name(&io_error))
        }
        other => other.to_string(),
    }
}

pub(super) fn send_signal(root: bool) -> Check {
    if !root {
        return Check::fail("not checked: needs root");
    }
    match is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_send_signal) {
        Ok(true) => Check::ok("available to tracepoint programs"),
        Ok(false) => Check::fail("helper not available (kernel < 5.3)"),
        Err(e) => Check::fail(format!("probe failed: {e}")),
    }
}

pub(super) fn ring_buffer(root: bool) -> Check {
    if !root {
        return Check::fail("not checked: needs root");
    }
    match is_map_supported(MapType::RingBuf) {
        Ok(true) => Check::ok("BPF_MAP_TYPE_RINGBUF supported"),
        Ok(false) => Check::fail("BPF_MAP_TYPE_RINGBUF unsupported (kernel < 5.8)"),
        Err(e) => Check::fail(format!("probe failed: {e}")),
    }
}
