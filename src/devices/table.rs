//! The registry's devices in memory, laid out for 100,000 of them in a few tens of MiB.
//!
//! Why not a map of [`StoredDevice`]s: a `BTreeMap` node reserves room for eleven
//! entries while an extension has one to five devices, each device would hold its
//! extension again, and every small string and settings map is an allocation of its own
//! (measured: 110 MiB for 100,000 devices; this layout: about a third of that, see
//! `benches/device_store.rs`). Here an extension's devices are one sorted `Vec` of
//! compact entries: boxed strings, the platform name shared with the provider list, the
//! settings as one boxed slice (none for most devices).

use std::borrow::Cow;
use std::collections::HashMap;

use pushwake_core::directory::DeviceParams;

use super::StoredDevice;
use crate::push::provider::provider;

/// A device's settings: `(key, value, secret)`, in key order.
type Settings = Box<[(Box<str>, Box<str>, bool)]>;

/// One device, without its extension (the table's key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub device_id: Box<str>,
    /// A known provider's own name (no allocation), or a name only a newer node knows.
    pub platform: Cow<'static, str>,
    pub token: Box<str>,
    pub params: Settings,
    pub learned: bool,
    pub updated_at: i64,
    /// Cleared when a resynchronisation starts, set on every entry it reads (and on
    /// every entry written meanwhile): the unmarked ones are gone from the store.
    pub seen: bool,
}

impl Entry {
    fn from_device(device: StoredDevice) -> (Box<str>, Self) {
        let platform = match provider(&device.platform) {
            Some(known) => Cow::Borrowed(known.platform().as_str()),
            None => Cow::Owned(device.platform),
        };
        let params: Settings = device
            .params
            .entries()
            .map(|(k, v, secret)| (Box::from(k), Box::from(v), secret))
            .collect();
        (
            device.extension.into_boxed_str(),
            Self {
                device_id: device.device_id.into_boxed_str(),
                platform,
                token: device.token.into_boxed_str(),
                params,
                learned: device.learned,
                updated_at: device.updated_at,
                seen: true,
            },
        )
    }

    /// The device's settings as the pushkins take them.
    pub fn params(&self) -> DeviceParams {
        DeviceParams::from_entries(
            self.params
                .iter()
                .map(|(k, v, secret)| (k.to_string(), v.to_string(), *secret)),
        )
    }

    /// Replaces the settings.
    pub fn set_params(&mut self, params: &DeviceParams) {
        self.params = params
            .entries()
            .map(|(k, v, secret)| (Box::from(k), Box::from(v), secret))
            .collect();
    }

    /// Whether it holds exactly `device` (whose extension is the table's business).
    pub fn is(&self, device: &StoredDevice) -> bool {
        *self.device_id == device.device_id
            && self.platform == device.platform
            && *self.token == device.token
            && self.learned == device.learned
            && self.updated_at == device.updated_at
            && self.params.len() == device.params.entries().count()
            && self
                .params
                .iter()
                .zip(device.params.entries())
                .all(|((k, v, s), (k2, v2, s2))| **k == *k2 && **v == *v2 && *s == s2)
    }

    pub fn to_device(&self, extension: &str) -> StoredDevice {
        StoredDevice {
            extension: extension.to_owned(),
            device_id: self.device_id.to_string(),
            platform: self.platform.to_string(),
            token: self.token.to_string(),
            params: self.params(),
            learned: self.learned,
            updated_at: self.updated_at,
        }
    }
}

/// Every device, by extension; each extension's sorted by device id.
#[derive(Debug, Default)]
pub(super) struct Table {
    extensions: HashMap<Box<str>, Vec<Entry>>,
}

impl Table {
    /// A table of `devices`.
    pub fn from_devices(devices: impl IntoIterator<Item = StoredDevice>) -> Self {
        let mut table = Self::default();
        for device in devices {
            table.insert(device);
        }
        table.shrink();
        table
    }

