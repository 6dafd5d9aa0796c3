//! systemd service notifications (the `sd_notify` protocol): one datagram
//! per state change to the socket named by `$NOTIFY_SOCKET`, which systemd
//! sets for `Type=notify` units. Without the variable (not started by
//! systemd) every call does nothing.
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where the agent reports readiness, reloads and stopping to systemd.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
    /// namespace). The agent starts no other programs, so the variable is
    /// left in place (removing it is not thread-safe).
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        let target = Self::address(name.as_encoded_bytes())
            .and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match target {
            Ok(t) => Self { target: Some(t) },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET {name:?} is not usable: {e}; systemd will not hear from the agent");
                Self { target: None }
            }
        }
    }

    fn address(name: &[u8]) -> std::io::Result<SocketAddr> {
        match name.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)
            }
            None => {
                use std::os::unix::ffi::OsStrExt;
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))
            }
        }
    }

    /// Whether systemd is listening (the agent runs as a `Type=notify` unit).
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!("cannot notify systemd ({}): {e}", state.replace('\n', " "));
            }
        }
    }

    /// The policy is in force: systemd considers the service started.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        // MONOTONIC_USEC lets systemd (253+) match the reload it asked for.
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// Free-form status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// The agent is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("vardr-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                Notifier::address(path.as_os_str().as_encoded_bytes()).unwrap(),
            )),
        };
        n.ready("enforcing policy default");
        n.reloading();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got[0], "READY=1\nSTATUS=enforcing policy default");
        assert!(
            got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{}",
            got[1]
        );
        let usec: u64 = got[1].rsplit('=').next().unwrap().parse().unwrap();
        assert!(usec > 0);
        assert_eq!(got[2], "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_names_are_abstract() {
        use std::os::linux::net::SocketAddrExt;
        let a = Notifier::address(b"@vardr-test").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"vardr-test"[..]));
        assert!(a.as_pathname().is_none());
    }

    #[test]
    fn without_systemd_nothing_happens() {
        let n = Notifier { target: None };
        assert!(!n.active());
        n.ready("x");
        n.stopping();
    }
}
