//! pushwake configurations for tests, and the credentials a configuration shares with
//! the local push servers.
//!
//! [`ConfigBuilder`] writes the TOML the daemon reads — the PBX section (from a
//! [`TestPbx`]), then `[apns]`, `[fcm]`, `[webhook]`, `[webpush]`, `[http]`, `[metrics]`
//! as asked, then each `[[extension]]` with its `[[extension.device]]`s — and the key and secret files
//! beside it, all with mode 0600 as an operator would.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keys::{EcKey, RsaKey};
use crate::pbx::TestPbx;

/// Test APNs credentials: the key pair, and the values the config and server share.
#[derive(Clone)]
pub struct TestApns {
    /// The signing key.
    pub key: EcKey,
    /// Team id.
    pub team_id: String,
    /// Key id.
    pub key_id: String,
    /// VoIP topic.
    pub topic: String,
}

impl TestApns {
    /// Fresh credentials with a new key.
    pub fn generate() -> Self {
        Self {
            key: EcKey::generate(),
            team_id: "TEAM123456".into(),
            key_id: "KEY7654321".into(),
            topic: "com.example.phone.voip".into(),
        }
    }

    /// What a local APNs server should expect of pushes signed with these.
    pub fn expectations(&self) -> crate::apns::ApnsExpectations {
        crate::apns::ApnsExpectations {
            key: self.key.clone(),
            team_id: self.team_id.clone(),
            key_id: self.key_id.clone(),
            topic: self.topic.clone(),
        }
    }
}

/// Test FCM credentials: the service account's key, and the values the service-account
/// file and the local FCM server share.
#[derive(Clone)]
pub struct TestFcm {
    /// The service account's RSA key.
    pub key: RsaKey,
    /// The Firebase project.
    pub project_id: String,
    /// The service account's e-mail address.
    pub client_email: String,
}

impl TestFcm {
    /// Fresh credentials with a new key.
    pub fn generate() -> Self {
        Self {
            key: RsaKey::generate(),
            project_id: "pushwake-test".into(),
            client_email: "pushwake@pushwake-test.iam.gserviceaccount.com".into(),
        }
    }

    /// What a local FCM server should expect of messages sent with these, with `android.ttl`
    /// at most `max_ttl`.
    pub fn expectations(&self, max_ttl: Duration) -> crate::fcm::FcmExpectations {
        crate::fcm::FcmExpectations {
            key: self.key.clone(),
            project_id: self.project_id.clone(),
            client_email: self.client_email.clone(),
            max_ttl,
        }
    }
}

/// One `[[extension.device]]`.
#[derive(Clone, Debug)]
pub struct TestDevice {
    /// `platform`.
    pub platform: &'static str,
    /// `token`: the device token, FCM registration token, webhook device id or Web Push
    /// subscription JSON.
    pub token: String,
    /// Further keys, in order (`environment`, `alert_token`, `topic`, `name`…).
    pub options: Vec<(String, String)>,
}

impl TestDevice {
    fn new(platform: &'static str, token: impl Into<String>) -> Self {
        Self {
            platform,
            token: token.into(),
            options: Vec::new(),
        }
    }

    /// An APNs device with this VoIP device token.
    pub fn apns(token: impl Into<String>) -> Self {
        Self::new("apns", token)
    }

    /// An FCM device with this registration token.
    pub fn fcm(token: impl Into<String>) -> Self {
        Self::new("fcm", token)
    }

    /// A webhook device with this device id.
    pub fn webhook(device_id: impl Into<String>) -> Self {
        Self::new("webhook", device_id)
    }

    /// A Web Push device with this `PushSubscription.toJSON()` (written as a TOML literal
    /// string `'''{"endpoint":…}'''`, as the README shows).
    pub fn webpush(subscription_json: impl Into<String>) -> Self {
        Self::new("webpush", subscription_json)
    }

