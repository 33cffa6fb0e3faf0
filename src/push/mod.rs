//! Push providers.
//!
//! One "pushkin" per provider ([`Pushkin`]), all behind one interface; [`PushService`]
//! picks the pushkin for a device's platform and retries transient failures with jittered
//! backoff, never past the call's ring deadline. The payload contract (what an app
//! receives) is built in [`payload`] and documented in docs/app-developers.md. Each
//! provider module also reads its own section of the configuration ([`provider`]); the
//! push vocabulary they share comes from the core ([`WakePush`], [`PushVerdict`]).

pub mod apns;
pub mod connections;
pub mod fcm;
pub mod health;
pub mod hms;
pub mod oauth;
pub mod payload;
pub mod provider;
pub mod webhook;
pub mod webpush;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use pushwake_core::directory::{Device, Platform};

pub use provider::{Provider, ProviderSettings, PROVIDERS};
pub use pushwake_core::push::{
    EndReason, MessagePush, PushKind, PushVerdict, StatusLink, WakePush,
};

/// What one attempt at a provider produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Accepted by the provider.
    Delivered,
    /// Rejected for good.
    Rejected {
        /// The provider's reason.
        reason: String,
        /// The token is dead.
        dead_token: bool,
    },
    /// Worth another try.
    Retry {
        /// The provider's reason, or the network error.
        reason: String,
        /// How long the provider asked us to wait, if it did.
        after: Option<Duration>,
    },
}

/// The boxed future a [`Pushkin`] returns.
pub type AttemptFuture<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// The boxed future of [`Pushkin::warm_up`]: `Err` says why the provider is not ready.
pub type WarmUpFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One push provider, for one set of credentials.
pub trait Pushkin: Send + Sync {
    /// The platform it serves.
    fn platform(&self) -> Platform;

    /// Opens the provider's connection (and fetches what it needs to sign in) ahead of
    /// the first push. Failure is logged, and returned for `/healthz`: pushes retry by
    /// themselves.
    fn warm_up(&self) -> WarmUpFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Whether this provider carries a [`PushKind::CallEnded`] push with this reason to
    /// this device, or why not. Data-message providers do; Apple forbids VoIP pushes
    /// that report no call, so APNs carries only the optional "missed call" alert.
    fn carries_call_ended(&self, _device: &Device, _reason: EndReason) -> Result<(), String> {
        Err(format!(
            "{} carries no push for an ended call",
            self.platform()
        ))
    }

    /// Sends one push to one device, once. `ring_window` is how long the push stays
    /// useful from now (for the provider's expiry / TTL field).
    fn attempt<'a>(
        &'a self,
        device: &'a Device,
        push: &'a WakePush,
        ring_window: Duration,
    ) -> AttemptFuture<'a>;

    /// Whether this provider carries a message push ([`MessagePush`]) to this device,
    /// or why not.
    fn carries_message(&self, _device: &Device) -> Result<(), String> {
        Err(format!("{} carries no message push", self.platform()))
    }

    /// Sends one message push to one device, once; `window` is how long this attempt
    /// may take. Only asked where [`Pushkin::carries_message`] says yes.
    fn attempt_message<'a>(
        &'a self,
        _device: &'a Device,
        _push: &'a MessagePush,
        _window: Duration,
    ) -> AttemptFuture<'a> {
        let reason = format!("{} carries no message push", self.platform());
        Box::pin(async move {
            Attempt::Rejected {
                reason,
                dead_token: false,
            }
        })
    }
}

