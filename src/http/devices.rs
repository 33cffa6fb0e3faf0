//! The device API: an app vendor's backend registers its users' push tokens.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/extensions/{ext}/devices` | 200 `{"extension": …, "devices": [device, …]}` (an empty list for an extension without any) |
//! | `GET /v1/extensions/{ext}/devices/{device_id}` | 200 device, or 404 |
//! | `PUT /v1/extensions/{ext}/devices/{device_id}` with a JSON body | 201 device (new) or 200 device (replaced), once the store has committed it |
//! | `DELETE /v1/extensions/{ext}/devices/{device_id}` | 204, or 404 |
//!
//! Every request carries `Authorization: Bearer <token>`, a token of
//! `[http] api_tokens_file` (see [`tokens`](super::tokens)) whose scope covers the
//! extension. A device as answered never holds a token in full, only its fingerprint:
//!
//! ```json
//! {"extension": "101", "device_id": "iphone", "platform": "apns", "token": "~1a2b3c4d",
//!  "learned": false, "updated_at": 1764590000, "settings": {"topic": "com.example.app.voip"}}
//! ```
//!
//! The body of a `PUT` is an object with `platform` and `token`, and the platform's own
//! device keys (`topic`, `environment`, `alert_token` for apns), checked exactly as the
//! configuration file's devices are. A Web Push device may give its `subscription` as
//! the browser's PushSubscription object instead of a `token` string. PortSIP's `X-Push`
//! fields are taken as such: `device-os` (`ios` → apns, `android` → fcm) stands for
//! `platform`, `device-uid` (iOS: `<VoIP token>|<APNs token>`) for `token` (the second
//! token, when apns has an `alert_topic`, for `alert_token`), `app-id` (iOS) for the
//! topic `<app-id>.voip`; `allow-call-push` and `allow-message-push` (booleans or
//! `"true"`/`"false"`) are kept, and `allow-call-push: false` keeps the device but does
//! not wake it for calls.
//!
//! Errors: 401 (no or unknown token), 403 (the token's scope does not cover the
//! extension), 404 (no such device; the device API is off without `api_tokens_file`),
//! 405, 400 (not JSON), 409 (another device of the extension has this token), 413 (a
//! body over [`MAX_BODY_BYTES`]), 415 (not `Content-Type: application/json`), 422 (a
//! field is missing, of the wrong type or refused: `"field"` names it), 503 (the device
//! store cannot be reached: `Retry-After` says when to try again; calls still use the
//! devices in memory).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use pushwake_core::config::Spanned;
use pushwake_core::directory::DeviceToken;
use serde_json::{json, Map, Value};

use super::tokens::Caller;
use super::{bearer, error, method_not_allowed, not_found, reply, unauthorized, Service};
use crate::devices::{StoredDevice, ALLOW_CALL_PUSH};
use crate::push::provider::{provider, DeviceKeys, ProviderSettings};
use crate::push::unix_now_secs;
use crate::store::StoreError;

/// The path prefix of the device API.
pub const PATH: &str = "/v1/extensions/";
/// The largest request body taken (a Web Push subscription is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest extension or device id taken, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The prefix of the ids pushwake gives devices it learned from a REGISTER; the API
/// cannot create one (it can delete one).
const LEARNED_PREFIX: &str = "learned-";
/// What a client is told to wait before writing again while the store is down.
const RETRY_AFTER_SECS: &str = "5";

/// PortSIP's `X-Push` fields.
const DEVICE_OS: &str = "device-os";
const DEVICE_UID: &str = "device-uid";
const APP_ID: &str = "app-id";
const ALLOW_MESSAGE_PUSH: &str = "allow-message-push";
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

/// A refused request: its status, the field at fault, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The answer's status.
    pub status: StatusCode,
    /// The request's field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong. Never quotes a token.
    pub message: String,
}

impl Refusal {
    fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        error(self.status, self.field.as_deref(), &self.message)
    }
}

