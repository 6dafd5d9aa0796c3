//! Kernel struct offsets from the running kernel's BTF.
//!
//! aya-ebpf has no CO-RE field relocations, so the programs get the offsets
//! they need as read-only globals computed here.
use std::{
    path::Path,
    sync::{Arc, Mutex, Weak},
};

use super::btf_reader::Btf;
use vardr_common::{KernelOffsets, OVL_STACK_IN_DENTRY, OVL_STACK_IN_INODE};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF at {VMLINUX_BTF} (kernel built without CONFIG_DEBUG_INFO_BTF)")]
    Missing,
    #[error("cannot parse {VMLINUX_BTF}: {0}")]
    Parse(String),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
}

/// Whether the kernel exposes its BTF.
pub fn available() -> bool {
    Path::new(VMLINUX_BTF).exists()
}

/// The kernel's BTF as aya parses it, for the program loads of a start or a
/// reload (the probe's, the agent's, the identity iterator's): parsed once
/// while anyone holds it, freed with its last holder (it takes ~17 MiB).
pub fn shared_aya_btf() -> Result<Arc<aya::Btf>, aya::BtfError> {
    static SHARED: Mutex<Weak<aya::Btf>> = Mutex::new(Weak::new());
    // Held while parsing: a concurrent caller waits for this parse.
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(btf) = shared.upgrade() {
        return Ok(btf);
    }
    let btf = Arc::new(aya::Btf::from_sys_fs()?);
    *shared = Arc::downgrade(&btf);
    Ok(btf)
}

/// Offsets of the struct members the BPF programs read. Computed once per
/// process: parsing the kernel's BTF takes tens of MiB and milliseconds,
/// and the identity iterator must use the very offsets the hooks were
/// given (the overlay module may load in between).
pub fn kernel_offsets() -> Result<KernelOffsets, BtfError> {
    static OFFSETS: Mutex<Option<KernelOffsets>> = Mutex::new(None);
    let mut cached = OFFSETS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(o) = *cached {
        return Ok(o);
    }
    // The parsed BTF is dropped before returning.
    let o = parse_offsets()?;
    *cached = Some(o);
    Ok(o)
}

