//! APNs certificate authentication, as against Apple's hosts: HTTP/2 over TLS where the
//! push certificate is the TLS client certificate. The local server takes only clients
//! presenting a certificate from the test "Apple" CA. The certificate reaches pushwake as
//! a PEM file (key and certificate) or as a PKCS#12 file made by `openssl pkcs12 -export`
//! the way operators make them: current OpenSSL defaults (AES, PBKDF2) and `-legacy`
//! (RC2/3DES, what older Keychain Access exports).
//!
//! The server's CA is trusted the way the system's roots are read (`SSL_CERT_FILE`), so
//! production code has no test hook; this file has one test, as that variable is
//! process-wide.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pushwake::push::apns::{ApnsAuth, ApnsPushkin, ApnsSettings, ClientCertificate};
use pushwake::push::{Attempt, PushKind, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken};
use pushwake_core::pbx::{CallId, Party};
use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::TestApns;
use pushwake_testkit::tls::TestClientCertificate;

const BUNDLE: &str = "com.example.phone";
const PASSWORD: &str = "p12-Pa55word-not-in-errors";

fn pushkin(certificate: ClientCertificate, endpoint: &str, topic: &str) -> ApnsPushkin {
    ApnsPushkin::new(ApnsSettings {
        auth: ApnsAuth::Certificate(certificate),
        topic: topic.to_owned(),
        alert_topic: None,
        endpoint: endpoint.to_owned(),
        sandbox_endpoint: endpoint.to_owned(),
        warm_sandbox: false,
    })
    .unwrap()
}

/// `openssl pkcs12 -export` of the certificate and key, with `extra` options.
fn pkcs12(dir: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-in"])
        .arg(dir.join("cert.pem"))
        .arg("-inkey")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&out)
        .arg("-passout")
        .arg(format!("pass:{PASSWORD}"))
        .args(extra)
        .status()
        .unwrap_or_else(|e| {
            panic!("this test needs the openssl command (apt-get install openssl): {e}")
        });
    assert!(status.success(), "openssl pkcs12 -export {extra:?} failed");
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_or_pkcs12_push_certificate_authenticates_over_tls() {
    let apns = TestApns::generate();
    let certificate = TestClientCertificate::generate(BUNDLE).unwrap();
    let (server, server_ca) =
        ApnsServer::start_with_client_certificates(apns.expectations(), &certificate.ca_pem)
            .await
            .unwrap();
    assert!(server.endpoint().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), server_ca).unwrap();
    // Before any TLS client exists in this process.
    std::env::set_var("SSL_CERT_FILE", dir.path().join("ca.pem"));
    std::fs::write(dir.path().join("cert.pem"), &certificate.certificate_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &certificate.key_pem).unwrap();

    let device = Device::new(
        pushwake::push::apns::PLATFORM,
        DeviceToken::new("c0ffee".repeat(10) + "c0ff"),
        "101/apns#0",
    );
    let push = WakePush {
        call_id: CallId("5d7d1c1e-0000-4000-8000-000000000099".into()),
        extension: "101".into(),
        caller: Party::default(),
        kind: PushKind::IncomingCall,
        status: None,
        node: None,
    };
    let window = Duration::from_secs(20);

    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        // Key first: the order in a PEM file does not matter.
        (
            "PEM",
            format!("{}{}", certificate.key_pem, certificate.certificate_pem).into_bytes(),
            "",
        ),
        ("PKCS#12", pkcs12(dir.path(), "modern.p12", &[]), PASSWORD),
        (
            "PKCS#12 -legacy",
            pkcs12(dir.path(), "legacy.p12", &["-legacy"]),
            PASSWORD,
        ),
    ];
    for (n, (what, bytes, password)) in files.iter().enumerate() {
        let loaded = ClientCertificate::from_file_contents(bytes, password)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            loaded.subject().contains(BUNDLE),
            "{what}: subject {}",
            loaded.subject()
        );
        let pushkin = pushkin(loaded, &server.endpoint(), &apns.topic);
        let attempt = pushkin.attempt(&device, &push, window).await;
        assert_eq!(
            attempt,
            Attempt::Delivered,
            "{what}: refused {:?}",
            server.rejected()
        );
        let accepted = server.accepted();
        assert_eq!(accepted.len(), n + 1, "{what}");
        assert!(
            !accepted[n].headers.contains_key("authorization"),
            "{what}: no provider token next to a certificate"
        );
        assert_eq!(accepted[n].headers["apns-push-type"], "voip");
    }

    // A wrong password is named as such, and not quoted.
    let error = ClientCertificate::from_file_contents(&files[1].1, "wrong-password")
        .unwrap_err()
        .to_string();
    assert!(error.contains("wrong password"), "{error}");
    assert!(!error.contains("wrong-password"), "{error}");
    // A PEM file without its key is refused at load time.
    let error = ClientCertificate::from_file_contents(certificate.certificate_pem.as_bytes(), "")
        .unwrap_err()
        .to_string();
    assert!(error.contains("private key"), "{error}");

    // A certificate APNs does not know fails the handshake: no push gets through, and the
    // attempt is retried (the error may be a revoked or renewed certificate on Apple's side).
    let stranger = TestClientCertificate::generate(BUNDLE).unwrap();
    let pem = format!("{}{}", stranger.certificate_pem, stranger.key_pem);
    let pushkin = pushkin(
        ClientCertificate::from_file_contents(pem.as_bytes(), "").unwrap(),
        &server.endpoint(),
        &apns.topic,
    );
    let attempt = pushkin.attempt(&device, &push, window).await;
    assert!(matches!(attempt, Attempt::Retry { .. }), "{attempt:?}");
    assert_eq!(server.accepted().len(), files.len());
}
