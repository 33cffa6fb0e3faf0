//! `pushwake-storm`: pushwake under load on the real test Asterisk.
//!
//! - `parked N [--stale]`: N callers (several sipp callers, each with many calls at
//!   once) to N push-enabled extensions whose phones never wake. Every caller must come
//!   back with `TIMEOUT` (the test dialplan's 480) within ring_timeout + 1 s, the
//!   daemon's peak RSS must stay within 64 MiB, and the ARI requests pushwake makes
//!   while they wait (counted by a proxy in front of ARI) at most N/10 a second. With
//!   `--stale` every extension first gets a registered contact whose phone is asleep
//!   (nothing listens on its port): the case where the contact listings find something.
//! - `storm N`: N calls to N extensions within 2 s; each phone, woken by its push at
//!   the local APNs server, registers after a random 0.2–3 s and answers 0.5 s after
//!   its INVITE. Every call must be answered. Reports REGISTER→INVITE (sipp packet
//!   times) under the storm next to a single woken call's in the same run, push dispatch
//!   latency, the daemon's peak RSS and CPU seconds, and the ARI request rate.
//!
//! Extensions 7000..8199 (ARI application `pwbench`, called from slot 37's caller 3700:
//! `scripts/asterisk-up`). Ports: SIP 40000–40099 and 41000–41999, sipp media 42000–49999.
//! Run with `scripts/bench-storm` (release build); `PUSHWAKE_BIN` picks the daemon (e.g.
//! one built from an older commit, for a before/after comparison; one built before
//! 93aa350 also needs `PUSHWAKE_READY_LINE="ARI events connected"`). Prints its figures
//! and exits 1 when a target is missed. Not a test: CI does not run it.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::figures::{figure, proc_status_kib, reported};
use pushwake_testkit::proxy::TcpProxy;
use pushwake_testkit::sipp::scenario;
use pushwake_testkit::woken_call;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const APP: &str = "pwbench";
const CALLER: &str = "3700";
const FIRST_EXTENSION: u32 = 7000;
const EXTENSIONS: u32 = 1200;
/// Where a stale contact points: nothing listens there (the phone's app is asleep).
const ASLEEP_PORT: u16 = 40099;
/// Peak resident memory allowed while 1,000 callers wait.
const MAX_RSS_MIB: f64 = 64.0;
/// Single woken calls measured before the storm, for the baseline.
const SINGLE_CALLS: usize = 5;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number =
        |i: usize, default: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let result = match args.first().map(String::as_str) {
        Some("parked") => {
            let ring = args
                .iter()
                .position(|a| a == "--ring")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(20);
            parked(number(1, 1000), args.iter().any(|a| a == "--stale"), ring).await
        }
        Some("storm") => storm(number(1, 200)).await,
        _ => Err("usage: pushwake-storm parked N [--stale] [--ring SECONDS] | storm N".to_owned()),
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            println!("pushwake-storm: a target was missed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("pushwake-storm: FAILED: {e}");
            std::process::exit(2);
        }
    }
}

/// The benchmark's extension `i`.
fn extension(i: u32) -> String {
    assert!(
        i < EXTENSIONS,
        "the test PBX has {EXTENSIONS} bench extensions"
    );
    (FIRST_EXTENSION + i).to_string()
}

/// Extension `ext`'s device token (also its contacts' `pn-prid`).
fn token(ext: &str) -> String {
    format!("{:0>64}", format!("7e57{ext}"))
}

/// The daemon, the APNs server it pushes to and the proxy it reaches ARI through.
struct Bench {
    apns: ApnsServer,
    proxy: TcpProxy,
    daemon: Daemon,
    pid: u32,
    cpu_at_start: f64,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(extensions: &[String], ring_timeout: &str) -> Result<Self, String> {
        let pbx = TestAsterisk::connect().await?;
        let proxy = TcpProxy::for_url(&pbx.ari_url).await?;
        let apns_keys = TestApns::generate();
        let apns = ApnsServer::start(apns_keys.expectations())
            .await
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut config = ConfigBuilder::new(dir.path(), &pbx.through(&proxy.url()), APP)
            .apns(&apns_keys, &apns.endpoint());
        for ext in extensions {
            config = config.extension(
                TestExtension::new(ext.clone(), ring_timeout).device(TestDevice::apns(token(ext))),
            );
        }
        let config = config.write().map_err(|e| e.to_string())?;
        let binary = woken_call::pushwake_binary()?;
        println!("daemon: {}", binary.display());
        // Not a line per call at debug: with 1,000 calls the log is a cost of its own.
        if std::env::var_os("PUSHWAKE_TEST_LOG").is_none() {
            std::env::set_var("PUSHWAKE_TEST_LOG", "info");
        }
        let daemon = Daemon::start(&binary, &config).await?;
        let pid = daemon.pid().ok_or("the daemon exited")?;
        let cpu_at_start = cpu_seconds(pid).unwrap_or(0.0);
        Ok(Self {
            apns,
            proxy,
            daemon,
            pid,
            cpu_at_start,
            _dir: dir,
        })
    }

