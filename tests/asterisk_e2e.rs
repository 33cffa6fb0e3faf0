//! End to end on a real Asterisk 22 (started by `scripts/asterisk-up`), with sipp as the
//! caller and the phones, the real `pushwake` binary, and a local APNs server that
//! checks every push like Apple does. Each test owns a slot (its own endpoints, ARI
//! application and ports), so the tests run in parallel against one Asterisk.

use std::time::Duration;

use pushwake_testkit::apns::ReceivedPush;
use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn token(slot: Slot, device: u8) -> String {
    format!("{:02x}{device:02x}", slot.0).repeat(16)
}

/// Starts a daemon serving `extensions` (phone, ring timeout, APNs devices) for the
/// slot's application; unregisters whatever an earlier run left registered for the
/// slot's phones.
async fn setup(slot: u8, extensions: &[(u8, &str, u8)]) -> Rig {
    let mut rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    for k in 1..=3u8 {
        for device in 1..=2u8 {
            unregister(&rig, k, device).await;
        }
    }
    let mut config = rig.config();
    for (phone, ring, devices) in extensions {
        let mut extension = TestExtension::new(rig.phone_number(*phone), ring);
        for d in 1..=*devices {
            extension = extension.device(TestDevice::apns(token(rig.slot, d)));
        }
        config = config.extension(extension);
    }
    rig.start(config).await;
    rig
}

/// Phone `k`'s device `device` registers (its token as `pn-prid`).
async fn register(rig: &Rig, k: u8, device: u8) {
    rig.register(k, device, 120, &token(rig.slot, device)).await;
}

async fn unregister(rig: &Rig, k: u8, device: u8) {
    rig.register(k, device, 0, &token(rig.slot, device)).await;
}

