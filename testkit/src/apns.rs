//! A local APNs server: HTTP/2 without TLS (h2c, prior knowledge) with token
//! authentication, or HTTP/2 over TLS requiring a client certificate (certificate
//! authentication). It checks every push the way Apple does — the ES256 provider token
//! against the public half of the test key, the team and key ids (or the client
//! certificate, in the TLS handshake), the topic bound to the device token, the push type,
//! headers and JSON body — and answers like Apple. Accepted pushes are recorded and can be
//! awaited; a scripted reply can be set per device token to exercise error handling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::Engine as _;
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::Value;

use crate::keys::EcKey;
use crate::push_server::{
    reply, unix_now, with_content_type, Bound, HttpServer, Recorder, Reply, Request, Scripts,
    Transport,
};

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
    recorder: Recorder<ReceivedPush, RejectedPush>,
    scripts: Scripts<(u16, String)>,
    topics: Mutex<HashMap<String, String>>,
    certificate_auth: AtomicBool,
    /// Provider tokens whose signature already verified, with their `iat`. A provider
    /// sends the same token for up to an hour; checking its ES256 signature once (its
    /// age on every push) keeps the server's own CPU out of the fan-out benchmark.
    verified: Mutex<HashMap<String, u64>>,
}

/// The running server; stops when dropped.
pub struct ApnsServer {
    http: HttpServer,
    state: Arc<State>,
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
        check_issued_at(iat, now)?;
    }
    Ok(ProviderClaims {
        iss: team_id.to_owned(),
        iat,
    })
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
        Ok((server, ca_pem))
    }

    async fn start_inner(
        expect: ApnsExpectations,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        state
            .certificate_auth
            .store(tls.is_some(), Ordering::SeqCst);
        let bound = Bound::new(Transport::Http2 {
            tls,
            // What Apple's servers advertise (SETTINGS_MAX_CONCURRENT_STREAMS).
            max_concurrent_streams: Some(1000),
        })
        .await?;
        let serving = state.clone();
        let http = bound.serve(move |request| handle(&serving, &expect, request));
        Ok(Self { http, state })
    }

    /// The base URL to configure as `apns.endpoint`.
    pub fn endpoint(&self) -> String {
        self.http.base_url().to_owned()
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
        self.http.connections()
    }

    /// Pushes accepted so far.
    pub fn accepted(&self) -> Vec<ReceivedPush> {
        self.state.recorder.received()
    }

    /// How many pushes were accepted so far (cheap: nothing is copied).
    pub fn accepted_count(&self) -> usize {
        self.state.recorder.received_count()
    }

    /// How many pushes were refused so far (cheap: nothing is copied).
    pub fn rejected_count(&self) -> usize {
        self.state.recorder.refused_count()
    }

    /// Pushes refused so far.
    pub fn rejected(&self) -> Vec<RejectedPush> {
        self.state.recorder.refused()
    }

    /// Answers pushes to `token` with this status and APNs reason from now on.
    pub fn script(&self, token: &str, status: u16, reason: &str) {
        self.state
            .scripts
            .always(token, (status, reason.to_owned()));
    }

    /// Holds every answer back this long (to measure multiplexing).
    pub fn set_delay(&self, delay: Duration) {
        self.http.set_delay(delay);
    }

    /// Waits until `count` pushes have been accepted in all, and returns them; fails
    /// after `timeout`, listing what arrived and what was refused.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedPush>, String> {
        self.state
            .recorder
            .wait_received(count, timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "APNs server: {} push(es) accepted after {timeout:?}, wanted {count}; refused: {:?}",
                    self.accepted().len(),
                    self.rejected()
                )
            })
    }
}

impl State {
    /// Verifies `jwt` as [`verify_provider_token`] does, its signature only the first time.
    fn check_provider_token(&self, jwt: &str, expect: &ApnsExpectations) -> Result<(), String> {
        let now = unix_now();
        let known = self.verified.lock().unwrap().get(jwt).copied();
        let iat = match known {
            Some(iat) => iat,
            None => {
                let claims = verify_provider_token(
                    jwt,
                    &expect.key,
                    &expect.team_id,
                    &expect.key_id,
                    Some(now),
                )?;
                self.verified
                    .lock()
                    .unwrap()
                    .insert(jwt.to_owned(), claims.iat);
                claims.iat
            }
        };
        check_issued_at(iat, now)
    }
}

/// Apple refuses a provider token issued in the future or an hour ago or earlier.
fn check_issued_at(iat: u64, now: u64) -> Result<(), String> {
    if iat > now + 60 || now.saturating_sub(iat) >= 3600 {
        return Err(format!("iat {iat} is not within the last hour (now {now})"));
    }
    Ok(())
}

fn handle(state: &State, expect: &ApnsExpectations, request: Request) -> Reply {
    let at = tokio::time::Instant::now();
    let headers = request.header_map();
    let Some(token) = request.path.strip_prefix("/3/device/").map(str::to_owned) else {
        // Apple answers unknown paths and methods like this; the client's warm-up lands here.
        return apns_reply(404, "BadPath");
    };
    let refuse = |status: u16, reason: &str, detail: String| {
        state.recorder.refuse(RejectedPush {
            token: token.clone(),
            reason: reason.to_owned(),
            detail,
        });
        apns_reply(status, reason)
    };
    if request.method != hyper::Method::POST {
        return refuse(
            405,
            "MethodNotAllowed",
            format!("method {}", request.method),
        );
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
        if let Err(detail) = state.check_provider_token(jwt, expect) {
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
    // A VoIP push lives for the ring window; a missed-call alert may wait a day, a
    // message alert as long as its message is kept ([messages] max_age, 28 days at
    // most).
    let longest_expiration = match push_type.as_str() {
        "voip" => 330,
        "alert" => 28 * 86_400 + 60,
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
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => return refuse(400, "PayloadEmpty", "body is not a JSON object".to_owned()),
    };
    // pushwake's payload contract (docs/app-developers.md): a call's fields, or a
    // message's.
    let fields: &[&str] = if body["type"] == "message_received" {
        &crate::push_server::MESSAGE_FIELDS
    } else {
        &crate::push_server::DATA_FIELDS
    };
    for field in fields {
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
    if let Some((status, reason)) = state.scripts.next(&token) {
        return refuse(status, &reason, "scripted".to_owned());
    }
    state.recorder.receive(ReceivedPush {
        token,
        headers,
        body,
        at,
    });
    let mut response = reply(200, Bytes::new());
    response.headers_mut().insert(
        "apns-id",
        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    );
    response
}

fn apns_reply(status: u16, reason: &str) -> Reply {
    let body = serde_json::json!({ "reason": reason }).to_string();
    with_content_type(reply(status, body), "application/json")
}
