//! `vardr events`: subscribe to a running agent.
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::pb::{events_client::EventsClient, Event, SubscribeRequest};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the agent at {0} (is `vardr agent` running, and are you root?): {1}"
    )]
    Connect(PathBuf, #[source] tonic::transport::Error),
    #[error("the agent refused: {}", .0.message())]
    Status(tonic::Status),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

/// A gRPC channel to the agent's Unix socket.
pub async fn channel(socket: &Path) -> Result<Channel, ClientError> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://vardr.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| ClientError::Connect(socket.into(), e))
}

/// Subscribes and calls `f` for every event until the stream ends or `f`
/// returns false.
pub async fn subscribe(
    socket: &Path,
    filter: SubscribeRequest,
    mut f: impl FnMut(Event) -> bool,
) -> Result<(), ClientError> {
    let mut stream = EventsClient::new(channel(socket).await?)
        .subscribe(filter)
        .await?
        .into_inner();
    while let Some(ev) = stream.message().await? {
        if !f(ev) {
            break;
        }
    }
    Ok(())
}
