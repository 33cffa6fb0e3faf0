//! Firebase Cloud Messaging, HTTP v1 API, for Android softphones.
//!
//! Authentication is a Google service account: an RS256-signed JWT assertion is exchanged
//! at the account's `token_uri` for an OAuth2 access token (RFC 7523), which is cached,
//! shared by every push and renewed shortly before it expires; one fetch at a time
//! ([`AccessTokenCache`](super::oauth::AccessTokenCache) holds the rules, with time passed in). Each push is a
//! high-priority **data-only** message (no `notification`: the app itself shows a
//! full-screen call UI) whose `ttl` is the time left in the ring window.
//!
//! Built on the same reqwest HTTP/2 client as APNs, not on a Google SDK or an FCM crate:
//! the endpoint and the token URI must be configurable for local test servers, and FCM's
//! error codes (`UNREGISTERED` vs `QUOTA_EXCEEDED`) must stay distinguishable. One client
//! per credential; its connections are opened at start-up ([`FcmPushkin::warm_up`]), kept
//! warm with HTTP/2 pings and carry every push multiplexed. `http://` endpoints speak
//! HTTP/2 without TLS (prior knowledge); `https://` ones let TLS ALPN pick h2.
//!
//! Secrets — the private key, the access token, device tokens — never appear in logs or
//! in error texts: `Debug` output is redacted and provider texts are scrubbed.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::oauth::{read_token_reply, Invalidation, SharedAccessToken, TokenError};
use super::{clip, retry_after, scrub, scrubbed_clip, unix_now, window_secs};
use super::{payload, Attempt, AttemptFuture, EndReason, MessagePush, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken, Platform};

mod section;
pub use section::{Fcm, MAX_TOKEN_LEN};

/// FCM devices: `platform = "fcm"`, and the `[fcm]` section.
pub const PLATFORM: Platform = Platform::new("fcm");

/// Google's FCM endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// The OAuth2 scope for sending FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The OAuth2 grant type of a JWT assertion (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of a signed assertion (`exp - iat`); Google accepts at most an hour.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

// ---- the service account ---------------------------------------------------------------

/// A Google service account, from its JSON key file.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The Firebase project the messages are sent in.
    pub project_id: String,
    /// The account's e-mail address (the assertion's `iss`).
    pub client_email: String,
    /// The key's id (the assertion's `kid`), when the file names it.
    pub private_key_id: Option<String>,
    /// The PKCS#8 PEM RSA private key. Secret.
    pub private_key_pem: String,
    /// Where assertions are exchanged for access tokens (the assertion's `aud`).
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key_pem", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl ServiceAccount {
    /// Parses and checks a service-account key file: JSON with `type` =
    /// `"service_account"`, `project_id`, `client_email`, `token_uri` (an http(s) URL) and
    /// a `private_key` that signs RS256. Error texts never quote the key.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FcmSetupError> {
        let bad = |m: String| FcmSetupError::ServiceAccount(m);
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let Value::Object(fields) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let text = |name: &str| -> Result<String, FcmSetupError> {
            match fields.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                Some(Value::String(_)) => Err(bad(format!("\"{name}\" is empty"))),
                Some(_) => Err(bad(format!("\"{name}\" is not a string"))),
                None => Err(bad(format!("\"{name}\" is missing"))),
            }
        };
        let kind = text("type")?;
        if kind != "service_account" {
            return Err(bad(format!(
                "\"type\" is \"{kind}\", not \"service_account\" (download a service-account key: Firebase console → Project settings → Service accounts)"
            )));
        }
        let project_id = text("project_id")?;
        let client_email = text("client_email")?;
        let token_uri = text("token_uri")?.trim_end_matches('/').to_owned();
        match url::Url::parse(&token_uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(bad(format!(
                    "\"token_uri\" `{token_uri}` is not an http:// or https:// URL"
                )))
            }
        }
        let private_key_pem = text("private_key")?;
        let private_key_id = text("private_key_id").ok();
        check_key(private_key_pem.as_bytes())?;
        Ok(Self {
            project_id,
            client_email,
            private_key_id,
            private_key_pem,
            token_uri,
        })
    }
}

