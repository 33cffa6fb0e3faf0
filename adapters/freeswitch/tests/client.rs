//! The Event Socket client against the local event socket of the testkit
//! (`pushwake_testkit::esl`), which writes the bytes a real FreeSWITCH 1.11.1 wrote. Every
//! wait is for something to happen, with a generous bound; nothing sleeps.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushwake_freeswitch::client::KEEP_ALIVE_COMMAND;
use pushwake_freeswitch::{
    spawn_client, EslConfig, EslConnection, EslError, EslFeed, Event, KeepAlive,
};
use pushwake_testkit::esl::{self, Answer, EslServer};
use tokio::sync::mpsc;

/// The bound on every wait: generous, as nothing here should take more than milliseconds.
const WAIT: Duration = Duration::from_secs(20);

const ORIGINATE_101: &str =
    "originate {origination_caller_id_number=200}user/101@127.0.0.1 &park()";
const ORIGINATE_102: &str = "originate user/102@127.0.0.1 &park()";

fn config(server: &EslServer) -> EslConfig {
    let mut config = EslConfig::new(server.address(), esl::PASSWORD);
    config.events = [
        "CHANNEL_PARK",
        "CHANNEL_HANGUP_COMPLETE",
        "CUSTOM",
        "sofia::register",
    ]
    .map(String::from)
    .to_vec();
    config
}

async fn connect(server: &EslServer) -> (EslConnection, mpsc::UnboundedReceiver<Event>) {
    EslConnection::connect(&config(server))
        .await
        .expect("connect")
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event came")
        .expect("the events ended")
}

async fn next(feed: &mut mpsc::Receiver<EslFeed>) -> EslFeed {
    tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("the feed stalled")
        .expect("the feed ended")
}

async fn within<T>(what: &str, future: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn authenticates_subscribes_and_runs_api_commands() {
    let server = EslServer::start().await;
    let (connection, _events) = connect(&server).await;
    // The subscription as FreeSWITCH reads it: plain names, then CUSTOM and subclasses.
    assert_eq!(
        server.commands(),
        [
            "auth ClueCon",
            "event plain BACKGROUND_JOB CHANNEL_PARK CHANNEL_HANGUP_COMPLETE CUSTOM sofia::register"
        ]
    );
    assert_eq!(
        connection.api("sofia_contact 101@127.0.0.1").await.unwrap(),
        esl::CONTACT_101
    );
    // Failures of a command are in its output, as FreeSWITCH words them.
    assert_eq!(
        connection.api("sofia_contact 999@127.0.0.1").await.unwrap(),
        "error/user_not_registered"
    );
    assert_eq!(
        connection.api("nosuchcommand").await.unwrap(),
        "-ERR nosuchcommand Command not found!\n"
    );
    let channels = connection.api("show channels").await.unwrap();
    assert!(channels.ends_with("\n\n1 total.\n"), "{channels:?}");

    connection.exit().await.unwrap();
    let reason = within("the close", connection.closed()).await;
    assert_eq!(
        reason,
        "FreeSWITCH closed the connection (Disconnected, goodbye.)"
    );
    let error = connection.api("status").await.unwrap_err();
    assert_eq!(error, EslError::ConnectionLost(reason));
}

/// Everything the client logs, for checking that no secret is in it.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_said_nowhere() {
    let server = EslServer::with_password("the-right-one").await;
    let mut config = config(&server);
    config.password = "hunter2-wrong".into();

    let error = EslConnection::connect(&config).await.unwrap_err();
    assert_eq!(error, EslError::AuthRefused);
    assert_eq!(
        error.to_string(),
        "FreeSWITCH refused the event socket password"
    );
    assert!(!format!("{error:?}").contains("hunter2"));
    assert!(!format!("{config:?}").contains("hunter2"));
    // It was sent, to FreeSWITCH only.
    assert_eq!(server.commands(), ["auth hunter2-wrong"]);
    assert!(server.wait_closed(0, WAIT).await);

    // The reconnecting client keeps trying, and logs it, at every level, without it.
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (client, feed) = spawn_client(config);
    let attempts = server
        .wait_commands(4, WAIT, |r| r.command.starts_with("auth "))
        .await
        .expect("the client gave up");
    assert_eq!(attempts.len(), 4);
    assert_eq!(
        client.api("status").await.unwrap_err(),
        EslError::NotConnected
    );
    drop(feed);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("FreeSWITCH refused the event socket password"),
        "{logs}"
    );
    assert!(!logs.contains("hunter2"), "{logs}");
}

