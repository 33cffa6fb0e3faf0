//! Prometheus metrics (`[metrics]`): what the daemon counts and measures, and the
//! listener that serves them at `GET /metrics` in the OpenMetrics text format.
//!
//! The core counts nothing for Prometheus: the driver ([`crate::driver`]) and the push
//! service ([`crate::push::PushService`]) observe what passes through them and record it
//! here. No label carries a token, a phone number, an extension or a call id: the labels
//! are the call outcome (the `PUSHWAKE_STATUS` values), the push provider, the push kind
//! and verdict, an attempt's result, and the device platform — a few values each, fixed
//! by the code, so the series stay few whatever the traffic.

pub mod listener;
pub mod observer;
pub mod section;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use pushwake_core::directory::Platform;

pub use section::MetricsSection;

/// The `outcome` label of `pushwake_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The labels of `pushwake_pushes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    provider: &'static str,
    kind: &'static str,
    verdict: &'static str,
}

/// The labels of `pushwake_provider_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: &'static str,
    result: &'static str,
}

/// A `provider` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: &'static str,
}

/// A `platform` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabel {
    platform: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A provider request: 5 ms to about 20 s (a hung provider ends at the ring window).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Push accepted → REGISTER: 50 ms to about 100 s (an app waking, a phone on a slow
/// network).
fn wake_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// Counts the devices known now, at a scrape.
type DeviceCount = Box<dyn Fn() -> usize + Send + Sync>;

/// Every metric pushwake keeps. Recording is a few atomic operations; nothing here
/// blocks or allocates per call once a label set has been seen.
pub struct Metrics {
    registry: Registry,
    calls_started: Counter,
    calls: Family<OutcomeLabel, Counter>,
    pushes: Family<PushLabels, Counter>,
    dead_tokens: Family<ProviderLabel, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    request_seconds: HistogramFamily<ProviderLabel>,
    wake_seconds: HistogramFamily<PlatformLabel>,
    register_to_dial_seconds: Histogram,
    pbx_connected: Gauge,
    pbx_disconnects: Counter,
    waiting_calls: Gauge,
    active_calls: Gauge,
    devices: Gauge,
    messages: Family<OutcomeLabel, Counter>,
    messages_waiting: Gauge,
    /// Counts the registered devices at each scrape (walking the registry costs more
    /// than a gauge update, so it is not done on the driver's loop).
    count_devices: std::sync::OnceLock<DeviceCount>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `pushwake_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pushwake");
        let calls_started = Counter::default();
        registry.register(
            "calls_started",
            "Callers the PBX handed over to pushwake",
            calls_started.clone(),
        );
        let calls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "calls",
            "Calls by outcome: the PUSHWAKE_STATUS a caller returned with (ANSWERED when a device answered and was connected, ANSWERED_FALLBACK when the extension's fallback did), or CALLER_HUNG_UP while waiting, or ANSWERED_ELSEWHERE when another member of the caller's ring group or queue answered",
            calls.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Pushes by provider, kind (incoming_call, call_ended, message) and final verdict (delivered, failed, dead_token, not_sent), after retries",
            pushes.clone(),
        );
        let dead_tokens = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "dead_tokens_removed",
            "Registered devices forgotten because their provider declared the token dead",
            dead_tokens.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "provider_attempts",
            "Single requests to a push provider by result (delivered, rejected, retry: an error or no answer worth another try)",
            attempts.clone(),
        );
        let request_seconds: HistogramFamily<ProviderLabel> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "provider_request_duration_seconds",
            "How long one request to a push provider took, until its answer or its timeout",
            request_seconds.clone(),
        );
        let wake_seconds: HistogramFamily<PlatformLabel> =
            Family::new_with_constructor(wake_buckets);
        registry.register(
            "wake_latency_seconds",
            "From a provider accepting a device's incoming-call push to that device's REGISTER reaching pushwake",
            wake_seconds.clone(),
        );
        let register_to_dial_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "register_to_dial_seconds",
            "From the PBX adapter's registration event reaching the driver to the dial command for it leaving the driver",
            register_to_dial_seconds.clone(),
        );
        let pbx_connected = Gauge::default();
        registry.register(
            "pbx_connected",
            "1 while the PBX's event stream is connected, else 0",
            pbx_connected.clone(),
        );
        let pbx_disconnects = Counter::default();
        registry.register(
            "pbx_disconnects",
            "Times the PBX's event stream was lost",
            pbx_disconnects.clone(),
        );
        let waiting_calls = Gauge::default();
        registry.register(
            "waiting_calls",
            "Callers waiting for a device now (refreshed every second)",
            waiting_calls.clone(),
        );
        let active_calls = Gauge::default();
        registry.register(
            "active_calls",
            "Calls pushwake tracks now, waiting or connected (refreshed every second)",
            active_calls.clone(),
        );
        let devices = Gauge::default();
        registry.register(
            "registered_devices",
            "Devices known from registrations, the device API and the store (not the configured ones)",
            devices.clone(),
        );
        let messages = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "messages",
            "SIP MESSAGEs for push-enabled extensions ([messages]) by outcome: kept (taken for the phone), refused (not kept: too large, not text, emptied by the PBX), duplicate (a retransmission), delivered, dropped (the extension had too many waiting), expired (max_age passed)",
            messages.clone(),
        );
        let messages_waiting = Gauge::default();
        registry.register(
            "messages_waiting",
            "Messages kept for phones that have not taken them yet (refreshed every second)",
            messages_waiting.clone(),
        );
        Self {
            registry,
            calls_started,
            calls,
            pushes,
            dead_tokens,
            attempts,
            request_seconds,
            wake_seconds,
            register_to_dial_seconds,
            pbx_connected,
            pbx_disconnects,
            waiting_calls,
            active_calls,
            devices,
            messages,
            messages_waiting,
            count_devices: std::sync::OnceLock::new(),
        }
    }

    /// Counts the registered devices with `count` at every scrape (the first one given
    /// stays).
    pub fn count_devices_with(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.count_devices.set(Box::new(count));
    }

    /// A caller was handed over.
    pub fn call_started(&self) {
        self.calls_started.inc();
    }

    /// A call reached its outcome (a `PUSHWAKE_STATUS` string, `CALLER_HUNG_UP` or
    /// `ANSWERED_ELSEWHERE`).
    pub fn call_ended(&self, outcome: &'static str) {
        self.calls.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A message reached `outcome` (`kept`, `refused`, `duplicate`, `delivered`,
    /// `dropped`, `expired`).
    pub fn message(&self, outcome: &'static str) {
        self.messages.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The messages waiting now.
    pub fn messages_waiting(&self, count: usize) {
        self.messages_waiting
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A push's final verdict.
    pub fn push(&self, provider: Platform, kind: &'static str, verdict: &'static str) {
        self.pushes
            .get_or_create(&PushLabels {
                provider: provider.as_str(),
                kind,
                verdict,
            })
            .inc();
    }

    /// A push's final verdict, by its kind.
    pub fn push_verdict(
        &self,
        provider: Platform,
        kind: &pushwake_core::push::PushKind,
        verdict: &pushwake_core::push::PushVerdict,
    ) {
        use pushwake_core::push::PushKind;
        let kind = match kind {
            PushKind::IncomingCall => "incoming_call",
            PushKind::CallEnded(_) => "call_ended",
        };
        self.push(provider, kind, verdict_label(verdict));
    }

    /// A message push's final verdict (kind `message`).
    pub fn message_push_verdict(
        &self,
        provider: Platform,
        verdict: &pushwake_core::push::PushVerdict,
    ) {
        self.push(provider, "message", verdict_label(verdict));
    }

    /// `count` registered devices were forgotten for a dead token of `provider`.
    pub fn dead_tokens_removed(&self, provider: Platform, count: usize) {
        self.dead_tokens
            .get_or_create(&ProviderLabel {
                provider: provider.as_str(),
            })
            .inc_by(count as u64);
    }

    /// One request to `provider` ended with `result` after `took`.
    pub fn provider_attempt(&self, provider: Platform, result: &'static str, took: Duration) {
        let provider = provider.as_str();
        self.attempts
            .get_or_create(&AttemptLabels { provider, result })
            .inc();
        self.request_seconds
            .get_or_create(&ProviderLabel { provider })
            .observe(took.as_secs_f64());
    }

    /// A device of `platform` registered `took` after its push was accepted.
    pub fn woke(&self, platform: Platform, took: Duration) {
        self.wake_seconds
            .get_or_create(&PlatformLabel {
                platform: platform.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// A registration event turned into a dial command after `took`.
    pub fn register_to_dial(&self, took: Duration) {
        self.register_to_dial_seconds.observe(took.as_secs_f64());
    }

    /// The PBX's event stream connected (`true`) or was lost.
    pub fn pbx_connected(&self, connected: bool) {
        if !connected && self.pbx_connected.get() == 1 {
            self.pbx_disconnects.inc();
        }
        self.pbx_connected.set(i64::from(connected));
    }

    /// The calls now: `waiting` of `active`.
    pub fn calls_now(&self, waiting: usize, active: usize) {
        self.waiting_calls.set(waiting as i64);
        self.active_calls.set(active as i64);
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        if let Some(count) = self.count_devices.get() {
            self.devices.set(count() as i64);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The `verdict` label of a push's final verdict.
fn verdict_label(verdict: &pushwake_core::push::PushVerdict) -> &'static str {
    use pushwake_core::push::PushVerdict;
    match verdict {
        PushVerdict::Delivered => "delivered",
        PushVerdict::Failed {
            dead_token: true, ..
        } => "dead_token",
        PushVerdict::Failed { .. } => "failed",
        PushVerdict::NotSent { .. } => "not_sent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_in_the_text_with_their_labels() {
        let metrics = Metrics::new();
        let apns = Platform::new("apns");
        metrics.call_started();
        metrics.call_ended("TIMEOUT");
        metrics.push(apns, "incoming_call", "delivered");
        metrics.provider_attempt(apns, "delivered", Duration::from_millis(12));
        metrics.woke(apns, Duration::from_millis(700));
        metrics.register_to_dial(Duration::from_micros(300));
        metrics.dead_tokens_removed(apns, 2);
        metrics.pbx_connected(true);
        metrics.pbx_connected(false);
        metrics.calls_now(3, 5);
        metrics.count_devices_with(|| 7);
        let text = metrics.encode();
        for line in [
            "pushwake_calls_started_total 1",
            "pushwake_calls_total{outcome=\"TIMEOUT\"} 1",
            "pushwake_pushes_total{provider=\"apns\",kind=\"incoming_call\",verdict=\"delivered\"} 1",
            "pushwake_provider_attempts_total{provider=\"apns\",result=\"delivered\"} 1",
            "pushwake_provider_request_duration_seconds_count{provider=\"apns\"} 1",
            "pushwake_wake_latency_seconds_count{platform=\"apns\"} 1",
            "pushwake_register_to_dial_seconds_count 1",
            "pushwake_dead_tokens_removed_total{provider=\"apns\"} 2",
            "pushwake_pbx_connected 0",
            "pushwake_pbx_disconnects_total 1",
            "pushwake_waiting_calls 3",
            "pushwake_active_calls 5",
            "pushwake_registered_devices 7",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
