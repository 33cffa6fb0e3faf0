//! A local APNs server: HTTP/2 without TLS (h2c, prior knowledge) with token
//! authentication, or HTTP/2 over TLS requiring a client certificate (certificate
//! authentication). It checks every push the way Apple does — the ES256 provider token
//! against the public half of the test key, the team and key ids (or the client
//! certificate, in the TLS handshake), the topic bound to the device token, the push type,
//! headers and JSON body — and answers like Apple. Accepted pushes are recorded and can be
//! awaited; a scripted reply can be set per device token to exercise error handling.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::keys::EcKey;

/// What the server expects of every push.
#[derive(Clone)]
pub struct ApnsExpectations {
    /// The key whose public half verifies the provider token.
    pub key: EcKey,
    /// Expected JWT `iss`.
    pub team_id: String,
    /// Expected JWT `kid`.
    pub key_id: String,
    /// Expected `apns-topic`.
    pub topic: String,
}

/// One push the server accepted.
#[derive(Clone, Debug)]
pub struct ReceivedPush {
    /// Device token from the path.
    pub token: String,
    /// Request headers (lower-case names).
    pub headers: HashMap<String, String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

/// A push the server refused, and why (a test expecting none asserts this list empty).
#[derive(Clone, Debug)]
pub struct RejectedPush {
    /// Device token from the path.
    pub token: String,
    /// APNs reason sent back.
    pub reason: String,
    /// What exactly was wrong.
    pub detail: String,
}

#[derive(Default)]
struct State {
    accepted: Mutex<Vec<ReceivedPush>>,
    rejected: Mutex<Vec<RejectedPush>>,
    scripted: Mutex<HashMap<String, (u16, String)>>,
    topics: Mutex<HashMap<String, String>>,
    certificate_auth: std::sync::atomic::AtomicBool,
    delay: Mutex<Duration>,
    connections: AtomicUsize,
    arrived: Notify,
}

/// The running server; stops when dropped.
pub struct ApnsServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The claims of a verified provider token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderClaims {
    /// Team id.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
}

/// Verifies an APNs provider token: ES256 header with `kid`, `iss` claim, signature by
/// `key`, and (when `now` is given) an `iat` not in the future and under an hour old.
pub fn verify_provider_token(
    jwt: &str,
    key: &EcKey,
    team_id: &str,
    key_id: &str,
    now: Option<u64>,
) -> Result<ProviderClaims, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!("a JWT has 3 parts, this has {}", parts.len()));
    };
    let header: Value =
        serde_json::from_slice(&b64.decode(header).map_err(|e| format!("header: {e}"))?)
            .map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "ES256" {
        return Err(format!("alg is {}, not ES256", header["alg"]));
    }
    if header["kid"] != key_id {
        return Err(format!("kid is {}, not {key_id}", header["kid"]));
    }
    let signature = b64
        .decode(signature)
        .map_err(|e| format!("signature: {e}"))?;
    let signed = &jwt[..jwt.len() - parts[2].len() - 1];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.public_point)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "signature does not verify with the test key".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&b64.decode(claims).map_err(|e| format!("claims: {e}"))?)
            .map_err(|e| format!("claims: {e}"))?;
    if claims["iss"] != team_id {
        return Err(format!("iss is {}, not {team_id}", claims["iss"]));
    }
    let iat = claims["iat"].as_u64().ok_or("iat missing")?;
    if let Some(now) = now {
        if iat > now + 60 || now.saturating_sub(iat) >= 3600 {
            return Err(format!("iat {iat} is not within the last hour (now {now})"));
        }
    }
    Ok(ProviderClaims {
        iss: team_id.to_owned(),
        iat,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ApnsServer {
    /// Starts a server on a free loopback port (h2c, token authentication).
    pub async fn start(expect: ApnsExpectations) -> std::io::Result<Self> {
        Self::start_inner(expect, None).await
    }

    /// Starts a server speaking HTTP/2 over TLS that, like Apple's, takes only clients
    /// presenting a certificate signed by `client_ca_pem` (certificate authentication;
    /// `expect`'s key is then unused). Returns the server and its own CA's PEM, for the
    /// client's trust store.
    pub async fn start_with_client_certificates(
        expect: ApnsExpectations,
        client_ca_pem: &str,
    ) -> std::io::Result<(Self, String)> {
        let (ca_pem, config) = crate::tls::server_config(&[b"h2"], Some(client_ca_pem))
            .map_err(std::io::Error::other)?;
        let server = Self::start_inner(expect, Some(Arc::new(config))).await?;
        server.state.certificate_auth.store(true, Ordering::SeqCst);
        Ok((server, ca_pem))
    }

    async fn start_inner(
        expect: ApnsExpectations,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let serving = state.clone();
        let expect = Arc::new(expect);
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                serving.connections.fetch_add(1, Ordering::SeqCst);
                let state = serving.clone();
                let expect = expect.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(state.clone(), expect.clone(), request)
                    });
                    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    // What Apple's servers advertise (SETTINGS_MAX_CONCURRENT_STREAMS).
                    http2.max_concurrent_streams(1000);
                    match acceptor {
                        None => {
                            let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                        }
                        // A client without an acceptable certificate fails the handshake.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            tls: is_tls,
            state,
            task,
        })
    }

    /// The base URL to configure as `apns.endpoint`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Binds `token` to the app `topic`, as Apple does: a push to it on another topic is
    /// refused with `DeviceTokenNotForTopic`. Unbound tokens take the expected VoIP topic.
    pub fn bind_token(&self, token: &str, topic: &str) {
        self.state
            .topics
            .lock()
            .unwrap()
            .insert(token.to_owned(), topic.to_owned());
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Pushes accepted so far.
    pub fn accepted(&self) -> Vec<ReceivedPush> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// Pushes refused so far.
    pub fn rejected(&self) -> Vec<RejectedPush> {
        self.state.rejected.lock().unwrap().clone()
    }

    /// Answers pushes to `token` with this status and APNs reason from now on.
    pub fn script(&self, token: &str, status: u16, reason: &str) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .insert(token.to_owned(), (status, reason.to_owned()));
    }

    /// Holds every answer back this long (to measure multiplexing).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Waits until `count` pushes have been accepted in all, and returns them; fails
    /// after `timeout`, listing what arrived and what was refused.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedPush>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let accepted = self.accepted();
            if accepted.len() >= count {
                return Ok(accepted);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "APNs server: {} push(es) accepted after {timeout:?}, wanted {count}; refused: {:?}",
                    accepted.len(),
                    self.rejected()
                ));
            }
        }
    }
}

