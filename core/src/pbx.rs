//! The PBX-neutral vocabulary between the wake logic and a PBX adapter.
//!
//! The wake logic ([`crate::wake`]) speaks only in these terms: channels by opaque id, a
//! caller handed over for an extension, legs that ring and answer, contacts that register,
//! and a handful of call-control commands. Each PBX gets one adapter crate that translates
//! its own protocol into [`PbxEvent`]s and carries out [`PbxCommand`]s; how it hands a
//! caller over, how it marks its legs and how it joins two channels is the adapter's own
//! business. Nothing here knows which PBX is on the other side.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::messages::{DedupKey, MessageId};

/// Generates a string newtype used as an identifier.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// A PBX channel: the waiting caller or one outgoing leg towards a phone.
    ChannelId
);
id_type!(
    /// pushwake's own id for one waiting call; it travels in the push and in the
    /// [`CALL_ID_HEADER`] of every leg, so an app can match the two.
    CallId
);

/// The variable a caller returns to the dialplan with, holding a [`WakeStatus`] (each
/// adapter sets it the way its PBX's dialplan reads variables).
pub const STATUS_VARIABLE: &str = "PUSHWAKE_STATUS";

/// The SIP header that carries the [`CallId`] in the INVITE to a woken phone.
pub const CALL_ID_HEADER: &str = "X-Pushwake-Call-Id";

/// The SIP header that carries a stored message's [`MessageId`] in the MESSAGE to the
/// phone, so that an app can confirm it through the device API.
pub const MESSAGE_ID_HEADER: &str = "X-Pushwake-Message-Id";

/// Who is calling, as the PBX presents the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Party {
    /// Caller id number (may be empty).
    pub number: String,
    /// Caller id name (may be empty).
    pub name: String,
}

/// One registered SIP contact of an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The contact URI exactly as the PBX stored it, RFC 8599 parameters included.
    pub uri: String,
    /// Something that changes whenever the phone registers again with the very same URI
    /// (the PBX does not announce such a refresh), or `None` when the PBX cannot tell.
    pub registration: Option<String>,
}

/// The value of the `PUSHWAKE_STATUS` channel variable a caller is returned with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WakeStatus {
    /// A device answered and was bridged to the caller.
    Answered,
    /// The extension's fallback number answered and was bridged to the caller.
    AnsweredFallback,
    /// No device answered within the extension's ring timeout.
    Timeout,
    /// The extension is not configured for push, or has no devices.
    NoPush,
    /// Every push failed for good and nothing could be dialled.
    Failed,
    /// A previous daemon process left the caller waiting; it is returned on restart.
    Recovered,
    /// The daemon is stopping and returns every waiting caller.
    Shutdown,
}

impl WakeStatus {
    /// The exact string the dialplan sees.
    pub fn as_str(self) -> &'static str {
        match self {
            WakeStatus::Answered => "ANSWERED",
            WakeStatus::AnsweredFallback => "ANSWERED_FALLBACK",
            WakeStatus::Timeout => "TIMEOUT",
            WakeStatus::NoPush => "NOPUSH",
            WakeStatus::Failed => "FAILED",
            WakeStatus::Recovered => "RECOVERED",
            WakeStatus::Shutdown => "SHUTDOWN",
        }
    }
}

impl fmt::Display for WakeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why pushwake hangs up a leg; adapters map it to the PBX's hangup cause so the phone
/// sees the right SIP `Reason` (e.g. "call completed elsewhere").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupReason {
    /// Another device answered the call.
    AnsweredElsewhere,
    /// The caller hung up, the call timed out, or the daemon is cleaning up.
    Normal,
}

/// A request to ring one contact of an extension for a waiting call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialRequest {
    /// The call this leg belongs to.
    pub call: CallId,
    /// The id the new leg must get (chosen by the wake logic so no round trip is
    /// needed to learn it, and so the leg's events can never come before its id is known).
    pub leg: ChannelId,
    /// The waiting caller's channel (the leg's originator).
    pub caller_channel: ChannelId,
    /// Extension the leg rings for.
    pub extension: String,
    /// What to ring.
    pub target: DialTarget,
    /// Caller id to present to the phone.
    pub caller: Party,
    /// How long the leg may ring before the PBX gives up on it by itself (a safety net
    /// should the daemon die while it rings).
    pub timeout: Duration,
}

/// What a leg rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialTarget {
    /// One registered contact of the extension: its URI exactly as the PBX stored it.
    Contact(String),
    /// The extension's fallback (a cell number, say): a dial string in the PBX's own
    /// syntax, from the configuration.
    Fallback(String),
}

impl DialTarget {
    /// The contact URI, if this is a contact.
    pub fn contact(&self) -> Option<&str> {
        match self {
            DialTarget::Contact(uri) => Some(uri),
            DialTarget::Fallback(_) => None,
        }
    }
}

