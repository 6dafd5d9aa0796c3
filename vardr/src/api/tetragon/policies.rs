//! TracingPolicy commands from the gRPC service to the agent's event loop,
//! which owns the policy in force. Each request names the process that
//! sent it (`SO_PEERCRED`), so that with `--enforce` a process the policy
//! governs cannot add, delete or disable rules.
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use super::pb;

/// A TracingPolicy's identity: its name, and its namespace for
/// `TracingPolicyNamespaced`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub name: String,
    pub namespace: String,
}

impl Key {
    pub fn new(name: String, namespace: String) -> Self {
        Self { name, namespace }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A TracingPolicy the agent knows, for listings.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub id: u64,
    pub key: Key,
    pub enabled: bool,
    /// Native rules it compiled to.
    pub rules: usize,
    /// Where it came from: a file of the policy, or the API.
    pub source: String,
    /// Hooks it uses, Tetragon's "sensors".
    pub hooks: Vec<String>,
    /// Whether its denies are enforced: the agent runs with `--enforce`
    /// (otherwise they are reported as audit, Tetragon's monitor mode).
    pub enforced: bool,
}

impl Loaded {
    pub fn to_status(&self) -> pb::TracingPolicyStatus {
        let state = if self.enabled {
            pb::TracingPolicyState::TpStateEnabled
        } else {
            pb::TracingPolicyState::TpStateDisabled
        };
        #[allow(deprecated)] // `enabled` is still read by older clients.
        pb::TracingPolicyStatus {
            id: self.id,
            name: self.key.name.clone(),
            namespace: self.key.namespace.clone(),
            info: format!("{} vardr rules, from {}", self.rules, self.source),
            sensors: self.hooks.clone(),
            enabled: self.enabled,
            state: state as i32,
            mode: if self.enforced {
                pb::TracingPolicyMode::TpModeEnforce
            } else {
                pb::TracingPolicyMode::TpModeMonitor
            } as i32,
            ..Default::default()
        }
    }
}

/// Why a request failed, with the gRPC code to answer.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

impl Refused {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

pub type Reply = oneshot::Sender<Result<(), Refused>>;

pub enum PolicyRequest {
    /// A TracingPolicy's YAML.
    Add {
        yaml: String,
        reply: Reply,
    },
    Delete {
        key: Key,
        reply: Reply,
    },
    Enable {
        key: Key,
        enabled: bool,
        reply: Reply,
    },
    List {
        reply: oneshot::Sender<Vec<Loaded>>,
    },
}

/// A request and the process that sent it.
pub struct Envelope {
    pub pid: Option<u32>,
    pub request: PolicyRequest,
}

/// The service's handle on the agent's loop.
#[derive(Clone)]
pub struct Client(mpsc::UnboundedSender<Envelope>);

impl Client {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Envelope>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    fn send(&self, pid: Option<u32>, request: PolicyRequest) -> Result<(), Status> {
        self.0
            .send(Envelope { pid, request })
            .map_err(|_| Status::unavailable("the agent is stopping"))
    }

    pub async fn list(&self) -> Result<Vec<Loaded>, Status> {
        let (reply, rx) = oneshot::channel();
        self.send(None, PolicyRequest::List { reply })?;
        rx.await
            .map_err(|_| Status::unavailable("the agent is stopping"))
    }

    /// Sends the request `make` builds and waits until the policy it asks
    /// for is in force (or refused).
    pub async fn ask(
        &self,
        pid: Option<u32>,
        make: impl FnOnce(Reply) -> PolicyRequest,
    ) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        self.send(pid, make(reply))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(r)) => Err(Status::new(r.code, r.message)),
            Err(_) => Err(Status::unavailable("the agent is stopping")),
        }
    }
}
