//! The `[webhook]` section and `platform = "webhook"` devices.

use std::path::PathBuf;
use std::sync::Arc;

use pushwake_core::config::{
    check_http_url, duration, read_secret_file, ConfigError, ConfigFile, Problem, Spanned,
};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use serde::Deserialize;

use super::{
    valid_device_id, WebhookPushkin, WebhookSecret, WebhookSettings, DEFAULT_TIMEOUT,
    MAX_DEVICE_ID_LEN, PLATFORM,
};
use crate::config::MAX_RING_TIMEOUT;
use crate::push::provider::{same, DeviceKeys, Provider, ProviderSettings};
use crate::push::Pushkin;

/// The signed webhook, as the configuration knows it.
pub struct Webhook;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    secret_file: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

impl Provider for Webhook {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError> {
        let Some(raw) = file.section::<RawWebhook>(PLATFORM.as_str())? else {
            return Ok(None);
        };
        let span = raw.span();
        let settings = settings(raw.into_inner()).map_err(|p| file.problem_in(span, p))?;
        Ok(Some(Arc::new(settings)))
    }
}

fn settings(raw: RawWebhook) -> Result<WebhookSettings, Problem> {
    // The exact URL is the POST target: only white space is trimmed, not a final `/`.
    let url = raw.url.get_ref().trim().to_owned();
    check_http_url(&url, raw.url.span(), "webhook.url")?;
    let timeout = match &raw.timeout {
        Some(value) => duration(value, "webhook.timeout", "\"5s\"", MAX_RING_TIMEOUT)?,
        None => DEFAULT_TIMEOUT,
    };
    let file = PathBuf::from(raw.secret_file.get_ref());
    let span = raw.secret_file.span();
    let fail = |m: String| (span.clone(), format!("webhook.secret_file: {m}"));
    let bytes = read_secret_file(&file, "the webhook secret").map_err(fail)?;
    let secret = WebhookSecret::from_file_contents(&bytes)
        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(WebhookSettings {
        url,
        secret,
        timeout,
    })
}

impl ProviderSettings for WebhookSettings {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn device(
        &self,
        token: &Spanned<String>,
        _keys: &DeviceKeys,
    ) -> Result<(String, DeviceParams), Problem> {
        let text = token.get_ref().trim();
        if !valid_device_id(text) {
            return Err((
                token.span(),
                format!(
                    "a webhook device token is the backend's device id, 1 to {MAX_DEVICE_ID_LEN} printable ASCII characters without spaces (got {} characters)",
                    text.chars().count()
                ),
            ));
        }
        // The operator's id: kept as written.
        Ok((text.to_owned(), DeviceParams::default()))
    }

    fn pushkin(&self, _directory: &Directory) -> Result<Arc<dyn Pushkin>, String> {
        Ok(Arc::new(
            WebhookPushkin::new(self.clone()).map_err(|e| e.to_string())?,
        ))
    }

    fn same_as(&self, other: &dyn ProviderSettings) -> bool {
        same(self, other)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;

    #[test]
    fn a_webhook_section_reads_and_checks_the_secret() {
        let (_dir, hook) = webhook_section(SECRET, 0o600, "");
        let config = parse(Path::new("pw.toml"), &format!("{hook}{MINIMAL}")).unwrap();
        let section = config.settings::<WebhookSettings>().unwrap();
        assert_eq!(section.url, "https://push.example.com/pushwake");
        assert_eq!(section.timeout, Duration::from_secs(5));
        assert_eq!(section.secret.expose(), &SECRET[..32]);
        let shown = format!("{config:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");

        let (_dir, hook) = webhook_section(SECRET, 0o640, "timeout = \"2s\"\n");
        let config = parse(Path::new("pw.toml"), &format!("{hook}{MINIMAL}")).unwrap();
        assert_eq!(
            config.settings::<WebhookSettings>().unwrap().timeout,
            Duration::from_secs(2)
        );

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
        assert_eq!(devices[0].platform, crate::push::webhook::PLATFORM);
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
}
