//! `GetEventsRequest` allow and deny lists, with Tetragon's semantics: an
//! event passes when the allow list is empty or one of its filters
//! matches, and no deny filter matches; within a filter every field that
//! is set must match, and a field with several values matches when one
//! does. A filter field vardr cannot evaluate is refused by name, never
//! ignored (an ignored deny filter would let through what the user wanted
//! dropped).
use regex::Regex;
use tonic::Status;

use super::pb::{self, get_events_response::Event};

/// One compiled `tetragon.Filter`.
#[derive(Debug, Default)]
pub struct Filter {
    binary: Vec<Regex>,
    parent_binary: Vec<Regex>,
    ancestor_binary: Vec<Regex>,
    arguments: Vec<Regex>,
    parent_arguments: Vec<Regex>,
    pid: Vec<u32>,
    pid_set: Vec<u32>,
    event_set: Vec<pb::EventType>,
    policy_names: Vec<String>,
    container_id: Vec<Regex>,
    health_check: Option<bool>,
}

/// The allow and deny lists of one request.
#[derive(Debug, Default)]
pub struct Filters {
    allow: Vec<Filter>,
    deny: Vec<Filter>,
}

impl Filters {
    pub fn new(req: &pb::GetEventsRequest) -> Result<Self, Status> {
        if req.aggregation_options.is_some() {
            return Err(unsupported(
                "aggregation_options",
                "events are not aggregated",
            ));
        }
        if !req.field_filters.is_empty() {
            return Err(unsupported(
                "field_filters",
                "events are sent whole; filter fields on the client",
            ));
        }
        let compile = |l: &[pb::Filter]| l.iter().map(Filter::new).collect::<Result<_, _>>();
        Ok(Self {
            allow: compile(&req.allow_list)?,
            deny: compile(&req.deny_list)?,
        })
    }

    pub fn passes(&self, e: &pb::GetEventsResponse) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(e)))
            && !self.deny.iter().any(|f| f.matches(e))
    }
}

fn unsupported(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{field} is not supported by vardr: {why}"))
}

fn regexes(field: &str, v: &[String]) -> Result<Vec<Regex>, Status> {
    v.iter()
        .map(|r| {
            Regex::new(r).map_err(|e| Status::invalid_argument(format!("{field}: {r:?}: {e}")))
        })
        .collect()
}

