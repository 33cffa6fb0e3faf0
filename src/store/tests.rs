//! What the integration tests cannot see: the SQLite connection settings.

use super::*;

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
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
