//! Asterisk as a PBX for the wake logic: maps ARI events to [`PbxEvent`]s and carries
//! out [`PbxCommand`]s through ARI.
//!
//! What the wake logic calls "a caller handed over" is a channel entering
//! `Stasis(<app>,<extension>)`; a leg is a channel pushwake originates into the same
//! application with the arguments [`LEG_MARKER`]` <call id>`, which is how a leg of a
//! previous daemon process is told from a caller after a restart; joining a caller with
//! a leg is a mixing bridge named `pwbridge-<call id>`. None of that leaves this module.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pushwake_core::messages::DedupKey;
use pushwake_core::pbx::{
    CallControl, CallId, ChannelId, Conversation, DialTarget, ExtensionState, HangupReason,
    HeldCaller, IncomingMessage, Party, PbxCommand, PbxError, PbxEvent, PbxReply, PbxSnapshot,
    WakeStatus, CALL_ID_HEADER, MESSAGE_ID_HEADER, STATUS_VARIABLE,
};
use tokio::sync::{mpsc, Notify};

use crate::client::{AriClient, AriError, Originate};
use crate::config::AsteriskConfig;
use crate::contacts::ContactLister;
use crate::events::{spawn_event_pump_checked, AriEvent, EventFeed, EventsConfig};
use crate::model::{Bridge, Channel};

/// The first `Stasis()` argument that marks a channel as one of pushwake's own
/// outgoing legs rather than a caller; the call id follows it.
pub const LEG_MARKER: &str = "pushwake-leg";

/// Prefix of the names of pushwake's bridges; the call id follows it.
const BRIDGE_PREFIX: &str = "pwbridge-";

/// How often a waiting call lists its extension's contacts again. A REGISTER that
/// refreshes a contact stored with the very same URI (a phone killed without
/// unregistering that comes back on the same port) produces no ARI event at all; only
/// the contact's expiry time, read by the listing, shows it.
pub const CONTACT_POLL: Duration = Duration::from_secs(1);

/// The bridge that joins the two parties of `call`.
fn bridge_of(call: &CallId) -> String {
    format!("{BRIDGE_PREFIX}{call}")
}

/// Asterisk call control through ARI.
#[derive(Debug, Clone)]
pub struct AsteriskPbx {
    client: AriClient,
    /// A second connection pool used only to dial: on the path from a phone's REGISTER
    /// to its INVITE, the dial must find an idle, open connection, not one busy with a
    /// contact listing (a new connection costs a TCP handshake and an Asterisk thread).
    dial_client: AriClient,
    app: String,
    /// Notified when a REST keep-warm ping cannot reach Asterisk: the event pump then
    /// checks its WebSocket at once (a cut connection is noticed sooner).
    unreachable: Arc<Notify>,
    /// Every waiting call's contact listing goes through it, batched with the others'.
    contacts: ContactLister,
    /// Whether to keep the extensions' device states (`[asterisk] device_states`).
    device_states: bool,
}

impl AsteriskPbx {
    /// Call control for the application in `config`. Nothing is connected yet: see
    /// [`AsteriskPbx::start`]. Call it within a Tokio runtime: the contact listings are
    /// batched in a task of their own ([`ContactLister`]).
    pub fn new(config: &AsteriskConfig) -> Result<Self, AriError> {
        let client = AriClient::new(&config.url, &config.username, &config.password)?;
        Ok(Self {
            contacts: ContactLister::spawn(client.clone()),
            client,
            dial_client: AriClient::new(&config.url, &config.username, &config.password)?,
            app: config.app.clone(),
            unreachable: Arc::new(Notify::new()),
            device_states: config.device_states,
        })
    }

    /// Sets up call control for `config` and starts talking to Asterisk: the REST
    /// connections are kept warm and the event WebSocket is connected (and reconnected,
    /// forever) in tasks of their own. Returns the call control and the translated event
    /// stream, which on every (re)connect first yields [`PbxEvent::Connected`] with a
    /// snapshot of what the application holds.
    pub fn start(config: &AsteriskConfig) -> Result<(Self, mpsc::Receiver<PbxEvent>), AriError> {
        let pbx = Self::new(config)?;
        tokio::spawn(pbx.clone().keep_warm());
        let events = pbx.events(config);
        Ok((pbx, events))
    }

