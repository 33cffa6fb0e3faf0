//! pushwake's own share of FreeSWITCH's two hot paths, against the Event Socket stand-in
//! (`testkit::freeswitch`): from a `sofia::register` event to the `bgapi originate`
//! pushwake writes for the waiting call, and from the leg's `CHANNEL_ANSWER` to the
//! first command joining it with the caller (and to the `uuid_bridge`).
//!
//! Each is timed from the moment the stand-in writes the event to the moment it has read
//! pushwake's command, which includes the stand-in's own work and two loopback hops: an
//! upper bound of pushwake's share (the translation, the engine, the driver). The
//! baseline, measured in the same run, is the same path with the smallest possible
//! client in pushwake's place: the adapter's Event Socket connection answering the event
//! with a `bgapi` at once, in this process.
//!
//! `cargo bench --bench freeswitch_path [-- N]` (N calls, default 200).

use std::path::Path;
use std::time::{Duration, Instant};

use pushwake_freeswitch::{EslConfig, EslConnection};
use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::esl::{channel_event, sofia_register, Answer, EslServer};
use pushwake_testkit::figures::reported;
use pushwake_testkit::freeswitch::{leg_of, FreeSwitchRig};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn row(what: &str, mut samples: Vec<Duration>) -> (String, Duration) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = percentile(&samples, 0.5);
    (
        format!(
            "  {what:<46} {:>5} {:>9.0} {:>9.0} {:>9.0}",
            samples.len(),
            us(p50),
            us(percentile(&samples, 0.95)),
            us(*samples.last().unwrap())
        ),
        p50,
    )
}

/// The baseline: the stand-in's event to a bare Event Socket client that answers it with
/// a `bgapi` at once, back at the stand-in.
async fn baseline(n: usize) -> Vec<Duration> {
    let server = EslServer::start().await;
    let mut config = EslConfig::new(server.address(), "ClueCon");
    config.events = vec!["sofia::register".into()];
    let (connection, mut events) = EslConnection::connect(&config).await.unwrap();
    let answering = tokio::spawn(async move {
        while let Some(_event) = events.recv().await {
            let _ = connection.bgapi("originate baseline").await;
        }
    });
    let mut samples = Vec::with_capacity(n);
    for i in 1..=n {
        let started = Instant::now();
        server.push_event(&sofia_register());
        server
            .wait_commands(i, SECS(10), |r| r.command == "bgapi originate baseline")
            .await
            .expect("the baseline client answers");
        samples.push(started.elapsed());
    }
    answering.abort();
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let rig = FreeSwitchRig::start_with(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        39,
        0,
        vec![TestExtension::new("101", "30s").device(TestDevice::apns("39".repeat(32)))],
    )
    .await;
    rig.server.hold_jobs(None);
    let (mut register, mut answer, mut bridge) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=n {
        let caller = format!("e48d5ed0-81cd-4bb8-b8fa-{i:012x}");
        let call = rig.call(&caller, "101").await;
        rig.apns.wait_for(i, SECS(10)).await.unwrap();
        // The woken phone registers.
        let started = Instant::now();
        rig.server.push_event(&sofia_register());
        let originates = rig
            .server
            .wait_commands(i, SECS(10), |r| r.command.starts_with("bgapi originate"))
            .await
            .expect("an originate");
        register.push(started.elapsed());
        let command = &originates[i - 1].command;
        let leg = leg_of(command);
        for command in [
            format!("uuid_setvar {caller} pushwake_status ANSWERED"),
            format!("uuid_answer {caller}"),
            format!("uuid_bridge {caller} {leg}"),
        ] {
            rig.server.answer(&command, Answer::body("+OK\n"));
        }
        // It answers.
        let started = Instant::now();
        rig.server.push_event(&channel_event(
            "CHANNEL_ANSWER",
            &[("Unique-ID", &leg), ("Call-Direction", "outbound")],
        ));
        let first = format!("api uuid_setvar {caller} pushwake_status ANSWERED");
        rig.server
            .wait_command(SECS(10), |r| r.command == first)
            .await
            .expect("the connect");
        answer.push(started.elapsed());
        let last = format!("api uuid_bridge {caller} {leg}");
        rig.server
            .wait_command(SECS(10), |r| r.command == last)
            .await
            .expect("the bridge");
        bridge.push(started.elapsed());
        for id in [leg.as_str(), caller.as_str()] {
            rig.server.push_event(&channel_event(
                "CHANNEL_HANGUP_COMPLETE",
                &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", id)],
            ));
        }
        call.hang_up();
    }
    let base = baseline(n).await;

    println!("freeswitch_path: {n} calls, the stand-in and pushwake (release) on loopback, µs");
    println!(
        "  {:<46} {:>5} {:>9} {:>9} {:>9}",
        "path", "n", "p50", "p95", "max"
    );
    let (line, base_p50) = row("baseline: event → bgapi of a bare ESL client", base);
    println!("{line}");
    let (line, register_p50) = row("sofia::register → bgapi originate", register);
    println!("{line}");
    let (line, answer_p50) = row("CHANNEL_ANSWER → uuid_setvar (first of connect)", answer);
    println!("{line}");
    let (line, _) = row("CHANNEL_ANSWER → uuid_bridge (third)", bridge);
    println!("{line}");
    // The bare client runs in this process, on the runtime the stand-in and this loop
    // share, while pushwake has a process of its own: the baseline is a yardstick of the
    // stand-in's and the loopback's cost, not an exact floor to subtract.
    println!(
        "pushwake's own share is at most the medians above (they include the stand-in and two loopback hops): \
         register → originate {:.0} µs ({:+.0} µs against the bare client), answer → first connect command {:.0} µs ({:+.0} µs)",
        register_p50.as_secs_f64() * 1e6,
        (register_p50.as_secs_f64() - base_p50.as_secs_f64()) * 1e6,
        answer_p50.as_secs_f64() * 1e6,
        (answer_p50.as_secs_f64() - base_p50.as_secs_f64()) * 1e6,
    );
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    reported(
        "FreeSWITCH: sofia::register → bgapi originate, p50",
        &us(register_p50),
        &format!("a bare ESL client: {}", us(base_p50)),
    );
    reported(
        "FreeSWITCH: CHANNEL_ANSWER → first connect command, p50",
        &us(answer_p50),
        &format!("a bare ESL client: {}", us(base_p50)),
    );
    let mut rig = rig;
    let _ = rig.daemon.terminate(SECS(10)).await;
}
