//! The push lifecycle of a call on the real Asterisk: when the caller hangs up while a
//! phone is being woken, the Android device gets an FCM `call_cancelled` data message,
//! and the iOS device gets no second VoIP push (Apple forbids VoIP pushes that report no
//! call) — only, where configured, the "missed call" alert on the app's own topic.

use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::{TestDevice, TestExtension, TestFcm};
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::CallerEnd;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Calls the slot's phone 1, waits for the first APNs push at `apns`, and has the caller
/// give up (CANCEL) while nobody has registered. Returns the push's body.
async fn call_and_give_up(rig: &Rig, apns: &ApnsServer) -> serde_json::Value {
    let mut call = rig.call(&rig.phone_number(1), CallerEnd::Cancels { after_ms: 1500 });
    let woken = rig.unwrap(apns.wait_for(1, SECS(15)).await);
    rig.finish(&mut call, SECS(30)).await;
    woken[0].body.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_while_phones_wake_cancels_on_fcm_and_sends_apns_nothing() {
    let mut rig = Rig::asterisk(22, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);
    let fcm_token = "e22Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZ-lifecycle_slot22".to_owned();
    let apns_token = "22ab".repeat(16);

    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    let config = rig
        .config()
        .fcm(&fcm, &fcm_server.endpoint(), &fcm_server.token_uri())
        .extension(
            TestExtension::new(&ext, "20s")
                .device(TestDevice::apns(&apns_token))
                .device(TestDevice::fcm(&fcm_token)),
        );
    rig.start(config).await;
    // Nobody registers: both phones are still waking when the caller gives up.
    let woken = call_and_give_up(&rig, &rig.apns_server).await;
    let call_id = woken["call_id"].as_str().unwrap().to_owned();

    let messages = rig.unwrap(fcm_server.wait_for(2, SECS(15)).await);
    assert_eq!(messages[0].data["type"], "incoming_call");
    assert_eq!(messages[1].data["type"], "call_cancelled");
    assert_eq!(messages[1].data["reason"], "caller_hung_up");
    assert_eq!(messages[1].data["call_id"], call_id.as_str());
    assert_eq!(messages[1].token, fcm_token);
    // pushwake decided not to send APNs anything for the end of the call…
    let line = rig.wait_log("push not sent", SECS(5)).await;
    assert!(
        line.contains("apns carries no push for an ended call"),
        "{line}"
    );
    // …and APNs indeed got exactly the one wake-up push.
    assert_eq!(
        rig.apns_server.accepted().len(),
        1,
        "{:?}",
        rig.apns_server.accepted()
    );
    assert!(
        rig.apns_server.rejected().is_empty(),
        "{:?}",
        rig.apns_server.rejected()
    );
    rig.assert_clean().await;
}

/// An iOS device registered from a development build, with a regular notification token:
/// its VoIP push goes to the sandbox host, and when the caller gives up it gets the
/// "missed call" alert there, on the app's own topic — still no VoIP push for the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_build_is_woken_through_the_sandbox_and_told_of_the_missed_call() {
    const BUNDLE: &str = "com.example.phone";
    let mut rig = Rig::asterisk(26, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);
    let voip_token = "26ab".repeat(16);
    let alert_token = "26cd".repeat(16);

    // The rig's APNs server is the production host.
    let sandbox = ApnsServer::start(rig.apns.expectations()).await.unwrap();
    sandbox.bind_token(&alert_token, BUNDLE);
    let config = rig
        .config()
        .apns_option("alert_topic", BUNDLE)
        .apns_option("sandbox_endpoint", &sandbox.endpoint())
        .extension(
            TestExtension::new(&ext, "20s").device(
                TestDevice::apns(&voip_token)
                    .with("environment", "development")
                    .with("alert_token", &alert_token),
            ),
        );
    rig.start(config).await;
    let woken = call_and_give_up(&rig, &sandbox).await;
    let call_id = woken["call_id"].as_str().unwrap().to_owned();

    let pushes = rig.unwrap(sandbox.wait_for(2, SECS(15)).await);
    assert_eq!(pushes[0].token, voip_token);
    assert_eq!(pushes[0].headers["apns-push-type"], "voip");
    let alert = &pushes[1];
    assert_eq!(alert.token, alert_token);
    assert_eq!(alert.headers["apns-push-type"], "alert");
    assert_eq!(alert.headers["apns-topic"], BUNDLE);
    assert_eq!(alert.body["type"], "call_cancelled");
    assert_eq!(alert.body["reason"], "caller_hung_up");
    assert_eq!(alert.body["call_id"], call_id.as_str());
    assert_eq!(alert.body["aps"]["alert"]["title"], "Missed call");
    // Nothing went to the production host, and nothing was refused anywhere.
    let production = &rig.apns_server;
    assert!(
        production.accepted().is_empty() && production.rejected().is_empty(),
        "production got {:?} / {:?}",
        production.accepted(),
        production.rejected()
    );
    assert!(sandbox.rejected().is_empty(), "{:?}", sandbox.rejected());
    rig.assert_clean().await;
    // The warm-up opened the sandbox connection at start (a device needs it).
    assert_eq!(sandbox.connections(), 1);
}
