//! Signed webhook, for operators whose own backend sends the pushes.
//!
//! Each push is one `POST {url}` with a JSON event:
//!
//! ```json
//! {"event": "call.push_wakeup", "device": "<device token>", "sent_at": 1800000000,
//!  "call": { …payload::for_push… }}
//! ```
//!
//! (`"event": "call.cancelled"` for a call that ended without the device;
//! `"event": "message.received"` with a `"message"` object for a message kept for the
//! device's app, see [`message_body`]), with the
//! headers `X-Pushwake-Event`, `X-Pushwake-Timestamp` (Unix seconds, the same as
//! `sent_at`) and `X-Pushwake-Signature: v1=<hex>`, the lowercase hex HMAC-SHA256 with
//! the shared secret over `"<timestamp>.<body>"` (the exact body bytes sent).
//! docs/app-developers.md shows operators how to verify it.
//!
//! Replies: 2xx → delivered; 5xx, 429, network errors, timeouts → retry (honouring
//! `Retry-After` seconds) within the ring window; 410 → the device is gone; any other
//! 4xx → a configuration error. The secret and the device token never appear in logs or
//! error texts.

use std::collections::HashSet;
use std::time::Duration;

use aws_lc_rs::hmac;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{payload, Attempt, AttemptFuture, EndReason, MessagePush, PushKind, Pushkin, WakePush};
use super::{retry_after, scrubbed_clip, unix_now, window_secs};
use pushwake_core::directory::{Device, DeviceToken, Platform};

mod section;
pub use section::Webhook;

/// Devices of the operator's backend: `platform = "webhook"`, and the `[webhook]` section.
pub const PLATFORM: Platform = Platform::new("webhook");

/// The default time one request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// The longest device id accepted.
pub const MAX_DEVICE_ID_LEN: usize = 512;

/// The `event` of an incoming call.
pub const EVENT_WAKEUP: &str = "call.push_wakeup";
/// The `event` of a call that ended without the device.
pub const EVENT_CANCELLED: &str = "call.cancelled";
/// The event of a message kept for the device's app (`[messages]`).
pub const EVENT_MESSAGE: &str = "message.received";

/// The shared HMAC secret. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// The secret from a secret file's contents: trailing line breaks and spaces are
    /// removed (`openssl rand -hex 32 > file` writes one); what is left must be at least
    /// [`MIN_SECRET_LEN`] bytes. The error never quotes the contents.
    pub fn from_file_contents(bytes: &[u8]) -> Result<Self, String> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let secret = &bytes[..end];
        if secret.is_empty() {
            return Err("the secret file is empty".into());
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret is {} bytes; at least {MIN_SECRET_LEN} are needed (openssl rand -hex 32)",
                secret.len()
            ));
        }
        Ok(Self(secret.to_vec()))
    }

    /// The secret's bytes, for signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Whether `id` is a usable webhook device id: 1 to [`MAX_DEVICE_ID_LEN`] printable ASCII
/// characters, no spaces.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_DEVICE_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut text = String::with_capacity(3 + 64);
    text.push_str("v1=");
    for byte in tag.as_ref() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The event name of a push.
pub fn event(push: &WakePush) -> &'static str {
    match push.kind {
        PushKind::IncomingCall => EVENT_WAKEUP,
        PushKind::CallEnded(_) => EVENT_CANCELLED,
    }
}

/// The request body of one push.
pub fn body(token: &DeviceToken, push: &WakePush, sent_at: u64, expires_at: u64) -> Value {
    json!({
        "event": event(push),
        "device": token.expose(),
        "sent_at": sent_at,
        "call": payload::for_push(push, expires_at),
    })
}

/// The request body of a message push: `{"event": "message.received", "device": …,
/// "sent_at": …, "message": { …payload::message_received… }}`.
pub fn message_body(token: &DeviceToken, push: &MessagePush, sent_at: u64) -> Value {
    json!({
        "event": EVENT_MESSAGE,
        "device": token.expose(),
        "sent_at": sent_at,
        "message": payload::message_received(push),
    })
}