    /// Keeps both REST connection pools warm, forever. Run it in its own task.
    pub async fn keep_warm(self) {
        tokio::join!(
            self.client.clone().keep_warm(self.unreachable.clone()),
            self.dial_client.clone().keep_warm(self.unreachable.clone())
        );
    }

    /// Starts the event WebSocket and returns the translated event stream. On every
    /// (re)connect the stream first yields [`PbxEvent::Connected`] with a snapshot of the
    /// application's channels and bridges.
    pub fn events(&self, config: &AsteriskConfig) -> mpsc::Receiver<PbxEvent> {
        let feed = spawn_event_pump_checked(
            EventsConfig {
                url: config.url.clone(),
                username: config.username.clone(),
                password: config.password.clone(),
                app: config.app.clone(),
            },
            self.unreachable.clone(),
        );
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(translate(self.clone(), feed, tx));
        rx
    }

    /// Subscribes the application to registrations (every PJSIP endpoint's contact
    /// changes), then reads what the PBX holds. Called on every (re)connect; the
    /// subscription comes first so nothing registering meanwhile is missed (the wake
    /// logic's contact polling covers the moment between connect and subscribe).
    async fn snapshot(&self) -> Result<PbxSnapshot, AriError> {
        self.client.subscribe(&self.app, "endpoint:PJSIP").await?;
        let (channels, bridges) = tokio::try_join!(self.client.channels(), self.client.bridges())?;
        let found = classify(&self.app, &channels, &bridges);
        for bridge in &found.foreign_bridges {
            // Not named by any pushwake process: nothing can go on in it.
            tracing::info!(bridge = %bridge, "destroying a bridge left in the application");
            if let Err(error) = self.client.destroy_bridge(bridge).await {
                tracing::warn!(bridge = %bridge, %error, "could not destroy a bridge left in the application");
            }
        }
        Ok(found.snapshot)
    }

    /// Whether a channel entering Stasis belongs to this application (a guard: events
    /// of other applications' channels must never be acted on).
    /// The ARI-controlled device state that shows `extension`'s state:
    /// `Stasis:<app>-<extension>` (`Stasis:pushwake-101`), usable as a queue member's
    /// `state_interface` and in hints.
    pub fn device_state_name(&self, extension: &str) -> String {
        format!("Stasis:{}-{extension}", self.app)
    }

    fn is_ours(&self, channel: &Channel) -> bool {
        let data = &channel.dialplan.app_data;
        data.is_empty() || data.split(',').next().map(str::trim) == Some(self.app.as_str())
    }

    async fn connect(
        &self,
        caller: &str,
        leg: &str,
        bridge: &str,
        status: WakeStatus,
    ) -> Result<(), AriError> {
        self.client
            .set_variable(caller, STATUS_VARIABLE, status.as_str())
            .await?;
        tokio::try_join!(
            self.client.answer(caller),
            self.client.create_bridge(bridge, "mixing", &self.app)
        )?;
        self.client.add_channels(bridge, &[caller, leg]).await
    }
}

/// What a snapshot found, sorted into the wake logic's terms.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    snapshot: PbxSnapshot,
    /// Bridges of the application that no pushwake process named: destroyed at once.
    foreign_bridges: Vec<String>,
}

