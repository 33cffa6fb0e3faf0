//! `pushwake devices list|add|remove`: the device store from the command line, for
//! operators without an app backend. It works on the store the configuration names,
//! beside a running daemon: with PostgreSQL every node hears the change at once; with
//! SQLite the daemon reads the change from the file's change log within a second.

use std::fmt::Write as _;
use std::sync::Arc;

use pushwake_core::directory::DeviceToken;
use serde_json::{Map, Value};

use super::fields::device_from_fields;
use super::{register, StoredDevice};
use crate::push::provider::ProviderSettings;
use crate::push::unix_now_secs;
use crate::store::DeviceStore;

/// The table `list` prints: one device per line, tab-separated, tokens as
/// fingerprints.
pub fn table(devices: &[StoredDevice]) -> String {
    let mut out = String::from("EXTENSION\tDEVICE\tPLATFORM\tTOKEN\tSOURCE\tUPDATED\tSETTINGS\n");
    for d in devices {
        let settings: Vec<String> = d
            .params
            .entries()
            .map(|(key, value, secret)| {
                if secret {
                    format!("{key}={}", DeviceToken::new(value))
                } else {
                    format!("{key}={value}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.extension,
            d.device_id,
            d.platform,
            DeviceToken::new(d.token.as_str()),
            if d.learned { "learned" } else { "registered" },
            utc(d.updated_at),
            settings.join(" ")
        );
    }
    out
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The devices of `extension` (all of them if `None`), ordered by extension and id.
pub async fn list(store: &DeviceStore, extension: Option<&str>) -> Result<String, String> {
    let mut devices = store.load_all().await.map_err(|e| e.to_string())?;
    devices.retain(|d| extension.is_none_or(|e| d.extension == e));
    devices.sort_by(|a, b| (&a.extension, &a.device_id).cmp(&(&b.extension, &b.device_id)));
    Ok(table(&devices))
}

/// Adds (or replaces) `device_id` of `extension` from `fields` (`platform`, `token`
/// and the platform's keys, as the device API takes them); the line to print.
pub async fn add(
    store: &DeviceStore,
    providers: &[Arc<dyn ProviderSettings>],
    extension: &str,
    device_id: &str,
    fields: &[(String, String)],
) -> Result<String, String> {
    let body: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let device = device_from_fields(providers, extension, device_id, &body, unix_now_secs())
        .map_err(|e| e.to_string())?;
    let registered = register(store, &device).await.map_err(|e| e.to_string())?;
    let mut line = format!(
        "{} device {device_id} of extension {extension} ({} token {})",
        if registered.replaced {
            "replaced"
        } else {
            "added"
        },
        device.platform,
        DeviceToken::new(device.token.as_str())
    );
    if let Some(learned) = registered.replaced_learned {
        let _ = write!(line, "; it replaces the learned device {learned}");
    }
    Ok(line)
}

/// Removes `device_id` of `extension`; the line to print.
pub async fn remove(
    store: &DeviceStore,
    extension: &str,
    device_id: &str,
) -> Result<String, String> {
    match store.delete(extension, device_id).await {
        Ok(true) => Ok(format!(
            "removed device {device_id} of extension {extension}"
        )),
        Ok(false) => Err(format!("extension {extension} has no device {device_id}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_083_199), "2026-11-30T23:59:59Z");
    }
}
