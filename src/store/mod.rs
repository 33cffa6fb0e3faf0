//! The persistent store of the devices that registered themselves: learned from a
//! phone's REGISTER, or registered by an app backend through the device API. It also
//! keeps the SIP MESSAGEs held for sleeping phones ([`DeviceStore::put_message`]), so
//! that none is lost across a restart.
//!
//! Two backends behind one [`DeviceStore`]:
//! - **SQLite** (the default, `sqlite:/var/lib/pushwake/devices.db`): one file in the
//!   package's state directory, created on first start with mode 0600, in WAL mode with
//!   `synchronous=FULL`, so a write that returned `Ok` survives a crash, `kill -9` and a
//!   power loss. The daemon and `pushwake devices` (or the sqlite3 shell) may have the
//!   file open at once, on the same machine and a local disk (WAL's shared memory does
//!   not work over a network file system): triggers write every change of the devices
//!   to a change log in the file, which [`DeviceStore::subscribe`] polls every 500 ms,
//!   so a change reaches the other process within about a second. It is meant for one
//!   daemon and occasional other writers; several nodes share a PostgreSQL.
//! - **PostgreSQL** (`postgres://user:password@host/db`): several pushwake processes
//!   (one per Asterisk node) share one set of devices. A trigger announces every change
//!   with `NOTIFY`; [`DeviceStore::subscribe`] turns the announcements into
//!   [`StoreChange`]s.
//!
//! The store is never on a call's path: the registry keeps every device in memory,
//! loaded with [`DeviceStore::load_all`] and kept current from [`DeviceStore::subscribe`].
//! Every operation is bounded in time (a PostgreSQL that is down fails an operation with
//! [`StoreError::Unavailable`] within about two seconds, [`DeviceStore::ping`] within one),
//! so a slow or dead database never blocks the caller of the store for long.
//!
//! Both schemas are versioned (`pushwake_schema`); [`DeviceStore::open`] upgrades an
//! older one and refuses one that is newer than this build knows. Every value goes to the
//! database as a bind parameter, never spliced into SQL text, and comes back byte for
//! byte. Tokens and secret device settings never appear in `Debug` output or in errors.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pushwake_core::directory::{DeviceParams, DeviceToken};
use pushwake_core::messages::{DedupKey, Message, MessageId};
use tokio::sync::mpsc;

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

/// The schema version this build writes to a SQLite file. [`DeviceStore::open`] upgrades
/// a database with an older one and refuses a newer one.
///
/// Each backend counts its versions on its own (a file or database is only ever one
/// backend's, and their schemas differ anyway): SQLite's version 2 added the change log
/// that PostgreSQL does not need (it has `NOTIFY`). A shared number would make every
/// SQLite-only change a no-op migration on PostgreSQL, and that no-op would not be
/// harmless: a PostgreSQL database is shared by nodes upgraded one at a time, and once
/// the first upgraded node had recorded the new number, every node not yet upgraded would
/// refuse to start ("newer schema") although nothing it relies on had changed.
pub const SQLITE_SCHEMA_VERSION: i64 = 3;

/// The schema version this build writes to a PostgreSQL database (see
/// [`SQLITE_SCHEMA_VERSION`] for why each backend has its own). Version 2 (SQLite's 3)
/// added the messages table: a node still on version 1 refuses a database another node
/// upgraded, so upgrade every node sharing one PostgreSQL together.
pub const POSTGRES_SCHEMA_VERSION: i64 = 2;

/// The store's location when the configuration names none: the package's state directory.
pub const DEFAULT_URL: &str = "sqlite:/var/lib/pushwake/devices.db";

/// The longest extension, device id or platform name the store takes, in bytes. (A
/// change notification names the device, and PostgreSQL's notifications are short.)
pub const MAX_KEY_LEN: usize = 256;