    /// Stops the daemon (SIGTERM: callers still waiting return with SHUTDOWN).
    async fn stop(&mut self) {
        if let Err(e) = self.daemon.terminate(Duration::from_secs(20)).await {
            eprintln!("pushwake-storm: stopping the daemon: {e}");
        }
    }

    fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    /// How many warnings the daemon logged so far, and the first line of each of the
    /// first few kinds (a kind: the message without its time stamp and fields), each
    /// worth a look after a run.
    fn warnings(&self) -> (usize, Vec<String>) {
        let logs = self.daemon.logs();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ")).collect();
        let mut kinds: Vec<String> = Vec::new();
        let mut first_lines = Vec::new();
        for line in &lines {
            let message = line.split_once(" WARN ").map_or(*line, |(_, m)| m);
            // `module: message key=value …`: the message alone.
            let message = message.split_once(": ").map_or(message, |(_, m)| m);
            let words: Vec<&str> = message
                .split(' ')
                .take_while(|w| !w.contains('='))
                .collect();
            let kind = words.join(" ");
            if !kinds.contains(&kind) && kinds.len() < 3 {
                kinds.push(kind);
                first_lines.push((*line).to_owned());
            }
        }
        (lines.len(), first_lines)
    }

    fn cpu_used(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(0.0) - self.cpu_at_start
    }

    /// ARI requests per second over `window`, with the busiest paths.
    async fn ari_rate(&self, window: Duration) -> (f64, Vec<(String, f64)>) {
        let before = self.proxy.requests();
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let secs = started.elapsed().as_secs_f64();
        let after = self.proxy.requests();
        let mut paths: Vec<(String, f64)> = after
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    (n - before.get(k).copied().unwrap_or(0)) as f64 / secs,
                )
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        paths.sort_by(|a, b| b.1.total_cmp(&a.1));
        (paths.iter().map(|(_, r)| r).sum(), paths)
    }
}

fn print_warnings(bench: &Bench) {
    let (count, kinds) = bench.warnings();
    println!(
        "  {count} warnings in the daemon's log{}",
        if count > 0 { ", e.g.:" } else { "" }
    );
    for kind in kinds {
        println!("    {kind}");
    }
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// One sipp process of the benchmark, with its injection file and short message trace.
struct Sipp {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// sipp with `args`, the scenario `file`, and `lines` as its injection file (if any).
    fn start(name: &str, file: &str, lines: &[String], args: &[String]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut command = Command::new("sipp");
        if !lines.is_empty() {
            let inf = dir.path().join("inject.csv");
            std::fs::write(&inf, format!("SEQUENTIAL\n{}\n", lines.join("\n")))
                .map_err(|e| e.to_string())?;
            command.arg("-inf").arg(&inf);
        }
        let out = std::fs::File::create(dir.path().join("stdout")).map_err(|e| e.to_string())?;
        command
            .args(args)
            .arg("-sf")
            .arg(scenario(file))
            .args([
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-trace_shortmsg",
                "-trace_err",
            ])
            .arg("-shortmessage_file")
            .arg(dir.path().join("short"))
            .arg("-error_file")
            .arg(dir.path().join("errors"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start sipp ({name}): {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            dir,
        })
    }

    async fn finish(&mut self, timeout: Duration) -> Result<bool, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.success()),
            Ok(Err(e)) => Err(format!("sipp {}: {e}", self.name)),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(format!(
                    "sipp {} did not finish within {timeout:?}",
                    self.name
                ))
            }
        }
    }

    fn messages(&self) -> Vec<Short> {
        parse_short(&std::fs::read_to_string(self.dir.path().join("short")).unwrap_or_default())
    }

    fn errors(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("errors")).unwrap_or_default();
        text.lines().take(5).collect::<Vec<_>>().join("\n")
    }
}

