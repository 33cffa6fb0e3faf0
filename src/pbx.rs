//! The PBX-agnostic vocabulary between the wake logic and a PBX adapter.
//!
//! The wake logic ([`crate::wake`]) only speaks in these terms: channels, contacts and
//! bridges by opaque id, and a handful of call-control commands. Each PBX gets one module
//! that translates its own protocol into [`PbxEvent`]s and carries out [`PbxCommand`]s
//! (see [`crate::asterisk`]); nothing here knows which PBX is on the other side.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

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
    /// A PBX bridge joining the caller with the leg that answered.
    BridgeId
);
id_type!(
    /// pushwake's own id for one waiting call; it travels in the push and in the
    /// `X-Pushwake-Call-Id` header of every leg, so an app can match the two.
    CallId
);

/// The first `Stasis()`/park argument that marks a channel as one of pushwake's own
/// outgoing legs rather than a caller. Legs of a previous daemon process are recognised
/// by it after a restart.
pub const LEG_MARKER: &str = "pushwake-leg";

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
    /// needed to learn it).
    pub leg: ChannelId,
    /// The waiting caller's channel (the leg's originator).
    pub caller_channel: ChannelId,
    /// Extension (endpoint) the contact belongs to.
    pub extension: String,
    /// The contact URI to ring.
    pub contact_uri: String,
    /// Caller id to present to the phone.
    pub caller: Party,
    /// How long the leg may ring before the PBX gives up on it by itself (a safety net
    /// should the daemon die while it rings).
    pub timeout: Duration,
}

/// A call-control command for the PBX adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxCommand {
    /// Give the waiting caller ringback.
    Ring {
        /// The caller.
        channel: ChannelId,
    },
    /// List the contacts the extension has registered right now.
    ListContacts {
        /// The call asking (the result is routed back to it).
        call: CallId,
        /// A channel on which the PBX can evaluate the query (the caller).
        channel: ChannelId,
        /// The extension whose contacts are wanted.
        extension: String,
    },
    /// Ring one contact.
    Dial(DialRequest),
    /// Answer the caller and bridge it with the leg that answered; set
    /// `PUSHWAKE_STATUS=ANSWERED` on the caller.
    Connect {
        /// The call being connected.
        call: CallId,
        /// The caller.
        caller: ChannelId,
        /// The leg that answered.
        leg: ChannelId,
        /// The id of the bridge to create.
        bridge: BridgeId,
    },
    /// Hang a channel up.
    Hangup {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: HangupReason,
    },
    /// Set `PUSHWAKE_STATUS` on the caller and return it to the dialplan.
    Continue {
        /// The caller.
        channel: ChannelId,
        /// The status to set.
        status: WakeStatus,
    },
    /// Destroy a bridge.
    DestroyBridge {
        /// The bridge.
        bridge: BridgeId,
    },
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
            PbxCommand::Continue { .. } => "continue",
            PbxCommand::DestroyBridge { .. } => "destroy-bridge",
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
    /// The channel or bridge no longer exists (usually: the caller hung up).
    #[error("{0} no longer exists")]
    Gone(String),
    /// The PBX could not be reached or answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// A channel of the wake application found in the PBX when (re)connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedChannel {
    /// The channel.
    pub channel: ChannelId,
    /// The arguments it entered the application with.
    pub args: Vec<String>,
}

/// A bridge of the wake application found in the PBX when (re)connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppBridge {
    /// The bridge.
    pub bridge: BridgeId,
    /// Channels in it.
    pub channels: Vec<ChannelId>,
}

/// What the PBX holds for the wake application, read on every (re)connect so that calls
/// a previous process (or a lost connection) left behind are never stuck.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbxSnapshot {
    /// Channels currently inside the wake application.
    pub parked: Vec<ParkedChannel>,
    /// Bridges created by the wake application.
    pub bridges: Vec<AppBridge>,
    /// Every channel that exists in the PBX (to notice hang-ups missed while
    /// disconnected).
    pub all_channels: HashSet<ChannelId>,
}

/// Something that happened in the PBX, translated by the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxEvent {
    /// The event stream is (re)connected; here is what the PBX holds now. Sent before
    /// any other event of the new connection.
    Connected(PbxSnapshot),
    /// The event stream was lost; commands may fail until `Connected` comes again.
    Disconnected,
    /// A channel entered the wake application: a new caller, or one of our legs that
    /// answered.
    ChannelEntered {
        /// The channel.
        channel: ChannelId,
        /// Arguments given to the application (`[extension]` for a caller).
        args: Vec<String>,
        /// Caller id of the channel.
        caller: Party,
    },
    /// An outgoing leg is ringing at the phone.
    ChannelRinging {
        /// The leg.
        channel: ChannelId,
    },
    /// A channel is gone (hung up and destroyed).
    ChannelGone {
        /// The channel.
        channel: ChannelId,
        /// The PBX's hangup cause, for logs.
        cause: String,
    },
    /// A contact registered (or re-registered with a new URI) for an extension.
    ContactAdded {
        /// The extension (AOR) it belongs to.
        extension: String,
        /// The contact URI.
        uri: String,
    },
    /// A contact was removed (unregistered or expired).
    ContactRemoved {
        /// The extension (AOR) it belonged to.
        extension: String,
        /// The contact URI.
        uri: String,
    },
}

/// Call control on one PBX: carries out [`PbxCommand`]s.
///
/// Implemented once per PBX; the wake logic and its driver are generic over it, which is
/// also how the driver is tested against a fake PBX.
pub trait CallControl: Send + Sync + 'static {
    /// Carry out one command.
    fn execute(
        &self,
        command: PbxCommand,
    ) -> impl Future<Output = Result<PbxReply, PbxError>> + Send;
}
