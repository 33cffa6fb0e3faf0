//! The configuration file (`pushwake.toml`).
//!
//! Key names are a contract with operators: keys are added, never renamed. Unknown keys
//! are an error naming the key and its line. Every error is one line of the form
//! `<file>:<line>: <what is wrong>`, so a failed `pushwake check-config` or service start
//! says exactly what to fix. Files holding secrets (this file, the APNs key, the FCM
//! service-account file) must not be readable by other users.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::directory::{
    ApnsEnvironment, ApnsRoute, Device, DeviceToken, Directory, ExtensionPolicy, Platform,
};

/// The default ring timeout when neither the extension nor `[defaults]` sets one.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest ring timeout accepted: a caller should not wait longer than this.
pub const MAX_RING_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest FCM registration token accepted (today's are about 160 characters).
pub const MAX_FCM_TOKEN_LEN: usize = 4096;

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `[asterisk]`: how to reach ARI.
#[derive(Clone, PartialEq, Eq)]
pub struct AsteriskConfig {
    /// ARI base URL (`http://host:8088`); events use the matching `ws://`/`wss://`.
    pub url: String,
    /// ARI user.
    pub username: String,
    /// ARI password. Secret.
    pub password: String,
    /// Stasis application name used in the dialplan.
    pub app: String,
}

impl fmt::Debug for AsteriskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsteriskConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("app", &self.app)
            .finish()
    }
}

/// `[apns]`: APNs credentials and topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApnsConfig {
    /// Token or certificate authentication.
    pub credentials: ApnsCredentials,
    /// Default VoIP topic (bundle id + `.voip`).
    pub topic: String,
    /// Topic of the "missed call" alert (the bundle id), if it is to be sent.
    pub alert_topic: Option<String>,
    /// APNs production base URL.
    pub endpoint: String,
    /// APNs sandbox base URL.
    pub sandbox_endpoint: String,
}

/// How pushwake authenticates to APNs.
#[derive(Clone, PartialEq, Eq)]
pub enum ApnsCredentials {
    /// `team_id`, `key_id`, `key_file`: token-based authentication.
    Token {
        /// Developer team id.
        team_id: String,
        /// Signing key id.
        key_id: String,
        /// Path of the .p8 key.
        key_file: PathBuf,
        /// The key's PEM text, read and checked at load time. Secret.
        key_pem: Vec<u8>,
    },
    /// `certificate_file` (and `certificate_password_file`): certificate-based.
    Certificate {
        /// Path of the PEM or PKCS#12 file.
        certificate_file: PathBuf,
        /// The certificate and key, read and checked at load time. Secret.
        certificate: crate::push::apns::ClientCertificate,
    },
}

impl ApnsCredentials {
    /// "token" or "certificate", for `check-config` and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ApnsCredentials::Token { .. } => "token",
            ApnsCredentials::Certificate { .. } => "certificate",
        }
    }
}

impl fmt::Debug for ApnsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsCredentials::Token {
                team_id,
                key_id,
                key_file,
                ..
            } => f
                .debug_struct("Token")
                .field("team_id", team_id)
                .field("key_id", key_id)
                .field("key_file", key_file)
                .finish(),
            ApnsCredentials::Certificate {
                certificate_file,
                certificate,
            } => f
                .debug_struct("Certificate")
                .field("certificate_file", certificate_file)
                .field("certificate", certificate)
                .finish(),
        }
    }
}

/// `[fcm]`: Firebase Cloud Messaging (HTTP v1) with a Google service account.
#[derive(Clone, PartialEq, Eq)]
pub struct FcmConfig {
    /// Path of the service-account JSON key file.
    pub service_account_file: PathBuf,
    /// The service account, read and checked at load time (its key is a secret).
    pub account: crate::push::fcm::ServiceAccount,
    /// FCM base URL.
    pub endpoint: String,
}

impl fmt::Debug for FcmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmConfig")
            .field("service_account_file", &self.service_account_file)
            .field("project_id", &self.account.project_id)
            .field("client_email", &self.account.client_email)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// `[hms]`: Huawei Push Kit with the app's OAuth2 client credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct HmsConfig {
    /// The app id (the OAuth2 client id).
    pub app_id: String,
    /// The app secret, read from `client_secret_file`. Secret.
    pub client_secret: String,
    /// Push Kit base URL.
    pub endpoint: String,
    /// The OAuth2 token endpoint.
    pub token_url: String,
}

impl fmt::Debug for HmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmsConfig")
            .field("app_id", &self.app_id)
            .field("client_secret", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// `[webhook]`: events POSTed to the operator's own backend, signed with a shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// Path of the file holding the HMAC secret.
    pub secret_file: PathBuf,
    /// The secret, read and checked at load time.
    pub secret: crate::push::webhook::WebhookSecret,
    /// How long one request may take.
    pub timeout: Duration,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret_file", &self.secret_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[webpush]`: Web Push (RFC 8030) to browsers, signed with a VAPID key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPushConfig {
    /// Path of the PKCS#8 PEM P-256 VAPID private key.
    pub vapid_key_file: PathBuf,
    /// The key, read and checked at load time (`Debug` shows only its public half).
    pub vapid_key: crate::push::webpush::VapidKey,
    /// The VAPID contact: a `mailto:` or `https:` URL.
    pub subject: String,
}

/// `[http]`: the HTTP listener serving the call status endpoint
/// (`GET /v1/calls/{call_id}`) to apps woken late.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the plain-HTTP listener binds (usually loopback, behind a TLS reverse proxy).
    pub listen: std::net::SocketAddr,
    /// The base URL apps reach the listener at, without a final `/`; status URLs are
    /// `{public_url}/v1/calls/{call_id}`.
    pub public_url: String,
}

/// The whole, checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from.
    pub file: PathBuf,
    /// `[asterisk]`.
    pub asterisk: AsteriskConfig,
    /// `[apns]`, if configured.
    pub apns: Option<ApnsConfig>,
    /// `[fcm]`, if configured.
    pub fcm: Option<FcmConfig>,
    /// `[hms]`, if configured.
    pub hms: Option<HmsConfig>,
    /// `[webhook]`, if configured.
    pub webhook: Option<WebhookConfig>,
    /// `[webpush]`, if configured.
    pub webpush: Option<WebPushConfig>,
    /// `[http]`, if configured: without it there is no listener and pushes carry no
    /// status fields.
    pub http: Option<HttpConfig>,
    /// The push-enabled extensions.
    pub directory: Directory,
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    asterisk: RawAsterisk,
    #[serde(default)]
    defaults: RawDefaults,
    apns: Option<Spanned<RawApns>>,
    fcm: Option<Spanned<RawFcm>>,
    hms: Option<Spanned<RawHms>>,
    webhook: Option<Spanned<RawWebhook>>,
    webpush: Option<Spanned<RawWebPush>>,
    http: Option<Spanned<RawHttp>>,
    #[serde(default)]
    extension: Vec<Spanned<RawExtension>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsterisk {
    url: Spanned<String>,
    username: String,
    password: String,
    #[serde(default = "default_app")]
    app: Spanned<String>,
}