async fn one_push(rig: &Rig) -> ReceivedPush {
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    pushes[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_phone_is_pushed_registers_answers_and_the_caller_hangs_up() {
    let rig = setup(10, &[(1, "20s", 1)]).await;
    let ext = rig.phone_number(1);
    // The phone is asleep: its app listens on no registered contact yet.
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 });

    let push = one_push(&rig).await;
    assert_eq!(push.token, token(rig.slot, 1));
    assert_eq!(push.headers["apns-push-type"], "voip");
    assert_eq!(push.headers["apns-topic"], "com.example.phone.voip");
    assert_eq!(push.headers["apns-priority"], "10");
    assert_eq!(push.body["type"], "incoming_call");
    assert_eq!(push.body["extension"], ext.as_str());
    assert_eq!(push.body["caller_number"], rig.caller().as_str());
    let call_id = push.body["call_id"].as_str().unwrap().to_owned();
    assert_eq!(call_id.len(), 36, "a UUID: {call_id}");

    // Only now does the woken phone register; pushwake must dial it at once.
    register(&rig, 1, 1).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&phone),
        call_id,
        "the INVITE carries the push's call id"
    );
    rig.wait_log("caller connected", SECS(5)).await;
    rig.assert_clean().await;
    assert!(
        rig.apns_server.rejected().is_empty(),
        "{:?}",
        rig.apns_server.rejected()
    );
    unregister(&rig, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_phone_rings_at_once_and_its_hangup_ends_the_caller() {
    let rig = setup(11, &[(1, "20s", 1)]).await;
    let ext = rig.phone_number(1);
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::AnswerThenBye {
                answer_after_ms: 200,
                talk_ms: 1500,
            },
        )
        .await;
    register(&rig, 1, 1).await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredFarHangsUp);
    // Connected without any registration after the push: the stored contact rang at once.
    rig.finish(&mut phone, SECS(30)).await;
    rig.finish(&mut call, SECS(30)).await;
    let push = one_push(&rig).await;
    assert_eq!(
        call_id_seen_by(&phone),
        push.body["call_id"].as_str().unwrap()
    );
    rig.wait_log("device hung up", SECS(5)).await;
    rig.assert_clean().await;
    unregister(&rig, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_ring_timeout_returns_timeout_to_the_dialplan() {
    let rig = setup(12, &[(1, "3s", 1)]).await;
    let started = tokio::time::Instant::now();
    // The test dialplan answers TIMEOUT with 480.
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Refused(480));
    one_push(&rig).await;
    rig.finish(&mut call, SECS(30)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < SECS(20),
        "returned after {waited:?}"
    );
    rig.wait_log("status=TIMEOUT", SECS(5)).await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_while_waiting_leaves_nothing_behind() {
    let rig = setup(13, &[(1, "20s", 1)]).await;
    // A stale contact rings too, so there is a leg to clean up.
    let mut phone = rig.phone(1, 1, Phone::Ignore).await;
    register(&rig, 1, 1).await;
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Cancels { after_ms: 1500 });
    one_push(&rig).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await; // it saw the CANCEL
    rig.wait_log("caller hung up while waiting", SECS(5)).await;
    rig.assert_clean().await;
    unregister(&rig, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_without_push_returns_nopush_at_once() {
    let rig = setup(14, &[(1, "20s", 1), (2, "20s", 0)]).await;
    // 1403 is not configured at all; 1402 is configured without devices.
    for ext in [rig.phone_number(3), rig.phone_number(2)] {
        let started = tokio::time::Instant::now();
        let mut call = rig.call(&ext, CallerEnd::Refused(404));
        rig.finish(&mut call, SECS(20)).await;
        assert!(
            started.elapsed() < SECS(10),
            "NOPUSH took {:?}",
            started.elapsed()
        );
        rig.assert_clean().await;
    }
    assert!(
        rig.apns_server.accepted().is_empty() && rig.apns_server.rejected().is_empty(),
        "no push for NOPUSH"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_devices_the_first_answer_wins_and_the_other_leg_is_cancelled() {
    let rig = setup(15, &[(1, "20s", 2)]).await;
    let ext = rig.phone_number(1);
    let mut slow = rig.phone(1, 1, Phone::Ignore).await;
    let mut fast = rig
        .phone(
            1,
            2,
            Phone::Answer {
                answer_after_ms: 1000,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 });
    // Both devices are pushed; both wake and register.
    let pushes = rig.apns_server.wait_for(2, SECS(15)).await.unwrap();
    let mut tokens: Vec<&str> = pushes.iter().map(|p| p.token.as_str()).collect();
    tokens.sort();
    assert_eq!(
        tokens,
        vec![token(rig.slot, 1).as_str(), token(rig.slot, 2).as_str()]
    );
    register(&rig, 1, 1).await;
    register(&rig, 1, 2).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut fast, SECS(30)).await;
    rig.finish(&mut slow, SECS(30)).await; // exits 0 only after CANCEL, 200, 487, ACK
    assert_eq!(call_id_seen_by(&slow), call_id_seen_by(&fast));
    rig.assert_clean().await;
    unregister(&rig, 1, 1).await;
    unregister(&rig, 1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_when_the_daemon_is_killed_is_recovered_by_the_next_one() {
    let mut rig = setup(16, &[(1, "20s", 1)]).await;
    // The test dialplan answers RECOVERED with 410.
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Refused(410));
    one_push(&rig).await;
    rig.daemon_mut().kill().await;
    // The caller now hangs in Stasis with nobody looking after it…
    let parked = rig.pbx.channels_of(rig.slot).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].dialplan.app_name, "Stasis");
    // …until a daemon starts again.
    rig.restart().await;
    rig.finish(&mut call, SECS(30)).await;
    rig.wait_log("RECOVERED", SECS(5)).await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_returns_waiting_callers_with_shutdown() {
    let mut rig = setup(17, &[(1, "20s", 1)]).await;
    // The test dialplan answers SHUTDOWN with 486.
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Refused(486));
    one_push(&rig).await;
    let status = rig.daemon_mut().terminate(SECS(15)).await.unwrap();
    assert!(status.success(), "pushwake exited with {status}");
    rig.finish(&mut call, SECS(20)).await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_failing_with_nothing_to_dial_returns_failed_without_waiting() {
    let rig = setup(18, &[(1, "20s", 1)]).await;
    rig.apns_server
        .script(&token(rig.slot, 1), 410, "Unregistered");
    let started = tokio::time::Instant::now();
    // The test dialplan answers FAILED with 503.
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Refused(503));
    rig.finish(&mut call, SECS(30)).await;
    assert!(
        started.elapsed() < SECS(10),
        "FAILED took {:?}",
        started.elapsed()
    );
    let rejected = rig.apns_server.rejected();
    assert_eq!(
        rejected.len(),
        1,
        "one attempt, no retry of a dead token: {rejected:?}"
    );
    rig.assert_clean().await;
    // The dead token is not tried again: the extension has no live device left, so the
    // next call goes on through the dialplan at once (404 = NOPUSH in the test dialplan).
    rig.wait_log("device's token is dead", SECS(5)).await;
    let mut again = rig.call(&rig.phone_number(1), CallerEnd::Refused(404));
    rig.finish(&mut again, SECS(30)).await;
    assert_eq!(
        rig.apns_server.rejected().len(),
        1,
        "no second attempt at a dead token"
    );
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registering_again_on_the_same_contact_is_rung_anew() {
    // Asterisk announces no event when a phone refreshes a contact with the very same
    // URI; pushwake must notice it by itself (it re-reads the contacts every second).
    let rig = setup(20, &[(1, "20s", 1)]).await;
    let ext = rig.phone_number(1);
    register(&rig, 1, 1).await;
    let registered_at = tokio::time::Instant::now();
    // The app was killed; what answers its stored contact now rejects the call (as a
    // phone whose TCP connection died would fail it).
    let mut dead = rig.phone(1, 1, Phone::Reject).await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 });
    rig.finish(&mut dead, SECS(30)).await;
    one_push(&rig).await;
    rig.wait_log("leg ended without answering", SECS(10)).await;
    // The woken app registers the identical contact again, at least a second later (the
    // registration's expiry is kept in whole seconds).
    let resume_at = registered_at + Duration::from_millis(1100);
    tokio::time::sleep_until(resume_at).await;
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    register(&rig, 1, 1).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    rig.wait_log("phone registered again on the same contact", SECS(5))
        .await;
    rig.assert_clean().await;
    unregister(&rig, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_outlives_a_daemon_crash_and_is_still_torn_down() {
    let mut rig = setup(21, &[(1, "20s", 1)]).await;
    let ext = rig.phone_number(1);
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 100,
            },
        )
        .await;
    register(&rig, 1, 1).await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 6000 });
    rig.wait_log("caller connected", SECS(15)).await;
    rig.daemon_mut().kill().await;
    // A new daemon finds the conversation and looks after it; when the caller hangs up,
    // the phone must get its BYE (Asterisk would leave its leg in the bridge forever).
    rig.restart().await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    rig.wait_log("caller hung up", SECS(5)).await;
    rig.assert_clean().await;
    unregister(&rig, 1, 1).await;
}
