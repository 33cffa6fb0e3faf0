//! The call status board: what `GET /v1/calls/{call_id}` answers.
//!
//! An app woken late (the push took its time, or the phone was slow to run the app)
//! asks whether the call it was woken for still rings, so it can end its CallKit /
//! telecom call at once instead of ringing for a caller who is gone. The wake engine
//! reports every change of a call ([`StatusUpdate`], via
//! [`crate::wake::Command::CallStatus`]); the driver writes them here; the HTTP listener
//! ([`crate::http`]) reads them.
//!
//! Each call has a per-call secret ([`StatusSecret`], 32 random bytes) that travels only
//! in the call's pushes; a request must present it as a bearer token. Ended calls are
//! kept for [`RETENTION`] so a late app still learns why the call ended, then forgotten
//! (the listener then answers 404, which an app must treat as "ended"). Time is passed
//! in, so pruning is tested without sleeping.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pbx::CallId;
use crate::push::EndReason;

/// How long an ended call stays on the board.
pub const RETENTION: Duration = Duration::from_secs(300);

/// Bytes of randomness in a [`StatusSecret`].
const SECRET_BYTES: usize = 32;

/// A call's status secret: 32 bytes from the operating system's CSPRNG, as 64 lowercase
/// hexadecimal characters. `Debug` never shows it; comparisons run in constant time.
#[derive(Clone)]
pub struct StatusSecret(String);

impl StatusSecret {
    /// A fresh secret.
    ///
    /// # Panics
    /// If the operating system's random number generator fails (`getrandom`), which
    /// happens only on a broken system; uuid's call ids would fail the same way.
    pub fn generate() -> Self {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random number generator failed");
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The secret as sent in pushes (`status_token`). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, compared in constant time (the time depends
    /// only on the lengths, and every secret has the same length).
    pub fn matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), presented.as_bytes())
            .is_ok()
    }
}

impl PartialEq for StatusSecret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for StatusSecret {}

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

#[derive(Debug)]
struct Entry {
    secret: StatusSecret,
    extension: String,
    status: CallStatus,
    ended_at: Option<Instant>,
}

/// The status of every current call, and of the calls ended within [`RETENTION`].
#[derive(Debug)]
pub struct StatusBoard {
    calls: HashMap<CallId, Entry>,
    retention: Duration,
    /// Compared against when a call is unknown, so an unknown call and a wrong secret
    /// take the same work.
    decoy: StatusSecret,
}

/// The board shared between the driver (writer) and the HTTP listener (reader).
pub type SharedBoard = Arc<Mutex<StatusBoard>>;

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new(RETENTION)
    }
}