fn parse_offsets() -> Result<KernelOffsets, BtfError> {
    if !available() {
        return Err(BtfError::Missing);
    }
    let btf = read(VMLINUX_BTF, None)?;
    let m = |s: &str, f: &str| member_offset(&btf, s, f);
    Ok(KernelOffsets {
        file_f_path: m("file", "f_path")?,
        path_dentry: m("path", "dentry")?,
        dentry_d_inode: m("dentry", "d_inode")?,
        dentry_d_parent: m("dentry", "d_parent")?,
        file_f_inode: m("file", "f_inode")?,
        file_f_flags: m("file", "f_flags")?,
        file_f_mode: m("file", "f_mode")?,
        inode_i_ino: m("inode", "i_ino")?,
        inode_i_sb: m("inode", "i_sb")?,
        super_block_s_dev: m("super_block", "s_dev")?,
        super_block_s_magic: m("super_block", "s_magic")?,
        binprm_file: m("linux_binprm", "file")?,
        binprm_filename: m("linux_binprm", "filename")?,
        task_flags: m("task_struct", "flags")?,
        task_mm: m("task_struct", "mm")?,
        task_pid: m("task_struct", "pid")?,
        task_tgid: m("task_struct", "tgid")?,
        task_real_parent: m("task_struct", "real_parent")?,
        task_exit_code: m("task_struct", "exit_code")?,
        task_signal: m("task_struct", "signal")?,
        signal_live: m("signal_struct", "live")?,
        task_loginuid: m("task_struct", "loginuid").unwrap_or(0),
        mm_arg_start: m("mm_struct", "arg_start")?,
        mm_arg_end: m("mm_struct", "arg_end")?,
        mm_exe_file: m("mm_struct", "exe_file")?,
        socket_type: m("socket", "type")?,
        task_group_leader: m("task_struct", "group_leader")?,
        task_start_boottime: m("task_struct", "start_boottime")?,
        dentry_d_name_name: m("dentry", "d_name")? + m("qstr", "name")?,
        path_mnt: m("path", "mnt")?,
        vfsmount_mnt_root: m("vfsmount", "mnt_root")?,
        mount_mnt: m("mount", "mnt")?,
        mount_mnt_parent: m("mount", "mnt_parent")?,
        mount_mnt_mountpoint: m("mount", "mnt_mountpoint")?,
        vma_vm_file: m("vm_area_struct", "vm_file")?,
        vma_vm_flags: m("vm_area_struct", "vm_flags")?,
        task_fs: m("task_struct", "fs")?,
        fs_struct_root: m("fs_struct", "root")?,
        dentry_d_sb: m("dentry", "d_sb")?,
        vfsmount_mnt_sb: m("vfsmount", "mnt_sb")?,
        task_ptrace: m("task_struct", "ptrace")?,
        task_cgroups: m("task_struct", "cgroups")?,
        css_set_dfl_cgrp: m("css_set", "dfl_cgrp")?,
        cgroup_kn: m("cgroup", "kn")?,
        kernfs_node_id: m("kernfs_node", "id")?,
        cgroup_level: m("cgroup", "level")?,
        cgroup_ancestors: m("cgroup", "ancestors").unwrap_or(0),
        binprm_interp: m("linux_binprm", "interp")?,
        fs_struct_pwd: m("fs_struct", "pwd")?,
        task_cred: m("task_struct", "cred")?,
        cred_uid: m("cred", "uid")?,
        cred_gid: m("cred", "gid")?,
        cred_suid: m("cred", "suid")?,
        cred_sgid: m("cred", "sgid")?,
        cred_euid: m("cred", "euid")?,
        cred_egid: m("cred", "egid")?,
        cred_fsuid: m("cred", "fsuid")?,
        cred_fsgid: m("cred", "fsgid")?,
        task_nsproxy: m("task_struct", "nsproxy")?,
        task_thread_pid: m("task_struct", "thread_pid")?,
        pid_level: m("pid", "level")?,
        pid_numbers: m("pid", "numbers")?,
        upid_size: btf
            .struct_size("upid")
            .ok_or_else(|| BtfError::NoStruct("upid".into()))?,
        upid_nr: m("upid", "nr")?,
        upid_ns: m("upid", "ns")?,
        cred_user_ns: m("cred", "user_ns")?,
        cred_cap_effective: m("cred", "cap_effective")?,
        cred_cap_inheritable: m("cred", "cap_inheritable")?,
        cred_cap_permitted: m("cred", "cap_permitted")?,
        task_files: m("task_struct", "files")?,
        files_fdt: m("files_struct", "fdt")?,
        fdtable_max_fds: m("fdtable", "max_fds")?,
        fdtable_fd: m("fdtable", "fd")?,
        socket_sk: m("socket", "sk")?,
        msghdr_name: m("msghdr", "msg_name")?,
        ..skb_offsets(
            &btf,
            sock_offsets(&btf, namespace_offsets(&btf, overlay_offsets(&btf))),
        )
    })
}

/// Where `struct sock` keeps what a TracingPolicy `sock` argument shows.
/// Optional: a kernel without them (no IPv6) refuses `sock` arguments,
/// and everything else still loads.
fn sock_offsets(btf: &Btf, mut o: KernelOffsets) -> KernelOffsets {
    let m = |s: &str, f: &str| member_offset(btf, s, f).ok();
    let found = (|| {
        Some([
            m("sock_common", "skc_family")?,
            m("sock_common", "skc_state")?,
            m("sock_common", "skc_num")?,
            m("sock_common", "skc_dport")?,
            m("sock_common", "skc_rcv_saddr")?,
            m("sock_common", "skc_daddr")?,
            m("sock_common", "skc_v6_rcv_saddr")?,
            m("sock_common", "skc_v6_daddr")?,
            m("sock", "sk_protocol")?,
            m("sock", "sk_type")?,
        ])
    })();
    if let Some([family, state, num, dport, saddr, daddr, saddr6, daddr6, protocol, type_]) = found
    {
        // `__sk_common` is the first member of `struct sock`.
        o.skc_family = family;
        o.skc_state = state;
        o.skc_num = num;
        o.skc_dport = dport;
        o.skc_rcv_saddr = saddr;
        o.skc_daddr = daddr;
        o.skc_v6_rcv_saddr = saddr6;
        o.skc_v6_daddr = daddr6;
        o.sk_protocol = protocol;
        o.sk_type = type_;
    }
    o
}

