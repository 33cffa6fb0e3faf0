use super::*;
use crate::messages::DedupKey;

fn incoming(extension: &str, body: &str, cseq: u32) -> IncomingMessage {
    IncomingMessage {
        extension: extension.into(),
        from: "\"Alice Example\" <sip:3900@pbx.example.com>".into(),
        content_type: "text/plain;charset=UTF-8".into(),
        body: body.into(),
        dedup: Some(DedupKey {
            call_id: "c1@pbx".into(),
            cseq,
        }),
        declared_len: Some(body.len()),
    }
}

fn courier(confirmation: Confirmation) -> Courier {
    Courier::new(CourierSettings {
        confirmation,
        ..CourierSettings::default()
    })
}

fn id(s: &str) -> MessageId {
    MessageId(s.into())
}

/// The commands queued, in order, as short words: `store m1`, `send m1`, `push m1`,
/// `forget m1 delivered`.
fn drain(courier: &mut Courier) -> Vec<String> {
    std::iter::from_fn(|| courier.poll_command())
        .map(|command| match command {
            CourierCommand::Store(m) => format!("store {}", m.id),
            CourierCommand::Send(m) => format!("send {}", m.id),
            CourierCommand::Push(p) => format!("push {}", p.message_id),
            CourierCommand::Forget { message, why } => {
                format!("forget {} {}", message.id, why.as_str())
            }
        })
        .collect()
}

/// Messages m1 ("one") and m2 ("two") for 101, in that order.
fn receive_two(courier: &mut Courier) {
    courier
        .receive(id("m1"), 1, incoming("101", "one", 1))
        .unwrap();
    courier
        .receive(id("m2"), 2, incoming("101", "two", 2))
        .unwrap();
}

#[test]
fn a_message_for_a_sleeping_phone_is_stored_pushed_and_sent_at_its_registration() {
    let mut courier = courier(Confirmation::PbxAccepted);
    let now = Instant::now();
    courier
        .receive(id("m1"), 1_000, incoming("101", "Hi", 1))
        .unwrap();
    assert_eq!(
        drain(&mut courier),
        ["store m1", "send m1"],
        "tried at once"
    );
    courier.sent(now, &id("m1"), Delivery::NoContact);
    let pushes: Vec<CourierCommand> = std::iter::from_fn(|| courier.poll_command()).collect();
    let [CourierCommand::Push(push)] = pushes.as_slice() else {
        panic!("one push: {pushes:?}")
    };
    assert_eq!(push.extension, "101");
    assert_eq!(push.sender.number, "3900");
    assert_eq!(push.sender.name, "Alice Example");
    assert_eq!(push.preview.as_deref(), Some("Hi"));
    assert_eq!(push.received_at, 1_000);
    assert_eq!(push.expires_at, 1_000 + 7 * 24 * 3600);
    courier.registered("101");
    assert_eq!(drain(&mut courier), ["send m1"]);
    courier.sent(now, &id("m1"), Delivery::Accepted);
    assert_eq!(drain(&mut courier), ["forget m1 delivered"]);
    assert!(courier.is_empty());
    courier.registered("101");
    assert!(drain(&mut courier).is_empty(), "delivered once");
}

#[test]
fn a_message_for_a_reachable_phone_is_delivered_at_once_without_a_push() {
    let mut courier = courier(Confirmation::PbxAccepted);
    courier
        .receive(id("m1"), 1, incoming("101", "Hi", 1))
        .unwrap();
    assert_eq!(drain(&mut courier), ["store m1", "send m1"]);
    courier.sent(Instant::now(), &id("m1"), Delivery::Accepted);
    assert_eq!(drain(&mut courier), ["forget m1 delivered"]);
}

