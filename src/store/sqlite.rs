//! The SQLite backend: one file, WAL mode, `synchronous=FULL`.
//!
//! Why FULL rather than NORMAL: in WAL mode NORMAL keeps the database consistent after a
//! power loss but may lose the last transactions (the WAL is synced only at checkpoints),
//! and the device API answers 2xx once a write returned. FULL syncs the WAL at every
//! commit; a device write is rare, so the cost (one fsync per write) does not matter.
//! `kill -9` loses nothing in either mode: a commit is in the operating system's hands
//! before `put` returns.
//!
//! Other processes on the machine (`pushwake devices`, the sqlite3 shell) may write the
//! file while the daemon has it open: WAL lets readers go on during a write, writers
//! wait for each other up to [`BUSY_TIMEOUT`], and triggers log every change of the
//! devices, which [`feed`] delivers to [`subscribe`]rs within about a second.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use pushwake_core::messages::Message;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row, SqlitePool};
use tokio::sync::mpsc;

use super::{
    device_from_row, params_to_json, store_error, StoreChange, StoreError, StoredDevice,
    DEVICE_COLUMNS, SQLITE_SCHEMA_VERSION,
};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(4);

/// The location in messages.
const WHAT: &str = "SQLite";

/// Each migration takes the schema from the version before it to its own (index + 1).
const MIGRATIONS: &[&str] = &[
    // 1: the devices.
    "CREATE TABLE pushwake_devices (
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
    CREATE INDEX pushwake_devices_learned ON pushwake_devices (updated_at) WHERE learned = 1;",
    // 2: the change log, filled by triggers, so that every writer of the file (another
    // pushwake process, `pushwake devices`, the sqlite3 shell) is seen by the feed (see
    // [`feed`]). A row names a device that changed; the feed reads its current state.
    // AUTOINCREMENT: a seq is never used twice, even after the newest rows were deleted.
    // `at` (Unix seconds) is for pruning only.
    "CREATE TABLE pushwake_changes (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        extension TEXT NOT NULL,
        device_id TEXT NOT NULL,
        at        INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
    );
    CREATE TRIGGER pushwake_devices_inserted AFTER INSERT ON pushwake_devices BEGIN
        INSERT INTO pushwake_changes (extension, device_id)
            VALUES (NEW.extension, NEW.device_id);
    END;
    CREATE TRIGGER pushwake_devices_updated AFTER UPDATE ON pushwake_devices BEGIN
        INSERT INTO pushwake_changes (extension, device_id)
            SELECT OLD.extension, OLD.device_id
            WHERE OLD.extension IS NOT NEW.extension OR OLD.device_id IS NOT NEW.device_id;
        INSERT INTO pushwake_changes (extension, device_id)
            VALUES (NEW.extension, NEW.device_id);
    END;
    CREATE TRIGGER pushwake_devices_deleted AFTER DELETE ON pushwake_devices BEGIN
        INSERT INTO pushwake_changes (extension, device_id)
            VALUES (OLD.extension, OLD.device_id);
    END;
    -- INSERT OR REPLACE and UPDATE OR REPLACE (the sqlite3 shell's habits) delete a row
    -- that holds the same extension, platform and token without firing its delete
    -- trigger (unless that connection set recursive_triggers): name it beforehand. If the
    -- statement then fails instead, this row goes with it. (pushwake's own put checks
    -- for such a device first and meets none: one indexed lookup.)
    CREATE TRIGGER pushwake_devices_replacing BEFORE INSERT ON pushwake_devices BEGIN
        INSERT INTO pushwake_changes (extension, device_id)
            SELECT extension, device_id FROM pushwake_devices
            WHERE extension = NEW.extension AND platform = NEW.platform
              AND token = NEW.token AND device_id <> NEW.device_id;
    END;
    CREATE TRIGGER pushwake_devices_replacing_update
        BEFORE UPDATE OF extension, platform, token ON pushwake_devices BEGIN
        INSERT INTO pushwake_changes (extension, device_id)
            SELECT extension, device_id FROM pushwake_devices
            WHERE extension = NEW.extension AND platform = NEW.platform
              AND token = NEW.token
              AND NOT (extension = OLD.extension AND device_id = OLD.device_id);
    END;",
    // 3: the messages kept for sleeping phones (`pushwake_core::messages`). A sender's
    // retransmission repeats its Call-ID and CSeq: unique together (NULLs, a message
    // without them, never collide).
    "CREATE TABLE pushwake_messages (
        id           TEXT PRIMARY KEY,
        extension    TEXT NOT NULL,
        sender       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body         TEXT NOT NULL,
        received_at  INTEGER NOT NULL,
        call_id      TEXT,
        cseq         INTEGER
    );
    CREATE UNIQUE INDEX pushwake_messages_dedup ON pushwake_messages (call_id, cseq);
    CREATE INDEX pushwake_messages_extension ON pushwake_messages (extension, received_at);",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SQLITE_SCHEMA_VERSION);

