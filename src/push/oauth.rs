//! OAuth2 access tokens for push services that use them (FCM, Huawei Push Kit): the
//! reuse and renewal rules as a sans-io cache with time passed in, the token endpoint's
//! reply, and [`SharedAccessToken`], which lets one push at a time fetch a token while the
//! others wait for it (or keep using the still-valid old one).

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::{scrub, unix_now, Attempt};

/// An access token is renewed this long before it expires (or at half its lifetime, if
/// that is shorter).
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// An access token this close to its expiry is no longer sent, even as a fallback.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// After a transient token-endpoint failure, pushes get the same answer for this long
/// without a new request (so a failing endpoint sees one request per interval, not one per
/// push).
pub const TRANSIENT_FAILURE_HOLD: Duration = Duration::from_secs(2);
/// The same after the token endpoint refused the credentials.
pub const CONFIG_FAILURE_HOLD: Duration = Duration::from_secs(30);
/// The service refusing an access token drops it (the next push fetches a new one) at most this
/// often, so broken credentials cannot turn every push into a token request.
pub const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(60);

// ---- the access token --------------------------------------------------------------------

/// Why no access token could be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The network or the token endpoint failed; worth trying again.
    Transient(String),
    /// The token endpoint refused the credentials (or they cannot be signed): a
    /// configuration error.
    Config(String),
}

impl TokenError {
    /// What went wrong, as logged (no secret in it).
    pub(crate) fn reason(&self) -> &str {
        match self {
            TokenError::Transient(reason) | TokenError::Config(reason) => reason,
        }
    }

    pub(crate) fn into_attempt(self) -> Attempt {
        match self {
            TokenError::Transient(reason) => Attempt::Retry {
                reason,
                after: None,
            },
            TokenError::Config(reason) => Attempt::Rejected {
                reason,
                dead_token: false,
            },
        }
    }
}

/// What to do for an access token now.
#[derive(Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Send with this token.
    Use(String),
    /// Fetch a new token. `fallback` is the current one, still valid: sent while another
    /// push is fetching, or if the fetch fails.
    Fetch {
        /// The still-valid current token.
        fallback: Option<String>,
    },
    /// A fetch failed moments ago: give pushes this answer without a new request.
    Failed(TokenError),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Use(_) => f.write_str("Use(<token>)"),
            Lookup::Fetch { fallback } => {
                write!(f, "Fetch {{ fallback: {} }}", fallback.is_some())
            }
            Lookup::Failed(e) => write!(f, "Failed({e:?})"),
        }
    }
}

/// What dropping a refused access token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// It was the current token and is gone: the next push fetches a new one.
    Dropped,
    /// The current token is already another one (or none): just try again.
    AlreadyReplaced,
    /// A token was dropped less than [`MIN_INVALIDATION_INTERVAL`] ago: kept; the
    /// credentials themselves are wrong.
    Kept,
}

/// The OAuth2 access token with its reuse and renewal rules. Sans-io: the caller fetches
/// and passes Unix time in, so the rules are tested without waiting an hour.
#[derive(Default)]
pub struct AccessTokenCache {
    current: Option<CachedToken>,
    failure: Option<(u64, TokenError)>,
    last_invalidation: Option<u64>,
    stored: u64,
}

struct CachedToken {
    token: String,
    renew_at: u64,
    expires_at: u64,
}

impl AccessTokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do at Unix time `now`.
    pub fn lookup(&self, now: u64) -> Lookup {
        if let Some(current) = &self.current {
            if now < current.renew_at {
                return Lookup::Use(current.token.clone());
            }
        }
        let fallback = self
            .current
            .as_ref()
            .filter(|c| now + EXPIRY_MARGIN.as_secs() < c.expires_at)
            .map(|c| c.token.clone());
        if let Some((at, error)) = &self.failure {
            let hold = match error {
                TokenError::Transient(_) => TRANSIENT_FAILURE_HOLD,
                TokenError::Config(_) => CONFIG_FAILURE_HOLD,
            };
            if now < at + hold.as_secs() {
                return match fallback {
                    Some(token) => Lookup::Use(token),
                    None => Lookup::Failed(error.clone()),
                };
            }
        }
        Lookup::Fetch { fallback }
    }

    /// A fetch at `now` returned `token`, valid for `expires_in` seconds.
    pub fn store(&mut self, token: String, expires_in: u64, now: u64) {
        let early = RENEW_BEFORE_EXPIRY.as_secs().min(expires_in / 2);
        self.current = Some(CachedToken {
            token,
            renew_at: now + expires_in - early,
            expires_at: now + expires_in,
        });
        self.failure = None;
        self.stored += 1;
    }

    /// A fetch at `now` failed.
    pub fn fetch_failed(&mut self, error: TokenError, now: u64) {
        self.failure = Some((now, error));
    }

    /// The service refused `used` (401): drop it, unless that was done less than
    /// [`MIN_INVALIDATION_INTERVAL`] ago.
    pub fn invalidate(&mut self, used: &str, now: u64) -> Invalidation {
        match &self.current {
            Some(current) if current.token == used => {
                let recent = self
                    .last_invalidation
                    .is_some_and(|at| now < at + MIN_INVALIDATION_INTERVAL.as_secs());
                if recent {
                    Invalidation::Kept
                } else {
                    self.current = None;
                    self.failure = None;
                    self.last_invalidation = Some(now);
                    Invalidation::Dropped
                }
            }
            _ => Invalidation::AlreadyReplaced,
        }
    }

    /// How many tokens were stored so far.
    pub fn stored(&self) -> u64 {
        self.stored
    }
}

