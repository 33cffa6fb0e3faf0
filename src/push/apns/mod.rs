//! Apple Push Notification service: VoIP pushes (PushKit) and the optional "missed call"
//! alert, with token-based (.p8 key, ES256 JWT) or certificate-based (TLS client
//! certificate) authentication, to the production or the sandbox host per device.
//!
//! Built on bare HTTP/2 connections (the `h2` crate, [`ConnectionSet`]) rather than the
//! `a2` crate: a2 0.10 hard-codes Apple's hosts and trusts only the public roots, so
//! nothing it sends could be checked against a local test server (see docs/design.md's
//! dependency notes). One HTTP/2 connection per host is opened at start-up, kept warm
//! with HTTP/2 pings, and carries every push multiplexed; more open as a burst of pushes
//! needs them (Apple's 1,000 streams per connection).

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use pushwake_core::directory::{Device, Platform};

use super::{payload, Attempt, AttemptFuture, EndReason, MessagePush, PushKind, Pushkin, WakePush};
use super::{retry_after, unix_now};
use crate::push::connections::ConnectionSet;

mod section;
pub use section::Apns;

/// APNs devices: `platform = "apns"`, and the `[apns]` section.
pub const PLATFORM: Platform = Platform::new("apns");

/// A device's own VoIP topic (another app of the same team), instead of `apns.topic`.
pub const TOPIC: &str = "topic";
/// A device's APNs host: [`SANDBOX`] for a build signed for development (run from
/// Xcode); production when absent. A token from a development build is unknown to
/// production (`BadDeviceToken`) and the other way round.
pub const ENVIRONMENT: &str = "environment";
/// The value of [`ENVIRONMENT`] for the sandbox host.
pub const SANDBOX: &str = "sandbox";
/// A device's regular (non-VoIP) remote-notification token, for the "missed call"
/// alert: PushKit and regular notifications have different tokens. Secret.
pub const ALERT_TOKEN: &str = "alert_token";

/// Whether `device` is reached through the APNs sandbox.
pub fn uses_sandbox(device: &Device) -> bool {
    device.platform == PLATFORM && device.params.get(ENVIRONMENT) == Some(SANDBOX)
}

/// Apple's production endpoint.
pub const PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint, for apps built for development.
pub const SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";

/// A provider token is reused for this long. Apple rejects tokens older than an hour and
/// throttles renewals more frequent than every 20 minutes.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// The shortest interval between two renewals, even when Apple says the token expired.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// How long APNs keeps trying to deliver a "missed call" alert to a phone that is off:
/// unlike the VoIP push, it is still worth showing hours later.
pub const ALERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Requests at once on one HTTP/2 connection: what Apple's servers advertise
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); beyond it another connection is opened.
pub const STREAMS_PER_CONNECTION: usize = 1000;

/// The most HTTP/2 connections opened to one APNs host set: enough for 16,000 pushes in
/// flight at once (Apple allows several connections per provider).
pub const MAX_CONNECTIONS: usize = 16;

/// How pushwake proves to APNs that it may push to the app.
#[derive(Clone, PartialEq, Eq)]
pub enum ApnsAuth {
    /// Token-based authentication: a JWT signed with the team's .p8 key.
    Token {
        /// The developer team id (JWT `iss`).
        team_id: String,
        /// The id of the .p8 signing key (JWT `kid`).
        key_id: String,
        /// The .p8 key (PKCS#8 PEM, P-256). Secret.
        key_pem: Vec<u8>,
    },
    /// Certificate-based authentication: the app's push certificate as the TLS client
    /// certificate.
    Certificate(ClientCertificate),
}

impl std::fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApnsAuth::Token {
                team_id, key_id, ..
            } => f
                .debug_struct("Token")
                .field("team_id", team_id)
                .field("key_id", key_id)
                .field("key_pem", &"<redacted>")
                .finish(),
            ApnsAuth::Certificate(certificate) => certificate.fmt(f),
        }
    }
}

