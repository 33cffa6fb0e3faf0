//! The wake logic's rules, checked without a runtime: inputs and a hand-moved clock in,
//! commands out.

use super::*;
use crate::directory::{DeviceToken, ExtensionPolicy, Fallback, Platform};
use crate::pbx::HeldCaller;
use crate::push::{EndReason, PushKind};
use crate::random::SeededRandom;

const RING: Duration = Duration::from_secs(25);
const STATUS_BASE: &str = "https://pbx.example.com/pushwake";

struct Harness {
    engine: WakeEngine,
    now: Instant,
}

fn device(n: usize) -> Device {
    Device::new(
        Platform::new("apns"),
        DeviceToken::new(format!("{n:064x}")),
        format!("dev{n}"),
    )
}

impl Harness {
    /// Against a PBX that wants contacts polled every second.
    fn new() -> Self {
        Self::with_settings(polling())
    }

    /// With the call status endpoint configured.
    fn with_status() -> Self {
        Self::with_settings(EngineSettings {
            status_base_url: Some(STATUS_BASE.into()),
            ..polling()
        })
    }

    fn with_settings(settings: EngineSettings) -> Self {
        Self::replaying(settings, 0x5eed, Instant::now())
    }

    /// An engine whose randomness starts from `seed` and whose clock starts at `now`.
    fn replaying(settings: EngineSettings, seed: u64, now: Instant) -> Self {
        let directory = Directory::new([
            ExtensionPolicy {
                number: "101".into(),
                ring_timeout: RING,
                devices: vec![device(1)],
                fallback: None,
            },
            ExtensionPolicy {
                number: "102".into(),
                ring_timeout: RING,
                devices: vec![device(2), device(3)],
                fallback: None,
            },
            ExtensionPolicy {
                number: "103".into(),
                ring_timeout: RING,
                devices: vec![],
                fallback: None,
            },
        ]);
        Self {
            engine: WakeEngine::new(
                Arc::new(directory),
                settings,
                Box::new(SeededRandom::new(seed)),
            ),
            now,
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Command> {
        self.engine.handle(self.now, input);
        self.take()
    }

    fn event(&mut self, event: PbxEvent) -> Vec<Command> {
        self.feed(Input::Event(event))
    }

    fn take(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.engine.poll_command()).collect()
    }

    fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now += by;
        self.engine.handle_timeout(self.now);
        self.take()
    }

    /// A caller enters for `extension`; returns the call id and the commands.
    fn caller(&mut self, channel: &str, extension: &str) -> (Option<CallId>, Vec<Command>) {
        let commands = self.event(PbxEvent::CallerArrived {
            channel: ch(channel),
            extension: extension.into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
        });
        let call = commands.iter().find_map(|c| match c {
            Command::Pbx(PbxCommand::ListContacts { call, .. }) => Some(call.clone()),
            _ => None,
        });
        (call, commands)
    }

    fn contacts(&mut self, call: &CallId, contacts: &[(&str, Option<&str>)]) -> Vec<Command> {
        let contacts = contacts
            .iter()
            .map(|(uri, reg)| Contact {
                uri: (*uri).into(),
                registration: reg.map(str::to_owned),
            })
            .collect();
        self.feed(Input::ContactsListed {
            call: call.clone(),
            extension: String::new(),
            result: Ok(contacts),
        })
    }

    /// Moves the clock `secs` seconds, a second at a time, and checks that nothing is
    /// dialled.
    fn assert_no_dial_for(&mut self, secs: u64) {
        for second in 1..=secs {
            let dialled = dials(&self.advance(Duration::from_secs(1)));
            assert!(dialled.is_empty(), "dialled {second} s on: {dialled:?}");
        }
    }

    /// A caller `channel` for 101, whose contact `uri` is dialled and whose dial
    /// request the PBX does not answer.
    fn dial_unanswered(&mut self, channel: &str, uri: &str) {
        let (call, _) = self.caller(channel, "101");
        let call = call.unwrap();
        let leg = dials(&self.contacts(&call, &[(uri, None)]))[0].leg.clone();
        self.feed(unreachable(&leg));
    }

    fn push_result(&mut self, call: &CallId, device: usize, delivered: bool) -> Vec<Command> {
        let verdict = if delivered {
            PushVerdict::Delivered
        } else {
            PushVerdict::Failed {
                reason: "BadDeviceToken".into(),
                dead_token: true,
            }
        };
        self.feed(Input::PushResult {
            call: call.clone(),
            device,
            verdict,
        })
    }
}

fn polling() -> EngineSettings {
    EngineSettings {
        contact_poll: Some(Duration::from_secs(1)),
        ..EngineSettings::default()
    }
}

fn ch(id: &str) -> ChannelId {
    ChannelId(id.into())
}

/// The PBX commands among `commands` that `pick` selects, in order.
fn pbx<T>(commands: &[Command], pick: impl Fn(&PbxCommand) -> Option<T>) -> Vec<T> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Pbx(command) => pick(command),
            Command::Push(_) | Command::AbortPushes { .. } | Command::CallStatus { .. } => None,
        })
        .collect()
}

fn dials(commands: &[Command]) -> Vec<DialRequest> {
    pbx(commands, |c| match c {
        PbxCommand::Dial(d) => Some(d.clone()),
        _ => None,
    })
}

fn hangups(commands: &[Command]) -> Vec<(ChannelId, HangupReason)> {
    pbx(commands, |c| match c {
        PbxCommand::Hangup { channel, reason } => Some((channel.clone(), *reason)),
        _ => None,
    })
}

fn continued(commands: &[Command]) -> Vec<(ChannelId, WakeStatus)> {
    pbx(commands, |c| match c {
        PbxCommand::Return { caller, status } => Some((caller.clone(), *status)),
        _ => None,
    })
}

/// The calls whose conversation `commands` release.
fn released(commands: &[Command]) -> Vec<CallId> {
    pbx(commands, |c| match c {
        PbxCommand::Release { call } => Some(call.clone()),
        _ => None,
    })
}

/// The "call ended" pushes among `commands`: (device index, reason).
fn told(commands: &[Command]) -> Vec<(usize, EndReason)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Push(PushJob {
                device_index,
                push:
                    WakePush {
                        kind: PushKind::CallEnded(reason),
                        ..
                    },
                ..
            }) => Some((*device_index, *reason)),
            _ => None,
        })
        .collect()
}

/// The call status updates among `commands`, in order.
fn statuses(commands: &[Command]) -> Vec<StatusUpdate> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::CallStatus { update, .. } => Some(update.clone()),
            _ => None,
        })
        .collect()
}

fn aborts(commands: &[Command]) -> usize {
    commands
        .iter()
        .filter(|c| matches!(c, Command::AbortPushes { .. }))
        .count()
}

/// The commands besides the extension states shown to the PBX.
fn but_states(commands: Vec<Command>) -> Vec<Command> {
    commands
        .into_iter()
        .filter(|c| !matches!(c, Command::Pbx(PbxCommand::PublishState { .. })))
        .collect()
}

/// The extension states shown to the PBX.
fn states(commands: &[Command]) -> Vec<(String, ExtensionState)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Pbx(PbxCommand::PublishState { extension, state }) => {
                Some((extension.clone(), *state))
            }
            _ => None,
        })
        .collect()
}

fn gone(channel: &ChannelId) -> PbxEvent {
    PbxEvent::ChannelGone {
        channel: channel.clone(),
        cause: "16 Normal Clearing".into(),
        answered_elsewhere: false,
    }
}

fn answered(leg: &ChannelId) -> PbxEvent {
    PbxEvent::LegAnswered { leg: leg.clone() }
}

