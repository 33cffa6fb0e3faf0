//! Huawei Push Kit (HMS Core), for Huawei phones without Google services.
//!
//! OAuth2 client credentials (the app id and its secret) exchanged at Huawei's token
//! endpoint for an access token shared by every push ([`SharedAccessToken`]); then, per
//! device, `POST {endpoint}/v1/{app id}/messages:send` with a high-urgency **data**
//! message whose `ttl` is the time left in the ring window. Push Kit answers with a
//! result code in the body (`80000000` is success, also on HTTP 200 for some failures),
//! mapped by [`classify`].

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::oauth::{read_token_reply, Invalidation, SharedAccessToken, TokenError};
use super::{payload, Attempt, AttemptFuture, EndReason, MessagePush, Pushkin, WakePush};
use super::{retry_after, scrubbed_clip, unix_now, window_secs};
use pushwake_core::directory::{Device, DeviceToken, Platform};

mod section;
pub use section::Hms;

/// Huawei Push Kit devices: `platform = "hms"`, and the `[hms]` section.
pub const PLATFORM: Platform = Platform::new("hms");

/// Huawei's Push Kit endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://push-api.cloud.huawei.com";
/// Huawei's OAuth2 token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";

/// Everything needed to push through Huawei Push Kit.
#[derive(Clone, PartialEq, Eq)]
pub struct HmsSettings {
    /// The app id (also the OAuth2 client id).
    pub app_id: String,
    /// The app secret (OAuth2 client secret). Secret.
    pub client_secret: String,
    /// Push Kit base URL; `http://` means HTTP/2 without TLS (local test servers).
    pub endpoint: String,
    /// The OAuth2 token endpoint.
    pub token_url: String,
}

