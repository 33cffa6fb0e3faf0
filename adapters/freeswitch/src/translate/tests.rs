use std::time::Duration;

use super::*;

fn event(headers: &[(&str, &str)]) -> Event {
    Event {
        headers: headers.iter().copied().collect(),
        body: None,
    }
}

const CALLER: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";
const LEG: &str = "5d7d1c1e-0000-4000-8000-000000000001";

#[test]
fn the_hand_over_names_the_caller_its_extension_and_caller_id() {
    // As the connect reply of the captured outbound socket carries them (decoded).
    let channel: Headers = [
        ("Event-Name", "CHANNEL_DATA"),
        ("Unique-ID", CALLER),
        ("Caller-Caller-ID-Name", "Extension 200"),
        ("Caller-Caller-ID-Number", "200"),
        ("variable_pushwake_extension", "103"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        caller_arrived(&channel).unwrap(),
        PbxEvent::CallerArrived {
            channel: CALLER.into(),
            extension: "103".into(),
            caller: Party {
                number: "200".into(),
                name: "Extension 200".into()
            },
        }
    );
    let nameless: Headers = [("Event-Name", "CHANNEL_DATA")].into_iter().collect();
    assert!(caller_arrived(&nameless).unwrap_err().contains("Unique-ID"));
}

#[test]
fn channel_events_become_the_engine_s_for_its_legs_only() {
    let none = |_: &str| false;
    let answer = event(&[
        ("Event-Name", "CHANNEL_ANSWER"),
        ("Unique-ID", LEG),
        ("variable_pushwake_call", "call-1"),
    ]);
    assert_eq!(
        translate(&answer, none),
        Some(PbxEvent::LegAnswered { leg: LEG.into() })
    );
    // Someone else's channel answering is not the engine's business...
    let other = event(&[("Event-Name", "CHANNEL_ANSWER"), ("Unique-ID", CALLER)]);
    assert_eq!(translate(&other, none), None);
    // ...unless the adapter knows it as a leg.
    assert_eq!(
        translate(&other, |id| id == CALLER),
        Some(PbxEvent::LegAnswered { leg: CALLER.into() })
    );
    let progress = event(&[
        ("Event-Name", "CHANNEL_PROGRESS"),
        ("Unique-ID", LEG),
        ("variable_pushwake_call", "call-1"),
    ]);
    assert_eq!(
        translate(&progress, none),
        Some(PbxEvent::LegRinging { leg: LEG.into() })
    );
    // Every hang-up counts: the caller's too. Hangup-Cause is there twice; the first.
    let gone = event(&[
        ("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
        ("Hangup-Cause", "ORIGINATOR_CANCEL"),
        ("Unique-ID", CALLER),
        ("Hangup-Cause", "ORIGINATOR_CANCEL"),
    ]);
    assert_eq!(
        translate(&gone, none),
        Some(PbxEvent::ChannelGone {
            channel: CALLER.into(),
            cause: "ORIGINATOR_CANCEL".into(),
            answered_elsewhere: false,
        })
    );
    assert_eq!(
        translate(&event(&[("Event-Name", "HEARTBEAT")]), none),
        None
    );
}

#[test]
fn registrations_become_contacts_with_their_push_parameters() {
    let contact = "\"\" <sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip>";
    let uri = "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";
    let none = |_: &str| false;
    let register = event(&[
        ("Event-Subclass", "sofia::register"),
        ("Event-Name", "CUSTOM"),
        ("from-user", "101"),
        ("contact", contact),
    ]);
    assert_eq!(
        translate(&register, none),
        Some(PbxEvent::ContactAdded {
            extension: "101".into(),
            uri: uri.into()
        })
    );
    let unregister = event(&[
        ("Event-Subclass", "sofia::unregister"),
        ("Event-Name", "CUSTOM"),
        ("from-user", "101"),
        ("contact", contact),
    ]);
    assert_eq!(
        translate(&unregister, none),
        Some(PbxEvent::ContactRemoved {
            extension: "101".into(),
            uri: uri.into()
        })
    );
    let expire = event(&[
        ("Event-Subclass", "sofia::expire"),
        ("Event-Name", "CUSTOM"),
        ("user", "102"),
        ("contact", contact),
    ]);
    assert!(matches!(
        translate(&expire, none),
        Some(PbxEvent::ContactRemoved { extension, .. }) if extension == "102"
    ));
    // A contact that would add destinations or variables to an originate is ignored.
    for crafted in [
        "<sip:101@h,sofia/internal/sip:666@evil>",
        "<sip:101@h;x={ignore_early_media=true}>",
        "<sip:101@h |user/999>",
        "<tel:+15551234567>",
    ] {
        let bad = event(&[
            ("Event-Subclass", "sofia::register"),
            ("Event-Name", "CUSTOM"),
            ("from-user", "101"),
            ("contact", crafted),
        ]);
        assert_eq!(translate(&bad, none), None, "{crafted}");
    }
}

#[test]
fn sofia_contact_answers_list_contacts_with_their_profiles() {
    assert_eq!(contacts("error/user_not_registered").unwrap(), vec![]);
    let one = contacts("sofia/internal/sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip").unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0].0.uri,
        "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip"
    );
    assert_eq!(one[0].1, "internal");
    let two = contacts("sofia/internal/sip:101@10.0.0.1:5060,sofia/external/sip:101@10.0.0.2:5070")
        .unwrap();
    assert_eq!(
        two.iter()
            .map(|(c, p)| (c.uri.as_str(), p.as_str()))
            .collect::<Vec<_>>(),
        [
            ("sip:101@10.0.0.1:5060", "internal"),
            ("sip:101@10.0.0.2:5070", "external")
        ]
    );
    assert!(matches!(
        contacts("-ERR no reply\n"),
        Err(PbxError::Failed(_))
    ));
}

