//! The real pushwake binary on FreeSWITCH, as far as CI can have one: the test Event
//! Socket server (`testkit/src/esl.rs`) answers with the frames a real FreeSWITCH 1.11.1
//! sent (`testkit/captures/freeswitch/`: `show channels`, `sofia_contact` from
//! api_after_register.log, the `sofia::register` of events.log), a test FreeSWITCH dials
//! out to pushwake's `socket` listener as the dialplan would (`testkit/src/esl/outbound.rs`,
//! from outbound-socket.log), and a local APNs server takes the pushes. Channel events
//! the captures hold in another shape (a leg's `CHANNEL_ANSWER`, the hang-ups) are made
//! by the test with the captured header names.
//!
//! The scenarios: a sleeping phone woken, dialled on its `sofia::register` with the
//! call's id, answered, bridged, hung up; a call nobody answers (TIMEOUT); an extension
//! without devices (NOPUSH at once); an already registered phone (rung at once); a caller
//! hanging up while waiting (the leg hung up, the missed-call alert); a token learned from
//! `sofia::register` and pushed for the next call; two devices, the first to answer wins
//! (the other leg hung up with LOSE_RACE); a bridged call that survives pushwake's
//! SIGKILL (adopted by the next process from `show channels` and the legs' variables)
//! and is still torn down; a crash while a caller waits (the hand-over's socket closes at
//! once, so FreeSWITCH goes on); a phone registering again from a new port (rung there
//! only); and the whole woken call through a stand-in that judges every channel command
//! as FreeSWITCH does (`EslServer::judge`: a leg that answers by itself, a bridge that
//! fails unless the caller was answered, hang-ups reported); late and duplicated events
//! (a stale unregister, an answer and a hang-up twice) changing nothing; pushwake
//! stopped, the `socket` refused at once; the extension's fallback dial string
//! originated once no device answered, winning with ANSWERED_FALLBACK; and a ring
//! group's loopback member (`dialplan/freeswitch/pushwake-member.xml`) answered and
//! bridged when its woken phone answers first, and ended by its group, because another
//! member answered (LOSE_RACE, its socket closed before the
//! hang-up event) or because the caller left (ORIGINATOR_CANCEL). Slot 35's TCP ports.

use std::path::Path;
use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::esl::outbound::{Channel, OutboundCall};
use pushwake_testkit::esl::{channel_event, sofia_register, Answer};
use pushwake_testkit::freeswitch::{leg_of, register_of, FreeSwitchRig};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// This file's TCP port for pushwake's `socket` listener (slot 35's numbers).
const SLOT: u8 = 35;
const CALLER: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";
const SECOND: &str = "a1b2c3d4-0000-4000-8000-00000000abcd";
/// The contact of the captured `sofia::register` (`esl::sofia_register`).
const CONTACT: &str = "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";

/// The rig on slot 35's `port`-th TCP port, running this build's pushwake.
async fn rig(port: u16, extensions: Vec<TestExtension>) -> FreeSwitchRig {
    FreeSwitchRig::start_with(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        SLOT,
        port,
        extensions,
    )
    .await
}

fn voip_token() -> String {
    "35".repeat(32)
}

/// The alert token of [`rig_with_alert_token`]'s device, for its missed-call alert.
fn alert_token() -> String {
    "cd".repeat(32)
}

