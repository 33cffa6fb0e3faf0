//! The device store on SQLite, a real file in a temporary directory: what it keeps,
//! across a restart and a `kill -9`, and what it refuses (unsafe modes, a newer schema,
//! a file that is no database); the change feed between two stores on one file (the
//! daemon and `pushwake devices`) and from plain SQL on another connection; the upgrade
//! of a version-1 file.

mod store_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::collections::BTreeMap;

use pushwake::store::{
    DeviceStore, StoreChange, StoreConfig, StoreError, StoredDevice, SQLITE_SCHEMA_VERSION,
};
use store_common::{
    check_messages, check_semantics, check_weird_tokens, device, device_with_params, next_change,
    timed, WEIRD_TOKENS,
};
use tokio::sync::mpsc::Receiver;

/// How long a change may take to reach the other store's feed here: generous for a noisy
/// CI machine (the feed polls every 500 ms; the measured figures are printed).
const WITHIN: Duration = Duration::from_secs(5);

/// A temporary directory only its owner may enter, as the package's state directory.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    dir
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn config(path: &Path) -> StoreConfig {
    StoreConfig {
        url: format!("sqlite:{}", path.display()),
    }
}

async fn open(path: &Path) -> DeviceStore {
    DeviceStore::open(&config(path)).await.unwrap()
}

#[tokio::test]
async fn keeps_replaces_refuses_and_deletes_devices() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let store = open(&path).await;
    assert_eq!(store.backend(), "sqlite");
    check_semantics(&store).await;
}

#[tokio::test]
async fn keeps_messages_until_deleted_once_each() {
    let dir = private_dir();
    let store = open(&dir.path().join("devices.db")).await;
    check_messages(&store).await;
}

#[tokio::test]
async fn weird_tokens_round_trip_byte_for_byte() {
    let dir = private_dir();
    let store = open(&dir.path().join("devices.db")).await;
    check_weird_tokens(&store).await;
}

#[tokio::test]
async fn creates_a_private_file_and_keeps_everything_across_a_restart() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    // A plain path works as well as a sqlite: URL.
    let store = DeviceStore::open(&StoreConfig {
        url: path.display().to_string(),
    })
    .await
    .unwrap();
    assert_eq!(mode(&path), 0o600);
    let devices = [
        device_with_params("101", "phone", "tok-1"),
        device("102", "tablet", "fcm", "tok-2"),
    ];
    for d in &devices {
        store.put(d).await.unwrap();
    }
    // WAL mode: the write went to the -wal file, which is as private as the database.
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "no -wal file: not in WAL mode?");
    assert_eq!(mode(&wal), 0o600);
    drop(store);

    let again = open(&path).await;
    assert_eq!(again.load_all().await.unwrap(), devices.to_vec());
    again.delete("101", "phone").await.unwrap();
    drop(again);
    let third = open(&path).await;
    assert_eq!(third.load_all().await.unwrap(), devices[1..].to_vec());
}

const CHILD_ENV: &str = "PUSHWAKE_TEST_STORE_CHILD_DB";