#[test]
fn unknown_extension_or_one_without_devices_returns_nopush_at_once() {
    let mut h = Harness::new();
    let (call, commands) = h.caller("c1", "999");
    assert!(call.is_none());
    assert_eq!(
        commands,
        vec![Command::Pbx(PbxCommand::Return {
            caller: ch("c1"),
            status: WakeStatus::NoPush
        })]
    );
    let (_, commands) = h.caller("c2", "103");
    assert_eq!(continued(&commands), vec![(ch("c2"), WakeStatus::NoPush)]);
    let (_, commands) = h.caller("c3", "");
    assert_eq!(continued(&commands), vec![(ch("c3"), WakeStatus::NoPush)]);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.next_timeout(), None);
}

#[test]
fn a_caller_gets_ringback_a_contact_listing_and_one_push_per_device() {
    let mut h = Harness::new();
    let (call, commands) = h.caller("c1", "102");
    let call = call.expect("a call");
    assert_eq!(
        commands[0],
        Command::Pbx(PbxCommand::Ring { caller: ch("c1") })
    );
    let pushes: Vec<&PushJob> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Push(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0].device, device(2));
    assert_eq!(pushes[1].device_index, 1);
    assert_eq!(pushes[0].push.call_id, call);
    assert_eq!(pushes[0].push.caller.name, "Alice");
    assert_eq!(pushes[0].deadline, h.now + RING);
    assert_eq!(h.engine.next_timeout(), Some(h.now + RING));
}

#[test]
fn registered_contacts_are_dialled_and_new_registrations_fork_late() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let commands = h.contacts(&call, &[("sip:101@10.0.0.1:5060", Some("100"))]);
    let first = dials(&commands);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].target.contact().unwrap(), "sip:101@10.0.0.1:5060");
    assert_eq!(first[0].caller_channel, ch("c1"));
    assert_eq!(first[0].call, call);
    assert_eq!(first[0].timeout, RING);

    // The woken phone registers a new contact 3.2 s later: dialled at once.
    h.advance(Duration::from_millis(3200));
    let commands = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: "sip:101@10.0.0.9:5070;pn-prid=ab".into(),
    });
    let late = dials(&commands);
    assert_eq!(late.len(), 1);
    assert_eq!(
        late[0].target.contact().unwrap(),
        "sip:101@10.0.0.9:5070;pn-prid=ab"
    );
    assert_ne!(late[0].leg, first[0].leg);
    // The leg's own safety timeout is what is left of the ring window, rounded up.
    assert_eq!(late[0].timeout, Duration::from_secs(22));

    // The same registration announced twice (Created, then NonQualified) is one leg.
    let again = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: "sip:101@10.0.0.9:5070;pn-prid=ab".into(),
    });
    assert!(dials(&again).is_empty());
    // A listing that finds it again is not a new leg either.
    let listed = h.contacts(
        &call,
        &[
            ("sip:101@10.0.0.1:5060", Some("100")),
            ("sip:101@10.0.0.9:5070;pn-prid=ab", Some("200")),
        ],
    );
    assert!(dials(&listed).is_empty());
    // Another extension's registration is none of this call's business.
    let other = h.event(PbxEvent::ContactAdded {
        extension: "102".into(),
        uri: "sip:102@10.0.0.3".into(),
    });
    assert!(other.is_empty());
}

#[test]
fn first_answer_wins_and_the_other_legs_are_told_it_was_answered_elsewhere() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    let legs = dials(&h.contacts(&call, &[("sip:a", None), ("sip:b", None)]));
    let (a, b) = (legs[0].leg.clone(), legs[1].leg.clone());
    h.feed(Input::DialResult {
        leg: a.clone(),
        result: Ok(()),
    });
    h.feed(Input::DialResult {
        leg: b.clone(),
        result: Ok(()),
    });

    let commands = h.event(answered(&b));
    let connect = commands.iter().find_map(|c| match c {
        Command::Pbx(PbxCommand::Connect {
            call, caller, leg, ..
        }) => Some((call.clone(), caller.clone(), leg.clone())),
        _ => None,
    });
    let (connected, caller, leg) = connect.expect("connect");
    assert_eq!(connected, call);
    assert_eq!((caller, leg), (ch("c1"), b.clone()));
    assert_eq!(
        hangups(&commands),
        vec![(a.clone(), HangupReason::AnsweredElsewhere)]
    );
    assert_eq!(h.engine.next_timeout(), None, "no timeout once answered");

    // The same answer delivered twice (a PBX may repeat a leg's events) changes nothing.
    assert!(h.event(answered(&b)).is_empty());
    // The loser answering a moment later is hung up too.
    let late = h.event(answered(&a));
    assert_eq!(
        hangups(&late),
        vec![(a.clone(), HangupReason::AnsweredElsewhere)]
    );
    assert!(late
        .iter()
        .all(|c| !matches!(c, Command::Pbx(PbxCommand::Connect { .. }))));

    h.feed(Input::ConnectResult {
        call: call.clone(),
        result: Ok(()),
    });
    // Caller hangs up: the device's leg goes, the conversation is released.
    let end = h.event(gone(&ch("c1")));
    assert_eq!(hangups(&end), vec![(b.clone(), HangupReason::Normal)]);
    assert_eq!(released(&end), vec![call.clone()]);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(
        h.engine.stats().outcomes.get(&CallOutcome::Completed),
        Some(&1)
    );
}

#[test]
fn the_device_hanging_up_ends_the_caller_too() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.event(answered(&leg));
    h.feed(Input::ConnectResult {
        call,
        result: Ok(()),
    });
    let end = h.event(gone(&leg));
    assert_eq!(hangups(&end), vec![(ch("c1"), HangupReason::Normal)]);
    assert_eq!(released(&end).len(), 1);
    assert!(continued(&end).is_empty());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn no_answer_in_time_returns_the_caller_with_timeout_and_hangs_up_the_legs() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.push_result(&call, 0, true);
    let before = h.advance(RING - Duration::from_millis(1));
    assert!(continued(&before).is_empty());
    let commands = h.advance(Duration::from_millis(1));
    assert_eq!(
        hangups(&commands),
        vec![(leg.clone(), HangupReason::Normal)]
    );
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Timeout)]);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.next_timeout(), None);
    // The leg's dial request returning only now still gets it hung up.
    let late = h.feed(Input::DialResult {
        leg: leg.clone(),
        result: Ok(()),
    });
    assert_eq!(hangups(&late), vec![(leg, HangupReason::Normal)]);
}

#[test]
fn every_push_failing_with_nothing_to_dial_fails_at_once() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    assert!(h.push_result(&call, 0, false).is_empty(), "one device left");
    assert!(
        h.push_result(&call, 1, false).is_empty(),
        "contacts not known yet"
    );
    let commands = h.contacts(&call, &[]);
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Failed)]);
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn a_failed_push_waits_while_a_leg_still_rings_then_fails_when_it_ends() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.feed(Input::DialResult {
        leg: leg.clone(),
        result: Ok(()),
    });
    assert!(continued(&h.push_result(&call, 0, false)).is_empty());
    let commands = h.event(gone(&leg));
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Failed)]);
}

#[test]
fn a_delivered_push_keeps_the_caller_waiting_for_the_phone() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    assert!(continued(&h.contacts(&call, &[])).is_empty());
    assert_eq!(h.engine.waiting_calls(), 1);
}

#[test]
fn the_caller_hanging_up_while_waiting_hangs_up_every_leg() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    let legs = dials(&h.contacts(&call, &[("sip:a", None), ("sip:b", None)]));
    let commands = h.event(gone(&ch("c1")));
    let mut hung: Vec<ChannelId> = hangups(&commands).into_iter().map(|(c, _)| c).collect();
    hung.sort();
    let mut expected: Vec<ChannelId> = legs.iter().map(|d| d.leg.clone()).collect();
    expected.sort();
    assert_eq!(hung, expected);
    assert!(continued(&commands).is_empty());
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.next_timeout(), None);
    // Results arriving for the ended call change nothing.
    assert!(h.push_result(&call, 0, true).is_empty());
    assert!(h.contacts(&call, &[("sip:c", None)]).is_empty());
}