#[tokio::test]
async fn background_jobs_are_matched_by_job_uuid_whatever_comes_between() {
    let server = EslServer::start().await;
    server.hold_jobs(None);
    server.answer(
        ORIGINATE_101,
        Answer::body("+OK e6842b73-e378-476e-81a0-c00be66cab39\n"),
    );
    let (connection, mut events) = connect(&server).await;

    let first = connection.bgapi(ORIGINATE_101).await.unwrap();
    let second = connection.bgapi(ORIGINATE_102).await.unwrap();
    let held = server.wait_held_jobs(2, WAIT).await.expect("two jobs");
    assert_eq!(held, [first.uuid(), second.uuid()]);
    assert_ne!(first.uuid(), second.uuid());

    // Events, another client's job and an api reply, before either job ends.
    assert_eq!(server.push_event(&esl::channel_park()), 1);
    let other = esl::background_job("9d8f0c37-0000-4000-8000-000000000001", "status", "UP\n");
    assert_eq!(server.push_event(&other), 1);
    assert_eq!(
        connection.api("sofia_contact 101@127.0.0.1").await.unwrap(),
        esl::CONTACT_101
    );
    // The second job ends first.
    assert!(server.complete_job(second.uuid()));
    assert_eq!(
        within("the second job", second).await.unwrap(),
        "-ERR USER_NOT_REGISTERED\n"
    );
    assert_eq!(server.push_event(&esl::channel_hangup_complete()), 1);
    assert!(server.complete_job(first.uuid()));
    assert_eq!(
        within("the first job", first).await.unwrap(),
        "+OK e6842b73-e378-476e-81a0-c00be66cab39\n"
    );

    // The events came in order; only the job that was not ours among them.
    let names: Vec<String> = [
        next_event(&mut events).await,
        next_event(&mut events).await,
        next_event(&mut events).await,
    ]
    .iter()
    .map(|e| format!("{} {}", e.name(), e.job_uuid().unwrap_or_default()))
    .collect();
    assert_eq!(
        names,
        [
            "CHANNEL_PARK ",
            "BACKGROUND_JOB 9d8f0c37-0000-4000-8000-000000000001",
            "CHANNEL_HANGUP_COMPLETE "
        ]
    );
    assert!(events.try_recv().is_err(), "our jobs are not events");
    assert!(server
        .commands()
        .contains(&format!("bgapi {ORIGINATE_102}")));
}

#[tokio::test]
async fn events_arrive_decoded_and_custom_subclasses_are_subscribed_after_names() {
    let server = EslServer::start().await;
    let mut config = config(&server);
    // In an order FreeSWITCH would misread, were it sent as given.
    config.events = ["CUSTOM", "sofia::register", "CHANNEL_PARK"]
        .map(String::from)
        .to_vec();
    let (_connection, mut events) = EslConnection::connect(&config).await.unwrap();
    assert_eq!(server.push_event(&esl::sofia_register()), 1);
    assert_eq!(server.push_event(&esl::channel_park()), 1);
    let register = next_event(&mut events).await;
    assert_eq!(register.subclass(), Some("sofia::register"));
    assert_eq!(
        register.header("contact"),
        Some("\"\" <sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip>")
    );
    let park = next_event(&mut events).await;
    assert_eq!(park.name(), "CHANNEL_PARK");
    assert_eq!(park.header("variable_pushwake_extension"), Some("101"));
}

#[tokio::test]
async fn frames_written_a_byte_at_a_time_arrive_whole() {
    let server = EslServer::start().await;
    server.write_in_pieces(Some(1));
    let (connection, mut events) = connect(&server).await;
    assert_eq!(
        connection
            .api("show registrations")
            .await
            .unwrap()
            .lines()
            .last(),
        Some("1 total.")
    );
    server.push_event(&esl::channel_park());
    let job = connection.bgapi(ORIGINATE_102).await.unwrap();
    assert_eq!(job.await.unwrap(), "-ERR USER_NOT_REGISTERED\n");
    let park = next_event(&mut events).await;
    assert_eq!(park.header("Caller-Destination-Number"), Some("101"));
}

