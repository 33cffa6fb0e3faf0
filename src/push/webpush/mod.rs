//! Web Push, for browser softphones: RFC 8030 delivery, VAPID (RFC 8292) and `aes128gcm`
//! payload encryption (RFC 8291 over RFC 8188).
//!
//! A device's token is its browser's `PushSubscription.toJSON()`:
//! `{"endpoint":"https://…","keys":{"p256dh":"…","auth":"…"}}` ([`Subscription`]). Each
//! push is one `POST {endpoint}` whose body is the [`payload::for_push`] JSON encrypted
//! for the subscription (an ephemeral ECDH P-256 key per message), with
//! `Content-Encoding: aes128gcm`, `TTL` = the seconds left in the ring window,
//! `Urgency: high` and `Authorization: vapid t=<ES256 JWT>, k=<public key>`; the JWT's
//! `aud` is the push service's origin, `sub` the configured contact.
//!
//! One reqwest client serves every push service (HTTP/2 where TLS ALPN offers it, kept
//! alive). Secrets — the VAPID private key, the subscription (whose endpoint is a
//! capability URL) — never appear in logs or error texts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_lc_rs::{aead, agreement, hkdf, signature};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{payload, Attempt, AttemptFuture, EndReason, MessagePush, Pushkin, WakePush};
use super::{retry_after, scrubbed_clip, unix_now, window_secs};
use pushwake_core::directory::{Device, DeviceToken, Platform};

mod section;
pub use section::WebPush;

/// Browsers: `platform = "webpush"`, and the `[webpush]` section.
pub const PLATFORM: Platform = Platform::new("webpush");

/// The record size written in the RFC 8188 header (one record carries the whole payload).
pub const RECORD_SIZE: u32 = 4096;
/// Lifetime of a VAPID JWT (`exp - now`); RFC 8292 allows at most 24 hours.
pub const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A cached VAPID JWT is signed anew when less than this is left of its lifetime.
pub const JWT_RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// How long one request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

// ---- base64url ---------------------------------------------------------------------------

/// Base64url without padding (RFC 4648 §5), as Web Push writes keys.
pub fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url or standard base64, padded or not (whitespace ignored): browsers and
/// key tools write either. `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let mut url: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    // Padding only at the end; the unpadded engine takes what is left.
    let padding = url.len() - url.trim_end_matches('=').len();
    if padding > 2 {
        return None;
    }
    url.truncate(url.len() - padding);
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(url).ok()
}

// ---- the subscription --------------------------------------------------------------------

/// A browser's push subscription: where to POST and the keys to encrypt for.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The push service URL for this subscription (a capability: secret).
    pub endpoint: String,
    /// The user agent's public key, uncompressed P-256 point.
    pub p256dh: [u8; 65],
    /// The authentication secret.
    pub auth: [u8; 16],
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription(<redacted>)")
    }
}

impl Subscription {
    /// Parses `PushSubscription.toJSON()`. Error texts name what is wrong without quoting
    /// the subscription.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "not JSON (line {}, column {}); expected PushSubscription.toJSON(): {{\"endpoint\":…,\"keys\":{{\"p256dh\":…,\"auth\":…}}}}",
                e.line(),
                e.column()
            )
        })?;
        let endpoint = value["endpoint"]
            .as_str()
            .ok_or("\"endpoint\" is missing or not a string")?
            .trim();
        match url::Url::parse(endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err("\"endpoint\" is not an http:// or https:// URL".into()),
        }
        let key = |name: &str| -> Result<Vec<u8>, String> {
            let text = value["keys"][name]
                .as_str()
                .ok_or_else(|| format!("\"keys.{name}\" is missing or not a string"))?;
            base64_decode(text).ok_or_else(|| format!("\"keys.{name}\" is not base64url"))
        };
        let p256dh: [u8; 65] = key("p256dh")?.try_into().map_err(|v: Vec<u8>| {
            format!(
                "\"keys.p256dh\" is {} bytes, not a 65-byte uncompressed P-256 point",
                v.len()
            )
        })?;
        let on_curve = agreement::ParsedPublicKey::try_from(&agreement::UnparsedPublicKey::new(
            &agreement::ECDH_P256,
            &p256dh,
        ))
        .is_ok();
        if p256dh[0] != 4 || !on_curve {
            return Err("\"keys.p256dh\" is not an uncompressed P-256 point".into());
        }
        let auth: [u8; 16] = key("auth")?
            .try_into()
            .map_err(|v: Vec<u8>| format!("\"keys.auth\" is {} bytes, not 16", v.len()))?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            p256dh,
            auth,
        })
    }

    /// The push service's origin (`scheme://host[:port]`), the VAPID JWT's `aud`.
    pub fn origin(&self) -> String {
        url::Url::parse(&self.endpoint)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }
}

