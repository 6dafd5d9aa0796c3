//! Persistent enforcement in the agent: the set it pins with
//! `--keep-enforcing`, and the sets earlier agents left pinned, which it
//! takes over once its own set enforces.
use std::{collections::HashMap, path::Path};

use super::{AgentError, Catalog};
use crate::{
    backend::{self, Enforcer, Plan},
    events::RuleInfo,
    pin::{self, CatalogEntry, PinDir, PinnedSet, SetMeta},
};

/// What the agent learnt from one set it took over.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
pub struct Takeover {
    pub set_id: String,
    pub policy_name: String,
    pub policy_hash: String,
    /// Whether its maps were read (same layout version).
    pub same_layout: bool,
    /// Seconds its programs enforced with no agent (its agent stopped or died).
    pub unattended_secs: Option<f64>,
    /// Events queued in its ring buffer, delivered late.
    pub queued_events: u64,
    /// Events its programs could not queue and that its agent had not yet
    /// reported.
    pub events_lost: u64,
    /// Adopted (same build): its programs went on running under this
    /// agent, nothing was loaded beside them.
    #[serde(default)]
    pub adopted: bool,
}

impl Takeover {
    /// What is known of `s` before its maps are read.
    fn of(s: &PinnedSet, adopted: bool) -> Self {
        let meta = s.meta.as_ref().ok();
        Self {
            set_id: s.id.clone(),
            policy_name: meta.map(|m| m.policy_name.clone()).unwrap_or_default(),
            policy_hash: meta.map(|m| m.policy_hash.clone()).unwrap_or_default(),
            same_layout: s.same_layout(),
            unattended_secs: s.unattended().map(|d| d.as_secs_f64()),
            adopted,
            ..Default::default()
        }
    }

    fn log(&self, how: &str) {
        tracing::info!(
            set = %self.set_id,
            policy = %self.policy_name,
            policy_hash = %self.policy_hash,
            unattended_s = self.unattended_secs.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into()),
            queued_events = self.queued_events,
            events_lost = self.events_lost,
            "took over pinned set: {how}"
        );
    }
}

/// The rule catalog of `s`, empty (with a warning) when it cannot be read.
pub(super) fn catalog_of(s: &PinnedSet) -> Catalog {
    match s.catalog() {
        Ok(c) => Catalog::from_entries(c),
        Err(e) => {
            tracing::warn!(set = %s.id, "cannot read its rule catalog: {e}");
            Catalog::default()
        }
    }
}

/// Sets of this scope pinned by earlier agents. Fails when the agent that
/// pinned one still runs: two agents must not fight over one scope.
pub fn previous_sets(pins: &PinDir, scope_id: u64) -> Result<Vec<PinnedSet>, AgentError> {
    if !pins.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for s in pins.sets() {
        match &s.meta {
            Ok(m) if m.scope_cgroup_id != scope_id => tracing::info!(
                set = %s.id,
                "leaving pinned set alone: it governs another scope ({})",
                m.scope_cgroup.as_deref().map_or("everything".into(), |p| p.display().to_string())
            ),
            Ok(m) if s.owner_running() => {
                return Err(AgentError::PinOwned {
                    dir: pins.root.clone(),
                    pid: m.agent_pid,
                })
            }
            Ok(_) => out.push(s),
            Err(e) => tracing::warn!(
                set = %s.id,
                "pinned set without readable metadata left in place ({e}); `vardr unpin` removes it"
            ),
        }
    }
    Ok(out)
}

