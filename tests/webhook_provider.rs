//! The real `WebhookPushkin` against the local webhook server over real HTTP/1.1: every
//! event's signature is verified with the shared secret (aws-lc-rs hmac, not pushwake's
//! code), its timestamp checked, its body parsed. Replies are scripted per device.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pushwake::push::webhook::{WebhookPushkin, WebhookSecret, WebhookSettings};
use pushwake::push::{EndReason, PushKind, PushService, PushVerdict, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_testkit::webhook::{generate_secret, WebhookReply, WebhookServer};
use tokio::time::Instant;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Every log line of pushwake's code in this test process, to check no secret reaches one.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("pushwake=trace"))
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Env {
    server: WebhookServer,
    secret: String,
}

async fn env() -> Env {
    captured_logs();
    let secret = generate_secret();
    let server = WebhookServer::start(secret.as_bytes()).await.unwrap();
    Env { server, secret }
}

impl Env {
    fn pushkin_with(&self, secret: &str, timeout: Duration) -> Arc<WebhookPushkin> {
        Arc::new(
            WebhookPushkin::new(WebhookSettings {
                url: self.server.url(),
                secret: WebhookSecret::from_file_contents(secret.as_bytes()).unwrap(),
                timeout,
            })
            .unwrap(),
        )
    }

    fn service(&self) -> PushService {
        let mut service = PushService::new();
        service.add(self.pushkin_with(&self.secret, SECS(5)));
        service
    }
}

fn token(n: usize) -> String {
    format!("Operator-Device_{n}:Xy")
}

fn device(n: usize) -> Device {
    Device::new(
        pushwake::push::webhook::PLATFORM,
        DeviceToken::new(token(n)),
        format!("101/webhook#{n}"),
    )
}

fn push(n: usize, kind: PushKind) -> WakePush {
    pushwake_testkit::push_server::nth_wake_push(n, kind)
}

#[tokio::test]
async fn a_signed_wakeup_is_delivered_with_the_documented_body() {
    let env = env().await;
    let service = env.service();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verdict = service
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            Instant::now() + SECS(20),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(
        env.server.mistakes().is_empty(),
        "{:?}",
        env.server.mistakes()
    );
    let events = env.server.delivered();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.event, "call.push_wakeup");
    assert_eq!(event.device, token(1), "the device id, case kept");
    assert_eq!(event.version, "HTTP/1.1");
    assert!(event.sent_at >= before && event.sent_at <= before + 2);
    let keys: Vec<&String> = event.body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "event, device, sent_at, call: {keys:?}");
    assert_eq!(event.call["type"], "incoming_call");
    assert_eq!(
        event.call["call_id"],
        "5d7d1c1e-0000-4000-8000-000000000001"
    );
    assert_eq!(event.call["caller_name"], "Alice");
    let expires_at = event.call["expires_at"].as_u64().unwrap();
    assert!(
        expires_at >= event.sent_at + 19 && expires_at <= event.sent_at + 21,
        "expires_at {expires_at} is the end of the ring window"
    );

    // A second push reuses the kept-alive connection.
    let verdict = service
        .send(
            &device(2),
            &push(2, PushKind::IncomingCall),
            Instant::now() + SECS(20),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert_eq!(env.server.connections(), 1);
}

#[tokio::test]
async fn a_wrong_secret_does_not_verify_and_is_a_configuration_error() {
    let env = env().await;
    let mut service = PushService::new();
    service.add(env.pushkin_with(&generate_secret(), SECS(5)));
    let verdict = service
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            Instant::now() + SECS(10),
        )
        .await;
    let PushVerdict::Failed { reason, dead_token } = verdict else {
        panic!("{verdict:?}")
    };
    assert!(!dead_token);
    assert!(reason.contains("webhook 401"), "{reason}");
    assert!(env.server.delivered().is_empty());
    assert_eq!(env.server.mistakes(), vec!["the signature does not verify"]);
}

