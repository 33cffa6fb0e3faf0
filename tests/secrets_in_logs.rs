//! No secret in the log at any level, in an error answer or in an API answer: the real
//! daemon with `PUSHWAKE_LOG=trace` on the real Asterisk 22 (its ARI WebSocket handshake
//! carries the password), through a woken call (APNs), pushes the providers refuse (APNs,
//! FCM and HMS stand-ins answering errors), device API requests with wrong tokens and bad
//! bodies, and call status requests with wrong and right tokens. Then every line and
//! every answer is searched for each secret; a failure names what leaked.
//!
//! Then the same daemon with `PUSHWAKE_LOG_WIRE=1`, which lets the libraries' traces
//! through: the ARI credentials must then be found, which shows that the search would
//! see them (and that the cap is what keeps them out).
//!
//! On FreeSWITCH (the Event Socket stand-in), at trace too: a handed-over call pushed;
//! neither the Event Socket password nor the device token may show.
//!
//! Test slot 19, shared with `asterisk_fcm.rs`: cargo runs test binaries one after
//! another, and end-to-end runs hold the Asterisk lock; the FreeSWITCH scenario listens
//! on slot 35's TCP port 19 (`freeswitch_e2e.rs` uses its first dozen). The Asterisk
//! scenario's `/metrics` (on the slot's TCP port 11), scraped after the call, is searched
//! too.

use std::time::Duration;

use base64::Engine as _;
use pushwake_testkit::config::{TestDevice, TestExtension, TestFcm};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::fcm::{FcmReply, FcmServer};
use pushwake_testkit::freeswitch::FreeSwitchRig;
use pushwake_testkit::hms::HmsServer;
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};
use serde_json::Value;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 19;

const HMS_APP: &str = "107654321";
const HMS_SECRET: &str = "5ec2e7a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5";
const API_TOKEN: &str = "apitok-7f3e9a1c5b2d8e4f6a0b3c7d9e1f2a4b6c8d0e";
const WRONG_TOKEN: &str = "wrongt-0000000000000000000000000000000000";

/// The woken phone's APNs VoIP token (also its contact's `pn-prid`).
fn woken_token() -> String {
    format!("{:02x}5ec7e7", SLOT).repeat(8)
}

/// An APNs token the stand-in refuses (`BadDeviceToken`).
fn refused_apns_token() -> String {
    format!("{:02x}badbad", SLOT).repeat(8)
}

fn fcm_token() -> String {
    format!("s{SLOT}Xq3kPTSa2:APA91bSecretFcmRegistrationToken-never-logged")
}

fn hms_token() -> String {
    format!("IQAAAACy0kYkAACwNz{SLOT:04}xJ8pT-secret_hms_device")
}

/// A token given through the device API (and one in a body the API refuses).
fn api_device_token() -> String {
    "a9".repeat(32)
}

fn refused_body_token() -> String {
    "c3".repeat(32)
}

