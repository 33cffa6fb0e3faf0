//! The call/wake logic as a plain state machine.
//!
//! [`WakeEngine`] takes [`Input`]s (PBX events and the results of earlier commands)
//! together with the current time, and queues [`Command`]s (call control for the PBX,
//! pushes for devices). It owns no socket, spawns nothing and never sleeps: the caller
//! asks [`WakeEngine::next_timeout`] when it next needs to be woken and calls
//! [`WakeEngine::handle_timeout`] then. That keeps every rule about a waiting caller in one
//! place and testable without a runtime (see the tests at the bottom); the async driver
//! around it is [`crate::driver`].
//!
//! The rule it never breaks: every caller that enters the application leaves it, either
//! bridged to a device or returned to the dialplan with a `PUSHWAKE_STATUS`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::directory::{Device, Directory};
use crate::pbx::{
    BridgeId, CallId, ChannelId, Contact, DialRequest, HangupReason, Party, PbxCommand, PbxError,
    PbxEvent, PbxSnapshot, WakeStatus, LEG_MARKER,
};
use crate::push::{EndReason, PushKind, PushVerdict, StatusLink, WakePush};
use crate::status::{StatusSecret, StatusUpdate};

/// Prefix of the ids pushwake gives its outgoing legs.
const LEG_PREFIX: &str = "pwleg-";
/// Prefix of the ids pushwake gives its bridges; the call id follows it.
const BRIDGE_PREFIX: &str = "pwbridge-";
/// How long a "call ended" push may still be sent after the call ended.
const CALL_ENDED_WINDOW: Duration = Duration::from_secs(10);

/// Tunables of the engine that are not per extension.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// How often a waiting call re-reads the extension's contacts. This catches a phone
    /// that registers again with the very same contact URI, which the PBX does not
    /// announce as an event, and registrations missed while the event stream was down.
    pub contact_poll: Duration,
    /// The public base URL of the call status endpoint (`[http] public_url`, without a
    /// final `/`), or `None` when it is not configured. When set, every call gets a
    /// secret, its pushes carry `{base}/v1/calls/{call_id}` and the secret, and the
    /// engine reports the call's changes ([`Command::CallStatus`]).
    pub status_base_url: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            contact_poll: Duration::from_secs(1),
            status_base_url: None,
        }
    }
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
    /// A leg answered; the caller is being answered and bridged to it.
    Connecting { leg: ChannelId, bridge: BridgeId },
    /// Caller and leg talk through the bridge.
    Connected { leg: ChannelId, bridge: BridgeId },
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
    uri: String,
    registration: Option<String>,
    state: LegState,
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
}

impl Call {
    fn live_legs(&self) -> impl Iterator<Item = &Leg> {
        self.legs.iter().filter(|l| l.state.is_live())
    }

    fn leg_mut(&mut self, id: &ChannelId) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| &l.id == id)
    }
}

/// How a call ended, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Returned to the dialplan with this status.
    Returned(WakeStatus),
    /// The caller hung up while waiting.
    CallerHungUp,
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
#[derive(Debug)]
pub struct WakeEngine {
    directory: Arc<Directory>,
    settings: EngineSettings,
    calls: HashMap<CallId, Call>,
    by_caller: HashMap<ChannelId, CallId>,
    by_leg: HashMap<ChannelId, CallId>,
    commands: VecDeque<Command>,
    shutting_down: bool,
    stats: EngineStats,
    /// Tokens a provider declared dead (unregistered, invalid): those devices get no more
    /// pushes until the configuration is reloaded.
    dead_tokens: HashSet<crate::directory::DeviceToken>,
}

impl WakeEngine {
    /// A new engine serving the extensions of `directory`.
    pub fn new(directory: Arc<Directory>, settings: EngineSettings) -> Self {
        Self {
            directory,
            settings,
            calls: HashMap::new(),
            by_caller: HashMap::new(),
            by_leg: HashMap::new(),
            commands: VecDeque::new(),
            shutting_down: false,
            stats: EngineStats::default(),
            dead_tokens: HashSet::new(),
        }
    }