impl ApnsAuth {
    /// "token" or "certificate", for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ApnsAuth::Token { .. } => "token",
            ApnsAuth::Certificate(_) => "certificate",
        }
    }
}

/// Everything needed to talk to APNs: the `[apns]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApnsSettings {
    /// Token or certificate authentication.
    pub auth: ApnsAuth,
    /// The default VoIP topic: the app's bundle id followed by `.voip`.
    pub topic: String,
    /// The topic of the "missed call" alert (the app's bundle id), if it is to be sent.
    pub alert_topic: Option<String>,
    /// Production base URL; `http://` means HTTP/2 without TLS (local test servers).
    pub endpoint: String,
    /// Sandbox base URL, for devices whose app was built for development.
    pub sandbox_endpoint: String,
    /// Whether to open the sandbox connection at start-up (some device uses it).
    pub warm_sandbox: bool,
}

/// Why APNs settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApnsSetupError {
    /// The key is not a PKCS#8 PEM P-256 private key.
    #[error("not a PKCS#8 PEM P-256 (ES256) private key: {0}")]
    BadKey(String),
    /// The certificate file cannot be used.
    #[error("{0}")]
    BadCertificate(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP/2 client: {0}")]
    Client(String),
}

/// An APNs client certificate with its private key, read from a PEM file (certificate
/// and key, in any order) or a PKCS#12 file (`.p12`, as Keychain Access exports it).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate chain and the key, as PEM.
    identity_pem: Vec<u8>,
    /// The certificate's subject, for logs.
    subject: String,
    /// When the certificate expires (Unix seconds): Apple's push certificates last a year.
    not_after: i64,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientCertificate {
    /// Reads a certificate file: PKCS#12 (DER, with `password`, empty if none) or PEM.
    /// Errors name what is wrong, never the password or the key.
    pub fn from_file_contents(bytes: &[u8], password: &str) -> Result<Self, ApnsSetupError> {
        // PKCS#12 is DER: a SEQUENCE. PEM is text starting with "-----BEGIN".
        if bytes.first() == Some(&0x30) {
            Self::from_pkcs12(bytes, password)
        } else {
            Self::from_pem(bytes)
        }
    }

    /// A PEM file holding the certificate (then any intermediates) and its private key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ApnsSetupError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| bad_certificate("neither PKCS#12 nor PEM text"))?;
        let labels: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .filter_map(|l| l.strip_suffix("-----"))
            .collect();
        let certificates = labels.iter().filter(|l| **l == "CERTIFICATE").count();
        let keys = labels
            .iter()
            .filter(|l| l.ends_with("PRIVATE KEY") && !l.contains("ENCRYPTED"))
            .count();
        if labels.iter().any(|l| l.contains("ENCRYPTED")) {
            return Err(bad_certificate("the private key in the PEM file is encrypted: decrypt it (openssl pkey) or use the .p12 with certificate_password_file"));
        }
        if certificates == 0 {
            return Err(bad_certificate("the PEM file holds no CERTIFICATE"));
        }
        if keys != 1 {
            return Err(bad_certificate(&format!(
                "the PEM file must hold the certificate's private key once (found {keys} private keys)"
            )));
        }
        let first = first_certificate_der(text).ok_or_else(|| {
            bad_certificate("the first CERTIFICATE in the PEM file is not base64")
        })?;
        Self::checked(pem.to_vec(), &first)
    }

    /// A PKCS#12 archive with the certificate and its key, encrypted with `password`.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, ApnsSetupError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| {
            bad_certificate(&format!(
                "cannot open the PKCS#12 file (wrong password, or not PKCS#12): {e}"
            ))
        })?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            bad_certificate("the PKCS#12 file holds no private key with its certificate")
        })?;
        let Some(first) = chain.certs().first() else {
            return Err(bad_certificate(
                "the PKCS#12 file holds a key without a certificate",
            ));
        };
        let first = first.as_der().to_vec();
        let mut pem = String::new();
        for certificate in chain.certs() {
            pem.push_str(&pem_block("CERTIFICATE", certificate.as_der()));
        }
        pem.push_str(&pem_block("PRIVATE KEY", chain.key().as_der()));
        Self::checked(pem.into_bytes(), &first)
    }

    /// The certificate's subject (Apple names it after the app's bundle id).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(self.not_after.max(0) as u64)
    }

    /// The chain and the key, as rustls takes them.
    fn identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApnsSetupError> {
        let chain = CertificateDer::pem_slice_iter(&self.identity_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                bad_certificate(&format!("the certificate cannot be read from its PEM: {e}"))
            })?;
        let key = PrivateKeyDer::from_pem_slice(&self.identity_pem).map_err(|e| {
            bad_certificate(&format!("the private key cannot be read from its PEM: {e}"))
        })?;
        Ok((chain, key))
    }

    /// Reads the subject and expiry of the first certificate (`first`, DER), and builds
    /// a throwaway TLS configuration with it: rustls checks the key parses and matches.
    fn checked(identity_pem: Vec<u8>, first: &[u8]) -> Result<Self, ApnsSetupError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| bad_certificate(&format!("the certificate cannot be parsed: {e}")))?;
        let certificate = Self {
            identity_pem,
            subject: parsed.subject().to_string(),
            not_after: parsed.validity().not_after.timestamp(),
        };
        super::connections::tls_config(Some(certificate.identity()?)).map_err(|e| {
            bad_certificate(&format!(
                "the certificate and its key do not go together: {e}"
            ))
        })?;
        Ok(certificate)
    }
}