/// One HTTP answer: status and body text.
async fn answer(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("the daemon answers HTTP");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Waits until `ready()` holds (checked each time the daemon logs a line or every 100 ms).
async fn wait_until(daemon: &Daemon, what: &str, ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SECS(20);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within 20 s; pushwake log:\n{}",
            daemon.logs()
        );
        let _ = daemon
            .wait_log_after(daemon.log_len(), "", Duration::from_millis(100))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_level_no_secret_reaches_the_log_or_any_answer() {
    let rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    // Whatever an earlier run left registered goes first: the phone must be asleep.
    rig.register(1, 1, 0, &woken_token()).await;
    let ext = rig.phone_number(1);

    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    fcm_server.script(&fcm_token(), FcmReply::unregistered());
    let hms_server = HmsServer::start(HMS_APP, HMS_SECRET).await.unwrap();
    hms_server.script(&hms_token(), 200, "80300007", None, None);
    rig.apns_server
        .script(&refused_apns_token(), 400, "BadDeviceToken");
    let hms_secret_file = rig.dir().join("hms.secret");
    std::fs::write(&hms_secret_file, format!("{HMS_SECRET}\n")).unwrap();
    std::fs::set_permissions(
        &hms_secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let http = format!("127.0.0.1:{}", rig.slot.port(10));
    let base = format!("http://{http}");
    let metrics_listen = format!("127.0.0.1:{}", rig.slot.port(11));
    let config = rig
        .config()
        .fcm(&fcm, &fcm_server.endpoint(), &fcm_server.token_uri())
        .http(&http, &base)
        .metrics(&metrics_listen)
        .api_tokens(&format!("{API_TOKEN}\n"))
        .extension(
            TestExtension::new(&ext, "20s")
                .device(TestDevice::apns(woken_token()))
                .device(TestDevice::apns(refused_apns_token()))
                .device(TestDevice::fcm(fcm_token()))
                .device(TestDevice {
                    platform: "hms",
                    token: hms_token(),
                    options: Vec::new(),
                }),
        )
        .raw(&format!(
            "[hms]\napp_id = \"{HMS_APP}\"\nclient_secret_file = \"{}\"\nendpoint = \"{}\"\ntoken_url = \"{}\"\n",
            hms_secret_file.display(),
            hms_server.endpoint(),
            hms_server.token_url(),
        ));
    let config = config.write().unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_pushwake"));
    let mut daemon = Daemon::start_with_env(
        binary,
        &config,
        "ARI events connected",
        &[("PUSHWAKE_LOG", "trace")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The libraries' own log records do reach the log (at debug): what follows is not
    // clean merely because nothing of theirs is written.
    daemon
        .wait_log("Client handshake done", SECS(5))
        .await
        .unwrap_or_else(|e| panic!("tungstenite's debug output is not in the log: {e}"));

    // Everything the daemon answers is searched too.
    let mut answers = Vec::new();
    let client = reqwest::Client::new();
    let devices = format!("{base}/v1/extensions/{ext}/devices");
    let put = |token: &str, body: String| {
        client
            .put(format!("{devices}/tablet"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
    };
    let good_body = format!(
        r#"{{"platform": "apns", "token": "{}"}}"#,
        api_device_token()
    );
    let (status, body) = answer(put(WRONG_TOKEN, good_body.clone())).await;
    assert_eq!(status, 401, "{body}");
    answers.push(body);
    let (status, body) = answer(client.get(&devices)).await;
    assert_eq!(status, 401, "{body}");
    answers.push(body);
    let bad_body = format!(
        r#"{{"platform": "apns", "token": "{}", "colour": "red"}}"#,
        refused_body_token()
    );
    let (status, body) = answer(put(API_TOKEN, bad_body)).await;
    assert_eq!(status, 422, "{body}");
    answers.push(body);
    let (status, body) = answer(put(API_TOKEN, good_body.clone())).await;
    assert_eq!(status, 201, "{body}");
    answers.push(body);
    // The same token for another device of the extension: 409, naming the other device.
    let (status, body) = answer(
        client
            .put(format!("{devices}/tablet2"))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(good_body),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    answers.push(body);
    let (status, body) = answer(client.get(&devices).bearer_auth(API_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    answers.push(body);

    // The woken call; the other devices' pushes are refused meanwhile.
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 2000 });
    // Two accepted: the woken phone's and the device the API added.
    let pushes = rig.unwrap(rig.apns_server.wait_for(2, SECS(15)).await);
    let push = pushes
        .iter()
        .find(|p| p.token == woken_token())
        .expect("the woken phone's push")
        .clone();
    let status_url = push.body["status_url"].as_str().expect("status_url");
    let status_token = push.body["status_token"]
        .as_str()
        .expect("status_token")
        .to_owned();
    let (status, body) = answer(client.get(status_url).bearer_auth(WRONG_TOKEN)).await;
    assert!(status == 401 || status == 404, "{status} {body}");
    answers.push(body);
    let (status, body) = answer(client.get(status_url).bearer_auth(&status_token)).await;
    assert_eq!(status, 200, "{body}");
    answers.push(body);
    rig.register(1, 1, 120, &woken_token()).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&phone),
        push.body["call_id"].as_str().unwrap()
    );
    daemon
        .wait_log("caller connected", SECS(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(&daemon, "the FCM refusal", || {
        !fcm_server.refused().is_empty()
    })
    .await;
    wait_until(&daemon, "the HMS refusal", || {
        !hms_server.refused().is_empty()
    })
    .await;
    wait_until(&daemon, "the APNs refusal", || {
        !rig.apns_server.rejected().is_empty()
    })
    .await;
    rig.register(1, 1, 0, &woken_token()).await;
    rig.assert_clean().await;
    let (status, metrics) =
        answer(reqwest::Client::new().get(format!("http://{metrics_listen}/metrics"))).await;
    assert_eq!(status, 200, "/metrics: {metrics}");
    assert!(
        metrics.contains("pushwake_pushes_total"),
        "/metrics lists the pushes: {metrics}"
    );
    let exit = daemon.terminate(SECS(15)).await.unwrap();
    assert!(exit.success(), "{exit:?}");

    let asterisk = &rig.pbx;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", asterisk.ari_user, asterisk.ari_password));
    let mut secrets: Vec<(String, String)> = vec![
        ("the ARI password".into(), asterisk.ari_password.clone()),
        ("the ARI Basic credentials".into(), basic.clone()),
        ("the HMS client secret".into(), HMS_SECRET.into()),
        ("the device API token".into(), API_TOKEN.into()),
        ("the wrong API token".into(), WRONG_TOKEN.into()),
        ("the call's status token".into(), status_token),
        ("the woken APNs device token".into(), woken_token()),
        ("the refused APNs device token".into(), refused_apns_token()),
        ("the FCM registration token".into(), fcm_token()),
        ("the HMS device token".into(), hms_token()),
        ("the device API's device token".into(), api_device_token()),
        (
            "the refused body's device token".into(),
            refused_body_token(),
        ),
    ];
    // The private keys' bodies, line by line (each line of base64 is unique to the key).
    for (name, pem) in [
        ("the APNs key", &rig.apns.key.private_pem),
        ("the FCM service account key", &fcm.key.private_pem),
    ] {
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            secrets.push((format!("{name} (PEM line {line:.8}…)"), line.to_owned()));
        }
    }
    secrets.extend(
        fcm_server
            .issued_tokens()
            .into_iter()
            .map(|t| ("an FCM access token".to_owned(), t)),
    );
    secrets.extend(
        hms_server
            .issued_tokens()
            .into_iter()
            .map(|t| ("an HMS access token".to_owned(), t)),
    );
    let log = daemon.logs();
    let mut leaks = Vec::new();
    for (name, secret) in &secrets {
        if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{name} is in the log: {line}"));
        }
        for body in answers.iter().filter(|b| b.contains(secret.as_str())) {
            leaks.push(format!("{name} is in an HTTP answer: {body}"));
        }
        if metrics.contains(secret.as_str()) {
            leaks.push(format!("{name} is on /metrics"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} log lines searched):\n{}",
        log.lines().count(),
        leaks.join("\n")
    );
    // The answers and the log are what was searched: they are not empty.
    assert!(answers
        .iter()
        .all(|a| serde_json::from_str::<Value>(a).is_ok()));
    assert!(log.lines().count() > 100, "a trace log of a whole call");

    // The cap lifted: the handshake request with its Basic credentials is in the log.
    let daemon = Daemon::start_with_env(
        binary,
        &config,
        "ARI events connected",
        &[("PUSHWAKE_LOG", "trace"), ("PUSHWAKE_LOG_WIRE", "1")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    daemon
        .wait_log(&basic, SECS(5))
        .await
        .unwrap_or_else(|e| panic!("with PUSHWAKE_LOG_WIRE=1 the handshake should show: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_freeswitch_at_trace_level_neither_the_event_socket_password_nor_a_token_shows() {
    let token = "f5".repeat(32);
    let switch = FreeSwitchRig::start_with_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_pushwake")),
        35,
        19,
        vec![TestExtension::new("101", "10s").device(TestDevice::apns(token.clone()))],
        &[("PUSHWAKE_LOG", "trace")],
    )
    .await;
    let _call = switch
        .call("e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd", "101")
        .await;
    let pushes = switch
        .apns
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", switch.daemon.logs()));
    assert_eq!(pushes[0].token, token);
    let log = switch.daemon.logs();
    // The rig's Event Socket password (testkit/src/freeswitch.rs).
    for (name, secret) in [
        ("the Event Socket password", "ClueCon"),
        ("the device token", token.as_str()),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("{name} is in the log: {line}");
        }
    }
    assert!(log.lines().count() > 10, "a trace log was written:\n{log}");
}