/// The rig on `port` with extension 101's one iOS device, which has an alert token: the
/// app's own topic's, as Apple binds it.
async fn rig_with_alert_token(port: u16) -> FreeSwitchRig {
    let switch = rig(
        port,
        vec![TestExtension::new("101", "20s")
            .device(TestDevice::apns(voip_token()).with("alert_token", &alert_token()))],
    )
    .await;
    switch.apns.bind_token(&alert_token(), "com.example.phone");
    switch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_freeswitch_pushes_dials_the_woken_phone_and_bridges_it() {
    let switch = rig(
        0,
        vec![TestExtension::new("101", "10s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    let (server, apns_server, listen_addr) = (&switch.server, &switch.apns, switch.listen);
    let daemon = &switch.daemon;

    // The dialplan hands a call for 101 over; pushwake rings the caller and pushes.
    let call = OutboundCall::connect_to(listen_addr, Channel::new(CALLER, "101"))
        .await
        .unwrap();
    call.wait_command(SECS(10), |c| {
        c.execute() == Some(("ring_ready".to_owned(), None))
    })
    .await
    .unwrap_or_else(|| panic!("no ring_ready; log:\n{}", daemon.logs()));
    let pushes = apns_server
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.logs()));
    assert_eq!(pushes[0].token, voip_token());
    assert_eq!(pushes[0].body["extension"], "101");
    let call_id = pushes[0].body["call_id"].as_str().unwrap().to_owned();

    // Woken, the phone registers: pushwake originates to that very contact at once,
    // with the call's id on the INVITE.
    server.hold_jobs(None);
    assert_eq!(server.push_event(&sofia_register()), 1);
    let originate = server
        .wait_command(SECS(10), |r| r.command.starts_with("bgapi originate"))
        .await
        .unwrap_or_else(|| panic!("no originate; log:\n{}", daemon.logs()));
    let command = originate.command;
    assert!(
        command.contains(&format!("sip_h_X-Pushwake-Call-Id={call_id}"))
            && command.contains(&format!("pushwake_caller={CALLER}"))
            && command.ends_with(&format!("}}sofia/internal/{CONTACT} &park()")),
        "{command}"
    );
    let leg = leg_of(&command);

    // It answers: pushwake bridges it to the caller.
    connect_answers(&switch, CALLER, &leg, "ANSWERED");
    server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[
            ("Unique-ID", &leg),
            ("Call-Direction", "outbound"),
            ("variable_pushwake_call", &call_id),
        ],
    ));
    switch
        .sent(&format!("api uuid_bridge {CALLER} {leg}"))
        .await;
    let sent = server.commands();
    let at = |c: &str| sent.iter().position(|s| s == c).unwrap();
    assert!(
        at(&format!(
            "api uuid_setvar {CALLER} pushwake_status ANSWERED"
        )) < at(&format!("api uuid_answer {CALLER}"))
            && at(&format!("api uuid_answer {CALLER}"))
                < at(&format!("api uuid_bridge {CALLER} {leg}")),
        "{sent:?}"
    );

    daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // They talk, then the caller hangs up: both channels end.
    for id in [CALLER, leg.as_str()] {
        server.push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", id)],
        ));
    }
    daemon
        .wait_log(&format!("caller hung up call={call_id}"), SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A second call nobody answers: back to the dialplan with TIMEOUT after 10 s.
    let second = OutboundCall::connect_to(listen_addr, Channel::new(SECOND, "101"))
        .await
        .unwrap();
    second
        .wait_command(SECS(25), |c| {
            c.execute() == Some(("set".to_owned(), Some("pushwake_status=TIMEOUT".to_owned())))
        })
        .await
        .unwrap_or_else(|| panic!("no TIMEOUT; log:\n{}", daemon.logs()));
    assert!(
        second.wait_closed(SECS(10)).await,
        "exit ends the hand-over"
    );
    assert!(!daemon.logs().contains(&voip_token()), "a token in the log");
    let mut switch = switch;
    let stopped = switch.daemon.terminate(SECS(10)).await.unwrap();
    assert!(stopped.success(), "{stopped:?}");
}

/// Every call of an extension without devices: back at once with NOPUSH, unrung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_without_devices_goes_back_with_nopush_at_once() {
    let switch = rig(1, Vec::new()).await;
    let call = switch.call(CALLER, "102").await;
    let started = std::time::Instant::now();
    switch.given_back(&call, "NOPUSH", SECS(5)).await;
    println!("NOPUSH after {:?}", started.elapsed());
    assert!(
        !call.executed().iter().any(|(app, _)| app == "ring_ready"),
        "{:?}",
        call.executed()
    );
    assert!(switch.apns.accepted().is_empty());
}