/// The answer to a request under [`PATH`].
pub async fn answer<B>(service: &Service, request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = request.uri().path().to_owned();
    let Some((extension, device_id)) = parse_path(&path) else {
        return not_found();
    };
    let (Some(devices), Some(tokens)) = (&service.devices, &service.api_tokens) else {
        return error(
            StatusCode::NOT_FOUND,
            None,
            "the device API is off: set [http] api_tokens_file",
        );
    };
    let allow = if device_id.is_some() {
        "GET, PUT, DELETE"
    } else {
        "GET"
    };
    let method = request.method().clone();
    let known = matches!(
        (&device_id, &method),
        (_, &Method::GET) | (Some(_), &Method::PUT | &Method::DELETE)
    );
    if !known {
        return method_not_allowed(allow);
    }
    let caller = tokens.caller(bearer(request.headers()));
    let Caller::Known { line, .. } = &caller else {
        return unauthorized(
            "send a token of [http] api_tokens_file as Authorization: Bearer <token>",
        );
    };
    let line = *line;
    if !valid_id(extension) {
        return error(
            StatusCode::NOT_FOUND,
            Some("extension"),
            &format!("not an extension: 1 to {MAX_ID_LEN} letters, digits or . _ + @ -"),
        );
    }
    if !caller.may_manage(extension) {
        return error(
            StatusCode::FORBIDDEN,
            None,
            &format!("this token may not manage extension {extension}'s devices"),
        );
    }
    let registry = devices.registry();
    let Some(device_id) = device_id else {
        let listed: Vec<Value> = registry.list(extension).iter().map(view).collect();
        return reply(
            StatusCode::OK,
            json!({ "extension": extension, "devices": listed }),
        );
    };
    if !valid_id(device_id) {
        return error(
            StatusCode::NOT_FOUND,
            Some("device_id"),
            &format!("not a device id: 1 to {MAX_ID_LEN} letters, digits or . _ + @ -"),
        );
    }
    match method {
        Method::GET => match registry.get(extension, device_id) {
            Some(device) => reply(StatusCode::OK, view(&device)),
            None => not_found(),
        },
        Method::DELETE => delete(devices, extension, device_id, line).await,
        _ => {
            let body = match read_json(request).await {
                Ok(body) => body,
                Err(refusal) => return refusal.into_response(),
            };
            let device = match device_from_body(
                registry.providers(),
                extension,
                device_id,
                &body,
                unix_now_secs(),
            ) {
                Ok(device) => device,
                Err(refusal) => return refusal.into_response(),
            };
            put(devices, device, line).await
        }
    }
}

/// `{ext}` and `{device_id}` of `/v1/extensions/{ext}/devices[/{device_id}]`.
fn parse_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(PATH)?;
    let (extension, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("devices")?;
    if rest.is_empty() || rest == "/" {
        return Some((extension, None));
    }
    let device_id = rest.strip_prefix('/')?;
    (!device_id.contains('/')).then_some((extension, Some(device_id)))
}

/// Extensions and device ids: 1 to [`MAX_ID_LEN`] of letters, digits and `._+@-`
/// (nothing that needs quoting in a log, a path or a scope pattern).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
}

/// The body, which must be a JSON object of at most [`MAX_BODY_BYTES`].
async fn read_json<B>(request: Request<B>) -> Result<Map<String, Value>, Refusal>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let json_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            field: None,
            message: "send the device as Content-Type: application/json".into(),
        });
    }
    let too_large = || Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        field: None,
        message: format!("the body is over {MAX_BODY_BYTES} bytes"),
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Err(_) => {
            return Err(Refusal {
                status: StatusCode::REQUEST_TIMEOUT,
                field: None,
                message: "the body did not arrive in time".into(),
            })
        }
        Ok(Err(error)) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                field: None,
                message: format!("the body could not be read: {error}"),
            });
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| Refusal {
        status: StatusCode::BAD_REQUEST,
        field: None,
        // serde_json's message names the line and column, never the text.
        message: format!("the body is not JSON: {e}"),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: None,
            message: "the body must be a JSON object".into(),
        }),
    }
}

/// A string field, if present.
fn string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Refusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Refusal::field(field, format!("{field} must be a string"))),
    }
}

