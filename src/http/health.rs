//! `GET /healthz`, for monitoring and load balancers; no token needed, and nothing in it
//! is secret.
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"status": "ok", "pbx": "connected", "store": "ok", "backend": "sqlite", "devices": N}` | the PBX's event stream is up and the device store answers |
//! | 503 `{"status": "degraded", "pbx": "disconnected", …}` | the PBX is not connected (`connecting` before the first connection): calls handed over meanwhile take their normal route |
//! | 503 `{"status": "degraded", "store": "unavailable", …}` | the device store does not answer within a second: calls are still served from the devices in memory, but the device API cannot write |
//! | 405 with `Allow: GET` | another method |

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::{method_not_allowed, reply, Service};
use crate::health::PbxState;

/// Its path.
pub const PATH: &str = "/healthz";

/// The answer to a request for [`PATH`].
pub async fn answer(service: &Service, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let mut body = json!({ "status": "ok" });
    let mut healthy = true;
    if let Some(pbx) = &service.pbx {
        let state = pbx.state();
        body["pbx"] = json!(state.as_str());
        healthy &= state == PbxState::Connected;
    }
    if let Some(devices) = &service.devices {
        body["devices"] = json!(devices.registry().len());
        match devices.store() {
            None => {
                body["store"] = json!("unavailable");
                body["detail"] =
                    json!("the device store has not been opened yet: it could not be reached");
                healthy = false;
            }
            Some(store) => {
                body["backend"] = json!(store.backend());
                match store.ping().await {
                    Ok(()) => body["store"] = json!("ok"),
                    Err(error) => {
                        tracing::debug!(%error, "healthz: the device store does not answer");
                        body["store"] = json!("unavailable");
                        body["detail"] = json!(error.to_string());
                        healthy = false;
                    }
                }
            }
        }
    }
    if healthy {
        reply(StatusCode::OK, body)
    } else {
        body["status"] = json!("degraded");
        reply(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::PbxHealth;
    use pushwake_core::pbx::PbxEvent;

    use crate::http::testing::body;

    #[tokio::test]
    async fn the_pbx_connection_is_part_of_the_health() {
        let pbx = PbxHealth::default();
        let mut service = Service::status_only(crate::status::StatusBoard::shared());
        service.pbx = Some(pbx.clone());
        let connecting = answer(&service, &Method::GET).await;
        assert_eq!(connecting.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(&connecting),
            json!({"status": "degraded", "pbx": "connecting"})
        );
        pbx.observe(&PbxEvent::Connected(Default::default()));
        let up = answer(&service, &Method::GET).await;
        assert_eq!(up.status(), StatusCode::OK);
        assert_eq!(body(&up), json!({"status": "ok", "pbx": "connected"}));
        pbx.observe(&PbxEvent::Disconnected);
        let down = answer(&service, &Method::GET).await;
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(&down)["pbx"], "disconnected");
        let post = answer(&service, &Method::POST).await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
