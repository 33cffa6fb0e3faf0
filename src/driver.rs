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

use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use pushwake_core::directory::{Device, Directory};
use pushwake_core::messages::courier::{Courier, CourierCommand, CourierSettings, Delivery};
use pushwake_core::messages::{Message, MessageId};
use pushwake_core::pbx::{
    CallControl, CallId, ExtensionState, PbxCommand, PbxError, PbxEvent, PbxReply,
};
use pushwake_core::random::Randomness;
use pushwake_core::wake::{Command, EngineSettings, EngineStats, Input, WakeEngine};

use crate::devices::{Learned, Registry};
use crate::messages::StoreOp;
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
/// How long a caller's return to the dialplan is tried, at the last of
/// [`RETRY_DELAYS`] once those are spent, while the PBX does not take it: until it does,
/// the caller hears ringback with nobody behind it, and no timer of the engine's is left
/// to end that (the call is over for the engine).
const RETURN_RETRY_FOR: Duration = Duration::from_secs(60);
/// How long shutdown waits for the last commands to reach the PBX.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the gauges of waiting and active calls are refreshed.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);
/// How often messages past their age are looked for.
const MESSAGE_EXPIRY: Duration = Duration::from_secs(60);
/// How long a message push is tried: a message waits for days, but a provider that
/// does not take a push within a minute is retried at the next message, not forever.
const MESSAGE_PUSH_WINDOW: Duration = Duration::from_secs(60);

/// The app's confirmation that its phone has a message (the device API), with where
/// to say whether that message was known.
#[derive(Debug)]
pub struct MessageConfirmation {
    /// The extension whose app confirms.
    pub extension: String,
    /// The message.
    pub id: MessageId,
    /// `true` if the message was kept for this extension and is now removed.
    pub reply: oneshot::Sender<bool>,
}

/// What a message command's task reports.
enum MessageOutcome {
    /// What became of a send.
    Sent(MessageId, Delivery),
    /// A push's verdict was logged; nothing else to do.
    Pushed,
}

