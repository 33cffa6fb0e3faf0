//! The registered devices at run time: the [`Registry`] in memory, the store behind it,
//! and the tasks that keep the two in step.
//!
//! - At start the store is opened and read into the registry. A PostgreSQL that cannot
//!   be reached does not stop pushwake: calls are served (with the configured devices)
//!   while the store is opened again every few seconds in the background.
//! - The registry's writes (a learned device, a dead token) go to the store from a
//!   writer task, in order; while the database is down they wait and are tried again.
//! - Changes made by other nodes (PostgreSQL's change feed) come into the registry.
//! - Learned devices that have not registered for `learned_ttl` are forgotten.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::section::StoreSection;
use super::{Persist, Registry};
use crate::push::provider::ProviderSettings;
use crate::push::unix_now_secs;
use crate::store::{DeviceStore, StoreChange, StoreError};

/// How long to wait before opening an unreachable store again, or writing to it again.
const RETRY: Duration = Duration::from_secs(3);
/// How often learned devices past their time are forgotten.
const EXPIRY_CHECK: Duration = Duration::from_secs(3600);

/// The registered devices and their store (see the module documentation). Cheap to
/// clone.
#[derive(Clone)]
pub struct Devices {
    registry: Arc<Registry>,
    store: watch::Receiver<Option<DeviceStore>>,
    /// Writes handed to the writer and not done yet.
    pending: Arc<AtomicUsize>,
    /// Whether the store's last write failed because it is unavailable (the write waits
    /// and is tried again); cleared by the next write that goes through.
    writes_failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("registry", &self.registry)
            .field("store", &self.store().map(|s| s.backend()))
            .finish_non_exhaustive()
    }
}

