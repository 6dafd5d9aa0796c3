//! `vardr tracingpolicy`: Tetragon's TracingPolicy commands (as `tetra
//! tracingpolicy` sends them) to a running agent.
use std::path::Path;

use super::pb::{self, fine_guidance_sensors_client::FineGuidanceSensorsClient};
use crate::api::client::{channel, ClientError};

async fn client(
    socket: &Path,
) -> Result<FineGuidanceSensorsClient<tonic::transport::Channel>, ClientError> {
    Ok(FineGuidanceSensorsClient::new(channel(socket).await?))
}

/// Adds the TracingPolicy `yaml`; returns once it is in force.
pub async fn add(socket: &Path, yaml: String) -> Result<(), ClientError> {
    client(socket)
        .await?
        .add_tracing_policy(pb::AddTracingPolicyRequest {
            yaml,
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub async fn delete(socket: &Path, name: String) -> Result<(), ClientError> {
    client(socket)
        .await?
        .delete_tracing_policy(pb::DeleteTracingPolicyRequest {
            name,
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub async fn set_enabled(socket: &Path, name: String, enabled: bool) -> Result<(), ClientError> {
    client(socket)
        .await?
        .configure_tracing_policy(pb::ConfigureTracingPolicyRequest {
            name,
            enable: Some(enabled),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub async fn list(socket: &Path) -> Result<Vec<pb::TracingPolicyStatus>, ClientError> {
    Ok(client(socket)
        .await?
        .list_tracing_policies(pb::ListTracingPoliciesRequest::default())
        .await?
        .into_inner()
        .policies)
}
