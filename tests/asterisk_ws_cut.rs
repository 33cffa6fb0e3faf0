//! The ARI connection cut without a close, on the real Asterisk 22: pushwake reaches ARI
//! through a TCP proxy that stops forwarding both ways (a firewall dropping packets:
//! nothing is closed, nothing arrives). pushwake must notice within 10 s, reconnect
//! once packets flow again and carry on: a call waiting through the cut still gets its
//! outcome, and a call placed afterwards is woken and answered.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, Phone, SippRun};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn token(phone: u8) -> String {
    format!("36{phone:02x}").repeat(16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dropped_ari_connection_is_noticed_and_the_calls_go_on() {
    let (mut rig, proxy) = Rig::asterisk_behind_proxy(36, env!("CARGO_BIN_EXE_pushwake")).await;
    for k in 1..=2 {
        rig.register(k, 1, 0, &token(k)).await;
    }
    let (waiting, later) = (rig.phone_number(1), rig.phone_number(2));
    let config = rig
        .config()
        .extension(TestExtension::new(&waiting, "25s").device(TestDevice::apns(token(1))))
        .extension(TestExtension::new(&later, "20s").device(TestDevice::apns(token(2))));
    rig.start(config).await;

    // A caller waits for a phone that never wakes; then the connection goes dead.
    let mut first = rig.call(&waiting, CallerEnd::Refused(480));
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    let before_cut = rig.daemon().log_len();
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let lost = rig
        .daemon()
        .wait_log_after(before_cut, "ARI events lost", SECS(20))
        .await;
    let noticed = cut_at.elapsed();
    let lost = rig.unwrap(lost);
    eprintln!("the cut was noticed {noticed:?} after it began: {lost}");
    assert!(
        noticed <= SECS(12),
        "the dead connection was noticed only {noticed:?} after the cut: {lost}"
    );

    // Packets flow again: pushwake reconnects and reads what Asterisk holds.
    let before_resume = rig.daemon().log_len();
    proxy.resume();
    let reconnected = rig
        .daemon()
        .wait_log_after(before_resume, "ARI events connected", SECS(20))
        .await;
    rig.unwrap(reconnected);

    // A call placed now is handed over, pushed, and its woken phone answers.
    let mut phone = rig
        .phone(
            2,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let second = SippRun::caller(
        &rig.pbx.sip,
        &rig.caller(),
        &later,
        rig.slot.port(1),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 },
    );
    let mut second = rig.unwrap(second);
    let pushes = rig.unwrap(rig.apns_server.wait_for(2, SECS(15)).await);
    assert_eq!(
        pushes[1].token,
        token(2),
        "the second push is the later call's"
    );
    rig.register(2, 1, 120, &token(2)).await;
    rig.finish(&mut second, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;

    // The caller who waited through the cut still gets its outcome at its deadline.
    rig.finish(&mut first, SECS(40)).await;
    rig.assert_clean().await;
    rig.register(2, 1, 0, &token(2)).await;
    assert!(
        proxy.count("GET /ari/events") >= 2,
        "pushwake's WebSocket went through the proxy and came back: {:?}",
        proxy.requests()
    );
}