/// Sorts the application's channels and bridges: a bridge `pwbridge-<call>` holding
/// exactly one caller and one leg, both still in the application, is a conversation that
/// can go on; any other `pwbridge-<call>` is a broken one; channels in the application
/// outside such conversations are callers (`Stasis(<app>,<extension>)`) or legs
/// (`Stasis(<app>,pushwake-leg,<call>)`).
fn classify(app: &str, channels: &[Channel], bridges: &[Bridge]) -> Found {
    let parked: std::collections::HashMap<&str, Vec<String>> = channels
        .iter()
        .filter_map(|c| c.stasis_args(app).map(|args| (c.id.as_str(), args)))
        .collect();
    let is_leg = |args: &[String]| args.first().map(String::as_str) == Some(LEG_MARKER);
    let mut found = Found::default();
    let mut joined: HashSet<&str> = HashSet::new();
    for bridge in bridges.iter().filter(|b| b.name == app) {
        let Some(call) = bridge.id.strip_prefix(BRIDGE_PREFIX) else {
            found.foreign_bridges.push(bridge.id.clone());
            continue;
        };
        let call = CallId(call.to_owned());
        let conversation = match bridge.channels.as_slice() {
            [a, b] => match (parked.get(a.as_str()), parked.get(b.as_str())) {
                (Some(args_a), Some(args_b)) => match (is_leg(args_a), is_leg(args_b)) {
                    (false, true) => Some((a, args_a, b)),
                    (true, false) => Some((b, args_b, a)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        match conversation {
            Some((caller, caller_args, leg)) => {
                joined.insert(caller);
                joined.insert(leg);
                found.snapshot.conversations.push(Conversation {
                    call,
                    caller: ChannelId(caller.clone()),
                    leg: ChannelId(leg.clone()),
                    extension: caller_args.first().cloned().unwrap_or_default(),
                });
            }
            None => found.snapshot.broken.push(call),
        }
    }
    // In the order Asterisk listed them, for stable logs.
    for channel in channels {
        let Some(args) = parked.get(channel.id.as_str()) else {
            continue;
        };
        if joined.contains(channel.id.as_str()) {
            continue;
        }
        if is_leg(args) {
            found.snapshot.legs.push(ChannelId(channel.id.clone()));
        } else {
            found.snapshot.callers.push(HeldCaller {
                channel: ChannelId(channel.id.clone()),
                extension: args.first().cloned().unwrap_or_default(),
            });
        }
    }
    found.snapshot.live = channels.iter().map(|c| ChannelId(c.id.clone())).collect();
    found
}

fn pbx_error(error: AriError) -> PbxError {
    match error {
        AriError::NotFound(what) => PbxError::Gone(what),
        // No answer: Asterisk may not have seen the request (its HTTP server closes
        // connections past its session limit unanswered, or it is restarting).
        transport @ AriError::Transport { .. } => PbxError::Unavailable(transport.to_string()),
        other => PbxError::Failed(other.to_string()),
    }
}

fn caller_id(party: &Party) -> Option<String> {
    match (party.name.is_empty(), party.number.is_empty()) {
        (true, true) => None,
        (true, false) => Some(format!("<{}>", party.number)),
        (false, _) => Some(format!(
            "\"{}\" <{}>",
            party.name.replace('"', ""),
            party.number
        )),
    }
}

/// The Asterisk device state that shows an extension's state.
fn device_state(state: ExtensionState) -> &'static str {
    match state {
        ExtensionState::Idle => "NOT_INUSE",
        ExtensionState::Ringing => "RINGING",
        ExtensionState::InUse => "INUSE",
        ExtensionState::Unavailable => "UNAVAILABLE",
    }
}

impl CallControl for AsteriskPbx {
    async fn execute(&self, command: PbxCommand) -> Result<PbxReply, PbxError> {
        let c = &self.client;
        let done = match command {
            PbxCommand::Ring { caller } => c.ring(caller.as_str()).await,
            PbxCommand::ListContacts {
                call,
                caller,
                extension,
            } => {
                return self
                    .contacts
                    .list(&call, caller.as_str(), &extension)
                    .await
                    .map(PbxReply::Contacts)
                    .map_err(pbx_error)
            }
            PbxCommand::Dial(request) => {
                let (endpoint, variables) = match &request.target {
                    DialTarget::Contact(uri) => (
                        format!("PJSIP/{}/{uri}", request.extension),
                        vec![(
                            format!("PJSIP_HEADER(add,{CALL_ID_HEADER})"),
                            request.call.0.clone(),
                        )],
                    ),
                    // A number outside (a Local channel, a trunk): no call id header,
                    // which a Local channel could not carry and a stranger needs not see.
                    DialTarget::Fallback(dial) => (dial.clone(), Vec::new()),
                };
                let originate = Originate {
                    endpoint,
                    app: self.app.clone(),
                    app_args: vec![LEG_MARKER.to_owned(), request.call.0.clone()],
                    channel_id: request.leg.0.clone(),
                    originator: Some(request.caller_channel.0.clone()),
                    caller_id: caller_id(&request.caller),
                    timeout_secs: request.timeout.as_secs().max(1),
                    variables,
                };
                self.dial_client.originate(&originate).await.map(|_| ())
            }
            PbxCommand::Connect {
                call,
                caller,
                leg,
                status,
            } => {
                self.connect(caller.as_str(), leg.as_str(), &bridge_of(&call), status)
                    .await
            }
            PbxCommand::Hangup { channel, reason } => {
                let reason = match reason {
                    HangupReason::AnsweredElsewhere => "answered_elsewhere",
                    HangupReason::Normal => "normal",
                };
                c.hangup(channel.as_str(), reason).await
            }
            PbxCommand::Return { caller, status } => {
                let done = match c
                    .set_variable(caller.as_str(), STATUS_VARIABLE, status.as_str())
                    .await
                {
                    Ok(()) => c.continue_in_dialplan(caller.as_str()).await,
                    Err(e) => Err(e),
                };
                match done {
                    // 409 "Channel not in Stasis application": the caller has already
                    // left pushwake (an earlier return of it went through), nothing to do.
                    Err(AriError::Status { status: 409, .. }) => Err(AriError::NotFound(format!(
                        "caller {caller} no longer in the application"
                    ))),
                    other => other,
                }
            }
            PbxCommand::Release { call } => c.destroy_bridge(&bridge_of(&call)).await,
            PbxCommand::PublishState { extension, state } => {
                c.set_device_state(&self.device_state_name(&extension), device_state(state))
                    .await
            }
            PbxCommand::SendMessage(message) => {
                let headers = std::collections::BTreeMap::from([(
                    MESSAGE_ID_HEADER.to_owned(),
                    message.id.0,
                )]);
                c.send_message(&message.extension, &message.from, &message.body, &headers)
                    .await
            }
        };
        done.map(|()| PbxReply::Done).map_err(pbx_error)
    }

    fn contact_poll(&self) -> Option<Duration> {
        Some(CONTACT_POLL)
    }

    fn extension_states(&self) -> bool {
        self.device_states
    }

    /// ARI's `TextMessageReceived` and `sendMessage` (res_pjsip_messaging).
    fn carries_messages(&self) -> bool {
        true
    }
}

/// Translates the ARI feed into PBX events, taking a snapshot on every (re)connect.
async fn translate(
    pbx: AsteriskPbx,
    mut feed: mpsc::Receiver<EventFeed>,
    tx: mpsc::Sender<PbxEvent>,
) {
    let mut hangups = Hangups::default();
    while let Some(item) = feed.recv().await {
        let event = match item {
            EventFeed::Connected => {
                hangups.0.clear();
                let Some((snapshot, early)) = snapshot_while_buffering(&pbx, &mut feed).await
                else {
                    return;
                };
                if tx.send(PbxEvent::Connected(snapshot)).await.is_err() {
                    return;
                }
                for event in early
                    .into_iter()
                    .filter_map(|e| pbx_event(&pbx, &mut hangups, e))
                {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            EventFeed::Disconnected => Some(PbxEvent::Disconnected),
            EventFeed::Event(event) => pbx_event(&pbx, &mut hangups, *event),
        };
        if let Some(event) = event {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Reads the snapshot while holding back the events that arrive meanwhile. A channel
/// whose `StasisStart` arrives during the snapshot is a new caller, not one left by a
/// previous process, so it is taken out of the snapshot's parked channels.
async fn snapshot_while_buffering(
    pbx: &AsteriskPbx,
    feed: &mut mpsc::Receiver<EventFeed>,
) -> Option<(PbxSnapshot, Vec<AriEvent>)> {
    let mut early = Vec::new();
    let mut attempts = 0u32;
    let taking = pbx.snapshot();
    tokio::pin!(taking);
    let mut snapshot: PbxSnapshot = loop {
        tokio::select! {
            result = &mut taking => match result {
                Ok(snapshot) => break snapshot,
                Err(error) => {
                    attempts += 1;
                    tracing::warn!(%error, attempts, "cannot read Asterisk's channels after connecting; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempts.min(10)))).await;
                    taking.set(pbx.snapshot());
                }
            },
            item = feed.recv() => match item {
                Some(EventFeed::Event(event)) => early.push(*event),
                Some(_) => {}
                None => return None,
            },
        }
    };
    let entered: HashSet<&str> = early
        .iter()
        .filter_map(|e| match e {
            AriEvent::StasisStart { channel, .. } => Some(channel.id.as_str()),
            _ => None,
        })
        .collect();
    snapshot
        .callers
        .retain(|c| !entered.contains(c.channel.as_str()));
    snapshot.legs.retain(|l| !entered.contains(l.as_str()));
    Some((snapshot, early))
}

/// The channels being hung up, with their Q.850 cause, until they are gone.
///
/// A channel that leaves the application while being hung up is gone for pushwake, even
/// where Asterisk never tells the application of its destruction: the application hears
/// of a `ChannelDestroyed` after `StasisEnd` only through its `endpoint:PJSIP`
/// subscription, and a Local channel (a ring group's or a queue's member) has no
/// endpoint. A PJSIP channel's own `ChannelDestroyed` (with the final cause and its text)
/// always comes, so only other channels are gone at their `StasisEnd`. Entries end with
/// the channel's `StasisEnd` or `ChannelDestroyed`, and all of them on a reconnect.
#[derive(Debug, Default)]
struct Hangups(HashMap<String, i64>);

/// The channels whose every event reaches the application through the `endpoint:PJSIP`
/// subscription it makes on each connect, by name prefix.
const SUBSCRIBED_TECHNOLOGY: &str = "PJSIP/";

/// Q.850 cause 26, "answered elsewhere": what a ring group or queue hangs its other
/// members up with when one of them answered.
const CAUSE_ANSWERED_ELSEWHERE: i64 = 26;

impl Hangups {
    /// What a hangup-related event (`ChannelHangupRequest`, `StasisEnd`,
    /// `ChannelDestroyed`) amounts to, if anything: `None` for any other event.
    fn translate(&mut self, event: &AriEvent) -> Option<Option<PbxEvent>> {
        Some(match event {
            AriEvent::ChannelHangupRequest { channel, cause } => {
                tracing::debug!(channel = %channel.id, cause, "hangup requested");
                self.0.insert(channel.id.clone(), *cause);
                None
            }
            AriEvent::StasisEnd { channel } => {
                let Some(cause) = self.0.remove(&channel.id) else {
                    // Returned to the dialplan by pushwake: not gone.
                    return Some(None);
                };
                if channel.name.starts_with(SUBSCRIBED_TECHNOLOGY) {
                    // Its ChannelDestroyed says it, through the endpoint subscription.
                    return Some(None);
                }
                Some(PbxEvent::ChannelGone {
                    channel: ChannelId(channel.id.clone()),
                    cause: format!("{cause} (left the application while hung up)"),
                    answered_elsewhere: cause == CAUSE_ANSWERED_ELSEWHERE,
                })
            }
            AriEvent::ChannelDestroyed {
                channel,
                cause,
                cause_txt,
            } => {
                self.0.remove(&channel.id);
                Some(PbxEvent::ChannelGone {
                    channel: ChannelId(channel.id.clone()),
                    cause: format!("{cause} {cause_txt}"),
                    answered_elsewhere: *cause == CAUSE_ANSWERED_ELSEWHERE,
                })
            }
            _ => return None,
        })
    }
}

fn pbx_event(pbx: &AsteriskPbx, hangups: &mut Hangups, event: AriEvent) -> Option<PbxEvent> {
    if let Some(gone) = hangups.translate(&event) {
        return gone;
    }
    match event {
        AriEvent::StasisStart { channel, args } => {
            if !pbx.is_ours(&channel) {
                return None;
            }
            if args.first().map(String::as_str) == Some(LEG_MARKER) {
                return Some(PbxEvent::LegAnswered {
                    leg: ChannelId(channel.id),
                });
            }
            Some(PbxEvent::CallerArrived {
                caller: Party {
                    number: channel.caller.number.clone(),
                    name: channel.caller.name.clone(),
                },
                channel: ChannelId(channel.id),
                extension: args.into_iter().next().unwrap_or_default(),
            })
        }
        AriEvent::Dial { peer, dialstatus } if dialstatus == "RINGING" => {
            Some(PbxEvent::LegRinging {
                leg: ChannelId(peer.id),
            })
        }
        AriEvent::ChannelStateChange { channel } if channel.state == "Ringing" => {
            Some(PbxEvent::LegRinging {
                leg: ChannelId(channel.id),
            })
        }
        AriEvent::ContactStatusChange {
            endpoint,
            contact_info,
        } => {
            let extension = if contact_info.aor.is_empty() {
                endpoint.resource
            } else {
                contact_info.aor
            };
            match contact_info.contact_status.as_str() {
                "Created" | "NonQualified" | "Reachable" | "Updated" => {
                    Some(PbxEvent::ContactAdded {
                        extension,
                        uri: contact_info.uri,
                    })
                }
                "Removed" => Some(PbxEvent::ContactRemoved {
                    extension,
                    uri: contact_info.uri,
                }),
                _ => None,
            }
        }
        // Every MESSAGE from a PJSIP endpoint comes here (pushwake subscribes to them
        // all); the driver keeps those for push-enabled extensions and leaves the rest
        // to the dialplan's message context.
        AriEvent::TextMessageReceived { message, .. } => {
            let Some(extension) = message.recipient().map(str::to_owned) else {
                tracing::warn!(to = %message.to, "a MESSAGE whose recipient cannot be read: left to the dialplan");
                return None;
            };
            let dedup = message.dedup_key().map(|(call_id, cseq)| DedupKey {
                call_id: call_id.to_owned(),
                cseq,
            });
            let declared_len = message.declared_len();
            let content_type = message.content_type().to_owned();
            Some(PbxEvent::MessageReceived(IncomingMessage {
                extension,
                from: message.from,
                content_type,
                body: message.body,
                dedup,
                declared_len,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DialplanLocation;

    fn channel(id: &str, app_data: &str) -> Channel {
        Channel {
            id: id.into(),
            name: format!("PJSIP/{id}"),
            state: "Up".into(),
            caller: Default::default(),
            dialplan: DialplanLocation {
                app_name: if app_data.is_empty() {
                    "Dial"
                } else {
                    "Stasis"
                }
                .into(),
                app_data: app_data.into(),
                ..Default::default()
            },
        }
    }

    fn bridge(id: &str, app: &str, channels: &[&str]) -> Bridge {
        Bridge {
            id: id.into(),
            name: app.into(),
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn a_snapshot_sorts_callers_legs_and_conversations() {
        let old_call = "6f1d2c3b-0000-4000-8000-00000000abcd";
        let channels = [
            channel("stray-caller", "pushwake,101"),
            channel("stray-leg", "pushwake,pushwake-leg,old"),
            channel("talking-caller", "pushwake,102"),
            channel("bridged-leg", &format!("pushwake,pushwake-leg,{old_call}")),
            channel("lonely", "pushwake,101"),
            channel("other-app", "other,101"),
            channel("dialling", ""),
        ];
        let bridges = [
            bridge(
                &format!("pwbridge-{old_call}"),
                "pushwake",
                &["talking-caller", "bridged-leg"],
            ),
            bridge("pwbridge-half", "pushwake", &["lonely"]),
            bridge("someone-elses", "pushwake", &[]),
            bridge("pwbridge-other-app", "other", &["other-app"]),
        ];
        let found = classify("pushwake", &channels, &bridges);
        let snapshot = &found.snapshot;
        assert_eq!(
            snapshot.conversations,
            vec![Conversation {
                call: CallId(old_call.into()),
                caller: ChannelId("talking-caller".into()),
                leg: ChannelId("bridged-leg".into()),
                extension: "102".into(),
            }]
        );
        assert_eq!(snapshot.broken, vec![CallId("half".into())]);
        assert_eq!(found.foreign_bridges, vec!["someone-elses".to_owned()]);
        let callers: Vec<(&str, &str)> = snapshot
            .callers
            .iter()
            .map(|c| (c.channel.as_str(), c.extension.as_str()))
            .collect();
        assert_eq!(callers, [("stray-caller", "101"), ("lonely", "101")]);
        assert_eq!(snapshot.legs, vec![ChannelId("stray-leg".into())]);
        assert_eq!(snapshot.live.len(), channels.len());
        // Two callers, or a caller with a channel outside the application, are no
        // conversation.
        let found = classify(
            "pushwake",
            &[
                channel("a", "pushwake,101"),
                channel("b", "pushwake,102"),
                channel("c", ""),
            ],
            &[
                bridge("pwbridge-x", "pushwake", &["a", "b"]),
                bridge("pwbridge-y", "pushwake", &["a", "c"]),
            ],
        );
        assert!(found.snapshot.conversations.is_empty());
        assert_eq!(
            found.snapshot.broken,
            vec![CallId("x".into()), CallId("y".into())]
        );
        assert_eq!(found.snapshot.callers.len(), 2);
    }

    #[test]
    fn a_member_leaving_the_application_while_hung_up_is_gone_and_says_why() {
        let mut hangups = Hangups::default();
        let member = || Channel {
            name: "Local/101@pushwake-member-00000001;2".into(),
            ..channel("pushwake-1.2", "pushwake,101")
        };
        let request = |cause| AriEvent::ChannelHangupRequest {
            channel: member(),
            cause,
        };
        let end = || AriEvent::StasisEnd { channel: member() };
        // A channel pushwake returns to the dialplan leaves without a hangup: not gone.
        assert_eq!(hangups.translate(&end()), Some(None));
        // A ring group's other member answered: Asterisk hangs this one up with 26.
        assert_eq!(hangups.translate(&request(26)), Some(None));
        let gone = hangups.translate(&end()).flatten();
        assert!(
            matches!(&gone, Some(PbxEvent::ChannelGone { channel, answered_elsewhere: true, .. }) if channel.as_str() == "pushwake-1.2"),
            "{gone:?}"
        );
        // The caller left the group: gone, not answered elsewhere.
        hangups.translate(&request(16));
        let gone = hangups.translate(&end()).flatten();
        assert!(
            matches!(
                gone,
                Some(PbxEvent::ChannelGone {
                    answered_elsewhere: false,
                    ..
                })
            ),
            "{gone:?}"
        );
        // ChannelDestroyed ends the record too; other events are handed back.
        hangups.translate(&request(16));
        let destroyed = AriEvent::ChannelDestroyed {
            channel: member(),
            cause: 16,
            cause_txt: "Normal Clearing".into(),
        };
        assert!(hangups.translate(&destroyed).flatten().is_some());
        assert!(hangups.0.is_empty());
        // A PJSIP caller is gone at its ChannelDestroyed (which says the final cause), not
        // when it leaves the application.
        let caller = || channel("pushwake-1.3", "pushwake,101");
        hangups.translate(&AriEvent::ChannelHangupRequest {
            channel: caller(),
            cause: 0,
        });
        assert_eq!(
            hangups.translate(&AriEvent::StasisEnd { channel: caller() }),
            Some(None)
        );
        assert!(hangups.translate(&AriEvent::Other).is_none());
    }
}
