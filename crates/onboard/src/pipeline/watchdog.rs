//! systemd notifications (`Type=notify`, `WatchdogSec=`): `READY=1` once the pipeline runs, `WATCHDOG=1`
//! from the health thread while every stage is alive, `STATUS=...` lines for `systemctl status`, and
//! `STOPPING=1` at shutdown.
//!
//! The socket is `$NOTIFY_SOCKET`, which only the binary reads and passes in
//! ([`super::HealthConfig::notify_socket`]): a path, or an abstract name when it starts with `@`. Without
//! one every call is a no-op. A failed send is logged once and never stops the pipeline: systemd will
//! restart us if the watchdog pings stop, which is the point.

use std::os::unix::net::UnixDatagram;

/// A connection to systemd's notification socket (or nothing).
pub struct Notifier {
    target: Option<(UnixDatagram, String)>,
    warned: bool,
}

impl Notifier {
    /// A notifier sending to `socket` (`$NOTIFY_SOCKET`); `None`: a no-op.
    pub fn new(socket: Option<&str>) -> Notifier {
        let target = socket
            .filter(|s| !s.is_empty())
            .and_then(|s| match UnixDatagram::unbound() {
                Ok(d) => Some((d, s.to_owned())),
                Err(e) => {
                    log::warn!("systemd notification socket {s}: {e}; no notifications");
                    None
                }
            });
        Notifier {
            target,
            warned: false,
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STATUS=...`; several separated by newlines).
    pub fn notify(&mut self, state: &str) {
        let Some((socket, name)) = &self.target else {
            return;
        };
        let result = match name.strip_prefix('@') {
            Some(abstract_name) => send_abstract(socket, abstract_name, state),
            None => socket.send_to(state.as_bytes(), name).map(|_| ()),
        };
        if let Err(e) = result {
            if !self.warned {
                log::warn!("systemd notification to {name} failed: {e}");
                self.warned = true;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, name: &str, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("abstract socket @{name} needs Linux"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datagrams_reach_a_path_socket_and_none_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut n = Notifier::new(Some(path.to_str().unwrap()));
        assert!(n.is_active());
        n.notify("READY=1\nSTATUS=running");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=running");
        let mut none = Notifier::new(None);
        assert!(!none.is_active());
        none.notify("WATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names_start_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vimgeo-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut n = Notifier::new(Some(&format!("@{name}")));
        n.notify("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
