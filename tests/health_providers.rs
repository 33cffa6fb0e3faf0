//! `/healthz` of the real daemon whose APNs cannot be reached (nothing listens at its
//! endpoint): the provider is `failing` with the warm-up's error, and the answer stays
//! 200 — the PBX (the FreeSWITCH stand-in) is connected and the store answers, so calls
//! are served, and pushes keep being retried. Slot 38's TCP ports 12 (the
//! hand-over listener) and 13 (`[http]`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::esl::{Answer, EslServer};
use pushwake_testkit::freeswitch::StandIn;
use pushwake_testkit::slot::Slot;

const SLOT: u8 = 38;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_failing_with_its_error_and_the_daemon_stays_healthy() {
    let server = EslServer::start().await;
    server.answer(
        "show channels",
        Answer::body("uuid,direction\n\n0 total.\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("esl.password");
    std::fs::write(&password, "ClueCon\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let slot = Slot::new(SLOT);
    let stand_in = StandIn {
        section: format!(
            "[freeswitch]\naddress = \"{}\"\npassword_file = \"{}\"\nlisten = \"127.0.0.1:{}\"\ndomain = \"127.0.0.1\"\n",
            server.address(),
            password.display(),
            slot.port(12)
        ),
    };
    // A port nobody listens on: bound, then closed again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let listen = format!("127.0.0.1:{}", slot.port(13));
    let config = ConfigBuilder::new(dir.path(), &stand_in, "unused")
        .apns(&TestApns::generate(), &endpoint)
        .http(&listen, &format!("http://{listen}"))
        .extension(TestExtension::new("101", "10s").device(TestDevice::apns("38".repeat(32))))
        .write()
        .unwrap();
    let daemon = Daemon::start_until(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        &config,
        "FreeSWITCH event socket connected",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    daemon
        .wait_log("cannot reach APNs yet", Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/healthz");
    // The warm-up's verdict is recorded right after it is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, health) = loop {
        let response = client.get(&url).send().await.unwrap();
        let code = response.status().as_u16();
        let health: serde_json::Value = response.json().await.unwrap();
        if health["providers"]["apns"]["state"] != "warming" || Instant::now() > deadline {
            break (code, health);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["pbx"], "connected", "{health}");
    assert_eq!(health["providers"]["apns"]["state"], "failing", "{health}");
    let error = health["providers"]["apns"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("cannot reach APNs") && error.contains("onnection refused"),
        "{health}"
    );
}
