//! Messages for sleeping phones: the outbox that keeps each extension's SIP MESSAGEs
//! until its phone takes them.
//!
//! A message for a push-enabled extension whose phone is asleep is lost by the PBX today
//! (nothing retries). The outbox holds it instead: bounded per extension and by age (the
//! oldest dropped first, and said so), free of duplicates (a sender's retransmission has
//! the same Call-ID and CSeq), and handed out in order, **one at a time per extension**,
//! so that the phone sees the messages in the order they were sent whatever the
//! transport does. A message leaves the outbox only when the phone acknowledged it
//! ([`Outbox::delivered`]); a refusal or no answer ([`Outbox::not_delivered`]) keeps it,
//! and the extension's round stops until its next registration.
//!
//! Like the rest of the core it reads no clock: the current time (wall-clock seconds,
//! since messages outlive the process in the store) is passed in, and so are the ids.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

/// The limits the operator sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Messages kept per extension; beyond it, the oldest is dropped.
    pub per_extension: usize,
    /// How long a message is kept for a phone that does not register.
    pub max_age: Duration,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
}

impl Default for MessageLimits {
    /// 100 messages per extension, 7 days, 4 KiB per body: a week's backlog of a chat,
    /// well under what a phone's MESSAGE handling takes in one go.
    fn default() -> Self {
        Self {
            per_extension: 100,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_body: 4096,
        }
    }
}

/// A message's id in the outbox (and the store): chosen by the caller of
/// [`Outbox::receive`], unique.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub String);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What makes a retransmission the same message: the sender's SIP Call-ID and CSeq
/// number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The MESSAGE's Call-ID.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
}

/// A message as the PBX handed it over.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The extension it is for.
    pub extension: String,
    /// Who sent it, as the PBX names the sender (a SIP URI, `"Alice" <sip:200@pbx>`).
    pub from: String,
    /// Its content type (`text/plain`, …).
    pub content_type: String,
    /// Its body. Never logged above debug (see the `Debug` impl).
    pub body: String,
    /// When it arrived, in seconds since the Unix epoch.
    pub received_at: u64,
    /// The sender's Call-ID and CSeq, when the PBX gave them.
    pub dedup: Option<DedupKey>,
}

impl fmt::Debug for Message {
    /// Everything but the body, of which only the length shows: a `Debug` that ends up
    /// in a log line must not carry what people wrote to each other.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("extension", &self.extension)
            .field("from", &self.from)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// Why a message was not taken. Each says what to answer the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The body is larger than [`MessageLimits::max_body`] (SIP 413).
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a text body (SIP 415): only `text/*` is stored and pushed.
    NotText {
        /// The content type it had.
        content_type: String,
    },
    /// The same Call-ID and CSeq as a message already kept: a retransmission (the
    /// sender is answered as the first time).
    Duplicate(MessageId),
    /// The PBX passed the message on with an empty body although the sender declared
    /// one: a body too large for the PBX itself (Asterisk keeps at most 1,023 bytes).
    DroppedByPbx {
        /// The length the sender declared.
        declared: usize,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, limit } => {
                write!(f, "the body is {len} bytes, more than the {limit} allowed")
            }
            Self::NotText { content_type } => {
                write!(f, "the body is {content_type:?}, not text")
            }
            Self::Duplicate(id) => write!(f, "a retransmission of message {id}"),
            Self::DroppedByPbx { declared } => write!(
                f,
                "the PBX passed on an empty body for the {declared} bytes the sender declared (too large for the PBX)"
            ),
        }
    }
}

/// A message taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The messages dropped to make room (the extension's oldest), to log and to remove
    /// from the store.
    pub dropped: Vec<Message>,
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the phone.
    Waiting,
    /// Handed out; its answer has not come yet.
    InFlight,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<(Message, Stage)>,
    /// Whether this registration's round stopped on a failure: nothing more is handed
    /// out until the next registration.
    stopped: bool,
}

/// The messages kept for every extension.
#[derive(Debug, Default)]
pub struct Outbox {
    limits: MessageLimits,
    /// By extension; a BTreeMap so that [`Outbox::expire`]'s result is in a stable order.
    queues: BTreeMap<String, Queue>,
    /// Which extension holds each message.
    by_id: HashMap<MessageId, String>,
    by_dedup: HashMap<DedupKey, MessageId>,
}

