//! gRPC server: one task per subscriber, fed from the agent's broadcast.
use std::{path::Path, pin::Pin, sync::Arc};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_stream::{
    wrappers::{ReceiverStream, UnixListenerStream},
    Stream, StreamExt as _,
};
use tonic::{Request, Response, Status};

use super::{
    matches,
    pb::{
        events_server::{Events, EventsServer},
        Event, SubscribeRequest,
    },
    tetragon::{self, pb::fine_guidance_sensors_server::FineGuidanceSensorsServer},
};
use crate::{metrics::Metrics, sinks::Published};

pub struct EventService {
    tx: broadcast::Sender<Arc<Published>>,
    metrics: Metrics,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = req.into_inner();
        let mut rx = self.tx.subscribe();
        let metrics = self.metrics.clone();
        let (out, stream) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let item = match rx.recv().await {
                    Ok(e) if matches(&filter, &e) => Event::from(&*e),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        // Never silent: the subscriber learns how many it missed.
                        metrics.subscriber_events_lost.inc_by(n);
                        Event {
                            r#type: "events_lost".into(),
                            lost: n,
                            ..Default::default()
                        }
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
}

/// Binds `socket` (root-only), before the agent says it is running, so a
/// client that saw it running can connect.
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!("gRPC API on unix:{}", socket.display());
    Ok(listener)
}

/// Serves vardr's API and Tetragon's `FineGuidanceSensors` on both
/// listeners until `shutdown` resolves.
pub async fn serve(
    listeners: [tokio::net::UnixListener; 2],
    tx: broadcast::Sender<Arc<Published>>,
    metrics: Metrics,
    policies: tetragon::policies::Client,
    enforce: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let [vardr, tetra] = listeners;
    let incoming = UnixListenerStream::new(vardr).merge(UnixListenerStream::new(tetra));
    let tetragon = tetragon::service::TetragonService {
        events: tx.clone(),
        metrics: metrics.clone(),
        policies,
        enforce,
    };
    tonic::transport::Server::builder()
        .add_service(EventsServer::new(EventService { tx, metrics }))
        .add_service(FineGuidanceSensorsServer::new(tetragon))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
