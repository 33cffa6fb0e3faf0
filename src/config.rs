//! The configuration file (`pushwake.toml`): the daemon's own sections, and the one
//! place that asks every other part for its own.
//!
//! Key names are a contract with operators: keys are added, never renamed. Unknown keys
//! are an error naming the key and its line. Every error is one line of the form
//! `<file>:<line>: <what is wrong>` (the shared rules are in
//! [`pushwake_core::config`]), so a failed `pushwake check-config` or service start says
//! exactly what to fix. Files holding secrets (this file, the APNs key, the FCM
//! service-account file, …) must not be readable by other users.
//!
//! Read here: `[defaults]`, `[[extension]]` (and their devices' common keys) and
//! `[http]`; `[store]` by [`crate::devices::section`], `[metrics]` by
//! [`crate::metrics::section`]. The PBX section is read by its adapter ([`crate::pbx`]),
//! each push provider's section and its devices' tokens by the provider
//! ([`crate::push::provider`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pushwake_core::config::{check_http_url, check_private, duration, ConfigFile, Spanned};
use pushwake_core::directory::{
    Device, DeviceToken, Directory, ExtensionPolicy, Fallback, Platform,
};
use serde::Deserialize;

pub use pushwake_core::config::ConfigError;

use crate::devices::section::StoreSection;
use crate::pbx::PbxConfig;
use crate::push::provider::{provider, DeviceKeys, ProviderSettings, PROVIDERS};
use crate::push::Pushkin;

/// The default ring timeout when neither the extension nor `[defaults]` sets one.
pub use pushwake_core::directory::DEFAULT_RING_TIMEOUT;
/// The longest ring timeout accepted: a caller should not wait longer than this.
pub const MAX_RING_TIMEOUT: Duration = Duration::from_secs(300);

/// The top-level sections read here.
const OWN_SECTIONS: [&str; 6] = [
    "defaults",
    "extension",
    "http",
    crate::devices::section::SECTION,
    crate::metrics::section::SECTION,
    crate::messages::section::SECTION,
];
/// The keys every device has, whatever its provider.
const DEVICE_KEYS: [&str; 3] = ["platform", "token", "name"];

/// `[http]`: the HTTP listener serving the call status endpoint
/// (`GET /v1/calls/{call_id}`) to apps woken late.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the plain-HTTP listener binds (usually loopback, behind a TLS reverse proxy).
    pub listen: std::net::SocketAddr,
    /// The base URL apps reach the listener at, without a final `/`; status URLs are
    /// `{public_url}/v1/calls/{call_id}`.
    pub public_url: String,
    /// The device API's bearer tokens (`api_tokens_file`), read and checked at load;
    /// without them the device API is off.
    pub api_tokens: Option<crate::http::tokens::ApiTokens>,
}

/// The whole, checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from.
    pub file: PathBuf,
    /// The PBX pushwake drives, and how to reach it.
    pub pbx: PbxConfig,
    /// The push providers configured, in the order of [`PROVIDERS`].
    pub providers: Vec<Arc<dyn ProviderSettings>>,
    /// `[http]`, if configured: without it there is no listener and pushes carry no
    /// status fields.
    pub http: Option<HttpConfig>,
    /// `[store]`: where registered devices are kept (its defaults if absent).
    pub store: StoreSection,
    /// `[metrics]`, if configured: where the Prometheus endpoint listens.
    pub metrics: Option<crate::metrics::MetricsSection>,
    /// `[messages]`, if configured: SIP MESSAGEs kept for sleeping phones.
    pub messages: Option<crate::messages::section::MessagesSection>,
    /// The push-enabled extensions.
    pub directory: Directory,
}

impl Config {
    /// The settings of the provider serving `platform`, if its section is configured.
    pub fn provider(&self, platform: Platform) -> Option<&Arc<dyn ProviderSettings>> {
        self.providers.iter().find(|p| p.platform() == platform)
    }