/// Not a test: the child process of `a_write_survives_kill_9_right_after_put`. It puts
/// device after device, saying so on stdout after each put returned, until killed.
#[tokio::test]
#[ignore = "run by a_write_survives_kill_9_right_after_put as its child process"]
async fn child_puts_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&path)).await;
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        store
            .put(&device(
                "101",
                &format!("d{i:06}"),
                "apns",
                &format!("tok-{i}"),
            ))
            .await
            .unwrap();
        writeln!(out, "stored {i}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn a_write_survives_kill_9_right_after_put() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    // Create the file first, so the child's open is quick.
    drop(open(&path).await);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_puts_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stored = |line: &str| {
        line.strip_prefix("stored ")
            .map(|n| n.parse::<u64>().unwrap())
    };
    let mut last = None;
    // Kill it in the middle of its writes: right after the 20th put returned (while it
    // already makes the 21st).
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = stored(&line) {
            last = Some(n);
            if n >= 20 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever it reported before it died was committed.
    for line in lines {
        if let Some(n) = stored(&line.unwrap()) {
            last = Some(n);
        }
    }
    let last = last.expect("the child stored nothing");
    assert!(last >= 20);
    let after = open(&path).await.load_all().await.unwrap();
    assert!(
        after.len() as u64 > last,
        "{} devices after kill -9, but the child had reported {} puts",
        after.len(),
        last + 1
    );
    for i in 0..=last {
        assert_eq!(after[i as usize].device_id, format!("d{i:06}"));
        assert_eq!(after[i as usize].token, format!("tok-{i}"));
    }
}

#[tokio::test]
async fn refuses_files_and_directories_others_can_read_or_write() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    drop(open(&path).await);
    for bad in [0o644, 0o604, 0o660, 0o666] {
        chmod(&path, bad);
        match DeviceStore::open(&config(&path)).await {
            Err(StoreError::Config(message)) => {
                assert!(
                    message.contains(&path.display().to_string())
                        && message.contains(&format!("{bad:04o}")),
                    "{message}"
                );
            }
            other => panic!("mode {bad:04o}: expected a refusal, got {other:?}"),
        }
    }
    // Readable by the daemon's group only (as the configuration file): accepted.
    chmod(&path, 0o640);
    open(&path).await;
    chmod(&path, 0o600);

    for bad in [0o755, 0o777, 0o770, 0o1777] {
        chmod(dir.path(), bad);
        match DeviceStore::open(&config(&path)).await {
            Err(StoreError::Config(message)) => assert!(
                message.contains(&dir.path().display().to_string())
                    && message.contains(&format!("{bad:04o}")),
                "{message}"
            ),
            other => panic!("directory mode {bad:04o}: expected a refusal, got {other:?}"),
        }
    }
    // The package's state directory: 0750 pushwake:pushwake.
    chmod(dir.path(), 0o750);
    open(&path).await;

    let missing = dir.path().join("no/such/dir/devices.db");
    match DeviceStore::open(&config(&missing)).await {
        Err(StoreError::Config(message)) => assert!(message.contains("does not exist")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_a_newer_schema_and_a_file_that_is_no_database() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let store = open(&path).await;
    store
        .put(&device("101", "phone", "apns", "tok"))
        .await
        .unwrap();
    drop(store);
    {
        // As a newer pushwake would leave it.
        let db = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE pushwake_schema SET version = $1")
            .bind(SQLITE_SCHEMA_VERSION + 1)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
    match DeviceStore::open(&config(&path)).await {
        Err(e @ StoreError::Config(_)) => {
            let message = e.to_string();
            assert!(
                message.contains(&format!("schema version {}", SQLITE_SCHEMA_VERSION + 1))
                    && message.contains("newer")
                    && message.contains(&path.display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    chmod(&junk, 0o600);
    match DeviceStore::open(&config(&junk)).await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("not a database"), "{message}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// 100,000 devices are loaded in one query, fast. (Written here in one transaction with
/// SQL: through put(), each its own synced commit, they would take minutes.)
#[tokio::test]
async fn loads_100000_devices_quickly() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    drop(open(&path).await);
    {
        let db = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999)
             INSERT INTO pushwake_devices
                 (extension, device_id, platform, token, params, learned, updated_at)
             SELECT printf('%05d', i / 4), 'device-' || (i % 4), 'apns',
                    printf('%064x', i * 2654435761),
                    '[[\"topic\",\"com.example.voip\",false]]', i % 2, 1700000000 + i
             FROM n",
        )
        .execute(&db)
        .await
        .unwrap();
        db.close().await;
    }
    let store = open(&path).await;
    let (all, took) = timed(store.load_all()).await;
    let all = all.unwrap();
    println!("sqlite: load_all of {} devices took {took:?}", all.len());
    assert_eq!(all.len(), 100_000);
    assert!(all
        .windows(2)
        .all(|w| (&w[0].extension, &w[0].device_id) < (&w[1].extension, &w[1].device_id)));
    assert_eq!(all[5].extension, "00001");
    assert_eq!(all[5].params.get("topic"), Some("com.example.voip"));
    assert!(took < Duration::from_secs(10), "load_all took {took:?}");
}

/// A plain connection to the file, as another program (the sqlite3 shell) would have.
async fn plain(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap()
}

fn deleted(extension: &str, device_id: &str) -> StoreChange {
    StoreChange::Deleted {
        extension: extension.into(),
        device_id: device_id.into(),
    }
}

/// The daemon's store and the CLI's on one file: each one's puts and deletes of every
/// kind reach the other's feed (and the writer's own, as one cheap message each, never a
/// reload), with tokens and keys byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_see_each_others_changes() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let daemon = open(&path).await;
    let cli = open(&path).await;
    let mut feed = daemon.subscribe().expect("sqlite has a change feed");
    // A fresh file: the log is empty too.
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);

    let mut latencies = Vec::new();
    for i in 0..10 {
        let d = device_with_params("101", &format!("phone-{i}"), &format!("tok-'{i}'-ü"));
        let (put, took) = timed(async {
            cli.put(&d).await.unwrap();
            next_change(&mut feed, WITHIN).await
        })
        .await;
        assert_eq!(put, StoreChange::Put(d));
        latencies.push(took);
    }
    latencies.sort();
    println!(
        "sqlite: put by one store → Put on the other's feed: p50 {:?}, max {:?} (10 puts, \
         each put's commit included)",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );

    // Replaced, deleted, dead token, expired: each arrives.
    let replaced = device("101", "phone-3", "fcm", "tok-new");
    cli.put(&replaced).await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(replaced)
    );
    assert!(cli.delete("101", "phone-0").await.unwrap());
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("101", "phone-0")
    );
    assert_eq!(cli.delete_token("fcm", "tok-new").await.unwrap().len(), 1);
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("101", "phone-3")
    );
    let learned = StoredDevice {
        learned: true,
        updated_at: 5,
        ..device("102", "soft", "apns", "tok-l")
    };
    cli.put(&learned).await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(learned)
    );
    assert_eq!(cli.expire_learned(6).await.unwrap().len(), 1);
    assert_eq!(next_change(&mut feed, WITHIN).await, deleted("102", "soft"));

    // The daemon's own write comes back as that one device; the next message is the
    // CLI's next write, not a reload.
    let own = device("103", "own", "apns", "tok-own");
    daemon.put(&own).await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(own.clone())
    );
    cli.delete("103", "own").await.unwrap();
    assert_eq!(next_change(&mut feed, WITHIN).await, deleted("103", "own"));

    // Tokens, settings and keys that need quoting, byte for byte (all put, then all
    // deleted: distinct devices, so one message each, in order, however the polls fall).
    let mut weird = Vec::new();
    for (i, token) in WEIRD_TOKENS.iter().enumerate() {
        let mut d = device_with_params("1'0\"4;--ü", &format!("📱 \\'{i}'"), token);
        d.params.set_secret("also", *token);
        cli.put(&d).await.unwrap();
        weird.push(d);
    }
    for d in &weird {
        match next_change(&mut feed, WITHIN).await {
            StoreChange::Put(got) => {
                assert_eq!(got.token.as_bytes(), d.token.as_bytes());
                assert_eq!(&got, d);
            }
            other => panic!("expected the put of {:?}, got {other:?}", d.token),
        }
    }
    for d in &weird {
        cli.delete(&d.extension, &d.device_id).await.unwrap();
    }
    for d in &weird {
        assert_eq!(
            next_change(&mut feed, WITHIN).await,
            deleted(&d.extension, &d.device_id)
        );
    }

    // The other way round: the CLI's feed hears the daemon.
    let mut cli_feed = cli.subscribe().unwrap();
    match next_change(&mut cli_feed, WITHIN).await {
        StoreChange::Resync => {}
        other => panic!("expected a resync first, got {other:?}"),
    }
    let back = device("104", "back", "webhook", "tok-back");
    daemon.put(&back).await.unwrap();
    assert_eq!(
        next_change(&mut cli_feed, WITHIN).await,
        StoreChange::Put(back.clone())
    );
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Put(back));
}

