//! ARI requests that Asterisk's HTTP server drops, on a real Asterisk 22. It takes at
//! most `sessionlimit` connections at once (100 by default) and closes any beyond that
//! before answering, so a client that opens a connection per concurrent request loses
//! requests in a call storm (seen: 28 of 200 originates, "connection closed before
//! message completed"). pushwake's ARI client keeps its requests in flight under
//! [`pushwake_asterisk::MAX_REQUESTS_IN_FLIGHT`]; and a dial request lost with its
//! connection all the same (a restart, a proxy in between) is sent again while the
//! caller still waits; a caller's return to the dialplan, too, until Asterisk takes it.

use std::time::Duration;

use pushwake_asterisk::AriClient;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, Phone};

const SLOT: u8 = 37;
const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_past_asterisks_session_limit_all_get_answers() {
    let pbx = TestAsterisk::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = AriClient::new(&pbx.ari_url, &pbx.ari_user, &pbx.ari_password).unwrap();
    // Half again Asterisk's default limit, all at once.
    let burst = 150;
    let started = tokio::time::Instant::now();
    let answers = futures_util::future::join_all((0..burst).map(|_| client.ping())).await;
    let failed: Vec<String> = answers
        .into_iter()
        .filter_map(|answer| answer.err().map(|e| e.to_string()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {burst} requests failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{burst} pings took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_request_lost_with_its_connection_is_sent_again_and_the_phone_answers() {
    let (mut rig, proxy) = Rig::asterisk_behind_proxy(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    let token = "37aa".repeat(16);
    let extension = rig.phone_number(1);
    let config = rig
        .config()
        .extension(TestExtension::new(&extension, "20s").device(TestDevice::apns(token.clone())));
    rig.start(config).await;
    // A phone already registered: its contact is dialled as soon as the caller comes.
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    rig.register(1, 1, 120, &token).await;

    // The first originate's connection is closed unanswered, as past the session limit.
    proxy.close_next("POST /ari/channels", 1);
    let mut caller = rig.call(
        &extension,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 },
    );
    rig.finish(&mut caller, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    assert_eq!(
        proxy.closes_left(),
        0,
        "the first dial request never went through the proxy: {:?}",
        proxy.requests()
    );
    assert!(
        proxy.count("POST /ari/channels") >= 2,
        "no second dial request: {:?}",
        proxy.requests()
    );
    let logs = rig.logs();
    assert!(
        logs.contains("the PBX could not be reached; dialling again"),
        "the lost request was not reported: {logs}"
    );
    assert!(logs.contains("dialling contact again"), "{logs}");
    rig.register(1, 1, 0, &token).await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_to_the_dialplan_asterisk_keeps_dropping_is_sent_until_it_goes_through() {
    let (mut rig, proxy) = Rig::asterisk_behind_proxy(38, env!("CARGO_BIN_EXE_pushwake")).await;
    let token = "38aa".repeat(16);
    let extension = rig.phone_number(1);
    let config = rig
        .config()
        .extension(TestExtension::new(&extension, "4s").device(TestDevice::apns(token.clone())));
    rig.start(config).await;
    // Nothing wakes; when the ring window ends, the return's first six requests (setting
    // PUSHWAKE_STATUS on the caller) have their connections closed unanswered: more
    // failures in a row than any other command is retried for.
    proxy.close_next("POST /ari/channels/{id}/variable", 6);
    let mut caller = rig.call(&extension, CallerEnd::Refused(480));
    rig.finish(&mut caller, SECS(60)).await;
    assert_eq!(
        proxy.closes_left(),
        0,
        "the return did not go through the proxy six times: {:?}",
        proxy.requests()
    );
    let logs = rig.logs();
    assert!(
        logs.matches("PBX command failed; retrying command=\"return\"")
            .count()
            >= 6,
        "{logs}"
    );
    rig.assert_clean().await;
}