/// Why FCM settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    /// The service-account file is not what Google issues.
    #[error("not a usable service-account key file: {0}")]
    ServiceAccount(String),
    /// The private key is not an RSA key that signs.
    #[error("\"private_key\" is not a PKCS#8 PEM RSA private key (RS256): {0}")]
    BadKey(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP/2 client: {0}")]
    Client(String),
}

/// Checks that `pem` is an RSA key an RS256 assertion can be signed with.
pub fn check_key(pem: &[u8]) -> Result<(), FcmSetupError> {
    let key = EncodingKey::from_rsa_pem(pem).map_err(|e| FcmSetupError::BadKey(e.to_string()))?;
    // Parsing the PEM does not prove the key signs; a trial signature does.
    sign_assertion(
        &key,
        None,
        "check@example.invalid",
        "https://check.invalid",
        0,
    )
    .map(|_| ())
}

/// The claims of an assertion, as Google expects them.
fn sign_assertion(
    key: &EncodingKey,
    key_id: Option<&str>,
    client_email: &str,
    token_uri: &str,
    iat: u64,
) -> Result<String, FcmSetupError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key_id.map(str::to_owned);
    let claims = json!({
        "iss": client_email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| FcmSetupError::BadKey(e.to_string()))
}

// ---- FCM error replies ---------------------------------------------------------------------

/// The useful parts of an FCM v1 error reply
/// (`{"error":{"code":…,"message":…,"status":…,"details":[…]}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FcmError {
    /// The Google API status (`INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`, …).
    pub status: String,
    /// The `errorCode` of the `google.firebase.fcm.v1.FcmError` detail (`UNREGISTERED`, …).
    pub error_code: Option<String>,
    /// The human-readable message.
    pub message: String,
    /// A `google.rpc.BadRequest` detail names `message.token` as the invalid field.
    pub token_field: bool,
}

impl FcmError {
    /// Parses a reply body; anything that is not FCM's error JSON (an HTML 502 page) gives
    /// an empty value, and the HTTP status decides.
    pub fn parse(body: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(body) else {
            return Self::default();
        };
        let error = &value["error"];
        let mut parsed = Self {
            status: error["status"].as_str().unwrap_or_default().to_owned(),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
            ..Self::default()
        };
        for detail in error["details"].as_array().into_iter().flatten() {
            match detail["@type"].as_str() {
                Some(FCM_ERROR_TYPE) => {
                    parsed.error_code = detail["errorCode"].as_str().map(str::to_owned);
                }
                Some(BAD_REQUEST_TYPE) => {
                    let violations = detail["fieldViolations"].as_array().into_iter().flatten();
                    for violation in violations {
                        if violation["field"] == "message.token" {
                            parsed.token_field = true;
                        }
                    }
                }
                _ => {}
            }
        }
        parsed
    }

    /// Like [`FcmError::parse`], with every non-empty secret (the device token, the access
    /// token) replaced in the texts kept, should the provider ever echo one, and the
    /// status and code (which go into the log whole) clipped to one short line.
    pub fn parse_scrubbed(body: &str, secrets: &[&str]) -> Self {
        let parsed = Self::parse(body);
        Self {
            status: scrubbed_clip(&parsed.status, secrets),
            error_code: parsed.error_code.map(|c| scrubbed_clip(&c, secrets)),
            message: scrub(&parsed.message, secrets),
            token_field: parsed.token_field,
        }
    }

    /// The most specific name of the error: the FCM error code, else the API status.
    pub fn name(&self) -> &str {
        self.error_code.as_deref().unwrap_or(&self.status)
    }

    /// Whether an `INVALID_ARGUMENT` is about the registration token (rather than the
    /// message pushwake built).
    fn about_the_token(&self) -> bool {
        self.token_field
            || self
                .message
                .to_ascii_lowercase()
                .contains("not a valid fcm registration token")
    }
}