/// One line of sipp's `-trace_shortmsg`.
#[derive(Clone, Debug)]
struct Short {
    /// Seconds since the epoch.
    at: f64,
    sent: bool,
    call_id: String,
    first_line: String,
}

fn parse_short(text: &str) -> Vec<Short> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            Some(Short {
                at: fields.get(2)?.parse().ok()?,
                sent: *fields.get(3)? == "S",
                call_id: fields.get(4)?.to_string(),
                first_line: fields.get(6)?.trim().to_string(),
            })
        })
        .collect()
}

/// The user part of a request line's URI: `INVITE sip:7001@127.0.0.1:5060 SIP/2.0` → 7001.
fn request_user(first_line: &str) -> Option<&str> {
    let uri = first_line.split(' ').nth(1)?;
    uri.strip_prefix("sip:")?.split('@').next()
}

/// What the caller saw of one call, from sipp's trace (seconds since the epoch).
#[derive(Clone, Debug)]
struct CallOutcome {
    /// The called extension.
    user: String,
    /// The first INVITE sent.
    invited: f64,
    /// How many times the INVITE was sent (more than one: the PBX was slow to answer
    /// it, and sipp retransmitted).
    invites: usize,
    /// The first 180/183: pushwake has parked the caller with ringback.
    ringback: Option<f64>,
    /// The final response, and when it came.
    code: Option<u16>,
    ended: f64,
}

impl CallOutcome {
    /// From the first INVITE to the final response.
    fn wait(&self) -> f64 {
        self.ended - self.invited
    }
}

/// Per call placed by callers, what they saw of it.
fn call_outcomes(messages: &[Short]) -> Vec<CallOutcome> {
    let mut calls: HashMap<&str, CallOutcome> = HashMap::new();
    for m in messages {
        if m.sent && m.first_line.starts_with("INVITE ") {
            calls
                .entry(&m.call_id)
                .or_insert(CallOutcome {
                    user: request_user(&m.first_line).unwrap_or_default().to_owned(),
                    invited: m.at,
                    invites: 0,
                    ringback: None,
                    code: None,
                    ended: 0.0,
                })
                .invites += 1;
        } else if !m.sent {
            let code: Option<u16> = m
                .first_line
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.split(' ').next())
                .and_then(|c| c.parse().ok());
            if let (Some(code), Some(call)) = (code, calls.get_mut(m.call_id.as_str())) {
                if (180..=183).contains(&code) && call.ringback.is_none() {
                    call.ringback = Some(m.at);
                }
                if code >= 200 && call.code.is_none() {
                    call.code = Some(code);
                    call.ended = m.at;
                }
            }
        }
    }
    calls.into_values().collect()
}

/// Starts `processes` sipp callers sharing `extensions`, `per_second` calls a second in
/// all, each call expecting `expect` (`hangup_by caller` after `talk_ms` when 200).
fn start_callers(
    extensions: &[String],
    processes: usize,
    per_second: usize,
    expect: u16,
    talk_ms: u64,
    port_base: u16,
) -> Result<Vec<Sipp>, String> {
    let pbx_sip = std::env::var("PUSHWAKE_TEST_SIP").unwrap_or_else(|_| "127.0.0.1:15060".into());
    let share = extensions.len().div_ceil(processes);
    let mut callers = Vec::new();
    for (k, part) in extensions.chunks(share).enumerate() {
        let n = part.len().to_string();
        let rate = (per_second / processes).max(1).to_string();
        let hangup_by = if expect == 200 { "caller" } else { "far" };
        let args: Vec<String> = [
            pbx_sip.as_str(),
            "-p",
            &(port_base + k as u16).to_string(),
            "-mp",
            &(42000 + 10 * k as u16).to_string(),
            "-m",
            &n,
            "-l",
            &n,
            "-r",
            &rate,
            "-key",
            "from_user",
            CALLER,
            "-key",
            "expect",
            &expect.to_string(),
            "-key",
            "hangup_by",
            hangup_by,
            "-key",
            "talk_ms",
            &talk_ms.to_string(),
            "-timeout",
            "120s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        callers.push(Sipp::start(
            &format!("callers {k}"),
            "caller-many.xml",
            part,
            &args,
        )?);
    }
    Ok(callers)
}