/// How long a PostgreSQL operation waits for a connection before it fails with
/// [`StoreError::Unavailable`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one operation may take in all (a connection, then the statements).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`DeviceStore::load_all`] may take (it reads every device).
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`DeviceStore::ping`] may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// One device kept in the store.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredDevice {
    /// The extension it belongs to.
    pub extension: String,
    /// The device's id within its extension (the API caller's, or one the registry makes
    /// for a learned device).
    pub device_id: String,
    /// The provider's platform name ("apns", "fcm", "hms", "webhook", "webpush").
    pub platform: String,
    /// The push token. Secret.
    pub token: String,
    /// The provider's per-device settings, each with its secret flag.
    pub params: DeviceParams,
    /// Learned from a REGISTER (forgotten after learned_ttl without one) rather than
    /// registered through the API (kept until deleted).
    pub learned: bool,
    /// Unix seconds of the last REGISTER or API write.
    pub updated_at: i64,
}

impl fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDevice")
            .field("extension", &self.extension)
            .field("device_id", &self.device_id)
            .field("platform", &self.platform)
            .field("token", &DeviceToken::new(self.token.as_str()))
            .field("params", &self.params)
            .field("learned", &self.learned)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl StoredDevice {
    /// Refuses what the store cannot keep exactly: empty keys, keys over
    /// [`MAX_KEY_LEN`], an empty token, and a NUL character in a key or the token
    /// (PostgreSQL's text cannot hold one; SQLite is refused the same for one behaviour).
    fn check(&self) -> Result<(), StoreError> {
        for (what, value) in [
            ("extension", &self.extension),
            ("device id", &self.device_id),
            ("platform", &self.platform),
        ] {
            if value.is_empty() {
                return Err(StoreError::Invalid(format!("the {what} is empty")));
            }
            if value.len() > MAX_KEY_LEN {
                return Err(StoreError::Invalid(format!(
                    "the {what} is longer than {MAX_KEY_LEN} bytes"
                )));
            }
            if value.contains('\0') {
                return Err(StoreError::Invalid(format!(
                    "the {what} contains a NUL character"
                )));
            }
        }
        if self.token.is_empty() {
            return Err(StoreError::Invalid("the token is empty".into()));
        }
        if self.token.contains('\0') {
            return Err(StoreError::Invalid(
                "the token contains a NUL character".into(),
            ));
        }
        Ok(())
    }
}

/// The device settings as the store keeps them: a JSON list of `[key, value, secret]`.
fn params_to_json(params: &DeviceParams) -> String {
    let entries: Vec<(&str, &str, bool)> = params.entries().collect();
    serde_json::to_string(&entries).expect("a list of strings and booleans serializes")
}

fn params_from_json(text: &str) -> Result<DeviceParams, String> {
    let entries: Vec<(String, String, bool)> =
        serde_json::from_str(text).map_err(|e| format!("unreadable device settings ({e})"))?;
    Ok(DeviceParams::from_entries(entries))
}

/// A change made to the store by a pushwake process sharing it (another node on
/// PostgreSQL, `pushwake devices` on SQLite), by this process itself, or by anyone else
/// writing its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// The device was added or replaced: this is what the store holds now.
    Put(StoredDevice),
    /// The device is gone.
    Deleted {
        /// Its extension.
        extension: String,
        /// Its id within the extension.
        device_id: String,
    },
    /// Anything may have changed: read every device again
    /// ([`DeviceStore::load_each`]) and make the cache hold exactly those. Sent first by
    /// every subscription, once its `LISTEN` is in place or it took its position in
    /// SQLite's change log, so a read made after receiving it misses nothing: what is
    /// committed later arrives as `Put`/`Deleted` (again, if the read already had it:
    /// harmless). PostgreSQL: also after each reconnection (changes made meanwhile were
    /// not announced), and when someone empties the table with `TRUNCATE`. SQLite: also
    /// when the change log no longer holds the subscription's position (pruned while it
    /// was not reading, or emptied by hand).
    ///
    /// Why no devices in it: the receiver reads them row by row into its own table; a
    /// list of 100,000 devices held here as well would double the daemon's memory at
    /// every resynchronisation (measured: 110 MiB at the peak instead of 60).
    Resync,
}

