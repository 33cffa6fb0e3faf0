//! The device store on SQLite, a real file in a temporary directory: what it keeps,
//! across a restart and a `kill -9`, and what it refuses (unsafe modes, a newer schema,
//! a file that is no database).

mod store_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pushwake::store::{DeviceStore, StoreConfig, StoreError, SQLITE_SCHEMA_VERSION};
use store_common::{check_semantics, check_weird_tokens, device, device_with_params, timed};

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
    assert!(store.subscribe().is_some(), "SQLite has a change feed too");
    check_semantics(&store).await;
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
