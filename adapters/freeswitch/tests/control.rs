//! FreeSWITCH call control against the test Event Socket server (FreeSWITCH's captured
//! frames) and a test FreeSWITCH dialling out to pushwake's `socket` listener: a call
//! handed over, rung, its contacts listed, a leg originated and answered, the two
//! bridged, hang-ups; a second call given back with TIMEOUT; a hand-over whose socket
//! closes is a caller gone.

use std::net::SocketAddr;
use std::time::Duration;

use pushwake_core::pbx::{
    CallControl, DialRequest, DialTarget, HangupReason, Party, PbxCommand, PbxError, PbxEvent,
    PbxReply, WakeStatus,
};
use pushwake_freeswitch::{FreeSwitchConfig, FreeSwitchPbx};
use pushwake_testkit::esl::outbound::{Channel, OutboundCall};
use pushwake_testkit::esl::{channel_event, Answer, EslServer};
use pushwake_testkit::slot::Slot;
use tokio::sync::mpsc;

const WITHIN: Duration = Duration::from_secs(10);
const CALLER: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";
const SECOND: &str = "a1b2c3d4-0000-4000-8000-00000000abcd";
const LEG: &str = "5d7d1c1e-0000-4000-8000-000000000001";
const CALL: &str = "3a45e20c-31c2-49fb-afe2-7a37178af4f7";
const URI: &str = "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";

/// This file's TCP port for pushwake's `socket` listener (slot 34's number).
fn listen(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], Slot::new(34).port(n)))
}

fn config(server: &EslServer, listen: SocketAddr) -> FreeSwitchConfig {
    FreeSwitchConfig {
        address: server.address(),
        password: "ClueCon".into(),
        listen,
        domain: "127.0.0.1".into(),
        profile: "internal".into(),
    }
}

async fn next(events: &mut mpsc::Receiver<PbxEvent>) -> PbxEvent {
    tokio::time::timeout(WITHIN, events.recv())
        .await
        .expect("an event in time")
        .expect("the event stream is open")
}

