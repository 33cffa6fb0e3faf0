//! The stand-in judging channel commands as FreeSWITCH 1.11.1 does (`EslServer::judge`),
//! checked through the adapter's own connection: what it answers, and the events it
//! emits after, in the captured order.

use std::time::Duration;

use pushwake_freeswitch::{EslConfig, EslConnection, Event};
use pushwake_testkit::esl::EslServer;
use tokio::sync::mpsc::UnboundedReceiver;

const A: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";
const B: &str = "5d7d1c1e-0000-4000-8000-000000000001";

async fn connect(server: &EslServer) -> (EslConnection, UnboundedReceiver<Event>) {
    let mut config = EslConfig::new(server.address(), "ClueCon");
    config.events = [
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_PARK",
    ]
    .map(str::to_owned)
    .to_vec();
    EslConnection::connect(&config).await.unwrap()
}

async fn next(events: &mut UnboundedReceiver<Event>) -> (String, String, Option<String>) {
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the connection is open");
    (
        event.name().to_owned(),
        event.unique_id().unwrap_or_default().to_owned(),
        event.header("Hangup-Cause").map(str::to_owned),
    )
}

#[tokio::test]
async fn a_bridge_of_a_caller_never_answered_replies_ok_then_hangs_both_legs_up() {
    let server = EslServer::start().await;
    server.judge();
    let (connection, mut events) = connect(&server).await;
    // As uuid-bridge-unanswered.log: +OK <B>, then both legs end.
    assert_eq!(
        connection
            .api(&format!("uuid_bridge {A} {B}"))
            .await
            .unwrap(),
        format!("+OK {B}\n")
    );
    assert_eq!(
        next(&mut events).await,
        (
            "CHANNEL_HANGUP_COMPLETE".into(),
            A.into(),
            Some("DESTINATION_OUT_OF_ORDER".into())
        )
    );
    assert_eq!(
        next(&mut events).await,
        (
            "CHANNEL_HANGUP_COMPLETE".into(),
            B.into(),
            Some("ORIGINATOR_CANCEL".into())
        )
    );
}

#[tokio::test]
async fn an_answered_caller_is_bridged_and_an_answering_phone_ends_its_job() {
    let server = EslServer::start().await;
    server.judge();
    server.phones_answer(true);
    let (connection, mut events) = connect(&server).await;
    // The leg's phone answers: CHANNEL_ANSWER, then the job's +OK, then CHANNEL_PARK.
    let job = connection
        .bgapi(&format!(
            "originate {{origination_uuid={B}}}sofia/internal/sip:101@127.0.0.1:5091 &park()"
        ))
        .await
        .unwrap();
    assert_eq!(
        next(&mut events).await,
        ("CHANNEL_ANSWER".into(), B.into(), None)
    );
    assert_eq!(job.result().await.unwrap(), format!("+OK {B}\n"));
    assert_eq!(
        next(&mut events).await,
        ("CHANNEL_PARK".into(), B.into(), None)
    );
    assert_eq!(
        connection.api(&format!("uuid_answer {A}")).await.unwrap(),
        "+OK\n"
    );
    assert_eq!(
        connection
            .api(&format!("uuid_bridge {A} {B}"))
            .await
            .unwrap(),
        format!("+OK {B}\n")
    );
    assert_eq!(
        next(&mut events).await,
        ("CHANNEL_BRIDGE".into(), A.into(), None)
    );
    assert_eq!(
        connection
            .api(&format!("uuid_kill {B} LOSE_RACE"))
            .await
            .unwrap(),
        "+OK\n"
    );
    assert_eq!(
        next(&mut events).await,
        (
            "CHANNEL_HANGUP_COMPLETE".into(),
            B.into(),
            Some("LOSE_RACE".into())
        )
    );
}