/// Writes made with plain SQL on a connection of its own (as the sqlite3 shell would
/// make them, without pushwake's code) reach the feed: the triggers see every writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sql_writes_reach_the_feed() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let store = open(&path).await;
    let kept = device("100", "kept", "apns", "tok-kept");
    store.put(&kept).await.unwrap();
    let mut feed = store.subscribe().unwrap();
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);
    assert_eq!(store.load_all().await.unwrap(), vec![kept]);
    let db = plain(&path).await;

    let insert = "INSERT INTO pushwake_devices
                      (extension, device_id, platform, token, params, learned, updated_at)
                  VALUES ($1, $2, $3, $4, '[]', 0, 1700000000)";
    let token = "it's \"quoted\" ü 📞";
    sqlx::query(insert)
        .bind("101")
        .bind("shell")
        .bind("apns")
        .bind(token)
        .execute(&db)
        .await
        .unwrap();
    let shell = device("101", "shell", "apns", token);
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(shell.clone())
    );

    sqlx::query(
        "UPDATE pushwake_devices SET token = 'tok-2', updated_at = 7 WHERE device_id = 'shell'",
    )
    .execute(&db)
    .await
    .unwrap();
    let updated = StoredDevice {
        token: "tok-2".into(),
        updated_at: 7,
        ..shell.clone()
    };
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(updated.clone())
    );

    // A key changed in place: the old key is gone, the new one there.
    sqlx::query("UPDATE pushwake_devices SET device_id = 'renamed' WHERE device_id = 'shell'")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("101", "shell")
    );
    let renamed = StoredDevice {
        device_id: "renamed".into(),
        ..updated
    };
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(renamed)
    );

    // INSERT OR REPLACE evicting another device of the extension with the same token
    // (SQLite fires no delete trigger for that one): its deletion arrives too.
    sqlx::query(&insert.replace("INSERT", "INSERT OR REPLACE"))
        .bind("101")
        .bind("usurper")
        .bind("apns")
        .bind("tok-2")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("101", "renamed")
    );
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        StoreChange::Put(device("101", "usurper", "apns", "tok-2"))
    );

    sqlx::query("DELETE FROM pushwake_devices WHERE extension = '101'")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("101", "usurper")
    );
    assert_eq!(
        store.load_all().await.unwrap(),
        vec![device("100", "kept", "apns", "tok-kept")]
    );
    db.close().await;
}

