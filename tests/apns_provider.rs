//! The APNs pushkin against local APNs servers (h2c, token authentication): the topic and
//! host chosen per device (production and sandbox on one daemon), and the optional
//! "missed call" alert on the app's own topic to the device's regular token.

use std::sync::Arc;
use std::time::Duration;

use pushwake::push::apns::{ApnsAuth, ApnsPushkin, ApnsSettings};
use pushwake::push::apns::{ALERT_TOKEN, ENVIRONMENT, SANDBOX, TOPIC};
use pushwake::push::{EndReason, PushKind, PushService, PushVerdict, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_core::pbx::{CallId, Party};
use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::TestApns;
use tokio::time::Instant;

const BUNDLE: &str = "com.example.phone";
const CALL: &str = "5d7d1c1e-0000-4000-8000-000000000077";

fn voip_token(n: usize) -> String {
    format!("{n:02x}").repeat(32)
}

fn alert_token(n: usize) -> String {
    format!("a{n:x}").repeat(32)
}

/// APNs device `n` with its own `settings` (topic, environment, alert token).
fn device(n: usize, settings: &[(&str, String)]) -> Device {
    let mut device = Device::new(
        pushwake::push::apns::PLATFORM,
        DeviceToken::new(voip_token(n)),
        format!("101/apns#{n}"),
    );
    for (key, value) in settings {
        if *key == ALERT_TOKEN {
            device.params.set_secret(key, value.clone());
        } else {
            device.params.set(key, value.clone());
        }
    }
    device
}

fn push(kind: PushKind) -> WakePush {
    WakePush {
        call_id: CallId(CALL.into()),
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

struct Env {
    apns: TestApns,
    production: ApnsServer,
    sandbox: ApnsServer,
}

async fn env() -> Env {
    let apns = TestApns::generate();
    let production = ApnsServer::start(apns.expectations()).await.unwrap();
    let sandbox = ApnsServer::start(apns.expectations()).await.unwrap();
    Env {
        apns,
        production,
        sandbox,
    }
}

impl Env {
    fn pushkin(&self, alert_topic: Option<&str>, warm_sandbox: bool) -> Arc<ApnsPushkin> {
        Arc::new(
            ApnsPushkin::new(ApnsSettings {
                auth: ApnsAuth::Token {
                    team_id: self.apns.team_id.clone(),
                    key_id: self.apns.key_id.clone(),
                    key_pem: self.apns.key.private_pem.clone().into_bytes(),
                },
                topic: self.apns.topic.clone(),
                alert_topic: alert_topic.map(str::to_owned),
                endpoint: self.production.endpoint(),
                sandbox_endpoint: self.sandbox.endpoint(),
                warm_sandbox,
            })
            .unwrap(),
        )
    }

    fn service(&self, alert_topic: Option<&str>) -> PushService {
        let mut service = PushService::new();
        service.add(self.pushkin(alert_topic, false));
        service
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_gets_its_own_topic_and_its_own_apns_host() {
    let env = env().await;
    let other_app = "com.example.softphone-pro.voip";
    env.production.bind_token(&voip_token(2), other_app);
    env.sandbox.bind_token(&voip_token(3), other_app);
    let service = env.service(None);
    let devices = [
        device(1, &[]),
        device(2, &[(TOPIC, other_app.into())]),
        device(
            3,
            &[(TOPIC, other_app.into()), (ENVIRONMENT, SANDBOX.into())],
        ),
        device(4, &[(ENVIRONMENT, SANDBOX.into())]),
    ];
    for device in &devices {
        let verdict = service
            .send(device, &push(PushKind::IncomingCall), soon())
            .await;
        assert_eq!(verdict, PushVerdict::Delivered, "{}", device.label);
    }
    let production = env.production.accepted();
    let sandbox = env.sandbox.accepted();
    let topics = |pushes: &[pushwake_testkit::apns::ReceivedPush]| -> Vec<(String, String)> {
        pushes
            .iter()
            .map(|p| (p.token.clone(), p.headers["apns-topic"].clone()))
            .collect()
    };
    assert_eq!(
        topics(&production),
        vec![
            (voip_token(1), env.apns.topic.clone()),
            (voip_token(2), other_app.to_owned())
        ]
    );
    assert_eq!(
        topics(&sandbox),
        vec![
            (voip_token(3), other_app.to_owned()),
            (voip_token(4), env.apns.topic.clone())
        ]
    );
    assert!(env.production.rejected().is_empty() && env.sandbox.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_app_is_dead_and_tried_once() {
    let env = env().await;
    // The token belongs to another app: Apple says so for the default topic.
    env.production
        .bind_token(&voip_token(5), "com.example.other.voip");
    let verdict = env
        .service(None)
        .send(&device(5, &[]), &push(PushKind::IncomingCall), soon())
        .await;
    assert!(
        matches!(
            &verdict,
            PushVerdict::Failed { reason, dead_token: true } if reason.contains("DeviceTokenNotForTopic")
        ),
        "{verdict:?}"
    );
    assert_eq!(env.production.rejected().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_connection_is_opened_at_start_up_only_when_a_device_needs_it() {
    let env = env().await;
    env.pushkin(None, false).warm_up().await.unwrap();
    assert_eq!(
        (env.production.connections(), env.sandbox.connections()),
        (1, 0)
    );
    env.pushkin(None, true).warm_up().await.unwrap();
    assert_eq!(
        (env.production.connections(), env.sandbox.connections()),
        (2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_is_an_alert_on_the_apps_topic_to_its_regular_token() {
    let env = env().await;
    env.production.bind_token(&alert_token(1), BUNDLE);
    let service = env.service(Some(BUNDLE));
    let with_alert = device(1, &[(ALERT_TOKEN, alert_token(1))]);
    let verdict = service
        .send(
            &with_alert,
            &push(PushKind::CallEnded(EndReason::CallerHungUp)),
            soon(),
        )
        .await;
    assert_eq!(verdict, PushVerdict::Delivered);
    let alerts = env.production.accepted();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(
        alert.token,
        alert_token(1),
        "the regular token, not PushKit's"
    );
    assert_eq!(alert.headers["apns-push-type"], "alert");
    assert_eq!(alert.headers["apns-topic"], BUNDLE);
    assert_eq!(alert.headers["apns-collapse-id"], CALL);
    assert_eq!(alert.body["aps"]["alert"]["title"], "Missed call");
    assert_eq!(alert.body["aps"]["alert"]["body"], "Alice (200)");
    assert_eq!(alert.body["type"], "call_cancelled");
    assert_eq!(alert.body["reason"], "caller_hung_up");
    assert_eq!(alert.body["call_id"], CALL);
    let expires: u64 = alert.headers["apns-expiration"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expires > now + 3600,
        "a missed call is still news hours later"
    );

    // Timeout and a return to the dialplan are missed calls too…
    for reason in [EndReason::Timeout, EndReason::Ended] {
        let verdict = service
            .send(&with_alert, &push(PushKind::CallEnded(reason)), soon())
            .await;
        assert_eq!(verdict, PushVerdict::Delivered, "{reason:?}");
    }
    // …a call answered on another device is not, and a device without a regular token
    // cannot get one: nothing is sent, and certainly no VoIP push.
    let not_sent = [
        (&with_alert, EndReason::AnsweredElsewhere),
        (&device(2, &[]), EndReason::CallerHungUp),
    ];
    for (device, reason) in not_sent {
        let verdict = service
            .send(device, &push(PushKind::CallEnded(reason)), soon())
            .await;
        assert!(
            matches!(verdict, PushVerdict::NotSent { .. }),
            "{reason:?}: {verdict:?}"
        );
    }
    assert_eq!(env.production.accepted().len(), 3);
    assert!(env.production.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_alert_topic_apns_gets_nothing_for_an_ended_call() {
    let env = env().await;
    let with_alert = device(1, &[(ALERT_TOKEN, alert_token(1))]);
    let verdict = env
        .service(None)
        .send(
            &with_alert,
            &push(PushKind::CallEnded(EndReason::Timeout)),
            soon(),
        )
        .await;
    assert!(
        matches!(&verdict, PushVerdict::NotSent { reason } if reason.contains("apns carries no push for an ended call")),
        "{verdict:?}"
    );
    assert!(env.production.accepted().is_empty() && env.production.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_alert_token_does_not_make_the_voip_token_dead() {
    let env = env().await;
    env.production.bind_token(&alert_token(1), BUNDLE);
    env.production.script(&alert_token(1), 410, "Unregistered");
    let with_alert = device(1, &[(ALERT_TOKEN, alert_token(1))]);
    let verdict = env
        .service(Some(BUNDLE))
        .send(
            &with_alert,
            &push(PushKind::CallEnded(EndReason::CallerHungUp)),
            soon(),
        )
        .await;
    assert!(
        matches!(
            &verdict,
            PushVerdict::Failed { reason, dead_token: false } if reason.contains("Unregistered") && reason.contains("alert")
        ),
        "{verdict:?}"
    );
    assert!(
        !format!("{verdict:?}").contains(&alert_token(1)),
        "{verdict:?}"
    );
}
