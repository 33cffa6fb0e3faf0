//! The call status board: what `GET /v1/calls/{call_id}` answers.
//!
//! An app woken late (the push took its time, or the phone was slow to run the app)
//! asks whether the call it was woken for still rings, so it can end its CallKit /
//! telecom call at once instead of ringing for a caller who is gone. The wake engine
//! reports every change of a call ([`StatusUpdate`], via
//! [`pushwake_core::wake::Command::CallStatus`]); the driver writes them here; the HTTP
//! listener ([`crate::http`]) reads them.
//!
//! Each call has a per-call secret ([`StatusSecret`], 32 random bytes) that travels only
//! in the call's pushes; a request must present it as a bearer token. Ended calls are
//! kept for [`RETENTION`] so a late app still learns why the call ended, then forgotten
//! (the listener then answers 404, which an app must treat as "ended"). Time is passed
//! in, so pruning is tested without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushwake_core::pbx::CallId;
use pushwake_core::random::Randomness;

pub use pushwake_core::status::{CallStatus, StatusSecret, StatusUpdate};

use crate::random::OsRandom;

/// How long an ended call stays on the board.
pub const RETENTION: Duration = Duration::from_secs(300);

/// A new secret from the operating system's CSPRNG, as the engine draws them.
pub fn fresh_secret() -> StatusSecret {
    StatusSecret::generate(&mut OsRandom as &mut dyn Randomness)
}

/// Whether `presented` is `secret`, compared in constant time (the time depends only on
/// the lengths, and every secret has the same length).
pub fn matches(secret: &StatusSecret, presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(
        secret.expose().as_bytes(),
        presented.as_bytes(),
    )
    .is_ok()
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
            decoy: fresh_secret(),
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
            Some(entry) => matches(&entry.secret, secret).then_some(entry.status),
            None => {
                let _ = matches(&self.decoy, secret);
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
    use pushwake_core::push::EndReason;

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
        let a = fresh_secret();
        let b = fresh_secret();
        assert_eq!(a.expose().len(), 64);
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(a, b);
        assert!(matches(&a, a.expose()));
        assert!(!matches(&a, b.expose()));
        assert!(!matches(&a, ""));
        assert!(!matches(&a, &a.expose()[..63]));
        let shown = format!("{a:?} {:?}", ringing(&a));
        assert!(!shown.contains(a.expose()), "{shown}");
    }

    #[test]
    fn ringing_then_answered_then_ended_then_forgotten_after_the_retention() {
        let start = Instant::now();
        let secret = fresh_secret();
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
        let secret = fresh_secret();
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
        board.apply(now, &id, ringing(&fresh_secret()));
        assert_eq!(
            board.lookup(now, id.as_str(), secret.expose()),
            Some(CallStatus::Ended(EndReason::CallerHungUp))
        );
    }

    #[test]
    fn a_wrong_secret_gets_the_same_answer_as_an_unknown_call() {
        let now = Instant::now();
        let secret = fresh_secret();
        let mut board = StatusBoard::default();
        let id = call();
        board.apply(now, &id, ringing(&secret));
        let other = fresh_secret();
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
            board.apply(start, &id, ringing(&fresh_secret()));
            board.apply(start, &id, StatusUpdate::Ended(EndReason::Timeout));
        }
        let live = CallId("live".into());
        board.apply(start, &live, ringing(&fresh_secret()));
        assert_eq!(board.len(), 101);
        let later = start + Duration::from_secs(11);
        board.apply(later, &CallId("next".into()), StatusUpdate::Answered);
        assert_eq!(board.len(), 1, "only the call still ringing is left");
    }
}