impl Devices {
    /// Opens the store of `section` and reads it into a registry learning for
    /// `providers`, then starts the writer, the change feed and the expiry. Fails only
    /// for a store that cannot work at all (a bad URL, an unsafe file, a wrong password,
    /// a newer schema): an unreachable database is opened again in the background.
    pub async fn start(
        section: &StoreSection,
        providers: Vec<Arc<dyn ProviderSettings>>,
    ) -> Result<Self, StoreError> {
        let (writes, queue) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let registry = Arc::new(Registry::with_pending(
            providers,
            Some(writes),
            pending.clone(),
        ));
        let (set_store, store) = watch::channel(None);
        let location = section.store.describe();
        match DeviceStore::open(&section.store).await {
            Ok(opened) => {
                let count = registry.load_from(&opened).await?;
                tracing::info!(store = %location, backend = opened.backend(), devices = count, "device store opened");
                release_freed_memory();
                let _ = set_store.send(Some(opened));
            }
            Err(StoreError::Unavailable(error)) => {
                tracing::error!(store = %location, %error, "the device store cannot be reached: serving calls with the configured devices, and trying again");
                tokio::spawn(open_later(
                    section.store.clone(),
                    registry.clone(),
                    set_store,
                ));
            }
            Err(error) => return Err(error),
        }
        let devices = Self {
            registry,
            store,
            pending,
            writes_failing: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(write(devices.clone(), queue));
        tokio::spawn(follow(devices.clone()));
        tokio::spawn(expire(devices.clone(), section.learned_ttl));
        Ok(devices)
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store, once it is open.
    pub fn store(&self) -> Option<DeviceStore> {
        self.store.borrow().clone()
    }

    /// Whether the store cannot take writes now: the last one failed for an unavailable
    /// store and waits to be tried again (`/healthz`).
    pub fn writes_failing(&self) -> bool {
        self.writes_failing.load(Ordering::Relaxed)
    }

    /// Writes handed to the store and not done yet.
    pub fn pending_writes(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits, at most `grace`, for the writes handed to the store so far (at shutdown).
    pub async fn flush(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    writes = self.pending.load(Ordering::SeqCst),
                    "device store writes still pending at shutdown; those devices are learned again at their next registration"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The store, waiting until it is open.
    pub async fn open_store(&self) -> DeviceStore {
        let mut store = self.store.clone();
        loop {
            if let Some(opened) = store.borrow_and_update().clone() {
                return opened;
            }
            if store.changed().await.is_err() {
                // Never opened, and it never will be: wait for the process to end.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Gives the memory freed after reading every device back to the system. glibc's malloc
/// keeps freed memory for reuse, and the rows read at start (about 100 MiB for 100,000
/// devices, measured by `benches/device_store.rs`) are never needed again.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it only returns the allocator's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Opens the store again every [`RETRY`] until it answers, then reads it into the
/// registry (whose devices learned meanwhile are kept).
async fn open_later(
    config: crate::store::StoreConfig,
    registry: Arc<Registry>,
    set_store: watch::Sender<Option<DeviceStore>>,
) {
    loop {
        tokio::time::sleep(RETRY).await;
        let opened = match DeviceStore::open(&config).await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(%error, "the device store still cannot be opened");
                continue;
            }
        };
        match opened.load_all().await {
            Ok(devices) => {
                tracing::info!(store = %config.describe(), devices = devices.len(), "device store opened at last");
                registry.merge(devices);
                release_freed_memory();
                let _ = set_store.send(Some(opened));
                return;
            }
            Err(error) => tracing::debug!(%error, "the device store cannot be read yet"),
        }
    }
}

/// Writes the registry's changes to the store, in order; a write the database cannot
/// take now is tried again until it can.
async fn write(devices: Devices, mut queue: mpsc::UnboundedReceiver<Persist>) {
    let store = devices.open_store().await;
    let mut down = false;
    while let Some(op) = queue.recv().await {
        loop {
            let result = match &op {
                Persist::Put(device) => store.put(device).await,
                Persist::DeleteToken { platform, token } => {
                    store.delete_token(platform, token).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => {
                    match &op {
                        Persist::Put(device) => tracing::debug!(
                            extension = %device.extension,
                            device = %device.device_id,
                            "device store: device written"
                        ),
                        Persist::DeleteToken { platform, .. } => tracing::debug!(
                            %platform,
                            "device store: a dead token's devices deleted"
                        ),
                    }
                    if std::mem::take(&mut down) {
                        devices.writes_failing.store(false, Ordering::Relaxed);
                        tracing::info!("device store writes go through again");
                    }
                    break;
                }
                Err(StoreError::Unavailable(error)) => {
                    if !std::mem::replace(&mut down, true) {
                        devices.writes_failing.store(true, Ordering::Relaxed);
                        tracing::error!(%error, "the device store is unavailable: its writes wait, and calls use the devices in memory");
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Err(error) => {
                    // A write the store refuses for good (a conflict with a device the
                    // API registered, say) is not retried.
                    tracing::warn!(%error, "the device store refused a write");
                    break;
                }
            }
        }
        if let Persist::Put(device) = &op {
            devices.registry.saved(device);
        }
        devices.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Applies the changes other processes make to a shared store.
async fn follow(devices: Devices) {
    let store = devices.open_store().await;
    let Some(mut changes) = store.subscribe() else {
        return;
    };
    while let Some(change) = changes.recv().await {
        match change {
            StoreChange::Put(device) => devices.registry.put(device),
            StoreChange::Deleted {
                extension,
                device_id,
            } => {
                devices.registry.remove(&extension, &device_id);
            }
            StoreChange::Resync => loop {
                match devices.registry.resync_from(&store).await {
                    Ok(count) => {
                        tracing::debug!(devices = count, "device store resynchronised");
                        release_freed_memory();
                        break;
                    }
                    Err(error) => {
                        // The old cache serves meanwhile; what changed is read next time.
                        tracing::warn!(%error, "could not read the device store again; trying again");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            },
        }
    }
}

/// Forgets, every [`EXPIRY_CHECK`], the learned devices that have not registered for
/// `ttl`, in memory and in the store.
async fn expire(devices: Devices, ttl: Duration) {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    loop {
        tick.tick().await;
        let before = unix_now_secs().saturating_sub(ttl);
        for (extension, device) in devices.registry.expire(before) {
            tracing::info!(%extension, device, "forgot a learned device: no registration within store.learned_ttl");
        }
        if let Some(store) = devices.store() {
            if let Err(error) = store.expire_learned(before).await {
                tracing::warn!(%error, "could not expire learned devices in the store");
            }
        }
    }
}