/// Every configured pushkin, by platform, with the retry policy around them.
#[derive(Clone, Default)]
pub struct PushService {
    pushkins: HashMap<Platform, Arc<dyn Pushkin>>,
    /// What each provider's last warm-up or request showed (`/healthz`).
    health: health::ProviderHealth,
    /// Where each request's result and duration are recorded, if anywhere.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService")
            .field("platforms", &self.pushkins.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// First retry delay; doubled on each further retry, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

impl PushService {
    /// An empty service (no platform configured).
    pub fn new() -> Self {
        Self::default()
    }

    /// Warms every pushkin up, concurrently (see [`Pushkin::warm_up`]), and records
    /// what each showed (see [`PushService::health`]).
    pub async fn warm_up(&self) {
        futures_util::future::join_all(self.pushkins.values().map(|p| async move {
            let state = match p.warm_up().await {
                Ok(()) => health::ProviderState::Warm,
                Err(reason) => health::ProviderState::Failing(reason),
            };
            self.health.set(p.platform(), state);
        }))
        .await;
    }

    /// Adds (or replaces) the pushkin for its platform.
    pub fn add(&mut self, pushkin: Arc<dyn Pushkin>) {
        self.health
            .set(pushkin.platform(), health::ProviderState::Warming);
        self.pushkins.insert(pushkin.platform(), pushkin);
    }

    /// Records every provider request's result and duration in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<crate::metrics::Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Each configured provider's state, as its warm-up and its requests since showed.
    pub fn health(&self) -> &health::ProviderHealth {
        &self.health
    }

    /// Sends a push to a device, retrying transient failures with jittered exponential
    /// backoff until `deadline`; no attempt starts after it.
    pub async fn send(&self, device: &Device, push: &WakePush, deadline: Instant) -> PushVerdict {
        let Some(pushkin) = self.pushkins.get(&device.platform) else {
            return not_configured(device);
        };
        if let PushKind::CallEnded(reason) = push.kind {
            if let Err(reason) = pushkin.carries_call_ended(device, reason) {
                return PushVerdict::NotSent { reason };
            }
        }
        self.retrying(device, Subject::Call(&push.call_id), deadline, |window| {
            pushkin.attempt(device, push, window)
        })
        .await
    }

    /// Sends a message push to a device, retrying like [`PushService::send`] until
    /// `deadline`; [`PushVerdict::NotSent`] where the provider or the device carries
    /// no message push.
    pub async fn send_message(
        &self,
        device: &Device,
        push: &MessagePush,
        deadline: Instant,
    ) -> PushVerdict {
        let Some(pushkin) = self.pushkins.get(&device.platform) else {
            return not_configured(device);
        };
        if crate::devices::refuses_messages_in(&device.params) {
            return PushVerdict::NotSent {
                reason: "the device asked for no message push (allow-message-push=false)".into(),
            };
        }
        if let Err(reason) = pushkin.carries_message(device) {
            return PushVerdict::NotSent { reason };
        }
        self.retrying(
            device,
            Subject::Message(&push.message_id),
            deadline,
            |window| pushkin.attempt_message(device, push, window),
        )
        .await
    }

    /// Makes attempts (`attempt(time left)`) until one is final or `deadline` passes.
    async fn retrying<'a>(
        &self,
        device: &Device,
        subject: Subject<'_>,
        deadline: Instant,
        attempt: impl Fn(Duration) -> AttemptFuture<'a>,
    ) -> PushVerdict {
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return PushVerdict::Failed {
                    reason: format!("ring window over after {attempts} attempt(s)"),
                    dead_token: false,
                };
            }
            attempts += 1;
            let started = Instant::now();
            // No attempt outlives the ring window, whatever it waits on (a connection, a
            // token fetch, a slow reply): the provider's own timeouts need not agree.
            let window = deadline - now;
            let limit = window.max(Duration::from_secs(1));
            let outcome = watch_attempt(attempt(window), limit, device, subject)
                .await
                .unwrap_or_else(|| Attempt::Retry {
                    reason: format!("{}: no answer within the ring window", device.platform),
                    after: None,
                });
            self.observe(device.platform, &outcome, started.elapsed());
            match outcome {
                Attempt::Delivered => return PushVerdict::Delivered,
                Attempt::Rejected { reason, dead_token } => {
                    return PushVerdict::Failed { reason, dead_token }
                }
                Attempt::Retry { reason, after } => {
                    let wait = after.unwrap_or_else(|| jitter(backoff));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if !retry_starts_in_time(Instant::now(), wait, deadline) {
                        return PushVerdict::Failed {
                            reason: format!("{reason} (no time left to retry)"),
                            dead_token: false,
                        };
                    }
                    // The first failure of a push is a warning naming the provider (one
                    // refusing connections is otherwise only seen once the call is over);
                    // the retries after it are routine.
                    if attempts == 1 {
                        tracing::warn!(provider = %device.platform, about = %subject, device = %device.label, %reason, retry_in = ?wait, "push failed; retrying");
                    } else {
                        tracing::info!(provider = %device.platform, about = %subject, device = %device.label, %reason, attempts, retry_in = ?wait, "push failed; retrying");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The verdict for a device whose platform has no section in the configuration.
fn not_configured(device: &Device) -> PushVerdict {
    PushVerdict::Failed {
        reason: format!("no [{}] section configured", device.platform),
        dead_token: false,
    }
}

/// What a push is about, for log lines: `call <id>` or `message <id>`.
#[derive(Clone, Copy, Debug)]
enum Subject<'a> {
    Call(&'a pushwake_core::pbx::CallId),
    Message(&'a pushwake_core::messages::MessageId),
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Call(id) => write!(f, "call {id}"),
            Subject::Message(id) => write!(f, "message {id}"),
        }
    }
}

/// Whether a retry `wait` from `now` still starts before `deadline`. A provider's
/// `Retry-After` may be any number: one past what the clock can add is simply too late
/// (adding it would panic).
fn retry_starts_in_time(now: Instant, wait: Duration, deadline: Instant) -> bool {
    now.checked_add(wait).is_some_and(|at| at < deadline)
}

/// A provider that has not answered one push for this long is named in the log at warn:
/// a hung provider is otherwise invisible (the call only ends with "no device answered").
const SLOW_ANSWER: Duration = Duration::from_secs(2);

/// Awaits one attempt for at most `limit` (`None` if it had no answer by then); once it
/// has had no answer for [`SLOW_ANSWER`] says so at warn (the provider, the device's
/// label, how long: never the token), and again when that slow attempt ends: answered
/// late, timed out, or abandoned because the call ended.
///
/// One timer serves both the warning and the limit (reset from the one to the other):
/// in a burst of pushes, each timer is a lock of the runtime's timer wheel to set and
/// one to clear.
async fn watch_attempt(
    attempt: impl Future<Output = Attempt>,
    limit: Duration,
    device: &Device,
    subject: Subject<'_>,
) -> Option<Attempt> {
    tokio::pin!(attempt);
    let started = Instant::now();
    let timer = tokio::time::sleep(SLOW_ANSWER.min(limit));
    tokio::pin!(timer);
    tokio::select! {
        outcome = &mut attempt => return Some(outcome),
        () = &mut timer => {}
    }
    if limit <= SLOW_ANSWER {
        return None;
    }
    tracing::warn!(provider = %device.platform, about = %subject, device = %device.label, waited = %seconds(started.elapsed()), "push provider has not answered yet");
    let abandoned = SlowAttempt {
        device,
        subject,
        started,
    };
    timer.as_mut().reset(started + limit);
    let outcome = tokio::select! {
        outcome = &mut attempt => Some(outcome),
        () = &mut timer => None,
    };
    std::mem::forget(abandoned);
    let ended = match &outcome {
        Some(Attempt::Delivered) => "answered late: delivered".to_owned(),
        Some(Attempt::Rejected { reason, .. }) => format!("answered late: rejected ({reason})"),
        Some(Attempt::Retry { reason, .. }) => format!("failed: {reason}"),
        None => "no answer within the ring window: given up".to_owned(),
    };
    tracing::warn!(provider = %device.platform, about = %subject, device = %device.label, waited = %seconds(started.elapsed()), outcome = %ended, "slow push provider: the attempt ended");
    outcome
}

/// Logs a slow attempt dropped before its end (the call was answered or ended).
struct SlowAttempt<'a> {
    device: &'a Device,
    subject: Subject<'a>,
    started: Instant,
}

impl Drop for SlowAttempt<'_> {
    fn drop(&mut self) {
        tracing::warn!(provider = %self.device.platform, about = %self.subject, device = %self.device.label, waited = %seconds(self.started.elapsed()), "slow push provider: attempt abandoned without an answer (no longer needed)");
    }
}

/// A duration as seconds with one decimal, for log lines (`2.0s`).
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

impl PushService {
    /// Records what one request showed of its provider.
    fn observe(&self, platform: Platform, outcome: &Attempt, took: Duration) {
        self.health.attempted(platform, outcome);
        if let Some(metrics) = &self.metrics {
            let result = match outcome {
                Attempt::Delivered => "delivered",
                Attempt::Rejected { .. } => "rejected",
                Attempt::Retry { .. } => "retry",
            };
            metrics.provider_attempt(platform, result, took);
        }
    }
}

/// The time now as Unix seconds, signed (for the device store).
pub fn unix_now_secs() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// The time now as Unix seconds (for provider headers and payload expiry).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whole seconds of the ring window, rounded up, at least 1 (a provider's TTL of 0 means
/// "now or never").
pub(crate) fn window_secs(ring_window: Duration) -> u64 {
    (ring_window.as_secs() + u64::from(ring_window.subsec_nanos() > 0)).max(1)
}

/// A reply's `Retry-After` header, in seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// `text` with every non-empty secret replaced.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

/// At most 200 characters of a reply text, on one line.
pub(crate) fn clip(text: &str) -> String {
    let line = text.replace(['\n', '\r'], " ");
    let line = line.trim();
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// A reply text for a verdict or log: secrets replaced, on one line, at most 200
/// characters.
pub(crate) fn scrubbed_clip(text: &str, secrets: &[&str]) -> String {
    clip(&scrub(text, secrets))
}

/// A reqwest error as text for logs and verdicts: the URL (which carries the device
/// token) replaced by `placeholder`, followed by the error's causes, which name what
/// went wrong (connection refused, timed out, …).
pub(crate) fn describe_http_error(error: &reqwest::Error, placeholder: &str) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), placeholder);
    }
    with_causes(text, std::error::Error::source(error))
}

