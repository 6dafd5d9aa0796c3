//! `kprobes` and `tracepoints` entries: validated into [`GenericHook`]s,
//! which run as hooks of their own (selectors evaluated in the kernel,
//! Sigkill and Signal from the hook), not as native rules. What a hook
//! reads is checked against the kernel when it is attached (the function
//! or tracepoint must exist, a tracepoint's fields must have the types
//! the policy gives them).
use serde_saphyr::Spanned;

use super::{
    process_filters::{self, ProcessFilters},
    schema::{
        ActionSelector, Arg, ArgSelector, BinarySelector, KProbeSpec, List, LsmHookSpec, Selector,
        TracepointSpec, UProbeSpec,
    },
    translate::{at, message_and_tags, pos, MAX_ACTIONS, MAX_MATCH_ARGS, MAX_SELECTORS},
    validate::{items, non_empty, set},
    NOT_YET,
};
use crate::policy::validate::Diags;
use vardr_common::generic::GEN_MAX_RET_MATCHES;

/// Arguments a hook may read (vardr's limit; Tetragon's is larger).
pub const MAX_ARGS: usize = vardr_common::generic::GEN_MAX_ARGS;
/// Integer values of one `matchArgs` entry.
const MAX_INT_VALUES: usize = vardr_common::generic::GEN_MAX_VALUES;
/// Longest string value of a `matchArgs` entry, in bytes.
pub const MAX_STRING_VALUE: usize = vardr_common::generic::GEN_MATCH_STR_LEN - 1;
/// Values of one filter on a `file` or `path` argument (Tetragon's limit).
const MAX_FILE_VALUES: usize = 8;
/// Binaries of one `matchBinaries` entry (Tetragon's limit is 128 for In).
const MAX_BINARIES: usize = 64;

/// Where a hook attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// A kernel function; with `syscall`, a system call's entry (`call` as
    /// written: `sys_mkdirat`, `mkdirat` or `__x64_sys_mkdirat`).
    Kprobe {
        call: String,
        syscall: bool,
    },
    Tracepoint {
        subsystem: String,
        event: String,
    },
    /// A function of a program or library, by its symbol, or an
    /// instruction by its offset in the file (`symbol` then empty).
    Uprobe {
        path: String,
        symbol: String,
        offset: u64,
    },
    /// A BPF LSM hook (`file_open`, `path_chmod`, ...: the kernel's hook
    /// name without `security_`).
    Lsm {
        hook: String,
    },
}

impl HookPoint {
    /// `kprobes`, `tracepoints` or `uprobes`, as in the policy.
    pub fn section(&self) -> &'static str {
        match self {
            HookPoint::Kprobe { .. } => "kprobes",
            HookPoint::Tracepoint { .. } => "tracepoints",
            HookPoint::Uprobe { .. } => "uprobes",
            HookPoint::Lsm { .. } => "lsmhooks",
        }
    }

    /// The function, `subsystem/event` or `path:symbol`.
    pub fn target(&self) -> String {
        match self {
            HookPoint::Kprobe { call, .. } => call.clone(),
            HookPoint::Tracepoint { subsystem, event } => format!("{subsystem}/{event}"),
            HookPoint::Uprobe { path, symbol, .. } if !symbol.is_empty() => {
                format!("{path}:{symbol}")
            }
            HookPoint::Uprobe { path, offset, .. } => format!("{path}:{offset:#x}"),
            HookPoint::Lsm { hook } => hook.clone(),
        }
    }
}

/// An argument's type, as the policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// A tracepoint field read as its format says (Tetragon's `auto`).
    Auto,
    Int,
    Uint32,
    Int64,
    Uint64,
    SizeT,
    String,
    Filename,
    File,
    Path,
    LinuxBinprm,
    /// A file descriptor of the calling task, resolved to its file's path
    /// in the kernel (matched as that path).
    Fd,
    /// A buffer whose size is another argument (`sizeArgIndex`); its
    /// first 256 bytes are reported (kprobes).
    CharBuf,
    /// `struct sock *` (kprobes).
    Sock,
    /// `struct sk_buff *`: the packet's headers (Tetragon's `skb_arg`).
    Skb,
    /// `struct sockaddr *` in kernel memory (kprobes on kernel functions).
    Sockaddr,
    /// `struct cred *`: ids, capabilities, user namespace (reported).
    Cred,
}

impl ArgType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "int" | "int32" => Self::Int,
            "uint32" | "u32" => Self::Uint32,
            "int64" | "long" | "s64" => Self::Int64,
            "uint64" | "u64" => Self::Uint64,
            "size_t" => Self::SizeT,
            "string" => Self::String,
            "filename" => Self::Filename,
            "file" => Self::File,
            "path" => Self::Path,
            "linux_binprm" => Self::LinuxBinprm,
            "fd" => Self::Fd,
            "char_buf" => Self::CharBuf,
            "sock" => Self::Sock,
            "skb" => Self::Skb,
            "sockaddr" => Self::Sockaddr,
            "cred" => Self::Cred,
            _ => return None,
        })
    }

    /// Read and compared as a string (else as an integer).
    pub fn is_string(self) -> bool {
        matches!(
            self,
            Self::String | Self::Filename | Self::File | Self::Path | Self::LinuxBinprm | Self::Fd
        )
    }

    /// Tetragon's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Int => "int",
            Self::Uint32 => "uint32",
            Self::Int64 => "int64",
            Self::Uint64 => "uint64",
            Self::SizeT => "size_t",
            Self::String => "string",
            Self::Filename => "filename",
            Self::File => "file",
            Self::Path => "path",
            Self::LinuxBinprm => "linux_binprm",
            Self::Fd => "fd",
            Self::CharBuf => "char_buf",
            Self::Sock => "sock",
            Self::Skb => "skb",
            Self::Sockaddr => "sockaddr",
            Self::Cred => "cred",
        }
    }
}

