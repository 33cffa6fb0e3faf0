//! A local Web Push service (RFC 8030), standing in for a browser's push service and the
//! browser behind it: HTTP/1.1 without TLS.
//!
//! It holds a subscriber key pair (generated, as a browser would) and hands out
//! `PushSubscription.toJSON()` strings for it. Every `POST` is checked the way a push service
//! and a user agent would: the `Authorization: vapid t=<jwt>, k=<key>` JWT must verify
//! (ES256) against the `k=` key, its `aud` must be this service's origin and its `exp` in
//! the next 24 hours, `sub` a `mailto:` or `https:` URL; `Content-Encoding: aes128gcm`,
//! a `TTL` and `Urgency` must be present; and the body is **decrypted with the subscriber's
//! private key** by this module's own RFC 8291 / RFC 8188 implementation (aws-lc-rs
//! primitives, not pushwake's code). Requests failing a check are answered 400 (401 for
//! VAPID) and recorded as mistakes; good ones are recorded with their decrypted JSON and
//! answered 201, or as scripted per subscription (410, 404, 429, 503, with an optional
//! `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{aead, agreement, hkdf, signature};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A new VAPID private key: PKCS#8 PEM, P-256 (as `openssl genpkey … P-256` writes it).
pub fn generate_vapid_pem() -> String {
    pkcs8_pem(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
}

/// A new PKCS#8 PEM EC private key on `alg`'s curve (P-384 for "not P-256" tests).
pub fn pkcs8_pem(alg: &'static signature::EcdsaSigningAlgorithm) -> String {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// One push that verified and decrypted.
#[derive(Clone, Debug)]
pub struct WebPushMessage {
    /// The subscription's path (`/wpush/<name>`).
    pub subscription: String,
    /// The decrypted body, parsed as JSON.
    pub json: Value,
    /// The `TTL` header.
    pub ttl: u64,
    /// The `Urgency` header.
    pub urgency: String,
    /// The status it was answered with.
    pub answered: u16,
}

/// A scripted answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebPushReply {
    /// The status.
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

impl WebPushReply {
    /// An answer with this status and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

struct State {
    origin: String,
    ua_private: agreement::PrivateKey,
    ua_public: Vec<u8>,
    auth: [u8; 16],
    messages: Mutex<Vec<WebPushMessage>>,
    mistakes: Mutex<Vec<String>>,
    scripts: Mutex<HashMap<String, VecDeque<WebPushReply>>>,
    arrived: Notify,
}

/// The running service; stops when dropped.
pub struct WebPushServer {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebPushServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebPushServer {
    /// Starts a service on a free loopback port with a new subscriber key pair.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ua_private =
            agreement::PrivateKey::generate(&agreement::ECDH_P256).expect("subscriber key");
        let ua_public = ua_private
            .compute_public_key()
            .expect("public key")
            .as_ref()
            .to_vec();
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::fill(&mut auth).expect("random auth secret");
        let state = Arc::new(State {
            origin: format!("http://{addr}"),
            ua_private,
            ua_public,
            auth,
            messages: Mutex::default(),
            mistakes: Mutex::default(),
            scripts: Mutex::default(),
            arrived: Notify::new(),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = serving.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { state, task })
    }

    /// The service's origin (`http://127.0.0.1:<port>`), the VAPID JWT's `aud`.
    pub fn origin(&self) -> String {
        self.state.origin.clone()
    }

    /// The `PushSubscription.toJSON()` of subscription `name` (all share the key pair).
    pub fn subscription_json(&self, name: &str) -> String {
        serde_json::json!({
            "endpoint": format!("{}/wpush/{name}", self.state.origin),
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(&self.state.ua_public),
                "auth": URL_SAFE_NO_PAD.encode(self.state.auth),
            }
        })
        .to_string()
    }

    /// Answers the next `times` pushes to subscription `name` with `reply` (then 201).
    pub fn script(&self, name: &str, reply: WebPushReply, times: usize) {
        let mut scripts = self.state.scripts.lock().unwrap();
        let queue = scripts.entry(format!("/wpush/{name}")).or_default();
        queue.extend(std::iter::repeat_n(reply, times));
    }

    /// Every verified, decrypted push in arrival order, whatever it was answered.
    pub fn messages(&self) -> Vec<WebPushMessage> {
        self.state.messages.lock().unwrap().clone()
    }

    /// The pushes answered 2xx.
    pub fn delivered(&self) -> Vec<WebPushMessage> {
        self.messages()
            .into_iter()
            .filter(|m| (200..300).contains(&m.answered))
            .collect()
    }

    /// Requests that failed a check.
    pub fn mistakes(&self) -> Vec<String> {
        self.state.mistakes.lock().unwrap().clone()
    }

    /// Waits for the first delivered push whose JSON `type` is `kind`.
    pub async fn wait_for(
        &self,
        kind: &str,
        timeout: std::time::Duration,
    ) -> Result<WebPushMessage, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            if let Some(m) = self
                .delivered()
                .into_iter()
                .find(|m| m.json["type"] == kind)
            {
                return Ok(m);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "web push service: no delivered {kind} after {timeout:?}; pushes: {:?}; mistakes: {:?}",
                    self.messages()
                        .iter()
                        .map(|m| (m.json["type"].clone(), m.answered))
                        .collect::<Vec<_>>(),
                    self.mistakes()
                ));
            }
        }
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("hkdf");
    out
}

