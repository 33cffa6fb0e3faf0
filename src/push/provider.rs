//! A push provider as the configuration knows it: its section, its devices and the
//! pushkin it runs. Each provider module implements [`Provider`] once and is listed once,
//! in [`PROVIDERS`]; nothing else in pushwake names a provider.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use pushwake_core::config::{ConfigError, ConfigFile, Problem, Spanned};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use pushwake_core::rfc8599::PushParams;

use super::Pushkin;

/// Every push provider pushwake is built with, in the order `check-config` lists them.
/// A new provider is a new module under `push/` and one line here.
pub static PROVIDERS: [&dyn Provider; 5] = [
    &super::apns::Apns,
    &super::fcm::Fcm,
    &super::hms::Hms,
    &super::webhook::Webhook,
    &super::webpush::WebPush,
];

/// The provider whose platform is named `name` in the configuration.
pub fn provider(name: &str) -> Option<&'static dyn Provider> {
    PROVIDERS
        .iter()
        .copied()
        .find(|p| p.platform().as_str() == name)
}

/// The provider a registration's `pn-provider` (RFC 8599) names.
pub fn pn_provider(name: &str) -> Option<&'static dyn Provider> {
    PROVIDERS
        .iter()
        .copied()
        .find(|p| p.pn_providers().contains(&name))
}

/// A device's own keys in the configuration (besides `platform`, `token` and `name`),
/// with the position of each value.
pub type DeviceKeys = BTreeMap<String, Spanned<String>>;

/// One push provider: reads its own section of the configuration.
pub trait Provider: Sync {
    /// Its name: the section's (`[apns]`) and the devices' `platform = "apns"`.
    fn platform(&self) -> Platform;

    /// "a" or "an", as the name is read out ("an apns device", "a webhook device").
    fn article(&self) -> &'static str {
        "a"
    }

    /// The device keys it takes besides `platform`, `token` and `name`.
    fn device_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// The `pn-provider` values (RFC 8599) of registrations whose devices it serves;
    /// none if phones cannot register for it themselves.
    fn pn_providers(&self) -> &'static [&'static str] {
        &[]
    }

    /// Reads and checks its section, if the file has one: credentials are read from
    /// their files and checked now, so a bad key stops pushwake at start with a clear
    /// error, not at the first call.
    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError>;
}

/// A provider's checked section: what its pushkin is built from.
pub trait ProviderSettings: fmt::Debug + Send + Sync + Any {
    /// The provider's platform.
    fn platform(&self) -> Platform;

    /// Checks one of its devices: the token (never quoted in an error: it is a secret)
    /// and the device's own keys (only keys of [`Provider::device_keys`] reach it; the
    /// loader refuses the others). Returns the token as it is to be sent and the device's
    /// settings for the pushkin.
    fn device(
        &self,
        token: &Spanned<String>,
        keys: &DeviceKeys,
    ) -> Result<(String, DeviceParams), Problem>;

    /// The device a phone's registration asks to be woken through, from its push
    /// parameters: the token as it is to be sent and the device's settings; or why it
    /// is refused (a `pn-param` naming another app than the configured one: pushwake
    /// pushes to no one else's app). The reason never quotes a token.
    fn learn(&self, params: &PushParams) -> Result<(String, DeviceParams), String> {
        Err(format!(
            "{} devices cannot register themselves (pn-provider {})",
            self.platform(),
            params.provider
        ))
    }

    /// The pushkin for these settings, serving the devices of `directory`.
    fn pushkin(&self, directory: &Directory) -> Result<Arc<dyn Pushkin>, String>;

    /// Whether `other` holds the same settings (a configuration reload compares them).
    fn same_as(&self, other: &dyn ProviderSettings) -> bool;
}

/// [`ProviderSettings::same_as`] for settings that compare with `==`.
pub fn same<T: PartialEq + 'static>(this: &T, other: &dyn ProviderSettings) -> bool {
    (other as &dyn Any).downcast_ref::<T>() == Some(this)
}
