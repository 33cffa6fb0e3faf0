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

use std::sync::Arc;

use aws_lc_rs::{aead, agreement, hkdf, signature};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

use crate::push_server::{
    reply, unix_now, with_retry_after, Bound, HttpServer, Recorder, Reply, Request, Scripts,
    Transport,
};

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
    /// Verified, decrypted pushes (whatever they were answered), and mistakes.
    recorder: Recorder<WebPushMessage, String>,
    /// Per subscription path.
    scripts: Scripts<WebPushReply>,
}

/// The running service; stops when dropped.
pub struct WebPushServer {
    _http: HttpServer,
    state: Arc<State>,
}

impl WebPushServer {
    /// Starts a service on a free loopback port with a new subscriber key pair.
    pub async fn start() -> std::io::Result<Self> {
        let bound = Bound::new(Transport::Http1).await?;
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
            origin: bound.base_url(),
            ua_private,
            ua_public,
            auth,
            recorder: Recorder::default(),
            scripts: Scripts::default(),
        });
        let serving = state.clone();
        let http = bound.serve(move |request| handle(&serving, request));
        Ok(Self { _http: http, state })
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
        self.state
            .scripts
            .times(&format!("/wpush/{name}"), reply, times);
    }

    /// Every verified, decrypted push in arrival order, whatever it was answered.
    pub fn messages(&self) -> Vec<WebPushMessage> {
        self.state.recorder.received()
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
        self.state.recorder.refused()
    }

    /// Waits for the first delivered push whose JSON `type` is `kind`.
    pub async fn wait_for(
        &self,
        kind: &str,
        timeout: std::time::Duration,
    ) -> Result<WebPushMessage, String> {
        self.state
            .recorder
            .wait(timeout, |_| {
                self.delivered()
                    .into_iter()
                    .find(|m| m.json["type"] == kind)
            })
            .await
            .ok_or_else(|| {
                format!(
                    "web push service: no delivered {kind} after {timeout:?}; pushes: {:?}; mistakes: {:?}",
                    self.messages()
                        .iter()
                        .map(|m| (m.json["type"].clone(), m.answered))
                        .collect::<Vec<_>>(),
                    self.mistakes()
                )
            })
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

fn handle(state: &State, request: Request) -> Reply {
    let Request {
        method, path, body, ..
    } = &request;
    let urgency = request.header("urgency").unwrap_or_default().to_owned();
    let checked = (|| -> Result<(Value, u64), (u16, String)> {
        if *method != hyper::Method::POST || !path.starts_with("/wpush/") {
            return Err((404, format!("{method} {path}")));
        }
        verify_vapid(request.header("authorization"), &state.origin, unix_now())
            .map_err(|m| (401, m))?;
        let encoding = request.header("content-encoding");
        if encoding != Some("aes128gcm") {
            return Err((400, format!("Content-Encoding is {encoding:?}")));
        }
        let ttl = request.header("ttl");
        let ttl: u64 = ttl
            .and_then(|t| t.parse().ok())
            .ok_or((400, format!("TTL is {ttl:?}")))?;
        let plain = decrypt(body, &state.ua_private, &state.ua_public, &state.auth)
            .map_err(|m| (400, m))?;
        let json: Value = serde_json::from_slice(&plain)
            .map_err(|e| (400, format!("decrypted body is not JSON: {e}")))?;
        Ok((json, ttl))
    })();
    match checked {
        Err((status, mistake)) => {
            state.recorder.refuse(mistake);
            reply(status, "")
        }
        Ok((json, ttl)) => {
            let scripted = state
                .scripts
                .next(path)
                .unwrap_or(WebPushReply::status(201));
            state.recorder.receive(WebPushMessage {
                subscription: path.clone(),
                json,
                ttl,
                urgency,
                answered: scripted.status,
            });
            with_retry_after(reply(scripted.status, ""), scripted.retry_after)
        }
    }
}
