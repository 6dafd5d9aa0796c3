//! A selector's `matchArgs` (ANDed filters) to a native rule's match.
use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::{
    schema::ArgSelector,
    translate::{at, pos, Kind},
    validate::items,
    NOT_YET,
};
use crate::policy::{
    validate::{abs_path, parse_cidr, Diags},
    Protocol,
};

/// Tetragon's limit on values of one filter on a `file` argument.
const MAX_FILE_VALUES: usize = 8;

#[derive(Default)]
pub(super) struct Match {
    pub paths: Vec<String>,
    pub prefixes: Vec<String>,
    pub binaries: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<u16>,
    pub protocol: Protocol,
}

/// Tetragon's operators: every spelling its selector parser accepts, and
/// the documented name used in messages.
const OPERATORS: [(&[&str], &str); 36] = [
    (&["eq", "Equal"], "Equal"),
    (&["neq", "NotEqual"], "NotEqual"),
    (&["prefix", "Prefix"], "Prefix"),
    (&["notprefix", "NotPrefix"], "NotPrefix"),
    (&["postfix", "Postfix"], "Postfix"),
    (&["notpostfix", "NotPostfix"], "NotPostfix"),
    (&["gt", "GT", "GreaterThan"], "GreaterThan"),
    (&["lt", "LT", "LessThan"], "LessThan"),
    (&["mask", "Mask"], "Mask"),
    (&["In"], "In"),
    (&["NotIn"], "NotIn"),
    (&["InMap"], "InMap"),
    (&["NotInMap"], "NotInMap"),
    (&["saddr", "Saddr", "SAddr"], "SAddr"),
    (&["daddr", "Daddr", "DAddr"], "DAddr"),
    (&["notsaddr", "NotSaddr", "NotSAddr"], "NotSAddr"),
    (&["notdaddr", "NotDaddr", "NotDAddr"], "NotDAddr"),
    (&["sport", "Sport", "SPort"], "SPort"),
    (&["dport", "Dport", "DPort"], "DPort"),
    (&["notsport", "NotSport", "NotSPort"], "NotSPort"),
    (&["notdport", "NotDport", "NotDPort"], "NotDPort"),
    (&["sportpriv", "SportPriv", "SPortPriv"], "SPortPriv"),
    (&["dportpriv", "DportPriv", "DPortPriv"], "DPortPriv"),
    (
        &["notsportpriv", "NotSportPriv", "NotSPortPriv"],
        "NotSPortPriv",
    ),
    (
        &["notdportpriv", "NotDportPriv", "NotDPortPriv"],
        "NotDPortPriv",
    ),
    (&["protocol", "Protocol"], "Protocol"),
    (&["family", "Family"], "Family"),
    (&["state", "State"], "State"),
    (&["CapabilitiesGained"], "CapabilitiesGained"),
    (&["InRange"], "InRange"),
    (&["NotInRange"], "NotInRange"),
    (&["SubString"], "SubString"),
    (&["SubStringIgnCase"], "SubStringIgnCase"),
    (&["CelExpr"], "CelExpr"),
    (&["FileType"], "FileType"),
    (&["NotFileType"], "NotFileType"),
];

fn operator(op: &str) -> Option<&'static str> {
    OPERATORS
        .iter()
        .find(|(spellings, _)| spellings.contains(&op))
        .map(|(_, name)| *name)
}