/// A file or directory mode that lets other users in: a file others may read or the
/// group may write (as pushwake's other secret files), a directory others may read or
/// write or the group may write.
fn unsafe_mode(mode: u32, is_dir: bool) -> bool {
    let others = if is_dir { 0o006 } else { 0o007 };
    mode & others != 0 || mode & 0o020 != 0
}

fn check_mode(path: &Path, is_dir: bool) -> Result<(), StoreError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| StoreError::Config(format!("cannot inspect {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    if is_dir && !meta.is_dir() {
        return Err(StoreError::Config(format!(
            "{} (the device store's directory) is not a directory",
            path.display()
        )));
    }
    if !is_dir && !meta.is_file() {
        return Err(StoreError::Config(format!(
            "the device store {} is not a regular file",
            path.display()
        )));
    }
    if unsafe_mode(mode, is_dir) {
        let (what, fix) = if is_dir {
            ("the device store's directory", "chmod 0750")
        } else {
            ("the device store", "chmod 0600")
        };
        return Err(StoreError::Config(format!(
            "{} is {what} and has mode {mode:04o}; it holds push tokens, other users must \
             not read or write it: {fix} {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Opens (creating if needed) the store at `path`.
pub(super) async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        return Err(StoreError::Config(format!(
            "the device store's directory {} does not exist",
            dir.display()
        )));
    }
    check_mode(dir, true)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(StoreError::Config(format!(
                "cannot create the device store {}: {e}",
                path.display()
            )))
        }
    }
    check_mode(path, false)?;
    // SQLite gives its -wal and -shm files the database file's mode; check any left over.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = Path::new(&side);
        if side.exists() {
            check_mode(side, false)?;
        }
    }

    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        // Every device is read once, at start, into memory: a page cache of SQLite's
        // default 2 MiB per connection would only keep pages nobody reads again.
        .pragma("cache_size", "-256")
        .row_buffer_size(1024);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .acquire_timeout(super::OP_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| located(e, path))?;
    migrate(&pool).await.map_err(|e| match e {
        StoreError::Config(m) => StoreError::Config(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok(pool)
}

/// A connection error naming the file.
fn located(error: sqlx::Error, path: &Path) -> StoreError {
    store_error(error, &format!("SQLite {}", path.display()))
}

fn err(error: sqlx::Error) -> StoreError {
    store_error(error, WHAT)
}

/// Brings the schema to [`SQLITE_SCHEMA_VERSION`], in one write transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
    (&mut *tx)
        .execute(sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS pushwake_schema (version INTEGER NOT NULL)",
        ))
        .await
        .map_err(err)?;
    let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM pushwake_schema")
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let pending = super::pending_migrations(version, MIGRATIONS, None)?;
    if pending.is_empty() {
        return Ok(());
    }
    for migration in pending {
        (&mut *tx)
            .execute(sqlx::raw_sql(migration))
            .await
            .map_err(err)?;
    }
    sqlx::query("DELETE FROM pushwake_schema")
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::query("INSERT INTO pushwake_schema (version) VALUES ($1)")
        .bind(SQLITE_SCHEMA_VERSION)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// SQLite's error codes: a damaged file is [`StoreError::Corrupt`], a lock held too long
/// or a failing disk [`StoreError::Unavailable`]. A full disk and a file system turned
/// read-only (ext4's `errors=remount-ro`) are failing disks too: the write is refused
/// with 503 and `Retry-After`, or waits in the writer, until the operator has made room;
/// answering them as a broken database (500) would tell a client not to try again.
pub(super) fn classify(code: &str, message: String) -> StoreError {
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        // SQLITE_CORRUPT, SQLITE_NOTADB
        11 | 26 => StoreError::Corrupt(message),
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL,
        // SQLITE_CANTOPEN, SQLITE_PROTOCOL
        5 | 6 | 8 | 10 | 13 | 14 | 15 => StoreError::Unavailable(message),
        _ => StoreError::Database(message),
    }
}

pub(super) async fn load_each(
    pool: &SqlitePool,
    mut each: impl FnMut(StoredDevice),
) -> Result<(), StoreError> {
    use futures_util::TryStreamExt;
    // Row by row: all the rows at once would hold every device twice while they are
    // converted (about 140 MiB more at the peak for 100,000 devices).
    let sql =
        format!("SELECT {DEVICE_COLUMNS} FROM pushwake_devices ORDER BY extension, device_id");
    let mut rows = sqlx::query(&sql).fetch(pool);
    while let Some(row) = rows.try_next().await.map_err(err)? {
        each(device_from_row(&row)?);
    }
    Ok(())
}

pub(super) async fn get(
    pool: &SqlitePool,
    extension: &str,
    device_id: &str,
) -> Result<Option<StoredDevice>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM pushwake_devices WHERE extension = $1 AND device_id = $2"
    ))
    .bind(extension)
    .bind(device_id)
    .fetch_optional(pool)
    .await
    .map_err(err)?;
    row.as_ref().map(device_from_row).transpose()
}