/// Registers (or with `expires` 0 unregisters) one contact on `contact_port` for each
/// extension, from one sipp.
async fn register_all(
    extensions: &[String],
    contact_port: u16,
    expires: u32,
    sip_port: u16,
    media_port: u16,
) -> Result<Sipp, String> {
    let pbx_sip = std::env::var("PUSHWAKE_TEST_SIP").unwrap_or_else(|_| "127.0.0.1:15060".into());
    let lines: Vec<String> = extensions
        .iter()
        .map(|e| format!("{e};{}", token(e)))
        .collect();
    let n = lines.len().to_string();
    let args: Vec<String> = [
        pbx_sip.as_str(),
        "-p",
        &sip_port.to_string(),
        "-mp",
        &media_port.to_string(),
        "-m",
        &n,
        "-r",
        "500",
        "-key",
        "contact_port",
        &contact_port.to_string(),
        "-key",
        "expires",
        &expires.to_string(),
        "-timeout",
        "60s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut run = Sipp::start("register", "register-many.xml", &lines, &args)?;
    if !run.finish(Duration::from_secs(90)).await? {
        return Err(format!(
            "registering {} contacts failed: {}",
            extensions.len(),
            run.errors()
        ));
    }
    Ok(run)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1}  p95 {:.1}  max {:.1}",
        percentile(&values, 50.0),
        percentile(&values, 95.0),
        values.last().copied().unwrap_or(f64::NAN)
    )
}

fn check(ok: &mut bool, what: &str, met: bool) {
    println!("  target {what}: {}", if met { "met" } else { "MISSED" });
    *ok &= met;
}

async fn parked(n: u32, stale: bool, ring_secs: u64) -> Result<bool, String> {
    let extensions: Vec<String> = (0..n).map(extension).collect();
    let mut bench = Bench::start(&extensions, &format!("{ring_secs}s")).await?;
    let result = parked_run(&bench, &extensions, stale, Duration::from_secs(ring_secs)).await;
    // Whatever happened: callers still waiting go back to the dialplan (SHUTDOWN), and no
    // stale contact stays registered for the next run.
    bench.stop().await;
    if stale {
        register_all(&extensions, ASLEEP_PORT, 0, 40090, 42900).await?;
    }
    result
}