/// A phone already registered: dialled at once (no push needed to find it), while its
/// device is pushed too; it answers and is bridged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_registered_phone_is_rung_at_once() {
    let switch = rig(
        2,
        vec![TestExtension::new("101", "10s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.answer(
        "sofia_contact 101@127.0.0.1",
        Answer::body(&format!("sofia/internal/{CONTACT}")),
    );
    switch.server.hold_jobs(None);
    let _call = switch.call(CALLER, "101").await;
    let (command, leg) = switch.originate().await;
    assert!(
        command.ends_with(&format!("}}sofia/internal/{CONTACT} &park()")),
        "{command}"
    );
    connect_answers(&switch, CALLER, &leg, "ANSWERED");
    switch.server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", &leg), ("Call-Direction", "outbound")],
    ));
    switch
        .daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(switch.apns.wait_for(1, SECS(10)).await.unwrap().len(), 1);
}

/// The caller gives up while waiting: the leg ringing the woken phone is hung up, and
/// the device is told the call is over (on iOS the missed-call alert, reason
/// caller_hung_up: a VoIP push that reports no call is not allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_while_waiting_ends_the_ringing_leg_and_tells_the_device() {
    let switch = rig_with_alert_token(3).await;
    switch.server.hold_jobs(None);
    let call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    switch.server.answer(
        &format!("uuid_kill {leg} NORMAL_CLEARING"),
        Answer::body("+OK\n"),
    );
    // FreeSWITCH: the caller's CANCEL ends its channel and closes the hand-over.
    call.hang_up();
    switch.server.push_event(&channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[("Hangup-Cause", "ORIGINATOR_CANCEL"), ("Unique-ID", CALLER)],
    ));
    switch
        .sent(&format!("api uuid_kill {leg} NORMAL_CLEARING"))
        .await;
    let pushes = switch.apns.wait_for(2, SECS(10)).await.unwrap();
    assert_eq!(pushes[1].token, alert_token());
    assert_eq!(pushes[1].headers["apns-push-type"], "alert");
    assert_eq!(pushes[1].body["type"], "call_cancelled");
    assert_eq!(pushes[1].body["reason"], "caller_hung_up");
}

/// A phone that puts its token in its REGISTER (RFC 8599) is learned from
/// `sofia::register` (the captured frame, with this phone's contact): after it went
/// silent, a call to its extension, which the configuration does not list, pushes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_learned_from_sofia_register_is_pushed_for_the_next_call() {
    let switch = rig(4, Vec::new()).await;
    let token = "ab".repeat(32);
    let contact = format!(
        "sip:103@127.0.0.1:5093;transport=UDP;pn-provider=apns;pn-prid={token};pn-param=TEAM123456.com.example.phone.voip"
    );
    switch
        .server
        .push_event(&register_of("103", &format!("\"\" <{contact}>")));
    let learned = switch
        .daemon
        .wait_log("learned a device from its registration", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(learned.contains("extension=\"103\""), "{learned}");
    assert!(
        !switch.daemon.logs().contains(&token),
        "the token itself is never logged"
    );
    let call = switch.call(CALLER, "103").await;
    let pushes = switch
        .apns
        .wait_for(1, SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}; pushwake's log:\n{}", switch.daemon.logs()));
    assert_eq!(pushes[0].token, token);
    assert_eq!(pushes[0].headers["apns-topic"], "com.example.phone.voip");
    assert_eq!(pushes[0].body["extension"], "103");
    call.hang_up();
}

/// Answers the three commands of a connect of `caller` and `leg`, the caller returning
/// with `status`, with `+OK`.
fn connect_answers(switch: &FreeSwitchRig, caller: &str, leg: &str, status: &str) {
    for command in [
        format!("uuid_setvar {caller} pushwake_status {status}"),
        format!("uuid_answer {caller}"),
        format!("uuid_bridge {caller} {leg}"),
    ] {
        switch.server.answer(&command, Answer::body("+OK\n"));
    }
}