    /// The same with `key = "value"` too.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One `[[extension]]` of a generated configuration.
#[derive(Clone, Debug)]
pub struct TestExtension {
    /// Number.
    pub number: String,
    /// `ring_timeout` value, e.g. `"10s"`.
    pub ring_timeout: String,
    /// Its devices, in order.
    pub devices: Vec<TestDevice>,
    /// `fallback` and `fallback_after`, if set.
    pub fallback: Option<(String, String)>,
}

impl TestExtension {
    /// Extension `number` ringing for `ring_timeout` (e.g. `"20s"`), without devices yet.
    pub fn new(number: impl Into<String>, ring_timeout: &str) -> Self {
        Self {
            number: number.into(),
            ring_timeout: ring_timeout.to_owned(),
            devices: Vec::new(),
            fallback: None,
        }
    }

    /// The same with `fallback` (a dial string) rung after `after` (e.g. `"2s"`).
    pub fn fallback(mut self, dial: &str, after: &str) -> Self {
        self.fallback = Some((dial.to_owned(), after.to_owned()));
        self
    }

    /// The same with `device` too.
    pub fn device(mut self, device: TestDevice) -> Self {
        self.devices.push(device);
        self
    }
}

struct ApnsSection {
    apns: TestApns,
    endpoint: String,
    options: Vec<(String, String)>,
}

struct FcmSection {
    fcm: TestFcm,
    endpoint: String,
    token_uri: String,
}

/// A pushwake configuration to write into a directory (see the module documentation).
pub struct ConfigBuilder {
    dir: PathBuf,
    pbx: String,
    apns: Option<ApnsSection>,
    fcm: Option<FcmSection>,
    webhook: Option<(String, String)>,
    webpush: Option<(String, String)>,
    http: Option<(String, String)>,
    metrics: Option<String>,
    store: Option<String>,
    api_tokens: Option<String>,
    extensions: Vec<TestExtension>,
    raw: String,
}

impl ConfigBuilder {
    /// A configuration in `dir` for the PBX `pbx`, serving calls as application `app`.
    pub fn new(dir: &Path, pbx: &impl TestPbx, app: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            pbx: pbx.config_section(app),
            apns: None,
            fcm: None,
            webhook: None,
            webpush: None,
            http: None,
            metrics: None,
            store: None,
            api_tokens: None,
            extensions: Vec::new(),
            raw: String::new(),
        }
    }

    /// One more `key = value` line in the PBX's section (e.g. `device_states = true`).
    pub fn pbx_option(mut self, line: &str) -> Self {
        self.pbx.push_str(line);
        self.pbx.push('\n');
        self
    }