    /// Replaces the directory (configuration reload). Calls already waiting keep the
    /// settings they started with. Devices disabled for a dead token are tried again:
    /// the operator may have replaced the token.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        self.directory = directory;
        self.dead_tokens.clear();
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
            .flat_map(|c| [Some(c.deadline), c.next_poll])
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
        match input {
            Input::Event(event) => self.handle_event(now, event),
            Input::ContactsListed { call, result } => self.contacts_listed(now, &call, result),
            Input::DialResult { leg, result } => self.dial_result(&leg, result),
            Input::ConnectResult { call, result } => self.connect_result(now, &call, result),
            Input::PushResult {
                call,
                device,
                verdict,
            } => self.push_result(now, &call, device, verdict),
        }
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
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
                    channel: call.caller.clone(),
                    extension: call.extension.clone(),
                };
                self.commands.push_back(Command::Pbx(command));
            }
        }
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
            PbxEvent::ChannelEntered {
                channel,
                args,
                caller,
            } => self.channel_entered(now, channel, args, caller),
            PbxEvent::ChannelRinging { channel } => {
                if let Some(call) = self.call_of_leg(&channel) {
                    let id = call.id.clone();
                    if let Some(leg) = call.leg_mut(&channel) {
                        // Logged once: Asterisk reports ringing more than once per leg.
                        if matches!(leg.state, LegState::Requested | LegState::Dialing) {
                            leg.state = LegState::Ringing;
                            tracing::debug!(call = %id, leg = %channel, "phone ringing");
                        }
                    }
                }
            }
            PbxEvent::ChannelGone { channel, cause } => self.channel_gone(now, &channel, &cause),
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
            PbxEvent::ContactRemoved { .. } => {
                // A leg already ringing that contact fails by itself; nothing to do.
            }
        }
    }

    fn call_of_leg(&mut self, leg: &ChannelId) -> Option<&mut Call> {
        let id = self.by_leg.get(leg)?;
        self.calls.get_mut(id)
    }

    fn channel_entered(
        &mut self,
        now: Instant,
        channel: ChannelId,
        args: Vec<String>,
        party: Party,
    ) {
        if let Some(call_id) = self.by_leg.get(&channel).cloned() {
            self.leg_answered(now, &call_id, &channel);
            return;
        }
        if self.by_caller.contains_key(&channel) {
            return;
        }
        if args.first().map(String::as_str) == Some(LEG_MARKER) || is_our_leg(&channel) {
            // A leg of a call that is over, or of a previous daemon process.
            tracing::info!(leg = %channel, "hanging up a leg of a call that is no longer waiting");
            self.hangup(channel, HangupReason::AnsweredElsewhere);
            return;
        }
        self.stats.calls += 1;
        if self.shutting_down {
            self.continue_caller(channel, WakeStatus::Shutdown);
            return;
        }
        let extension = args.first().cloned().unwrap_or_default();
        let policy = match self.directory.extension(&extension) {
            Some(p)
                if p.devices
                    .iter()
                    .any(|d| !self.dead_tokens.contains(&d.token)) =>
            {
                let mut policy = p.clone();
                policy
                    .devices
                    .retain(|d| !self.dead_tokens.contains(&d.token));
                policy
            }
            Some(p) if !p.devices.is_empty() => {
                tracing::info!(caller = %channel, extension, "every device of the extension has a dead token: NOPUSH");
                self.continue_caller(channel, WakeStatus::NoPush);
                return;
            }
            Some(_) => {
                tracing::info!(caller = %channel, extension, "extension has no devices: NOPUSH");
                self.continue_caller(channel, WakeStatus::NoPush);
                return;
            }
            None => {
                tracing::info!(caller = %channel, extension, "extension is not push-enabled: NOPUSH");
                self.continue_caller(channel, WakeStatus::NoPush);
                return;
            }
        };
        let id = CallId(uuid::Uuid::new_v4().to_string());
        let deadline = now + policy.ring_timeout;
        tracing::info!(
            call = %id, caller = %channel, extension, from = %party.number,
            devices = policy.devices.len(), ring_timeout = ?policy.ring_timeout,
            "caller waiting: ringing, pushing devices and dialling contacts"
        );
        let status = self.settings.status_base_url.as_ref().map(|base| {
            // 256 bits from aws-lc-rs's SystemRandom, the generator pushwake's other
            // cryptography uses, rather than two v4 uuids (2 × 122 random bits from
            // whichever generator uuid's feature flags pick).
            let link = StatusLink {
                url: format!("{base}/v1/calls/{id}"),
                token: StatusSecret::generate(),
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
            channel: channel.clone(),
        }));
        self.commands
            .push_back(Command::Pbx(PbxCommand::ListContacts {
                call: id.clone(),
                channel: channel.clone(),
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
                },
                deadline,
            }));
        }
        self.by_caller.insert(channel.clone(), id.clone());
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
        call.next_poll = Some(now + poll);
        match result {
            Ok(contacts) => {
                for contact in contacts {
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
                    // Asterisk announces no event for this; the contact listing shows it.
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
        if let Some(old) = replace {
            if let Some(leg) = call.leg_mut(&old) {
                leg.state = LegState::Gone;
            }
            self.by_leg.remove(&old);
            self.hangup(old, HangupReason::Normal);
        }
        self.dial(now, id, contact);
    }

    fn dial(&mut self, now: Instant, id: &CallId, contact: Contact) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let leg = ChannelId(format!("{LEG_PREFIX}{}-{}", call.id, call.legs.len() + 1));
        let left = call.deadline.saturating_duration_since(now);
        // Whole seconds, rounded up: the PBX's own safety timeout for the leg.
        let timeout = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .max(Duration::from_secs(1));
        tracing::info!(call = %id, leg = %leg, after = ?now - call.started, "dialling contact");
        let request = DialRequest {
            call: call.id.clone(),
            leg: leg.clone(),
            caller_channel: call.caller.clone(),
            extension: call.extension.clone(),
            contact_uri: contact.uri.clone(),
            caller: call.party.clone(),
            timeout,
        };
        call.legs.push(Leg {
            id: leg.clone(),
            uri: contact.uri,
            registration: contact.registration,
            state: LegState::Requested,
        });
        self.by_leg.insert(leg, id.clone());
        self.stats.legs_dialled += 1;
        self.commands
            .push_back(Command::Pbx(PbxCommand::Dial(request)));
    }

    fn dial_result(&mut self, leg_id: &ChannelId, result: Result<(), PbxError>) {
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
                tracing::warn!(call = %call_id, leg = %leg_id, %error, "dial request failed");
                leg.state = LegState::Gone;
                self.by_leg.remove(leg_id);
                // The clock does not matter for this check.
                let started = call.started;
                self.fail_if_hopeless(started, &call_id);
            }
        }
    }

    fn leg_answered(&mut self, now: Instant, id: &CallId, leg_id: &ChannelId) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        match &call.phase {
            // Asterisk may deliver a leg's events twice: the winner entering again is
            // the same answer, not a second one.
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
        let bridge = BridgeId(format!("{BRIDGE_PREFIX}{}", call.id));
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
            bridge: bridge.clone(),
        };
        if call.status.is_some() {
            // Answered from the app's point of view: the caller is being connected and
            // every other leg is cancelled now.
            self.commands.push_back(Command::CallStatus {
                call: id.clone(),
                update: StatusUpdate::Answered,
            });
        }
        // The device that answered, known by the RFC 8599 token in its contact. Only if
        // it is known are the others told now: telling every device would end the call
        // on the one that just answered.
        let winner_uri = call
            .legs
            .iter()
            .find(|l| &l.id == leg_id)
            .map(|l| l.uri.clone())
            .unwrap_or_default();
        let winner = call
            .devices
            .iter()
            .position(|d| contact_names_device(&winner_uri, &d.token));
        self.commands.push_back(Command::Pbx(PbxCommand::Connect {
            call: id.clone(),
            caller: call.caller.clone(),
            leg: leg_id.clone(),
            bridge,
        }));
        for loser in losers {
            self.by_leg.remove(&loser);
            self.hangup(loser, HangupReason::AnsweredElsewhere);
        }
        if let Some(winner) = winner {
            if let Some(call) = self.calls.get_mut(id) {
                call.pushes[winner] = PushState::Done;
            }
            self.tell_devices(now, id, EndReason::AnsweredElsewhere);
        }
    }

    fn connect_result(&mut self, now: Instant, id: &CallId, result: Result<(), PbxError>) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Phase::Connecting { leg, bridge } = call.phase.clone() else {
            return;
        };
        match result {
            Ok(()) => {
                tracing::info!(call = %id, leg = %leg, after = ?now - call.started, "caller connected");
                call.phase = Phase::Connected { leg, bridge };
            }
            Err(error) => {
                tracing::error!(call = %id, %error, "could not bridge the caller with the device that answered");
                let caller = call.caller.clone();
                self.hangup(leg, HangupReason::Normal);
                self.commands
                    .push_back(Command::Pbx(PbxCommand::DestroyBridge { bridge }));
                self.continue_caller(caller, WakeStatus::Failed);
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
            && call.pushes.iter().all(|p| *p == PushState::Failed);
        if hopeless {
            tracing::warn!(call = %id, "every push failed and no contact could be rung");
            self.return_caller(now, id, WakeStatus::Failed);
        }
    }

    fn channel_gone(&mut self, now: Instant, channel: &ChannelId, cause: &str) {
        if let Some(id) = self.by_caller.get(channel).cloned() {
            self.caller_gone(now, &id, cause);
        } else if let Some(id) = self.by_leg.get(channel).cloned() {
            self.leg_gone(now, &id, channel, cause);
        }
    }

    fn caller_gone(&mut self, now: Instant, id: &CallId, cause: &str) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let outcome = match &call.phase {
            Phase::Waiting => {
                tracing::info!(call = %id, cause, after = ?now - call.started, "caller hung up while waiting");
                CallOutcome::CallerHungUp
            }
            Phase::Connecting { .. } | Phase::Connected { .. } => {
                tracing::info!(call = %id, cause, "caller hung up");
                CallOutcome::Completed
            }
        };
        self.tear_down(id, HangupReason::Normal, None);
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

    /// Hangs up every live leg of the call and destroys its bridge; also hangs up
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
        let bridge = match &call.phase {
            Phase::Connecting { bridge, .. } | Phase::Connected { bridge, .. } => {
                Some(bridge.clone())
            }
            Phase::Waiting => None,
        };
        for leg in doomed {
            self.hangup(leg, reason);
        }
        if let Some(caller) = caller {
            self.hangup(caller, reason);
        }
        if let Some(bridge) = bridge {
            self.commands
                .push_back(Command::Pbx(PbxCommand::DestroyBridge { bridge }));
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
        self.continue_caller(caller, status);
        self.end_call(now, id, CallOutcome::Returned(status));
    }

    fn end_call(&mut self, now: Instant, id: &CallId, outcome: CallOutcome) {
        let reason = match outcome {
            CallOutcome::CallerHungUp => EndReason::CallerHungUp,
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
                },
                deadline: now + CALL_ENDED_WINDOW,
            }));
        }
    }

    fn hangup(&mut self, channel: ChannelId, reason: HangupReason) {
        self.commands
            .push_back(Command::Pbx(PbxCommand::Hangup { channel, reason }));
    }

    fn continue_caller(&mut self, channel: ChannelId, status: WakeStatus) {
        self.commands
            .push_back(Command::Pbx(PbxCommand::Continue { channel, status }));
    }

    /// Makes the engine's view agree with what the PBX holds after a (re)connect:
    /// callers left in the application by a previous process go back to the dialplan,
    /// their legs are hung up, bridged conversations are adopted, empty bridges go,
    /// and hang-ups missed while disconnected are applied.
    fn reconcile(&mut self, now: Instant, snapshot: PbxSnapshot) {
        let parked_args: HashMap<&ChannelId, &[String]> = snapshot
            .parked
            .iter()
            .map(|p| (&p.channel, p.args.as_slice()))
            .collect();
        let owned_bridges: HashSet<BridgeId> = self
            .calls
            .values()
            .filter_map(|c| match &c.phase {
                Phase::Connecting { bridge, .. } | Phase::Connected { bridge, .. } => {
                    Some(bridge.clone())
                }
                Phase::Waiting => None,
            })
            .collect();
        let mut adopted: HashSet<ChannelId> = HashSet::new();
        for bridge in &snapshot.bridges {
            if owned_bridges.contains(&bridge.bridge) {
                continue;
            }
            if let Some((caller, leg)) = adoptable(bridge, &parked_args) {
                let id = CallId(
                    bridge
                        .bridge
                        .0
                        .strip_prefix(BRIDGE_PREFIX)
                        .unwrap_or(&bridge.bridge.0)
                        .to_owned(),
                );
                if !self.calls.contains_key(&id) {
                    tracing::info!(call = %id, "adopting a conversation bridged by a previous process");
                    let extension = parked_args
                        .get(&caller)
                        .and_then(|a| a.first())
                        .cloned()
                        .unwrap_or_default();
                    adopted.insert(caller.clone());
                    adopted.insert(leg.clone());
                    self.by_caller.insert(caller.clone(), id.clone());
                    self.by_leg.insert(leg.clone(), id.clone());
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
                            phase: Phase::Connected {
                                leg: leg.clone(),
                                bridge: bridge.bridge.clone(),
                            },
                            legs: vec![Leg {
                                id: leg,
                                uri: String::new(),
                                registration: None,
                                state: LegState::Answered,
                            }],
                            devices: Vec::new(),
                            pushes: Vec::new(),
                            contacts_listed: true,
                            // Its secret died with the previous process.
                            status: None,
                        },
                    );
                    continue;
                }
            }
            tracing::info!(bridge = %bridge.bridge, channels = bridge.channels.len(), "destroying a bridge left by a previous process");
            self.commands
                .push_back(Command::Pbx(PbxCommand::DestroyBridge {
                    bridge: bridge.bridge.clone(),
                }));
        }
        for parked in &snapshot.parked {
            let ch = &parked.channel;
            if adopted.contains(ch)
                || self.by_caller.contains_key(ch)
                || self.by_leg.contains_key(ch)
            {
                continue;
            }
            if parked.args.first().map(String::as_str) == Some(LEG_MARKER) || is_our_leg(ch) {
                tracing::info!(leg = %ch, "hanging up a leg left by a previous process");
                self.hangup(ch.clone(), HangupReason::Normal);
            } else {
                tracing::warn!(caller = %ch, "returning a caller left waiting by a previous process: RECOVERED");
                self.continue_caller(ch.clone(), WakeStatus::Recovered);
            }
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
            .filter(|ch| !snapshot.all_channels.contains(ch))
            .collect();
        for channel in gone {
            self.channel_gone(now, &channel, "gone while disconnected");
        }
    }
}

