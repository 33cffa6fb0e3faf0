//! The real pushwake binary under systemd's notification protocol, as `Type=notify`
//! with `WatchdogSec=` runs it: `$NOTIFY_SOCKET` names a datagram socket this test
//! binds, `$WATCHDOG_USEC` asks for the watchdog. The PBX is the FreeSWITCH stand-in,
//! which refuses connections until the test lets it answer, so the test controls when
//! the first connection comes: `READY=1` must come only after it, `WATCHDOG=1` must
//! come from the start and keep coming, a lost connection and a new one change only the
//! `STATUS=`, a SIGHUP is `RELOADING=1` then `READY=1`, and
//! SIGTERM is `STOPPING=1`. Slot 38's TCP port 10.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixDatagram;

use pushwake_testkit::config::{ConfigBuilder, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::esl::{Answer, EslServer};
use pushwake_testkit::freeswitch::StandIn;
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 38;

/// The next notification, within `timeout`.
async fn next(socket: &UnixDatagram, timeout: Duration) -> Result<String, String> {
    let mut buffer = vec![0u8; 4096];
    match tokio::time::timeout(timeout, socket.recv(&mut buffer)).await {
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        Ok(Err(error)) => Err(format!("cannot read the notification socket: {error}")),
        Err(_) => Err(format!("no notification within {timeout:?}")),
    }
}

/// Every notification already queued.
fn queued(socket: &UnixDatagram) -> Vec<String> {
    let mut buffer = vec![0u8; 4096];
    let mut messages = Vec::new();
    while let Ok(n) = socket.try_recv(&mut buffer) {
        messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    messages
}

/// Notifications until one whose first line is `wanted`, within `timeout`; returns
/// every one read.
async fn until(
    socket: &UnixDatagram,
    wanted: &str,
    timeout: Duration,
    daemon: &Daemon,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = next(socket, left).await.unwrap_or_else(|e| {
            panic!(
                "{e} while waiting for {wanted}; got {seen:?}; log:\n{}",
                daemon.logs()
            )
        });
        let first = message.lines().next().unwrap_or_default().to_owned();
        seen.push(message);
        if first == wanted {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_at_the_first_pbx_connection_and_the_watchdog_from_the_event_loop() {
    let server = EslServer::start().await;
    server.answer(
        "show channels",
        Answer::body("uuid,direction\n\n0 total.\n"),
    );
    server.reject_connections(true);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("esl.password");
    std::fs::write(&password, "ClueCon\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listen = format!("127.0.0.1:{}", Slot::new(SLOT).port(10));
    let stand_in = StandIn {
        section: format!(
            "[freeswitch]\naddress = \"{}\"\npassword_file = \"{}\"\nlisten = \"{listen}\"\ndomain = \"127.0.0.1\"\n",
            server.address(),
            password.display()
        ),
    };
    let config = ConfigBuilder::new(dir.path(), &stand_in, "unused")
        .extension(TestExtension::new("101", "10s"))
        .write()
        .unwrap();
    let notify_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    // 1 s: WATCHDOG=1 every half second.
    let daemon = Daemon::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        &config,
        "pushwake starting",
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The PBX refuses: the loop runs (the watchdog is petted) but pushwake is not ready.
    let first = next(&socket, SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.logs()));
    assert_eq!(first, "STATUS=connecting to the PBX");
    daemon
        .wait_log("cannot connect to FreeSWITCH's event socket", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = until(&socket, "WATCHDOG=1", SECS(10), &daemon).await;
    let early: Vec<String> = before.into_iter().chain(queued(&socket)).collect();
    assert!(early.contains(&"WATCHDOG=1".to_owned()), "{early:?}");
    assert!(
        early.iter().all(|m| m == "WATCHDOG=1"),
        "before the PBX answered: {early:?}"
    );

    // The PBX answers: READY=1, after the connection.
    server.reject_connections(false);
    let seen = until(&socket, "READY=1", SECS(30), &daemon).await;
    assert!(
        daemon.logs().contains("FreeSWITCH event socket connected"),
        "READY=1 before the connection: {seen:?}; log:\n{}",
        daemon.logs()
    );
    assert!(
        seen.last().unwrap().contains("STATUS="),
        "READY=1 says nothing of the state: {seen:?}"
    );

    // The watchdog keeps coming from the loop.
    let mut pets = 0;
    while pets < 3 {
        let message = next(&socket, SECS(5))
            .await
            .unwrap_or_else(|e| panic!("{e} after {pets} WATCHDOG=1; log:\n{}", daemon.logs()));
        assert_eq!(message, "WATCHDOG=1", "an unexpected notification");
        pets += 1;
    }

    // The connection lost and made again: systemd's status says so each time.
    server.close_all();
    let seen = until(
        &socket,
        "STATUS=the PBX connection was lost; reconnecting",
        SECS(10),
        &daemon,
    )
    .await;
    assert!(
        seen.iter()
            .all(|m| m == "WATCHDOG=1" || m.starts_with("STATUS=")),
        "{seen:?}"
    );
    let seen = until(
        &socket,
        "STATUS=connected to the PBX, serving calls",
        SECS(30),
        &daemon,
    )
    .await;
    assert!(
        !seen.iter().any(|m| m.contains("READY=1")),
        "READY=1 again on a reconnect: {seen:?}"
    );

    // SIGHUP: RELOADING=1 (with the monotonic clock), then READY=1 again.
    let pid = daemon.pid().expect("running") as libc::pid_t;
    // SAFETY: kill(2) with the pid of our child; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let seen = until(&socket, "READY=1", SECS(10), &daemon).await;
    let reloading = seen
        .iter()
        .find(|m| m.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading:?}");

    // SIGTERM: STOPPING=1.
    let mut daemon = daemon;
    let status = daemon.terminate(SECS(20)).await.unwrap();
    assert!(status.success(), "{status:?}");
    let rest = queued(&socket);
    assert!(
        rest.iter().any(|m| m.starts_with("STOPPING=1")),
        "no STOPPING=1 at shutdown: {rest:?}"
    );
}
