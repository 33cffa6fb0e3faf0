//! The frame parser on every frame a real FreeSWITCH 1.11.1 sent in the captures
//! (`testkit/captures/freeswitch/`): each block read whole, then each capture's bytes fed
//! one at a time, must give the same frames, none refused, no byte left over; and the
//! values the adapter will need come out decoded.

use pushwake_freeswitch::frame::{Event, Frame, FrameReader};
use pushwake_testkit::esl::capture::{self, Capture};

/// Every frame of one block of bytes, which must end with the last of them.
fn frames_of(bytes: &[u8], what: &str) -> Vec<Frame> {
    let mut reader = FrameReader::new();
    reader.feed(bytes);
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(error) => panic!("{what}: {error}"),
        }
    }
    assert_eq!(reader.buffered(), 0, "{what}: bytes left over");
    frames
}

/// Every frame of a capture, block by block.
fn frames(capture: &Capture) -> Vec<Frame> {
    capture
        .received()
        .flat_map(|block| frames_of(&block.bytes, &format!("{} {}", capture.name, block.time)))
        .collect()
}

fn events_of(capture: &Capture) -> Vec<Event> {
    frames(capture)
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::Event(event) => Some(*event),
            _ => None,
        })
        .collect()
}

fn event<'a>(events: &'a [Event], name: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.name() == name || e.subclass() == Some(name))
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn every_frame_of_every_capture_parses_whole_and_byte_by_byte() {
    let mut total = 0;
    for capture in capture::all() {
        let whole = frames(&capture);
        if capture.name == "outbound-socket.log" {
            // Its logger logged reads, not frames: five reads held eleven frames.
            let per_block: Vec<usize> = capture
                .received()
                .map(|b| frames_of(&b.bytes, capture.name).len())
                .collect();
            assert_eq!(per_block, [1, 1, 4, 3, 2]);
        } else {
            assert_eq!(whole.len(), capture.received().count(), "{}", capture.name);
        }
        let mut reader = FrameReader::new();
        let mut one_by_one = Vec::new();
        for block in capture.received() {
            for byte in &block.bytes {
                reader.feed(std::slice::from_ref(byte));
                while let Some(frame) = reader.next_frame().expect(capture.name) {
                    one_by_one.push(frame);
                }
            }
        }
        assert_eq!(reader.buffered(), 0);
        assert_eq!(one_by_one, whole, "{}", capture.name);
        for frame in &whole {
            if let Frame::Event(event) = frame {
                assert!(!event.name().is_empty(), "{}", capture.name);
            }
        }
        total += whole.len();
    }
    assert!(total > 100, "{total} frames");
}

#[test]
fn a_register_event_decodes_its_contact_with_the_push_parameters() {
    let events = events_of(&capture::load("events.log"));
    let register = event(&events, "sofia::register");
    assert_eq!(register.name(), "CUSTOM");
    assert_eq!(register.subclass(), Some("sofia::register"));
    // In a CUSTOM event the subclass comes before the name.
    let names: Vec<&str> = register.headers.iter().map(|(n, _)| n).collect();
    let position = |name| names.iter().position(|n| *n == name).unwrap();
    assert!(position("Event-Subclass") < position("Event-Name"));
    assert_eq!(
        register.header("contact"),
        Some("\"\" <sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip>")
    );
    assert_eq!(register.header("status"), Some("Registered(UDP)"));
    assert_eq!(register.header("from-user"), Some("101"));
    assert_eq!(register.body, None);
}

#[test]
fn channel_events_carry_their_channel_and_variables() {
    let events = events_of(&capture::load("events.log"));
    let park = event(&events, "CHANNEL_PARK");
    assert_eq!(park.header("Caller-Destination-Number"), Some("101"));
    assert_eq!(park.header("variable_pushwake_extension"), Some("101"));
    assert_eq!(park.header("Answer-State"), Some("ringing"));
    let uuid = park.unique_id().unwrap();
    let hangup = event(&events, "CHANNEL_HANGUP_COMPLETE");
    assert_eq!(hangup.unique_id(), Some(uuid));
    assert_eq!(
        hangup.headers.get_all("Hangup-Cause").collect::<Vec<_>>(),
        ["ORIGINATOR_CANCEL", "ORIGINATOR_CANCEL"]
    );
    // Every hang-up of every capture has the cause twice, the same both times.
    for capture in capture::all() {
        for hangup in events_of(&capture)
            .iter()
            .filter(|e| e.name() == "CHANNEL_HANGUP_COMPLETE")
        {
            let causes: Vec<&str> = hangup.headers.get_all("Hangup-Cause").collect();
            assert_eq!(causes.len(), 2, "{}", capture.name);
            assert_eq!(causes[0], causes[1]);
        }
    }
}