/// Maps a reply status to what to do about it: 2xx delivered; 429 and 5xx retry
/// (honouring `Retry-After`); 410 the device is gone; anything else a configuration error.
/// `detail` is a short, already scrubbed text from the reply, for configuration errors.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, detail: &str) -> Attempt {
    let code = status.as_u16();
    match code {
        200..=299 => Attempt::Delivered,
        429 | 500..=599 => Attempt::Retry {
            reason: format!("webhook {code}"),
            after: retry_after,
        },
        410 => Attempt::Rejected {
            reason: format!("webhook {code}: the operator's backend says the device is gone"),
            dead_token: true,
        },
        _ => {
            let mut reason = format!(
                "webhook {code}: refused by the operator's backend; check [webhook] url and secret_file"
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

/// Everything needed to send webhook events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where events are POSTed (http:// or https://).
    pub url: String,
    /// The shared HMAC secret (redacted in `Debug`).
    pub secret: WebhookSecret,
    /// How long one request may take.
    pub timeout: Duration,
}

/// Could not set the webhook pushkin up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    /// reqwest could not build the client.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The webhook pushkin.
pub struct WebhookPushkin {
    client: reqwest::Client,
    url: String,
    secret: WebhookSecret,
    timeout: Duration,
    /// The configuration-error statuses already logged at error level.
    logged: std::sync::Mutex<HashSet<u16>>,
}

impl std::fmt::Debug for WebhookPushkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPushkin")
            .field("url", &self.url)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookPushkin {
    /// Builds the client: HTTP/1.1 or HTTP/2 as the server offers (TLS ALPN), with a
    /// keep-alive connection pool.
    pub fn new(settings: WebhookSettings) -> Result<Self, WebhookSetupError> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| WebhookSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            url: settings.url,
            secret: settings.secret,
            timeout: settings.timeout,
            logged: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Posts one signed event: `bytes` (the body, sent at `now`), within `ring_window`.
    async fn send_once(
        &self,
        token: &DeviceToken,
        event: &'static str,
        now: u64,
        bytes: String,
        ring_window: Duration,
    ) -> Attempt {
        let signature = sign(self.secret.expose(), now, bytes.as_bytes());
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Pushwake-Event", event)
            .header("X-Pushwake-Timestamp", now.to_string())
            .header("X-Pushwake-Signature", signature)
            .timeout(self.timeout.min(ring_window.max(Duration::from_secs(1))))
            .body(bytes)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!(
                        "webhook: {}",
                        super::describe_http_error(&error, "<webhook>")
                    ),
                    after: None,
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let secret = String::from_utf8_lossy(self.secret.expose()).into_owned();
        let detail = scrubbed_clip(&text, &[token.expose(), &secret]);
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
                tracing::error!(%reason, "the webhook refused the push: a configuration error");
            }
        }
        attempt
    }
}

