//! The devices that are not in the configuration file: learned from the phones' own
//! registrations (RFC 8599 parameters in a REGISTER's contact) or registered by an app
//! backend through the device API.
//!
//! The [`Registry`] keeps them in memory, so a call's device lookup never waits on a
//! database ([`DeviceSource`] for the wake engine); the store keeps them across restarts
//! and shares them between nodes. Writes reach the registry at once and the store
//! behind it ([`Persist`]): a learned device is pushed for the very next call, whatever
//! the database is doing.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use pushwake_core::directory::{Device, DeviceSource, DeviceToken};
use pushwake_core::rfc8599::PushParams;
use pushwake_core::wake::DevicesChanged;
use tokio::sync::mpsc;

use crate::push::provider::{pn_provider, provider, ProviderSettings};
pub use crate::store::StoredDevice;

/// The device key of PortSIP's `X-Push` (`allow-call-push=false`): the device is kept
/// but not woken for calls.
pub const ALLOW_CALL_PUSH: &str = "allow-call-push";

/// Whether the device asked not to be woken for calls (PortSIP's
/// `allow-call-push=false`).
pub fn refuses_calls(device: &StoredDevice) -> bool {
    refuses_calls_in(&device.params)
}

fn refuses_calls_in(params: &pushwake_core::directory::DeviceParams) -> bool {
    says_no(params, ALLOW_CALL_PUSH)
}

/// Whether the device asked for no message push (PortSIP's
/// `allow-message-push=false`).
pub fn refuses_messages_in(params: &pushwake_core::directory::DeviceParams) -> bool {
    says_no(params, fields::ALLOW_MESSAGE_PUSH)
}

/// Whether the device's setting `key` is off (`false`, `no`, `0`, in any case).
fn says_no(params: &pushwake_core::directory::DeviceParams, key: &str) -> bool {
    matches!(
        params.get(key).map(str::to_ascii_lowercase).as_deref(),
        Some("false" | "no" | "0")
    )
}

/// The id of a device learned from a registration: stable for one token, and telling
/// nothing of it (64 bits of its SHA-256, so 100,000 devices do not collide).
pub fn learned_id(platform: &str, token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("learned-{platform}-{hex}")
}

/// What [`register`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// A device with this id was there before (and is replaced).
    pub replaced: bool,
    /// The id of the device learned from a REGISTER with the same token, deleted in
    /// favour of this one (the app's backend now owns that token).
    pub replaced_learned: Option<String>,
}

/// Writes `device` (from the device API or the command line) to `store`, committed
/// when this returns `Ok`: it replaces the device with its id, and the device learned
/// from a REGISTER with the same token (whose id [`learned_id`] gives). Another
/// registered device of the extension with the same token is a
/// [`StoreError::Conflict`](crate::store::StoreError::Conflict).
pub async fn register(
    store: &crate::store::DeviceStore,
    device: &StoredDevice,
) -> Result<Registered, crate::store::StoreError> {
    let twin = learned_id(&device.platform, &device.token);
    let replaced_learned = match store.get(&device.extension, &twin).await? {
        Some(learned) if learned.learned && learned.token == device.token => {
            store.delete(&device.extension, &twin).await?;
            Some(twin)
        }
        _ => None,
    };
    let replaced = store
        .get(&device.extension, &device.device_id)
        .await?
        .is_some();
    store.put(device).await?;
    Ok(Registered {
        replaced,
        replaced_learned,
    })
}

/// A learned device registering again with nothing new is written to the store again
/// (its `updated_at`, which `learned_ttl` counts from) at most this often.
pub const REFRESH_WRITE_INTERVAL: i64 = 3600;

/// What a registration taught.
#[derive(Debug, PartialEq, Eq)]
pub enum Learned {
    /// The contact carries no push parameters.
    Nothing,
    /// A device not known before.
    New(StoredDevice),
    /// A known device registered again: its settings changed, or its last registration
    /// was written [`REFRESH_WRITE_INTERVAL`] or more ago; written again.
    Again(StoredDevice),
    /// A known device, seen again with nothing to write.
    Known,
    /// The parameters were refused; the reason never quotes a token.
    Refused(String),
}

