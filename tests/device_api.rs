//! The device API as an app vendor's backend sees it: the real listener on a loopback
//! port, a real HTTP client, the real device store (SQLite in a temporary directory, or
//! a PostgreSQL server started by the test), the providers of a real configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pushwake::config::Config;
use pushwake::devices::service::Devices;
use pushwake::http::{Listener, Service};
use pushwake::status::StatusBoard;
use pushwake::store::{DeviceStore, StoreConfig};
use pushwake_core::directory::{DeviceSource, DeviceToken};
use pushwake_testkit::postgres::TestPostgres;
use pushwake_testkit::webpush::WebPushServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use pushwake_testkit::config::{
    standalone, API_ADMIN as ADMIN, API_DESK as DESK, API_TENANT as TENANT,
};

fn config(dir: &Path, store_url: Option<&str>) -> Config {
    let path = standalone(dir, "127.0.0.1:0", store_url).unwrap();
    pushwake::config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

struct Api {
    addr: SocketAddr,
    devices: Devices,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: &Config, with_tokens: bool) -> Api {
    let devices = Devices::start(&config.store, config.providers.clone())
        .await
        .unwrap();
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service {
        board: StatusBoard::shared(),
        devices: Some(devices.clone()),
        api_tokens: if with_tokens {
            config.http.as_ref().unwrap().api_tokens.clone()
        } else {
            None
        },
        // No PBX here: /healthz speaks of the store only.
        pbx: None,
        providers: None,
        messages: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener.serve(service, async move {
        let _ = stopped.await;
    }));
    Api {
        addr,
        devices,
        client: reqwest::Client::new(),
        _stop: stop,
    }
}

/// What an answer was: status, headers, and its JSON body (`Null` when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
        };
        Answer {
            status,
            headers,
            text,
            body,
        }
    }

    async fn get(&self, token: &str, path: &str) -> Answer {
        self.send(self.client.get(self.url(path)).bearer_auth(token))
            .await
    }

    async fn put(&self, token: &str, path: &str, body: &Value) -> Answer {
        self.send(
            self.client
                .put(self.url(path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn delete(&self, token: &str, path: &str) -> Answer {
        self.send(self.client.delete(self.url(path)).bearer_auth(token))
            .await
    }
}

/// A `PUT` of `chunks` chunks of `size` spaces with `Transfer-Encoding: chunked`, over
/// a plain socket; the answer's status line and headers.
async fn raw_chunked_put(
    addr: SocketAddr,
    path: &str,
    token: &str,
    chunks: usize,
    size: usize,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
        // The server may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer to the chunked PUT"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Asserts an error answer: its status, and the field it names.
fn refused(answer: &Answer, status: StatusCode, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert!(answer.body["error"].is_string(), "{}", answer.text);
    assert_eq!(
        answer.body.get("field").and_then(Value::as_str),
        field,
        "{}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_device_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, true).await;
    let phone = "/v1/extensions/101/devices/iphone";
    let iphone = json!({"platform": "apns", "token": apns_token(1), "environment": "sandbox"});

    // 401: no token, an unknown one, another scheme.
    let none = api
        .send(api.client.get(api.url("/v1/extensions/101/devices")))
        .await;
    refused(&none, StatusCode::UNAUTHORIZED, None);
    assert_eq!(
        none.headers["www-authenticate"],
        "Bearer realm=\"pushwake\""
    );
    let unknown = api
        .get(
            "unknown-0123456789abcdef0123456789abcdef",
            "/v1/extensions/101/devices",
        )
        .await;
    refused(&unknown, StatusCode::UNAUTHORIZED, None);
    let basic = api
        .send(
            api.client
                .get(api.url("/v1/extensions/101/devices"))
                .header("authorization", format!("Basic {ADMIN}")),
        )
        .await;
    refused(&basic, StatusCode::UNAUTHORIZED, None);

    // 201 for a new device, 200 when it is replaced; the token only as a fingerprint.
    let created = api.put(ADMIN, phone, &iphone).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.headers["cache-control"], "no-store");
    let fingerprint = DeviceToken::new(apns_token(1)).to_string();
    assert_eq!(
        created.body,
        json!({
            "extension": "101", "device_id": "iphone", "platform": "apns",
            "token": fingerprint, "learned": false,
            "updated_at": created.body["updated_at"], "settings": {"environment": "sandbox"}
        })
    );
    assert!(!created.text.contains(&apns_token(1)), "{}", created.text);
    let replaced = api
        .put(
            ADMIN,
            phone,
            &json!({"platform": "apns", "token": apns_token(2)}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    // The call path sees it at once.
    let pushed = api.devices.registry().devices_of("101");
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].token.expose(), apns_token(2));

    // GET: the list and one device; 404 for a device that is not there.
    let listed = api.get(ADMIN, "/v1/extensions/101/devices").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["extension"], "101");
    assert_eq!(listed.body["devices"].as_array().unwrap().len(), 1);
    assert!(!listed.text.contains(&apns_token(2)), "{}", listed.text);
    let one = api.get(ADMIN, phone).await;
    assert_eq!(
        one.body["token"],
        DeviceToken::new(apns_token(2)).to_string()
    );
    let empty = api.get(ADMIN, "/v1/extensions/999/devices").await;
    assert_eq!(empty.body["devices"], json!([]));
    refused(
        &api.get(ADMIN, "/v1/extensions/101/devices/ipad").await,
        StatusCode::NOT_FOUND,
        None,
    );

    // 403: a token whose scope does not cover the extension.
    refused(
        &api.put(TENANT, phone, &iphone).await,
        StatusCode::FORBIDDEN,
        None,
    );
    refused(
        &api.get(TENANT, "/v1/extensions/101/devices").await,
        StatusCode::FORBIDDEN,
        None,
    );

    // 405 with the methods the path takes.
    let post = api
        .send(api.client.post(api.url(phone)).bearer_auth(ADMIN))
        .await;
    refused(&post, StatusCode::METHOD_NOT_ALLOWED, None);
    assert_eq!(post.headers["allow"], "GET, PUT, DELETE");
    let put_list = api.put(ADMIN, "/v1/extensions/101/devices", &iphone).await;
    refused(&put_list, StatusCode::METHOD_NOT_ALLOWED, None);
    assert_eq!(put_list.headers["allow"], "GET");

    // 415: not JSON's media type; 413: too large (declared, and sent without a length).
    let text_plain = api
        .send(
            api.client
                .put(api.url(phone))
                .bearer_auth(ADMIN)
                .header("content-type", "text/plain")
                .body(iphone.to_string()),
        )
        .await;
    refused(&text_plain, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    let huge = json!({"platform": "apns", "token": "ab".repeat(20_000)});
    refused(
        &api.put(ADMIN, phone, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
    // Chunked, with no length announced: the limit holds while reading.
    let streamed = raw_chunked_put(api.addr, phone, ADMIN, 40, 1024).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");

    // 400: not JSON at all.
    let garbage = api
        .send(
            api.client
                .put(api.url(phone))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json; charset=utf-8")
                .body("{\"platform\": \"apns\", "),
        )
        .await;
    refused(&garbage, StatusCode::BAD_REQUEST, None);

    // 422, naming the field.
    for (body, field) in [
        (json!(["apns"]), None),
        (json!({"token": apns_token(3)}), Some("platform")),
        (
            json!({"platform": 7, "token": apns_token(3)}),
            Some("platform"),
        ),
        (json!({"platform": "apns"}), Some("token")),
        (json!({"platform": "apns", "token": 12345}), Some("token")),
        (
            json!({"platform": "apns", "token": "not hex"}),
            Some("token"),
        ),
        (
            json!({"platform": "apns", "token": apns_token(3), "environment": "staging"}),
            Some("environment"),
        ),
        (
            json!({"platform": "apns", "token": apns_token(3), "topic": ""}),
            Some("topic"),
        ),
        (
            json!({"platform": "apns", "token": apns_token(3), "colour": "red"}),
            Some("colour"),
        ),
        (json!({"platform": "hms", "token": "abc"}), Some("platform")),
        (
            json!({"platform": "carrier-pigeon", "token": "abc"}),
            Some("platform"),
        ),
        (
            json!({"platform": "fcm", "token": "x", "allow-call-push": "perhaps"}),
            Some("allow-call-push"),
        ),
        (
            json!({"platform": "webpush", "subscription": "not an object"}),
            Some("subscription"),
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "ftp://x"}}),
            Some("subscription"),
        ),
        (
            json!({"device-os": "symbian", "device-uid": "abc"}),
            Some("device-os"),
        ),
    ] {
        let answer = api
            .put(ADMIN, "/v1/extensions/101/devices/other", &body)
            .await;
        refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, field);
        assert!(!answer.text.contains(&apns_token(3)), "{}", answer.text);
    }
    refused(
        &api.put(
            ADMIN,
            "/v1/extensions/101/devices/learned-apns-1234",
            &iphone,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("device_id"),
    );
    // Ids that could not be an extension or a device id.
    refused(
        &api.get(ADMIN, "/v1/extensions/1%2001/devices").await,
        StatusCode::NOT_FOUND,
        Some("extension"),
    );
    refused(
        &api.delete(ADMIN, "/v1/extensions/101/devices/a'b").await,
        StatusCode::NOT_FOUND,
        Some("device_id"),
    );

    // 409: the same token under another id of the same extension.
    let twin = api
        .put(
            ADMIN,
            "/v1/extensions/101/devices/ipad",
            &json!({"platform": "apns", "token": apns_token(2)}),
        )
        .await;
    refused(&twin, StatusCode::CONFLICT, Some("token"));
    assert!(
        twin.body["error"].as_str().unwrap().contains("iphone"),
        "{}",
        twin.text
    );
    assert!(!twin.text.contains(&apns_token(2)), "{}", twin.text);

    // DELETE: 204, then 404; gone from the call path at once.
    let deleted = api.delete(ADMIN, phone).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert!(deleted.text.is_empty());
    assert!(api.devices.registry().devices_of("101").is_empty());
    refused(&api.delete(ADMIN, phone).await, StatusCode::NOT_FOUND, None);

    // The store holds what the API answered for (a fresh connection to the same file).
    api.put(ADMIN, phone, &iphone).await;
    let store = DeviceStore::open(&config.store.store).await.unwrap();
    let stored = store.load_all().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].token, apns_token(1));
    assert_eq!(stored[0].params.get("environment"), Some("sandbox"));

    // /healthz: no token needed.
    let health = api.send(api.client.get(api.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["store"], "ok");
    assert_eq!(health.body["store_writes"], "ok");
    assert_eq!(health.body["pending_writes"], 0);
    assert_eq!(health.body["backend"], "sqlite");
    assert_eq!(health.body["devices"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_manage_only_their_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, true).await;
    let fcm = json!({"platform": "fcm", "token": "fcm-token-for-the-tenant:APA91b"});
    for (token, extension, allowed) in [
        (TENANT, "200", true),
        (TENANT, "2999", true),
        (TENANT, "301", false),
        (TENANT, "12", false),
        (DESK, "101", true),
        (DESK, "102", true),
        (DESK, "1021", false),
        (DESK, "200", false),
        (ADMIN, "301", true),
    ] {
        let path = format!("/v1/extensions/{extension}/devices/phone");
        let put = api.put(token, &path, &fcm).await;
        let get = api
            .get(token, &format!("/v1/extensions/{extension}/devices"))
            .await;
        let delete = api.delete(token, &path).await;
        if allowed {
            assert_eq!(put.status, StatusCode::CREATED, "{extension}: {}", put.text);
            assert_eq!(get.status, StatusCode::OK, "{extension}: {}", get.text);
            assert_eq!(
                delete.status,
                StatusCode::NO_CONTENT,
                "{extension}: {}",
                delete.text
            );
        } else {
            for answer in [&put, &get, &delete] {
                refused(answer, StatusCode::FORBIDDEN, None);
                assert!(answer.text.contains(extension), "{}", answer.text);
            }
        }
    }
    assert!(api.devices.registry().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_tokens_the_device_api_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, false).await;
    let answer = api.get(ADMIN, "/v1/extensions/101/devices").await;
    refused(&answer, StatusCode::NOT_FOUND, None);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("api_tokens_file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portsip_fields_and_web_push_subscriptions_are_taken_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, true).await;

    // PortSIP on iOS: the VoIP token, then the APNs token; the app id names the topic.
    let ios = json!({
        "device-os": "ios",
        "device-uid": format!("{}|{}", apns_token(7), apns_token(8)),
        "app-id": "com.example.portsip",
        "allow-call-push": "true",
        "allow-message-push": false,
    });
    let answer = api
        .put(ADMIN, "/v1/extensions/201/devices/ios-1", &ios)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.body["platform"], "apns");
    assert_eq!(
        answer.body["token"],
        DeviceToken::new(apns_token(7)).to_string()
    );
    let settings = &answer.body["settings"];
    assert_eq!(settings["topic"], "com.example.portsip.voip");
    assert_eq!(
        settings["alert_token"],
        DeviceToken::new(apns_token(8)).to_string()
    );
    assert_eq!(settings["device-os"], "ios");
    assert_eq!(settings["allow-call-push"], "true");
    assert_eq!(settings["allow-message-push"], "false");
    assert!(!answer.text.contains(&apns_token(8)), "{}", answer.text);
    let pushed = api.devices.registry().devices_of("201");
    assert_eq!(pushed[0].token.expose(), apns_token(7));
    assert_eq!(
        pushed[0].params.get("alert_token"),
        Some(apns_token(8).as_str())
    );

    // allow-call-push false: kept, not woken for calls.
    let android = json!({"device-os": "android", "device-uid": "fcm:token-of-an-android", "allow-call-push": false});
    let answer = api
        .put(ADMIN, "/v1/extensions/202/devices/a-1", &android)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.body["platform"], "fcm");
    assert!(api.devices.registry().devices_of("202").is_empty());
    assert_eq!(api.devices.registry().list("202").len(), 1);

    // Web Push: the subscription object as the browser gives it.
    let server = WebPushServer::start().await.unwrap();
    let subscription: Value = serde_json::from_str(&server.subscription_json("browser")).unwrap();
    let answer = api
        .put(
            ADMIN,
            "/v1/extensions/203/devices/firefox",
            &json!({"platform": "webpush", "subscription": subscription}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let pushed = api.devices.registry().devices_of("203");
    let kept: Value = serde_json::from_str(pushed[0].token.expose()).unwrap();
    assert_eq!(kept, subscription);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_quotes_sql_and_unicode_are_stored_and_returned_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, true).await;
    let server = WebPushServer::start().await.unwrap();
    let weird_webhook = [
        r#"it's"quoted"\back"#,
        "x');DROP_TABLE_devices;--",
        "%s%n%x$1\\0",
        "a\"b'c`d$(id)",
    ];
    let mut expected = Vec::new();
    for (i, token) in weird_webhook.iter().enumerate() {
        let id = format!("hook-{i}");
        let answer = api
            .put(
                ADMIN,
                &format!("/v1/extensions/301/devices/{id}"),
                &json!({"platform": "webhook", "token": token}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        assert_eq!(answer.body["token"], DeviceToken::new(*token).to_string());
        expected.push((id, token.to_string()));
    }
    // Unicode, quotes and SQL in a Web Push subscription (its endpoint and an extra
    // member the browser may add).
    let mut subscription: Value =
        serde_json::from_str(&server.subscription_json("ünï'cödé\"; DROP TABLE devices;--日本"))
            .unwrap();
    subscription["note"] = json!("😀 \u{202e} 'quoted' \"double\" \\ \u{0007}");
    let answer = api
        .put(
            ADMIN,
            "/v1/extensions/301/devices/browser",
            &json!({"platform": "webpush", "subscription": subscription}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    expected.push(("browser".into(), subscription.to_string()));

    // The call path, and the store read afresh, hold each token byte for byte.
    let pushed = api.devices.registry().devices_of("301");
    let stored = DeviceStore::open(&config.store.store)
        .await
        .unwrap()
        .load_all()
        .await
        .unwrap();
    for (id, token) in &expected {
        let label = format!("301/{id}");
        let device = pushed.iter().find(|d| d.label == label).unwrap();
        assert_eq!(device.token.expose(), token);
        let row = stored.iter().find(|d| &d.device_id == id).unwrap();
        assert_eq!(&row.token, token);
    }
    // And the listing names each by the same fingerprint.
    let listed = api.get(ADMIN, "/v1/extensions/301/devices").await;
    for (id, token) in &expected {
        let shown = listed.body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id.as_str())
            .unwrap();
        assert_eq!(shown["token"], DeviceToken::new(token.as_str()).to_string());
    }
}

/// PostgreSQL stopped mid-run: the API's writes answer 503 with Retry-After, reads and
/// calls use the devices in memory, `/healthz` says so; once it is back, writes go
/// through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_writes_answer_503_and_calls_use_the_cache() {
    let mut server =
        TestPostgres::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(&url));
    let api = start(&config, true).await;
    let phone = "/v1/extensions/101/devices/iphone";
    let created = api
        .put(
            ADMIN,
            phone,
            &json!({"platform": "apns", "token": apns_token(1)}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let health = api.send(api.client.get(api.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["backend"], "postgres");

    server.stop().unwrap();
    let started = Instant::now();
    let write = api
        .put(
            ADMIN,
            "/v1/extensions/101/devices/ipad",
            &json!({"platform": "apns", "token": apns_token(2)}),
        )
        .await;
    refused(&write, StatusCode::SERVICE_UNAVAILABLE, None);
    assert_eq!(write.headers["retry-after"], "5");
    assert!(
        !write.text.contains(&url),
        "the URL holds the password: {}",
        write.text
    );
    refused(
        &api.delete(ADMIN, phone).await,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
    );
    println!(
        "postgres down: the write answered 503 after {:?}",
        started.elapsed()
    );
    let health = api.send(api.client.get(api.url("/healthz"))).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text
    );
    assert_eq!(health.body["store"], "unavailable");
    // A phone registering meanwhile is learned in memory; its write waits, and
    // /healthz says the store takes no writes.
    let contact = format!(
        "sip:101@10.0.0.9:5070;pn-provider=apns;pn-prid={};pn-param=TEAM123456.com.example.phone.voip",
        apns_token(7)
    );
    assert!(matches!(
        api.devices.registry().learn("101", &contact, 1_796_000_000),
        pushwake::devices::Learned::New(_)
    ));
    let health = wait_health(&api, |body| body["store_writes"] == "failing").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["pending_writes"], 1, "{}", health.text);
    // Reads and the call path: the devices in memory.
    let listed = api.get(ADMIN, "/v1/extensions/101/devices").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["devices"].as_array().unwrap().len(), 2);
    let pushed = api.devices.registry().devices_of("101");
    assert_eq!(pushed.len(), 2);
    assert!(pushed.iter().any(|d| d.token.expose() == apns_token(1)));

    server.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let write = api
            .put(
                ADMIN,
                "/v1/extensions/101/devices/ipad",
                &json!({"platform": "apns", "token": apns_token(2)}),
            )
            .await;
        if write.status == StatusCode::CREATED {
            break;
        }
        refused(&write, StatusCode::SERVICE_UNAVAILABLE, None);
        assert!(Instant::now() < deadline, "writes never went through again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.devices.registry().devices_of("101").len(), 3);
    // The learned device's write went through too.
    let health = wait_health(&api, |body| body["store_writes"] == "ok").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["pending_writes"], 0, "{}", health.text);
    let stored = DeviceStore::open(&StoreConfig { url })
        .await
        .unwrap()
        .load_all()
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
}

/// `/healthz` once its body satisfies `ready` (within 30 s: the store's writer tries
/// again every 3 s).
async fn wait_health(api: &Api, ready: impl Fn(&serde_json::Value) -> bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = api.send(api.client.get(api.url("/healthz"))).await;
        if ready(&health.body) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never got there: {}",
            health.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token a phone registered itself (RFC 8599) and the backend then registers through
/// the API: one device, the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_over_a_token_the_phone_registered_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let api = start(&config, true).await;
    let contact = format!(
        "sip:101@10.0.0.9:5070;pn-provider=apns;pn-prid={};pn-param=TEAM123456.com.example.phone.voip",
        apns_token(5)
    );
    let learned = match api.devices.registry().learn("101", &contact, 1_796_000_000) {
        pushwake::devices::Learned::New(device) => device,
        other => panic!("{other:?}"),
    };
    let store = DeviceStore::open(&config.store.store).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .get("101", &learned.device_id)
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the learned device never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = api
        .put(
            ADMIN,
            "/v1/extensions/101/devices/iphone",
            &json!({"platform": "apns", "token": apns_token(5)}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let listed = api.get(ADMIN, "/v1/extensions/101/devices").await;
    let ids: Vec<&str> = listed.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["iphone"]);
    let stored = store.load_all().await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(!stored[0].learned);
    // The phone registering again changes nothing: the token is the backend's now.
    assert_eq!(
        api.devices.registry().learn("101", &contact, 1_796_000_100),
        pushwake::devices::Learned::Known
    );
}
