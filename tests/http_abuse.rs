//! The HTTP listener of the real daemon under abuse from one client address (127.0.0.2):
//! 200 slowloris connections (half send nothing, half trickle their headers a byte at a
//! time) and a flood of requests with wrong tokens, on kept-alive and on fresh
//! connections. Meanwhile another client (127.0.0.1) still gets `/healthz`, the device
//! API and the call status endpoint answered within seconds and a 64 KiB header refused;
//! every slowloris connection is closed by the server (at once beyond the per-client
//! cap, the others within the header-read timeout); the refusals are logged a few
//! times, not once per connection; the daemon's memory stays bounded.
//!
//! And on the real Asterisk (test slot 19, shared with `asterisk_fcm.rs` and
//! `secrets_in_logs.rs`: cargo runs test binaries one after another): a woken call under
//! the same abuse is still pushed, dialled within a second or so of its REGISTER, and
//! connected; pushwake runs on one thread, so the listener must not starve the PBX's
//! event loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pushwake::http::HEADER_READ_TIMEOUT;
use pushwake_testkit::config::{standalone, TestDevice, TestExtension, API_ADMIN};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::rig::Rig;
use pushwake_testkit::woken_call::{self, WokenCallPlan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const SLOWLORIS: usize = 200;
const FLOODERS: usize = 16;
/// How long another client's answer may take while the abuse goes on.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One slowloris connection: says nothing (`trickle` false) or starts a request and
/// then sends one header byte every 500 ms, until the server closes it. Returns how
/// long after connecting the server closed it.
async fn slowloris(to: SocketAddr, trickle: bool) -> Duration {
    let mut stream = connect_from(ATTACKER, to).await.expect("connects");
    let opened = Instant::now();
    if trickle {
        // The server may already have closed it (the per-client cap): then the write
        // fails or the read below sees the end.
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: pushwake\r\n")
            .await;
    }
    let header = b"X-Slow: ";
    let mut next = 0;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return opened.elapsed(),
                // An answer (a 408, say) before the close is fine.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(500)), if trickle => {
                if stream.write_all(&header[next % header.len()..][..1]).await.is_err() {
                    return opened.elapsed();
                }
                next += 1;
            }
        }
    }
}

