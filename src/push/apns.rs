//! Apple Push Notification service, token-based authentication.
//!
//! Built on reqwest's HTTP/2 client rather than the `a2` crate: a2 0.10 hard-codes
//! Apple's hosts and trusts only the public roots, so nothing it sends could be checked
//! against a local test server (see the README's dependency notes). One HTTP/2
//! connection per credential is opened at start-up, kept warm with HTTP/2 pings, and
//! carries every push multiplexed.

use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;

use super::unix_now;
use super::{payload, Attempt, AttemptFuture, PushKind, Pushkin, WakePush};
use crate::directory::{DeviceToken, Platform};

/// Apple's production endpoint.
pub const PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";

/// A provider token is reused for this long. Apple rejects tokens older than an hour and
/// throttles renewals more frequent than every 20 minutes.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// The shortest interval between two renewals, even when Apple says the token expired.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Everything needed to talk to APNs with token authentication.
pub struct ApnsSettings {
    /// The developer team id (JWT `iss`).
    pub team_id: String,
    /// The id of the .p8 signing key (JWT `kid`).
    pub key_id: String,
    /// The .p8 key (PKCS#8 PEM, P-256). Secret.
    pub key_pem: Vec<u8>,
    /// The VoIP topic: the app's bundle id followed by `.voip`.
    pub topic: String,
    /// Base URL; `http://` means HTTP/2 without TLS (local test servers).
    pub endpoint: String,
}

impl std::fmt::Debug for ApnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("key_pem", &"<redacted>")
            .field("topic", &self.topic)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Why APNs settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApnsSetupError {
    /// The key is not a PKCS#8 PEM P-256 private key.
    #[error("not a PKCS#8 PEM P-256 (ES256) private key: {0}")]
    BadKey(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP/2 client: {0}")]
    Client(String),
}

/// Checks that `pem` is a key APNs token authentication can sign with.
pub fn check_key(pem: &[u8]) -> Result<(), ApnsSetupError> {
    let key = EncodingKey::from_ec_pem(pem).map_err(|e| ApnsSetupError::BadKey(e.to_string()))?;
    // Parsing the PEM does not prove the key signs; a trial signature does.
    sign(&key, "TEAM", "KEY", 0).map(|_| ())
}

fn sign(
    key: &EncodingKey,
    team_id: &str,
    key_id: &str,
    iat: u64,
) -> Result<String, ApnsSetupError> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key_id.to_owned());
    let claims = serde_json::json!({ "iss": team_id, "iat": iat });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| ApnsSetupError::BadKey(e.to_string()))
}

/// The provider token (JWT) with its reuse and renewal rules. Time is passed in, so the
/// rules are tested without waiting an hour.
pub struct ProviderToken {
    key: EncodingKey,
    team_id: String,
    key_id: String,
    current: Option<(String, u64)>,
    renewals: u64,
}

impl ProviderToken {
    /// A token source for this key.
    pub fn new(key_pem: &[u8], team_id: &str, key_id: &str) -> Result<Self, ApnsSetupError> {
        let key =
            EncodingKey::from_ec_pem(key_pem).map_err(|e| ApnsSetupError::BadKey(e.to_string()))?;
        Ok(Self {
            key,
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            current: None,
            renewals: 0,
        })
    }

    /// The token to send at Unix time `now`: the cached one while it is younger than
    /// [`TOKEN_LIFETIME`], else a new one.
    pub fn get(&mut self, now: u64) -> Result<String, ApnsSetupError> {
        match &self.current {
            Some((jwt, iat))
                if now.saturating_sub(*iat) < TOKEN_LIFETIME.as_secs() && now >= *iat =>
            {
                Ok(jwt.clone())
            }
            _ => self.renew(now),
        }
    }

    /// Apple said the token expired: renew it, unless it was renewed less than
    /// [`MIN_RENEWAL_INTERVAL`] ago (Apple would throttle us; the clock is off instead).
    /// Returns whether a new token was made.
    pub fn expired(&mut self, now: u64) -> Result<bool, ApnsSetupError> {
        let young = matches!(&self.current, Some((_, iat)) if now.saturating_sub(*iat) < MIN_RENEWAL_INTERVAL.as_secs());
        if young {
            return Ok(false);
        }
        self.renew(now).map(|_| true)
    }

