//! A local FCM server: HTTP/2 without TLS (h2c, prior knowledge) serving both halves of
//! FCM HTTP v1 the way Google does:
//! - the OAuth2 token endpoint (`POST /token`): a JWT-bearer grant whose RS256 assertion is
//!   verified against the public half of the test key with `aws-lc-rs` (not the signing
//!   library under test), with its `iss`, `scope`, `aud`, `iat` and `exp` checked; it
//!   issues random access tokens and counts requests;
//! - `POST /v1/projects/{project}/messages:send`: the bearer token must be one it issued
//!   (and not revoked), the project the expected one, the body a data-only message with
//!   string values, `android.priority = "HIGH"` and a `ttl` within the ring timeout; a
//!   message push (`data.type = "message_received"`) with `"NORMAL"` priority, a `ttl`
//!   of at most FCM's 28 days and an optional `collapse_key`.
//!
//! Accepted messages are recorded and can be awaited; error replies in FCM's own JSON
//! format (with an optional `Retry-After`) can be scripted per device token, and the token
//! endpoint can be made to fail. [`FcmServer::start_tls`] serves the same over TLS with a
//! throwaway CA, offering h2 and HTTP/1.1 in ALPN like Google's hosts, and records what
//! each client offered and what was negotiated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::keys::RsaKey;
use crate::push_server::{
    reply, unix_now, with_content_type, with_retry_after, Alpn, Bound, HttpServer, Recorder, Reply,
    Request, Scripts, Transport,
};

/// The OAuth2 scope an assertion must ask for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT-bearer grant type (RFC 7523).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub use crate::push_server::{DATA_FIELDS, MESSAGE_FIELDS};
/// The longest `ttl` FCM takes.
const FCM_MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);

/// What the server expects.
#[derive(Clone)]
pub struct FcmExpectations {
    /// The service account's key: its public half verifies assertions.
    pub key: RsaKey,
    /// The Firebase project in the send URL.
    pub project_id: String,
    /// The assertion's `iss`.
    pub client_email: String,
    /// The longest acceptable `android.ttl` (the ring timeout).
    pub max_ttl: Duration,
}

/// One message the server accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// `message.token`.
    pub token: String,
    /// `message.data`.
    pub data: BTreeMap<String, String>,
    /// `message.android`.
    pub android: Value,
    /// The whole body.
    pub body: Value,
    /// The access token it was sent with.
    pub access_token: String,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

/// A request the server refused, and why (a test expecting none asserts this list empty).
#[derive(Clone, Debug)]
pub struct Refusal {
    /// What was asked: `token` (the token endpoint) or the device token of a message.
    pub target: String,
    /// HTTP status sent back.
    pub status: u16,
    /// The error name sent back (`invalid_grant`, `UNREGISTERED`, …).
    pub code: String,
    /// What exactly was wrong.
    pub detail: String,
}

/// An FCM error reply, in FCM's JSON format.
#[derive(Clone, Debug)]
pub struct FcmReply {
    /// HTTP status.
    pub status: u16,
    /// Google API status (`NOT_FOUND`, `RESOURCE_EXHAUSTED`, …).
    pub api_status: String,
    /// The `FcmError` detail's `errorCode`, if any.
    pub error_code: Option<String>,
    /// The message text.
    pub message: String,
    /// Add a `google.rpc.BadRequest` detail naming `message.token`.
    pub token_field: bool,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

impl FcmReply {
    fn new(status: u16, api_status: &str, error_code: Option<&str>, message: &str) -> Self {
        Self {
            status,
            api_status: api_status.to_owned(),
            error_code: error_code.map(str::to_owned),
            message: message.to_owned(),
            token_field: false,
            retry_after: None,
        }
    }

    /// 404 `UNREGISTERED`: the app instance is gone.
    pub fn unregistered() -> Self {
        Self::new(
            404,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        )
    }

    /// 400 `INVALID_ARGUMENT` about the registration token.
    pub fn invalid_token() -> Self {
        Self {
            token_field: true,
            ..Self::new(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            )
        }
    }