    /// `[store] url`: where the daemon keeps the devices that registered themselves.
    /// Without it the configuration gets a SQLite file of its own in `state/` beside it
    /// (a directory only its owner may read, as the store requires).
    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(url.to_owned());
        self
    }

    /// `[http] api_tokens_file`: a file beside the config holding `lines` (tokens and
    /// their scopes), mode 0600. Needs [`ConfigBuilder::http`].
    pub fn api_tokens(mut self, lines: &str) -> Self {
        self.api_tokens = Some(lines.to_owned());
        self
    }

    /// `[apns]` with token authentication by `apns` (the key written beside the config
    /// as `AuthKey_<key id>.p8`) at `endpoint`.
    pub fn apns(mut self, apns: &TestApns, endpoint: &str) -> Self {
        self.apns = Some(ApnsSection {
            apns: apns.clone(),
            endpoint: endpoint.to_owned(),
            options: Vec::new(),
        });
        self
    }

    /// One more `[apns]` key (`alert_topic`, `sandbox_endpoint`…); after [`Self::apns`].
    pub fn apns_option(mut self, key: &str, value: &str) -> Self {
        let section = self.apns.as_mut().expect("apns_option after apns");
        section.options.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `[fcm]` with `fcm`'s service account (written beside the config, its `token_uri`
    /// the one given) and this FCM endpoint.
    pub fn fcm(mut self, fcm: &TestFcm, endpoint: &str, token_uri: &str) -> Self {
        self.fcm = Some(FcmSection {
            fcm: fcm.clone(),
            endpoint: endpoint.to_owned(),
            token_uri: token_uri.to_owned(),
        });
        self
    }

    /// `[webhook]` posting to `url`, signing with `secret` (written beside the config).
    pub fn webhook(mut self, url: &str, secret: &str) -> Self {
        self.webhook = Some((url.to_owned(), secret.to_owned()));
        self
    }

    /// `[webpush]` with this VAPID private key (PKCS#8 PEM, written beside the config) and
    /// `subject`.
    pub fn webpush(mut self, vapid_pem: &str, subject: &str) -> Self {
        self.webpush = Some((vapid_pem.to_owned(), subject.to_owned()));
        self
    }

    /// `[metrics]`, the Prometheus endpoint, on `listen`.
    pub fn metrics(mut self, listen: &str) -> Self {
        self.metrics = Some(listen.to_owned());
        self
    }

    /// `[http]`, the call status endpoint: `listen` and `public_url`.
    pub fn http(mut self, listen: &str, public_url: &str) -> Self {
        self.http = Some((listen.to_owned(), public_url.to_owned()));
        self
    }

    /// `text` appended to the file as it is (whole sections, e.g. an `[hms]` that has no
    /// builder of its own).
    pub fn raw(mut self, text: &str) -> Self {
        self.raw.push('\n');
        self.raw.push_str(text);
        self
    }

    /// One more `[[extension]]`.
    pub fn extension(mut self, extension: TestExtension) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Writes the configuration as `pushwake.toml` in the directory, with its key and
    /// secret files; returns its path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let dir = &self.dir;
        let mut text = self.pbx.clone();
        if let Some(ApnsSection {
            apns,
            endpoint,
            options,
        }) = &self.apns
        {
            let key = dir.join(format!("AuthKey_{}.p8", apns.key_id));
            apns.key.write_private(&key)?;
            text.push_str("\n[apns]\n");
            key_value(&mut text, "team_id", &apns.team_id);
            key_value(&mut text, "key_id", &apns.key_id);
            key_value(&mut text, "key_file", &key.display().to_string());
            key_value(&mut text, "topic", &apns.topic);
            key_value(&mut text, "endpoint", endpoint);
            for (key, value) in options {
                key_value(&mut text, key, value);
            }
        }
        if let Some(FcmSection {
            fcm,
            endpoint,
            token_uri,
        }) = &self.fcm
        {
            let account = dir.join("fcm-service-account.json");
            fcm.key.write_service_account(
                &account,
                &fcm.project_id,
                &fcm.client_email,
                token_uri,
            )?;
            text.push_str("\n[fcm]\n");
            key_value(
                &mut text,
                "service_account_file",
                &account.display().to_string(),
            );
            key_value(&mut text, "endpoint", endpoint);
        }
        if let Some((url, secret)) = &self.webhook {
            let file = write_secret(&dir.join("webhook.secret"), &format!("{secret}\n"))?;
            text.push_str("\n[webhook]\n");
            key_value(&mut text, "url", url);
            key_value(&mut text, "secret_file", &file);
        }
        if let Some((vapid_pem, subject)) = &self.webpush {
            let file = write_secret(&dir.join("vapid.pem"), vapid_pem)?;
            text.push_str("\n[webpush]\n");
            key_value(&mut text, "vapid_key_file", &file);
            key_value(&mut text, "subject", subject);
        }
        if let Some((listen, public_url)) = &self.http {
            text.push_str("\n[http]\n");
            key_value(&mut text, "listen", listen);
            key_value(&mut text, "public_url", public_url);
            if let Some(lines) = &self.api_tokens {
                let file = write_secret(&dir.join("api-tokens"), lines)?;
                key_value(&mut text, "api_tokens_file", &file);
            }
        }
        if let Some(listen) = &self.metrics {
            text.push_str("\n[metrics]\n");
            key_value(&mut text, "listen", listen);
        }
        let store = match &self.store {
            Some(url) => url.clone(),
            None => {
                let state = dir.join("state");
                std::fs::create_dir_all(&state)?;
                std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
                format!("sqlite:{}", state.join("devices.db").display())
            }
        };
        text.push_str("\n[store]\n");
        key_value(&mut text, "url", &store);
        for extension in &self.extensions {
            text.push_str("\n[[extension]]\n");
            key_value(&mut text, "number", &extension.number);
            key_value(&mut text, "ring_timeout", &extension.ring_timeout);
            if let Some((dial, after)) = &extension.fallback {
                key_value(&mut text, "fallback", dial);
                key_value(&mut text, "fallback_after", after);
            }
            for device in &extension.devices {
                text.push_str("\n[[extension.device]]\n");
                key_value(&mut text, "platform", device.platform);
                key_value(&mut text, "token", &device.token);
                for (key, value) in &device.options {
                    key_value(&mut text, key, value);
                }
            }
        }
        text.push_str(&self.raw);
        let path = dir.join("pushwake.toml");
        write_secret(&path, &text)?;
        Ok(path)
    }
}