fn bad_certificate(what: &str) -> ApnsSetupError {
    ApnsSetupError::BadCertificate(what.to_owned())
}

/// One PEM block.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut block = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        block.push_str(std::str::from_utf8(line).unwrap_or_default());
        block.push('\n');
    }
    block.push_str(&format!("-----END {label}-----\n"));
    block
}

/// The DER of the first certificate of a PEM text.
fn first_certificate_der(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    let body: String = text[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
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

/// Whether a token issued at `iat` may still be sent at `now` (a clock set back makes
/// it stale too).
fn fresh(iat: u64, now: u64) -> bool {
    now.saturating_sub(iat) < TOKEN_LIFETIME.as_secs() && now >= iat
}

/// The provider token as the `authorization` header every push carries, read by all of
/// them at once: a read lock and a cheap clone while the token is fresh, the signer's
/// lock only to renew it. (One mutex around the token, taken by every push, was a
/// contended lock in a burst: threads put to sleep and woken, `cargo bench --bench
/// push_fanout`.)
struct Bearer {
    signer: Mutex<ProviderToken>,
    /// `bearer <jwt>`, marked sensitive (never indexed by HPACK, hidden from `Debug`),
    /// with the token's `iat`.
    header: RwLock<Option<(HeaderValue, u64)>>,
}

impl Bearer {
    fn new(token: ProviderToken) -> Self {
        Self {
            signer: Mutex::new(token),
            header: RwLock::new(None),
        }
    }

    /// The header to send at Unix time `now`.
    fn header(&self, now: u64) -> Result<HeaderValue, ApnsSetupError> {
        if let Some((value, iat)) = &*self.header.read().expect("bearer lock") {
            if fresh(*iat, now) {
                return Ok(value.clone());
            }
        }
        let mut signer = self.signer.lock().expect("token lock");
        let jwt = signer.get(now)?;
        self.cache(&signer, &jwt)
    }

    /// Apple said the token expired: see [`ProviderToken::expired`]. A renewal drops
    /// the cached header, so the next push builds it from the new token.
    fn expired(&self, now: u64) -> Result<bool, ApnsSetupError> {
        let mut signer = self.signer.lock().expect("token lock");
        let renewed = signer.expired(now)?;
        if renewed {
            *self.header.write().expect("bearer lock") = None;
        }
        Ok(renewed)
    }

    fn cache(&self, signer: &ProviderToken, jwt: &str) -> Result<HeaderValue, ApnsSetupError> {
        // A JWT is base64url and dots: always a valid header value.
        let mut value = HeaderValue::from_str(&format!("bearer {jwt}"))
            .map_err(|_| ApnsSetupError::BadKey("the signed token is no header value".into()))?;
        value.set_sensitive(true);
        let iat = signer.issued_at().unwrap_or_default();
        *self.header.write().expect("bearer lock") = Some((value.clone(), iat));
        Ok(value)
    }
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
            Some((jwt, iat)) if fresh(*iat, now) => Ok(jwt.clone()),
            _ => self.renew(now),
        }
    }

    /// When the current token was issued (Unix seconds), if there is one.
    pub fn issued_at(&self) -> Option<u64> {
        self.current.as_ref().map(|(_, iat)| *iat)
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

/// One APNs host and the connections to it.
struct ApnsHost {
    /// Its base URL, for logs.
    endpoint: String,
    /// HTTP/2 connections to it, as many as the pushes in flight need.
    connections: ConnectionSet,
}

/// The APNs pushkin.
pub struct ApnsPushkin {
    production: ApnsHost,
    sandbox: ApnsHost,
    warm_sandbox: bool,
    topic: String,
    alert_topic: Option<String>,
    /// The provider token, with token authentication; `None` with a client certificate.
    token: Option<Bearer>,
}

/// What kind of APNs push an attempt sends.
enum ApnsPush<'a> {
    /// The PushKit wake-up of this call, on the VoIP topic.
    Voip(&'a WakePush),
    /// A visible alert on the app's own topic, to its regular token: the "missed call"
    /// or the "new message" (never a VoIP push, which iOS answers by ending an app that
    /// reports no call).
    Alert {
        topic: &'a str,
        token: &'a str,
        /// One notice per call or message, even if it is sent twice.
        collapse_id: &'a str,
        body: serde_json::Value,
        expires_at: u64,
        /// Which alert, for the reason of a refusal.
        what: &'static str,
    },
}

/// What one attempt is about.
#[derive(Clone, Copy)]
enum Content<'a> {
    Call(&'a WakePush),
    Message(&'a MessagePush),
}

impl ApnsPushkin {
    /// Builds the client (no connection yet; see [`ApnsPushkin::warm_up`]).
    pub fn new(settings: ApnsSettings) -> Result<Self, ApnsSetupError> {
        let (token, identity) = match settings.auth {
            ApnsAuth::Token {
                team_id,
                key_id,
                key_pem,
            } => (
                Some(Bearer::new(ProviderToken::new(
                    &key_pem, &team_id, &key_id,
                )?)),
                None,
            ),
            ApnsAuth::Certificate(certificate) => (None, Some(certificate.identity()?)),
        };
        let tls = super::connections::tls_config(identity).map_err(ApnsSetupError::Client)?;
        let host = |endpoint: &str| -> Result<ApnsHost, ApnsSetupError> {
            let endpoint = endpoint.trim_end_matches('/').to_owned();
            let connections =
                ConnectionSet::new(&endpoint, &tls, STREAMS_PER_CONNECTION, MAX_CONNECTIONS)
                    .map_err(ApnsSetupError::Client)?;
            Ok(ApnsHost {
                endpoint,
                connections,
            })
        };
        Ok(Self {
            production: host(&settings.endpoint)?,
            sandbox: host(&settings.sandbox_endpoint)?,
            warm_sandbox: settings.warm_sandbox,
            topic: settings.topic,
            alert_topic: settings.alert_topic,
            token,
        })
    }

    /// Opens the HTTP/2 connection(s) now, so the first push of the first call does not
    /// pay for TCP and TLS set-up. Failure is logged and returned (for `/healthz`):
    /// pushes retry by themselves.
    pub async fn warm_up(&self) -> Result<(), String> {
        // The provider token too: signing it (ES256, and the first use of the random
        // generator) is otherwise the first call's work.
        if let Some(token) = &self.token {
            if let Err(error) = token.header(unix_now()) {
                tracing::error!(%error, "cannot sign the APNs provider token");
                return Err(format!("cannot sign the APNs provider token: {error}"));
            }
        }
        let mut hosts = vec![&self.production];
        if self.warm_sandbox {
            hosts.push(&self.sandbox);
        }
        let opened = futures_util::future::join_all(hosts.into_iter().map(|host| async move {
            let endpoint = &host.endpoint;
            match host.connections.warm_up().await {
                Ok(()) => {
                    tracing::info!(%endpoint, "APNs connection open (HTTP/2)");
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(%endpoint, %error, "cannot reach APNs yet; pushes will retry");
                    Err(format!("cannot reach APNs at {endpoint}: {error}"))
                }
            }
        }))
        .await;
        opened.into_iter().collect()
    }

    async fn send_once(
        &self,
        device: &Device,
        content: Content<'_>,
        ring_window: Duration,
    ) -> Attempt {
        let now = unix_now();
        let route = match content {
            Content::Call(push) => match push.kind {
                PushKind::IncomingCall => Ok(ApnsPush::Voip(push)),
                PushKind::CallEnded(reason) => {
                    self.missed_call_route(device, reason)
                        .map(|(topic, token)| ApnsPush::Alert {
                            topic,
                            token,
                            collapse_id: push.call_id.as_str(),
                            body: missed_call_alert(push),
                            expires_at: now + ALERT_LIFETIME.as_secs(),
                            what: "missed-call alert",
                        })
                }
            },
            Content::Message(push) => {
                self.message_route(device)
                    .map(|(topic, token)| ApnsPush::Alert {
                        topic,
                        token,
                        collapse_id: push.message_id.0.as_str(),
                        body: message_alert(push),
                        expires_at: push.expires_at,
                        what: "message alert",
                    })
            }
        };
        let kind = match route {
            Ok(kind) => kind,
            // PushService asks first (carries_call_ended, carries_message); this makes
            // sure. Apple forbids VoIP pushes that report no call (iOS 13+ ends such
            // apps).
            Err(reason) => {
                return Attempt::Rejected {
                    reason,
                    dead_token: false,
                }
            }
        };
        let host = if uses_sandbox(device) {
            &self.sandbox
        } else {
            &self.production
        };
        let connections = &host.connections;
        let (mut request, body, push_type, expires_at) = match &kind {
            ApnsPush::Voip(push) => {
                let expires_at =
                    now + ring_window.as_secs() + u64::from(ring_window.subsec_nanos() > 0);
                let topic = device.params.get(TOPIC).unwrap_or(&self.topic);
                let request = connections
                    .request(&format!("/3/device/{}", device.token.expose()))
                    .header("apns-push-type", "voip")
                    .header("apns-topic", topic);
                let body = serde_json::to_vec(&payload::incoming_call(push, expires_at));
                (request, body, "voip", expires_at)
            }
            ApnsPush::Alert {
                topic,
                token,
                collapse_id,
                body,
                expires_at,
                ..
            } => {
                let request = connections
                    .request(&format!("/3/device/{token}"))
                    .header("apns-push-type", "alert")
                    .header("apns-topic", *topic)
                    .header("apns-collapse-id", *collapse_id);
                (request, serde_json::to_vec(body), "alert", *expires_at)
            }
        };
        if let Some(token) = &self.token {
            let bearer = match token.header(now) {
                Ok(bearer) => bearer,
                Err(error) => {
                    return Attempt::Rejected {
                        reason: error.to_string(),
                        dead_token: false,
                    }
                }
            };
            // Apple's documented form; the scheme is case-insensitive (RFC 7235).
            request = request.header(AUTHORIZATION, bearer);
        }
        let request = body.map_err(|e| e.to_string()).and_then(|body| {
            request
                .header(CONTENT_TYPE, "application/json")
                .header("apns-priority", "10")
                .header("apns-expiration", expires_at.to_string())
                .body(Bytes::from(body))
                // Says what is wrong, never the value: a header from the device's
                // parameters, or a path with its token.
                .map_err(|e| e.to_string())
        });
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                return Attempt::Rejected {
                    reason: format!("the device's push cannot be written as a request: {error} (check its token and topic)"),
                    dead_token: false,
                }
            }
        };
        // Held until the answer is read: the stream is busy until then.
        let lease = connections.lease();
        let wait = ring_window.clamp(Duration::from_secs(1), Duration::from_secs(10));
        let response = match tokio::time::timeout(wait, lease.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return Attempt::Retry {
                    reason: error.to_string(),
                    after: None,
                };
            }
            Err(_) => {
                return Attempt::Retry {
                    reason: format!("no answer within {} s", wait.as_secs()),
                    after: None,
                };
            }
        };
        drop(lease);
        let status = response.status();
        if status == StatusCode::OK {
            return Attempt::Delivered;
        }
        let retry_after = retry_after(response.headers());
        let alert_token = device.params.get(ALERT_TOKEN);
        let secrets = [device.token.expose(), alert_token.unwrap_or_default()];
        let reason = reply_reason(response.body(), &secrets);
        let attempt = classify(status, &reason, retry_after);
        if reason == "ExpiredProviderToken" {
            if let Some(token) = &self.token {
                match token.expired(unix_now()) {
                    Ok(true) => {}
                    Ok(false) => tracing::error!("APNs says the provider token expired although it is fresh: is the clock right?"),
                    Err(error) => tracing::error!(%error, "cannot sign a new APNs provider token"),
                }
            }
        }
        let attempt = match (kind, attempt) {
            // A dead alert token says nothing about the VoIP token the device is woken
            // with: the alert just fails.
            (ApnsPush::Alert { what, .. }, Attempt::Rejected { reason, .. }) => Attempt::Rejected {
                reason: format!("{reason} ({what} to the alert_token)"),
                dead_token: false,
            },
            (_, attempt) => attempt,
        };
        if let Attempt::Rejected {
            dead_token: false,
            reason,
        } = &attempt
        {
            tracing::error!(%reason, push_type, "APNs rejected the push: check the [apns] settings and the device's topic, environment and tokens");
        }
        attempt
    }

    /// Where a "new message" alert goes (the app's own topic and regular token), or
    /// why there is none.
    fn message_route<'a>(&'a self, device: &'a Device) -> Result<(&'a str, &'a str), String> {
        let Some(topic) = &self.alert_topic else {
            return Err("apns carries no message push without apns.alert_topic (a message alert goes to the app's own topic)".into());
        };
        match device.params.get(ALERT_TOKEN) {
            Some(token) => Ok((topic, token)),
            None => Err("apns carries no message push to a device without an alert_token".into()),
        }
    }

    /// Where the "missed call" alert for a call that ended with `reason` goes, or why
    /// there is none.
    fn missed_call_route<'a>(
        &'a self,
        device: &'a Device,
        reason: EndReason,
    ) -> Result<(&'a str, &'a str), String> {
        let Some(topic) = &self.alert_topic else {
            return Err("apns carries no push for an ended call (no apns.alert_topic for a missed-call alert)".into());
        };
        if reason == EndReason::AnsweredElsewhere {
            return Err("apns: no missed-call alert for a call answered on another device".into());
        }
        match device.params.get(ALERT_TOKEN) {
            Some(token) => Ok((topic, token)),
            None => Err("apns carries no push for an ended call (the device has no alert_token for a missed-call alert)".into()),
        }
    }
}

