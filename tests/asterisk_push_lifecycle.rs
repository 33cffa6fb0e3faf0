//! The push lifecycle of a call on the real Asterisk: when the caller hangs up while a
//! phone is being woken, the Android device gets an FCM `call_cancelled` data message,
//! and the iOS device gets no second push (Apple forbids VoIP pushes that report no call).

use std::path::PathBuf;
use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::daemon::{
    write_config_with_fcm, Daemon, FcmPart, TestApns, TestExtension, TestFcm,
};
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::sipp::{CallerEnd, SippRun};
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;

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
    let devices = [(ext.clone(), fcm_token.clone())];
    let config = write_config_with_fcm(
        dir.path(),
        &pbx,
        &slot.app(),
        &apns,
        &apns_server.endpoint(),
        &[TestExtension {
            number: ext.clone(),
            ring_timeout: "20s".into(),
            tokens: vec![apns_token.clone()],
        }],
        &FcmPart {
            fcm: &fcm,
            endpoint: &fcm_server.endpoint(),
            token_uri: &fcm_server.token_uri(),
            devices: &devices,
        },
    )
    .unwrap();
    let daemon = Daemon::start(&PathBuf::from(env!("CARGO_BIN_EXE_pushwake")), &config)
        .await
        .unwrap();

    // Nobody registers: both phones are still waking when the caller gives up.
    let mut call = SippRun::caller(
        &pbx.sip,
        &slot.caller(),
        &ext,
        slot.port(0),
        CallerEnd::Cancels { after_ms: 1500 },
    )
    .unwrap();
    let woken = apns_server
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.logs()));
    let call_id = woken[0].body["call_id"].as_str().unwrap().to_owned();
    if let Err(e) = call.finish(SECS(30)).await {
        panic!("{e}\npushwake log:\n{}", daemon.logs());
    }

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