async fn parked_run(
    bench: &Bench,
    extensions: &[String],
    stale: bool,
    ring: Duration,
) -> Result<bool, String> {
    let n = extensions.len() as u32;
    println!(
        "parked: {n} callers, nothing wakes{}; ring_timeout {}s",
        if stale {
            ", every extension with a stale contact (registered, asleep)"
        } else {
            ""
        },
        ring.as_secs()
    );
    if stale {
        register_all(extensions, ASLEEP_PORT, 300, 40090, 42900).await?;
    }
    let placed = Instant::now();
    let mut callers = start_callers(extensions, 4, 100, 480, 0, 40000)?;
    // Every caller pushed: all are parked.
    bench
        .apns
        .wait_for(n as usize, Duration::from_secs(60))
        .await?;
    let parked_after = placed.elapsed();
    println!(
        "  all {n} parked {:.1} s after the first call",
        parked_after.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Measured while everyone waits, before the first ring window ends.
    let window = ring
        .saturating_sub(placed.elapsed())
        .saturating_sub(Duration::from_secs(1))
        .min(Duration::from_secs(8));
    if window < Duration::from_secs(2) {
        return Err(format!(
            "calls took {parked_after:?} to park: no time left to measure"
        ));
    }
    let (rate, paths) = bench.ari_rate(window).await;
    let mut all_finished = true;
    for caller in &mut callers {
        all_finished &= caller.finish(Duration::from_secs(90)).await?;
    }
    let outcomes: Vec<_> = callers
        .iter()
        .flat_map(|c| call_outcomes(&c.messages()))
        .collect();
    let timeouts = outcomes.iter().filter(|o| o.code == Some(480)).count();
    let window_ok =
        |o: &CallOutcome| (ring.as_secs_f64() - 0.5..=ring.as_secs_f64() + 1.0).contains(&o.wait());
    let waits: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.code.is_some())
        .map(CallOutcome::wait)
        .collect();
    let late_calls: Vec<&CallOutcome> = outcomes
        .iter()
        .filter(|o| o.code.is_some() && !window_ok(o))
        .collect();
    let late = late_calls.len();
    if late > 0 {
        // When the late callers had called, from the first call: a cluster points at a
        // moment when the machine (or Asterisk) was busy. Where the time went: before the
        // ringback (Asterisk taking the INVITE, retransmitted if slow, and handing the
        // channel to pushwake) or after it (pushwake's ring window).
        let first = outcomes
            .iter()
            .map(|o| o.invited)
            .fold(f64::INFINITY, f64::min);
        let mut starts: Vec<f64> = late_calls.iter().map(|o| o.invited - first).collect();
        starts.sort_by(f64::total_cmp);
        let before: Vec<f64> = late_calls
            .iter()
            .filter_map(|o| Some(o.ringback? - o.invited))
            .collect();
        let after: Vec<f64> = late_calls
            .iter()
            .filter_map(|o| Some(o.ended - o.ringback?))
            .collect();
        let retransmitted = late_calls.iter().filter(|o| o.invites > 1).count();
        println!(
            "  the late callers called {:.1}–{:.1} s after the first; {retransmitted} of them sent their INVITE more than once",
            starts.first().copied().unwrap_or(0.0),
            starts.last().copied().unwrap_or(0.0)
        );
        println!(
            "  late callers, INVITE → ringback (s): {}; ringback → outcome (s): {}",
            summary(before),
            summary(after)
        );
    }
    let rss = bench.peak_rss_mib();
    let pushes = bench.apns.accepted().len();
    println!(
        "  ARI requests while {n} callers wait: {rate:.1}/s over {:.1} s",
        window.as_secs_f64()
    );
    for (path, r) in paths.iter().take(4) {
        println!("    {r:8.1}/s  {path}");
    }
    println!("  pushes accepted by the APNs server: {pushes} (one per call)");
    println!(
        "  outcomes: {timeouts}/{n} TIMEOUT (480); time to the outcome (s): {}; outside [ring-0.5 s, ring+1 s]: {late}",
        summary(waits)
    );
    println!(
        "  daemon peak RSS {rss:.1} MiB, CPU {:.2} s",
        bench.cpu_used()
    );
    print_warnings(bench);
    let mut ok = true;
    check(
        &mut ok,
        &format!("every caller TIMEOUT within ring_timeout + 1 s ({timeouts}/{n}, {late} late)"),
        all_finished && timeouts == n as usize && late == 0,
    );
    check(&mut ok, "one push per call", pushes == n as usize);
    check(
        &mut ok,
        &format!("peak RSS ≤ {MAX_RSS_MIB} MiB"),
        rss <= MAX_RSS_MIB,
    );
    check(
        &mut ok,
        &format!(
            "ARI ≤ {:.0} requests/s (a tenth of the waiting callers)",
            f64::from(n) / 10.0
        ),
        rate <= f64::from(n) / 10.0,
    );
    let case = format!("parked {n}{}", if stale { ", stale contacts" } else { "" });
    figure(
        &format!("{case}: back with TIMEOUT within ring_timeout + 1 s"),
        &format!("{timeouts}/{n}, {late} late"),
        &format!("{n}/{n}, 0 late"),
        all_finished && timeouts == n as usize && late == 0,
    );
    figure(
        &format!("{case}: ARI requests/s while they wait"),
        &format!("{rate:.1}"),
        &format!("≤ {:.0}", f64::from(n) / 10.0),
        rate <= f64::from(n) / 10.0,
    );
    figure(
        &format!("{case}: daemon peak RSS / CPU"),
        &format!("{rss:.1} MiB / {:.2} s", bench.cpu_used()),
        &format!("≤ {MAX_RSS_MIB} MiB"),
        rss <= MAX_RSS_MIB,
    );
    Ok(ok)
}

/// A small xorshift generator: the phones' wake delays need no quality, only spread.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self(nanos | 1)
    }

    /// A value in `[low, high)`.
    fn between(&mut self, low: f64, high: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + (self.0 >> 11) as f64 / (1u64 << 53) as f64 * (high - low)
    }
}

