//! `vardr policy apply` asks the agent over a root-only Unix socket in the
//! runtime directory. The kernel names the connecting process
//! (`SO_PEERCRED`), so the agent can refuse a request from a process its
//! policy governs; a request file plus SIGHUP could not tell who wrote it.
use std::path::{Path, PathBuf};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line read (a policy path).
const MAX_LINE: u64 = 8192;

/// A policy file to put in force, from process `pid` (as the kernel
/// names it), answered on `reply` once it is in force or rejected.
pub struct ApplyRequest {
    pub pid: Option<u32>,
    pub path: PathBuf,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Binds the socket, readable and writable by root only.
pub fn bind(dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the agent stops; each request goes to the
/// event loop through `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::UnboundedSender<ApplyRequest>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, tx).await {
                        tracing::debug!("control request: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::error!("control socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(
    stream: UnixStream,
    tx: mpsc::UnboundedSender<ApplyRequest>,
) -> std::io::Result<()> {
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
        // pid 0: a peer this PID namespace cannot see; counted as governed.
        .filter(|&p| p > 0);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    let answer = match line.trim_end().strip_prefix("apply ") {
        Some(path) if !path.is_empty() => {
            let (reply, rx) = oneshot::channel();
            let req = ApplyRequest {
                pid,
                path: PathBuf::from(path),
                reply,
            };
            if tx.send(req).is_err() {
                Err("the agent is stopping".to_string())
            } else {
                rx.await
                    .unwrap_or_else(|_| Err("the agent is stopping".to_string()))
            }
        }
        _ => Err(format!("unknown request {:?}", line.trim_end())),
    };
    let text = match answer {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error {}\n", e.replace('\n', "\\n")),
    };
    write.write_all(text.as_bytes()).await
}

/// Client side: asks the agent whose runtime directory is `dir` to put
/// `policy` in force; waits up to `wait`. `Err` holds the agent's reason.
pub fn apply(
    dir: &Path,
    policy: &Path,
    wait: std::time::Duration,
) -> std::io::Result<Result<(), String>> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dir.join(SOCKET_NAME))?;
    s.set_read_timeout(Some(wait))?;
    writeln!(s, "apply {}", policy.display())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    let line = line.trim_end();
    if line == "ok" {
        Ok(Ok(()))
    } else if let Some(e) = line.strip_prefix("error ") {
        Ok(Err(e.replace("\\n", "\n")))
    } else if line.is_empty() {
        Err(std::io::ErrorKind::TimedOut.into())
    } else {
        Err(std::io::Error::other(format!("unexpected answer {line:?}")))
    }
}