/// What went wrong with the store. The messages never contain a token, a secret device
/// setting or a database password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another device of the same extension already has this platform and token.
    #[error("extension {extension} already has this {platform} token, as device {device_id}")]
    Conflict {
        /// The extension.
        extension: String,
        /// The device that holds the token.
        device_id: String,
        /// The platform of the token.
        platform: String,
    },
    /// The database cannot be reached, or did not answer in time. The device API answers
    /// 503. (A write that timed out may still have been committed; writing it again is
    /// harmless.)
    #[error("the device store is unavailable: {0}")]
    Unavailable(String),
    /// The database holds something this build cannot read.
    #[error("the device store is damaged: {0}")]
    Corrupt(String),
    /// The store cannot be used as configured: a bad URL, an unsafe file or directory
    /// mode, a schema newer than this build, credentials the server refuses.
    #[error("{0}")]
    Config(String),
    /// The device cannot be stored as given (an empty or NUL-holding key or token).
    #[error("the device cannot be stored: {0}")]
    Invalid(String),
    /// Any other error the database reported.
    #[error("the device store failed: {0}")]
    Database(String),
}

/// Where the devices are kept.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite:/var/lib/pushwake/devices.db`, a plain file path, or
    /// `postgres://user:password@host:port/database` (libpq's URL parameters such as
    /// `sslmode` and `sslrootcert` apply). The password is a secret: `Debug` shows the
    /// URL with it redacted.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redacted_url(&self.url))
            .finish()
    }
}

impl StoreConfig {
    /// The location for logs and errors: the URL with any password redacted.
    pub fn describe(&self) -> String {
        redacted_url(&self.url)
    }
}

/// What a store URL names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Sqlite(PathBuf),
    Postgres,
}

fn parse_target(url: &str) -> Result<Target, StoreError> {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Target::Postgres);
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::Config(format!(
            "store url: unknown scheme `{}` (use sqlite:/path/to/devices.db or postgres://…)",
            scheme.chars().take(20).collect::<String>()
        )));
    } else {
        url
    };
    if path.is_empty() {
        return Err(StoreError::Config(
            "store url: no SQLite file named (e.g. sqlite:/var/lib/pushwake/devices.db)".into(),
        ));
    }
    Ok(Target::Sqlite(PathBuf::from(path)))
}

/// `url` with its password (in the user part or a `password=` parameter) replaced.
fn redacted_url(url: &str) -> String {
    match parse_target(url) {
        Ok(Target::Sqlite(_)) => return url.to_owned(),
        Ok(Target::Postgres) => {}
        Err(_) => {
            // Unknown: show the scheme at most.
            return match url.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://<redacted>"),
                None => "<redacted>".to_owned(),
            };
        }
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "postgres://<unreadable URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "redacted".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The database behind a store.
#[derive(Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(postgres::Postgres),
}

struct Inner {
    pool: Pool,
    /// The location for messages (password redacted).
    describe: String,
}

/// The device store: a pool of connections to SQLite or PostgreSQL. Cloning is cheap and
/// shares the pool.
#[derive(Clone)]
pub struct DeviceStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceStore")
            .field("backend", &self.backend())
            .field("location", &self.inner.describe)
            .finish()
    }
}

/// Runs `fut` for at most `limit`; past it, the store is unavailable.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: no answer within {} s",
            limit.as_secs()
        ))),
    }
}

