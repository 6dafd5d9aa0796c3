//! TracingPolicy hooks to what the kernel side reads: each hook's
//! [`GenHook`] (argument sources from the calling convention or the
//! tracepoint's format), the string values of its selectors as LPM keys,
//! and the identities of the binaries `matchBinaries` names.
use std::{path::Path, sync::Arc};

use ipnet::IpNet;
use vardr_common::generic::*;

use super::{process_filters::HostNamespaces, HookError};
use crate::{
    events::HookMeta,
    kernel::{
        btf_reader::TypeShape,
        tracefs::{self, Field},
    },
    policy::tracing::generic::{
        ArgType, Binaries, BinaryOp, GenericHook, HookArg, HookPoint, Op, Values,
    },
};

/// `pt_regs` offsets of the first six arguments on x86-64: a function's
/// (rdi, rsi, rdx, rcx, r8, r9) and a system call's (r10 for the fourth).
const FUNCTION_REGS: [u32; 6] = [112, 104, 96, 88, 72, 64];
const SYSCALL_REGS: [u32; 6] = [112, 104, 96, 56, 72, 64];
/// Selectors with `matchBinaries` a generation can have (one bit each;
/// the last bit marks exempt binaries).
pub const MAX_BINARY_SELECTORS: u32 = 63;

/// Where one hook attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// `override_`: a selector may fail the call (an fmod_ret program
    /// beside the kprobe); `ret`: a return probe too.
    Kprobe {
        function: String,
        override_: bool,
        ret: bool,
    },
    Tracepoint {
        id: u32,
    },
    /// By symbol, or (`symbol` empty) by file offset.
    Uprobe {
        path: String,
        symbol: String,
        offset: u64,
    },
    /// A BPF LSM program on `hook`.
    Lsm {
        hook: String,
    },
}

/// One hook, ready for the maps.
pub struct CompiledHook {
    pub attach: Attach,
    pub config: GenHook,
    /// String values: (LPM key data, prefix length in bits).
    pub strings: Vec<([u8; GEN_STR_KEY_LEN], u32)>,
    /// Paths of binaries and the selector bit each sets.
    pub binaries: Vec<(String, u32)>,
    /// `followChildren` binaries: (selector, path); their `GEN_FOLLOW` bits
    /// make the selector's `follow_mask`, filled in once their identities
    /// are known.
    pub follow: Vec<(usize, String)>,
    pub meta: Arc<HookMeta>,
}

/// The kernel function a kprobe on `call` attaches to: a system call's
/// wrapper (`__x64_sys_<name>`) with `syscall`, as Tetragon resolves it.
pub fn kprobe_function(call: &str, syscall: bool) -> String {
    if !syscall || call.starts_with("__x64_sys_") {
        return call.to_string();
    }
    let name = call.strip_prefix("sys_").unwrap_or(call);
    format!("__x64_sys_{name}")
}

/// The match index of a selector's `matchBinaries` strings in their id
/// (matchArgs entries use 0 to 4), and of its `matchParentBinaries`'.
const BINARY_STRINGS: usize = 7;
const PARENT_BINARY_STRINGS: usize = 6;

/// A string match's id in `GEN_STRINGS` keys: unique per generation, slot,
/// selector and match.
fn string_id(generation: u32, slot: u32, selector: usize, m: usize) -> u32 {
    (generation & 1) << 31 | (slot & 0xf_ffff) << 6 | (selector as u32 & 7) << 3 | (m as u32 & 7)
}

