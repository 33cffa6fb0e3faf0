//! The device store on a real PostgreSQL server, started by the test itself (Debian's
//! `postgresql` package, `pushwake_testkit::postgres`): two stores — two pushwake
//! nodes — see each other's changes within a second; a stopped server fails operations
//! fast with `Unavailable`; the subscription recovers on its own when it is back.

mod store_common;

use std::time::Duration;

use pushwake::store::{DeviceStore, StoreChange, StoreConfig, StoreError, POSTGRES_SCHEMA_VERSION};
use pushwake_testkit::postgres::TestPostgres;
use store_common::{
    check_messages, check_semantics, check_weird_tokens, device, device_with_params, next_change,
    timed,
};

/// Generous for a noisy CI machine; the measured figures are printed.
const WITHIN: Duration = Duration::from_secs(5);

fn server() -> &'static TestPostgres {
    TestPostgres::shared().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
}

async fn fresh_database(prefix: &str) -> String {
    server().create_database(prefix).unwrap()
}

async fn open(url: &str) -> DeviceStore {
    DeviceStore::open(&StoreConfig { url: url.into() })
        .await
        .unwrap()
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_replaces_refuses_and_deletes_devices() {
    let store = open(&fresh_database("semantics").await).await;
    assert_eq!(store.backend(), "postgres");
    check_semantics(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_messages_until_deleted_once_each() {
    let store = open(&fresh_database("messages").await).await;
    check_messages(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weird_tokens_round_trip_byte_for_byte() {
    let store = open(&fresh_database("weird").await).await;
    check_weird_tokens(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_others_devices_within_a_second() {
    let url = fresh_database("nodes").await;
    let (a, b) = (open(&url).await, open(&url).await);
    let mut feed_a = a.subscribe().expect("postgres has a change feed");
    let mut feed_b = b.subscribe().expect("postgres has a change feed");
    assert_eq!(next_change(&mut feed_a, WITHIN).await, StoreChange::Resync);
    assert_eq!(next_change(&mut feed_b, WITHIN).await, StoreChange::Resync);

    // A device put on node a arrives on node b (and a hears its own write, in order).
    let mut latencies = Vec::new();
    for i in 0..20 {
        let d = device_with_params("101", &format!("phone-{i}"), &format!("tok-'{i}'-ü"));
        let (put, took) = timed(async {
            a.put(&d).await.unwrap();
            next_change(&mut feed_b, WITHIN).await
        })
        .await;
        assert_eq!(put, StoreChange::Put(d.clone()));
        latencies.push(took);
        assert_eq!(next_change(&mut feed_a, WITHIN).await, StoreChange::Put(d));
    }
    let (p50, max) = median(latencies);
    println!("postgres: put on one store → Put on the other's feed: p50 {p50:?}, max {max:?} (20 puts, each put's commit included)");
    assert!(max < WITHIN);

    // From here on, every change reaches both feeds: the other node's and the writer's
    // own echo.
    async fn on_both(
        a: &mut tokio::sync::mpsc::Receiver<StoreChange>,
        b: &mut tokio::sync::mpsc::Receiver<StoreChange>,
        change: StoreChange,
    ) {
        assert_eq!(next_change(a, WITHIN).await, change);
        assert_eq!(next_change(b, WITHIN).await, change);
    }
    let deleted = |e: &str, d: &str| StoreChange::Deleted {
        extension: e.into(),
        device_id: d.into(),
    };

    // Node b replaces one; node a sees the new version.
    let replaced = device("101", "phone-3", "fcm", "tok-new");
    b.put(&replaced).await.unwrap();
    on_both(&mut feed_a, &mut feed_b, StoreChange::Put(replaced)).await;

    // Deletes of every kind.
    assert!(a.delete("101", "phone-0").await.unwrap());
    on_both(&mut feed_a, &mut feed_b, deleted("101", "phone-0")).await;
    assert_eq!(b.delete_token("fcm", "tok-new").await.unwrap().len(), 1);
    on_both(&mut feed_a, &mut feed_b, deleted("101", "phone-3")).await;
    let learned = StoredDeviceExt::learned(device("102", "soft", "apns", "tok-l"), 5);
    b.put(&learned).await.unwrap();
    on_both(&mut feed_a, &mut feed_b, StoreChange::Put(learned)).await;
    assert_eq!(a.expire_learned(6).await.unwrap().len(), 1);
    on_both(&mut feed_a, &mut feed_b, deleted("102", "soft")).await;
    // Keys and token that need quoting travel through the notification intact.
    let odd = device_with_params("1'0\"1;--ü", "📱 \\'id'", "x'); NOTIFY x; --");
    a.put(&odd).await.unwrap();
    on_both(&mut feed_a, &mut feed_b, StoreChange::Put(odd.clone())).await;
    a.delete(&odd.extension, &odd.device_id).await.unwrap();
    on_both(
        &mut feed_a,
        &mut feed_b,
        deleted(&odd.extension, &odd.device_id),
    )
    .await;
    // A put then a delete at once: the put's device is gone when the feed reads it, so
    // only the deletion arrives.
    let brief = device("103", "brief", "apns", "tok-brief");
    a.put(&brief).await.unwrap();
    a.delete("103", "brief").await.unwrap();
    let first = next_change(&mut feed_b, WITHIN).await;
    if first != deleted("103", "brief") {
        assert_eq!(
            first,
            StoreChange::Put(brief),
            "a put may still be read in time"
        );
        assert_eq!(
            next_change(&mut feed_b, WITHIN).await,
            deleted("103", "brief")
        );
    }
    assert!(feed_b.try_recv().is_err(), "nothing more");

    // A third node that joins later starts from everything, in a Resync.
    let c = open(&url).await;
    let mut feed_c = c.subscribe().unwrap();
    match next_change(&mut feed_c, WITHIN).await {
        StoreChange::Resync => {}
        other => panic!("expected a resync, got {other:?}"),
    }
    // Someone empties the table by hand: everyone resyncs.
    sqlx::query("TRUNCATE pushwake_devices")
        .execute(&sqlx::PgPool::connect(&url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed_c, WITHIN).await, StoreChange::Resync);
}

trait StoredDeviceExt {
    fn learned(self, at: i64) -> Self;
}

impl StoredDeviceExt for pushwake::store::StoredDevice {
    fn learned(mut self, at: i64) -> Self {
        self.learned = true;
        self.updated_at = at;
        self
    }
}

/// The server stops under a running store: every operation fails with Unavailable
/// within seconds (none hangs); once the server is back, the same store works again and
/// its subscription resyncs by itself, then delivers new changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_fast_and_the_feed_recovers() {
    // A server of its own: this test stops it.
    let (pg, started) = timed(async { TestPostgres::start() }).await;
    let mut pg = pg.unwrap();
    println!("postgres: a fresh cluster (initdb) and server started in {started:?}");
    let store = open(&pg.url()).await;
    let other = open(&pg.url()).await;
    let mut feed = store.subscribe().unwrap();
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);
    let kept = device("101", "phone", "apns", "tok-kept");
    store.put(&kept).await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(kept.clone())
    );

    tokio::task::block_in_place(|| pg.stop()).unwrap();

    // All at once: each must fail by itself within seconds.
    let tablet = device("101", "tablet", "fcm", "tok-2");
    let ((ping, ping_took), (put, put_took), (load, load_took), (delete, delete_took)) = tokio::join!(
        timed(store.ping()),
        timed(store.put(&tablet)),
        timed(store.load_all()),
        timed(store.delete("101", "phone")),
    );
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    match &put {
        Err(e @ StoreError::Unavailable(_)) => {
            let shown = e.to_string();
            assert!(
                !shown.contains(pushwake_testkit::postgres::PASSWORD),
                "{shown}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(load, Err(StoreError::Unavailable(_))), "{load:?}");
    assert!(
        matches!(delete, Err(StoreError::Unavailable(_))),
        "{delete:?}"
    );
    println!(
        "postgres stopped: ping failed after {ping_took:?}, put after {put_took:?}, \
         load_all after {load_took:?}, delete after {delete_took:?} ({put:?})"
    );
    assert!(
        ping_took < Duration::from_millis(1500),
        "ping took {ping_took:?}"
    );
    for took in [put_took, load_took, delete_took] {
        assert!(took < Duration::from_secs(4), "an operation took {took:?}");
    }
    // Nothing arrives while it is down.
    assert!(feed.try_recv().is_err());

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let (resync, resync_took) = timed(next_change(&mut feed, Duration::from_secs(15))).await;
    assert_eq!(resync, StoreChange::Resync);
    assert_eq!(store.load_all().await.unwrap(), vec![kept.clone()]);
    println!("postgres back: the feed resynced {resync_took:?} after the server was ready");
    // The same stores, not reopened, work again; changes flow again.
    store.ping().await.unwrap();
    let new = device("101", "tablet", "fcm", "tok-2");
    other.put(&new).await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(new.clone())
    );
    assert_eq!(store.load_all().await.unwrap(), vec![kept, new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_at_open_fails_fast() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://pushwake:very-secret-pw@127.0.0.1:{port}/pushwake");
    let (open, took) = timed(DeviceStore::open(&StoreConfig { url })).await;
    match open {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(!e.to_string().contains("very-secret-pw"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(4), "open took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_configuration_error_that_does_not_show_it() {
    let url = server()
        .url()
        .replace(pushwake_testkit::postgres::PASSWORD, "wrong-pw-1234");
    match DeviceStore::open(&StoreConfig { url }).await {
        Err(e @ StoreError::Config(_)) => {
            let shown = e.to_string();
            assert!(shown.contains("password authentication failed"), "{shown}");
            assert!(!shown.contains("wrong-pw-1234"), "{shown}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let url = fresh_database("migrate").await;
    let opens = futures_util::future::join_all((0..4).map(|_| {
        let url = url.clone();
        async move { DeviceStore::open(&StoreConfig { url }).await }
    }))
    .await;
    for opened in opens {
        opened.unwrap();
    }
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM pushwake_schema")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(versions, vec![POSTGRES_SCHEMA_VERSION]);
    sqlx::query("UPDATE pushwake_schema SET version = $1")
        .bind(POSTGRES_SCHEMA_VERSION + 1)
        .execute(&db)
        .await
        .unwrap();
    match DeviceStore::open(&StoreConfig { url }).await {
        Err(StoreError::Config(message)) => assert!(
            message.contains(&format!("schema version {}", POSTGRES_SCHEMA_VERSION + 1))
                && message.contains("newer"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// 100,000 devices load in one query. (Written with one INSERT … SELECT here: through
/// put() they would be 100,000 transactions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_100000_devices_quickly() {
    let url = fresh_database("load").await;
    let store = open(&url).await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO pushwake_devices
             (extension, device_id, platform, token, params, learned, updated_at)
         SELECT lpad((i / 4)::text, 5, '0'), 'device-' || (i % 4), 'apns', md5(i::text) || md5(i::text),
                '[[\"topic\",\"com.example.voip\",false]]', i % 2 = 1, 1700000000 + i
         FROM generate_series(0, 99999) AS i",
    )
    .execute(&db)
    .await
    .unwrap();
    let (all, took) = timed(store.load_all()).await;
    let all = all.unwrap();
    println!("postgres: load_all of {} devices took {took:?}", all.len());
    assert_eq!(all.len(), 100_000);
    assert!(all
        .windows(2)
        .all(|w| (&w[0].extension, &w[0].device_id) < (&w[1].extension, &w[1].device_id)));
    assert_eq!(all[5].params.get("topic"), Some("com.example.voip"));
    assert!(took < Duration::from_secs(10), "load_all took {took:?}");
}