#[tokio::test]
async fn two_503s_then_200_are_delivered_within_the_window() {
    let env = env().await;
    env.server.script(&token(1), WebhookReply::status(503), 2);
    let started = Instant::now();
    let verdict = env
        .service()
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            started + SECS(10),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    let answers: Vec<u16> = env.server.events().iter().map(|e| e.answered).collect();
    assert_eq!(answers, vec![503, 503, 200]);
    // Each attempt is signed afresh; all verified.
    assert!(env.server.mistakes().is_empty());
    assert!(started.elapsed() < SECS(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let env = env().await;
    env.server.script(
        &token(1),
        WebhookReply {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    let started = Instant::now();
    let verdict = env
        .service()
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            started + SECS(10),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(started.elapsed() >= SECS(1), "{:?}", started.elapsed());
    assert_eq!(env.server.events().len(), 2);
}

#[tokio::test]
async fn gone_is_a_dead_device_after_one_attempt() {
    let env = env().await;
    env.server.script(&token(1), WebhookReply::status(410), 5);
    let verdict = env
        .service()
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            Instant::now() + SECS(10),
        )
        .await;
    assert!(
        matches!(
            verdict,
            PushVerdict::Failed {
                dead_token: true,
                ..
            }
        ),
        "{verdict:?}"
    );
    assert_eq!(env.server.events().len(), 1);
}

#[tokio::test]
async fn bad_request_is_a_configuration_error_not_retried() {
    let env = env().await;
    env.server.script(&token(1), WebhookReply::status(400), 5);
    let verdict = env
        .service()
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            Instant::now() + SECS(10),
        )
        .await;
    let PushVerdict::Failed { reason, dead_token } = verdict else {
        panic!("{verdict:?}")
    };
    assert!(!dead_token);
    assert!(
        reason.contains("webhook 400") && reason.contains("[webhook]"),
        "{reason}"
    );
    assert_eq!(env.server.events().len(), 1);
}

#[tokio::test]
async fn nothing_is_sent_after_the_deadline() {
    let env = env().await;
    env.server
        .script(&token(1), WebhookReply::status(503), 1000);
    let service = env.service();
    let deadline = Instant::now() + SECS(3);
    let verdict = service
        .send(&device(1), &push(1, PushKind::IncomingCall), deadline)
        .await;
    assert!(
        matches!(
            verdict,
            PushVerdict::Failed {
                dead_token: false,
                ..
            }
        ),
        "{verdict:?}"
    );
    assert!(Instant::now() <= deadline + Duration::from_millis(50));
    let sent = env.server.events().len();
    assert!((2..=8).contains(&sent), "{sent} attempts");
    tokio::time::sleep(SECS(1)).await;
    assert_eq!(
        env.server.events().len(),
        sent,
        "an attempt after the deadline"
    );

    // A server slower than the ring window: the attempt is cut at the deadline.
    env.server.set_delay(SECS(10));
    let started = Instant::now();
    let verdict = service
        .send(
            &device(2),
            &push(2, PushKind::IncomingCall),
            started + SECS(2),
        )
        .await;
    assert!(matches!(verdict, PushVerdict::Failed { .. }), "{verdict:?}");
    assert!(started.elapsed() < SECS(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_slow_answer_beyond_the_timeout_is_retried() {
    let env = env().await;
    let mut service = PushService::new();
    service.add(env.pushkin_with(&env.secret, Duration::from_millis(300)));
    env.server.set_delay(Duration::from_millis(600));
    let verdict = service
        .send(
            &device(1),
            &push(1, PushKind::IncomingCall),
            Instant::now() + SECS(2),
        )
        .await;
    let PushVerdict::Failed { reason, .. } = verdict else {
        panic!("{verdict:?}")
    };
    assert!(reason.contains("webhook"), "{reason}");
    // Each attempt was cut at 300 ms and retried.
    let requests = env.server.requests();
    assert!(requests >= 2, "{requests} request(s)");
    assert!(env.server.delivered().is_empty());
}

#[tokio::test]
async fn an_ended_call_is_sent_as_call_cancelled() {
    let env = env().await;
    let pushkin = env.pushkin_with(&env.secret, SECS(5));
    assert!(pushkin
        .carries_call_ended(&device(1), EndReason::CallerHungUp)
        .is_ok());
    let verdict = env
        .service()
        .send(
            &device(1),
            &push(1, PushKind::CallEnded(EndReason::AnsweredElsewhere)),
            Instant::now() + SECS(10),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    let event = env
        .server
        .wait_for_event("call.cancelled", SECS(1))
        .await
        .unwrap();
    assert_eq!(event.call["type"], "call_cancelled");
    assert_eq!(event.call["reason"], "answered_elsewhere");
    assert_eq!(event.device, token(1));
}

#[tokio::test]
async fn no_secret_or_device_id_reaches_logs_or_error_texts() {
    let env = env().await;
    let service = env.service();
    let mut verdicts = Vec::new();
    for (n, status) in [(11, 400), (12, 403), (13, 410), (14, 503)] {
        env.server
            .script(&token(n), WebhookReply::status(status), 100);
        verdicts.push(
            service
                .send(
                    &device(n),
                    &push(n, PushKind::IncomingCall),
                    Instant::now() + SECS(1),
                )
                .await,
        );
    }
    // Nobody listening.
    let mut closed = PushService::new();
    closed.add(Arc::new(
        WebhookPushkin::new(WebhookSettings {
            url: "http://127.0.0.1:9/pushwake".into(),
            secret: WebhookSecret::from_file_contents(env.secret.as_bytes()).unwrap(),
            timeout: SECS(1),
        })
        .unwrap(),
    ));
    verdicts.push(
        closed
            .send(
                &device(15),
                &push(15, PushKind::IncomingCall),
                Instant::now() + SECS(1),
            )
            .await,
    );
    let texts = format!("{verdicts:?}");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    for text in [&texts, &logs] {
        assert!(!text.contains(&env.secret), "secret in {text}");
        assert!(!text.contains("Operator-Device_"), "device id in {text}");
    }
    assert!(
        texts.contains("webhook 400") && texts.contains("webhook 410"),
        "{texts}"
    );
}

#[tokio::test]
async fn the_call_status_link_reaches_the_backend_in_both_events_and_never_the_logs() {
    let env = env().await;
    let service = env.service();
    let link = pushwake::push::StatusLink {
        url: "https://pbx.example.com/pushwake/v1/calls/5d7d1c1e-0000-4000-8000-000000000021"
            .into(),
        token: pushwake::status::fresh_secret(),
    };
    let with_link = |kind| WakePush {
        status: Some(link.clone()),
        ..push(21, kind)
    };
    for (kind, event) in [
        (PushKind::IncomingCall, "call.push_wakeup"),
        (
            PushKind::CallEnded(EndReason::CallerHungUp),
            "call.cancelled",
        ),
    ] {
        let verdict = service
            .send(&device(21), &with_link(kind), Instant::now() + SECS(10))
            .await;
        assert_eq!(verdict, PushVerdict::Delivered);
        let event = env.server.wait_for_event(event, SECS(1)).await.unwrap();
        assert_eq!(event.call["status_url"], link.url.as_str());
        assert_eq!(event.call["status_token"], link.token.expose());
    }
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        !logs.contains(link.token.expose()),
        "status token in {logs}"
    );
}