    /// 403 `SENDER_ID_MISMATCH`: the token belongs to another project.
    pub fn sender_id_mismatch() -> Self {
        Self::new(
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            "SenderId mismatch",
        )
    }

    /// 429 `QUOTA_EXCEEDED`, with `Retry-After` if given.
    pub fn quota_exceeded(retry_after: Option<u64>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded for quota metric 'Send requests'.",
            )
        }
    }

    /// 503 `UNAVAILABLE`, with `Retry-After` if given.
    pub fn unavailable(retry_after: Option<u64>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                "The service is currently unavailable.",
            )
        }
    }

    /// 500 `INTERNAL`.
    pub fn internal() -> Self {
        Self::new(
            500,
            "INTERNAL",
            Some("INTERNAL"),
            "Internal error encountered.",
        )
    }

    /// 401 `THIRD_PARTY_AUTH_ERROR` (APNs / Web Push credentials of the project).
    pub fn third_party_auth_error() -> Self {
        Self::new(
            401,
            "UNAUTHENTICATED",
            Some("THIRD_PARTY_AUTH_ERROR"),
            "Auth error from APNS or Web Push Service",
        )
    }

    /// 401 `UNAUTHENTICATED`: the access token is refused.
    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
    }

    /// The reply body.
    pub fn body(&self) -> String {
        let mut details = Vec::new();
        if let Some(code) = &self.error_code {
            details.push(json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code,
            }));
        }
        if self.token_field {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{
                    "field": "message.token",
                    "description": "Invalid registration token",
                }],
            }));
        }
        let mut error = json!({
            "code": self.status,
            "message": self.message,
            "status": self.api_status,
        });
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        json!({ "error": error }).to_string()
    }

    fn response(&self) -> Reply {
        with_retry_after(json_response(self.status, self.body()), self.retry_after)
    }

    fn name(&self) -> String {
        self.error_code
            .clone()
            .unwrap_or_else(|| self.api_status.clone())
    }
}

#[derive(Default)]
struct State {
    recorder: Recorder<ReceivedMessage, Refusal>,
    /// Per device token.
    scripts: Scripts<FcmReply>,
    /// The token endpoint fails this many more times with (status, OAuth error).
    token_failures: Mutex<Option<(u16, String, usize)>>,
    issued: Mutex<Vec<String>>,
    revoked: Mutex<HashSet<String>>,
    token_lifetime: AtomicU64,
    token_requests: AtomicUsize,
    counter: AtomicU64,
}

/// The running server; stops when dropped.
pub struct FcmServer {
    http: HttpServer,
    state: Arc<State>,
}

/// The claims of a verified assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionClaims {
    /// The service account.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
}

/// Verifies a service-account assertion: RS256 header, signature by `key`, `iss` =
/// `client_email`, `scope` including the FCM scope, `aud` = `token_uri`, `exp` after `iat`
/// by at most an hour, and (when `now` is given) `iat` not in the future and `exp` not past.
pub fn verify_assertion(
    jwt: &str,
    key: &RsaKey,
    client_email: &str,
    token_uri: &str,
    now: Option<u64>,
) -> Result<AssertionClaims, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!("a JWT has 3 parts, this has {}", parts.len()));
    };
    let header: Value =
        serde_json::from_slice(&b64.decode(header).map_err(|e| format!("header: {e}"))?)
            .map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}, not RS256", header["alg"]));
    }
    let signature = b64
        .decode(signature)
        .map_err(|e| format!("signature: {e}"))?;
    let signed = &jwt[..jwt.len() - parts[2].len() - 1];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.public_der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "signature does not verify with the test key".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&b64.decode(claims).map_err(|e| format!("claims: {e}"))?)
            .map_err(|e| format!("claims: {e}"))?;
    if claims["iss"] != client_email {
        return Err(format!("iss is {}, not {client_email}", claims["iss"]));
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == SCOPE) {
        return Err(format!("scope {scopes:?} lacks {SCOPE}"));
    }
    if claims["aud"] != token_uri {
        return Err(format!("aud is {}, not {token_uri}", claims["aud"]));
    }
    let iat = claims["iat"].as_u64().ok_or("iat missing")?;
    let exp = claims["exp"].as_u64().ok_or("exp missing")?;
    if exp <= iat || exp - iat > 3600 {
        return Err(format!(
            "exp {exp} must be after iat {iat} by at most 3600 s"
        ));
    }
    if let Some(now) = now {
        if iat > now + 60 || exp <= now {
            return Err(format!("iat {iat} / exp {exp} do not cover now ({now})"));
        }
    }
    Ok(AssertionClaims {
        iss: client_email.to_owned(),
        iat,
        exp,
        kid: header["kid"].as_str().map(str::to_owned),
    })
}

