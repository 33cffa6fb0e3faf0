//! The `pushwake` command: `run` the daemon, or `check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use pushwake::config::{self, Config};
use pushwake::devices::command;
use pushwake::devices::service::Devices;
use pushwake::devices::Registry;
use pushwake::driver::{Control, Driver};
use pushwake::http::{Listener, Service};
use pushwake::metrics::listener::MetricsListener;
use pushwake::pbx::PbxConfig;
use pushwake::push::{PushService, PROVIDERS};
use pushwake::status::StatusBoard;
use pushwake::store::DeviceStore;
use pushwake_asterisk::rival::refuse_if_served;
use pushwake_asterisk::AsteriskPbx;
use pushwake_core::pbx::{CallControl, PbxEvent};
use pushwake_core::wake::EngineSettings;
use pushwake_freeswitch::FreeSwitchPbx;

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
    /// List, add or remove the devices in the device store (0: done, 1: refused or the
    /// store failed, 2: a configuration error). A running daemon sees the change.
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
        /// The configuration file (its `[store]` names the store).
        #[arg(
            long,
            short,
            global = true,
            default_value = "/etc/pushwake/pushwake.toml"
        )]
        config: PathBuf,
    },
    /// Check the configuration file and exit (0: fine, 2: an error, printed on one line).
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pushwake/pushwake.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Print the devices (tokens as fingerprints), one per line.
    List {
        /// Only this extension's.
        #[arg(long)]
        extension: Option<String>,
    },
    /// Add a device, or replace the one with this id.
    Add {
        /// The extension it belongs to.
        #[arg(long)]
        extension: String,
        /// The device's id within the extension (letters, digits and . _ + @ -).
        device_id: String,
        /// apns, fcm, hms, webhook or webpush.
        #[arg(long)]
        platform: String,
        /// The push token; `-` reads it from standard input (so it stays out of the
        /// shell's history and the process list).
        #[arg(long)]
        token: String,
        /// A device setting of the platform, e.g. `topic=com.example.app.voip` or
        /// `environment=sandbox`; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Remove a device.
    Remove {
        /// The extension it belongs to.
        #[arg(long)]
        extension: String,
        /// The device's id.
        device_id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pushwake::logging::init();
    match cli.command {
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(loaded) => {
                let mut parts = vec![format!("{} extension(s)", loaded.directory.len())];
                for p in PROVIDERS {
                    let state = if loaded.provider(p.platform()).is_some() {
                        "configured"
                    } else {
                        "not configured"
                    };
                    parts.push(format!("{} {state}", p.platform()));
                }
                parts.push(match &loaded.http {
                    Some(http) if http.api_tokens.is_some() => {
                        format!("http configured on {} with the device API", http.listen)
                    }
                    Some(http) => format!("http configured on {}", http.listen),
                    None => "http not configured".to_owned(),
                });
                parts.push(format!("store {}", loaded.store.store.describe()));
                parts.push(match &loaded.metrics {
                    Some(metrics) => format!("metrics on {}", metrics.listen),
                    None => "metrics not configured".to_owned(),
                });
                parts.push(match &loaded.messages {
                    Some(messages) => format!(
                        "messages kept (confirmed by the {})",
                        messages.settings.confirmation.as_str()
                    ),
                    None => "messages not configured".to_owned(),
                });
                println!("{}: ok ({})", config.display(), parts.join(", "));
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
            let loaded = match load(&config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            runtime.block_on(test_push(&config, &loaded, &extension, device))
        }
        Command::Devices { action, config } => devices(&config, action),
        Command::Run { config } => {
            let loaded = match load(&config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            // One thread: pushwake does little CPU work and much waiting, and on the path
            // from a REGISTER event to the INVITE every hand-over between threads is a
            // wake-up the OS may delay on a busy machine. On one thread those hand-overs
            // are queue pushes.
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            runtime.block_on(run(config, loaded))
        }
    }
}

async fn run(path: PathBuf, config: Config) -> ExitCode {
    let mut push = PushService::new();
    match config.pushkins() {
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
        Some(http) => match Listener::bind(http.listen).await {
            Ok(listener) => {
                // The bound address: with port 0 in the file, the port actually taken.
                let bound = listener.local_addr().unwrap_or(http.listen);
                tracing::info!(
                    listen = %bound,
                    public_url = %http.public_url,
                    device_api = http.api_tokens.is_some(),
                    "http listening (call status, device API, healthz)"
                );
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
    // The Prometheus endpoint, when configured: bound now for the same reason.
    let metrics = Arc::new(pushwake::metrics::Metrics::new());
    let metrics_listener = match &config.metrics {
        Some(section) => match MetricsListener::bind(section.listen).await {
            Ok(listener) => {
                tracing::info!(listen = %section.listen, "metrics listening (GET /metrics)");
                push.set_metrics(metrics.clone());
                Some(listener)
            }
            Err(error) => {
                eprintln!(
                    "pushwake: {}: metrics.listen: cannot listen on {}: {error}",
                    path.display(),
                    section.listen
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        None => None,
    };
    // The registered devices, before anything can ask for them (calls, the API).
    let devices = match Devices::start(&config.store, config.providers.clone()).await {
        Ok(devices) => devices,
        Err(error) => {
            eprintln!(
                "pushwake: {}: store.url: {}: {error}",
                path.display(),
                config.store.store.describe()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let pbx_health = pushwake::health::PbxHealth::default();
    // The apps' confirmations of messages, from the device API to the driver.
    let app_confirms = config.messages.as_ref().is_some_and(|m| {
        m.settings.confirmation == pushwake_core::messages::courier::Confirmation::AppConfirms
    });
    let (confirm_tx, confirm_rx) = match app_confirms {
        true => {
            let (tx, rx) = mpsc::channel(64);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = status_listener.map(|listener| {
        let service = Service {
            board: board.clone(),
            devices: Some(devices.clone()),
            api_tokens: config.http.as_ref().and_then(|h| h.api_tokens.clone()),
            pbx: Some(pbx_health.clone()),
            providers: Some(push.health().clone()),
            messages: confirm_tx,
        };
        tokio::spawn(listener.serve(service, async move {
            let _ = http_stopped.await;
        }))
    });
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(listener.serve(metrics.clone(), async move {
            let _ = metrics_stopped.await;
        }))
    });
    // Connections open (and tokens fetched) before the first call needs them.
    let warming = push.clone();
    tokio::spawn(async move { warming.warm_up().await });
    let (control_tx, control_rx) = mpsc::channel(8);
    // Installed before "pushwake starting" is logged, so a SIGHUP sent as soon as that
    // line shows reloads rather than kills the process (SIGHUP's default action).
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("pushwake: cannot install signal handlers: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    tokio::spawn(signals.serve(path.clone(), config.clone(), control_tx));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        pbx = %config.pbx.describe(),
        extensions = config.directory.len(),
        "pushwake starting"
    );
    let board = http_task.is_some().then_some(board);
    let registry = devices.registry().clone();
    let counted = registry.clone();
    metrics.count_devices_with(move || counted.len());
    let serving = Serving {
        push,
        board,
        registry,
        devices: devices.clone(),
        confirmations: confirm_rx,
        health: pbx_health,
        metrics: metrics_task.is_some().then_some(metrics),
        control: control_rx,
    };
    let stats = match &config.pbx {
        PbxConfig::Asterisk(asterisk) => match refuse_if_served(asterisk).await.and_then(|()| {
            AsteriskPbx::start(asterisk).map_err(|e| format!("cannot set up the ARI client: {e}"))
        }) {
            Ok((pbx, events)) => drive(pbx, events, &config, serving).await,
            Err(error) => {
                tracing::error!(%error, "not starting");
                eprintln!("pushwake: {error}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        PbxConfig::FreeSwitch(freeswitch) => match FreeSwitchPbx::start(freeswitch).await {
            Ok((pbx, events)) => drive(pbx, events, &config, serving).await,
            Err(error) => {
                eprintln!(
                    "pushwake: {}: freeswitch.listen: cannot listen on {}: {error}",
                    path.display(),
                    freeswitch.listen
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
    };
    // The listener answered until every waiting caller was returned (their status is
    // "ended" now); it stops with the daemon.
    let _ = stop_http.send(());
    if let Some(task) = http_task {
        let _ = task.await;
    }
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    // What was learned last reaches the store before the process ends.
    devices.flush(std::time::Duration::from_secs(5)).await;
    tracing::info!(
        calls = stats.calls,
        legs = stats.legs_dialled,
        pushes = stats.pushes,
        "pushwake stopped"
    );
    ExitCode::SUCCESS
}

/// What the driver serves besides the PBX: the same for every PBX adapter.
struct Serving {
    push: PushService,
    board: Option<pushwake::status::SharedBoard>,
    registry: Arc<Registry>,
    /// The devices and their store (where messages are kept too).
    devices: Devices,
    /// The apps' confirmations of messages (the device API), when they confirm.
    confirmations: Option<mpsc::Receiver<pushwake::driver::MessageConfirmation>>,
    health: pushwake::health::PbxHealth,
    /// Where the driver records what it sees, when `[metrics]` serves them.
    metrics: Option<Arc<pushwake::metrics::Metrics>>,
    control: mpsc::Receiver<Control>,
}

/// Runs the wake logic against a started PBX adapter until shutdown; returns the
/// engine's counters.
async fn drive<P: CallControl>(
    pbx: P,
    events: mpsc::Receiver<PbxEvent>,
    config: &Config,
    serving: Serving,
) -> pushwake_core::wake::EngineStats {
    let carries_messages = pbx.carries_messages();
    let settings = EngineSettings {
        // The adapter says whether its PBX announces every registration.
        contact_poll: pbx.contact_poll(),
        extension_states: pbx.extension_states(),
        status_base_url: config.http.as_ref().map(|http| http.public_url.clone()),
        node: config.store.node.clone(),
    };
    let mut driver = Driver::new(
        Arc::new(pbx),
        serving.push,
        Arc::new(config.directory.clone()),
        settings,
    );
    if let Some(board) = serving.board {
        driver = driver.with_status_board(board);
    }
    if let Some(metrics) = serving.metrics {
        driver = driver.with_metrics(metrics);
    }
    let mut keeper = None;
    match &config.messages {
        Some(section) if carries_messages => {
            let settings = pushwake_core::messages::courier::CourierSettings {
                node: config.store.node.clone(),
                ..section.settings.clone()
            };
            tracing::info!(
                confirmation = settings.confirmation.as_str(),
                max_per_extension = settings.limits.per_extension,
                max_age_secs = settings.limits.max_age.as_secs(),
                "keeping messages for sleeping phones"
            );
            let started = pushwake::messages::start_keeper(serving.devices.clone());
            keeper = Some(started.task);
            driver = driver.with_messages(
                settings,
                Some((started.writes, started.restored)),
                serving.confirmations,
            );
        }
        Some(_) => tracing::warn!(
            pbx = %config.pbx.describe(),
            "[messages] is configured, but this PBX's adapter does not carry messages yet: they are left to the PBX"
        ),
        None => {}
    }
    let stats = driver
        .with_registry(serving.registry)
        .with_health(serving.health)
        .with_notifier(pushwake::systemd::Notifier::from_env())
        .run(events, serving.control)
        .await;
    // The driver is gone, and with it the keeper's queue: its last writes finish.
    if let Some(task) = keeper {
        pushwake::messages::finish(task, std::time::Duration::from_secs(5)).await;
    }
    stats
}

/// The configuration at `path`, or the exit after printing why not.
fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|error| {
        eprintln!("pushwake: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The one-thread runtime every command runs on, or the exit after printing why not.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("pushwake: cannot start the runtime: {error}");
            ExitCode::from(EXIT_RUNTIME)
        })
}

/// `pushwake devices …`.
fn devices(path: &Path, action: DevicesAction) -> ExitCode {
    let (loaded, runtime) = match (load(path), runtime()) {
        (Ok(loaded), Ok(runtime)) => (loaded, runtime),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    runtime.block_on(async {
        let store = match DeviceStore::open(&loaded.store.store).await {
            Ok(store) => store,
            Err(error) => {
                eprintln!(
                    "pushwake: {}: store.url: {}: {error}",
                    path.display(),
                    loaded.store.store.describe()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let done = match action {
            DevicesAction::List { extension } => command::list(&store, extension.as_deref()).await,
            DevicesAction::Add {
                extension,
                device_id,
                platform,
                token,
                settings,
            } => {
                let token = if token == "-" {
                    let mut text = String::new();
                    if let Err(error) = std::io::stdin().read_line(&mut text) {
                        eprintln!("pushwake: cannot read the token from standard input: {error}");
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                    text.trim().to_owned()
                } else {
                    token
                };
                let mut fields = vec![
                    ("platform".to_owned(), platform),
                    ("token".to_owned(), token),
                ];
                for setting in settings {
                    match setting.split_once('=') {
                        Some((key, value)) => {
                            fields.push((key.trim().to_owned(), value.to_owned()))
                        }
                        None => {
                            eprintln!("pushwake: --set {setting}: give KEY=VALUE");
                            return ExitCode::from(EXIT_RUNTIME);
                        }
                    }
                }
                command::add(&store, &loaded.providers, &extension, &device_id, &fields).await
            }
            DevicesAction::Remove {
                extension,
                device_id,
            } => command::remove(&store, &extension, &device_id).await,
        };
        match done {
            Ok(text) => {
                print!(
                    "{}",
                    if text.ends_with('\n') {
                        text
                    } else {
                        text + "\n"
                    }
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("pushwake: {error}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

async fn test_push(
    path: &Path,
    config: &Config,
    extension: &str,
    device: Option<usize>,
) -> ExitCode {
    let mut push = PushService::new();
    match config.pushkins() {
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

/// The signals the daemon answers: SIGTERM / SIGINT shut down (waiting callers go back
/// to the dialplan); SIGHUP reloads the extensions from the configuration file.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Takes the signals over from their default actions, now.
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Answers them until a stop is asked for.
    async fn serve(mut self, path: PathBuf, running: Config, control: mpsc::Sender<Control>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => reload(&path, &running, &control).await,
            }
        }
        tracing::info!("stop requested");
        let _ = control.send(Control::Shutdown).await;
    }
}

async fn reload(path: &Path, running: &Config, control: &mpsc::Sender<Control>) {
    match config::load(path) {
        Ok(new) => {
            // Only the extensions are reloaded; every other section is read once, at
            // start. Each one changed is named, so nobody waits for a change that has
            // not happened.
            let changed = running.changes_needing_restart(&new);
            if !changed.is_empty() {
                tracing::warn!(
                    sections = %changed.join(", "),
                    "these sections changed and take effect only after a restart; the extensions are reloaded now"
                );
            }
            let _ = control.send(Control::Reload(Arc::new(new.directory))).await;
        }
        Err(error) => {
            tracing::error!(%error, "configuration not reloaded; keeping the running one")
        }
    }
}
