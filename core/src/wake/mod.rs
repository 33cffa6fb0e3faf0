//! The call/wake logic as a plain state machine.
//!
//! [`WakeEngine`] takes [`Input`]s (PBX events and the results of earlier commands)
//! together with the current time, and queues [`Command`]s (call control for the PBX,
//! pushes for devices). It owns no socket, spawns nothing and never sleeps: the caller
//! asks [`WakeEngine::next_timeout`] when it next needs to be woken and calls
//! [`WakeEngine::handle_timeout`] then. That keeps every rule about a waiting caller in one
//! place and testable without a runtime (see the tests at the bottom); the daemon's async
//! driver runs it against a PBX adapter and the push providers. Call ids, leg ids and
//! status secrets are drawn from the [`Randomness`] handed in, so the same inputs with
//! the same seed give the same commands, byte for byte.
//!
//! The rule it never breaks: every caller handed over to pushwake leaves it, either
//! connected to a device or returned to the dialplan with a [`WakeStatus`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::directory::{Device, DeviceSource, DeviceToken, Directory, ExtensionPolicy};
use crate::pbx::{
    CallId, ChannelId, Contact, Conversation, DialRequest, DialTarget, ExtensionState,
    HangupReason, Party, PbxCommand, PbxError, PbxEvent, PbxSnapshot, WakeStatus,
};
use crate::push::{EndReason, PushKind, PushVerdict, StatusLink, WakePush};
use crate::random::{uuid_v4, Randomness};
use crate::rfc8599::{contact_names_device, PushParams};
use crate::status::{StatusSecret, StatusUpdate};
/// How long a "call ended" push may still be sent after the call ended.
const CALL_ENDED_WINDOW: Duration = Duration::from_secs(10);

/// How long to wait before dialling a contact again after the PBX could not be reached
/// with its dial request ([`PbxError::Unavailable`]): one delay per retry, so a contact
/// is tried at most once more than there are delays. A refusal ([`PbxError::Failed`]) is
/// never retried: the PBX would refuse the same request again.
const REDIAL_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];
/// How long a caller sent back to the dialplan is remembered with its status: if the
/// event stream reconnects meanwhile and the PBX still shows the caller held (the return
/// was still on its way, or lost with the connection), it is returned again with the
/// same status, not taken for a caller of a previous process (`RECOVERED`).
const RETURN_MEMORY: Duration = Duration::from_secs(300);

/// Tunables of the engine that are not per extension.
#[derive(Clone, Debug, Default)]
pub struct EngineSettings {
    /// How often a waiting call re-reads the extension's contacts, or `None` for never:
    /// what the PBX adapter declares ([`crate::pbx::CallControl::contact_poll`]). Polling
    /// catches a phone that registers again with the very same contact URI where the PBX
    /// does not announce that as an event, and registrations missed while the event
    /// stream was down.
    pub contact_poll: Option<Duration>,
    /// The public base URL of the call status endpoint (`[http] public_url`, without a
    /// final `/`), or `None` when it is not configured. When set, every call gets a
    /// secret, its pushes carry `{base}/v1/calls/{call_id}` and the secret, and the
    /// engine reports the call's changes ([`Command::CallStatus`]).
    pub status_base_url: Option<String>,
    /// This node's name as its pushes carry it (`node`), on a site of several nodes
    /// sharing one device store; `None` on a single node.
    pub node: Option<String>,
    /// Whether to show the PBX each push-enabled extension's state
    /// ([`crate::pbx::CallControl::extension_states`]).
    pub extension_states: bool,
}

/// Something the engine must react to.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// An event from the PBX.
    Event(PbxEvent),
    /// The answer to a [`PbxCommand::ListContacts`].
    ContactsListed {
        /// The call that asked.
        call: CallId,
        /// The extension whose contacts these are.
        extension: String,
        /// The contacts, or why they could not be listed.
        result: Result<Vec<Contact>, PbxError>,
    },
    /// The outcome of a [`PbxCommand::Dial`] request (not of the ringing itself).
    DialResult {
        /// The leg.
        leg: ChannelId,
        /// Whether the PBX accepted the request.
        result: Result<(), PbxError>,
    },
    /// The outcome of a [`PbxCommand::Connect`].
    ConnectResult {
        /// The call.
        call: CallId,
        /// Whether the caller was answered and bridged.
        result: Result<(), PbxError>,
    },
    /// The final verdict on one push (retries are the push layer's business).
    PushResult {
        /// The call the push belonged to.
        call: CallId,
        /// Index of the device in the extension's device list.
        device: usize,
        /// Delivered or failed for good.
        verdict: PushVerdict,
    },
    /// Devices were added to or removed from the [`DeviceSource`]: the extensions'
    /// states may have changed.
    DevicesChanged(DevicesChanged),
}

/// Whose devices changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevicesChanged {
    /// Any extension's (the whole source was read anew).
    All,
    /// These extensions'.
    Of(Vec<String>),
}

/// One push the driver must send.
#[derive(Clone, Debug, PartialEq)]
pub struct PushJob {
    /// The call it belongs to.
    pub call: CallId,
    /// Index of the device in the extension's device list.
    pub device_index: usize,
    /// The device.
    pub device: Device,
    /// What to tell the device.
    pub push: WakePush,
    /// No attempt may be sent after this instant (the end of the ring window): a late
    /// VoIP push makes a phone ring for a call that is already gone.
    pub deadline: Instant,
}

/// Work for the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Call control for the PBX.
    Pbx(PbxCommand),
    /// A push to one device.
    Push(PushJob),
    /// Stop the call's incoming-call pushes still being tried: the call is answered or
    /// over, and a late wake-up push would make a phone ring for nothing.
    AbortPushes {
        /// The call.
        call: CallId,
    },
    /// The call's status changed: record it for the call status endpoint. Queued only
    /// when the endpoint is configured ([`EngineSettings::status_base_url`]); `Ringing`
    /// comes before the call's first push, so the endpoint knows the call before any
    /// app can ask.
    CallStatus {
        /// The call.
        call: CallId,
        /// What changed.
        update: StatusUpdate,
    },
}

/// Where a call is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// The caller hears ringback; pushes are out and contacts are being dialled.
    Waiting,
    /// A leg answered; the caller is being answered and joined with it.
    Connecting { leg: ChannelId },
    /// Caller and leg talk.
    Connected { leg: ChannelId },
}