#[test]
fn a_phone_registering_again_on_the_same_uri_is_rung_anew() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let stale = dials(&h.contacts(&call, &[("sip:101@10.0.0.9:5070", Some("1000"))]))[0]
        .leg
        .clone();
    h.feed(Input::DialResult {
        leg: stale.clone(),
        result: Ok(()),
    });
    // A poll with nothing new: nothing happens.
    let polled = h.advance(Duration::from_secs(1));
    assert!(
        matches!(
            polled.as_slice(),
            [Command::Pbx(PbxCommand::ListContacts { .. })]
        ),
        "{polled:?}"
    );
    assert!(h
        .contacts(&call, &[("sip:101@10.0.0.9:5070", Some("1000"))])
        .is_empty());
    // The phone woke and registered the very same URI: only the marker moved.
    h.advance(Duration::from_secs(1));
    let commands = h.contacts(&call, &[("sip:101@10.0.0.9:5070", Some("1003"))]);
    assert_eq!(
        hangups(&commands),
        vec![(stale.clone(), HangupReason::Normal)]
    );
    let fresh = dials(&commands);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].target.contact().unwrap(), "sip:101@10.0.0.9:5070");
    assert_ne!(fresh[0].leg, stale);
    // The old leg's end does not count as the call failing.
    h.push_result(&call, 0, false);
    assert!(continued(&h.event(gone(&stale))).is_empty());
}

#[test]
fn a_ringing_leg_is_not_replaced_and_a_failed_one_is_redialled_on_a_new_registration() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", Some("1"))]))[0]
        .leg
        .clone();
    h.feed(Input::DialResult {
        leg: leg.clone(),
        result: Ok(()),
    });
    h.event(PbxEvent::LegRinging { leg: leg.clone() });
    assert!(
        h.contacts(&call, &[("sip:a", Some("2"))]).is_empty(),
        "ringing legs stay"
    );
    // It fails (say, the phone was busy); the same contact announced again is redialled.
    h.event(gone(&leg));
    assert!(
        dials(&h.contacts(&call, &[("sip:a", Some("2"))])).is_empty(),
        "same registration: not again"
    );
    let again = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: "sip:a".into(),
    });
    assert_eq!(dials(&again).len(), 1);
}

#[test]
fn a_failed_dial_request_counts_as_a_dead_leg() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.push_result(&call, 0, false);
    let commands = h.feed(Input::DialResult {
        leg,
        result: Err(PbxError::Failed("500".into())),
    });
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Failed)]);
}

fn unreachable(leg: &ChannelId) -> Input {
    Input::DialResult {
        leg: leg.clone(),
        result: Err(PbxError::Unavailable(
            "connection closed before message completed".into(),
        )),
    }
}

#[test]
fn a_dial_request_the_pbx_did_not_answer_is_sent_again() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let first = dials(&h.contacts(&call, &[("sip:a", Some("r1"))]))[0].clone();
    h.push_result(&call, 0, false);
    let commands = h.feed(unreachable(&first.leg));
    assert!(
        continued(&commands).is_empty(),
        "a redial is coming: not hopeless"
    );
    // The PBX may have created the leg before the connection broke: it must not ring.
    assert_eq!(
        hangups(&commands),
        vec![(first.leg.clone(), HangupReason::Normal)]
    );
    assert!(dials(&h.advance(Duration::from_millis(999))).is_empty());
    let again = dials(&h.advance(Duration::from_millis(1)));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].target, DialTarget::Contact("sip:a".into()));
    assert_ne!(again[0].leg, first.leg, "a new leg for the new request");
    // The redial's leg is a leg like any other: it answers and is joined.
    h.feed(Input::DialResult {
        leg: again[0].leg.clone(),
        result: Ok(()),
    });
    let joined = h.event(answered(&again[0].leg));
    assert!(
        pbx(&joined, |c| matches!(c, PbxCommand::Connect { .. })
            .then_some(()))
        .len()
            == 1,
        "{joined:?}"
    );
    // The first leg, if the PBX did create it, is not the call's any more.
    let stray = h.event(answered(&first.leg));
    assert_eq!(
        hangups(&stray),
        vec![(first.leg, HangupReason::AnsweredElsewhere)]
    );
}

#[test]
fn redials_end_after_the_last_delay() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let mut leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.push_result(&call, 0, false);
    for delay in REDIAL_DELAYS {
        assert!(continued(&h.feed(unreachable(&leg))).is_empty());
        assert!(dials(&h.advance(delay - Duration::from_millis(1))).is_empty());
        leg = dials(&h.advance(Duration::from_millis(1)))[0].leg.clone();
    }
    // The last attempt fails too: nothing left to try.
    let commands = h.feed(unreachable(&leg));
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Failed)]);
    assert_eq!(REDIAL_DELAYS.len() + 1, 3, "three dial requests in all");
}

#[test]
fn a_refused_dial_request_is_not_sent_again() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    let commands = h.feed(Input::DialResult {
        leg,
        result: Err(PbxError::Failed(
            "ARI POST /channels: 500 Allocation failed".into(),
        )),
    });
    assert!(
        hangups(&commands).is_empty(),
        "the PBX said no: there is no leg"
    );
    h.assert_no_dial_for(5);
}

#[test]
fn a_registration_before_the_redial_is_due_rings_the_phone_once() {
    let mut h = Harness::new();
    h.dial_unanswered("c1", "sip:a");
    // The phone registers again before the redial is due: it is rung at once, once.
    let now = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: "sip:a".into(),
    });
    assert_eq!(dials(&now).len(), 1);
    h.assert_no_dial_for(4);
}

#[test]
fn a_redial_gives_way_to_the_same_phone_at_another_address() {
    let mut h = Harness::new();
    let old = "sip:101@10.0.0.5:5060;pn-provider=apns;pn-prid=aa;pn-param=t";
    let new = "sip:101@10.0.0.9:5060;pn-provider=apns;pn-prid=aa;pn-param=t";
    h.dial_unanswered("c1", old);
    let moved = dials(&h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: new.into(),
    }));
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].target, DialTarget::Contact(new.into()));
    h.assert_no_dial_for(4);
}

#[test]
fn no_redial_of_a_removed_contact_nor_of_an_ended_call() {
    let mut h = Harness::new();
    h.dial_unanswered("c1", "sip:a");
    h.event(PbxEvent::ContactRemoved {
        extension: "101".into(),
        uri: "sip:a".into(),
    });
    h.assert_no_dial_for(3);

    h.dial_unanswered("c2", "sip:b");
    h.event(gone(&ch("c2")));
    h.assert_no_dial_for(3);
}

#[test]
fn no_redial_after_the_ring_window() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.advance(RING - Duration::from_millis(500));
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    let commands = h.feed(unreachable(&leg));
    assert!(
        continued(&commands).is_empty(),
        "the push may still wake it"
    );
    let end = h.advance(Duration::from_millis(500));
    assert!(dials(&end).is_empty());
    assert_eq!(continued(&end), vec![(ch("c1"), WakeStatus::Timeout)]);
}

#[test]
fn a_failed_bridge_returns_the_caller_with_failed() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.event(answered(&leg));
    let commands = h.feed(Input::ConnectResult {
        call,
        result: Err(PbxError::Failed("boom".into())),
    });
    assert_eq!(hangups(&commands), vec![(leg, HangupReason::Normal)]);
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Failed)]);
    assert_eq!(released(&commands).len(), 1);
}