impl Pushkin for WebhookPushkin {
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
        let now = unix_now();
        let bytes = body(&device.token, push, now, now + window_secs(ring_window)).to_string();
        Box::pin(self.send_once(&device.token, event(push), now, bytes, ring_window))
    }

    fn carries_message(&self, _: &Device) -> Result<(), String> {
        Ok(())
    }

    fn attempt_message<'a>(
        &'a self,
        device: &'a Device,
        push: &'a MessagePush,
        window: Duration,
    ) -> AttemptFuture<'a> {
        let now = unix_now();
        let bytes = message_body(&device.token, push, now).to_string();
        Box::pin(self.send_once(&device.token, EVENT_MESSAGE, now, bytes, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::EndReason;
    use pushwake_core::pbx::{CallId, Party};

    fn push(kind: PushKind) -> WakePush {
        WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind,
            status: None,
            node: None,
        }
    }

    #[test]
    fn a_message_push_is_a_message_received_event() {
        let push = payload::a_message_push(Some("Hi"));
        let value = message_body(&DeviceToken::new("tablet-7"), &push, 1_800_000_005);
        assert_eq!(value["event"], EVENT_MESSAGE);
        assert_eq!(value["device"], "tablet-7");
        assert_eq!(value["sent_at"], 1_800_000_005u64);
        assert_eq!(value["message"], payload::message_received(&push));
        assert!(value.get("call").is_none());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // The well-known HMAC-SHA256 vector (key "key", the quick brown fox) checks the
        // primitive; the same message behind "1800000000." checks what is signed
        // (computed independently: python3 hmac.new(b"key", b"1800000000.The quick…",
        // "sha256").hexdigest()).
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        let fox = b"The quick brown fox jumps over the lazy dog";
        let tag: String = hmac::sign(&key, fox)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            tag,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let signed = sign(b"key", 1_800_000_000, fox);
        assert_eq!(
            signed,
            "v1=01154289269be4f54a8a66e9fe4c2af0143dd6f0ee81ee631ac24897095dc9d1"
        );
        // One byte more in the body, or another timestamp: another signature.
        assert_ne!(
            signed,
            sign(
                b"key",
                1_800_000_000,
                b"The quick brown fox jumps over the lazy dog "
            )
        );
        assert_ne!(signed, sign(b"key", 1_800_000_001, fox));
    }

    #[test]
    fn the_body_carries_event_device_time_and_the_call() {
        let token = DeviceToken::new("Op-Device_42");
        let value = body(
            &token,
            &push(PushKind::IncomingCall),
            1_800_000_000,
            1_800_000_030,
        );
        assert_eq!(value["event"], "call.push_wakeup");
        assert_eq!(value["device"], "Op-Device_42");
        assert_eq!(value["sent_at"], 1_800_000_000u64);
        assert_eq!(
            value["call"],
            payload::for_push(&push(PushKind::IncomingCall), 1_800_000_030)
        );
        let ended = push(PushKind::CallEnded(EndReason::CallerHungUp));
        let value = body(&token, &ended, 1, 2);
        assert_eq!(value["event"], "call.cancelled");
        assert_eq!(value["call"]["type"], "call_cancelled");
        assert_eq!(value["call"]["reason"], "caller_hung_up");
    }

    #[test]
    fn replies_are_classified() {
        let s = |code: u16| StatusCode::from_u16(code).unwrap();
        for code in [200, 201, 202, 204] {
            assert_eq!(classify(s(code), None, ""), Attempt::Delivered);
        }
        for code in [429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify(s(code), None, ""),
                    Attempt::Retry { after: None, .. }
                ),
                "{code}"
            );
        }
        assert_eq!(
            classify(s(503), Some(Duration::from_secs(3)), ""),
            Attempt::Retry {
                reason: "webhook 503".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            classify(s(410), None, ""),
            Attempt::Rejected {
                dead_token: true,
                ..
            }
        ));
        for code in [400, 401, 403, 404, 405, 413, 422] {
            assert!(
                matches!(
                    classify(s(code), None, ""),
                    Attempt::Rejected {
                        dead_token: false,
                        ..
                    }
                ),
                "{code}"
            );
        }
        let Attempt::Rejected { reason, .. } = classify(s(400), None, "bad signature") else {
            panic!()
        };
        assert!(
            reason.contains("bad signature") && reason.contains("400"),
            "{reason}"
        );
    }

    #[test]
    fn error_texts_and_debug_never_carry_the_secret_or_the_device() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let device = "device-id-of-alice";
        let detail = scrubbed_clip(
            &format!("unknown device {device}\nsigned with {secret}"),
            &[device, secret],
        );
        let text = format!("{:?}", classify(StatusCode::BAD_REQUEST, None, &detail));
        assert!(!text.contains(secret) && !text.contains(device), "{text}");
        assert!(
            text.contains("<redacted>") && !text.contains('\n'),
            "{text}"
        );

        let settings = WebhookSettings {
            url: "http://127.0.0.1:9/hook".into(),
            secret: WebhookSecret::from_file_contents(secret.as_bytes()).unwrap(),
            timeout: DEFAULT_TIMEOUT,
        };
        let pushkin = WebhookPushkin::new(settings.clone()).unwrap();
        for shown in [format!("{settings:?}"), format!("{pushkin:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn secrets_and_device_ids_are_checked() {
        assert!(WebhookSecret::from_file_contents(b"").is_err());
        assert!(WebhookSecret::from_file_contents(b"\n\n").is_err());
        let short = WebhookSecret::from_file_contents(b"0123456789abcdef\n").unwrap_err();
        assert!(
            short.contains("16 bytes") && !short.contains("0123"),
            "{short}"
        );
        let hex = "0123456789abcdef0123456789abcdef\n";
        let secret = WebhookSecret::from_file_contents(hex.as_bytes()).unwrap();
        assert_eq!(secret.expose(), &hex.as_bytes()[..32]);

        assert!(valid_device_id("Op-Device_42:x/y=="));
        assert!(valid_device_id(&"a".repeat(512)));
        assert!(!valid_device_id(&"a".repeat(513)));
        assert!(!valid_device_id(""));
        assert!(!valid_device_id("with space"));
        assert!(!valid_device_id("tab\there"));
        assert!(!valid_device_id("é"));
    }

    #[tokio::test]
    async fn a_network_error_is_retried_without_naming_the_url() {
        let settings = WebhookSettings {
            url: "http://127.0.0.1:9/hook?key=urlsecret".into(),
            secret: WebhookSecret::from_file_contents(&[b'k'; 32]).unwrap(),
            timeout: Duration::from_secs(2),
        };
        let pushkin = WebhookPushkin::new(settings).unwrap();
        let device = Device::new(PLATFORM, DeviceToken::new("device-id-of-alice"), "alice");
        let attempt = pushkin
            .attempt(
                &device,
                &push(PushKind::IncomingCall),
                Duration::from_secs(5),
            )
            .await;
        let text = format!("{attempt:?}");
        assert!(matches!(attempt, Attempt::Retry { .. }), "{text}");
        assert!(
            !text.contains("urlsecret") && !text.contains("alice") && !text.contains("kkkk"),
            "{text}"
        );
    }
}
