//! `GET /healthz`, for monitoring and load balancers; no token needed, and nothing in it
//! is secret.
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"status": "ok", "store": "ok", "backend": "sqlite", "devices": N}` | the device store answers |
//! | 503 `{"status": "degraded", "store": "unavailable", …}` | the device store does not answer within a second: calls are still served from the devices in memory, but the device API cannot write |
//! | 405 with `Allow: GET` | another method |

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::{method_not_allowed, reply, Service};

/// Its path.
pub const PATH: &str = "/healthz";

/// The answer to a request for [`PATH`].
pub async fn answer(service: &Service, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let Some(devices) = &service.devices else {
        return reply(StatusCode::OK, json!({ "status": "ok" }));
    };
    let count = devices.registry().len();
    let Some(store) = devices.store() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "degraded", "store": "unavailable", "detail": "the device store has not been opened yet: it could not be reached", "devices": count }),
        );
    };
    match store.ping().await {
        Ok(()) => reply(
            StatusCode::OK,
            json!({ "status": "ok", "store": "ok", "backend": store.backend(), "devices": count }),
        ),
        Err(error) => {
            tracing::debug!(%error, "healthz: the device store does not answer");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "degraded", "store": "unavailable", "backend": store.backend(), "detail": error.to_string(), "devices": count }),
            )
        }
    }
}
