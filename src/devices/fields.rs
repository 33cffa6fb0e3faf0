//! A device described by fields (the device API's JSON body, the command line's
//! options): checked by its provider exactly as a device of the configuration file is.

use std::collections::BTreeSet;
use std::sync::Arc;

use pushwake_core::config::Spanned;
use serde_json::{Map, Value};

use super::{StoredDevice, ALLOW_CALL_PUSH};
use crate::push::provider::{provider, DeviceKeys, ProviderSettings};

/// The prefix of the ids pushwake gives devices it learned from a REGISTER; neither
/// the API nor the command line can create one (both can delete one).
pub const LEARNED_PREFIX: &str = "learned-";

/// PortSIP's `X-Push` field: the phone's OS (`ios`, `android`).
pub const DEVICE_OS: &str = "device-os";
/// PortSIP's `X-Push` field: the token(s).
pub const DEVICE_UID: &str = "device-uid";
/// PortSIP's `X-Push` field: the app's id (on iOS its bundle id).
pub const APP_ID: &str = "app-id";
/// PortSIP's `X-Push` field: whether to push for messages.
pub const ALLOW_MESSAGE_PUSH: &str = "allow-message-push";
/// The fields every device may have besides the platform's own keys.
const COMMON_FIELDS: [&str; 8] = [
    "platform",
    "token",
    "subscription",
    DEVICE_OS,
    DEVICE_UID,
    APP_ID,
    ALLOW_CALL_PUSH,
    ALLOW_MESSAGE_PUSH,
];
/// The apns device keys PortSIP's fields fill in.
const TOPIC: &str = "topic";
const ALERT_TOKEN: &str = "alert_token";

/// The longest extension or device id taken, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Extensions and device ids: 1 to [`MAX_ID_LEN`] of letters, digits and `._+@-`
/// (nothing that needs quoting in a log, a path or a scope pattern).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
}

/// A field that is missing, of the wrong type or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field at fault.
    pub field: String,
    /// What is wrong. Never quotes a token.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A string field, if present.
fn string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(FieldError::new(field, format!("{field} must be a string"))),
    }
}