/// A call-control command for the PBX adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxCommand {
    /// Give the waiting caller ringback.
    Ring {
        /// The caller.
        caller: ChannelId,
    },
    /// List the contacts the extension has registered right now.
    ListContacts {
        /// The call asking (the result is routed back to it).
        call: CallId,
        /// The waiting caller, should the PBX need a channel to answer the question on.
        caller: ChannelId,
        /// The extension whose contacts are wanted.
        extension: String,
    },
    /// Ring one contact.
    Dial(DialRequest),
    /// Answer the caller and join it with the leg that answered; the caller's
    /// [`STATUS_VARIABLE`] becomes `status` (`ANSWERED`, or `ANSWERED_FALLBACK`), for
    /// when the conversation ends.
    Connect {
        /// The call being connected.
        call: CallId,
        /// The caller.
        caller: ChannelId,
        /// The leg that answered.
        leg: ChannelId,
        /// What the caller returns to the dialplan with after the conversation.
        status: WakeStatus,
    },
    /// Hang a channel up.
    Hangup {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: HangupReason,
    },
    /// Set the caller's [`STATUS_VARIABLE`] and return it to the dialplan.
    Return {
        /// The caller.
        caller: ChannelId,
        /// The status to set.
        status: WakeStatus,
    },
    /// The call's conversation is over, or cannot go on: free whatever the PBX still
    /// holds to join its two parties (nothing, on a PBX that joins channels directly).
    Release {
        /// The call.
        call: CallId,
    },
    /// Show the extension's state to the PBX's queues and busy lamps (a state the PBX
    /// lets an application set, which its queues can use as a member's state).
    PublishState {
        /// The extension.
        extension: String,
        /// Its state now.
        state: ExtensionState,
    },
    /// Hand a stored message to the extension's registered phone. Fails with
    /// [`PbxError::Gone`] when the extension has no contact to send it to.
    SendMessage(OutgoingMessage),
}

/// A SIP MESSAGE that pushwake has kept for an extension, to send to its phone.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The message's id, sent in the [`MESSAGE_ID_HEADER`].
    pub id: MessageId,
    /// The extension to send it to.
    pub extension: String,
    /// The original sender, as the PBX named it (the MESSAGE's `From`).
    pub from: String,
    /// Its content type.
    pub content_type: String,
    /// Its body.
    pub body: String,
}

impl fmt::Debug for OutgoingMessage {
    /// Without the body: a `Debug` that ends up in a log line must not carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("id", &self.id)
            .field("extension", &self.extension)
            .field("from", &self.from)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A SIP MESSAGE the PBX received for an extension (a chat message, not a call).
#[derive(Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The extension it is for.
    pub extension: String,
    /// Who sent it, as the PBX names the sender (`"Alice" <sip:200@pbx>`).
    pub from: String,
    /// Its content type (`text/plain;charset=UTF-8`).
    pub content_type: String,
    /// Its body.
    pub body: String,
    /// The sender's Call-ID and CSeq, when the PBX gives them: what makes a
    /// retransmission the same message.
    pub dedup: Option<DedupKey>,
    /// The body's length as the sender declared it (`Content-Length`), when the PBX
    /// gives it: a PBX that drops a body too large for it leaves an empty body with a
    /// declared length.
    pub declared_len: Option<usize>,
}

impl fmt::Debug for IncomingMessage {
    /// Without the body (see [`OutgoingMessage`]'s).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("extension", &self.extension)
            .field("from", &self.from)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("declared_len", &self.declared_len)
            .finish_non_exhaustive()
    }
}

/// A push-enabled extension as pushwake shows it to the PBX: whether a queue may ring
/// it, and what a busy lamp shows. A sleeping phone is not unavailable: it can be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtensionState {
    /// It has a device that can be woken, and no call.
    Idle,
    /// A caller waits for it.
    Ringing,
    /// One of its devices is in a call pushwake connected.
    InUse,
    /// It has no device that can be woken.
    Unavailable,
}

impl ExtensionState {
    /// The state an extension with `devices` push-capable devices, `waiting` callers
    /// waiting for it and `connected` conversations is in.
    pub fn of(devices: usize, waiting: usize, connected: usize) -> Self {
        if connected > 0 {
            ExtensionState::InUse
        } else if waiting > 0 {
            ExtensionState::Ringing
        } else if devices > 0 {
            ExtensionState::Idle
        } else {
            ExtensionState::Unavailable
        }
    }

    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionState::Idle => "idle",
            ExtensionState::Ringing => "ringing",
            ExtensionState::InUse => "in use",
            ExtensionState::Unavailable => "unavailable",
        }
    }
}

impl PbxCommand {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PbxCommand::Ring { .. } => "ring",
            PbxCommand::ListContacts { .. } => "list-contacts",
            PbxCommand::Dial(_) => "dial",
            PbxCommand::Connect { .. } => "connect",
            PbxCommand::Hangup { .. } => "hangup",
            PbxCommand::Return { .. } => "return",
            PbxCommand::Release { .. } => "release",
            PbxCommand::PublishState { .. } => "publish-state",
            PbxCommand::SendMessage(_) => "send-message",
        }
    }
}

