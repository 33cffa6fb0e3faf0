//! A call's status as the call status endpoint reports it (`GET /v1/calls/{call_id}`).
//!
//! The wake engine reports every change of a call ([`StatusUpdate`], through
//! [`crate::wake::Command::CallStatus`]); the daemon keeps them on its status board and
//! answers apps woken late from it.

use std::fmt;

use crate::push::EndReason;
use crate::random::Randomness;

/// Bytes of randomness in a [`StatusSecret`].
const SECRET_BYTES: usize = 32;

/// A call's status secret: 32 random bytes as 64 lowercase hexadecimal characters.
/// `Debug` never shows it.
///
/// Its `==` is the plain comparison, for tests and replays; a token presented by an app
/// is checked by the daemon's status board, in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusSecret(String);

impl StatusSecret {
    /// A fresh secret drawn from `random` (in the daemon: the operating system's
    /// CSPRNG).
    pub fn generate(random: &mut dyn Randomness) -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        random.fill(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The secret as sent in pushes (`status_token`). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StatusSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusSecret(<redacted>)")
    }
}

/// A change in a call's status, as the wake engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusUpdate {
    /// The call started: the caller hears ringback, devices are being woken.
    Ringing {
        /// The called extension.
        extension: String,
        /// The secret a status request must present (also in the call's pushes).
        secret: StatusSecret,
    },
    /// A device answered: the caller is being connected to it (and the others are
    /// cancelled).
    Answered,
    /// The call is over.
    Ended(EndReason),
}

/// A call's status as the listener reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStatus {
    /// Still waiting for a device.
    Ringing,
    /// A device answered; the conversation is on (or being connected).
    Answered,
    /// Over, for this reason.
    Ended(EndReason),
}

impl CallStatus {
    /// The `status` string of the JSON answer.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ringing => "ringing",
            CallStatus::Answered => "answered",
            CallStatus::Ended(_) => "ended",
        }
    }

    /// The `reason` of an ended call.
    pub fn reason(self) -> Option<EndReason> {
        match self {
            CallStatus::Ended(reason) => Some(reason),
            CallStatus::Ringing | CallStatus::Answered => None,
        }
    }
}
