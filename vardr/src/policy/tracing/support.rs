//! What vardr does with each part of a TracingPolicy, for documentation
//! (`markdown_table`) and for tools that want to explain a rejection.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Translated to native rules with Tetragon's meaning.
    Yes,
    /// Some values or forms only; the rest is rejected.
    Partial,
    /// Rejected with a diagnostic.
    NotYet,
    /// Accepted; has no effect in Tetragon either.
    NoEffect,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Yes => "supported",
            Support::Partial => "partly",
            Support::NotYet => "not yet",
            Support::NoEffect => "accepted, no effect",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub field: &'static str,
    pub support: Support,
    pub note: &'static str,
}

const fn f(field: &'static str, support: Support, note: &'static str) -> Feature {
    Feature {
        field,
        support,
        note,
    }
}

pub const FEATURES: &[Feature] = {
    use Support::{NoEffect, NotYet, Partial, Yes};
    &[
    f("kind: TracingPolicy", Yes, "`metadata.name` names the rules"),
    f("kind: TracingPolicyNamespaced", Yes, "its hooks govern the pods of `metadata.namespace` only, found on the node (the kubelet's pod log directories, the pods' cgroups), followed as pods come and go; lsmhooks run as LSM hooks of their own"),
    f("metadata.labels, annotations, server fields", NoEffect, "Kubernetes bookkeeping"),
    f("spec.lsmhooks: file_open", Yes, "`file` argument 0 → `file_open` rules when native rules say it all, else an LSM hook of its own"),
    f("spec.lsmhooks: bprm_check_security", Yes, "`linux_binprm` argument 0 → `exec` rules (Equal → `binaries`) when native rules say it all, else an LSM hook of its own"),
    f("spec.lsmhooks: socket_connect", Yes, "`socket` argument 0, `sockaddr` argument 1 → `connect` rules when native rules say it all, else an LSM hook of its own"),
    f("spec.lsmhooks: any hook, as a hook of its own", Partial, "a BPF LSM program with the kprobes' selectors and actions in the kernel, where the kernel runs the BPF LSM; arguments 0 to 5 checked against the hook's BTF at load; Override returns `argError`, Sigkill refuses the call too; paths compared as strings; up to 8 per policy set"),
    f("lsmhooks args", Partial, "`index` and `type`; `resolve`, `label`, `btfType`, ... not yet"),
    f("matchArgs Equal", Yes, "exact paths of the `file` (up to 8 values, as in Tetragon) or `linux_binprm`"),
    f("matchArgs Prefix", Partial, "whole directories only (value ends with `/`); a string prefix such as `/etc/passw` is rejected"),
    f("matchArgs SAddr, SPort, Family", Partial, "on the `sockaddr` (the destination of `connect`): CIDRs or IPs, single ports (no `min:max`), AF_INET/AF_INET6"),
    f("matchArgs Protocol", Partial, "on the `socket`: one of IPPROTO_TCP, IPPROTO_UDP per selector"),
    f("matchArgs DAddr, DPort on sockaddr", NotYet, "Tetragon rejects them too: use SAddr, SPort"),
    f("other matchArgs operators on lsmhooks", Yes, "as an LSM hook of its own (the kprobes' operators); InMap, matchArgs args not yet"),
    f("matchActions Post", Partial, "→ `alert`; `rateLimit`, `imaHash` not yet (stack traces: kprobes only, as in Tetragon)"),
    f("matchActions Override, Sigkill (lsmhooks)", Partial, "→ `deny` (with `--enforce`): vardr refuses the call with its own errno and never kills; Override needs a non-zero `argError`"),
    f("matchActions NoPost, Signal, GetUrl, DnsLookup, ...", Partial, "NoPost and Signal (`argSig`) on kprobes, tracepoints, uprobes and lsmhooks; the others not yet"),
    f("no matchActions", Yes, "Tetragon's default Post → `alert`"),
    f("matchBinaries", Partial, "on kprobes, tracepoints and uprobes: one entry; In or NotIn of exact paths, matched in the kernel by the identity of the file the process executed (recorded at exec, inherited at fork; a hard link matches, a copy does not); Prefix, NotPrefix, Postfix, NotPostfix on the executable's path, built in the kernel; followChildren with In/NotIn (the binaries' processes, their descendants and what they execute, tracked from the first hook's load); on lsmhooks as an LSM hook of its own"),
    f("matchNamespaces", Partial, "on kprobes, tracepoints and uprobes, in the kernel: Uts, Ipc, Mnt, Pid, PidForChildren, Net, Time, TimeForChildren, Cgroup, User; In/NotIn, up to 4 values (inode numbers or `host_ns`, the initial namespace); a number no namespace can have (such as `\"1\"`) is refused; on lsmhooks as an LSM hook of its own"),
    f("matchPIDs", Partial, "on kprobes, tracepoints and uprobes, in the kernel: In/NotIn, up to 4 values, up to 4 entries; `isNamespacePID` (the pid in the process's own pid namespace); `followForks` (the process or one of its 10 nearest ancestors, by the live parent chain: a process whose parent exited is reparented); on lsmhooks as an LSM hook of its own"),
    f("matchCapabilities", Partial, "on kprobes, tracepoints and uprobes, in the kernel: one entry, Effective/Inheritable/Permitted, In (one of the values is in the set) or NotIn, `isNamespaceCapability` (only outside the initial user namespace); on lsmhooks as an LSM hook of its own"),
    f("matchParentBinaries", Partial, "on kprobes, tracepoints and uprobes: as matchBinaries, for what the parent process executed; on lsmhooks as an LSM hook of its own"),
    f("matchNamespaceChanges", Partial, "on kprobes, tracepoints and uprobes, in the kernel: one entry, In/NotIn, any namespace kind, against the namespaces the process had at its exec (recorded by the exec tracking; a process without a record satisfies neither); on lsmhooks as an LSM hook of its own"),
    f("matchCapabilityChanges", Partial, "as matchCapabilities, on the capabilities gained since the process's exec"),
    f("matchReturnArgs", Partial, "kprobes with `return: true`: up to 3 integer entries on the return value, in the kernel"),
    f("matchReturnActions", Partial, "kprobes with `return: true`: Post, NoPost, Sigkill, Signal at the return, when the value passed matchReturnArgs (the call has run); Override and rateLimit there refused"),
    f("matchData, macros, selector label", NotYet, ""),
    f("selectors (up to 5 per hook)", Yes, "one rule per selector; overlapping deny/alert selectors whose outcome would differ from Tetragon's first-match order are rejected"),
    f("hook without selectors or selector without matchArgs", Yes, "every call matches (as in Tetragon); lsmhooks then run as an LSM hook of its own"),
    f("message, tags", Yes, "in the hook's events (`message`, `tags`), with Tetragon's bounds"),
    f("options: policy-mode", Yes, "`monitor` turns denies into alerts"),
    f("other options", NotYet, ""),
    f("kprobes", Partial, "entry probes (`syscall: true` too) where the kernel has kprobes; arguments int, uint32, int64, uint64, size_t, string, filename, file, path, linux_binprm, sock, sockaddr, skb (kernel functions); return probes (`return: true`, `returnArg` int, uint32, int64, uint64, size_t); fd (resolved to its file in the kernel), char_buf (`sizeArgIndex`, reported only), cred (reported only); `returnArgAction`, `data` not yet"),
    f("tracepoints", Partial, "fields by index (the format's, common_ ones counted), as their format says (`auto`) or as int, uint32, int64, uint64, size_t, string, file, path, filename, linux_binprm, skb (a pointer field such as `skbaddr`); `raw` not yet"),
    f("kprobes/tracepoints matchArgs", Partial, "strings: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix (values up to 127 bytes); numbers: Equal, NotEqual, GT, LT, Mask (up to 8 values); sock: SPort, DPort (ports, lo:hi ranges), SAddr, DAddr (CIDRs), their Not and Priv forms, Protocol, Family, State; sockaddr: SAddr, SPort, Family; skb: as sock but State; evaluated in the kernel"),
    f("kprobes/tracepoints matchActions", Partial, "Post (with rateLimit and rateLimitScope; kernelStackTrace and userStackTrace on kprobes), NoPost, Sigkill, Signal; Override (negative `argError`) on kprobes, by an fmod_ret program on the function: `security_*` functions, and error-injectable ones (system calls) on kernels with CONFIG_FUNCTION_ERROR_INJECTION; a function the kernel refuses is an error at load. Not on tracepoints (a tracepoint cannot change a result) nor uprobes"),
    f("uprobes", Partial, "`path`, `symbols` and `offsets` (file offsets); arguments int, uint32, int64, uint64, size_t, string; addrs, refCtrOffsets, btfPath, binaryDigests, return probes, data not yet"),
    f("lists", Partial, "kprobes `call: \"list:NAME\"`: one hook per function of the list (up to 64), type syscalls (system call probes; `sys_dup`, `dup`, `x64/sys_dup`) or none (kernel functions); generated_syscalls and generated_ftrace not yet"),
    f("fentries, usdts, loader, enforcers, selectorsMacros", NotYet, ""),
    f("podSelector, containerSelector, hostSelector, nodeSelector, matchWorkloads", NotYet, "no Kubernetes workload filtering"),
    ]
};

/// `FEATURES` as a markdown table.
pub fn markdown_table() -> String {
    let mut s = String::from("| TracingPolicy | vardr | notes |\n|---|---|---|\n");
    for x in FEATURES {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            x.field,
            x.support.as_str(),
            x.note
        ));
    }
    s
}