#[test]
fn shutdown_returns_waiting_callers_and_leaves_bridged_ones_talking() {
    let mut h = Harness::new();
    let (waiting, _) = h.caller("c1", "101");
    let waiting = waiting.unwrap();
    let waiting_leg = dials(&h.contacts(&waiting, &[("sip:a", None)]))[0]
        .leg
        .clone();
    let (talking, _) = h.caller("c2", "102");
    let talking = talking.unwrap();
    let talking_leg = dials(&h.contacts(&talking, &[("sip:b", None)]))[0]
        .leg
        .clone();
    h.event(answered(&talking_leg));
    h.feed(Input::ConnectResult {
        call: talking,
        result: Ok(()),
    });

    h.engine.shutdown(h.now);
    let commands = h.take();
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Shutdown)]);
    assert_eq!(
        hangups(&commands),
        vec![(waiting_leg, HangupReason::Normal)]
    );
    assert_eq!(h.engine.active_calls(), 1);
    // A caller arriving now is returned at once.
    let (call, commands) = h.caller("c3", "101");
    assert!(call.is_none());
    assert_eq!(continued(&commands), vec![(ch("c3"), WakeStatus::Shutdown)]);
}

#[test]
fn reconnecting_returns_callers_left_by_a_previous_process_and_adopts_bridged_ones() {
    let mut h = Harness::new();
    let old_call = CallId("6f1d2c3b-0000-4000-8000-00000000abcd".into());
    let bridged_leg = ch("old-leg");
    let held = |channel: &str, extension: &str| HeldCaller {
        channel: ch(channel),
        extension: extension.into(),
    };
    let snapshot = PbxSnapshot {
        callers: vec![held("stray-caller", "101"), held("lonely", "101")],
        legs: vec![ch("stray-leg")],
        conversations: vec![Conversation {
            call: old_call.clone(),
            caller: ch("talking-caller"),
            leg: bridged_leg.clone(),
            extension: "102".into(),
        }],
        broken: vec![CallId("half".into())],
        live: ["stray-caller", "stray-leg", "talking-caller", "lonely"]
            .iter()
            .map(|c| ch(c))
            .chain([bridged_leg.clone()])
            .collect(),
    };
    let commands = h.event(PbxEvent::Connected(snapshot));
    let mut returned = continued(&commands);
    returned.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        returned,
        vec![
            (ch("lonely"), WakeStatus::Recovered),
            (ch("stray-caller"), WakeStatus::Recovered)
        ]
    );
    assert_eq!(
        hangups(&commands),
        vec![(ch("stray-leg"), HangupReason::Normal)]
    );
    assert_eq!(released(&commands), vec![CallId("half".into())]);
    // The adopted conversation is looked after: when the device hangs up, so does the caller.
    assert_eq!(h.engine.active_calls(), 1);
    let end = h.event(gone(&bridged_leg));
    assert_eq!(
        hangups(&end),
        vec![(ch("talking-caller"), HangupReason::Normal)]
    );
    assert_eq!(released(&end), vec![old_call]);
}

#[test]
fn reconnecting_applies_hangups_missed_while_disconnected() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.feed(Input::DialResult {
        leg: leg.clone(),
        result: Ok(()),
    });
    h.event(PbxEvent::Disconnected);
    // The caller hung up while the events were down; the leg still rings.
    let snapshot = PbxSnapshot {
        live: [leg.clone()].into_iter().collect(),
        ..PbxSnapshot::default()
    };
    let commands = h.event(PbxEvent::Connected(snapshot));
    assert_eq!(hangups(&commands), vec![(leg, HangupReason::Normal)]);
    assert!(continued(&commands).is_empty());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn our_own_waiting_caller_is_not_recovered_on_reconnect() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    assert!(call.is_some());
    let snapshot = PbxSnapshot {
        callers: vec![HeldCaller {
            channel: ch("c1"),
            extension: "101".into(),
        }],
        live: [ch("c1")].into_iter().collect(),
        ..PbxSnapshot::default()
    };
    assert!(but_states(h.event(PbxEvent::Connected(snapshot))).is_empty());
    assert_eq!(h.engine.waiting_calls(), 1);
}

#[test]
fn a_caller_returned_but_still_held_at_a_reconnect_is_returned_again_with_its_own_status() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    assert!(call.is_some());
    let (refused, _) = h.caller("c2", "999");
    assert!(refused.is_none());
    let commands = h.advance(RING);
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Timeout)]);
    // The events reconnect before the PBX has acted on either return: both callers
    // are still held. Each goes back with the status it was given, not RECOVERED.
    let snapshot = PbxSnapshot {
        callers: ["c1", "c2", "c3"]
            .iter()
            .map(|c| HeldCaller {
                channel: ch(c),
                extension: "101".into(),
            })
            .collect(),
        live: ["c1", "c2", "c3"].iter().map(|c| ch(c)).collect(),
        ..PbxSnapshot::default()
    };
    let mut returned = continued(&h.event(PbxEvent::Connected(snapshot.clone())));
    returned.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        returned,
        vec![
            (ch("c1"), WakeStatus::Timeout),
            (ch("c2"), WakeStatus::NoPush),
            (ch("c3"), WakeStatus::Recovered)
        ]
    );
    // Long after, a caller still held is no longer told apart from a stranger's.
    h.advance(RETURN_MEMORY);
    let commands = h.event(PbxEvent::Connected(snapshot));
    assert!(
        continued(&commands)
            .iter()
            .all(|(_, status)| *status == WakeStatus::Recovered),
        "{commands:?}"
    );
}

#[test]
fn our_own_conversation_is_neither_adopted_nor_released_on_reconnect() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.event(answered(&leg));
    h.feed(Input::ConnectResult {
        call: call.clone(),
        result: Ok(()),
    });
    // Seen once whole and once with a party still being added: both are this call's.
    for snapshot in [
        PbxSnapshot {
            conversations: vec![Conversation {
                call: call.clone(),
                caller: ch("c1"),
                leg: leg.clone(),
                extension: "101".into(),
            }],
            live: [ch("c1"), leg.clone()].into_iter().collect(),
            ..PbxSnapshot::default()
        },
        PbxSnapshot {
            broken: vec![call.clone()],
            callers: vec![HeldCaller {
                channel: ch("c1"),
                extension: "101".into(),
            }],
            legs: vec![leg.clone()],
            live: [ch("c1"), leg.clone()].into_iter().collect(),
            ..PbxSnapshot::default()
        },
    ] {
        let commands = but_states(h.event(PbxEvent::Connected(snapshot)));
        assert!(commands.is_empty(), "{commands:?}");
        assert_eq!(h.engine.active_calls(), 1);
    }
}

