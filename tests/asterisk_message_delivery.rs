//! Messages for sleeping phones, end to end on the real Asterisk (`[messages]`): a sipp
//! sender's SIP MESSAGE to a push-enabled extension reaches pushwake through ARI
//! (`TextMessageReceived`; the test PBX's message context is the shipped recipe's, so
//! the dialplan leaves it alone), is kept in the store, pushed (an APNs alert on the
//! app's own topic to its alert token, an FCM normal-priority data message), and sent
//! to the phone with ARI `sendMessage` once the phone registers.
//!
//! - a pushwake restart between the push and the REGISTER loses nothing, and the
//!   phone gets the message once, with its original sender; a message to the phone
//!   once it is registered is sent at once, without a push;
//! - with `confirmation = "app"`, a phone that answers the MESSAGE 500 (its app never
//!   confirms) gets it again at its next registration, until the app confirms it
//!   through the device API;
//! - a body that is not text (Asterisk answers 415), one over `max_body_bytes`, and one
//!   too large for Asterisk itself (it passes on an empty body) are refused and never
//!   pushed; a retransmission (the same Call-ID and CSeq) is kept once.
//!
//! Slots 31, 32 and 33.

use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension, TestFcm, API_ADMIN};
use pushwake_testkit::fcm::FcmServer;
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{OutgoingMessage, Phone};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// The app's own topic, where message alerts go.
const BUNDLE: &str = "com.example.phone";

/// A rig whose phone 1 is push-enabled with an iOS device (a VoIP token and an alert
/// token) and, where `fcm` is given, an Android one; `messages` is the `[messages]`
/// section's body. Phone 1 is not registered.
async fn rig(
    slot: u8,
    messages: &str,
    fcm: Option<(&TestFcm, &FcmServer)>,
    http: Option<&str>,
) -> (Rig, String) {
    rig_with_metrics(slot, messages, fcm, http, None).await
}

/// [`rig`], with `[metrics]` on `metrics` where given.
async fn rig_with_metrics(
    slot: u8,
    messages: &str,
    fcm: Option<(&TestFcm, &FcmServer)>,
    http: Option<&str>,
    metrics: Option<&str>,
) -> (Rig, String) {
    let mut rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);
    let alert = alert_token(slot);
    rig.apns_server.bind_token(&alert, BUNDLE);
    let mut extension = TestExtension::new(&ext, "20s")
        .device(TestDevice::apns(format!("{slot}ab").repeat(16)).with("alert_token", &alert));
    let mut config = rig.config().apns_option("alert_topic", BUNDLE);
    if let Some((fcm, server)) = fcm {
        config = config.fcm(fcm, &server.endpoint(), &server.token_uri());
        extension = extension.device(TestDevice::fcm(fcm_token(slot)));
    }
    if let Some(listen) = http {
        config = config
            .http(listen, "https://pbx.example.com")
            .api_tokens(&format!("{API_ADMIN}\n"));
    }
    if let Some(listen) = metrics {
        config = config.metrics(listen);
    }
    let config = config
        .raw(&format!("[messages]\n{messages}"))
        .extension(extension);
    rig.register_contact(1, 1, 0, "").await;
    rig.start(config).await;
    rig.wait_log("keeping messages for sleeping phones", SECS(10))
        .await;
    (rig, ext)
}

fn alert_token(slot: u8) -> String {
    format!("{slot}cd").repeat(16)
}

fn fcm_token(slot: u8) -> String {
    format!("fcm-message-token-{slot}:APA91b-test")
}