impl std::fmt::Debug for HmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsSettings")
            .field("app_id", &self.app_id)
            .field("client_secret", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// Why HMS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HmsSetupError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The body of one push: a data message (a JSON string, as Push Kit wants it) with high
/// urgency and a `ttl` of `ttl_secs`, to one token.
pub fn message(token: &DeviceToken, push: &WakePush, expires_at: u64, ttl_secs: u64) -> Value {
    json!({
        "validate_only": false,
        "message": {
            "data": payload::for_push(push, expires_at).to_string(),
            "android": {
                "urgency": "HIGH",
                "ttl": format!("{ttl_secs}s"),
            },
            "token": [token.expose()],
        }
    })
}

/// The body of a message push: a data message with **normal** urgency, kept by Push
/// Kit until the message expires (at most its 15 days).
pub fn message_push(token: &DeviceToken, push: &MessagePush, now: u64) -> Value {
    let ttl = push.expires_at.saturating_sub(now).clamp(1, 15 * 24 * 3600);
    json!({
        "validate_only": false,
        "message": {
            "data": payload::message_received(push).to_string(),
            "android": {
                "urgency": "NORMAL",
                "ttl": format!("{ttl}s"),
                "collapse_key": -1,
            },
            "token": [token.expose()],
        }
    })
}

/// The `code` and `msg` of a Push Kit reply body, each with every secret (the device
/// token, the access token) replaced (the message may list the failing tokens), each
/// clipped to one short line as it goes into the log. Empty for a body that is not Push
/// Kit's JSON.
pub fn reply_fields(body: &str, secrets: &[&str]) -> (String, String) {
    let reply: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = scrubbed_clip(reply["code"].as_str().unwrap_or_default(), secrets);
    let msg = scrubbed_clip(reply["msg"].as_str().unwrap_or_default(), secrets);
    (code, msg)
}

/// Maps Push Kit's answer (HTTP status and the body's `code`) to what to do.
pub fn classify(
    status: StatusCode,
    code: &str,
    msg: &str,
    retry_after: Option<Duration>,
) -> Attempt {
    let reason = if code.is_empty() {
        format!("HMS {}", status.as_u16())
    } else {
        format!("HMS {} {code} {msg}", status.as_u16())
    };
    match (status.as_u16(), code) {
        (200, "80000000") => Attempt::Delivered,
        // All tokens invalid; with one token, a partial success is that token failing.
        (_, "80300007" | "80100000") => Attempt::Rejected {
            reason,
            dead_token: true,
        },
        // The access token expired (or was refused): a new one, and again.
        (_, "80200003") | (401, "") => Attempt::Retry {
            reason,
            after: Some(Duration::ZERO),
        },
        (429 | 500 | 502 | 503 | 504, _) | (_, "81000001") => Attempt::Retry {
            reason,
            after: retry_after,
        },
        _ => Attempt::Rejected {
            reason,
            dead_token: false,
        },
    }
}

/// The Huawei Push Kit pushkin.
pub struct HmsPushkin {
    client: reqwest::Client,
    endpoint: String,
    send_url: String,
    settings: HmsSettings,
    token: SharedAccessToken,
}

impl std::fmt::Debug for HmsPushkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsPushkin")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HmsPushkin {
    /// Builds the client (no connection yet; see [`HmsPushkin::warm_up`]).
    pub fn new(settings: HmsSettings) -> Result<Self, HmsSetupError> {
        let endpoint = settings.endpoint.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(None)
            .connect_timeout(Duration::from_secs(5));
        if endpoint.starts_with("http://") || settings.token_url.starts_with("http://") {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .build()
            .map_err(|e| HmsSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            send_url: format!("{endpoint}/v1/{}/messages:send", settings.app_id),
            endpoint,
            settings,
            token: SharedAccessToken::new("HMS", "[hms] app_id and client_secret_file"),
        })
    }

    /// Fetches the first access token and opens the connection before the first push;
    /// says why the provider is not ready yet, if it is not.
    pub async fn warm_up(&self) -> Result<(), String> {
        // A failed fetch is logged where it happens.
        let token = self.token.get(|| self.fetch_token()).await;
        if let Err(error) = self.client.get(&self.endpoint).send().await {
            let error = super::describe_http_error(&error, "<hms>");
            tracing::warn!(endpoint = %self.endpoint, %error, "cannot reach Huawei Push Kit yet; pushes will retry");
            return Err(format!("cannot reach Huawei Push Kit: {error}"));
        }
        token.map(|_| ()).map_err(|error| error.reason().to_owned())
    }

    async fn fetch_token(&self) -> Result<(String, u64), TokenError> {
        let secret = self.settings.client_secret.as_str();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.settings.app_id)
            .append_pair("client_secret", secret)
            .finish();
        let failed = |e: reqwest::Error| {
            TokenError::Transient(format!(
                "HMS token endpoint: {}",
                super::describe_http_error(&e, "<hms>")
            ))
        };
        let response = self
            .client
            .post(&self.settings.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        read_token_reply("HMS", status, &text, &[secret])
    }

    /// Sends one request `body` (to `token`), within `ring_window`.
    async fn send_once(&self, token: &DeviceToken, body: Value, ring_window: Duration) -> Attempt {
        let access = match self.token.get(|| self.fetch_token()).await {
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
                    reason: format!("HMS: {}", super::describe_http_error(&error, "<hms>")),
                    after: None,
                }
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let (code, msg) = reply_fields(&text, &[token.expose(), access.as_str()]);
        let attempt = classify(status, &code, &msg, after);
        if matches!(&attempt, Attempt::Retry { after: Some(wait), .. } if wait.is_zero()) {
            match self.token.invalidate(&access) {
                Invalidation::Dropped => {
                    tracing::warn!("Huawei Push Kit refused the access token; fetching a new one")
                }
                Invalidation::AlreadyReplaced => {}
                Invalidation::Kept => {
                    return Attempt::Rejected {
                        reason: format!("{code} {msg}: the access token is refused again"),
                        dead_token: false,
                    }
                }
            }
        }
        if let Attempt::Rejected {
            dead_token: false,
            reason,
        } = &attempt
        {
            tracing::error!(%reason, "Huawei Push Kit rejected the push: a configuration error; check the [hms] settings");
        }
        attempt
    }
}