/// A write for the store, made after the registry took it.
#[derive(Debug, PartialEq, Eq)]
pub enum Persist {
    /// Insert or replace this device.
    Put(StoredDevice),
    /// Delete every device holding this token (the provider declared it dead).
    DeleteToken {
        /// The platform.
        platform: String,
        /// The token. Secret.
        token: String,
    },
}

/// The registered devices, by extension. Cheap to read from the call path.
pub struct Registry {
    devices: RwLock<Table>,
    providers: Vec<Arc<dyn ProviderSettings>>,
    persist: Option<mpsc::UnboundedSender<Persist>>,
    /// Writes handed to `persist` and not done yet (the writer counts them down).
    pending: Arc<AtomicUsize>,
    /// The devices whose write is handed to `persist` and not done yet, by (extension,
    /// device id), with how many: a resynchronisation reads the store without them, so
    /// it must keep what memory has of them instead of dropping or overwriting it.
    unsaved: std::sync::Mutex<std::collections::HashMap<(String, String), usize>>,
    /// Whose devices changed since the driver last asked ([`Registry::take_changes`]).
    changes: std::sync::Mutex<Option<DevicesChanged>>,
    /// Woken when `changes` gets something.
    changed: tokio::sync::Notify,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("devices", &self.len())
            .finish_non_exhaustive()
    }
}

/// The key of a device's pending writes.
fn device_key(device: &StoredDevice) -> (String, String) {
    (device.extension.clone(), device.device_id.clone())
}

impl Registry {
    /// An empty registry that learns for the configured `providers`. Writes go to
    /// `persist` (the store's writer), if given.
    pub fn new(
        providers: Vec<Arc<dyn ProviderSettings>>,
        persist: Option<mpsc::UnboundedSender<Persist>>,
    ) -> Self {
        Self::with_pending(providers, persist, Arc::new(AtomicUsize::new(0)))
    }

    /// Like [`Registry::new`], counting each write handed to `persist` up in `pending`
    /// (the writer counts it down when done).
    pub fn with_pending(
        providers: Vec<Arc<dyn ProviderSettings>>,
        persist: Option<mpsc::UnboundedSender<Persist>>,
        pending: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            devices: RwLock::new(Table::default()),
            providers,
            persist,
            pending,
            unsaved: std::sync::Mutex::default(),
            changes: std::sync::Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Notes that `extension`'s devices changed (`None`: anybody's might have).
    fn note_change(&self, extension: Option<&str>) {
        let mut changes = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *changes = match (changes.take(), extension) {
            (Some(DevicesChanged::All), _) | (_, None) => Some(DevicesChanged::All),
            (Some(DevicesChanged::Of(mut of)), Some(extension)) => {
                if !of.iter().any(|e| e == extension) {
                    of.push(extension.to_owned());
                }
                Some(DevicesChanged::Of(of))
            }
            (None, Some(extension)) => Some(DevicesChanged::Of(vec![extension.to_owned()])),
        };
        drop(changes);
        self.changed.notify_one();
    }

    /// Whose devices changed since the last call, if anybody's.
    pub fn take_changes(&self) -> Option<DevicesChanged> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Returns once devices changed (at once if they did since the last
    /// [`Registry::take_changes`]).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.devices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.devices
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn persist(&self, op: Persist) {
        if let Some(tx) = &self.persist {
            self.pending.fetch_add(1, Ordering::SeqCst);
            let key = match &op {
                Persist::Put(device) => Some(device_key(device)),
                Persist::DeleteToken { .. } => None,
            };
            if let Some(key) = &key {
                *self.unsaved().entry(key.clone()).or_default() += 1;
            }
            // Only fails once the writer is gone, at shutdown.
            if tx.send(op).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                if let Some(key) = &key {
                    self.unsaved_done(key);
                }
            }
        }
    }