/// The first rule id no pinned set of this layout uses: a new agent's
/// rules never take the name of a rule whose events may still be queued.
pub fn first_free_rule_id(sets: &[PinnedSet]) -> u32 {
    sets.iter()
        .filter(|s| s.same_layout())
        .filter_map(|s| s.catalog().ok())
        .flatten()
        .map(|e| e.id.saturating_add(1))
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Adopts the newest set of `previous` that this build can take as it is
/// (removing it from the list); `None` when there is none or adopting it
/// failed (then it stays in the list, to be replaced the usual way).
pub fn adopt(
    previous: &mut Vec<PinnedSet>,
    build: &str,
    plan: &Plan,
    opts: &backend::Options,
) -> Option<(PinnedSet, Enforcer)> {
    let i = previous.iter().rposition(|s| s.adoptable(build))?;
    let s = previous.remove(i);
    match Enforcer::adopt(plan.clone(), opts, &s.maps_dir(), &s.links_dir()) {
        Ok(e) => Some((s, e)),
        Err(e) => {
            tracing::warn!(set = %s.id, "cannot adopt the pinned set ({e}): loading programs beside it");
            previous.push(s);
            None
        }
    }
}

/// Hash of the policy file and the files it names (Cedar, TracingPolicies).
pub fn policy_hash(policy: &Path, cedar: &[std::path::PathBuf]) -> String {
    use std::io::Read;
    let mut h = pin::Fnv::default();
    // Read in pieces: a policy of 100 000 rules is 7 MB, and a copy of it
    // at the end of a reload was the reload's peak.
    let mut buf = vec![0u8; 64 * 1024];
    for path in std::iter::once(policy).chain(cedar.iter().map(|p| p.as_path())) {
        // An unreadable file hashes as empty, as before (the hash only
        // tells an adopted set's policy from another).
        if let Ok(mut f) = std::fs::File::open(path) {
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!("hashing {}: {e}", path.display());
                        break;
                    }
                }
            }
        }
        h.end_part();
    }
    h.hex()
}

impl Catalog {
    /// Every rule an event still in flight can name (current and previous).
    pub(super) fn entries(&self) -> Vec<CatalogEntry> {
        let mut out: Vec<CatalogEntry> = self
            .previous
            .iter()
            .chain(self.current.iter())
            .map(|(&id, r)| CatalogEntry {
                id,
                policy_name: r.policy_name.clone(),
                rule: r.rule.clone(),
                severity: r.severity.clone(),
                observe: r.observe,
                message: r.message.clone(),
                tags: r.tags.clone(),
            })
            .collect();
        out.sort_by_key(|e| e.id);
        out.dedup_by_key(|e| e.id);
        out
    }

    pub(super) fn from_entries(entries: Vec<CatalogEntry>) -> Self {
        let current: HashMap<u32, RuleInfo> = entries
            .into_iter()
            .map(|e| {
                (
                    e.id,
                    RuleInfo {
                        policy_name: e.policy_name,
                        rule: e.rule,
                        severity: e.severity,
                        message: e.message,
                        tags: e.tags,
                        observe: e.observe,
                    },
                )
            })
            .collect();
        Self {
            current,
            ..Default::default()
        }
    }
}

impl super::Agent {
    /// Completes the adoption of a pinned set whose programs now serve this
    /// agent: delivers the events they queued while no agent ran (named
    /// from the catalog, which holds its rules), reports how long it ran
    /// unattended and what it could not queue, and, without
    /// `--keep-enforcing`, removes its pins (the programs stay attached as
    /// long as this agent holds them).
    pub(super) fn adopted(
        &mut self,
        s: PinnedSet,
        rings: &mut crate::backend::Rings,
    ) -> std::io::Result<()> {
        let mut t = Takeover::of(&s, true);
        t.queued_events = self.drain_all(rings)? as u64;
        // The kernel's count goes on from where the old agent left it.
        self.lost_reported = s.lost_reported;
        t.events_lost = self
            .enforcer
            .lost_events()
            .unwrap_or(0)
            .saturating_sub(s.lost_reported);
        self.check_lost()?;
        if self.persist.own.is_none() {
            for e in s.remove() {
                tracing::warn!(set = %s.id, "removing pinned set: {e}");
            }
            self.persist.pins.remove_if_empty();
        }
        t.log("adopted its programs and maps (same build), which never stopped");
        self.status.took_over.push(t);
        Ok(())
    }

    /// Retires sets earlier agents pinned, now that this agent's set
    /// enforces: detaches their programs, delivers the events still queued
    /// in their ring buffer (named with their own rule catalog), reports
    /// what their kernel side dropped, then removes their maps.
    pub(super) fn take_over(&mut self, old: Vec<PinnedSet>) -> std::io::Result<()> {
        for s in old {
            let meta: Option<&SetMeta> = s.meta.as_ref().ok();
            let mut t = Takeover::of(&s, false);
            let mut errors = s.unpin_links();
            if t.same_layout {
                let saved = std::mem::replace(&mut self.catalog, catalog_of(&s));
                let drained = match s.events() {
                    Ok(mut rings) => self.drain_all(&mut rings),
                    Err(e) => {
                        tracing::warn!(set = %s.id, "cannot open its ring buffer: {e}");
                        Ok(0)
                    }
                };
                self.catalog = saved;
                t.queued_events = drained? as u64;
                match s.lost_events() {
                    Ok(n) => t.events_lost = n.saturating_sub(s.lost_reported),
                    Err(e) => tracing::warn!(set = %s.id, "cannot read its lost count: {e}"),
                }
            } else {
                tracing::warn!(
                    set = %s.id,
                    layout = meta.map_or(0, |m| m.layout),
                    ours = vardr_common::LAYOUT_VERSION,
                    "pinned set has another map layout: removed without reading its maps (its queued events are discarded)"
                );
            }
            errors.extend(s.remove());
            for e in &errors {
                tracing::warn!(set = %s.id, "removing pinned set: {e}");
            }
            if t.events_lost > 0 {
                self.metrics.kernel_events_lost.inc_by(t.events_lost);
                let j = crate::events::JsonEvent::lost(t.events_lost, t.events_lost, &self.node);
                self.emit(&j)?;
                self.sinks.flush();
            }
            t.log("its programs are detached and its pins removed");
            self.status.took_over.push(t);
        }
        if self.persist.own.is_none() {
            self.persist.pins.remove_if_empty();
        }
        Ok(())
    }

