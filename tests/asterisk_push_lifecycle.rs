//! The push lifecycle of a call on the real Asterisk: when the caller hangs up while a
//! phone is being woken, the Android device gets an FCM `call_cancelled` data message,
//! and the iOS device gets no second VoIP push (Apple forbids VoIP pushes that report no
//! call) — only, where configured, the "missed call" alert on the app's own topic.

use std::path::PathBuf;
use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension, TestFcm};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::sipp::{CallerEnd, SippRun};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Starts the daemon, calls the extension, waits for the first APNs push at `apns`, and
/// has the caller give up (CANCEL) while nobody has registered. Returns the daemon and the
/// push's body.
async fn call_and_give_up(
    pbx: &TestAsterisk,
    slot: Slot,
    ext: &str,
    config: &std::path::Path,
    apns: &ApnsServer,
) -> (Daemon, serde_json::Value) {
    let daemon = Daemon::start(&PathBuf::from(env!("CARGO_BIN_EXE_pushwake")), config)
        .await
        .unwrap();
    let mut call = SippRun::caller(
        &pbx.sip,
        &slot.caller(),
        ext,
        slot.port(0),
        CallerEnd::Cancels { after_ms: 1500 },
    )
    .unwrap();
    let woken = apns
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.logs()));
    if let Err(e) = call.finish(SECS(30)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }
    (daemon, woken[0].body.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_while_phones_wake_cancels_on_fcm_and_sends_apns_nothing() {
    let slot = Slot::new(22);
    let pbx = TestAsterisk::connect().await.unwrap();
    let ext = slot.phone(1);
    let fcm_token = "e22Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZ-lifecycle_slot22".to_owned();
    let apns_token = "22ab".repeat(16);

    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    let apns = TestApns::generate();
    let apns_server = ApnsServer::start(apns.expectations()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new(dir.path(), &pbx, &slot.app())
        .apns(&apns, &apns_server.endpoint())
        .fcm(&fcm, &fcm_server.endpoint(), &fcm_server.token_uri())
        .extension(
            TestExtension::new(&ext, "20s")
                .device(TestDevice::apns(&apns_token))
                .device(TestDevice::fcm(&fcm_token)),
        )
        .write()
        .unwrap();
    // Nobody registers: both phones are still waking when the caller gives up.
    let (daemon, woken) = call_and_give_up(&pbx, slot, &ext, &config, &apns_server).await;
    let call_id = woken["call_id"].as_str().unwrap().to_owned();

    let messages = fcm_server
        .wait_for(2, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\npushwake log:\n{}", daemon.logs()));
    assert_eq!(messages[0].data["type"], "incoming_call");
    assert_eq!(messages[1].data["type"], "call_cancelled");
    assert_eq!(messages[1].data["reason"], "caller_hung_up");
    assert_eq!(messages[1].data["call_id"], call_id.as_str());
    assert_eq!(messages[1].token, fcm_token);
    // pushwake decided not to send APNs anything for the end of the call…
    let line = daemon.wait_log("push not sent", SECS(5)).await.unwrap();
    assert!(
        line.contains("apns carries no push for an ended call"),
        "{line}"
    );
    // …and APNs indeed got exactly the one wake-up push.
    assert_eq!(
        apns_server.accepted().len(),
        1,
        "{:?}",
        apns_server.accepted()
    );
    assert!(
        apns_server.rejected().is_empty(),
        "{:?}",
        apns_server.rejected()
    );
    if let Err(e) = pbx.wait_clean(slot, SECS(10)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }
}

/// An iOS device registered from a development build, with a regular notification token:
/// its VoIP push goes to the sandbox host, and when the caller gives up it gets the
/// "missed call" alert there, on the app's own topic — still no VoIP push for the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_build_is_woken_through_the_sandbox_and_told_of_the_missed_call() {
    const BUNDLE: &str = "com.example.phone";
    let slot = Slot::new(26);
    let pbx = TestAsterisk::connect().await.unwrap();
    let ext = slot.phone(1);
    let voip_token = "26ab".repeat(16);
    let alert_token = "26cd".repeat(16);

    let apns = TestApns::generate();
    let production = ApnsServer::start(apns.expectations()).await.unwrap();
    let sandbox = ApnsServer::start(apns.expectations()).await.unwrap();
    sandbox.bind_token(&alert_token, BUNDLE);
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new(dir.path(), &pbx, &slot.app())
        .apns(&apns, &production.endpoint())
        .apns_option("alert_topic", BUNDLE)
        .apns_option("sandbox_endpoint", &sandbox.endpoint())
        .extension(
            TestExtension::new(&ext, "20s").device(
                TestDevice::apns(&voip_token)
                    .with("environment", "development")
                    .with("alert_token", &alert_token),
            ),
        )
        .write()
        .unwrap();
    let (daemon, woken) = call_and_give_up(&pbx, slot, &ext, &config, &sandbox).await;
    let call_id = woken["call_id"].as_str().unwrap().to_owned();

    let pushes = sandbox
        .wait_for(2, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\npushwake log:\n{}", daemon.logs()));
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
    assert!(
        production.accepted().is_empty() && production.rejected().is_empty(),
        "production got {:?} / {:?}",
        production.accepted(),
        production.rejected()
    );
    assert!(sandbox.rejected().is_empty(), "{:?}", sandbox.rejected());
    if let Err(e) = pbx.wait_clean(slot, SECS(10)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }
    // The warm-up opened the sandbox connection at start (a device needs it).
    assert_eq!(sandbox.connections(), 1);
    drop(daemon);
}
