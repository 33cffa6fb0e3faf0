//! The real `FcmPushkin` against the local FCM server over real HTTP/2 (h2c): the OAuth2
//! token endpoint verifies the RS256 assertion with the public half of a throwaway key,
//! `messages:send` checks the bearer token, the project and the message. Error replies are
//! FCM's own JSON, scripted per device token.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pushwake::push::fcm::{FcmPushkin, FcmSettings, ServiceAccount};
use pushwake::push::{Attempt, PushKind, PushService, PushVerdict, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_testkit::fcm::{FcmExpectations, FcmReply, FcmServer, DATA_FIELDS};
use pushwake_testkit::keys::RsaKey;
use tokio::time::Instant;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const PROJECT: &str = "pushwake-test";
const EMAIL: &str = "pushwake@pushwake-test.iam.gserviceaccount.com";

/// Every log line of pushwake's code in this test process (all levels), to check that no
/// secret ever reaches a log.
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
    server: FcmServer,
    key: RsaKey,
}

async fn env() -> Env {
    captured_logs();
    let key = RsaKey::shared();
    let server = FcmServer::start(FcmExpectations {
        key: key.clone(),
        project_id: PROJECT.into(),
        client_email: EMAIL.into(),
        max_ttl: SECS(30),
    })
    .await
    .unwrap();
    Env { server, key }
}

impl Env {
    fn pushkin(&self) -> Arc<FcmPushkin> {
        self.pushkin_with_key(&self.key)
    }

    fn pushkin_with_key(&self, key: &RsaKey) -> Arc<FcmPushkin> {
        let json = key.service_account_json(PROJECT, EMAIL, &self.server.token_uri());
        let account = ServiceAccount::from_json(json.as_bytes()).unwrap();
        Arc::new(
            FcmPushkin::new(FcmSettings {
                account,
                endpoint: self.server.endpoint(),
            })
            .unwrap(),
        )
    }

    fn service(&self, pushkin: Arc<FcmPushkin>) -> PushService {
        let mut service = PushService::new();
        service.add(pushkin);
        service
    }
}

fn token(n: usize) -> String {
    format!("fcm-{n:03}:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_test-token-{n:03}")
}

fn device(n: usize) -> Device {
    Device::new(
        pushwake::push::fcm::PLATFORM,
        DeviceToken::new(token(n)),
        format!("101/fcm#{n}"),
    )
}