/// Whether a contact URI carries the device's push token in its RFC 8599 `pn-prid`
/// parameter. Parameters are found by name (clients put them in any order), the value is
/// %-decoded, and Linphone's `<token>:remote&<token>:voip` form matches either token.
pub fn contact_names_device(uri: &str, token: &crate::directory::DeviceToken) -> bool {
    let token = token.expose().to_ascii_lowercase();
    if token.is_empty() {
        return false;
    }
    uri.split(';').skip(1).any(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        name.trim().eq_ignore_ascii_case("pn-prid")
            && percent_decode(value).to_ascii_lowercase().contains(&token)
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a channel id is one pushwake gave to a leg.
fn is_our_leg(channel: &ChannelId) -> bool {
    channel.0.starts_with(LEG_PREFIX)
}

/// A bridge holding exactly one caller and one of our legs, both still in the
/// application: a conversation that can go on under a new process.
fn adoptable(
    bridge: &crate::pbx::AppBridge,
    parked: &HashMap<&ChannelId, &[String]>,
) -> Option<(ChannelId, ChannelId)> {
    let [a, b] = bridge.channels.as_slice() else {
        return None;
    };
    let is_leg = |ch: &ChannelId| {
        is_our_leg(ch)
            || parked
                .get(ch)
                .and_then(|args| args.first())
                .map(String::as_str)
                == Some(LEG_MARKER)
    };
    if !parked.contains_key(a)
        || !parked.contains_key(b)
        || !bridge.bridge.0.starts_with(BRIDGE_PREFIX)
    {
        return None;
    }
    match (is_leg(a), is_leg(b)) {
        (false, true) => Some((a.clone(), b.clone())),
        (true, false) => Some((b.clone(), a.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
