//! Faults on the real Asterisk 22 (started by `scripts/asterisk-up`), with sipp callers
//! and phones and the real `pushwake` binary: a crash with many callers waiting, push
//! providers that hang, refuse or answer late, a second daemon on the same application,
//! reloads under load and a device store that fails. The promise under test: every
//! parked caller gets an outcome within its ring window, whatever fails.
//!
//! Test slots 10–14 (shared with other test files: cargo runs test binaries one after
//! another), one per test, so this file's tests run in parallel with each other.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, SippRun};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn token(slot: Slot, device: u8) -> String {
    format!("{:02x}{device:02x}", slot.0).repeat(16)
}

/// A rig for `slot` whose phones 1..=3 are unregistered (asleep), no daemon yet.
async fn asleep(slot: u8) -> Rig {
    let rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    for k in 1..=3u8 {
        for device in 1..=2u8 {
            rig.register(k, device, 0, &token(rig.slot, device)).await;
        }
    }
    rig
}

/// `count` callers from the slot's extra ports, all dialling `to`, each to end as `end`.
fn callers(rig: &Rig, count: u16, to: &str, end: CallerEnd) -> Vec<SippRun> {
    (0..count)
        .map(|n| rig.call_from(rig.slot.extra_port(n), to, end))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_callers_waiting_through_a_kill_9_all_come_back_recovered() {
    let mut rig = asleep(10).await;
    let ext = rig.phone_number(1);
    let config = rig
        .config()
        .extension(TestExtension::new(&ext, "60s").device(TestDevice::apns(token(rig.slot, 1))));
    rig.start(config).await;
    // The test dialplan answers RECOVERED with 410.
    let mut calls = callers(&rig, 20, &ext, CallerEnd::Refused(410));
    // All twenty are in pushwake's hands once each was pushed.
    rig.unwrap(rig.apns_server.wait_for(20, SECS(30)).await);
    rig.daemon_mut().kill().await;
    let parked = rig.pbx.channels_of(rig.slot).await.unwrap();
    assert_eq!(parked.len(), 20, "{parked:?}");
    assert!(parked.iter().all(|c| c.dialplan.app_name == "Stasis"));

    let restarted = tokio::time::Instant::now();
    rig.restart().await;
    for call in &mut calls {
        rig.finish(call, SECS(30)).await;
    }
    let took = restarted.elapsed();
    assert!(
        took < SECS(15),
        "the callers came back {took:?} after the restart"
    );
    let recovered = rig.logs().matches("RECOVERED").count();
    assert!(
        recovered >= 20,
        "{recovered} RECOVERED lines:\n{}",
        rig.logs()
    );
    rig.assert_clean().await;
}