// ---- encryption (RFC 8291 §3.3–3.4, RFC 8188 §2) ---------------------------------------

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), String> {
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| "HKDF failed".to_owned())
}

/// Encrypts `plaintext` for a subscription with the application server's (ephemeral) key
/// `as_private` and `salt`: the whole `aes128gcm` body (header with `rs` = 4096 and the
/// AS public key as `keyid`, then one record ending in the delimiter 0x02).
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8; 65],
    auth_secret: &[u8; 16],
    as_private: &agreement::PrivateKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, String> {
    if plaintext.len() + 1 + 16 > RECORD_SIZE as usize {
        return Err(format!("payload of {} bytes is too long", plaintext.len()));
    }
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| "cannot compute the ephemeral public key".to_owned())?;
    let as_public = as_public.as_ref();
    let ecdh_secret = agreement::agree(
        as_private,
        agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public),
        "the subscription's p256dh key does not agree".to_owned(),
        |shared| Ok(shared.to_vec()),
    )?;
    // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    hkdf_sha256(auth_secret, &ecdh_secret, &key_info, &mut ikm)?;
    let mut cek = [0u8; 16];
    hkdf_sha256(salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek)?;
    let mut nonce = [0u8; 12];
    hkdf_sha256(salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce)?;

    let mut record = plaintext.to_vec();
    record.push(0x02); // the last (and only) record's padding delimiter
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| "bad CEK".to_owned())?,
    );
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| "AES-GCM failed".to_owned())?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public.len() + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// [`encrypt`] with a fresh ephemeral key and a random salt.
pub fn encrypt_for(subscription: &Subscription, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let as_private = agreement::PrivateKey::generate(&agreement::ECDH_P256)
        .map_err(|_| "cannot generate an ephemeral key".to_owned())?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no random salt".to_owned())?;
    encrypt(
        plaintext,
        &subscription.p256dh,
        &subscription.auth,
        &as_private,
        &salt,
    )
}

// ---- VAPID (RFC 8292) ----------------------------------------------------------------------

/// Why Web Push settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebPushSetupError {
    /// The VAPID key is not a PKCS#8 PEM P-256 private key.
    #[error("not a PKCS#8 PEM P-256 private key (generate one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out vapid.pem): {0}")]
    BadKey(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The application server's VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    encoding: EncodingKey,
    /// The public key, uncompressed P-256 point, base64url (the `k=` parameter).
    public: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl PartialEq for VapidKey {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for VapidKey {}

impl VapidKey {
    /// Reads a PKCS#8 PEM P-256 private key (`-----BEGIN PRIVATE KEY-----`). Error texts
    /// never quote the key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, WebPushSetupError> {
        let bad = |m: &str| WebPushSetupError::BadKey(m.to_owned());
        let text = std::str::from_utf8(pem).map_err(|_| bad("not text"))?;
        let begin = "-----BEGIN PRIVATE KEY-----";
        let start = text
            .find(begin)
            .ok_or_else(|| bad("no -----BEGIN PRIVATE KEY----- block"))?
            + begin.len();
        let end = text[start..]
            .find("-----END PRIVATE KEY-----")
            .ok_or_else(|| bad("no -----END PRIVATE KEY----- line"))?;
        let der =
            base64_decode(&text[start..start + end]).ok_or_else(|| bad("the PEM is not base64"))?;
        let pair =
            signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|_| bad("not an EC key on curve P-256"))?;
        use signature::KeyPair;
        let public = base64url(pair.public_key().as_ref());
        let encoding =
            EncodingKey::from_ec_pem(pem).map_err(|e| WebPushSetupError::BadKey(e.to_string()))?;
        let key = Self { encoding, public };
        key.jwt("https://check.invalid", "mailto:check@example.invalid", 0)?;
        Ok(key)
    }

    /// The public key as the `k=` parameter (and the browser's `applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// A VAPID JWT for a push service `origin`, expiring at `exp` (Unix seconds).
    pub fn jwt(&self, origin: &str, subject: &str, exp: u64) -> Result<String, WebPushSetupError> {
        let claims = json!({ "aud": origin, "exp": exp, "sub": subject });
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| WebPushSetupError::BadKey(e.to_string()))
    }

    /// The `Authorization` header value for a push service `origin`.
    pub fn authorization(&self, origin: &str, subject: &str, exp: u64) -> Result<String, String> {
        let jwt = self.jwt(origin, subject, exp).map_err(|e| e.to_string())?;
        Ok(format!("vapid t={jwt}, k={}", self.public))
    }
}