/// The number of log lines holding `needle`.
fn count(rig: &Rig, needle: &str) -> usize {
    rig.logs().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_sleeping_phone_is_pushed_kept_across_a_restart_and_delivered_once() {
    const SLOT: u8 = 31;
    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    let (mut rig, ext) = rig(SLOT, "", Some((&fcm, &fcm_server)), None).await;
    let caller = rig.caller();
    rig.send_message(&ext, &OutgoingMessage::text("Hello, are you awake?"))
        .await;

    // The iOS device gets an alert on the app's own topic (never a VoIP push).
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    let alert = &pushes[0];
    assert_eq!(alert.token, alert_token(SLOT));
    assert_eq!(alert.headers["apns-push-type"], "alert");
    assert_eq!(alert.headers["apns-topic"], BUNDLE);
    assert_eq!(alert.body["type"], "message_received");
    assert_eq!(alert.body["extension"], ext.as_str());
    assert_eq!(alert.body["sender_number"], caller.as_str());
    assert_eq!(alert.body["sender_name"], "Alice Example");
    assert_eq!(alert.body["preview"], "Hello, are you awake?");
    assert_eq!(alert.body["aps"]["alert"]["title"], "Alice Example");
    assert_eq!(alert.body["aps"]["alert"]["body"], "Hello, are you awake?");
    let message_id = alert.body["message_id"].as_str().unwrap().to_owned();
    // The Android device gets a normal-priority data message with the same fields.
    let fcm_messages = rig.unwrap(fcm_server.wait_for(1, SECS(15)).await);
    let data = &fcm_messages[0].data;
    assert_eq!(data["type"], "message_received");
    assert_eq!(data["message_id"], message_id);
    assert_eq!(data["sender_number"], caller);
    assert_eq!(fcm_messages[0].android["priority"], "NORMAL");

    // pushwake restarts before the phone wakes: the message is read back from the store.
    rig.daemon_mut().kill().await;
    rig.restart().await;
    rig.wait_log("messages kept for sleeping phones read back", SECS(15))
        .await;

    // The woken phone registers and gets the message, from its original sender.
    let mut phone = rig.phone(1, 1, Phone::TakesMessage { answer: 200 }).await;
    rig.register_contact(1, 1, 120, "").await;
    rig.finish(&mut phone, SECS(15)).await;
    assert_eq!(
        phone.logged("Body").as_deref(),
        Some("Hello, are you awake?"),
        "{}",
        phone.log()
    );
    let from = phone.logged("From").unwrap_or_default();
    assert!(
        from.contains("Alice Example") && from.contains(&caller),
        "the original sender: {from}"
    );
    assert_eq!(phone.logged("X-Pushwake-Message-Id"), Some(message_id));
    rig.wait_log("message delivered", SECS(10)).await;

    // Delivered once: the phone registers again and then takes the next MESSAGE that
    // comes, which must be a new one, sent at once (the phone is reachable) without a
    // push.
    let mut phone = rig.phone(1, 1, Phone::TakesMessage { answer: 200 }).await;
    rig.register_contact(1, 1, 120, "").await;
    rig.send_message(&ext, &OutgoingMessage::text("And a second one"))
        .await;
    rig.finish(&mut phone, SECS(15)).await;
    assert_eq!(
        phone.logged("Body").as_deref(),
        Some("And a second one"),
        "{}",
        phone.log()
    );
    rig.unwrap(
        rig.daemon()
            .wait_log_count("message delivered", 2, SECS(10))
            .await,
    );
    assert_eq!(
        rig.apns_server.accepted().len(),
        1,
        "no push for the second"
    );
    assert_eq!(fcm_server.accepted().len(), 1, "no push for the second");
    assert!(rig.apns_server.rejected().is_empty() && fcm_server.refused().is_empty());
    // No body in the log above debug.
    for line in rig.logs().lines() {
        let loud = [" INFO ", " WARN ", " ERROR "]
            .iter()
            .any(|l| line.contains(l));
        assert!(
            !(loud && (line.contains("are you awake") || line.contains("a second one"))),
            "a message body in the log: {line}"
        );
    }
    rig.register_contact(1, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_phone_refuses_is_sent_again_at_its_next_registration_until_confirmed() {
    const SLOT: u8 = 32;
    let rig_slot = pushwake_testkit::slot::Slot::new(SLOT);
    let listen = format!("127.0.0.1:{}", rig_slot.port(1));
    let (rig, ext) = rig(
        SLOT,
        "confirmation = \"app\"\nconfirm_within = \"2s\"\n",
        None,
        Some(&listen),
    )
    .await;
    // The phone is awake and registered, but refuses the MESSAGE.
    let mut phone = rig.phone(1, 1, Phone::TakesMessage { answer: 500 }).await;
    rig.register_contact(1, 1, 120, "").await;
    rig.send_message(&ext, &OutgoingMessage::text("Are you there?"))
        .await;
    rig.finish(&mut phone, SECS(15)).await;
    assert!(
        phone.messages().contains("SIP/2.0 500 "),
        "{}",
        phone.messages()
    );
    let first_id = phone.logged("X-Pushwake-Message-Id").unwrap_or_default();
    // Nobody confirmed it: once confirm_within is over it is pushed, and kept.
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].body["type"], "message_received");
    assert_eq!(pushes[0].body["message_id"], first_id.as_str());
    assert_eq!(count(&rig, "message delivered"), 0);

    // The phone's next registration (it went away, and comes back) gets it again.
    rig.register_contact(1, 1, 0, "").await;
    let mut phone = rig.phone(1, 1, Phone::TakesMessage { answer: 200 }).await;
    rig.register_contact(1, 1, 120, "").await;
    rig.finish(&mut phone, SECS(15)).await;
    assert_eq!(
        phone.logged("Body").as_deref(),
        Some("Are you there?"),
        "{}",
        phone.log()
    );
    assert_eq!(
        phone.logged("X-Pushwake-Message-Id"),
        Some(first_id.clone())
    );

    // The app confirms it through the device API: removed, once.
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/v1/extensions/{ext}/messages/{first_id}/delivered");
    let confirmed = client
        .post(&url)
        .bearer_auth(API_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 204, "{:?}", confirmed.text().await);
    rig.wait_log("message delivered", SECS(10)).await;
    let again = client
        .post(&url)
        .bearer_auth(API_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let unauthorized = client.post(&url).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(rig.apns_server.accepted().len(), 1, "pushed once");
    rig.register_contact(1, 1, 0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_and_a_retransmission_is_kept_once() {
    const SLOT: u8 = 33;
    let metrics = format!(
        "127.0.0.1:{}",
        pushwake_testkit::slot::Slot::new(SLOT).port(2)
    );
    let (rig, ext) =
        rig_with_metrics(SLOT, "max_body_bytes = 64\n", None, None, Some(&metrics)).await;
    // Not text: Asterisk answers 415 itself, and pushwake never sees it.
    rig.send_message(
        &ext,
        &OutgoingMessage {
            content_type: "application/octet-stream".into(),
            expect: 415,
            ..OutgoingMessage::text("binary")
        },
    )
    .await;
    // Over max_body_bytes: Asterisk has answered 202; pushwake refuses it and says why.
    rig.send_message(&ext, &OutgoingMessage::text(&"x".repeat(100)))
        .await;
    let refused = rig.wait_log("a message was refused", SECS(10)).await;
    assert!(refused.contains("more than the 64 allowed"), "{refused}");
    // Too large for Asterisk (1,024 bytes or more): it passes on an empty body.
    rig.send_message(&ext, &OutgoingMessage::text(&"y".repeat(1500)))
        .await;
    rig.unwrap(
        rig.daemon()
            .wait_log_count("a message was refused", 2, SECS(10))
            .await,
    );
    assert!(
        rig.logs()
            .contains("the PBX passed on an empty body for the 150"),
        "{}",
        rig.logs()
    );
    // A good one, sent twice with the same Call-ID and CSeq: kept and pushed once.
    let message = OutgoingMessage::text("short and sweet");
    rig.send_message(&ext, &message).await;
    rig.send_message(&ext, &message).await;
    rig.wait_log("a retransmitted message: kept once", SECS(10))
        .await;
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].body["preview"], "short and sweet");
    assert_eq!(
        count(&rig, "message kept for the phone"),
        1,
        "{}",
        rig.logs()
    );
    assert_eq!(count(&rig, "a message was refused"), 2, "{}", rig.logs());
    assert_eq!(
        rig.apns_server.accepted().len(),
        1,
        "only the good one is pushed"
    );
    // The metrics count them, by outcome, and name no extension or sender. (The gauge
    // is refreshed every second and the push counted once its answer is read: scrape
    // until they show.)
    let wanted = [
        "pushwake_messages_total{outcome=\"kept\"} 1",
        "pushwake_messages_total{outcome=\"refused\"} 2",
        "pushwake_messages_total{outcome=\"duplicate\"} 1",
        "pushwake_messages_waiting 1",
        "pushwake_pushes_total{provider=\"apns\",kind=\"message\",verdict=\"delivered\"} 1",
    ];
    let url = format!("http://{metrics}/metrics");
    let text = pushwake_testkit::wait_until("the message metrics", SECS(10), || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        wanted
            .iter()
            .all(|line| text.lines().any(|l| l == *line))
            .then_some(text)
    })
    .await;
    let text = match text {
        Ok(text) => text,
        Err(_) => reqwest::get(&url).await.unwrap().text().await.unwrap(),
    };
    for line in wanted {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        !text.contains(&format!("\"{ext}\"")) && !text.contains(&rig.caller()),
        "{text}"
    );
}
