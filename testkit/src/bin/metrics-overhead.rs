//! `pushwake-metrics-overhead`: what recording the metrics costs on the path that
//! matters most, a woken phone's REGISTER → its INVITE.
//!
//! Alternates rounds of woken calls (`woken_call`) between a daemon without `[metrics]`
//! (the baseline: no observer, no timing) and one with it, on the same Asterisk, slot
//! and phone, and prints REGISTER → INVITE (sipp's packet timestamps) for each, with
//! the daemon's own `pushwake_register_to_dial_seconds` mean from its scrape. Not a
//! test (figures on a shared machine vary); run it under the e2e lock with a release
//! daemon: `PUSHWAKE_BIN=target/release/pushwake target/debug/pushwake-metrics-overhead
//! [rounds] [calls per round]`.

use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::figures::{ms, percentile};
use pushwake_testkit::pbx::TestPbx;
use pushwake_testkit::slot::Slot;
use pushwake_testkit::woken_call::{self, WokenCallPlan};

#[tokio::main]
async fn main() {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    if let Err(e) = bench(arg(1, 4), arg(2, 10)).await {
        eprintln!("pushwake-metrics-overhead: FAILED: {e}");
        std::process::exit(1);
    }
}

/// The value of an unlabelled sample in the metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn bench(rounds: usize, per_round: usize) -> Result<(), String> {
    let slot = Slot::new(39);
    let pbx = TestAsterisk::connect().await?;
    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations())
        .await
        .map_err(|e| e.to_string())?;
    let binary = woken_call::pushwake_binary()?;
    let token = "39".repeat(32);
    let metrics_listen = format!("127.0.0.1:{}", slot.port(19));
    let mut configs = Vec::new();
    let dirs = [
        tempfile::tempdir().map_err(|e| e.to_string())?,
        tempfile::tempdir().map_err(|e| e.to_string())?,
    ];
    for (dir, with_metrics) in dirs.iter().zip([false, true]) {
        let mut config = ConfigBuilder::new(dir.path(), &pbx, &pbx.app(slot))
            .apns(&apns, &server.endpoint())
            .extension(
                TestExtension::new(pbx.phone(slot, 1), "20s").device(TestDevice::apns(&token)),
            );
        if with_metrics {
            config = config.metrics(&metrics_listen);
        }
        configs.push(config.write().map_err(|e| e.to_string())?);
    }
    let plan = WokenCallPlan::mid_call_wake(slot, &token);
    println!(
        "pushwake-metrics-overhead: {rounds} rounds of {per_round} woken calls each, without and with [metrics], against {} ({})",
        pbx.ari_url,
        binary.display()
    );
    let mut samples = [Vec::new(), Vec::new()];
    let mut own = Vec::new();
    for round in 0..rounds {
        // Which goes first alternates too, so neither always follows a fresh start.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for variant in order {
            let mut daemon = Daemon::start(&binary, &configs[variant]).await?;
            for i in 0..per_round {
                let call = woken_call::run(&pbx, &server, &plan).await.map_err(|e| {
                    format!(
                        "round {round} call {i}: {e}\npushwake log:\n{}",
                        daemon.logs()
                    )
                })?;
                samples[variant].push(call.register_to_invite);
            }
            if variant == 1 {
                let text = reqwest::get(format!("http://{metrics_listen}/metrics"))
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                let sum = sample(&text, "pushwake_register_to_dial_seconds_sum");
                let count = sample(&text, "pushwake_register_to_dial_seconds_count");
                if let (Some(sum), Some(count)) = (sum, count) {
                    if count > 0.0 {
                        own.push(Duration::from_secs_f64(sum / count));
                    }
                }
            }
            daemon.terminate(Duration::from_secs(20)).await?;
        }
    }
    println!("| daemon | calls | REGISTER→INVITE p50 | p95 | max |");
    println!("|---|---|---|---|---|");
    for (variant, name) in ["without [metrics] (baseline)", "with [metrics]"]
        .iter()
        .enumerate()
    {
        let mut sorted = samples[variant].clone();
        sorted.sort();
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            sorted.len(),
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 95.0)),
            ms(*sorted.last().ok_or("no calls")?)
        );
    }
    if !own.is_empty() {
        let mean = own.iter().sum::<Duration>() / own.len() as u32;
        println!(
            "pushwake_register_to_dial_seconds (the daemon's own figure, mean of the rounds' means): {:.3} ms",
            ms(mean)
        );
    }
    Ok(())
}
