//! The courier: what becomes of each message for a push-enabled extension, from the
//! PBX handing it over to the phone taking it.
//!
//! Like the wake engine it is a plain state machine: events and the time in
//! ([`Courier::receive`], [`Courier::registered`], [`Courier::sent`], …), commands out
//! ([`Courier::poll_command`]): store it, send it to the phone, push the phone, forget
//! it. The driver carries the commands out and reports back.
//!
//! A message is stored first, then tried at once (the phone may be awake); when the PBX
//! finds no phone to send it to, or the send fails, the extension's devices are pushed
//! (once per message) and the message waits for the next registration. It is removed
//! once delivered: when the PBX accepted it for a registered phone, or, with
//! [`Confirmation::AppConfirms`], once the app confirmed it (a phone that refused it
//! never confirms, so it gets it again at its next registration).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Message, MessageId, MessageLimits, Outbox, Refused};
use crate::pbx::{IncomingMessage, OutgoingMessage, Party};
use crate::push::MessagePush;

/// What counts as delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Confirmation {
    /// The PBX accepted the message for a registered phone. Every app works this way;
    /// a phone that refuses the MESSAGE loses it where the PBX does not report the
    /// phone's answer (Asterisk does not).
    #[default]
    PbxAccepted,
    /// The app confirmed the message through the device API, by the id it got in the
    /// `X-Pushwake-Message-Id` header. Nothing is lost; an app that never confirms gets
    /// its messages again at each registration until they expire.
    AppConfirms,
}

impl Confirmation {
    /// Both, with their names in the configuration (`[messages] confirmation`).
    pub const ALL: [Confirmation; 2] = [Confirmation::PbxAccepted, Confirmation::AppConfirms];

    /// Its name in the configuration: `pbx` or `app`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmation::PbxAccepted => "pbx",
            Confirmation::AppConfirms => "app",
        }
    }
}

/// How the courier works, as the operator set it (`[messages]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CourierSettings {
    /// What is kept, and for how long.
    pub limits: MessageLimits,
    /// What counts as delivered.
    pub confirmation: Confirmation,
    /// How long the app has to confirm a message the PBX accepted, before it is pushed
    /// and kept for the next registration ([`Confirmation::AppConfirms`] only).
    pub confirm_within: Duration,
    /// How many characters of the body a push carries; 0: none (the push says only
    /// who wrote).
    pub preview_chars: usize,
    /// The node holding the messages, on a site of several nodes.
    pub node: Option<String>,
}

impl Default for CourierSettings {
    fn default() -> Self {
        Self {
            limits: MessageLimits::default(),
            confirmation: Confirmation::default(),
            confirm_within: Duration::from_secs(10),
            preview_chars: 120,
            node: None,
        }
    }
}

/// What became of one send to the PBX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The PBX took it for a registered phone.
    Accepted,
    /// The extension has no registered phone.
    NoContact,
    /// The PBX could not send it (for logs).
    Failed(String),
}

/// Why a message left the courier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// The phone has it.
    Delivered,
    /// Its extension had too many waiting: the oldest made room for a new one.
    Dropped,
    /// It waited longer than [`MessageLimits::max_age`].
    Expired,
}

impl Forgotten {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Forgotten::Delivered => "delivered",
            Forgotten::Dropped => "dropped",
            Forgotten::Expired => "expired",
        }
    }
}

/// Work for the driver, in the order it must be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CourierCommand {
    /// Keep the message in the store (before it is sent: a restart must find it).
    Store(Message),
    /// Remove it from the store.
    Forget {
        /// The message.
        message: Message,
        /// Why.
        why: Forgotten,
    },
    /// Send it to the extension's phone, and report with [`Courier::sent`].
    Send(OutgoingMessage),
    /// Push the extension's devices about it.
    Push(MessagePush),
}

