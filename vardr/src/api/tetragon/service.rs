//! `tetragon.FineGuidanceSensors`: the events stream, health and version,
//! and the TracingPolicy commands, as Tetragon serves them.
use std::{pin::Pin, sync::Arc};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

use super::{
    decode,
    filter::Filters,
    pb::{self, fine_guidance_sensors_server::FineGuidanceSensors},
    policies::{self, PolicyRequest},
};
use crate::{metrics::Metrics, sinks::Published};

pub struct TetragonService {
    pub events: broadcast::Sender<Arc<Published>>,
    pub metrics: Metrics,
    pub policies: policies::Client,
    /// The agent runs with `--enforce`.
    pub enforce: bool,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::GetEventsResponse, Status>> + Send>>;

/// One published event as Tetragon's message; kernel drops (vardr's
/// `events_lost`) become Tetragon's `rate_limit_info`.
fn convert(e: &Published) -> Option<pb::GetEventsResponse> {
    let mut out = match decode(&e.json) {
        Ok(m) => m,
        Err(err) => {
            // The suite decodes every event; this would be a vardr bug.
            tracing::warn!(kind = e.kind, "event does not decode as Tetragon's: {err}");
            return None;
        }
    };
    if e.kind == "events_lost" {
        let count = serde_json::from_str::<serde_json::Value>(&e.json)
            .ok()
            .and_then(|v| v["events_lost"]["count"].as_u64())
            .unwrap_or(0);
        out.event = Some(pb::get_events_response::Event::RateLimitInfo(
            pb::RateLimitInfo {
                number_of_dropped_process_events: count,
            },
        ));
    }
    Some(out)
}

fn lost(n: u64) -> pb::GetEventsResponse {
    pb::GetEventsResponse {
        event: Some(pb::get_events_response::Event::RateLimitInfo(
            pb::RateLimitInfo {
                number_of_dropped_process_events: n,
            },
        )),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl FineGuidanceSensors for TetragonService {
    async fn get_events(
        &self,
        req: Request<pb::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let filters = Filters::new(req.get_ref())?;
        let mut rx = self.events.subscribe();
        let metrics = self.metrics.clone();
        let (out, stream) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let item = match rx.recv().await {
                    Ok(e) => match convert(&e) {
                        // Loss is never filtered away.
                        Some(m) if e.kind == "events_lost" || filters.passes(&m) => m,
                        _ => continue,
                    },
                    Err(RecvError::Lagged(n)) => {
                        // Never silent: the subscriber learns how many it missed.
                        metrics.subscriber_events_lost.inc_by(n);
                        lost(n)
                    }
                    Err(RecvError::Closed) => return,
                };
                if out.send(Ok(item)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn get_health(
        &self,
        _: Request<pb::GetHealthStatusRequest>,
    ) -> Result<Response<pb::GetHealthStatusResponse>, Status> {
        Ok(Response::new(pb::GetHealthStatusResponse {
            health_status: vec![pb::HealthStatus {
                event: pb::HealthStatusType::Status as i32,
                status: pb::HealthStatusResult::HealthStatusRunning as i32,
                details: "running".into(),
            }],
        }))
    }

    async fn get_version(
        &self,
        _: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        Ok(Response::new(pb::GetVersionResponse {
            version: format!("vardr {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn list_tracing_policies(
        &self,
        _: Request<pb::ListTracingPoliciesRequest>,
    ) -> Result<Response<pb::ListTracingPoliciesResponse>, Status> {
        let list = self.policies.list().await?;
        Ok(Response::new(pb::ListTracingPoliciesResponse {
            policies: list.iter().map(policies::Loaded::to_status).collect(),
        }))
    }

    async fn add_tracing_policy(
        &self,
        req: Request<pb::AddTracingPolicyRequest>,
    ) -> Result<Response<pb::AddTracingPolicyResponse>, Status> {
        let pid = peer_pid(&req);
        let r = req.into_inner();
        no_domain(&r.domain)?;
        let yaml = r.yaml;
        self.policies
            .ask(pid, |reply| PolicyRequest::Add { yaml, reply })
            .await?;
        Ok(Response::new(pb::AddTracingPolicyResponse {}))
    }

    async fn delete_tracing_policy(
        &self,
        req: Request<pb::DeleteTracingPolicyRequest>,
    ) -> Result<Response<pb::DeleteTracingPolicyResponse>, Status> {
        let pid = peer_pid(&req);
        let r = req.into_inner();
        no_domain(&r.domain)?;
        let key = policies::Key::new(r.name, r.namespace);
        self.policies
            .ask(pid, |reply| PolicyRequest::Delete { key, reply })
            .await?;
        Ok(Response::new(pb::DeleteTracingPolicyResponse {}))
    }

    async fn configure_tracing_policy(
        &self,
        req: Request<pb::ConfigureTracingPolicyRequest>,
    ) -> Result<Response<pb::ConfigureTracingPolicyResponse>, Status> {
        let pid = peer_pid(&req);
        let r = req.into_inner();
        no_domain(&r.domain)?;
        if r.mode
            .is_some_and(|m| m != pb::TracingPolicyMode::TpModeEnforce as i32)
        {
            return Err(Status::invalid_argument(
                "mode: vardr has no per-policy monitor mode; `vardr agent` without --enforce reports every deny as audit",
            ));
        }
        if r.mode.is_some() && !self.enforce {
            return Err(Status::failed_precondition(
                "mode: enforce: the agent runs without --enforce (audit only); denies are reported, not enforced",
            ));
        }
        if let Some(enabled) = r.enable {
            let key = policies::Key::new(r.name, r.namespace);
            self.set_enabled(pid, key, enabled).await?;
        }
        Ok(Response::new(pb::ConfigureTracingPolicyResponse {}))
    }

    async fn enable_tracing_policy(
        &self,
        req: Request<pb::EnableTracingPolicyRequest>,
    ) -> Result<Response<pb::EnableTracingPolicyResponse>, Status> {
        let pid = peer_pid(&req);
        let r = req.into_inner();
        no_domain(&r.domain)?;
        self.set_enabled(pid, policies::Key::new(r.name, r.namespace), true)
            .await?;
        Ok(Response::new(pb::EnableTracingPolicyResponse {}))
    }

    async fn disable_tracing_policy(
        &self,
        req: Request<pb::DisableTracingPolicyRequest>,
    ) -> Result<Response<pb::DisableTracingPolicyResponse>, Status> {
        let pid = peer_pid(&req);
        let r = req.into_inner();
        no_domain(&r.domain)?;
        self.set_enabled(pid, policies::Key::new(r.name, r.namespace), false)
            .await?;
        Ok(Response::new(pb::DisableTracingPolicyResponse {}))
    }
}

impl TetragonService {
    async fn set_enabled(
        &self,
        pid: Option<u32>,
        key: policies::Key,
        enabled: bool,
    ) -> Result<(), Status> {
        self.policies
            .ask(pid, |reply| PolicyRequest::Enable {
                key,
                enabled,
                reply,
            })
            .await
    }
}

/// Tetragon's policy domains are not a vardr concept.
fn no_domain(domain: &str) -> Result<(), Status> {
    if domain.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "domain {domain:?}: vardr has one policy domain; leave it empty"
        )))
    }
}

/// The connecting process, as the kernel names it (`SO_PEERCRED`); `None`
/// when it cannot (pid 0: a process this PID namespace cannot see), which
/// counts as governed.
fn peer_pid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0)
}