/// Whatever happens, in whatever order, every caller that enters ends up returned to
/// the dialplan exactly once, hung up by the caller, or bridged; and no call is left
/// behind once the ring window is over.
#[test]
fn no_caller_is_ever_left_waiting() {
    // A small deterministic pseudo-random generator: the same sequences every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _round in 0..300 {
        let mut h = Harness::new();
        let (call, _) = h.caller("c1", if next(2) == 0 { "101" } else { "102" });
        let call = call.unwrap();
        let mut legs: Vec<ChannelId> = Vec::new();
        let mut returned = 0;
        let mut caller_gone = false;
        let mut hung_up = 0;
        for _step in 0..12 {
            let commands = match next(9) {
                0 => h.contacts(
                    &call,
                    &[("sip:a", Some(&next(3).to_string())), ("sip:b", None)],
                ),
                1 => h.event(PbxEvent::ContactAdded {
                    extension: "101".into(),
                    uri: format!("sip:{}", next(4)),
                }),
                2 => h.push_result(&call, next(2) as usize, next(2) == 0),
                3 if !legs.is_empty() => {
                    let l = legs[next(legs.len() as u64) as usize].clone();
                    h.event(gone(&l))
                }
                4 if !legs.is_empty() => {
                    let l = legs[next(legs.len() as u64) as usize].clone();
                    h.event(answered(&l))
                }
                5 if !legs.is_empty() => {
                    let l = legs[next(legs.len() as u64) as usize].clone();
                    h.feed(Input::DialResult {
                        leg: l,
                        result: match next(3) {
                            0 => Ok(()),
                            1 => Err(PbxError::Failed("x".into())),
                            _ => Err(PbxError::Unavailable("y".into())),
                        },
                    })
                }
                6 => h.advance(Duration::from_secs(next(8))),
                7 if next(5) == 0 => {
                    caller_gone = true;
                    h.event(gone(&ch("c1")))
                }
                8 => h.feed(Input::ConnectResult {
                    call: call.clone(),
                    result: Ok(()),
                }),
                _ => Vec::new(),
            };
            legs.extend(dials(&commands).into_iter().map(|d| d.leg));
            returned += continued(&commands)
                .iter()
                .filter(|(c, _)| c == &ch("c1"))
                .count();
            hung_up += hangups(&commands)
                .iter()
                .filter(|(c, _)| c == &ch("c1"))
                .count();
        }
        let commands = h.advance(RING * 2);
        returned += continued(&commands)
            .iter()
            .filter(|(c, _)| c == &ch("c1"))
            .count();
        assert!(
            returned + hung_up <= 1,
            "caller returned {returned} and hung up {hung_up} times"
        );
        let bridged = h.engine.active_calls() == 1 && h.engine.waiting_calls() == 0;
        assert!(
            returned == 1 || hung_up == 1 || caller_gone || bridged,
            "caller left waiting: returned {returned}, gone {caller_gone}, active {}",
            h.engine.active_calls()
        );
        assert_eq!(h.engine.waiting_calls(), 0);
    }
}

#[test]
fn devices_pushed_for_a_call_the_caller_abandons_are_told_it_ended() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    // Device 1's push is still being tried: it is stopped, and told too.
    let commands = h.event(gone(&ch("c1")));
    assert_eq!(aborts(&commands), 1);
    assert_eq!(
        told(&commands),
        vec![(0, EndReason::CallerHungUp), (1, EndReason::CallerHungUp)]
    );
    let job = commands
        .iter()
        .find_map(|c| match c {
            Command::Push(j) => Some(j.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(job.deadline, h.now + CALL_ENDED_WINDOW);
    assert_eq!(job.push.call_id, call);
}

#[test]
fn a_member_caller_taken_away_because_its_group_answered_tells_answered_elsewhere() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    h.push_result(&call, 1, true);
    // One phone was awake and rings.
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    h.feed(Input::DialResult {
        leg: leg.clone(),
        result: Ok(()),
    });
    // A ring group's other member answered: the PBX hangs pushwake's member up.
    let commands = h.event(PbxEvent::ChannelGone {
        channel: ch("c1"),
        cause: "26".into(),
        answered_elsewhere: true,
    });
    // The ringing phone shows "answered elsewhere", not a missed call.
    assert_eq!(
        hangups(&commands),
        vec![(leg, HangupReason::AnsweredElsewhere)]
    );
    assert_eq!(
        told(&commands),
        vec![
            (0, EndReason::AnsweredElsewhere),
            (1, EndReason::AnsweredElsewhere)
        ]
    );
    assert!(continued(&commands).is_empty(), "the caller is gone");
    assert_eq!(h.engine.waiting_calls(), 0);
    assert_eq!(
        h.engine
            .stats()
            .outcomes
            .get(&CallOutcome::AnsweredElsewhere),
        Some(&1)
    );
}

#[test]
fn a_timeout_tells_the_delivered_devices_but_not_the_failed_ones() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, false);
    h.push_result(&call, 1, true);
    h.contacts(&call, &[]);
    let commands = h.advance(RING);
    assert_eq!(continued(&commands), vec![(ch("c1"), WakeStatus::Timeout)]);
    assert_eq!(told(&commands), vec![(1, EndReason::Timeout)]);
}

#[test]
fn when_a_known_device_answers_only_the_others_are_told_and_only_once() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    h.push_result(&call, 1, true);
    // Device 1 (index 1, token …03) wakes and registers with its token in pn-prid.
    let uri = format!(
        "sip:102@10.0.0.9:5070;transport=udp;pn-provider=apns;PN-PRID={};pn-param=T.voip",
        device(3).token.expose().to_uppercase()
    );
    let leg = dials(&h.event(PbxEvent::ContactAdded {
        extension: "102".into(),
        uri,
    }))[0]
        .leg
        .clone();
    let commands = h.event(answered(&leg));
    assert_eq!(told(&commands), vec![(0, EndReason::AnsweredElsewhere)]);
    assert_eq!(aborts(&commands), 1);
    h.feed(Input::ConnectResult {
        call,
        result: Ok(()),
    });
    // The conversation ends: nobody is told again.
    let end = h.event(gone(&ch("c1")));
    assert!(told(&end).is_empty(), "{end:?}");
}

#[test]
fn when_the_answering_device_is_unknown_the_devices_it_may_be_are_never_told() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    h.push_result(&call, 1, true);
    let leg = dials(&h.contacts(&call, &[("sip:102@10.0.0.5:5060", None)]))[0]
        .leg
        .clone();
    // Either device may be the one that answered: telling it would end its own call.
    assert!(told(&h.event(answered(&leg))).is_empty());
    h.feed(Input::ConnectResult {
        call,
        result: Ok(()),
    });
    let end = h.event(gone(&leg));
    assert!(told(&end).is_empty(), "{end:?}");
}

#[test]
fn a_device_named_by_a_losing_leg_is_told_and_the_one_left_is_not() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    h.push_result(&call, 1, true);
    // Device 1 (token …03) registers with its token; a contact without one answers.
    let named = format!(
        "sip:102@10.0.0.9:5070;pn-provider=apns;pn-prid={}",
        device(3).token.expose()
    );
    let legs = dials(&h.contacts(&call, &[(&named, None), ("sip:102@10.0.0.5:5060", None)]));
    let commands = h.event(answered(&legs[1].leg));
    assert_eq!(told(&commands), vec![(1, EndReason::AnsweredElsewhere)]);
    h.feed(Input::ConnectResult {
        call,
        result: Ok(()),
    });
    // Device 0 answered: it hears nothing of its own call, now or at its end.
    assert!(told(&h.event(gone(&ch("c1")))).is_empty());
}

