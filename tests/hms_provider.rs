//! The Huawei Push Kit pushkin against a local Push Kit (OAuth2 client credentials and
//! `messages:send` over HTTP/2): token reuse, the result codes, retries, no secret kept.

use std::sync::Arc;
use std::time::Duration;

use pushwake::push::hms::{HmsPushkin, HmsSettings};
use pushwake::push::{EndReason, PushKind, PushService, PushVerdict, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_core::pbx::{CallId, Party};
use pushwake_testkit::hms::HmsServer;
use tokio::time::Instant;

const APP_ID: &str = "107654321";
const SECRET: &str = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2";

fn token(n: usize) -> String {
    format!("IQAAAACy0kYkAACwNz{n:04}xJ8pT-hms_device")
}

fn device(n: usize) -> Device {
    Device::new(
        pushwake::push::hms::PLATFORM,
        DeviceToken::new(token(n)),
        format!("101/hms#{n}"),
    )
}

fn push(kind: PushKind) -> WakePush {
    WakePush {
        call_id: CallId("5d7d1c1e-0000-4000-8000-000000000042".into()),
        extension: "101".into(),
        caller: Party {
            number: "200".into(),
            name: "Alice".into(),
        },
        kind,
        status: None,
        node: None,
    }
}

async fn service(server: &HmsServer, secret: &str) -> (PushService, Arc<HmsPushkin>) {
    let pushkin = Arc::new(
        HmsPushkin::new(HmsSettings {
            app_id: APP_ID.into(),
            client_secret: secret.into(),
            endpoint: server.endpoint(),
            token_url: server.token_url(),
        })
        .unwrap(),
    );
    let mut service = PushService::new();
    service.add(pushkin.clone());
    (service, pushkin)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_pushes_share_one_access_token_and_one_connection() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    let (service, pushkin) = service(&server, SECRET).await;
    pushkin.warm_up().await.unwrap();
    let service = Arc::new(service);
    let sends = (0..50).map(|n| {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .send(&device(n), &push(PushKind::IncomingCall), soon())
                .await
        })
    });
    for verdict in futures_util::future::join_all(sends).await {
        assert_eq!(verdict.unwrap(), PushVerdict::Delivered);
    }
    assert_eq!(server.accepted().len(), 50);
    assert_eq!(server.token_requests(), 1, "one access token, shared");
    assert_eq!(server.connections(), 1, "one multiplexed connection");
    let message = &server.accepted()[0];
    assert_eq!(message.data["type"], "incoming_call");
    assert_eq!(message.android["urgency"], "HIGH");
    let ttl: u64 = message.android["ttl"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&ttl),
        "ttl {ttl}s is the time left to ring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_token_is_dead_after_one_attempt_and_never_quoted() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    server.script(&token(1), 200, "80300007", None, None);
    let (service, _) = service(&server, SECRET).await;
    let verdict = service
        .send(&device(1), &push(PushKind::IncomingCall), soon())
        .await;
    let PushVerdict::Failed {
        reason,
        dead_token: true,
    } = verdict
    else {
        panic!("{verdict:?}")
    };
    assert!(reason.contains("80300007"), "{reason}");
    // Push Kit lists the failing token in its message: it must not be kept.
    assert!(!reason.contains(&token(1)), "{reason}");
    assert_eq!(server.refused().len(), 1, "no retry of a dead token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_control_is_retried_honouring_retry_after_then_delivered() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    server.script(&token(2), 503, "", Some(1), Some(2));
    let (service, _) = service(&server, SECRET).await;
    let started = Instant::now();
    let verdict = service
        .send(&device(2), &push(PushKind::IncomingCall), soon())
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice: {:?}",
        started.elapsed()
    );
    assert_eq!(server.refused().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_replaced_and_the_push_retried() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    let (service, _) = service(&server, SECRET).await;
    assert_eq!(
        service
            .send(&device(3), &push(PushKind::IncomingCall), soon())
            .await,
        PushVerdict::Delivered
    );
    server.expire_access_tokens();
    assert_eq!(
        service
            .send(&device(3), &push(PushKind::IncomingCall), soon())
            .await,
        PushVerdict::Delivered
    );
    assert_eq!(
        server.token_requests(),
        2,
        "one new token after the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_app_secret_is_a_configuration_error_fetched_once() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    let (service, _) = service(&server, "not-the-secret-0000000000000000000000").await;
    let service = Arc::new(service);
    let sends = (0..10).map(|n| {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .send(&device(n), &push(PushKind::IncomingCall), soon())
                .await
        })
    });
    for verdict in futures_util::future::join_all(sends).await {
        let verdict = verdict.unwrap();
        let PushVerdict::Failed {
            reason,
            dead_token: false,
        } = &verdict
        else {
            panic!("{verdict:?}")
        };
        assert!(reason.contains("HMS token endpoint 400"), "{reason}");
        assert!(!reason.contains("not-the-secret"), "{reason}");
    }
    assert_eq!(
        server.token_requests(),
        1,
        "refused credentials are not asked again by every push"
    );
    assert!(server.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_call_is_a_call_cancelled_data_message() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    let (service, _) = service(&server, SECRET).await;
    let ended = push(PushKind::CallEnded(EndReason::AnsweredElsewhere));
    assert_eq!(
        service
            .send(&device(4), &ended, Instant::now() + Duration::from_secs(10))
            .await,
        PushVerdict::Delivered
    );
    let message = &server.accepted()[0];
    assert_eq!(message.data["type"], "call_cancelled");
    assert_eq!(message.data["reason"], "answered_elsewhere");
    assert_eq!(
        message.data["call_id"],
        "5d7d1c1e-0000-4000-8000-000000000042"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_after_the_ring_deadline() {
    let server = HmsServer::start(APP_ID, SECRET).await.unwrap();
    server.script(&token(5), 503, "", None, None);
    let (service, _) = service(&server, SECRET).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let verdict = service
        .send(&device(5), &push(PushKind::IncomingCall), deadline)
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
    let tried = server.refused().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.refused().len(),
        tried,
        "no attempt after the deadline"
    );
}
