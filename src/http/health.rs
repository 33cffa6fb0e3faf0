//! `GET /healthz`, for monitoring and load balancers; no token needed, and nothing in it
//! is secret.
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"status": "ok", "pbx": "connected", "store": "ok", "store_writes": "ok", "pending_writes": 0, "backend": "sqlite", "devices": N, "providers": {"apns": {"state": "warm"}}}` | the PBX's event stream is up and the device store answers and takes writes |
//! | 503 `{"status": "degraded", "pbx": "disconnected", …}` | the PBX is not connected (`connecting` before the first connection): calls handed over meanwhile take their normal route |
//! | 503 `{"status": "degraded", "store": "unavailable", …}` | the device store does not answer within a second: calls are still served from the devices in memory, but the device API cannot write |
//! | 503 `{"status": "degraded", "store_writes": "failing", "pending_writes": N, …}` | the store's last write failed (it is down, its disk full): learned devices wait in memory and are written when it takes writes again |
//! | 405 with `Allow: GET` | another method |
//!
//! `providers` has one entry per configured push provider: `warming` while its
//! connection is opened at start-up, `warm` once its warm-up or its last request was
//! answered, `failing` with the `error` of the last warm-up or request that was not (no
//! connection, a refused credential, no answer). The webhook and Web Push open nothing
//! ahead (Web Push's endpoints are the browsers' own): they are `warm` from the start
//! until a request fails. A failing provider does not make the
//! answer a 503: the PBX is served, and pushes are retried; alert on it from the
//! metrics or from this field.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::{method_not_allowed, reply, Service};
use crate::health::PbxState;
use crate::push::health::ProviderState;

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
    if let Some(providers) = &service.providers {
        let mut states = serde_json::Map::new();
        for (platform, state) in providers.states() {
            let mut entry = json!({ "state": state.as_str() });
            if let ProviderState::Failing(error) = &state {
                entry["error"] = json!(error);
            }
            states.insert(platform.to_owned(), entry);
        }
        body["providers"] = serde_json::Value::Object(states);
    }
    if let Some(devices) = &service.devices {
        body["devices"] = json!(devices.registry().len());
        body["pending_writes"] = json!(devices.pending_writes());
        if devices.writes_failing() {
            body["store_writes"] = json!("failing");
            healthy = false;
        } else {
            body["store_writes"] = json!("ok");
        }
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

    #[tokio::test]
    async fn each_provider_shows_its_state_without_failing_the_health() {
        use crate::push::health::ProviderHealth;
        use pushwake_core::directory::Platform;
        let pbx = PbxHealth::default();
        pbx.observe(&PbxEvent::Connected(Default::default()));
        let providers = ProviderHealth::default();
        providers.set(Platform::new("apns"), ProviderState::Warm);
        providers.set(
            Platform::new("fcm"),
            ProviderState::Failing("cannot reach FCM: connection refused".into()),
        );
        let mut service = Service::status_only(crate::status::StatusBoard::shared());
        service.pbx = Some(pbx);
        service.providers = Some(providers.clone());
        let up = answer(&service, &Method::GET).await;
        assert_eq!(up.status(), StatusCode::OK);
        assert_eq!(
            body(&up),
            json!({"status": "ok", "pbx": "connected", "providers": {
                "apns": {"state": "warm"},
                "fcm": {"state": "failing", "error": "cannot reach FCM: connection refused"},
            }})
        );
        providers.set(Platform::new("fcm"), ProviderState::Warming);
        let warming = answer(&service, &Method::GET).await;
        assert_eq!(
            body(&warming)["providers"]["fcm"],
            json!({"state": "warming"})
        );
    }
}