    /// The settings of type `T`, if that provider is configured.
    pub fn settings<T: ProviderSettings>(&self) -> Option<&T> {
        self.providers
            .iter()
            .find_map(|p| (&**p as &dyn std::any::Any).downcast_ref::<T>())
    }

    /// The pushkins of every configured provider. An error names the provider.
    pub fn pushkins(&self) -> Result<Vec<Arc<dyn Pushkin>>, String> {
        self.providers
            .iter()
            .map(|p| {
                p.pushkin(&self.directory)
                    .map_err(|e| format!("{}: {e}", p.platform()))
            })
            .collect()
    }

    /// The sections of `new` that differ from this configuration's and take effect
    /// only after a restart (everything but the extensions), by name.
    pub fn changes_needing_restart(&self, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        if new.pbx != self.pbx {
            changed.push(format!("[{}]", new.pbx.section()));
        }
        for p in PROVIDERS {
            let platform = p.platform();
            let same = match (self.provider(platform), new.provider(platform)) {
                (None, None) => true,
                (Some(old), Some(new)) => old.same_as(&**new),
                _ => false,
            };
            if !same {
                changed.push(format!("[{platform}]"));
            }
        }
        if new.http != self.http {
            changed.push("[http]".to_owned());
        }
        if new.store != self.store {
            changed.push("[store]".to_owned());
        }
        if new.metrics != self.metrics {
            changed.push("[metrics]".to_owned());
        }
        if new.messages != self.messages {
            changed.push("[messages]".to_owned());
        }
        changed
    }
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    ring_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Spanned<String>,
    public_url: Spanned<String>,
    api_tokens_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    number: Spanned<String>,
    ring_timeout: Option<Spanned<String>>,
    fallback: Option<Spanned<String>>,
    fallback_after: Option<Spanned<String>>,
    #[serde(default)]
    device: Vec<Spanned<DeviceKeys>>,
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
        "the configuration file (it holds the PBX password and device tokens)",
    )
    .map_err(whole)?;
    parse(path, &text)
}

/// Checks the text of a configuration file; `path` is used for messages and to resolve
/// nothing else (key files are read from their own absolute or working-directory
/// relative paths).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let file = ConfigFile::parse(path, text)?;
    check_sections(&file)?;
    let pbx = PbxConfig::from_file(&file)?;
    let defaults = file
        .section::<RawDefaults>("defaults")?
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let default_ring = match &defaults.ring_timeout {
        Some(value) => {
            ring_timeout(value, "defaults.ring_timeout").map_err(|p| file.problem_in(0..0, p))?
        }
        None => DEFAULT_RING_TIMEOUT,
    };
    let mut providers = Vec::new();
    for p in PROVIDERS {
        providers.extend(p.read_section(&file)?);
    }
    let store = StoreSection::from_file(&file)?;
    let metrics = crate::metrics::MetricsSection::from_file(&file)?;
    let messages = crate::messages::section::MessagesSection::from_file(&file)?;
    let http = match file.section::<RawHttp>("http")? {
        Some(section) => Some(http(section.into_inner()).map_err(|p| file.problem_in(0..0, p))?),
        None => None,
    };
    let raw_extensions = file
        .section::<Vec<Spanned<RawExtension>>>("extension")?
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let mut extensions = Vec::new();
    let mut seen = HashSet::new();
    for ext in raw_extensions {
        let ext_span = ext.span();
        let ext = ext.into_inner();
        let number = ext.number.get_ref().trim().to_owned();
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_graphic()) {
            return Err(file.error_at(
                ext.number.span(),
                format!("extension.number: `{number}` is not an extension number"),
            ));
        }
        if !seen.insert(number.clone()) {
            return Err(file.error_at(
                ext.number.span(),
                format!("extension {number} is configured twice"),
            ));
        }
        let ring = match &ext.ring_timeout {
            Some(value) => ring_timeout(value, "extension.ring_timeout")
                .map_err(|p| file.problem_in(0..0, p))?,
            None => default_ring,
        };
        let fallback = fallback(&ext, ring).map_err(|(span, message)| {
            file.error_at(span, format!("extension {number}: {message}"))
        })?;
        let mut devices = Vec::new();
        for (index, keys) in ext.device.into_iter().enumerate() {
            let device = device(&providers, &number, index, keys).map_err(|(span, message)| {
                file.error_at(span, format!("extension {number}: {message}"))
            })?;
            devices.push(device);
        }
        if devices.is_empty() {
            tracing::debug!(extension = %number, line = file.line_of(ext_span.start), "extension has no devices");
        }
        extensions.push(ExtensionPolicy {
            number,
            ring_timeout: ring,
            devices,
            fallback,
        });
    }
    Ok(Config {
        file: path.to_owned(),
        pbx,
        providers,
        http,
        store,
        metrics,
        messages,
        directory: Directory::new(extensions).with_default_ring_timeout(default_ring),
    })
}