impl FcmServer {
    /// Starts a server on a free loopback port, speaking HTTP/2 without TLS.
    pub async fn start(expect: FcmExpectations) -> std::io::Result<Self> {
        Self::start_inner(expect, None).await
    }

    /// Starts a server speaking TLS (ALPN h2 or HTTP/1.1; it serves only HTTP/2), with a
    /// certificate for 127.0.0.1 from a throwaway CA; returns the CA certificate (PEM)
    /// for the client to trust.
    pub async fn start_tls(expect: FcmExpectations) -> std::io::Result<(Self, String)> {
        // Google's order: h2 first, HTTP/1.1 for clients without it.
        let (ca_pem, config) = crate::tls::server_config(&[b"h2", b"http/1.1"], None)
            .map_err(std::io::Error::other)?;
        let server = Self::start_inner(expect, Some(Arc::new(config))).await?;
        Ok((server, ca_pem))
    }

    async fn start_inner(
        expect: FcmExpectations,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let bound = Bound::new(Transport::Http2 {
            tls,
            max_concurrent_streams: None,
        })
        .await?;
        let token_uri = format!("{}/token", bound.base_url());
        let state = Arc::new(State::default());
        state.token_lifetime.store(3600, Ordering::SeqCst);
        let serving = state.clone();
        let http = bound.serve(move |request| handle(&serving, &expect, &token_uri, request));
        Ok(Self { http, state })
    }

    /// The base URL to configure as `fcm.endpoint`.
    pub fn endpoint(&self) -> String {
        self.http.base_url().to_owned()
    }

    /// The token endpoint, for the service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.http.base_url())
    }

    /// Per TLS connection: the ALPN protocols the client offered and the one negotiated.
    pub fn alpn(&self) -> Vec<Alpn> {
        self.http.alpn()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.http.connections()
    }

    /// Requests to the token endpoint so far (granted or not).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Every access token issued so far (to check none leaks into logs).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<ReceivedMessage> {
        self.state.recorder.received()
    }

    /// Requests refused so far (scripted or wrong).
    pub fn refused(&self) -> Vec<Refusal> {
        self.state.recorder.refused()
    }

    /// Refusals that were not scripted: what the client did wrong.
    pub fn mistakes(&self) -> Vec<Refusal> {
        self.refused()
            .into_iter()
            .filter(|r| r.detail != "scripted")
            .collect()
    }

    /// Answers messages to `token` with `reply` from now on.
    pub fn script(&self, token: &str, reply: FcmReply) {
        self.state.scripts.always(token, reply);
    }

    /// Answers the next `times` messages to `token` with `reply`, then accepts again.
    pub fn script_times(&self, token: &str, reply: FcmReply, times: usize) {
        self.state.scripts.times(token, reply, times);
    }

    /// The token endpoint answers the next `times` requests with `status` and the OAuth
    /// `error` (e.g. 400 `invalid_grant`, 503 `temporarily_unavailable`).
    pub fn fail_token_requests(&self, status: u16, error: &str, times: usize) {
        *self.state.token_failures.lock().unwrap() = Some((status, error.to_owned(), times));
    }

    /// Every access token issued so far is refused from now on (401), as after a
    /// revocation.
    pub fn revoke_access_tokens(&self) {
        let issued = self.issued_tokens();
        self.state.revoked.lock().unwrap().extend(issued);
    }

    /// `expires_in` of the access tokens issued from now on (default 3600).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.state.token_lifetime.store(seconds, Ordering::SeqCst);
    }

    /// Holds every answer back this long (to measure multiplexing).
    pub fn set_delay(&self, delay: Duration) {
        self.http.set_delay(delay);
    }

    /// Waits until `count` messages have been accepted in all, and returns them; fails
    /// after `timeout`, listing what was refused.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, String> {
        self.state
            .recorder
            .wait_received(count, timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "FCM server: {} message(s) accepted after {timeout:?}, wanted {count}; refused: {:?}",
                    self.accepted().len(),
                    self.refused()
                )
            })
    }

    /// Waits until `count` requests have been refused in all.
    pub async fn wait_for_refusals(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Refusal>, String> {
        self.state
            .recorder
            .wait_refused(count, timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "FCM server: {} refusal(s) after {timeout:?}, wanted {count}: {:?}",
                    self.refused().len(),
                    self.refused()
                )
            })
    }
}

