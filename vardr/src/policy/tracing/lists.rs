//! `spec.lists`: named lists of functions. A kprobe whose `call` is
//! `list:NAME` hooks each function of the list with the same arguments,
//! selectors and actions (Tetragon's semantics); a list of type `syscalls`
//! makes those kprobes system call probes.
use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::{
    schema::{List, ListSpec},
    validate::items,
    NOT_YET,
};
use crate::policy::validate::Diags;

/// Functions one list may name: each is a hook of its own, and a policy
/// set has room for 128 (two generations in 256 map entries).
pub const MAX_LIST_CALLS: usize = 64;

/// A list's functions, as kprobe calls.
#[derive(Debug)]
pub struct FunctionList {
    pub calls: Vec<String>,
    /// `type: syscalls`: system calls (`sys_dup` hooks `__x64_sys_dup`).
    pub syscall: bool,
}

/// The lists of a policy, by name, each checked (errors reported here; a
/// wrong list is left out, so a kprobe naming it is not reported twice).
pub fn lists(d: &mut Diags, specs: &List<ListSpec>) -> HashMap<String, FunctionList> {
    let mut out = HashMap::new();
    for l in items(specs) {
        let spec = &l.value;
        let name = &spec.name;
        if out.contains_key(&name.value) {
            d.at(
                name,
                format!("lists: list {:?} is defined twice", name.value),
            );
            continue;
        }
        if let Some(list) = list(d, spec) {
            out.insert(name.value.clone(), list);
        }
    }
    out
}

fn list(d: &mut Diags, spec: &ListSpec) -> Option<FunctionList> {
    let name = &spec.name;
    let ty = spec.type_.as_deref().unwrap_or("").to_ascii_lowercase();
    let syscall = match ty.as_str() {
        "" => false,
        "syscalls" => true,
        "generated_syscalls" | "generated_ftrace" => {
            d.at(
                name,
                format!(
                    "lists (list {:?}): type {ty}: {NOT_YET} (it hooks every function the kernel has{}: more than vardr attaches; name the functions in a list of type syscalls or without a type)",
                    name.value,
                    if ty == "generated_ftrace" { " that matches the pattern" } else { " a system call for" }
                ),
            );
            return None;
        }
        other => {
            d.at(
                name,
                format!(
                    "lists (list {:?}): type {other:?} is not a list type (syscalls, generated_syscalls, generated_ftrace, or none)",
                    name.value
                ),
            );
            return None;
        }
    };
    if spec.pattern.is_some() {
        d.at(
            name,
            format!(
                "lists (list {:?}): pattern is for lists of type generated_ftrace",
                name.value
            ),
        );
        return None;
    }
    let values = spec.values.as_deref().unwrap_or_default();
    if values.is_empty() {
        d.at(name, format!("lists (list {:?}) has no values", name.value));
        return None;
    }
    if values.len() > MAX_LIST_CALLS {
        d.at(
            name,
            format!(
                "lists (list {:?}): {} functions, more than the {MAX_LIST_CALLS} hooks one list may attach",
                name.value,
                values.len()
            ),
        );
        return None;
    }
    let mut calls = Vec::with_capacity(values.len());
    for v in values {
        let v = v.trim();
        let call = if syscall {
            syscall_call(v)
        } else {
            plain_call(v)
        };
        match call {
            Ok(c) if calls.contains(&c) => {
                d.at(
                    name,
                    format!(
                        "lists (list {:?}): {c} is listed twice (it would be hooked twice)",
                        name.value
                    ),
                );
                return None;
            }
            Ok(c) => calls.push(c),
            Err(why) => {
                d.at(
                    name,
                    format!("lists (list {:?}): value {v:?}: {why}", name.value),
                );
                return None;
            }
        }
    }
    Some(FunctionList { calls, syscall })
}

fn plain_call(v: &str) -> Result<String, String> {
    if v.is_empty() || v.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        return Err("not a function name".into());
    }
    Ok(v.to_string())
}

/// A `syscalls` list entry as Tetragon writes it (`sys_dup`, `dup`, with
/// an optional `x64/` ABI) as the call of a `syscall: true` kprobe.
fn syscall_call(v: &str) -> Result<String, String> {
    let v = match v.split_once('/') {
        None => v,
        Some(("x64", rest)) => rest,
        Some((abi, _)) => {
            return Err(format!(
                "ABI {abi}: {NOT_YET} (vardr hooks the 64-bit system calls)"
            ))
        }
    };
    let v = v.strip_prefix("__x64_").unwrap_or(v);
    let name = plain_call(v)?;
    Ok(if name.starts_with("sys_") {
        name
    } else {
        format!("sys_{name}")
    })
}

/// The functions a kprobe's `call` names: itself, or those of the list
/// it names (`list:NAME`; `None` when there is no such list, reported).
pub fn calls<'a>(
    d: &mut Diags,
    lists: &'a HashMap<String, FunctionList>,
    defined: &[String],
    call: &Spanned<String>,
) -> Option<Option<&'a FunctionList>> {
    let Some(name) = call.value.trim().strip_prefix("list:") else {
        return Some(None);
    };
    match lists.get(name) {
        Some(l) => Some(Some(l)),
        // Defined but wrong: already reported.
        None if defined.iter().any(|n| n == name) => None,
        None => {
            d.at(
                call,
                format!(
                    "kprobes call {:?}: no list named {name:?} in spec.lists",
                    call.value
                ),
            );
            None
        }
    }
}