async fn handle(
    state: Arc<State>,
    expect: Arc<ApnsExpectations>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let at = tokio::time::Instant::now();
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let Some(token) = path.strip_prefix("/3/device/").map(str::to_owned) else {
        // Apple answers unknown paths and methods like this; the client's warm-up lands here.
        return Ok(reply(404, "BadPath"));
    };
    let refuse = |status: u16, reason: &str, detail: String| {
        state.rejected.lock().unwrap().push(RejectedPush {
            token: token.clone(),
            reason: reason.to_owned(),
            detail,
        });
        state.arrived.notify_waiters();
        Ok(reply(status, reason))
    };
    if method != hyper::Method::POST {
        return refuse(405, "MethodNotAllowed", format!("method {method}"));
    }
    if state.certificate_auth.load(Ordering::SeqCst) {
        // The TLS handshake checked the client certificate; a provider token next to it
        // would mean the client mixes up the two ways of authenticating.
        if headers.contains_key("authorization") {
            return refuse(
                403,
                "InvalidProviderToken",
                "an authorization header over certificate authentication".to_owned(),
            );
        }
    } else {
        let jwt = headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("bearer "))
            .unwrap_or_default();
        if let Err(detail) = verify_provider_token(
            jwt,
            &expect.key,
            &expect.team_id,
            &expect.key_id,
            Some(unix_now()),
        ) {
            return refuse(403, "InvalidProviderToken", detail);
        }
    }
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    let bound = state.topics.lock().unwrap().get(&token).cloned();
    if header("apns-topic") != *bound.as_ref().unwrap_or(&expect.topic) {
        let reason = if bound.is_some() {
            "DeviceTokenNotForTopic"
        } else {
            "BadTopic"
        };
        return refuse(
            400,
            reason,
            format!("apns-topic {:?}", header("apns-topic")),
        );
    }
    let push_type = header("apns-push-type");
    // A VoIP push lives for the ring window; a missed-call alert may wait a day.
    let longest_expiration = match push_type.as_str() {
        "voip" => 330,
        "alert" => 2 * 86_400,
        _ => {
            return refuse(
                400,
                "InvalidPushType",
                format!("apns-push-type {push_type:?}"),
            )
        }
    };
    if header("apns-priority") != "10" {
        return refuse(
            400,
            "BadPriority",
            format!("apns-priority {:?}", header("apns-priority")),
        );
    }
    let now = unix_now();
    match header("apns-expiration").parse::<u64>() {
        Ok(exp) if exp > now && exp <= now + longest_expiration => {}
        _ => {
            return refuse(
                400,
                "BadExpirationDate",
                format!(
                    "apns-expiration {:?} (now {now})",
                    header("apns-expiration")
                ),
            )
        }
    }
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return refuse(400, "BadDeviceToken", "token not hex".to_owned());
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => return refuse(400, "PayloadEmpty", "body is not a JSON object".to_owned()),
    };
    for field in [
        "type",
        "call_id",
        "extension",
        "caller_number",
        "caller_name",
        "expires_at",
    ] {
        if body.get(field).is_none() {
            return refuse(400, "BadPayload", format!("body lacks {field}: {body}"));
        }
    }
    if push_type == "alert" && !body["aps"]["alert"].is_object() {
        return refuse(
            400,
            "BadPayload",
            format!("an alert without aps.alert: {body}"),
        );
    }
    if let Some((status, reason)) = state.scripted.lock().unwrap().get(&token).cloned() {
        return refuse(status, &reason, "scripted".to_owned());
    }
    state.accepted.lock().unwrap().push(ReceivedPush {
        token,
        headers,
        body,
        at,
    });
    state.arrived.notify_waiters();
    let mut response = Response::new(Full::new(Bytes::new()));
    response.headers_mut().insert(
        "apns-id",
        hyper::header::HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    );
    Ok(response)
}

fn reply(status: u16, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "reason": reason }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