fn default_app() -> Spanned<String> {
    Spanned::new(0..0, "pushwake".to_owned())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    ring_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApns {
    topic: Spanned<String>,
    team_id: Option<Spanned<String>>,
    key_id: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    certificate_file: Option<Spanned<String>>,
    certificate_password_file: Option<Spanned<String>>,
    alert_topic: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    sandbox_endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFcm {
    service_account_file: Spanned<String>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHms {
    app_id: Spanned<String>,
    client_secret_file: Spanned<String>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
    #[serde(default)]
    token_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    secret_file: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebPush {
    vapid_key_file: Spanned<String>,
    subject: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Spanned<String>,
    public_url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    number: Spanned<String>,
    ring_timeout: Option<Spanned<String>>,
    #[serde(default)]
    device: Vec<Spanned<RawDevice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    platform: Spanned<String>,
    token: Spanned<String>,
    name: Option<String>,
    topic: Option<Spanned<String>>,
    environment: Option<Spanned<String>>,
    alert_token: Option<Spanned<String>>,
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let whole = |message: String| ConfigError {
        file: path.to_owned(),
        line: None,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole(format!("cannot read the configuration: {e}")))?;
    check_private(
        path,
        "the configuration file (it holds the ARI password and device tokens)",
    )
    .map_err(whole)?;
    parse(path, &text)
}

/// Checks the text of a configuration file; `path` is used for messages and to resolve
/// nothing else (key files are read from their own absolute or working-directory
/// relative paths).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let at = |span: Range<usize>, message: String| ConfigError {
        file: path.to_owned(),
        line: (span.end > 0).then(|| line_of(text, span.start)),
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => at(span, message),
            None => at(0..0, message),
        }
    })?;

    let url = raw.asterisk.url.get_ref().trim_end_matches('/').to_owned();
    check_http_url(&url, raw.asterisk.url.span(), "asterisk.url").map_err(|(s, m)| at(s, m))?;
    let app = raw.asterisk.app.get_ref().clone();
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(at(
            raw.asterisk.app.span(),
            format!("asterisk.app: `{app}` must be letters, digits, `-` or `_`"),
        ));
    }
    let asterisk = AsteriskConfig {
        url,
        username: raw.asterisk.username,
        password: raw.asterisk.password,
        app,
    };

    let default_ring = match &raw.defaults.ring_timeout {
        Some(value) => {
            ring_timeout(value, "defaults.ring_timeout").map_err(|m| at(value.span(), m))?
        }
        None => DEFAULT_RING_TIMEOUT,
    };

    let apns = match raw.apns {
        Some(section) => {
            let span = section.span();
            let section = section.into_inner();
            Some(apns(section).map_err(|(s, m)| at(if s.end > 0 { s } else { span.clone() }, m))?)
        }
        None => None,
    };
    let fcm = match raw.fcm {
        Some(section) => {
            let span = section.span();
            let section = section.into_inner();
            Some(fcm(section).map_err(|(s, m)| at(if s.end > 0 { s } else { span.clone() }, m))?)
        }
        None => None,
    };
    let hms = match raw.hms {
        Some(section) => {
            let span = section.span();
            let section = section.into_inner();
            Some(hms(section).map_err(|(s, m)| at(if s.end > 0 { s } else { span.clone() }, m))?)
        }
        None => None,
    };
    let webhook = match raw.webhook {
        Some(section) => {
            let span = section.span();
            let section = section.into_inner();
            Some(
                webhook(section)
                    .map_err(|(s, m)| at(if s.end > 0 { s } else { span.clone() }, m))?,
            )
        }
        None => None,
    };
    let webpush = match raw.webpush {
        Some(section) => {
            let span = section.span();
            let section = section.into_inner();
            Some(
                webpush(section)
                    .map_err(|(s, m)| at(if s.end > 0 { s } else { span.clone() }, m))?,
            )
        }
        None => None,
    };
    let http = match raw.http {
        Some(section) => Some(http(section.into_inner()).map_err(|(s, m)| at(s, m))?),
        None => None,
    };

    let mut extensions = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ext in raw.extension {
        let ext_span = ext.span();
        let ext = ext.into_inner();
        let number = ext.number.get_ref().trim().to_owned();
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_graphic()) {
            return Err(at(
                ext.number.span(),
                format!("extension.number: `{number}` is not an extension number"),
            ));
        }
        if !seen.insert(number.clone()) {
            return Err(at(
                ext.number.span(),
                format!("extension {number} is configured twice"),
            ));
        }
        let ring = match &ext.ring_timeout {
            Some(value) => {
                ring_timeout(value, "extension.ring_timeout").map_err(|m| at(value.span(), m))?
            }
            None => default_ring,
        };
        let mut devices = Vec::new();
        for (index, device) in ext.device.into_iter().enumerate() {
            let device = device.into_inner();
            let platform = match device.platform.get_ref().as_str() {
                "apns" => Platform::Apns,
                "fcm" => Platform::Fcm,
                "webhook" => Platform::Webhook,
                "webpush" => Platform::WebPush,
                "hms" => Platform::Hms,
                other => {
                    return Err(at(
                        device.platform.span(),
                        format!("extension {number}: device platform `{other}` is not supported (supported: apns, fcm, hms, webhook, webpush)"),
                    ))
                }
            };
            let configured = match platform {
                Platform::Apns => apns.is_some(),
                Platform::Fcm => fcm.is_some(),
                Platform::Webhook => webhook.is_some(),
                Platform::WebPush => webpush.is_some(),
                Platform::Hms => hms.is_some(),
            };
            if !configured {
                return Err(at(
                    device.platform.span(),
                    format!(
                        "extension {number}: {article} {platform} device needs {article} [{platform}] section",
                        article = if matches!(platform, Platform::Webhook | Platform::WebPush) { "a" } else { "an" }
                    ),
                ));
            }
            let token = device.token.get_ref().trim();
            // The token itself is a secret: describe it, don't quote it.
            let token = match platform {
                Platform::Apns => apns_token(token).ok_or_else(|| {
                    at(
                        device.token.span(),
                        format!(
                            "extension {number}: device token must be hexadecimal (got {} characters)",
                            token.len()
                        ),
                    )
                })?,
                Platform::Fcm => {
                    if token.is_empty()
                        || token.len() > MAX_FCM_TOKEN_LEN
                        || !token
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
                    {
                        return Err(at(
                            device.token.span(),
                            format!(
                                "extension {number}: an fcm device token is 1 to {MAX_FCM_TOKEN_LEN} letters, digits, `_`, `-` or `:` (got {} characters)",
                                token.chars().count()
                            ),
                        ));
                    }
                    // FCM tokens are case-sensitive: kept as written.
                    token.to_owned()
                }
                Platform::Webhook => {
                    if !crate::push::webhook::valid_device_id(token) {
                        return Err(at(
                            device.token.span(),
                            format!(
                                "extension {number}: a webhook device token is the backend's device id, 1 to {} printable ASCII characters without spaces (got {} characters)",
                                crate::push::webhook::MAX_DEVICE_ID_LEN,
                                token.chars().count()
                            ),
                        ));
                    }
                    // The operator's id: kept as written.
                    token.to_owned()
                }
                Platform::Hms => {
                    if token.is_empty()
                        || token.len() > MAX_HMS_TOKEN_LEN
                        || !token.chars().all(|c| c.is_ascii_graphic())
                    {
                        return Err(at(
                            device.token.span(),
                            format!("extension {number}: an hms device token is 1 to {MAX_HMS_TOKEN_LEN} printable ASCII characters without spaces (got {} characters)", token.len()),
                        ));
                    }
                    token.to_owned()
                }
                Platform::WebPush => {
                    // The browser's PushSubscription JSON; the message names what is
                    // wrong without quoting it.
                    if let Err(e) = crate::push::webpush::Subscription::parse(token) {
                        return Err(at(
                            device.token.span(),
                            format!("extension {number}: a webpush device token must be the browser's PushSubscription JSON: {e}"),
                        ));
                    }
                    token.to_owned()
                }
            };
            let route = if platform == Platform::Apns {
                let alert_topic = apns.as_ref().and_then(|a| a.alert_topic.as_ref());
                apns_route(&device, alert_topic.is_some())
                    .map_err(|(s, m)| at(s, format!("extension {number}: {m}")))?
            } else {
                let apns_only = [
                    ("topic", &device.topic),
                    ("environment", &device.environment),
                    ("alert_token", &device.alert_token),
                ];
                if let Some((key, Some(value))) = apns_only.iter().find(|(_, v)| v.is_some()) {
                    return Err(at(
                        value.span(),
                        format!("extension {number}: device.{key} applies to apns devices only, this one is {platform}"),
                    ));
                }
                None
            };
            let label = device
                .name
                .unwrap_or_else(|| format!("{number}/{platform}#{index}"));
            devices.push(Device {
                platform,
                token: DeviceToken::new(token),
                label,
                apns: route,
            });
        }
        if devices.is_empty() {
            tracing::debug!(extension = %number, line = line_of(text, ext_span.start), "extension has no devices");
        }
        extensions.push(ExtensionPolicy {
            number,
            ring_timeout: ring,
            devices,
        });
    }

    Ok(Config {
        file: path.to_owned(),
        asterisk,
        apns,
        fcm,
        hms,
        webhook,
        webpush,
        http,
        directory: Directory::new(extensions),
    })
}

