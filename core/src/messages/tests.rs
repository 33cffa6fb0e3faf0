use super::*;

fn limits(per_extension: usize) -> MessageLimits {
    MessageLimits {
        per_extension,
        max_age: Duration::from_secs(3600),
        max_body: 16,
    }
}

fn message(id: &str, extension: &str, at: u64, cseq: u32) -> Message {
    Message {
        id: MessageId(id.into()),
        extension: extension.into(),
        from: "\"Alice\" <sip:200@pbx.example.com>".into(),
        content_type: "text/plain".into(),
        body: format!("hello {id}"),
        received_at: at,
        dedup: Some(DedupKey {
            call_id: format!("call-{id}"),
            cseq,
        }),
    }
}

fn ids(messages: &[&Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.0.clone()).collect()
}

fn id(s: &str) -> MessageId {
    MessageId(s.into())
}

#[test]
fn messages_are_handed_out_in_order_one_at_a_time_and_removed_once_acknowledged() {
    let mut outbox = Outbox::new(limits(10));
    for (n, name) in ["m1", "m2", "m3"].iter().enumerate() {
        outbox
            .receive(message(name, "101", 100 + n as u64, 1))
            .unwrap();
    }
    outbox.receive(message("other", "102", 100, 1)).unwrap();
    let first = outbox.registered("101").expect("the oldest first");
    assert_eq!(first.id, id("m1"));
    // A second registration while m1 is out hands out nothing more: one at a time.
    assert_eq!(outbox.registered("101"), None);
    let (done, next) = outbox.delivered(&id("m1"));
    assert_eq!(done.map(|m| m.id), Some(id("m1")));
    assert_eq!(next.as_ref().map(|m| &m.id), Some(&id("m2")));
    // The same 2xx again (a retransmitted answer) changes nothing.
    assert_eq!(outbox.delivered(&id("m1")), (None, None));
    let (_, next) = outbox.delivered(&id("m2"));
    assert_eq!(next.map(|m| m.id), Some(id("m3")));
    let (_, next) = outbox.delivered(&id("m3"));
    assert_eq!(next, None);
    assert!(outbox.pending("101").is_empty());
    assert_eq!(
        ids(&outbox.pending("102")),
        ["other"],
        "the other extension's is kept"
    );
    assert_eq!(outbox.len(), 1);
}

#[test]
fn a_refused_or_unanswered_message_is_kept_and_the_round_stops_until_the_next_registration() {
    let mut outbox = Outbox::new(limits(10));
    outbox.receive(message("m1", "101", 100, 1)).unwrap();
    outbox.receive(message("m2", "101", 101, 1)).unwrap();
    let first = outbox.registered("101").unwrap();
    outbox.not_delivered(&first.id);
    assert_eq!(ids(&outbox.pending("101")), ["m1", "m2"], "nothing lost");
    // The next registration starts again with the same message, in order.
    assert_eq!(outbox.registered("101").map(|m| m.id), Some(id("m1")));
    let (_, next) = outbox.delivered(&id("m1"));
    assert_eq!(next.map(|m| m.id), Some(id("m2")));
}

#[test]
fn a_retransmission_is_a_duplicate_and_its_key_is_free_again_once_delivered() {
    let mut outbox = Outbox::new(limits(10));
    outbox.receive(message("m1", "101", 100, 7)).unwrap();
    let mut again = message("m1-again", "101", 101, 7);
    again.dedup = message("m1", "101", 100, 7).dedup;
    assert_eq!(
        outbox.receive(again.clone()),
        Err(Refused::Duplicate(id("m1")))
    );
    assert_eq!(outbox.len(), 1);
    // Another CSeq of the same Call-ID is another message.
    let mut next = again.clone();
    next.id = id("m2");
    next.dedup.as_mut().unwrap().cseq = 8;
    outbox.receive(next).unwrap();
    outbox.registered("101");
    outbox.delivered(&id("m1"));
    assert!(
        outbox.receive(again).is_ok(),
        "the key left with its message"
    );
}