/// Where `struct sk_buff` keeps what a TracingPolicy `skb` argument shows.
/// Optional as [`sock_offsets`]: `skb_head` stays 0 (and `skb` arguments
/// are refused) when one is missing.
fn skb_offsets(btf: &Btf, mut o: KernelOffsets) -> KernelOffsets {
    let m = |f: &str| member_offset(btf, "sk_buff", f).ok();
    let found = (|| {
        Some([
            m("head")?,
            m("network_header")?,
            m("len")?,
            m("priority")?,
            m("mark")?,
            m("hash")?,
        ])
    })();
    if let Some([head, network, len, priority, mark, hash]) = found {
        o.skb_head = head;
        o.skb_network_header = network;
        o.skb_len = len;
        o.skb_priority = priority;
        o.skb_mark = mark;
        o.skb_hash = hash;
    }
    o
}

/// Where each namespace kind's inode number is: the `nsproxy` member that
/// points to it and `ns.inum` in its struct. A kind the kernel lacks
/// (time namespaces without `CONFIG_TIME_NS`) keeps 0s; the active pid
/// namespace and the user namespace are not reached through `nsproxy`.
fn namespace_offsets(btf: &Btf, mut o: KernelOffsets) -> KernelOffsets {
    use vardr_common::{
        NS_CGROUP, NS_IPC, NS_MNT, NS_NET, NS_PID, NS_PID_FOR_CHILDREN, NS_TIME,
        NS_TIME_FOR_CHILDREN, NS_USER, NS_UTS,
    };
    let inum = |s: &str| -> Option<u64> {
        Some(member_offset(btf, s, "ns").ok()? + member_offset(btf, "ns_common", "inum").ok()?)
    };
    let kinds: [(usize, Option<&str>, &str); 10] = [
        (NS_UTS, Some("uts_ns"), "uts_namespace"),
        (NS_IPC, Some("ipc_ns"), "ipc_namespace"),
        (NS_MNT, Some("mnt_ns"), "mnt_namespace"),
        (NS_PID, None, "pid_namespace"),
        (
            NS_PID_FOR_CHILDREN,
            Some("pid_ns_for_children"),
            "pid_namespace",
        ),
        (NS_NET, Some("net_ns"), "net"),
        (NS_TIME, Some("time_ns"), "time_namespace"),
        (
            NS_TIME_FOR_CHILDREN,
            Some("time_ns_for_children"),
            "time_namespace",
        ),
        (NS_CGROUP, Some("cgroup_ns"), "cgroup_namespace"),
        (NS_USER, None, "user_namespace"),
    ];
    for (k, member, ty) in kinds {
        let (Some(i), ptr) = (
            inum(ty),
            member.map(|m| member_offset(btf, "nsproxy", m).ok()),
        ) else {
            continue;
        };
        match ptr {
            Some(None) => continue,
            Some(Some(p)) => o.nsproxy_ns[k] = p,
            None => {}
        }
        o.ns_inum[k] = i;
    }
    o
}

/// Where overlayfs keeps a dentry's layers, for the identity of overlay
/// files (`vardr-ebpf/src/identity.rs`). From the BTF of the kernel or of
/// the `overlay` module; when the module is not loaded yet (no overlay
/// mounted), from the layout every kernel since 4.19 has (see
/// [`overlay_default`]).
fn overlay_offsets(vmlinux: &Btf) -> KernelOffsets {
    let from_btf = |btf: &Btf| -> Option<KernelOffsets> {
        let m = |s: &str, f: &str| member_offset(btf, s, f).ok();
        let mut o = KernelOffsets {
            ovl_inode_vfs_inode: m("ovl_inode", "vfs_inode")?,
            ovl_inode_upper: m("ovl_inode", "__upperdentry")?,
            ovl_entry_lower_dentry: m("ovl_path", "dentry")?,
            ..KernelOffsets::default()
        };
        if let Some(oe) = m("ovl_inode", "oe") {
            o.ovl_inode_oe = oe;
            o.ovl_lower_kind = OVL_STACK_IN_INODE;
            o.ovl_entry_numlower = m("ovl_entry", "__numlower")?;
            o.ovl_entry_lower_dentry += m("ovl_entry", "__lowerstack")?;
        } else {
            o.dentry_d_fsdata = m("dentry", "d_fsdata")
                .or_else(|| member_offset(vmlinux, "dentry", "d_fsdata").ok())?;
            o.ovl_lower_kind = OVL_STACK_IN_DENTRY;
            o.ovl_entry_numlower = m("ovl_entry", "numlower")?;
            o.ovl_entry_lower_dentry += m("ovl_entry", "lowerstack")?;
        }
        Some(o)
    };
    if let Some(o) = from_btf(vmlinux) {
        return o;
    }
    if let Some(o) = read(OVERLAY_BTF, Some(vmlinux))
        .ok()
        .and_then(|b| from_btf(&b))
    {
        return o;
    }
    overlay_default(vmlinux)
}