/// Devices kept outside the configuration (learned from registrations, or registered
/// through the API).
struct Registered(Vec<(&'static str, Device)>);

impl DeviceSource for Registered {
    fn devices_of(&self, extension: &str) -> Vec<Device> {
        self.0
            .iter()
            .filter(|(e, _)| *e == extension)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

#[test]
fn registered_devices_are_pushed_with_the_configured_ones_and_enable_an_extension() {
    let mut h = Harness::new();
    h.engine.set_device_source(Arc::new(Registered(vec![
        ("101", device(1)), // also in the configuration: pushed once
        ("101", device(7)),
        ("555", device(8)), // an extension the configuration does not list
    ])));
    let (call, commands) = h.caller("c1", "101");
    assert!(call.is_some());
    let pushed: Vec<Device> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Push(job) => Some(job.device.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pushed, vec![device(1), device(7)]);
    let (call, commands) = h.caller("c2", "555");
    assert!(call.is_some(), "{commands:?}");
    let deadline = commands.iter().find_map(|c| match c {
        Command::Push(job) => Some(job.deadline),
        _ => None,
    });
    assert_eq!(
        deadline,
        Some(h.now + crate::directory::DEFAULT_RING_TIMEOUT)
    );
    let (call, commands) = h.caller("c3", "556");
    assert!(call.is_none());
    assert_eq!(continued(&commands), vec![(ch("c3"), WakeStatus::NoPush)]);
}

#[test]
fn a_phone_registered_at_two_addresses_gets_one_invite() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let token = device(1).token.expose().to_owned();
    let old = format!("sip:101@10.0.0.9:5070;pn-provider=apns;pn-prid={token}");
    let new = format!("sip:101@10.0.0.9:5999;transport=udp;pn-prid={token};pn-provider=apns");
    // Listed twice (the old contact has not expired yet): only the newer one is rung.
    let first = dials(&h.contacts(
        &call,
        &[
            (&new, Some("1796000600")),
            (&old, Some("1796000100")),
            ("sip:101@10.0.0.1", None),
        ],
    ));
    let uris: Vec<&str> = first.iter().map(|d| d.target.contact().unwrap()).collect();
    assert_eq!(uris, [new.as_str(), "sip:101@10.0.0.1"]);
    // It registers again from yet another port while its leg rings: the old leg goes.
    h.feed(Input::DialResult {
        leg: first[0].leg.clone(),
        result: Ok(()),
    });
    h.event(PbxEvent::LegRinging {
        leg: first[0].leg.clone(),
    });
    let newest = format!("sip:101@10.0.0.9:6001;pn-provider=apns;pn-prid={token}");
    let commands = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: newest.clone(),
    });
    assert_eq!(
        hangups(&commands),
        vec![(first[0].leg.clone(), HangupReason::Normal)]
    );
    let again = dials(&commands);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].target.contact().unwrap(), newest);
    // The next listing still shows the older contacts: nothing more is rung.
    let listed = h.contacts(
        &call,
        &[
            (&new, Some("1796000600")),
            (&newest, Some("1796000700")),
            ("sip:101@10.0.0.1", None),
        ],
    );
    assert!(dials(&listed).is_empty(), "{listed:?}");
    assert!(hangups(&listed).is_empty(), "{listed:?}");
}

#[test]
fn a_device_with_a_dead_token_is_skipped_until_the_configuration_is_reloaded() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, false); // BadDeviceToken: dead
    h.event(gone(&ch("c1")));
    // The next call to 102 pushes only the live device.
    let (_, commands) = h.caller("c2", "102");
    let pushed: Vec<Device> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Push(j) => Some(j.device.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pushed, vec![device(3)]);
    // An extension whose only device is dead returns at once.
    let (call, _) = h.caller("c3", "101");
    h.push_result(&call.unwrap(), 0, false);
    let (none, commands) = h.caller("c4", "101");
    assert!(none.is_none());
    assert_eq!(continued(&commands), vec![(ch("c4"), WakeStatus::NoPush)]);
    // A reload (the operator may have fixed the token) tries it again.
    let directory = h.engine.directory.clone();
    h.engine.set_directory(directory);
    let (call, _) = h.caller("c5", "101");
    assert!(call.is_some());
}

#[test]
fn a_transient_failure_does_not_disable_a_device() {
    let mut h = Harness::new();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.feed(Input::PushResult {
        call,
        device: 0,
        verdict: PushVerdict::Failed {
            reason: "ring window over".into(),
            dead_token: false,
        },
    });
    h.event(gone(&ch("c1")));
    let (call, _) = h.caller("c2", "101");
    assert!(call.is_some(), "still pushed");
}

#[test]
fn without_a_status_endpoint_nothing_is_reported_and_pushes_carry_no_link() {
    let mut h = Harness::new();
    let (call, commands) = h.caller("c1", "101");
    let call = call.unwrap();
    assert!(statuses(&commands).is_empty());
    assert!(commands.iter().all(|c| match c {
        Command::Push(job) => job.push.status.is_none(),
        _ => true,
    }));
    h.push_result(&call, 0, true);
    let end = h.event(gone(&ch("c1")));
    assert!(statuses(&end).is_empty());
    assert_eq!(told(&end).len(), 1);
}

#[test]
fn a_call_reports_ringing_before_its_first_push_and_every_push_carries_the_link() {
    let mut h = Harness::with_status();
    let (call, commands) = h.caller("c1", "102");
    let call = call.unwrap();
    let first_status = commands
        .iter()
        .position(|c| matches!(c, Command::CallStatus { .. }))
        .expect("a status update");
    let first_push = commands
        .iter()
        .position(|c| matches!(c, Command::Push(_)))
        .expect("a push");
    assert!(first_status < first_push, "{commands:?}");
    let Command::CallStatus {
        call: reported,
        update: StatusUpdate::Ringing { extension, secret },
    } = &commands[first_status]
    else {
        panic!("{:?}", commands[first_status]);
    };
    assert_eq!((reported, extension.as_str()), (&call, "102"));
    assert_eq!(statuses(&commands).len(), 1);
    let links: Vec<StatusLink> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Push(job) => job.push.status.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(links.len(), 2, "both devices");
    for link in &links {
        assert_eq!(link.url, format!("{STATUS_BASE}/v1/calls/{call}"));
        assert_eq!(&link.token, secret);
    }
    // Another call gets another secret.
    let (_, other) = h.caller("c2", "101");
    let Some(StatusUpdate::Ringing { secret: second, .. }) = statuses(&other).pop() else {
        panic!("{other:?}");
    };
    assert_ne!(&second, secret);
}

#[test]
fn status_goes_ringing_answered_ended_when_a_device_answers_and_the_call_ends() {
    let mut h = Harness::with_status();
    let (call, _) = h.caller("c1", "102");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    h.push_result(&call, 1, true);
    // Device 1 (token …03) rings on a contact that names it; another contact answers.
    let named = format!(
        "sip:102@10.0.0.9:5070;pn-provider=apns;pn-prid={}",
        device(3).token.expose()
    );
    let legs = dials(&h.contacts(&call, &[(&named, None), ("sip:102@10.0.0.5:5060", None)]));
    // Reported answered as the caller is being connected, not only once bridged; the
    // device that lost hears it was answered elsewhere after the status says so (the
    // "call ended" push carries the link too).
    let answer = h.event(answered(&legs[1].leg));
    assert_eq!(statuses(&answer), vec![StatusUpdate::Answered]);
    let status_at = answer
        .iter()
        .position(|c| matches!(c, Command::CallStatus { .. }))
        .unwrap();
    let pushes: Vec<(usize, &PushJob)> = answer
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Command::Push(job) => Some((i, job)),
            _ => None,
        })
        .collect();
    assert_eq!(pushes.len(), 1);
    for (at, job) in pushes {
        assert!(status_at < at);
        assert_eq!(job.device_index, 1);
        assert!(job.push.status.is_some());
    }
    let connected = h.feed(Input::ConnectResult {
        call: call.clone(),
        result: Ok(()),
    });
    assert!(statuses(&connected).is_empty());
    // The conversation ends: answered (elsewhere, for every other device).
    let end = h.event(gone(&ch("c1")));
    assert_eq!(
        statuses(&end),
        vec![StatusUpdate::Ended(EndReason::AnsweredElsewhere)]
    );
    assert!(
        told(&end).is_empty(),
        "the device that answered is not told"
    );
}

#[test]
fn status_ends_caller_hung_up_when_the_caller_gives_up() {
    let mut h = Harness::with_status();
    let (call, commands) = h.caller("c1", "101");
    assert!(matches!(
        statuses(&commands)[..],
        [StatusUpdate::Ringing { .. }]
    ));
    h.push_result(&call.unwrap(), 0, true);
    let end = h.event(gone(&ch("c1")));
    assert_eq!(
        statuses(&end),
        vec![StatusUpdate::Ended(EndReason::CallerHungUp)]
    );
    // Nothing more is reported for a call that is over.
    assert!(statuses(&h.event(gone(&ch("c1")))).is_empty());
}