/// Whether `subject` is a contact VAPID accepts: a `mailto:` or `https:` URL.
pub fn valid_subject(subject: &str) -> bool {
    match url::Url::parse(subject) {
        Ok(u) if u.scheme() == "mailto" => u.path().contains('@'),
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        _ => false,
    }
}

// ---- replies -------------------------------------------------------------------------------

/// Maps a push service's reply to what to do: 200/201/202 delivered; 404 and 410 the
/// subscription is gone; 429 and 5xx retry (honouring `Retry-After`); anything else (400,
/// 401, 403, 413, …) a configuration error. `detail` is short, already scrubbed text.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, detail: &str) -> Attempt {
    let code = status.as_u16();
    match code {
        200..=202 => Attempt::Delivered,
        404 | 410 => Attempt::Rejected {
            reason: format!("webpush {code}: the subscription has expired or was unsubscribed"),
            dead_token: true,
        },
        429 | 500..=599 => Attempt::Retry {
            reason: format!("webpush {code}"),
            after: retry_after,
        },
        _ => {
            let mut reason = format!(
                "webpush {code}: refused by the push service; check [webpush] vapid_key_file and subject (the browser must subscribe with this VAPID public key)"
            );
            if !detail.is_empty() {
                reason.push_str(&format!(" ({detail})"));
            }
            Attempt::Rejected {
                reason,
                dead_token: false,
            }
        }
    }
}

// ---- the pushkin -----------------------------------------------------------------------------

/// Everything needed to send Web Push messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPushSettings {
    /// The VAPID key pair (private half redacted in `Debug`).
    pub vapid_key: VapidKey,
    /// The VAPID contact (`mailto:` or `https:`), the JWT's `sub`.
    pub subject: String,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The Web Push pushkin.
pub struct WebPushPushkin {
    client: reqwest::Client,
    settings: WebPushSettings,
    /// The configuration-error statuses already logged at error level.
    logged: std::sync::Mutex<HashSet<u16>>,
    /// The `Authorization` value per push service origin, with its JWT's `exp`: one
    /// signature per origin and lifetime, not one per push.
    authorizations: std::sync::Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for WebPushPushkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushPushkin")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl WebPushPushkin {
    /// Builds the one client for every push service: HTTP/2 where TLS ALPN offers it,
    /// HTTP/1.1 otherwise, with a keep-alive connection pool.
    pub fn new(settings: WebPushSettings) -> Result<Self, WebPushSetupError> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| WebPushSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            settings,
            logged: std::sync::Mutex::new(HashSet::new()),
            authorizations: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The `Authorization` header for a push service `origin` at `now` (Unix seconds):
    /// the cached one while more than [`JWT_RENEW_BEFORE`] of its JWT is left, else a
    /// newly signed one expiring [`JWT_LIFETIME`] from now.
    pub fn authorization_for(&self, origin: &str, now: u64) -> Result<String, String> {
        let mut cache = self.authorizations.lock().expect("VAPID cache");
        if let Some((header, exp)) = cache.get(origin) {
            if *exp > now + JWT_RENEW_BEFORE.as_secs() {
                return Ok(header.clone());
            }
        }
        let exp = now + JWT_LIFETIME.as_secs();
        let header = self
            .settings
            .vapid_key
            .authorization(origin, &self.settings.subject, exp)?;
        cache.insert(origin.to_owned(), (header.clone(), exp));
        Ok(header)
    }

