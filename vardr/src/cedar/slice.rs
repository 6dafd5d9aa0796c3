//! Policy slicing: Cedar evaluates every policy it is given, so each
//! action's policies are grouped by the entity their principal and resource
//! scopes name, and an event is only checked against the groups whose
//! entities it is (or is `in`). With policies scoped to binaries, services
//! or directories, an event meets a handful of them whatever the set's size.
use std::{collections::HashMap, collections::HashSet, str::FromStr};

use cedar_policy::{EntityId, EntityTypeName, EntityUid, Policy, PolicySet};
use cedar_policy_core::ast;
use serde_json::Value;

/// The entity a scope names; `None` for `principal` / `resource` alone
/// (or `is T`), which any entity satisfies.
type Key = Option<ast::EntityUID>;

fn entity_key(e: &Value) -> Key {
    let ty = EntityTypeName::from_str(e["type"].as_str()?).ok()?;
    let id = EntityId::new(e["id"].as_str()?);
    Some(EntityUid::from_type_name_and_id(ty, id).into())
}

/// `== E`, `in E` and `is T in E` are all keyed by E: the group is a
/// superset of what the scope admits, and Cedar decides the rest.
fn scope_key(scope: &Value) -> Key {
    match scope["op"].as_str() {
        Some("==" | "in") => entity_key(&scope["entity"]),
        Some("is") => entity_key(&scope["in"]["entity"]),
        _ => None,
    }
}

/// `resource.path like "/opt/app/*"` (or `== "/opt/app/x"`) in a `when`
/// clause's top-level `&&`: such a policy only applies to resources in
/// `Dir::"/opt/app"`; returns that directory (never the root). With
/// `exact_dirs`, a pattern that also matches the directory's own path
/// written with a slash ("/opt/app/") gives its parent, so the answer
/// holds for every path Cedar can match (what slicing needs).
pub(super) fn path_dir(conditions: &Value, exact_dirs: bool) -> Option<String> {
    fn is_path(v: &Value) -> bool {
        v["."]["left"]["Var"] == "resource" && v["."]["attr"] == "path"
    }
    /// The literal start of the matched paths, and whether a path may be
    /// exactly that start (the rest of the pattern can match nothing).
    fn literal_prefix(term: &Value) -> Option<(String, bool)> {
        if let Some(like) = term.get("like").filter(|l| is_path(&l["left"])) {
            let pattern = like["pattern"].as_array()?;
            let mut prefix = String::new();
            let mut n = 0;
            for part in pattern {
                match part["Literal"].as_str() {
                    Some(c) => prefix.push_str(c),
                    None => break,
                }
                n += 1;
            }
            let rest_may_be_empty = pattern[n..].iter().all(|p| p == "Wildcard");
            return Some((prefix, rest_may_be_empty));
        }
        let eq = term.get("==").filter(|e| is_path(&e["left"]))?;
        eq["right"]["Value"].as_str().map(|v| (v.to_string(), true))
    }
    fn terms<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v.get("&&") {
            Some(and) => {
                terms(&and["left"], out);
                terms(&and["right"], out);
            }
            None => out.push(v),
        }
    }
    let mut all = Vec::new();
    for c in conditions
        .as_array()?
        .iter()
        .filter(|c| c["kind"] == "when")
    {
        terms(&c["body"], &mut all);
    }
    all.into_iter().find_map(|t| {
        let (prefix, whole) = literal_prefix(t)?;
        if !prefix.starts_with('/') {
            return None;
        }
        // "/opt/app/" matches `like "/opt/app/*"` but is not in
        // Dir "/opt/app" (only in "/opt"): drop that trailing slash.
        let base = match prefix.strip_suffix('/') {
            Some(b) if whole && exact_dirs => b,
            _ => &prefix,
        };
        let dir = &base[..base.rfind('/')?];
        // Below the root only: every path is in Dir "/".
        (!dir.is_empty()).then(|| dir.to_string())
    })
}

fn path_dir_key(conditions: &Value) -> Key {
    let dir = path_dir(conditions, true)?;
    let ty = EntityTypeName::from_str("Vardr::Dir").ok()?;
    Some(EntityUid::from_type_name_and_id(ty, EntityId::new(dir)).into())
}

#[derive(Default)]
pub struct Slices {
    groups: HashMap<Key, HashMap<Key, PolicySet>>,
    principal_keys: HashSet<ast::EntityUID>,
    resource_keys: HashSet<ast::EntityUID>,
}

/// Keys among `keys` that `e` is, or is `in`, plus `None`; walks whichever
/// side is smaller.
fn candidates(e: &ast::Entity, keys: &HashSet<ast::EntityUID>) -> Vec<Key> {
    let mut out = vec![None];
    if keys.is_empty() {
        return out;
    }
    let ancestors = e.parents().count();
    if keys.len() <= ancestors + 1 {
        out.extend(
            keys.iter()
                .filter(|k| *k == e.uid() || e.is_descendant_of(k))
                .map(|k| Some(k.clone())),
        );
    } else {
        let mut seen = HashSet::new();
        for u in std::iter::once(e.uid())
            .chain(e.parents())
            .chain(e.ancestors())
        {
            if keys.contains(u) && seen.insert(u) {
                out.push(Some(u.clone()));
            }
        }
    }
    out
}

impl Slices {
    pub fn add(&mut self, p: &Policy) {
        let json = p.to_json().unwrap_or(Value::Null);
        let pk = scope_key(&json["principal"]);
        let rk = scope_key(&json["resource"]).or_else(|| path_dir_key(&json["conditions"]));
        self.principal_keys.extend(pk.clone());
        self.resource_keys.extend(rk.clone());
        // Names are unique (checked when loading).
        let _ = self
            .groups
            .entry(pk)
            .or_default()
            .entry(rk)
            .or_default()
            .add(p.clone());
    }

    /// Distinct (principal, resource) groups.
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.groups.values().map(HashMap::len).sum()
    }

    /// The policy sets that can apply to this principal and resource.
    pub fn matching(&self, principal: &ast::Entity, resource: &ast::Entity) -> Vec<&PolicySet> {
        let mut out = Vec::new();
        let rk = candidates(resource, &self.resource_keys);
        for pk in candidates(principal, &self.principal_keys) {
            if let Some(inner) = self.groups.get(&pk) {
                out.extend(rk.iter().filter_map(|k| inner.get(k)));
            }
        }
        out
    }
}