/// An error and its causes, joined with `: ` (for errors that carry no URL).
pub(crate) fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text` followed by each cause in `source`'s chain, except one `text` already ends
/// with (h2's and io's errors print their inner error and also give it as the source).
fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A duration between half and all of `base`, so retries from many calls spread out.
fn jitter(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per instance: enough randomness for spreading
    // retries without a dependency on a random number crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(base.as_nanos() as u64);
    let fraction = (hasher.finish() % 1000) as u32;
    base / 2 + base / 2 * fraction / 1000
}

#[cfg(test)]
mod reply_props;

#[cfg(test)]
mod tests {
    use super::*;
    use pushwake_core::pbx::{CallId, Party};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A pushkin that answers from a script and counts attempts.
    struct Scripted {
        answers: Mutex<Vec<Attempt>>,
        attempts: AtomicU32,
    }

    impl Pushkin for Scripted {
        fn platform(&self) -> Platform {
            apns::PLATFORM
        }
        fn attempt<'a>(&'a self, _: &'a Device, _: &'a WakePush, _: Duration) -> AttemptFuture<'a> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { answer })
        }
        fn carries_message(&self, _: &Device) -> Result<(), String> {
            Ok(())
        }
        fn attempt_message<'a>(
            &'a self,
            _: &'a Device,
            _: &'a MessagePush,
            _: Duration,
        ) -> AttemptFuture<'a> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { answer })
        }
    }

    /// A pushkin that carries no message push (the trait's default).
    struct CallsOnly;

    impl Pushkin for CallsOnly {
        fn platform(&self) -> Platform {
            fcm::PLATFORM
        }
        fn attempt<'a>(&'a self, _: &'a Device, _: &'a WakePush, _: Duration) -> AttemptFuture<'a> {
            Box::pin(async { Attempt::Delivered })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_push_is_retried_like_a_call_s_and_not_sent_where_it_is_refused() {
        let (mut service, scripted) = service(vec![retry(), Attempt::Delivered]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let message = payload::a_message_push(None);
        assert_eq!(
            service.send_message(&device(), &message, deadline).await,
            PushVerdict::Delivered
        );
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 2);
        // The device asked for no message push (PortSIP's allow-message-push=false).
        let mut quiet = device();
        quiet
            .params
            .set(crate::devices::fields::ALLOW_MESSAGE_PUSH, "false");
        let verdict = service.send_message(&quiet, &message, deadline).await;
        assert!(
            matches!(&verdict, PushVerdict::NotSent { reason } if reason.contains("allow-message-push")),
            "{verdict:?}"
        );
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 2, "no attempt");
        // A provider that carries none says so, without an attempt.
        service.add(Arc::new(CallsOnly));
        let android = Device::new(
            fcm::PLATFORM,
            pushwake_core::directory::DeviceToken::new("bb"),
            "101/fcm#0",
        );
        let verdict = service.send_message(&android, &message, deadline).await;
        assert!(
            matches!(&verdict, PushVerdict::NotSent { reason } if reason.contains("carries no message push")),
            "{verdict:?}"
        );
    }

    fn service(answers: Vec<Attempt>) -> (PushService, Arc<Scripted>) {
        let scripted = Arc::new(Scripted {
            answers: Mutex::new(answers),
            attempts: AtomicU32::new(0),
        });
        let mut service = PushService::new();
        service.add(scripted.clone());
        (service, scripted)
    }

    fn device() -> Device {
        Device::new(
            apns::PLATFORM,
            pushwake_core::directory::DeviceToken::new("aa"),
            "101/apns#0",
        )
    }

    fn push() -> WakePush {
        WakePush {
            call_id: CallId("c1".into()),
            extension: "101".into(),
            caller: Party::default(),
            kind: PushKind::IncomingCall,
            status: None,
            node: None,
        }
    }

    fn retry() -> Attempt {
        Attempt::Retry {
            reason: "503".into(),
            after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_delivered() {
        let (service, scripted) = service(vec![retry(), retry(), Attempt::Delivered]);
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(
            service.send(&device(), &push(), deadline).await,
            PushVerdict::Delivered
        );
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_after_the_deadline() {
        let (service, scripted) = service(vec![retry(); 100]);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let verdict = service.send(&device(), &push(), deadline).await;
        assert!(
            matches!(
                verdict,
                PushVerdict::Failed {
                    dead_token: false,
                    ..
                }
            ),
            "{verdict:?}"
        );
        assert!(Instant::now() <= deadline, "slept past the deadline");
        // 0.25 + 0.5 + 1 + 2 s of backoff (jittered down to half) fit in 5 s; 4 more do not.
        let attempts = scripted.attempts.load(Ordering::SeqCst);
        assert!((3..=7).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_final() {
        let rejected = Attempt::Rejected {
            reason: "Unregistered".into(),
            dead_token: true,
        };
        let (service, scripted) = service(vec![rejected, Attempt::Delivered]);
        let verdict = service
            .send(&device(), &push(), Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(
            verdict,
            PushVerdict::Failed {
                reason: "Unregistered".into(),
                dead_token: true
            }
        );
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_asking_for_a_long_wait_ends_the_push() {
        let (service, scripted) = service(vec![Attempt::Retry {
            reason: "429".into(),
            after: Some(Duration::from_secs(60)),
        }]);
        let verdict = service
            .send(&device(), &push(), Instant::now() + Duration::from_secs(30))
            .await;
        assert!(matches!(verdict, PushVerdict::Failed { .. }));
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_call_is_not_pushed_through_a_provider_that_must_not_carry_it() {
        let (service, scripted) = service(vec![Attempt::Delivered]);
        let ended = WakePush {
            kind: PushKind::CallEnded(EndReason::CallerHungUp),
            ..push()
        };
        let verdict = service
            .send(&device(), &ended, Instant::now() + Duration::from_secs(10))
            .await;
        assert!(
            matches!(verdict, PushVerdict::NotSent { .. }),
            "{verdict:?}"
        );
        assert_eq!(scripted.attempts.load(Ordering::SeqCst), 0);
    }

    /// A pushkin that answers after `delay` (never, for `None`).
    struct Slow {
        delay: Option<Duration>,
    }

    impl Pushkin for Slow {
        fn platform(&self) -> Platform {
            apns::PLATFORM
        }
        fn attempt<'a>(&'a self, _: &'a Device, _: &'a WakePush, _: Duration) -> AttemptFuture<'a> {
            let delay = self.delay;
            Box::pin(async move {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
                Attempt::Delivered
            })
        }
    }

    /// The log lines `run` writes (every level), as text.
    async fn logged<F: Future>(run: F) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        run.await;
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text
    }

    fn slow_service(delay: Option<Duration>) -> PushService {
        let mut service = PushService::new();
        service.add(Arc::new(Slow { delay }));
        service
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_answering_late_is_named_with_how_long_it_took() {
        let service = slow_service(Some(Duration::from_millis(5500)));
        let log = logged(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            assert_eq!(
                service.send(&device(), &push(), deadline).await,
                PushVerdict::Delivered
            );
        })
        .await;
        let waiting = log
            .lines()
            .find(|l| l.contains("has not answered yet"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            waiting.contains("WARN")
                && waiting.contains("provider=apns")
                && waiting.contains("waited=2.0s"),
            "{waiting}"
        );
        let ended = log
            .lines()
            .find(|l| l.contains("answered late: delivered"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            ended.contains("WARN") && ended.contains("waited=5.5s"),
            "{ended}"
        );
        assert!(!log.contains("aa"), "the token is never logged: {log}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_provider_is_named_and_so_is_the_attempt_given_up_or_abandoned() {
        let service = slow_service(None);
        let log = logged(async {
            let deadline = Instant::now() + Duration::from_secs(3);
            let verdict = service.send(&device(), &push(), deadline).await;
            assert!(matches!(verdict, PushVerdict::Failed { .. }), "{verdict:?}");
        })
        .await;
        assert!(log.contains("has not answered yet"), "{log}");
        assert!(
            log.contains("no answer within the ring window: given up"),
            "{log}"
        );

        // The call no longer needs the push (answered elsewhere): the task is dropped.
        let log = logged(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            let (device, push) = (device(), push());
            let sending = service.send(&device, &push, deadline);
            let _ = tokio::time::timeout(Duration::from_secs(4), sending).await;
        })
        .await;
        let abandoned = log
            .lines()
            .find(|l| l.contains("abandoned"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            abandoned.contains("provider=apns") && abandoned.contains("waited=4.0s"),
            "{abandoned}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_shorter_than_the_slow_warning_still_ends_the_attempt_on_time() {
        let service = slow_service(None);
        let started = Instant::now();
        let log = logged(async {
            let deadline = started + Duration::from_millis(1500);
            let verdict = service.send(&device(), &push(), deadline).await;
            assert!(matches!(verdict, PushVerdict::Failed { .. }), "{verdict:?}");
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_millis(1500), "{log}");
        assert!(!log.contains("has not answered yet"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_provider_logs_no_warning() {
        let service = slow_service(Some(Duration::from_millis(100)));
        let log = logged(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            service.send(&device(), &push(), deadline).await;
        })
        .await;
        assert!(!log.contains("WARN"), "{log}");
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j <= Duration::from_millis(1000),
                "{j:?}"
            );
        }
    }
}