/// Refuses a top-level key that no part of pushwake reads.
fn check_sections(file: &ConfigFile<'_>) -> Result<(), ConfigError> {
    let known: Vec<&str> = OWN_SECTIONS
        .iter()
        .copied()
        .chain(crate::pbx::SECTIONS)
        .chain(PROVIDERS.iter().map(|p| p.platform().as_str()))
        .collect();
    for (key, span) in file.keys() {
        if !known.contains(&key) {
            return Err(file.error_at(
                span,
                format!("unknown field `{key}`, expected one of {}", quoted(&known)),
            ));
        }
    }
    Ok(())
}

/// One `[[extension.device]]`: the common keys are checked here, the token and the
/// provider's own keys by the provider.
fn device(
    providers: &[Arc<dyn ProviderSettings>],
    number: &str,
    index: usize,
    keys: Spanned<DeviceKeys>,
) -> Result<Device, (std::ops::Range<usize>, String)> {
    let span = keys.span();
    let mut keys = keys.into_inner();
    let own_keys = |p: &&dyn crate::push::Provider| p.device_keys().iter().copied();
    if let Some((key, value)) = keys.iter().find(|(key, _)| {
        !DEVICE_KEYS.contains(&key.as_str())
            && !PROVIDERS
                .iter()
                .flat_map(own_keys)
                .any(|k| k == key.as_str())
    }) {
        let expected: Vec<&str> = DEVICE_KEYS
            .iter()
            .copied()
            .chain(PROVIDERS.iter().flat_map(own_keys))
            .collect();
        return Err((
            value.span(),
            format!(
                "unknown field `{key}`, expected one of {}",
                quoted(&expected)
            ),
        ));
    }
    let take = |keys: &mut DeviceKeys, key: &str| {
        keys.remove(key)
            .ok_or_else(|| (span.clone(), format!("missing field `{key}`")))
    };
    let platform_name = take(&mut keys, "platform")?;
    let token = take(&mut keys, "token")?;
    let name = keys.remove("name");
    let Some(kind) = provider(platform_name.get_ref()) else {
        let supported: Vec<&str> = PROVIDERS.iter().map(|p| p.platform().as_str()).collect();
        return Err((
            platform_name.span(),
            format!(
                "device platform `{}` is not supported (supported: {})",
                platform_name.get_ref(),
                supported.join(", ")
            ),
        ));
    };
    let platform = kind.platform();
    let Some(settings) = providers.iter().find(|p| p.platform() == platform) else {
        let article = kind.article();
        return Err((
            platform_name.span(),
            format!("{article} {platform} device needs {article} [{platform}] section"),
        ));
    };
    let (own, foreign): (DeviceKeys, DeviceKeys) = keys
        .into_iter()
        .partition(|(key, _)| kind.device_keys().contains(&key.as_str()));
    let (token, params) = settings.device(&token, &own)?;
    if let Some((key, value)) = foreign.iter().next() {
        let owner = PROVIDERS
            .iter()
            .find(|p| p.device_keys().contains(&key.as_str()))
            .map_or("other", |p| p.platform().as_str());
        return Err((
            value.span(),
            format!("device.{key} applies to {owner} devices only, this one is {platform}"),
        ));
    }
    let label = name
        .map(Spanned::into_inner)
        .unwrap_or_else(|| format!("{number}/{platform}#{index}"));
    Ok(Device {
        platform,
        token: DeviceToken::new(token),
        label,
        params,
    })
}

