//! The outbound `socket` hand-over against the testkit's FreeSWITCH dialling out
//! (`pushwake_testkit::esl::outbound`), which writes the bytes a real FreeSWITCH 1.11.1
//! wrote. Every wait is for something to happen, with a generous bound; nothing sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pushwake_core::pbx::PbxEvent;
use pushwake_freeswitch::outbound::{CONNECT_TIMEOUT, REPLY_TIMEOUT};
use pushwake_freeswitch::{translate, EslError, HandedOver, OutboundListener};
use pushwake_testkit::esl::outbound::{Channel, OnConnect, OutboundCall, CAPTURE};
use pushwake_testkit::esl::{capture, command_reply};

/// The bound on every wait: generous, as nothing here should take more than milliseconds
/// (but for the timeouts under test, which are added to it).
const WAIT: Duration = Duration::from_secs(20);

const CALL_A: &str = "4f0c2a8e-5b1d-4c3e-9a7f-0123456789ab";
const CALL_B: &str = "9d8e7f60-1a2b-4c3d-8e9f-fedcba987654";

async fn within<T>(what: &str, future: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn listener() -> (OutboundListener, SocketAddr) {
    let listener = OutboundListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn dial(addr: SocketAddr, id: &str, extension: &str) -> OutboundCall {
    OutboundCall::connect_to(addr, Channel::new(id, extension))
        .await
        .expect("connect to the listener")
}

async fn accept(listener: &OutboundListener) -> HandedOver {
    within("a hand-over", listener.accept())
        .await
        .expect("the listener failed")
}

/// A call handed over and ready: the call (FreeSWITCH's side) and pushwake's.
async fn handed_over(id: &str) -> (OutboundListener, OutboundCall, HandedOver) {
    let (listener, addr) = listener().await;
    let call = dial(addr, id, "101").await;
    let handed = accept(&listener).await;
    (listener, call, handed)
}

fn is_sendmsg(command: &pushwake_testkit::esl::outbound::Command) -> bool {
    command.line == "sendmsg"
}

#[tokio::test]
async fn a_handed_over_call_gives_its_channel_and_takes_the_captured_commands() {
    let (listener, addr) = listener().await;
    // An extension FreeSWITCH has to encode, to see it decoded.
    let call = dial(addr, CALL_A, "+49 30 101").await;
    let HandedOver { channel, socket } = accept(&listener).await;

    assert_eq!(channel.get("Event-Name"), Some("CHANNEL_DATA"));
    assert_eq!(channel.get("Unique-ID"), Some(CALL_A));
    assert_eq!(
        channel.get("variable_pushwake_extension"),
        Some("+49 30 101")
    );
    assert_eq!(socket.channel(), CALL_A);
    let PbxEvent::CallerArrived {
        channel: id,
        extension,
        caller,
    } = translate::caller_arrived(&channel).unwrap()
    else {
        panic!("not a caller arriving")
    };
    assert_eq!(id.0, CALL_A);
    assert_eq!(extension, "+49 30 101");
    assert_eq!(
        (caller.number.as_str(), caller.name.as_str()),
        ("200", "Extension 200")
    );

    within("ring_ready", socket.execute("ring_ready", None))
        .await
        .unwrap();
    within(
        "set",
        socket.execute("set", Some("pushwake_status=TIMEOUT")),
    )
    .await
    .unwrap();
    assert!(!socket.is_closed());
    within("exit", socket.exit()).await.unwrap();
    assert!(socket.is_closed());
    within("the close", socket.closed()).await;
    assert!(within("the call's close", call.wait_closed(WAIT)).await);

    // Byte for byte what the capture's client sent, but `myevents`, which pushwake does
    // not need: the answers to its commands are all it reads.
    let capture = capture::load(CAPTURE);
    let expected: Vec<String> = capture
        .sent()
        .map(|b| b.text())
        .filter(|t| t != "myevents\n\n")
        .collect();
    let sent: Vec<String> = call
        .received()
        .iter()
        .map(|c| String::from_utf8(c.bytes.clone()).unwrap())
        .collect();
    assert_eq!(sent, expected);
    assert_eq!(
        call.executed(),
        [
            ("ring_ready".to_owned(), None),
            ("set".to_owned(), Some("pushwake_status=TIMEOUT".to_owned()))
        ]
    );
    // Gone means gone: nothing more is sent.
    let error = socket.execute("ring_ready", None).await.unwrap_err();
    assert!(matches!(error, EslError::ConnectionLost(_)), "{error}");
    assert_eq!(call.received().len(), expected.len());
}

#[tokio::test]
async fn two_calls_at_once_are_independent() {
    let (listener, addr) = listener().await;
    let call_a = dial(addr, CALL_A, "101").await;
    let call_b = dial(addr, CALL_B, "102").await;
    let first = accept(&listener).await;
    let second = accept(&listener).await;
    // In the order their connects complete: either.
    let (a, b) = if first.socket.channel() == CALL_A {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(a.channel.get("variable_pushwake_extension"), Some("101"));
    assert_eq!(b.socket.channel(), CALL_B);
    assert_eq!(b.channel.get("variable_pushwake_extension"), Some("102"));

    // B's reply held back does not hold A up.
    call_b.hold_replies(true);
    let b_socket = b.socket.clone();
    let pending_b = tokio::spawn(async move { b_socket.execute("set", Some("b=2")).await });
    within("B's set", call_b.wait_command(WAIT, is_sendmsg))
        .await
        .unwrap();
    within("A's set", a.socket.execute("set", Some("a=1")))
        .await
        .unwrap();
    call_b.hold_replies(false);
    within("B's answer", pending_b).await.unwrap().unwrap();

    // A's caller hangs up; B carries on.
    call_a.hang_up();
    within("A's close", a.socket.closed()).await;
    assert!(!b.socket.is_closed());
    within("B's ring_ready", b.socket.execute("ring_ready", None))
        .await
        .unwrap();
    within("B's exit", b.socket.exit()).await.unwrap();

    assert_eq!(
        call_a.executed(),
        [("set".to_owned(), Some("a=1".to_owned()))]
    );
    assert_eq!(
        call_b.executed(),
        [
            ("set".to_owned(), Some("b=2".to_owned())),
            ("ring_ready".to_owned(), None)
        ]
    );
    assert_eq!(call_b.commands().last().map(String::as_str), Some("exit"));
    assert!(!call_a.commands().contains(&"exit".to_owned()));
}

#[tokio::test]
async fn peers_that_fail_their_connect_are_skipped_and_the_next_call_is_accepted() {
    let (listener, addr) = listener().await;
    let channel = Channel::new(CALL_B, "101");
    // The channel without its Unique-ID (only that header: `Channel-Unique-ID` and the
    // rest stay).
    let nameless: Vec<u8> = String::from_utf8(channel.connect_reply())
        .unwrap()
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("Unique-ID:"))
        .collect::<String>()
        .into_bytes();
    let mut bad = Vec::new();
    for on_connect in [
        OnConnect::Silent,
        OnConnect::Close,
        OnConnect::Send(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        OnConnect::Send(nameless),
        OnConnect::Send(command_reply("-ERR no such channel")),
    ] {
        let peer = OutboundCall::connect_with(addr, channel.clone(), on_connect.clone())
            .await
            .unwrap();
        bad.push((on_connect, peer));
    }
    let good = dial(addr, CALL_A, "101").await;
    let started = Instant::now();

    // The silent peer holds up nobody: the good call is accepted at once.
    let handed = accept(&listener).await;
    assert_eq!(handed.socket.channel(), CALL_A);
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    within("ring_ready", handed.socket.execute("ring_ready", None))
        .await
        .unwrap();
    assert_eq!(good.commands(), ["connect", "sendmsg"]);

    // Every bad peer was asked to connect, and then dropped: the broken ones at once,
    // the silent one after CONNECT_TIMEOUT.
    for (on_connect, peer) in &bad {
        within(
            "the connect",
            peer.wait_command(WAIT, |c| c.line == "connect"),
        )
        .await
        .unwrap();
        assert!(
            peer.wait_closed(WAIT + CONNECT_TIMEOUT).await,
            "{on_connect:?} was not closed"
        );
        assert_eq!(peer.commands(), ["connect"], "{on_connect:?}");
    }

    // And the listener goes on.
    let next = dial(addr, CALL_B, "102").await;
    let handed = accept(&listener).await;
    assert_eq!(handed.socket.channel(), CALL_B);
    assert_eq!(
        handed.channel.get("variable_pushwake_extension"),
        Some("102")
    );
    within("exit", handed.socket.exit()).await.unwrap();
    assert!(within("the close", next.wait_closed(WAIT)).await);
}

#[tokio::test]
async fn the_caller_hanging_up_ends_the_socket_and_fails_what_waits() {
    let (_listener, call, handed) = handed_over(CALL_A).await;
    let socket = handed.socket;
    call.hold_replies(true);
    let waiting = socket.clone();
    let pending = tokio::spawn(async move { waiting.execute("ring_ready", None).await });
    within("the sendmsg", call.wait_command(WAIT, is_sendmsg))
        .await
        .unwrap();
    assert!(!socket.is_closed());
    call.hang_up();

    within("the close", socket.closed()).await;
    assert!(socket.is_closed());
    let error = within("the failure", pending).await.unwrap().unwrap_err();
    let EslError::ConnectionLost(reason) = &error else {
        panic!("{error:?}")
    };
    // Which call, and that FreeSWITCH ended it (its notice's first line).
    assert_eq!(
        reason,
        &format!("call {CALL_A}: FreeSWITCH closed the connection (Disconnected, goodbye.)")
    );
    // From now on everything fails at once, the same way.
    assert_eq!(socket.execute("set", Some("a=1")).await.unwrap_err(), error);
    assert!(matches!(
        socket.exit().await.unwrap_err(),
        EslError::ConnectionLost(_)
    ));
    assert_eq!(call.commands(), ["connect", "sendmsg"]);
}

#[tokio::test]
async fn a_socket_closed_or_reset_without_a_word_is_closed_too() {
    for reset in [false, true] {
        let (_listener, call, handed) = handed_over(CALL_A).await;
        if reset {
            call.reset();
        } else {
            call.close();
        }
        within("the close", handed.socket.closed()).await;
        let error = handed.socket.execute("ring_ready", None).await.unwrap_err();
        assert!(
            matches!(&error, EslError::ConnectionLost(reason) if reason.starts_with(&format!("call {CALL_A}: "))),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn line_breaks_are_refused_before_anything_is_sent() {
    let (_listener, call, handed) = handed_over(CALL_A).await;
    let socket = &handed.socket;
    for (app, arg) in [
        (
            "set",
            Some("pushwake_status=TIMEOUT\nexecute-app-name: hangup"),
        ),
        ("set", Some("pushwake_status=TIMEOUT\r")),
        ("set", Some("a=1\n\nsendmsg\ncall-command: hangup")),
        ("ring_ready\n\nexit", None),
        ("", None),
    ] {
        let error = socket.execute(app, arg).await.unwrap_err();
        assert!(
            matches!(error, EslError::Invalid(_)),
            "{app:?} {arg:?}: {error}"
        );
    }
    // The next command is the first to go out after connect, and the socket is fine.
    within("ring_ready", socket.execute("ring_ready", None))
        .await
        .unwrap();
    assert_eq!(call.commands(), ["connect", "sendmsg"]);
    assert_eq!(call.executed(), [("ring_ready".to_owned(), None)]);
    assert!(!socket.is_closed());
}

#[tokio::test]
async fn dropping_every_handle_gives_the_call_back_at_once() {
    let (_listener, call, handed) = handed_over(CALL_A).await;
    let clone = handed.socket.clone();
    drop(handed);
    // A clone keeps it open...
    within("ring_ready", clone.execute("ring_ready", None))
        .await
        .unwrap();
    assert!(call.is_open());
    // ...the last one gone closes it, and FreeSWITCH goes on with the dialplan.
    drop(clone);
    assert!(within("the close", call.wait_closed(WAIT)).await);
    assert_eq!(call.commands(), ["connect", "sendmsg"]);
}

#[tokio::test]
async fn a_reply_that_does_not_come_fails_the_command_and_closes_the_socket() {
    let (_listener, call, handed) = handed_over(CALL_A).await;
    call.hold_replies(true);
    let started = Instant::now();
    let error = tokio::time::timeout(
        WAIT + REPLY_TIMEOUT,
        handed.socket.execute("ring_ready", None),
    )
    .await
    .expect("the command waited on and on")
    .unwrap_err();
    // Never early; the upper bound is the timeout above.
    assert!(
        started.elapsed() >= REPLY_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error,
        EslError::ConnectionLost(format!(
            "call {CALL_A}: FreeSWITCH did not answer `sendmsg execute ring_ready` within {REPLY_TIMEOUT:?}"
        ))
    );
    assert!(handed.socket.is_closed());
    assert!(within("the close", call.wait_closed(WAIT)).await);
}