pub(super) async fn put(pool: &SqlitePool, device: &StoredDevice) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(err)?;
    // IMMEDIATE: the write lock is taken first, so the check and the write see one state.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let result = put_in_transaction(&mut conn, device).await;
    if result.is_err() {
        // A statement or a COMMIT that failed (a full disk: SQLITE_FULL) leaves the
        // transaction open. Rolled back here, or if even that fails the connection is
        // closed: the pool must never hand out a connection stuck in a transaction (with
        // sqlx's own transactions it did, and every later write on it failed with
        // "attempted to call begin_with at non-zero transaction depth", so a learned
        // device waiting for room was dropped as refused).
        if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            let _ = conn.close().await;
        }
    }
    result
}

/// [`put`]'s statements and the COMMIT, inside its transaction.
async fn put_in_transaction(
    conn: &mut sqlx::SqliteConnection,
    device: &StoredDevice,
) -> Result<(), StoreError> {
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT device_id FROM pushwake_devices
         WHERE extension = $1 AND platform = $2 AND token = $3 AND device_id <> $4",
    )
    .bind(&device.extension)
    .bind(&device.platform)
    .bind(&device.token)
    .bind(&device.device_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(err)?;
    if let Some(holder) = holder {
        return Err(StoreError::Conflict {
            extension: device.extension.clone(),
            device_id: holder,
            platform: device.platform.clone(),
        });
    }
    sqlx::query(
        "INSERT INTO pushwake_devices
             (extension, device_id, platform, token, params, learned, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (extension, device_id) DO UPDATE SET
             platform = excluded.platform, token = excluded.token, params = excluded.params,
             learned = excluded.learned, updated_at = excluded.updated_at",
    )
    .bind(&device.extension)
    .bind(&device.device_id)
    .bind(&device.platform)
    .bind(&device.token)
    .bind(params_to_json(&device.params))
    .bind(device.learned)
    .bind(device.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(err)?;
    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(err)
}

pub(super) async fn delete(
    pool: &SqlitePool,
    extension: &str,
    device_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM pushwake_devices WHERE extension = $1 AND device_id = $2")
        .bind(extension)
        .bind(device_id)
        .execute(pool)
        .await
        .map_err(err)?;
    Ok(done.rows_affected() > 0)
}

fn keys(rows: Vec<sqlx::sqlite::SqliteRow>) -> Result<Vec<(String, String)>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>(0).map_err(err)?,
                row.try_get::<String, _>(1).map_err(err)?,
            ))
        })
        .collect()
}