impl Phase {
    /// Whether the PBX holds (or is being asked to build) a conversation for the call.
    fn joined(&self) -> bool {
        !matches!(self, Phase::Waiting)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LegState {
    /// The dial request is on its way to the PBX; the channel may not exist yet.
    Requested,
    /// The PBX created the leg; it is trying the contact.
    Dialing,
    /// The phone is ringing.
    Ringing,
    /// The phone answered.
    Answered,
    /// Failed, rejected, cancelled or hung up.
    Gone,
}

impl LegState {
    fn is_live(self) -> bool {
        !matches!(self, LegState::Gone)
    }
}

#[derive(Clone, Debug)]
struct Leg {
    id: ChannelId,
    /// The contact URI it rings (the dial string, for the fallback).
    uri: String,
    /// Whether it rings the extension's fallback rather than one of its contacts.
    fallback: bool,
    registration: Option<String>,
    state: LegState,
    /// Which dial request of this target it is: 1, or more when it is a redial after the
    /// PBX could not be reached ([`REDIAL_DELAYS`]).
    attempt: usize,
}

/// A dial request to send again: the PBX could not be reached with the last one.
#[derive(Clone, Debug)]
struct Redial {
    at: Instant,
    target: DialTarget,
    registration: Option<String>,
    /// The attempt it will be.
    attempt: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PushState {
    Pending,
    Delivered,
    Failed,
    /// Told that the call ended (or it is the device that answered): nothing more to say.
    Done,
}

#[derive(Clone, Debug)]
struct Call {
    id: CallId,
    caller: ChannelId,
    extension: String,
    party: Party,
    started: Instant,
    deadline: Instant,
    next_poll: Option<Instant>,
    phase: Phase,
    legs: Vec<Leg>,
    devices: Vec<Device>,
    pushes: Vec<PushState>,
    contacts_listed: bool,
    /// The call's status endpoint, when configured; every push of the call carries it.
    status: Option<StatusLink>,
    /// The extension's fallback, and when to ring it, until it is rung.
    fallback: Option<(Instant, String)>,
    /// Dial requests to send again, each at its time.
    redials: Vec<Redial>,
}

impl Call {
    fn live_legs(&self) -> impl Iterator<Item = &Leg> {
        self.legs.iter().filter(|l| l.state.is_live())
    }

    fn leg_mut(&mut self, id: &ChannelId) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| &l.id == id)
    }

    /// Forgets the redials that a new dial of `uri` makes pointless: those of the same
    /// contact, and those of older contacts of the same device.
    fn drop_redials_superseded_by(&mut self, uri: &str) {
        let device = device_key(uri);
        self.redials.retain(|r| match r.target.contact() {
            Some(old) => old != uri && (device.is_none() || device_key(old) != device),
            None => true,
        });
    }
}

/// How a call ended, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Returned to the dialplan with this status.
    Returned(WakeStatus),
    /// The caller hung up while waiting.
    CallerHungUp,
    /// The caller was one member of a ring group or queue, and the PBX took it away
    /// while waiting because another member answered.
    AnsweredElsewhere,
    /// A bridged conversation ended.
    Completed,
}

/// Counters since start, for logs and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Callers that entered the application.
    pub calls: u64,
    /// Legs dialled.
    pub legs_dialled: u64,
    /// Pushes queued.
    pub pushes: u64,
    /// Ended calls by outcome.
    pub outcomes: HashMap<CallOutcome, u64>,
}

/// The wake logic. See the module documentation.
pub struct WakeEngine {
    directory: Arc<Directory>,
    settings: EngineSettings,
    /// Ordered, so that whatever acts on several calls at once (timeouts, shutdown, a
    /// reconnect) queues its commands in the same order on every run.
    calls: BTreeMap<CallId, Call>,
    by_caller: HashMap<ChannelId, CallId>,
    by_leg: HashMap<ChannelId, CallId>,
    commands: VecDeque<Command>,
    shutting_down: bool,
    stats: EngineStats,
    /// Tokens a provider declared dead (unregistered, invalid): those devices get no more
    /// pushes until the configuration is reloaded.
    dead_tokens: HashSet<DeviceToken>,
    /// Where call ids, leg ids and status secrets come from.
    random: Box<dyn Randomness>,
    /// The devices that registered themselves (or were registered through the API),
    /// besides the configuration's.
    registered: Option<Arc<dyn DeviceSource>>,
    /// The state last shown to the PBX for each extension shown one (`None`: to be shown
    /// again, whatever it is).
    published: HashMap<String, Option<ExtensionState>>,
    /// Extensions whose state may have changed, shown anew at the end of the input.
    stale_states: BTreeSet<String>,
    /// Callers sent back to the dialplan in the last [`RETURN_MEMORY`], oldest first.
    returned: VecDeque<(Instant, ChannelId, WakeStatus)>,
}

