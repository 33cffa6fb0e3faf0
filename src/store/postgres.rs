//! The PostgreSQL backend: one database shared by every pushwake of a cluster.
//!
//! A row trigger announces each change on the channel [`CHANNEL`] with a small JSON
//! payload naming the device (`{"op":"put"|"del","e":extension,"d":device_id}`; a
//! `TRUNCATE` announces `{"op":"resync"}`); the token never travels in a notification.
//! The listener reads a `put`'s device back from the table, so what it delivers is what
//! the table holds. PostgreSQL delivers notifications in commit order, after the commit,
//! and only to sessions listening at that moment: a reconnection is followed by a full
//! reload.

use std::str::FromStr;
use std::time::Duration;

use pushwake_core::messages::Message;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Row};
use tokio::sync::mpsc;

use super::{
    bounded, device_from_row, params_to_json, store_error, StoreChange, StoreError, StoredDevice,
    CONNECT_TIMEOUT, DEVICE_COLUMNS, OP_TIMEOUT, POSTGRES_SCHEMA_VERSION,
};

/// The channel the trigger announces changes on.
pub(super) const CHANNEL: &str = "pushwake_devices";

/// The advisory lock that serializes migrations of several pushwake starting at once
/// ("pushwake" in ASCII).
const MIGRATION_LOCK: i64 = 0x7075_7368_7761_6b65;

/// How long the listener waits in silence before it checks that its connection still
/// answers (a connection cut without a FIN, by a firewall or a dead host, stays silent).
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The listener's retry delays after a failure: from the first, doubling, up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How many changes may wait for the registry before the listener waits too.
const QUEUE: usize = 1024;

/// Each migration takes the schema from the version before it to its own (index + 1).
/// Text columns that are sorted or compared are `COLLATE "C"`: byte order, whatever the
/// database's locale, as SQLite and Rust order them. Tokens are indexed by their MD5 so
/// that a long one (a Web Push subscription) fits in a B-tree entry; the queries compare
/// the token itself too.
const MIGRATIONS: &[&str] = &[
    // 1: the devices and the change trigger.
    r#"CREATE TABLE pushwake_devices (
        extension  TEXT COLLATE "C" NOT NULL,
        device_id  TEXT COLLATE "C" NOT NULL,
        platform   TEXT COLLATE "C" NOT NULL,
        token      TEXT COLLATE "C" NOT NULL,
        params     TEXT NOT NULL,
        learned    BOOLEAN NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (extension, device_id)
    );
    CREATE UNIQUE INDEX pushwake_devices_extension_token
        ON pushwake_devices (extension, platform, md5(token));
    CREATE INDEX pushwake_devices_token ON pushwake_devices (platform, md5(token));
    CREATE INDEX pushwake_devices_learned ON pushwake_devices (updated_at) WHERE learned;

    CREATE FUNCTION pushwake_devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE'
                AND (OLD.extension, OLD.device_id) IS DISTINCT FROM (NEW.extension, NEW.device_id)) THEN
            PERFORM pg_notify('pushwake_devices', json_build_object(
                'op', 'del', 'e', OLD.extension, 'd', OLD.device_id)::text);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM pg_notify('pushwake_devices', json_build_object(
                'op', 'put', 'e', NEW.extension, 'd', NEW.device_id)::text);
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER pushwake_devices_notify
        AFTER INSERT OR UPDATE OR DELETE ON pushwake_devices
        FOR EACH ROW EXECUTE FUNCTION pushwake_devices_notify();

    CREATE FUNCTION pushwake_devices_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('pushwake_devices', '{"op":"resync"}');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER pushwake_devices_truncated
        AFTER TRUNCATE ON pushwake_devices
        FOR EACH STATEMENT EXECUTE FUNCTION pushwake_devices_truncated();"#,
    // 2: the messages kept for sleeping phones (see sqlite.rs's migration 3).
    r#"CREATE TABLE pushwake_messages (
        id           TEXT COLLATE "C" PRIMARY KEY,
        extension    TEXT COLLATE "C" NOT NULL,
        sender       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body         TEXT NOT NULL,
        received_at  BIGINT NOT NULL,
        call_id      TEXT,
        cseq         BIGINT
    );
    CREATE UNIQUE INDEX pushwake_messages_dedup ON pushwake_messages (md5(call_id), cseq);
    CREATE INDEX pushwake_messages_extension ON pushwake_messages (extension, received_at);"#,
];

