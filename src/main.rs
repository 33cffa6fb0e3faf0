//! The `pushwake` command: `run` the daemon, or `check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use pushwake::asterisk::AsteriskPbx;
use pushwake::config::{self, ApnsCredentials, Config};
use pushwake::driver::{Control, Driver};
use pushwake::http::StatusListener;
use pushwake::push::apns::{ApnsAuth, ApnsPushkin, ApnsSettings};
use pushwake::push::fcm::{FcmPushkin, FcmSettings};
use pushwake::push::{PushService, Pushkin};
use pushwake::status::StatusBoard;
use pushwake::wake::EngineSettings;

/// Exit code for a configuration error (also used by `check-config`).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure after start-up.
const EXIT_RUNTIME: u8 = 1;

#[derive(Parser)]
#[command(
    name = "pushwake",
    version,
    about = "Wakes sleeping mobile softphones with a VoIP push when a call arrives at the PBX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pushwake/pushwake.toml")]
        config: PathBuf,
    },
    /// Send one real push to an extension's devices with the configured credentials and
    /// print each provider's verdict (0: all delivered, 1: some failed, 2: usage or
    /// configuration error). The phone shows a call from "pushwake test-push" that ends
    /// by itself.
    TestPush {
        /// The extension whose devices to push.
        extension: String,
        /// Only this device of the extension, counted from 0.
        #[arg(long)]
        device: Option<usize>,
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pushwake/pushwake.toml")]
        config: PathBuf,
    },
    /// Check the configuration file and exit (0: fine, 2: an error, printed on one line).
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pushwake/pushwake.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(loaded) => {
                let state = |configured: bool| {
                    if configured {
                        "configured"
                    } else {
                        "not configured"
                    }
                };
                let http = match &loaded.http {
                    Some(http) => format!("configured on {}", http.listen),
                    None => "not configured".to_owned(),
                };
                println!(
                    "{}: ok ({} extension(s), apns {}, fcm {}, hms {}, webhook {}, webpush {}, http {http})",
                    config.display(),
                    loaded.directory.len(),
                    state(loaded.apns.is_some()),
                    state(loaded.fcm.is_some()),
                    state(loaded.hms.is_some()),
                    state(loaded.webhook.is_some()),
                    state(loaded.webpush.is_some()),
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("pushwake: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::TestPush {
            extension,
            device,
            config,
        } => {
            let loaded = match config::load(&config) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("pushwake: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("pushwake: cannot start the runtime: {error}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            runtime.block_on(test_push(&config, &loaded, &extension, device))
        }
        Command::Run { config } => {
            let loaded = match config::load(&config) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("pushwake: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            // One thread: pushwake does little CPU work and much waiting, and on the path
            // from a REGISTER event to the INVITE every hand-over between threads is a
            // wake-up the OS may delay on a busy machine. On one thread those hand-overs
            // are queue pushes.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("pushwake: cannot start the runtime: {error}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            runtime.block_on(run(config, loaded))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PUSHWAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never in the journal or a log file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(path: PathBuf, config: Config) -> ExitCode {
    let mut push = PushService::new();
    match pushkins(&config) {
        Ok(pushkins) => pushkins.into_iter().for_each(|p| push.add(p)),
        Err(error) => {
            eprintln!("pushwake: {}: {error}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // The call status endpoint, when configured: bound before anything else starts, so
    // an address in use stops pushwake at once with a clear error.
    let board = StatusBoard::shared();
    let status_listener = match &config.http {
        Some(http) => match StatusListener::bind(http.listen, board.clone()).await {
            Ok(listener) => {
                tracing::info!(listen = %http.listen, public_url = %http.public_url, "call status endpoint listening");
                Some(listener)
            }
            Err(error) => {
                eprintln!(
                    "pushwake: {}: http.listen: cannot listen on {}: {error}",
                    path.display(),
                    http.listen
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        None => None,
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = status_listener.map(|listener| {
        tokio::spawn(listener.serve(async move {
            let _ = http_stopped.await;
        }))
    });
    // Connections open (and tokens fetched) before the first call needs them.
    let warming = push.clone();
    tokio::spawn(async move { warming.warm_up().await });
    let pbx = match AsteriskPbx::new(&config.asterisk) {
        Ok(pbx) => pbx,
        Err(error) => {
            eprintln!("pushwake: cannot set up the ARI client: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    tokio::spawn(pbx.clone().keep_warm());
    let events = pbx.events(&config.asterisk);
    let (control_tx, control_rx) = mpsc::channel(8);
    tokio::spawn(signals(path.clone(), config.clone(), control_tx));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        app = %config.asterisk.app,
        extensions = config.directory.len(),
        "pushwake starting"
    );
    let settings = EngineSettings {
        status_base_url: config.http.as_ref().map(|http| http.public_url.clone()),
        ..EngineSettings::default()
    };
    let mut driver = Driver::new(
        Arc::new(pbx),
        push,
        Arc::new(config.directory.clone()),
        settings,
    );
    if http_task.is_some() {
        driver = driver.with_status_board(board);
    }
    let stats = driver.run(events, control_rx).await;
    // The listener answered until every waiting caller was returned (their status is
    // "ended" now); it stops with the daemon.
    let _ = stop_http.send(());
    if let Some(task) = http_task {
        let _ = task.await;
    }
    tracing::info!(
        calls = stats.calls,
        legs = stats.legs_dialled,
        pushes = stats.pushes,
        "pushwake stopped"
    );
    ExitCode::SUCCESS
}

async fn test_push(
    path: &Path,
    config: &Config,
    extension: &str,
    device: Option<usize>,
) -> ExitCode {
    let mut push = PushService::new();
    match pushkins(config) {
        Ok(pushkins) => pushkins.into_iter().for_each(|p| push.add(p)),
        Err(error) => {
            eprintln!("pushwake: {}: {error}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match pushwake::test_push::test_push(&push, &config.directory, extension, device).await {
        Ok(results) => {
            for result in &results {
                println!("{}", pushwake::test_push::describe(result));
            }
            if results
                .iter()
                .all(|r| r.verdict == pushwake::push::PushVerdict::Delivered)
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUNTIME)
            }
        }
        Err(error) => {
            eprintln!("pushwake: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// How long before an APNs certificate expires pushwake starts warning about it.
const CERTIFICATE_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The push providers the configuration asks for.
fn pushkins(config: &Config) -> Result<Vec<Arc<dyn Pushkin>>, String> {
    let mut pushkins: Vec<Arc<dyn Pushkin>> = Vec::new();
    if let Some(apns) = &config.apns {
        let auth = match &apns.credentials {
            ApnsCredentials::Token {
                team_id,
                key_id,
                key_pem,
                ..
            } => ApnsAuth::Token {
                team_id: team_id.clone(),
                key_id: key_id.clone(),
                key_pem: key_pem.clone(),
            },
            ApnsCredentials::Certificate { certificate, .. } => {
                let expires = humantime::format_rfc3339_seconds(certificate.not_after());
                let left = certificate
                    .not_after()
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                if left < CERTIFICATE_WARNING {
                    tracing::warn!(subject = certificate.subject(), %expires, "the APNs certificate expires within 30 days: renew it, or every push will fail");
                } else {
                    tracing::info!(subject = certificate.subject(), %expires, "APNs certificate authentication");
                }
                ApnsAuth::Certificate(certificate.clone())
            }
        };
        let settings = ApnsSettings {
            auth,
            topic: apns.topic.clone(),
            alert_topic: apns.alert_topic.clone(),
            endpoint: apns.endpoint.clone(),
            sandbox_endpoint: apns.sandbox_endpoint.clone(),
            warm_sandbox: config.directory.uses_apns_sandbox(),
        };
        pushkins.push(Arc::new(
            ApnsPushkin::new(settings).map_err(|e| format!("apns: {e}"))?,
        ));
    }
    if let Some(fcm) = &config.fcm {
        let settings = FcmSettings {
            account: fcm.account.clone(),
            endpoint: fcm.endpoint.clone(),
        };
        pushkins.push(Arc::new(
            FcmPushkin::new(settings).map_err(|e| format!("fcm: {e}"))?,
        ));
    }
    if let Some(webhook) = &config.webhook {
        let settings = pushwake::push::webhook::WebhookSettings {
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            timeout: webhook.timeout,
        };
        pushkins.push(Arc::new(
            pushwake::push::webhook::WebhookPushkin::new(settings)
                .map_err(|e| format!("webhook: {e}"))?,
        ));
    }
    if let Some(webpush) = &config.webpush {
        let settings = pushwake::push::webpush::WebPushSettings {
            vapid_key: webpush.vapid_key.clone(),
            subject: webpush.subject.clone(),
            timeout: pushwake::push::webpush::DEFAULT_TIMEOUT,
        };
        pushkins.push(Arc::new(
            pushwake::push::webpush::WebPushPushkin::new(settings)
                .map_err(|e| format!("webpush: {e}"))?,
        ));
    }
    if let Some(hms) = &config.hms {
        let settings = pushwake::push::hms::HmsSettings {
            app_id: hms.app_id.clone(),
            client_secret: hms.client_secret.clone(),
            endpoint: hms.endpoint.clone(),
            token_url: hms.token_url.clone(),
        };
        pushkins.push(Arc::new(
            pushwake::push::hms::HmsPushkin::new(settings).map_err(|e| format!("hms: {e}"))?,
        ));
    }
    Ok(pushkins)
}

/// SIGTERM / SIGINT: shut down (waiting callers go back to the dialplan).
/// SIGHUP: reload the extensions from the configuration file.
async fn signals(path: PathBuf, running: Config, control: mpsc::Sender<Control>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&path, &running, &control).await,
        }
    }
    tracing::info!("stop requested");
    let _ = control.send(Control::Shutdown).await;
}

async fn reload(path: &Path, running: &Config, control: &mpsc::Sender<Control>) {
    match config::load(path) {
        Ok(new) => {
            if new.asterisk != running.asterisk
                || new.apns != running.apns
                || new.fcm != running.fcm
            {
                tracing::warn!(
                    "[asterisk], [apns] and [fcm] changes take effect only after a restart"
                );
            }
            if new.http != running.http {
                tracing::warn!("[http] changes take effect only after a restart");
            }
            let _ = control.send(Control::Reload(Arc::new(new.directory))).await;
        }
        Err(error) => {
            tracing::error!(%error, "configuration not reloaded; keeping the running one")
        }
    }
}
