//! Which extensions are push-enabled, and their devices.
//!
//! Built from the configuration file; the wake logic looks extensions up here when a
//! call arrives. Device tokens are secrets: they never appear in `Debug` or `Display`
//! output, only a short fingerprint does.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The push service a device is reached through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Apple Push Notification service (PushKit VoIP pushes).
    Apns,
    /// Firebase Cloud Messaging, HTTP v1 API (high-priority data messages to Android).
    Fcm,
    /// The operator's own backend, through a signed webhook (the token is the operator's
    /// device id).
    Webhook,
    /// Web Push (RFC 8030) to a browser softphone (the token is the browser's
    /// `PushSubscription` JSON).
    WebPush,
    /// Huawei Push Kit (HMS Core): high-urgency data messages to Huawei phones without
    /// Google services.
    Hms,
}

impl Platform {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Webhook => "webhook",
            Platform::WebPush => "webpush",
            Platform::Hms => "hms",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Where APNs pushes for this device go (APNs devices only; `None` means the
    /// `[apns]` defaults).
    pub apns: Option<ApnsRoute>,
}

impl Device {
    /// A device reached with the provider's defaults.
    pub fn new(platform: Platform, token: DeviceToken, label: impl Into<String>) -> Self {
        Self {
            platform,
            token,
            label: label.into(),
            apns: None,
        }
    }
}

/// Which APNs host serves a device: the one matching the `aps-environment` entitlement
/// of the build that registered its token. A token from a development build is unknown
/// to production (`BadDeviceToken`) and the other way round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApnsEnvironment {
    /// `api.push.apple.com`: App Store, TestFlight and ad-hoc builds.
    #[default]
    Production,
    /// `api.sandbox.push.apple.com`: builds signed for development (run from Xcode).
    Sandbox,
}

/// A device's own APNs settings, where they differ from the `[apns]` defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApnsRoute {
    /// The VoIP topic for this device's app (another app of the same team), instead of
    /// `apns.topic`.
    pub topic: Option<String>,
    /// The APNs host its token belongs to.
    pub environment: ApnsEnvironment,
    /// The app's regular (non-VoIP) remote-notification token, for the "missed call"
    /// alert. PushKit and regular notifications have different tokens.
    pub alert_token: Option<DeviceToken>,
}

/// The wake settings of one extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionPolicy {
    /// The extension number (the PBX endpoint / AOR name).
    pub number: String,
    /// How long a caller waits for a device to answer.
    pub ring_timeout: Duration,
    /// The devices to push.
    pub devices: Vec<Device>,
}

/// All push-enabled extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    extensions: HashMap<String, ExtensionPolicy>,
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
        }
    }

    /// The extension's settings, if it is configured.
    pub fn extension(&self, number: &str) -> Option<&ExtensionPolicy> {
        self.extensions.get(number)
    }

    /// Whether some device is reached through the APNs sandbox (its connection is then
    /// opened at start-up too).
    pub fn uses_apns_sandbox(&self) -> bool {
        self.extensions.values().flat_map(|e| &e.devices).any(|d| {
            d.apns
                .as_ref()
                .is_some_and(|r| r.environment == ApnsEnvironment::Sandbox)
        })
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
}