/// The messages of every extension and what is being done with them.
#[derive(Debug, Default)]
pub struct Courier {
    outbox: Outbox,
    settings: CourierSettings,
    /// The messages whose devices were pushed (each is pushed once).
    pushed: HashSet<MessageId>,
    /// Messages the PBX accepted, waiting for the app's confirmation until then.
    awaiting: BTreeMap<MessageId, Instant>,
    commands: VecDeque<CourierCommand>,
}

impl Courier {
    /// An empty courier.
    pub fn new(settings: CourierSettings) -> Self {
        Self {
            outbox: Outbox::new(settings.limits.clone()),
            settings,
            ..Self::default()
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &CourierSettings {
        &self.settings
    }

    /// Messages kept, for every extension.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// The messages kept for `extension`, oldest first.
    pub fn pending(&self, extension: &str) -> Vec<&Message> {
        self.outbox.pending(extension)
    }

    /// The next command to carry out.
    pub fn poll_command(&mut self) -> Option<CourierCommand> {
        self.commands.pop_front()
    }

    /// Puts back what the store held (at start, or once it could be read). They were
    /// pushed when they came, so they are not pushed again: each is sent at its
    /// extension's next registration (or at the next [`Courier::reconnected`]).
    pub fn restore(&mut self, messages: impl IntoIterator<Item = Message>) {
        let messages: Vec<Message> = messages.into_iter().collect();
        self.pushed.extend(messages.iter().map(|m| m.id.clone()));
        self.outbox.restore(messages);
    }

    /// Takes a message the PBX received, with the id it is to have, at `now_unix`
    /// (seconds since the epoch); it is stored and tried at once. [`Refused`] says why
    /// not (to log: the PBX answered the sender already).
    pub fn receive(
        &mut self,
        id: MessageId,
        now_unix: u64,
        incoming: IncomingMessage,
    ) -> Result<(), Refused> {
        if let Some(declared) = incoming.declared_len {
            if incoming.body.is_empty() && declared > 0 {
                return Err(Refused::DroppedByPbx { declared });
            }
        }
        let message = Message {
            id,
            extension: incoming.extension,
            from: incoming.from,
            content_type: incoming.content_type,
            body: incoming.body,
            received_at: now_unix,
            dedup: incoming.dedup,
        };
        let extension = message.extension.clone();
        let received = self.outbox.receive(message.clone())?;
        self.commands.push_back(CourierCommand::Store(message));
        for old in received.dropped {
            self.forget(old, Forgotten::Dropped);
        }
        self.try_send(&extension);
        Ok(())
    }

    /// A phone of `extension` registered: its waiting messages go out, in order.
    pub fn registered(&mut self, extension: &str) {
        self.try_send(extension);
    }

    /// The PBX connection is (re)established: phones may have registered meanwhile,
    /// so every extension's waiting messages are tried.
    pub fn reconnected(&mut self) {
        let extensions: Vec<String> = self.outbox.extensions().map(str::to_owned).collect();
        for extension in extensions {
            self.try_send(&extension);
        }
    }

    /// What became of [`CourierCommand::Send`] of message `id`, at `now`.
    pub fn sent(&mut self, now: Instant, id: &MessageId, delivery: Delivery) {
        let Some(extension) = self.outbox.extension_of(id).map(str::to_owned) else {
            return;
        };
        match (delivery, self.settings.confirmation) {
            (Delivery::Accepted, Confirmation::PbxAccepted) => self.delivered(id),
            (Delivery::Accepted, Confirmation::AppConfirms) => {
                self.awaiting
                    .insert(id.clone(), now + self.settings.confirm_within);
            }
            (Delivery::NoContact | Delivery::Failed(_), _) => {
                self.outbox.not_delivered(id);
                self.push_waiting(&extension);
            }
        }
    }

    /// The app of `extension` confirmed message `id`. `false` if `extension` holds no
    /// such message (already confirmed, expired, or another extension's).
    pub fn confirmed(&mut self, extension: &str, id: &MessageId) -> bool {
        if self.outbox.extension_of(id) != Some(extension) {
            return false;
        }
        self.delivered(id);
        true
    }

    /// When [`Courier::handle_timeout`] must be called next, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.awaiting.values().min().copied()
    }

    /// The confirmations due by `now` that did not come: those messages are kept for
    /// the next registration, and their devices pushed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<MessageId> = self
            .awaiting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.awaiting.remove(&id);
            if let Some(extension) = self.outbox.extension_of(&id).map(str::to_owned) {
                self.outbox.not_delivered(&id);
                self.push_waiting(&extension);
            }
        }
    }

    /// Forgets the messages older than the limit at `now_unix`.
    pub fn expire(&mut self, now_unix: u64) {
        for old in self.outbox.expire(now_unix) {
            self.forget(old, Forgotten::Expired);
        }
    }

    fn delivered(&mut self, id: &MessageId) {
        self.awaiting.remove(id);
        let (done, next) = self.outbox.delivered(id);
        if let Some(done) = done {
            self.forget(done, Forgotten::Delivered);
        }
        if let Some(next) = next {
            self.commands
                .push_back(CourierCommand::Send(outgoing(&next)));
        }
    }

    fn try_send(&mut self, extension: &str) {
        if let Some(first) = self.outbox.registered(extension) {
            self.commands
                .push_back(CourierCommand::Send(outgoing(&first)));
        }
    }

    /// Pushes about every message of `extension` not pushed yet.
    fn push_waiting(&mut self, extension: &str) {
        let fresh: Vec<Message> = self
            .outbox
            .pending(extension)
            .into_iter()
            .filter(|m| !self.pushed.contains(&m.id))
            .cloned()
            .collect();
        for message in fresh {
            self.pushed.insert(message.id.clone());
            let push = self.push_for(&message);
            self.commands.push_back(CourierCommand::Push(push));
        }
    }

    fn push_for(&self, message: &Message) -> MessagePush {
        let preview = (self.settings.preview_chars > 0)
            .then(|| preview(&message.body, self.settings.preview_chars));
        MessagePush {
            message_id: message.id.clone(),
            extension: message.extension.clone(),
            sender: sender_of(&message.from),
            preview,
            received_at: message.received_at,
            expires_at: message
                .received_at
                .saturating_add(self.settings.limits.max_age.as_secs()),
            node: self.settings.node.clone(),
        }
    }

    fn forget(&mut self, message: Message, why: Forgotten) {
        self.pushed.remove(&message.id);
        self.awaiting.remove(&message.id);
        self.commands
            .push_back(CourierCommand::Forget { message, why });
    }
}

