//! The real `pushwake` binary as a child process, with its log captured.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::asterisk::TestAsterisk;
use crate::keys::{EcKey, RsaKey};

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

/// One extension in a generated configuration.
#[derive(Clone, Debug)]
pub struct TestExtension {
    /// Number.
    pub number: String,
    /// `ring_timeout` value, e.g. `"10s"`.
    pub ring_timeout: String,
    /// APNs device tokens.
    pub tokens: Vec<String>,
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

/// The `[fcm]` part of a generated configuration.
#[derive(Clone)]
pub struct FcmPart<'a> {
    /// The credentials.
    pub fcm: &'a TestFcm,
    /// The FCM base URL (`fcm.endpoint`).
    pub endpoint: &'a str,
    /// The service account's `token_uri`.
    pub token_uri: &'a str,
    /// FCM devices: (extension number, FCM registration token). The extension must be one
    /// of the configuration's extensions.
    pub devices: &'a [(String, String)],
}

/// The `[webhook]` part of a generated configuration.
#[derive(Clone)]
pub struct WebhookPart<'a> {
    /// `webhook.url`.
    pub url: &'a str,
    /// The shared secret, written to a file (mode 0600) beside the config.
    pub secret: &'a str,
    /// Webhook devices: (extension number, device id). The extension must be one of the
    /// configuration's extensions.
    pub devices: &'a [(String, String)],
}

/// Writes a pushwake configuration for `app` on the test Asterisk into `dir`, with the
/// APNs key beside it; returns the config path.
pub fn write_config(
    dir: &Path,
    pbx: &TestAsterisk,
    app: &str,
    apns: &TestApns,
    apns_endpoint: &str,
    extensions: &[TestExtension],
) -> std::io::Result<PathBuf> {
    write_config_inner(dir, pbx, app, apns, apns_endpoint, extensions, None, None)
}

/// Like [`write_config`], with an `[fcm]` section too: the service-account file (mode
/// 0600) beside the config, and the FCM devices of `part` added to their extensions.
pub fn write_config_with_fcm(
    dir: &Path,
    pbx: &TestAsterisk,
    app: &str,
    apns: &TestApns,
    apns_endpoint: &str,
    extensions: &[TestExtension],
    fcm: &FcmPart<'_>,
) -> std::io::Result<PathBuf> {
    write_config_inner(
        dir,
        pbx,
        app,
        apns,
        apns_endpoint,
        extensions,
        Some(fcm),
        None,
    )
}

/// Like [`write_config`], with a `[webhook]` section too: the secret file (mode 0600)
/// beside the config, and the webhook devices of `part` added to their extensions.
pub fn write_config_with_webhook(
    dir: &Path,
    pbx: &TestAsterisk,
    app: &str,
    apns: &TestApns,
    apns_endpoint: &str,
    extensions: &[TestExtension],
    webhook: &WebhookPart<'_>,
) -> std::io::Result<PathBuf> {
    write_config_inner(
        dir,
        pbx,
        app,
        apns,
        apns_endpoint,
        extensions,
        None,
        Some(webhook),
    )
}

/// The `[webpush]` part of a generated configuration.
#[derive(Clone)]
pub struct WebPushPart<'a> {
    /// The VAPID private key (PKCS#8 PEM), written to a file (mode 0600) beside the config.
    pub vapid_pem: &'a str,
    /// `webpush.subject`.
    pub subject: &'a str,
    /// Web Push devices: (extension number, `PushSubscription.toJSON()`). The extension
    /// must be one of the configuration's extensions.
    pub devices: &'a [(String, String)],
}