impl DeviceStore {
    /// Opens the store, creating it if needed, and brings its schema to
    /// [`SQLITE_SCHEMA_VERSION`] or [`POSTGRES_SCHEMA_VERSION`].
    ///
    /// SQLite: the file is created with mode 0600 (its directory must exist); an existing
    /// file that other users may read or anyone but its owner may write, or a directory
    /// other users may read or write, is refused with its path and mode. PostgreSQL: the
    /// database must exist and the user be allowed to create tables in it; a server that
    /// is down fails the open with [`StoreError::Unavailable`] within about two seconds.
    /// Several pushwake processes opening one PostgreSQL at once upgrade it once.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let describe = redacted_url(&config.url);
        let pool = match parse_target(&config.url)? {
            Target::Sqlite(path) => Pool::Sqlite(sqlite::open(&path).await?),
            Target::Postgres => {
                Pool::Postgres(postgres::Postgres::open(&config.url, &describe).await?)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner { pool, describe }),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.inner.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Where the store is, for logs (a PostgreSQL URL's password redacted).
    pub fn location(&self) -> &str {
        &self.inner.describe
    }

    /// Every device, ordered by extension, then device id (byte order, as Rust orders
    /// `String`s), in one query.
    pub async fn load_all(&self) -> Result<Vec<StoredDevice>, StoreError> {
        let mut devices = Vec::new();
        self.load_each(|device| devices.push(device)).await?;
        Ok(devices)
    }

    /// Hands every device to `each` as it is read, ordered as [`DeviceStore::load_all`]
    /// orders them, without holding them all at once (the registry builds its table
    /// from them directly: for 100,000 devices that saves a second copy of each).
    pub async fn load_each(&self, each: impl FnMut(StoredDevice)) -> Result<(), StoreError> {
        bounded(LOAD_TIMEOUT, "loading the devices", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::load_each(pool, each).await,
                Pool::Postgres(pg) => pg.load_each(each).await,
            }
        })
        .await
    }

    /// The device `device_id` of `extension`, if the store has it.
    pub async fn get(
        &self,
        extension: &str,
        device_id: &str,
    ) -> Result<Option<StoredDevice>, StoreError> {
        bounded(OP_TIMEOUT, "reading a device", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::get(pool, extension, device_id).await,
                Pool::Postgres(pg) => pg.get(extension, device_id).await,
            }
        })
        .await
    }

    /// Inserts the device, or replaces the one with its extension and device id.
    /// [`StoreError::Conflict`] if another device of the extension already has the same
    /// platform and token. When this returns `Ok` the write is committed and durable.
    pub async fn put(&self, device: &StoredDevice) -> Result<(), StoreError> {
        device.check()?;
        bounded(OP_TIMEOUT, "storing a device", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::put(pool, device).await,
                Pool::Postgres(pg) => pg.put(device).await,
            }
        })
        .await
    }

    /// Deletes the device; `false` if the store did not have it.
    pub async fn delete(&self, extension: &str, device_id: &str) -> Result<bool, StoreError> {
        bounded(OP_TIMEOUT, "deleting a device", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::delete(pool, extension, device_id).await,
                Pool::Postgres(pg) => pg.delete(extension, device_id).await,
            }
        })
        .await
    }

    /// Deletes every device holding this token (one the provider declared dead), in any
    /// extension; returns their (extension, device id), sorted.
    pub async fn delete_token(
        &self,
        platform: &str,
        token: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        bounded(OP_TIMEOUT, "deleting a dead token", async {
            let mut gone = match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::delete_token(pool, platform, token).await?,
                Pool::Postgres(pg) => pg.delete_token(platform, token).await?,
            };
            gone.sort();
            Ok(gone)
        })
        .await
    }

    /// Deletes every learned device last updated before `before` (Unix seconds); returns
    /// their (extension, device id), sorted. Devices registered through the API stay.
    pub async fn expire_learned(&self, before: i64) -> Result<Vec<(String, String)>, StoreError> {
        bounded(OP_TIMEOUT, "expiring learned devices", async {
            let mut gone = match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::expire_learned(pool, before).await?,
                Pool::Postgres(pg) => pg.expire_learned(before).await?,
            };
            gone.sort();
            Ok(gone)
        })
        .await
    }

    /// The changes to the store, as they are committed, for the in-memory cache. Always
    /// `Some` (both backends have a feed). Must be called within a Tokio runtime: it
    /// spawns the feed's task, which ends when the receiver is dropped.
    ///
    /// What arrives: first a [`StoreChange::Resync`], then a `Put` or `Deleted` for every
    /// committed change, in commit order, **including this process's own writes** (so
    /// the registry can apply everything it receives: a `Put` carries the device as the
    /// store holds it when the change is read, and the last message about a device always
    /// describes its final state, whichever process wrote last; skipping one's own echoes
    /// could leave a process with another one's older write).
    ///
    /// PostgreSQL: `LISTEN` on a connection of the task's own; changes arrive within
    /// milliseconds. After the connection is lost and found again, a `Resync`. While the database is down nothing arrives and the task retries every few
    /// seconds (logged once, and once when back).
    ///
    /// SQLite: the task reads the change log every 500 ms (one indexed query when nothing
    /// changed), so a change arrives within about a second. Changes read in one poll come
    /// as one message per device (its state then), so a device written several times
    /// between two polls may arrive once. A poll that fails is logged and tried again at
    /// the next one.
    pub fn subscribe(&self) -> Option<mpsc::Receiver<StoreChange>> {
        match &self.inner.pool {
            Pool::Sqlite(pool) => Some(sqlite::subscribe(pool)),
            Pool::Postgres(pg) => Some(pg.subscribe()),
        }
    }

    /// Keeps `message` (a SIP MESSAGE for a sleeping phone) until
    /// [`DeviceStore::delete_message`]. `false`, and nothing written, when the store has
    /// it already: the same id, or the same Call-ID and CSeq (a retransmission). When this
    /// returns `Ok` the write is committed and durable.
    pub async fn put_message(&self, message: &Message) -> Result<bool, StoreError> {
        if message.id.0.len() > MAX_KEY_LEN || message.extension.len() > MAX_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "a message id or extension is longer than {MAX_KEY_LEN} bytes"
            )));
        }
        bounded(OP_TIMEOUT, "storing a message", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::put_message(pool, message).await,
                Pool::Postgres(pg) => pg.put_message(message).await,
            }
        })
        .await
    }

    /// Forgets message `id` (delivered, dropped or expired); `false` if the store did not
    /// have it.
    pub async fn delete_message(&self, id: &MessageId) -> Result<bool, StoreError> {
        bounded(OP_TIMEOUT, "deleting a message", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::delete_message(pool, &id.0).await,
                Pool::Postgres(pg) => pg.delete_message(&id.0).await,
            }
        })
        .await
    }

    /// Every message kept, ordered by extension, then arrival, then id: what
    /// [`pushwake_core::messages::Outbox::restore`] takes at start.
    pub async fn load_messages(&self) -> Result<Vec<Message>, StoreError> {
        bounded(LOAD_TIMEOUT, "loading the messages", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::load_messages(pool).await,
                Pool::Postgres(pg) => pg.load_messages().await,
            }
        })
        .await
    }

    /// Checks that the database answers, for `/healthz`: fails within a second when it
    /// does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(PING_TIMEOUT, "ping", async {
            match &self.inner.pool {
                Pool::Sqlite(pool) => sqlite::ping(pool).await,
                Pool::Postgres(pg) => pg.ping().await,
            }
        })
        .await
    }
}