    fn unsaved(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), usize>> {
        self.unsaved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn unsaved_done(&self, key: &(String, String)) {
        let mut unsaved = self.unsaved();
        if let Some(count) = unsaved.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                unsaved.remove(key);
            }
        }
    }

    /// The writer is done with a put of `device` (written, or refused for good).
    pub fn saved(&self, device: &StoredDevice) {
        self.unsaved_done(&device_key(device));
    }

    fn is_unsaved(&self, extension: &str, device_id: &str) -> bool {
        self.unsaved()
            .contains_key(&(extension.to_owned(), device_id.to_owned()))
    }

    /// Replaces every device with `devices` (the store's content, at start or after a
    /// resynchronisation).
    pub fn load(&self, devices: impl IntoIterator<Item = StoredDevice>) {
        // Built outside the lock: the call path keeps reading the old table meanwhile.
        let table = Table::from_devices(devices);
        *self.write() = table;
        self.note_change(None);
    }

    /// Replaces every device with the store's, read row by row into a new table (the
    /// call path reads the old one meanwhile); returns how many.
    pub async fn load_from(
        &self,
        store: &crate::store::DeviceStore,
    ) -> Result<usize, crate::store::StoreError> {
        let mut table = Table::default();
        store
            .load_each(|device| {
                table.insert(device);
            })
            .await?;
        table.shrink();
        let count = table.len();
        *self.write() = table;
        self.note_change(None);
        Ok(count)
    }

    /// Makes the registry hold exactly the store's devices (after its change feed's
    /// `Resync`), reading them row by row and changing only what differs: no second copy
    /// of every device at any moment. A device the registry takes meanwhile (learned
    /// from a REGISTER, put by the API) is kept. Returns how many were read.
    pub async fn resync_from(
        &self,
        store: &crate::store::DeviceStore,
    ) -> Result<usize, crate::store::StoreError> {
        self.write().unsee_all();
        let mut count = 0;
        store
            .load_each(|device| {
                count += 1;
                // A device whose write is still on its way is newer in memory.
                if !self.is_unsaved(&device.extension, &device.device_id) {
                    self.write().see(device);
                }
            })
            .await?;
        let unsaved: Vec<(String, String)> = self.unsaved().keys().cloned().collect();
        let mut table = self.write();
        for (extension, device_id) in &unsaved {
            table.mark_seen(extension, device_id);
        }
        table.drop_unseen();
        table.shrink();
        drop(table);
        self.note_change(None);
        Ok(count)
    }

    /// Adds the store's devices that the registry does not have (it was opened late:
    /// what was learned meanwhile is newer and stays).
    pub fn merge(&self, devices: impl IntoIterator<Item = StoredDevice>) {
        let mut table = self.write();
        for device in devices {
            table.insert_new(device);
        }
        table.shrink();
        drop(table);
        self.note_change(None);
    }

    /// The push providers configured (whose devices it learns and the API takes).
    pub fn providers(&self) -> &[Arc<dyn ProviderSettings>] {
        &self.providers
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The extension's devices, by id.
    pub fn list(&self, extension: &str) -> Vec<StoredDevice> {
        self.read()
            .entries(extension)
            .iter()
            .map(|e| e.to_device(extension))
            .collect()
    }

    /// One device.
    pub fn get(&self, extension: &str, device_id: &str) -> Option<StoredDevice> {
        self.read()
            .get(extension, device_id)
            .map(|e| e.to_device(extension))
    }

    /// Learns from a registration of `extension` with `contact` at `now` (Unix
    /// seconds), which the PBX accepted: a contact with push parameters for a
    /// configured provider becomes (or refreshes) a learned device, written to the store
    /// behind.
    pub fn learn(&self, extension: &str, contact: &str, now: i64) -> Learned {
        let params = match PushParams::from_contact(contact) {
            Ok(Some(params)) => params,
            Ok(None) => return Learned::Nothing,
            Err(error) => return Learned::Refused(format!("malformed push parameters: {error}")),
        };
        let Some(kind) = pn_provider(&params.provider) else {
            return Learned::Refused(format!(
                "pn-provider {} is not one pushwake pushes through",
                params.provider
            ));
        };
        let platform = kind.platform();
        let Some(settings) = self.providers.iter().find(|p| p.platform() == platform) else {
            return Learned::Refused(format!(
                "pn-provider {} needs a [{platform}] section",
                params.provider
            ));
        };
        let (token, device_params) = match settings.learn(&params) {
            Ok(learned) => learned,
            Err(reason) => return Learned::Refused(reason),
        };
        let platform = platform.as_str().to_owned();
        let mut devices = self.write();
        // The same token registered through the API: that device it is.
        let learned = match devices.with_token_mut(extension, &platform, &token) {
            Some(entry) if !entry.learned => return Learned::Known,
            Some(entry)
                if entry.params() == device_params
                    && now - entry.updated_at < REFRESH_WRITE_INTERVAL =>
            {
                return Learned::Known
            }
            Some(entry) => {
                entry.set_params(&device_params);
                entry.updated_at = now;
                Learned::Again(entry.to_device(extension))
            }
            None => {
                let device = StoredDevice {
                    extension: extension.to_owned(),
                    device_id: learned_id(&platform, &token),
                    platform,
                    token,
                    params: device_params,
                    learned: true,
                    updated_at: now,
                };
                devices.insert(device.clone());
                Learned::New(device)
            }
        };
        drop(devices);
        if let Learned::New(_) = &learned {
            self.note_change(Some(extension));
        }
        if let Learned::New(device) | Learned::Again(device) = &learned {
            self.persist(Persist::Put(device.clone()));
        }
        learned
    }

    /// Puts `device` (written to the store already, by the API), replacing the one with
    /// its id.
    pub fn put(&self, device: StoredDevice) {
        let extension = device.extension.clone();
        self.write().insert(device);
        self.note_change(Some(&extension));
    }

    /// Removes a device; whether it was there.
    pub fn remove(&self, extension: &str, device_id: &str) -> bool {
        let removed = self.write().remove(extension, device_id);
        if removed {
            self.note_change(Some(extension));
        }
        removed
    }

    /// Notes that the devices of those `(extension, device id)` went.
    fn note_removed(&self, removed: &[(String, String)]) {
        for (extension, _) in removed {
            self.note_change(Some(extension));
        }
    }

    /// Forgets every device holding `token` (the provider declared it dead), in the
    /// store too; returns them.
    pub fn forget_token(&self, platform: &str, token: &str) -> Vec<(String, String)> {
        let forgotten = self
            .write()
            .remove_where(|e| e.platform == platform && &*e.token == token);
        if !forgotten.is_empty() {
            self.persist(Persist::DeleteToken {
                platform: platform.to_owned(),
                token: token.to_owned(),
            });
        }
        self.note_removed(&forgotten);
        forgotten
    }

    /// Forgets the learned devices not registered since `before` (Unix seconds);
    /// returns them. (The store expires its own copy.)
    pub fn expire(&self, before: i64) -> Vec<(String, String)> {
        let expired = self
            .write()
            .remove_where(|e| e.learned && e.updated_at < before);
        self.note_removed(&expired);
        expired
    }
}

