//! `pushwake test-push`: one real push to an extension's devices with the configured
//! credentials, and the provider's verdict for each — for operators setting up keys.
//!
//! The push is a genuine incoming-call push (a VoIP push cannot be anything else), from
//! "pushwake test-push", that expires after [`TEST_RING_WINDOW`]: the phone shows a call
//! that ends by itself.

use std::time::Duration;

use tokio::time::Instant;

use pushwake_core::directory::Directory;
use pushwake_core::pbx::{CallId, Party};
use pushwake_core::random::uuid_v4;

use crate::push::{PushKind, PushService, PushVerdict, WakePush};
use crate::random::OsRandom;

/// How long the test call "rings" on the phone before it expires.
pub const TEST_RING_WINDOW: Duration = Duration::from_secs(15);

/// One device's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestPushResult {
    /// The device's label and token fingerprint.
    pub device: String,
    /// What the provider said.
    pub verdict: PushVerdict,
}

/// Pushes the extension's devices (or only device `only`, counted from 0), concurrently.
pub async fn test_push(
    push: &PushService,
    directory: &Directory,
    extension: &str,
    only: Option<usize>,
) -> Result<Vec<TestPushResult>, String> {
    let policy = directory
        .extension(extension)
        .ok_or_else(|| format!("extension {extension} is not in the configuration"))?;
    if policy.devices.is_empty() {
        return Err(format!("extension {extension} has no devices"));
    }
    let devices: Vec<_> = match only {
        Some(n) => vec![policy.devices.get(n).ok_or_else(|| {
            format!(
                "extension {extension} has {} device(s), counted from 0; there is no device {n}",
                policy.devices.len()
            )
        })?],
        None => policy.devices.iter().collect(),
    };
    let message = WakePush {
        call_id: CallId(uuid_v4(&mut OsRandom)),
        extension: extension.to_owned(),
        caller: Party {
            number: "test".into(),
            name: "pushwake test-push".into(),
        },
        kind: PushKind::IncomingCall,
        status: None,
        node: None,
    };
    let deadline = Instant::now() + TEST_RING_WINDOW;
    let sends = devices.into_iter().map(|device| {
        let message = &message;
        async move {
            TestPushResult {
                device: format!("{} ({})", device.label, device.token),
                verdict: push.send(device, message, deadline).await,
            }
        }
    });
    Ok(futures_util::future::join_all(sends).await)
}

/// One line per result, as the command prints them.
pub fn describe(result: &TestPushResult) -> String {
    match &result.verdict {
        PushVerdict::Delivered => format!("{}: delivered", result.device),
        PushVerdict::Failed {
            reason,
            dead_token: true,
        } => format!(
            "{}: FAILED: {reason} (the token is dead: update the device)",
            result.device
        ),
        PushVerdict::Failed {
            reason,
            dead_token: false,
        } => format!("{}: FAILED: {reason}", result.device),
        PushVerdict::NotSent { reason } => format!("{}: not sent: {reason}", result.device),
    }
}
