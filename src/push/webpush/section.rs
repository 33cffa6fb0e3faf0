//! The `[webpush]` section and `platform = "webpush"` devices (the token is the
//! browser's `PushSubscription` JSON).

use std::path::PathBuf;
use std::sync::Arc;

use pushwake_core::config::{read_secret_file, ConfigError, ConfigFile, Problem, Spanned};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use pushwake_core::rfc8599::PushParams;
use serde::Deserialize;

use super::{
    valid_subject, Subscription, VapidKey, WebPushPushkin, WebPushSettings, DEFAULT_TIMEOUT,
    PLATFORM,
};
use crate::push::provider::{same, DeviceKeys, Provider, ProviderSettings};
use crate::push::Pushkin;

/// Web Push, as the configuration knows it.
pub struct WebPush;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebPush {
    vapid_key_file: Spanned<String>,
    subject: Spanned<String>,
}

impl Provider for WebPush {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn pn_providers(&self) -> &'static [&'static str] {
        &["webpush"]
    }

    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError> {
        let Some(raw) = file.section::<RawWebPush>(PLATFORM.as_str())? else {
            return Ok(None);
        };
        let span = raw.span();
        let settings = settings(raw.into_inner()).map_err(|p| file.problem_in(span, p))?;
        Ok(Some(Arc::new(settings)))
    }
}

fn settings(raw: RawWebPush) -> Result<WebPushSettings, Problem> {
    let subject = raw.subject.get_ref().trim().to_owned();
    if !valid_subject(&subject) {
        return Err((
            raw.subject.span(),
            format!("webpush.subject: `{subject}` is not a mailto: or https: URL (the push services' contact for you)"),
        ));
    }
    let file = PathBuf::from(raw.vapid_key_file.get_ref());
    let span = raw.vapid_key_file.span();
    let fail = |m: String| (span.clone(), format!("webpush.vapid_key_file: {m}"));
    let bytes = read_secret_file(&file, "the VAPID private key").map_err(fail)?;
    let vapid_key =
        VapidKey::from_pem(&bytes).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    Ok(WebPushSettings {
        vapid_key,
        subject,
        timeout: DEFAULT_TIMEOUT,
    })
}

impl ProviderSettings for WebPushSettings {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn device(
        &self,
        token: &Spanned<String>,
        _keys: &DeviceKeys,
    ) -> Result<(String, DeviceParams), Problem> {
        let text = token.get_ref().trim();
        // The browser's PushSubscription JSON; the message names what is wrong without
        // quoting it.
        if let Err(e) = Subscription::parse(text) {
            return Err((
                token.span(),
                format!("a webpush device token must be the browser's PushSubscription JSON: {e}"),
            ));
        }
        Ok((text.to_owned(), DeviceParams::default()))
    }

    /// `pn-provider=webpush`, `pn-prid=<the PushSubscription JSON, %-encoded>`.
    fn learn(&self, pn: &PushParams) -> Result<(String, DeviceParams), String> {
        Subscription::parse(&pn.prid)
            .map_err(|e| format!("pn-prid must be the browser's PushSubscription JSON: {e}"))?;
        Ok((pn.prid.clone(), DeviceParams::default()))
    }

    fn pushkin(&self, _directory: &Directory) -> Result<Arc<dyn Pushkin>, String> {
        Ok(Arc::new(
            WebPushPushkin::new(self.clone()).map_err(|e| e.to_string())?,
        ))
    }

    fn same_as(&self, other: &dyn ProviderSettings) -> bool {
        same(self, other)
    }
}