/// Like [`write_config`], with a `[webpush]` section too: the VAPID key file (mode 0600)
/// beside the config, and the Web Push devices of `part` added to their extensions (each
/// token a TOML literal string `'''{"endpoint":…}'''`, as the README shows).
pub fn write_config_with_webpush(
    dir: &Path,
    pbx: &TestAsterisk,
    app: &str,
    apns: &TestApns,
    apns_endpoint: &str,
    extensions: &[TestExtension],
    webpush: &WebPushPart<'_>,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = write_config(dir, pbx, app, apns, apns_endpoint, extensions)?;
    let mut text = std::fs::read_to_string(&path)?;
    let key = dir.join("vapid.pem");
    std::fs::write(&key, webpush.vapid_pem)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let section = format!(
        "\n[webpush]\nvapid_key_file = \"{}\"\nsubject = \"{}\"\n",
        key.display(),
        webpush.subject
    );
    let first_extension = text.find("\n[[extension]]").unwrap_or(text.len());
    text.insert_str(first_extension, &section);
    for (number, subscription) in webpush.devices {
        let header = format!("\n[[extension]]\nnumber = \"{number}\"\n");
        let Some(start) = text.find(&header) else {
            return Err(std::io::Error::other(format!(
                "extension {number} is not in the configuration"
            )));
        };
        let after = start + header.len();
        let end = text[after..]
            .find("\n[[extension]]")
            .map_or(text.len(), |at| after + at);
        let device = format!(
            "\n[[extension.device]]\nplatform = \"webpush\"\ntoken = '''{subscription}'''\n"
        );
        text.insert_str(end, &device);
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Adds an `[http]` section (the call status endpoint: `listen`, `public_url`) to a
/// configuration written by one of the writers above.
pub fn add_http(config: &Path, listen: &str, public_url: &str) -> std::io::Result<()> {
    let mut text = std::fs::read_to_string(config)?;
    let section = format!("\n[http]\nlisten = \"{listen}\"\npublic_url = \"{public_url}\"\n");
    let first_extension = text.find("\n[[extension]]").unwrap_or(text.len());
    text.insert_str(first_extension, &section);
    std::fs::write(config, text)
}

#[allow(clippy::too_many_arguments)] // private; the public writers take one part each
fn write_config_inner(
    dir: &Path,
    pbx: &TestAsterisk,
    app: &str,
    apns: &TestApns,
    apns_endpoint: &str,
    extensions: &[TestExtension],
    fcm: Option<&FcmPart<'_>>,
    webhook: Option<&WebhookPart<'_>>,
) -> std::io::Result<PathBuf> {
    use std::fmt::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let key_path = dir.join(format!("AuthKey_{}.p8", apns.key_id));
    apns.key.write_private(&key_path)?;
    let mut text = format!(
        "[asterisk]\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\napp = \"{app}\"\n\n[apns]\nteam_id = \"{}\"\nkey_id = \"{}\"\nkey_file = \"{}\"\ntopic = \"{}\"\nendpoint = \"{apns_endpoint}\"\n",
        pbx.ari_url, pbx.ari_user, pbx.ari_password, apns.team_id, apns.key_id, key_path.display(), apns.topic
    );
    if let Some(part) = fcm {
        let account = dir.join("fcm-service-account.json");
        part.fcm.key.write_service_account(
            &account,
            &part.fcm.project_id,
            &part.fcm.client_email,
            part.token_uri,
        )?;
        let _ = write!(
            text,
            "\n[fcm]\nservice_account_file = \"{}\"\nendpoint = \"{}\"\n",
            account.display(),
            part.endpoint
        );
    }
    if let Some(part) = webhook {
        let secret = dir.join("webhook.secret");
        std::fs::write(&secret, format!("{}\n", part.secret))?;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
        let _ = write!(
            text,
            "\n[webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\n",
            part.url,
            secret.display()
        );
    }
    for ext in extensions {
        let _ = write!(
            text,
            "\n[[extension]]\nnumber = \"{}\"\nring_timeout = \"{}\"\n",
            ext.number, ext.ring_timeout
        );
        for token in &ext.tokens {
            let _ = write!(
                text,
                "\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"{token}\"\n"
            );
        }
        let fcm_devices = fcm.map(|part| part.devices).unwrap_or_default();
        for (_, token) in fcm_devices
            .iter()
            .filter(|(number, _)| *number == ext.number)
        {
            let _ = write!(
                text,
                "\n[[extension.device]]\nplatform = \"fcm\"\ntoken = \"{token}\"\n"
            );
        }
        let webhook_devices = webhook.map(|part| part.devices).unwrap_or_default();
        for (_, token) in webhook_devices
            .iter()
            .filter(|(number, _)| *number == ext.number)
        {
            let _ = write!(
                text,
                "\n[[extension.device]]\nplatform = \"webhook\"\ntoken = \"{token}\"\n"
            );
        }
    }
    let path = dir.join("pushwake.toml");
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    grew: Arc<Notify>,
}

impl Daemon {
    /// Starts `binary run --config <config>` and waits until it is connected to ARI.
    pub async fn start(binary: &Path, config: &Path) -> Result<Self, String> {
        let mut child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                "PUSHWAKE_LOG",
                std::env::var("PUSHWAKE_TEST_LOG").unwrap_or_else(|_| "info,pushwake=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let grew = Arc::new(Notify::new());
        let (sink, notify) = (log.clone(), grew.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("PUSHWAKE_TEST_ECHO").is_some() {
                    eprintln!("[pushwake] {line}");
                }
                sink.lock().unwrap().push(line);
                notify.notify_waiters();
            }
            notify.notify_waiters();
        });
        let daemon = Self { child, log, grew };
        daemon
            .wait_log("ARI events connected", Duration::from_secs(30))
            .await?;
        Ok(daemon)
    }

    /// Waits for a log line containing `needle`; returns it.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_log_after(0, needle, timeout).await
    }

    /// Like [`Daemon::wait_log`], looking only at lines after the first `skip`.
    pub async fn wait_log_after(
        &self,
        skip: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.grew.notified();
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return Err(format!(
                    "pushwake never logged {needle:?} within {timeout:?}; its log:\n{}",
                    self.logs()
                ));
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Number of log lines so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The whole log so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kills it with SIGKILL (a crash) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits for it to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let pid = self.child.id().ok_or("already exited")?;
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                format!(
                    "pushwake did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                    self.logs()
                )
            })?
            .map_err(|e| e.to_string())
    }
}
