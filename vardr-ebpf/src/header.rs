//! The head every event starts with. Shared by the agent's object and the
//! generic hooks' object.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use vardr_common::{EventHeader, EventKind, COMM_LEN};

#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: EventKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind as u32;
    h._pad = 0;
    // SAFETY: helpers without pointer arguments.
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.tid = pid_tgid as u32;
    h.pid = (pid_tgid >> 32) as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
}