#[test]
fn messages_go_out_one_at_a_time_in_order_and_each_is_pushed_once() {
    let mut courier = courier(Confirmation::PbxAccepted);
    let now = Instant::now();
    receive_two(&mut courier);
    assert_eq!(
        drain(&mut courier),
        ["store m1", "send m1", "store m2"],
        "m2 waits for m1's answer"
    );
    courier.sent(now, &id("m1"), Delivery::NoContact);
    assert_eq!(drain(&mut courier), ["push m1", "push m2"]);
    // A third message while the phone still sleeps: the oldest is tried again, and
    // only the new one is pushed.
    courier
        .receive(id("m3"), 3, incoming("101", "three", 3))
        .unwrap();
    assert_eq!(drain(&mut courier), ["store m3", "send m1"]);
    courier.sent(now, &id("m1"), Delivery::Failed("ARI down".into()));
    assert_eq!(drain(&mut courier), ["push m3"]);
    courier.registered("101");
    for (this, next) in [("m1", Some("m2")), ("m2", Some("m3")), ("m3", None)] {
        assert_eq!(drain(&mut courier), [format!("send {this}")]);
        courier.sent(now, &id(this), Delivery::Accepted);
        let mut expected = vec![format!("forget {this} delivered")];
        expected.extend(next.map(|n| format!("send {n}")));
        assert_eq!(drain(&mut courier), expected);
        if next.is_some() {
            // Put the next send back for the loop's first assertion.
            courier
                .commands
                .push_front(CourierCommand::Send(outgoing(courier.pending("101")[0])));
        }
    }
}

#[test]
fn with_app_confirmation_a_message_stays_until_confirmed_and_is_pushed_if_not() {
    let mut courier = courier(Confirmation::AppConfirms);
    let now = Instant::now();
    receive_two(&mut courier);
    assert_eq!(drain(&mut courier), ["store m1", "send m1", "store m2"]);
    courier.sent(now, &id("m1"), Delivery::Accepted);
    assert!(
        drain(&mut courier).is_empty(),
        "kept until the app confirms"
    );
    assert_eq!(courier.next_timeout(), Some(now + Duration::from_secs(10)));
    assert!(courier.confirmed("101", &id("m1")));
    assert_eq!(drain(&mut courier), ["forget m1 delivered", "send m2"]);
    assert!(!courier.confirmed("101", &id("m1")), "confirmed once");
    assert!(
        !courier.confirmed("102", &id("m2")),
        "another extension cannot confirm it"
    );
    // The phone refused m2 (the app never confirms): pushed, and sent again at the
    // next registration.
    courier.sent(now, &id("m2"), Delivery::Accepted);
    courier.handle_timeout(now + Duration::from_secs(9));
    assert!(drain(&mut courier).is_empty());
    courier.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(drain(&mut courier), ["push m2"]);
    assert_eq!(courier.next_timeout(), None);
    courier.registered("101");
    assert_eq!(drain(&mut courier), ["send m2"]);
    // A confirmation that comes late still counts: the phone has it.
    courier.sent(now, &id("m2"), Delivery::Accepted);
    courier.handle_timeout(now + Duration::from_secs(60));
    assert!(courier.confirmed("101", &id("m2")));
    assert_eq!(drain(&mut courier), ["forget m2 delivered"]);
    assert!(courier.is_empty());
}

#[test]
fn restored_messages_are_sent_on_reconnecting_and_not_pushed_again() {
    let mut first = courier(Confirmation::PbxAccepted);
    first
        .receive(id("m1"), 1, incoming("101", "one", 1))
        .unwrap();
    first
        .receive(id("m2"), 2, incoming("102", "two", 2))
        .unwrap();
    let stored: Vec<Message> = std::iter::from_fn(|| first.poll_command())
        .filter_map(|c| match c {
            CourierCommand::Store(m) => Some(m),
            _ => None,
        })
        .collect();
    let mut after_restart = courier(Confirmation::PbxAccepted);
    after_restart.restore(stored);
    assert!(drain(&mut after_restart).is_empty());
    after_restart.reconnected();
    assert_eq!(drain(&mut after_restart), ["send m1", "send m2"]);
    after_restart.sent(Instant::now(), &id("m1"), Delivery::NoContact);
    assert!(
        drain(&mut after_restart).is_empty(),
        "pushed before the restart"
    );
    // A retransmission of a restored message is still a duplicate.
    assert_eq!(
        after_restart.receive(id("m9"), 3, incoming("101", "one", 1)),
        Err(Refused::Duplicate(id("m1")))
    );
}

