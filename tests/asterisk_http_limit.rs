//! A burst of ARI requests on a real Asterisk: its HTTP server takes at most
//! `sessionlimit` connections at once (100 by default) and closes any beyond that
//! before answering, so a client that opens a connection per concurrent request loses
//! requests in a call storm (seen: 28 of 200 originates, "connection closed before
//! message completed"). pushwake's ARI client keeps its requests in flight under
//! [`pushwake_asterisk::MAX_REQUESTS_IN_FLIGHT`].

use std::time::Duration;

use pushwake_asterisk::AriClient;
use pushwake_testkit::asterisk::TestAsterisk;

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
