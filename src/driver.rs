//! The async driver around [`WakeEngine`]: feeds it PBX events, timer expiries and the
//! results of earlier commands, and carries out the commands it queues.
//!
//! One task owns the engine, so the engine needs no locks; every command runs in its own
//! task so a slow REST call or a push retry never holds up the next event. Commands that
//! end or return a call (hang-up, continue, bridge removal) are retried a few times on
//! transient PBX errors: a lost hang-up is a leg left ringing, a lost continue is a caller
//! left waiting (the reconnect reconciliation is the last safety net for both).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use pushwake_core::directory::Directory;
use pushwake_core::pbx::{
    CallControl, CallId, ExtensionState, PbxCommand, PbxError, PbxEvent, PbxReply,
};
use pushwake_core::random::Randomness;
use pushwake_core::wake::{Command, EngineSettings, EngineStats, Input, WakeEngine};

use crate::devices::{Learned, Registry};
use crate::metrics::observer::Observer;
use crate::metrics::Metrics;
use crate::push::{PushKind, PushService, PushVerdict};
use crate::random::OsRandom;
use crate::status::SharedBoard;
use crate::systemd::Notifier;

/// Requests to a running driver.
#[derive(Debug)]
pub enum Control {
    /// Return every waiting caller with `SHUTDOWN`, finish the commands under way, stop.
    Shutdown,
    /// Serve new calls with this directory (configuration reload).
    Reload(Arc<Directory>),
}

/// Waits between retries of a call-ending command.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
/// How long shutdown waits for the last commands to reach the PBX.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the gauges of waiting and active calls are refreshed.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// Drives a [`WakeEngine`] against a PBX and the push providers.
pub struct Driver<P: CallControl> {
    engine: WakeEngine,
    pbx: Arc<P>,
    push: PushService,
    pbx_tasks: JoinSet<Option<Input>>,
    push_tasks: JoinSet<Option<Input>>,
    /// The incoming-call pushes of each call, to stop when the call no longer waits.
    wake_pushes: HashMap<CallId, Vec<AbortHandle>>,
    /// Where call status changes go, for the call status endpoint.
    status: Option<SharedBoard>,
    /// The devices that registered themselves: learned from here, pushed by the engine.
    registry: Option<Arc<Registry>>,
    /// Where the PBX connection's state goes, for `/healthz`.
    health: Option<crate::health::PbxHealth>,
    /// What passes through, recorded as metrics.
    observer: Option<Observer>,
    /// systemd, told when pushwake is ready, alive, reloading and stopping.
    notifier: Notifier,
    /// Whether systemd was told `READY=1` (at the first connection to the PBX).
    ready: bool,
    /// The extension states to show the PBX, in order ([`publish_states`]); started at
    /// the first.
    states: Option<mpsc::UnboundedSender<(String, ExtensionState)>>,
}

impl<P: CallControl> Driver<P> {
    /// A driver for `pbx`, serving the extensions of `directory`, with the operating
    /// system's randomness.
    pub fn new(
        pbx: Arc<P>,
        push: PushService,
        directory: Arc<Directory>,
        settings: EngineSettings,
    ) -> Self {
        Self::with_randomness(pbx, push, directory, settings, Box::new(OsRandom))
    }

    /// Like [`Driver::new`], with the engine's randomness given.
    pub fn with_randomness(
        pbx: Arc<P>,
        push: PushService,
        directory: Arc<Directory>,
        settings: EngineSettings,
        random: Box<dyn Randomness>,
    ) -> Self {
        Self {
            engine: WakeEngine::new(directory, settings, random),
            pbx,
            push,
            pbx_tasks: JoinSet::new(),
            push_tasks: JoinSet::new(),
            wake_pushes: HashMap::new(),
            status: None,
            registry: None,
            health: None,
            observer: None,
            notifier: Notifier::default(),
            ready: false,
            states: None,
        }
    }

