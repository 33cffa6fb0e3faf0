//! What the driver sees, turned into metrics: it shows the observer each input before
//! the engine handles it and each command the engine queued, and the observer records
//! calls by outcome, the PBX connection, and the two latencies only the driver can time
//! — a device's wake-up (its push accepted → its REGISTER) and REGISTER → dial.

use std::collections::HashMap;
use std::sync::Arc;

// tokio's clock (the real one in the daemon): the driver's tests pause it.
use tokio::time::Instant;

use pushwake_core::directory::{DeviceToken, Platform};
use pushwake_core::pbx::{CallId, PbxCommand, PbxEvent, WakeStatus};
use pushwake_core::push::{PushKind, PushVerdict};
use pushwake_core::rfc8599::contact_names_device;
use pushwake_core::wake::{CallOutcome, Command, EngineStats, Input};

use super::Metrics;

/// A device woken for a waiting call whose REGISTER has not come yet.
#[derive(Debug)]
struct Waking {
    call: CallId,
    device: usize,
    token: DeviceToken,
    platform: Platform,
    /// When its provider accepted the push; `None` while the push is under way.
    accepted: Option<Instant>,
}

/// The driver's observer (see the module documentation).
#[derive(Debug)]
pub struct Observer {
    metrics: Arc<Metrics>,
    /// The devices being woken, by extension.
    waking: HashMap<String, Vec<Waking>>,
    /// The extension of each call with devices being woken.
    extension_of: HashMap<CallId, String>,
    /// When the registration being handled reached the driver, until its dial leaves.
    registration: Option<Instant>,
    /// Callers counted as hung up while waiting, from the engine's counters.
    hung_up: u64,
    /// Member callers counted as answered elsewhere in their group, likewise.
    answered_elsewhere: u64,
    /// The status each call being connected returns with (`ANSWERED`, or
    /// `ANSWERED_FALLBACK`), counted once it is connected.
    connecting: HashMap<CallId, WakeStatus>,
}