/// The messages side of the driver, when `[messages]` is configured.
struct Messages {
    courier: Courier,
    /// Where the messages are kept across restarts; `None`: in memory only.
    store: Option<mpsc::UnboundedSender<StoreOp>>,
    random: Box<dyn Randomness>,
}

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
    /// Messages for sleeping phones, when configured.
    messages: Option<Messages>,
    /// The sends and pushes of messages under way.
    message_tasks: JoinSet<MessageOutcome>,
    /// The store's messages, until they are read back.
    restored_messages: Option<oneshot::Receiver<Vec<Message>>>,
    /// Confirmations from the apps (the device API).
    confirmations: Option<mpsc::Receiver<MessageConfirmation>>,
    /// Whether the PBX connection is up now.
    connected: bool,
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
            messages: None,
            message_tasks: JoinSet::new(),
            restored_messages: None,
            confirmations: None,
            connected: false,
        }
    }

    /// Keeps the SIP MESSAGEs of push-enabled extensions for their sleeping phones
    /// (`[messages]`), in the store through `keeper` (see
    /// [`crate::messages::start_keeper`]) or, without one, in memory only; the apps'
    /// confirmations come in on `confirmations`. Only for a PBX that
    /// [carries messages](CallControl::carries_messages).
    pub fn with_messages(
        mut self,
        settings: CourierSettings,
        keeper: Option<(
            mpsc::UnboundedSender<StoreOp>,
            oneshot::Receiver<Vec<Message>>,
        )>,
        confirmations: Option<mpsc::Receiver<MessageConfirmation>>,
    ) -> Self {
        let (store, restored) = keeper.unzip();
        self.messages = Some(Messages {
            courier: Courier::new(settings),
            store,
            random: Box::new(OsRandom),
        });
        self.restored_messages = restored;
        self.confirmations = confirmations;
        self
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
        let mut expiry = self.messages.is_some().then(|| ticker(MESSAGE_EXPIRY));
        self.notifier.notify("STATUS=connecting to the PBX");
        loop {
            let timeout = self.engine.next_timeout();
            let message_timeout = self
                .messages
                .as_ref()
                .and_then(|m| m.courier.next_timeout());
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
                        if connection == Some(true) {
                            // After the adapter's own "connected" line: this one says the
                            // snapshot is in and /healthz says "connected" (what tests and
                            // an operator reading the log wait for).
                            tracing::info!("connected to the PBX, serving calls");
                        }
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
                Some(done) = self.message_tasks.join_next(), if !self.message_tasks.is_empty() => {
                    match done {
                        Ok(MessageOutcome::Sent(id, delivery)) => self.message_sent(&id, delivery),
                        Ok(MessageOutcome::Pushed) => {}
                        Err(error) if error.is_cancelled() => {}
                        Err(error) => tracing::error!(%error, "a message task failed"),
                    }
                }
                kept = restored(&mut self.restored_messages) => {
                    self.restored_messages = None;
                    self.messages_restored(kept);
                }
                Some(confirmation) = confirmation(&mut self.confirmations) => {
                    let known = self.messages.as_mut().is_some_and(|m| m.courier.confirmed(&confirmation.extension, &confirmation.id));
                    tracing::info!(extension = %confirmation.extension, message_id = %confirmation.id, known, "the app confirmed a message");
                    let _ = confirmation.reply.send(known);
                    self.dispatch_messages();
                }
                () = sleep_until(message_timeout), if message_timeout.is_some() => {
                    if let Some(messages) = &mut self.messages {
                        messages.courier.handle_timeout(Instant::now().into_std());
                    }
                    self.dispatch_messages();
                }
                () = tick(&mut expiry) => {
                    if let Some(messages) = &mut self.messages {
                        messages.courier.expire(crate::push::unix_now());
                    }
                    self.dispatch_messages();
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
            if let Some(messages) = &self.messages {
                metrics.messages_waiting(messages.courier.len());
            }
        }
    }

    fn feed(&mut self, input: Input) {
        if let Input::Event(event) = &input {
            self.message_event(event);
        }
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

    /// What an event means for the messages: one to keep, a phone that registered, a
    /// connection (re)established.
    fn message_event(&mut self, event: &PbxEvent) {
        match event {
            PbxEvent::Connected(_) => self.connected = true,
            PbxEvent::Disconnected => self.connected = false,
            _ => {}
        }
        let Some(messages) = &mut self.messages else {
            return;
        };
        match event {
            PbxEvent::Connected(_) => messages.courier.reconnected(),
            PbxEvent::ContactAdded { extension, .. } => messages.courier.registered(extension),
            PbxEvent::MessageReceived(incoming) => {
                if self.engine.message_devices(&incoming.extension).is_none() {
                    tracing::debug!(extension = %incoming.extension, "a message for an extension that is not push-enabled: left to the PBX");
                    return;
                }
                let id = MessageId(pushwake_core::random::uuid_v4(&mut *messages.random));
                let (extension, from) = (incoming.extension.clone(), incoming.from.clone());
                let received =
                    messages
                        .courier
                        .receive(id.clone(), crate::push::unix_now(), incoming.clone());
                if let Some(observer) = &self.observer {
                    observer.metrics().message(match &received {
                        Ok(()) => "kept",
                        Err(pushwake_core::messages::Refused::Duplicate(_)) => "duplicate",
                        Err(_) => "refused",
                    });
                }
                match received {
                    Ok(()) => {
                        tracing::info!(%extension, %from, message_id = %id, bytes = incoming.body.len(), "message kept for the phone");
                    }
                    Err(pushwake_core::messages::Refused::Duplicate(first)) => {
                        tracing::debug!(%extension, message_id = %first, "a retransmitted message: kept once");
                    }
                    Err(refused) => {
                        tracing::warn!(%extension, %from, reason = %refused, "a message was refused: it is not delivered (the PBX has answered its sender already)");
                    }
                }
            }
            _ => return,
        }
        self.dispatch_messages();
    }

    fn message_sent(&mut self, id: &MessageId, delivery: Delivery) {
        if let Some(messages) = &mut self.messages {
            match &delivery {
                Delivery::Accepted => {
                    tracing::debug!(message_id = %id, "the PBX took the message for the phone")
                }
                Delivery::NoContact => {
                    tracing::info!(message_id = %id, "no phone registered for the message: it waits")
                }
                Delivery::Failed(error) => {
                    tracing::warn!(message_id = %id, %error, "the PBX could not send the message: it waits for the next registration")
                }
            }
            messages
                .courier
                .sent(Instant::now().into_std(), id, delivery);
        }
        self.dispatch_messages();
    }

    fn messages_restored(&mut self, kept: Vec<Message>) {
        if let Some(messages) = &mut self.messages {
            messages.courier.restore(kept);
            if self.connected {
                messages.courier.reconnected();
            }
        }
        self.dispatch_messages();
    }

    /// Carries out what the courier asks.
    fn dispatch_messages(&mut self) {
        let Some(messages) = &mut self.messages else {
            return;
        };
        while let Some(command) = messages.courier.poll_command() {
            match command {
                CourierCommand::Store(message) => {
                    if let Some(store) = &messages.store {
                        let _ = store.send(StoreOp::Put(message));
                    }
                }
                CourierCommand::Forget { message, why } => {
                    if let Some(observer) = &self.observer {
                        observer.metrics().message(why.as_str());
                    }
                    match why {
                        pushwake_core::messages::courier::Forgotten::Delivered => {
                            tracing::info!(extension = %message.extension, message_id = %message.id, "message delivered")
                        }
                        other => {
                            tracing::warn!(extension = %message.extension, message_id = %message.id, from = %message.from, why = other.as_str(), "a message was given up before its phone took it")
                        }
                    }
                    if let Some(store) = &messages.store {
                        let _ = store.send(StoreOp::Delete(message.id));
                    }
                }
                CourierCommand::Send(message) => {
                    let pbx = self.pbx.clone();
                    self.message_tasks.spawn(async move {
                        let id = message.id.clone();
                        let delivery = match pbx.execute(PbxCommand::SendMessage(message)).await {
                            Ok(_) => Delivery::Accepted,
                            Err(PbxError::Gone(_)) => Delivery::NoContact,
                            Err(PbxError::Failed(error) | PbxError::Unavailable(error)) => {
                                Delivery::Failed(error)
                            }
                        };
                        MessageOutcome::Sent(id, delivery)
                    });
                }
                CourierCommand::Push(push) => {
                    let devices = self
                        .engine
                        .message_devices(&push.extension)
                        .unwrap_or_default();
                    if devices.is_empty() {
                        tracing::info!(extension = %push.extension, message_id = %push.message_id, "no device to tell about the message");
                    }
                    for device in devices {
                        let service = self.push.clone();
                        let registry = self.registry.clone();
                        let metrics = self.observer.as_ref().map(|o| o.metrics().clone());
                        let push = push.clone();
                        self.message_tasks.spawn(async move {
                            let deadline = Instant::now() + MESSAGE_PUSH_WINDOW;
                            let verdict = service.send_message(&device, &push, deadline).await;
                            if let Some(metrics) = &metrics {
                                metrics.message_push_verdict(device.platform, &verdict);
                            }
                            let about = format!("message {}", push.message_id);
                            report_verdict(
                                &device,
                                &about,
                                "message",
                                &verdict,
                                registry.as_deref(),
                                metrics.as_deref(),
                            );
                            MessageOutcome::Pushed
                        });
                    }
                }
            }
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
                        let about = format!("call {}", job.call);
                        report_verdict(
                            &job.device,
                            &about,
                            what,
                            &verdict,
                            registry.as_deref(),
                            metrics.as_deref(),
                        );
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

/// Logs a push's verdict; forgets the registered devices of a token the provider
/// declares dead.
fn report_verdict(
    device: &Device,
    about: &str,
    what: &str,
    verdict: &PushVerdict,
    registry: Option<&Registry>,
    metrics: Option<&Metrics>,
) {
    match verdict {
        PushVerdict::Delivered => {
            tracing::info!(about, device = %device.label, push = what, "push delivered")
        }
        PushVerdict::Failed { reason, dead_token } => {
            tracing::warn!(about, device = %device.label, push = what, %reason, dead_token, "push failed");
            if let (true, Some(registry)) = (*dead_token, registry) {
                let forgotten =
                    registry.forget_token(device.platform.as_str(), device.token.expose());
                if let Some(metrics) = metrics {
                    metrics.dead_tokens_removed(device.platform, forgotten.len());
                }
                for (extension, id) in forgotten {
                    tracing::warn!(%extension, device = id, token = %device.token, "forgot a registered device: the push service says its token is dead");
                }
            }
        }
        PushVerdict::NotSent { reason } => {
            tracing::debug!(about, device = %device.label, push = what, %reason, "push not sent")
        }
    }
}

/// The store's messages once read back (once: the caller drops the receiver then),
/// or never.
async fn restored(receiver: &mut Option<oneshot::Receiver<Vec<Message>>>) -> Vec<Message> {
    match receiver {
        Some(receiver) => receiver.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// The next confirmation from an app, or never.
async fn confirmation(
    confirmations: &mut Option<mpsc::Receiver<MessageConfirmation>>,
) -> Option<MessageConfirmation> {
    match confirmations {
        Some(confirmations) => confirmations.recv().await,
        None => std::future::pending().await,
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
        // Sent by the messages' own tasks (Driver::dispatch_messages), never queued here.
        PbxCommand::SendMessage(_) => {
            let _ = pbx.execute(command).await;
            None
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
    let started = tokio::time::Instant::now();
    let last = RETRY_DELAYS[RETRY_DELAYS.len() - 1];
    let mut delays = RETRY_DELAYS
        .iter()
        .copied()
        .chain(std::iter::repeat(last).take_while(|_| {
            matches!(command, PbxCommand::Return { .. }) && started.elapsed() < RETURN_RETRY_FOR
        }));
    loop {
        match pbx.execute(command.clone()).await {
            Ok(_) => return,
            Err(PbxError::Gone(what)) => {
                tracing::debug!(command = command.name(), %what, "nothing to do: already gone");
                return;
            }
            Err(PbxError::Failed(error) | PbxError::Unavailable(error)) => match delays.next() {
                Some(delay) if retryable => {
                    tracing::warn!(command = command.name(), %error, retry_in = ?delay, "PBX command failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    tracing::error!(command = command.name(), %error, "PBX command failed");
                    return;
                }
            },
        }
    }
}
