//! The call status endpoint as an app sees it: the real listener on a loopback port, a
//! real HTTP client, a status board fed like the driver feeds it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pushwake::http::{Listener, Service};
use pushwake::push::EndReason;
use pushwake::status::{SharedBoard, StatusBoard, StatusUpdate};
use pushwake_core::pbx::CallId;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CALL: &str = "3a45e20c-31c2-49fb-afe2-7a37178af4f7";

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(board: SharedBoard) -> Running {
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve(Service::status_only(board), async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, server }
}

fn apply(board: &SharedBoard, update: StatusUpdate) {
    board
        .lock()
        .unwrap()
        .apply(Instant::now(), &CallId(CALL.into()), update);
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    (status, headers, body)
}

#[tokio::test]
async fn an_app_asks_with_its_token_and_learns_ringing_answered_ended() {
    let board = StatusBoard::shared();
    let secret = pushwake::status::fresh_secret();
    let running = start(board.clone()).await;
    let url = format!("http://{}/v1/calls/{CALL}", running.addr);
    let client = reqwest::Client::new();

    // Not (yet) known: 404, as for any unknown call.
    let (status, _, body) = get(&client, &url, Some(secret.expose())).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );

    apply(
        &board,
        StatusUpdate::Ringing {
            extension: "101".into(),
            secret: secret.clone(),
        },
    );
    let (status, headers, body) = get(&client, &url, Some(secret.expose())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"call_id": CALL, "status": "ringing"}));
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");

    // No token, or not a bearer token: 401 with the challenge.
    let (status, headers, body) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"pushwake\"");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let basic = client
        .get(&url)
        .basic_auth("app", Some(secret.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    // A wrong token gets exactly the answer an unknown call gets.
    let wrong = pushwake::status::fresh_secret();
    let (status, _, body) = get(&client, &url, Some(wrong.expose())).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );
    let other_call = format!("http://{}/v1/calls/{}", running.addr, uuid_like(2));
    let (status, _, body) = get(&client, &other_call, Some(secret.expose())).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );

    // Other methods on the call: 405; other paths: 404.
    let post = client
        .post(&url)
        .bearer_auth(secret.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET");
    let root = client
        .get(format!("http://{}/", running.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::NOT_FOUND);

    apply(&board, StatusUpdate::Answered);
    let (_, _, body) = get(&client, &url, Some(secret.expose())).await;
    assert_eq!(body, json!({"call_id": CALL, "status": "answered"}));
    apply(&board, StatusUpdate::Ended(EndReason::AnsweredElsewhere));
    let (_, _, body) = get(&client, &url, Some(secret.expose())).await;
    assert_eq!(
        body,
        json!({"call_id": CALL, "status": "ended", "reason": "answered_elsewhere"})
    );

    // The client keeps its connection alive; shutting down closes it and returns.
    running.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.server)
        .await
        .expect("the listener stops on shutdown")
        .unwrap();
    assert!(
        client.get(&url).send().await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_and_the_port_in_use_is_an_error() {
    let board = StatusBoard::shared();
    let running = start(board.clone()).await;
    let client = reqwest::Client::new();
    let huge = "x".repeat(pushwake::http::MAX_HEADER_BYTES * 2);
    let response = client
        .get(format!("http://{}/v1/calls/{CALL}", running.addr))
        .header("x-padding", huge)
        .send()
        .await;
    match response {
        // hyper answers 431 when it can, or closes the connection.
        Ok(response) => assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    // The listener still serves others afterwards.
    let after = client
        .get(format!("http://{}/v1/calls/{CALL}", running.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    let taken = Listener::bind(running.addr).await;
    assert_eq!(
        taken.unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse,
        "binding a port in use fails"
    );
    running.stop.send(()).unwrap();
    running.server.await.unwrap();
}

fn uuid_like(n: u32) -> String {
    format!("3a45e20c-31c2-49fb-afe2-{n:012}")
}
