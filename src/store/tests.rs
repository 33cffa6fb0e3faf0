//! What the integration tests cannot see: the SQLite connection settings, the change
//! feed's query plan, its pruning, its end.

use super::*;

/// A store on a new file in a private temporary directory, and its pool.
async fn sqlite_store() -> (tempfile::TempDir, DeviceStore, sqlx::SqlitePool) {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("devices.db");
    let store = DeviceStore::open(&StoreConfig {
        url: format!("sqlite:{}", path.display()),
    })
    .await
    .unwrap();
    let Pool::Sqlite(pool) = &store.inner.pool else {
        panic!("not sqlite")
    };
    let pool = pool.clone();
    (dir, store, pool)
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let (_dir, _store, pool) = sqlite_store().await;
    // Every connection of the pool, not just the first: hold them all at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = pool.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL is 2");
        held.push(conn);
    }
}

/// `n` changes in one statement (each device inserted is one log row).
async fn write_changes(pool: &sqlx::SqlitePool, n: i64) {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO pushwake_devices
             (extension, device_id, platform, token, params, learned, updated_at)
         SELECT printf('%06d', i), 'd', 'apns', 'tok-' || i, '[]', 0, 1 FROM n",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// A poll that finds nothing new is one query reading one row by the log's primary key,
/// and the device it names by the devices' key: no scan, whatever the table's size.
#[tokio::test]
async fn the_feeds_poll_reads_by_primary_keys_only() {
    let (_dir, _store, pool) = sqlite_store().await;
    write_changes(&pool, 2000).await;
    // The plan's rows are (id, parent, notused, detail): the detail says it.
    let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {}", sqlite::feed::READ))
        .bind(1990_i64)
        .bind(1001_i64)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, 3))
        .collect();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert!(
        plan[0].starts_with("SEARCH c USING INTEGER PRIMARY KEY (rowid>"),
        "{plan:?}"
    );
    assert!(
        plan[1].starts_with("SEARCH d USING INDEX sqlite_autoindex_pushwake_devices_1")
            && plan[1].contains("extension=? AND device_id=?"),
        "{plan:?}"
    );
    // And it reads what it should: from the position on, the position itself first.
    let (changes, read, next) = sqlite::feed::read(&pool, sqlite::feed::Position::At(1990))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((changes.len(), read), (10, 10));
    assert_eq!(next, sqlite::feed::Position::At(2000));
    let (changes, read, next) = sqlite::feed::read(&pool, next).await.unwrap().unwrap();
    assert_eq!(
        (changes, read, next),
        (vec![], 0, sqlite::feed::Position::At(2000))
    );
}

/// Pruning deletes what is both beyond the last KEEP_ROWS read and older than
/// KEEP_SECS, and nothing else.
#[tokio::test]
async fn the_change_log_is_pruned_of_old_rows_only() {
    use sqlite::feed::{prune, KEEP_ROWS, KEEP_SECS};
    let (_dir, _store, pool) = sqlite_store().await;
    let n = KEEP_ROWS + 50;
    write_changes(&pool, n).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pushwake_changes")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, n);
    // All young: nothing goes, however many.
    assert_eq!(prune(&pool, n, KEEP_ROWS, KEEP_SECS).await.unwrap(), 0);
    // The first 30 rows are two hours old, so are the last 10 (within the last KEEP_ROWS).
    sqlx::query("UPDATE pushwake_changes SET at = at - 7200 WHERE seq <= 30 OR seq > $1 - 10")
        .bind(n)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(prune(&pool, n, KEEP_ROWS, KEEP_SECS).await.unwrap(), 30);
    assert_eq!(count().await, n - 30);
    let oldest: i64 = sqlx::query_scalar("SELECT min(seq) FROM pushwake_changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(oldest, 31);
    assert_eq!(prune(&pool, n, KEEP_ROWS, KEEP_SECS).await.unwrap(), 0);
    // A reader further behind (at seq 20, pruned) finds its position gone…
    assert!(sqlite::feed::read(&pool, sqlite::feed::Position::At(20))
        .await
        .unwrap()
        .is_none());
    // … one at a row still kept does not.
    assert!(sqlite::feed::read(&pool, sqlite::feed::Position::At(31))
        .await
        .unwrap()
        .is_some());
}

/// The feed's task ends once its receiver is dropped.
#[tokio::test]
async fn the_feed_ends_with_its_receiver() {
    let (_dir, _store, pool) = sqlite_store().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(sqlite::feed::run(pool, tx));
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(first, Some(StoreChange::Resync));
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the feed's task is still running")
        .unwrap();
}

#[test]
fn urls_name_their_backend() {
    assert_eq!(
        parse_target("sqlite:/var/lib/pushwake/devices.db"),
        Ok(Target::Sqlite("/var/lib/pushwake/devices.db".into()))
    );
    assert_eq!(
        parse_target("sqlite:///var/lib/x.db"),
        Ok(Target::Sqlite("/var/lib/x.db".into()))
    );
    assert_eq!(
        parse_target("/srv/devices.db"),
        Ok(Target::Sqlite("/srv/devices.db".into()))
    );
    assert_eq!(parse_target("postgres://a@b/c"), Ok(Target::Postgres));
    assert_eq!(parse_target("PostgreSQL://a@b/c"), Ok(Target::Postgres));
    assert!(
        matches!(parse_target("mysql://a:b@c/d"), Err(StoreError::Config(m)) if m.contains("`mysql`") && !m.contains("a:b"))
    );
    assert!(matches!(
        parse_target("sqlite:"),
        Err(StoreError::Config(_))
    ));
}

#[test]
fn passwords_never_show() {
    let config = StoreConfig {
        url: "postgres://pushwake:s3cr%40t-pw@db.example:5433/pw?sslmode=require&password=other-pw"
            .into(),
    };
    for shown in [format!("{config:?}"), config.describe()] {
        assert!(
            !shown.contains("s3cr") && !shown.contains("other-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("pushwake:redacted@db.example:5433/pw"),
            "{shown}"
        );
        assert!(shown.contains("sslmode=require"), "{shown}");
    }
    let odd = StoreConfig {
        url: "weird://user:pw@host".into(),
    };
    assert!(!format!("{odd:?}").contains("pw@"));
}

#[test]
fn a_devices_token_and_secrets_never_show_in_debug() {
    let mut params = DeviceParams::default();
    params.set("topic", "com.example.voip");
    params.set_secret("alert_token", "alert-secret-123");
    let device = StoredDevice {
        extension: "101".into(),
        device_id: "phone".into(),
        platform: "apns".into(),
        token: "0123456789abcdef-token".into(),
        params,
        learned: true,
        updated_at: 7,
    };
    let shown = format!("{device:?} {:?}", StoreChange::Put(device.clone()));
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(!shown.contains("alert-secret-123"), "{shown}");
    assert!(
        shown.contains("com.example.voip") && shown.contains("phone"),
        "{shown}"
    );
}