#[tokio::test]
async fn a_lost_connection_fails_what_waits_and_the_client_comes_back() {
    for reset in [false, true] {
        let server = EslServer::start().await;
        server.hold_jobs(None);
        let (client, mut feed) = spawn_client(config(&server));
        assert_eq!(next(&mut feed).await, EslFeed::Connected);

        let job = client.bgapi(ORIGINATE_102).await.unwrap();
        // An api that never returns: the connection goes silent, as FreeSWITCH's would.
        server.answer_once("show channels", Answer::Hang);
        let api = {
            let client = client.clone();
            tokio::spawn(async move { client.api("show channels").await })
        };
        server
            .wait_command(WAIT, |r| r.command == "api show channels")
            .await
            .expect("the api was sent");
        if reset {
            server.reset_all();
        } else {
            server.close_all();
        }

        let error = within("the api to fail", api).await.unwrap().unwrap_err();
        let EslError::ConnectionLost(reason) = &error else {
            panic!("{error:?}")
        };
        assert!(
            reason.starts_with("FreeSWITCH closed the connection")
                || reason.starts_with("reading from FreeSWITCH failed"),
            "{reason}"
        );
        assert_eq!(within("the job to fail", job).await.unwrap_err(), error);
        assert_eq!(
            next(&mut feed).await,
            EslFeed::Disconnected {
                reason: reason.clone()
            }
        );
        // Back, subscribed again, and working.
        assert_eq!(next(&mut feed).await, EslFeed::Connected);
        assert_eq!(server.connections(), 2);
        let again: Vec<String> = server
            .received()
            .into_iter()
            .filter(|r| r.connection == 1)
            .map(|r| r.command)
            .collect();
        assert_eq!(again[0], "auth ClueCon");
        assert!(again[1].starts_with("event plain BACKGROUND_JOB "));
        assert_eq!(
            client.api("sofia_contact 101@127.0.0.1").await.unwrap(),
            esl::CONTACT_101
        );
        assert_eq!(server.push_event(&esl::sofia_register()), 1);
        match next(&mut feed).await {
            EslFeed::Event(event) => assert_eq!(event.subclass(), Some("sofia::register")),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_client_reconnects_after_a_silent_peer() {
    let server = EslServer::start().await;
    let mut config = config(&server);
    // Short for the test (the defaults are 5 s and 10 s), with room for a loaded machine
    // to answer late without the test taking long.
    config.keep_alive = KeepAlive {
        idle: Duration::from_millis(250),
        timeout: Duration::from_millis(2500),
    };
    let (client, mut feed) = spawn_client(config);
    assert_eq!(next(&mut feed).await, EslFeed::Connected);

    // Alive and idle: the keep-alive is answered, and its answers go to nobody.
    let probes = server
        .wait_commands(3, WAIT, |r| r.command == KEEP_ALIVE_COMMAND)
        .await
        .expect("keep-alives");
    assert!(probes.iter().all(|p| p.connection == 0));
    assert_eq!(
        client.api("sofia_contact 101@127.0.0.1").await.unwrap(),
        esl::CONTACT_101
    );
    assert!(client.is_connected());

    // Silent: nothing read, nothing written, the socket open.
    let frozen_at = Instant::now();
    assert_eq!(server.freeze(), 1);
    let api = {
        let client = client.clone();
        tokio::spawn(async move { client.api("show registrations").await })
    };
    let EslFeed::Disconnected { reason } = next(&mut feed).await else {
        panic!("not a disconnection")
    };
    let noticed = frozen_at.elapsed();
    assert!(
        reason.contains("not even an answer to the keep-alive"),
        "{reason}"
    );
    // The bound here is 2.75 s; asserted loosely.
    assert!(noticed < Duration::from_secs(60), "{noticed:?}");
    assert_eq!(
        within("the api", api).await.unwrap().unwrap_err(),
        EslError::ConnectionLost(reason)
    );
    assert_eq!(next(&mut feed).await, EslFeed::Connected);
    assert_eq!(server.connections(), 2);
    // The frozen connection is still open on the server's side: the client noticed
    // the silence, not a close.
    assert_eq!(server.open_connections(), 2);
}

#[tokio::test]
async fn malformed_frames_end_the_connection_with_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"Content-Type: api/response\nthis line has no colon\n\n",
            "unreadable frame from FreeSWITCH: ESL header line without `Name:`: \"this line has no colon\"",
        ),
        (
            b"Content-Type: api/response\nContent-Length: 999999999999\n\n",
            "unreadable frame from FreeSWITCH: ESL body of 999999999999 bytes is over the 16777216-byte limit",
        ),
        (
            b"Content-Length: 3\n\nabc",
            "unreadable frame from FreeSWITCH: ESL frame without a Content-Type",
        ),
        (
            b"Content-Type: auth/request\n\n",
            "FreeSWITCH asked for authentication again",
        ),
    ];
    for (bytes, expected) in cases {
        let server = EslServer::start().await;
        server.hold_jobs(None);
        let (connection, _events) = connect(&server).await;
        // Something waiting when it happens.
        let job = connection.bgapi(ORIGINATE_102).await.unwrap();
        server.wait_held_jobs(1, WAIT).await.unwrap();
        assert_eq!(server.push_raw(bytes), 1);
        let reason = within("the close", connection.closed()).await;
        assert_eq!(reason, *expected);
        assert_eq!(
            within("the job", job).await.unwrap_err(),
            EslError::ConnectionLost(reason)
        );
    }
}