/// Maps an FCM error reply to what to do about it:
/// - `UNREGISTERED`, `SENDER_ID_MISMATCH`, `INVALID_ARGUMENT` about the token → the token
///   is dead;
/// - `QUOTA_EXCEEDED`, `UNAVAILABLE`, `INTERNAL`, and 429/5xx without a known code →
///   retry, honouring `Retry-After`;
/// - `THIRD_PARTY_AUTH_ERROR`, 401 (access token refused), 403, other `INVALID_ARGUMENT`s
///   and anything else → a configuration error (not the device's fault).
pub fn classify(status: StatusCode, error: &FcmError, retry_after: Option<Duration>) -> Attempt {
    let name = error.name();
    let described = if name.is_empty() {
        format!("FCM {}", status.as_u16())
    } else {
        format!("FCM {} {name}", status.as_u16())
    };
    let config = |hint: &str| Attempt::Rejected {
        reason: format!("{described}: {hint}"),
        dead_token: false,
    };
    let dead = || Attempt::Rejected {
        reason: described.clone(),
        dead_token: true,
    };
    let retry = || Attempt::Retry {
        reason: described.clone(),
        after: retry_after,
    };
    match name {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => dead(),
        "INVALID_ARGUMENT" if error.about_the_token() => dead(),
        "QUOTA_EXCEEDED" | "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL" => retry(),
        "THIRD_PARTY_AUTH_ERROR" => {
            config("the APNs or Web Push credentials in the Firebase project are refused")
        }
        "INVALID_ARGUMENT" => config(&format!(
            "FCM refused the message pushwake built ({})",
            clip(&error.message)
        )),
        _ => match status.as_u16() {
            401 => config("the access token was refused; check the service account"),
            403 => config(&format!(
                "permission denied; check that the service account may send messages in project ({})",
                clip(&error.message)
            )),
            429 | 500..=599 => retry(),
            _ => config(&clip(&error.message)),
        },
    }
}

// ---- the message ---------------------------------------------------------------------------

/// The request body of one wake-up: a data-only message with high Android priority and a
/// `ttl` of `ttl_secs`, carrying [`payload::data`].
pub fn message(token: &DeviceToken, push: &WakePush, expires_at: u64, ttl_secs: u64) -> Value {
    json!({
        "message": {
            "token": token.expose(),
            "data": payload::data(push, expires_at),
            "android": {
                "priority": "HIGH",
                "ttl": format!("{ttl_secs}s"),
            },
        }
    })
}

/// The request body of a message push: a data-only message with **normal** Android
/// priority (a chat message does not get to wake a dozing phone at once, the way a
/// call does), kept by FCM until the message expires (at most FCM's 28 days).
pub fn message_push(token: &DeviceToken, push: &MessagePush, now: u64) -> Value {
    let ttl = push.expires_at.saturating_sub(now).clamp(1, 28 * 24 * 3600);
    json!({
        "message": {
            "token": token.expose(),
            "data": payload::message_data(push),
            "android": {
                "priority": "NORMAL",
                "ttl": format!("{ttl}s"),
                "collapse_key": push.message_id.0,
            },
        }
    })
}

// ---- the pushkin -----------------------------------------------------------------------------

/// Everything needed to send FCM messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FcmSettings {
    /// The service account (its key is redacted in `Debug`).
    pub account: ServiceAccount,
    /// Base URL; `http://` means HTTP/2 without TLS (local test servers).
    pub endpoint: String,
}

/// The FCM pushkin.
pub struct FcmPushkin {
    client: reqwest::Client,
    endpoint: String,
    send_url: String,
    account: ServiceAccount,
    key: EncodingKey,
    token: SharedAccessToken,
}