/// Compiles `hook` for `slot` of `generation`; `next_bit` is the next free
/// `matchBinaries` bit of the generation.
pub fn compile(
    hook: &GenericHook,
    generation: u32,
    slot: u32,
    tracefs_root: &Path,
    host_ns: &HostNamespaces,
    next_bit: &mut u32,
) -> Result<CompiledHook, HookError> {
    let mut config = GenHook {
        nargs: hook.args.len() as u32,
        nselectors: hook.selectors.len() as u32,
        ..GenHook::default()
    };
    let mut types = Vec::new();
    let attach = match &hook.point {
        HookPoint::Kprobe { call, syscall } => {
            config.ret = match hook.ret {
                Some(ArgType::Int) => 4 | GEN_RET_SIGNED,
                Some(ArgType::Uint32) => 4,
                Some(ArgType::Int64) => 8 | GEN_RET_SIGNED,
                Some(_) => 8,
                None => 0,
            };
            if *syscall {
                config.flags |= GEN_HOOK_SYSCALL;
            }
            let regs = if *syscall {
                SYSCALL_REGS
            } else {
                FUNCTION_REGS
            };
            for (i, a) in hook.args.iter().enumerate() {
                let src = regs[a.index.min(5) as usize];
                config.args[i] = kprobe_arg(a.ty, src, *syscall);
                if let Some(n) = a.size_arg {
                    config.args[i].size = regs[n.min(5) as usize];
                }
                types.push(a.ty);
            }
            Attach::Kprobe {
                function: kprobe_function(call, *syscall),
                override_: hook
                    .selectors
                    .iter()
                    .any(|s| s.actions.override_error.is_some()),
                ret: hook.ret.is_some(),
            }
        }
        HookPoint::Uprobe {
            path,
            symbol,
            offset,
        } => {
            for (i, a) in hook.args.iter().enumerate() {
                // A user function's string is in user memory, as a
                // system call's.
                config.args[i] = kprobe_arg(a.ty, FUNCTION_REGS[a.index.min(5) as usize], true);
                types.push(a.ty);
            }
            Attach::Uprobe {
                path: path.clone(),
                symbol: symbol.clone(),
                offset: *offset,
            }
        }
        HookPoint::Lsm { hook: name } => {
            let overrides = hook
                .selectors
                .iter()
                .any(|s| s.actions.override_error.is_some());
            let params = check_lsm_signature(name, &hook.args, overrides).map_err(|why| {
                HookError::Hook {
                    hook: hook.name.clone(),
                    why,
                }
            })?;
            // The program's context: the hook's arguments as 64-bit words.
            for (i, a) in hook.args.iter().enumerate() {
                config.args[i] = kprobe_arg(a.ty, 8 * a.index.min(5), false);
                if let Some(n) = a.size_arg {
                    config.args[i].size = 8 * n.min(5);
                }
                // A narrower integer (umode_t, bool) is read at its own
                // size, zero-extended: the bits above it in the word are
                // not its, and such kernel types are unsigned (a mode with
                // S_IFREG set stays positive).
                if let Some(TypeShape::Int(n @ (1 | 2))) = params.get(a.index as usize) {
                    if config.args[i].kind == GEN_ARG_INT {
                        config.args[i].size = *n;
                        config.args[i].signed = 0;
                    }
                }
                types.push(a.ty);
            }
            Attach::Lsm { hook: name.clone() }
        }
        HookPoint::Tracepoint { subsystem, event } => {
            let format = tracefs::read_format(tracefs_root, subsystem, event).map_err(|e| {
                HookError::Hook {
                    hook: hook.name.clone(),
                    why: e.to_string(),
                }
            })?;
            let user = subsystem == "syscalls";
            for (i, a) in hook.args.iter().enumerate() {
                let Some(field) = format.fields.get(a.index as usize) else {
                    return Err(HookError::Hook {
                        hook: hook.name.clone(),
                        why: format!(
                            "args index {}: tracepoint {subsystem}/{event} has {} fields (index 0 to {}, the common_ fields included)",
                            a.index,
                            format.fields.len(),
                            format.fields.len().saturating_sub(1)
                        ),
                    });
                };
                let (arg, ty) =
                    tracepoint_arg(a.ty, field, user).map_err(|why| HookError::Hook {
                        hook: hook.name.clone(),
                        why: format!("args index {} (field {}): {why}", a.index, field.name),
                    })?;
                config.args[i] = arg;
                types.push(ty);
            }
            Attach::Tracepoint { id: format.id }
        }
    };
    let mut strings = Vec::new();
    let mut binaries = Vec::new();
    let mut follow = Vec::new();
    let mut rules = Vec::new();
    for (s, sel) in hook.selectors.iter().enumerate() {
        let mut out = GenSelector {
            nmatches: sel.matches.len() as u32,
            rule_id: s as u32,
            ..GenSelector::default()
        };
        super::process_filters::fill(&sel.process, &mut out, host_ns).map_err(|why| {
            HookError::Hook {
                hook: hook.name.clone(),
                why,
            }
        })?;
        if sel.actions.post {
            out.actions |= GEN_ACT_POST;
        }
        if sel.actions.sigkill {
            out.actions |= GEN_ACT_SIGKILL;
        }
        if let Some(sig) = sel.actions.signal {
            out.actions |= GEN_ACT_SIGNAL;
            out.signal = sig;
        }
        if sel.actions.kernel_stack {
            out.actions |= GEN_ACT_KSTACK;
        }
        if sel.actions.user_stack {
            out.actions |= GEN_ACT_USTACK;
        }
        if let Some((ns, scope)) = sel.actions.rate_limit {
            out.rate_limit_ns = ns;
            out.rate_scope = scope;
        }
        if let Some(e) = sel.actions.override_error {
            out.actions |= GEN_ACT_OVERRIDE;
            out.arg_error = e;
        }
        out.ret_actions = GEN_ACT_POST;
        if let Some(r) = &sel.ret_actions {
            out.ret_actions = if r.post { GEN_ACT_POST } else { 0 };
            if r.sigkill {
                out.ret_actions |= GEN_ACT_SIGKILL;
            }
            if let Some(sig) = r.signal {
                out.ret_actions |= GEN_ACT_SIGNAL;
                out.ret_signal = sig;
            }
        }
        // A bit of its own for each entry: which binaries a process's
        // executable (or its parent's) is among.
        let mut bit_for = |b: &Binaries| -> Result<(u32, u32), HookError> {
            if *next_bit >= MAX_BINARY_SELECTORS {
                return Err(HookError::Hook {
                    hook: hook.name.clone(),
                    why: format!(
                        "more than {MAX_BINARY_SELECTORS} matchBinaries and matchParentBinaries entries in force"
                    ),
                });
            }
            let bit = *next_bit;
            binaries.extend(b.paths.iter().map(|p| (p.clone(), bit)));
            *next_bit += 1;
            Ok((
                if b.op == BinaryOp::In {
                    GEN_BIN_IN
                } else {
                    GEN_BIN_NOT_IN
                },
                bit,
            ))
        };
        // Strings tried on an executable's path, under ids no matchArgs
        // entry uses (their indexes stay below 5).
        let mut path_strings = |b: &Binaries, m: usize| {
            let op = match b.op {
                BinaryOp::Prefix => Op::Prefix,
                BinaryOp::NotPrefix => Op::NotPrefix,
                BinaryOp::Postfix => Op::Postfix,
                _ => Op::NotPostfix,
            };
            let id = string_id(generation, slot, s, m);
            strings.extend(b.paths.iter().map(|v| string_key(id, v, op)));
            (op_code(op, true), id)
        };
        if let Some(b) = sel.binaries.as_ref().filter(|b| b.follow_children) {
            follow.extend(b.paths.iter().map(|p| (s, p.clone())));
        }
        (out.binaries, out.bin_bit) = match &sel.binaries {
            Some(b) if b.op.is_string() => {
                (out.bin_str_op, out.bin_str_id) = path_strings(b, BINARY_STRINGS);
                (GEN_BIN_ANY, 0)
            }
            Some(b) => bit_for(b)?,
            None => (GEN_BIN_ANY, 0),
        };
        (out.parent_binaries, out.parent_bin_bit) = match &sel.parent_binaries {
            Some(b) if b.op.is_string() => {
                (out.parent_bin_str_op, out.parent_bin_str_id) =
                    path_strings(b, PARENT_BINARY_STRINGS);
                (GEN_BIN_ANY, 0)
            }
            Some(b) => bit_for(b)?,
            None => (GEN_BIN_ANY, 0),
        };
        // matchReturnArgs after the matchArgs, compared as integers.
        out.nret_matches = sel.ret_matches.len().min(GEN_MAX_RET_MATCHES) as u32;
        for (k, am) in sel.ret_matches.iter().take(GEN_MAX_RET_MATCHES).enumerate() {
            let mut gm = GenMatch {
                op: op_code(am.op, false),
                ..GenMatch::default()
            };
            if let Values::Ints(v) = &am.values {
                gm.nvalues = v.len().min(GEN_MAX_VALUES) as u32;
                for (j, x) in v.iter().take(GEN_MAX_VALUES).enumerate() {
                    gm.values[j] = *x;
                }
            }
            out.matches[GEN_RET_MATCH_BASE + k] = gm;
        }
        for (m, am) in sel.matches.iter().enumerate() {
            let string = types.get(am.arg).is_some_and(|t| t.is_string());
            let op = op_code(am.op, string);
            let mut gm = GenMatch {
                arg: am.arg as u32,
                op,
                ..GenMatch::default()
            };
            match &am.values {
                Values::Ints(v) if !string => {
                    gm.nvalues = v.len().min(GEN_MAX_VALUES) as u32;
                    for (k, x) in v.iter().take(GEN_MAX_VALUES).enumerate() {
                        gm.values[k] = *x;
                    }
                }
                Values::Strings(v) if string => {
                    gm.id = string_id(generation, slot, s, m);
                    for value in v {
                        strings.push(string_key(gm.id, value, am.op));
                    }
                }
                Values::Cidrs(v) => {
                    gm.id = string_id(generation, slot, s, m);
                    strings.extend(v.iter().map(|n| addr_key(gm.id, n)));
                }
                _ => {
                    return Err(HookError::Hook {
                        hook: hook.name.clone(),
                        why: format!(
                            "matchArgs index {}: the values are {} but the argument is {}",
                            hook.args[am.arg].index,
                            if matches!(am.values, Values::Ints(_)) {
                                "numbers"
                            } else {
                                "strings"
                            },
                            if string { "a string" } else { "a number" }
                        ),
                    });
                }
            }
            out.matches[m] = gm;
        }
        config.selectors[s] = out;
        rules.push(format!("{}.{s}", hook.name));
    }
    let meta = Arc::new(HookMeta {
        policy: hook.policy.clone(),
        point: hook.point.clone(),
        args: types,
        rules,
        message: hook.message.clone(),
        tags: hook.tags.clone(),
        ret: hook.ret,
    });
    Ok(CompiledHook {
        attach,
        config,
        strings,
        binaries,
        follow,
        meta,
    })
}