/// Types Tetragon has that vardr does not read yet.
const TYPES_NOT_YET: &[&str] = &[
    "char_iovec",
    "socket",
    "bpf_attr",
    "perf_event",
    "bpf_map",
    "user_namespace",
    "capability",
    "kiocb",
    "iov_iter",
    "load_info",
    "module",
    "syscall64",
    "kernel_cap_t",
    "cap_inheritable",
    "cap_permitted",
    "cap_effective",
    "net_device",
    "bpf_prog",
    "dentry",
    "nop",
    "uint8",
    "uint16",
    "int8",
    "int16",
    "bpf_cmd",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookArg {
    /// The function's argument number, or the tracepoint's field number
    /// (its format's fields, the `common_` ones included).
    pub index: u32,
    pub ty: ArgType,
    /// `char_buf`: the argument that holds the buffer's size (0-based;
    /// the policy's `sizeArgIndex` counts from 1).
    pub size_arg: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Prefix,
    NotPrefix,
    Postfix,
    NotPostfix,
    GreaterThan,
    LessThan,
    Mask,
    // On a `sock` or `sockaddr` argument (see `sock_ops`).
    SPort,
    NotSPort,
    DPort,
    NotDPort,
    SPortPriv,
    NotSPortPriv,
    DPortPriv,
    NotDPortPriv,
    SAddr,
    NotSAddr,
    DAddr,
    NotDAddr,
    Protocol,
    Family,
    State,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Values {
    /// Numbers; for ports, ranges as `lo << 16 | hi`.
    Ints(Vec<u64>),
    Strings(Vec<String>),
    /// SAddr, DAddr and their negations.
    Cidrs(Vec<ipnet::IpNet>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgMatch {
    /// Position in [`GenericHook::args`].
    pub arg: usize,
    pub op: Op,
    pub values: Values,
}

/// A selector's `matchBinaries`: the executable of the calling process is
/// (or is not) one of these files, or its path starts or ends (or does not)
/// with one of these strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    pub op: BinaryOp,
    pub paths: Vec<String>,
    /// `followChildren`: the processes these binaries started (and their
    /// descendants, and what they execute) count as running them.
    pub follow_children: bool,
}

/// A `matchBinaries` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// By the identity of the executed file (exact paths).
    In,
    NotIn,
    /// By the path of the executed file, built in the kernel.
    Prefix,
    NotPrefix,
    Postfix,
    NotPostfix,
}

impl BinaryOp {
    /// Whether the operator compares the executable's path as a string
    /// (the others go by the file's identity).
    pub fn is_string(self) -> bool {
        !matches!(self, Self::In | Self::NotIn)
    }
}

/// What a matching selector does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    pub post: bool,
    pub sigkill: bool,
    pub signal: Option<u32>,
    /// Override's `argError`: the call fails with it (kprobes only).
    pub override_error: Option<i32>,
    /// Post's `rateLimit` in ns and its scope (`GEN_RATE_*`).
    pub rate_limit: Option<(u64, u32)>,
    /// Post's `kernelStackTrace` and `userStackTrace` (kprobes only).
    pub kernel_stack: bool,
    pub user_stack: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSelector {
    pub matches: Vec<ArgMatch>,
    pub binaries: Option<Binaries>,
    /// `matchParentBinaries`: the same, for the parent process.
    pub parent_binaries: Option<Binaries>,
    /// `matchReturnArgs`: checked on the return value (all must hold for
    /// the event to be posted).
    pub ret_matches: Vec<ArgMatch>,
    /// `matchPIDs`, `matchNamespaces`, `matchCapabilities`.
    pub process: ProcessFilters,
    pub actions: Actions,
    /// `matchReturnActions`: at the return, when the value passed
    /// `matchReturnArgs` (`None`: Post).
    pub ret_actions: Option<Actions>,
    pub line: usize,
}

/// One `kprobes` or `tracepoints` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericHook {
    /// The TracingPolicy's name.
    pub policy: String,
    /// `<policy>.<section>.<index>`.
    pub name: String,
    pub point: HookPoint,
    pub args: Vec<HookArg>,
    /// Empty: every call is reported.
    pub selectors: Vec<HookSelector>,
    pub message: Option<String>,
    pub tags: Vec<String>,
    /// A return probe's value type (`return: true`, `returnArg`): the
    /// event is posted at the return, with the value.
    pub ret: Option<ArgType>,
    /// A `TracingPolicyNamespaced`'s: its Kubernetes namespace (only the
    /// calls of that namespace's pods count).
    pub namespace: Option<String>,
}

pub(super) fn kprobe(
    d: &mut Diags,
    policy: &str,
    i: usize,
    k: &Spanned<KProbeSpec>,
    monitor: bool,
    // A function of the list `call` names, and whether it is a system call.
    listed: Option<(&str, bool)>,
) -> Option<GenericHook> {
    let spec = &k.value;
    let before = d.0.len();
    let call = listed
        .map_or(spec.call.value.trim(), |(c, _)| c)
        .to_string();
    if call.is_empty() || call.contains(char::is_whitespace) {
        d.at(
            &spec.call,
            format!("kprobes call {:?} is not a function name", spec.call.value),
        );
    }
    let ret = return_type(d, &call, spec);
    if let Some(data) = non_empty(&spec.data) {
        d.at(data, format!("kprobes call {call}: data: {NOT_YET}"));
    }
    if spec.ignore.as_ref().and_then(|i| i.call_not_found) == Some(true) {
        d.at(&spec.call, format!("kprobes call {call}: ignore.callNotFound: {NOT_YET} (a missing function is an error)"));
    }
    let point = HookPoint::Kprobe {
        call,
        syscall: spec.syscall.unwrap_or(false) || listed.is_some_and(|(_, sys)| sys),
    };
    let mut h = hook(
        d,
        policy,
        i,
        point,
        &spec.call,
        &spec.args,
        &spec.selectors,
        spec.message.as_deref(),
        &spec.tags,
        monitor,
        before,
        ret,
    )?;
    h.ret = ret;
    Some(h)
}

/// A return probe's value type (`return: true` with `returnArg`).
fn return_type(d: &mut Diags, call: &str, spec: &KProbeSpec) -> Option<ArgType> {
    if spec.return_arg_action.is_some() {
        d.at(
            &spec.call,
            format!("kprobes call {call}: returnArgAction: {NOT_YET}"),
        );
    }
    let Some(arg) = &spec.return_arg else {
        if spec.return_ == Some(true) {
            d.at(&spec.call, format!("kprobes call {call}: return: true needs returnArg, the type of the value (int, uint32, int64, uint64, size_t)"));
        }
        return None;
    };
    if spec.return_ != Some(true) {
        d.at(
            &arg.index,
            format!("kprobes call {call}: returnArg without return: true"),
        );
        return None;
    }
    let name = arg.type_.as_ref().map_or("auto", |t| t.value.as_str());
    match ArgType::parse(name) {
        Some(
            t
            @ (ArgType::Int | ArgType::Uint32 | ArgType::Int64 | ArgType::Uint64 | ArgType::SizeT),
        ) => Some(t),
        _ => {
            let msg = format!("kprobes call {call}: returnArg type {name:?}: {NOT_YET} (int, uint32, int64, uint64, size_t)");
            match &arg.type_ {
                Some(t) => d.at(t, msg),
                None => d.at(&arg.index, msg),
            }
            None
        }
    }
}

pub(super) fn tracepoint(
    d: &mut Diags,
    policy: &str,
    i: usize,
    t: &Spanned<TracepointSpec>,
    monitor: bool,
) -> Option<GenericHook> {
    let spec = &t.value;
    let before = d.0.len();
    let name_ok =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for f in [&spec.subsystem, &spec.event] {
        if !name_ok(&f.value) {
            d.at(
                f,
                format!("tracepoint name {:?}: letters, digits and _ only", f.value),
            );
        }
    }
    if spec.raw == Some(true) {
        d.at(&spec.subsystem, format!("tracepoints raw: true: {NOT_YET}"));
    }
    let point = HookPoint::Tracepoint {
        subsystem: spec.subsystem.value.clone(),
        event: spec.event.value.clone(),
    };
    hook(
        d,
        policy,
        i,
        point,
        &spec.subsystem,
        &spec.args,
        &spec.selectors,
        spec.message.as_deref(),
        &spec.tags,
        monitor,
        before,
        None,
    )
}

/// An `lsmhooks` entry run as a hook of its own: a BPF LSM program with
/// the selectors in the kernel, as kprobes have them. (The entries native
/// rules can express are translated to those instead: see `translate`.)
pub(super) fn lsm(
    d: &mut Diags,
    policy: &str,
    i: usize,
    h: &Spanned<LsmHookSpec>,
    monitor: bool,
) -> Option<GenericHook> {
    let spec = &h.value;
    let before = d.0.len();
    let name = spec.hook.value.trim().to_string();
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with("security_")
            && !s.starts_with("bpf_lsm_")
    };
    if !name_ok(&name) {
        d.at(
            &spec.hook,
            format!(
                "lsmhooks hook {:?}: an LSM hook's name without security_ or bpf_lsm_ (file_open, path_chmod, ...)",
                spec.hook.value
            ),
        );
    }
    let message = spec.message.as_ref().map(|m| m.value.as_str());
    hook(
        d,
        policy,
        i,
        HookPoint::Lsm { hook: name },
        &spec.hook,
        &spec.args,
        &spec.selectors,
        message,
        &spec.tags,
        monitor,
        before,
        None,
    )
}