fn apns(raw: RawApns) -> Result<ApnsConfig, (Range<usize>, String)> {
    let non_empty = |v: &Spanned<String>, key: &str| {
        if v.get_ref().trim().is_empty() {
            Err((v.span(), format!("apns.{key} must not be empty")))
        } else {
            Ok(v.get_ref().trim().to_owned())
        }
    };
    let topic = non_empty(&raw.topic, "topic")?;
    let alert_topic = raw
        .alert_topic
        .as_ref()
        .map(|v| non_empty(v, "alert_topic"))
        .transpose()?;
    if alert_topic.as_deref() == Some(topic.as_str()) {
        let span = raw
            .alert_topic
            .as_ref()
            .map(Spanned::span)
            .unwrap_or_default();
        return Err((span, format!("apns.alert_topic: `{topic}` is the VoIP topic; the alert goes to the app's bundle id (the topic without `.voip`)")));
    }
    let endpoint = base_url(
        &raw.endpoint,
        "apns.endpoint",
        crate::push::apns::PRODUCTION_ENDPOINT,
    )?;
    let sandbox_endpoint = base_url(
        &raw.sandbox_endpoint,
        "apns.sandbox_endpoint",
        crate::push::apns::SANDBOX_ENDPOINT,
    )?;
    let credentials = match (
        (&raw.team_id, &raw.key_id, &raw.key_file),
        &raw.certificate_file,
    ) {
        ((None, None, None), None) => {
            return Err((raw.topic.span(), "[apns] needs credentials: team_id, key_id and key_file (token authentication), or certificate_file (certificate authentication)".into()))
        }
        ((Some(team_id), Some(key_id), Some(key_file)), None) => {
            if let Some(v) = &raw.certificate_password_file {
                return Err((v.span(), "apns.certificate_password_file goes with certificate_file, not with token authentication".into()));
            }
            token_credentials(
                non_empty(team_id, "team_id")?,
                non_empty(key_id, "key_id")?,
                key_file,
            )?
        }
        ((None, None, None), Some(certificate_file)) => {
            certificate_credentials(certificate_file, raw.certificate_password_file.as_ref())?
        }
        ((team_id, key_id, key_file), None) => {
            let (missing, given) = [("team_id", team_id), ("key_id", key_id), ("key_file", key_file)]
                .into_iter()
                .partition::<Vec<_>, _>(|(_, v)| v.is_none());
            let span = given.first().and_then(|(_, v)| v.as_ref()).map(Spanned::span).unwrap_or_default();
            let missing: Vec<&str> = missing.iter().map(|(k, _)| *k).collect();
            return Err((span, format!("[apns] token authentication needs team_id, key_id and key_file; missing: {}", missing.join(", "))));
        }
        (_, Some(certificate_file)) => {
            return Err((certificate_file.span(), "[apns] takes either token authentication (team_id, key_id, key_file) or certificate_file, not both".into()))
        }
    };
    Ok(ApnsConfig {
        credentials,
        topic,
        alert_topic,
        endpoint,
        sandbox_endpoint,
    })
}

/// An APNs device token as sent (lower-case hex), or `None` if it is not hex.
fn apns_token(token: &str) -> Option<String> {
    let hex =
        !token.is_empty() && token.len() % 2 == 0 && token.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| token.to_ascii_lowercase())
}

/// An APNs device's own `topic`, `environment` and `alert_token`; `None` if it has none.
fn apns_route(
    device: &RawDevice,
    alert_topic: bool,
) -> Result<Option<ApnsRoute>, (Range<usize>, String)> {
    let topic = match &device.topic {
        Some(v) if v.get_ref().trim().is_empty() => {
            return Err((v.span(), "device.topic must not be empty".into()))
        }
        Some(v) => Some(v.get_ref().trim().to_owned()),
        None => None,
    };
    let environment = match &device.environment {
        None => ApnsEnvironment::Production,
        Some(v) => match v.get_ref().trim() {
            "production" => ApnsEnvironment::Production,
            "sandbox" | "development" => ApnsEnvironment::Sandbox,
            other => {
                return Err((
                    v.span(),
                    format!("device.environment: `{other}` is not production, sandbox or development (the app's aps-environment)"),
                ))
            }
        },
    };
    let alert_token = match &device.alert_token {
        Some(v) if !alert_topic => {
            return Err((
                v.span(),
                "device.alert_token needs apns.alert_topic (the app's bundle id) for the missed-call alert".into(),
            ))
        }
        Some(v) => Some(DeviceToken::new(apns_token(v.get_ref().trim()).ok_or_else(
            || {
                (
                    v.span(),
                    format!(
                        "device.alert_token must be hexadecimal (got {} characters)",
                        v.get_ref().trim().len()
                    ),
                )
            },
        )?)),
        None => None,
    };
    let route = ApnsRoute {
        topic,
        environment,
        alert_token,
    };
    Ok((route != ApnsRoute::default()).then_some(route))
}

