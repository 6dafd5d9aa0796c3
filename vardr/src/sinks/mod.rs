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
    pub exec_id: String,
    pub cgroup: String,
    pub container_id: Option<String>,
}

impl Published {
    pub fn new(ev: &JsonEvent) -> serde_json::Result<Self> {
        let p = ev.process();
        Ok(Self {
            kind: ev.kind(),
            json: serde_json::to_string(ev)?,
            pid: p.map_or(0, |p| p.pid),
            binary: p.map(|p| p.binary.clone()).unwrap_or_default(),
            verdict: ev.verdict(),
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
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.stream.subscribe()
    }

    pub fn sender(&self) -> broadcast::Sender<Arc<Published>> {
        self.stream.clone()
    }

    pub fn publish(&mut self, ev: &JsonEvent) -> std::io::Result<()> {
        let p = Published::new(ev)?;
        match self.output {
            Output::Json => writeln!(self.stdout, "{}", p.json)?,
            Output::Compact => {
                if let Some(line) = serde_json::from_str(&p.json)
                    .ok()
                    .as_ref()
                    .and_then(compact)
                {
                    writeln!(self.stdout, "{line}")?;
                }
            }
            Output::None => {}
        }
        if let Some(f) = &mut self.file {
            f.write_line(&p.json)?;
        }
        // No subscribers is fine: send only fails then.
        let _ = self.stream.send(Arc::new(p));
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.stdout.flush()?;
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        Ok(())
    }
}