#[test]
fn status_ends_timeout_when_nobody_answers_in_time() {
    let mut h = Harness::with_status();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.contacts(&call, &[]);
    assert!(statuses(&h.advance(RING - Duration::from_millis(1))).is_empty());
    assert_eq!(
        statuses(&h.advance(Duration::from_millis(1))),
        vec![StatusUpdate::Ended(EndReason::Timeout)]
    );
}

#[test]
fn status_ends_ended_when_the_answered_caller_cannot_be_connected_or_on_shutdown() {
    let mut h = Harness::with_status();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    assert_eq!(
        statuses(&h.event(answered(&leg))),
        vec![StatusUpdate::Answered]
    );
    let failed = h.feed(Input::ConnectResult {
        call,
        result: Err(PbxError::Failed("bridge refused".into())),
    });
    assert_eq!(
        statuses(&failed),
        vec![StatusUpdate::Ended(EndReason::Ended)]
    );

    h.caller("c2", "101");
    h.engine.shutdown(h.now);
    assert_eq!(
        statuses(&h.take()),
        vec![StatusUpdate::Ended(EndReason::Ended)]
    );
}

/// Plays a morning's worth of calls (answered, abandoned, timed out, a restart's
/// leftovers) and writes down every command, secrets included.
fn replay(seed: u64, start: Instant) -> (Vec<Command>, String) {
    let mut h = Harness::replaying(
        EngineSettings {
            status_base_url: Some(STATUS_BASE.into()),
            ..polling()
        },
        seed,
        start,
    );
    let mut all = Vec::new();
    let mut record = |commands: Vec<Command>| {
        all.extend(commands.iter().cloned());
        commands
    };
    // Answered by the second of two phones, one of which registers late.
    let (answered_call, commands) = h.caller("c1", "102");
    record(commands);
    let answered_call = answered_call.unwrap();
    let legs = dials(&record(
        h.contacts(&answered_call, &[("sip:102@10.0.0.5:5060", Some("7"))]),
    ));
    record(h.push_result(&answered_call, 0, true));
    h.now += Duration::from_millis(1800);
    let late = dials(&record(h.event(PbxEvent::ContactAdded {
        extension: "102".into(),
        uri: format!("sip:102@10.0.0.9:5070;pn-prid={:064x}", 3),
    })));
    record(h.event(PbxEvent::LegRinging {
        leg: late[0].leg.clone(),
    }));
    record(h.event(answered(&late[0].leg)));
    record(h.feed(Input::ConnectResult {
        call: answered_call,
        result: Ok(()),
    }));
    record(h.event(gone(&legs[0].leg)));
    // Abandoned by the caller while its phone sleeps.
    let (abandoned, commands) = h.caller("c2", "101");
    record(commands);
    record(h.contacts(&abandoned.unwrap(), &[]));
    record(h.advance(Duration::from_millis(2500)));
    record(h.event(gone(&ch("c2"))));
    // Nobody answers in time.
    let (timed_out, commands) = h.caller("c3", "101");
    record(commands);
    record(h.contacts(&timed_out.unwrap(), &[("sip:101@10.0.0.1", None)]));
    record(h.advance(RING));
    // A reconnect finding a caller of a previous process.
    record(
        h.event(PbxEvent::Connected(PbxSnapshot {
            callers: vec![HeldCaller {
                channel: ch("stray"),
                extension: "101".into(),
            }],
            live: [ch("c1"), ch("stray"), late[0].leg.clone()]
                .into_iter()
                .collect(),
            ..PbxSnapshot::default()
        })),
    );
    record(h.event(gone(&ch("c1"))));
    // Five callers at once: three time out together, two are returned by a shutdown.
    let mut crowd = Vec::new();
    for n in 0..5 {
        let (call, commands) = h.caller(&format!("crowd-{n}"), if n < 3 { "101" } else { "102" });
        record(commands);
        crowd.push(call.unwrap());
    }
    for call in &crowd[..3] {
        record(h.contacts(call, &[("sip:101@10.0.0.1", None)]));
    }
    h.now += Duration::from_millis(200);
    record(h.event(PbxEvent::Connected(PbxSnapshot {
        live: (0..5).map(|n| ch(&format!("crowd-{n}"))).collect(),
        ..PbxSnapshot::default()
    })));
    record(h.advance(RING));
    h.engine.shutdown(h.now);
    record(h.take());
    // `Debug` hides the secrets; the transcript shows them too, so that they are
    // compared byte for byte as well.
    let mut transcript = String::new();
    for command in &all {
        transcript.push_str(&format!("{command:?}\n"));
        match command {
            Command::CallStatus {
                update: StatusUpdate::Ringing { secret, .. },
                ..
            } => transcript.push_str(&format!("  secret {}\n", secret.expose())),
            Command::Push(job) => {
                if let Some(link) = &job.push.status {
                    transcript.push_str(&format!("  token {}\n", link.token.expose()));
                }
            }
            _ => {}
        }
    }
    (all, transcript)
}

#[test]
fn the_same_seed_and_inputs_give_byte_identical_commands() {
    let start = Instant::now();
    let (commands, transcript) = replay(42, start);
    assert!(commands.len() > 60, "{transcript}");
    assert!(transcript.contains("Connect") && transcript.contains("Timeout"));
    let (again, replayed) = replay(42, start);
    assert_eq!(commands, again);
    assert_eq!(transcript, replayed);
    // The randomness is what the seed gives, not something the engine draws itself:
    // another seed, other call ids, leg ids and secrets; the same commands otherwise.
    let (other, other_transcript) = replay(43, start);
    assert_eq!(other.len(), commands.len());
    assert_ne!(other_transcript, transcript);
    let shape = |c: &Command| match c {
        Command::Pbx(command) => command.name(),
        Command::Push(_) => "push",
        Command::AbortPushes { .. } => "abort-pushes",
        Command::CallStatus { .. } => "call-status",
    };
    // (Calls handled together go in the order of their ids, which the seed chose.)
    let mut other_shapes: Vec<&str> = other.iter().map(shape).collect();
    let mut shapes: Vec<&str> = commands.iter().map(shape).collect();
    other_shapes.sort_unstable();
    shapes.sort_unstable();
    assert_eq!(other_shapes, shapes);
}

/// A harness whose PBX takes extension states.
fn with_states() -> Harness {
    Harness::with_settings(EngineSettings {
        extension_states: true,
        ..polling()
    })
}

#[test]
fn without_extension_states_asked_for_none_is_shown() {
    let mut h = Harness::new();
    let mut commands = h.event(PbxEvent::Connected(PbxSnapshot::default()));
    let (call, arrived) = h.caller("c1", "101");
    commands.extend(arrived);
    commands.extend(h.contacts(&call.unwrap(), &[]));
    commands.extend(h.event(gone(&ch("c1"))));
    commands.extend(h.feed(Input::DevicesChanged(DevicesChanged::All)));
    assert!(states(&commands).is_empty(), "{commands:?}");
}