    /// Records calls, pushes, latencies and the PBX connection in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.observer = Some(Observer::new(metrics));
        self
    }

    /// Tells systemd through `notifier`: `READY=1` at the first connection to the PBX,
    /// `WATCHDOG=1` from the event loop, `RELOADING=1` around a reload, `STOPPING=1`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Learns devices from the registrations the PBX reports into `registry`, pushes
    /// its devices with the configured ones, and forgets those whose token a provider
    /// declares dead.
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.engine.set_device_source(registry.clone());
        self.registry = Some(registry);
        self
    }

    /// Records the PBX connection's state in `health` (read by `/healthz`).
    pub fn with_health(mut self, health: crate::health::PbxHealth) -> Self {
        self.health = Some(health);
        self
    }

    /// Records every call status change the engine reports on `board` (read by the
    /// call status endpoint, [`crate::http`]). Without a board they are dropped.
    pub fn with_status_board(mut self, board: SharedBoard) -> Self {
        self.status = Some(board);
        self
    }

    /// Runs until `control` asks for shutdown (or is dropped) or `events` ends, then
    /// returns the engine's counters.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<PbxEvent>,
        mut control: mpsc::Receiver<Control>,
    ) -> EngineStats {
        // Both ticks come from this loop, so a loop that stops turning stops them: the
        // watchdog's is what lets systemd restart a wedged daemon.
        let mut watchdog = self.notifier.watchdog_interval().map(ticker);
        let mut gauges = self.observer.is_some().then(|| ticker(GAUGE_REFRESH));
        self.notifier.notify("STATUS=connecting to the PBX");
        loop {
            let timeout = self.engine.next_timeout();
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if let Some(health) = &self.health {
                            health.observe(&event);
                        }
                        let connection = match &event {
                            PbxEvent::Connected(_) => Some(true),
                            PbxEvent::Disconnected => Some(false),
                            _ => None,
                        };
                        self.feed(Input::Event(event));
                        match connection {
                            // READY=1 once: systemd's start completes at the first connection.
                            Some(true) if !std::mem::replace(&mut self.ready, true) => {
                                self.notifier.notify("READY=1\nSTATUS=connected to the PBX, serving calls");
                            }
                            Some(true) => self.notifier.notify("STATUS=connected to the PBX, serving calls"),
                            Some(false) => self.notifier.notify("STATUS=the PBX connection was lost; reconnecting"),
                            None => {}
                        }
                    }
                    None => {
                        tracing::error!("the PBX event stream ended");
                        break;
                    }
                },
                Some(done) = self.pbx_tasks.join_next(), if !self.pbx_tasks.is_empty() => {
                    self.task_done(done);
                }
                Some(done) = self.push_tasks.join_next(), if !self.push_tasks.is_empty() => {
                    self.task_done(done);
                }
                () = sleep_until(timeout), if timeout.is_some() => {
                    self.engine.handle_timeout(Instant::now().into_std());
                    self.dispatch();
                }
                () = devices_changed(self.registry.as_deref()) => {
                    if let Some(changes) = self.registry.as_ref().and_then(|r| r.take_changes()) {
                        self.feed(Input::DevicesChanged(changes));
                    }
                }
                () = tick(&mut watchdog) => self.notifier.notify("WATCHDOG=1"),
                () = tick(&mut gauges) => self.refresh_gauges(),
                request = control.recv() => match request {
                    Some(Control::Reload(directory)) => {
                        self.notifier.reloading();
                        tracing::info!(extensions = directory.len(), "configuration reloaded");
                        self.engine.set_directory(directory);
                        self.notifier.notify("READY=1");
                    }
                    Some(Control::Shutdown) | None => break,
                },
            }
        }
        self.shut_down(events).await
    }

    async fn shut_down(mut self, mut events: mpsc::Receiver<PbxEvent>) -> EngineStats {
        self.notifier
            .notify("STOPPING=1\nSTATUS=returning waiting callers to the dialplan");
        let waiting = self.engine.waiting_calls();
        tracing::info!(
            waiting,
            "shutting down: returning waiting callers to the dialplan"
        );
        self.engine.shutdown(Instant::now().into_std());
        self.dispatch();
        // Pushes for calls that are over are pointless now.
        self.push_tasks.abort_all();
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while !self.pbx_tasks.is_empty() {
            tokio::select! {
                Some(done) = self.pbx_tasks.join_next() => self.task_done(done),
                // Keep answering events (e.g. a leg answering now is hung up).
                Some(event) = events.recv() => self.feed(Input::Event(event)),
                () = &mut grace => {
                    tracing::error!(left = self.pbx_tasks.len(), "PBX commands still unfinished at shutdown");
                    break;
                }
            }
        }
        self.engine.stats().clone()
    }

    fn task_done(&mut self, done: Result<Option<Input>, tokio::task::JoinError>) {
        match done {
            Ok(Some(input)) => self.feed(input),
            Ok(None) => {}
            Err(error) if error.is_cancelled() => {}
            Err(error) => tracing::error!(%error, "a command task failed"),
        }
    }

    fn refresh_gauges(&self) {
        if let Some(observer) = &self.observer {
            let metrics = observer.metrics();
            metrics.calls_now(self.engine.waiting_calls(), self.engine.active_calls());
        }
    }

    fn feed(&mut self, input: Input) {
        // What the observer needs of the input once the engine has taken it.
        let registration = match (&mut self.observer, &input) {
            (Some(observer), input) => {
                observer.input(input);
                match input {
                    Input::Event(PbxEvent::ContactAdded { extension, uri }) => {
                        Some((extension.clone(), uri.clone()))
                    }
                    _ => None,
                }
            }
            (None, _) => None,
        };
        if let Some(registry) = &self.registry {
            match &input {
                // Before the engine sees the registration: what it teaches is known when
                // the engine acts on it.
                Input::Event(PbxEvent::ContactAdded { extension, uri }) => {
                    learn(registry, extension, uri, true);
                }
                // A listing shows what registered too, also phones that registered before
                // pushwake ran (the PBX announced them to nobody) and refreshes that a PBX
                // does not announce.
                Input::ContactsListed {
                    extension,
                    result: Ok(contacts),
                    ..
                } => {
                    for contact in contacts {
                        learn(registry, extension, &contact.uri, false);
                    }
                }
                _ => {}
            }
        }
        self.engine.handle(Instant::now().into_std(), input);
        self.dispatch();
        if let Some(observer) = &mut self.observer {
            observer.handled(registration, self.engine.stats());
        }
    }

    fn dispatch(&mut self) {
        while let Some(command) = self.engine.poll_command() {
            if let Some(observer) = &mut self.observer {
                observer.command(&command);
            }
            match command {
                Command::Pbx(PbxCommand::PublishState { extension, state }) => {
                    let pbx = &self.pbx;
                    let states = self.states.get_or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(publish_states(pbx.clone(), rx));
                        tx
                    });
                    let _ = states.send((extension, state));
                }
                Command::Pbx(command) => {
                    let pbx = self.pbx.clone();
                    self.pbx_tasks.spawn(execute(pbx, command));
                }
                Command::Push(job) => {
                    let push = self.push.clone();
                    let registry = self.registry.clone();
                    let metrics = self.observer.as_ref().map(|o| o.metrics().clone());
                    let wakes = job.push.kind == PushKind::IncomingCall;
                    let call = job.call.clone();
                    let handle = self.push_tasks.spawn(async move {
                        let deadline = Instant::from_std(job.deadline);
                        let verdict = push.send(&job.device, &job.push, deadline).await;
                        let what = match job.push.kind {
                            PushKind::IncomingCall => "incoming call",
                            PushKind::CallEnded(reason) => reason.as_str(),
                        };
                        if let Some(metrics) = &metrics {
                            metrics.push_verdict(job.device.platform, &job.push.kind, &verdict);
                        }
                        match &verdict {
                            PushVerdict::Delivered => {
                                tracing::info!(call = %job.call, device = %job.device.label, push = what, "push delivered")
                            }
                            PushVerdict::Failed { reason, dead_token } => {
                                tracing::warn!(call = %job.call, device = %job.device.label, push = what, %reason, dead_token, "push failed");
                                if let (true, Some(registry)) = (*dead_token, &registry) {
                                    let platform = job.device.platform.as_str();
                                    let forgotten = registry.forget_token(platform, job.device.token.expose());
                                    if let Some(metrics) = &metrics {
                                        metrics.dead_tokens_removed(job.device.platform, forgotten.len());
                                    }
                                    for (extension, device) in forgotten {
                                        tracing::warn!(%extension, device, token = %job.device.token, "forgot a registered device: the push service says its token is dead");
                                    }
                                }
                            }
                            PushVerdict::NotSent { reason } => {
                                tracing::debug!(call = %job.call, device = %job.device.label, push = what, %reason, "push not sent")
                            }
                        }
                        // Only the wake-up's verdict matters to the call; the end of a
                        // call is told once and forgotten.
                        wakes.then_some(Input::PushResult {
                            call: job.call,
                            device: job.device_index,
                            verdict,
                        })
                    });
                    if wakes {
                        self.wake_pushes.entry(call).or_default().push(handle);
                    }
                }
                Command::AbortPushes { call } => {
                    for handle in self.wake_pushes.remove(&call).unwrap_or_default() {
                        handle.abort();
                    }
                }
                Command::CallStatus { call, update } => {
                    // Applied here, before the commands queued after it are spawned:
                    // the board knows a call before its first push leaves.
                    if let Some(board) = &self.status {
                        board
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .apply(Instant::now().into_std(), &call, update);
                    }
                }
            }
        }
    }
}

