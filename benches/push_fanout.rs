//! Push fan-out benchmark (`cargo bench --bench push_fanout [-- N delay-ms]`): many
//! pushes at once over one HTTP/2 connection.
//!
//! Fires N pushes (default 1000), each for a different call, at once through pushwake's
//! APNs pushkin and push service, at the local APNs server (which checks every push like
//! Apple and answers each only after a delay, default 20 ms). Reports the wall time,
//! per-push latency percentiles and the connections the server saw. With one multiplexed
//! connection the wall time is a few delays, not N × delay.
//! Not a test: CI does not run it; figures on a shared machine vary.

use std::sync::Arc;
use std::time::Duration;

use pushwake::push::apns::{ApnsAuth, ApnsPushkin, ApnsSettings};
use pushwake::push::{PushKind, PushService, PushVerdict, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_core::pbx::{CallId, Party};
use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::TestApns;
use tokio::time::Instant;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; the numbers are ours.
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let delay = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(20));
    if let Err(e) = bench(count, delay).await {
        eprintln!("push_fanout: FAILED: {e}");
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench(count: usize, delay: Duration) -> Result<(), String> {
    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations())
        .await
        .map_err(|e| e.to_string())?;
    server.set_delay(delay);
    let pushkin = Arc::new(
        ApnsPushkin::new(ApnsSettings {
            auth: ApnsAuth::Token {
                team_id: apns.team_id.clone(),
                key_id: apns.key_id.clone(),
                key_pem: apns.key.private_pem.clone().into_bytes(),
            },
            topic: apns.topic.clone(),
            alert_topic: None,
            endpoint: server.endpoint(),
            sandbox_endpoint: server.endpoint(),
            warm_sandbox: false,
        })
        .map_err(|e| e.to_string())?,
    );
    // As the daemon does at start-up: the connection is open before the first call.
    pushkin.warm_up().await?;
    let mut service = PushService::new();
    service.add(pushkin);
    let service = Arc::new(service);

    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let service = service.clone();
        tasks.spawn(async move {
            let device = Device::new(
                pushwake::push::apns::PLATFORM,
                DeviceToken::new(format!("{n:064x}")),
                format!("bench#{n}"),
            );
            let push = WakePush {
                call_id: CallId(format!("5d7d1c1e-0000-4000-8000-{n:012}")),
                extension: "101".into(),
                caller: Party {
                    number: "200".into(),
                    name: "Alice".into(),
                },
                kind: PushKind::IncomingCall,
                status: None,
                node: None,
            };
            let sent = Instant::now();
            let verdict = service.send(&device, &push, deadline).await;
            (verdict, sent.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        let (verdict, latency) = done.map_err(|e| e.to_string())?;
        if verdict != PushVerdict::Delivered {
            return Err(format!(
                "a push was not delivered: {verdict:?}; refused: {:?}",
                server.rejected().first()
            ));
        }
        latencies.push(latency);
    }
    let wall = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            [((p / 100.0 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "{count} pushes for {count} calls at once, server answering each after {} ms:",
        delay.as_millis()
    );
    println!(
        "  wall {:.1} ms   per push p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(wall),
        ms(pct(50.0)),
        ms(pct(99.0)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  accepted by the server: {}, TCP connections it saw: {}",
        server.accepted().len(),
        server.connections()
    );
    Ok(())
}