fn token_credentials(
    team_id: String,
    key_id: String,
    key_file: &Spanned<String>,
) -> Result<ApnsCredentials, (Range<usize>, String)> {
    let span = key_file.span();
    let key_file = PathBuf::from(key_file.get_ref());
    let key_pem = std::fs::read(&key_file).map_err(|e| {
        (
            span.clone(),
            format!("apns.key_file: cannot read {}: {e}", key_file.display()),
        )
    })?;
    check_private(&key_file, "the APNs signing key")
        .map_err(|m| (span.clone(), format!("apns.key_file: {m}")))?;
    crate::push::apns::check_key(&key_pem).map_err(|e| {
        (
            span.clone(),
            format!("apns.key_file: {}: {e}", key_file.display()),
        )
    })?;
    Ok(ApnsCredentials::Token {
        team_id,
        key_id,
        key_file,
        key_pem,
    })
}

fn certificate_credentials(
    file: &Spanned<String>,
    password_file: Option<&Spanned<String>>,
) -> Result<ApnsCredentials, (Range<usize>, String)> {
    let span = file.span();
    let certificate_file = PathBuf::from(file.get_ref());
    let bytes = std::fs::read(&certificate_file).map_err(|e| {
        (
            span.clone(),
            format!(
                "apns.certificate_file: cannot read {}: {e}",
                certificate_file.display()
            ),
        )
    })?;
    check_private(
        &certificate_file,
        "the APNs certificate with its private key",
    )
    .map_err(|m| (span.clone(), format!("apns.certificate_file: {m}")))?;
    let password = match password_file {
        Some(v) => {
            let path = PathBuf::from(v.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    v.span(),
                    format!(
                        "apns.certificate_password_file: cannot read {}: {e}",
                        path.display()
                    ),
                )
            })?;
            check_private(&path, "the APNs certificate's password")
                .map_err(|m| (v.span(), format!("apns.certificate_password_file: {m}")))?;
            // One line; a final newline from `echo` is not part of the password.
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        None => String::new(),
    };
    let certificate = crate::push::apns::ClientCertificate::from_file_contents(&bytes, &password)
        .map_err(|e| {
        (
            span.clone(),
            format!("apns.certificate_file: {}: {e}", certificate_file.display()),
        )
    })?;
    if certificate.not_after() <= std::time::SystemTime::now() {
        return Err((
            span,
            format!(
                "apns.certificate_file: {}: the certificate expired on {}; renew it in Apple's developer portal",
                certificate_file.display(),
                humantime::format_rfc3339_seconds(certificate.not_after())
            ),
        ));
    }
    Ok(ApnsCredentials::Certificate {
        certificate_file,
        certificate,
    })
}

fn fcm(raw: RawFcm) -> Result<FcmConfig, (Range<usize>, String)> {
    let endpoint = base_url(
        &raw.endpoint,
        "fcm.endpoint",
        crate::push::fcm::DEFAULT_ENDPOINT,
    )?;
    let file = PathBuf::from(raw.service_account_file.get_ref());
    let span = raw.service_account_file.span();
    let fail = |m: String| (span.clone(), format!("fcm.service_account_file: {m}"));
    let bytes =
        std::fs::read(&file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    check_private(&file, "the FCM service-account key").map_err(fail)?;
    let account = crate::push::fcm::ServiceAccount::from_json(&bytes)
        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(FcmConfig {
        service_account_file: file,
        account,
        endpoint,
    })
}

/// The longest Huawei Push Kit token accepted.
const MAX_HMS_TOKEN_LEN: usize = 1024;

fn hms(raw: RawHms) -> Result<HmsConfig, (Range<usize>, String)> {
    let app_id = raw.app_id.get_ref().trim().to_owned();
    if app_id.is_empty() || !app_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err((
            raw.app_id.span(),
            format!("hms.app_id: `{app_id}` is not an app id"),
        ));
    }
    let endpoint = base_url(
        &raw.endpoint,
        "hms.endpoint",
        crate::push::hms::DEFAULT_ENDPOINT,
    )?;
    let token_url = base_url(
        &raw.token_url,
        "hms.token_url",
        crate::push::hms::DEFAULT_TOKEN_URL,
    )?;
    let file = PathBuf::from(raw.client_secret_file.get_ref());
    let span = raw.client_secret_file.span();
    let fail = |m: String| (span.clone(), format!("hms.client_secret_file: {m}"));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    check_private(&file, "the Huawei app secret").map_err(fail)?;
    let client_secret = text.trim().to_owned();
    if client_secret.is_empty() || client_secret.chars().any(char::is_whitespace) {
        return Err(fail(format!(
            "{} must hold the app secret on one line",
            file.display()
        )));
    }
    Ok(HmsConfig {
        app_id,
        client_secret,
        endpoint,
        token_url,
    })
}