#[test]
fn an_originate_carries_the_call_and_nothing_a_caller_can_smuggle() {
    let request = DialRequest {
        call: "3a45e20c-31c2-49fb-afe2-7a37178af4f7".into(),
        leg: LEG.into(),
        caller_channel: CALLER.into(),
        extension: "101".into(),
        target: DialTarget::Contact("sip:101@127.0.0.1:5091;transport=UDP".into()),
        caller: Party {
            number: "200".into(),
            name: "Alice O'Hara, {ignore_early_media=true}".into(),
        },
        timeout: Duration::from_secs(30),
    };
    let command = originate(&request, "internal", "pbx.example.com");
    assert_eq!(
        command,
        "originate {origination_uuid=5d7d1c1e-0000-4000-8000-000000000001,\
         pushwake_call=3a45e20c-31c2-49fb-afe2-7a37178af4f7,\
         pushwake_caller=e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd,\
         sip_h_X-Pushwake-Call-Id=3a45e20c-31c2-49fb-afe2-7a37178af4f7,\
         presence_id=101@pbx.example.com,\
         origination_caller_id_number=200,\
         origination_caller_id_name='Alice OHara ignore_early_mediatrue',\
         originate_timeout=30}sofia/internal/sip:101@127.0.0.1:5091;transport=UDP &park()"
    );
}

#[test]
fn a_fallback_is_originated_as_its_dial_string_without_the_call_id_header() {
    let request = DialRequest {
        call: "3a45e20c-31c2-49fb-afe2-7a37178af4f7".into(),
        leg: LEG.into(),
        caller_channel: CALLER.into(),
        extension: "101".into(),
        target: DialTarget::Fallback("sofia/gateway/trunk/+15551234567".into()),
        caller: Party {
            number: "200".into(),
            name: String::new(),
        },
        timeout: Duration::from_secs(20),
    };
    assert!(dialable_target(&request.target));
    assert_eq!(
        originate(&request, "internal", "pbx.example.com"),
        "originate {origination_uuid=5d7d1c1e-0000-4000-8000-000000000001,\
         pushwake_call=3a45e20c-31c2-49fb-afe2-7a37178af4f7,\
         pushwake_caller=e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd,\
         origination_caller_id_number=200,\
         originate_timeout=20}sofia/gateway/trunk/+15551234567 &park()"
    );
    // One destination only: nothing that adds a second one or a variable block.
    for bad in [
        "sofia/gateway/trunk/+1555,user/102",
        "sofia/gateway/trunk/+1555|user/102",
        "{origination_uuid=x}sofia/gateway/trunk/+1555",
        "sofia/gateway/trunk/+1555 &bridge(user/102)",
        "",
    ] {
        assert!(!dialable_target(&DialTarget::Fallback(bad.into())), "{bad}");
    }
}