fn json_response(status: u16, body: String) -> Reply {
    with_content_type(reply(status, body), "application/json; charset=UTF-8")
}

fn handle(state: &State, expect: &FcmExpectations, token_uri: &str, request: Request) -> Reply {
    let post = request.method == hyper::Method::POST;
    let authorization = request.header("authorization").unwrap_or_default();
    let content_type = request.header("content-type").unwrap_or_default();
    if request.path == "/token" && post {
        token(state, expect, token_uri, content_type, &request.body)
    } else if let Some(project) = request
        .path
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
        .filter(|_| post)
    {
        send(state, expect, project, authorization, &request.body)
    } else {
        // Google answers unknown paths with a 404 page; the client's warm-up lands here.
        reply(
            404,
            &b"<!DOCTYPE html><title>Error 404 (Not Found)</title>"[..],
        )
    }
}

fn token(
    state: &State,
    expect: &FcmExpectations,
    token_uri: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let refuse = |status: u16, error: &str, detail: String| {
        state.recorder.refuse(Refusal {
            target: "token".into(),
            status,
            code: error.to_owned(),
            detail: detail.clone(),
        });
        json_response(
            status,
            json!({ "error": error, "error_description": detail }).to_string(),
        )
    };
    let scripted_failure = {
        let mut failures = state.token_failures.lock().unwrap();
        match failures.take() {
            Some((status, error, times)) => {
                if times > 1 {
                    *failures = Some((status, error.clone(), times - 1));
                }
                Some((status, error))
            }
            None => None,
        }
    };
    if let Some((status, error)) = scripted_failure {
        return refuse(status, &error, "scripted".into());
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return refuse(
            400,
            "invalid_request",
            format!("content-type {content_type:?}"),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return refuse(
            400,
            "unsupported_grant_type",
            format!("Invalid grant_type: {:?}", form.get("grant_type")),
        );
    }
    let assertion = form
        .get("assertion")
        .map(String::as_str)
        .unwrap_or_default();
    if let Err(detail) = verify_assertion(
        assertion,
        &expect.key,
        &expect.client_email,
        token_uri,
        Some(unix_now()),
    ) {
        return refuse(400, "invalid_grant", format!("Invalid JWT: {detail}"));
    }
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let random: u64 = {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(n);
        hasher.finish()
    };
    let access_token = format!("ya29.test-{n}-{random:016x}");
    state.issued.lock().unwrap().push(access_token.clone());
    json_response(
        200,
        json!({
            "access_token": access_token,
            "expires_in": state.token_lifetime.load(Ordering::SeqCst),
            "token_type": "Bearer",
        })
        .to_string(),
    )
}

fn send(
    state: &State,
    expect: &FcmExpectations,
    project: &str,
    authorization: &str,
    body: &[u8],
) -> Reply {
    let at = tokio::time::Instant::now();
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let device = parsed["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let refuse = |reply: FcmReply, detail: String| {
        state.recorder.refuse(Refusal {
            target: device.clone(),
            status: reply.status,
            code: reply.name(),
            detail,
        });
        reply.response()
    };
    let bad = |detail: String| {
        let reply = FcmReply::new(400, "INVALID_ARGUMENT", None, &detail);
        refuse(reply, detail)
    };
    let access_token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    let known = state.issued.lock().unwrap().contains(&access_token);
    if !known || state.revoked.lock().unwrap().contains(&access_token) {
        return refuse(
            FcmReply::unauthenticated(),
            format!("access token not issued here or revoked (known: {known})"),
        );
    }
    if project != expect.project_id {
        return refuse(
            FcmReply::new(403, "PERMISSION_DENIED", None, &format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).")),
            format!("project {project:?}"),
        );
    }
    if let Err(detail) = check_message(&parsed, expect.max_ttl) {
        return bad(detail);
    }
    if let Some(reply) = state.scripts.next(&device) {
        return refuse(reply, "scripted".into());
    }
    let message = &parsed["message"];
    let data = message["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    state.recorder.receive(ReceivedMessage {
        token: device,
        data,
        android: message["android"].clone(),
        body: parsed.clone(),
        access_token,
        at,
    });
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    json_response(
        200,
        json!({ "name": format!("projects/{project}/messages/0:{n}%{n:016x}") }).to_string(),
    )
}