/// What one round of woken calls measured.
struct Round {
    answered: usize,
    total: usize,
    register_to_invite_ms: Vec<f64>,
    push_ms: Vec<f64>,
    seconds: f64,
    ari_requests: u64,
}

/// `extensions.len()` calls within 2 s, each phone waking on its push.
async fn woken_round(bench: &Bench, extensions: &[String], uas_port: u16) -> Result<Round, String> {
    let n = extensions.len();
    let pbx_sip = std::env::var("PUSHWAKE_TEST_SIP").unwrap_or_else(|_| "127.0.0.1:15060".into());
    let n_text = n.to_string();
    // One sipp answers every phone's INVITE (every contact points at it) 0.5 s after it
    // comes, and waits for the BYE.
    let uas_args: Vec<String> = [
        "-p",
        &uas_port.to_string(),
        "-mp",
        &(42800 + (uas_port % 10) * 10).to_string(),
        "-m",
        &n_text,
        "-key",
        "answer_after_ms",
        "500",
        "-timeout",
        "120s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut uas = Sipp::start("phones", "phone-answer.xml", &[], &uas_args)?;
    pushwake_testkit::wait_until(
        "the phones' sipp to listen",
        Duration::from_secs(10),
        || async {
            std::net::UdpSocket::bind(("127.0.0.1", uas_port))
                .is_err()
                .then_some(())
        },
    )
    .await?;
    let base_instant = Instant::now();
    let base_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let pushes_before = bench.apns.accepted().len();
    let requests_before = bench.proxy.count("");
    let mut callers = start_callers(extensions, 1, n.clamp(1, 100), 200, 1000, 40010)?;
    let wanted: HashMap<String, String> =
        extensions.iter().map(|e| (token(e), e.clone())).collect();
    let mut rng = Rng::seeded();
    let mut registrations = Vec::new();
    let mut seen = pushes_before;
    let deadline = Instant::now() + Duration::from_secs(30);
    while registrations.len() < n && Instant::now() < deadline {
        let pushes = bench.apns.accepted();
        for push in &pushes[seen..] {
            let Some(ext) = wanted.get(&push.token) else {
                continue;
            };
            let index = registrations.len();
            let wake = Duration::from_secs_f64(rng.between(0.2, 3.0));
            let wake_at = push.at + wake;
            let (ext, sip) = (ext.clone(), pbx_sip.clone());
            registrations.push(tokio::spawn(async move {
                tokio::time::sleep_until(wake_at).await;
                let lines = vec![format!("{ext};{}", token(&ext))];
                let args: Vec<String> = [
                    sip.as_str(),
                    "-p",
                    &(41000 + index as u16).to_string(),
                    "-mp",
                    &(43000 + 6 * index as u16).to_string(),
                    "-m",
                    "1",
                    "-key",
                    "contact_port",
                    &uas_port.to_string(),
                    "-key",
                    "expires",
                    "120",
                    "-timeout",
                    "20s",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let mut run =
                    Sipp::start(&format!("phone {ext}"), "register-many.xml", &lines, &args)?;
                run.finish(Duration::from_secs(30)).await?;
                Ok::<_, String>((ext, run.messages()))
            }));
        }
        seen = pushes.len();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut register_sent: HashMap<String, f64> = HashMap::new();
    for registration in registrations {
        let (ext, messages) = registration.await.map_err(|e| e.to_string())??;
        if let Some(m) = messages
            .iter()
            .find(|m| m.sent && m.first_line.starts_with("REGISTER "))
        {
            register_sent.insert(ext, m.at);
        }
    }
    for caller in &mut callers {
        caller.finish(Duration::from_secs(60)).await?;
    }
    let seconds = base_instant.elapsed().as_secs_f64();
    let ari_requests = bench.proxy.count("") - requests_before;
    let _ = uas.finish(Duration::from_secs(10)).await;
    let outcomes: Vec<_> = callers
        .iter()
        .flat_map(|c| call_outcomes(&c.messages()))
        .collect();
    let answered = outcomes.iter().filter(|o| o.code == Some(200)).count();
    let mut register_to_invite_ms = Vec::new();
    for m in uas.messages() {
        if m.sent || !m.first_line.starts_with("INVITE ") {
            continue;
        }
        let Some(ext) = request_user(&m.first_line) else {
            continue;
        };
        if let Some(sent) = register_sent.remove(ext) {
            register_to_invite_ms.push((m.at - sent) * 1000.0);
        }
    }
    let invited: HashMap<&str, f64> = outcomes
        .iter()
        .map(|o| (o.user.as_str(), o.invited))
        .collect();
    let push_ms = bench.apns.accepted()[pushes_before..]
        .iter()
        .filter_map(|p| {
            let ext = wanted.get(&p.token)?;
            let at = base_epoch + p.at.duration_since(base_instant).as_secs_f64();
            Some((at - invited.get(ext.as_str())?) * 1000.0)
        })
        .collect();
    // Every phone unregistered again, for the next round.
    register_all(extensions, uas_port, 0, 40091, 42910).await?;
    Ok(Round {
        answered,
        total: n,
        register_to_invite_ms,
        push_ms,
        seconds,
        ari_requests,
    })
}

async fn storm(n: u32) -> Result<bool, String> {
    let single = extension(EXTENSIONS - 1);
    let mut extensions: Vec<String> = (0..n).map(extension).collect();
    extensions.push(single.clone());
    let mut bench = Bench::start(&extensions, "20s").await?;
    extensions.pop();
    let result = storm_run(&bench, &extensions, &single).await;
    bench.stop().await;
    result
}

async fn storm_run(bench: &Bench, extensions: &[String], single: &str) -> Result<bool, String> {
    let n = extensions.len();
    let single = single.to_owned();
    println!("storm: {n} calls to {n} sleeping phones within 2 s; each wakes 0.2–3 s after its push, answers after 0.5 s");
    // The baseline: single woken calls, one after the other, in the same run.
    let mut alone = woken_round(bench, std::slice::from_ref(&single), 40020).await?;
    for _ in 1..SINGLE_CALLS {
        let round = woken_round(bench, std::slice::from_ref(&single), 40020).await?;
        alone.answered += round.answered;
        alone.total += round.total;
        alone
            .register_to_invite_ms
            .extend(round.register_to_invite_ms);
        alone.push_ms.extend(round.push_ms);
    }
    let cpu_before = bench.cpu_used();
    let storm = woken_round(bench, extensions, 40021).await?;
    let cpu = bench.cpu_used() - cpu_before;
    println!(
        "  answered {}/{} (single calls: {}/{})",
        storm.answered, storm.total, alone.answered, alone.total
    );
    println!(
        "  REGISTER → INVITE (ms, sipp packet times): storm {}; single calls {}",
        summary(storm.register_to_invite_ms.clone()),
        summary(alone.register_to_invite_ms.clone())
    );
    println!(
        "  push dispatch (caller's INVITE → APNs accepted the push, ms): storm {}; single calls {}",
        summary(storm.push_ms.clone()),
        summary(alone.push_ms.clone())
    );
    println!(
        "  daemon: peak RSS {:.1} MiB, CPU {cpu:.2} s for the storm; ARI {:.1} requests/s over its {:.1} s ({} requests)",
        bench.peak_rss_mib(),
        storm.ari_requests as f64 / storm.seconds,
        storm.seconds,
        storm.ari_requests
    );
    print_warnings(bench);
    let mut ok = true;
    check(
        &mut ok,
        "every call answered",
        storm.answered == storm.total && alone.answered == alone.total,
    );
    check(
        &mut ok,
        "a REGISTER → INVITE measured for every phone",
        storm.register_to_invite_ms.len() == storm.total,
    );
    figure(
        &format!("storm {n}: calls answered"),
        &format!("{}/{}", storm.answered, storm.total),
        "100 %",
        storm.answered == storm.total,
    );
    reported(
        &format!("storm {n}: REGISTER → INVITE, ms"),
        &summary(storm.register_to_invite_ms.clone()),
        &format!(
            "single calls, same run: {}",
            summary(alone.register_to_invite_ms.clone())
        ),
    );
    reported(
        &format!("storm {n}: push dispatch, ms"),
        &summary(storm.push_ms.clone()),
        &format!("single calls: {}", summary(alone.push_ms.clone())),
    );
    reported(
        &format!("storm {n}: daemon peak RSS / CPU"),
        &format!("{:.1} MiB / {cpu:.2} s", bench.peak_rss_mib()),
        "reported",
    );
    Ok(ok)
}