/// One hook per symbol of a `uprobes` entry (named `.<i>.<k>`).
pub(super) fn uprobe(
    d: &mut Diags,
    policy: &str,
    i: usize,
    u: &Spanned<UProbeSpec>,
    monitor: bool,
) -> Vec<GenericHook> {
    let spec = &u.value;
    let before = d.0.len();
    let path = spec.path.value.clone();
    if !path.starts_with('/') || path.contains('\0') {
        d.at(
            &spec.path,
            format!("uprobes path {path:?} must be absolute"),
        );
    }
    let not_yet = |d: &mut Diags, what: &str| {
        d.at(
            &spec.path,
            format!("uprobes path {path}: {what}: {NOT_YET}"),
        );
    };
    if spec.return_ == Some(true) || spec.return_arg.is_some() {
        not_yet(d, "return probes (return, returnArg)");
    }
    if spec.addrs.as_ref().is_some_and(|v| !v.is_empty()) {
        not_yet(d, "addrs (name symbols, or give file offsets in offsets)");
    }
    if spec.ref_ctr_offsets.as_ref().is_some_and(|v| !v.is_empty()) {
        not_yet(d, "refCtrOffsets");
    }
    if spec.btf_path.is_some() {
        not_yet(d, "btfPath");
    }
    if spec.binary_digests.as_ref().is_some_and(|v| !v.is_empty()) || spec.ignore.is_some() {
        not_yet(d, "binaryDigests, ignore");
    }
    if let Some(data) = non_empty(&spec.data) {
        d.at(data, format!("uprobes data: {NOT_YET}"));
    }
    // One hook per symbol, then one per file offset (as Tetragon: the
    // offset of the instruction in the file, not an address).
    let symbols = spec.symbols.clone().unwrap_or_default();
    let offsets = spec.offsets.clone().unwrap_or_default();
    if symbols.is_empty() && offsets.is_empty() {
        d.at(
            &spec.path,
            format!("uprobes path {path}: no symbols or offsets"),
        );
    }
    let points = symbols
        .into_iter()
        .map(|symbol| (symbol, 0))
        .chain(offsets.into_iter().map(|o| (String::new(), o)));
    let mut out = Vec::new();
    for (k, (symbol, offset)) in points.enumerate() {
        let point = HookPoint::Uprobe {
            path: path.clone(),
            symbol,
            offset,
        };
        let n = d.0.len();
        // Errors of the arguments and selectors are reported once.
        let mut dd = Diags(Vec::new());
        let target = if k == 0 { &mut *d } else { &mut dd };
        if let Some(mut h) = hook(
            target,
            policy,
            i,
            point,
            &spec.path,
            &spec.args,
            &spec.selectors,
            spec.message.as_deref(),
            &spec.tags,
            monitor,
            n,
            None,
        ) {
            h.name = format!("{}.{k}", h.name);
            out.push(h);
        }
    }
    if d.0.len() != before {
        return Vec::new();
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn hook(
    d: &mut Diags,
    policy: &str,
    i: usize,
    point: HookPoint,
    anchor: &Spanned<String>,
    args_spec: &List<Arg>,
    selectors_spec: &List<Selector>,
    message: Option<&str>,
    tags: &List<String>,
    monitor: bool,
    before: usize,
    ret: Option<ArgType>,
) -> Option<GenericHook> {
    let (message, tags) = message_and_tags(d, anchor, message, tags);
    let (args, rejected) = args(d, &point, args_spec);
    let mut selectors = Vec::new();
    for (j, s) in items(selectors_spec).enumerate() {
        if j == MAX_SELECTORS {
            d.at(s, format!("more than {MAX_SELECTORS} selectors: Tetragon allows at most {MAX_SELECTORS} per hook"));
            break;
        }
        if let Some(mut sel) = selector(d, &point, &args, &rejected, s, ret) {
            if monitor {
                sel.actions = Actions {
                    post: true,
                    rate_limit: sel.actions.rate_limit,
                    kernel_stack: sel.actions.kernel_stack,
                    user_stack: sel.actions.user_stack,
                    ..Actions::default()
                };
            }
            selectors.push(sel);
        }
    }
    if d.0.len() != before {
        return None;
    }
    let section = point.section();
    Some(GenericHook {
        policy: policy.to_string(),
        name: format!("{}.{section}.{i}", super::translate::safe_name(policy)),
        point,
        args,
        selectors,
        message,
        tags,
        ret: None,
        namespace: None,
    })
}

/// The arguments, and the indices of those rejected (already reported:
/// a `matchArgs` on them is not reported again).
fn args(d: &mut Diags, point: &HookPoint, list: &List<Arg>) -> (Vec<HookArg>, Vec<u32>) {
    let mut out: Vec<HookArg> = Vec::new();
    let mut rejected = Vec::new();
    for a in items(list) {
        let a = &a.value;
        let idx = a.index.value;
        let ty_name = a.type_.as_ref().map_or("auto", |t| t.value.as_str());
        let here = |d: &mut Diags, msg: String| match &a.type_ {
            Some(t) => d.at(t, msg),
            None => d.at(&a.index, msg),
        };
        if out.len() == MAX_ARGS {
            d.at(&a.index, format!("more than {MAX_ARGS} args: {NOT_YET}"));
            break;
        }
        if out.iter().any(|x| x.index == idx) {
            d.at(&a.index, format!("args index {idx} is declared twice"));
            continue;
        }
        let ty = match ArgType::parse(ty_name) {
            Some(ArgType::Auto)
                if matches!(point, HookPoint::Kprobe { .. } | HookPoint::Lsm { .. }) =>
            {
                here(d, format!("args index {idx}: a {} argument needs a type (int, uint32, int64, uint64, size_t, string, filename, file, path, linux_binprm, fd, char_buf, sock, sockaddr)", if matches!(point, HookPoint::Lsm { .. }) { "lsmhooks" } else { "kprobe" }));
                rejected.push(idx);
                continue;
            }
            Some(t) => t,
            None if TYPES_NOT_YET.contains(&ty_name) => {
                here(d, format!("args index {idx}: type {ty_name:?}: {NOT_YET}"));
                rejected.push(idx);
                continue;
            }
            None => {
                here(d, format!("args index {idx}: unknown type {ty_name:?}"));
                rejected.push(idx);
                continue;
            }
        };
        if ty == ArgType::CharBuf
            && !matches!(point, HookPoint::Kprobe { .. } | HookPoint::Lsm { .. })
        {
            here(
                d,
                format!(
                    "args index {idx}: type \"char_buf\": on kprobes and lsmhooks only ({NOT_YET} on {})",
                    point.section()
                ),
            );
            rejected.push(idx);
            continue;
        }
        if matches!(
            ty,
            ArgType::Sock | ArgType::Sockaddr | ArgType::Cred | ArgType::Skb
        ) {
            let why = match point {
                HookPoint::Kprobe { syscall: false, .. } | HookPoint::Lsm { .. } => None,
                // A tracepoint's `skbaddr` field is the kernel's pointer.
                HookPoint::Tracepoint { .. } if ty == ArgType::Skb => None,
                HookPoint::Kprobe { .. } => Some("a system call's arguments are user values (a socket is a descriptor, a sockaddr in user memory): hook a kernel function that takes it, such as tcp_connect (sock), security_socket_connect (sockaddr), ip_output (skb) or commit_creds (cred)"),
                HookPoint::Tracepoint { .. } => Some("on kprobes and lsmhooks only"),
                HookPoint::Uprobe { .. } => Some("a user function's argument is an int, uint32, int64, uint64, size_t or string"),
            };
            if let Some(why) = why {
                here(d, format!("args index {idx}: type {ty_name:?}: {why}"));
                rejected.push(idx);
                continue;
            }
        }
        if matches!(point, HookPoint::Uprobe { .. })
            && matches!(
                ty,
                ArgType::Auto
                    | ArgType::Filename
                    | ArgType::File
                    | ArgType::Path
                    | ArgType::LinuxBinprm
                    | ArgType::Fd
            )
        {
            here(d, format!("args index {idx}: type {ty_name:?}: a user function's argument is an int, uint32, int64, uint64, size_t or string"));
            rejected.push(idx);
            continue;
        }
        match point {
            HookPoint::Uprobe { .. } if idx > 5 => {
                d.at(
                    &a.index,
                    format!("args index {idx}: a function has 6 register arguments (0 to 5)"),
                );
                rejected.push(idx);
                continue;
            }
            HookPoint::Lsm { hook } if idx > 5 => {
                d.at(
                    &a.index,
                    format!("args index {idx}: {hook}: vardr reads an LSM hook's first 6 arguments (0 to 5)"),
                );
                rejected.push(idx);
                continue;
            }
            HookPoint::Kprobe { syscall, .. } if idx > 5 => {
                d.at(
                    &a.index,
                    format!(
                        "args index {idx}: a {} has 6 arguments at most (0 to 5)",
                        if *syscall { "system call" } else { "kprobe" }
                    ),
                );
                continue;
            }
            _ => {}
        }
        let extra = |f: &str| format!("args index {idx}: {f}: {NOT_YET}");
        for (field, v) in [
            ("resolve", set(&a.resolve).map(pos)),
            ("label", set(&a.label).map(pos)),
            ("source", set(&a.source).map(pos)),
            ("btfType", set(&a.btf_type).map(pos)),
            ("btfTypeModule", set(&a.btf_type_module).map(pos)),
            ("returnCopy", set(&a.return_copy).map(pos)),
            ("maxData", set(&a.max_data).map(pos)),
        ] {
            if let Some(p) = v {
                at(d, p, extra(field));
            }
        }
        let size_arg = match (ty, set(&a.size_arg_index)) {
            (ArgType::CharBuf, Some(n)) if (1..=6).contains(&n.value) => Some(n.value - 1),
            (ArgType::CharBuf, Some(n)) => {
                d.at(n, format!("args index {idx}: sizeArgIndex {}: the argument holding the size, 1 to 6 (counted from 1)", n.value));
                rejected.push(idx);
                continue;
            }
            (ArgType::CharBuf, None) => {
                here(d, format!("args index {idx}: type \"char_buf\" needs sizeArgIndex, the argument holding its size (counted from 1)"));
                rejected.push(idx);
                continue;
            }
            (_, Some(n)) => {
                d.at(
                    n,
                    format!("args index {idx}: sizeArgIndex is for a char_buf"),
                );
                rejected.push(idx);
                continue;
            }
            (_, None) => None,
        };
        out.push(HookArg {
            index: idx,
            ty,
            size_arg,
        });
    }
    (out, rejected)
}

fn selector(
    d: &mut Diags,
    point: &HookPoint,
    args: &[HookArg],
    rejected: &[u32],
    s: &Spanned<Selector>,
    ret: Option<ArgType>,
) -> Option<HookSelector> {
    let sel = &s.value;
    let before = d.0.len();
    for (field, present) in [
        ("matchData", non_empty(&sel.match_data).map(pos)),
        ("matchWorkloads", sel.match_workloads.as_ref().map(pos)),
        ("macros", non_empty(&sel.macros).map(pos)),
        ("label", set(&sel.label).map(pos)),
    ] {
        if let Some(p) = present {
            at(d, p, format!("selector {field}: {NOT_YET}"));
        }
    }
    let mut matches = Vec::new();
    for (k, m) in items(&sel.match_args).enumerate() {
        if k == MAX_MATCH_ARGS {
            d.at(m, format!("more than {MAX_MATCH_ARGS} matchArgs: Tetragon allows at most {MAX_MATCH_ARGS} per selector"));
            break;
        }
        if m.value
            .index
            .as_ref()
            .is_some_and(|i| rejected.contains(&i.value))
        {
            continue;
        }
        if let Some(m) = arg_match(d, args, m) {
            matches.push(m);
        }
    }
    let ret_matches = return_matches(d, &sel.match_return_args, ret);
    let own = binaries(d, &sel.match_binaries, "matchBinaries");
    let parent = binaries(d, &sel.match_parent_binaries, "matchParentBinaries");
    let process = process_filters::parse(
        d,
        process_filters::Lists {
            pids: &sel.match_pids,
            namespaces: &sel.match_namespaces,
            caps: &sel.match_capabilities,
            ns_changes: &sel.match_namespace_changes,
            caps_changes: &sel.match_capability_changes,
        },
    );
    let entry_actions = actions(d, point, &sel.match_actions, false);
    let ret_actions = match non_empty(&sel.match_return_actions) {
        None => None,
        Some(l) if ret.is_none() => {
            at(
                d,
                pos(l),
                "matchReturnActions: only on a kprobe with return: true and returnArg".into(),
            );
            None
        }
        Some(_) => actions(d, point, &sel.match_return_actions, true),
    };
    // The return sees only the calls the entry kept for it, which it does
    // only for an event: a NoPost or a rateLimit at the entry would let a
    // kill at the return never happen (and a global rateLimit would let
    // one process's call spare another's).
    let ret_enforces = ret_actions
        .as_ref()
        .is_some_and(|r| r.sigkill || r.signal.is_some());
    let listed = non_empty(&sel.match_actions);
    if let (true, Some(a), Some(l)) = (ret_enforces, &entry_actions, listed) {
        if !a.post || a.rate_limit.is_some() {
            at(
                d,
                pos(l),
                "matchReturnActions Sigkill/Signal with NoPost or a rateLimit in matchActions: the return sees only the calls the entry reports, so some would never be acted on; put NoPost in matchReturnActions instead".into(),
            );
        }
    }
    (d.0.len() == before).then(|| HookSelector {
        matches,
        ret_matches,
        ret_actions,
        binaries: own,
        parent_binaries: parent,
        process,
        actions: entry_actions.unwrap_or_default(),
        line: s.referenced.line().max(1) as usize,
    })
}

fn arg_match(d: &mut Diags, args: &[HookArg], m: &Spanned<ArgSelector>) -> Option<ArgMatch> {
    let spec = &m.value;
    if let Some(a) = spec.args.as_ref() {
        d.at(
            a,
            format!("matchArgs args: {NOT_YET} (name one argument with index)"),
        );
        return None;
    }
    let Some(index) = &spec.index else {
        d.at(m, "matchArgs needs an index");
        return None;
    };
    let Some(arg) = args.iter().position(|a| a.index == index.value) else {
        d.at(
            index,
            format!("matchArgs index {}: no such entry in args", index.value),
        );
        return None;
    };
    let ty = args[arg].ty;
    let op_name = spec.operator.value.as_str();
    let op = match op_name {
        "Equal" | "eq" => Op::Equal,
        "NotEqual" | "neq" => Op::NotEqual,
        "Prefix" | "prefix" => Op::Prefix,
        "NotPrefix" | "notprefix" => Op::NotPrefix,
        "Postfix" | "postfix" => Op::Postfix,
        "NotPostfix" | "notpostfix" => Op::NotPostfix,
        "GreaterThan" | "GT" | "gt" => Op::GreaterThan,
        "LessThan" | "LT" | "lt" => Op::LessThan,
        "Mask" | "mask" => Op::Mask,
        other => match super::sock_ops::op(other) {
            Some(op) => op,
            None => {
                d.at(&spec.operator, format!("matchArgs operator {other}: {NOT_YET} (Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, GreaterThan, LessThan, Mask; on sock and sockaddr: SPort, DPort, SAddr, DAddr, their Not and Priv forms, Protocol, Family, State)"));
                return None;
            }
        },
    };
    let values: Vec<&Spanned<String>> = items(&spec.values).collect();
    if matches!(ty, ArgType::CharBuf | ArgType::Cred) {
        d.at(
            &spec.operator,
            format!(
                "matchArgs on a {} argument: {NOT_YET} (it is reported only)",
                ty.name()
            ),
        );
        return None;
    }
    let sock_arg = matches!(ty, ArgType::Sock | ArgType::Sockaddr | ArgType::Skb);
    let sock_op = super::sock_ops::is_sock_op(op);
    if sock_op != sock_arg {
        let msg = if sock_op {
            format!(
                "matchArgs {op_name} compares a socket: argument {} is a {}",
                index.value,
                ty.name()
            )
        } else {
            let with = if ty == ArgType::Sockaddr {
                "SAddr, SPort (and their Not and Priv forms) and Family"
            } else if ty == ArgType::Skb {
                "SPort, DPort, SAddr, DAddr (and their Not and Priv forms), Protocol and Family"
            } else {
                "SPort, DPort, SAddr, DAddr (and their Not and Priv forms), Protocol, Family and State"
            };
            let a = if ty == ArgType::Skb { "an" } else { "a" };
            format!(
                "matchArgs {op_name} on {a} {} argument: it is matched with {with}",
                ty.name()
            )
        };
        d.at(&spec.operator, msg);
        return None;
    }
    if values.is_empty() && !super::sock_ops::takes_no_values(op) {
        d.at(&spec.operator, format!("matchArgs {op_name} has no values"));
        return None;
    }
    if sock_op {
        let values = super::sock_ops::values(d, op, &spec.operator, ty, &values)?;
        return Some(ArgMatch { arg, op, values });
    }
    // An `auto` tracepoint field is typed once its format is read; a string
    // operator then needs a string field.
    let string_op = matches!(
        op,
        Op::Prefix | Op::NotPrefix | Op::Postfix | Op::NotPostfix
    );
    let int_op = matches!(op, Op::GreaterThan | Op::LessThan | Op::Mask);
    let as_string = ty.is_string() || (ty == ArgType::Auto && string_op);
    if as_string && int_op {
        d.at(
            &spec.operator,
            format!(
                "matchArgs {op_name} compares numbers: argument {} is a {}",
                index.value,
                ty.name()
            ),
        );
        return None;
    }
    if !as_string && string_op {
        d.at(
            &spec.operator,
            format!(
                "matchArgs {op_name} compares strings: argument {} is a {}",
                index.value,
                ty.name()
            ),
        );
        return None;
    }
    let values = if as_string {
        // Tetragon's bound on a filter of a file or path argument.
        if matches!(ty, ArgType::File | ArgType::Path) && values.len() > MAX_FILE_VALUES {
            d.at(
                values[MAX_FILE_VALUES],
                format!("more than {MAX_FILE_VALUES} values: Tetragon allows at most {MAX_FILE_VALUES} per file filter"),
            );
            return None;
        }
        let mut out = Vec::new();
        for v in values {
            if v.value.len() > MAX_STRING_VALUE {
                d.at(
                    v,
                    format!(
                        "matchArgs value of {} bytes: vardr compares {MAX_STRING_VALUE} at most",
                        v.value.len()
                    ),
                );
                return None;
            }
            if v.value.contains('\0') {
                d.at(v, "matchArgs value with a NUL byte");
                return None;
            }
            out.push(v.value.clone());
        }
        Values::Strings(out)
    } else {
        if values.len() > MAX_INT_VALUES {
            d.at(
                values[MAX_INT_VALUES],
                format!("more than {MAX_INT_VALUES} values for an integer: {NOT_YET}"),
            );
            return None;
        }
        let mut out = Vec::new();
        for v in values {
            match parse_int(&v.value) {
                Some(n) => out.push(n),
                None => {
                    d.at(v, format!("matchArgs value {:?}: not an integer (decimal, 0x hexadecimal, or negative)", v.value));
                    return None;
                }
            }
        }
        Values::Ints(out)
    };
    Some(ArgMatch { arg, op, values })
}

/// A selector's `matchReturnArgs`: integer operators on the return
/// value (`index: 0`, the `returnArg`).
fn return_matches(d: &mut Diags, list: &List<ArgSelector>, ret: Option<ArgType>) -> Vec<ArgMatch> {
    let entries: Vec<_> = items(list).collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let Some(ty) = ret else {
        d.at(
            entries[0],
            "matchReturnArgs: only on a kprobe with return: true and returnArg",
        );
        return Vec::new();
    };
    if let Some(e) = entries.get(GEN_MAX_RET_MATCHES) {
        d.at(
            *e,
            format!("more than {GEN_MAX_RET_MATCHES} matchReturnArgs: {NOT_YET}"),
        );
        return Vec::new();
    }
    let ret_arg = [HookArg {
        index: 0,
        ty,
        size_arg: None,
    }];
    let mut out = Vec::new();
    for m in entries {
        if m.value.index.as_ref().is_some_and(|i| i.value != 0) {
            d.at(m, "matchReturnArgs index: 0, the return value");
            continue;
        }
        // A string operator is refused there: the value is an integer.
        if let Some(am) = arg_match(d, &ret_arg, m) {
            out.push(am);
        }
    }
    out
}

/// Decimal, `0x` hexadecimal or a negative decimal, as 64 bits.
fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if let Some(n) = s.strip_prefix('-') {
        return n
            .parse::<u64>()
            .ok()
            .and_then(|n| 0i64.checked_sub_unsigned(n))
            .map(|v| v as u64);
    }
    s.parse::<u64>().ok()
}

fn binaries(d: &mut Diags, list: &List<BinarySelector>, field: &str) -> Option<Binaries> {
    let entries: Vec<_> = items(list).collect();
    if entries.len() > 1 {
        d.at(
            entries[1],
            format!("more than one {field} entry: {NOT_YET}"),
        );
        return None;
    }
    let e = entries.first()?;
    let b = &e.value;
    let op = match b.operator.as_str() {
        "In" => BinaryOp::In,
        "NotIn" => BinaryOp::NotIn,
        "Prefix" => BinaryOp::Prefix,
        "NotPrefix" => BinaryOp::NotPrefix,
        "Postfix" => BinaryOp::Postfix,
        "NotPostfix" => BinaryOp::NotPostfix,
        other => {
            d.at(
                *e,
                format!("{field} operator {other}: {NOT_YET} (In, NotIn: exact paths; Prefix, NotPrefix, Postfix, NotPostfix)"),
            );
            return None;
        }
    };
    let follow_children = b.follow_children == Some(true);
    if follow_children && (op.is_string() || field != "matchBinaries") {
        let why = if field == "matchBinaries" {
            "with In or NotIn (the binaries' identities), not with the path operators".to_string()
        } else {
            format!("{NOT_YET} on {field}")
        };
        d.at(*e, format!("{field} followChildren: {why}"));
        return None;
    }
    if b.values.is_empty() || b.values.len() > MAX_BINARIES {
        d.at(*e, format!("{field} needs 1 to {MAX_BINARIES} values"));
        return None;
    }
    for v in &b.values {
        if op.is_string() {
            // Compared with the path the kernel builds for the executable.
            if v.is_empty() || v.contains('\0') || v.len() > MAX_STRING_VALUE {
                d.at(
                    *e,
                    format!("{field} value {v:?}: 1 to {MAX_STRING_VALUE} bytes, no NUL"),
                );
                return None;
            }
            continue;
        }
        let normal = v.starts_with('/')
            && !v.contains('\0')
            && !v.contains("//")
            && !v.split('/').any(|c| c == "." || c == "..");
        if !normal {
            d.at(
                *e,
                format!("{field} value {v:?}: an absolute, normalized path (no '//', '.' or '..')"),
            );
            return None;
        }
    }
    Some(Binaries {
        op,
        paths: b.values.clone(),
        follow_children,
    })
}

/// `matchActions`, or with `at_return` a return probe's
/// `matchReturnActions` (run after the call: no Override, no rateLimit).
fn actions(
    d: &mut Diags,
    point: &HookPoint,
    list: &List<ActionSelector>,
    at_return: bool,
) -> Option<Actions> {
    let field = if at_return {
        "matchReturnActions"
    } else {
        "matchActions"
    };
    let all: Vec<_> = items(list).collect();
    if let Some(a) = all.get(MAX_ACTIONS) {
        d.at(*a, format!("more than {MAX_ACTIONS} {field}: Tetragon allows at most {MAX_ACTIONS} per selector"));
        return None;
    }
    // Tetragon posts unless NoPost is among the actions.
    let mut out = Actions {
        post: true,
        ..Actions::default()
    };
    let mut ok = true;
    for a in all {
        let a = &a.value;
        let name = a.action.value.to_ascii_lowercase();
        let allowed: &[&str] = match name.as_str() {
            "post" if at_return => &[],
            "post" => {
                match rate_limit(d, a) {
                    Ok(r) => out.rate_limit = r,
                    Err(()) => ok = false,
                }
                let kernel = set(&a.kernel_stack_trace).is_some_and(|v| v.value);
                let user = set(&a.user_stack_trace).is_some_and(|v| v.value);
                if (kernel || user) && !matches!(point, HookPoint::Kprobe { .. }) {
                    d.at(
                        &a.action,
                        format!(
                            "action Post with {}: on kprobes only (Tetragon's process_kprobe carries stack traces; its {} events have none)",
                            if kernel { "kernelStackTrace" } else { "userStackTrace" },
                            point.section()
                        ),
                    );
                    ok = false;
                }
                out.kernel_stack = kernel;
                out.user_stack = user;
                &[
                    "rateLimit",
                    "rateLimitScope",
                    "kernelStackTrace",
                    "userStackTrace",
                ]
            }
            "override" if at_return => {
                d.at(
                    &a.action,
                    "matchReturnActions Override: the function has run by its return; Override goes in matchActions (the call then does not run)",
                );
                ok = false;
                continue;
            }
            "nopost" => {
                out.post = false;
                &[]
            }
            "sigkill" => {
                out.sigkill = true;
                &[]
            }
            "signal" => {
                match set(&a.arg_sig) {
                    Some(s) if (1..=64).contains(&s.value) => out.signal = Some(s.value),
                    Some(s) => {
                        d.at(s, format!("argSig {}: a signal number is 1 to 64", s.value));
                        ok = false;
                    }
                    None => {
                        d.at(&a.action, "Signal needs argSig (e.g. 9 for SIGKILL)");
                        ok = false;
                    }
                }
                &["argSig"]
            }
            "override" => {
                if let Some(e) = override_error(d, point, a) {
                    out.override_error = Some(e);
                } else {
                    ok = false;
                }
                &["argError"]
            }
            "notifyenforcer" | "cleanupenforcernotification" => {
                d.at(
                    &a.action,
                    format!(
                        "action {}: {NOT_YET} (an enforcer fails a system call on its way out, which takes error injection on system calls: Debian's kernels have neither CONFIG_FUNCTION_ERROR_INJECTION nor CONFIG_BPF_KPROBE_OVERRIDE; Override on the security_ function the hook is on, or Sigkill, stops the call instead)",
                        a.action.value
                    ),
                );
                ok = false;
                continue;
            }
            "followfd" | "unfollowfd" | "copyfd" => {
                d.at(
                    &a.action,
                    format!(
                        "action {}: deprecated in Tetragon, not supported: an `fd` argument is resolved to its file in the kernel at each call, so the hook that follows the descriptor is not needed",
                        a.action.value
                    ),
                );
                ok = false;
                continue;
            }
            _ => {
                d.at(
                    &a.action,
                    format!(
                        "action {}: {NOT_YET} (Post, NoPost, Sigkill, Signal, Override)",
                        a.action.value
                    ),
                );
                ok = false;
                continue;
            }
        };
        for (field, p) in super::actions::action_fields(a) {
            if let Some(p) = p.filter(|_| !allowed.contains(&field)) {
                let why = if field.ends_with("StackTrace") && name != "post" {
                    "stack traces go with Post (as in Tetragon)"
                } else {
                    NOT_YET
                };
                at(
                    d,
                    p,
                    format!("action {} with {field}: {why}", a.action.value),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Override's `argError`, on a kprobe: what the call returns instead of
/// running. Where the function allows it is the kernel's to say at attach.
fn override_error(d: &mut Diags, point: &HookPoint, a: &ActionSelector) -> Option<i32> {
    match point {
        HookPoint::Kprobe { .. } | HookPoint::Lsm { .. } => {}
        HookPoint::Tracepoint { .. } => {
            d.at(
                &a.action,
                "action Override on tracepoints: a tracepoint cannot change what the call returns (Tetragon neither); use a kprobe on the function, or Sigkill",
            );
            return None;
        }
        HookPoint::Uprobe { .. } => {
            d.at(
                &a.action,
                format!(
                    "action Override on uprobes: {NOT_YET} (Sigkill or Signal stop the caller)"
                ),
            );
            return None;
        }
    }
    let Some(e) = set(&a.arg_error) else {
        d.at(
            &a.action,
            "Override needs argError, the negative errno the call returns (e.g. -1 for EPERM)",
        );
        return None;
    };
    // A positive value would make a failed call look like a success (a
    // byte count, a file descriptor) to the caller.
    if !(-4095..=-1).contains(&e.value) {
        d.at(
            e,
            format!(
                "argError {}: a negative errno, -1 to -4095 (e.g. -1 for EPERM, -13 for EACCES)",
                e.value
            ),
        );
        return None;
    }
    Some(e.value)
}

/// Post's `rateLimit` (a duration: `500ms`, `30s`, `5m`, `1h`) and
/// `rateLimitScope` (`thread`, the default, `process` or `global`).
fn rate_limit(d: &mut Diags, a: &ActionSelector) -> Result<Option<(u64, u32)>, ()> {
    use vardr_common::generic::{GEN_RATE_GLOBAL, GEN_RATE_PROCESS, GEN_RATE_THREAD};
    let scope = match set(&a.rate_limit_scope) {
        None => GEN_RATE_THREAD,
        Some(sc) => match sc.value.as_str() {
            "thread" => GEN_RATE_THREAD,
            "process" => GEN_RATE_PROCESS,
            "global" => GEN_RATE_GLOBAL,
            other => {
                d.at(
                    sc,
                    format!("rateLimitScope {other:?}: thread, process or global"),
                );
                return Err(());
            }
        },
    };
    let Some(r) = set(&a.rate_limit) else {
        if let Some(sc) = set(&a.rate_limit_scope) {
            d.at(sc, "rateLimitScope without rateLimit");
            return Err(());
        }
        return Ok(None);
    };
    match duration_ns(r.value.trim()) {
        Some(ns) if ns > 0 => Ok(Some((ns, scope))),
        _ => {
            d.at(
                r,
                format!(
                    "rateLimit {:?}: a duration such as 500ms, 30s, 5m or 1h",
                    r.value
                ),
            );
            Err(())
        }
    }
}

fn duration_ns(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}