impl std::fmt::Debug for WakeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeEngine")
            .field("settings", &self.settings)
            .field("calls", &self.calls.len())
            .field("queued", &self.commands.len())
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl WakeEngine {
    /// A new engine serving the extensions of `directory`, drawing its ids and secrets
    /// from `random`.
    pub fn new(
        directory: Arc<Directory>,
        settings: EngineSettings,
        random: Box<dyn Randomness>,
    ) -> Self {
        Self {
            directory,
            settings,
            calls: BTreeMap::new(),
            by_caller: HashMap::new(),
            by_leg: HashMap::new(),
            commands: VecDeque::new(),
            shutting_down: false,
            stats: EngineStats::default(),
            dead_tokens: HashSet::new(),
            random,
            registered: None,
            published: HashMap::new(),
            stale_states: BTreeSet::new(),
            returned: VecDeque::new(),
        }
    }

    /// Takes the devices of each call from `source` too (besides the directory's), so
    /// that an extension whose phones registered themselves is push-enabled even if the
    /// configuration does not list it.
    pub fn set_device_source(&mut self, source: Arc<dyn DeviceSource>) {
        self.registered = Some(source);
    }

    /// The devices to tell about a message for `extension` (the directory's and the
    /// registered ones, a device in both once); `None` if it is not push-enabled (its
    /// messages are the PBX's business).
    pub fn message_devices(&self, extension: &str) -> Option<Vec<Device>> {
        let registered = self
            .registered
            .as_ref()
            .map(|source| source.message_devices_of(extension))
            .unwrap_or_default();
        let mut devices = match self.directory.extension(extension) {
            Some(configured) => configured.devices.clone(),
            None if registered.is_empty() => return None,
            None => Vec::new(),
        };
        for device in registered {
            if !devices
                .iter()
                .any(|d| d.platform == device.platform && d.token == device.token)
            {
                devices.push(device);
            }
        }
        Some(devices)
    }

    /// The extension's settings and its live devices: the directory's and the
    /// registered ones (a device in both counts once), without dead tokens. `None` if
    /// the extension is neither configured nor has registered devices.
    fn policy_of(&self, extension: &str) -> Option<ExtensionPolicy> {
        let registered = self
            .registered
            .as_ref()
            .map(|source| source.devices_of(extension))
            .unwrap_or_default();
        let mut policy = match self.directory.extension(extension) {
            Some(configured) => configured.clone(),
            None if registered.is_empty() => return None,
            None => ExtensionPolicy {
                number: extension.to_owned(),
                ring_timeout: self.directory.default_ring_timeout(),
                devices: Vec::new(),
                fallback: None,
            },
        };
        for device in registered {
            let known = policy
                .devices
                .iter()
                .any(|d| d.platform == device.platform && d.token == device.token);
            if !known {
                policy.devices.push(device);
            }
        }
        Some(policy)
    }

    /// Replaces the directory (configuration reload). Calls already waiting keep the
    /// settings they started with. Devices disabled for a dead token are tried again:
    /// the operator may have replaced the token.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        self.directory = directory;
        self.dead_tokens.clear();
        self.all_states_stale();
        self.publish_states();
    }

    /// Every extension pushwake shows a state for, or should: those it showed one for,
    /// the configured ones, and those with devices of their own.
    fn all_states_stale(&mut self) {
        if !self.settings.extension_states {
            return;
        }
        let mut all: BTreeSet<String> = self.published.keys().cloned().collect();
        all.extend(self.directory.numbers().map(str::to_owned));
        if let Some(source) = &self.registered {
            all.extend(source.extensions());
        }
        self.stale_states.extend(all);
    }

    /// Notes that `extension`'s state may have changed (if states are shown at all).
    fn state_may_change(&mut self, extension: &str) {
        if self.settings.extension_states {
            self.stale_states.insert(extension.to_owned());
        }
    }

    /// Shows the PBX the state of every extension whose state may have changed, where it
    /// did change (or was never shown).
    fn publish_states(&mut self) {
        if self.stale_states.is_empty() {
            return;
        }
        let stale = std::mem::take(&mut self.stale_states);
        // Each stale extension's (waiting, connected) calls, in one pass over the calls.
        let mut calls: HashMap<&str, (usize, usize)> = HashMap::new();
        for call in self.calls.values().filter(|c| stale.contains(&c.extension)) {
            let tally = calls.entry(call.extension.as_str()).or_default();
            match call.phase {
                Phase::Waiting => tally.0 += 1,
                Phase::Connecting { .. } | Phase::Connected { .. } => tally.1 += 1,
            }
        }
        for extension in stale {
            let (waiting, connected) = calls.get(extension.as_str()).copied().unwrap_or_default();
            let devices = self.policy_of(&extension).map_or(0, |p| {
                p.devices
                    .iter()
                    .filter(|d| !self.dead_tokens.contains(&d.token))
                    .count()
            });
            let push_enabled = devices > 0 || self.directory.extension(&extension).is_some();
            if !push_enabled && !self.published.contains_key(&extension) {
                continue;
            }
            let state = ExtensionState::of(devices, waiting, connected);
            if self.published.get(&extension) == Some(&Some(state)) {
                continue;
            }
            tracing::debug!(%extension, state = state.as_str(), "extension state");
            self.published.insert(extension.clone(), Some(state));
            self.commands
                .push_back(Command::Pbx(PbxCommand::PublishState { extension, state }));
        }
    }

    /// The next queued command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`WakeEngine::handle_timeout`] must next be called, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter(|c| c.phase == Phase::Waiting)
            .flat_map(|c| {
                [
                    Some(c.deadline),
                    c.next_poll,
                    c.fallback.as_ref().map(|f| f.0),
                    c.redials.iter().map(|r| r.at).min(),
                ]
            })
            .flatten()
            .min()
    }

    /// Number of callers currently waiting for a device (not yet bridged).
    pub fn waiting_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.phase == Phase::Waiting)
            .count()
    }

    /// Number of calls the engine tracks (waiting or bridged).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Counters since start.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.handle_input(now, input);
        self.publish_states();
    }

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Event(event) => self.handle_event(now, event),
            Input::ContactsListed { call, result, .. } => self.contacts_listed(now, &call, result),
            Input::DialResult { leg, result } => self.dial_result(now, &leg, result),
            Input::ConnectResult { call, result } => self.connect_result(now, &call, result),
            Input::PushResult {
                call,
                device,
                verdict,
            } => self.push_result(now, &call, device, verdict),
            Input::DevicesChanged(DevicesChanged::All) => self.all_states_stale(),
            Input::DevicesChanged(DevicesChanged::Of(extensions)) => {
                for extension in extensions {
                    self.state_may_change(&extension);
                }
            }
        }
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let fallbacks: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.phase == Phase::Waiting && now < c.deadline)
            .filter(|c| c.fallback.as_ref().is_some_and(|(at, _)| now >= *at))
            .map(|c| c.id.clone())
            .collect();
        for id in fallbacks {
            self.dial_fallback(now, &id);
        }
        self.redial_due(now);
        let due: Vec<(CallId, bool)> = self
            .calls
            .values()
            .filter(|c| c.phase == Phase::Waiting)
            .filter_map(|c| {
                if now >= c.deadline {
                    Some((c.id.clone(), true))
                } else if c.next_poll.is_some_and(|t| now >= t) {
                    Some((c.id.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (id, expired) in due {
            if expired {
                tracing::info!(call = %id, "no device answered in time");
                self.return_caller(now, &id, WakeStatus::Timeout);
            } else if let Some(call) = self.calls.get_mut(&id) {
                call.next_poll = None;
                let command = PbxCommand::ListContacts {
                    call: call.id.clone(),
                    caller: call.caller.clone(),
                    extension: call.extension.clone(),
                };
                self.commands.push_back(Command::Pbx(command));
            }
        }
        self.publish_states();
    }

    /// Returns every waiting caller to the dialplan with `SHUTDOWN` and refuses new
    /// ones. Bridged calls are left talking: they do not need the daemon, and the next
    /// daemon adopts them.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let waiting: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.phase == Phase::Waiting)
            .map(|c| c.id.clone())
            .collect();
        for id in waiting {
            self.return_caller(now, &id, WakeStatus::Shutdown);
        }
        self.publish_states();
    }

    fn handle_event(&mut self, now: Instant, event: PbxEvent) {
        match event {
            PbxEvent::Connected(snapshot) => self.reconcile(now, snapshot),
            PbxEvent::Disconnected => {
                tracing::debug!(
                    waiting = self.waiting_calls(),
                    "PBX events lost; waiting calls continue"
                );
            }
            PbxEvent::CallerArrived {
                channel,
                extension,
                caller,
            } => self.caller_arrived(now, channel, extension, caller),
            PbxEvent::LegAnswered { leg } => match self.by_leg.get(&leg).cloned() {
                Some(call) => self.leg_answered(now, &call, &leg),
                None => {
                    // A leg of a call that is over, or of a previous daemon process.
                    tracing::info!(leg = %leg, "hanging up a leg of a call that is no longer waiting");
                    self.hangup(leg, HangupReason::AnsweredElsewhere);
                }
            },
            PbxEvent::LegRinging { leg: channel } => {
                if let Some(call) = self.call_of_leg(&channel) {
                    let id = call.id.clone();
                    if let Some(leg) = call.leg_mut(&channel) {
                        // Logged once: a PBX may report ringing more than once per leg.
                        if matches!(leg.state, LegState::Requested | LegState::Dialing) {
                            leg.state = LegState::Ringing;
                            tracing::debug!(call = %id, leg = %channel, "phone ringing");
                        }
                    }
                }
            }
            PbxEvent::ChannelGone {
                channel,
                cause,
                answered_elsewhere,
            } => self.channel_gone(now, &channel, &cause, answered_elsewhere),
            PbxEvent::ContactAdded { extension, uri } => {
                let waiting: Vec<CallId> = self
                    .calls
                    .values()
                    .filter(|c| c.phase == Phase::Waiting && c.extension == extension)
                    .map(|c| c.id.clone())
                    .collect();
                for id in waiting {
                    let contact = Contact {
                        uri: uri.clone(),
                        registration: None,
                    };
                    self.consider_contact(now, &id, contact, true);
                }
            }
            PbxEvent::ContactRemoved { extension, uri } => {
                // A leg already ringing that contact fails by itself; a redial of it
                // would only fail too.
                for call in self
                    .calls
                    .values_mut()
                    .filter(|c| c.phase == Phase::Waiting && c.extension == extension)
                {
                    call.redials
                        .retain(|r| r.target.contact() != Some(uri.as_str()));
                }
            }
            PbxEvent::MessageReceived(_) => {
                // Messages are the courier's (crate::messages::courier), not calls.
            }
        }
    }

    fn call_of_leg(&mut self, leg: &ChannelId) -> Option<&mut Call> {
        let id = self.by_leg.get(leg)?;
        self.calls.get_mut(id)
    }

    fn caller_arrived(
        &mut self,
        now: Instant,
        channel: ChannelId,
        extension: String,
        party: Party,
    ) {
        if self.by_caller.contains_key(&channel) {
            // The same hand-over reported twice.
            return;
        }
        self.stats.calls += 1;
        if self.shutting_down {
            self.return_to_dialplan(now, channel, WakeStatus::Shutdown);
            return;
        }
        let policy = match self.policy_of(&extension) {
            Some(p)
                if p.devices
                    .iter()
                    .any(|d| !self.dead_tokens.contains(&d.token)) =>
            {
                let mut policy = p;
                policy
                    .devices
                    .retain(|d| !self.dead_tokens.contains(&d.token));
                policy
            }
            Some(p) if !p.devices.is_empty() => {
                tracing::info!(caller = %channel, extension, "every device of the extension has a dead token: NOPUSH");
                self.return_to_dialplan(now, channel, WakeStatus::NoPush);
                return;
            }
            Some(_) => {
                tracing::info!(caller = %channel, extension, "extension has no devices: NOPUSH");
                self.return_to_dialplan(now, channel, WakeStatus::NoPush);
                return;
            }
            None => {
                tracing::info!(caller = %channel, extension, "extension is not push-enabled: NOPUSH");
                self.return_to_dialplan(now, channel, WakeStatus::NoPush);
                return;
            }
        };
        let id = CallId(uuid_v4(&mut *self.random));
        let deadline = now + policy.ring_timeout;
        // A fallback due only when the caller is gone anyway is never rung.
        let fallback = policy
            .fallback
            .as_ref()
            .filter(|f| f.after < policy.ring_timeout)
            .map(|f| (now + f.after, f.dial.clone()));
        tracing::info!(
            call = %id, caller = %channel, extension, from = %party.number,
            devices = policy.devices.len(), ring_timeout = ?policy.ring_timeout,
            "caller waiting: ringing, pushing devices and dialling contacts"
        );
        let status = self.settings.status_base_url.as_ref().map(|base| {
            // 256 bits from the randomness handed in: in the daemon, the operating
            // system's CSPRNG, the generator pushwake's other cryptography uses.
            let link = StatusLink {
                url: format!("{base}/v1/calls/{id}"),
                token: StatusSecret::generate(&mut *self.random),
            };
            self.commands.push_back(Command::CallStatus {
                call: id.clone(),
                update: StatusUpdate::Ringing {
                    extension: extension.clone(),
                    secret: link.token.clone(),
                },
            });
            link
        });
        self.commands.push_back(Command::Pbx(PbxCommand::Ring {
            caller: channel.clone(),
        }));
        self.commands
            .push_back(Command::Pbx(PbxCommand::ListContacts {
                call: id.clone(),
                caller: channel.clone(),
                extension: extension.clone(),
            }));
        for (index, device) in policy.devices.iter().enumerate() {
            self.stats.pushes += 1;
            self.commands.push_back(Command::Push(PushJob {
                call: id.clone(),
                device_index: index,
                device: device.clone(),
                push: WakePush {
                    call_id: id.clone(),
                    extension: extension.clone(),
                    caller: party.clone(),
                    kind: PushKind::IncomingCall,
                    status: status.clone(),
                    node: self.settings.node.clone(),
                },
                deadline,
            }));
        }
        self.by_caller.insert(channel.clone(), id.clone());
        self.state_may_change(&extension);
        self.calls.insert(
            id.clone(),
            Call {
                id,
                caller: channel,
                extension,
                party,
                started: now,
                deadline,
                next_poll: None,
                phase: Phase::Waiting,
                legs: Vec::new(),
                pushes: vec![PushState::Pending; policy.devices.len()],
                devices: policy.devices,
                contacts_listed: false,
                status,
                fallback,
                redials: Vec::new(),
            },
        );
    }

    fn contacts_listed(
        &mut self,
        now: Instant,
        id: &CallId,
        result: Result<Vec<Contact>, PbxError>,
    ) {
        let poll = self.settings.contact_poll;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.phase != Phase::Waiting {
            return;
        }
        call.contacts_listed = true;
        call.next_poll = poll.map(|poll| now + poll);
        match result {
            Ok(contacts) => {
                for contact in newest_per_device(contacts) {
                    self.consider_contact(now, id, contact, false);
                }
            }
            Err(error) => {
                tracing::warn!(call = %id, %error, "could not list the extension's contacts");
            }
        }
        self.fail_if_hopeless(now, id);
    }

    /// Dials `contact` for the call unless a leg already covers it.
    ///
    /// `announced` is true when the PBX reported a new registration; otherwise the
    /// contact comes from a listing, where only a changed registration marker means the
    /// phone registered again.
    fn consider_contact(&mut self, now: Instant, id: &CallId, contact: Contact, announced: bool) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let latest = call.legs.iter_mut().rev().find(|l| l.uri == contact.uri);
        let mut replace = None;
        match latest {
            None => {}
            Some(leg) => {
                let refreshed = matches!(
                    (&leg.registration, &contact.registration),
                    (Some(old), Some(new)) if old != new
                );
                if contact.registration.is_some() {
                    leg.registration = contact.registration.clone();
                }
                if refreshed && matches!(leg.state, LegState::Gone | LegState::Dialing) {
                    // The PBX announced no event for this; the contact listing shows it.
                    tracing::info!(call = %id, leg = %leg.id, "phone registered again on the same contact: ringing it anew");
                }
                match leg.state {
                    LegState::Gone if announced || refreshed => {}
                    LegState::Dialing if refreshed => {
                        // The phone came back on the same URI, which the PBX does not
                        // announce. The old leg's INVITE went to a phone that was asleep
                        // and may be retransmitted only seconds from now: ring it anew.
                        replace = Some(leg.id.clone());
                    }
                    _ => return,
                }
            }
        }
        // One phone, one INVITE: a leg still trying an older contact of the same device
        // (it registered again from another address) is cancelled for this one.
        let mut doomed: Vec<ChannelId> = replace.into_iter().collect();
        if let Some(device) = device_key(&contact.uri) {
            for leg in call.legs.iter_mut().filter(|l| {
                l.uri != contact.uri
                    && matches!(
                        l.state,
                        LegState::Requested | LegState::Dialing | LegState::Ringing
                    )
                    && device_key(&l.uri).as_ref() == Some(&device)
            }) {
                tracing::info!(call = %id, leg = %leg.id, "the phone registered again from another address: ringing it there instead");
                doomed.push(leg.id.clone());
            }
        }
        for old in &doomed {
            if let Some(leg) = call.leg_mut(old) {
                leg.state = LegState::Gone;
            }
        }
        call.drop_redials_superseded_by(&contact.uri);
        for old in doomed {
            self.by_leg.remove(&old);
            self.hangup(old, HangupReason::Normal);
        }
        self.dial(now, id, contact);
    }

    /// Rings the extension's fallback: no device answered within its `fallback_after`.
    fn dial_fallback(&mut self, now: Instant, id: &CallId) {
        let Some((_, dial)) = self.calls.get_mut(id).and_then(|c| c.fallback.take()) else {
            return;
        };
        tracing::info!(call = %id, "no device answered yet: ringing the fallback too");
        self.dial_target(now, id, DialTarget::Fallback(dial), None, 1);
    }

    fn dial(&mut self, now: Instant, id: &CallId, contact: Contact) {
        self.dial_target(
            now,
            id,
            DialTarget::Contact(contact.uri),
            contact.registration,
            1,
        );
    }

    /// Sends the redials whose time has come, of calls still waiting, unless a leg
    /// already rings that target again (the phone registered anew in the meantime).
    fn redial_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        // Read-only for the calls without a redial (nearly all): this runs on every
        // timer of every waiting call.
        for call in self
            .calls
            .values_mut()
            .filter(|c| !c.redials.is_empty() && c.phase == Phase::Waiting && now < c.deadline)
        {
            let (ready, later) = std::mem::take(&mut call.redials)
                .into_iter()
                .partition(|r| now >= r.at);
            call.redials = later;
            for redial in ready {
                let (uri, fallback) = target_uri(&redial.target);
                let covered = call
                    .live_legs()
                    .any(|l| l.uri == uri && l.fallback == fallback);
                if !covered {
                    due.push((call.id.clone(), redial));
                }
            }
        }
        for (id, redial) in due {
            self.dial_target(now, &id, redial.target, redial.registration, redial.attempt);
        }
    }

    fn dial_target(
        &mut self,
        now: Instant,
        id: &CallId,
        target: DialTarget,
        registration: Option<String>,
        attempt: usize,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let leg = ChannelId(uuid_v4(&mut *self.random));
        let left = call.deadline.saturating_duration_since(now);
        // Whole seconds, rounded up: the PBX's own safety timeout for the leg.
        let timeout = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .max(Duration::from_secs(1));
        let (uri, fallback) = target_uri(&target);
        let uri = uri.to_owned();
        let what = if fallback { "fallback" } else { "contact" };
        if attempt > 1 {
            tracing::info!(call = %id, leg = %leg, after = ?now - call.started, attempt, "dialling {what} again");
        } else {
            tracing::info!(call = %id, leg = %leg, after = ?now - call.started, "dialling {what}");
        }
        let request = DialRequest {
            call: call.id.clone(),
            leg: leg.clone(),
            caller_channel: call.caller.clone(),
            extension: call.extension.clone(),
            target,
            caller: call.party.clone(),
            timeout,
        };
        call.legs.push(Leg {
            id: leg.clone(),
            uri,
            fallback,
            registration,
            state: LegState::Requested,
            attempt,
        });
        self.by_leg.insert(leg, id.clone());
        self.stats.legs_dialled += 1;
        self.commands
            .push_back(Command::Pbx(PbxCommand::Dial(request)));
    }

    fn dial_result(&mut self, now: Instant, leg_id: &ChannelId, result: Result<(), PbxError>) {
        let Some(call_id) = self.by_leg.get(leg_id).cloned() else {
            if result.is_ok() {
                // The call ended while the request was in flight; the hang-up sent then
                // may have come before the channel existed.
                self.hangup(leg_id.clone(), HangupReason::Normal);
            }
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        // A redial must still find the caller waiting, with time left to ring.
        let redial_until = (call.phase == Phase::Waiting).then_some(call.deadline);
        let Some(leg) = call.leg_mut(leg_id) else {
            return;
        };
        match result {
            Ok(()) => {
                tracing::debug!(call = %call_id, leg = %leg_id, "dial request accepted");
                if leg.state == LegState::Requested {
                    leg.state = LegState::Dialing;
                }
            }
            Err(error) => {
                leg.state = LegState::Gone;
                let unreachable = matches!(error, PbxError::Unavailable(_));
                let retry = REDIAL_DELAYS
                    .get(leg.attempt.saturating_sub(1))
                    .map(|delay| now + *delay)
                    .filter(|at| unreachable && redial_until.is_some_and(|until| *at < until));
                match retry {
                    Some(at) => {
                        tracing::warn!(call = %call_id, leg = %leg_id, %error, retry_in = ?at - now, "dial request failed: the PBX could not be reached; dialling again");
                        let target = match leg.fallback {
                            true => DialTarget::Fallback(leg.uri.clone()),
                            false => DialTarget::Contact(leg.uri.clone()),
                        };
                        let redial = Redial {
                            at,
                            target,
                            registration: leg.registration.clone(),
                            attempt: leg.attempt + 1,
                        };
                        let target = redial.target.clone();
                        call.redials.retain(|r| r.target != target);
                        call.redials.push(redial);
                    }
                    None => {
                        tracing::warn!(call = %call_id, leg = %leg_id, %error, "dial request failed");
                    }
                }
                self.by_leg.remove(leg_id);
                if unreachable {
                    // The PBX may have created the leg all the same (the connection broke
                    // after the request reached it): that leg must not ring the phone
                    // beside its redial.
                    self.hangup(leg_id.clone(), HangupReason::Normal);
                }
                self.fail_if_hopeless(now, &call_id);
            }
        }
    }

    fn leg_answered(&mut self, now: Instant, id: &CallId, leg_id: &ChannelId) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        match &call.phase {
            // A PBX may deliver a leg's events twice: the winner answering again is the
            // same answer, not a second one.
            Phase::Connecting { leg, .. } | Phase::Connected { leg, .. } if leg == leg_id => return,
            _ => {}
        }
        if call.phase != Phase::Waiting {
            tracing::info!(call = %id, leg = %leg_id, "a second device answered: hanging it up");
            if let Some(leg) = call.leg_mut(leg_id) {
                leg.state = LegState::Gone;
            }
            self.by_leg.remove(leg_id);
            self.hangup(leg_id.clone(), HangupReason::AnsweredElsewhere);
            return;
        }
        tracing::info!(call = %id, leg = %leg_id, after = ?now - call.started, "device answered: connecting the caller");
        let mut losers = Vec::new();
        for leg in call.legs.iter_mut() {
            if &leg.id == leg_id {
                leg.state = LegState::Answered;
            } else if leg.state.is_live() {
                leg.state = LegState::Gone;
                losers.push(leg.id.clone());
            }
        }
        call.phase = Phase::Connecting {
            leg: leg_id.clone(),
        };
        // (`state_may_change`, written out: `call` borrows the calls.)
        if self.settings.extension_states {
            self.stale_states.insert(call.extension.clone());
        }
        if call.status.is_some() {
            // Answered from the app's point of view: the caller is being connected and
            // every other leg is cancelled now.
            self.commands.push_back(Command::CallStatus {
                call: id.clone(),
                update: StatusUpdate::Answered,
            });
        }
        // Which devices lost: the others are told now, but the one that answered must
        // never be told its own call ended. It is known by the RFC 8599 token in its
        // contact; if its contact carries none, the devices named by the other legs'
        // contacts lost for sure, and if that leaves one device, that one answered. The
        // devices it could still be are told nothing.
        let named_by = |uri: &str| {
            call.devices
                .iter()
                .position(|d| contact_names_device(uri, &d.token))
        };
        let winner_uri = call
            .legs
            .iter()
            .find(|l| &l.id == leg_id)
            .map(|l| l.uri.as_str())
            .unwrap_or_default();
        let losing: HashSet<usize> = call
            .legs
            .iter()
            .filter(|l| &l.id != leg_id)
            .filter_map(|l| named_by(&l.uri))
            .collect();
        let by_fallback = call.legs.iter().any(|l| &l.id == leg_id && l.fallback);
        let candidates: Vec<usize> = match named_by(winner_uri) {
            // The fallback is none of the devices: every one of them is told.
            _ if by_fallback => Vec::new(),
            Some(winner) => vec![winner],
            None => (0..call.devices.len())
                .filter(|d| !losing.contains(d))
                .collect(),
        };
        if candidates.len() > 1 {
            tracing::debug!(call = %id, candidates = candidates.len(), "the device that answered is not known by its contact: the devices it may be are not told the call ended");
        }
        for candidate in candidates {
            call.pushes[candidate] = PushState::Done;
        }
        if by_fallback {
            tracing::info!(call = %id, leg = %leg_id, "the fallback answered");
        }
        self.commands.push_back(Command::Pbx(PbxCommand::Connect {
            call: id.clone(),
            caller: call.caller.clone(),
            leg: leg_id.clone(),
            status: if by_fallback {
                WakeStatus::AnsweredFallback
            } else {
                WakeStatus::Answered
            },
        }));
        for loser in losers {
            self.by_leg.remove(&loser);
            self.hangup(loser, HangupReason::AnsweredElsewhere);
        }
        self.tell_devices(now, id, EndReason::AnsweredElsewhere);
    }

    fn connect_result(&mut self, now: Instant, id: &CallId, result: Result<(), PbxError>) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Phase::Connecting { leg } = call.phase.clone() else {
            return;
        };
        match result {
            Ok(()) => {
                tracing::info!(call = %id, leg = %leg, after = ?now - call.started, "caller connected");
                call.phase = Phase::Connected { leg };
            }
            Err(error) => {
                tracing::error!(call = %id, %error, "could not connect the caller with the device that answered");
                let caller = call.caller.clone();
                self.hangup(leg, HangupReason::Normal);
                self.release(id.clone());
                self.return_to_dialplan(now, caller, WakeStatus::Failed);
                self.end_call(now, id, CallOutcome::Returned(WakeStatus::Failed));
            }
        }
    }

    fn push_result(&mut self, now: Instant, id: &CallId, device: usize, verdict: PushVerdict) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(state) = call.pushes.get_mut(device) else {
            return;
        };
        if *state != PushState::Pending {
            return;
        }
        if let PushVerdict::Failed {
            dead_token: true,
            reason,
        } = &verdict
        {
            let device = &call.devices[device];
            if self.dead_tokens.insert(device.token.clone()) {
                // Said once: the device is skipped from now on.
                tracing::warn!(
                    device = %device.label, token = %device.token, %reason,
                    "the push service says this device's token is dead: no more pushes to it until the configuration is reloaded; update or remove the device"
                );
            }
        }
        match verdict {
            PushVerdict::Delivered => *state = PushState::Delivered,
            PushVerdict::Failed { .. } | PushVerdict::NotSent { .. } => {
                *state = PushState::Failed;
                self.fail_if_hopeless(now, id);
            }
        }
    }

    /// Returns the caller with `FAILED` when nothing can reach a device any more: every
    /// push failed for good, the contacts are known and no leg is alive.
    fn fail_if_hopeless(&mut self, now: Instant, id: &CallId) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let hopeless = call.phase == Phase::Waiting
            && call.contacts_listed
            && call.live_legs().next().is_none()
            && call.redials.is_empty()
            && call.pushes.iter().all(|p| *p == PushState::Failed);
        if hopeless && call.fallback.is_some() {
            tracing::warn!(call = %id, "every push failed and no contact could be rung: ringing the fallback now");
            self.dial_fallback(now, id);
        } else if hopeless {
            tracing::warn!(call = %id, "every push failed and no contact could be rung");
            self.return_caller(now, id, WakeStatus::Failed);
        }
    }

    fn channel_gone(
        &mut self,
        now: Instant,
        channel: &ChannelId,
        cause: &str,
        answered_elsewhere: bool,
    ) {
        if let Some(id) = self.by_caller.get(channel).cloned() {
            self.caller_gone(now, &id, cause, answered_elsewhere);
        } else if let Some(id) = self.by_leg.get(channel).cloned() {
            self.leg_gone(now, &id, channel, cause);
        }
    }

    fn caller_gone(&mut self, now: Instant, id: &CallId, cause: &str, answered_elsewhere: bool) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let outcome = match &call.phase {
            Phase::Waiting if answered_elsewhere => {
                tracing::info!(call = %id, cause, after = ?now - call.started, "answered elsewhere in the caller's group while waiting");
                CallOutcome::AnsweredElsewhere
            }
            Phase::Waiting => {
                tracing::info!(call = %id, cause, after = ?now - call.started, "caller hung up while waiting");
                CallOutcome::CallerHungUp
            }
            Phase::Connecting { .. } | Phase::Connected { .. } => {
                tracing::info!(call = %id, cause, "caller hung up");
                CallOutcome::Completed
            }
        };
        // A group's other member answered: the phones still ringing here say so too.
        let reason = if outcome == CallOutcome::AnsweredElsewhere {
            HangupReason::AnsweredElsewhere
        } else {
            HangupReason::Normal
        };
        self.tear_down(id, reason, None);
        self.end_call(now, id, outcome);
    }

    fn leg_gone(&mut self, now: Instant, id: &CallId, leg_id: &ChannelId, cause: &str) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if let Some(leg) = call.leg_mut(leg_id) {
            leg.state = LegState::Gone;
        }
        self.by_leg.remove(leg_id);
        match &call.phase {
            Phase::Connecting { leg, .. } | Phase::Connected { leg, .. } if leg == leg_id => {
                tracing::info!(call = %id, cause, "device hung up");
                let caller = call.caller.clone();
                self.tear_down(id, HangupReason::Normal, Some(caller));
                self.end_call(now, id, CallOutcome::Completed);
            }
            Phase::Waiting => {
                tracing::info!(call = %id, leg = %leg_id, cause, "leg ended without answering");
                self.fail_if_hopeless(now, id);
            }
            _ => {}
        }
    }

    /// Hangs up every live leg of the call and releases its conversation; also hangs up
    /// `caller` if given.
    fn tear_down(&mut self, id: &CallId, reason: HangupReason, caller: Option<ChannelId>) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let mut doomed = Vec::new();
        for leg in call.legs.iter_mut().filter(|l| l.state.is_live()) {
            leg.state = LegState::Gone;
            doomed.push(leg.id.clone());
        }
        let joined = call.phase.joined();
        for leg in doomed {
            self.hangup(leg, reason);
        }
        if let Some(caller) = caller {
            self.hangup(caller, reason);
        }
        if joined {
            self.release(id.clone());
        }
    }

    /// Ends a waiting call: hangs up its legs and returns the caller to the dialplan.
    fn return_caller(&mut self, now: Instant, id: &CallId, status: WakeStatus) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let caller = call.caller.clone();
        tracing::info!(call = %id, %status, after = ?now - call.started, "returning the caller to the dialplan");
        self.tear_down(id, HangupReason::Normal, None);
        self.return_to_dialplan(now, caller, status);
        self.end_call(now, id, CallOutcome::Returned(status));
    }

    fn end_call(&mut self, now: Instant, id: &CallId, outcome: CallOutcome) {
        let reason = match outcome {
            CallOutcome::CallerHungUp => EndReason::CallerHungUp,
            CallOutcome::AnsweredElsewhere => EndReason::AnsweredElsewhere,
            CallOutcome::Returned(WakeStatus::Timeout) => EndReason::Timeout,
            CallOutcome::Returned(_) => EndReason::Ended,
            // Answered by a device that could not be told apart from the others.
            CallOutcome::Completed => EndReason::AnsweredElsewhere,
        };
        if self.calls.get(id).is_some_and(|c| c.status.is_some()) {
            // Before the "call ended" pushes: an app they wake finds the call ended.
            self.commands.push_back(Command::CallStatus {
                call: id.clone(),
                update: StatusUpdate::Ended(reason),
            });
        }
        self.tell_devices(now, id, reason);
        if let Some(call) = self.calls.remove(id) {
            self.state_may_change(&call.extension);
            self.by_caller.remove(&call.caller);
            for leg in &call.legs {
                self.by_leg.remove(&leg.id);
            }
        }
        *self.stats.outcomes.entry(outcome).or_default() += 1;
    }

    /// Tells every device pushed for the call, and not yet told, that the call ended
    /// without it, and stops the call's wake-up pushes still being tried.
    fn tell_devices(&mut self, now: Instant, id: &CallId, reason: EndReason) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.devices.is_empty() {
            return;
        }
        self.commands
            .push_back(Command::AbortPushes { call: id.clone() });
        for (index, state) in call.pushes.iter_mut().enumerate() {
            if !matches!(state, PushState::Pending | PushState::Delivered) {
                continue;
            }
            *state = PushState::Done;
            self.commands.push_back(Command::Push(PushJob {
                call: id.clone(),
                device_index: index,
                device: call.devices[index].clone(),
                push: WakePush {
                    call_id: id.clone(),
                    extension: call.extension.clone(),
                    caller: call.party.clone(),
                    kind: PushKind::CallEnded(reason),
                    status: call.status.clone(),
                    node: self.settings.node.clone(),
                },
                deadline: now + CALL_ENDED_WINDOW,
            }));
        }
    }

    fn hangup(&mut self, channel: ChannelId, reason: HangupReason) {
        self.commands
            .push_back(Command::Pbx(PbxCommand::Hangup { channel, reason }));
    }

    fn return_to_dialplan(&mut self, now: Instant, caller: ChannelId, status: WakeStatus) {
        self.forget_old_returns(now);
        self.returned.push_back((now, caller.clone(), status));
        self.commands
            .push_back(Command::Pbx(PbxCommand::Return { caller, status }));
    }

    fn forget_old_returns(&mut self, now: Instant) {
        while self
            .returned
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= RETURN_MEMORY)
        {
            self.returned.pop_front();
        }
    }

    fn release(&mut self, call: CallId) {
        self.commands
            .push_back(Command::Pbx(PbxCommand::Release { call }));
    }

    /// Makes the engine's view agree with what the PBX holds after a (re)connect:
    /// callers left waiting by a previous process go back to the dialplan, their legs are
    /// hung up, conversations joined by a previous process are adopted, the ones that
    /// cannot go on are released, and hang-ups missed while disconnected are applied.
    fn reconcile(&mut self, now: Instant, snapshot: PbxSnapshot) {
        // The PBX may have restarted and forgotten every state shown to it: show all anew.
        for shown in self.published.values_mut() {
            *shown = None;
        }
        self.all_states_stale();
        for conversation in snapshot.conversations {
            if !self.calls.contains_key(&conversation.call) {
                self.adopt(now, conversation);
            }
        }
        for call in snapshot.broken {
            if !self.calls.contains_key(&call) {
                tracing::info!(call = %call, "releasing a conversation left by a previous process");
                self.release(call);
            }
        }
        self.forget_old_returns(now);
        let returned: HashMap<ChannelId, WakeStatus> = self
            .returned
            .iter()
            .map(|(_, caller, status)| (caller.clone(), *status))
            .collect();
        for held in snapshot.callers {
            let ch = held.channel;
            if self.by_caller.contains_key(&ch) || self.by_leg.contains_key(&ch) {
                continue;
            }
            if let Some(status) = returned.get(&ch) {
                // Returned by this process, and still held when the PBX was asked: the
                // return may have been lost with the connection. Again, and the same.
                tracing::info!(caller = %ch, %status, "returning a caller to the dialplan again");
                self.return_to_dialplan(now, ch, *status);
                continue;
            }
            tracing::warn!(caller = %ch, extension = %held.extension, "returning a caller left waiting by a previous process: RECOVERED");
            self.return_to_dialplan(now, ch, WakeStatus::Recovered);
        }
        for leg in snapshot.legs {
            if self.by_caller.contains_key(&leg) || self.by_leg.contains_key(&leg) {
                continue;
            }
            tracing::info!(leg = %leg, "hanging up a leg left by a previous process");
            self.hangup(leg, HangupReason::Normal);
        }
        // Hang-ups that happened while the event stream was down.
        let gone: Vec<ChannelId> = self
            .calls
            .values()
            .flat_map(|c| {
                let legs = c
                    .legs
                    .iter()
                    .filter(|l| {
                        matches!(
                            l.state,
                            LegState::Dialing | LegState::Ringing | LegState::Answered
                        )
                    })
                    .map(|l| l.id.clone());
                std::iter::once(c.caller.clone()).chain(legs)
            })
            .filter(|ch| !snapshot.live.contains(ch))
            .collect();
        for channel in gone {
            self.channel_gone(now, &channel, "gone while disconnected", false);
        }
    }

    /// Looks after a conversation a previous process joined: when one side hangs up,
    /// the other is hung up too.
    fn adopt(&mut self, now: Instant, conversation: Conversation) {
        let Conversation {
            call: id,
            caller,
            leg,
            extension,
        } = conversation;
        tracing::info!(call = %id, "adopting a conversation connected by a previous process");
        self.by_caller.insert(caller.clone(), id.clone());
        self.by_leg.insert(leg.clone(), id.clone());
        self.state_may_change(&extension);
        self.calls.insert(
            id.clone(),
            Call {
                id,
                caller,
                extension,
                party: Party::default(),
                started: now,
                deadline: now,
                next_poll: None,
                phase: Phase::Connected { leg: leg.clone() },
                legs: vec![Leg {
                    id: leg,
                    uri: String::new(),
                    fallback: false,
                    registration: None,
                    state: LegState::Answered,
                    attempt: 1,
                }],
                devices: Vec::new(),
                pushes: Vec::new(),
                contacts_listed: true,
                // Its secret died with the previous process.
                status: None,
                fallback: None,
                redials: Vec::new(),
            },
        );
    }
}

