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

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use pushwake_core::directory::DeviceToken;
use serde_json::{json, Map, Value};

use super::{error, method_not_allowed, not_found, reply, scoped_caller, Service};
use crate::devices::fields::{device_from_fields, valid_id, FieldError, MAX_ID_LEN};
use crate::devices::StoredDevice;
use crate::push::unix_now_secs;
use crate::store::StoreError;

/// The path prefix of the device API.
pub const PATH: &str = "/v1/extensions/";
/// The largest request body taken (a Web Push subscription is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What a client is told to wait before writing again while the store is down.
const RETRY_AFTER_SECS: &str = "5";

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

impl From<FieldError> for Refusal {
    fn from(error: FieldError) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(error.field),
            message: error.message,
        }
    }
}

impl Refusal {
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
    let line = match scoped_caller(tokens, request.headers(), extension, "manage", "devices") {
        Ok(line) => line,
        Err(refusal) => return *refusal,
    };
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
            let device = match device_from_fields(
                registry.providers(),
                extension,
                device_id,
                &body,
                unix_now_secs(),
            ) {
                Ok(device) => device,
                Err(refused) => return Refusal::from(refused).into_response(),
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
    let registered = match crate::devices::register(&store, &device).await {
        Ok(registered) => registered,
        Err(error) => return store_failed(error),
    };
    let registry = devices.registry();
    if let Some(twin) = &registered.replaced_learned {
        registry.remove(&device.extension, twin);
    }
    tracing::info!(
        extension = %device.extension,
        device = %device.device_id,
        platform = %device.platform,
        token = %DeviceToken::new(device.token.as_str()),
        api_token_line = line,
        replaced_learned = registered.replaced_learned,
        "device API: device registered"
    );
    let body = view(&device);
    registry.put(device);
    reply(
        if registered.replaced {
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