/// Two devices, both woken, both dialled: the first to answer is bridged, the other leg
/// is hung up as "answered elsewhere" (LOSE_RACE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_devices_the_first_to_answer_wins() {
    let switch = rig(
        5,
        vec![TestExtension::new("101", "20s")
            .device(TestDevice::apns("a1".repeat(32)))
            .device(TestDevice::apns("b2".repeat(32)))],
    )
    .await;
    switch.server.hold_jobs(None);
    let _call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(2, SECS(10)).await.unwrap();
    // Each phone registers (its own contact, its own push token).
    let phone = |port: u16, prid: &str| {
        format!("\"\" <sip:101@127.0.0.1:{port};transport=UDP;pn-provider=apns;pn-prid={prid};pn-param=TEAM123456.com.example.phone.voip>")
    };
    switch
        .server
        .push_event(&register_of("101", &phone(5091, &"a1".repeat(32))));
    switch
        .server
        .push_event(&register_of("101", &phone(5092, &"b2".repeat(32))));
    let originates = switch
        .server
        .wait_commands(2, SECS(10), |r| r.command.starts_with("bgapi originate"))
        .await
        .unwrap_or_else(|| panic!("not both dialled; log:\n{}", switch.daemon.logs()));
    let (first, second) = (
        leg_of(&originates[0].command),
        leg_of(&originates[1].command),
    );
    assert!(
        originates[1].command.contains(":5092;"),
        "{}",
        originates[1].command
    );
    connect_answers(&switch, CALLER, &second, "ANSWERED");
    switch.server.answer(
        &format!("uuid_kill {first} LOSE_RACE"),
        Answer::body("+OK\n"),
    );
    // The second phone answers first.
    switch.server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", &second), ("Call-Direction", "outbound")],
    ));
    switch
        .sent(&format!("api uuid_bridge {CALLER} {second}"))
        .await;
    switch
        .sent(&format!("api uuid_kill {first} LOSE_RACE"))
        .await;
}

/// pushwake is killed (SIGKILL) while a woken phone talks to the caller; the next
/// process finds the conversation through the Event Socket (show channels, the legs'
/// variables), adopts it, and when the caller hangs up, hangs the phone's leg up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_survives_a_crash_and_is_still_torn_down() {
    let mut switch = rig(
        6,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.hold_jobs(None);
    let _call = switch.call(CALLER, "101").await;
    let pushes = switch.apns.wait_for(1, SECS(10)).await.unwrap();
    let call_id = pushes[0].body["call_id"].as_str().unwrap().to_owned();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    connect_answers(&switch, CALLER, &leg, "ANSWERED");
    switch.server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", &leg), ("Call-Direction", "outbound")],
    ));
    switch
        .daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // What FreeSWITCH holds now, as the next process will ask for it.
    switch.server.answer(
        "show channels",
        Answer::body(&format!(
            "uuid,direction,created,created_epoch,name,state\n{CALLER},inbound,,,sofia/internal/200@127.0.0.1,CS_EXCHANGE_MEDIA\n{leg},outbound,,,sofia/internal/101@127.0.0.1:5091,CS_EXCHANGE_MEDIA\n\n2 total.\n"
        )),
    );
    for (channel, name, value) in [
        (leg.as_str(), "pushwake_call", call_id.as_str()),
        (leg.as_str(), "pushwake_caller", CALLER),
        (CALLER, "pushwake_status", "ANSWERED"),
        (CALLER, "pushwake_extension", "101"),
        (CALLER, "pushwake_call", "_undef_"),
    ] {
        switch.server.answer(
            &format!("uuid_getvar {channel} {name}"),
            Answer::body(value),
        );
    }
    switch.restart().await;
    switch
        .daemon
        .wait_log(
            "adopting a conversation connected by a previous process",
            SECS(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    switch.server.answer(
        &format!("uuid_kill {leg} NORMAL_CLEARING"),
        Answer::body("+OK\n"),
    );
    switch.server.push_event(&channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", CALLER)],
    ));
    switch
        .sent(&format!("api uuid_kill {leg} NORMAL_CLEARING"))
        .await;
}

/// pushwake dies (SIGKILL) while a caller waits: the hand-over's socket closes at once,
/// which is what makes FreeSWITCH go on with the dialplan (measured on a real one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_caller_waits_gives_the_call_back_to_the_dialplan_at_once() {
    let mut switch = rig(
        7,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    let call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    let killed = std::time::Instant::now();
    switch.daemon.kill().await;
    assert!(
        call.wait_closed(SECS(5)).await,
        "the hand-over is still open"
    );
    println!("hand-over closed {:?} after the kill", killed.elapsed());
    assert!(
        !call.executed().iter().any(|(app, _)| app == "set"),
        "no status: the dialplan's normal route runs"
    );
}

