//! The call status endpoint end to end on the real Asterisk (slot 25): the push a
//! sleeping phone gets carries `status_url` and `status_token`; the URL answers
//! `ringing` while the caller waits, refuses requests without the token (401) or with
//! another one (404), and tells how the call ended — `caller_hung_up` when the caller
//! gives up, `answered` then `ended`/`answered_elsewhere` when a woken phone takes it.

use std::time::Duration;

use pushwake_testkit::apns::ReceivedPush;
use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, Phone};
use pushwake_testkit::slot::Slot;
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 25;

fn token(slot: Slot) -> String {
    format!("{:02x}01", slot.0).repeat(16)
}

/// The phone (phone 1, device 1) registers for `expires` s.
async fn registration(rig: &Rig, expires: u32) {
    rig.register(1, 1, expires, &token(rig.slot)).await;
}

/// `GET url` with `token` as bearer token (none if `None`): the status code and JSON body.
async fn status(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

/// The status link of a push, checked against the call id and the configured base URL.
fn link(push: &ReceivedPush, base: &str) -> (String, String, String) {
    let call_id = push.body["call_id"].as_str().unwrap().to_owned();
    let url = push.body["status_url"]
        .as_str()
        .expect("status_url")
        .to_owned();
    let token = push.body["status_token"]
        .as_str()
        .expect("status_token")
        .to_owned();
    assert_eq!(url, format!("{base}/v1/calls/{call_id}"));
    assert_eq!(token.len(), 64, "32 bytes in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    (call_id, url, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_app_learns_ringing_then_how_the_call_ended_from_the_status_url() {
    let mut rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    registration(&rig, 0).await;
    let ext = rig.phone_number(1);
    // No reverse proxy here: the public URL is the listener itself (a TCP port of the
    // slot's range).
    let listen = format!("127.0.0.1:{}", rig.slot.port(19));
    let base = format!("http://{listen}");
    let config = rig
        .config()
        .http(&listen, &base)
        .extension(TestExtension::new(&ext, "30s").device(TestDevice::apns(token(rig.slot))));
    rig.start(config).await;
    rig.wait_log("http listening", SECS(5)).await;
    let client = reqwest::Client::new();
    // Rig::start waited for the daemon to serve (connected, Asterisk's channels read):
    // from then on /healthz says so.
    let healthz = format!("{base}/healthz");
    let (code, health) = status(&client, &healthz, None).await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["pbx"], "connected", "{health}");
    assert_eq!(health["store"], "ok", "{health}");
    assert_eq!(health["store_writes"], "ok", "{health}");
    let apns = health["providers"]["apns"]["state"].as_str();
    assert!(
        matches!(apns, Some("warming" | "warm")),
        "the local APNs server answers: {health}"
    );

    // 1. Nobody registers; the caller gives up after 5 s of ringback (time enough for
    //    the requests below).
    let mut call = rig.call(&ext, CallerEnd::Cancels { after_ms: 5000 });
    let push = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await)[0].clone();
    let (call_id, url, secret) = link(&push, &base);
    assert_eq!(
        status(&client, &url, Some(&secret)).await,
        (200, json!({"call_id": call_id, "status": "ringing"}))
    );
    let (code, body) = status(&client, &url, None).await;
    assert_eq!(code, 401, "{body}");
    let wrong = "0".repeat(64);
    assert_eq!(
        status(&client, &url, Some(&wrong)).await,
        (404, json!({"error": "not found"}))
    );
    rig.finish(&mut call, SECS(30)).await;
    // The board is written in the same step that logs this, on pushwake's one thread.
    rig.wait_log("caller hung up while waiting", SECS(10)).await;
    // APNs answered a push: /healthz says so (the verdict is recorded before it is
    // logged).
    rig.wait_log("push delivered", SECS(5)).await;
    let (code, health) = status(&client, &format!("{base}/healthz"), None).await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        health["providers"]["apns"],
        json!({"state": "warm"}),
        "{health}"
    );
    assert_eq!(
        status(&client, &url, Some(&secret)).await,
        (
            200,
            json!({"call_id": call_id, "status": "ended", "reason": "caller_hung_up"})
        )
    );
    rig.assert_clean().await;

    // 2. The woken phone registers and answers: `answered` while they talk, then ended
    //    — for any other device of the extension, answered elsewhere.
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 5000 });
    let push = rig.unwrap(rig.apns_server.wait_for(2, SECS(15)).await)[1].clone();
    let (second_id, url, secret) = link(&push, &base);
    assert_ne!(second_id, call_id);
    let skip = rig.daemon().log_len();
    registration(&rig, 120).await;
    rig.daemon()
        .wait_log_after(skip, "caller connected", SECS(15))
        .await
        .unwrap();
    assert_eq!(
        status(&client, &url, Some(&secret)).await,
        (200, json!({"call_id": second_id, "status": "answered"}))
    );
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    rig.daemon()
        .wait_log_after(skip, "caller hung up", SECS(10))
        .await
        .unwrap();
    assert_eq!(
        status(&client, &url, Some(&secret)).await,
        (
            200,
            json!({"call_id": second_id, "status": "ended", "reason": "answered_elsewhere"})
        )
    );
    // The first call's token opens only the first call.
    let first_url = format!("{base}/v1/calls/{call_id}");
    assert_eq!(status(&client, &first_url, Some(&secret)).await.0, 404);

    rig.assert_clean().await;
    assert!(
        rig.apns_server.rejected().is_empty(),
        "{:?}",
        rig.apns_server.rejected()
    );
    registration(&rig, 0).await;
    let logs = rig.logs();
    assert!(
        !logs.contains(&secret) && !logs.contains(&wrong),
        "a status token reached the log"
    );
}