/// Reads the token endpoint's answer: the access token and its lifetime, or why not.
/// 400/401/403 (`invalid_grant`, `invalid_client`, …) are configuration errors; 429 and
/// 5xx are transient. `secrets` are scrubbed from any text kept.
pub fn read_token_reply(
    service: &str,
    status: StatusCode,
    body: &str,
    secrets: &[&str],
) -> Result<(String, u64), TokenError> {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if status.is_success() {
        let parsed = parsed.unwrap_or(Value::Null);
        let token = parsed["access_token"].as_str().filter(|t| !t.is_empty());
        let expires_in = parsed["expires_in"].as_u64().filter(|&s| s > 0);
        let kind = parsed["token_type"].as_str().unwrap_or("Bearer");
        return match (token, expires_in) {
            (Some(_), Some(_)) if !kind.eq_ignore_ascii_case("bearer") => {
                Err(TokenError::Config(format!(
                    "{service} token endpoint issued a `{}` token, not a Bearer token",
                    scrub(kind, secrets)
                )))
            }
            (Some(token), Some(expires_in)) => Ok((token.to_owned(), expires_in)),
            _ => Err(TokenError::Transient(format!(
                "{service} token endpoint {} without access_token and expires_in",
                status.as_u16()
            ))),
        };
    }
    let oauth_error = parsed
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(|e| scrub(e, secrets));
    let description = parsed
        .as_ref()
        .and_then(|v| v["error_description"].as_str())
        .map(|d| scrub(d, secrets));
    let mut reason = format!("{service} token endpoint {}", status.as_u16());
    if let Some(error) = &oauth_error {
        reason.push(' ');
        reason.push_str(error);
    }
    if let Some(description) = &description {
        reason.push_str(&format!(" ({description})"));
    }
    match status.as_u16() {
        429 | 500..=599 => Err(TokenError::Transient(reason)),
        _ => Err(TokenError::Config(reason)),
    }
}

/// An access token shared by every push of one credential: cached, renewed before it
/// expires, fetched by one push at a time.
pub struct SharedAccessToken {
    service: &'static str,
    config_hint: &'static str,
    cache: std::sync::Mutex<AccessTokenCache>,
    fetching: tokio::sync::Mutex<()>,
}

