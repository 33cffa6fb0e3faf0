//! The real `WebPushPushkin` against the local Web Push service over real HTTP: every push's
//! VAPID JWT is verified against its `k=` key and `aud`, and its body is decrypted with the
//! subscriber's private key by the testkit's own RFC 8291 code. Replies are scripted per
//! subscription.

use std::time::Duration;

use pushwake::push::webpush::{VapidKey, WebPushPushkin, WebPushSettings};
use pushwake::push::{payload, EndReason, PushKind, PushService, PushVerdict, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_testkit::webpush::{generate_vapid_pem, WebPushReply, WebPushServer};
use tokio::time::Instant;

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Env {
    server: WebPushServer,
    service: PushService,
}

async fn env() -> Env {
    let server = WebPushServer::start().await.unwrap();
    let vapid_key = VapidKey::from_pem(generate_vapid_pem().as_bytes()).unwrap();
    let pushkin = WebPushPushkin::new(WebPushSettings {
        vapid_key,
        subject: "mailto:ops@example.com".into(),
        timeout: SECS(5),
    })
    .unwrap();
    let mut service = PushService::new();
    service.add(std::sync::Arc::new(pushkin));
    Env { server, service }
}

impl Env {
    fn device(&self, name: &str) -> Device {
        Device::new(
            pushwake::push::webpush::PLATFORM,
            DeviceToken::new(self.server.subscription_json(name)),
            format!("101/webpush/{name}"),
        )
    }
}

fn push(n: usize, kind: PushKind) -> WakePush {
    pushwake_testkit::push_server::nth_wake_push(n, kind)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_decrypted_payload_is_the_documented_json() {
    let env = env().await;
    let wake = push(1, PushKind::IncomingCall);
    let before = now();
    let verdict = env
        .service
        .send(&env.device("a"), &wake, Instant::now() + SECS(20))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(
        env.server.mistakes().is_empty(),
        "{:?}",
        env.server.mistakes()
    );
    let messages = env.server.delivered();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.urgency, "high");
    assert!((19..=20).contains(&message.ttl), "TTL {}", message.ttl);
    let expires_at = message.json["expires_at"].as_u64().unwrap();
    assert!(
        (before + 19..=before + 22).contains(&expires_at),
        "expires_at {expires_at}"
    );
    assert_eq!(message.json, payload::for_push(&wake, expires_at));
    assert_eq!(message.json["type"], "incoming_call");
}

#[tokio::test]
async fn an_ended_call_decrypts_to_call_cancelled() {
    let env = env().await;
    let ended = push(2, PushKind::CallEnded(EndReason::CallerHungUp));
    let verdict = env
        .service
        .send(&env.device("a"), &ended, Instant::now() + SECS(10))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    let message = env
        .server
        .wait_for("call_cancelled", SECS(1))
        .await
        .unwrap();
    assert_eq!(message.json["reason"], "caller_hung_up");
    assert_eq!(
        message.json["call_id"],
        "5d7d1c1e-0000-4000-8000-000000000002"
    );
    let expires_at = message.json["expires_at"].as_u64().unwrap();
    assert_eq!(message.json, payload::for_push(&ended, expires_at));
}

#[tokio::test]
async fn gone_subscriptions_are_dead_tokens() {
    let env = env().await;
    for (name, status) in [("gone", 410), ("unknown", 404)] {
        env.server.script(name, WebPushReply::status(status), 1);
        let verdict = env
            .service
            .send(
                &env.device(name),
                &push(3, PushKind::IncomingCall),
                Instant::now() + SECS(10),
            )
            .await;
        let PushVerdict::Failed { reason, dead_token } = verdict else {
            panic!("{verdict:?}")
        };
        assert!(dead_token, "{status}: {reason}");
        assert!(!reason.contains("127.0.0.1"), "{reason}");
    }
    assert_eq!(
        env.server.messages().len(),
        2,
        "no retry of a dead subscription"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_then_delivered() {
    let env = env().await;
    env.server.script(
        "busy",
        WebPushReply {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    env.server.script("busy", WebPushReply::status(503), 1);
    let started = std::time::Instant::now();
    let verdict = env
        .service
        .send(
            &env.device("busy"),
            &push(4, PushKind::IncomingCall),
            Instant::now() + SECS(15),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(started.elapsed() >= SECS(1), "Retry-After honoured");
    let answers: Vec<u16> = env.server.messages().iter().map(|m| m.answered).collect();
    assert_eq!(answers, [429, 503, 201]);
}

#[tokio::test]
async fn no_push_is_sent_after_the_deadline() {
    let env = env().await;
    env.server.script(
        "slow",
        WebPushReply {
            status: 503,
            retry_after: Some(1),
        },
        100,
    );
    let deadline = Instant::now() + Duration::from_millis(2500);
    let verdict = env
        .service
        .send(
            &env.device("slow"),
            &push(5, PushKind::IncomingCall),
            deadline,
        )
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
    assert!(Instant::now() <= deadline + Duration::from_millis(200));
    let sent = env.server.messages().len();
    assert!(
        (2..=3).contains(&sent),
        "{sent} pushes in 2.5 s with Retry-After: 1"
    );
    tokio::time::sleep(SECS(2)).await;
    assert_eq!(
        env.server.messages().len(),
        sent,
        "nothing after the deadline"
    );
}

#[tokio::test]
async fn a_refused_vapid_key_is_a_configuration_error() {
    let env = env().await;
    env.server.script("cfg", WebPushReply::status(403), 1);
    let verdict = env
        .service
        .send(
            &env.device("cfg"),
            &push(6, PushKind::IncomingCall),
            Instant::now() + SECS(10),
        )
        .await;
    let PushVerdict::Failed { reason, dead_token } = verdict else {
        panic!("{verdict:?}")
    };
    assert!(!dead_token && reason.contains("vapid_key_file"), "{reason}");
    assert_eq!(env.server.messages().len(), 1);
}