/// The phone a contact belongs to, by its RFC 8599 provider and token; `None` for a
/// contact without (usable) push parameters.
/// What a target rings, as a leg records it: the URI or dial string, and whether it is
/// the fallback.
fn target_uri(target: &DialTarget) -> (&str, bool) {
    match target {
        DialTarget::Contact(uri) => (uri, false),
        DialTarget::Fallback(dial) => (dial, true),
    }
}

fn device_key(uri: &str) -> Option<(String, String)> {
    PushParams::from_contact(uri)
        .ok()
        .flatten()
        .map(|p| p.device_key())
}

/// The contacts of a listing with, for each phone that has several (it registered
/// again from another address before the old contact expired), only the one registered
/// last: the greatest registration marker, or the last listed when the markers do not
/// say. Contacts without push parameters are all kept, in order.
fn newest_per_device(contacts: Vec<Contact>) -> Vec<Contact> {
    let marker = |c: &Contact| {
        c.registration
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
    };
    let mut kept: Vec<(Option<(String, String)>, Contact)> = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let key = device_key(&contact.uri);
        let earlier = key
            .as_ref()
            .and_then(|k| kept.iter().position(|(other, _)| other.as_ref() == Some(k)));
        match earlier {
            Some(at) if marker(&kept[at].1) > marker(&contact) => {}
            Some(at) => kept[at].1 = contact,
            None => kept.push((key, contact)),
        }
    }
    kept.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests;
