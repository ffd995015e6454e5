//! systemd's notify protocol (`sd_notify(3)`): readiness, watchdog pings, reload and stop
//! notices, and a one-line status for `systemctl status`.
//!
//! The unit is `Type=notify` with `WatchdogSec=`: systemd starts the gateway, waits for
//! `READY=1` (sent once the outbox is open and every driver and listener is up), and restarts
//! it when `WATCHDOG=1` stops coming. The pings come from the core loop itself — not from a
//! timer task of their own — so a core loop stuck behind a hung outbox or a busy engine stops
//! them and systemd restarts the gateway, which is the point of a watchdog.
//!
//! The protocol is one datagram per message on the Unix socket named by `NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace). Outside systemd the variable is unset and
//! every call is a no-op. The environment is read, never cleared: a reload re-executes the
//! gateway in the same process, and the new image needs the same socket to say `READY=1`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The service manager's notify socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    /// How often to ping: half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` advises.
    watchdog_every: Option<Duration>,
    last_ping: Option<Instant>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket.as_deref().and_then(|s| s.to_str()),
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            std::process::id(),
        )
    }

    /// A notifier for `socket` (the value of `NOTIFY_SOCKET`); `watchdog_usec` and
    /// `watchdog_pid` as systemd passes them. The watchdog is off when the PID named is not
    /// ours (the variables were inherited by a child that is not the service).
    pub fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let target = socket.and_then(|path| match connect(path) {
            Ok(target) => Some(target),
            Err(error) => {
                tracing::warn!(%error, socket = path, "cannot use the service manager's notify socket; readiness and watchdog pings are off");
                None
            }
        });
        let for_us = watchdog_pid.is_none_or(|pid| pid.trim().parse::<u32>() == Ok(own_pid));
        let watchdog_every = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier {
            target,
            watchdog_every,
            last_ping: None,
        }
    }

    /// A notifier that says nothing (tests, the demo).
    pub fn disabled() -> Self {
        Notifier {
            target: None,
            watchdog_every: None,
            last_ping: None,
        }
    }

    /// Whether systemd asked for watchdog pings, and how often they go.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// The gateway is up: the outbox is open and every driver and listener has started.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A reload has begun (the new config validated); `READY=1` follows when it is up.
    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// The line `systemctl status` shows under the unit.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// Pings the watchdog if half its interval has passed since the last ping, with a fresh
    /// status line; called from the core loop's tick.
    pub fn watchdog(&mut self, now: Instant, status: impl FnOnce() -> String) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self
            .last_ping
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return;
        }
        self.last_ping = Some(now);
        self.send(&format!("WATCHDOG=1\nSTATUS={}", one_line(&status())));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        if let Err(error) = target
            .socket
            .send_to_addr(message.as_bytes(), &target.address)
        {
            // The manager may be restarting; the next message tries again.
            tracing::debug!(%error, "cannot send to the service manager's notify socket");
        }
    }
}

fn connect(path: &str) -> std::io::Result<Target> {
    use std::os::unix::net::SocketAddr;
    let address = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract @name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    Ok(Target { socket, address })
}

/// A status line is one line: a newline would start a new `KEY=value` assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket_as_one_datagram_each() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let notifier = Notifier::new(path.to_str(), None, None, 1);
        notifier.ready("2 rooms\nall online");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=2 rooms all online");
        notifier.stopping();
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_sockets_are_reached_by_their_at_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hallgate-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let socket = UnixDatagram::bind_addr(&address).expect("bind abstract");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let notifier = Notifier::new(Some(&format!("@{name}")), None, None, 1);
        notifier.reloading();
        assert!(receive(&socket).starts_with("RELOADING=1\n"));
    }

    #[test]
    fn watchdog_pings_go_at_half_the_interval_and_not_more_often() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let mut notifier = Notifier::new(path.to_str(), Some("10000000"), Some("42"), 42);
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(5)));
        let t0 = Instant::now();
        notifier.watchdog(t0, || "ok".into());
        notifier.watchdog(t0 + Duration::from_secs(4), || "ok".into());
        notifier.watchdog(t0 + Duration::from_secs(5), || "later".into());
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["WATCHDOG=1\nSTATUS=ok", "WATCHDOG=1\nSTATUS=later"]);
    }

    #[test]
    fn a_watchdog_meant_for_another_process_is_ignored() {
        let notifier = Notifier::new(None, Some("10000000"), Some("41"), 42);
        assert_eq!(notifier.watchdog_interval(), None);
        let unset_pid = Notifier::new(None, Some("10000000"), None, 42);
        assert!(unset_pid.watchdog_interval().is_some());
        let zero = Notifier::new(None, Some("0"), None, 42);
        assert_eq!(zero.watchdog_interval(), None);
    }

    #[test]
    fn a_relative_socket_path_is_refused_without_failing() {
        let notifier = Notifier::new(Some("relative/notify"), None, None, 1);
        // Nothing to receive it; the call must simply do nothing.
        notifier.ready("up");
        assert!(notifier.target.is_none());
    }
}
