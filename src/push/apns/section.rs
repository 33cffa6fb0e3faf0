//! The `[apns]` section and `platform = "apns"` devices, with their own `topic`,
//! `environment` and `alert_token`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pushwake_core::config::{
    base_url, check_private, non_empty, read_secret_file, ConfigError, ConfigFile, Problem, Spanned,
};
use pushwake_core::directory::{DeviceParams, Directory, Platform};
use pushwake_core::rfc8599::PushParams;
use serde::Deserialize;

use super::{
    check_key, uses_sandbox, ApnsAuth, ApnsPushkin, ApnsSettings, ClientCertificate, ALERT_TOKEN,
    ENVIRONMENT, PLATFORM, PRODUCTION_ENDPOINT, SANDBOX, SANDBOX_ENDPOINT, TOPIC,
};
use crate::push::provider::{same, DeviceKeys, Provider, ProviderSettings};
use crate::push::Pushkin;

/// How long before an APNs certificate expires pushwake starts warning about it.
const CERTIFICATE_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// APNs, as the configuration knows it.
pub struct Apns;

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

impl Provider for Apns {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn article(&self) -> &'static str {
        "an"
    }

    fn device_keys(&self) -> &'static [&'static str] {
        &[TOPIC, ENVIRONMENT, ALERT_TOKEN]
    }

    fn pn_providers(&self) -> &'static [&'static str] {
        // RFC 8599's APNs provider, and Linphone's name for the sandbox host.
        &["apns", "apns.dev"]
    }

    fn read_section(
        &self,
        file: &ConfigFile<'_>,
    ) -> Result<Option<Arc<dyn ProviderSettings>>, ConfigError> {
        let Some(raw) = file.section::<RawApns>(PLATFORM.as_str())? else {
            return Ok(None);
        };
        let span = raw.span();
        let settings = settings(raw.into_inner()).map_err(|p| file.problem_in(span, p))?;
        Ok(Some(Arc::new(settings)))
    }
}