impl Pushkin for HmsPushkin {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn warm_up(&self) -> super::WarmUpFuture<'_> {
        Box::pin(HmsPushkin::warm_up(self))
    }

    fn carries_call_ended(&self, _: &Device, _: EndReason) -> Result<(), String> {
        // A data message, like FCM's: the app stops ringing without showing anything.
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
    use crate::push::{EndReason, PushKind};
    use pushwake_core::pbx::{CallId, Party};

    fn code(status: u16, code: &str) -> Attempt {
        classify(StatusCode::from_u16(status).unwrap(), code, "msg", None)
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(code(200, "80000000"), Attempt::Delivered);
        assert!(matches!(
            code(200, "80300007"),
            Attempt::Rejected {
                dead_token: true,
                ..
            }
        ));
        assert!(matches!(
            code(200, "80100000"),
            Attempt::Rejected {
                dead_token: true,
                ..
            }
        ));
        assert!(
            matches!(code(401, "80200003"), Attempt::Retry { after: Some(d), .. } if d.is_zero())
        );
        assert!(matches!(code(401, ""), Attempt::Retry { after: Some(d), .. } if d.is_zero()));
        assert!(matches!(code(503, ""), Attempt::Retry { after: None, .. }));
        assert!(matches!(code(500, "81000001"), Attempt::Retry { .. }));
        assert!(matches!(code(200, "81000001"), Attempt::Retry { .. }));
        assert!(matches!(
            code(401, "80200001"),
            Attempt::Rejected {
                dead_token: false,
                ..
            }
        ));
        assert!(matches!(
            code(403, "80300002"),
            Attempt::Rejected {
                dead_token: false,
                ..
            }
        ));
        assert!(matches!(
            code(400, "80100003"),
            Attempt::Rejected {
                dead_token: false,
                ..
            }
        ));
        assert!(matches!(
            code(200, "80100016"),
            Attempt::Rejected {
                dead_token: false,
                ..
            }
        ));
        let waited = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "",
            Some(Duration::from_secs(4)),
        );
        assert!(
            matches!(waited, Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(4))
        );
    }

    #[test]
    fn a_message_push_is_a_normal_urgency_data_message() {
        let push = payload::a_message_push(None);
        let body = message_push(&DeviceToken::new("hms-token"), &push, 1_800_000_000);
        let android = &body["message"]["android"];
        assert_eq!(android["urgency"], "NORMAL");
        assert_eq!(android["ttl"], "604800s");
        let data: serde_json::Value =
            serde_json::from_str(body["message"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, payload::message_received(&push));
        assert_eq!(body["message"]["token"], json!(["hms-token"]));
    }

    #[test]
    fn the_message_is_a_high_urgency_data_message_to_one_token() {
        let push = WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind: PushKind::CallEnded(EndReason::Timeout),
            status: None,
            node: None,
        };
        let body = message(
            &DeviceToken::new("IQAAAACy0kYkAAD"),
            &push,
            1_800_000_025,
            25,
        );
        assert_eq!(body["validate_only"], false);
        assert_eq!(body["message"]["token"], json!(["IQAAAACy0kYkAAD"]));
        assert_eq!(
            body["message"]["android"],
            json!({ "urgency": "HIGH", "ttl": "25s" })
        );
        assert!(body["message"].get("notification").is_none());
        let data: Value = serde_json::from_str(body["message"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, payload::for_push(&push, 1_800_000_025));
        assert_eq!(data["type"], "call_cancelled");
    }

    #[test]
    fn settings_never_show_the_secret() {
        let settings = HmsSettings {
            app_id: "10086".into(),
            client_secret: "s3cr3t-app-secret".into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            token_url: DEFAULT_TOKEN_URL.into(),
        };
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        let pushkin = HmsPushkin::new(settings).unwrap();
        assert!(!format!("{pushkin:?}").contains("s3cr3t"));
    }
}