/// Applies `change` to a cache as the registry does.
/// Applies one change to `cache`; a Resync reads `store` again, as the registry does.
async fn apply(
    store: &DeviceStore,
    cache: &mut BTreeMap<(String, String), StoredDevice>,
    change: StoreChange,
) {
    match change {
        StoreChange::Put(d) => {
            cache.insert((d.extension.clone(), d.device_id.clone()), d);
        }
        StoreChange::Deleted {
            extension,
            device_id,
        } => {
            cache.remove(&(extension, device_id));
        }
        StoreChange::Resync => {
            *cache = store
                .load_all()
                .await
                .unwrap()
                .into_iter()
                .map(|d| ((d.extension.clone(), d.device_id.clone()), d))
                .collect();
        }
    }
}

/// Applies the feed's changes to a cache until it holds `expected`.
async fn follow_until(
    store: &DeviceStore,
    feed: &mut Receiver<StoreChange>,
    cache: &mut BTreeMap<(String, String), StoredDevice>,
    expected: &[StoredDevice],
) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while cache.values().cloned().collect::<Vec<_>>() != expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        apply(store, cache, next_change(feed, left).await).await;
    }
}

/// The first message is a Resync; writes racing with the subscription are either in the
/// read that follows it or arrive after it, so a cache built from the feed alone ends up
/// as the store is. A bulk change (more rows than one poll reads at once) arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_built_from_the_feed_alone_misses_nothing() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let daemon = open(&path).await;
    let cli = open(&path).await;
    cli.put(&device("100", "before", "apns", "tok-before"))
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..30 {
            cli.put(&device("101", &format!("d{i:02}"), "fcm", &format!("t{i}")))
                .await
                .unwrap();
        }
        cli.delete("100", "before").await.unwrap();
        cli
    });
    let mut feed = daemon.subscribe().unwrap();
    let mut cache = BTreeMap::new();
    match next_change(&mut feed, WITHIN).await {
        first @ StoreChange::Resync => apply(&daemon, &mut cache, first).await,
        other => panic!("expected a resync first, got {other:?}"),
    }
    let cli = writer.await.unwrap();
    let expected = cli.load_all().await.unwrap();
    assert_eq!(expected.len(), 30);
    follow_until(&daemon, &mut feed, &mut cache, &expected).await;

    // 2,500 devices in one statement, then all of them deleted in another.
    let db = plain(&path).await;
    sqlx::raw_sql(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499)
         INSERT INTO pushwake_devices
             (extension, device_id, platform, token, params, learned, updated_at)
         SELECT printf('%05d', i), 'bulk', 'apns', 'tok-' || i, '[]', 1, 1700000000 + i
         FROM n",
    )
    .execute(&db)
    .await
    .unwrap();
    let expected = cli.load_all().await.unwrap();
    assert_eq!(expected.len(), 2530);
    follow_until(&daemon, &mut feed, &mut cache, &expected).await;
    assert_eq!(cli.expire_learned(i64::MAX).await.unwrap().len(), 2500);
    let expected = cli.load_all().await.unwrap();
    follow_until(&daemon, &mut feed, &mut cache, &expected).await;
    db.close().await;
}