impl StatusBoard {
    /// An empty board that keeps ended calls for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            calls: HashMap::new(),
            retention,
            decoy: StatusSecret::generate(),
        }
    }

    /// An empty board with the default retention, ready to share.
    pub fn shared() -> SharedBoard {
        Arc::new(Mutex::new(Self::default()))
    }

    /// Records a change of `call` at `now`, and forgets calls ended more than the
    /// retention ago. A call's status only moves forward (ringing → answered → ended);
    /// updates for a call the board does not know (one adopted from a previous process)
    /// are ignored.
    pub fn apply(&mut self, now: Instant, call: &CallId, update: StatusUpdate) {
        self.prune(now);
        match update {
            StatusUpdate::Ringing { extension, secret } => {
                self.calls.entry(call.clone()).or_insert(Entry {
                    secret,
                    extension,
                    status: CallStatus::Ringing,
                    ended_at: None,
                });
            }
            StatusUpdate::Answered => {
                if let Some(entry) = self.calls.get_mut(call) {
                    if entry.status == CallStatus::Ringing {
                        entry.status = CallStatus::Answered;
                    }
                }
            }
            StatusUpdate::Ended(reason) => {
                if let Some(entry) = self.calls.get_mut(call) {
                    if entry.ended_at.is_none() {
                        entry.status = CallStatus::Ended(reason);
                        entry.ended_at = Some(now);
                    }
                }
            }
        }
        if let Some(entry) = self.calls.get(call) {
            tracing::debug!(call = %call, extension = %entry.extension, status = entry.status.as_str(), "call status");
        }
    }

    /// The status of `call` if `secret` is its secret; `None` for an unknown (or
    /// forgotten) call and for a wrong secret alike, so call ids cannot be probed.
    pub fn lookup(&mut self, now: Instant, call: &str, secret: &str) -> Option<CallStatus> {
        self.prune(now);
        match self.calls.get(&CallId(call.to_owned())) {
            Some(entry) => entry.secret.matches(secret).then_some(entry.status),
            None => {
                let _ = self.decoy.matches(secret);
                None
            }
        }
    }

    /// Forgets the calls that ended more than the retention before `now`.
    pub fn prune(&mut self, now: Instant) {
        let retention = self.retention;
        self.calls.retain(|_, entry| {
            entry
                .ended_at
                .is_none_or(|ended| now.saturating_duration_since(ended) < retention)
        });
    }

    /// Number of calls on the board (current, and ended within the retention).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether the board holds no call.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallId {
        CallId("5d7d1c1e-0000-4000-8000-000000000001".into())
    }

    fn ringing(secret: &StatusSecret) -> StatusUpdate {
        StatusUpdate::Ringing {
            extension: "101".into(),
            secret: secret.clone(),
        }
    }

    #[test]
    fn secrets_are_64_hex_characters_fresh_each_time_and_never_shown() {
        let a = StatusSecret::generate();
        let b = StatusSecret::generate();
        assert_eq!(a.expose().len(), 64);
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(a, b);
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.expose()[..63]));
        let shown = format!("{a:?} {:?}", ringing(&a));
        assert!(!shown.contains(a.expose()), "{shown}");
    }

    #[test]
    fn ringing_then_answered_then_ended_then_forgotten_after_the_retention() {
        let start = Instant::now();
        let secret = StatusSecret::generate();
        let mut board = StatusBoard::new(Duration::from_secs(300));
        let id = call();
        assert_eq!(board.lookup(start, id.as_str(), secret.expose()), None);

        board.apply(start, &id, ringing(&secret));
        assert_eq!(
            board.lookup(start, id.as_str(), secret.expose()),
            Some(CallStatus::Ringing)
        );
        board.apply(start + Duration::from_secs(3), &id, StatusUpdate::Answered);
        assert_eq!(
            board.lookup(start, id.as_str(), secret.expose()),
            Some(CallStatus::Answered)
        );
        let ended = start + Duration::from_secs(60);
        board.apply(
            ended,
            &id,
            StatusUpdate::Ended(EndReason::AnsweredElsewhere),
        );
        let status = board.lookup(ended, id.as_str(), secret.expose()).unwrap();
        assert_eq!(status, CallStatus::Ended(EndReason::AnsweredElsewhere));
        assert_eq!(
            (status.as_str(), status.reason()),
            ("ended", Some(EndReason::AnsweredElsewhere))
        );

        // Still there just before the retention is over, gone at its end.
        let almost = ended + Duration::from_secs(299);
        assert!(board.lookup(almost, id.as_str(), secret.expose()).is_some());
        assert_eq!(board.len(), 1);
        board.prune(ended + Duration::from_secs(300));
        assert!(board.is_empty());
        assert_eq!(
            board.lookup(
                ended + Duration::from_secs(300),
                id.as_str(),
                secret.expose()
            ),
            None
        );
    }

    #[test]
    fn a_status_only_moves_forward_and_unknown_calls_are_ignored() {
        let now = Instant::now();
        let secret = StatusSecret::generate();
        let mut board = StatusBoard::default();
        let id = call();
        // An update for a call the board never saw start (adopted after a restart).
        board.apply(now, &id, StatusUpdate::Answered);
        board.apply(now, &id, StatusUpdate::Ended(EndReason::Ended));
        assert!(board.is_empty());

        board.apply(now, &id, ringing(&secret));
        board.apply(now, &id, StatusUpdate::Ended(EndReason::CallerHungUp));
        board.apply(now, &id, StatusUpdate::Answered);
        board.apply(now, &id, StatusUpdate::Ended(EndReason::Timeout));
        board.apply(now, &id, ringing(&StatusSecret::generate()));
        assert_eq!(
            board.lookup(now, id.as_str(), secret.expose()),
            Some(CallStatus::Ended(EndReason::CallerHungUp))
        );
    }

    #[test]
    fn a_wrong_secret_gets_the_same_answer_as_an_unknown_call() {
        let now = Instant::now();
        let secret = StatusSecret::generate();
        let mut board = StatusBoard::default();
        let id = call();
        board.apply(now, &id, ringing(&secret));
        let other = StatusSecret::generate();
        assert_eq!(board.lookup(now, id.as_str(), other.expose()), None);
        assert_eq!(board.lookup(now, id.as_str(), ""), None);
        assert_eq!(
            board.lookup(now, id.as_str(), &secret.expose().to_uppercase()),
            None
        );
        assert_eq!(board.lookup(now, "no-such-call", secret.expose()), None);
        assert_eq!(
            board.lookup(now, id.as_str(), secret.expose()),
            Some(CallStatus::Ringing)
        );
    }

    #[test]
    fn every_ended_call_is_pruned_by_any_later_update() {
        let start = Instant::now();
        let mut board = StatusBoard::new(Duration::from_secs(10));
        for n in 0..100 {
            let id = CallId(format!("call-{n}"));
            board.apply(start, &id, ringing(&StatusSecret::generate()));
            board.apply(start, &id, StatusUpdate::Ended(EndReason::Timeout));
        }
        let live = CallId("live".into());
        board.apply(start, &live, ringing(&StatusSecret::generate()));
        assert_eq!(board.len(), 101);
        let later = start + Duration::from_secs(11);
        board.apply(later, &CallId("next".into()), StatusUpdate::Answered);
        assert_eq!(board.len(), 1, "only the call still ringing is left");
    }
}