    /// With `--keep-enforcing`: the TracingPolicy hooks in force become the
    /// pinned ones (those pinned before, by an earlier generation or the
    /// adopted set's agent, detach: these are attached already). Without
    /// hooks the pinned ones just go.
    pub(super) fn pin_generic(&self) -> Result<(), AgentError> {
        let Some(own) = &self.persist.own else {
            return Ok(());
        };
        let links = match &self.generic {
            Some(g) => g.links().map_err(super::generic_hooks::hook_error)?,
            None => Vec::new(),
        };
        let n = own.pin_generic(&links)?;
        if n > 0 {
            tracing::info!(
                links = n,
                "TracingPolicy hooks pinned in {} (--keep-enforcing)",
                own.dir.display()
            );
        }
        Ok(())
    }

    /// Once a second with `--keep-enforcing`: the pinned set's agent is alive.
    pub(super) fn touch_pins(&mut self) {
        let lost = self.lost_reported;
        if let Some(own) = &mut self.persist.own {
            own.touch();
            own.set_lost_reported(lost);
        }
    }

    /// After a reload: the pinned metadata and catalog follow the policy.
    pub(super) fn pin_policy(&mut self, name: &str, hash: String) {
        let Some(own) = &self.persist.own else {
            return;
        };
        let catalog = self.catalog.entries();
        if let Some(meta) = &mut self.persist.meta {
            meta.policy_name = name.to_string();
            meta.policy_path = self.opts.policy.clone();
            meta.policy_hash = hash;
            // Catalog first: the programs may report the new ids already.
            if let Err(e) = own
                .write_catalog(&catalog)
                .and_then(|_| own.write_meta(meta))
            {
                tracing::warn!("cannot update the pinned set after the reload: {e}");
            }
        }
    }

    /// Stopping with `--keep-enforcing`: the set stays, without the
    /// agent's own pid exemption.
    pub(super) fn leave_pinned(&mut self) {
        let Some(own) = &mut self.persist.own else {
            return;
        };
        if let Err(e) = self.enforcer.release_exemption() {
            tracing::warn!("cannot end the agent's exemption in the pinned set: {e}");
        }
        own.touch();
        own.set_lost_reported(self.lost_reported);
        if let Some(meta) = &mut self.persist.meta {
            meta.stopped_at = Some(pin::now_ns());
            if let Err(e) = own.write_meta(meta) {
                tracing::warn!("cannot update the pinned set: {e}");
            }
        }
        tracing::info!(
            "enforcement stays in force without the agent (--keep-enforcing): pinned in {}; the next agent takes it over, `vardr unpin` removes it",
            own.dir.display()
        );
    }
}

/// The agent's pin directory and, with `--keep-enforcing`, its own set.
pub struct Persist {
    pub pins: PinDir,
    pub own: Option<pin::OwnSet>,
    pub meta: Option<SetMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read in pieces, the hash is that of the whole texts (a policy
    /// bigger than one piece included).
    #[test]
    fn policy_hash_reads_files_in_pieces() {
        let dir = std::env::temp_dir().join(format!("vardr-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("p.yaml"), &big).unwrap();
        std::fs::write(dir.join("c.cedar"), b"permit;").unwrap();
        let got = policy_hash(
            &dir.join("p.yaml"),
            &[dir.join("c.cedar"), dir.join("gone")],
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, pin::fnv_hex([&big[..], b"permit;", b""]));
        assert_ne!(got, pin::fnv_hex([&big[..], b"permit;"]));
    }
}
