//! End to end on a real Asterisk 22 (started by `scripts/asterisk-up`), with sipp as the
//! caller and the phones, the real `pushwake` binary, and a local APNs server that
//! checks every push like Apple does. Each test owns a slot (its own endpoints, ARI
//! application and ports), so the tests run in parallel against one Asterisk.

use std::path::PathBuf;
use std::time::Duration;

use pushwake_testkit::apns::{ApnsServer, ReceivedPush};
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::sipp::{CallerEnd, Phone, SippRun};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Env {
    pbx: TestAsterisk,
    slot: Slot,
    server: ApnsServer,
    config: PathBuf,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn token(slot: Slot, device: u8) -> String {
    format!("{:02x}{device:02x}", slot.0).repeat(16)
}

/// Starts an APNs server and a daemon serving `extensions` for the slot's application;
/// unregisters whatever an earlier run left registered for the slot's phones.
async fn setup(slot: u8, extensions: &[(u8, &str, u8)]) -> Env {
    let slot = Slot::new(slot);
    let pbx = TestAsterisk::connect().await.unwrap();
    for k in 1..=3u8 {
        for device in 1..=2u8 {
            unregister(&pbx, slot, k, device).await;
        }
    }
    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ConfigBuilder::new(dir.path(), &pbx, &slot.app()).apns(&apns, &server.endpoint());
    for (phone, ring, devices) in extensions {
        let mut extension = TestExtension::new(slot.phone(*phone), ring);
        for d in 1..=*devices {
            extension = extension.device(TestDevice::apns(token(slot, d)));
        }
        config = config.extension(extension);
    }
    let config = config.write().unwrap();
    let daemon = Daemon::start(&binary(), &config).await.unwrap();
    Env {
        pbx,
        slot,
        server,
        config,
        daemon,
        _dir: dir,
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushwake"))
}

/// The phone `k` of the slot, device `device`: listens on port `k*2 + device - 2 + 1`.
fn phone_port(slot: Slot, k: u8, device: u8) -> u16 {
    slot.port(u16::from(k) * 2 + u16::from(device) - 1)
}

fn register_port(slot: Slot, k: u8, device: u8) -> u16 {
    slot.port(10 + u16::from(k) * 2 + u16::from(device) - 1)
}

async fn register(pbx: &TestAsterisk, slot: Slot, k: u8, device: u8) {
    SippRun::register(
        &pbx.sip,
        &slot.phone(k),
        register_port(slot, k, device),
        phone_port(slot, k, device),
        120,
        &token(slot, device),
    )
    .await
    .unwrap();
}

async fn unregister(pbx: &TestAsterisk, slot: Slot, k: u8, device: u8) {
    SippRun::register(
        &pbx.sip,
        &slot.phone(k),
        register_port(slot, k, device),
        phone_port(slot, k, device),
        0,
        &token(slot, device),
    )
    .await
    .unwrap();
}

fn caller(env: &Env, to: &str, end: CallerEnd) -> SippRun {
    SippRun::caller(&env.pbx.sip, &env.slot.caller(), to, env.slot.port(0), end).unwrap()
}

async fn one_push(env: &Env) -> ReceivedPush {
    let pushes = env
        .server
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\npushwake log:\n{}", env.daemon.logs()));
    pushes[0].clone()
}

async fn finish(env: &Env, run: &mut SippRun, timeout: u64) {
    if let Err(e) = run.finish(SECS(timeout)).await {
        panic!("{e}\npushwake log:\n{}", env.daemon.logs());
    }
}

async fn assert_clean(env: &Env) {
    if let Err(e) = env.pbx.wait_clean(env.slot, SECS(10)).await {
        panic!("{e}\npushwake log:\n{}", env.daemon.logs());
    }
}

fn call_id_seen_by(phone: &SippRun) -> String {
    phone
        .log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("X-Pushwake-Call-Id: ")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "the phone logged no X-Pushwake-Call-Id:\n{}",
                phone.report()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_phone_is_pushed_registers_answers_and_the_caller_hangs_up() {
    let env = setup(10, &[(1, "20s", 1)]).await;
    let ext = env.slot.phone(1);
    // The phone is asleep: its app listens on no registered contact yet.
    let mut phone = SippRun::phone(
        phone_port(env.slot, 1, 1),
        Phone::Answer {
            answer_after_ms: 200,
        },
    )
    .await
    .unwrap();
    let mut call = caller(
        &env,
        &ext,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 },
    );

    let push = one_push(&env).await;
    assert_eq!(push.token, token(env.slot, 1));
    assert_eq!(push.headers["apns-push-type"], "voip");
    assert_eq!(push.headers["apns-topic"], "com.example.phone.voip");
    assert_eq!(push.headers["apns-priority"], "10");
    assert_eq!(push.body["type"], "incoming_call");
    assert_eq!(push.body["extension"], ext.as_str());
    assert_eq!(push.body["caller_number"], env.slot.caller().as_str());
    let call_id = push.body["call_id"].as_str().unwrap().to_owned();
    assert_eq!(call_id.len(), 36, "a UUID: {call_id}");

    // Only now does the woken phone register; pushwake must dial it at once.
    register(&env.pbx, env.slot, 1, 1).await;
    finish(&env, &mut call, 30).await;
    finish(&env, &mut phone, 30).await;
    assert_eq!(
        call_id_seen_by(&phone),
        call_id,
        "the INVITE carries the push's call id"
    );
    env.daemon
        .wait_log("caller connected", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
    assert!(
        env.server.rejected().is_empty(),
        "{:?}",
        env.server.rejected()
    );
    unregister(&env.pbx, env.slot, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_phone_rings_at_once_and_its_hangup_ends_the_caller() {
    let env = setup(11, &[(1, "20s", 1)]).await;
    let ext = env.slot.phone(1);
    let mut phone = SippRun::phone(
        phone_port(env.slot, 1, 1),
        Phone::AnswerThenBye {
            answer_after_ms: 200,
            talk_ms: 1500,
        },
    )
    .await
    .unwrap();
    register(&env.pbx, env.slot, 1, 1).await;
    let mut call = caller(&env, &ext, CallerEnd::AnsweredFarHangsUp);
    // Connected without any registration after the push: the stored contact rang at once.
    finish(&env, &mut phone, 30).await;
    finish(&env, &mut call, 30).await;
    let push = one_push(&env).await;
    assert_eq!(
        call_id_seen_by(&phone),
        push.body["call_id"].as_str().unwrap()
    );
    env.daemon
        .wait_log("device hung up", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
    unregister(&env.pbx, env.slot, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_ring_timeout_returns_timeout_to_the_dialplan() {
    let env = setup(12, &[(1, "3s", 1)]).await;
    let started = tokio::time::Instant::now();
    // The test dialplan answers TIMEOUT with 480.
    let mut call = caller(&env, &env.slot.phone(1), CallerEnd::Refused(480));
    one_push(&env).await;
    finish(&env, &mut call, 30).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < SECS(20),
        "returned after {waited:?}"
    );
    env.daemon
        .wait_log("status=TIMEOUT", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_while_waiting_leaves_nothing_behind() {
    let env = setup(13, &[(1, "20s", 1)]).await;
    // A stale contact rings too, so there is a leg to clean up.
    let mut phone = SippRun::phone(phone_port(env.slot, 1, 1), Phone::Ignore)
        .await
        .unwrap();
    register(&env.pbx, env.slot, 1, 1).await;
    let mut call = caller(
        &env,
        &env.slot.phone(1),
        CallerEnd::Cancels { after_ms: 1500 },
    );
    one_push(&env).await;
    finish(&env, &mut call, 30).await;
    finish(&env, &mut phone, 30).await; // it saw the CANCEL
    env.daemon
        .wait_log("caller hung up while waiting", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
    unregister(&env.pbx, env.slot, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_without_push_returns_nopush_at_once() {
    let env = setup(14, &[(1, "20s", 1), (2, "20s", 0)]).await;
    // 1403 is not configured at all; 1402 is configured without devices.
    for ext in [env.slot.phone(3), env.slot.phone(2)] {
        let started = tokio::time::Instant::now();
        let mut call = caller(&env, &ext, CallerEnd::Refused(404));
        finish(&env, &mut call, 20).await;
        assert!(
            started.elapsed() < SECS(10),
            "NOPUSH took {:?}",
            started.elapsed()
        );
        assert_clean(&env).await;
    }
    assert!(
        env.server.accepted().is_empty() && env.server.rejected().is_empty(),
        "no push for NOPUSH"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_devices_the_first_answer_wins_and_the_other_leg_is_cancelled() {
    let env = setup(15, &[(1, "20s", 2)]).await;
    let ext = env.slot.phone(1);
    let mut slow = SippRun::phone(phone_port(env.slot, 1, 1), Phone::Ignore)
        .await
        .unwrap();
    let mut fast = SippRun::phone(
        phone_port(env.slot, 1, 2),
        Phone::Answer {
            answer_after_ms: 1000,
        },
    )
    .await
    .unwrap();
    let mut call = caller(
        &env,
        &ext,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 },
    );
    // Both devices are pushed; both wake and register.
    let pushes = env.server.wait_for(2, SECS(15)).await.unwrap();
    let mut tokens: Vec<&str> = pushes.iter().map(|p| p.token.as_str()).collect();
    tokens.sort();
    assert_eq!(
        tokens,
        vec![token(env.slot, 1).as_str(), token(env.slot, 2).as_str()]
    );
    register(&env.pbx, env.slot, 1, 1).await;
    register(&env.pbx, env.slot, 1, 2).await;
    finish(&env, &mut call, 30).await;
    finish(&env, &mut fast, 30).await;
    finish(&env, &mut slow, 30).await; // exits 0 only after CANCEL, 200, 487, ACK
    assert_eq!(call_id_seen_by(&slow), call_id_seen_by(&fast));
    assert_clean(&env).await;
    unregister(&env.pbx, env.slot, 1, 1).await;
    unregister(&env.pbx, env.slot, 1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_when_the_daemon_is_killed_is_recovered_by_the_next_one() {
    let mut env = setup(16, &[(1, "20s", 1)]).await;
    // The test dialplan answers RECOVERED with 410.
    let mut call = caller(&env, &env.slot.phone(1), CallerEnd::Refused(410));
    one_push(&env).await;
    env.daemon.kill().await;
    // The caller now hangs in Stasis with nobody looking after it…
    let parked = env.pbx.channels_of(env.slot).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].dialplan.app_name, "Stasis");
    // …until a daemon starts again.
    let restarted = Daemon::start(&binary(), &env.config).await.unwrap();
    finish(&env, &mut call, 30).await;
    restarted.wait_log("RECOVERED", SECS(5)).await.unwrap();
    env.daemon = restarted;
    assert_clean(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_returns_waiting_callers_with_shutdown() {
    let mut env = setup(17, &[(1, "20s", 1)]).await;
    // The test dialplan answers SHUTDOWN with 486.
    let mut call = caller(&env, &env.slot.phone(1), CallerEnd::Refused(486));
    one_push(&env).await;
    let status = env.daemon.terminate(SECS(15)).await.unwrap();
    assert!(status.success(), "pushwake exited with {status}");
    finish(&env, &mut call, 20).await;
    assert_clean(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_failing_with_nothing_to_dial_returns_failed_without_waiting() {
    let slot = Slot::new(18);
    let env = setup(18, &[(1, "20s", 1)]).await;
    env.server.script(&token(slot, 1), 410, "Unregistered");
    let started = tokio::time::Instant::now();
    // The test dialplan answers FAILED with 503.
    let mut call = caller(&env, &env.slot.phone(1), CallerEnd::Refused(503));
    finish(&env, &mut call, 30).await;
    assert!(
        started.elapsed() < SECS(10),
        "FAILED took {:?}",
        started.elapsed()
    );
    let rejected = env.server.rejected();
    assert_eq!(
        rejected.len(),
        1,
        "one attempt, no retry of a dead token: {rejected:?}"
    );
    assert_clean(&env).await;
    // The dead token is not tried again: the extension has no live device left, so the
    // next call goes on through the dialplan at once (404 = NOPUSH in the test dialplan).
    env.daemon
        .wait_log("device's token is dead", SECS(5))
        .await
        .unwrap();
    let mut again = caller(&env, &env.slot.phone(1), CallerEnd::Refused(404));
    finish(&env, &mut again, 30).await;
    assert_eq!(
        env.server.rejected().len(),
        1,
        "no second attempt at a dead token"
    );
    assert_clean(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registering_again_on_the_same_contact_is_rung_anew() {
    // Asterisk announces no event when a phone refreshes a contact with the very same
    // URI; pushwake must notice it by itself (it re-reads the contacts every second).
    let env = setup(20, &[(1, "20s", 1)]).await;
    let ext = env.slot.phone(1);
    register(&env.pbx, env.slot, 1, 1).await;
    let registered_at = tokio::time::Instant::now();
    // The app was killed; what answers its stored contact now rejects the call (as a
    // phone whose TCP connection died would fail it).
    let mut dead = SippRun::phone(phone_port(env.slot, 1, 1), Phone::Reject)
        .await
        .unwrap();
    let mut call = caller(
        &env,
        &ext,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 },
    );
    finish(&env, &mut dead, 30).await;
    one_push(&env).await;
    env.daemon
        .wait_log("leg ended without answering", SECS(10))
        .await
        .unwrap();
    // The woken app registers the identical contact again, at least a second later (the
    // registration's expiry is kept in whole seconds).
    let resume_at = registered_at + Duration::from_millis(1100);
    tokio::time::sleep_until(resume_at).await;
    let mut phone = SippRun::phone(
        phone_port(env.slot, 1, 1),
        Phone::Answer {
            answer_after_ms: 200,
        },
    )
    .await
    .unwrap();
    register(&env.pbx, env.slot, 1, 1).await;
    finish(&env, &mut call, 30).await;
    finish(&env, &mut phone, 30).await;
    env.daemon
        .wait_log("phone registered again on the same contact", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
    unregister(&env.pbx, env.slot, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_outlives_a_daemon_crash_and_is_still_torn_down() {
    let mut env = setup(21, &[(1, "20s", 1)]).await;
    let ext = env.slot.phone(1);
    let mut phone = SippRun::phone(
        phone_port(env.slot, 1, 1),
        Phone::Answer {
            answer_after_ms: 100,
        },
    )
    .await
    .unwrap();
    register(&env.pbx, env.slot, 1, 1).await;
    let mut call = caller(
        &env,
        &ext,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 6000 },
    );
    env.daemon
        .wait_log("caller connected", SECS(15))
        .await
        .unwrap();
    env.daemon.kill().await;
    // A new daemon finds the conversation and looks after it; when the caller hangs up,
    // the phone must get its BYE (Asterisk would leave its leg in the bridge forever).
    let restarted = Daemon::start(&binary(), &env.config).await.unwrap();
    env.daemon = restarted;
    finish(&env, &mut call, 30).await;
    finish(&env, &mut phone, 30).await;
    env.daemon
        .wait_log("caller hung up", SECS(5))
        .await
        .unwrap();
    assert_clean(&env).await;
    unregister(&env.pbx, env.slot, 1, 1).await;
}