    /// Gives back the room that growing left over.
    pub fn shrink(&mut self) {
        for entries in self.extensions.values_mut() {
            entries.shrink_to_fit();
        }
        self.extensions.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.extensions.values().map(Vec::len).sum()
    }

    /// The extensions that have devices.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(extension, _)| &**extension)
    }

    /// The extension's devices, by id.
    pub fn entries(&self, extension: &str) -> &[Entry] {
        self.extensions.get(extension).map_or(&[], Vec::as_slice)
    }

    pub fn get(&self, extension: &str, device_id: &str) -> Option<&Entry> {
        let entries = self.extensions.get(extension)?;
        let at = entries
            .binary_search_by(|e| (*e.device_id).cmp(device_id))
            .ok()?;
        Some(&entries[at])
    }

    /// The extension's device holding `token` on `platform`.
    pub fn with_token_mut(
        &mut self,
        extension: &str,
        platform: &str,
        token: &str,
    ) -> Option<&mut Entry> {
        self.extensions
            .get_mut(extension)?
            .iter_mut()
            .find(|e| e.platform == platform && &*e.token == token)
    }

    /// Inserts `device`, replacing the one with its id; whether there was one.
    pub fn insert(&mut self, device: StoredDevice) -> bool {
        let (extension, entry) = Entry::from_device(device);
        let entries = self.extensions.entry(extension).or_default();
        match entries.binary_search_by(|e| e.device_id.cmp(&entry.device_id)) {
            Ok(at) => {
                entries[at] = entry;
                true
            }
            Err(at) => {
                entries.insert(at, entry);
                false
            }
        }
    }

    /// Inserts `device` unless its id is taken.
    pub fn insert_new(&mut self, device: StoredDevice) {
        if self.get(&device.extension, &device.device_id).is_none() {
            self.insert(device);
        }
    }

    /// Removes a device; whether it was there.
    pub fn remove(&mut self, extension: &str, device_id: &str) -> bool {
        let Some(entries) = self.extensions.get_mut(extension) else {
            return false;
        };
        let Ok(at) = entries.binary_search_by(|e| (*e.device_id).cmp(device_id)) else {
            return false;
        };
        entries.remove(at);
        if entries.is_empty() {
            self.extensions.remove(extension);
        }
        true
    }

    /// Starts a resynchronisation: every entry unseen.
    pub fn unsee_all(&mut self) {
        for entries in self.extensions.values_mut() {
            for e in entries {
                e.seen = false;
            }
        }
    }

    /// A device the resynchronisation read: marked seen if it is there as it is (which
    /// allocates nothing: the usual case), written otherwise.
    pub fn see(&mut self, device: StoredDevice) {
        if let Some(entries) = self.extensions.get_mut(device.extension.as_str()) {
            if let Ok(at) = entries.binary_search_by(|e| (*e.device_id).cmp(&device.device_id)) {
                if entries[at].is(&device) {
                    entries[at].seen = true;
                    return;
                }
            }
        }
        self.insert(device);
    }

    /// Keeps a device through a resynchronisation although the store did not show it
    /// (its write is still on its way).
    pub fn mark_seen(&mut self, extension: &str, device_id: &str) {
        if let Some(entries) = self.extensions.get_mut(extension) {
            if let Ok(at) = entries.binary_search_by(|e| (*e.device_id).cmp(device_id)) {
                entries[at].seen = true;
            }
        }
    }

    /// Ends a resynchronisation: the entries it did not see are removed.
    pub fn drop_unseen(&mut self) -> usize {
        self.remove_where(|e| !e.seen).len()
    }

    /// Removes the devices for which `gone` says so; returns them as (extension, id).
    pub fn remove_where(&mut self, mut gone: impl FnMut(&Entry) -> bool) -> Vec<(String, String)> {
        let mut removed = Vec::new();
        self.extensions.retain(|extension, entries| {
            entries.retain(|e| {
                let remove = gone(e);
                if remove {
                    removed.push((extension.to_string(), e.device_id.to_string()));
                }
                !remove
            });
            !entries.is_empty()
        });
        removed
    }
}