/// A phone that registers again from another port while it is being rung: its stale
/// leg is hung up and it is rung at the new contact only (one device, one INVITE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registering_again_from_a_new_port_rings_there_only() {
    let switch = rig(
        8,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.hold_jobs(None);
    let _call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    let contact = |port: u16| {
        format!("\"\" <sip:101@127.0.0.1:{port};transport=UDP;pn-provider=apns;pn-prid={};pn-param=TEAM123456.com.example.phone.voip>", voip_token())
    };
    switch
        .server
        .push_event(&register_of("101", &contact(5091)));
    let (_, stale) = switch.originate().await;
    switch.server.answer(
        &format!("uuid_kill {stale} NORMAL_CLEARING"),
        Answer::body("+OK\n"),
    );
    switch
        .server
        .push_event(&register_of("101", &contact(5095)));
    let originates = switch
        .server
        .wait_commands(2, SECS(10), |r| r.command.starts_with("bgapi originate"))
        .await
        .unwrap_or_else(|| panic!("not rung at the new port; log:\n{}", switch.daemon.logs()));
    assert!(
        originates[1].command.contains(":5095;"),
        "{}",
        originates[1].command
    );
    switch
        .sent(&format!("api uuid_kill {stale} NORMAL_CLEARING"))
        .await;
}