#[test]
fn over_the_bound_the_oldest_waiting_message_is_dropped_never_the_new_one_nor_one_in_flight() {
    let mut outbox = Outbox::new(limits(2));
    outbox.receive(message("m1", "101", 100, 1)).unwrap();
    outbox.receive(message("m2", "101", 101, 1)).unwrap();
    let received = outbox.receive(message("m3", "101", 102, 1)).unwrap();
    assert_eq!(ids(&received.dropped.iter().collect::<Vec<_>>()), ["m1"]);
    assert_eq!(ids(&outbox.pending("101")), ["m2", "m3"]);
    // m2 out for delivery: the next one over the bound drops m3, not m2.
    assert_eq!(outbox.registered("101").map(|m| m.id), Some(id("m2")));
    let received = outbox.receive(message("m4", "101", 103, 1)).unwrap();
    assert_eq!(ids(&received.dropped.iter().collect::<Vec<_>>()), ["m3"]);
    assert_eq!(ids(&outbox.pending("101")), ["m2", "m4"]);
    // With a bound of one and that one in flight, the new one is kept too (one over).
    let mut one = Outbox::new(limits(1));
    one.receive(message("a", "101", 100, 1)).unwrap();
    one.registered("101");
    let received = one.receive(message("b", "101", 101, 1)).unwrap();
    assert!(received.dropped.is_empty());
    assert_eq!(ids(&one.pending("101")), ["a", "b"]);
    assert_eq!(one.len(), 2);
}

#[test]
fn large_and_non_text_bodies_are_refused_with_what_to_tell_the_sender() {
    let mut outbox = Outbox::new(limits(10));
    let mut large = message("m1", "101", 100, 1);
    large.body = "x".repeat(17);
    assert_eq!(
        outbox.receive(large),
        Err(Refused::TooLarge { len: 17, limit: 16 })
    );
    for (content_type, text) in [
        ("text/plain", true),
        ("Text/Plain; charset=UTF-8", true),
        ("text/html", true),
        ("application/im-iscomposing+xml", false),
        ("image/png", false),
        ("text", false),
        ("", false),
    ] {
        let mut m = message(content_type, "101", 100, 2);
        m.content_type = content_type.into();
        m.body = "hi".into();
        let result = outbox.receive(m);
        assert_eq!(result.is_ok(), text, "{content_type:?}: {result:?}");
        if !text {
            assert!(matches!(result, Err(Refused::NotText { .. })));
        }
    }
}

#[test]
fn old_messages_expire_except_one_in_flight() {
    let mut outbox = Outbox::new(limits(10));
    outbox.receive(message("m1", "101", 1_000, 1)).unwrap();
    outbox.receive(message("m2", "102", 1_000, 1)).unwrap();
    outbox.receive(message("m3", "102", 4_000, 1)).unwrap();
    outbox.registered("101");
    let expired = outbox.expire(1_000 + 3600 + 1);
    assert_eq!(ids(&expired.iter().collect::<Vec<_>>()), ["m2"]);
    assert_eq!(
        ids(&outbox.pending("101")),
        ["m1"],
        "in flight: its answer decides"
    );
    assert_eq!(ids(&outbox.pending("102")), ["m3"]);
    assert!(
        outbox.expire(1_000 + 3600).is_empty(),
        "not older than the limit"
    );
}

#[test]
fn restored_messages_come_back_in_arrival_order_with_their_keys() {
    let mut outbox = Outbox::new(limits(10));
    outbox.restore([
        message("m3", "101", 300, 1),
        message("m1", "101", 100, 1),
        message("m2", "101", 200, 1),
        message("m1", "101", 100, 1),
    ]);
    assert_eq!(ids(&outbox.pending("101")), ["m1", "m2", "m3"], "once each");
    assert_eq!(
        outbox.receive(message("m2", "101", 500, 1)),
        Err(Refused::Duplicate(id("m2")))
    );
    assert_eq!(outbox.registered("101").map(|m| m.id), Some(id("m1")));
}

#[test]
fn a_message_debug_shows_no_body() {
    let m = message("m1", "101", 100, 1);
    let shown = format!("{m:?}");
    assert!(!shown.contains("hello"), "{shown}");
    assert!(shown.contains("body_len: 8"), "{shown}");
}
