//! The cell-number fallback on the real Asterisk: slot TT's phone 1 is push-enabled with
//! `fallback = "Local/TT03@pushwake-outbound"` (the test dialplan's stand-in for a trunk
//! to a cell phone: it dials phone 3, a plain SIP phone). pushwake rings it alongside
//! the wait once no device answered within `fallback_after`; the first to answer wins;
//! a caller gone before then never starts it.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn token(rig: &Rig) -> String {
    format!("{:02x}f1", rig.slot.0).repeat(16)
}

/// A daemon where phone 1 (ring timeout 20 s, one iOS device) falls back to phone 3
/// after `after`; nothing of phones 1 and 3 is registered.
async fn setup(slot: u8, after: &str) -> Rig {
    let mut rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    rig.register(1, 1, 0, &token(&rig)).await;
    rig.register_contact(3, 1, 0, "").await;
    let fallback = format!("Local/{}@pushwake-outbound", rig.phone_number(3));
    let config = rig.config().extension(
        TestExtension::new(rig.phone_number(1), "20s")
            .device(TestDevice::apns(token(&rig)))
            .fallback(&fallback, after),
    );
    rig.start(config).await;
    rig
}

/// The `PUSHWAKE_STATUS` of the slot's caller channel, as Asterisk has it now.
async fn caller_status(rig: &Rig) -> String {
    let channels = rig.unwrap(rig.pbx.channels_of(rig.slot).await);
    let caller = format!("PJSIP/{}-", rig.caller());
    let Some(channel) = channels.iter().find(|c| c.name.starts_with(&caller)) else {
        panic!("no caller channel among {channels:?}");
    };
    rig.pbx
        .client()
        .get_variable(&channel.id, "PUSHWAKE_STATUS")
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_never_wakes_and_the_fallback_answers() {
    let rig = setup(36, "2s").await;
    let mut cell = rig
        .phone(
            3,
            1,
            Phone::DeskAnswer {
                answer_after_ms: 500,
            },
        )
        .await;
    rig.register_contact(3, 1, 120, "").await;
    let started = tokio::time::Instant::now();
    let mut call = rig.call(
        &rig.phone_number(1),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 3000 },
    );
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    // The phone never registers: after 2 s pushwake rings the fallback too.
    rig.wait_log("ringing the fallback too", SECS(15)).await;
    assert!(
        started.elapsed() >= SECS(2),
        "the fallback rang before fallback_after: {:?}",
        started.elapsed()
    );
    rig.wait_log("the fallback answered", SECS(15)).await;
    rig.wait_log("caller connected", SECS(15)).await;
    assert_eq!(caller_status(&rig).await, "ANSWERED_FALLBACK");
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut cell, SECS(30)).await;
    rig.assert_clean().await;
    rig.register_contact(3, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_wakes_and_answers_first_and_the_ringing_fallback_is_cancelled() {
    let rig = setup(37, "1s").await;
    let mut cell = rig.phone(3, 1, Phone::DeskIgnore).await;
    rig.register_contact(3, 1, 120, "").await;
    let mut woken = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(
        &rig.phone_number(1),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 2000 },
    );
    let push = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    // The cell phone rings first; then the app wakes, registers, and answers.
    rig.wait_log("ringing the fallback too", SECS(15)).await;
    rig.register(1, 1, 120, &token(&rig)).await;
    rig.wait_log("caller connected", SECS(15)).await;
    assert_eq!(caller_status(&rig).await, "ANSWERED");
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut woken, SECS(30)).await;
    // The cell phone rang and got its CANCEL.
    rig.finish(&mut cell, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&woken),
        push[0].body["call_id"].as_str().unwrap()
    );
    rig.assert_clean().await;
    rig.register(1, 1, 0, &token(&rig)).await;
    rig.register_contact(3, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_before_fallback_after_never_starts_the_fallback() {
    let rig = setup(38, "5s").await;
    let cell = rig
        .phone(3, 1, Phone::DeskAnswer { answer_after_ms: 0 })
        .await;
    rig.register_contact(3, 1, 120, "").await;
    let started = tokio::time::Instant::now();
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Cancels { after_ms: 500 });
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    rig.finish(&mut call, SECS(30)).await;
    rig.wait_log("caller hung up while waiting", SECS(10)).await;
    assert!(
        started.elapsed() < SECS(3),
        "the caller left too late to tell"
    );
    // Past the moment the fallback would have rung, and 3 s more: nothing rang it.
    tokio::time::sleep_until(started + SECS(8)).await;
    assert!(
        !rig.logs().contains("ringing the fallback"),
        "{}",
        rig.logs()
    );
    assert!(
        !cell.messages().contains("INVITE sip:"),
        "the cell phone got an INVITE:\n{}",
        cell.messages()
    );
    rig.assert_clean().await;
    rig.register_contact(3, 1, 0, "").await;
}
