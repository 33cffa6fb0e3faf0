//! The shared test Asterisk 22 restarted while calls wait, with the real `pushwake`
//! binary: pushwake is back within 3 s of Asterisk answering again, after a quick
//! `core restart now` and after an outage of a minute; nothing is left in the
//! application; woken calls work again; the extension states pushwake shows are shown
//! anew. Asterisk is left running, healthy and on the
//! configuration it had, for the tests that follow.
//!
//! One test: it restarts the Asterisk every other test of this binary would use. Test
//! slot 13 (shared with other test files: cargo runs test binaries one after another).

use std::time::Duration;

use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, Phone, SippRun};
use tokio::time::Instant;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// How soon after Asterisk answers again pushwake must be connected.
const BACK_WITHIN: Duration = Duration::from_secs(3);
/// The long outage: Asterisk stays down this long (the fault itself, not a wait).
const LONG_OUTAGE: Duration = Duration::from_secs(65);

fn token(rig: &Rig) -> String {
    format!("{:02x}01", rig.slot.0).repeat(16)
}

/// The root the test Asterisk runs in (as `scripts/asterisk-up` has it).
fn root() -> String {
    std::env::var("PUSHWAKE_ASTERISK_ROOT")
        .unwrap_or_else(|_| "/var/tmp/pushwake-asterisk/sid".into())
}

/// `asterisk -rx COMMAND` in the test Asterisk's root.
async fn asterisk_rx(command: &str) -> std::process::Output {
    tokio::process::Command::new("chroot")
        .args([root().as_str(), "/usr/sbin/asterisk", "-rx", command])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run asterisk -rx {command:?}: {e}"))
}

