//! `pushwake-bench`: how fast a woken phone is rung.
//!
//! Repeats a woken call (see `woken_call`) and reports the time from the phone's
//! REGISTER leaving the phone to the INVITE for the waiting call reaching it, from
//! sipp's packet timestamps (loopback: the same as REGISTER reaching Asterisk → INVITE
//! leaving it, plus two loopback hops). Also the daemon's resident memory when idle.
//! Run it with `scripts/bench` (release build). Not a test: figures on a shared machine
//! vary; CI does not run it.

use std::time::Duration;

use pushwake_testkit::figures::{ms, percentile, proc_status_kib};
use pushwake_testkit::slot::Slot;
use pushwake_testkit::woken_call::{self, WokenCallBench, WokenCallPlan};

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    if let Err(e) = bench(calls).await {
        eprintln!("pushwake-bench: FAILED: {e}");
        std::process::exit(1);
    }
}

async fn bench(calls: usize) -> Result<(), String> {
    let slot = Slot::new(39);
    let WokenCallBench {
        pbx,
        server,
        token,
        daemon,
        binary,
        dir: _dir,
    } = WokenCallBench::start(slot).await?;
    let pid = daemon.pid().ok_or("daemon exited")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = proc_status_kib(pid, "VmRSS:").ok_or("cannot read the daemon's RSS")?;

    let plan = WokenCallPlan::mid_call_wake(slot, &token);
    plan.register(&pbx.sip, 0).await?;
    println!(
        "pushwake-bench: {calls} woken calls against {} ({})",
        pbx.ari_url,
        binary.display()
    );
    let mut samples = Vec::with_capacity(calls);
    // REGISTER → pushwake decides to dial (Asterisk's event + our event path), and
    // → the originate request answered, from pushwake's log timestamps.
    let mut to_decision = Vec::with_capacity(calls);
    let mut to_accepted = Vec::with_capacity(calls);
    for i in 0..calls {
        let call = woken_call::run(&pbx, &server, &plan)
            .await
            .map_err(|e| format!("call {}: {e}\npushwake log:\n{}", i + 1, daemon.logs()))?;
        if call.invite_call_id != call.push_call_id {
            return Err(format!(
                "call {}: X-Pushwake-Call-Id {} != push call_id {}",
                i + 1,
                call.invite_call_id,
                call.push_call_id
            ));
        }
        samples.push(call.register_to_invite);
        let logs = daemon.logs();
        let stamp_of = |needles: &[&str]| {
            logs.lines()
                .find(|l| needles.iter().any(|n| l.contains(n)) && l.contains(&call.push_call_id))
                .and_then(|l| l.split_whitespace().next())
                .and_then(pushwake_testkit::trace::parse_stamp)
        };
        if let (Some(decided), Some(accepted)) = (
            stamp_of(&[" dialling contact call="]),
            stamp_of(&["dial request accepted"]),
        ) {
            if std::env::var_os("PUSHWAKE_BENCH_RAW").is_some() {
                let received = logs
                    .lines()
                    .filter(|l| {
                        l.contains("contact event received") && l.contains("status=NonQualified")
                    })
                    .filter_map(|l| {
                        l.split_whitespace()
                            .next()
                            .and_then(pushwake_testkit::trace::parse_stamp)
                    })
                    .find(|t| *t >= call.register_sent_micros - 2_000)
                    .map(|t| t - call.register_sent_micros);
                eprintln!(
                    "  call {}: REGISTER sent +0, event at pushwake {received:?} µs, decided {:+} µs, accepted {:+} µs, INVITE at phone {:+} µs",
                    i + 1,
                    decided - call.register_sent_micros,
                    accepted - call.register_sent_micros,
                    call.register_to_invite.as_micros()
                );
            }
            to_decision.push(Duration::from_micros(
                (decided - call.register_sent_micros).max(0) as u64,
            ));
            to_accepted.push(Duration::from_micros(
                (accepted - call.register_sent_micros).max(0) as u64,
            ));
        }
        if (i + 1) % 10 == 0 {
            eprintln!("  {} calls done", i + 1);
        }
    }
    pbx.wait_clean(slot, Duration::from_secs(10)).await?;
    let after_rss = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let mut sorted = samples.clone();
    sorted.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!("REGISTER sent by the woken phone → INVITE received by it (sipp packet timestamps, loopback), {} calls:", samples.len());
    println!(
        "  p50 {:.3} ms   p95 {:.3} ms   max {:.3} ms   (min {:.3} ms, mean {:.3} ms)",
        ms(percentile(&sorted, 50.0)),
        ms(percentile(&sorted, 95.0)),
        ms(*sorted.last().unwrap()),
        ms(sorted[0]),
        ms(mean)
    );
    println!("  every INVITE carried the push's call id in X-Pushwake-Call-Id");
    pushwake_testkit::figures::reported(
        &format!(
            "Asterisk: REGISTER → INVITE of one woken call, p50 / p95 ({} calls)",
            samples.len()
        ),
        &format!(
            "{:.2} / {:.2} ms",
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 95.0))
        ),
        "one call at a time",
    );
    if !to_decision.is_empty() {
        to_decision.sort();
        to_accepted.sort();
        println!(
            "  breakdown (p50, from pushwake's debug log): REGISTER → pushwake decides to dial {:.3} ms; → ARI answered the originate {:.3} ms",
            ms(percentile(&to_decision, 50.0)),
            ms(percentile(&to_accepted, 50.0))
        );
    }
    println!(
        "pushwake resident memory: idle {:.1} MiB, after {} calls {:.1} MiB",
        idle_rss as f64 / 1024.0,
        samples.len(),
        after_rss as f64 / 1024.0
    );
    pushwake_testkit::figures::reported(
        "Asterisk: daemon RSS idle / after the calls",
        &format!(
            "{:.1} / {:.1} MiB",
            idle_rss as f64 / 1024.0,
            after_rss as f64 / 1024.0
        ),
        "reported",
    );
    println!(
        "pushes accepted by the local APNs server: {}, HTTP/2 connections opened: {}",
        server.accepted().len(),
        server.connections()
    );
    Ok(())
}
