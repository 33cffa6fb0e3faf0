//! A sleeping push phone as one member of a ring group on the real Asterisk: the test
//! dialplan's TT91 dials `Local/TT01@pushwake-member&PJSIP/TT02` (the shipped
//! `[pushwake-member]` context, dialplan/asterisk/pushwake.conf), TT01 being a
//! push-enabled extension whose phone sleeps and TT02 a registered desk phone. The
//! group's rules must hold: the first to answer wins, the loser is cancelled, pushwake's
//! member ends with the call and tells the woken phone why, and nothing is left.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension, TestFcm};
use pushwake_testkit::fcm::{FcmServer, ReceivedMessage};
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn apns_token(rig: &Rig) -> String {
    format!("{:02x}01", rig.slot.0).repeat(16)
}

fn fcm_token(rig: &Rig) -> String {
    format!("g{}Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZ-group", rig.slot.0)
}

/// The slot's ring group number (test dialplan: TT91).
fn group(rig: &Rig) -> String {
    format!("{}91", rig.slot.0)
}

/// The slot's queue number (test dialplan: TT92 joins queue qTT of queues.conf).
fn queue(rig: &Rig) -> String {
    format!("{}92", rig.slot.0)
}

/// A second caller joins the slot's queue while phone 1 is busy: phone 2, a desk phone,
/// answers it; the caller talks 1 s and hangs up.
async fn the_desk_phone_takes_a_queue_call(rig: &Rig) {
    let mut desk = rig
        .phone(
            2,
            1,
            Phone::DeskAnswer {
                answer_after_ms: 500,
            },
        )
        .await;
    rig.register_contact(2, 1, 120, "").await;
    let mut queued = rig.call_from(
        rig.slot.extra_port(0),
        &queue(rig),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 },
    );
    rig.finish(&mut queued, SECS(30)).await;
    rig.finish(&mut desk, SECS(30)).await;
}

/// A daemon for the slot where TT01 (ring timeout 20 s) has an iOS and an Android
/// device; nothing of TT01 or TT02 is registered.
async fn setup(slot: u8) -> (Rig, FcmServer) {
    let mut rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    rig.register(1, 1, 0, &apns_token(&rig)).await;
    rig.register_contact(2, 1, 0, "").await;
    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    let config = rig
        .config()
        .pbx_option("device_states = true")
        .fcm(&fcm, &fcm_server.endpoint(), &fcm_server.token_uri())
        .extension(
            TestExtension::new(rig.phone_number(1), "20s")
                .device(TestDevice::apns(apns_token(&rig)))
                .device(TestDevice::fcm(fcm_token(&rig))),
        );
    rig.start(config).await;
    (rig, fcm_server)
}

/// The FCM message that ends the call, after its `incoming_call`.
async fn cancel_message(rig: &Rig, fcm: &FcmServer) -> ReceivedMessage {
    let messages = rig.unwrap(fcm.wait_for(2, SECS(15)).await);
    assert_eq!(messages[0].data["type"], "incoming_call");
    assert_eq!(messages[1].data["type"], "call_cancelled");
    assert_eq!(messages[1].data["call_id"], messages[0].data["call_id"]);
    messages[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_phone_answers_first_and_the_woken_phone_is_told_answered_elsewhere() {
    let (rig, fcm) = setup(36).await;
    let mut desk = rig
        .phone(
            2,
            1,
            Phone::DeskAnswer {
                answer_after_ms: 1500,
            },
        )
        .await;
    rig.register_contact(2, 1, 120, "").await;
    let mut call = rig.call(
        &group(&rig),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 },
    );
    // pushwake wakes TT01's phones as the group's member…
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    // …the desk phone answers first; the group hangs the member up.
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut desk, SECS(30)).await;
    let cancel = cancel_message(&rig, &fcm).await;
    assert_eq!(
        cancel.data["reason"],
        "answered_elsewhere",
        "{}",
        rig.logs()
    );
    rig.assert_clean().await;
    rig.register_contact(2, 1, 0, "").await;
}