#[test]
fn a_background_job_matches_its_bgapi_reply_and_carries_the_result() {
    let capture = capture::load("call-flow.log");
    let frames = frames(&capture);
    let job_uuid = frames
        .iter()
        .find_map(|f| match f {
            Frame::CommandReply(reply) => reply.job_uuid.clone(),
            _ => None,
        })
        .expect("the bgapi reply");
    let events = events_of(&capture);
    let job = event(&events, "BACKGROUND_JOB");
    assert_eq!(job.job_uuid(), Some(job_uuid.as_str()));
    assert_eq!(
        job.header("Job-Command-Arg"),
        Some("{origination_caller_id_number=200}user/101@127.0.0.1 &park()")
    );
    assert_eq!(
        job.body.as_deref(),
        Some("+OK e6842b73-e378-476e-81a0-c00be66cab39\n")
    );
    let failed = events_of(&capture::load("api-errors.log"));
    assert_eq!(
        event(&failed, "BACKGROUND_JOB").body.as_deref(),
        Some("-ERR USER_NOT_REGISTERED\n")
    );
}

#[test]
fn replies_responses_and_notices_come_out_as_sent() {
    let frames = frames(&capture::load("api-errors.log"));
    let replies: Vec<&str> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::CommandReply(reply) => Some(reply.reply_text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        [
            "+OK accepted",
            "+OK event listener enabled plain",
            "+OK Job-UUID: c19e2e80-1041-49d6-8499-d0bf650145cf",
            "-ERR command not found",
            "+OK bye"
        ]
    );
    let bodies: Vec<&str> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::ApiResponse { body } => Some(body.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies[0], "-ERR nosuchcommand Command not found!\n");
    assert_eq!(bodies[4], "error/user_not_registered");
    assert_eq!(
        frames.last(),
        Some(&Frame::DisconnectNotice {
            body: "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n".into()
        })
    );
    let auth_fail = frames_of_capture("auth-fail.log");
    assert!(matches!(&auth_fail[1], Frame::CommandReply(r) if r.reply_text == "-ERR invalid"));
    assert!(matches!(&auth_fail[2], Frame::DisconnectNotice { .. }));
}

fn frames_of_capture(name: &str) -> Vec<Frame> {
    frames(&capture::load(name))
}

#[test]
fn an_expire_event_has_its_own_headers() {
    let events = events_of(&capture::load("register-expire.log"));
    let expire = event(&events, "sofia::expire");
    assert_eq!(expire.header("expires"), Some("1796113681"));
    assert!(expire.header("contact").unwrap().contains(";pn-provider="));
    assert_eq!(expire.header("status"), None);
}

#[test]
fn the_outbound_connect_reply_is_a_command_reply_with_the_whole_channel() {
    let frames = frames_of_capture("outbound-socket.log");
    let Frame::CommandReply(connect) = &frames[0] else {
        panic!("{:?}", frames[0])
    };
    // URL-encoded like an event's values (`%2BOK%0A`), and last in its header block.
    assert_eq!(connect.reply_text, "+OK\n");
    assert!(connect.is_ok());
    assert_eq!(connect.headers.get("Event-Name"), Some("CHANNEL_DATA"));
    assert_eq!(
        connect.headers.get("variable_pushwake_extension"),
        Some("103")
    );
    assert_eq!(connect.headers.get("Socket-Mode"), Some("async"));
    let notice = frames.last().unwrap();
    assert!(matches!(notice, Frame::DisconnectNotice { body } if body.starts_with("Disconnected")));
}
