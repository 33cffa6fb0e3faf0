//! End to end on the real Asterisk 22 (started by `scripts/asterisk-up`) with a phone
//! woken through the operator's own backend: the extension's one device is a webhook
//! device; the local webhook server verifies the signature of every event with the
//! shared secret. The caller dials, the backend gets a signed `call.push_wakeup`; the
//! caller hangs up before any phone registers, the backend gets a signed
//! `call.cancelled` with the reason. Test slot 23.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::CallerEnd;
use pushwake_testkit::webhook::{generate_secret, WebhookServer};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 23;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_a_signed_wakeup_then_a_signed_cancel_when_the_caller_hangs_up() {
    let mut rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);
    let device_id = format!("Backend-Device_slot{}:Tablet", rig.slot.0);

    let secret = generate_secret();
    let server = WebhookServer::start(secret.as_bytes()).await.unwrap();
    // [apns] is configured too (the rig's APNs server); it must get nothing.
    let config = rig
        .config()
        .webhook(&server.url(), &secret)
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::webhook(&device_id)));
    rig.start(config).await;

    // Nobody registers: the phone is still waking when the caller gives up.
    let mut call = rig.call(&ext, CallerEnd::Cancels { after_ms: 1500 });
    let wakeup = rig.unwrap(server.wait_for_event("call.push_wakeup", SECS(15)).await);
    assert_eq!(wakeup.device, device_id);
    assert_eq!(wakeup.call["type"], "incoming_call");
    assert_eq!(wakeup.call["extension"], ext.as_str());
    assert_eq!(wakeup.call["caller_number"], rig.caller().as_str());
    let call_id = wakeup.call["call_id"].as_str().unwrap().to_owned();
    assert_eq!(call_id.len(), 36, "a UUID: {call_id}");
    rig.finish(&mut call, SECS(30)).await;

    let cancelled = rig.unwrap(server.wait_for_event("call.cancelled", SECS(15)).await);
    assert_eq!(cancelled.device, device_id);
    assert_eq!(cancelled.call["type"], "call_cancelled");
    assert_eq!(cancelled.call["reason"], "caller_hung_up");
    assert_eq!(cancelled.call["call_id"], call_id.as_str());
    rig.assert_clean().await;

    // Every request verified (signature, timestamp), exactly the two events.
    assert!(server.mistakes().is_empty(), "{:?}", server.mistakes());
    let events: Vec<String> = server.events().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["call.push_wakeup", "call.cancelled"]);
    assert!(
        rig.apns_server.accepted().is_empty() && rig.apns_server.rejected().is_empty(),
        "no APNs push for a webhook-only extension"
    );
    let logs = rig.logs();
    for secret in [&secret, &device_id] {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} in the log:\n{logs}"
        );
    }
}