/// Calls `number` (a group of phone 1, asleep, and phone 2, a desk phone that only
/// rings): phone 1's device is woken by its push, registers and answers; the desk phone
/// is cancelled; the caller talks, hangs up, and nothing is left.
async fn the_woken_phone_wins(rig: &Rig, number: &str) {
    let mut desk = rig.phone(2, 1, Phone::DeskIgnore).await;
    rig.register_contact(2, 1, 120, "").await;
    let mut woken = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(number, CallerEnd::AnsweredCallerHangsUp { talk_ms: 2000 });
    let push = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(push[0].body["caller_number"], rig.caller().as_str());
    // Woken by the push, the phone registers; pushwake rings it and it answers.
    rig.register(1, 1, 120, &apns_token(rig)).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut woken, SECS(30)).await;
    // The desk phone rang and got its CANCEL (its scenario waits for one).
    rig.finish(&mut desk, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&woken),
        push[0].body["call_id"].as_str().unwrap()
    );
    rig.wait_log("caller connected", SECS(5)).await;
    rig.assert_clean().await;
    rig.register(1, 1, 0, &apns_token(rig)).await;
    rig.register_contact(2, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_woken_phone_answers_first_and_the_desk_phone_is_cancelled() {
    let (rig, _fcm) = setup(37).await;
    the_woken_phone_wins(&rig, &group(&rig)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_leaving_the_group_ends_the_member_and_tells_caller_hung_up() {
    let (rig, fcm) = setup(38).await;
    let mut desk = rig.phone(2, 1, Phone::DeskIgnore).await;
    rig.register_contact(2, 1, 120, "").await;
    let mut call = rig.call(&group(&rig), CallerEnd::Cancels { after_ms: 2000 });
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut desk, SECS(30)).await;
    let cancel = cancel_message(&rig, &fcm).await;
    assert_eq!(cancel.data["reason"], "caller_hung_up", "{}", rig.logs());
    rig.assert_clean().await;
    rig.register_contact(2, 1, 0, "").await;
}

/// The device state pushwake shows for the slot's phone `k`, as Asterisk has it.
async fn device_state(rig: &Rig, k: u8) -> String {
    let name = format!("Stasis:{}-{}", rig.app(), rig.phone_number(k));
    rig.pbx
        .client()
        .device_state(&name)
        .await
        .unwrap_or_default()
}

/// Waits until the device state of phone `k` is `wanted`.
async fn wait_state(rig: &Rig, k: u8, wanted: &str) {
    let result = pushwake_testkit::wait_until(
        &format!("phone {k}'s device state to be {wanted}"),
        SECS(10),
        || async { (device_state(rig, k).await == wanted).then_some(()) },
    )
    .await;
    if let Err(e) = result {
        panic!(
            "{e} (it is {:?})\npushwake log:\n{}",
            device_state(rig, k).await,
            rig.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_state_shows_a_sleeping_phone_available_ringing_and_again_after_a_restart() {
    let (mut rig, _fcm) = setup(39).await;
    // TT01 has devices to wake, though none is registered: available to a queue.
    wait_state(&rig, 1, "NOT_INUSE").await;
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Cancels { after_ms: 1500 });
    wait_state(&rig, 1, "RINGING").await;
    rig.finish(&mut call, SECS(30)).await;
    wait_state(&rig, 1, "NOT_INUSE").await;
    // Something else set it while pushwake was away: a restarted pushwake shows it anew.
    let name = format!("Stasis:{}-{}", rig.app(), rig.phone_number(1));
    let stopped = rig.daemon_mut().terminate(SECS(15)).await;
    rig.unwrap(stopped);
    rig.pbx
        .client()
        .set_device_state(&name, "UNAVAILABLE")
        .await
        .unwrap();
    wait_state(&rig, 1, "UNAVAILABLE").await;
    rig.restart().await;
    wait_state(&rig, 1, "NOT_INUSE").await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringall_queue_rings_the_sleeping_agent_by_its_state_and_the_woken_phone_answers() {
    let (rig, _fcm) = setup(35).await;
    // The queue's member state is the one pushwake shows: available, though asleep.
    wait_state(&rig, 1, "NOT_INUSE").await;
    // Queue q35 (queues.conf), reached as 3592.
    the_woken_phone_wins(&rig, &queue(&rig)).await;
    wait_state(&rig, 1, "NOT_INUSE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_skips_the_agent_while_its_state_shows_it_in_a_call() {
    let (rig, _fcm) = setup(34).await;
    // The agent's phone is awake and takes a call of its own: in use.
    let mut agent = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    rig.register(1, 1, 120, &apns_token(&rig)).await;
    let mut first = rig.call(
        &rig.phone_number(1),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 8000 },
    );
    wait_state(&rig, 1, "INUSE").await;
    // A queue caller meanwhile: queue q34 (queues.conf) rings only the desk phone.
    the_desk_phone_takes_a_queue_call(&rig).await;
    // pushwake was never handed the queue's call: one caller only, the first.
    let waiting = rig.logs().matches("caller waiting").count();
    assert_eq!(waiting, 1, "{}", rig.logs());
    rig.finish(&mut first, SECS(30)).await;
    rig.finish(&mut agent, SECS(30)).await;
    rig.assert_clean().await;
    wait_state(&rig, 1, "NOT_INUSE").await;
    rig.register(1, 1, 0, &apns_token(&rig)).await;
    rig.register_contact(2, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rrmemory_queue_gives_the_sleeping_agent_its_turn_and_the_woken_phone_answers() {
    let (rig, _fcm) = setup(33).await;
    wait_state(&rig, 1, "NOT_INUSE").await;
    let mut woken = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    // Queue q33 (queues.conf): the agent's turn first; the desk phone is not rung.
    let mut call = rig.call(
        &queue(&rig),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 },
    );
    let push = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    rig.register(1, 1, 120, &apns_token(&rig)).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut woken, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&woken),
        push[0].body["call_id"].as_str().unwrap()
    );
    rig.assert_clean().await;
    rig.register(1, 1, 0, &apns_token(&rig)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_of_the_phone_and_pushwakes_state_keeps_a_queue_off_a_call_that_bypassed_pushwake() {
    let (rig, _fcm) = setup(32).await;
    wait_state(&rig, 1, "NOT_INUSE").await;
    // The agent's phone is awake and takes a call dialled to it directly (TT93): pushwake
    // never sees it, its own state stays NOT_INUSE; the phone's PJSIP state is INUSE.
    let mut agent = rig
        .phone(
            1,
            1,
            Phone::DeskAnswer {
                answer_after_ms: 200,
            },
        )
        .await;
    rig.register_contact(1, 1, 120, "").await;
    let mut direct = rig.call(
        &format!("{}93", rig.slot.0),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 8000 },
    );
    let phone = format!("PJSIP/{}-", rig.phone_number(1));
    let up = pushwake_testkit::wait_until("the direct call to be answered", SECS(15), || async {
        let channels = rig.pbx.channels_of(rig.slot).await.ok()?;
        channels
            .iter()
            .any(|c| c.name.starts_with(&phone) && c.state == "Up")
            .then_some(())
    })
    .await;
    rig.unwrap(up);
    assert_eq!(device_state(&rig, 1).await, "NOT_INUSE");
    // A queue caller meanwhile: q32's agent state is the hint of both, INUSE: only the
    // desk phone rings, and pushwake is never handed the call.
    the_desk_phone_takes_a_queue_call(&rig).await;
    assert!(!rig.logs().contains("caller waiting"), "{}", rig.logs());
    rig.finish(&mut direct, SECS(30)).await;
    rig.finish(&mut agent, SECS(30)).await;
    rig.assert_clean().await;
    rig.register_contact(1, 1, 0, "").await;
    rig.register_contact(2, 1, 0, "").await;
}