/// A boolean field (`true`, or PortSIP's `"true"`), if present.
fn boolean(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, Refusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(Refusal::field(
                field,
                format!("{field} must be true or false"),
            )),
        },
        Some(_) => Err(Refusal::field(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

/// The device a `PUT` body describes, checked by its provider as a configured device
/// is (a [`Refusal`] names the field at fault, never quoting a token).
pub fn device_from_body(
    providers: &[Arc<dyn ProviderSettings>],
    extension: &str,
    device_id: &str,
    body: &Map<String, Value>,
    now: i64,
) -> Result<StoredDevice, Refusal> {
    if device_id.starts_with(LEARNED_PREFIX) {
        return Err(Refusal::field(
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
            return Err(Refusal::field(
                DEVICE_OS,
                "device-os must be ios or android (or give platform)",
            ))
        }
        (None, None) => return Err(Refusal::field("platform", "platform is missing")),
    };
    let Some(kind) = provider(&platform_name) else {
        return Err(Refusal::field(
            "platform",
            format!(
                "`{platform_name}` is not a platform pushwake pushes through (apns, fcm, hms, webhook, webpush)"
            ),
        ));
    };
    let Some(settings) = providers.iter().find(|p| p.platform() == kind.platform()) else {
        return Err(Refusal::field(
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
        return Err(Refusal::field(
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
                return Err(Refusal::field(
                    "subscription",
                    "subscription must be the browser's PushSubscription object",
                ))
            }
            (None, None, Some(uid)) => match uid.split_once('|') {
                // PortSIP on iOS: the VoIP token, then the APNs (alert) token.
                Some((voip, remote)) => (voip.to_owned(), DEVICE_UID, Some(remote.to_owned())),
                None => (uid.to_owned(), DEVICE_UID, None),
            },
            (None, None, None) => return Err(Refusal::field("token", "token is missing")),
            _ => {
                return Err(Refusal::field(
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
                Refusal::field(field, message)
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

/// A device as the API shows it: its token and secret settings as fingerprints.
pub fn view(device: &StoredDevice) -> Value {
    let mut settings = Map::new();
    for (key, value, secret) in device.params.entries() {
        let shown = if secret {
            DeviceToken::new(value).to_string()
        } else {
            value.to_owned()
        };
        settings.insert(key.to_owned(), Value::String(shown));
    }
    json!({
        "extension": device.extension,
        "device_id": device.device_id,
        "platform": device.platform,
        "token": DeviceToken::new(device.token.as_str()).to_string(),
        "learned": device.learned,
        "updated_at": device.updated_at,
        "settings": settings,
    })
}

/// 503 with `Retry-After`, for a store that cannot be reached.
fn unavailable(detail: &str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        &format!("the device store cannot be reached, try again later ({detail}); calls still use the devices pushwake has in memory"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// A store error as the API answers it.
fn store_failed(error: StoreError) -> Response<Full<Bytes>> {
    match error {
        StoreError::Unavailable(detail) => unavailable(&detail),
        StoreError::Conflict { .. } => {
            super::error(StatusCode::CONFLICT, Some("token"), &error.to_string())
        }
        StoreError::Invalid(_) => {
            super::error(StatusCode::UNPROCESSABLE_ENTITY, None, &error.to_string())
        }
        other => {
            tracing::error!(error = %other, "device API: the device store failed");
            super::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the device store failed; pushwake's log says why",
            )
        }
    }
}

/// Stores `device`, then puts it in the registry. A device learned from a REGISTER
/// with the same token is replaced by it.
async fn put(
    devices: &crate::devices::service::Devices,
    device: StoredDevice,
    line: usize,
) -> Response<Full<Bytes>> {
    let Some(store) = devices.store() else {
        return unavailable("it has not been opened yet");
    };
    let registry = devices.registry();
    let learned_twin = registry
        .list(&device.extension)
        .into_iter()
        .find(|d| d.learned && d.platform == device.platform && d.token == device.token);
    if let Some(twin) = &learned_twin {
        if let Err(error) = store.delete(&twin.extension, &twin.device_id).await {
            return store_failed(error);
        }
        registry.remove(&twin.extension, &twin.device_id);
    }
    let existed = registry.get(&device.extension, &device.device_id).is_some();
    if let Err(error) = store.put(&device).await {
        return store_failed(error);
    }
    tracing::info!(
        extension = %device.extension,
        device = %device.device_id,
        platform = %device.platform,
        token = %DeviceToken::new(device.token.as_str()),
        api_token_line = line,
        replaced_learned = learned_twin.map(|d| d.device_id),
        "device API: device registered"
    );
    let body = view(&device);
    registry.put(device);
    reply(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        body,
    )
}

/// Deletes a device from the store, then from the registry.
async fn delete(
    devices: &crate::devices::service::Devices,
    extension: &str,
    device_id: &str,
    line: usize,
) -> Response<Full<Bytes>> {
    let Some(store) = devices.store() else {
        return unavailable("it has not been opened yet");
    };
    let deleted = match store.delete(extension, device_id).await {
        Ok(deleted) => deleted,
        Err(error) => return store_failed(error),
    };
    let cached = devices.registry().remove(extension, device_id);
    if !deleted && !cached {
        return not_found();
    }
    tracing::info!(
        %extension,
        device = device_id,
        api_token_line = line,
        "device API: device deleted"
    );
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests;