fn outgoing(message: &Message) -> OutgoingMessage {
    OutgoingMessage {
        id: message.id.clone(),
        extension: message.extension.clone(),
        from: message.from.clone(),
        content_type: message.content_type.clone(),
        body: message.body.clone(),
    }
}

/// The first `chars` characters of `body`, on one line, with `…` if it was cut.
pub fn preview(body: &str, chars: usize) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = flat.chars().take(chars).collect();
    if flat.chars().count() > chars {
        cut.push('…');
    }
    cut
}

/// The sender of a MESSAGE as a [`Party`], from its `From` as the PBX gives it:
/// `"Alice" <sip:200@pbx>` is Alice, 200; `<sip:200@pbx>` and `sip:200@pbx` are 200.
pub fn sender_of(from: &str) -> Party {
    let from = from.trim();
    let (name, uri) = match from.find('<') {
        Some(open) => {
            let name = from[..open].trim().trim_matches('"').trim();
            let uri = from[open + 1..].split('>').next().unwrap_or_default();
            (name, uri)
        }
        None => ("", from.split(';').next().unwrap_or_default()),
    };
    let after_scheme = uri.split_once(':').map_or(uri, |(_, rest)| rest);
    let number = match after_scheme.split_once('@') {
        Some((user, _)) => user,
        None => "",
    };
    let number = number.split(';').next().unwrap_or_default();
    Party {
        number: number.to_owned(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests;