impl std::fmt::Debug for FcmPushkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmPushkin")
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl FcmPushkin {
    /// Builds the client (no connection yet; see [`FcmPushkin::warm_up`]).
    ///
    /// With an `http://` endpoint or token URI the client speaks HTTP/2 by prior knowledge
    /// (h2c; `https://` URLs then offer only h2 in ALPN, which Google's hosts accept).
    /// Otherwise TLS ALPN offers h2 and HTTP/1.1 and Google's hosts pick h2; the keep-alive
    /// pings and multiplexing apply to that connection alike.
    pub fn new(settings: FcmSettings) -> Result<Self, FcmSetupError> {
        let account = settings.account;
        let key = EncodingKey::from_rsa_pem(account.private_key_pem.as_bytes())
            .map_err(|e| FcmSetupError::BadKey(e.to_string()))?;
        let endpoint = settings.endpoint.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(None)
            .connect_timeout(Duration::from_secs(5));
        if endpoint.starts_with("http://") || account.token_uri.starts_with("http://") {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .build()
            .map_err(|e| FcmSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            send_url: format!(
                "{endpoint}/v1/projects/{}/messages:send",
                account.project_id
            ),
            endpoint,
            account,
            key,
            token: SharedAccessToken::new("FCM", "[fcm] service_account_file"),
        })
    }

    /// Fetches the first access token and opens the connection to the FCM endpoint now,
    /// so the first push of the first call pays for neither. Failure is only logged:
    /// pushes fetch and retry by themselves. Says why FCM is not ready yet, if it is not.
    pub async fn warm_up(&self) -> Result<(), String> {
        // A failed fetch is logged where it happens.
        let token = self.access_token().await;
        match self.client.get(&self.endpoint).send().await {
            Ok(response) => {
                tracing::info!(endpoint = %self.endpoint, version = ?response.version(), "FCM connection open")
            }
            Err(error) => {
                let error = super::describe_http_error(&error, "<fcm>");
                tracing::warn!(endpoint = %self.endpoint, %error, "cannot reach FCM yet; pushes will retry");
                return Err(format!("cannot reach FCM: {error}"));
            }
        }
        token.map(|_| ()).map_err(|error| error.reason().to_owned())
    }

    /// The access token to send with (see [`SharedAccessToken::get`]).
    async fn access_token(&self) -> Result<String, TokenError> {
        self.token.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<(String, u64), TokenError> {
        let assertion = sign_assertion(
            &self.key,
            self.account.private_key_id.as_deref(),
            &self.account.client_email,
            &self.account.token_uri,
            unix_now(),
        )
        .map_err(|e| TokenError::Config(e.to_string()))?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER_GRANT)
            .append_pair("assertion", &assertion)
            .finish();
        let response = self
            .client
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                TokenError::Transient(format!(
                    "FCM token endpoint: {}",
                    super::describe_http_error(&e, "<fcm>")
                ))
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            TokenError::Transient(format!(
                "FCM token endpoint: {}",
                super::describe_http_error(&e, "<fcm>")
            ))
        })?;
        read_token_reply("FCM", status, &text, &[&assertion])
    }

    /// Sends one request `body` (to `token`), within `ring_window`.
    async fn send_once(&self, token: &DeviceToken, body: Value, ring_window: Duration) -> Attempt {
        let access = match self.access_token().await {
            Ok(access) => access,
            Err(error) => return error.into_attempt(),
        };
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(&access)
            .timeout(ring_window.clamp(Duration::from_secs(1), Duration::from_secs(10)))
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!("FCM: {}", super::describe_http_error(&error, "<fcm>")),
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
        let error = FcmError::parse_scrubbed(&text, &[token.expose(), access.as_str()]);
        let attempt = classify(status, &error, after);
        if status == StatusCode::UNAUTHORIZED && error.name() != "THIRD_PARTY_AUTH_ERROR" {
            let invalidation = self.token.invalidate(&access);
            match invalidation {
                Invalidation::Dropped | Invalidation::AlreadyReplaced => {
                    if invalidation == Invalidation::Dropped {
                        tracing::warn!("FCM refused the access token; fetching a new one");
                    }
                    return Attempt::Retry {
                        reason: format!("FCM {} (access token refused)", status.as_u16()),
                        after: Some(Duration::ZERO),
                    };
                }
                Invalidation::Kept => {}
            }
        }
        if let Attempt::Rejected {
            dead_token: false,
            reason,
        } = &attempt
        {
            tracing::error!(%reason, "FCM rejected the push: a configuration error; check the [fcm] settings and the Firebase project");
        }
        attempt
    }
}