/// `key = "value"` and a newline; a value with `"` or `\` (a Web Push subscription's
/// JSON) as a literal string, `'''value'''`.
fn key_value(text: &mut String, key: &str, value: &str) {
    if value.contains(['"', '\\']) {
        let _ = writeln!(text, "{key} = '''{value}'''");
    } else {
        let _ = writeln!(text, "{key} = \"{value}\"");
    }
}

/// Writes `contents` to `path` with mode 0600; returns the path as text.
fn write_secret(path: &Path, contents: &str) -> std::io::Result<String> {
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path.display().to_string())
}

/// Tokens of [`standalone`]'s `api_tokens_file`: one for every extension.
pub const API_ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";
/// One for the `2*` tenant.
pub const API_TENANT: &str = "tenant-0123456789abcdef0123456789abcdef";
/// One for extensions 101 and 102.
pub const API_DESK: &str = "desk-0123456789abcdef0123456789abcdef01";

/// A configuration in `dir` for a daemon that needs no PBX (its `[asterisk]` is a port
/// nothing answers, which pushwake keeps retrying): `[apns]` (team TEAM123456, topic
/// com.example.phone.voip, alert topic com.example.phone), `[fcm]` (project
/// pushwake-test), `[webhook]`, `[webpush]`, `[http]` on `listen` with the
/// [`API_ADMIN`], [`API_TENANT`] and [`API_DESK`] tokens, and `[store]` at `store_url`
/// (a SQLite file in `dir/state`, mode 0700, if `None`). Returns the file's path.
pub fn standalone(dir: &Path, listen: &str, store_url: Option<&str>) -> std::io::Result<PathBuf> {
    let apns_key = write_secret(&dir.join("apns.p8"), &EcKey::generate().private_pem)?;
    let account = dir.join("fcm.json");
    RsaKey::shared().write_service_account(
        &account,
        "pushwake-test",
        "pw@pushwake-test.iam.gserviceaccount.com",
        "https://oauth2.googleapis.com/token",
    )?;
    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o600))?;
    let webhook = write_secret(&dir.join("webhook.secret"), &"ab".repeat(16))?;
    let vapid = write_secret(&dir.join("vapid.pem"), &EcKey::generate().private_pem)?;
    let tokens = write_secret(
        &dir.join("api-tokens"),
        &format!("{API_ADMIN}\n{API_TENANT} 2*\n{API_DESK} 101 102 # the front desk\n"),
    )?;
    let store = match store_url {
        Some(url) => url.to_owned(),
        None => {
            let state = dir.join("state");
            std::fs::create_dir_all(&state)?;
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
            format!("sqlite:{}", state.join("devices.db").display())
        }
    };
    let text = format!(
        "[asterisk]\nurl = \"http://127.0.0.1:9\"\nusername = \"pushwake\"\npassword = \"pw\"\n\n\
         [apns]\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nkey_file = \"{apns_key}\"\n\
         topic = \"com.example.phone.voip\"\nalert_topic = \"com.example.phone\"\n\n\
         [fcm]\nservice_account_file = \"{}\"\n\n\
         [webhook]\nurl = \"https://push.example.com/events\"\nsecret_file = \"{webhook}\"\n\n\
         [webpush]\nvapid_key_file = \"{vapid}\"\nsubject = \"mailto:ops@example.com\"\n\n\
         [http]\nlisten = \"{listen}\"\npublic_url = \"https://pbx.example.com\"\napi_tokens_file = \"{tokens}\"\n\n\
         [store]\nurl = \"{store}\"\n",
        account.display()
    );
    let path = dir.join("pushwake.toml");
    write_secret(&path, &text)?;
    Ok(path)
}