pub(super) fn translate(
    d: &mut Diags,
    kind: Kind,
    declared: &[u32],
    filters: &[&Spanned<ArgSelector>],
) -> Match {
    let mut m = Match::default();
    let mut seen: Vec<(u32, &str)> = Vec::new();
    let mut saddr: Option<Vec<IpNet>> = None;
    // The Family filter and its families, `true` for IPv6.
    let mut family: Option<(&Spanned<String>, Vec<bool>)> = None;
    for f in filters {
        let f = &f.value;
        let op_at = &f.operator;
        if let Some(a) = f.args.as_ref().filter(|a| !a.value.is_empty()) {
            d.at(
                a,
                format!("matchArgs args: {NOT_YET} (name the argument with index)"),
            );
            continue;
        }
        let idx = f.index.as_ref().map_or(0, |i| i.value);
        if !declared.contains(&idx) {
            let p = f.index.as_ref().map_or_else(|| pos(op_at), pos);
            at(d, p, format!("matchArgs index {idx} is not declared in the hook's args (Tetragon requires it)"));
            continue;
        }
        let Some(op) = operator(&op_at.value) else {
            d.at(
                op_at,
                format!("unknown matchArgs operator {:?}", op_at.value),
            );
            continue;
        };
        // Several filters on one argument are ANDed in Tetragon; a native
        // rule has one set per matcher.
        let file_like = kind != Kind::Connect;
        if seen
            .iter()
            .any(|&(i, o)| i == idx && (file_like || o == op))
        {
            d.at(op_at, format!("a second {op} filter on argument {idx} in one selector: {NOT_YET} (Tetragon ANDs them)"));
            continue;
        }
        seen.push((idx, op));
        let values: Vec<_> = items(&f.values).collect();
        if values.is_empty() {
            d.at(
                op_at,
                format!("matchArgs {op} has no values: it would match nothing"),
            );
            continue;
        }
        match (kind, idx, op) {
            (Kind::FileOpen | Kind::Exec, 0, "Equal" | "Prefix") => {
                let limit = values
                    .get(MAX_FILE_VALUES)
                    .filter(|_| kind == Kind::FileOpen);
                if let Some(v) = limit {
                    d.at(*v, format!("more than {MAX_FILE_VALUES} values: Tetragon allows at most {MAX_FILE_VALUES} per file filter"));
                }
                for v in values {
                    path_value(d, kind, op, v, &mut m);
                }
            }
            (Kind::Connect, 1, "SAddr") => {
                let nets = saddr.get_or_insert_with(Vec::new);
                for v in values {
                    match parse_cidr(&v.value) {
                        Ok(n) => nets.push(n),
                        Err(e) => d.at(v, e),
                    }
                }
            }
            (Kind::Connect, 1, "SPort") => {
                for v in values {
                    match v.value.parse::<u16>() {
                        Ok(p) if p > 0 => m.ports.push(p),
                        _ if v.value.contains(':') => d.at(
                            v,
                            format!("port range {:?}: {NOT_YET} (single ports only)", v.value),
                        ),
                        _ => d.at(v, format!("port {:?} out of range 1-65535", v.value)),
                    }
                }
            }
            (Kind::Connect, 1, "Family") => {
                let mut fams = Vec::new();
                for v in values {
                    match v.value.as_str() {
                        "AF_INET" | "2" => fams.push(false),
                        "AF_INET6" | "10" => fams.push(true),
                        other => d.at(v, format!("Family {other}: {NOT_YET} (its connect rules govern AF_INET and AF_INET6 only)")),
                    }
                }
                family = Some((op_at, fams));
            }
            (
                Kind::Connect,
                1,
                "DAddr" | "NotDAddr" | "DPort" | "NotDPort" | "DPortPriv" | "NotDPortPriv",
            ) => {
                d.at(op_at, format!("{op} on a sockaddr argument: Tetragon rejects it too; the address connect() is given is matched with SAddr and SPort"));
            }
            (Kind::Connect, 0, "Protocol") => {
                if let Some(v) = values.get(1) {
                    d.at(*v, format!("more than one Protocol value: {NOT_YET} (a rule names one protocol: use one selector per protocol)"));
                }
                match values[0].value.as_str() {
                    "IPPROTO_TCP" | "6" => m.protocol = Protocol::Tcp,
                    "IPPROTO_UDP" | "17" => m.protocol = Protocol::Udp,
                    other => d.at(
                        values[0],
                        format!("Protocol {other}: {NOT_YET} (IPPROTO_TCP and IPPROTO_UDP only)"),
                    ),
                }
            }
            _ => {
                let ty = kind
                    .args()
                    .iter()
                    .find(|(i, _)| *i == idx)
                    .map_or("", |(_, t)| t);
                d.at(
                    op_at,
                    format!(
                        "matchArgs operator {op} on {ty} argument {idx} of hook {}: {NOT_YET}{}",
                        kind.name(),
                        supported(kind)
                    ),
                );
            }
        }
    }
    if kind == Kind::Connect {
        // No SAddr: any address (of the families given).
        let mut cidrs = saddr
            .unwrap_or_else(|| vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())]);
        // A Family with no valid value has been reported already.
        if let Some((at, fams)) = family.filter(|(_, f)| !f.is_empty()) {
            cidrs.retain(|c| fams.contains(&matches!(c, IpNet::V6(_))));
            if cidrs.is_empty() {
                d.at(
                    at,
                    "SAddr and Family exclude each other: the selector would match nothing",
                );
            }
        }
        m.cidrs = cidrs;
    }
    m
}

fn supported(kind: Kind) -> &'static str {
    match kind {
        Kind::FileOpen | Kind::Exec => " (supported: Equal, Prefix on argument 0)",
        Kind::Connect => " (supported: SAddr, SPort, Family on sockaddr argument 1; Protocol on socket argument 0)",
    }
}

/// An `Equal` (exact path) or `Prefix` (directory) value.
fn path_value(d: &mut Diags, kind: Kind, op: &str, v: &Spanned<String>, m: &mut Match) {
    let what = format!("matchArgs {op} value");
    if op == "Prefix" {
        // Tetragon's Prefix is a string prefix, vardr's a directory
        // subtree: only a value that ends a directory name means the same.
        if !v.value.ends_with('/') {
            d.at(v, format!("{what} {:?} is a string prefix that is not a whole directory: {NOT_YET} (vardr's prefixes are directories: end the value with '/')", v.value));
        } else if let Some(p) = abs_path(d, v, &what) {
            m.prefixes.push(p);
        }
        return;
    }
    if v.value.len() > 1 && v.value.ends_with('/') {
        d.at(
            v,
            format!(
                "{what} {:?} ends with '/': a path the kernel reports never does",
                v.value
            ),
        );
    } else if let Some(p) = abs_path(d, v, &what) {
        // Exec: by path and by file identity, like native `binaries`.
        match kind {
            Kind::Exec => m.binaries.push(p),
            _ => m.paths.push(p),
        }
    }
}
