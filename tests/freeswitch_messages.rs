//! Messages for sleeping phones on FreeSWITCH (`[messages]`), against the Event Socket
//! stand-in. FreeSWITCH fires a `MESSAGE` event for a SIP MESSAGE (no capture: the
//! header names are sofia_presence.c's), pushwake sends with mod_sms's
//! `SMS::SEND_MESSAGE` (blocking, so that sofia waits for the phone's answer) and learns
//! the phone's answer from the `SMS::DELIVERY_REPORT` that copies its headers. So here,
//! unlike on Asterisk, a phone's refusal is known: the message is kept and pushed, and
//! sent again at the next registration.
//!
//! Slot 35's TCP ports 16 and 17.

use std::path::Path;
use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::esl::{message_event, Received};
use pushwake_testkit::freeswitch::{register_of, FreeSwitchRig};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 35;
const CONTACT: &str = "sip:101@127.0.0.1:5091;transport=UDP";
const FROM: &str = "\"Alice Example\" <sip:200@127.0.0.1>;tag=Nm4Qe1";

fn alert_token() -> String {
    "ce".repeat(32)
}

/// The stand-in with extension 101's iOS device (it has an alert token) and
/// `[messages]`.
async fn rig(port: u16) -> FreeSwitchRig {
    let filter =
        std::env::var("PUSHWAKE_TEST_LOG").unwrap_or_else(|_| "info,pushwake=debug".into());
    let switch = FreeSwitchRig::start_configured(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        SLOT,
        port,
        vec![TestExtension::new("101", "20s")
            .device(TestDevice::apns("36".repeat(32)).with("alert_token", &alert_token()))],
        "[messages]\n",
        &[("PUSHWAKE_LOG", &filter)],
    )
    .await;
    switch.apns.bind_token(&alert_token(), "com.example.phone");
    switch
}

/// The `n`-th (from 1) `SMS::SEND_MESSAGE` pushwake fired, once it came.
async fn nth_send(switch: &FreeSwitchRig, n: usize) -> Received {
    let sends = switch
        .server
        .wait_commands(n, SECS(10), |r| {
            r.command == "sendevent CUSTOM"
                && r.header("Event-Subclass") == Some("SMS::SEND_MESSAGE")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no {n} SMS::SEND_MESSAGE; commands: {:?}\nlog:\n{}",
                switch.server.commands(),
                switch.daemon.logs()
            )
        });
    sends[n - 1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_phone_refuses_is_pushed_and_sent_again_at_its_registration() {
    let switch = rig(16).await;
    // The first send: the phone is registered but answers 500; the second (after its
    // next registration): 200.
    switch.server.report_messages(&[(false, 500), (true, 200)]);
    switch.server.push_event(&message_event(
        "101",
        FROM,
        "text/plain",
        "Hi from FreeSWITCH",
    ));

    let first = nth_send(&switch, 1).await;
    assert_eq!(first.header("dest_proto"), Some("sip"));
    assert_eq!(first.header("to"), Some("101@127.0.0.1"));
    assert_eq!(first.header("from"), Some("200@127.0.0.1"));
    assert_eq!(first.header("type"), Some("text/plain"));
    assert_eq!(first.header("blocking"), Some("true"));
    assert_eq!(first.body.as_deref(), Some("Hi from FreeSWITCH"));
    let id = first
        .header("sip_h_X-Pushwake-Message-Id")
        .expect("the message id travels as a SIP header")
        .to_owned();

    // Refused: kept, and the phone's app is told (an alert, never a VoIP push).
    let pushes = switch
        .apns
        .wait_for(1, SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", switch.daemon.logs()));
    assert_eq!(pushes[0].headers["apns-push-type"], "alert");
    assert_eq!(pushes[0].body["type"], "message_received");
    assert_eq!(pushes[0].body["message_id"], id.as_str());
    assert_eq!(pushes[0].body["sender_number"], "200");
    assert_eq!(pushes[0].body["sender_name"], "Alice Example");
    switch
        .daemon
        .wait_log("the phone answered 500", SECS(5))
        .await
        .unwrap();

    // The phone registers again: the same message goes out, and this time it is taken.
    switch.server.push_event(&register_of("101", CONTACT));
    let second = nth_send(&switch, 2).await;
    assert_eq!(
        second.header("sip_h_X-Pushwake-Message-Id"),
        Some(id.as_str())
    );
    assert_eq!(second.body.as_deref(), Some("Hi from FreeSWITCH"));
    switch
        .daemon
        .wait_log("message delivered", SECS(10))
        .await
        .unwrap();

    // Delivered once: a registration sends nothing more, and the next message (to the
    // registered phone) goes out at once, without a push.
    switch.server.report_messages(&[(true, 200)]);
    switch.server.push_event(&register_of("101", CONTACT));
    switch
        .server
        .push_event(&message_event("101", FROM, "text/plain", "Second"));
    let third = nth_send(&switch, 3).await;
    assert_eq!(third.body.as_deref(), Some("Second"));
    switch
        .daemon
        .wait_log_count("message delivered", 2, SECS(10))
        .await
        .unwrap();
    assert_eq!(switch.apns.accepted().len(), 1, "no push for the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_nobody_registered_waits_and_one_for_another_extension_is_left_alone() {
    let switch = rig(17).await;
    // Nobody registered: sofia finds no recipient (code 0).
    switch.server.report_messages(&[(false, 0)]);
    switch
        .server
        .push_event(&message_event("101", FROM, "text/plain", "Anyone there?"));
    nth_send(&switch, 1).await;
    switch
        .daemon
        .wait_log("no phone registered for the message: it waits", SECS(10))
        .await
        .unwrap();
    switch
        .apns
        .wait_for(1, SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", switch.daemon.logs()));
    // A message for an extension pushwake does not serve is left to FreeSWITCH.
    switch
        .server
        .push_event(&message_event("555", FROM, "text/plain", "not ours"));
    switch
        .daemon
        .wait_log("not push-enabled: left to the PBX extension=555", SECS(10))
        .await
        .unwrap();
    assert_eq!(
        switch
            .server
            .commands()
            .iter()
            .filter(|c| c.starts_with("sendevent"))
            .count(),
        1
    );
}