pub(super) async fn delete_token(
    pool: &SqlitePool,
    platform: &str,
    token: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM pushwake_devices WHERE platform = $1 AND token = $2
         RETURNING extension, device_id",
    )
    .bind(platform)
    .bind(token)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    keys(rows)
}

pub(super) async fn expire_learned(
    pool: &SqlitePool,
    before: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM pushwake_devices WHERE learned = 1 AND updated_at < $1
         RETURNING extension, device_id",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    keys(rows)
}

pub(super) async fn ping(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("SELECT version FROM pushwake_schema")
        .fetch_optional(pool)
        .await
        .map_err(err)?;
    Ok(())
}

pub(super) fn subscribe(pool: &SqlitePool) -> mpsc::Receiver<StoreChange> {
    let (tx, rx) = mpsc::channel(feed::QUEUE);
    tokio::spawn(feed::run(pool.clone(), tx));
    rx
}

/// The change feed of a SQLite file: a task that polls the change log
/// (`pushwake_changes`, filled by the triggers of migration 2) every [`feed::POLL`].
///
/// The position is the seq of the last log row read. Each poll asks for the rows from
/// that seq on, **itself included**, joined with the devices they name: the row at the
/// position coming back first proves that nothing between it and the next was pruned
/// (whatever the seqs look like); when it is missing, the log lost rows this feed had not
/// read, and a [`StoreChange::Resync`] follows. A write transaction commits its log rows
/// with its devices, and SQLite has one writer at a time, so a poll never sees a newer
/// row without the older ones. When nothing changed, a poll is one query that reads one
/// row by its primary key (and the device it names by its own).
///
/// The poller also prunes the log, at most every [`feed::PRUNE_EVERY`]: rows older than
/// [`feed::KEEP_SECS`] beyond the last [`feed::KEEP_ROWS`] it has read. Another reader of
/// the same file (the other process) thus finds its position again unless it stopped
/// reading for an hour and 10,000 changes; if it did, it resyncs.
pub(super) mod feed {
    use std::collections::HashMap;
    use std::time::Duration;

    use sqlx::{Row, SqlitePool};
    use tokio::sync::mpsc;
    use tokio::time::{Instant, MissedTickBehavior};

    use super::{err, StoreChange, StoreError};
    #[cfg(doc)]
    use crate::store::DEVICE_COLUMNS;
    use crate::store::{bounded, device_from_row, OP_TIMEOUT};

    /// How often the log is read.
    pub(crate) const POLL: Duration = Duration::from_millis(500);
    /// How many log rows one query reads at most (a bulk change is read in several).
    const BATCH: i64 = 1000;
    /// How many changes may wait for the registry before the poller waits too.
    pub(crate) const QUEUE: usize = 1024;
    /// Pruning keeps at least the last this many rows this feed has read…
    pub(crate) const KEEP_ROWS: i64 = 10_000;
    /// … and every row younger than this (seconds).
    pub(crate) const KEEP_SECS: i64 = 3600;
    /// How often pruning is tried.
    pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(60);