/// What a successful [`PbxCommand`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxReply {
    /// The command was carried out.
    Done,
    /// The answer to [`PbxCommand::ListContacts`].
    Contacts(Vec<Contact>),
}

/// Why a [`PbxCommand`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PbxError {
    /// The channel (or whatever the command was about) no longer exists: usually, the
    /// caller hung up.
    #[error("{0} no longer exists")]
    Gone(String),
    /// The PBX answered with an error: it refused the command.
    #[error("{0}")]
    Failed(String),
    /// The PBX could not be reached, or the connection broke before it answered: the
    /// command may not have been carried out, and the same command later may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// A caller handed over to pushwake and still waiting, as found on (re)connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCaller {
    /// The caller's channel.
    pub channel: ChannelId,
    /// The extension it was handed over for (empty if the PBX does not say).
    pub extension: String,
}

/// Two parties pushwake joined, found on (re)connecting: a conversation that can go on
/// under this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The call they belong to.
    pub call: CallId,
    /// The caller.
    pub caller: ChannelId,
    /// The leg that answered.
    pub leg: ChannelId,
    /// The extension the caller was handed over for.
    pub extension: String,
}

/// What the PBX holds for pushwake, read on every (re)connect so that calls a previous
/// process (or a lost connection) left behind are never stuck.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbxSnapshot {
    /// Callers handed over to pushwake that are not in a conversation.
    pub callers: Vec<HeldCaller>,
    /// pushwake's own legs that answered and are not in a conversation.
    pub legs: Vec<ChannelId>,
    /// Conversations pushwake joined whose two parties are both still there.
    pub conversations: Vec<Conversation>,
    /// Calls for which the PBX still holds a conversation that cannot go on (a party
    /// is missing): released unless the call is this process's own.
    pub broken: Vec<CallId>,
    /// Every channel that exists in the PBX (to notice hang-ups missed while
    /// disconnected).
    pub live: HashSet<ChannelId>,
}

/// Something that happened in the PBX, translated by the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxEvent {
    /// The event stream is (re)connected; here is what the PBX holds now. Sent before
    /// any other event of the new connection.
    Connected(PbxSnapshot),
    /// The event stream was lost; commands may fail until `Connected` comes again.
    Disconnected,
    /// The dialplan handed a caller over to pushwake.
    CallerArrived {
        /// The caller's channel.
        channel: ChannelId,
        /// The extension called (empty if the dialplan named none).
        extension: String,
        /// Caller id of the channel.
        caller: Party,
    },
    /// One of pushwake's legs ringing at a phone.
    LegRinging {
        /// The leg.
        leg: ChannelId,
    },
    /// One of pushwake's legs answered (of this process, or of a previous one).
    LegAnswered {
        /// The leg.
        leg: ChannelId,
    },
    /// A channel is gone (hung up and destroyed).
    ChannelGone {
        /// The channel.
        channel: ChannelId,
        /// The PBX's hangup cause, for logs.
        cause: String,
        /// The PBX hung the channel up because someone else answered the call: the
        /// caller was one member of a ring group or queue, and another member won.
        answered_elsewhere: bool,
    },
    /// A contact registered (or re-registered with a new URI) for an extension.
    ContactAdded {
        /// The extension it belongs to.
        extension: String,
        /// The contact URI, RFC 8599 parameters included.
        uri: String,
    },
    /// A contact was removed (unregistered or expired).
    ContactRemoved {
        /// The extension it belonged to.
        extension: String,
        /// The contact URI.
        uri: String,
    },
    /// The PBX received a SIP MESSAGE for an extension.
    MessageReceived(IncomingMessage),
}

/// Call control on one PBX: carries out [`PbxCommand`]s.
///
/// Implemented once per PBX adapter; the driver is generic over it, which is also how
/// the driver is tested against a fake PBX. Returning a plain future keeps this crate
/// free of any runtime.
pub trait CallControl: Send + Sync + 'static {
    /// Carry out one command.
    fn execute(
        &self,
        command: PbxCommand,
    ) -> impl Future<Output = Result<PbxReply, PbxError>> + Send;

    /// How often a waiting call must list its extension's contacts again, if the PBX
    /// does not report every registration as an event (a phone that registers again on
    /// the very same contact goes unannounced on some PBXes). `None`: every
    /// registration is an event, no polling.
    fn contact_poll(&self) -> Option<Duration> {
        None
    }

    /// Whether to show the PBX each push-enabled extension's state
    /// ([`PbxCommand::PublishState`]): where the PBX can take them and the operator asked
    /// for them. `false`: no state is shown.
    fn extension_states(&self) -> bool {
        false
    }

    /// Whether this PBX hands pushwake the messages for its extensions
    /// ([`PbxEvent::MessageReceived`]) and can send them on
    /// ([`PbxCommand::SendMessage`]).
    fn carries_messages(&self) -> bool {
        false
    }
}