/// The migrations a database whose schema is at version `found` still needs, of
/// `migrations` (one per version, in order; this build's version is their number): none
/// when it is current. A schema newer than this build knows is refused; `what` names the
/// store in that message, where its caller does not name it already.
fn pending_migrations<'m>(
    found: Option<i64>,
    migrations: &'m [&'m str],
    what: Option<&str>,
) -> Result<&'m [&'m str], StoreError> {
    let current = migrations.len();
    let found = found.unwrap_or(0);
    let Ok(at) = usize::try_from(found) else {
        return Err(StoreError::Corrupt(format!(
            "the schema version {found} is not a version"
        )));
    };
    if at > current {
        let prefix = what.map(|w| format!("{w}: ")).unwrap_or_default();
        return Err(StoreError::Config(format!(
            "{prefix}the device store has schema version {found}, newer than this pushwake \
             knows ({current}): it was written by a newer pushwake; upgrade pushwake"
        )));
    }
    Ok(&migrations[at..])
}

/// Reads one device from a row of `SELECT extension, device_id, platform, token,
/// params, learned, updated_at`.
fn device_from_row<R>(row: &R) -> Result<StoredDevice, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |i: usize| -> Result<String, StoreError> {
        row.try_get::<String, usize>(i)
            .map_err(|e| StoreError::Corrupt(format!("a device row: {e}")))
    };
    let extension = text(0)?;
    let device_id = text(1)?;
    let params = params_from_json(&text(4)?).map_err(|e| {
        StoreError::Corrupt(format!("device {device_id} of extension {extension}: {e}"))
    })?;
    Ok(StoredDevice {
        platform: text(2)?,
        token: text(3)?,
        params,
        learned: row
            .try_get::<bool, usize>(5)
            .map_err(|e| StoreError::Corrupt(format!("a device row: {e}")))?,
        updated_at: row
            .try_get::<i64, usize>(6)
            .map_err(|e| StoreError::Corrupt(format!("a device row: {e}")))?,
        extension,
        device_id,
    })
}