/// The contract of a wake-up message; `Err` says what is wrong.
fn check_message(body: &Value, max_ttl: Duration) -> Result<(), String> {
    let top = body.as_object().ok_or("the body is not a JSON object")?;
    if let Some(key) = top.keys().find(|k| *k != "message") {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{key}\""
        ));
    }
    let message = top
        .get("message")
        .and_then(Value::as_object)
        .ok_or("message missing")?;
    for key in message.keys() {
        match key.as_str() {
            "token" | "data" | "android" => {}
            "notification" => {
                return Err("a notification message; pushwake sends data-only messages".into())
            }
            other => return Err(format!("message.{other} is not expected")),
        }
    }
    match message.get("token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => {}
        _ => return Err("Recipient of the message is not set.".into()),
    }
    let data = message
        .get("data")
        .and_then(Value::as_object)
        .ok_or("message.data missing")?;
    let mut size = 0;
    for (index, (key, value)) in data.iter().enumerate() {
        let Some(text) = value.as_str() else {
            return Err(format!(
                "Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}"
            ));
        };
        if key == "from" || key.starts_with("google") || key.starts_with("gcm") {
            return Err(format!("Invalid data payload key: {key}"));
        }
        size += key.len() + text.len();
    }
    if size > 4096 {
        return Err(format!("data of {size} bytes exceeds 4096"));
    }
    // A chat message waits for a dozing phone (normal priority, kept for days); a call
    // must wake it now (high priority, kept for the ring window).
    let is_message = data.get("type").and_then(Value::as_str) == Some("message_received");
    let (fields, priority, max_ttl): (&[&str], &str, Duration) = if is_message {
        (&MESSAGE_FIELDS, "NORMAL", FCM_MAX_TTL)
    } else {
        (&DATA_FIELDS, "HIGH", max_ttl)
    };
    for field in fields {
        if !data.contains_key(*field) {
            return Err(format!("message.data lacks {field}"));
        }
    }
    let android = message
        .get("android")
        .and_then(Value::as_object)
        .ok_or("message.android missing")?;
    for key in android.keys() {
        match key.as_str() {
            "priority" | "ttl" => {}
            "collapse_key" if is_message => {}
            "notification" => return Err("android.notification in a data-only message".into()),
            other => return Err(format!("android.{other} is not expected")),
        }
    }
    if android.get("priority").and_then(Value::as_str) != Some(priority) {
        return Err(format!(
            "android.priority is {:?}, not {priority}",
            android.get("priority")
        ));
    }
    let ttl = android
        .get("ttl")
        .and_then(Value::as_str)
        .ok_or("android.ttl missing")?;
    let seconds: f64 = ttl
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("android.ttl {ttl:?} is not a duration like \"20s\""))?;
    if seconds <= 0.0 || seconds > max_ttl.as_secs_f64() {
        return Err(format!(
            "android.ttl {ttl} is not within (0, {}s]",
            max_ttl.as_secs()
        ));
    }
    Ok(())
}