fn settings(raw: RawApns) -> Result<ApnsSettings, Problem> {
    let topic = non_empty(&raw.topic, "apns.topic")?;
    let alert_topic = raw
        .alert_topic
        .as_ref()
        .map(|v| non_empty(v, "apns.alert_topic"))
        .transpose()?;
    if alert_topic.as_deref() == Some(topic.as_str()) {
        let span = raw
            .alert_topic
            .as_ref()
            .map(Spanned::span)
            .unwrap_or_default();
        return Err((span, format!("apns.alert_topic: `{topic}` is the VoIP topic; the alert goes to the app's bundle id (the topic without `.voip`)")));
    }
    let endpoint = base_url(&raw.endpoint, "apns.endpoint", PRODUCTION_ENDPOINT)?;
    let sandbox_endpoint = base_url(
        &raw.sandbox_endpoint,
        "apns.sandbox_endpoint",
        SANDBOX_ENDPOINT,
    )?;
    let auth = match (
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
            token_auth(
                non_empty(team_id, "apns.team_id")?,
                non_empty(key_id, "apns.key_id")?,
                key_file,
            )?
        }
        ((None, None, None), Some(certificate_file)) => {
            certificate_auth(certificate_file, raw.certificate_password_file.as_ref())?
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
    Ok(ApnsSettings {
        auth,
        topic,
        alert_topic,
        endpoint,
        sandbox_endpoint,
        warm_sandbox: false,
    })
}

fn token_auth(
    team_id: String,
    key_id: String,
    key_file: &Spanned<String>,
) -> Result<ApnsAuth, Problem> {
    let span = key_file.span();
    let key_file = PathBuf::from(key_file.get_ref());
    let key_pem = read_secret_file(&key_file, "the APNs signing key")
        .map_err(|m| (span.clone(), format!("apns.key_file: {m}")))?;
    check_key(&key_pem).map_err(|e| {
        (
            span.clone(),
            format!("apns.key_file: {}: {e}", key_file.display()),
        )
    })?;
    Ok(ApnsAuth::Token {
        team_id,
        key_id,
        key_pem,
    })
}

fn certificate_auth(
    file: &Spanned<String>,
    password_file: Option<&Spanned<String>>,
) -> Result<ApnsAuth, Problem> {
    let span = file.span();
    let certificate_file = PathBuf::from(file.get_ref());
    let bytes = read_secret_file(
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
    let certificate = ClientCertificate::from_file_contents(&bytes, &password).map_err(|e| {
        (
            span.clone(),
            format!("apns.certificate_file: {}: {e}", certificate_file.display()),
        )
    })?;
    if certificate.not_after() <= SystemTime::now() {
        return Err((
            span,
            format!(
                "apns.certificate_file: {}: the certificate expired on {}; renew it in Apple's developer portal",
                certificate_file.display(),
                humantime::format_rfc3339_seconds(certificate.not_after())
            ),
        ));
    }
    Ok(ApnsAuth::Certificate(certificate))
}

/// An APNs device token as sent (lower-case hex), or `None` if it is not hex.
fn hex_token(token: &str) -> Option<String> {
    let hex =
        !token.is_empty() && token.len() % 2 == 0 && token.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| token.to_ascii_lowercase())
}

impl ProviderSettings for ApnsSettings {
    fn platform(&self) -> Platform {
        PLATFORM
    }

    fn device(
        &self,
        token: &Spanned<String>,
        keys: &DeviceKeys,
    ) -> Result<(String, DeviceParams), Problem> {
        let text = token.get_ref().trim();
        let token_hex = hex_token(text).ok_or_else(|| {
            (
                token.span(),
                format!(
                    "device token must be hexadecimal (got {} characters)",
                    text.len()
                ),
            )
        })?;
        let mut params = DeviceParams::default();
        if let Some(v) = keys.get(TOPIC) {
            params.set(TOPIC, non_empty(v, "device.topic")?);
        }
        if let Some(v) = keys.get(ENVIRONMENT) {
            match v.get_ref().trim() {
                // The default: nothing to keep.
                "production" => {}
                "sandbox" | "development" => params.set(ENVIRONMENT, SANDBOX),
                other => {
                    return Err((
                        v.span(),
                        format!("device.environment: `{other}` is not production, sandbox or development (the app's aps-environment)"),
                    ))
                }
            }
        }
        if let Some(v) = keys.get(ALERT_TOKEN) {
            if self.alert_topic.is_none() {
                return Err((
                    v.span(),
                    "device.alert_token needs apns.alert_topic (the app's bundle id) for the missed-call alert".into(),
                ));
            }
            let text = v.get_ref().trim();
            let alert = hex_token(text).ok_or_else(|| {
                (
                    v.span(),
                    format!(
                        "device.alert_token must be hexadecimal (got {} characters)",
                        text.len()
                    ),
                )
            })?;
            params.set_secret(ALERT_TOKEN, alert);
        }
        Ok((token_hex, params))
    }

    /// `pn-provider=apns` (or `apns.dev`: the sandbox host), `pn-param=<team id>.<topic>`
    /// with a VoIP topic (`<bundle id>.voip`), `pn-prid=<VoIP token>`; or Linphone's
    /// `pn-param=<team id>.<bundle id>.remote&voip` with `pn-prid=<remote token>:remote&
    /// <VoIP token>:voip`, whose remote token is kept for the missed-call alert when
    /// `apns.alert_topic` is that bundle. The team must be `apns.team_id`; with a
    /// certificate (one app), the topic must be `apns.topic`. A topic of another app of
    /// the team becomes the device's own topic.
    fn learn(&self, pn: &PushParams) -> Result<(String, DeviceParams), String> {
        let param = pn.param.as_deref().ok_or(
            "an APNs registration needs pn-param=<team id>.<topic> to say which app its token belongs to",
        )?;
        let (team, app) = param
            .split_once('.')
            .ok_or_else(|| format!("pn-param `{param}` is not <team id>.<topic>"))?;
        let (bundle, services) = match app.rsplit_once('.') {
            Some((bundle, services)) if services.contains('&') || services == "remote" => {
                (bundle, Some(services))
            }
            _ => (app.strip_suffix(".voip").unwrap_or(app), None),
        };
        let (voip_token, alert_token, topic) = match services {
            // Linphone: one token per service.
            Some(services) => {
                if !services.split('&').any(|s| s == "voip") {
                    return Err(format!("pn-param `{param}` asks for no VoIP push (services {services})"));
                }
                let voip = pn.linphone_token("voip").ok_or(
                    "pn-prid has no <token>:voip although pn-param asks for VoIP pushes",
                )?;
                (voip, pn.linphone_token("remote"), format!("{bundle}.voip"))
            }
            None if app.ends_with(".voip") => (pn.prid.as_str(), None, app.to_owned()),
            None => {
                return Err(format!(
                    "pn-param `{param}` names no VoIP topic (<bundle id>.voip): pushwake sends VoIP pushes only"
                ))
            }
        };
        match &self.auth {
            ApnsAuth::Token { team_id, .. } if team != team_id => {
                return Err(format!(
                "pn-param names team {team}, not apns.team_id {team_id}: another developer's app"
            ))
            }
            ApnsAuth::Certificate(_) if topic != self.topic => {
                return Err(format!(
                    "pn-param names topic {topic}; the APNs certificate serves {} only",
                    self.topic
                ))
            }
            _ => {}
        }
        let token = hex_token(voip_token).ok_or_else(|| {
            format!(
                "the VoIP token is not hexadecimal ({} characters)",
                voip_token.len()
            )
        })?;
        let mut params = DeviceParams::default();
        if topic != self.topic {
            params.set(TOPIC, topic);
        }
        if pn.provider == "apns.dev" {
            params.set(ENVIRONMENT, SANDBOX);
        }
        if let (Some(alert), Some(alert_topic)) = (alert_token, &self.alert_topic) {
            if alert_topic == bundle {
                if let Some(alert) = hex_token(alert) {
                    params.set_secret(ALERT_TOKEN, alert);
                }
            }
        }
        Ok((token, params))
    }

    fn pushkin(&self, directory: &Directory) -> Result<Arc<dyn Pushkin>, String> {
        if let ApnsAuth::Certificate(certificate) = &self.auth {
            let expires = humantime::format_rfc3339_seconds(certificate.not_after());
            let left = certificate
                .not_after()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if left < CERTIFICATE_WARNING {
                tracing::warn!(subject = certificate.subject(), %expires, "the APNs certificate expires within 30 days: renew it, or every push will fail");
            } else {
                tracing::info!(subject = certificate.subject(), %expires, "APNs certificate authentication");
            }
        }
        let settings = ApnsSettings {
            warm_sandbox: directory.devices().any(uses_sandbox),
            ..self.clone()
        };
        Ok(Arc::new(
            ApnsPushkin::new(settings).map_err(|e| e.to_string())?,
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
        let apns = config.settings::<ApnsSettings>().unwrap();
        assert_eq!(apns.auth.kind(), "certificate");
        assert_eq!(apns.sandbox_endpoint, super::super::SANDBOX_ENDPOINT);
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
        assert_eq!(
            config.settings::<ApnsSettings>().unwrap().auth.kind(),
            "certificate"
        );
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
        assert_eq!(devices[0].params.get(TOPIC), Some("com.example.pro.voip"));
        assert_eq!(devices[0].params.get(ENVIRONMENT), Some(SANDBOX));
        assert_eq!(devices[0].params.get(ALERT_TOKEN), None);
        assert_eq!(
            devices[1].params.get(ALERT_TOKEN),
            Some(alert.to_ascii_lowercase().as_str())
        );
        assert_eq!(devices[1].params.get(ENVIRONMENT), None, "production");
        assert!(devices[2].params.is_empty(), "all defaults");
        assert!(config.directory.devices().any(uses_sandbox));
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

    fn learned(extra: &str, contact: &str) -> Result<(String, DeviceParams), String> {
        let (_dir, section) = apns_token_section(extra);
        let config = parse(Path::new("pw.toml"), &format!("{section}{MINIMAL}")).unwrap();
        let pn = PushParams::from_contact(contact).unwrap().unwrap();
        config.settings::<ApnsSettings>().unwrap().learn(&pn)
    }

    #[test]
    fn a_registration_teaches_a_device_of_the_configured_team_only() {
        let voip = "AB".repeat(32);
        // The generic form, for the configured topic: no settings of its own.
        let (token, params) = learned(
            "",
            &format!("sip:101@h:5070;pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={voip}"),
        )
        .unwrap();
        assert_eq!(token, voip.to_ascii_lowercase());
        assert!(params.is_empty(), "{params:?}");
        // Another app of the same team, built for development.
        let (_, params) = learned(
            "",
            &format!("sip:101@h;pn-provider=apns.dev;pn-param=TEAM123456.com.example.pro.voip;pn-prid={voip}"),
        )
        .unwrap();
        assert_eq!(params.get(TOPIC), Some("com.example.pro.voip"));
        assert_eq!(params.get(ENVIRONMENT), Some(SANDBOX));
        // Someone else's app, a non-VoIP topic, no pn-param, a token that is not hex.
        for (contact, needle) in [
            (format!("sip:h;pn-provider=apns;pn-param=OTHERTEAM1.com.example.phone.voip;pn-prid={voip}"), "another developer's app"),
            (format!("sip:h;pn-provider=apns;pn-param=TEAM123456.com.example.phone;pn-prid={voip}"), "names no VoIP topic"),
            (format!("sip:h;pn-provider=apns;pn-prid={voip}"), "needs pn-param"),
            ("sip:h;pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid=zz-secret".to_owned(), "not hexadecimal"),
        ] {
            let e = learned("", &contact).unwrap_err();
            assert!(e.contains(needle), "{contact}: {e}");
            assert!(!e.contains("zz-secret") && !e.contains(&voip), "{e}");
        }
    }

    #[test]
    fn linphone_s_registration_gives_the_voip_token_and_keeps_the_remote_one_for_the_alert() {
        let (remote, voip) = ("AA".repeat(32), "BB".repeat(32));
        let contact = format!(
            "sip:101@127.0.0.1:5161;transport=udp;pn-provider=apns.dev;pn-prid={remote}:remote&{voip}:voip;pn-param=TEAM123456.com.example.phone.remote&voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-snd=ring.caf"
        );
        let (token, params) = learned("alert_topic = \"com.example.phone\"\n", &contact).unwrap();
        assert_eq!(token, voip.to_ascii_lowercase());
        assert_eq!(
            params.get(TOPIC),
            None,
            "com.example.phone.voip is apns.topic"
        );
        assert_eq!(params.get(ENVIRONMENT), Some(SANDBOX));
        assert_eq!(
            params.get(ALERT_TOKEN),
            Some(remote.to_ascii_lowercase().as_str())
        );
        assert!(!format!("{params:?}").contains(&remote.to_ascii_lowercase()));
        // Without apns.alert_topic the remote token is of no use.
        let (_, params) = learned("", &contact).unwrap();
        assert_eq!(params.get(ALERT_TOKEN), None);
        // Remote pushes only: nothing to wake a call with.
        let e = learned("", &contact.replace(".remote&voip", ".remote")).unwrap_err();
        assert!(e.contains("no VoIP push"), "{e}");
    }
}