/// One flooder: requests with a wrong token as fast as they are answered, on kept-alive
/// connections (`fresh` false) or a new connection each; counts the answers.
async fn flood(base: String, fresh: bool, stop: Arc<AtomicBool>, answered: Arc<AtomicUsize>) {
    let mut builder = reqwest::Client::builder()
        .local_address(ATTACKER)
        .timeout(SECS(5));
    if fresh {
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sent = client
            .get(format!("{base}/v1/extensions/101/devices"))
            .bearer_auth("wrong-token-wrong-token-wrong-token-0000")
            .send()
            .await;
        match sent {
            Ok(response) => {
                assert_eq!(response.status(), 401);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            // Refused beyond the per-client cap: try again soon (not in a hot loop,
            // which would only measure the test's own CPU use).
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The flood and the slowloris connections, running.
struct Abuse {
    slow: Vec<tokio::task::JoinHandle<Duration>>,
    flooders: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    flooded: Arc<AtomicUsize>,
}

impl Abuse {
    /// Starts the flood, waits until it is answered, then opens the slowloris
    /// connections.
    async fn start(addr: SocketAddr) -> Self {
        let base = format!("http://{addr}");
        let stop = Arc::new(AtomicBool::new(false));
        let flooded = Arc::new(AtomicUsize::new(0));
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|n| {
                tokio::spawn(flood(
                    base.clone(),
                    n % 2 == 1,
                    stop.clone(),
                    flooded.clone(),
                ))
            })
            .collect();
        // The flood is under way (its kept-alive connections open) before the slowloris
        // connections take the rest of the client's share, and before others ask.
        let deadline = Instant::now() + SECS(10);
        while flooded.load(Ordering::Relaxed) < 100 {
            assert!(
                Instant::now() < deadline,
                "the flood got no 100 answers in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let slow = (0..SLOWLORIS)
            .map(|n| tokio::spawn(slowloris(addr, n % 2 == 1)))
            .collect();
        Self {
            slow,
            flooders,
            stop,
            flooded,
        }
    }

    /// Waits until the server has closed every slowloris connection (each within the
    /// header-read timeout, a little slack for a busy machine), stops the flood; returns
    /// how many were closed at once and how many flood requests were answered.
    async fn finish(self) -> (usize, usize) {
        let limit = HEADER_READ_TIMEOUT + SECS(5);
        let mut at_once = 0;
        for handle in self.slow {
            let closed_after = tokio::time::timeout(limit + SECS(5), handle)
                .await
                .expect("the server closes every slowloris connection")
                .unwrap();
            assert!(
                closed_after <= limit,
                "a slowloris connection was held {closed_after:?}"
            );
            if closed_after < SECS(2) {
                at_once += 1;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        for flooder in self.flooders {
            flooder.await.unwrap();
        }
        (at_once, self.flooded.load(Ordering::Relaxed))
    }
}

/// `request` answered within [`ANSWER_WITHIN`]: its status.
async fn answered_soon(what: &str, request: reqwest::RequestBuilder) -> u16 {
    let started = Instant::now();
    let response = tokio::time::timeout(ANSWER_WITHIN, request.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?} under the flood"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: {} in {:?}", response.status(), started.elapsed());
    response.status().as_u16()
}

/// The daemon's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_and_slowloris_from_one_client_starve_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = standalone(dir.path(), "127.0.0.1:0", None).unwrap();
    let daemon = Daemon::start_until(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        &config,
        "pushwake starting",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let line = daemon
        .wait_log("http listening", SECS(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen=<address> in {line:?}"));
    let base = format!("http://{addr}");

    let abuse = Abuse::start(addr).await;

    let client = reqwest::Client::new();
    let status = answered_soon("GET /healthz", client.get(format!("{base}/healthz"))).await;
    // 503 degraded: this daemon's PBX is a port nothing answers. Answered is the point.
    assert!(status == 200 || status == 503, "/healthz: {status}");
    let status = answered_soon(
        "GET devices",
        client
            .get(format!("{base}/v1/extensions/101/devices"))
            .bearer_auth(API_ADMIN),
    )
    .await;
    assert_eq!(status, 200);
    let status = answered_soon(
        "GET a call's status without its token",
        client.get(format!(
            "{base}/v1/calls/3a45e20c-31c2-49fb-afe2-000000000001"
        )),
    )
    .await;
    assert_eq!(status, 401);
    let huge = client
        .get(format!("{base}/healthz"))
        .header("x-padding", "x".repeat(64 * 1024))
        .send()
        .await;
    match huge {
        Ok(response) => assert_eq!(response.status(), 431, "a 64 KiB header"),
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }

    // Every slowloris connection closed by the server: beyond the cap at once, the
    // others by the header-read timeout.
    let (at_once, flooded) = abuse.finish().await;
    let pid = daemon.pid().expect("the daemon still runs");
    let peak = peak_rss_kib(pid);
    eprintln!(
        "{flooded} flood answers; {at_once} of {SLOWLORIS} slowloris connections closed at once; daemon peak RSS {peak} KiB"
    );
    assert!(
        at_once >= SLOWLORIS - pushwake::http::limits::MAX_PER_CLIENT,
        "only {at_once} connections beyond the per-client cap were closed at once"
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let warnings = daemon
        .logs()
        .lines()
        .filter(|l| l.contains("closed unserved"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} warnings about refused connections (one per 10 s at most):\n{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_call_is_still_connected_during_the_abuse() {
    let mut rig = Rig::asterisk(19, env!("CARGO_BIN_EXE_pushwake")).await;
    let token = format!("{:02x}ab05e0", rig.slot.0).repeat(8);
    // Whatever an earlier run left registered goes first: the phone must be asleep.
    rig.register(1, 1, 0, &token).await;
    let ext = rig.phone_number(1);
    let http = format!("127.0.0.1:{}", rig.slot.port(11));
    let config = rig
        .config()
        .http(&http, &format!("http://{http}"))
        .api_tokens(&format!("{API_ADMIN}\n"))
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::apns(token.clone())));
    rig.start(config).await;
    let plan = WokenCallPlan {
        caller: rig.caller(),
        extension: ext,
        caller_port: rig.slot.port(0),
        phone_port: rig.slot.contact_port(1, 1),
        register_port: rig.slot.register_port(1, 1),
        token,
        wake_delay: Duration::from_millis(300),
        answer_after: Duration::from_millis(200),
        talk: Duration::from_millis(1000),
    };
    // The same call without the abuse first, for the figure beside it.
    let quiet = rig.unwrap(woken_call::run(&rig.pbx, &rig.apns_server, &plan).await);
    rig.wait_log("caller connected", SECS(5)).await;
    let abuse = Abuse::start(http.parse().unwrap()).await;
    let call = rig.unwrap(woken_call::run(&rig.pbx, &rig.apns_server, &plan).await);
    eprintln!(
        "dialled→pushed {:?} quiet, {:?} under the abuse; REGISTER→INVITE {:?} quiet, {:?} under the abuse",
        quiet.pushed - quiet.dialled,
        call.pushed - call.dialled,
        quiet.register_to_invite,
        call.register_to_invite
    );
    assert_eq!(call.invite_call_id, call.push_call_id);
    assert!(
        call.register_to_invite < SECS(2),
        "REGISTER→INVITE {:?} under the abuse",
        call.register_to_invite
    );
    rig.wait_log("caller connected", SECS(5)).await;
    let (at_once, flooded) = abuse.finish().await;
    assert!(
        flooded > 0 && at_once > 0,
        "the abuse ran: {flooded} {at_once}"
    );
    rig.assert_clean().await;
}