/// The stand-in judging every channel command as FreeSWITCH does (`EslServer::judge`):
/// the woken phone's leg answers by itself (CHANNEL_ANSWER, then the job's +OK), pushwake
/// answers the caller before bridging (else FreeSWITCH would hang both up), the bridge
/// comes up (CHANNEL_BRIDGE), and the caller's hang-up makes pushwake kill the leg, whose
/// hang-up FreeSWITCH then reports. Nothing here is pushed by the test but the phone's
/// REGISTER and the caller's hang-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_call_goes_through_a_stand_in_that_judges_every_command() {
    let switch = rig(
        9,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.judge();
    switch.server.phones_answer(true);
    let call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    switch
        .daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = switch.server.commands();
    let at = |c: String| sent.iter().position(|s| *s == c);
    assert!(
        at(format!("api uuid_answer {CALLER}")) < at(format!("api uuid_bridge {CALLER} {leg}"))
            && at(format!("api uuid_answer {CALLER}")).is_some(),
        "the caller must be answered before the bridge: {sent:?}"
    );
    // The caller hangs up: FreeSWITCH ends its channel and closes the hand-over.
    call.hang_up();
    switch.server.push_event(&channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", CALLER)],
    ));
    switch
        .server
        .wait_command(SECS(10), |r| {
            r.command.starts_with(&format!("api uuid_kill {leg}"))
        })
        .await
        .unwrap_or_else(|| panic!("the leg was left up; log:\n{}", switch.daemon.logs()));
    switch
        .daemon
        .wait_log("caller hung up", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Late and duplicated events, as FreeSWITCH sends them (call-flow.log opens with a
/// `sofia::unregister` stamped before the subscription; events of one moment may come
/// twice): a stale unregister, a leg's answer twice and the caller's hang-up twice change
/// nothing: one connect, one hang-up of the leg, the call ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_duplicated_events_change_nothing() {
    let switch = rig(
        10,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.judge();
    // The stale unregister first, as the capture has it.
    switch.server.push_event(&pushwake_testkit::esl::captured(
        "events.log",
        "sofia%3A%3Aunregister",
    ));
    switch.server.hold_jobs(None);
    let call = switch.call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    let answer = channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", &leg), ("Call-Direction", "outbound")],
    );
    switch.server.push_event(&answer);
    switch.server.push_event(&answer);
    switch
        .daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    call.hang_up();
    let gone = channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", CALLER)],
    );
    switch.server.push_event(&gone);
    switch.server.push_event(&gone);
    switch
        .server
        .wait_command(SECS(10), |r| {
            r.command.starts_with(&format!("api uuid_kill {leg}"))
        })
        .await
        .unwrap_or_else(|| panic!("the leg was left up; log:\n{}", switch.daemon.logs()));
    // A marker after them all: once pushwake has logged it (the captured register's
    // pn-param names another team, which it warns about), the events before it were
    // handled.
    let before = switch.daemon.log_len();
    switch.server.push_event(&sofia_register());
    switch
        .daemon
        .wait_log_after(before, "were not taken", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let commands = switch.server.commands();
    let count = |prefix: String| commands.iter().filter(|c| c.starts_with(&prefix)).count();
    assert_eq!(
        count(format!("api uuid_bridge {CALLER} {leg}")),
        1,
        "{commands:?}"
    );
    assert_eq!(count(format!("api uuid_kill {leg}")), 1, "{commands:?}");
    assert_eq!(
        switch.daemon.logs().matches("caller hung up call=").count(),
        1,
        "{}",
        switch.daemon.logs()
    );
}

/// pushwake stopped: nothing listens where the dialplan's `socket` connects, so
/// FreeSWITCH goes on with the normal route at once (measured: the caller got the next
/// action's answer 0.15 s after its INVITE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pushwake_stopped_the_socket_application_is_refused_at_once() {
    let mut switch = rig(11, Vec::new()).await;
    let stopped = switch.daemon.terminate(SECS(10)).await.unwrap();
    assert!(stopped.success(), "{stopped:?}");
    let refused = tokio::time::timeout(SECS(5), tokio::net::TcpStream::connect(switch.listen))
        .await
        .expect("a refusal, not a wait");
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

/// The phone never wakes: once `fallback_after` passed, pushwake originates the
/// extension's fallback dial string as it is (no call id header for a stranger's phone),
/// and when it answers bridges it with `pushwake_status=ANSWERED_FALLBACK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_dial_string_is_originated_once_no_device_answered_and_can_win() {
    const FALLBACK: &str = "sofia/gateway/trunk/+15551234567";
    let switch = rig(
        12,
        vec![TestExtension::new("101", "10s")
            .device(TestDevice::apns(voip_token()))
            .fallback(FALLBACK, "1s")],
    )
    .await;
    let (server, daemon) = (&switch.server, &switch.daemon);
    server.hold_jobs(None);
    let started = tokio::time::Instant::now();
    let _call = switch.call(CALLER, "101").await;
    let pushes = switch
        .apns
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.logs()));
    let call_id = pushes[0].body["call_id"].as_str().unwrap().to_owned();
    let (command, leg) = switch.originate().await;
    assert!(started.elapsed() >= SECS(1), "before fallback_after");
    assert!(
        command.ends_with(&format!("}}{FALLBACK} &park()"))
            && command.contains(&format!("pushwake_call={call_id}"))
            && !command.contains("X-Pushwake-Call-Id"),
        "{command}"
    );
    connect_answers(&switch, CALLER, &leg, "ANSWERED_FALLBACK");
    server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[
            ("Unique-ID", &leg),
            ("Call-Direction", "outbound"),
            ("variable_pushwake_call", &call_id),
        ],
    ));
    switch
        .sent(&format!("api uuid_bridge {CALLER} {leg}"))
        .await;
    let sent = server.commands();
    assert!(
        sent.contains(&format!(
            "api uuid_setvar {CALLER} pushwake_status ANSWERED_FALLBACK"
        )),
        "{sent:?}"
    );
    daemon
        .wait_log("the fallback answered", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for id in [CALLER, leg.as_str()] {
        server.push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", id)],
        ));
    }
    daemon
        .wait_log(&format!("caller hung up call={call_id}"), SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A ring group's loopback member (`dialplan/freeswitch/pushwake-member.xml`): the
/// "b" leg of `loopback/101/pushwake-member` is handed over like a caller and rung
/// (ring_ready, which mod_loopback passes on to the group), 101's phone is woken and
/// dialled; then the group ends the member with `group_cause` (mod_loopback gives the
/// "b" leg the "a" leg's cause), the socket closing `close_first` or after the hang-up
/// event (two threads of FreeSWITCH's: either comes first). The ringing phone's leg is
/// hung up with `kill_cause`, and the call ends as `ended` says (the engine's log line).
async fn a_member_ended_by_its_group(
    port: u16,
    group_cause: &str,
    close_first: bool,
    kill_cause: &str,
    ended: &str,
) -> FreeSwitchRig {
    let switch = rig_with_alert_token(port).await;
    switch.server.hold_jobs(None);
    let member = switch.member_call(CALLER, "101").await;
    member
        .wait_command(SECS(10), |c| {
            c.execute() == Some(("ring_ready".to_owned(), None))
        })
        .await
        .unwrap_or_else(|| panic!("the member is not rung; log:\n{}", switch.daemon.logs()));
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    switch.server.answer(
        &format!("uuid_kill {leg} {kill_cause}"),
        Answer::body("+OK\n"),
    );
    let hang_up = channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[("Hangup-Cause", group_cause), ("Unique-ID", CALLER)],
    );
    if close_first {
        member.hang_up();
        switch
            .daemon
            .wait_log("waiting for the channel's hang-up cause", SECS(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        switch.server.push_event(&hang_up);
    } else {
        switch.server.push_event(&hang_up);
        member.hang_up();
    }
    switch
        .sent(&format!("api uuid_kill {leg} {kill_cause}"))
        .await;
    switch
        .daemon
        .wait_log(ended, SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    switch
}

/// Another member of the group answered: FreeSWITCH hangs the loopback member up with
/// LOSE_RACE, and the socket's close comes before that event: the woken phone's leg is
/// still hung up as answered elsewhere (LOSE_RACE: "call completed elsewhere"), and there
/// is no missed-call alert (iOS gets none for a call answered on another device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_group_member_whose_group_answered_elsewhere_tells_the_woken_phone() {
    let switch = a_member_ended_by_its_group(
        13,
        "LOSE_RACE",
        true,
        "LOSE_RACE",
        "answered elsewhere in the caller's group while waiting",
    )
    .await;
    switch
        .daemon
        .wait_log(
            "no missed-call alert for a call answered on another device",
            SECS(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(switch.apns.accepted().len(), 1, "only the wake-up push");
}

/// The group's caller gave up: the member ends with ORIGINATOR_CANCEL; the woken phone
/// gets the missed-call alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_group_member_whose_caller_left_tells_the_woken_phone() {
    let switch = a_member_ended_by_its_group(
        14,
        "ORIGINATOR_CANCEL",
        false,
        "NORMAL_CLEARING",
        "caller hung up while waiting",
    )
    .await;
    let pushes = switch.apns.wait_for(2, SECS(10)).await.unwrap();
    assert_eq!(pushes[1].token, alert_token());
    assert_eq!(pushes[1].body["type"], "call_cancelled");
    assert_eq!(pushes[1].body["reason"], "caller_hung_up");
}

/// The woken phone answers first: pushwake answers the loopback member (which answers
/// the group's "a" leg, so the group stops ringing its other members) and bridges it to
/// the phone, with ANSWERED for the member context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_group_member_whose_woken_phone_answers_first_is_answered_and_bridged() {
    let switch = rig(
        15,
        vec![TestExtension::new("101", "20s").device(TestDevice::apns(voip_token()))],
    )
    .await;
    switch.server.hold_jobs(None);
    let _member = switch.member_call(CALLER, "101").await;
    switch.apns.wait_for(1, SECS(10)).await.unwrap();
    switch.server.push_event(&sofia_register());
    let (_, leg) = switch.originate().await;
    connect_answers(&switch, CALLER, &leg, "ANSWERED");
    switch.server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", &leg), ("Call-Direction", "outbound")],
    ));
    for command in [
        format!("api uuid_setvar {CALLER} pushwake_status ANSWERED"),
        format!("api uuid_answer {CALLER}"),
        format!("api uuid_bridge {CALLER} {leg}"),
    ] {
        switch.sent(&command).await;
    }
    let sent = switch.server.commands();
    let at = |c: &str| sent.iter().position(|s| s.starts_with(c)).unwrap();
    assert!(
        at("api uuid_answer") < at("api uuid_bridge"),
        "answered before bridged: {sent:?}"
    );
}