impl Observer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            waking: HashMap::new(),
            extension_of: HashMap::new(),
            registration: None,
            hung_up: 0,
            answered_elsewhere: 0,
            connecting: HashMap::new(),
        }
    }

    /// The metrics it records into (for the push tasks' verdicts).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// An input, before the engine handles it.
    pub fn input(&mut self, input: &Input) {
        match input {
            Input::Event(PbxEvent::Connected(_)) => self.metrics.pbx_connected(true),
            Input::Event(PbxEvent::Disconnected) => self.metrics.pbx_connected(false),
            Input::Event(PbxEvent::CallerArrived { .. }) => self.metrics.call_started(),
            Input::Event(PbxEvent::ContactAdded { .. }) => {
                self.registration = Some(Instant::now());
            }
            Input::ConnectResult { call, result } => {
                let status = self.connecting.remove(call);
                if result.is_ok() {
                    self.metrics
                        .call_ended(status.unwrap_or(WakeStatus::Answered).as_str());
                }
            }
            Input::PushResult {
                call,
                device,
                verdict: PushVerdict::Delivered,
            } => {
                let now = Instant::now();
                if let Some(extension) = self.extension_of.get(call) {
                    for waking in self.waking.get_mut(extension).into_iter().flatten() {
                        if &waking.call == call && waking.device == *device {
                            waking.accepted.get_or_insert(now);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A command the engine queued, as the driver carries it out.
    pub fn command(&mut self, command: &Command) {
        match command {
            Command::Pbx(PbxCommand::Return { status, .. }) => {
                self.metrics.call_ended(status.as_str())
            }
            Command::Pbx(PbxCommand::Connect { call, status, .. }) => {
                self.connecting.insert(call.clone(), *status);
            }
            Command::Pbx(PbxCommand::Dial(_)) => {
                if let Some(registered) = self.registration.take() {
                    self.metrics.register_to_dial(registered.elapsed());
                }
            }
            Command::Push(job) if job.push.kind == PushKind::IncomingCall => {
                self.extension_of
                    .insert(job.call.clone(), job.push.extension.clone());
                self.waking
                    .entry(job.push.extension.clone())
                    .or_default()
                    .push(Waking {
                        call: job.call.clone(),
                        device: job.device_index,
                        token: job.device.token.clone(),
                        platform: job.device.platform,
                        accepted: None,
                    });
            }
            Command::AbortPushes { call } => self.forget(call),
            _ => {}
        }
    }

    /// After the engine handled an input and its commands left: the wake-up the
    /// registration ends, and the engine's counters.
    /// `registration` is the extension and contact of a registration the input
    /// announced.
    pub fn handled(&mut self, registration: Option<(String, String)>, stats: &EngineStats) {
        self.registration = None;
        if let Some((extension, uri)) = registration {
            self.registered(&extension, &uri);
        }
        let ended = |outcome| stats.outcomes.get(&outcome).copied().unwrap_or(0);
        let hung_up = ended(CallOutcome::CallerHungUp);
        for _ in self.hung_up..hung_up {
            self.metrics.call_ended("CALLER_HUNG_UP");
        }
        self.hung_up = hung_up;
        let answered_elsewhere = ended(CallOutcome::AnsweredElsewhere);
        for _ in self.answered_elsewhere..answered_elsewhere {
            self.metrics.call_ended("ANSWERED_ELSEWHERE");
        }
        self.answered_elsewhere = answered_elsewhere;
    }

    /// A device of `extension` registered with `uri`: the one its RFC 8599 token names,
    /// or else the only device of the extension whose push was accepted, has woken.
    fn registered(&mut self, extension: &str, uri: &str) {
        let Some(waking) = self.waking.get_mut(extension) else {
            return;
        };
        let accepted = |w: &Waking| w.accepted.is_some();
        let named = waking
            .iter()
            .position(|w| accepted(w) && contact_names_device(uri, &w.token));
        let woken = named.or_else(|| {
            let mut candidates = waking.iter().enumerate().filter(|(_, w)| accepted(w));
            match (candidates.next(), candidates.next()) {
                (Some((only, _)), None) => Some(only),
                _ => None,
            }
        });
        if let Some(index) = woken {
            let woken = waking.swap_remove(index);
            if let Some(accepted) = woken.accepted {
                self.metrics.woke(woken.platform, accepted.elapsed());
            }
        }
    }

    /// The call's devices are no longer being woken.
    fn forget(&mut self, call: &CallId) {
        let Some(extension) = self.extension_of.remove(call) else {
            return;
        };
        if let Some(waking) = self.waking.get_mut(&extension) {
            waking.retain(|w| &w.call != call);
            if waking.is_empty() {
                self.waking.remove(&extension);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushwake_core::directory::Device;
    use pushwake_core::pbx::{ChannelId, DialTarget, Party};
    use pushwake_core::push::WakePush;
    use pushwake_core::wake::PushJob;

    fn job(call: &str, device: usize, token: &str) -> Command {
        Command::Push(PushJob {
            call: CallId(call.into()),
            device_index: device,
            device: Device::new(Platform::new("apns"), DeviceToken::new(token), "d"),
            push: WakePush {
                call_id: CallId(call.into()),
                extension: "101".into(),
                caller: Party::default(),
                kind: PushKind::IncomingCall,
                status: None,
                node: None,
            },
            deadline: std::time::Instant::now(),
        })
    }

    fn delivered(call: &str, device: usize) -> Input {
        Input::PushResult {
            call: CallId(call.into()),
            device,
            verdict: PushVerdict::Delivered,
        }
    }

    fn register(uri: &str) -> Input {
        Input::Event(PbxEvent::ContactAdded {
            extension: "101".into(),
            uri: uri.into(),
        })
    }

    fn contact(input: &Input) -> Option<(String, String)> {
        match input {
            Input::Event(PbxEvent::ContactAdded { extension, uri }) => {
                Some((extension.clone(), uri.clone()))
            }
            _ => None,
        }
    }

    fn count(metrics: &Metrics, name: &str) -> String {
        let text = metrics.encode();
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    }

    #[test]
    fn a_wake_up_is_timed_to_the_device_its_contact_names() {
        let metrics = Arc::new(Metrics::new());
        let mut observer = Observer::new(metrics.clone());
        let stats = EngineStats::default();
        observer.command(&job("c1", 0, "aaaa"));
        observer.command(&job("c1", 1, "bbbb"));
        observer.input(&delivered("c1", 0));
        observer.input(&delivered("c1", 1));
        // Two devices accepted: a contact that names neither is nobody's wake-up.
        let anonymous = register("sip:101@10.0.0.1:5060");
        observer.input(&anonymous);
        observer.handled(contact(&anonymous), &stats);
        assert!(!metrics
            .encode()
            .contains("pushwake_wake_latency_seconds_count"));
        let named = register("sip:101@10.0.0.1:5060;pn-provider=apns;pn-prid=bbbb");
        observer.input(&named);
        observer.command(&Command::Pbx(PbxCommand::Dial(
            pushwake_core::pbx::DialRequest {
                call: CallId("c1".into()),
                leg: ChannelId("l1".into()),
                caller_channel: ChannelId("caller".into()),
                extension: "101".into(),
                target: DialTarget::Contact("sip:101@10.0.0.1:5060".into()),
                caller: Party::default(),
                timeout: std::time::Duration::from_secs(30),
            },
        )));
        observer.handled(contact(&named), &stats);
        assert_eq!(
            count(&metrics, "pushwake_wake_latency_seconds_count"),
            "pushwake_wake_latency_seconds_count{platform=\"apns\"} 1"
        );
        assert_eq!(
            count(&metrics, "pushwake_register_to_dial_seconds_count"),
            "pushwake_register_to_dial_seconds_count 1"
        );
        // Now one accepted device is left: an anonymous contact is its wake-up.
        observer.input(&anonymous);
        observer.handled(contact(&anonymous), &stats);
        assert!(count(&metrics, "pushwake_wake_latency_seconds_count").ends_with(" 2"));
        observer.command(&Command::AbortPushes {
            call: CallId("c1".into()),
        });
        assert!(observer.waking.is_empty() && observer.extension_of.is_empty());
    }

    #[test]
    fn outcomes_are_counted_once() {
        let metrics = Arc::new(Metrics::new());
        let mut observer = Observer::new(metrics.clone());
        observer.command(&Command::Pbx(PbxCommand::Return {
            caller: ChannelId("c".into()),
            status: pushwake_core::pbx::WakeStatus::Timeout,
        }));
        // The fallback answered: counted once the caller is connected.
        let call = CallId("f".into());
        observer.command(&Command::Pbx(PbxCommand::Connect {
            call: call.clone(),
            caller: ChannelId("c2".into()),
            leg: ChannelId("l2".into()),
            status: WakeStatus::AnsweredFallback,
        }));
        observer.input(&Input::ConnectResult {
            call,
            result: Ok(()),
        });
        let mut stats = EngineStats::default();
        stats.outcomes.insert(CallOutcome::CallerHungUp, 2);
        stats.outcomes.insert(CallOutcome::AnsweredElsewhere, 1);
        observer.handled(None, &stats);
        observer.handled(None, &stats);
        assert_eq!(
            count(&metrics, "pushwake_calls_total{outcome=\"TIMEOUT\"}"),
            "pushwake_calls_total{outcome=\"TIMEOUT\"} 1"
        );
        assert_eq!(
            count(&metrics, "pushwake_calls_total{outcome=\"CALLER_HUNG_UP\"}"),
            "pushwake_calls_total{outcome=\"CALLER_HUNG_UP\"} 2"
        );
        assert_eq!(
            count(
                &metrics,
                "pushwake_calls_total{outcome=\"ANSWERED_FALLBACK\"}"
            ),
            "pushwake_calls_total{outcome=\"ANSWERED_FALLBACK\"} 1"
        );
        assert_eq!(
            count(
                &metrics,
                "pushwake_calls_total{outcome=\"ANSWERED_ELSEWHERE\"}"
            ),
            "pushwake_calls_total{outcome=\"ANSWERED_ELSEWHERE\"} 1"
        );
    }
}
