//! The SQLite backend: one file, WAL mode, `synchronous=FULL`.
//!
//! Why FULL rather than NORMAL: in WAL mode NORMAL keeps the database consistent after a
//! power loss but may lose the last transactions (the WAL is synced only at checkpoints),
//! and the device API answers 2xx once a write returned. FULL syncs the WAL at every
//! commit; a device write is rare, so the cost (one fsync per write) does not matter.
//! `kill -9` loses nothing in either mode: a commit is in the operating system's hands
//! before `put` returns.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row, SqlitePool};

use super::{
    device_from_row, params_to_json, store_error, StoreError, StoredDevice, DEVICE_COLUMNS,
    SQLITE_SCHEMA_VERSION,
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
    let version = version.unwrap_or(0);
    if version > SQLITE_SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "the device store has schema version {version}, newer than this pushwake knows \
             ({SQLITE_SCHEMA_VERSION}): it was written by a newer pushwake; upgrade pushwake"
        )));
    }
    if version == SQLITE_SCHEMA_VERSION {
        return Ok(());
    }
    for migration in &MIGRATIONS[version as usize..] {
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
/// or a failing disk [`StoreError::Unavailable`].
pub(super) fn classify(code: &str, message: String) -> StoreError {
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        // SQLITE_CORRUPT, SQLITE_NOTADB
        11 | 26 => StoreError::Corrupt(message),
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PROTOCOL
        5 | 6 | 10 | 14 | 15 => StoreError::Unavailable(message),
        _ => StoreError::Database(message),
    }
}

pub(super) async fn load_all(pool: &SqlitePool) -> Result<Vec<StoredDevice>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM pushwake_devices ORDER BY extension, device_id"
    ))
    .fetch_all(pool)
    .await
    .map_err(err)?;
    rows.iter().map(device_from_row).collect()
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
    // IMMEDIATE: the write lock is taken first, so the check and the write see one state.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT device_id FROM pushwake_devices
         WHERE extension = $1 AND platform = $2 AND token = $3 AND device_id <> $4",
    )
    .bind(&device.extension)
    .bind(&device.platform)
    .bind(&device.token)
    .bind(&device.device_id)
    .fetch_optional(&mut *tx)
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
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
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
