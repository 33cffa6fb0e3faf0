//! The HTTP listener (`[http]`) serving the call status endpoint.
//!
//! `GET /v1/calls/{call_id}` with `Authorization: Bearer <status_token>` answers the
//! call's status from the [`StatusBoard`](crate::status::StatusBoard):
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"call_id": …, "status": "ringing" \| "answered" \| "ended", "reason": …}` | the call is known and the token is its secret (`reason` only when ended) |
//! | 401 with `WWW-Authenticate: Bearer` | no `Authorization: Bearer <token>` header |
//! | 404 `{"error": "not found"}` | an unknown or forgotten call, a wrong token (the same answer, so call ids cannot be probed), any other path |
//! | 405 with `Allow: GET` | another method on a call's path |
//!
//! Every answer is JSON with `Cache-Control: no-store`. Plain HTTP/1.1: TLS is the job of
//! the operator's reverse proxy in front of it. The token is never logged. Requests are
//! logged at debug level. Headers must arrive within [`HEADER_READ_TIMEOUT`] and fit in
//! [`MAX_HEADER_BYTES`]; at most [`MAX_CONNECTIONS`] connections are served at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::status::SharedBoard;

pub mod tokens;

/// The path prefix of a call's status.
pub const CALLS_PATH: &str = "/v1/calls/";
/// How long a client may take to send a request's headers (also how long an idle
/// kept-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (hyper's buffer; its minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a shutdown waits for requests under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest call id looked up (pushwake's are 36-character UUIDs).
const MAX_CALL_ID_LEN: usize = 64;

/// The bound listener, not serving yet.
#[derive(Debug)]
pub struct StatusListener {
    listener: TcpListener,
    board: SharedBoard,
}

impl StatusListener {
    /// Binds `addr`. Fails like [`TcpListener::bind`] (address in use, not permitted, …).
    pub async fn bind(addr: SocketAddr, board: SharedBoard) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, board })
    }

    /// The address it is bound to (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests until `shutdown` completes; then stops accepting, lets requests
    /// under way finish (closing idle connections) for at most a few seconds, and
    /// returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!(%error, "call status endpoint: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "call status endpoint: too many connections; closing this one");
                continue;
            };
            let board = self.board.clone();
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&board, tokio::time::Instant::now().into_std(), &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "call status endpoint: connection ended");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::debug!("call status endpoint: requests still open at shutdown");
            }
        }
        tracing::debug!("call status endpoint stopped");
    }
}

/// The answer to one request, given the board and the time.
pub fn answer<B>(board: &SharedBoard, now: Instant, request: &Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let response = route(board, now, request.method(), path, request.headers());
    // The path holds the call id (not a secret); the Authorization header is never logged.
    tracing::debug!(method = %request.method(), path, status = response.status().as_u16(), "call status request");
    response
}

fn route(
    board: &SharedBoard,
    now: Instant,
    method: &Method,
    path: &str,
    headers: &hyper::HeaderMap,
) -> Response<Full<Bytes>> {
    let Some(call) = path.strip_prefix(CALLS_PATH).filter(|id| valid_call_id(id)) else {
        return not_found();
    };
    if method != Method::GET {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "method not allowed: use GET" }),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let Some(token) = bearer(headers) else {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "send the push's status_token as Authorization: Bearer <status_token>" }),
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pushwake\""),
        );
        return response;
    };
    let status = board
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .lookup(now, call, token);
    match status {
        Some(status) => {
            let mut body = json!({ "call_id": call, "status": status.as_str() });
            if let Some(reason) = status.reason() {
                body["reason"] = json!(reason.as_str());
            }
            reply(StatusCode::OK, body)
        }
        None => not_found(),
    }
}

/// Call ids are UUIDs; anything that could not be one is not looked up.
fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CALL_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(token)
}

fn not_found() -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({ "error": "not found" }))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::EndReason;
    use crate::status::{StatusBoard, StatusSecret, StatusUpdate};
    use pushwake_core::pbx::CallId;

    const CALL: &str = "5d7d1c1e-0000-4000-8000-000000000001";

    fn request(method: Method, path: &str, authorization: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).unwrap()
    }

    fn body(response: &Response<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = futures_util::FutureExt::now_or_never(response.body().clone().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn board_with_call() -> (SharedBoard, StatusSecret) {
        let board = StatusBoard::shared();
        let secret = crate::status::fresh_secret();
        board.lock().unwrap().apply(
            Instant::now(),
            &CallId(CALL.into()),
            StatusUpdate::Ringing {
                extension: "101".into(),
                secret: secret.clone(),
            },
        );
        (board, secret)
    }

    #[test]
    fn answers_by_status_path_method_and_token() {
        let (board, secret) = board_with_call();
        let path = format!("{CALLS_PATH}{CALL}");
        let good = format!("Bearer {}", secret.expose());
        let now = Instant::now();

        let ok = answer(&board, now, &request(Method::GET, &path, Some(&good)));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(ok.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body(&ok), json!({"call_id": CALL, "status": "ringing"}));
        // The scheme in any case, as RFC 7235 allows.
        let lower = format!("bearer {}", secret.expose());
        let ok = answer(&board, now, &request(Method::GET, &path, Some(&lower)));
        assert_eq!(ok.status(), StatusCode::OK);

        for auth in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer "),
            Some(secret.expose()),
        ] {
            let r = answer(&board, now, &request(Method::GET, &path, auth));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(
                r.headers()[hyper::header::WWW_AUTHENTICATE],
                "Bearer realm=\"pushwake\""
            );
            assert!(body(&r)["error"].is_string());
        }
        let wrong = format!("Bearer {}", crate::status::fresh_secret().expose());
        let unknown = format!("{CALLS_PATH}5d7d1c1e-0000-4000-8000-000000000002");
        let a = answer(&board, now, &request(Method::GET, &path, Some(&wrong)));
        let b = answer(&board, now, &request(Method::GET, &unknown, Some(&good)));
        for r in [&a, &b] {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(body(r), json!({"error": "not found"}));
        }
        for other in [
            "/",
            "/v1/calls/",
            "/v1/calls",
            "/v1/calls/a/b",
            "/v1/other/x",
        ] {
            let r = answer(&board, now, &request(Method::GET, other, Some(&good)));
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{other}");
        }
        for method in [Method::POST, Method::DELETE, Method::HEAD, Method::PUT] {
            let r = answer(&board, now, &request(method.clone(), &path, Some(&good)));
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(r.headers()[ALLOW], "GET");
        }

        board.lock().unwrap().apply(
            now,
            &CallId(CALL.into()),
            StatusUpdate::Ended(EndReason::Timeout),
        );
        let ended = answer(&board, now, &request(Method::GET, &path, Some(&good)));
        assert_eq!(
            body(&ended),
            json!({"call_id": CALL, "status": "ended", "reason": "timeout"})
        );
        let forgotten = now + crate::status::RETENTION;
        let r = answer(&board, forgotten, &request(Method::GET, &path, Some(&good)));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