/// The "new message" alert: the sender as its title, the preview (or "New message")
/// as its body, plus the `message_received` fields of the payload contract.
pub fn message_alert(push: &MessagePush) -> serde_json::Value {
    let sender = &push.sender;
    let title = match (sender.name.trim(), sender.number.trim()) {
        ("", "") => "Unknown sender".to_owned(),
        ("", number) => number.to_owned(),
        (name, _) => name.to_owned(),
    };
    let body = push
        .preview
        .clone()
        .unwrap_or_else(|| "New message".to_owned());
    let mut value = payload::message_received(push);
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert(
            "aps".into(),
            serde_json::json!({
                "alert": { "title": title, "body": body },
                "sound": "default",
                "thread-id": format!("pushwake-messages-{}", sender.number),
            }),
        );
    }
    value
}

/// The "missed call" alert: what the phone shows, plus the `call_cancelled` fields of the
/// payload contract so the app can match it to the call it showed.
pub fn missed_call_alert(push: &WakePush) -> serde_json::Value {
    let caller = &push.caller;
    let body = match (caller.name.trim(), caller.number.trim()) {
        ("", "") => "Unknown caller".to_owned(),
        ("", number) => number.to_owned(),
        (name, "") => name.to_owned(),
        (name, number) if name == number => number.to_owned(),
        (name, number) => format!("{name} ({number})"),
    };
    let mut value = payload::for_push(push, unix_now());
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert(
            "aps".into(),
            serde_json::json!({
                "alert": { "title": "Missed call", "body": body },
                "sound": "default",
                "thread-id": "pushwake-missed-calls",
            }),
        );
    }
    value
}