    /// Sends one encrypted push of `plaintext`, kept by the push service for `ttl`
    /// seconds, with `urgency`, within `ring_window`.
    async fn send_once(
        &self,
        token: &DeviceToken,
        plaintext: String,
        ttl: u64,
        urgency: &'static str,
        ring_window: Duration,
    ) -> Attempt {
        let subscription = match Subscription::parse(token.expose()) {
            Ok(s) => s,
            Err(e) => {
                return Attempt::Rejected {
                    reason: format!("webpush: the device's subscription is unusable: {e}"),
                    dead_token: true,
                }
            }
        };
        let now = unix_now();
        let body = match encrypt_for(&subscription, plaintext.as_bytes()) {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Rejected {
                    reason: format!("webpush: cannot encrypt: {e}"),
                    dead_token: false,
                }
            }
        };
        let authorization = match self.authorization_for(&subscription.origin(), now) {
            Ok(a) => a,
            Err(e) => {
                return Attempt::Rejected {
                    reason: format!("webpush: cannot sign the VAPID JWT: {e}"),
                    dead_token: false,
                }
            }
        };
        let response = self
            .client
            .post(&subscription.endpoint)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("TTL", ttl.to_string())
            .header("Urgency", urgency)
            .timeout(
                self.settings
                    .timeout
                    .min(ring_window.max(Duration::from_secs(1))),
            )
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!(
                        "webpush: {}",
                        super::describe_http_error(&error, "<push service>")
                    ),
                    after: None,
                }
            }
        };
        let status = response.status();
        if matches!(status.as_u16(), 200..=202) {
            return Attempt::Delivered;
        }
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let detail = scrubbed_clip(&text, &[token.expose(), &subscription.endpoint]);
        let attempt = classify(status, after, &detail);
        if let Attempt::Rejected {
            dead_token: false,
            reason,
        } = &attempt
        {
            let first = self
                .logged
                .lock()
                .expect("logged statuses")
                .insert(status.as_u16());
            if first {
                tracing::error!(%reason, "the push service refused a Web Push: a configuration error");
            }
        }
        attempt
    }
}

impl Pushkin for WebPushPushkin {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn carries_call_ended(&self, _: &Device, _: EndReason) -> Result<(), String> {
        Ok(())
    }