/// Checks an `lsmhooks` entry against the hook as this kernel has it
/// (`bpf_lsm_<hook>` in its BTF): the hook exists, each argument is there
/// and has the type the policy reads it as, and an Override has an error
/// to return.
fn check_lsm_signature(
    hook: &str,
    args: &[HookArg],
    overrides: bool,
) -> Result<Vec<TypeShape>, String> {
    let (ret, params) = crate::kernel::btf::function_signature(&format!("bpf_lsm_{hook}"))
        .map_err(|_| {
            format!("this kernel has no LSM hook {hook} (its BTF has no bpf_lsm_{hook})")
        })?;
    for a in args {
        let Some(param) = params.get(a.index as usize) else {
            return Err(format!(
                "args index {}: hook {hook} has {} arguments (index 0 to {})",
                a.index,
                params.len(),
                params.len().saturating_sub(1)
            ));
        };
        if !reads_as(a.ty, param) {
            return Err(format!(
                "args index {}: type {} does not fit: {hook}'s argument {} is {}",
                a.index,
                a.ty.name(),
                a.index,
                describe(param)
            ));
        }
        if let Some(n) = a.size_arg {
            if !matches!(params.get(n as usize), Some(TypeShape::Int(_))) {
                return Err(format!(
                    "args index {}: sizeArgIndex {}: {hook}'s argument {n} is not an integer",
                    a.index,
                    n + 1
                ));
            }
        }
    }
    // The kernel holds a bool hook's program to 0 or 1; vardr's returns
    // an errno.
    if ret == TypeShape::Int(1) {
        return Err(format!(
            "hook {hook} returns a bool, not an error code: vardr's LSM program cannot run on it (use a kprobe on security_{hook})"
        ));
    }
    if overrides && ret != TypeShape::Int(4) {
        return Err(format!(
            "action Override: hook {hook} returns {}, not an error code: it cannot fail the call (use Sigkill)",
            describe(&ret)
        ));
    }
    Ok(params)
}