/// The log lost rows the feed had not read (pruned by another process while this one
/// was not reading, or emptied by hand): the feed notices and sends a Resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_change_log_brings_a_resync() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    let store = open(&path).await;
    let first = device("100", "first", "apns", "tok-1");
    store.put(&first).await.unwrap();
    let mut feed = store.subscribe().unwrap();
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);
    assert_eq!(store.load_all().await.unwrap(), vec![first.clone()]);
    // One transaction: a device and the loss of every log row but its own, so the feed
    // can only see both at once.
    let db = plain(&path).await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO pushwake_devices
             (extension, device_id, platform, token, params, learned, updated_at)
         VALUES ('100', 'second', 'apns', 'tok-2', '[]', 0, 1700000000)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM pushwake_changes WHERE seq < (SELECT max(seq) FROM pushwake_changes)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let second = device("100", "second", "apns", "tok-2");
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);
    assert_eq!(store.load_all().await.unwrap(), vec![first, second.clone()]);
    // And it goes on from there.
    store.delete("100", "second").await.unwrap();
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("100", "second")
    );
    db.close().await;
}

/// The schema every file had before the change log (version 1), as pushwake wrote it.
const VERSION_1: &str = "
    CREATE TABLE pushwake_schema (version INTEGER NOT NULL);
    INSERT INTO pushwake_schema (version) VALUES (1);
    CREATE TABLE pushwake_devices (
        extension  TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        platform   TEXT NOT NULL,
        token      TEXT NOT NULL,
        params     TEXT NOT NULL,
        learned    INTEGER NOT NULL CHECK (learned IN (0, 1)),
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (extension, device_id)
    );
    CREATE UNIQUE INDEX pushwake_devices_extension_token
        ON pushwake_devices (extension, platform, token);
    CREATE INDEX pushwake_devices_token ON pushwake_devices (platform, token);
    CREATE INDEX pushwake_devices_learned ON pushwake_devices (updated_at) WHERE learned = 1;
    INSERT INTO pushwake_devices VALUES
        ('101', 'phone', 'apns', 'tok-''1''-ü',
         '[[\"topic\",\"com.example.voip\",false],[\"alert_token\",\"s\",true]]', 0, 1700000000),
        ('102', 'learned-fcm-00', 'fcm', 'tok-2', '[]', 1, 1700000100);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_upgraded_keeping_its_devices() {
    let dir = private_dir();
    let path = dir.path().join("devices.db");
    {
        // Written without WAL: a -wal file made here before the chmod below (with the
        // umask's 0644) could still be there when the store opens the file, which then
        // rightly refuses it; the store turns WAL on itself.
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete);
        let db = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(VERSION_1).execute(&db).await.unwrap();
        db.close().await;
    }
    chmod(&path, 0o600);
    let mut phone = device_with_params("101", "phone", "tok-'1'-ü");
    phone.params = Default::default();
    phone.params.set("topic", "com.example.voip");
    phone.params.set_secret("alert_token", "s");
    let learned = StoredDevice {
        learned: true,
        updated_at: 1_700_000_100,
        ..device("102", "learned-fcm-00", "fcm", "tok-2")
    };

    let store = open(&path).await;
    assert_eq!(
        store.load_all().await.unwrap(),
        vec![phone.clone(), learned.clone()]
    );
    let db = plain(&path).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM pushwake_schema")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(versions, vec![3]);
    assert_eq!(SQLITE_SCHEMA_VERSION, 3);
    let triggers: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        triggers,
        [
            "pushwake_devices_deleted",
            "pushwake_devices_inserted",
            "pushwake_devices_replacing",
            "pushwake_devices_replacing_update",
            "pushwake_devices_updated"
        ]
    );

    // The upgraded file has a feed like a new one.
    let mut feed = store.subscribe().unwrap();
    assert_eq!(next_change(&mut feed, WITHIN).await, StoreChange::Resync);
    assert_eq!(store.load_all().await.unwrap(), vec![phone, learned]);
    let other = open(&path).await;
    assert_eq!(other.delete_token("fcm", "tok-2").await.unwrap().len(), 1);
    assert_eq!(
        next_change(&mut feed, WITHIN).await,
        deleted("102", "learned-fcm-00")
    );
    // And it keeps messages.
    let kept = store_common::message("m1", "101", 1_700_000_200, Some(1));
    assert!(store.put_message(&kept).await.unwrap());
    assert_eq!(store.load_messages().await.unwrap(), vec![kept]);
    // Opening it again changes nothing.
    drop(open(&path).await);
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM pushwake_schema")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(versions, vec![3]);
    db.close().await;
}