impl Filter {
    fn new(f: &pb::Filter) -> Result<Self, Status> {
        const NO_K8S: &str = "vardr does not collect Kubernetes metadata";
        if !f.namespace.is_empty() {
            return Err(unsupported("filter namespace", NO_K8S));
        }
        if !f.pod_regex.is_empty() {
            return Err(unsupported("filter pod_regex", NO_K8S));
        }
        if !f.labels.is_empty() {
            return Err(unsupported("filter labels", NO_K8S));
        }
        if !f.namespace_regex.is_empty() {
            return Err(unsupported("filter namespace_regex", NO_K8S));
        }
        if !f.container_name_regex.is_empty() {
            return Err(unsupported(
                "filter container_name_regex",
                "container names are not known (container_id is)",
            ));
        }
        if f.capabilities.is_some() {
            return Err(unsupported(
                "filter capabilities",
                "events do not carry process capabilities yet",
            ));
        }
        if !f.cel_expression.is_empty() {
            return Err(unsupported("filter cel_expression", "no CEL evaluator"));
        }
        if f.in_init_tree.is_some() {
            return Err(unsupported(
                "filter in_init_tree",
                "container init trees are not tracked",
            ));
        }
        let event_set = f
            .event_set
            .iter()
            .map(|&t| {
                pb::EventType::try_from(t)
                    .map_err(|_| Status::invalid_argument(format!("event_set: unknown type {t}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            binary: regexes("binary_regex", &f.binary_regex)?,
            parent_binary: regexes("parent_binary_regex", &f.parent_binary_regex)?,
            ancestor_binary: regexes("ancestor_binary_regex", &f.ancestor_binary_regex)?,
            arguments: regexes("arguments_regex", &f.arguments_regex)?,
            parent_arguments: regexes("parent_arguments_regex", &f.parent_arguments_regex)?,
            pid: f.pid.clone(),
            pid_set: f.pid_set.clone(),
            event_set,
            policy_names: f.policy_names.clone(),
            container_id: regexes("container_id", &f.container_id)?,
            health_check: f.health_check.map(|b| b.value),
        })
    }

    fn matches(&self, e: &pb::GetEventsResponse) -> bool {
        let v = View::of(e);
        let pid = |p: Option<&pb::Process>| p.and_then(|p| p.pid).map(|v| v.value);
        let any = |rs: &[Regex], s: Option<&str>| {
            rs.is_empty() || s.is_some_and(|s| rs.iter().any(|r| r.is_match(s)))
        };
        fn binary(p: Option<&pb::Process>) -> Option<&str> {
            p.map(|p| p.binary.as_str())
        }
        fn args(p: Option<&pb::Process>) -> Option<&str> {
            p.map(|p| p.arguments.as_str())
        }
        // As in Tetragon, the container id filter reads `process.docker`.
        let container = v.process.map(|p| p.docker.as_str());
        any(&self.binary, binary(v.process))
            && any(&self.parent_binary, binary(v.parent))
            && (self.ancestor_binary.is_empty()
                || v.ancestors
                    .iter()
                    .chain(v.parent)
                    .any(|a| any(&self.ancestor_binary, Some(&a.binary))))
            && any(&self.arguments, args(v.process))
            && any(&self.parent_arguments, args(v.parent))
            && (self.pid.is_empty() || pid(v.process).is_some_and(|p| self.pid.contains(&p)))
            && (self.pid_set.is_empty()
                || std::iter::once(v.process)
                    .chain(std::iter::once(v.parent))
                    .chain(v.ancestors.iter().map(Some))
                    .any(|p| pid(p).is_some_and(|p| self.pid_set.contains(&p))))
            && (self.event_set.is_empty() || self.event_set.contains(&v.kind))
            && (self.policy_names.is_empty()
                || v.policy_name
                    .is_some_and(|n| self.policy_names.iter().any(|x| x == n)))
            && any(&self.container_id, container)
            // vardr sends no health-check events.
            && self.health_check != Some(true)
    }
}

/// The parts of an event filters look at.
struct View<'a> {
    kind: pb::EventType,
    process: Option<&'a pb::Process>,
    parent: Option<&'a pb::Process>,
    ancestors: &'a [pb::Process],
    policy_name: Option<&'a str>,
}

impl<'a> View<'a> {
    fn of(e: &'a pb::GetEventsResponse) -> Self {
        let none = Self {
            kind: pb::EventType::Undef,
            process: None,
            parent: None,
            ancestors: &[],
            policy_name: None,
        };
        match &e.event {
            Some(Event::ProcessExec(x)) => Self {
                kind: pb::EventType::ProcessExec,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: None,
            },
            Some(Event::ProcessExit(x)) => Self {
                kind: pb::EventType::ProcessExit,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: None,
            },
            Some(Event::ProcessLsm(x)) => Self {
                kind: pb::EventType::ProcessLsm,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: Some(&x.policy_name),
            },
            Some(Event::ProcessKprobe(x)) => Self {
                kind: pb::EventType::ProcessKprobe,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: Some(&x.policy_name),
            },
            Some(Event::ProcessTracepoint(x)) => Self {
                kind: pb::EventType::ProcessTracepoint,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: Some(&x.policy_name),
            },
            Some(Event::ProcessUprobe(x)) => Self {
                kind: pb::EventType::ProcessUprobe,
                process: x.process.as_ref(),
                parent: x.parent.as_ref(),
                ancestors: &x.ancestors,
                policy_name: Some(&x.policy_name),
            },
            Some(Event::RateLimitInfo(_)) => Self {
                kind: pb::EventType::RateLimitInfo,
                ..none
            },
            _ => none,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, binary: &str, parent: (u32, &str)) -> pb::GetEventsResponse {
        let p = |pid: u32, binary: &str| pb::Process {
            pid: Some(pbjson_types::UInt32Value { value: pid }),
            binary: binary.into(),
            arguments: "-c x".into(),
            ..Default::default()
        };
        pb::GetEventsResponse {
            event: Some(Event::ProcessExec(pb::ProcessExec {
                process: Some(p(pid, binary)),
                parent: Some(p(parent.0, parent.1)),
                ancestors: vec![p(1, "/sbin/init")],
            })),
            ..Default::default()
        }
    }

    fn filters(allow: Vec<pb::Filter>, deny: Vec<pb::Filter>) -> Filters {
        Filters::new(&pb::GetEventsRequest {
            allow_list: allow,
            deny_list: deny,
            ..Default::default()
        })
        .expect("filters compile")
    }

    #[test]
    fn allow_is_any_filter_and_all_its_fields() {
        let e = exec(42, "/usr/bin/curl", (7, "/usr/bin/bash"));
        let f = |binary: &str, pid: Vec<u32>| pb::Filter {
            binary_regex: vec![binary.into()],
            pid,
            ..Default::default()
        };
        assert!(filters(vec![], vec![]).passes(&e));
        assert!(filters(vec![f("curl$", vec![])], vec![]).passes(&e));
        assert!(!filters(vec![f("curl$", vec![43])], vec![]).passes(&e));
        assert!(filters(vec![f("^/bin/", vec![]), f("curl", vec![42])], vec![]).passes(&e));
        assert!(!filters(vec![], vec![f("curl", vec![])]).passes(&e));
        let set = |pids: Vec<u32>, types: Vec<pb::EventType>| pb::Filter {
            pid_set: pids,
            event_set: types.into_iter().map(|t| t as i32).collect(),
            ..Default::default()
        };
        // pid_set follows children: the parent's or an ancestor's pid.
        assert!(filters(vec![set(vec![7], vec![])], vec![]).passes(&e));
        assert!(filters(vec![set(vec![1], vec![pb::EventType::ProcessExec])], vec![]).passes(&e));
        assert!(!filters(vec![set(vec![1], vec![pb::EventType::ProcessLsm])], vec![]).passes(&e));
        let parent = pb::Filter {
            parent_binary_regex: vec!["bash".into()],
            ancestor_binary_regex: vec!["init".into()],
            ..Default::default()
        };
        assert!(filters(vec![parent], vec![]).passes(&e));
    }

    #[test]
    fn filters_vardr_cannot_evaluate_are_refused_by_name() {
        let req = |f: pb::Filter| pb::GetEventsRequest {
            deny_list: vec![f],
            ..Default::default()
        };
        let err = Filters::new(&req(pb::Filter {
            pod_regex: vec!["x".into()],
            ..Default::default()
        }))
        .expect_err("pod_regex refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("pod_regex"), "{}", err.message());
        let err = Filters::new(&req(pb::Filter {
            binary_regex: vec!["(".into()],
            ..Default::default()
        }))
        .expect_err("bad regex refused");
        assert!(err.message().contains("binary_regex"), "{}", err.message());
    }
}