fn webhook(raw: RawWebhook) -> Result<WebhookConfig, (Range<usize>, String)> {
    // The exact URL is the POST target: only white space is trimmed, not a final `/`.
    let url = raw.url.get_ref().trim().to_owned();
    check_http_url(&url, raw.url.span(), "webhook.url")?;
    let timeout = match &raw.timeout {
        Some(value) => {
            let text = value.get_ref();
            let duration = humantime::parse_duration(text.trim()).map_err(|e| {
                (
                    value.span(),
                    format!("webhook.timeout: `{text}` is not a duration like \"5s\" ({e})"),
                )
            })?;
            if duration.is_zero() || duration > MAX_RING_TIMEOUT {
                return Err((
                    value.span(),
                    format!(
                        "webhook.timeout: `{text}` must be more than 0s and at most {}s",
                        MAX_RING_TIMEOUT.as_secs()
                    ),
                ));
            }
            duration
        }
        None => crate::push::webhook::DEFAULT_TIMEOUT,
    };
    let file = PathBuf::from(raw.secret_file.get_ref());
    let span = raw.secret_file.span();
    let fail = |m: String| (span.clone(), format!("webhook.secret_file: {m}"));
    let bytes =
        std::fs::read(&file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    check_private(&file, "the webhook secret").map_err(fail)?;
    let secret = crate::push::webhook::WebhookSecret::from_file_contents(&bytes)
        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(WebhookConfig {
        url,
        secret_file: file,
        secret,
        timeout,
    })
}

fn webpush(raw: RawWebPush) -> Result<WebPushConfig, (Range<usize>, String)> {
    let subject = raw.subject.get_ref().trim().to_owned();
    if !crate::push::webpush::valid_subject(&subject) {
        return Err((
            raw.subject.span(),
            format!("webpush.subject: `{subject}` is not a mailto: or https: URL (the push services' contact for you)"),
        ));
    }
    let file = PathBuf::from(raw.vapid_key_file.get_ref());
    let span = raw.vapid_key_file.span();
    let fail = |m: String| (span.clone(), format!("webpush.vapid_key_file: {m}"));
    let bytes =
        std::fs::read(&file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    check_private(&file, "the VAPID private key").map_err(fail)?;
    let vapid_key = crate::push::webpush::VapidKey::from_pem(&bytes)
        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(WebPushConfig {
        vapid_key_file: file,
        vapid_key,
        subject,
    })
}

fn http(raw: RawHttp) -> Result<HttpConfig, (Range<usize>, String)> {
    let text = raw.listen.get_ref().trim();
    let listen = text.parse::<std::net::SocketAddr>().map_err(|_| {
        (
            raw.listen.span(),
            format!("http.listen: `{text}` is not an address and port like \"127.0.0.1:8089\" or \"[::1]:8089\""),
        )
    })?;
    let public_url = raw
        .public_url
        .get_ref()
        .trim()
        .trim_end_matches('/')
        .to_owned();
    check_http_url(&public_url, raw.public_url.span(), "http.public_url")?;
    if let Ok(url) = url::Url::parse(&public_url) {
        if url.query().is_some() || url.fragment().is_some() {
            return Err((
                raw.public_url.span(),
                format!("http.public_url: `{public_url}` must not have a query or fragment: status URLs are <public_url>/v1/calls/<call id>"),
            ));
        }
    }
    Ok(HttpConfig { listen, public_url })
}

/// Checks that `value` is an http:// or https:// URL with a host; the error names `key`
/// at `span`.
fn check_http_url(
    value: &str,
    span: Range<usize>,
    key: &str,
) -> Result<(), (Range<usize>, String)> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err((
            span,
            format!("{key}: `{value}` is not an http:// or https:// URL"),
        )),
    }
}

/// An optional base-URL key: the value without a final `/`, checked, or `default`.
fn base_url(
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
) -> Result<String, (Range<usize>, String)> {
    match value {
        Some(v) => {
            let url = v.get_ref().trim_end_matches('/').to_owned();
            check_http_url(&url, v.span(), key)?;
            Ok(url)
        }
        None => Ok(default.to_owned()),
    }
}

fn ring_timeout(value: &Spanned<String>, key: &str) -> Result<Duration, String> {
    let text = value.get_ref();
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{key}: `{text}` is not a duration like \"30s\" or \"1m\" ({e})"))?;
    if duration.is_zero() || duration > MAX_RING_TIMEOUT {
        return Err(format!(
            "{key}: `{text}` must be more than 0s and at most {}s",
            MAX_RING_TIMEOUT.as_secs()
        ));
    }
    Ok(duration)
}