fn push(n: usize) -> WakePush {
    pushwake_testkit::push_server::nth_wake_push(n, PushKind::IncomingCall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_pushes_share_one_access_token_and_one_connection() {
    let env = env().await;
    let pushkin = env.pushkin();
    let tokens: Vec<Device> = (0..50).map(device).collect();
    let pushes: Vec<WakePush> = (0..50).map(push).collect();
    let attempts = futures_util::future::join_all(
        tokens
            .iter()
            .zip(&pushes)
            .map(|(t, p)| pushkin.attempt(t, p, SECS(20))),
    )
    .await;
    assert!(
        attempts.iter().all(|a| *a == Attempt::Delivered),
        "{attempts:?}; refused: {:?}",
        env.server.refused()
    );
    assert_eq!(env.server.token_requests(), 1, "one token fetch for all");
    assert_eq!(env.server.connections(), 1, "one multiplexed connection");
    let accepted = env.server.accepted();
    assert_eq!(accepted.len(), 50);
    assert!(
        env.server.mistakes().is_empty(),
        "{:?}",
        env.server.mistakes()
    );
    let issued = env.server.issued_tokens();
    assert_eq!(issued.len(), 1);
    for message in &accepted {
        assert_eq!(message.access_token, issued[0]);
        assert_eq!(message.android["priority"], "HIGH");
        assert_eq!(message.android["ttl"], "20s");
        assert!(message.body["message"].get("notification").is_none());
        for field in DATA_FIELDS {
            assert!(
                message.data.contains_key(field),
                "{field}: {:?}",
                message.data
            );
        }
        assert_eq!(message.data["type"], "incoming_call");
        assert_eq!(message.data["version"], "1");
        assert_eq!(message.data["extension"], "101");
        assert_eq!(message.data["caller_number"], "200");
        assert_eq!(message.data["caller_name"], "Alice");
        let n: usize = message.token[4..7].parse().unwrap();
        assert_eq!(message.data["call_id"], pushes[n].call_id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_fetches_the_token_and_opens_the_connection_before_the_first_push() {
    let env = env().await;
    let pushkin = env.pushkin();
    pushkin.warm_up().await.unwrap();
    assert_eq!(env.server.token_requests(), 1);
    assert_eq!(env.server.connections(), 1);
    let (t, p) = (device(1), push(1));
    assert_eq!(pushkin.attempt(&t, &p, SECS(20)).await, Attempt::Delivered);
    assert_eq!(env.server.token_requests(), 1);
    assert_eq!(env.server.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_and_expiry_are_the_time_left_in_the_ring_window() {
    let env = env().await;
    let pushkin = env.pushkin();
    let (t, p) = (device(1), push(1));
    let attempt = pushkin.attempt(&t, &p, Duration::from_millis(7_500));
    assert_eq!(attempt.await, Attempt::Delivered);
    let message = &env.server.accepted()[0];
    assert_eq!(message.android["ttl"], "8s");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at: u64 = message.data["expires_at"].parse().unwrap();
    assert!(
        expires_at > now && expires_at <= now + 9,
        "expires_at {expires_at}, now {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_are_reported_dead_after_one_attempt() {
    let env = env().await;
    let service = env.service(env.pushkin());
    let replies = [
        FcmReply::unregistered(),
        FcmReply::invalid_token(),
        FcmReply::sender_id_mismatch(),
    ];
    for (n, reply) in replies.into_iter().enumerate() {
        let name = reply.error_code.clone().unwrap();
        env.server.script(&token(n), reply);
        let verdict = service
            .send(&device(n), &push(n), Instant::now() + SECS(20))
            .await;
        match verdict {
            PushVerdict::Failed {
                dead_token: true,
                reason,
            } => assert!(reason.contains(&name), "{reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(env.server.refused().len(), 3, "no retry of a dead token");
    assert!(env.server.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_with_retry_after_is_retried_then_delivered() {
    let env = env().await;
    let service = env.service(env.pushkin());
    env.server
        .script_times(&token(1), FcmReply::quota_exceeded(Some(1)), 1);
    let started = Instant::now();
    let verdict = service
        .send(&device(1), &push(1), Instant::now() + SECS(20))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert!(
        started.elapsed() >= SECS(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    let refused = env.server.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].code, "QUOTA_EXCEEDED");
    assert_eq!(env.server.accepted().len(), 1);

    // UNAVAILABLE and INTERNAL without Retry-After: jittered backoff, then delivered.
    env.server
        .script_times(&token(2), FcmReply::unavailable(None), 2);
    env.server.script_times(&token(3), FcmReply::internal(), 1);
    for n in [2, 3] {
        let verdict = service
            .send(&device(n), &push(n), Instant::now() + SECS(20))
            .await;
        assert_eq!(verdict, PushVerdict::Delivered);
    }
    assert_eq!(env.server.refused().len(), 4);
    assert_eq!(env.server.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_attempt_is_made_after_the_ring_deadline() {
    let env = env().await;
    let service = env.service(env.pushkin());
    // Unavailable for good: retried with backoff until the deadline, never after it.
    env.server.script(&token(1), FcmReply::unavailable(None));
    let deadline = Instant::now() + SECS(3);
    let verdict = service.send(&device(1), &push(1), deadline).await;
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
    // Every request reached the server before `send` returned, and it returned in time.
    assert!(Instant::now() <= deadline, "send outlived the ring window");
    let attempts = env.server.refused().len();
    assert!(attempts >= 2, "retried: {attempts}");

    // A Retry-After beyond the deadline ends the push at once.
    env.server
        .script(&token(2), FcmReply::quota_exceeded(Some(60)));
    let verdict = service
        .send(&device(2), &push(2), Instant::now() + SECS(10))
        .await;
    assert!(matches!(verdict, PushVerdict::Failed { .. }), "{verdict:?}");
    assert_eq!(env.server.refused().len(), attempts + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_access_token_is_dropped_and_a_new_one_fetched() {
    let env = env().await;
    let service = env.service(env.pushkin());
    let verdict = service
        .send(&device(1), &push(1), Instant::now() + SECS(20))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    env.server.revoke_access_tokens();
    let verdict = service
        .send(&device(2), &push(2), Instant::now() + SECS(20))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert_eq!(env.server.token_requests(), 2);
    let issued = env.server.issued_tokens();
    let accepted = env.server.accepted();
    assert_eq!(accepted[1].access_token, issued[1]);
    assert_eq!(env.server.refused().len(), 1, "{:?}", env.server.refused());
    assert_eq!(env.server.refused()[0].status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_401_is_a_configuration_error_after_one_new_token() {
    let env = env().await;
    let service = env.service(env.pushkin());
    env.server.script(&token(1), FcmReply::unauthenticated());
    let verdict = service
        .send(&device(1), &push(1), Instant::now() + SECS(20))
        .await;
    match &verdict {
        PushVerdict::Failed {
            dead_token: false,
            reason,
        } => assert!(reason.contains("401"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The first 401 dropped the token and the push was tried once more with a new one.
    assert_eq!(env.server.token_requests(), 2);
    assert_eq!(env.server.refused().len(), 2);
    // More refusals right away fetch no more tokens: no token request per push.
    let verdict = service
        .send(&device(1), &push(2), Instant::now() + SECS(20))
        .await;
    assert!(matches!(
        verdict,
        PushVerdict::Failed {
            dead_token: false,
            ..
        }
    ));
    assert_eq!(env.server.token_requests(), 2);

    // THIRD_PARTY_AUTH_ERROR is a configuration error that keeps the access token.
    env.server
        .script(&token(3), FcmReply::third_party_auth_error());
    let verdict = service
        .send(&device(3), &push(3), Instant::now() + SECS(20))
        .await;
    match &verdict {
        PushVerdict::Failed {
            dead_token: false,
            reason,
        } => assert!(reason.contains("THIRD_PARTY_AUTH_ERROR"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(env.server.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_refusing_the_account_is_a_configuration_error_fetched_once() {
    let env = env().await;
    // A key the server does not know: the token endpoint answers invalid_grant.
    let pushkin = env.pushkin_with_key(&RsaKey::generate());
    let tokens: Vec<Device> = (0..10).map(device).collect();
    let p = push(1);
    let attempts =
        futures_util::future::join_all(tokens.iter().map(|t| pushkin.attempt(t, &p, SECS(20))))
            .await;
    for attempt in &attempts {
        match attempt {
            Attempt::Rejected {
                dead_token: false,
                reason,
            } => assert!(reason.contains("invalid_grant"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(env.server.token_requests(), 1, "one fetch for ten pushes");
    assert!(env.server.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_retried_within_the_ring_window() {
    let env = env().await;
    let service = env.service(env.pushkin());
    env.server
        .fail_token_requests(503, "temporarily_unavailable", 1);
    let verdict = service
        .send(&device(1), &push(1), Instant::now() + SECS(20))
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    assert_eq!(env.server.token_requests(), 2);
    assert_eq!(env.server.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_error_texts() {
    let env = env().await;
    let logs = captured_logs();
    let service = env.service(env.pushkin());
    env.server.script(&token(1), FcmReply::unauthenticated());
    env.server.script(&token(2), FcmReply::unregistered());
    env.server.script(&token(3), FcmReply::invalid_token());
    let mut reasons = Vec::new();
    for n in 0..4 {
        let verdict = service
            .send(&device(n), &push(n), Instant::now() + SECS(20))
            .await;
        reasons.push(format!("{verdict:?}"));
    }
    // A service account the token endpoint refuses, too.
    let refused = env.pushkin_with_key(&RsaKey::generate());
    let attempt = refused.attempt(&device(5), &push(5), SECS(20)).await;
    reasons.push(format!("{attempt:?} {refused:?}"));
    // And a network failure.
    let json = env
        .key
        .service_account_json(PROJECT, EMAIL, "http://127.0.0.1:9/token");
    let unreachable = FcmPushkin::new(FcmSettings {
        account: ServiceAccount::from_json(json.as_bytes()).unwrap(),
        endpoint: "http://127.0.0.1:9".into(),
    })
    .unwrap();
    let attempt = unreachable.attempt(&device(6), &push(6), SECS(5)).await;
    assert!(matches!(attempt, Attempt::Retry { .. }), "{attempt:?}");
    reasons.push(format!("{attempt:?}"));

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("FCM access token obtained"),
        "the capture works: {logs}"
    );
    let texts = format!("{}\n{logs}", reasons.join("\n"));
    let mut secrets: Vec<String> = (0..7).map(token).collect();
    secrets.extend(env.server.issued_tokens());
    // Any 40 characters of the private key's base64 body.
    let key_body: String = env.key.private_pem.lines().nth(5).unwrap().to_owned();
    secrets.push(key_body);
    for secret in &secrets {
        assert!(
            !texts.contains(secret.as_str()),
            "{secret} leaked:\n{texts}"
        );
    }
}
