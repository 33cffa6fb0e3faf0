//! End to end on the real Asterisk 22 (started by `scripts/asterisk-up`) with an Android
//! phone: the extension's one device is an FCM device, the local FCM server issues the
//! OAuth2 access token and receives the data message, and the real `pushwake` binary
//! dials the phone when it registers. Test slot 19.

use std::path::PathBuf;
use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension, TestFcm};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::sipp::{CallerEnd, Phone, SippRun};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 19;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushwake"))
}

/// An FCM registration token of the shape Android apps get (instance id, `:`, `APA91b…`).
fn fcm_token(slot: Slot) -> String {
    format!(
        "e{}Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_slot{}-wake-me_up",
        slot.0, slot.0
    )
}

fn phone_port(slot: Slot) -> u16 {
    slot.port(3)
}

fn register_port(slot: Slot) -> u16 {
    slot.port(13)
}

async fn register(pbx: &TestAsterisk, slot: Slot, expires: u32) {
    SippRun::register(
        &pbx.sip,
        &slot.phone(1),
        register_port(slot),
        phone_port(slot),
        expires,
        &fcm_token(slot),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_android_phone_gets_an_fcm_data_message_registers_and_answers() {
    let slot = Slot::new(SLOT);
    let pbx = TestAsterisk::connect().await.unwrap();
    // Whatever an earlier run left registered goes first: the phone must be asleep.
    register(&pbx, slot, 0).await;
    let ext = slot.phone(1);

    let fcm = TestFcm::generate();
    let server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    // [apns] is configured too; it must get nothing.
    let apns = TestApns::generate();
    let apns_server = ApnsServer::start(apns.expectations()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new(dir.path(), &pbx, &slot.app())
        .apns(&apns, &apns_server.endpoint())
        .fcm(&fcm, &server.endpoint(), &server.token_uri())
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::fcm(fcm_token(slot))))
        .write()
        .unwrap();
    let daemon = Daemon::start(&binary(), &config).await.unwrap();
    // Warmed up at start: the access token is there before the first call.
    daemon
        .wait_log("FCM access token obtained", SECS(10))
        .await
        .unwrap();

    let mut phone = SippRun::phone(
        phone_port(slot),
        Phone::Answer {
            answer_after_ms: 200,
        },
    )
    .await
    .unwrap();
    let mut call = SippRun::caller(
        &pbx.sip,
        &slot.caller(),
        &ext,
        slot.port(0),
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 1500 },
    )
    .unwrap();

    let messages = server
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\npushwake log:\n{}", daemon.logs()));
    let message = &messages[0];
    assert_eq!(message.token, fcm_token(slot));
    assert_eq!(message.data["type"], "incoming_call");
    assert_eq!(message.data["version"], "1");
    assert_eq!(message.data["extension"], ext.as_str());
    assert_eq!(message.data["caller_number"], slot.caller().as_str());
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
    register(&pbx, slot, 120).await;
    if let Err(e) = call.finish(SECS(30)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }
    if let Err(e) = phone.finish(SECS(30)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }
    let seen = phone
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
        });
    assert_eq!(seen, call_id, "the INVITE carries the message's call id");
    daemon.wait_log("caller connected", SECS(5)).await.unwrap();
    if let Err(e) = pbx.wait_clean(slot, SECS(10)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }

    assert_eq!(server.token_requests(), 1, "one access token, reused");
    assert!(server.refused().is_empty(), "{:?}", server.refused());
    assert!(
        apns_server.accepted().is_empty() && apns_server.rejected().is_empty(),
        "no APNs push for an FCM-only extension"
    );
    // No secret in the daemon's log: not the device token, not the access token, not
    // the private key.
    let logs = daemon.logs();
    let key_line = fcm.key.private_pem.lines().nth(5).unwrap();
    let mut secrets = vec![fcm_token(slot), key_line.to_owned()];
    secrets.extend(server.issued_tokens());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} in the log:\n{logs}"
        );
    }
    register(&pbx, slot, 0).await;
}