    /// Where the feed is in the log.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Position {
        /// The seq of the last row read: the next poll must find it again.
        At(i64),
        /// The log was empty: any row is new.
        Empty,
    }

    /// What a poll found.
    enum Polled {
        /// Read up to here.
        At(Position),
        /// The log no longer holds the position: resync.
        Gap,
        /// The receiver is gone.
        Closed,
    }

    /// The task: a resync first, then a poll every [`POLL`], until the receiver goes.
    pub(crate) async fn run(pool: SqlitePool, tx: mpsc::Sender<StoreChange>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // None: a resync is due (at the start, and after a gap).
        let mut position: Option<Position> = None;
        let mut failing = false;
        let mut pruned = Instant::now();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let mut step = match position {
                None => resync(&pool, &tx).await,
                Some(at) => poll(&pool, &tx, at).await,
            };
            if let Ok(Polled::Gap) = step {
                tracing::info!(
                    "device store: SQLite's change log no longer holds this feed's position \
                     (pruned or emptied meanwhile); reloading every device"
                );
                position = None;
                step = resync(&pool, &tx).await;
            }
            match step {
                Ok(Polled::Closed) => return,
                Ok(Polled::At(at)) => {
                    position = Some(at);
                    if std::mem::take(&mut failing) {
                        tracing::info!("device store: the SQLite change feed works again");
                    }
                }
                Ok(Polled::Gap) => position = None,
                Err(error) => {
                    // Tried again at the next tick, from the same position.
                    if std::mem::replace(&mut failing, true) {
                        tracing::debug!(%error, "device store: SQLite change feed still failing");
                    } else {
                        tracing::warn!(%error, "device store: cannot read SQLite's change log; retrying");
                    }
                }
            }
            if let Some(Position::At(seen)) = position {
                if pruned.elapsed() >= PRUNE_EVERY {
                    pruned = Instant::now();
                    if let Err(error) = prune(&pool, seen, KEEP_ROWS, KEEP_SECS).await {
                        tracing::debug!(%error, "device store: could not prune SQLite's change log");
                    }
                }
            }
        }
    }

    /// The log's end, then a `Resync`: whatever is committed after the end was taken is
    /// read by the following polls (again, if the receiver's read already had it:
    /// harmless).
    async fn resync(
        pool: &SqlitePool,
        tx: &mpsc::Sender<StoreChange>,
    ) -> Result<Polled, StoreError> {
        let end: Option<i64> = bounded(OP_TIMEOUT, "reading the change log", async {
            sqlx::query_scalar("SELECT max(seq) FROM pushwake_changes")
                .fetch_one(pool)
                .await
                .map_err(err)
        })
        .await?;
        if tx.send(StoreChange::Resync).await.is_err() {
            return Ok(Polled::Closed);
        }
        Ok(Polled::At(end.map_or(Position::Empty, Position::At)))
    }

    /// Sends what changed after `at`, in [`BATCH`]es.
    async fn poll(
        pool: &SqlitePool,
        tx: &mpsc::Sender<StoreChange>,
        mut at: Position,
    ) -> Result<Polled, StoreError> {
        loop {
            let (changes, read, next) = match read(pool, at).await? {
                Some(read) => read,
                None => return Ok(Polled::Gap),
            };
            for change in changes {
                if tx.send(change).await.is_err() {
                    return Ok(Polled::Closed);
                }
            }
            at = next;
            if read < BATCH {
                return Ok(Polled::At(at));
            }
        }
    }

    /// The log rows from a seq on, each with the device it names as the table holds it
    /// now: [`DEVICE_COLUMNS`]'s columns in their order (so that [`device_from_row`] reads
    /// them), the log's key in place of the device's (whose columns are NULL when it is
    /// gone), the seq last.
    pub(crate) const READ: &str = "SELECT c.extension, c.device_id, d.platform, d.token, \
        d.params, d.learned, d.updated_at, c.seq
        FROM pushwake_changes c LEFT JOIN pushwake_devices d
            ON d.extension = c.extension AND d.device_id = c.device_id
        WHERE c.seq >= $1 ORDER BY c.seq LIMIT $2";

    /// One batch of log rows after `at`: the changes (one per device, in the order of
    /// each device's last row), how many rows were read, and the new position. `None`:
    /// `at` is gone from the log.
    pub(crate) async fn read(
        pool: &SqlitePool,
        at: Position,
    ) -> Result<Option<(Vec<StoreChange>, i64, Position)>, StoreError> {
        let from = match at {
            Position::At(seq) => seq,
            Position::Empty => i64::MIN,
        };
        let rows = bounded(OP_TIMEOUT, "reading the change log", async {
            sqlx::query(READ)
                .bind(from)
                .bind(BATCH + 1)
                .fetch_all(pool)
                .await
                .map_err(err)
        })
        .await?;
        let seq = |row: &sqlx::sqlite::SqliteRow| row.try_get::<i64, _>(7).map_err(err);
        let mut rows = rows.as_slice();
        if let Position::At(seq_at) = at {
            match rows.split_first() {
                Some((first, rest)) if seq(first)? == seq_at => rows = rest,
                _ => return Ok(None),
            }
        } else {
            rows = &rows[..rows.len().min(BATCH as usize)];
        }
        let Some(last) = rows.last() else {
            return Ok(Some((Vec::new(), 0, at)));
        };
        let next = Position::At(seq(last)?);
        // A statement reads one snapshot: every row of a device shows the same state, so
        // one message per device, where its last row was.
        let mut keyed = Vec::with_capacity(rows.len());
        let mut last_of: HashMap<(String, String), usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let key: (String, String) =
                (row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?);
            last_of.insert(key.clone(), i);
            keyed.push((key, row));
        }
        let mut changes = Vec::with_capacity(last_of.len());
        for (i, (key, row)) in keyed.into_iter().enumerate() {
            if last_of[&key] != i {
                continue;
            }
            let present = row.try_get::<Option<String>, _>(2).map_err(err)?.is_some();
            changes.push(if present {
                StoreChange::Put(device_from_row(row)?)
            } else {
                let (extension, device_id) = key;
                StoreChange::Deleted {
                    extension,
                    device_id,
                }
            });
        }
        Ok(Some((changes, rows.len() as i64, next)))
    }

    /// Deletes the log rows at least `keep_rows` before `seen` that are older than
    /// `keep_secs`; how many. Nothing is written (no write lock taken) when the oldest
    /// row is within the last `keep_rows`.
    pub(crate) async fn prune(
        pool: &SqlitePool,
        seen: i64,
        keep_rows: i64,
        keep_secs: i64,
    ) -> Result<u64, StoreError> {
        bounded(OP_TIMEOUT, "pruning the change log", async {
            let cut = seen.saturating_sub(keep_rows);
            let oldest: Option<i64> = sqlx::query_scalar("SELECT min(seq) FROM pushwake_changes")
                .fetch_one(pool)
                .await
                .map_err(err)?;
            if oldest.is_none_or(|oldest| oldest > cut) {
                return Ok(0);
            }
            let done = sqlx::query(
                "DELETE FROM pushwake_changes
                 WHERE seq <= $1 AND at < CAST(strftime('%s', 'now') AS INTEGER) - $2",
            )
            .bind(cut)
            .bind(keep_secs)
            .execute(pool)
            .await
            .map_err(err)?;
            Ok(done.rows_affected())
        })
        .await
    }
}

