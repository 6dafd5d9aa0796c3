//! Where events go: stdout, a rotating export file, and the gRPC stream.
//! Each event is serialized once and the same line goes to every sink.
mod file;

use std::{io::Write, sync::Arc};

use tokio::sync::broadcast;

pub use file::RotatingFile;

use crate::events::{compact, JsonEvent};

/// An event as published to subscribers, with the fields they filter on.
#[derive(Debug, Clone)]
pub struct Published {
    pub kind: &'static str,
    pub json: String,
    pub pid: u32,
    pub binary: String,
    pub verdict: Option<&'static str>,
    /// Layer 2's verdict, if a Cedar policy decided.
    pub layer2_verdict: Option<&'static str>,
    pub exec_id: String,
    pub cgroup: String,
    pub container_id: Option<String>,
}

impl Published {
    /// The `process_exec` line of process `p`, written by
    /// [`crate::events::exec_line`].
    pub fn exec(p: &crate::process::ProcessInfo, json: String) -> Self {
        Self {
            kind: "process_exec",
            json,
            pid: p.pid,
            binary: p.binary.clone(),
            verdict: None,
            layer2_verdict: None,
            exec_id: p.exec_id.clone(),
            cgroup: p.cgroup.clone(),
            container_id: p.container_id.clone(),
        }
    }

    pub fn new(ev: &JsonEvent) -> serde_json::Result<Self> {
        let p = ev.process();
        Ok(Self {
            kind: ev.kind(),
            json: serde_json::to_string(ev)?,
            pid: p.map_or(0, |p| p.pid),
            binary: p.map(|p| p.binary.clone()).unwrap_or_default(),
            verdict: ev.verdict(),
            layer2_verdict: ev.layer2().map(|l| l.verdict),
            exec_id: p.map(|p| p.exec_id.clone()).unwrap_or_default(),
            cgroup: p.map(|p| p.cgroup.clone()).unwrap_or_default(),
            container_id: p.and_then(|p| p.container_id.clone()),
        })
    }
}

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// One JSON object per line.
    #[default]
    Json,
    /// One human-readable line per event.
    Compact,
    /// Nothing on stdout (use the export file or `vardr events`).
    None,
}

pub struct Sinks {
    output: Output,
    stdout: Box<dyn Write + Send>,
    file: Option<RotatingFile>,
    stream: broadcast::Sender<Arc<Published>>,
    /// Failed sink writes.
    pub errors: u64,
}

impl Sinks {
    pub fn new(output: Output, stdout: Box<dyn Write + Send>, file: Option<RotatingFile>) -> Self {
        // Room for bursts; a subscriber that falls further behind is told how many it lost.
        let (stream, _) = broadcast::channel(16384);
        Self {
            output,
            stdout,
            file,
            stream,
            errors: 0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.stream.subscribe()
    }

    pub fn sender(&self) -> broadcast::Sender<Arc<Published>> {
        self.stream.clone()
    }

    fn failed(&mut self, sink: &str, e: &std::io::Error) {
        self.errors += 1;
        // The first failure, then one in a thousand: never a log storm.
        if self.errors % 1000 == 1 {
            tracing::error!(errors = self.errors, "writing events to {sink}: {e}");
        }
    }

    /// Sends the event to every sink. Sink failures are counted and logged,
    /// never fatal (enforcement must not depend on a full disk or a closed
    /// pipe); stdout is dropped for good when its reader has gone.
    pub fn publish(&mut self, ev: &JsonEvent) {
        let p = match Published::new(ev) {
            Ok(p) => p,
            Err(e) => return self.failed("the serializer", &e.into()),
        };
        self.publish_serialized(p);
    }

    /// [`Sinks::publish`] of an event already serialized.
    pub fn publish_serialized(&mut self, p: Published) {
        let line = match self.output {
            Output::Json => Some(p.json.clone()),
            Output::Compact => serde_json::from_str(&p.json)
                .ok()
                .as_ref()
                .and_then(compact),
            Output::None => None,
        };
        if let Some(line) = line {
            if let Err(e) = writeln!(self.stdout, "{line}") {
                self.stdout_failed(&e);
            }
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_line(&p.json) {
                self.failed("the export file", &e);
            }
        }
        // No subscribers is fine: send only fails then.
        let _ = self.stream.send(Arc::new(p));
    }

    fn stdout_failed(&mut self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            tracing::warn!("stdout was closed; events keep going to the other sinks");
            self.output = Output::None;
        } else {
            self.failed("stdout", e);
        }
    }

    pub fn flush(&mut self) {
        if self.output != Output::None {
            if let Err(e) = self.stdout.flush() {
                self.stdout_failed(&e);
            }
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.flush() {
                self.failed("the export file", &e);
            }
        }
    }
}
