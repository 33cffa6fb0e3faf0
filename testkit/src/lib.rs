//! Test, demo and benchmark harness for pushwake.
//!
//! Real parts only: a real PBX (the Asterisk `scripts/asterisk-up` starts, behind the
//! [`pbx::TestPbx`] seam), real SIP peers (sipp, with the scenarios in `scenarios/`), the
//! real `pushwake` binary, and local push servers — APNs, FCM, Huawei Push Kit, a
//! webhook backend, a Web Push service — that check what they get the way the real
//! services do (JWTs, OAuth, signatures, VAPID and aes128gcm decryption). Nothing here
//! stands in for pushwake's own code.
//!
//! - [`push_server`]: what the five push servers share (accept loop, recorder, scripted
//!   replies, waits); [`apns`], [`fcm`], [`hms`], [`webhook`], [`webpush`]: their protocols.
//! - [`config`]: the configuration builder and the test credentials.
//! - [`esl`]: a local FreeSWITCH Event Socket speaking the captured bytes, with the
//!   captures themselves ([`esl::capture`]).
//! - [`rig`]: the end-to-end set-up (PBX, slot, APNs server, daemon, callers and phones).
//! - [`proxy`]: a TCP proxy in front of ARI that counts requests and can cut the
//!   connections without closing them.
//! - [`daemon`], [`sipp`], [`slot`], [`asterisk`], [`woken_call`], [`trace`], [`keys`],
//!   [`tls`]: the parts.
//! - [`figures`]: the benchmarks' figure lines for `scripts/bench-all`.
//! - [`disk`]: a small tmpfs a test can fill.

pub mod apns;
pub mod asterisk;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod esl;
pub mod fcm;
pub mod figures;
pub mod freeswitch;
pub mod hms;
pub mod keys;
pub mod pbx;
pub mod postgres;
pub mod proxy;
pub mod push_server;
pub mod rig;
pub mod sipp;
pub mod slot;
pub mod tls;
pub mod trace;
pub mod webhook;
pub mod webpush;
pub mod woken_call;

/// Waits until `check` returns `Some`, polling every 20 ms, for at most `timeout`.
/// Used where the thing waited for has no event of its own (a port being bound, a channel
/// list emptying); the timeout is generous, the poll is fast.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