impl DeviceSource for Registry {
    fn extensions(&self) -> Vec<String> {
        self.read().extensions().map(str::to_owned).collect()
    }

    fn devices_of(&self, extension: &str) -> Vec<Device> {
        self.devices_where(extension, |params| !refuses_calls_in(params))
    }

    /// All of them: one that asked for no message push (`allow-message-push=false`)
    /// is left out by the push service, which says so.
    fn message_devices_of(&self, extension: &str) -> Vec<Device> {
        self.devices_where(extension, |_| true)
    }
}

impl Registry {
    /// The extension's devices whose settings pass `keep`.
    fn devices_where(
        &self,
        extension: &str,
        keep: impl Fn(&pushwake_core::directory::DeviceParams) -> bool,
    ) -> Vec<Device> {
        self.read()
            .entries(extension)
            .iter()
            .filter_map(|e| {
                // A platform this build does not know (a newer node wrote it): skipped.
                let platform = provider(&e.platform)?.platform();
                let params = e.params();
                if !keep(&params) {
                    return None;
                }
                Some(Device {
                    platform,
                    token: DeviceToken::new(e.token.to_string()),
                    label: format!("{extension}/{}", e.device_id),
                    params,
                })
            })
            .collect()
    }
}

pub mod command;
pub mod fields;
pub mod section;
mod table;
use table::Table;
pub mod service;

#[cfg(test)]
mod tests;
