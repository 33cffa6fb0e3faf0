//! Which extensions are push-enabled, and their devices.
//!
//! Built from the configuration file; the wake logic looks extensions up here when a
//! call arrives. Device tokens are secrets: they never appear in `Debug` or `Display`
//! output, only a short fingerprint does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// The push service a device is reached through: the name of a provider, as the
/// configuration spells it (`[apns]`, `platform = "apns"`). Each provider module of the
/// daemon defines its own; this crate lists none, so a new provider touches nothing here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform(&'static str);

impl Platform {
    /// The platform named `name`.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A device's push token. Its `Debug` and `Display` show only a fingerprint, so a token
/// cannot leak into logs or error messages by accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceToken(String);

impl DeviceToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the one place that must send it to the provider.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible fingerprint for logs.
    pub fn fingerprint(&self) -> String {
        // FNV-1a: stable across runs and processes (unlike std's RandomState), and 32
        // bits of a hash reveal nothing usable of a 256-bit token.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.0.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{hash:08x}")
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken(~{})", self.fingerprint())
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "~{}", self.fingerprint())
    }
}

/// One device of an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The push service it is reached through.
    pub platform: Platform,
    /// Its push token.
    pub token: DeviceToken,
    /// A name for logs: the configured `name`, or `<extension>/<platform>#<n>`.
    pub label: String,
    /// Its own settings for its provider, where they differ from the provider's section
    /// (an APNs device's `topic`, say). The provider checked them when they were read.
    pub params: DeviceParams,
}

impl Device {
    /// A device reached with the provider's defaults.
    pub fn new(platform: Platform, token: DeviceToken, label: impl Into<String>) -> Self {
        Self {
            platform,
            token,
            label: label.into(),
            params: DeviceParams::default(),
        }
    }

    /// The same device with one more setting.
    pub fn with_param(mut self, key: &str, value: impl Into<String>) -> Self {
        self.params.set(key, value);
        self
    }
}

/// A device's own settings for its provider, by key. Plain strings, so that the same
/// settings can come from the configuration file, from a phone's registration or from a
/// store; the provider that owns the device gives them meaning. A setting marked secret
/// (another token) never shows in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DeviceParams {
    values: BTreeMap<String, (String, bool)>,
}

impl DeviceParams {
    /// The setting `key`, if the device has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(value, _)| value.as_str())
    }

    /// Sets `key`.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_owned(), (value.into(), false));
    }

    /// Sets `key` to a secret: `Debug` shows only that it is there.
    pub fn set_secret(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_owned(), (value.into(), true));
    }

    /// Whether the device has no settings of its own.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every setting: key, value, and whether it is a secret (for a store to keep them
    /// as they are).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.values
            .iter()
            .map(|(key, (value, secret))| (key.as_str(), value.as_str(), *secret))
    }

    /// Settings from `entries` as [`DeviceParams::entries`] lists them.
    pub fn from_entries<K, V>(entries: impl IntoIterator<Item = (K, V, bool)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: entries
                .into_iter()
                .map(|(key, value, secret)| (key.into(), (value.into(), secret)))
                .collect(),
        }
    }
}

impl fmt::Debug for DeviceParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, (value, secret)) in &self.values {
            if *secret {
                map.entry(key, &"<redacted>");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

/// The devices that are not in the configuration file: learned from the phones' own
/// registrations or registered through the device API, and kept by the daemon. The
/// engine asks at the start of each call, so the answer must come from memory.
pub trait DeviceSource: Send + Sync {
    /// The extension's devices to wake for calls, in a stable order.
    fn devices_of(&self, extension: &str) -> Vec<Device>;

    /// The extension's devices to tell about a message (also those that asked not to
    /// be woken for calls); the calls' devices unless the source knows better.
    fn message_devices_of(&self, extension: &str) -> Vec<Device> {
        self.devices_of(extension)
    }

    /// Every extension that has devices here (for the states pushwake shows the PBX).
    fn extensions(&self) -> Vec<String> {
        Vec::new()
    }
}

/// How long a caller waits when neither the extension nor `[defaults]` sets it.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(30);

/// The wake settings of one extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionPolicy {
    /// The extension number (the PBX endpoint / AOR name).
    pub number: String,
    /// How long a caller waits for a device to answer.
    pub ring_timeout: Duration,
    /// The devices to push.
    pub devices: Vec<Device>,
    /// A number to ring besides the devices once none answered for a while.
    pub fallback: Option<Fallback>,
}

/// An extension's fallback: rung in parallel with the wait once no device answered
/// within `after` (the first to answer, device or fallback, wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// What to dial, in the PBX's own syntax (Asterisk: `Local/+15551234567@outbound`).
    pub dial: String,
    /// How long after the caller arrived.
    pub after: Duration,
}

/// All push-enabled extensions of the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    extensions: HashMap<String, ExtensionPolicy>,
    /// The ring timeout of an extension that is not configured but has devices of its
    /// own (learned or registered).
    default_ring_timeout: Duration,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new([])
    }
}

impl Directory {
    /// Builds a directory; a later extension with the same number replaces an earlier
    /// one (the configuration loader rejects duplicates before this point).
    pub fn new(extensions: impl IntoIterator<Item = ExtensionPolicy>) -> Self {
        Self {
            extensions: extensions
                .into_iter()
                .map(|e| (e.number.clone(), e))
                .collect(),
            default_ring_timeout: DEFAULT_RING_TIMEOUT,
        }
    }

    /// The same directory, with `ring_timeout` for extensions it does not list.
    pub fn with_default_ring_timeout(mut self, ring_timeout: Duration) -> Self {
        self.default_ring_timeout = ring_timeout;
        self
    }

    /// The ring timeout of an extension that is not configured.
    pub fn default_ring_timeout(&self) -> Duration {
        self.default_ring_timeout
    }

    /// The extension's settings, if it is configured.
    pub fn extension(&self, number: &str) -> Option<&ExtensionPolicy> {
        self.extensions.get(number)
    }

    /// Every device of every extension.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.extensions.values().flat_map(|e| &e.devices)
    }

    /// The configured extensions' numbers.
    pub fn numbers(&self) -> impl Iterator<Item = &str> {
        self.extensions.keys().map(String::as_str)
    }

    /// Number of configured extensions.
    pub fn len(&self) -> usize {
        self.extensions.len()
    }

    /// Whether no extension is configured.
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_shows_in_debug_or_display() {
        let token =
            DeviceToken::new("00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0");
        let shown = format!("{token:?} {token}");
        assert!(!shown.contains("00fc13ad"), "{shown}");
        assert!(!shown.contains("991de8f0"), "{shown}");
        assert_eq!(token.fingerprint().len(), 8);
        assert_eq!(token.fingerprint(), token.clone().fingerprint());
        assert_ne!(token.fingerprint(), DeviceToken::new("other").fingerprint());
    }

    #[test]
    fn secret_device_params_never_show_in_debug() {
        let mut params = DeviceParams::default();
        params.set("topic", "com.example.phone.voip");
        params.set_secret("alert_token", "7bd1c0ffee");
        let shown = format!("{params:?}");
        assert!(shown.contains("com.example.phone.voip"), "{shown}");
        assert!(
            shown.contains("alert_token") && !shown.contains("7bd1c0ffee"),
            "{shown}"
        );
        assert_eq!(params.get("alert_token"), Some("7bd1c0ffee"));
        assert_eq!(params.get("environment"), None);
        let copy = DeviceParams::from_entries(params.entries());
        assert_eq!(copy, params);
        assert!(format!("{copy:?}").contains("<redacted>"));
    }
}