/// Whether an argument of `shape` can be read as `ty`.
fn reads_as(ty: ArgType, shape: &TypeShape) -> bool {
    let strukt = |name: &str| matches!(shape, TypeShape::StructPtr(s) if s == name);
    match ty {
        ArgType::File => strukt("file"),
        ArgType::Path => strukt("path"),
        ArgType::LinuxBinprm => strukt("linux_binprm"),
        ArgType::Sock => strukt("sock"),
        ArgType::Skb => strukt("sk_buff"),
        ArgType::Sockaddr => strukt("sockaddr"),
        ArgType::Cred => strukt("cred"),
        ArgType::Filename => strukt("filename"),
        ArgType::String => matches!(shape, TypeShape::CharPtr),
        ArgType::CharBuf => matches!(shape, TypeShape::CharPtr | TypeShape::Other),
        // A 4-byte read of an 8-byte integer would compare only its low
        // half: such an argument is an int64 or uint64.
        ArgType::Int | ArgType::Uint32 | ArgType::Fd => {
            matches!(shape, TypeShape::Int(n) if *n <= 4)
        }
        // A 64-bit read takes any word: a number, or a pointer's value.
        ArgType::Int64 | ArgType::Uint64 | ArgType::SizeT | ArgType::Auto => {
            !matches!(shape, TypeShape::Void)
        }
    }
}

