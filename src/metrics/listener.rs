//! The listener serving `GET /metrics` (and nothing else) on `[metrics] listen`: plain
//! HTTP/1.1 with the same limits as the call status listener ([`crate::http`]), so a
//! misbehaving scraper cannot hold it up.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Metrics;
use crate::http::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES};

/// Its path.
pub const PATH: &str = "/metrics";
/// Scrapes served at once; Prometheus needs one.
const MAX_CONNECTIONS: usize = 16;
/// The OpenMetrics text format, which is what the encoder writes (Prometheus reads it).
const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The bound listener, not serving yet.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    /// Binds `addr`. Fails like [`TcpListener::bind`] (address in use, not permitted, …).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `metrics` until `shutdown` completes.
    pub async fn serve(self, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics: cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections; closing this one");
                continue;
            };
            let metrics = metrics.clone();
            let handler = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), handler);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "metrics: connection ended");
                }
                drop(slot);
            });
        }
    }
}

/// The answer to one request.
fn answer<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content, body) = if request.uri().path() != PATH {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".to_owned(),
        )
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        )
    } else {
        (StatusCode::OK, CONTENT, metrics.encode())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_text_at_its_path_only() {
        let metrics = Metrics::new();
        metrics.call_started();
        let get = |method: Method, path: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            answer(&metrics, &request)
        };
        let ok = get(Method::GET, "/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], CONTENT);
        assert_eq!(get(Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get(Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