/// Learns from one registration the PBX accepted, and says what it taught. A refusal
/// is a warning when the PBX announced the registration, and only a debug line when a
/// contact listing (every second, while a call waits) shows it again.
fn learn(registry: &Registry, extension: &str, contact: &str, announced: bool) {
    match registry.learn(extension, contact, crate::push::unix_now_secs()) {
        Learned::Nothing | Learned::Known => {}
        Learned::New(device) => tracing::info!(
            extension,
            device = %device.device_id,
            platform = %device.platform,
            token = %pushwake_core::directory::DeviceToken::new(device.token),
            "learned a device from its registration"
        ),
        Learned::Again(device) => {
            tracing::debug!(extension, device = %device.device_id, "a registered device registered again")
        }
        Learned::Refused(reason) if announced => tracing::warn!(
            extension,
            %reason,
            "a registration's push parameters were not taken: no device learned"
        ),
        Learned::Refused(reason) => tracing::debug!(
            extension,
            %reason,
            "a listed contact's push parameters were not taken"
        ),
    }
}

/// An interval of `period` that, after a stall, goes on from now instead of catching up.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The next tick of `interval`, or never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Returns once `registry`'s devices changed; never without a registry.
async fn devices_changed(registry: Option<&Registry>) {
    match registry {
        Some(registry) => registry.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// Shows the PBX the extension states it is sent, one at a time and in order (two
/// settings of one extension racing would leave the PBX with whichever landed last);
/// of several queued for one extension only the newest is sent.
async fn publish_states<P: CallControl>(
    pbx: Arc<P>,
    mut queue: mpsc::UnboundedReceiver<(String, ExtensionState)>,
) {
    while let Some(first) = queue.recv().await {
        let mut newest = BTreeMap::from([first]);
        while let Ok((extension, state)) = queue.try_recv() {
            newest.insert(extension, state);
        }
        for (extension, state) in newest {
            execute_with_retries(&*pbx, PbxCommand::PublishState { extension, state }).await;
        }
    }
}

/// Carries out one PBX command and turns its result into an engine input where the
/// engine needs one.
async fn execute<P: CallControl>(pbx: Arc<P>, command: PbxCommand) -> Option<Input> {
    match command {
        PbxCommand::ListContacts {
            ref call,
            ref extension,
            ..
        } => {
            let (call, extension) = (call.clone(), extension.clone());
            let result = pbx.execute(command).await.map(|reply| match reply {
                PbxReply::Contacts(contacts) => contacts,
                PbxReply::Done => Vec::new(),
            });
            Some(Input::ContactsListed {
                call,
                extension,
                result,
            })
        }
        PbxCommand::Dial(ref request) => {
            let leg = request.leg.clone();
            let result = pbx.execute(command).await.map(|_| ());
            Some(Input::DialResult { leg, result })
        }
        PbxCommand::Connect { ref call, .. } => {
            let call = call.clone();
            let result = pbx.execute(command).await.map(|_| ());
            Some(Input::ConnectResult { call, result })
        }
        PbxCommand::Ring { .. }
        | PbxCommand::Hangup { .. }
        | PbxCommand::Return { .. }
        | PbxCommand::Release { .. }
        | PbxCommand::PublishState { .. } => {
            execute_with_retries(&*pbx, command).await;
            None
        }
    }
}

async fn execute_with_retries<P: CallControl>(pbx: &P, command: PbxCommand) {
    let retryable = !matches!(command, PbxCommand::Ring { .. });
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match pbx.execute(command.clone()).await {
            Ok(_) => return,
            Err(PbxError::Gone(what)) => {
                tracing::debug!(command = command.name(), %what, "nothing to do: already gone");
                return;
            }
            Err(PbxError::Failed(error)) => match delays.next() {
                Some(delay) if retryable => {
                    tracing::warn!(command = command.name(), %error, retry_in = ?delay, "PBX command failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                _ => {
                    tracing::error!(command = command.name(), %error, "PBX command failed");
                    return;
                }
            },
        }
    }
}
