//! End to end on the real Asterisk 22 (started by `scripts/asterisk-up`) with a browser
//! softphone woken through Web Push: the extension's one device is a `webpush` device whose
//! token is the local push service's `PushSubscription` JSON. The caller dials, the push
//! service gets a VAPID-signed push that decrypts (with the subscriber's private key) to
//! `incoming_call`; the caller hangs up before any phone registers, and a second push
//! decrypts to `call_cancelled` with the reason. Test slot 24.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::CallerEnd;
use pushwake_testkit::webpush::{generate_vapid_pem, WebPushServer};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_is_pushed_then_told_the_caller_hung_up() {
    let mut rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);

    let server = WebPushServer::start().await.unwrap();
    let subscription = server.subscription_json(&format!("slot{}", rig.slot.0));
    // [apns] is configured too (the rig's APNs server); it must get nothing.
    let vapid = generate_vapid_pem();
    let config = rig
        .config()
        .webpush(&vapid, "mailto:ops@example.com")
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::webpush(&subscription)));
    rig.start(config).await;

    // Nobody registers: the browser is still waking when the caller gives up.
    let mut call = rig.call(&ext, CallerEnd::Cancels { after_ms: 1500 });
    let wakeup = rig.unwrap(server.wait_for("incoming_call", SECS(15)).await);
    assert_eq!(wakeup.urgency, "high");
    assert!((1..=20).contains(&wakeup.ttl), "TTL {}", wakeup.ttl);
    assert_eq!(wakeup.json["extension"], ext.as_str());
    assert_eq!(wakeup.json["caller_number"], rig.caller().as_str());
    let call_id = wakeup.json["call_id"].as_str().unwrap().to_owned();
    assert_eq!(call_id.len(), 36, "a UUID: {call_id}");
    rig.finish(&mut call, SECS(30)).await;

    let cancelled = rig.unwrap(server.wait_for("call_cancelled", SECS(15)).await);
    assert_eq!(cancelled.json["reason"], "caller_hung_up");
    assert_eq!(cancelled.json["call_id"], call_id.as_str());
    rig.assert_clean().await;

    // Every push verified (VAPID) and decrypted; exactly the two.
    assert!(server.mistakes().is_empty(), "{:?}", server.mistakes());
    let kinds: Vec<String> = server
        .messages()
        .into_iter()
        .map(|m| m.json["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["incoming_call", "call_cancelled"]);
    assert!(
        rig.apns_server.accepted().is_empty() && rig.apns_server.rejected().is_empty(),
        "no APNs push for a browser-only extension"
    );
    let logs = rig.logs();
    let endpoint = format!("/wpush/slot{}", rig.slot.0);
    for secret in [subscription.as_str(), endpoint.as_str(), &vapid[30..70]] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }
}