/// The columns [`device_from_row`] reads, in its order.
const DEVICE_COLUMNS: &str = "extension, device_id, platform, token, params, learned, updated_at";

/// Inserts a message, or nothing when its id or its Call-ID and CSeq are there already.
const INSERT_MESSAGE: &str = "INSERT INTO pushwake_messages
    (id, extension, sender, content_type, body, received_at, call_id, cseq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";

/// Every message, each extension's in arrival order (ties by id).
const SELECT_MESSAGES: &str = "SELECT id, extension, sender, content_type, body, received_at,
    call_id, cseq FROM pushwake_messages ORDER BY extension, received_at, id";

/// [`INSERT_MESSAGE`]'s parameters, from `message`.
fn bind_message<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    message: &'q Message,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let dedup = message.dedup.as_ref();
    query
        .bind(message.id.0.as_str())
        .bind(message.extension.as_str())
        .bind(message.from.as_str())
        .bind(message.content_type.as_str())
        .bind(message.body.as_str())
        .bind(i64::try_from(message.received_at).unwrap_or(i64::MAX))
        .bind(dedup.map(|k| k.call_id.as_str()))
        .bind(dedup.map(|k| i64::from(k.cseq)))
}

/// Reads one message from a row of [`SELECT_MESSAGES`].
fn message_from_row<R>(row: &R) -> Result<Message, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(format!("a message row: {e}"));
    let text = |i: usize| row.try_get::<String, usize>(i).map_err(corrupt);
    let call_id = row.try_get::<Option<String>, usize>(6).map_err(corrupt)?;
    let cseq = row.try_get::<Option<i64>, usize>(7).map_err(corrupt)?;
    let id = text(0)?;
    let dedup = match (call_id, cseq) {
        (Some(call_id), Some(cseq)) => Some(DedupKey {
            call_id,
            cseq: u32::try_from(cseq)
                .map_err(|_| StoreError::Corrupt(format!("message {id}: CSeq {cseq}")))?,
        }),
        _ => None,
    };
    let received_at = row.try_get::<i64, usize>(5).map_err(corrupt)?;
    Ok(Message {
        extension: text(1)?,
        from: text(2)?,
        content_type: text(3)?,
        body: text(4)?,
        received_at: u64::try_from(received_at).unwrap_or_default(),
        dedup,
        id: MessageId(id),
    })
}

/// Turns a database error into a [`StoreError`]: connection trouble is
/// [`StoreError::Unavailable`]. Only the server's primary message is kept, never its
/// detail (which may quote the values of a row).
fn store_error(error: sqlx::Error, location: &str) -> StoreError {
    use sqlx::Error as E;
    match error {
        E::Io(e) => StoreError::Unavailable(format!("{location}: {e}")),
        E::Tls(e) => StoreError::Unavailable(format!("{location}: TLS: {e}")),
        E::PoolTimedOut => StoreError::Unavailable(format!(
            "{location}: could not connect within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
        E::PoolClosed => StoreError::Unavailable(format!("{location}: the pool is closed")),
        E::WorkerCrashed => {
            StoreError::Unavailable(format!("{location}: the database worker stopped"))
        }
        E::Protocol(e) => StoreError::Unavailable(format!("{location}: protocol error: {e}")),
        E::Configuration(e) => StoreError::Config(format!("store url {location}: {e}")),
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{location}: {} ({code})", db.message());
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite::classify(&code, message)
            } else {
                postgres::classify(&code, message)
            }
        }
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::TypeNotFound { .. } => {
            StoreError::Corrupt(format!("{location}: {error}"))
        }
        other => StoreError::Database(format!("{location}: {other}")),
    }
}
