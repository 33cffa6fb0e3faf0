//! The `[hms]` section and `platform = "hms"` devices.

use std::path::PathBuf;
use std::sync::Arc;

use pushwake_core::config::{
    base_url, read_secret_file, ConfigError, ConfigFile, Problem, Spanned,
};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use pushwake_core::rfc8599::PushParams;
use serde::Deserialize;

use super::{HmsPushkin, HmsSettings, DEFAULT_ENDPOINT, DEFAULT_TOKEN_URL, PLATFORM};
use crate::push::provider::{same, DeviceKeys, Provider, ProviderSettings};
use crate::push::Pushkin;

/// The longest Huawei Push Kit token accepted.
const MAX_TOKEN_LEN: usize = 1024;

/// Huawei Push Kit, as the configuration knows it.
pub struct Hms;

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

impl Provider for Hms {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn article(&self) -> &'static str {
        "an"
    }

    fn pn_providers(&self) -> &'static [&'static str] {
        &["hms"]
    }

    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError> {
        let Some(raw) = file.section::<RawHms>(PLATFORM.as_str())? else {
            return Ok(None);
        };
        let span = raw.span();
        let settings = settings(raw.into_inner()).map_err(|p| file.problem_in(span, p))?;
        Ok(Some(Arc::new(settings)))
    }
}

fn settings(raw: RawHms) -> Result<HmsSettings, Problem> {
    let app_id = raw.app_id.get_ref().trim().to_owned();
    if app_id.is_empty() || !app_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err((
            raw.app_id.span(),
            format!("hms.app_id: `{app_id}` is not an app id"),
        ));
    }
    let endpoint = base_url(&raw.endpoint, "hms.endpoint", DEFAULT_ENDPOINT)?;
    let token_url = base_url(&raw.token_url, "hms.token_url", DEFAULT_TOKEN_URL)?;
    let file = PathBuf::from(raw.client_secret_file.get_ref());
    let span = raw.client_secret_file.span();
    let fail = |m: String| (span.clone(), format!("hms.client_secret_file: {m}"));
    let bytes = read_secret_file(&file, "the Huawei app secret").map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        fail(format!(
            "{} must hold the app secret on one line",
            file.display()
        ))
    })?;
    let client_secret = text.trim().to_owned();
    if client_secret.is_empty() || client_secret.chars().any(char::is_whitespace) {
        return Err(fail(format!(
            "{} must hold the app secret on one line",
            file.display()
        )));
    }
    Ok(HmsSettings {
        app_id,
        client_secret,
        endpoint,
        token_url,
    })
}

/// A Push Kit token: 1 to [`MAX_TOKEN_LEN`] printable ASCII characters.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(format!("an hms device token is 1 to {MAX_TOKEN_LEN} printable ASCII characters without spaces (got {} characters)", token.len()));
    }
    Ok(())
}

impl ProviderSettings for HmsSettings {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn device(
        &self,
        token: &Spanned<String>,
        _keys: &DeviceKeys,
    ) -> Result<(String, DeviceParams), Problem> {
        let text = token.get_ref().trim();
        check_token(text).map_err(|message| (token.span(), message))?;
        Ok((text.to_owned(), DeviceParams::default()))
    }

    /// `pn-provider=hms`, `pn-prid=<Push Kit token>`, and `pn-param=<app id>` if given:
    /// another app's id is refused.
    fn learn(&self, pn: &PushParams) -> Result<(String, DeviceParams), String> {
        if let Some(app) = &pn.param {
            if *app != self.app_id {
                return Err(format!(
                    "pn-param names app {app}, not hms.app_id {}",
                    self.app_id
                ));
            }
        }
        check_token(&pn.prid)?;
        Ok((pn.prid.clone(), DeviceParams::default()))
    }

    fn pushkin(&self, _directory: &Directory) -> Result<Arc<dyn Pushkin>, String> {
        Ok(Arc::new(
            HmsPushkin::new(self.clone()).map_err(|e| e.to_string())?,
        ))
    }

    fn same_as(&self, other: &dyn ProviderSettings) -> bool {
        same(self, other)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;

    #[test]
    fn an_hms_section_reads_the_app_secret_and_hms_devices_need_it() {
        let device = "\n[[extension.device]]\nplatform = \"hms\"\ntoken = \"IQAAAACy0kYkAACwNz-hms_device\"\n";
        let (_dir, hms) = hms_section("0a1b2c3d4e5f0a1b2c3d4e5f\n", 0o600);
        let config = parse(Path::new("pw.toml"), &format!("{hms}{MINIMAL}{device}")).unwrap();
        let section = config.settings::<HmsSettings>().unwrap();
        assert_eq!(section.client_secret, "0a1b2c3d4e5f0a1b2c3d4e5f");
        assert_eq!(section.endpoint, super::super::DEFAULT_ENDPOINT);
        assert!(!format!("{config:?}").contains("0a1b2c3d4e5f"));
        let devices = &config.directory.extension("101").unwrap().devices;
        assert_eq!(devices[0].platform, crate::push::hms::PLATFORM);
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
}