/// The layout without overlay BTF: `struct ovl_inode` is four words, the
/// VFS inode, the upper dentry, then `oe` (6.5+); `struct ovl_entry` is
/// the number of lower layers then the stack of (layer, dentry) (6.5+),
/// or a word and an `rcu_head` before them (up to 6.4, in `d_fsdata`).
fn overlay_default(vmlinux: &Btf) -> KernelOffsets {
    let (Some(inode_size), Ok(d_fsdata)) = (
        vmlinux.struct_size("inode"),
        member_offset(vmlinux, "dentry", "d_fsdata"),
    ) else {
        return KernelOffsets::default();
    };
    let vfs = 32;
    let upper = vfs + inode_size;
    let mut o = KernelOffsets {
        ovl_inode_vfs_inode: vfs,
        ovl_inode_upper: upper,
        ..KernelOffsets::default()
    };
    if kernel_at_least(6, 5) {
        o.ovl_lower_kind = OVL_STACK_IN_INODE;
        o.ovl_inode_oe = upper + 8;
        o.ovl_entry_numlower = 0;
        o.ovl_entry_lower_dentry = 8 + 8;
    } else {
        o.ovl_lower_kind = OVL_STACK_IN_DENTRY;
        o.dentry_d_fsdata = d_fsdata;
        o.ovl_entry_numlower = 16;
        o.ovl_entry_lower_dentry = 24 + 8;
    }
    o
}

/// BTF of the overlay module, when it is loaded.
const OVERLAY_BTF: &str = "/sys/kernel/btf/overlay";

/// Reads and parses a BTF file (`base`: vmlinux's, for a module's).
fn read<'b>(path: &str, base: Option<&'b Btf<'b>>) -> Result<Btf<'b>, BtfError> {
    let data = std::fs::read(path).map_err(|e| BtfError::Parse(e.to_string()))?;
    match base {
        None => Btf::parse(data),
        Some(base) => Btf::parse_split(data, base),
    }
    .map_err(|e| BtfError::Parse(e.to_string()))
}

/// The BTF id of kernel function `name` in vmlinux (what a trampoline
/// program is loaded for).
pub fn function_id(name: &str) -> Result<u32, BtfError> {
    let btf = read(VMLINUX_BTF, None)?;
    btf.func_id(name)
        .ok_or_else(|| BtfError::Parse(format!("no function {name} in the kernel's BTF")))
}

/// The return type and parameters of kernel function `name` (an LSM
/// hook's `bpf_lsm_<hook>`: what its BPF program's arguments are).
pub fn function_signature(
    name: &str,
) -> Result<
    (
        super::btf_reader::TypeShape,
        Vec<super::btf_reader::TypeShape>,
    ),
    BtfError,
> {
    let btf = read(VMLINUX_BTF, None)?;
    btf.func_signature(name)
        .ok_or_else(|| BtfError::Parse(format!("no function {name} in the kernel's BTF")))
}