impl Outbox {
    /// An empty outbox with these limits.
    pub fn new(limits: MessageLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &MessageLimits {
        &self.limits
    }

    /// Messages kept, for every extension.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The extensions that have messages kept.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// The extension holding message `id`, if it is kept.
    pub fn extension_of(&self, id: &MessageId) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// The messages kept for `extension`, oldest first.
    pub fn pending(&self, extension: &str) -> Vec<&Message> {
        self.queues
            .get(extension)
            .map(|q| q.messages.iter().map(|(m, _)| m).collect())
            .unwrap_or_default()
    }

    /// Takes `message`, unless [`Refused`]. Over the extension's bound the oldest
    /// messages are dropped (returned in [`Received::dropped`]), never the new one.
    pub fn receive(&mut self, message: Message) -> Result<Received, Refused> {
        if !is_text(&message.content_type) {
            return Err(Refused::NotText {
                content_type: message.content_type,
            });
        }
        if message.body.len() > self.limits.max_body {
            return Err(Refused::TooLarge {
                len: message.body.len(),
                limit: self.limits.max_body,
            });
        }
        if let Some(id) = message.dedup.as_ref().and_then(|k| self.by_dedup.get(k)) {
            return Err(Refused::Duplicate(id.clone()));
        }
        let extension = message.extension.clone();
        if let Some(key) = &message.dedup {
            self.by_dedup.insert(key.clone(), message.id.clone());
        }
        self.by_id.insert(message.id.clone(), extension.clone());
        let queue = self.queues.entry(extension.clone()).or_default();
        queue.messages.push_back((message, Stage::Waiting));
        let mut dropped = Vec::new();
        while queue.messages.len() > self.limits.per_extension.max(1) {
            // The oldest that is not being delivered (its answer is still to come), and
            // never the one just taken.
            let older = queue.messages.len() - 1;
            let Some(at) = queue
                .messages
                .iter()
                .take(older)
                .position(|(_, stage)| *stage == Stage::Waiting)
            else {
                break;
            };
            if let Some((old, _)) = queue.messages.remove(at) {
                dropped.push(old);
            }
        }
        for old in &dropped {
            self.forget_indexes(old);
        }
        Ok(Received { dropped })
    }

    /// Puts back what the store held at start (in any order): each extension's messages
    /// sorted by arrival. Nothing is dropped or refused here; the limits apply to what
    /// comes next, and [`Outbox::expire`] to the old ones.
    pub fn restore(&mut self, messages: impl IntoIterator<Item = Message>) {
        for message in messages {
            if self.by_id.contains_key(&message.id) {
                continue;
            }
            if let Some(key) = &message.dedup {
                self.by_dedup.insert(key.clone(), message.id.clone());
            }
            self.by_id
                .insert(message.id.clone(), message.extension.clone());
            self.queues
                .entry(message.extension.clone())
                .or_default()
                .messages
                .push_back((message, Stage::Waiting));
        }
        for queue in self.queues.values_mut() {
            queue
                .messages
                .make_contiguous()
                .sort_by(|(a, _), (b, _)| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
        }
    }

    /// The extension registered (a phone is reachable): starts a new round and returns
    /// the first message to deliver, if one is waiting and none is in flight.
    pub fn registered(&mut self, extension: &str) -> Option<Message> {
        let queue = self.queues.get_mut(extension)?;
        queue.stopped = false;
        Self::hand_out(queue)
    }

    /// The phone acknowledged message `id` (a 2xx, or the app's confirmation): it is
    /// removed, also when its answer comes late (after [`Outbox::not_delivered`]: the
    /// phone has it all the same). Returns it (to remove from the store) and the
    /// extension's next message to deliver; both `None` for an id not kept (a repeated
    /// answer).
    pub fn delivered(&mut self, id: &MessageId) -> (Option<Message>, Option<Message>) {
        let Some(extension) = self.by_id.get(id).cloned() else {
            return (None, None);
        };
        let Some(queue) = self.queues.get_mut(&extension) else {
            return (None, None);
        };
        let Some(at) = queue.messages.iter().position(|(m, _)| &m.id == id) else {
            return (None, None);
        };
        let (done, _) = queue.messages.remove(at).expect("found above");
        let next = Self::hand_out(queue);
        if queue.messages.is_empty() {
            self.queues.remove(&extension);
        }
        self.forget_indexes(&done);
        (Some(done), next)
    }

    /// Message `id` was refused (4xx/5xx) or got no answer: it is kept, at its place, and
    /// nothing more is handed out for its extension until the next registration (a phone
    /// that refuses one message now would likely refuse the next).
    pub fn not_delivered(&mut self, id: &MessageId) {
        let Some(queue) = self.by_id.get(id).and_then(|e| self.queues.get_mut(e)) else {
            return;
        };
        if let Some((_, stage)) = queue.messages.iter_mut().find(|(m, _)| &m.id == id) {
            *stage = Stage::Waiting;
            queue.stopped = true;
        }
    }

    /// Removes the messages older than [`MessageLimits::max_age`] at `now` (seconds since
    /// the epoch), except those in flight, and returns them (to log and to remove from
    /// the store).
    pub fn expire(&mut self, now: u64) -> Vec<Message> {
        let max_age = self.limits.max_age.as_secs();
        let mut expired = Vec::new();
        self.queues.retain(|_, queue| {
            queue.messages.retain(|(m, stage)| {
                let old = *stage == Stage::Waiting && now.saturating_sub(m.received_at) > max_age;
                if old {
                    expired.push(m.clone());
                }
                !old
            });
            !queue.messages.is_empty()
        });
        for old in &expired {
            self.forget_indexes(old);
        }
        expired
    }

    fn hand_out(queue: &mut Queue) -> Option<Message> {
        if queue.stopped || queue.messages.iter().any(|(_, s)| *s == Stage::InFlight) {
            return None;
        }
        let (message, stage) = queue.messages.front_mut()?;
        *stage = Stage::InFlight;
        Some(message.clone())
    }

    fn forget_indexes(&mut self, message: &Message) {
        self.by_id.remove(&message.id);
        if let Some(key) = &message.dedup {
            if self.by_dedup.get(key) == Some(&message.id) {
                self.by_dedup.remove(key);
            }
        }
    }
}

/// Whether a content type is text (`text/plain`, `text/plain; charset=UTF-8`,
/// `Text/HTML`): what the outbox keeps and a push can preview.
fn is_text(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media
        .split_once('/')
        .is_some_and(|(kind, sub)| kind.eq_ignore_ascii_case("text") && !sub.is_empty())
}

pub mod courier;

#[cfg(test)]
mod tests;