fn describe(shape: &TypeShape) -> String {
    match shape {
        TypeShape::Void => "void".into(),
        TypeShape::Int(1) => "a 1-byte integer (bool, char)".into(),
        TypeShape::Int(8) => "an 8-byte integer".into(),
        TypeShape::Int(n) => format!("a {n}-byte integer"),
        TypeShape::StructPtr(s) => format!("struct {s} *"),
        TypeShape::CharPtr => "char *".into(),
        TypeShape::Other => "a pointer or type vardr does not read as such".into(),
    }
}

fn kprobe_arg(ty: ArgType, src: u32, syscall: bool) -> GenArg {
    let int = |size, signed: bool| GenArg {
        kind: GEN_ARG_INT,
        src,
        size,
        signed: signed as u32,
    };
    let of = |kind| GenArg {
        kind,
        src,
        size: 8,
        signed: 0,
    };
    match ty {
        ArgType::Int => int(4, true),
        ArgType::Uint32 => int(4, false),
        ArgType::Int64 => int(8, true),
        ArgType::Uint64 | ArgType::SizeT | ArgType::Auto => int(8, false),
        ArgType::String if syscall => of(GEN_ARG_STR_USER),
        ArgType::String => of(GEN_ARG_STR_KERNEL),
        ArgType::Filename => of(GEN_ARG_FILENAME),
        ArgType::File => of(GEN_ARG_FILE),
        ArgType::Path => of(GEN_ARG_PATH),
        ArgType::LinuxBinprm => of(GEN_ARG_BINPRM),
        ArgType::Fd => of(GEN_ARG_FD),
        ArgType::CharBuf if syscall => of(GEN_ARG_BUF_USER),
        ArgType::CharBuf => of(GEN_ARG_BUF_KERNEL),
        ArgType::Sock => of(GEN_ARG_SOCK),
        ArgType::Skb => of(GEN_ARG_SKB),
        ArgType::Sockaddr => of(GEN_ARG_SOCKADDR),
        ArgType::Cred => of(GEN_ARG_CRED),
    }
}