pub(super) async fn put_message(pool: &SqlitePool, message: &Message) -> Result<bool, StoreError> {
    let done = super::bind_message(sqlx::query(super::INSERT_MESSAGE), message)
        .execute(pool)
        .await
        .map_err(err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn delete_message(pool: &SqlitePool, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM pushwake_messages WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn load_messages(pool: &SqlitePool) -> Result<Vec<Message>, StoreError> {
    let rows = sqlx::query(super::SELECT_MESSAGES)
        .fetch_all(pool)
        .await
        .map_err(err)?;
    rows.iter().map(super::message_from_row).collect()
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    #[test]
    fn a_full_or_read_only_disk_is_unavailable_and_a_damaged_file_corrupt() {
        // SQLITE_FULL, SQLITE_READONLY, SQLITE_READONLY_DBMOVED (extended), SQLITE_IOERR_WRITE
        for code in ["13", "8", "1032", "778"] {
            assert!(
                matches!(classify(code, String::new()), StoreError::Unavailable(_)),
                "{code}"
            );
        }
        assert!(matches!(
            classify("11", String::new()),
            StoreError::Corrupt(_)
        ));
        // SQLITE_CONSTRAINT
        assert!(matches!(
            classify("19", String::new()),
            StoreError::Database(_)
        ));
    }
}
