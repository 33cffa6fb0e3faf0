//! What a push says about a call, and what became of it — the same for every provider.
//!
//! The providers themselves (APNs, FCM, …) live in the daemon, each owning its section
//! of the configuration; the wake logic only asks for [`WakePush`]es and hears
//! [`PushVerdict`]s.

use crate::pbx::{CallId, Party};
use crate::status::StatusSecret;

/// What a push says about a call, independent of the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakePush {
    /// The call's id, also sent in the `X-Pushwake-Call-Id` header of the INVITE.
    pub call_id: CallId,
    /// The called extension.
    pub extension: String,
    /// Who is calling.
    pub caller: Party,
    /// An incoming call, or the end of one the device was woken for.
    pub kind: PushKind,
    /// Where the app can ask whether the call still rings, when the HTTP listener is
    /// configured (`[http]`); `None` otherwise.
    pub status: Option<StatusLink>,
    /// The node holding the call, for a site of several PBX nodes sharing one device
    /// store: where the woken app must register to be rung (`[store] node`); `None` on
    /// a single node.
    pub node: Option<String>,
}

/// The call status endpoint of one call, as its pushes carry it (`status_url`,
/// `status_token`). `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusLink {
    /// `{public_url}/v1/calls/{call_id}`.
    pub url: String,
    /// The call's secret, to send as `Authorization: Bearer <token>`.
    pub token: StatusSecret,
}

impl std::fmt::Debug for StatusLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusLink")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What a push announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushKind {
    /// A call is waiting: wake up, register, ring.
    IncomingCall,
    /// The call this device was woken for is over without it: stop ringing.
    CallEnded(EndReason),
}

/// Why a call ended, as a woken device is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The caller hung up before any device answered.
    CallerHungUp,
    /// Another device answered.
    AnsweredElsewhere,
    /// No device answered in time; the caller went on (voicemail).
    Timeout,
    /// pushwake returned the caller to the dialplan for another reason.
    Ended,
}

impl EndReason {
    /// The `reason` string in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller_hung_up",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::Timeout => "timeout",
            EndReason::Ended => "ended",
        }
    }
}

/// The final verdict on one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushVerdict {
    /// The provider accepted the push.
    Delivered,
    /// The push could not be delivered, and retrying within the ring window will not help.
    Failed {
        /// Why, for logs (never contains the token).
        reason: String,
        /// The provider says the token is dead (unregistered, invalid).
        dead_token: bool,
    },
    /// Deliberately not sent: this provider must not carry this kind of push (APNs
    /// carries no VoIP push for a call that has ended).
    NotSent {
        /// Why, for logs.
        reason: String,
    },
}

/// What a push about a message says, independent of the provider: a SIP MESSAGE is
/// waiting for the device's app, which should register to receive it.
#[derive(Clone, PartialEq, Eq)]
pub struct MessagePush {
    /// The message's id, also sent in the `X-Pushwake-Message-Id` header of the MESSAGE.
    pub message_id: crate::messages::MessageId,
    /// The extension it is for.
    pub extension: String,
    /// Who sent it.
    pub sender: Party,
    /// The beginning of its body, when the operator lets pushes carry one
    /// (`[messages] preview`); `None` otherwise. Never in `Debug`.
    pub preview: Option<String>,
    /// When it arrived, in seconds since the Unix epoch.
    pub received_at: u64,
    /// Until when it is kept for the phone (seconds since the Unix epoch): the push is
    /// of no use after it.
    pub expires_at: u64,
    /// The node holding it, on a site of several nodes (see [`WakePush::node`]).
    pub node: Option<String>,
}

impl std::fmt::Debug for MessagePush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePush")
            .field("message_id", &self.message_id)
            .field("extension", &self.extension)
            .field("sender", &self.sender)
            .field("preview", &self.preview.as_ref().map(|_| "<hidden>"))
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}
