//! FreeSWITCH as a PBX for the wake logic: the calls the dialplan's `socket` application
//! hands over, the Event Socket's events translated into [`PbxEvent`]s, and
//! [`PbxCommand`]s carried out through both.
//!
//! Two connections, each for what it is good at:
//! - **one outbound socket per caller** ([`OutboundListener`]): the hand-over itself.
//!   FreeSWITCH connects when the dialplan reaches `socket`; pushwake rings the caller
//!   (`ring_ready`) and gives it back (`set pushwake_status=…`, `exit`) through it. If
//!   pushwake is not running, or dies, the socket fails or closes and FreeSWITCH goes on
//!   with the dialplan at once (measured): no caller waits on a dead pushwake.
//! - **one inbound Event Socket connection** ([`spawn_client`]): the events (contacts,
//!   legs, hang-ups) and everything that is not about one caller's socket: listing
//!   contacts, originating legs, bridging, hanging up.
//!
//! A leg is a channel pushwake originated with [`CALL_VAR`]; joining a caller with a leg
//! is `uuid_bridge`. None of that leaves this crate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pushwake_core::pbx::{
    CallControl, CallId, ChannelId, Contact, Conversation, HeldCaller, OutgoingMessage, PbxCommand,
    PbxError, PbxEvent, PbxReply, PbxSnapshot, WakeStatus, MESSAGE_ID_HEADER, STATUS_VARIABLE,
};
use tokio::sync::mpsc;

use crate::client::{spawn_client, EslClient, EslConfig, EslError, EslFeed};
use crate::config::FreeSwitchConfig;
use crate::outbound::{CallSocket, OutboundListener};
use crate::translate::{
    self, api_result, caller_arrived, valid_uuid, CALLER_VAR, CALL_VAR, EXTENSION_VAR, STATUS_VAR,
};

/// The events the inbound connection subscribes to (`BACKGROUND_JOB` is always added).
pub const EVENTS: [&str; 9] = [
    "CHANNEL_ANSWER",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_HANGUP_COMPLETE",
    "MESSAGE",
    "sofia::register",
    "sofia::unregister",
    "sofia::expire",
    "SMS::DELIVERY_REPORT",
];

/// How long a message sent waits for its `SMS::DELIVERY_REPORT`: sofia waits up to 20 s
/// for the phone's answer (sofia_presence.c, `sofia_presence_chat_send`).
const DELIVERY_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a caller whose hand-over socket closed waits for its CHANNEL_HANGUP_COMPLETE
/// (the cause) before it is taken as gone without one. That event comes 6–43 ms after
/// the hang-up (measured); this only matters when the Event Socket is down or late.
const CAUSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What `uuid_getvar` answers for a variable that is not set.
const UNDEFINED: &str = "_undef_";

/// FreeSWITCH call control. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FreeSwitchPbx {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    esl: EslClient,
    domain: String,
    profile: String,
    /// The callers handed over and not given back yet, by channel.
    sockets: Mutex<HashMap<String, CallSocket>>,
    /// pushwake's legs that have not ended, by channel: their events are the engine's.
    legs: Mutex<HashSet<String>>,
    /// The sofia profile each contact was listed with, to dial it through the same one.
    profiles: Mutex<HashMap<String, String>>,
    /// The messages sent and not reported on yet, by message id.
    reports: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Result<(), PbxError>>>>,
    /// Held while a hand-over is recorded and announced, and while a snapshot's callers
    /// are completed and announced: the two come from different connections, and a
    /// caller announced before a snapshot that did not list it would look gone.
    order: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn failed(what: &str, error: EslError) -> PbxError {
    let message = format!("{what}: {error}");
    match error {
        // No answer from FreeSWITCH: the command may not have reached it.
        EslError::Connect { .. } | EslError::ConnectionLost(_) | EslError::NotConnected => {
            PbxError::Unavailable(message)
        }
        _ => PbxError::Failed(message),
    }
}

