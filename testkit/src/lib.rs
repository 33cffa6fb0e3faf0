//! Test, demo and benchmark harness for pushwake.
//!
//! Real parts only: a real Asterisk (started by `scripts/asterisk-up`), real SIP peers
//! (sipp, with the scenarios in `scenarios/`), the real `pushwake` binary, and a local
//! APNs server speaking HTTP/2 with real JWT checks. Nothing here stands in for
//! pushwake's own code.

pub mod apns;
pub mod asterisk;
pub mod config;
pub mod daemon;
pub mod fcm;
pub mod hms;
pub mod keys;
pub mod pbx;
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