/// `` `a`, `b` `` for an error message.
fn quoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn http(raw: RawHttp) -> Result<HttpConfig, (std::ops::Range<usize>, String)> {
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
    let api_tokens = match &raw.api_tokens_file {
        Some(file) => Some(
            crate::http::tokens::ApiTokens::read(Path::new(file.get_ref().trim()))
                .map_err(|e| (file.span(), format!("http.api_tokens_file: {e}")))?,
        ),
        None => None,
    };
    Ok(HttpConfig {
        listen,
        public_url,
        api_tokens,
    })
}

/// When no `fallback_after` is given.
pub const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(10);

/// The longest fallback dial string.
const MAX_FALLBACK_CHARS: usize = 256;

/// An extension's `fallback` and `fallback_after`: a dial string of one destination, rung
/// before the ring timeout ends.
fn fallback(
    ext: &RawExtension,
    ring: Duration,
) -> Result<Option<Fallback>, (std::ops::Range<usize>, String)> {
    let Some(dial) = &ext.fallback else {
        return match &ext.fallback_after {
            Some(after) => Err((
                after.span(),
                "extension.fallback_after needs an extension.fallback to ring".into(),
            )),
            None => Ok(None),
        };
    };
    let text = dial.get_ref().trim();
    if text.is_empty()
        || text.chars().count() > MAX_FALLBACK_CHARS
        || !text.chars().all(|c| c.is_ascii_graphic())
        || text.contains('&')
    {
        return Err((
            dial.span(),
            format!(
                "extension.fallback: `{text}` is not a dial string of one destination                  (e.g. \"Local/+15551234567@outbound\"; no spaces, no `&`, at most                  {MAX_FALLBACK_CHARS} characters)"
            ),
        ));
    }
    let after = match &ext.fallback_after {
        Some(value) => duration(
            value,
            "extension.fallback_after",
            "\"10s\"",
            MAX_RING_TIMEOUT,
        )?,
        None => DEFAULT_FALLBACK_AFTER,
    };
    if after >= ring {
        let span = ext.fallback_after.as_ref().unwrap_or(dial).span();
        return Err((
            span,
            format!(
                "extension.fallback_after ({}s) must be shorter than the ring timeout ({}s):                  the fallback would never ring",
                after.as_secs_f64(),
                ring.as_secs_f64()
            ),
        ));
    }
    Ok(Some(Fallback {
        dial: text.to_owned(),
        after,
    }))
}

fn ring_timeout(
    value: &Spanned<String>,
    key: &str,
) -> Result<Duration, (std::ops::Range<usize>, String)> {
    duration(value, key, "\"30s\" or \"1m\"", MAX_RING_TIMEOUT)
}

/// What the configuration tests of every module share: a minimal file, and sections
/// with their key files written to a fresh directory.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use super::parse;

    pub(crate) const MINIMAL: &str = r#"
[asterisk]
url = "http://127.0.0.1:8088"
username = "pushwake"
password = "secret"