/// Decrypts an `aes128gcm` Web Push body as the user agent does (RFC 8291 §3.4, RFC 8188
/// §2): returns the plaintext without its padding.
pub fn decrypt(
    body: &[u8],
    ua_private: &agreement::PrivateKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("body shorter than the aes128gcm header".into());
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
    let idlen = body[20] as usize;
    if idlen != 65 || body.len() < 21 + idlen + 17 {
        return Err(format!("idlen {idlen}: keyid is not a P-256 public key"));
    }
    let as_public = &body[21..21 + idlen];
    let mut record = body[21 + idlen..].to_vec();
    if rs < 18 || record.len() > rs as usize {
        return Err(format!(
            "record of {} bytes with rs {rs}: not one record",
            record.len()
        ));
    }
    let shared = agreement::agree(
        ua_private,
        agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, as_public),
        "ECDH with the keyid failed".to_owned(),
        |secret| Ok(secret.to_vec()),
    )?;
    let mut info = b"WebPush: info\x00".to_vec();
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let ikm = hkdf(auth, &shared, &info, 32);
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\x00", 16);
    let nonce: [u8; 12] = hkdf(salt, &ikm, b"Content-Encoding: nonce\x00", 12)
        .try_into()
        .unwrap();
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            &mut record,
        )
        .map_err(|_| "the record does not decrypt (wrong keys or derivation)".to_owned())?;
    let end = plain
        .iter()
        .rposition(|b| *b != 0)
        .ok_or("no padding delimiter")?;
    if plain[end] != 2 {
        return Err(format!(
            "padding delimiter is {:#04x}, not 0x02 (last record)",
            plain[end]
        ));
    }
    Ok(plain[..end].to_vec())
}

/// Checks `Authorization: vapid t=<jwt>, k=<key>` for `origin` at `now`.
pub fn verify_vapid(header: Option<&str>, origin: &str, now: u64) -> Result<(), String> {
    let header = header.ok_or("no Authorization header")?;
    let rest = header
        .strip_prefix("vapid ")
        .ok_or("Authorization is not the vapid scheme")?;
    let mut jwt = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            jwt = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (jwt, k) = (jwt.ok_or("no t=")?, k.ok_or("no k=")?);
    let key = URL_SAFE_NO_PAD
        .decode(k)
        .map_err(|_| "k= is not base64url")?;
    if key.len() != 65 || key[0] != 4 {
        return Err("k= is not an uncompressed P-256 point".into());
    }
    let (signed, sig) = jwt.rsplit_once('.').ok_or("t= is not a JWT")?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| "JWT signature is not base64url")?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| "the VAPID JWT does not verify with k=")?;
    let (header_b64, claims_b64) = signed.split_once('.').ok_or("t= is not a JWT")?;
    let jwt_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| "bad JWT header")?,
    )
    .map_err(|_| "bad JWT header")?;
    if jwt_header["alg"] != "ES256" {
        return Err(format!("JWT alg is {}", jwt_header["alg"]));
    }
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| "bad JWT claims")?,
    )
    .map_err(|_| "bad JWT claims")?;
    if claims["aud"] != origin {
        return Err(format!("aud is {}, not {origin}", claims["aud"]));
    }
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp is {}s from now", exp as i64 - now as i64));
    }
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    if !(sub.starts_with("mailto:") || sub.starts_with("https://")) {
        return Err(format!("sub {sub} is not mailto: or https:"));
    }
    Ok(())
}

fn response(status: u16, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from(seconds));
    }
    response
}

fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let authorization = header(&request, "authorization");
    let encoding = header(&request, "content-encoding");
    let ttl = header(&request, "ttl");
    let urgency = header(&request, "urgency").unwrap_or_default();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let checked = (|| -> Result<(Value, u64), (u16, String)> {
        if method != hyper::Method::POST || !path.starts_with("/wpush/") {
            return Err((404, format!("{method} {path}")));
        }
        verify_vapid(authorization.as_deref(), &state.origin, now).map_err(|m| (401, m))?;
        if encoding.as_deref() != Some("aes128gcm") {
            return Err((400, format!("Content-Encoding is {encoding:?}")));
        }
        let ttl: u64 = ttl
            .as_deref()
            .and_then(|t| t.parse().ok())
            .ok_or((400, format!("TTL is {ttl:?}")))?;
        let plain = decrypt(&body, &state.ua_private, &state.ua_public, &state.auth)
            .map_err(|m| (400, m))?;
        let json: Value = serde_json::from_slice(&plain)
            .map_err(|e| (400, format!("decrypted body is not JSON: {e}")))?;
        Ok((json, ttl))
    })();
    let reply = match checked {
        Err((status, mistake)) => {
            state.mistakes.lock().unwrap().push(mistake);
            response(status, None)
        }
        Ok((json, ttl)) => {
            let scripted = state
                .scripts
                .lock()
                .unwrap()
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .unwrap_or(WebPushReply::status(201));
            state.messages.lock().unwrap().push(WebPushMessage {
                subscription: path,
                json,
                ttl,
                urgency,
                answered: scripted.status,
            });
            response(scripted.status, scripted.retry_after)
        }
    };
    state.arrived.notify_waiters();
    Ok(reply)
}