impl SharedAccessToken {
    /// A token source for `service` (for logs); `config_hint` says where the credentials
    /// are configured, for the error an operator sees when they are refused.
    pub fn new(service: &'static str, config_hint: &'static str) -> Self {
        Self {
            service,
            config_hint,
            cache: std::sync::Mutex::new(AccessTokenCache::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lookup(&self) -> Lookup {
        self.cache.lock().expect("token cache").lookup(unix_now())
    }

    /// The access token to send with: the cached one, or one fetched now with `fetch` —
    /// by one push at a time; the others wait for it, or use the still-valid old token
    /// meanwhile.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<String, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, u64), TokenError>>,
    {
        let fallback = match self.lookup() {
            Lookup::Use(token) => return Ok(token),
            Lookup::Failed(error) => return Err(error),
            Lookup::Fetch { fallback } => fallback,
        };
        let _fetching = match (self.fetching.try_lock(), fallback) {
            (Ok(guard), _) => guard,
            // Someone is renewing; the current token is still good.
            (Err(_), Some(token)) => return Ok(token),
            (Err(_), None) => self.fetching.lock().await,
        };
        // The fetch waited for may have stored a token, or failed.
        let fallback = match self.lookup() {
            Lookup::Use(token) => return Ok(token),
            Lookup::Failed(error) => return Err(error),
            Lookup::Fetch { fallback } => fallback,
        };
        let result = fetch().await;
        let mut cache = self.cache.lock().expect("token cache");
        match result {
            Ok((token, expires_in)) => {
                cache.store(token.clone(), expires_in, unix_now());
                tracing::info!(
                    expires_in,
                    fetched = cache.stored(),
                    "{} access token obtained",
                    self.service
                );
                Ok(token)
            }
            Err(error) => {
                match &error {
                    TokenError::Config(reason) => {
                        tracing::error!(%reason, "the {} token endpoint refused the credentials: check {}", self.service, self.config_hint)
                    }
                    TokenError::Transient(reason) => {
                        tracing::warn!(%reason, "cannot get a {} access token yet", self.service)
                    }
                }
                cache.fetch_failed(error.clone(), unix_now());
                match fallback {
                    Some(token) => Ok(token),
                    None => Err(error),
                }
            }
        }
    }

    /// The service refused `used` (401): see [`AccessTokenCache::invalidate`].
    pub fn invalidate(&self, used: &str) -> Invalidation {
        self.cache
            .lock()
            .expect("token cache")
            .invalidate(used, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn token_endpoint_replies_are_read() {
        let ok = read_token_reply(
            "FCM",
            StatusCode::OK,
            r#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#,
            &[],
        );
        assert_eq!(ok, Ok(("ya29.abc".to_owned(), 3599)));
        let config = |s: u16, body: &str| {
            matches!(
                read_token_reply("FCM", StatusCode::from_u16(s).unwrap(), body, &[]),
                Err(TokenError::Config(_))
            )
        };
        let transient = |s: u16, body: &str| {
            matches!(
                read_token_reply("FCM", StatusCode::from_u16(s).unwrap(), body, &[]),
                Err(TokenError::Transient(_))
            )
        };
        assert!(config(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
        ));
        assert!(config(
            401,
            r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#
        ));
        assert!(config(403, ""));
        assert!(config(404, "<html>not found</html>"));
        assert!(transient(500, ""));
        assert!(transient(503, r#"{"error":"temporarily_unavailable"}"#));
        assert!(transient(429, ""));
        assert!(transient(200, r#"{"token_type":"Bearer"}"#));
        assert!(transient(200, "not json"));
        assert!(config(
            200,
            r#"{"access_token":"x","expires_in":3600,"token_type":"MAC"}"#
        ));
        let Err(TokenError::Config(reason)) = read_token_reply(
            "FCM",
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            &[],
        ) else {
            panic!()
        };
        assert_eq!(
            reason,
            "FCM token endpoint 400 invalid_grant (Invalid JWT Signature.)"
        );
    }

    #[test]
    fn the_access_token_is_reused_then_renewed_five_minutes_before_expiry() {
        let mut cache = AccessTokenCache::new();
        assert_eq!(cache.lookup(T0), Lookup::Fetch { fallback: None });
        cache.store("first".into(), 3600, T0);
        assert_eq!(cache.lookup(T0), Lookup::Use("first".into()));
        assert_eq!(cache.lookup(T0 + 3600 - 301), Lookup::Use("first".into()));
        // Renewal due; the old token is still good meanwhile.
        assert_eq!(
            cache.lookup(T0 + 3600 - 300),
            Lookup::Fetch {
                fallback: Some("first".into())
            }
        );
        // Too close to its expiry to be sent at all.
        assert_eq!(
            cache.lookup(T0 + 3600 - 10),
            Lookup::Fetch { fallback: None }
        );
        cache.store("second".into(), 3600, T0 + 3300);
        assert_eq!(cache.lookup(T0 + 3301), Lookup::Use("second".into()));
        assert_eq!(cache.stored(), 2);
        // A short-lived token is renewed at half its life.
        cache.store("short".into(), 120, T0);
        assert_eq!(cache.lookup(T0 + 59), Lookup::Use("short".into()));
        assert!(matches!(cache.lookup(T0 + 60), Lookup::Fetch { .. }));
    }

    #[test]
    fn a_failed_fetch_is_not_repeated_by_every_push() {
        let mut cache = AccessTokenCache::new();
        let down = TokenError::Transient("FCM token endpoint 503".into());
        cache.fetch_failed(down.clone(), T0);
        assert_eq!(cache.lookup(T0 + 1), Lookup::Failed(down));
        assert_eq!(cache.lookup(T0 + 2), Lookup::Fetch { fallback: None });
        let refused = TokenError::Config("FCM token endpoint 400 invalid_grant".into());
        cache.fetch_failed(refused.clone(), T0 + 2);
        assert_eq!(cache.lookup(T0 + 31), Lookup::Failed(refused));
        assert_eq!(cache.lookup(T0 + 32), Lookup::Fetch { fallback: None });
        // A failed renewal keeps the old, still valid token in use.
        cache.store("old".into(), 3600, T0);
        cache.fetch_failed(TokenError::Transient("timeout".into()), T0 + 3400);
        assert_eq!(cache.lookup(T0 + 3401), Lookup::Use("old".into()));
        assert_eq!(
            cache.lookup(T0 + 3402),
            Lookup::Fetch {
                fallback: Some("old".into())
            }
        );
    }

    #[test]
    fn a_refused_access_token_is_dropped_at_most_once_a_minute() {
        let mut cache = AccessTokenCache::new();
        cache.store("first".into(), 3600, T0);
        assert_eq!(cache.invalidate("first", T0 + 10), Invalidation::Dropped);
        assert_eq!(cache.lookup(T0 + 10), Lookup::Fetch { fallback: None });
        // Other pushes that were refused with the old token just try again.
        assert_eq!(
            cache.invalidate("first", T0 + 10),
            Invalidation::AlreadyReplaced
        );
        cache.store("second".into(), 3600, T0 + 11);
        // Refused again right away: the credentials are wrong; no token request storm.
        assert_eq!(cache.invalidate("second", T0 + 12), Invalidation::Kept);
        assert_eq!(cache.lookup(T0 + 12), Lookup::Use("second".into()));
        assert_eq!(cache.invalidate("second", T0 + 70), Invalidation::Dropped);
    }
}
