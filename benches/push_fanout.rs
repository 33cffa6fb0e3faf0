//! Push fan-out benchmark (`cargo bench --bench push_fanout [-- COUNT… --delay MS]`):
//! many pushes for many calls at once through pushwake's APNs pushkin.
//!
//! The local APNs server (which checks every push like Apple, advertises Apple's 1,000
//! concurrent streams per connection and answers each push only after a delay, default
//! 20 ms) runs in a **process of its own** — this same executable, started with
//! `--serve-apns` — so that its work does not count as pushwake's and the figures show
//! pushwake. For each count (default 1,000 and 10,000), three rounds each fire COUNT
//! pushes at once, each for a different call, through a fresh pushkin warmed up as the
//! daemon does at start-up, and report:
//! - the wall time from the first push to the last answer, next to the **floor**: the
//!   server's delay times the rounds of 1,000 streams the count needs on as many
//!   connections as the pushkin may open (one round for up to 16,000 pushes);
//! - per-push latency percentiles;
//! - pushwake's own CPU time per push (this process's `getrusage`, the server excluded);
//! - the TCP connections the server saw (the fewest Apple's stream limit allows:
//!   ⌈COUNT / 1,000⌉);
//! - the same for a bare HTTP/2 client (the `h2` crate and nothing else, see
//!   [`BareClient`]) sending the same pushes in rounds alternating with pushwake's: the
//!   least any client pays on this machine, so pushwake / bare is pushwake's own share.
//!
//! Targets (the bench exits non-zero if a median misses one): wall ≤ 4 × floor + 100 ms;
//! connections ≤ ⌈COUNT / 1,000⌉. Each figure is also printed as a `FIGURE` line for
//! `scripts/bench-all`. Not a test: CI does not run it; figures on a shared machine vary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pushwake::push::apns::{
    ApnsAuth, ApnsPushkin, ApnsSettings, ProviderToken, MAX_CONNECTIONS, STREAMS_PER_CONNECTION,
};
use pushwake::push::{payload, PushKind, PushService, PushVerdict, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::TestApns;
use pushwake_testkit::figures::figure;
use pushwake_testkit::keys::EcKey;
use pushwake_testkit::push_server::{nth_wake_push, unix_now};
use tokio::time::Instant;

const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let delay = Duration::from_millis(
        flag_value(&args, "--delay")
            .map(|v| v.parse().expect("--delay takes milliseconds"))
            .unwrap_or(20),
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if args.iter().any(|a| a == "--serve-apns") {
        // The server's tasks run on the runtime's workers; this thread reads stdin.
        let server = runtime.block_on(serve_apns(delay));
        answer_stats(&server);
        return;
    }
    // `cargo bench` passes `--bench`; the bare numbers are the counts.
    let mut counts: Vec<usize> = args
        .iter()
        .zip(std::iter::once(&String::new()).chain(args.iter()))
        .filter(|(a, before)| !a.starts_with("--") && before.as_str() != "--delay")
        .map(|(a, _)| a.parse().expect("counts are numbers"))
        .collect();
    if counts.is_empty() {
        counts = vec![1000, 10_000];
    }
    match runtime.block_on(bench(&counts, delay)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("push_fanout: a target was missed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("push_fanout: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

/// The cores this machine gives the two processes.
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// This process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The child: serves APNs with the key the parent passes in its environment and prints
/// its endpoint.
async fn serve_apns(delay: Duration) -> ApnsServer {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let mut apns = TestApns::generate();
    apns.key = EcKey {
        private_pem: var("FANOUT_KEY_PEM"),
        public_point: decode_hex(&var("FANOUT_KEY_POINT")),
    };
    let server = ApnsServer::start(apns.expectations())
        .await
        .expect("start the APNs server");
    server.set_delay(delay);
    println!("{}", server.endpoint());
    server
}

/// Answers each `stats` line on stdin with `accepted connections refused cpu-µs`, until
/// stdin closes (the bench ended).
fn answer_stats(server: &ApnsServer) {
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if line.trim() != "stats" {
            continue;
        }
        // Counted, not copied: a copy of every push so far would be the server's CPU
        // time of the round that asks next (it was: a third of it at 10,000).
        let refused = server.rejected_count();
        let cpu = cpu_time();
        println!(
            "{} {} {} {}",
            server.accepted_count(),
            server.connections(),
            refused,
            cpu.as_micros()
        );
        if refused > 0 {
            if let Some(first) = server.rejected().first() {
                eprintln!("serve-apns: refused: {} ({})", first.reason, first.detail);
            }
        }
    }
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The APNs server process, seen from the bench.
struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    endpoint: String,
}

/// What the server process counted so far.
#[derive(Clone, Copy, Debug, Default)]
struct ServerStats {
    accepted: usize,
    connections: usize,
    refused: usize,
    /// The server process's CPU time so far.
    cpu: Duration,
}

impl ServerProcess {
    fn start(apns: &TestApns, delay: Duration) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let point: String = apns
            .key
            .public_point
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut child = Command::new(exe)
            .args(["--serve-apns", "--delay", &delay.as_millis().to_string()])
            .env("FANOUT_KEY_PEM", &apns.key.private_pem)
            .env("FANOUT_KEY_POINT", point)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the APNs server process: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut endpoint = String::new();
        stdout
            .read_line(&mut endpoint)
            .map_err(|e| format!("APNs server process: {e}"))?;
        let endpoint = endpoint.trim().to_owned();
        if endpoint.is_empty() {
            return Err("the APNs server process printed no endpoint".into());
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            endpoint,
        })
    }

    fn stats(&mut self) -> Result<ServerStats, String> {
        writeln!(self.stdin, "stats").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let n: Vec<u64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        match n.as_slice() {
            [accepted, connections, refused, cpu] => Ok(ServerStats {
                accepted: *accepted as usize,
                connections: *connections as usize,
                refused: *refused as usize,
                cpu: Duration::from_micros(*cpu),
            }),
            _ => Err(format!("APNs server process answered {line:?}")),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One round's figures.
struct Round {
    wall: Duration,
    p50: Duration,
    p99: Duration,
    cpu_per_push: Duration,
    /// The server process's CPU time per push.
    server_cpu_per_push: Duration,
    connections: usize,
}

async fn bench(counts: &[usize], delay: Duration) -> Result<bool, String> {
    let apns = TestApns::generate();
    let mut server = ServerProcess::start(&apns, delay)?;
    let mut all_met = true;
    let mut call = 0usize;
    for &count in counts {
        let rounds_needed = count
            .div_ceil(STREAMS_PER_CONNECTION * MAX_CONNECTIONS)
            .max(1);
        let floor = delay * rounds_needed as u32;
        let fewest = count.div_ceil(STREAMS_PER_CONNECTION);
        let mut rounds = Vec::new();
        let mut bare_rounds = Vec::new();
        // Alternating, so that both see the same minutes of this shared machine.
        // `FANOUT_ONLY=pushwake` (or `bare`) runs one client's rounds alone, for a profile.
        let only = std::env::var("FANOUT_ONLY").unwrap_or_default();
        for _ in 0..ROUNDS {
            if only != "bare" {
                rounds.push(round(&apns, &mut server, count, &mut call, Client::Pushwake).await?);
            }
            if only != "pushwake" {
                bare_rounds
                    .push(round(&apns, &mut server, count, &mut call, Client::BareH2).await?);
            }
        }
        if rounds.is_empty() || bare_rounds.is_empty() {
            println!("FANOUT_ONLY={only}: one client's rounds only, no figures");
            return Ok(true);
        }
        let median_of = |rounds: &[Round], f: &dyn Fn(&Round) -> Duration| {
            let mut v: Vec<Duration> = rounds.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let median = |f: &dyn Fn(&Round) -> Duration| median_of(&rounds, f);
        let bare_wall = median_of(&bare_rounds, &|r| r.wall);
        let bare_cpu = median_of(&bare_rounds, &|r| r.cpu_per_push);
        let spread = |f: &dyn Fn(&Round) -> Duration| {
            let v: Vec<f64> = rounds.iter().map(|r| ms(f(r))).collect();
            let lo = v.iter().cloned().fold(f64::MAX, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.1}–{hi:.1}")
        };
        let wall = median(&|r| r.wall);
        let cpu = median(&|r| r.cpu_per_push);
        let server_cpu = median(&|r| r.server_cpu_per_push);
        // What two busy cores need for the work of both processes at the least.
        let cpu_floor = (cpu + server_cpu) * count as u32 / cores();
        let connections = rounds.iter().map(|r| r.connections).max().unwrap_or(0);
        let wall_target = floor * 4 + Duration::from_millis(100);
        println!(
            "{count} pushes for {count} calls at once, the server in its own process answering each after {} ms:",
            delay.as_millis()
        );
        println!(
            "  wall median {:.1} ms ({} over {ROUNDS} rounds)   floor {:.1} ms   target ≤ {:.1} ms",
            ms(wall),
            spread(&|r| r.wall),
            ms(floor),
            ms(wall_target)
        );
        println!(
            "  per push p50 {} ms   p99 {} ms   pushwake's CPU per push {:.1} µs (median)",
            spread(&|r| r.p50),
            spread(&|r| r.p99),
            cpu.as_secs_f64() * 1e6
        );
        println!(
            "  the server's CPU per push {:.1} µs; both processes' CPU over {} cores: {:.1} ms at the least",
            server_cpu.as_secs_f64() * 1e6,
            cores(),
            ms(cpu_floor)
        );
        println!("  TCP connections the server saw per round: at most {connections} (fewest the stream limit allows: {fewest})");
        println!(
            "  a bare HTTP/2 client in the same minutes (same requests, {fewest} connection(s) opened beforehand, nothing else): wall median {:.1} ms, CPU per push {:.1} µs; pushwake / bare: wall {:.2}, CPU {:.2}",
            ms(bare_wall),
            bare_cpu.as_secs_f64() * 1e6,
            wall.as_secs_f64() / bare_wall.as_secs_f64(),
            cpu.as_secs_f64() / bare_cpu.as_secs_f64()
        );
        let wall_ok = wall <= wall_target;
        let connections_ok = connections <= fewest;
        all_met &= wall_ok && connections_ok;
        figure(
            &format!("push fan-out {count}: wall (median of {ROUNDS})"),
            &format!("{:.1} ms", ms(wall)),
            &format!(
                "≤ {:.0} ms (4 × floor {:.0} ms + 100)",
                ms(wall_target),
                ms(floor)
            ),
            wall_ok,
        );
        figure(
            &format!("push fan-out {count}: pushwake CPU per push"),
            &format!("{:.1} µs", cpu.as_secs_f64() * 1e6),
            &format!(
                "reported; with the server's {:.1} µs, {:.0} ms of CPU on {} cores",
                server_cpu.as_secs_f64() * 1e6,
                ms(cpu_floor),
                cores()
            ),
            true,
        );
        figure(
            &format!("push fan-out {count}: a bare HTTP/2 client, same minutes"),
            &format!(
                "wall {:.1} ms, CPU per push {:.1} µs",
                ms(bare_wall),
                bare_cpu.as_secs_f64() * 1e6
            ),
            &format!(
                "reported; pushwake / bare: wall {:.2}, CPU {:.2}",
                wall.as_secs_f64() / bare_wall.as_secs_f64(),
                cpu.as_secs_f64() / bare_cpu.as_secs_f64()
            ),
            true,
        );
        figure(
            &format!("push fan-out {count}: connections"),
            &connections.to_string(),
            &format!("≤ {fewest}"),
            connections_ok,
        );
    }
    Ok(all_met)
}

/// Who sends a round's pushes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// pushwake's APNs pushkin, through its push service.
    Pushwake,
    /// The baseline: the `h2` crate and nothing else (see [`BareClient`]).
    BareH2,
}

/// The least a client can do to send the same pushes: the same requests (path, headers,
/// pushwake's payload, one provider token) on plain `h2` connections opened before the
/// round, one task per push, no retry, timeout, health or metrics. What pushwake costs
/// above it is pushwake's own.
struct BareClient {
    senders: Vec<h2::client::SendRequest<bytes::Bytes>>,
    authority: String,
    topic: String,
    jwt: String,
}

impl BareClient {
    async fn connect(apns: &TestApns, endpoint: &str, connections: usize) -> Result<Self, String> {
        let authority = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| format!("the bench's server is h2c, not {endpoint}"))?
            .to_owned();
        let mut senders = Vec::new();
        for _ in 0..connections {
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|e| format!("bare client: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let (sender, connection) = h2::client::handshake(tcp)
                .await
                .map_err(|e| format!("bare client: {e}"))?;
            tokio::spawn(connection);
            // Until the server's SETTINGS arrived, h2 would allow only its default streams.
            let sender = sender.ready().await.map_err(|e| e.to_string())?;
            senders.push(sender);
        }
        let now = unix_now();
        let jwt = ProviderToken::new(apns.key.private_pem.as_bytes(), &apns.team_id, &apns.key_id)
            .and_then(|mut token| token.get(now))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            senders,
            authority,
            topic: apns.topic.clone(),
            jwt,
        })
    }

    async fn send(&self, lane: usize, token: &str, push: &WakePush) -> Result<(), String> {
        let expires_at = unix_now() + 30;
        let body = serde_json::to_vec(&payload::incoming_call(push, expires_at))
            .map_err(|e| e.to_string())?;
        let request = hyper::Request::post(format!("http://{}/3/device/{token}", self.authority))
            .header("apns-push-type", "voip")
            .header("apns-topic", &self.topic)
            .header("authorization", format!("bearer {}", self.jwt))
            .header("content-type", "application/json")
            .header("apns-priority", "10")
            .header("apns-expiration", expires_at.to_string())
            .header("content-length", body.len())
            .body(());
        let Ok(request) = request else {
            return Err("the bare client built a bad request".into());
        };
        let answer = async {
            let mut sender = self.senders[lane % self.senders.len()]
                .clone()
                .ready()
                .await?;
            let (response, mut stream) = sender.send_request(request, false)?;
            stream.send_data(bytes::Bytes::from(body), true)?;
            let response = response.await?;
            let status = response.status();
            let mut answer = response.into_body();
            while let Some(chunk) = answer.data().await {
                let chunk = chunk?;
                let _ = answer.flow_control().release_capacity(chunk.len());
            }
            Ok::<_, h2::Error>(status)
        };
        match answer.await {
            Ok(status) if status == hyper::StatusCode::OK => Ok(()),
            Ok(status) => Err(format!("the server answered {status}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a round's pushes came to, collected as they end.
struct Done {
    outcomes: std::sync::Mutex<Vec<(Result<(), String>, Duration)>>,
    left: std::sync::atomic::AtomicUsize,
    /// Notified once, by the last push.
    all: tokio::sync::Notify,
}

impl Done {
    fn record(&self, result: Result<(), String>, latency: Duration) {
        self.outcomes
            .lock()
            .expect("outcomes")
            .push((result, latency));
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.all.notify_waiters();
        }
    }
}

/// A round's client, ready to send.
enum Sender {
    Pushwake(Arc<PushService>),
    Bare(Arc<BareClient>),
}

impl Sender {
    async fn new(
        apns: &TestApns,
        server: &ServerProcess,
        count: usize,
        client: Client,
    ) -> Result<Self, String> {
        Ok(match client {
            Client::Pushwake => {
                let pushkin = Arc::new(
                    ApnsPushkin::new(ApnsSettings {
                        auth: ApnsAuth::Token {
                            team_id: apns.team_id.clone(),
                            key_id: apns.key_id.clone(),
                            key_pem: apns.key.private_pem.clone().into_bytes(),
                        },
                        topic: apns.topic.clone(),
                        alert_topic: None,
                        endpoint: server.endpoint.clone(),
                        sandbox_endpoint: server.endpoint.clone(),
                        warm_sandbox: false,
                    })
                    .map_err(|e| e.to_string())?,
                );
                // As the daemon does at start-up: the connection is open before the
                // first call.
                pushkin.warm_up().await?;
                let mut service = PushService::new();
                service.add(pushkin);
                Sender::Pushwake(Arc::new(service))
            }
            Client::BareH2 => {
                let connections = count.div_ceil(STREAMS_PER_CONNECTION);
                Sender::Bare(Arc::new(
                    BareClient::connect(apns, &server.endpoint, connections).await?,
                ))
            }
        })
    }

    /// The `n`th push of the bench, for the `n`th call.
    async fn send(&self, n: usize, deadline: Instant) -> Result<(), String> {
        let device = Device::new(
            pushwake::push::apns::PLATFORM,
            DeviceToken::new(format!("{n:064x}")),
            format!("bench#{n}"),
        );
        let push = nth_wake_push(n, PushKind::IncomingCall);
        match self {
            Sender::Pushwake(service) => match service.send(&device, &push, deadline).await {
                PushVerdict::Delivered => Ok(()),
                verdict => Err(format!("{verdict:?}")),
            },
            Sender::Bare(client) => client.send(n, device.token.expose(), &push).await,
        }
    }
}

async fn round(
    apns: &TestApns,
    server: &mut ServerProcess,
    count: usize,
    call: &mut usize,
    client: Client,
) -> Result<Round, String> {
    let before = server.stats()?;
    let sender = Arc::new(Sender::new(apns, server, count, client).await?);
    let warm = server.stats()?;

    let cpu_before = cpu_time();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    // Each push records its own outcome and only the last one wakes this thread: a
    // JoinSet woke it for every push (a futex call per push on a parked thread, counted
    // as the client's CPU).
    let done = Arc::new(Done {
        outcomes: std::sync::Mutex::new(Vec::with_capacity(count)),
        left: std::sync::atomic::AtomicUsize::new(count),
        all: tokio::sync::Notify::new(),
    });
    let all_done = done.all.notified();
    tokio::pin!(all_done);
    all_done.as_mut().enable();
    for _ in 0..count {
        *call += 1;
        let n = *call;
        let (sender, done) = (sender.clone(), done.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = sender.send(n, deadline).await;
            done.record(result, sent.elapsed());
        });
    }
    if tokio::time::timeout(Duration::from_secs(60), all_done)
        .await
        .is_err()
    {
        return Err(format!(
            "{} of {count} pushes had no outcome after 60 s",
            done.left.load(std::sync::atomic::Ordering::Acquire)
        ));
    }
    let wall = start.elapsed();
    let outcomes = std::mem::take(&mut *done.outcomes.lock().expect("outcomes"));
    let mut latencies = Vec::with_capacity(count);
    for (result, latency) in outcomes {
        if let Err(why) = result {
            return Err(format!("a push was not delivered: {why}"));
        }
        latencies.push(latency);
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    let after = server.stats()?;
    if after.refused > before.refused {
        return Err(format!(
            "the server refused {} push(es) (its stderr says why)",
            after.refused - before.refused
        ));
    }
    if after.accepted - before.accepted != count {
        return Err(format!(
            "the server accepted {} pushes, not {count}",
            after.accepted - before.accepted
        ));
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            [((p / 100.0 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Ok(Round {
        wall,
        p50: pct(50.0),
        p99: pct(99.0),
        cpu_per_push: cpu / count as u32,
        server_cpu_per_push: after.cpu.saturating_sub(warm.cpu) / count as u32,
        // The warm-up's connection included.
        connections: after.connections - before.connections,
    })
}
