//! The real `FcmPushkin` over TLS, as against Google's hosts: the local FCM server offers h2
//! and HTTP/1.1 in ALPN with a certificate from a throwaway CA. pushwake must offer both
//! (it does not force HTTP/2 on https:// endpoints), end up on h2, and carry the token
//! request and every push on that one connection.
//!
//! The CA is trusted the way the system's roots are read (`SSL_CERT_FILE`), so production
//! code has no test hook; this file has one test, as that variable is process-wide.

use std::time::Duration;

use pushwake::push::fcm::{FcmPushkin, FcmSettings, ServiceAccount};
use pushwake::push::{Attempt, PushKind, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_core::pbx::{CallId, Party};
use pushwake_testkit::fcm::{FcmExpectations, FcmServer};
use pushwake_testkit::keys::RsaKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_alpn_negotiates_h2_and_one_connection_carries_everything() {
    let key = RsaKey::shared();
    let (server, ca_pem) = FcmServer::start_tls(FcmExpectations {
        key: key.clone(),
        project_id: "pushwake-test".into(),
        client_email: "pw@pushwake-test.iam.gserviceaccount.com".into(),
        max_ttl: Duration::from_secs(30),
    })
    .await
    .unwrap();
    assert!(server.endpoint().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    // Before any TLS client exists in this process.
    std::env::set_var("SSL_CERT_FILE", &ca);

    let json = key.service_account_json(
        "pushwake-test",
        "pw@pushwake-test.iam.gserviceaccount.com",
        &server.token_uri(),
    );
    let pushkin = FcmPushkin::new(FcmSettings {
        account: ServiceAccount::from_json(json.as_bytes()).unwrap(),
        endpoint: server.endpoint(),
    })
    .unwrap();
    pushkin.warm_up().await.unwrap();
    assert_eq!(
        server.token_requests(),
        1,
        "refused: {:?}",
        server.refused()
    );

    let tokens: Vec<Device> = (0..20)
        .map(|n| {
            Device::new(
                pushwake::push::fcm::PLATFORM,
                DeviceToken::new(format!("tls-{n}:APA91b-token")),
                format!("tls#{n}"),
            )
        })
        .collect();
    let push = WakePush {
        call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
        extension: "101".into(),
        caller: Party::default(),
        kind: PushKind::IncomingCall,
        status: None,
        node: None,
    };
    let attempts = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| pushkin.attempt(t, &push, Duration::from_secs(20))),
    )
    .await;
    assert!(
        attempts.iter().all(|a| *a == Attempt::Delivered),
        "{attempts:?}"
    );
    assert_eq!(server.accepted().len(), 20);
    assert_eq!(server.connections(), 1, "{:?}", server.alpn());
    let alpn = server.alpn();
    assert_eq!(alpn.len(), 1);
    let (offered, chosen) = &alpn[0];
    assert_eq!(
        offered,
        &vec!["h2".to_owned(), "http/1.1".to_owned()],
        "ALPN negotiation, not HTTP/2 forced"
    );
    assert_eq!(chosen.as_deref(), Some("h2"));
}