/// Whether the running kernel's release is at least `major.minor`.
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Byte offset of `member` in `struct name`, looking through anonymous
/// structs and unions.
pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u64, BtfError> {
    if btf.struct_id(name).is_none() {
        return Err(BtfError::NoStruct(name.into()));
    }
    btf.member_offset(name, member)
        .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_running_kernel() {
        if !available() {
            eprintln!("skipped: {VMLINUX_BTF} not present");
            return;
        }
        let off = kernel_offsets().expect("offsets");
        // struct file starts with other members; f_path is never first.
        assert!(off.file_f_path > 0 && off.file_f_path < 512, "{off:?}");
        assert!(
            off.binprm_filename > 0 && off.binprm_filename < 1024,
            "{off:?}"
        );
        assert_ne!(off.ovl_lower_kind, vardr_common::OVL_STACK_NONE, "{off:?}");
        // Every namespace kind is reachable (the time ones need
        // CONFIG_TIME_NS, which Debian's kernels have); only the pid and
        // user namespaces are not reached through nsproxy.
        for (k, (member, inum)) in off.nsproxy_ns.iter().zip(off.ns_inum).enumerate() {
            assert_ne!(inum, 0, "kind {k}: {off:?}");
            let direct = k == vardr_common::NS_PID || k == vardr_common::NS_USER;
            assert_eq!(*member == 0, direct, "kind {k}: {off:?}");
        }
        assert_eq!(off.upid_size, 16, "struct upid is an int and a pointer");
        // The packet headers of an sk_buff are reached from `head`.
        assert_ne!(off.skb_head, 0, "{off:?}");
        assert_ne!(off.skb_network_header, 0, "{off:?}");
    }

    /// The reader finds what a general BTF crate finds, for every member of
    /// every struct the agent reads (and the anonymous ones they contain).
    #[test]
    fn reader_agrees_with_btf_rs_on_the_running_kernel() {
        use btf_rs::{BtfType, Type};
        if !available() {
            eprintln!("skipped: {VMLINUX_BTF} not present");
            return;
        }
        let ours = read(VMLINUX_BTF, None).expect("ours");
        let theirs = btf_rs::Btf::from_file(VMLINUX_BTF).expect("btf_rs");
        let mut checked = 0;
        for name in [
            "file",
            "path",
            "dentry",
            "inode",
            "super_block",
            "linux_binprm",
            "task_struct",
            "signal_struct",
            "mm_struct",
            "socket",
            "qstr",
            "vfsmount",
            "mount",
            "vm_area_struct",
            "fs_struct",
            "css_set",
            "cgroup",
            "kernfs_node",
            "cred",
        ] {
            let types = theirs.resolve_types_by_name(name).expect(name);
            let Some(s) = types.iter().find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            }) else {
                panic!("btf_rs: no struct {name}");
            };
            assert_eq!(ours.struct_size(name), Some(s.size() as u64), "{name}");
            for m in &s.members {
                let member = theirs.resolve_name(m as &dyn BtfType).unwrap_or_default();
                if member.is_empty() {
                    continue;
                }
                assert_eq!(
                    ours.member_offset(name, &member),
                    Some(u64::from(m.bit_offset()) / 8),
                    "{name}.{member}"
                );
                checked += 1;
            }
        }
        assert!(checked > 300, "only {checked} members");
        // Members inside anonymous unions and structs.
        let offsets = kernel_offsets().expect("offsets");
        assert_eq!(
            Some(offsets.dentry_d_name_name),
            ours.member_offset("dentry", "d_name")
                .zip(ours.member_offset("qstr", "name"))
                .map(|(a, b)| a + b)
        );
    }

    /// The layout assumed while the overlay module is not loaded is the
    /// one this kernel's BTF describes (when it describes one).
    #[test]
    fn overlay_default_matches_btf() {
        if !available() {
            eprintln!("skipped: {VMLINUX_BTF} not present");
            return;
        }
        let btf = read(VMLINUX_BTF, None).expect("btf");
        let split = read(OVERLAY_BTF, Some(&btf));
        let described = overlay_offsets(&btf);
        if member_offset(&btf, "ovl_inode", "vfs_inode").is_err() && split.is_err() {
            eprintln!("skipped: no overlay BTF on this kernel (module not loaded)");
            return;
        }
        let d = overlay_default(&btf);
        assert_eq!(
            (
                d.ovl_inode_vfs_inode,
                d.ovl_inode_upper,
                d.ovl_inode_oe,
                d.dentry_d_fsdata,
                d.ovl_lower_kind,
                d.ovl_entry_numlower,
                d.ovl_entry_lower_dentry
            ),
            (
                described.ovl_inode_vfs_inode,
                described.ovl_inode_upper,
                described.ovl_inode_oe,
                described.dentry_d_fsdata,
                described.ovl_lower_kind,
                described.ovl_entry_numlower,
                described.ovl_entry_lower_dentry
            )
        );
    }
}