#[test]
fn bad_messages_are_refused_and_nothing_is_queued() {
    let mut courier = courier(Confirmation::PbxAccepted);
    let mut emptied = incoming("101", "", 1);
    emptied.declared_len = Some(1_500);
    assert_eq!(
        courier.receive(id("m1"), 1, emptied),
        Err(Refused::DroppedByPbx { declared: 1_500 })
    );
    let mut binary = incoming("101", "x", 2);
    binary.content_type = "application/octet-stream".into();
    assert!(matches!(
        courier.receive(id("m2"), 1, binary),
        Err(Refused::NotText { .. })
    ));
    let big = "x".repeat(4_097);
    assert!(matches!(
        courier.receive(id("m3"), 1, incoming("101", &big, 3)),
        Err(Refused::TooLarge {
            len: 4_097,
            limit: 4_096
        })
    ));
    let mut empty = incoming("101", "", 4);
    empty.declared_len = Some(0);
    assert!(
        courier.receive(id("m4"), 1, empty).is_ok(),
        "an empty message is one"
    );
    assert_eq!(drain(&mut courier), ["store m4", "send m4"]);
}

#[test]
fn the_oldest_is_dropped_for_a_full_extension_and_old_ones_expire() {
    let mut courier = Courier::new(CourierSettings {
        limits: MessageLimits {
            per_extension: 2,
            max_age: Duration::from_secs(100),
            max_body: 100,
        },
        ..CourierSettings::default()
    });
    let now = Instant::now();
    for (n, name) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        courier
            .receive(id(name), 10 + n as u64, incoming("101", name, n as u32))
            .unwrap();
        let commands = drain(&mut courier);
        match n {
            2 => assert!(
                commands.contains(&"forget m1 dropped".into()),
                "{commands:?}"
            ),
            3 => assert!(
                commands.contains(&"forget m2 dropped".into()),
                "{commands:?}"
            ),
            _ => {}
        }
        // The phone sleeps: every send finds no contact.
        for sent in commands.iter().filter_map(|c| c.strip_prefix("send ")) {
            courier.sent(now, &id(sent), Delivery::NoContact);
        }
        drain(&mut courier);
    }
    assert_eq!(courier.len(), 2);
    courier.expire(10 + 2 + 100);
    assert!(drain(&mut courier).is_empty(), "not older than 100 s yet");
    courier.expire(10 + 3 + 101);
    assert_eq!(
        drain(&mut courier),
        ["forget m3 expired", "forget m4 expired"]
    );
    assert!(courier.is_empty());
}

#[test]
fn pushes_carry_a_preview_only_when_the_operator_lets_them() {
    let mut quiet = Courier::new(CourierSettings {
        preview_chars: 0,
        ..CourierSettings::default()
    });
    quiet
        .receive(id("m1"), 1, incoming("101", "secret", 1))
        .unwrap();
    quiet.sent(Instant::now(), &id("m1"), Delivery::NoContact);
    let push = std::iter::from_fn(|| quiet.poll_command())
        .find_map(|c| match c {
            CourierCommand::Push(p) => Some(p),
            _ => None,
        })
        .expect("a push");
    assert_eq!(push.preview, None);
    assert!(!format!("{push:?}").contains("secret"));
    assert_eq!(preview("a  b\nc", 10), "a b c");
    assert_eq!(preview("héllo wörld", 5), "héllo…");
}

#[test]
fn the_sender_is_read_from_the_usual_from_forms() {
    for (from, number, name) in [
        ("\"Alice Example\" <sip:3900@pbx>", "3900", "Alice Example"),
        ("Bob <sip:200@pbx;transport=tcp>;tag=1", "200", "Bob"),
        ("<sip:200@pbx>", "200", ""),
        ("sip:+15551234567@pbx;tag=x", "+15551234567", ""),
        ("pjsip:200@pbx", "200", ""),
        ("sip:pbx.example.com", "", ""),
        ("", "", ""),
        ("\"Unclosed <sip:1@x", "1", "Unclosed"),
    ] {
        let party = sender_of(from);
        assert_eq!(
            (party.number.as_str(), party.name.as_str()),
            (number, name),
            "{from:?}"
        );
    }
}