#[test]
fn extension_states_follow_devices_and_calls_and_are_shown_anew_on_reconnect() {
    let mut h = with_states();
    // Connected: every configured extension is shown; 103 has no device to wake.
    let shown = h.event(PbxEvent::Connected(PbxSnapshot::default()));
    assert_eq!(
        states(&shown),
        vec![
            ("101".to_owned(), ExtensionState::Idle),
            ("102".to_owned(), ExtensionState::Idle),
            ("103".to_owned(), ExtensionState::Unavailable),
        ]
    );
    // A caller waits for 101: ringing; nothing else changes.
    let (call, commands) = h.caller("c1", "101");
    let call = call.unwrap();
    assert_eq!(
        states(&commands),
        vec![("101".to_owned(), ExtensionState::Ringing)]
    );
    // A device answers: in use from the moment the caller is being connected.
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    assert_eq!(
        states(&h.event(answered(&leg))),
        vec![("101".to_owned(), ExtensionState::InUse)]
    );
    let connected = h.feed(Input::ConnectResult {
        call: call.clone(),
        result: Ok(()),
    });
    assert!(states(&connected).is_empty(), "no change: {connected:?}");
    // The conversation ends: idle again.
    assert_eq!(
        states(&h.event(gone(&ch("c1")))),
        vec![("101".to_owned(), ExtensionState::Idle)]
    );
    // A phone of 104 registers itself: 104 becomes push-enabled and idle; devices that
    // changed without changing a state show nothing.
    h.engine
        .set_device_source(Arc::new(Registered(vec![("104", device(9))])));
    let learned = h.feed(Input::DevicesChanged(DevicesChanged::Of(vec![
        "104".into(),
        "101".into(),
    ])));
    assert_eq!(
        states(&learned),
        vec![("104".to_owned(), ExtensionState::Idle)]
    );
    // It is forgotten: unavailable, shown once.
    h.engine.set_device_source(Arc::new(Registered(vec![])));
    let forgotten = h.feed(Input::DevicesChanged(DevicesChanged::All));
    assert_eq!(
        states(&forgotten),
        vec![("104".to_owned(), ExtensionState::Unavailable)]
    );
    assert!(states(&h.feed(Input::DevicesChanged(DevicesChanged::All))).is_empty());
    // A reconnect (the PBX may have restarted) shows every state again, 104's too.
    let again = h.event(PbxEvent::Connected(PbxSnapshot::default()));
    assert_eq!(states(&again).len(), 4, "{again:?}");
    assert!(states(&again).contains(&("104".to_owned(), ExtensionState::Unavailable)));
}

#[test]
fn an_extension_with_a_waiting_and_a_connected_call_is_in_use_until_both_end() {
    let mut h = with_states();
    let (first, _) = h.caller("c1", "102");
    let first = first.unwrap();
    let leg = dials(&h.contacts(&first, &[("sip:a", None)]))[0]
        .leg
        .clone();
    h.event(answered(&leg));
    let (second, commands) = h.caller("c2", "102");
    assert!(second.is_some());
    assert!(states(&commands).is_empty(), "still in use: {commands:?}");
    // The first call over, the second still waits: ringing.
    assert_eq!(
        states(&h.event(gone(&ch("c1")))),
        vec![("102".to_owned(), ExtensionState::Ringing)]
    );
    assert_eq!(h.engine.waiting_calls(), 1);
    let end = h.event(gone(&ch("c2")));
    assert_eq!(states(&end), vec![("102".to_owned(), ExtensionState::Idle)]);
}

const FALLBACK_AFTER: Duration = Duration::from_secs(10);
const FALLBACK: &str = "Local/+15551234567@outbound";

/// A harness where 101 (one device, RING) rings its fallback after FALLBACK_AFTER.
fn with_fallback() -> Harness {
    let mut h = Harness::new();
    h.engine
        .set_directory(Arc::new(Directory::new([ExtensionPolicy {
            number: "101".into(),
            ring_timeout: RING,
            devices: vec![device(1)],
            fallback: Some(Fallback {
                dial: FALLBACK.into(),
                after: FALLBACK_AFTER,
            }),
        }])));
    h
}

fn fallback_dials(commands: &[Command]) -> Vec<DialRequest> {
    dials(commands)
        .into_iter()
        .filter(|d| d.target == DialTarget::Fallback(FALLBACK.into()))
        .collect()
}

fn connect_status(commands: &[Command]) -> Option<WakeStatus> {
    pbx(commands, |c| match c {
        PbxCommand::Connect { status, .. } => Some(*status),
        _ => None,
    })
    .first()
    .copied()
}

#[test]
fn the_fallback_rings_alongside_once_no_device_answered_in_time_and_can_win() {
    let mut h = with_fallback();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.push_result(&call, 0, true);
    // A registered contact rings from the start; the fallback only after FALLBACK_AFTER.
    let contact = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    assert_eq!(
        h.engine.next_timeout(),
        Some(h.now + Duration::from_secs(1))
    );
    let early = h.advance(FALLBACK_AFTER - Duration::from_millis(1));
    assert!(fallback_dials(&early).is_empty(), "{early:?}");
    let due = h.advance(Duration::from_millis(1));
    let fallback = fallback_dials(&due);
    assert_eq!(fallback.len(), 1, "{due:?}");
    assert_eq!(fallback[0].caller.number, "200", "the caller's own id");
    assert_eq!(fallback[0].timeout, RING - FALLBACK_AFTER);
    // Rung once only.
    assert!(fallback_dials(&h.advance(Duration::from_secs(1))).is_empty());
    // The cell phone answers first: connected as ANSWERED_FALLBACK, the rest cancelled.
    let leg = fallback[0].leg.clone();
    let won = h.event(answered(&leg));
    assert_eq!(connect_status(&won), Some(WakeStatus::AnsweredFallback));
    assert!(hangups(&won).contains(&(contact, HangupReason::AnsweredElsewhere)));
    assert_eq!(told(&won), vec![(0, EndReason::AnsweredElsewhere)]);
}

#[test]
fn a_device_answering_first_keeps_the_fallback_from_ringing_or_cancels_it() {
    // Before FALLBACK_AFTER: the fallback never rings.
    let mut h = with_fallback();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    let leg = dials(&h.contacts(&call, &[("sip:a", None)]))[0].leg.clone();
    let first = h.event(answered(&leg));
    assert_eq!(connect_status(&first), Some(WakeStatus::Answered));
    assert!(fallback_dials(&h.advance(FALLBACK_AFTER * 2)).is_empty());
    // After it: the ringing fallback is cancelled as answered elsewhere.
    let mut h = with_fallback();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.contacts(&call, &[]);
    let fallback = fallback_dials(&h.advance(FALLBACK_AFTER))[0].leg.clone();
    let woken = h.event(PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: "sip:101@10.0.0.9:5070".into(),
    });
    let leg = dials(&woken)[0].leg.clone();
    let later = h.event(answered(&leg));
    assert_eq!(connect_status(&later), Some(WakeStatus::Answered));
    assert!(hangups(&later).contains(&(fallback, HangupReason::AnsweredElsewhere)));
}

#[test]
fn the_fallback_never_rings_for_a_call_that_is_over() {
    let mut h = with_fallback();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.contacts(&call, &[]);
    h.event(gone(&ch("c1")));
    assert_eq!(h.engine.next_timeout(), None);
    assert!(fallback_dials(&h.advance(FALLBACK_AFTER * 2)).is_empty());
}

#[test]
fn with_every_push_failed_and_nothing_registered_the_fallback_rings_at_once() {
    let mut h = with_fallback();
    let (call, _) = h.caller("c1", "101");
    let call = call.unwrap();
    h.contacts(&call, &[]);
    let failed = h.push_result(&call, 0, false);
    assert_eq!(fallback_dials(&failed).len(), 1, "{failed:?}");
    assert!(continued(&failed).is_empty(), "not FAILED: {failed:?}");
    // If the fallback fails too, the call is hopeless.
    let leg = fallback_dials(&failed)[0].leg.clone();
    let gone = h.event(gone(&leg));
    assert_eq!(continued(&gone), vec![(ch("c1"), WakeStatus::Failed)]);
}