const _: () = assert!(MIGRATIONS.len() as i64 == POSTGRES_SCHEMA_VERSION);

/// An open PostgreSQL store.
#[derive(Clone)]
pub(super) struct Postgres {
    pool: PgPool,
    options: std::sync::Arc<PgConnectOptions>,
    /// "PostgreSQL host:port/database", for messages.
    what: std::sync::Arc<str>,
}

/// What the server's error codes mean for the caller.
pub(super) fn classify(code: &str, message: String) -> StoreError {
    match code {
        // connection exceptions; shutting down, crashed, starting up; out of resources
        // (too many connections, disk full); a statement cancelled by a timeout
        c if c.starts_with("08") || c.starts_with("53") => StoreError::Unavailable(message),
        "57P01" | "57P02" | "57P03" | "57014" => StoreError::Unavailable(message),
        // wrong user or password, no such database, no permission
        c if c.starts_with("28") => StoreError::Config(message),
        "3D000" | "42501" => StoreError::Config(message),
        // data or index corrupted
        "XX001" | "XX002" => StoreError::Corrupt(message),
        _ => StoreError::Database(message),
    }
}

/// A row of `RETURNING extension, device_id`.
fn key(row: &PgRow) -> Result<(String, String), sqlx::Error> {
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// A put that met another writer's device with the same token between its check and its
/// write: it is tried again, and the check then names that device.
enum PutError {
    Store(StoreError),
    Raced,
}

impl Postgres {
    pub(super) async fn open(url: &str, describe: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| store_error(e, describe))?
            .application_name("pushwake");
        let what: std::sync::Arc<str> = format!(
            "PostgreSQL {}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        )
        .into();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options.clone());
        let store = Self {
            pool,
            options: options.into(),
            what,
        };
        bounded(OP_TIMEOUT, &store.what, store.migrate()).await?;
        Ok(store)
    }

    fn err(&self, error: sqlx::Error) -> StoreError {
        store_error(error, &self.what)
    }

    /// Brings the schema to [`POSTGRES_SCHEMA_VERSION`] in one transaction, under an
    /// advisory lock so that pushwake processes starting together migrate once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let e = |error| self.err(error);
        let mut tx = self.pool.begin().await.map_err(e)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(e)?;
        (&mut *tx)
            .execute(sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS pushwake_schema (version BIGINT NOT NULL)",
            ))
            .await
            .map_err(e)?;
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM pushwake_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(e)?;
        let pending = super::pending_migrations(version, MIGRATIONS, Some(&self.what))?;
        if pending.is_empty() {
            return Ok(());
        }
        for migration in pending {
            (&mut *tx)
                .execute(sqlx::raw_sql(migration))
                .await
                .map_err(e)?;
        }
        sqlx::query("DELETE FROM pushwake_schema")
            .execute(&mut *tx)
            .await
            .map_err(e)?;
        sqlx::query("INSERT INTO pushwake_schema (version) VALUES ($1)")
            .bind(POSTGRES_SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .map_err(e)?;
        tx.commit().await.map_err(e)
    }

    pub(super) async fn load_each(
        &self,
        mut each: impl FnMut(StoredDevice),
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        // Row by row, as SQLite's load_all (all rows at once double the peak).
        let sql =
            format!("SELECT {DEVICE_COLUMNS} FROM pushwake_devices ORDER BY extension, device_id");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(e))? {
            each(device_from_row(&row)?);
        }
        Ok(())
    }

    pub(super) async fn get(
        &self,
        extension: &str,
        device_id: &str,
    ) -> Result<Option<StoredDevice>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM pushwake_devices WHERE extension = $1 AND device_id = $2"
        ))
        .bind(extension)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub(super) async fn put(&self, device: &StoredDevice) -> Result<(), StoreError> {
        match self.try_put(device).await {
            Ok(()) => Ok(()),
            Err(PutError::Store(e)) => Err(e),
            Err(PutError::Raced) => match self.try_put(device).await {
                Ok(()) => Ok(()),
                Err(PutError::Store(e)) => Err(e),
                Err(PutError::Raced) => Err(StoreError::Conflict {
                    extension: device.extension.clone(),
                    device_id: "(another, written at the same moment)".into(),
                    platform: device.platform.clone(),
                }),
            },
        }
    }

    async fn try_put(&self, device: &StoredDevice) -> Result<(), PutError> {
        let e = |error| PutError::Store(self.err(error));
        let mut tx = self.pool.begin().await.map_err(e)?;
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT device_id FROM pushwake_devices
             WHERE extension = $1 AND platform = $2 AND md5(token) = md5($3) AND token = $3
               AND device_id <> $4",
        )
        .bind(&device.extension)
        .bind(&device.platform)
        .bind(&device.token)
        .bind(&device.device_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(e)?;
        if let Some(holder) = holder {
            return Err(PutError::Store(StoreError::Conflict {
                extension: device.extension.clone(),
                device_id: holder,
                platform: device.platform.clone(),
            }));
        }
        let written = sqlx::query(
            "INSERT INTO pushwake_devices
                 (extension, device_id, platform, token, params, learned, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (extension, device_id) DO UPDATE SET
                 platform = excluded.platform, token = excluded.token,
                 params = excluded.params, learned = excluded.learned,
                 updated_at = excluded.updated_at",
        )
        .bind(&device.extension)
        .bind(&device.device_id)
        .bind(&device.platform)
        .bind(&device.token)
        .bind(params_to_json(&device.params))
        .bind(device.learned)
        .bind(device.updated_at)
        .execute(&mut *tx)
        .await;
        match written {
            Ok(_) => {}
            Err(sqlx::Error::Database(db))
                if db.constraint() == Some("pushwake_devices_extension_token") =>
            {
                return Err(PutError::Raced)
            }
            Err(error) => return Err(e(error)),
        }
        tx.commit().await.map_err(e)
    }

    pub(super) async fn delete(
        &self,
        extension: &str,
        device_id: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM pushwake_devices WHERE extension = $1 AND device_id = $2")
                .bind(extension)
                .bind(device_id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn delete_token(
        &self,
        platform: &str,
        token: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM pushwake_devices
             WHERE platform = $1 AND md5(token) = md5($2) AND token = $2
             RETURNING extension, device_id",
        )
        .bind(platform)
        .bind(token)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(key)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(super) async fn put_message(&self, message: &Message) -> Result<bool, StoreError> {
        let done = super::bind_message(sqlx::query(super::INSERT_MESSAGE), message)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn delete_message(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM pushwake_messages WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn load_messages(&self) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(super::SELECT_MESSAGES)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(super::message_from_row).collect()
    }

    pub(super) async fn expire_learned(
        &self,
        before: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM pushwake_devices WHERE learned AND updated_at < $1
             RETURNING extension, device_id",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(key)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn subscribe(&self) -> mpsc::Receiver<StoreChange> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(listen(self.clone(), tx));
        rx
    }

    /// A listener on [`CHANNEL`], on a connection of its own (a fresh one-connection
    /// pool each time, so a connection that died half-way holds nothing up).
    async fn listener(&self) -> Result<PgListener, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with((*self.options).clone());
        bounded(OP_TIMEOUT, &self.what, async {
            let mut listener = PgListener::connect_with(&pool)
                .await
                .map_err(|e| self.err(e))?;
            // A lost connection makes try_recv return None (then a new listener and a
            // resync), rather than reconnecting behind our back.
            listener.eager_reconnect(false);
            listener.listen(CHANNEL).await.map_err(|e| self.err(e))?;
            Ok(listener)
        })
        .await
    }

    /// What one notification means now.
    async fn change(&self, payload: &str) -> Result<Option<StoreChange>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Announcement {
            op: String,
            e: Option<String>,
            d: Option<String>,
        }
        let announced: Option<Announcement> = serde_json::from_str(payload).ok();
        match announced {
            Some(Announcement {
                op,
                e: Some(extension),
                d: Some(device_id),
            }) if op == "put" => Ok(bounded(OP_TIMEOUT, &self.what, async {
                self.get(&extension, &device_id).await
            })
            .await?
            // Gone again already: its deletion is announced next.
            .map(StoreChange::Put)),
            Some(Announcement {
                op,
                e: Some(extension),
                d: Some(device_id),
            }) if op == "del" => Ok(Some(StoreChange::Deleted {
                extension,
                device_id,
            })),
            // "resync", or something this build does not know: read everything.
            _ => Ok(Some(StoreChange::Resync)),
        }
    }
}

/// Why a listening session ended.
enum Ended {
    /// The receiver is gone: stop.
    Closed,
    /// The connection or the database failed: reconnect.
    Lost(String),
}

/// The listening task: connects, resyncs, forwards changes; after a failure, again.
async fn listen(store: Postgres, tx: mpsc::Sender<StoreChange>) {
    let mut delay = RETRY_FIRST;
    let mut down = false;
    loop {
        let mut was_up = false;
        match session(&store, &tx, &mut was_up, &mut down).await {
            Ended::Closed => return,
            Ended::Lost(why) => {
                if !down {
                    tracing::warn!(
                        "device store: lost the change feed of {} ({why}); the cache is kept, \
                         retrying",
                        store.what
                    );
                    down = true;
                } else {
                    tracing::debug!("device store: change feed still down: {why}");
                }
            }
        }
        if was_up {
            delay = RETRY_FIRST;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One listening session: LISTEN, a full resync, then each change until the connection
/// fails or the receiver goes.
async fn session(
    store: &Postgres,
    tx: &mpsc::Sender<StoreChange>,
    was_up: &mut bool,
    down: &mut bool,
) -> Ended {
    let mut listener = match store.listener().await {
        Ok(listener) => listener,
        Err(e) => return Ended::Lost(e.to_string()),
    };
    // After LISTEN: whatever is committed from now on is announced, whatever was
    // committed before is in the receiver's read after this Resync.
    if tx.send(StoreChange::Resync).await.is_err() {
        return Ended::Closed;
    }
    *was_up = true;
    if *down {
        tracing::info!(
            "device store: change feed of {} is back (every device read again)",
            store.what
        );
        *down = false;
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return Ended::Closed,
            next = tokio::time::timeout(IDLE_CHECK, listener.try_recv()) => next,
        };
        match next {
            Ok(Ok(Some(notification))) => match store.change(notification.payload()).await {
                Ok(Some(change)) => {
                    if tx.send(change).await.is_err() {
                        return Ended::Closed;
                    }
                }
                Ok(None) => {}
                Err(e) => return Ended::Lost(e.to_string()),
            },
            Ok(Ok(None)) => return Ended::Lost("the connection closed".into()),
            Ok(Err(e)) => return Ended::Lost(store.err(e).to_string()),
            Err(_silence) => {
                // try_recv is cancel-safe: nothing is lost by dropping it here.
                let check = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    sqlx::query("SELECT 1").execute(&mut listener),
                )
                .await;
                match check {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(store.err(e).to_string()),
                    Err(_) => {
                        return Ended::Lost(format!(
                            "no answer within {} s",
                            CONNECT_TIMEOUT.as_secs()
                        ))
                    }
                }
            }
        }
    }
}