#[test]
fn hangups_connects_and_api_answers() {
    assert_eq!(
        hangup(LEG, HangupReason::AnsweredElsewhere),
        format!("uuid_kill {LEG} LOSE_RACE")
    );
    assert_eq!(
        hangup(LEG, HangupReason::Normal),
        format!("uuid_kill {LEG} NORMAL_CLEARING")
    );
    assert_eq!(
        connect(CALLER, LEG, WakeStatus::Answered),
        [
            format!("uuid_setvar {CALLER} pushwake_status ANSWERED"),
            format!("uuid_answer {CALLER}"),
            format!("uuid_bridge {CALLER} {LEG}"),
        ]
    );
    assert_eq!(
        connect(CALLER, LEG, WakeStatus::AnsweredFallback)[0],
        format!("uuid_setvar {CALLER} pushwake_status ANSWERED_FALLBACK")
    );
    // The answers as the captures have them.
    assert_eq!(api_result("uuid_answer", "+OK\n"), Ok(()));
    assert_eq!(api_result("uuid_bridge", &format!("+OK {LEG}\n")), Ok(()));
    assert!(matches!(
        api_result("uuid_kill", "-ERR No such channel!\n"),
        Err(PbxError::Gone(_))
    ));
    assert!(matches!(
        api_result("uuid_bridge", "-ERR Invalid uuid\n"),
        Err(PbxError::Gone(_))
    ));
    assert!(matches!(
        api_result("originate", "-ERR USER_NOT_REGISTERED\n"),
        Err(PbxError::Failed(m)) if m.contains("USER_NOT_REGISTERED")
    ));
    assert!(valid_uuid(CALLER) && !valid_uuid("x; uuid_kill all") && !valid_uuid(""));
}

#[test]
fn a_message_event_is_the_message_a_phone_sent_and_nothing_else_is() {
    // The headers sofia_presence_handle_sip_i_message gives (decoded).
    let mut message = event(&[
        ("Event-Name", "MESSAGE"),
        ("proto", "sip"),
        ("from", "200@127.0.0.1"),
        ("to_user", "101"),
        ("type", "text/plain"),
        ("from_full", "\"Alice\" <sip:200@127.0.0.1>;tag=x1"),
    ]);
    message.body = Some("hello".into());
    let Some(PbxEvent::MessageReceived(incoming)) = translate(&message, |_| false) else {
        panic!("not a message")
    };
    assert_eq!(incoming.extension, "101");
    assert_eq!(incoming.from, "\"Alice\" <sip:200@127.0.0.1>;tag=x1");
    assert_eq!(incoming.content_type, "text/plain");
    assert_eq!(incoming.body, "hello");
    assert_eq!(incoming.dedup, None, "FreeSWITCH gives no Call-ID");
    // Within a call (a Unique-ID), from the chat API (proto global), or to nobody: no.
    for (name, value) in [("Unique-ID", CALLER), ("proto", "global"), ("to_user", " ")] {
        let mut other = message.clone();
        other.headers = message
            .headers
            .iter()
            .filter(|(n, _)| *n != name)
            .chain([(name, value)])
            .collect();
        assert_eq!(message_received(&other), None, "{name}: {value}");
    }
    // No from_full: the from header, as a URI.
    let bare = event(&[
        ("Event-Name", "MESSAGE"),
        ("proto", "sip"),
        ("from", "200@127.0.0.1"),
        ("to_user", "101"),
    ]);
    let incoming = message_received(&bare).unwrap();
    assert_eq!(incoming.from, "<sip:200@127.0.0.1>");
    assert_eq!(incoming.content_type, "text/plain");
    assert_eq!(incoming.body, "");
}

#[test]
fn a_delivery_report_says_what_the_phone_answered() {
    let report = |status: &str, code: &str| {
        event(&[
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "SMS::DELIVERY_REPORT"),
            (MESSAGE_ID_VAR, "m-1"),
            ("Status", status),
            ("Delivery-Result-Code", code),
        ])
    };
    assert_eq!(
        delivery_report(&report("Success", "200")),
        Some(("m-1".to_owned(), Ok(())))
    );
    assert!(matches!(
        delivery_report(&report("Failure", "0")),
        Some((_, Err(PbxError::Gone(_))))
    ));
    let Some((_, Err(PbxError::Failed(why)))) = delivery_report(&report("Failure", "500")) else {
        panic!("a refusal")
    };
    assert!(why.contains("500"), "{why}");
    let mut foreign = report("Success", "200");
    foreign.headers = foreign
        .headers
        .iter()
        .filter(|(n, _)| *n != MESSAGE_ID_VAR)
        .collect();
    assert_eq!(delivery_report(&foreign), None, "not one of pushwake's");
}

#[test]
fn the_sender_s_address_is_user_at_host() {
    for (from, address) in [
        (
            "\"Alice\" <sip:200@pbx.example.com>;tag=1",
            Some("200@pbx.example.com"),
        ),
        ("<sips:200@pbx;transport=tls>", Some("200@pbx")),
        ("sip:200@pbx;tag=1", Some("200@pbx")),
        ("200@pbx", Some("200@pbx")),
        ("\"Nobody\" <sip:pbx>", None),
        ("", None),
    ] {
        assert_eq!(sender_address(from).as_deref(), address, "{from:?}");
    }
}