/// Starts the test Asterisk again exactly as `scripts/asterisk-up` does, on the
/// configuration its root already has (whoever wrote it: the suite's Asterisk is shared,
/// and a test must leave it as it found it), its output appended to its log.
fn start_asterisk_again() {
    let log_path = std::env::var("PUSHWAKE_ASTERISK_LOG")
        .unwrap_or_else(|_| "/var/tmp/pushwake-asterisk/asterisk.log".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("cannot open {log_path}: {e}"));
    // `setsid --fork`: Asterisk runs on in its own session; the forking parent exits.
    let started = std::process::Command::new("setsid")
        .args([
            "--fork",
            "chroot",
            root().as_str(),
            "/usr/sbin/asterisk",
            "-f",
            "-vvv",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap_or_else(|e| panic!("cannot start Asterisk again: {e}"));
    assert!(started.success(), "setsid chroot asterisk: {started}");
}

/// Waits until ARI answers again (polled every 50 ms) and says when it did.
async fn ari_back(pbx: &TestAsterisk, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if pbx.client().info().await.is_ok() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "Asterisk's ARI did not answer within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until ARI stops answering.
async fn ari_gone(pbx: &TestAsterisk, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pbx.client().info().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "ARI still answers after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Phone 1 asleep is called, pushed, wakes, registers, answers; then unregisters.
async fn woken_call(rig: &Rig) {
    let ext = rig.phone_number(1);
    let pushed = rig.apns_server.accepted().len();
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 });
    rig.unwrap(rig.apns_server.wait_for(pushed + 1, SECS(15)).await);
    rig.register(1, 1, 120, &token(rig)).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    rig.register(1, 1, 0, &token(rig)).await;
    rig.assert_clean().await;
}

/// Waits for the daemon to connect again after log line `skip`; how long after `back`.
async fn reconnected_after(rig: &Rig, skip: usize, back: Instant) -> Duration {
    rig.unwrap(
        rig.daemon()
            .wait_log_after(skip, "ARI events connected", SECS(30))
            .await,
    );
    back.elapsed()
}

/// Callers waiting in pushwake when Asterisk goes away: Asterisk hangs them up as it
/// stops. Returns them, each waited for by the caller (sipp exits 0 when the call ended
/// as it expects: Asterisk 22 declines them with 603 as it stops).
fn waiting_callers(rig: &Rig, count: u16) -> Vec<SippRun> {
    let ext = rig.phone_number(2);
    (0..count)
        .map(|n| rig.call_from(rig.slot.extra_port(n), &ext, CallerEnd::Refused(603)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushwake_is_back_within_3_s_of_asterisk_after_a_restart_and_after_a_minute_away() {
    let mut rig = Rig::asterisk(13, env!("CARGO_BIN_EXE_pushwake")).await;
    rig.register(1, 1, 0, &token(&rig)).await;
    let config = rig
        .config()
        .pbx_option("device_states = true")
        .extension(
            TestExtension::new(rig.phone_number(1), "20s").device(TestDevice::apns(token(&rig))),
        )
        .extension(
            TestExtension::new(rig.phone_number(2), "60s").device(TestDevice::apns(token(&rig))),
        );
    rig.start(config).await;
    woken_call(&rig).await;

    // 1. `core restart now` with three callers waiting.
    let mut callers = waiting_callers(&rig, 3);
    rig.unwrap(rig.apns_server.wait_for(4, SECS(15)).await);
    let skip = rig.daemon().log_len();
    let root = std::env::var("PUSHWAKE_ASTERISK_ROOT")
        .unwrap_or_else(|_| "/var/tmp/pushwake-asterisk/sid".into());
    let restart = tokio::process::Command::new("chroot")
        .args([
            root.as_str(),
            "/usr/sbin/asterisk",
            "-rx",
            "core restart now",
        ])
        .output()
        .await
        .unwrap();
    assert!(restart.status.success(), "core restart now: {restart:?}");
    ari_gone(&rig.pbx, SECS(20)).await;
    for caller in &mut callers {
        rig.finish(caller, SECS(30)).await;
    }
    let back = ari_back(&rig.pbx, SECS(60)).await;
    let quick = reconnected_after(&rig, skip, back).await;
    rig.unwrap(
        rig.daemon()
            .wait_log_after(skip, "ARI events lost", SECS(1))
            .await,
    );
    assert!(
        quick < BACK_WITHIN,
        "connected {quick:?} after Asterisk answered again"
    );
    rig.assert_clean().await;
    // The restarted Asterisk must take SIP again before the next call.
    wait_for_sip().await;
    woken_call(&rig).await;

    // 2. Away for more than a minute. Just before, something else sets phone 1's device
    // state (pushwake shows NOT_INUSE): the reconnected pushwake must show it anew.
    let state = format!("Stasis:{}-{}", rig.app(), rig.phone_number(1));
    rig.unwrap(
        rig.pbx
            .client()
            .set_device_state(&state, "UNAVAILABLE")
            .await
            .map_err(|e| e.to_string()),
    );
    let skip = rig.daemon().log_len();
    let stop = asterisk_rx("core stop now").await;
    assert!(stop.status.success(), "core stop now: {stop:?}");
    ari_gone(&rig.pbx, SECS(20)).await;
    tokio::time::sleep(LONG_OUTAGE).await;
    start_asterisk_again();
    let back = ari_back(&rig.pbx, SECS(90)).await;
    let long = reconnected_after(&rig, skip, back).await;
    assert!(
        long < BACK_WITHIN,
        "after {LONG_OUTAGE:?} away: connected {long:?} after Asterisk answered again"
    );
    wait_for_sip().await;
    rig.assert_clean().await;
    let shown =
        pushwake_testkit::wait_until("phone 1's device state shown anew", SECS(10), || async {
            let now = rig.pbx.client().device_state(&state).await.ok()?;
            (now == "NOT_INUSE").then_some(())
        })
        .await;
    rig.unwrap(shown);
    woken_call(&rig).await;
    eprintln!("back after core restart: {quick:?}; after {LONG_OUTAGE:?} away: {long:?}");
}

/// Waits until the restarted Asterisk's PJSIP takes a REGISTER again.
async fn wait_for_sip() {
    pushwake_testkit::wait_until("PJSIP's UDP transport", SECS(30), || async {
        let out = asterisk_rx("pjsip show transports").await;
        String::from_utf8_lossy(&out.stdout)
            .contains("127.0.0.1:15060")
            .then_some(())
    })
    .await
    .unwrap();
}