impl FreeSwitchPbx {
    /// Binds the listener the dialplan's `socket` application connects to (an address
    /// in use is an error now, not a silent loss of every call), connects the Event
    /// Socket (and reconnects it, forever) and starts translating. Returns the call
    /// control and the event stream, which on every (re)connect of the Event Socket
    /// first yields [`PbxEvent::Connected`] with what FreeSWITCH holds.
    pub async fn start(
        config: &FreeSwitchConfig,
    ) -> std::io::Result<(Self, mpsc::Receiver<PbxEvent>)> {
        let listener = OutboundListener::bind(config.listen).await?;
        let mut esl_config = EslConfig::new(config.address.clone(), config.password());
        esl_config.events = EVENTS.iter().map(|e| (*e).to_owned()).collect();
        let (esl, feed) = spawn_client(esl_config);
        let pbx = Self {
            inner: Arc::new(Inner {
                esl,
                domain: config.domain.clone(),
                profile: config.profile.clone(),
                sockets: Mutex::new(HashMap::new()),
                legs: Mutex::new(HashSet::new()),
                profiles: Mutex::new(HashMap::new()),
                reports: Mutex::new(HashMap::new()),
                order: tokio::sync::Mutex::new(()),
            }),
        };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pbx.clone().pump(feed, tx.clone()));
        tokio::spawn(pbx.clone().accept(listener, tx));
        Ok((pbx, rx))
    }

    /// The Event Socket's feed, translated.
    async fn pump(self, mut feed: mpsc::Receiver<EslFeed>, tx: mpsc::Sender<PbxEvent>) {
        while let Some(item) = feed.recv().await {
            let event = match item {
                EslFeed::Connected => match self.snapshot().await {
                    Ok(mut snapshot) => {
                        // The callers this process holds: every one whose hand-over is
                        // open, and alive whatever `show channels` said a moment ago (it
                        // may predate the hand-over).
                        let _order = self.inner.order.lock().await;
                        for channel in lock(&self.inner.sockets).keys() {
                            let id = ChannelId(channel.clone());
                            snapshot.live.insert(id.clone());
                            snapshot.callers.push(HeldCaller {
                                channel: id,
                                extension: String::new(),
                            });
                        }
                        if tx.send(PbxEvent::Connected(snapshot)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(error) => {
                        // The connection went away while it was being read: the client
                        // reconnects, and a new Connected comes.
                        tracing::warn!(%error, "FreeSWITCH: could not read what it holds after connecting");
                        continue;
                    }
                },
                EslFeed::Disconnected { reason } => {
                    tracing::debug!(%reason, "FreeSWITCH event socket lost");
                    PbxEvent::Disconnected
                }
                EslFeed::Event(event) => {
                    if let Some((id, result)) = translate::delivery_report(&event) {
                        if let Some(waiting) = lock(&self.inner.reports).remove(&id) {
                            let _ = waiting.send(result);
                        }
                        continue;
                    }
                    let legs = lock(&self.inner.legs);
                    let Some(translated) = translate::translate(&event, |id| legs.contains(id))
                    else {
                        continue;
                    };
                    drop(legs);
                    if let PbxEvent::ChannelGone { channel, .. } = &translated {
                        lock(&self.inner.legs).remove(channel.as_str());
                        lock(&self.inner.sockets).remove(channel.as_str());
                    }
                    translated
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }

    /// The calls the dialplan hands over.
    async fn accept(self, listener: OutboundListener, tx: mpsc::Sender<PbxEvent>) {
        loop {
            let handed = match listener.accept().await {
                Ok(handed) => handed,
                Err(error) => {
                    tracing::warn!(%error, "FreeSWITCH: cannot accept a handed-over call");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let arrived = match caller_arrived(&handed.channel) {
                Ok(arrived) => arrived,
                Err(error) => {
                    tracing::warn!(%error, "FreeSWITCH handed over a call pushwake cannot serve; giving it back");
                    let _ = handed.socket.exit().await;
                    continue;
                }
            };
            let channel = handed.socket.channel().to_owned();
            let order = self.inner.order.lock().await;
            lock(&self.inner.sockets).insert(channel.clone(), handed.socket.clone());
            // A caller whose socket closes is gone for pushwake (hung up, or FreeSWITCH
            // went on without it), even while the Event Socket is down. Its
            // CHANNEL_HANGUP_COMPLETE on the Event Socket says why (LOSE_RACE: a ring
            // group's other member answered), and comes from another thread of
            // FreeSWITCH's, before or after the close: it is given
            // CAUSE_GRACE to come first (the pump then takes the socket out).
            let (pbx, gone) = (self.clone(), tx.clone());
            tokio::spawn(async move {
                handed.socket.closed().await;
                if lock(&pbx.inner.sockets).contains_key(&channel) {
                    tracing::debug!(%channel, "FreeSWITCH closed a hand-over's socket; waiting for the channel's hang-up cause");
                    tokio::time::sleep(CAUSE_GRACE).await;
                }
                if lock(&pbx.inner.sockets).remove(&channel).is_some() {
                    let _ = gone
                        .send(PbxEvent::ChannelGone {
                            channel: channel.as_str().into(),
                            cause: "the hand-over's socket closed".into(),
                            answered_elsewhere: false,
                        })
                        .await;
                }
            });
            let sent = tx.send(arrived).await;
            drop(order);
            if sent.is_err() {
                return;
            }
        }
    }

    /// What FreeSWITCH holds for pushwake: every channel, and pushwake's legs (of this process or of an earlier one) with, for those
    /// joined to a caller who is still there, their conversation.
    async fn snapshot(&self) -> Result<PbxSnapshot, EslError> {
        let esl = &self.inner.esl;
        let listing = esl.api("show channels").await?;
        let live: HashSet<ChannelId> = channel_ids(&listing)
            .into_iter()
            .map(|id| ChannelId(id.to_owned()))
            .collect();
        // The callers held are added by the pump, when it announces the snapshot.
        let mut snapshot = PbxSnapshot::default();
        for channel in &live {
            let Some(call) = variable(esl, channel.as_str(), CALL_VAR).await? else {
                continue;
            };
            lock(&self.inner.legs).insert(channel.0.clone());
            let caller = variable(esl, channel.as_str(), CALLER_VAR).await?;
            let joined = match &caller {
                Some(caller) if live.contains(&ChannelId(caller.clone())) => {
                    let status = variable(esl, caller, STATUS_VAR).await?;
                    [WakeStatus::Answered, WakeStatus::AnsweredFallback]
                        .iter()
                        .any(|s| status.as_deref() == Some(s.as_str()))
                }
                _ => false,
            };
            match caller {
                Some(caller) if joined => {
                    let extension = variable(esl, &caller, EXTENSION_VAR)
                        .await?
                        .unwrap_or_default();
                    snapshot.conversations.push(Conversation {
                        call: CallId(call),
                        caller: caller.as_str().into(),
                        leg: channel.clone(),
                        extension,
                    });
                }
                _ => snapshot.legs.push(channel.clone()),
            }
        }
        snapshot.live = live;
        Ok(snapshot)
    }

    /// Sends a kept message through mod_sms (`SMS::SEND_MESSAGE`, blocking, so that
    /// sofia waits for the phone's answer) and waits for its `SMS::DELIVERY_REPORT`:
    /// done for the phone's 2xx, [`PbxError::Gone`] when no registered phone took it,
    /// [`PbxError::Failed`] for the phone's refusal or no report at all.
    async fn send_message(&self, message: OutgoingMessage) -> Result<PbxReply, PbxError> {
        let from = translate::sender_address(&message.from)
            .unwrap_or_else(|| format!("pushwake@{}", self.inner.domain));
        let to = format!("{}@{}", message.extension, self.inner.domain);
        let id = message.id.0.clone();
        let id_header = format!("sip_h_{MESSAGE_ID_HEADER}");
        let headers = [
            ("Event-Subclass", "SMS::SEND_MESSAGE"),
            ("dest_proto", "sip"),
            ("sip_profile", self.inner.profile.as_str()),
            ("to", to.as_str()),
            ("from", from.as_str()),
            ("type", message.content_type.as_str()),
            ("blocking", "true"),
            (id_header.as_str(), id.as_str()),
            (translate::MESSAGE_ID_VAR, id.as_str()),
        ];
        let (report, reported) = tokio::sync::oneshot::channel();
        lock(&self.inner.reports).insert(id.clone(), report);
        let sent = self
            .inner
            .esl
            .sendevent("CUSTOM", &headers, &message.body)
            .await;
        if let Err(error) = sent {
            lock(&self.inner.reports).remove(&id);
            return Err(failed("sendevent SMS::SEND_MESSAGE", error));
        }
        let result = match tokio::time::timeout(DELIVERY_REPORT_WAIT, reported).await {
            Ok(Ok(result)) => result,
            _ => {
                lock(&self.inner.reports).remove(&id);
                Err(PbxError::Failed(format!(
                    "no SMS::DELIVERY_REPORT within {}s: is mod_sms loaded?",
                    DELIVERY_REPORT_WAIT.as_secs()
                )))
            }
        };
        result.map(|()| PbxReply::Done)
    }

    /// The socket of a caller pushwake holds.
    fn socket(&self, caller: &ChannelId) -> Result<CallSocket, PbxError> {
        lock(&self.inner.sockets)
            .get(caller.as_str())
            .cloned()
            .ok_or_else(|| PbxError::Gone(format!("caller {caller}")))
    }

    /// Runs one `api` command and reads FreeSWITCH's answer as a result.
    async fn api(&self, command: String) -> Result<String, PbxError> {
        let name = command.split(' ').next().unwrap_or_default().to_owned();
        let answer = self
            .inner
            .esl
            .api(&command)
            .await
            .map_err(|e| failed(&name, e))?;
        api_result(&name, &answer)?;
        Ok(answer)
    }
}

/// The channel ids of `show channels` (CSV: a header line, a line per channel, a blank
/// line, `N total.`). The id is the first field, which no other field can shift.
pub fn channel_ids(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .filter(|id| valid_uuid(id))
        .collect()
}

/// A channel variable, or `None` when it is not set.
async fn variable(esl: &EslClient, channel: &str, name: &str) -> Result<Option<String>, EslError> {
    if !valid_uuid(channel) {
        return Ok(None);
    }
    let answer = esl.api(&format!("uuid_getvar {channel} {name}")).await?;
    let value = answer.trim();
    Ok(
        (!value.is_empty() && value != UNDEFINED && !value.starts_with("-ERR"))
            .then(|| value.to_owned()),
    )
}

impl CallControl for FreeSwitchPbx {
    async fn execute(&self, command: PbxCommand) -> Result<PbxReply, PbxError> {
        match command {
            PbxCommand::Ring { caller } => {
                let socket = self.socket(&caller)?;
                socket
                    .execute("ring_ready", None)
                    .await
                    .map_err(|e| failed("ring_ready", e))?;
            }
            PbxCommand::ListContacts { extension, .. } => {
                if !extension
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
                    || extension.is_empty()
                {
                    return Ok(PbxReply::Contacts(Vec::new()));
                }
                let answer = self
                    .inner
                    .esl
                    .api(&format!("sofia_contact {extension}@{}", self.inner.domain))
                    .await
                    .map_err(|e| failed("sofia_contact", e))?;
                let found = translate::contacts(&answer)?;
                let mut profiles = lock(&self.inner.profiles);
                let contacts: Vec<Contact> = found
                    .into_iter()
                    .map(|(contact, profile)| {
                        profiles.insert(contact.uri.clone(), profile);
                        contact
                    })
                    .collect();
                return Ok(PbxReply::Contacts(contacts));
            }
            PbxCommand::Dial(request) => {
                if !translate::dialable_target(&request.target) || !valid_uuid(request.leg.as_str())
                {
                    return Err(PbxError::Failed(format!(
                        "leg {}: the contact cannot be dialled safely",
                        request.leg
                    )));
                }
                let profile = request
                    .target
                    .contact()
                    .and_then(|uri| lock(&self.inner.profiles).get(uri).cloned())
                    .unwrap_or_else(|| self.inner.profile.clone());
                lock(&self.inner.legs).insert(request.leg.0.clone());
                let job = match self
                    .inner
                    .esl
                    .bgapi(&translate::originate(
                        &request,
                        &profile,
                        &self.inner.domain,
                    ))
                    .await
                {
                    Ok(job) => job,
                    Err(error) => {
                        lock(&self.inner.legs).remove(request.leg.as_str());
                        return Err(failed("originate", error));
                    }
                };
                // The job ends only when the leg answers or fails: its failure is the
                // leg's end (it never existed), which its hang-up event would not say.
                let pbx = self.clone();
                tokio::spawn(async move {
                    let outcome = job.result().await;
                    let failure = match &outcome {
                        Ok(answer) => api_result("originate", answer).err().map(|e| e.to_string()),
                        Err(error) => Some(error.to_string()),
                    };
                    if let Some(why) = failure {
                        tracing::debug!(leg = %request.leg, %why, "FreeSWITCH: a leg did not come up");
                        lock(&pbx.inner.legs).remove(request.leg.as_str());
                    }
                });
            }
            PbxCommand::Connect {
                caller,
                leg,
                status,
                ..
            } => {
                for command in translate::connect(caller.as_str(), leg.as_str(), status) {
                    self.api(command).await?;
                }
            }
            PbxCommand::Hangup { channel, reason } => {
                self.api(translate::hangup(channel.as_str(), reason))
                    .await?;
            }
            PbxCommand::Return { caller, status } => {
                let socket = lock(&self.inner.sockets)
                    .remove(caller.as_str())
                    .ok_or_else(|| PbxError::Gone(format!("caller {caller}")))?;
                socket
                    .execute("set", Some(&format!("{STATUS_VAR}={status}")))
                    .await
                    .map_err(|e| failed(&format!("set {STATUS_VARIABLE}"), e))?;
                socket.exit().await.map_err(|e| failed("exit", e))?;
            }
            // No bridge object to free: uuid_bridge joins the channels themselves.
            PbxCommand::Release { .. } => {}
            // Nothing on FreeSWITCH reads such a state (docs/freeswitch.md): mod_callcenter
            // rings an agent by its own status, whatever its registration, and the lamps
            // follow pushwake's legs through their presence_id.
            PbxCommand::PublishState { .. } => {}
            PbxCommand::SendMessage(message) => return self.send_message(message).await,
        }
        Ok(PbxReply::Done)
    }

    /// `MESSAGE` events in, mod_sms's `SMS::SEND_MESSAGE` and `SMS::DELIVERY_REPORT`
    /// out (docs/messages.md: mod_sms and the shipped chatplan).
    fn carries_messages(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_channels_gives_the_channel_ids() {
        // As captured (park-after-close.log), and with a comma inside a later field.
        let listing = "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,application_data\n\
                       0b6c9a3e-9c1f-4a53-9a0e-6f0e4d1d2b3a,inbound,2026-11-22 18:40:01,1795372801,sofia/internal/200@127.0.0.1,CS_EXECUTE,Extension 200,200,127.0.0.1,102,park,\n\
                       5d7d1c1e-0000-4000-8000-000000000001,outbound,2026-11-22 18:40:02,1795372802,sofia/internal/101@127.0.0.1:5091,CS_EXECUTE,a\\,b,200,,101,park,x,y\n\
                       \n\
                       2 total.\n";
        assert_eq!(
            channel_ids(listing),
            [
                "0b6c9a3e-9c1f-4a53-9a0e-6f0e4d1d2b3a",
                "5d7d1c1e-0000-4000-8000-000000000001"
            ]
        );
        assert!(channel_ids("uuid,direction\n\n0 total.\n").is_empty());
    }
}