/// The next event that `wanted` likes, skipping others.
async fn until(
    events: &mut mpsc::Receiver<PbxEvent>,
    wanted: impl Fn(&PbxEvent) -> bool,
) -> PbxEvent {
    loop {
        let event = next(events).await;
        if wanted(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_call_is_rung_dialled_bridged_and_another_given_back() {
    let server = EslServer::start().await;
    server.answer(
        "show channels",
        Answer::body("uuid,direction\n\n0 total.\n"),
    );
    let addr = listen(0);
    let (pbx, mut events) = FreeSwitchPbx::start(&config(&server, addr)).await.unwrap();
    let connected = next(&mut events).await;
    assert!(matches!(connected, PbxEvent::Connected(_)), "{connected:?}");

    // The dialplan's socket connects: a caller arrives, with what the channel says.
    let call = OutboundCall::connect_to(addr, Channel::new(CALLER, "101"))
        .await
        .unwrap();
    let arrived = next(&mut events).await;
    assert!(
        matches!(&arrived, PbxEvent::CallerArrived { channel, extension, .. }
            if channel.as_str() == CALLER && extension == "101"),
        "{arrived:?}"
    );

    // Ringback through its socket.
    pbx.execute(PbxCommand::Ring {
        caller: CALLER.into(),
    })
    .await
    .unwrap();
    assert_eq!(call.executed(), [("ring_ready".to_owned(), None)]);

    // Its contacts, from sofia_contact (the captured answer).
    let contacts = pbx
        .execute(PbxCommand::ListContacts {
            call: CALL.into(),
            caller: CALLER.into(),
            extension: "101".into(),
        })
        .await
        .unwrap();
    let PbxReply::Contacts(contacts) = contacts else {
        panic!("{contacts:?}")
    };
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].uri, URI);

    // A leg: bgapi originate with the call's marks; it answers (bgapi's job ends only
    // then), its CHANNEL_ANSWER is the engine's.
    server.hold_jobs(None);
    pbx.execute(PbxCommand::Dial(DialRequest {
        call: CALL.into(),
        leg: LEG.into(),
        caller_channel: CALLER.into(),
        extension: "101".into(),
        target: DialTarget::Contact(URI.into()),
        caller: Party {
            number: "200".into(),
            name: "Alice".into(),
        },
        timeout: Duration::from_secs(30),
    }))
    .await
    .unwrap();
    let originate = server
        .wait_command(WITHIN, |r| r.command.starts_with("bgapi originate"))
        .await
        .expect("the originate");
    assert!(
        originate
            .command
            .contains(&format!("origination_uuid={LEG}"))
            && originate.command.contains(&format!("pushwake_call={CALL}"))
            && originate
                .command
                .contains(&format!("sip_h_X-Pushwake-Call-Id={CALL}"))
            && originate
                .command
                .ends_with(&format!("}}sofia/internal/{URI} &park()")),
        "{}",
        originate.command
    );
    server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[("Unique-ID", LEG), ("Call-Direction", "outbound")],
    ));
    assert_eq!(
        until(&mut events, |e| matches!(e, PbxEvent::LegAnswered { .. })).await,
        PbxEvent::LegAnswered { leg: LEG.into() }
    );

    // Connect: the status, the answer, the bridge, in that order.
    for command in [
        format!("uuid_setvar {CALLER} pushwake_status ANSWERED"),
        format!("uuid_answer {CALLER}"),
        format!("uuid_bridge {CALLER} {LEG}"),
    ] {
        server.answer(&command, Answer::body("+OK\n"));
    }
    pbx.execute(PbxCommand::Connect {
        call: CALL.into(),
        caller: CALLER.into(),
        leg: LEG.into(),
        status: WakeStatus::Answered,
    })
    .await
    .unwrap();
    let sent: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("api uuid_"))
        .collect();
    assert_eq!(
        sent,
        [
            format!("api uuid_setvar {CALLER} pushwake_status ANSWERED"),
            format!("api uuid_answer {CALLER}"),
            format!("api uuid_bridge {CALLER} {LEG}"),
        ]
    );

    // Hang-ups end both channels for the engine.
    for id in [LEG, CALLER] {
        server.push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", id)],
        ));
        let gone = until(&mut events, |e| matches!(e, PbxEvent::ChannelGone { .. })).await;
        assert_eq!(
            gone,
            PbxEvent::ChannelGone {
                channel: id.into(),
                cause: "NORMAL_CLEARING".into(),
                answered_elsewhere: false,
            }
        );
    }
    // A hang-up of a channel that is gone already: FreeSWITCH's answer is a Gone.
    assert!(matches!(
        pbx.execute(PbxCommand::Hangup {
            channel: LEG.into(),
            reason: HangupReason::AnsweredElsewhere
        })
        .await,
        Err(PbxError::Gone(_))
    ));
    assert!(server
        .commands()
        .contains(&format!("api uuid_kill {LEG} LOSE_RACE")));

    // A second caller, given back with TIMEOUT: set, then exit, on its own socket.
    let second = OutboundCall::connect_to(addr, Channel::new(SECOND, "102"))
        .await
        .unwrap();
    until(&mut events, |e| matches!(e, PbxEvent::CallerArrived { .. })).await;
    pbx.execute(PbxCommand::Return {
        caller: SECOND.into(),
        status: WakeStatus::Timeout,
    })
    .await
    .unwrap();
    assert_eq!(
        second.executed(),
        [("set".to_owned(), Some("pushwake_status=TIMEOUT".to_owned()))]
    );
    assert!(second.wait_closed(WITHIN).await, "exit closes the socket");
    assert!(
        second.commands().last().is_some_and(|c| c == "exit"),
        "{:?}",
        second.commands()
    );
    // Given back, it is not pushwake's any more.
    assert!(matches!(
        pbx.execute(PbxCommand::Ring {
            caller: SECOND.into()
        })
        .await,
        Err(PbxError::Gone(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_socket_closes_is_gone_and_an_unsafe_contact_is_never_dialled() {
    let server = EslServer::start().await;
    server.answer(
        "show channels",
        Answer::body("uuid,direction\n\n0 total.\n"),
    );
    let addr = listen(1);
    let (pbx, mut events) = FreeSwitchPbx::start(&config(&server, addr)).await.unwrap();
    assert!(matches!(next(&mut events).await, PbxEvent::Connected(_)));
    let call = OutboundCall::connect_to(addr, Channel::new(CALLER, "101"))
        .await
        .unwrap();
    until(&mut events, |e| matches!(e, PbxEvent::CallerArrived { .. })).await;
    call.hang_up();
    let gone = until(&mut events, |e| matches!(e, PbxEvent::ChannelGone { .. })).await;
    assert!(
        matches!(&gone, PbxEvent::ChannelGone { channel, .. } if channel.as_str() == CALLER),
        "{gone:?}"
    );
    // A contact nobody could dial safely is refused before anything is sent.
    let refused = pbx
        .execute(PbxCommand::Dial(DialRequest {
            call: CALL.into(),
            leg: LEG.into(),
            caller_channel: CALLER.into(),
            extension: "101".into(),
            target: DialTarget::Contact("sip:101@h,sofia/internal/sip:666@evil".into()),
            caller: Party::default(),
            timeout: Duration::from_secs(30),
        }))
        .await;
    assert!(matches!(refused, Err(PbxError::Failed(_))), "{refused:?}");
    assert!(!server.commands().iter().any(|c| c.contains("originate")));
}