    /// How many tokens were signed so far.
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    fn renew(&mut self, now: u64) -> Result<String, ApnsSetupError> {
        let jwt = sign(&self.key, &self.team_id, &self.key_id, now)?;
        self.current = Some((jwt.clone(), now));
        self.renewals += 1;
        Ok(jwt)
    }
}

/// The APNs pushkin.
pub struct ApnsPushkin {
    client: reqwest::Client,
    endpoint: String,
    topic: String,
    token: Mutex<ProviderToken>,
}

impl ApnsPushkin {
    /// Builds the client (no connection yet; see [`ApnsPushkin::warm_up`]).
    pub fn new(settings: ApnsSettings) -> Result<Self, ApnsSetupError> {
        let token = ProviderToken::new(&settings.key_pem, &settings.team_id, &settings.key_id)?;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(None)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApnsSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            endpoint: settings.endpoint.trim_end_matches('/').to_owned(),
            topic: settings.topic,
            token: Mutex::new(token),
        })
    }

    /// Opens the HTTP/2 connection now, so the first push of the first call does not
    /// pay for TCP and TLS set-up. Failure is only logged: pushes retry by themselves.
    pub async fn warm_up(&self) {
        match self.client.get(&self.endpoint).send().await {
            Ok(response) => {
                tracing::info!(endpoint = %self.endpoint, version = ?response.version(), "APNs connection open")
            }
            Err(error) => {
                tracing::warn!(endpoint = %self.endpoint, error = %super::describe_http_error(&error, "<apns>"), "cannot reach APNs yet; pushes will retry")
            }
        }
    }

    async fn send_once(
        &self,
        token: &DeviceToken,
        push: &WakePush,
        ring_window: Duration,
    ) -> Attempt {
        if push.kind != PushKind::IncomingCall {
            // Apple forbids VoIP pushes that report no call (iOS 13+ ends such apps);
            // PushService never asks, this makes sure.
            return Attempt::Rejected {
                reason: "APNs carries no VoIP push for an ended call".into(),
                dead_token: false,
            };
        }
        let now = unix_now();
        let jwt = match self.token.lock().expect("token lock").get(now) {
            Ok(jwt) => jwt,
            Err(error) => {
                return Attempt::Rejected {
                    reason: error.to_string(),
                    dead_token: false,
                }
            }
        };
        let expires_at = now + ring_window.as_secs() + u64::from(ring_window.subsec_nanos() > 0);
        let body = payload::incoming_call(push, expires_at);
        let url = format!("{}/3/device/{}", self.endpoint, token.expose());
        let response = self
            .client
            .post(url)
            // Apple's documented form; the scheme is case-insensitive (RFC 7235).
            .header(reqwest::header::AUTHORIZATION, format!("bearer {jwt}"))
            .header("apns-push-type", "voip")
            .header("apns-topic", &self.topic)
            .header("apns-priority", "10")
            .header("apns-expiration", expires_at.to_string())
            .timeout(ring_window.clamp(Duration::from_secs(1), Duration::from_secs(10)))
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(error) => {
                return Attempt::Retry {
                    reason: super::describe_http_error(&error, "<apns>"),
                    after: None,
                };
            }
        };
        let status = response.status();
        if status == StatusCode::OK {
            return Attempt::Delivered;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let reason = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let attempt = classify(status, &reason, retry_after);
        if reason == "ExpiredProviderToken" {
            match self.token.lock().expect("token lock").expired(unix_now()) {
                Ok(true) => {}
                Ok(false) => tracing::error!("APNs says the provider token expired although it is fresh: is the clock right?"),
                Err(error) => tracing::error!(%error, "cannot sign a new APNs provider token"),
            }
        }
        if let Attempt::Rejected {
            dead_token: false,
            reason,
        } = &attempt
        {
            tracing::error!(%reason, "APNs rejected the push: check the [apns] settings");
        }
        attempt
    }
}

/// Maps an APNs error reply to what to do about it.
pub fn classify(status: StatusCode, reason: &str, retry_after: Option<Duration>) -> Attempt {
    let described = if reason.is_empty() {
        format!("APNs {}", status.as_u16())
    } else {
        format!("APNs {} {reason}", status.as_u16())
    };
    match (status.as_u16(), reason) {
        (_, "BadDeviceToken" | "DeviceTokenNotForTopic" | "Unregistered" | "ExpiredToken")
        | (410, _) => Attempt::Rejected {
            reason: described,
            dead_token: true,
        },
        (_, "ExpiredProviderToken") => Attempt::Retry {
            reason: described,
            after: Some(Duration::ZERO),
        },
        (429 | 500 | 502 | 503 | 504, _) => Attempt::Retry {
            reason: described,
            after: retry_after,
        },
        _ => Attempt::Rejected {
            reason: described,
            dead_token: false,
        },
    }
}