/// How to read a tracepoint field as `ty`; returns the type it is
/// reported as (`auto` resolved from the format).
fn tracepoint_arg(ty: ArgType, f: &Field, user: bool) -> Result<(GenArg, ArgType), String> {
    let src = f.offset;
    let text =
        f.is_data_loc() || f.is_char_array() || (f.is_pointer() && f.c_type.contains("char"));
    let string = |kind, size| {
        Ok((
            GenArg {
                kind,
                src,
                size,
                signed: 0,
            },
            ArgType::String,
        ))
    };
    match ty {
        ArgType::String | ArgType::Auto if f.is_data_loc() => string(GEN_ARG_DATA_LOC, 4),
        ArgType::String | ArgType::Auto if f.is_char_array() => string(GEN_ARG_CHAR_ARRAY, f.size),
        ArgType::String | ArgType::Auto if text => string(
            if user {
                GEN_ARG_STR_USER
            } else {
                GEN_ARG_STR_KERNEL
            },
            8,
        ),
        ArgType::String => Err(format!("type string, but the field is a {}", f.c_type)),
        // `void *skbaddr` in the net and skb tracepoints, or a field of
        // type `struct sk_buff *`: another pointer is not a packet.
        ArgType::Skb
            if f.is_pointer()
                && !text
                && !user
                && (f.c_type.contains("sk_buff") || ["skbaddr", "skb"].contains(&f.name.as_str())) =>
        {
            Ok((kprobe_arg(ty, src, false), ty))
        }
        ArgType::Skb => Err(format!(
            "type skb, but field {} is a {} (an sk_buff pointer is needed: a `struct sk_buff *` field, or the net and skb tracepoints' `skbaddr`)",
            f.name, f.c_type
        )),
        ArgType::Sock | ArgType::Sockaddr | ArgType::CharBuf | ArgType::Cred => {
            Err(format!("type {}: on kprobes only", ty.name()))
        }
        // A descriptor is an integer field, read as the kernel function's.
        ArgType::Fd if !f.is_pointer() && !text && [4, 8].contains(&f.size) => Ok((
            GenArg {
                kind: GEN_ARG_FD,
                src,
                size: f.size,
                signed: 1,
            },
            ty,
        )),
        ArgType::Fd => Err(format!("type fd, but the field is a {}", f.c_type)),
        ArgType::Filename | ArgType::File | ArgType::Path | ArgType::LinuxBinprm => {
            if !f.is_pointer() || user {
                return Err(format!(
                    "type {}, but the field is a {} (a kernel pointer is needed)",
                    ty.name(),
                    f.c_type
                ));
            }
            Ok((kprobe_arg(ty, src, false), ty))
        }
        _ if text || f.is_data_loc() => Err(format!(
            "type {}, but the field is a {}",
            ty.name(),
            f.c_type
        )),
        _ => {
            if ![1, 2, 4, 8].contains(&f.size) {
                return Err(format!("a field of {} bytes is not an integer", f.size));
            }
            let (signed, reported) = match ty {
                ArgType::Auto => {
                    let r = match (f.size, f.signed) {
                        (8, true) => ArgType::Int64,
                        (8, false) => ArgType::Uint64,
                        (_, true) => ArgType::Int,
                        (_, false) => ArgType::Uint32,
                    };
                    (f.signed, r)
                }
                ArgType::Int | ArgType::Int64 => (true, ty),
                _ => (false, ty),
            };
            Ok((
                GenArg {
                    kind: GEN_ARG_INT,
                    src,
                    size: f.size,
                    signed: signed as u32,
                },
                reported,
            ))
        }
    }
}

fn op_code(op: Op, string: bool) -> u32 {
    match (op, string) {
        (Op::Equal, true) => GEN_OP_STR_EQ,
        (Op::NotEqual, true) => GEN_OP_STR_NE,
        (Op::Prefix, _) => GEN_OP_PREFIX,
        (Op::NotPrefix, _) => GEN_OP_NOT_PREFIX,
        (Op::Postfix, _) => GEN_OP_POSTFIX,
        (Op::NotPostfix, _) => GEN_OP_NOT_POSTFIX,
        (Op::Equal, false) => GEN_OP_EQ,
        (Op::NotEqual, false) => GEN_OP_NE,
        (Op::GreaterThan, _) => GEN_OP_GT,
        (Op::LessThan, _) => GEN_OP_LT,
        (Op::Mask, _) => GEN_OP_MASK,
        (Op::SPort, _) => GEN_OP_SPORT,
        (Op::NotSPort, _) => GEN_OP_NOT_SPORT,
        (Op::DPort, _) => GEN_OP_DPORT,
        (Op::NotDPort, _) => GEN_OP_NOT_DPORT,
        (Op::SPortPriv, _) => GEN_OP_SPORT_PRIV,
        (Op::NotSPortPriv, _) => GEN_OP_NOT_SPORT_PRIV,
        (Op::DPortPriv, _) => GEN_OP_DPORT_PRIV,
        (Op::NotDPortPriv, _) => GEN_OP_NOT_DPORT_PRIV,
        (Op::SAddr, _) => GEN_OP_SADDR,
        (Op::NotSAddr, _) => GEN_OP_NOT_SADDR,
        (Op::DAddr, _) => GEN_OP_DADDR,
        (Op::NotDAddr, _) => GEN_OP_NOT_DADDR,
        (Op::Protocol, _) => GEN_OP_PROTOCOL,
        (Op::Family, _) => GEN_OP_FAMILY,
        (Op::State, _) => GEN_OP_STATE,
    }
}