[[extension]]
number = "101"
"#;

    pub(crate) fn err(text: &str) -> String {
        parse(Path::new("pw.toml"), text).unwrap_err().to_string()
    }

    /// A 0600 file in `dir` holding `contents`.
    pub(crate) fn private_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A service-account file in a fresh directory, and an `[fcm]` section naming it
    /// (followed by `extra` lines).
    pub(crate) fn fcm_section(extra: &str) -> (tempfile::TempDir, String) {
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

    pub(crate) fn webhook_section(
        secret: &[u8],
        mode: u32,
        extra: &str,
    ) -> (tempfile::TempDir, String) {
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

    pub(crate) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

    pub(crate) fn hms_section(secret: &str, mode: u32) -> (tempfile::TempDir, String) {
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

    /// An `[apns]` section with token authentication, and the dir holding its key.
    pub(crate) fn apns_token_section(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = pushwake_testkit::keys::EcKey::generate();
        let path = private_file(dir.path(), "key.p8", key.private_pem.as_bytes());
        let section = format!(
            "[apns]\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey_file = \"{}\"\ntopic = \"com.example.phone.voip\"\n{extra}",
            path.display()
        );
        (dir, section)
    }

    pub(crate) fn apns_device(extra: &str) -> String {
        format!(
            "\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"{}\"\n{extra}",
            "ab".repeat(32)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn asterisk(config: &Config) -> &pushwake_asterisk::AsteriskConfig {
        match &config.pbx {
            PbxConfig::Asterisk(asterisk) => asterisk,
            other => panic!("not asterisk: {other:?}"),
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse(Path::new("pw.toml"), MINIMAL).unwrap();
        assert_eq!(asterisk(&config).app, "pushwake");
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
    fn a_fallback_is_read_checked_and_refused_with_its_line() {
        let with = |lines: &str| {
            MINIMAL.replace("number = \"101\"", &format!("number = \"101\"\n{lines}"))
        };
        let config = parse(
            Path::new("pw.toml"),
            &with("ring_timeout = \"25s\"\nfallback = \"Local/+15551234567@outbound\"\nfallback_after = \"8s\""),
        )
        .unwrap();
        let fallback = config.directory.extension("101").unwrap().fallback.clone();
        assert_eq!(
            fallback,
            Some(Fallback {
                dial: "Local/+15551234567@outbound".into(),
                after: Duration::from_secs(8),
            })
        );
        let default = parse(
            Path::new("pw.toml"),
            &with("fallback = \"PJSIP/+1555@trunk\""),
        )
        .unwrap();
        assert_eq!(
            default
                .directory
                .extension("101")
                .unwrap()
                .fallback
                .as_ref()
                .unwrap()
                .after,
            DEFAULT_FALLBACK_AFTER
        );
        for (lines, wanted) in [
            ("fallback_after = \"5s\"", "needs an extension.fallback"),
            ("fallback = \"Local/1@a&PJSIP/2\"", "one destination"),
            ("fallback = \"Local/1 @a\"", "one destination"),
            ("fallback = \"\"", "one destination"),
            (
                "ring_timeout = \"10s\"\nfallback = \"Local/1@a\"\nfallback_after = \"10s\"",
                "shorter than the ring timeout",
            ),
            (
                "fallback = \"Local/1@a\"\nfallback_after = \"soon\"",
                "extension.fallback_after",
            ),
        ] {
            let e = err(&with(lines));
            assert!(e.starts_with("pw.toml:"), "{e}");
            assert!(
                e.contains("extension 101") && e.contains(wanted),
                "{lines}: {e}"
            );
        }
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

    #[test]
    fn a_file_needs_exactly_one_pbx_section_and_no_unknown_one() {
        let e = err("[[extension]]\nnumber = \"101\"\n");
        assert_eq!(
            e,
            "pw.toml: no PBX section: pushwake needs one, [asterisk] or [freeswitch], saying how to reach the PBX"
        );
        let e = err(&format!(
            "{MINIMAL}\n[freeswitch]\npassword_file = \"/x\"\ndomain = \"d\"\n"
        ));
        assert!(
            e.starts_with("pw.toml:10: ")
                && e.contains("[freeswitch] and [asterisk] are both configured"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\n[mqtt]\nurl = \"x\"\n"));
        assert!(e.starts_with("pw.toml:10: unknown field `mqtt`, expected one of `defaults`, `extension`, `http`, `store`, `metrics`, `messages`, `asterisk`, `freeswitch`, `apns`, `fcm`, `hms`, `webhook`, `webpush`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[extension.device]]\nplatform = \"apns\"\ntokn = \"ab\"\n"
        ));
        assert!(e.starts_with("pw.toml:12: extension 101: unknown field `tokn`, expected one of `platform`, `token`, `name`, `topic`"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[extension.device]]\nplatform = \"apns\"\n"
        ));
        assert!(
            e.starts_with("pw.toml:10: extension 101: missing field `token`"),
            "{e}"
        );
    }

    /// SIGHUP reloads the extensions only: every other section that changed is named in
    /// the warning (it used to miss [hms], [webhook] and [webpush]).
    #[test]
    fn a_reload_names_every_changed_section_that_needs_a_restart() {
        let (_d1, fcm) = fcm_section("");
        let (_d2, hook) = webhook_section(SECRET, 0o600, "");
        let (_d3, hms) = hms_section("0a1b2c3d4e5f0a1b2c3d4e5f\n", 0o600);
        let (_d4, apns) = apns_token_section("");
        let webpush_key = tempfile::tempdir().unwrap();
        let vapid = private_file(
            webpush_key.path(),
            "vapid.pem",
            pushwake_testkit::keys::EcKey::generate()
                .private_pem
                .as_bytes(),
        );
        let webpush = format!(
            "[webpush]\nvapid_key_file = \"{}\"\nsubject = \"mailto:ops@example.com\"\n",
            vapid.display()
        );
        let load = |text: &str| parse(Path::new("pw.toml"), text).unwrap();
        let running = load(&format!("{apns}{fcm}{hook}{hms}{webpush}{MINIMAL}"));
        // The extensions alone changed: nothing to warn about.
        let same = load(&format!(
            "{apns}{fcm}{hook}{hms}{webpush}{MINIMAL}ring_timeout = \"20s\"\n"
        ));
        assert!(running.changes_needing_restart(&same).is_empty());
        for (changed, text) in [
            (
                "[webhook]",
                format!("{apns}{fcm}{}{hms}{webpush}{MINIMAL}", hook.replace("push.example.com", "hooks.example.com")),
            ),
            (
                "[hms]",
                format!("{apns}{fcm}{hook}{}{webpush}{MINIMAL}", hms.replace("107654321", "107654322")),
            ),
            (
                "[webpush]",
                format!("{apns}{fcm}{hook}{hms}{}{MINIMAL}", webpush.replace("ops@", "noc@")),
            ),
            ("[webpush]", format!("{apns}{fcm}{hook}{hms}{MINIMAL}")),
            (
                "[fcm]",
                format!("{apns}{fcm}endpoint = \"http://127.0.0.1:1\"\n{hook}{hms}{webpush}{MINIMAL}"),
            ),
            (
                "[apns]",
                format!("{}{fcm}{hook}{hms}{webpush}{MINIMAL}", apns.replace("KEY1234567", "KEY7654321")),
            ),
            (
                "[asterisk]",
                format!("{apns}{fcm}{hook}{hms}{webpush}{}", MINIMAL.replace("secret", "other")),
            ),
            (
                "[http]",
                format!("{apns}{fcm}{hook}{hms}{webpush}[http]\nlisten = \"127.0.0.1:8089\"\npublic_url = \"https://p.example.com\"\n{MINIMAL}"),
            ),
        ] {
            let new = load(&text);
            assert_eq!(running.changes_needing_restart(&new), vec![changed.to_owned()], "{text}");
        }
        let all_new = load(MINIMAL);
        assert_eq!(
            running.changes_needing_restart(&all_new),
            ["[apns]", "[fcm]", "[hms]", "[webhook]", "[webpush]"]
        );
    }
}
