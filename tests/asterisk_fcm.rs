//! End to end on the real Asterisk 22 (started by `scripts/asterisk-up`) with an Android
//! phone: the extension's one device is an FCM device, the local FCM server issues the
//! OAuth2 access token and receives the data message, and the real `pushwake` binary
//! dials the phone when it registers. Test slot 19.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension, TestFcm};
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 19;

/// An FCM registration token of the shape Android apps get (instance id, `:`, `APA91b…`).
fn fcm_token(slot: Slot) -> String {
    format!(
        "e{}Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_slot{}-wake-me_up",
        slot.0, slot.0
    )
}

/// The phone (phone 1, on the ports of its second device) registers for `expires` s.
async fn register(rig: &Rig, expires: u32) {
    rig.register(1, 2, expires, &fcm_token(rig.slot)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_android_phone_gets_an_fcm_data_message_registers_and_answers() {
    let mut rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    // Whatever an earlier run left registered goes first: the phone must be asleep.
    register(&rig, 0).await;
    let ext = rig.phone_number(1);

    let fcm = TestFcm::generate();
    let server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    // [apns] is configured too (the rig's APNs server); it must get nothing.
    let config = rig
        .config()
        .fcm(&fcm, &server.endpoint(), &server.token_uri())
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::fcm(fcm_token(rig.slot))));
    rig.start(config).await;
    // Warmed up at start: the access token is there before the first call.
    rig.wait_log("FCM access token obtained", SECS(10)).await;

    let mut phone = rig
        .phone(
            1,
            2,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 });

    let messages = rig.unwrap(server.wait_for(1, SECS(15)).await);
    let message = &messages[0];
    assert_eq!(message.token, fcm_token(rig.slot));
    assert_eq!(message.data["type"], "incoming_call");
    assert_eq!(message.data["version"], "1");
    assert_eq!(message.data["extension"], ext.as_str());
    assert_eq!(message.data["caller_number"], rig.caller().as_str());
    assert_eq!(message.android["priority"], "HIGH");
    let ttl: u64 = message.android["ttl"]
        .as_str()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("ttl {}", message.android["ttl"]));
    assert!(
        (1..=20).contains(&ttl),
        "ttl {ttl}s within the 20 s ring timeout"
    );
    assert!(message.body["message"].get("notification").is_none());
    let call_id = message.data["call_id"].clone();
    assert_eq!(call_id.len(), 36, "a UUID: {call_id}");

    // Only now does the woken phone register; pushwake must dial it at once.
    register(&rig, 120).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    let seen = call_id_seen_by(&phone);
    assert_eq!(seen, call_id, "the INVITE carries the message's call id");
    rig.wait_log("caller connected", SECS(5)).await;
    rig.assert_clean().await;

    assert_eq!(server.token_requests(), 1, "one access token, reused");
    assert!(server.refused().is_empty(), "{:?}", server.refused());
    assert!(
        rig.apns_server.accepted().is_empty() && rig.apns_server.rejected().is_empty(),
        "no APNs push for an FCM-only extension"
    );
    // No secret in the daemon's log: not the device token, not the access token, not
    // the private key.
    let logs = rig.logs();
    let key_line = fcm.key.private_pem.lines().nth(5).unwrap();
    let mut secrets = vec![fcm_token(rig.slot), key_line.to_owned()];
    secrets.extend(server.issued_tokens());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} in the log:\n{logs}"
        );
    }
    register(&rig, 0).await;
}
