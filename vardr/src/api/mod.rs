//! The local gRPC API: the agent streams events to subscribers on a
//! root-only Unix socket; `vardr events` is the client.
pub mod client;
pub mod server;
pub mod tetragon;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("vardr.v1");
}

pub const SOCKET_NAME: &str = "vardr.sock";

use crate::sinks::Published;

/// Whether a published event passes a subscriber's filter.
pub fn matches(f: &pb::SubscribeRequest, e: &Published) -> bool {
    let any = |v: &[String], pred: &dyn Fn(&str) -> bool| v.is_empty() || v.iter().any(|x| pred(x));
    any(&f.binary, &|b| e.binary == b || e.binary.contains(b))
        && (f.pid.is_empty() || f.pid.contains(&e.pid))
        && any(&f.r#type, &|t| e.kind == t)
        && any(&f.verdict, &|v| {
            e.verdict == Some(v) || e.layer2_verdict == Some(v)
        })
        && any(&f.cgroup, &|c| e.cgroup.contains(c))
        && any(&f.container_id, &|c| {
            e.container_id
                .as_deref()
                .is_some_and(|id| id.starts_with(c))
        })
}

impl From<&Published> for pb::Event {
    fn from(e: &Published) -> Self {
        Self {
            r#type: e.kind.into(),
            json: e.json.clone(),
            pid: e.pid,
            binary: e.binary.clone(),
            verdict: e.verdict.unwrap_or_default().into(),
            exec_id: e.exec_id.clone(),
            cgroup: e.cgroup.clone(),
            container_id: e.container_id.clone().unwrap_or_default(),
            lost: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Published {
        Published {
            kind: "process_lsm",
            json: "{}".into(),
            pid: 42,
            binary: "/usr/bin/curl".into(),
            verdict: Some("deny"),
            layer2_verdict: None,
            exec_id: "x".into(),
            cgroup: "/system.slice/web.service".into(),
            container_id: Some("abcdef".into()),
        }
    }

    #[test]
    fn filters_combine_with_and_values_with_or() {
        let all = pb::SubscribeRequest::default();
        assert!(matches(&all, &ev()));
        let f = pb::SubscribeRequest {
            binary: vec!["curl".into()],
            verdict: vec!["audit".into(), "deny".into()],
            ..Default::default()
        };
        assert!(matches(&f, &ev()));
        let f = pb::SubscribeRequest {
            pid: vec![1],
            ..Default::default()
        };
        assert!(!matches(&f, &ev()));
        let f = pb::SubscribeRequest {
            r#type: vec!["process_exec".into()],
            ..Default::default()
        };
        assert!(!matches(&f, &ev()));
        let f = pb::SubscribeRequest {
            cgroup: vec!["web.service".into()],
            container_id: vec!["abc".into()],
            ..Default::default()
        };
        assert!(matches(&f, &ev()));
    }
}
