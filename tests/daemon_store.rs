//! The device store under real daemons, no PBX needed: two pushwake processes on one real
//! PostgreSQL server (started by the test) see each other's devices within a second,
//! a device registered through one's API survives its `kill -9`, and `pushwake devices`
//! reaches a running daemon on SQLite.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pushwake_testkit::config::{standalone, API_ADMIN};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::postgres::TestPostgres;
use pushwake_testkit::slot::Slot;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// This file's TCP ports for the daemons' listeners (slot 32's numbers; its UDP ports
/// are the phones', these are TCP).
const SLOT: u8 = 32;

fn listen(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], Slot::new(SLOT).port(n)))
}

async fn daemon(dir: &Path, addr: SocketAddr, store_url: Option<&str>) -> Daemon {
    let config = standalone(dir, &addr.to_string(), store_url).unwrap();
    Daemon::start_until(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        &config,
        "pushwake starting",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

async fn put(client: &reqwest::Client, addr: SocketAddr, path: &str, body: &Value) -> StatusCode {
    client
        .put(format!("http://{addr}{path}"))
        .bearer_auth(API_ADMIN)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn device_ids(client: &reqwest::Client, addr: SocketAddr, extension: &str) -> Vec<String> {
    let body: Value = client
        .get(format!("http://{addr}/v1/extensions/{extension}/devices"))
        .bearer_auth(API_ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `addr` until `extension`'s devices are `want`; how long it took.
async fn until_devices(
    client: &reqwest::Client,
    addr: SocketAddr,
    extension: &str,
    want: &[&str],
) -> Duration {
    let started = Instant::now();
    loop {
        if device_ids(client, addr, extension).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr} never showed {want:?} for {extension}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgres_see_each_others_devices_within_a_second() {
    let server = TestPostgres::shared().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = server.create_database("daemons").unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (listen(0), listen(1));
    let node_a = daemon(dir_a.path(), a, Some(&url)).await;
    let node_b = daemon(dir_b.path(), b, Some(&url)).await;
    let client = reqwest::Client::new();

    let mut latencies = Vec::new();
    for i in 0..10u8 {
        let id = format!("phone-{i}");
        let path = format!("/v1/extensions/201/devices/{id}");
        let (node, other) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let started = Instant::now();
        assert_eq!(
            put(
                &client,
                node,
                &path,
                &json!({"platform": "apns", "token": apns_token(i)})
            )
            .await,
            StatusCode::CREATED
        );
        let want: Vec<String> = (0..=i).map(|k| format!("phone-{k}")).collect();
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        until_devices(&client, other, "201", &want).await;
        latencies.push(started.elapsed());
    }
    // A delete on one node is gone from the other.
    let deleted = client
        .delete(format!("http://{a}/v1/extensions/201/devices/phone-0"))
        .bearer_auth(API_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let want: Vec<String> = (1..10).map(|k| format!("phone-{k}")).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    let gone = until_devices(&client, b, "201", &want).await;
    latencies.sort();
    println!(
        "two daemons on one PostgreSQL: PUT on one → listed by the other: median {:?}, max {:?} (10 devices); a DELETE gone from the other after {gone:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    // Generous for a shared CI machine; the measured figures are printed above.
    assert!(
        *latencies.last().unwrap() < Duration::from_secs(5),
        "{latencies:?}"
    );
    for node in [&node_a, &node_b] {
        assert!(!node.logs().contains(&apns_token(3)), "a token in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_survives_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = listen(2);
    let client = reqwest::Client::new();
    let mut first = daemon(dir.path(), addr, None).await;
    assert_eq!(
        put(
            &client,
            addr,
            "/v1/extensions/101/devices/iphone",
            &json!({"platform": "apns", "token": apns_token(1)})
        )
        .await,
        StatusCode::CREATED
    );
    // The 201 came after the commit: a crash right after it loses nothing.
    first.kill().await;
    let mut second = daemon(dir.path(), addr, None).await;
    second
        .wait_log("device store opened", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(device_ids(&client, addr, "101").await, ["iphone"]);
    second.terminate(Duration::from_secs(10)).await.unwrap();
    let third = daemon(dir.path(), addr, None).await;
    assert_eq!(device_ids(&client, addr, "101").await, ["iphone"]);
    let opened = third
        .wait_log("device store opened", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(opened.contains("devices=1"), "{opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_s_changes_reach_a_running_daemon_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let addr = listen(3);
    let client = reqwest::Client::new();
    let running = daemon(dir.path(), addr, None).await;
    let config = dir.path().join("pushwake.toml");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwake"))
            .arg("devices")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let token = apns_token(7);
    cli(&[
        "add",
        "--extension",
        "101",
        "desk-mobile",
        "--platform",
        "apns",
        "--token",
        &token,
    ]);
    let seen = until_devices(&client, addr, "101", &["desk-mobile"]).await;
    cli(&["remove", "--extension", "101", "desk-mobile"]);
    let gone = until_devices(&client, addr, "101", &[]).await;
    println!("pushwake devices add → listed by the running daemon after {seen:?}; remove → gone after {gone:?}");
    assert!(!running.logs().contains(&token), "a token in the log");
}