/// A boolean field (`true`, or PortSIP's `"true"`), if present.
fn boolean(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(FieldError::new(
                field,
                format!("{field} must be true or false"),
            )),
        },
        Some(_) => Err(FieldError::new(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

/// The device that `body` (the device API's `PUT`, or the command line's fields)
/// describes, checked by its provider as a configured device is (a [`FieldError`]
/// names the field at fault, never quoting a token). See [`crate::http::devices`] for
/// the fields.
pub fn device_from_fields(
    providers: &[Arc<dyn ProviderSettings>],
    extension: &str,
    device_id: &str,
    body: &Map<String, Value>,
    now: i64,
) -> Result<StoredDevice, FieldError> {
    for (field, id) in [("extension", extension), ("device_id", device_id)] {
        if !valid_id(id) {
            return Err(FieldError::new(
                field,
                format!("1 to {MAX_ID_LEN} letters, digits or . _ + @ -"),
            ));
        }
    }
    if device_id.starts_with(LEARNED_PREFIX) {
        return Err(FieldError::new(
            "device_id",
            format!("ids starting with `{LEARNED_PREFIX}` are those of devices pushwake learned from a REGISTER; choose another"),
        ));
    }
    let device_os = string(body, DEVICE_OS)?.map(|os| os.trim().to_ascii_lowercase());
    let platform_name = match (string(body, "platform")?, device_os.as_deref()) {
        (Some(platform), _) => platform.trim().to_owned(),
        (None, Some("ios")) => "apns".to_owned(),
        (None, Some("android")) => "fcm".to_owned(),
        (None, Some(_)) => {
            return Err(FieldError::new(
                DEVICE_OS,
                "device-os must be ios or android (or give platform)",
            ))
        }
        (None, None) => return Err(FieldError::new("platform", "platform is missing")),
    };
    let Some(kind) = provider(&platform_name) else {
        return Err(FieldError::new(
            "platform",
            format!(
                "`{platform_name}` is not a platform pushwake pushes through (apns, fcm, hms, webhook, webpush)"
            ),
        ));
    };
    let Some(settings) = providers.iter().find(|p| p.platform() == kind.platform()) else {
        return Err(FieldError::new(
            "platform",
            format!("{platform_name} devices need a [{platform_name}] section in pushwake.toml"),
        ));
    };
    let own_keys = kind.device_keys();
    if let Some(unknown) = body
        .keys()
        .find(|k| !COMMON_FIELDS.contains(&k.as_str()) && !own_keys.contains(&k.as_str()))
    {
        let mut known: BTreeSet<&str> = COMMON_FIELDS.into_iter().collect();
        known.extend(own_keys);
        return Err(FieldError::new(
            unknown,
            format!(
                "unknown field for {} {platform_name} device; the fields are {}",
                kind.article(),
                known.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }

    // The token, and where it came from (for errors).
    let uid = string(body, DEVICE_UID)?;
    let (token, token_field, second_token) =
        match (string(body, "token")?, body.get("subscription"), uid) {
            (Some(token), None, _) => (token.to_owned(), "token", None),
            (None, Some(subscription @ Value::Object(_)), None) => {
                (subscription.to_string(), "subscription", None)
            }
            (None, Some(_), None) => {
                return Err(FieldError::new(
                    "subscription",
                    "subscription must be the browser's PushSubscription object",
                ))
            }
            (None, None, Some(uid)) => match uid.split_once('|') {
                // PortSIP on iOS: the VoIP token, then the APNs (alert) token.
                Some((voip, remote)) => (voip.to_owned(), DEVICE_UID, Some(remote.to_owned())),
                None => (uid.to_owned(), DEVICE_UID, None),
            },
            (None, None, None) => return Err(FieldError::new("token", "token is missing")),
            _ => {
                return Err(FieldError::new(
                    "token",
                    "give one of token, subscription or device-uid",
                ))
            }
        };

    // The provider's own keys, each at a span of its own so that a problem found by
    // the provider's check names its field.
    let mut fields: Vec<String> = vec![token_field.to_owned()];
    let mut keys = DeviceKeys::new();
    for key in own_keys {
        if let Some(value) = string(body, key)? {
            fields.push((*key).to_owned());
            keys.insert(
                (*key).to_owned(),
                Spanned::new(fields.len() - 1..fields.len(), value.to_owned()),
            );
        }
    }
    if own_keys.contains(&TOPIC) && !keys.contains_key(TOPIC) {
        if let Some(app) = string(body, APP_ID)? {
            fields.push(APP_ID.to_owned());
            keys.insert(
                TOPIC.to_owned(),
                Spanned::new(
                    fields.len() - 1..fields.len(),
                    format!("{}.voip", app.trim()),
                ),
            );
        }
    }
    let checked = |keys: &DeviceKeys| {
        settings
            .device(&Spanned::new(0..1, token.clone()), keys)
            .map_err(|(span, message)| {
                let field = fields.get(span.start).map_or(token_field, String::as_str);
                FieldError::new(field, message)
            })
    };
    let (token, mut params) = match second_token {
        Some(remote) if own_keys.contains(&ALERT_TOKEN) && !keys.contains_key(ALERT_TOKEN) => {
            let mut with_alert = keys.clone();
            with_alert.insert(
                ALERT_TOKEN.to_owned(),
                Spanned::new(0..1, remote.trim().to_owned()),
            );
            // The alert token needs an alert_topic the operator may not have set: then
            // the device is woken without the missed-call alert.
            checked(&with_alert).or_else(|_| checked(&keys))?
        }
        _ => checked(&keys)?,
    };
    if let Some(os) = &device_os {
        params.set(DEVICE_OS, os.clone());
    }
    if let Some(app) = string(body, APP_ID)? {
        params.set(APP_ID, app.trim());
    }
    for key in [ALLOW_CALL_PUSH, ALLOW_MESSAGE_PUSH] {
        if let Some(allowed) = boolean(body, key)? {
            params.set(key, if allowed { "true" } else { "false" });
        }
    }
    Ok(StoredDevice {
        extension: extension.to_owned(),
        device_id: device_id.to_owned(),
        platform: kind.platform().as_str().to_owned(),
        token,
        params,
        learned: false,
        updated_at: now,
    })
}