/// The `reason` of an APNs error reply body (`{"reason": "BadDeviceToken"}`), with the
/// `secrets` (the device's tokens) replaced and clipped to one short line, as it goes
/// into the log; empty for anything else (no body, not JSON, an HTML page from a proxy).
pub fn reply_reason(body: &[u8], secrets: &[&str]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .map(|reason| super::scrubbed_clip(&reason, secrets))
        .unwrap_or_default()
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
        PLATFORM
    }

    fn warm_up(&self) -> super::WarmUpFuture<'_> {
        Box::pin(ApnsPushkin::warm_up(self))
    }

    fn carries_call_ended(&self, device: &Device, reason: EndReason) -> Result<(), String> {
        self.missed_call_route(device, reason).map(|_| ())
    }

    fn attempt<'a>(
        &'a self,
        device: &'a Device,
        push: &'a WakePush,
        ring_window: Duration,
    ) -> AttemptFuture<'a> {
        Box::pin(self.send_once(device, Content::Call(push), ring_window))
    }

    fn carries_message(&self, device: &Device) -> Result<(), String> {
        self.message_route(device).map(|_| ())
    }

    fn attempt_message<'a>(
        &'a self,
        device: &'a Device,
        push: &'a MessagePush,
        window: Duration,
    ) -> AttemptFuture<'a> {
        Box::pin(self.send_once(device, Content::Message(push), window))
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
    fn the_bearer_header_follows_the_token_and_is_sensitive() {
        let bearer =
            Bearer::new(ProviderToken::new(&test_key(), "TEAM123456", "KEY1234567").unwrap());
        let t0 = 1_800_000_000;
        let first = bearer.header(t0).unwrap();
        assert!(first.is_sensitive());
        assert!(
            first.to_str().unwrap().starts_with("bearer ey"),
            "{first:?}"
        );
        assert_eq!(bearer.header(t0 + 49 * 60).unwrap(), first);
        let renewed = bearer.header(t0 + 50 * 60).unwrap();
        assert_ne!(renewed, first);
        // Apple says it expired (20 minutes on): the next push carries the new one.
        assert!(bearer.expired(t0 + 71 * 60).unwrap());
        let after_expiry = bearer.header(t0 + 71 * 60).unwrap();
        assert_ne!(after_expiry, renewed);
        assert_eq!(bearer.signer.lock().unwrap().renewals(), 3);
        // A clock set back makes the cached header stale as well.
        assert_ne!(bearer.header(t0).unwrap(), after_expiry);
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