impl Pushkin for ApnsPushkin {
    fn platform(&self) -> Platform {
        Platform::Apns
    }

    fn warm_up(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(ApnsPushkin::warm_up(self))
    }

    fn attempt<'a>(
        &'a self,
        token: &'a DeviceToken,
        push: &'a WakePush,
        ring_window: Duration,
    ) -> AttemptFuture<'a> {
        Box::pin(self.send_once(token, push, ring_window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 PKCS#8 key made for these tests only.
    fn test_key() -> Vec<u8> {
        pushwake_testkit::keys::EcKey::generate()
            .private_pem
            .into_bytes()
    }

    #[test]
    fn token_is_reused_then_renewed_before_an_hour() {
        let mut token = ProviderToken::new(&test_key(), "TEAM123456", "KEY1234567").unwrap();
        let t0 = 1_800_000_000;
        let first = token.get(t0).unwrap();
        assert_eq!(token.get(t0 + 60).unwrap(), first);
        assert_eq!(token.get(t0 + 49 * 60).unwrap(), first);
        assert_eq!(token.renewals(), 1);
        let second = token.get(t0 + 50 * 60).unwrap();
        assert_ne!(second, first);
        assert_eq!(token.renewals(), 2);
    }

    #[test]
    fn expired_token_is_renewed_but_not_more_often_than_every_20_minutes() {
        let mut token = ProviderToken::new(&test_key(), "TEAM123456", "KEY1234567").unwrap();
        let t0 = 1_800_000_000;
        token.get(t0).unwrap();
        assert!(!token.expired(t0 + 5 * 60).unwrap());
        assert_eq!(token.renewals(), 1);
        assert!(token.expired(t0 + 21 * 60).unwrap());
        assert_eq!(token.renewals(), 2);
    }

    #[test]
    fn token_claims_and_header_are_what_apple_expects() {
        let key = pushwake_testkit::keys::EcKey::generate();
        let mut token =
            ProviderToken::new(key.private_pem.as_bytes(), "TEAM123456", "KEY1234567").unwrap();
        let jwt = token.get(1_800_000_000).unwrap();
        let claims = pushwake_testkit::apns::verify_provider_token(
            &jwt,
            &key,
            "TEAM123456",
            "KEY1234567",
            None,
        )
        .unwrap();
        assert_eq!(claims.iat, 1_800_000_000);
    }

    #[test]
    fn a_key_that_is_not_p256_is_refused() {
        assert!(
            check_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert!(check_key(b"not a key").is_err());
        assert!(check_key(&test_key()).is_ok());
    }

    #[test]
    fn error_replies_are_classified() {
        let dead = |s: u16, r: &str| {
            matches!(
                classify(StatusCode::from_u16(s).unwrap(), r, None),
                Attempt::Rejected {
                    dead_token: true,
                    ..
                }
            )
        };
        let retry = |s: u16, r: &str| {
            matches!(
                classify(StatusCode::from_u16(s).unwrap(), r, None),
                Attempt::Retry { .. }
            )
        };
        let config = |s: u16, r: &str| {
            matches!(
                classify(StatusCode::from_u16(s).unwrap(), r, None),
                Attempt::Rejected {
                    dead_token: false,
                    ..
                }
            )
        };
        assert!(dead(400, "BadDeviceToken"));
        assert!(dead(400, "DeviceTokenNotForTopic"));
        assert!(dead(410, "Unregistered"));
        assert!(dead(410, ""));
        assert!(retry(403, "ExpiredProviderToken"));
        assert!(retry(429, "TooManyRequests"));
        assert!(retry(500, "InternalServerError"));
        assert!(retry(503, "ServiceUnavailable"));
        assert!(config(403, "InvalidProviderToken"));
        assert!(config(400, "BadTopic"));
        assert!(config(413, "PayloadTooLarge"));
        let waited = classify(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            Some(Duration::from_secs(3)),
        );
        assert_eq!(
            waited,
            Attempt::Retry {
                reason: "APNs 429 TooManyRequests".into(),
                after: Some(Duration::from_secs(3))
            }
        );
    }
}