/// The `GEN_STRINGS` key of an SAddr/DAddr value: the id (big endian),
/// the family (`AF_INET`, `AF_INET6`), the network's address; its prefix
/// covers the id, the family and the CIDR's bits.
pub fn addr_key(id: u32, net: &IpNet) -> ([u8; GEN_STR_KEY_LEN], u32) {
    let mut key = [0u8; GEN_STR_KEY_LEN];
    key[..4].copy_from_slice(&id.to_be_bytes());
    let (family, octets): (u8, Vec<u8>) = match net {
        IpNet::V4(n) => (2, n.network().octets().to_vec()),
        IpNet::V6(n) => (10, n.network().octets().to_vec()),
    };
    key[4] = family;
    key[5..5 + octets.len()].copy_from_slice(&octets);
    (key, 40 + u32::from(net.prefix_len()))
}

/// The `GEN_STRINGS` key of one value: the id (big endian), then the
/// value, reversed for the Postfix operators, with its NUL for Equal and
/// NotEqual (a whole string, not a prefix).
pub fn string_key(id: u32, value: &str, op: Op) -> ([u8; GEN_STR_KEY_LEN], u32) {
    let mut key = [0u8; GEN_STR_KEY_LEN];
    key[..4].copy_from_slice(&id.to_be_bytes());
    let bytes: Vec<u8> = match op {
        Op::Postfix | Op::NotPostfix => value.bytes().rev().collect(),
        _ => value.bytes().collect(),
    };
    let n = bytes.len().min(GEN_MATCH_STR_LEN - 1);
    key[4..4 + n].copy_from_slice(&bytes[..n]);
    let whole = matches!(op, Op::Equal | Op::NotEqual);
    let len = 4 + n + usize::from(whole);
    (key, (len * 8) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_arguments_are_checked_against_the_kernels_hook() {
        let arg = |index, ty| HookArg {
            index,
            ty,
            size_arg: None,
        };
        // The kernel's BTF has bpf_lsm_* wherever it was built with the BPF
        // LSM, active or not.
        if crate::kernel::btf::function_signature("bpf_lsm_socket_connect").is_err() {
            eprintln!("SKIPPED lsm_arguments_are_checked_against_the_kernels_hook: no BPF LSM hooks in this kernel's BTF");
            return;
        }
        let ok = [arg(1, ArgType::Sockaddr), arg(2, ArgType::Int)];
        assert!(check_lsm_signature("socket_connect", &ok, true).is_ok());
        let e = check_lsm_signature("socket_connect", &[arg(0, ArgType::Sock)], false);
        assert!(
            e.as_ref().is_err_and(|e| e.contains(
                "type sock does not fit: socket_connect's argument 0 is struct socket *"
            )),
            "{e:?}"
        );
        let e = check_lsm_signature("socket_connect", &[arg(3, ArgType::Int)], false);
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("hook socket_connect has 3 arguments (index 0 to 2)")),
            "{e:?}"
        );
        // An 8-byte integer is an int64/uint64, not an int.
        if crate::kernel::btf::function_signature("bpf_lsm_mmap_addr").is_ok() {
            let e = check_lsm_signature("mmap_addr", &[arg(0, ArgType::Int)], false);
            assert!(
                e.as_ref()
                    .is_err_and(|e| e.contains("is an 8-byte integer")),
                "{e:?}"
            );
            assert!(check_lsm_signature("mmap_addr", &[arg(0, ArgType::Uint64)], false).is_ok());
        }
        let e = check_lsm_signature("file_opn", &[], false);
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("this kernel has no LSM hook file_opn")),
            "{e:?}"
        );
        // A hook that returns nothing cannot fail a call.
        if crate::kernel::btf::function_signature("bpf_lsm_task_free").is_ok() {
            let e = check_lsm_signature("task_free", &[], true);
            assert!(
                e.as_ref().is_err_and(|e| e.contains("returns void")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn syscall_kprobes_attach_to_the_wrapper() {
        assert_eq!(kprobe_function("sys_mkdirat", true), "__x64_sys_mkdirat");
        assert_eq!(kprobe_function("mkdirat", true), "__x64_sys_mkdirat");
        assert_eq!(
            kprobe_function("__x64_sys_openat", true),
            "__x64_sys_openat"
        );
        assert_eq!(kprobe_function("do_mkdirat", false), "do_mkdirat");
    }

    #[test]
    fn string_keys_are_whole_strings_for_equal_and_reversed_for_postfix() {
        let (k, bits) = string_key(0x0102_0304, "/tmp", Op::Equal);
        assert_eq!(&k[..9], b"\x01\x02\x03\x04/tmp\0");
        assert_eq!(bits, 9 * 8);
        let (k, bits) = string_key(7, "/tmp", Op::Prefix);
        assert_eq!(&k[4..8], b"/tmp");
        assert_eq!(bits, 8 * 8);
        let (k, bits) = string_key(7, ".so", Op::NotPostfix);
        assert_eq!(&k[4..7], b"os.");
        assert_eq!(bits, 7 * 8);
    }

    #[test]
    fn address_keys_cover_the_id_the_family_and_the_cidr() {
        let (k, bits) = addr_key(7, &"10.1.0.0/16".parse().unwrap());
        assert_eq!(&k[..7], &[0, 0, 0, 7, 2, 10, 1]);
        assert_eq!(bits, 40 + 16);
        let (k, bits) = addr_key(7, &"::1/128".parse().unwrap());
        assert_eq!(k[4], 10);
        assert_eq!(k[20], 1);
        assert_eq!(bits, 40 + 128);
    }

    #[test]
    fn string_ids_differ_per_generation_slot_selector_and_match() {
        let ids = [
            string_id(0, 1, 0, 0),
            string_id(1, 1, 0, 0),
            string_id(0, 2, 0, 0),
            string_id(0, 1, 1, 0),
            string_id(0, 1, 0, 1),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    fn field(c_type: &str, offset: u32, size: u32, signed: bool) -> Field {
        Field {
            name: "f".into(),
            c_type: c_type.into(),
            offset,
            size,
            signed,
        }
    }

    #[test]
    fn tracepoint_fields_are_read_as_their_format_says() {
        let (a, t) = tracepoint_arg(
            ArgType::Auto,
            &field("__data_loc char[]", 8, 4, false),
            false,
        )
        .unwrap();
        assert_eq!((a.kind, a.src, t), (GEN_ARG_DATA_LOC, 8, ArgType::String));
        let (a, t) = tracepoint_arg(ArgType::Auto, &field("pid_t", 12, 4, true), false).unwrap();
        assert_eq!(
            (a.kind, a.size, a.signed, t),
            (GEN_ARG_INT, 4, 1, ArgType::Int)
        );
        let (a, _) =
            tracepoint_arg(ArgType::String, &field("const char *", 24, 8, false), true).unwrap();
        assert_eq!(a.kind, GEN_ARG_STR_USER);
        let (a, _) =
            tracepoint_arg(ArgType::Auto, &field("char[16]", 8, 16, false), false).unwrap();
        assert_eq!((a.kind, a.size), (GEN_ARG_CHAR_ARRAY, 16));
        assert!(tracepoint_arg(ArgType::String, &field("int", 8, 4, true), false).is_err());
        assert!(tracepoint_arg(
            ArgType::Int,
            &field("__data_loc char[]", 8, 4, false),
            false
        )
        .is_err());
        assert!(tracepoint_arg(ArgType::File, &field("const char *", 24, 8, false), true).is_err());
    }
}
