//! systemd's readiness and watchdog protocol (`sd_notify(3)`), for `Type=notify` with
//! `WatchdogSec=`: one datagram per message to the socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` for the abstract namespace). Written here rather than taken from a
//! crate: it is one `sendto` on a Unix datagram socket (see docs/design.md).
//!
//! The driver says `READY=1` at the PBX's first `Connected`, `WATCHDOG=1` from its own
//! event loop every half `$WATCHDOG_USEC` (so a wedged loop stops petting and systemd
//! restarts the process), `RELOADING=1` and `READY=1` around a reload, and `STOPPING=1`
//! when it shuts down. Without `$NOTIFY_SOCKET` (not run by systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where the messages go, if systemd asked for them.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd's environment describes: `$NOTIFY_SOCKET` and, for the
    /// watchdog, `$WATCHDOG_USEC` (ignored when `$WATCHDOG_PID` names another process).
    /// A socket that cannot be used is logged, and nothing is sent.
    pub fn from_env() -> Self {
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let path = path.to_string_lossy().into_owned();
        match Self::connect(&path) {
            Ok(target) => Self {
                target: Some(target),
                watchdog,
            },
            Err(error) => {
                tracing::warn!(socket = %path, %error, "cannot use systemd's notification socket: systemd is told nothing");
                Self::default()
            }
        }
    }

    fn connect(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let address = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(path)?,
        };
        let socket = UnixDatagram::unbound()?;
        // A full queue must never block the event loop: the message is dropped instead.
        socket.set_nonblocking(true)?;
        Ok((socket, address))
    }

    /// How often to send `WATCHDOG=1` (half of `$WATCHDOG_USEC`), if systemd watches.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog).map(|d| d / 2)
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Failures are logged at
    /// debug: systemd that misses a message restarts or times out on its own terms.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.target {
            if let Err(error) = socket.send_to_addr(state.as_bytes(), address) {
                tracing::debug!(%error, state, "systemd notification not sent");
            }
        }
    }

    /// `RELOADING=1` with the monotonic clock systemd 253+ wants beside it.
    pub fn reloading(&self) {
        // SAFETY: clock_gettime writes only into the timespec it is given.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

/// The watchdog period from `$WATCHDOG_USEC` and `$WATCHDOG_PID` for process `pid`.
fn watchdog_from(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if for_pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(pid)) {
        return None;
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_for_this_process_only() {
        let three = Some(Duration::from_secs(3));
        assert_eq!(watchdog_from(Some("3000000"), None, 7), three);
        assert_eq!(watchdog_from(Some("3000000"), Some("7"), 7), three);
        assert_eq!(watchdog_from(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
    }

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog: Some(Duration::from_secs(2)),
        };
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(1)));
        notifier.notify("READY=1");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");

        let name = format!("pushwake-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let abstract_receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier {
            target: Some(Notifier::connect(&format!("@{name}")).unwrap()),
            watchdog: None,
        };
        notifier.reloading();
        let n = abstract_receiver.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