    fn attempt<'a>(
        &'a self,
        device: &'a Device,
        push: &'a WakePush,
        ring_window: Duration,
    ) -> AttemptFuture<'a> {
        let ttl = window_secs(ring_window);
        let plaintext = payload::for_push(push, unix_now() + ttl).to_string();
        Box::pin(self.send_once(&device.token, plaintext, ttl, "high", ring_window))
    }

    fn carries_message(&self, _: &Device) -> Result<(), String> {
        Ok(())
    }

    /// `Urgency: normal`, kept by the push service until the message expires.
    fn attempt_message<'a>(
        &'a self,
        device: &'a Device,
        push: &'a MessagePush,
        window: Duration,
    ) -> AttemptFuture<'a> {
        let ttl = push.expires_at.saturating_sub(unix_now()).max(1);
        let plaintext = payload::message_received(push).to_string();
        Box::pin(self.send_once(&device.token, plaintext, ttl, "normal", window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        base64_decode(text).unwrap()
    }

    // RFC 8291 Appendix A ("Intermediate Values for Encryption").
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn the_rfc_8291_example_encrypts_byte_for_byte() {
        let as_private =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &b64(AS_PRIVATE))
                .unwrap();
        assert_eq!(
            base64url(as_private.compute_public_key().unwrap().as_ref()),
            AS_PUBLIC
        );
        let body = encrypt(
            PLAINTEXT.as_bytes(),
            &b64(UA_PUBLIC).try_into().unwrap(),
            &b64(AUTH).try_into().unwrap(),
            &as_private,
            &b64(SALT).try_into().unwrap(),
        )
        .unwrap();
        assert_eq!(base64url(&body), BODY);
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64url(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64_decode("+/8=").unwrap(), b"\xfb\xff");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("ab*c").is_none());
    }

    fn subscription_json(endpoint: &str, p256dh: &str, auth: &str) -> String {
        json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}})
            .to_string()
    }

    #[test]
    fn subscriptions_are_checked_without_quoting_them() {
        let good = subscription_json("https://push.example.net/wpush/v2/abc", UA_PUBLIC, AUTH);
        let s = Subscription::parse(&good).unwrap();
        assert_eq!(s.origin(), "https://push.example.net");
        assert_eq!(s.p256dh.to_vec(), b64(UA_PUBLIC));
        assert_eq!(format!("{s:?}"), "Subscription(<redacted>)");
        let mut off_curve = b64(UA_PUBLIC);
        off_curve[64] ^= 1;
        for bad in [
            "{\"endpoint\":".to_owned(),
            subscription_json("ftp://push.example.net/x", UA_PUBLIC, AUTH),
            subscription_json("https://push.example.net/x", &UA_PUBLIC[1..], AUTH),
            subscription_json("https://push.example.net/x", &base64url(&off_curve), AUTH),
            subscription_json("https://push.example.net/x", UA_PUBLIC, "BTBZMqHH6r4T"),
            subscription_json("https://push.example.net/x", UA_PUBLIC, "not*base64"),
            json!({"endpoint": "https://push.example.net/x"}).to_string(),
        ] {
            let e = Subscription::parse(&bad).unwrap_err();
            assert!(
                !e.contains("push.example.net") && !e.contains("BTBZ") && !e.contains("BCVx"),
                "{e}"
            );
        }
    }

    #[test]
    fn replies_are_classified() {
        let s = |code: u16| StatusCode::from_u16(code).unwrap();
        for code in [200, 201, 202] {
            assert_eq!(classify(s(code), None, ""), Attempt::Delivered);
        }
        for code in [404, 410] {
            assert!(matches!(
                classify(s(code), None, ""),
                Attempt::Rejected {
                    dead_token: true,
                    ..
                }
            ));
        }
        assert_eq!(
            classify(s(429), Some(Duration::from_secs(2)), ""),
            Attempt::Retry {
                reason: "webpush 429".into(),
                after: Some(Duration::from_secs(2))
            }
        );
        for code in [500, 502, 503] {
            assert!(matches!(classify(s(code), None, ""), Attempt::Retry { .. }));
        }
        for code in [400, 401, 403, 413] {
            assert!(matches!(
                classify(s(code), None, "x"),
                Attempt::Rejected {
                    dead_token: false,
                    ..
                }
            ));
        }
    }

    /// A PKCS#8 PEM of a freshly generated key on `alg`'s curve.
    pub(crate) fn pem_of(alg: &'static signature::EcdsaSigningAlgorithm) -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let mut b64 = base64url(der.as_ref()).replace('-', "+").replace('_', "/");
        while b64.len() % 4 != 0 {
            b64.push('=');
        }
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn the_vapid_jwt_verifies_with_the_k_key() {
        let pem = pem_of(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
        let key = VapidKey::from_pem(pem.as_bytes()).unwrap();
        assert!(!format!("{key:?}").contains(&pem[30..60]));
        let header = key
            .authorization(
                "https://push.example.net",
                "mailto:ops@example.com",
                1_900_000_000,
            )
            .unwrap();
        let (jwt, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, key.public_key());
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, b64(k))
            .verify(signed.as_bytes(), &b64(sig))
            .unwrap();
        let claims: Value =
            serde_json::from_slice(&b64(signed.split_once('.').unwrap().1)).unwrap();
        assert_eq!(
            claims,
            json!({"aud": "https://push.example.net", "exp": 1_900_000_000u64, "sub": "mailto:ops@example.com"})
        );
        let p384 = pem_of(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
        let e = VapidKey::from_pem(p384.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("P-256"), "{e}");
        assert!(VapidKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn the_vapid_jwt_is_reused_per_origin_until_an_hour_before_it_expires() {
        let pem = pem_of(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
        let pushkin = WebPushPushkin::new(WebPushSettings {
            vapid_key: VapidKey::from_pem(pem.as_bytes()).unwrap(),
            subject: "mailto:ops@example.com".into(),
            timeout: DEFAULT_TIMEOUT,
        })
        .unwrap();
        let t0 = 1_800_000_000;
        let a = pushkin.authorization_for("https://a.example", t0).unwrap();
        assert_eq!(
            pushkin
                .authorization_for("https://a.example", t0 + 60)
                .unwrap(),
            a
        );
        let b = pushkin.authorization_for("https://b.example", t0).unwrap();
        assert_ne!(a, b, "one JWT per origin (its aud)");
        let renew_at = t0 + JWT_LIFETIME.as_secs() - JWT_RENEW_BEFORE.as_secs();
        assert_eq!(
            pushkin
                .authorization_for("https://a.example", renew_at - 1)
                .unwrap(),
            a
        );
        let renewed = pushkin
            .authorization_for("https://a.example", renew_at)
            .unwrap();
        assert_ne!(renewed, a);
        let claims = |header: &str| -> Value {
            let jwt = header
                .strip_prefix("vapid t=")
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            serde_json::from_slice(&b64(jwt.split('.').nth(1).unwrap())).unwrap()
        };
        assert_eq!(claims(&a)["exp"], t0 + JWT_LIFETIME.as_secs());
        assert_eq!(claims(&renewed)["exp"], renew_at + JWT_LIFETIME.as_secs());
        assert!(JWT_LIFETIME <= Duration::from_secs(24 * 3600));
    }

    #[test]
    fn subjects_are_mailto_or_https() {
        assert!(valid_subject("mailto:ops@example.com"));
        assert!(valid_subject("https://example.com/contact"));
        assert!(!valid_subject("http://example.com"));
        assert!(!valid_subject("ops@example.com"));
        assert!(!valid_subject("mailto:"));
    }
}
