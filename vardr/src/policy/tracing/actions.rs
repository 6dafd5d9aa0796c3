//! A selector's `matchActions` to a native action.
use super::{
    schema::{ActionSelector, List},
    translate::{at, pos, Pos, MAX_ACTIONS},
    validate::{items, set},
    NOT_YET,
};
use crate::policy::{validate::Diags, Action};

/// Tetragon's actions, lower case as it compares them.
const ACTIONS: [&str; 12] = [
    "post",
    "sigkill",
    "override",
    "geturl",
    "dnslookup",
    "nopost",
    "signal",
    "tracksock",
    "untracksock",
    "notifyenforcer",
    "cleanupenforcernotification",
    "set",
];

/// `Override` and `Sigkill` deny, `Post` (Tetragon's default, also with no
/// `matchActions`) alerts. vardr refuses a denied call with its own errno
/// (EPERM, EACCES or ECONNREFUSED), whatever `argError` says, and never
/// kills: `Sigkill` becomes a refusal of the call.
pub(super) fn action(d: &mut Diags, acts: &List<ActionSelector>) -> Option<Action> {
    let all: Vec<_> = items(acts).collect();
    if let Some(a) = all.get(MAX_ACTIONS) {
        d.at(*a, format!("more than {MAX_ACTIONS} matchActions: Tetragon allows at most {MAX_ACTIONS} per selector"));
    }
    let (mut deny, mut ok) = (false, true);
    for a in all {
        let a = &a.value;
        let name = a.action.value.to_ascii_lowercase();
        let allowed: &[&str] = match name.as_str() {
            "post" => &[],
            "override" => {
                match set(&a.arg_error) {
                    None => {
                        d.at(
                            &a.action,
                            "Override needs a non-zero argError: with 0 the call goes ahead",
                        );
                        ok = false;
                    }
                    // An LSM program may only return 0 or a negative errno.
                    Some(e) if e.value > 0 => {
                        d.at(e, format!("argError {}: an LSM hook returns a negative errno (e.g. -1, EPERM)", e.value));
                        ok = false;
                    }
                    Some(_) => {}
                }
                deny = true;
                &["argError"]
            }
            "sigkill" => {
                deny = true;
                &[]
            }
            "nopost" => {
                d.at(
                    &a.action,
                    format!("action NoPost: {NOT_YET} (vardr reports every match)"),
                );
                ok = false;
                continue;
            }
            n if ACTIONS.contains(&n) => {
                d.at(&a.action, format!("action {}: {NOT_YET}", a.action.value));
                ok = false;
                continue;
            }
            _ => {
                d.at(&a.action, format!("unknown action {:?}", a.action.value));
                ok = false;
                continue;
            }
        };
        for (field, p) in action_fields(a) {
            if let Some(p) = p.filter(|_| !allowed.contains(&field)) {
                at(
                    d,
                    p,
                    format!("action {} with {field}: {NOT_YET}", a.action.value),
                );
                ok = false;
            }
        }
    }
    ok.then_some(if deny { Action::Deny } else { Action::Alert })
}

/// Every action argument and where it is set to a non-default value.
pub(super) fn action_fields(a: &ActionSelector) -> [(&'static str, Option<Pos>); 16] {
    let regs = a.arg_regs.as_ref().filter(|r| !r.value.is_empty());
    [
        ("argUrl", set(&a.arg_url).map(pos)),
        ("argFqdn", set(&a.arg_fqdn).map(pos)),
        ("argError", set(&a.arg_error).map(pos)),
        ("argSig", set(&a.arg_sig).map(pos)),
        ("argSock", set(&a.arg_sock).map(pos)),
        ("argIndex", set(&a.arg_index).map(pos)),
        ("argValue", set(&a.arg_value).map(pos)),
        ("argRegs", regs.map(pos)),
        ("argNewSymbol", set(&a.arg_new_symbol).map(pos)),
        ("argNewAddr", set(&a.arg_new_addr).map(pos)),
        ("argNewOffset", set(&a.arg_new_offset).map(pos)),
        ("rateLimit", set(&a.rate_limit).map(pos)),
        ("rateLimitScope", set(&a.rate_limit_scope).map(pos)),
        ("kernelStackTrace", set(&a.kernel_stack_trace).map(pos)),
        ("userStackTrace", set(&a.user_stack_trace).map(pos)),
        ("imaHash", set(&a.ima_hash).map(pos)),
    ]
}
