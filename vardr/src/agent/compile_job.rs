//! At start the policy is parsed and compiled on a thread of its own while
//! the kernel is probed and the programs load: each takes a few hundred
//! milliseconds for a big policy, and neither needs the other until the
//! rules are written.
use std::{
    path::PathBuf,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{compile::bundle::Bundle, compile::Limits, policy::tracing::TracingPolicy};

use super::{load_rules, AgentError};

/// What the compile thread made.
pub struct Compiled {
    pub bundle: Bundle,
    /// The TracingPolicies added through the API did not compile with the
    /// policy file: the bundle leaves them out (the caller sets them aside).
    pub without_api: bool,
    pub took: Duration,
}

pub struct CompileJob(JoinHandle<Result<Compiled, AgentError>>);

impl CompileJob {
    pub fn spawn(
        policy: PathBuf,
        api: Vec<TracingPolicy>,
        had_api: bool,
        first_id: u32,
        limits: Limits,
    ) -> Result<Self, AgentError> {
        let work = move || {
            let started = Instant::now();
            let (bundle, without_api) = match load_rules(&policy, &api, first_id, &limits) {
                Ok(b) => (b, false),
                // The policy file alone must still start.
                Err(e) if had_api => {
                    tracing::error!("the TracingPolicies added through the API do not compile with the policy file ({e}); starting without them");
                    (load_rules(&policy, &[], first_id, &limits)?, true)
                }
                Err(e) => return Err(e),
            };
            Ok(Compiled {
                bundle,
                without_api,
                took: started.elapsed(),
            })
        };
        let handle = std::thread::Builder::new()
            .name("vardr-compile".into())
            .spawn(work)?;
        Ok(Self(handle))
    }

    pub fn join(self) -> Result<Compiled, AgentError> {
        self.0.join().unwrap_or_else(|_| {
            Err(AgentError::Io(std::io::Error::other(
                "the policy compile thread panicked",
            )))
        })
    }
}