#[tokio::test]
async fn a_reply_nobody_asked_for_ends_the_connection() {
    let server = EslServer::start().await;
    let mut config = config(&server);
    // No keep-alive during the test: its answer would be the one asked for.
    config.keep_alive.idle = Duration::from_secs(3600);
    let (connection, _events) = EslConnection::connect(&config).await.unwrap();
    server.push_raw(&esl::api_response("hi"));
    assert_eq!(
        within("the close", connection.closed()).await,
        "FreeSWITCH sent a api/response nobody asked for"
    );
}

#[tokio::test]
async fn a_broken_event_is_skipped_and_the_connection_goes_on() {
    let server = EslServer::start().await;
    let (connection, mut events) = connect(&server).await;
    server.push_raw(&esl::event_frame("Core-UUID: no name here\n\n"));
    server.push_raw(&esl::event_frame(
        "Event-Name: CHANNEL_PARK\nContent-Length: 10\n\nshort",
    ));
    server.push_event(&esl::channel_park());
    let park = next_event(&mut events).await;
    assert_eq!(park.header("Caller-Destination-Number"), Some("101"));
    assert_eq!(
        connection.api("sofia_contact 101@127.0.0.1").await.unwrap(),
        esl::CONTACT_101
    );
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn what_cannot_be_one_command_is_not_sent() {
    let server = EslServer::start().await;
    let (connection, _events) = connect(&server).await;
    let error = connection.api("uuid_kill abc\n\nexit").await.unwrap_err();
    assert!(matches!(error, EslError::Invalid(_)), "{error:?}");
    assert!(connection.bgapi("originate x\r\n").await.is_err());
    assert!(connection.subscribe(&["CHANNEL_PARK exit"]).await.is_err());
    connection.subscribe(&["CHANNEL_ANSWER"]).await.unwrap();
    let commands = server.commands();
    assert_eq!(commands.len(), 3, "{commands:?}");
    assert_eq!(commands[2], "event plain BACKGROUND_JOB CHANNEL_ANSWER");

    let mut config = config(&server);
    config.password = "a\nexit".into();
    assert!(matches!(
        EslConnection::connect(&config).await,
        Err(EslError::Invalid(_))
    ));
}

#[tokio::test]
async fn refusals_are_reported_and_the_client_retries_until_it_gets_in() {
    let server = EslServer::start().await;
    server.reject_connections(true);
    let error = EslConnection::connect(&config(&server)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "FreeSWITCH's event socket refused this address (apply-inbound-acl): Access Denied, go away."
    );

    let (client, mut feed) = spawn_client(config(&server));
    assert!(server.wait_connections(3, WAIT).await, "no retries");
    assert!(!client.is_connected());
    server.reject_connections(false);
    assert_eq!(next(&mut feed).await, EslFeed::Connected);
    assert!(client.is_connected());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let error = EslConnection::connect(&EslConfig::new(address.clone(), "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, EslError::Connect { address: a, .. } if *a == address),
        "{error:?}"
    );
    assert!(error.to_string().contains(&address), "{error}");
}

#[tokio::test]
async fn a_connection_notices_a_silent_peer_by_its_keep_alive() {
    let server = EslServer::start().await;
    let mut config = config(&server);
    // Short for the test (the defaults are 5 s and 10 s), with room for a loaded machine
    // to answer late without the test taking long.
    config.keep_alive = KeepAlive {
        idle: Duration::from_millis(250),
        timeout: Duration::from_millis(2500),
    };
    let (connection, _events) = EslConnection::connect(&config).await.unwrap();
    let probe = KEEP_ALIVE_COMMAND;
    server
        .wait_commands(3, WAIT, |r| r.command == probe)
        .await
        .expect("keep-alives");
    assert_eq!(
        connection.api("sofia_contact 101@127.0.0.1").await.unwrap(),
        esl::CONTACT_101
    );
    let frozen_at = Instant::now();
    assert_eq!(server.freeze(), 1);
    let reason = within("the keep-alive", connection.closed()).await;
    assert!(
        reason.contains("not even an answer to the keep-alive"),
        "{reason}"
    );
    // The bound here is 2.75 s; asserted loosely.
    assert!(frozen_at.elapsed() < Duration::from_secs(60));
    assert_eq!(
        server.open_connections(),
        1,
        "noticed a silence, not a close"
    );
}