impl Pushkin for FcmPushkin {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn warm_up(&self) -> super::WarmUpFuture<'_> {
        Box::pin(FcmPushkin::warm_up(self))
    }

    fn carries_call_ended(&self, _: &Device, _: EndReason) -> Result<(), String> {
        // A data message wakes the app without showing anything: fine for "stop ringing".
        Ok(())
    }

    fn attempt<'a>(
        &'a self,
        device: &'a Device,
        push: &'a WakePush,
        ring_window: Duration,
    ) -> AttemptFuture<'a> {
        let ttl = window_secs(ring_window);
        let body = message(&device.token, push, unix_now() + ttl, ttl);
        Box::pin(self.send_once(&device.token, body, ring_window))
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
        let body = message_push(&device.token, push, unix_now());
        Box::pin(self.send_once(&device.token, body, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::PushKind;
    use pushwake_core::pbx::{CallId, Party};
    use pushwake_testkit::keys::RsaKey;

    const T0: u64 = 1_800_000_000;

    fn account(key: &RsaKey) -> ServiceAccount {
        ServiceAccount::from_json(
            key.service_account_json(
                "pushwake-test",
                "pushwake@pushwake-test.iam.gserviceaccount.com",
                "https://oauth2.example.invalid/token",
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn reply(status: u16, body: &str) -> Attempt {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &FcmError::parse(body),
            None,
        )
    }

    fn fcm_error(status: u16, api_status: &str, code: Option<&str>, message: &str) -> String {
        let mut error = json!({ "code": status, "message": message, "status": api_status });
        if let Some(code) = code {
            error["details"] = json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code,
            }]);
        }
        json!({ "error": error }).to_string()
    }

    fn is_dead(a: &Attempt) -> bool {
        matches!(
            a,
            Attempt::Rejected {
                dead_token: true,
                ..
            }
        )
    }
    fn is_config(a: &Attempt) -> bool {
        matches!(
            a,
            Attempt::Rejected {
                dead_token: false,
                ..
            }
        )
    }
    fn is_retry(a: &Attempt) -> bool {
        matches!(a, Attempt::Retry { .. })
    }

    #[test]
    fn error_replies_are_classified() {
        // Dead tokens.
        let unregistered = fcm_error(
            404,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        );
        assert!(is_dead(&reply(404, &unregistered)));
        assert!(is_dead(&reply(
            403,
            &fcm_error(
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "SenderId mismatch"
            )
        )));
        // INVALID_ARGUMENT about the token: a BadRequest detail naming message.token…
        let bad_token_field = json!({"error": {
            "code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
            ]}})
        .to_string();
        assert!(is_dead(&reply(400, &bad_token_field)));
        // …or only the message saying so (Google's documented example).
        assert!(is_dead(&reply(
            400,
            &fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token"
            )
        )));

        // Retries.
        for (status, api, code) in [
            (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
            (503, "UNAVAILABLE", "UNAVAILABLE"),
            (500, "INTERNAL", "INTERNAL"),
        ] {
            let attempt = reply(status, &fcm_error(status, api, Some(code), "x"));
            assert!(is_retry(&attempt), "{code}: {attempt:?}");
        }
        // 5xx / 429 without FCM's JSON (a proxy's HTML page) still retry.
        assert!(is_retry(&reply(502, "<html>Error 502</html>")));
        assert!(is_retry(&reply(504, "")));
        assert!(is_retry(&reply(429, "")));
        // Retry-After is honoured.
        let waited = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &FcmError::parse(&fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "q",
            )),
            Some(Duration::from_secs(7)),
        );
        assert_eq!(
            waited,
            Attempt::Retry {
                reason: "FCM 429 QUOTA_EXCEEDED".into(),
                after: Some(Duration::from_secs(7))
            }
        );

        // Configuration errors: never the device's fault, never retried.
        let third_party = reply(
            401,
            &fcm_error(
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "Auth error from APNS or Web Push Service",
            ),
        );
        assert!(is_config(&third_party), "{third_party:?}");
        let unauthenticated = reply(
            401,
            &fcm_error(
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials.",
            ),
        );
        assert!(is_config(&unauthenticated), "{unauthenticated:?}");
        assert!(is_config(&reply(
            403,
            &fcm_error(
                403,
                "PERMISSION_DENIED",
                None,
                "Permission 'cloudmessaging.messages.create' denied"
            )
        )));
        // INVALID_ARGUMENT about the message (not the token): pushwake's bug, not a dead token.
        let bad_data = json!({"error": {
            "code": 400, "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.data[0].value", "description": "Invalid value"}]}]}})
        .to_string();
        assert!(is_config(&reply(400, &bad_data)));
        let no_recipient = json!({"error": {
            "code": 400, "message": "Recipient of the message is not set.", "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message", "description": "Recipient of the message is not set."}]},
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}
            ]}})
        .to_string();
        assert!(is_config(&reply(400, &no_recipient)));
        assert!(is_config(&reply(
            400,
            &fcm_error(
                400,
                "INVALID_ARGUMENT",
                None,
                "Request contains an invalid argument."
            )
        )));
        // 404 without UNREGISTERED (a wrong path or project) does not kill the token.
        assert!(is_config(&reply(404, "<html>404</html>")));
    }

    #[test]
    fn error_texts_never_carry_the_device_or_access_token() {
        let device = "dXbQ2k1:APA91bF-secret_device_token";
        let access = "ya29.secret-access-token";
        let body = fcm_error(
            400,
            "INVALID_ARGUMENT",
            None,
            &format!("Invalid value {device} with {access}"),
        );
        let error = FcmError::parse_scrubbed(&body, &[device, access]);
        let attempt = classify(StatusCode::BAD_REQUEST, &error, None);
        let text = format!("{attempt:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");

        let token_reply = read_token_reply(
            "FCM",
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT: eyJsecret.assertion"}"#,
            &["eyJsecret.assertion"],
        );
        let text = format!("{token_reply:?}");
        assert!(!text.contains("eyJsecret"), "{text}");
    }

    #[test]
    fn the_assertion_is_what_google_expects() {
        let key = RsaKey::shared();
        let account = account(&key);
        let signing = EncodingKey::from_rsa_pem(account.private_key_pem.as_bytes()).unwrap();
        let jwt = sign_assertion(
            &signing,
            account.private_key_id.as_deref(),
            &account.client_email,
            &account.token_uri,
            T0,
        )
        .unwrap();
        // Verified with aws-lc-rs directly, not with the library that signed it.
        let claims = pushwake_testkit::fcm::verify_assertion(
            &jwt,
            &key,
            "pushwake@pushwake-test.iam.gserviceaccount.com",
            "https://oauth2.example.invalid/token",
            Some(T0),
        )
        .unwrap();
        assert_eq!(claims.iat, T0);
        assert_eq!(claims.exp, T0 + 3600);
        assert_eq!(
            claims.kid.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        // Another key's assertion does not verify.
        let other = RsaKey::generate();
        assert!(pushwake_testkit::fcm::verify_assertion(
            &jwt,
            &other,
            "pushwake@pushwake-test.iam.gserviceaccount.com",
            "https://oauth2.example.invalid/token",
            None
        )
        .is_err());
    }

    #[test]
    fn a_message_push_is_a_normal_priority_data_message_kept_until_the_message_expires() {
        let push = payload::a_message_push(Some("Hi"));
        let token = DeviceToken::new("dXbQ:APA91b-x_y");
        let body = message_push(&token, &push, 1_800_000_000);
        let android = &body["message"]["android"];
        assert_eq!(android["priority"], "NORMAL");
        assert_eq!(android["ttl"], "604800s");
        assert_eq!(android["collapse_key"], "m-1");
        assert_eq!(body["message"]["data"]["type"], "message_received");
        assert_eq!(body["message"]["data"]["preview"], "Hi");
        assert!(body["message"].get("notification").is_none());
        // Never past FCM's 28 days, never 0 (gone) for one about to expire.
        let late = message_push(&token, &push, push.expires_at + 10);
        assert_eq!(late["message"]["android"]["ttl"], "1s");
        let mut long = push.clone();
        long.expires_at = push.received_at + 60 * 86_400;
        let capped = message_push(&token, &long, push.received_at);
        assert_eq!(capped["message"]["android"]["ttl"], "2419200s");
    }

    #[test]
    fn the_message_is_data_only_with_string_values_high_priority_and_a_ttl() {
        let push = WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind: PushKind::IncomingCall,
            status: None,
            node: None,
        };
        let token = DeviceToken::new("dXbQ:APA91b-x_y");
        let body = message(&token, &push, T0 + 25, 25);
        assert_eq!(
            body,
            json!({"message": {
                "token": "dXbQ:APA91b-x_y",
                "data": {
                    "type": "incoming_call",
                    "version": "1",
                    "call_id": "5d7d1c1e-0000-4000-8000-000000000001",
                    "extension": "101",
                    "caller_number": "200",
                    "caller_name": "Alice",
                    "expires_at": (T0 + 25).to_string(),
                },
                "android": {"priority": "HIGH", "ttl": "25s"},
            }})
        );
        assert!(body["message"].get("notification").is_none());
        assert_eq!(window_secs(Duration::from_millis(24_200)), 25);
        assert_eq!(window_secs(Duration::from_secs(25)), 25);
        assert_eq!(window_secs(Duration::from_millis(10)), 1);
        assert_eq!(window_secs(Duration::ZERO), 1);
    }

    #[test]
    fn service_account_files_are_checked_without_quoting_the_key() {
        let key = RsaKey::shared();
        let good: Value = serde_json::from_str(&key.service_account_json(
            "p",
            "a@p.iam.gserviceaccount.com",
            "https://oauth2.googleapis.com/token",
        ))
        .unwrap();
        let account = ServiceAccount::from_json(good.to_string().as_bytes()).unwrap();
        assert_eq!(account.project_id, "p");
        assert_eq!(account.token_uri, "https://oauth2.googleapis.com/token");
        let shown = format!("{account:?}");
        assert!(
            !shown.contains("PRIVATE KEY") && shown.contains("<redacted>"),
            "{shown}"
        );

        let with = |field: &str, value: Value| {
            let mut v = good.clone();
            v[field] = value;
            ServiceAccount::from_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        let without = |field: &str| {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(field);
            ServiceAccount::from_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        for field in [
            "type",
            "project_id",
            "private_key",
            "client_email",
            "token_uri",
        ] {
            let e = without(field);
            assert!(e.contains(&format!("\"{field}\" is missing")), "{e}");
        }
        let e = with("type", json!("authorized_user"));
        assert!(e.contains("not \"service_account\""), "{e}");
        let e = with("token_uri", json!("oauth2.googleapis.com/token"));
        assert!(e.contains("token_uri"), "{e}");
        let e = with("project_id", json!(""));
        assert!(e.contains("\"project_id\" is empty"), "{e}");
        // An EC key (an APNs .p8) is not an RSA key; neither is garbage. Never quoted.
        let ec = pushwake_testkit::keys::EcKey::generate().private_pem;
        let e = with("private_key", json!(ec));
        assert!(e.contains("RSA"), "{e}");
        assert!(!e.contains(&ec[30..60]), "{e}");
        let e = with(
            "private_key",
            json!("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"),
        );
        assert!(e.contains("RSA") && !e.contains("c2VjcmV0"), "{e}");
        let e = ServiceAccount::from_json(b"{not json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn settings_and_pushkin_debug_hide_the_key() {
        let key = RsaKey::shared();
        let settings = FcmSettings {
            account: account(&key),
            endpoint: "http://127.0.0.1:9".into(),
        };
        let pushkin = FcmPushkin::new(settings.clone()).unwrap();
        let key_body = &key.private_pem[40..80];
        for shown in [format!("{settings:?}"), format!("{pushkin:?}")] {
            assert!(!shown.contains(key_body), "{shown}");
        }
    }
}
