//! The SQLite device store on a disk that fills up (a 1 MiB tmpfs the test mounts: it
//! runs as root, like the rest of the suite): every write the full disk refuses is
//! `Unavailable` (the API's 503, the writer's "wait and try again"), the ones after it
//! too — a failed COMMIT must not leave a pooled connection stuck in its transaction —
//! and once there is room again writes go through, and everything acknowledged is there
//! after the store is opened again.

use std::path::Path;

use pushwake::store::{DeviceStore, StoreConfig, StoreError, StoredDevice};
use pushwake_core::directory::DeviceParams;
use pushwake_testkit::disk::SmallDisk;

fn device(n: usize) -> StoredDevice {
    StoredDevice {
        extension: "101".into(),
        device_id: format!("phone-{n}"),
        platform: "apns".into(),
        token: format!("{n:04x}").repeat(16),
        params: DeviceParams::default(),
        learned: true,
        updated_at: 1_700_000_000,
    }
}

async fn open(path: &Path) -> DeviceStore {
    let config = StoreConfig {
        url: format!("sqlite:{}", path.join("devices.db").display()),
    };
    DeviceStore::open(&config).await.unwrap()
}

#[tokio::test]
async fn a_full_disk_makes_every_write_unavailable_until_there_is_room_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path().join("disk"), "1m");
    let store = open(&disk.path).await;
    store.put(&device(0)).await.unwrap();
    disk.fill();

    // Writes go on while SQLite finds room in pages it already has; the first it cannot
    // place fails. Every write after it must fail the same way, not as a broken store.
    let mut written = vec![0];
    let mut failures = Vec::new();
    for n in 1..200 {
        match store.put(&device(n)).await {
            Ok(()) => {
                assert!(failures.is_empty(), "phone-{n} written after a failure");
                written.push(n);
            }
            Err(error) => failures.push((n, error)),
        }
        if failures.len() == 5 {
            break;
        }
    }
    assert_eq!(
        failures.len(),
        5,
        "the full disk refused nothing: {written:?}"
    );
    for (n, error) in &failures {
        assert!(
            matches!(error, StoreError::Unavailable(_)),
            "phone-{n} on the full disk: {error:?}"
        );
    }

    disk.free();
    for (n, _) in &failures {
        store.put(&device(*n)).await.unwrap();
        written.push(*n);
    }
    drop(store);
    let again = open(&disk.path).await;
    let mut stored: Vec<String> = again
        .load_all()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    stored.sort();
    let mut want: Vec<String> = written.iter().map(|n| format!("phone-{n}")).collect();
    want.sort();
    assert_eq!(stored, want);
    println!(
        "{} write(s) fitted on the full disk, then 5 refused as unavailable",
        written.len() - failures.len() - 1
    );
}
