//! The `[fcm]` section and `platform = "fcm"` devices.

use std::path::PathBuf;
use std::sync::Arc;

use pushwake_core::config::{
    base_url, read_secret_file, ConfigError, ConfigFile, Problem, Spanned,
};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use pushwake_core::rfc8599::PushParams;
use serde::Deserialize;

use super::{FcmPushkin, FcmSettings, ServiceAccount, DEFAULT_ENDPOINT, PLATFORM};
use crate::push::provider::{same, DeviceKeys, Provider, ProviderSettings};
use crate::push::Pushkin;

/// The longest FCM registration token accepted (today's are about 160 characters).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Firebase Cloud Messaging, as the configuration knows it.
pub struct Fcm;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFcm {
    service_account_file: Spanned<String>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
}

impl Provider for Fcm {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn article(&self) -> &'static str {
        "an"
    }

    fn pn_providers(&self) -> &'static [&'static str] {
        &["fcm"]
    }

    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError> {
        let Some(raw) = file.section::<RawFcm>(PLATFORM.as_str())? else {
            return Ok(None);
        };
        let span = raw.span();
        let settings = settings(raw.into_inner()).map_err(|p| file.problem_in(span, p))?;
        Ok(Some(Arc::new(settings)))
    }
}

fn settings(raw: RawFcm) -> Result<FcmSettings, Problem> {
    let endpoint = base_url(&raw.endpoint, "fcm.endpoint", DEFAULT_ENDPOINT)?;
    let file = PathBuf::from(raw.service_account_file.get_ref());
    let span = raw.service_account_file.span();
    let fail = |m: String| (span.clone(), format!("fcm.service_account_file: {m}"));
    let bytes = read_secret_file(&file, "the FCM service-account key").map_err(fail)?;
    let account =
        ServiceAccount::from_json(&bytes).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(FcmSettings { account, endpoint })
}

impl ProviderSettings for FcmSettings {
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
        // FCM tokens are case-sensitive: kept as written.
        Ok((text.to_owned(), DeviceParams::default()))
    }

    /// `pn-provider=fcm`, `pn-prid=<registration token>`, `pn-param=<project id>`: a
    /// project other than the service account's is refused (FCM would refuse it too,
    /// `SENDER_ID_MISMATCH`).
    fn learn(&self, pn: &PushParams) -> Result<(String, DeviceParams), String> {
        if let Some(project) = &pn.param {
            if *project != self.account.project_id {
                return Err(format!(
                    "pn-param names Firebase project {project}, not the service account's {}",
                    self.account.project_id
                ));
            }
        }
        check_token(&pn.prid)?;
        Ok((pn.prid.clone(), DeviceParams::default()))
    }

    fn pushkin(&self, _directory: &Directory) -> Result<Arc<dyn Pushkin>, String> {
        Ok(Arc::new(
            FcmPushkin::new(self.clone()).map_err(|e| e.to_string())?,
        ))
    }

    fn same_as(&self, other: &dyn ProviderSettings) -> bool {
        same(self, other)
    }
}

/// An FCM registration token: 1 to [`MAX_TOKEN_LEN`] letters, digits, `_`, `-` or `:`.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
    {
        return Err(format!(
            "an fcm device token is 1 to {MAX_TOKEN_LEN} letters, digits, `_`, `-` or `:` (got {} characters)",
            token.chars().count()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;

    #[test]
    fn an_fcm_section_reads_the_service_account() {
        let (_dir, fcm) = fcm_section("");
        let config = parse(Path::new("pw.toml"), &format!("{fcm}{MINIMAL}")).unwrap();
        let section = config.settings::<FcmSettings>().unwrap();
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
        assert_eq!(
            config.settings::<FcmSettings>().unwrap().endpoint,
            "http://127.0.0.1:4000"
        );
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
        assert_eq!(devices[0].platform, crate::push::fcm::PLATFORM);
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
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
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

    #[test]
    fn a_registration_teaches_a_device_of_the_configured_project_only() {
        let (_dir, fcm) = fcm_section("");
        let config = parse(Path::new("pw.toml"), &format!("{fcm}{MINIMAL}")).unwrap();
        let settings = config.settings::<FcmSettings>().unwrap();
        let learn =
            |contact: &str| settings.learn(&PushParams::from_contact(contact).unwrap().unwrap());
        let token = "dXbQ2k1rT0e:APA91bH-x_YZ09";
        assert_eq!(
            learn(&format!(
                "sip:h;pn-provider=fcm;pn-param=pushwake-test;pn-prid={token}"
            ))
            .unwrap()
            .0,
            token
        );
        assert!(learn(&format!("sip:h;pn-provider=fcm;pn-prid={token}")).is_ok());
        let e = learn(&format!(
            "sip:h;pn-provider=fcm;pn-param=someone-else;pn-prid={token}"
        ))
        .unwrap_err();
        assert!(e.contains("someone-else") && !e.contains(token), "{e}");
        let e = learn("sip:h;pn-provider=fcm;pn-prid=semi%3Bcolon").unwrap_err();
        assert!(e.contains("an fcm device token is"), "{e}");
    }
}