/// Refuses a secret-holding file that other users can read, or that anyone but its owner
/// can write.
fn check_private(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 || mode & 0o020 != 0 {
        return Err(format!(
            "{} is {what} and has mode {mode:04o}; other users must not read it: chmod 0640 (or 0600) {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[asterisk]
url = "http://127.0.0.1:8088"
username = "pushwake"
password = "secret"

[[extension]]
number = "101"
"#;

    fn err(text: &str) -> String {
        parse(Path::new("pw.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse(Path::new("pw.toml"), MINIMAL).unwrap();
        assert_eq!(config.asterisk.app, "pushwake");
        let ext = config.directory.extension("101").unwrap();
        assert_eq!(ext.ring_timeout, DEFAULT_RING_TIMEOUT);
        assert!(ext.devices.is_empty());
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace(
            "password = \"secret\"",
            "password = \"secret\"\npasword = \"x\"",
        );
        let e = err(&text);
        assert!(e.starts_with("pw.toml:6: "), "{e}");
        assert!(e.contains("pasword"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("[asterisk\nurl = 1\n");
        assert!(e.starts_with("pw.toml:1: "), "{e}");
    }

    #[test]
    fn bad_duration_names_the_key_and_line() {
        let text = MINIMAL.replace(
            "number = \"101\"",
            "number = \"101\"\nring_timeout = \"30 parsecs\"",
        );
        let e = err(&text);
        assert!(e.starts_with("pw.toml:9: "), "{e}");
        assert!(
            e.contains("extension.ring_timeout") && e.contains("30 parsecs"),
            "{e}"
        );
        let e = err(&MINIMAL.replace(
            "[[extension]]",
            "[defaults]\nring_timeout = \"0s\"\n[[extension]]",
        ));
        assert!(e.contains("defaults.ring_timeout"), "{e}");
    }

    #[test]
    fn duplicate_extension_and_missing_apns_section_are_refused() {
        let e = err(&format!("{MINIMAL}\n[[extension]]\nnumber = \"101\"\n"));
        assert!(e.contains("configured twice"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"abcd\"\n"
        ));
        assert!(e.contains("needs an [apns] section"), "{e}");
    }

    #[test]
    fn device_token_is_never_quoted_in_errors() {
        let apns = "[apns]\nteam_id = \"T\"\nkey_id = \"K\"\nkey_file = \"/nonexistent.p8\"\ntopic = \"t.voip\"\n";
        let e = err(&format!(
            "{MINIMAL}\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"zzsecretzz\"\n{apns}"
        ));
        // The key file is checked first or the token is; neither message quotes the token.
        assert!(!e.contains("zzsecretzz"), "{e}");
    }

    #[test]
    fn bad_url_is_refused() {
        let e = err(&MINIMAL.replace("http://127.0.0.1:8088", "127.0.0.1:8088"));
        assert!(e.starts_with("pw.toml:3: asterisk.url"), "{e}");
    }

    /// A service-account file in a fresh directory, and an `[fcm]` section naming it
    /// (followed by `extra` lines).
    fn fcm_section(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.json");
        pushwake_testkit::keys::RsaKey::shared()
            .write_service_account(
                &path,
                "pushwake-test",
                "pw@pushwake-test.iam.gserviceaccount.com",
                "https://oauth2.googleapis.com/token",
            )
            .unwrap();
        let section = format!(
            "[fcm]\nservice_account_file = \"{}\"\n{extra}",
            path.display()
        );
        (dir, section)
    }

    #[test]
    fn an_fcm_section_reads_the_service_account() {
        let (_dir, fcm) = fcm_section("");
        let config = parse(Path::new("pw.toml"), &format!("{fcm}{MINIMAL}")).unwrap();
        let section = config.fcm.as_ref().unwrap();
        assert_eq!(section.endpoint, "https://fcm.googleapis.com");
        assert_eq!(section.account.project_id, "pushwake-test");
        assert_eq!(
            section.account.token_uri,
            "https://oauth2.googleapis.com/token"
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        let (_dir, fcm) = fcm_section("endpoint = \"http://127.0.0.1:4000/\"\n");
        let config = parse(Path::new("pw.toml"), &format!("{fcm}{MINIMAL}")).unwrap();
        assert_eq!(config.fcm.unwrap().endpoint, "http://127.0.0.1:4000");
        let (_dir, fcm) = fcm_section("endpoint = \"fcm.googleapis.com\"\n");
        let e = err(&format!("{fcm}{MINIMAL}"));
        assert!(e.starts_with("pw.toml:3: fcm.endpoint"), "{e}");
        let (_dir, fcm) = fcm_section("project_id = \"x\"\n");
        let e = err(&format!("{fcm}{MINIMAL}"));
        assert!(
            e.starts_with("pw.toml:3: ") && e.contains("project_id"),
            "{e}"
        );
    }

    #[test]
    fn fcm_devices_need_an_fcm_section_and_take_fcm_tokens_as_written() {
        let device = |platform: &str, token: &str| {
            format!("\n[[extension.device]]\nplatform = \"{platform}\"\ntoken = \"{token}\"\n")
        };
        let e = err(&format!("{MINIMAL}{}", device("fcm", "abc")));
        assert!(e.contains("an fcm device needs an [fcm] section"), "{e}");

        let (_dir, fcm) = fcm_section("");
        let token = "dXbQ2k1rT0e:APA91bH-x_YZ09";
        let config = parse(
            Path::new("pw.toml"),
            &format!("{fcm}{MINIMAL}{}", device("fcm", token)),
        )
        .unwrap();
        let devices = &config.directory.extension("101").unwrap().devices;
        assert_eq!(devices[0].platform, Platform::Fcm);
        assert_eq!(
            devices[0].token.expose(),
            token,
            "case and punctuation kept"
        );
        assert_eq!(devices[0].label, "101/fcm#0");

        for bad in ["has space", "semi;colon", "", "ä"] {
            let e = err(&format!("{fcm}{MINIMAL}{}", device("fcm", bad)));
            assert!(e.contains("an fcm device token is"), "{bad:?}: {e}");
            assert!(e.starts_with("pw.toml:14: "), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{e}");
            }
        }
        let long = "a".repeat(MAX_FCM_TOKEN_LEN + 1);
        let e = err(&format!("{fcm}{MINIMAL}{}", device("fcm", &long)));
        assert!(e.contains("got 4097 characters"), "{e}");
        // APNs devices still need [apns]; FCM's section does not stand in for it.
        let e = err(&format!("{fcm}{MINIMAL}{}", device("apns", "abcd")));
        assert!(e.contains("an apns device needs an [apns] section"), "{e}");
        let e = err(&format!("{fcm}{MINIMAL}{}", device("mqtt", "abcd")));
        assert!(
            e.contains("`mqtt` is not supported (supported: apns, fcm, hms, webhook, webpush)"),
            "{e}"
        );
    }

    fn webhook_section(secret: &[u8], mode: u32, extra: &str) -> (tempfile::TempDir, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook.secret");
        std::fs::write(&path, secret).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let section = format!(
            "[webhook]\nurl = \"https://push.example.com/pushwake\"\nsecret_file = \"{}\"\n{extra}",
            path.display()
        );
        (dir, section)
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

    #[test]
    fn a_webhook_section_reads_and_checks_the_secret() {
        let (_dir, hook) = webhook_section(SECRET, 0o600, "");
        let config = parse(Path::new("pw.toml"), &format!("{hook}{MINIMAL}")).unwrap();
        let section = config.webhook.as_ref().unwrap();
        assert_eq!(section.url, "https://push.example.com/pushwake");
        assert_eq!(section.timeout, Duration::from_secs(5));
        assert_eq!(section.secret.expose(), &SECRET[..32]);
        let shown = format!("{config:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");

        let (_dir, hook) = webhook_section(SECRET, 0o640, "timeout = \"2s\"\n");
        let config = parse(Path::new("pw.toml"), &format!("{hook}{MINIMAL}")).unwrap();
        assert_eq!(config.webhook.unwrap().timeout, Duration::from_secs(2));

        let (_dir, hook) = webhook_section(SECRET, 0o600, "timeout = \"soon\"\n");
        let e = err(&format!("{hook}{MINIMAL}"));
        assert!(e.starts_with("pw.toml:4: webhook.timeout"), "{e}");

        let (_dir, hook) = webhook_section(SECRET, 0o644, "");
        let e = err(&format!("{hook}{MINIMAL}"));
        assert!(
            e.starts_with("pw.toml:3: webhook.secret_file: ") && e.contains("chmod"),
            "{e}"
        );
        for bad in [&b""[..], b"\n", b"short-secret-16b\n"] {
            let (_dir, hook) = webhook_section(bad, 0o600, "");
            let e = err(&format!("{hook}{MINIMAL}"));
            assert!(e.starts_with("pw.toml:3: webhook.secret_file: "), "{e}");
            assert!(!e.contains("short-secret") && !e.contains('\n'), "{e}");
        }
        let (_dir, hook) = webhook_section(SECRET, 0o600, "");
        let e = err(&format!(
            "{}{MINIMAL}",
            hook.replace("https://push.example.com/pushwake", "ftp://x")
        ));
        assert!(e.starts_with("pw.toml:2: webhook.url"), "{e}");
        let e = err(&format!("{hook}secret = \"x\"\n{MINIMAL}"));
        assert!(e.starts_with("pw.toml:4: ") && e.contains("secret"), "{e}");
        let e = err(&MINIMAL.replace(
            "[[extension]]",
            "[webhook]\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"/nonexistent/pw-secret\"\n\n[[extension]]",
        ));
        assert!(e.contains("webhook.secret_file: cannot read"), "{e}");
    }

    #[test]
    fn webhook_devices_need_the_section_and_keep_their_id() {
        let device = |token: &str| {
            format!("\n[[extension.device]]\nplatform = \"webhook\"\ntoken = \"{token}\"\n")
        };
        let e = err(&format!("{MINIMAL}{}", device("abc")));
        assert!(
            e.contains("a webhook device needs a [webhook] section"),
            "{e}"
        );

        let (_dir, hook) = webhook_section(SECRET, 0o600, "");
        let id = "Op-Device_42:x/Y==";
        let config = parse(
            Path::new("pw.toml"),
            &format!("{hook}{MINIMAL}{}", device(id)),
        )
        .unwrap();
        let devices = &config.directory.extension("101").unwrap().devices;
        assert_eq!(devices[0].platform, Platform::Webhook);
        assert_eq!(devices[0].token.expose(), id, "case kept");
        assert_eq!(devices[0].label, "101/webhook#0");
        for bad in ["has space", "", "ä-device", &"a".repeat(513)] {
            let e = err(&format!("{hook}{MINIMAL}{}", device(bad)));
            assert!(e.contains("a webhook device token is"), "{bad:?}: {e}");
            assert!(e.starts_with("pw.toml:15: "), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{e}");
            }
        }
        let e = err(&format!(
            "{hook}{MINIMAL}{}",
            device("a").replace("webhook", "mqtt")
        ));
        assert!(e.contains("supported: apns, fcm, hms, webhook"), "{e}");
    }

    #[test]
    fn an_http_section_gives_the_listener_and_the_public_url() {
        let section = "[http]\nlisten = \"127.0.0.1:8089\"\npublic_url = \"https://pbx.example.com/pushwake/\"\n";
        let config = parse(Path::new("pw.toml"), &format!("{MINIMAL}{section}")).unwrap();
        let http = config.http.unwrap();
        assert_eq!(http.listen, "127.0.0.1:8089".parse().unwrap());
        assert_eq!(http.public_url, "https://pbx.example.com/pushwake");
        let v6 = section.replace("127.0.0.1:8089", "[::1]:8089");
        let config = parse(Path::new("pw.toml"), &format!("{MINIMAL}{v6}")).unwrap();
        assert_eq!(config.http.unwrap().listen, "[::1]:8089".parse().unwrap());
        assert!(parse(Path::new("pw.toml"), MINIMAL).unwrap().http.is_none());
    }

    #[test]
    fn bad_http_sections_are_one_line_naming_the_key_and_line() {
        let good = "[http]\nlisten = \"127.0.0.1:8089\"\npublic_url = \"https://pbx.example.com/pushwake\"\n";
        // The section starts on line 9 of the file.
        for (bad, line, needle) in [
            (
                "127.0.0.1",
                10,
                "http.listen: `127.0.0.1` is not an address and port",
            ),
            ("localhost:8089", 10, "http.listen: `localhost:8089`"),
            ("127.0.0.1:99999", 10, "http.listen"),
        ] {
            let e = err(&format!("{MINIMAL}{}", good.replace("127.0.0.1:8089", bad)));
            assert!(e.starts_with(&format!("pw.toml:{line}: ")), "{e}");
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
        for bad in [
            "pbx.example.com/pushwake",
            "ftp://pbx.example.com",
            "https://pbx.example.com/?x=1",
        ] {
            let e = err(&format!(
                "{MINIMAL}{}",
                good.replace("https://pbx.example.com/pushwake", bad)
            ));
            assert!(e.starts_with("pw.toml:11: http.public_url: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = err(&format!(
            "{MINIMAL}{}",
            good.replace("listen = \"127.0.0.1:8089\"\n", "")
        ));
        assert!(e.starts_with("pw.toml:") && e.contains("`listen`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}{}",
            good.replace("public_url = \"https://pbx.example.com/pushwake\"\n", "")
        ));
        assert!(
            e.starts_with("pw.toml:") && e.contains("`public_url`"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}{good}port = 1\n"));
        assert!(e.starts_with("pw.toml:12: ") && e.contains("port"), "{e}");
    }

    fn hms_section(secret: &str, mode: u32) -> (tempfile::TempDir, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hms.secret");
        std::fs::write(&file, secret).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let section = format!(
            "[hms]\napp_id = \"107654321\"\nclient_secret_file = \"{}\"\n",
            file.display()
        );
        (dir, section)
    }

    #[test]
    fn an_hms_section_reads_the_app_secret_and_hms_devices_need_it() {
        let device = "\n[[extension.device]]\nplatform = \"hms\"\ntoken = \"IQAAAACy0kYkAACwNz-hms_device\"\n";
        let (_dir, hms) = hms_section("0a1b2c3d4e5f0a1b2c3d4e5f\n", 0o600);
        let config = parse(Path::new("pw.toml"), &format!("{hms}{MINIMAL}{device}")).unwrap();
        let section = config.hms.as_ref().unwrap();
        assert_eq!(section.client_secret, "0a1b2c3d4e5f0a1b2c3d4e5f");
        assert_eq!(section.endpoint, crate::push::hms::DEFAULT_ENDPOINT);
        assert!(!format!("{config:?}").contains("0a1b2c3d4e5f"));
        let devices = &config.directory.extension("101").unwrap().devices;
        assert_eq!(devices[0].platform, Platform::Hms);
        assert_eq!(devices[0].token.expose(), "IQAAAACy0kYkAACwNz-hms_device");
        let e = err(&format!("{MINIMAL}{device}"));
        assert!(e.contains("an hms device needs an [hms] section"), "{e}");
        let (_dir, readable) = hms_section("0a1b2c3d4e5f0a1b2c3d4e5f", 0o644);
        let e = err(&format!("{readable}{MINIMAL}"));
        assert!(
            e.starts_with("pw.toml:3: hms.client_secret_file: ") && e.contains("0644"),
            "{e}"
        );
        assert!(!e.contains("0a1b2c3d4e5f"), "{e}");
        let (_dir, empty) = hms_section("\n", 0o600);
        assert!(err(&format!("{empty}{MINIMAL}")).contains("must hold the app secret"));
    }

    /// A 0600 file in `dir` holding `contents`.
    fn private_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// An `[apns]` section with token authentication, and the dir holding its key.
    fn apns_token_section(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = pushwake_testkit::keys::EcKey::generate();
        let path = private_file(dir.path(), "key.p8", key.private_pem.as_bytes());
        let section = format!(
            "[apns]\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey_file = \"{}\"\ntopic = \"com.example.phone.voip\"\n{extra}",
            path.display()
        );
        (dir, section)
    }

    fn apns_device(extra: &str) -> String {
        format!(
            "\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"{}\"\n{extra}",
            "ab".repeat(32)
        )
    }

    #[test]
    fn an_apns_certificate_file_is_read_checked_and_kept_secret() {
        let dir = tempfile::tempdir().unwrap();
        let cert =
            pushwake_testkit::tls::TestClientCertificate::generate("com.example.phone").unwrap();
        let pem = format!("{}{}", cert.certificate_pem, cert.key_pem);
        let path = private_file(dir.path(), "voip.pem", pem.as_bytes());
        let section = format!(
            "[apns]\ncertificate_file = \"{}\"\ntopic = \"com.example.phone.voip\"\n",
            path.display()
        );
        let config = parse(Path::new("pw.toml"), &format!("{section}{MINIMAL}")).unwrap();
        let apns = config.apns.unwrap();
        assert_eq!(apns.credentials.kind(), "certificate");
        assert_eq!(apns.sandbox_endpoint, crate::push::apns::SANDBOX_ENDPOINT);
        let shown = format!("{apns:?}");
        assert!(shown.contains("com.example.phone"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");

        // Readable by others: refused, like every secret file.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let e = err(&format!("{section}{MINIMAL}"));
        assert!(e.starts_with("pw.toml:2: apns.certificate_file: "), "{e}");
        assert!(e.contains("chmod"), "{e}");

        // An expired certificate (Apple's last a year): refused with its date.
        let old =
            pushwake_testkit::tls::TestClientCertificate::generate_expired("com.example.phone")
                .unwrap();
        let path = private_file(
            dir.path(),
            "old.pem",
            format!("{}{}", old.certificate_pem, old.key_pem).as_bytes(),
        );
        let e = err(&format!(
            "[apns]\ncertificate_file = \"{}\"\ntopic = \"t.voip\"\n{MINIMAL}",
            path.display()
        ));
        assert!(e.contains("the certificate expired on 2020-01-01"), "{e}");

        // The certificate without its key.
        let path = private_file(dir.path(), "cert-only.pem", cert.certificate_pem.as_bytes());
        let e = err(&format!(
            "[apns]\ncertificate_file = \"{}\"\ntopic = \"t.voip\"\n{MINIMAL}",
            path.display()
        ));
        assert!(
            e.contains("apns.certificate_file: ") && e.contains("private key"),
            "{e}"
        );

        // A PKCS#12 file with the wrong password: named, the password not quoted.
        let p12 = {
            let chain = p12_keystore::PrivateKeyChain::new(
                vec![1u8; 20],
                p12_keystore::PrivateKey::from_der(&pem_der(&cert.key_pem)).unwrap(),
                [p12_keystore::Certificate::from_der(&pem_der(&cert.certificate_pem)).unwrap()],
            );
            let mut store = p12_keystore::KeyStore::new();
            store.add_entry("voip", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
            store.writer("right-password").write().unwrap()
        };
        let path = private_file(dir.path(), "voip.p12", &p12);
        let password = private_file(dir.path(), "voip.pass", b"wrong-password\n");
        let e = err(&format!(
            "[apns]\ncertificate_file = \"{}\"\ncertificate_password_file = \"{}\"\ntopic = \"t.voip\"\n{MINIMAL}",
            path.display(),
            password.display()
        ));
        assert!(e.contains("wrong password"), "{e}");
        assert!(!e.contains("wrong-password"), "{e}");
        std::fs::write(&password, "right-password\n").unwrap();
        let config = parse(
            Path::new("pw.toml"),
            &format!(
                "[apns]\ncertificate_file = \"{}\"\ncertificate_password_file = \"{}\"\ntopic = \"t.voip\"\n{MINIMAL}",
                path.display(),
                password.display()
            ),
        )
        .unwrap();
        assert_eq!(config.apns.unwrap().credentials.kind(), "certificate");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn apns_takes_one_way_of_authenticating() {
        let e = err(&format!("[apns]\ntopic = \"t.voip\"\n{MINIMAL}"));
        assert!(e.contains("[apns] needs credentials"), "{e}");
        let e = err(&format!(
            "[apns]\ntopic = \"t.voip\"\nteam_id = \"T\"\n{MINIMAL}"
        ));
        assert!(e.starts_with("pw.toml:3: "), "{e}");
        assert!(e.contains("missing: key_id, key_file"), "{e}");
        let (_dir, section) = apns_token_section("certificate_file = \"/x.pem\"\n");
        let e = err(&format!("{section}{MINIMAL}"));
        assert!(e.contains("not both"), "{e}");
        let (_dir, section) = apns_token_section("certificate_password_file = \"/x\"\n");
        let e = err(&format!("{section}{MINIMAL}"));
        assert!(
            e.contains("certificate_password_file goes with certificate_file"),
            "{e}"
        );
        let (_dir, section) = apns_token_section("alert_topic = \"com.example.phone.voip\"\n");
        let e = err(&format!("{section}{MINIMAL}"));
        assert!(
            e.contains("apns.alert_topic: ") && e.contains("bundle id"),
            "{e}"
        );
        let (_dir, section) = apns_token_section("sandbox_endpoint = \"sandbox\"\n");
        let e = err(&format!("{section}{MINIMAL}"));
        assert!(e.contains("apns.sandbox_endpoint: "), "{e}");
    }

    #[test]
    fn an_apns_device_may_have_its_own_topic_environment_and_alert_token() {
        let (_dir, section) = apns_token_section("alert_topic = \"com.example.phone\"\n");
        let alert = "CD".repeat(32);
        let text = format!(
            "{section}{MINIMAL}{}{}{}",
            apns_device("environment = \"development\"\ntopic = \"com.example.pro.voip\"\n"),
            apns_device(&format!(
                "alert_token = \"{alert}\"\nenvironment = \"production\"\n"
            )),
            apns_device(""),
        );
        let config = parse(Path::new("pw.toml"), &text).unwrap();
        let devices = &config.directory.extension("101").unwrap().devices;
        assert_eq!(
            devices[0].apns,
            Some(ApnsRoute {
                topic: Some("com.example.pro.voip".into()),
                environment: ApnsEnvironment::Sandbox,
                alert_token: None,
            })
        );
        assert_eq!(
            devices[1].apns.as_ref().unwrap().alert_token,
            Some(DeviceToken::new(alert.to_ascii_lowercase()))
        );
        assert_eq!(devices[2].apns, None, "all defaults");
        assert!(config.directory.uses_apns_sandbox());
        assert!(!format!("{config:?}").contains(&alert.to_ascii_lowercase()));

        let e = err(&format!(
            "{section}{MINIMAL}{}",
            apns_device("environment = \"staging\"\n")
        ));
        assert!(
            e.contains("device.environment: `staging` is not production, sandbox or development"),
            "{e}"
        );
        let e = err(&format!(
            "{section}{MINIMAL}{}",
            apns_device("alert_token = \"zz-secret-zz\"\n")
        ));
        assert!(e.contains("device.alert_token must be hexadecimal"), "{e}");
        assert!(!e.contains("zz-secret-zz"), "{e}");
        let (_dir2, no_alert) = apns_token_section("");
        let e = err(&format!(
            "{no_alert}{MINIMAL}{}",
            apns_device(&format!("alert_token = \"{alert}\"\n"))
        ));
        assert!(
            e.contains("device.alert_token needs apns.alert_topic"),
            "{e}"
        );
        assert!(!e.contains(&alert), "{e}");
    }

    #[test]
    fn apns_device_keys_are_refused_on_other_platforms() {
        let (_dir, fcm) = fcm_section("");
        let text = format!(
            "{fcm}{MINIMAL}\n[[extension.device]]\nplatform = \"fcm\"\ntoken = \"abc\"\nenvironment = \"sandbox\"\n"
        );
        let e = err(&text);
        assert!(
            e.contains(
                "extension 101: device.environment applies to apns devices only, this one is fcm"
            ),
            "{e}"
        );
    }
}
