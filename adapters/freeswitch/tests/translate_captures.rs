//! The translation into the engine's vocabulary on what a real FreeSWITCH 1.11.1 sent
//! (`testkit/captures/freeswitch/`): the outbound socket's hand-over, a registration
//! with RFC 8599 parameters and its end, the originated leg's answer, the hang-ups, and
//! the `sofia_contact` answers.

use pushwake_core::pbx::{Party, PbxEvent};
use pushwake_freeswitch::frame::{Event, Frame, FrameReader};
use pushwake_freeswitch::translate::{caller_arrived, contacts, translate};
use pushwake_testkit::esl::capture::{self, Capture};

fn frames(capture: &Capture) -> Vec<Frame> {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    for block in capture.received() {
        reader.feed(&block.bytes);
        while let Some(frame) = reader
            .next_frame()
            .unwrap_or_else(|e| panic!("{}: {e}", capture.name))
        {
            frames.push(frame);
        }
    }
    frames
}

fn events(name: &str) -> Vec<Event> {
    frames(&capture::load(name))
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::Event(event) => Some(*event),
            _ => None,
        })
        .collect()
}

const URI: &str = "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";

#[test]
fn the_outbound_socket_s_connect_is_a_caller_arriving() {
    let connect = frames(&capture::load("outbound-socket.log"))
        .into_iter()
        .find_map(|frame| match frame {
            Frame::CommandReply(reply)
                if reply.headers.get("Event-Name") == Some("CHANNEL_DATA") =>
            {
                Some(reply)
            }
            _ => None,
        })
        .expect("the connect reply");
    assert_eq!(
        caller_arrived(&connect.headers).unwrap(),
        PbxEvent::CallerArrived {
            channel: "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd".into(),
            extension: "103".into(),
            caller: Party {
                number: "200".into(),
                name: "Extension 200".into(),
            },
        }
    );
}

#[test]
fn a_registration_and_its_end_are_contacts_added_and_removed() {
    let translated: Vec<PbxEvent> = events("events.log")
        .iter()
        .filter_map(|e| translate(e, |_| false))
        .collect();
    let added = PbxEvent::ContactAdded {
        extension: "101".into(),
        uri: URI.into(),
    };
    let removed = PbxEvent::ContactRemoved {
        extension: "101".into(),
        uri: URI.into(),
    };
    let at = |wanted: &PbxEvent| translated.iter().position(|e| e == wanted);
    let (added_at, removed_at) = (at(&added), at(&removed));
    assert!(
        added_at.is_some() && removed_at.is_some() && added_at < removed_at,
        "{translated:?}"
    );
    // The caller's cancel: its channel is gone, with FreeSWITCH's cause.
    assert!(translated.iter().any(|e| matches!(
        e,
        PbxEvent::ChannelGone { cause, .. } if cause == "ORIGINATOR_CANCEL"
    )));
    // An expiry (sofia::expire's other headers) too.
    let expired: Vec<PbxEvent> = events("register-expire.log")
        .iter()
        .filter_map(|e| translate(e, |_| false))
        .collect();
    assert!(
        expired
            .iter()
            .any(|e| matches!(e, PbxEvent::ContactRemoved { extension, .. } if extension == "102")),
        "{expired:?}"
    );
}

#[test]
fn the_originated_leg_s_answer_is_the_engine_s_once_it_is_known_as_a_leg() {
    // The captured originate carried no pushwake variables: the adapter knows its legs.
    let events = events("call-flow.log");
    let answers: Vec<&Event> = events
        .iter()
        .filter(|e| e.name() == "CHANNEL_ANSWER")
        .collect();
    let leg = answers
        .iter()
        .find(|e| e.header("Call-Direction") == Some("outbound"))
        .and_then(|e| e.unique_id())
        .expect("the originated leg's answer")
        .to_owned();
    let ours = |id: &str| id == leg;
    let translated: Vec<PbxEvent> = events.iter().filter_map(|e| translate(e, ours)).collect();
    assert!(translated.contains(&PbxEvent::LegAnswered {
        leg: leg.as_str().into()
    }));
    // The caller answering at the bridge is not a leg answering.
    assert_eq!(
        translated
            .iter()
            .filter(|e| matches!(e, PbxEvent::LegAnswered { .. }))
            .count(),
        1
    );
    let gone = translated
        .iter()
        .filter(|e| matches!(e, PbxEvent::ChannelGone { cause, .. } if cause == "NORMAL_CLEARING"))
        .count();
    assert_eq!(gone, 2, "both legs hung up: {translated:?}");
}

#[test]
fn sofia_contact_s_captured_answers() {
    let answers: Vec<String> = frames(&capture::load("api_after_register.log"))
        .into_iter()
        .chain(frames(&capture::load("api_after_unregister.log")))
        .filter_map(|frame| match frame {
            Frame::ApiResponse { body }
                if body.starts_with("sofia/") || body.starts_with("error/") =>
            {
                Some(body)
            }
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    let registered = contacts(&answers[0]).unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].0.uri, URI);
    assert_eq!(registered[0].1, "internal");
    assert!(contacts(&answers[1]).unwrap().is_empty());
}
