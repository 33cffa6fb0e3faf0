//! The HTTP listener (`[http]`): the call status endpoint for apps, the device API for
//! app backends, and `/healthz` for monitoring.
//!
//! | path | what | module |
//! |---|---|---|
//! | `GET /v1/calls/{call_id}` | a call's status, for the app the push woke | [`status`] |
//! | `GET/PUT/DELETE /v1/extensions/{ext}/devices[/{device_id}]` | the devices registered for an extension | [`devices`] |
//! | `GET /healthz` | whether the daemon and its device store answer | [`health`] |
//!
//! Every answer is JSON with `Cache-Control: no-store`, and every error is
//! `{"error": "…"}` (with `"field"` when a request's field is at fault). Plain
//! HTTP/1.1: TLS is the job of the operator's reverse proxy in front of it. Bearer
//! tokens are never logged. Requests are logged at debug level. Headers must arrive
//! within [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`] (431 otherwise); at
//! most [`MAX_CONNECTIONS`] connections are served at once, [`limits::MAX_PER_CLIENT`]
//! of them from one address ([`limits`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::devices::service::Devices;
use crate::status::SharedBoard;

pub mod devices;
pub mod health;
pub mod limits;
pub mod messages;
pub mod status;
pub mod tokens;

pub use limits::MAX_CONNECTIONS;
pub use status::CALLS_PATH;

/// How long a client may take to send a request's headers (also how long an idle
/// kept-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (hyper's buffer; its minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a shutdown waits for requests under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the listener serves.
#[derive(Clone, Debug)]
pub struct Service {
    /// The calls' statuses.
    pub board: SharedBoard,
    /// The registered devices and their store (the device API and `/healthz`); `None`
    /// serves only the call status endpoint.
    pub devices: Option<Devices>,
    /// The device API's tokens; `None` turns the device API off.
    pub api_tokens: Option<tokens::ApiTokens>,
    /// The PBX connection's state (`/healthz`); `None` leaves it out.
    pub pbx: Option<crate::health::PbxHealth>,
    /// The push providers' states (`/healthz`); `None` leaves them out.
    pub providers: Option<crate::push::health::ProviderHealth>,
    /// Where the apps' confirmations of messages go (`[messages] confirmation =
    /// "app"`); `None` turns the confirmation off.
    pub messages: Option<tokio::sync::mpsc::Sender<crate::driver::MessageConfirmation>>,
}

impl Service {
    /// Only the call status endpoint, from `board`.
    pub fn status_only(board: SharedBoard) -> Self {
        Self {
            board,
            devices: None,
            api_tokens: None,
            pbx: None,
            providers: None,
            messages: None,
        }
    }
}

/// The bound listener, not serving yet.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
}

impl Listener {
    /// Binds `addr`. Fails like [`TcpListener::bind`] (address in use, not permitted, …).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener })
    }

    /// The address it is bound to (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `service` until `shutdown` completes; then stops accepting, lets requests
    /// under way finish (closing idle connections) for at most a few seconds, and
    /// returns.
    pub async fn serve(self, service: Service, shutdown: impl Future<Output = ()>) {
        let service = Arc::new(service);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let limits = limits::ConnectionLimits::new(MAX_CONNECTIONS, limits::MAX_PER_CLIENT);
        let mut refusals = limits::RefusalLog::new(limits::REFUSAL_LOG_INTERVAL);
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
                    tracing::warn!(%error, "http: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match limits.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refused) => {
                    // Closed at once, and told once in a while: a flood must not
                    // flood the log too.
                    drop(stream);
                    if let Some(count) = refusals.refused(std::time::Instant::now()) {
                        let why = match refused {
                            limits::Refused::Total => {
                                format!("{MAX_CONNECTIONS} connections open")
                            }
                            limits::Refused::Client => format!(
                                "{} connections open from {}",
                                limits::MAX_PER_CLIENT,
                                peer.ip()
                            ),
                        };
                        tracing::warn!(
                            "http: {count} connection(s) closed unserved since the last such warning, the latest because {why}"
                        );
                    }
                    continue;
                }
            };
            let service = service.clone();
            let handler = hyper::service::service_fn(move |request| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(handle(&service, request).await) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), handler));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "http: connection ended");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::debug!("http: requests still open at shutdown");
            }
        }
        tracing::debug!("http listener stopped");
    }
}

/// The answer to one request.
pub async fn handle<B>(service: &Service, request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = if path.starts_with(CALLS_PATH) {
        status::answer(
            &service.board,
            tokio::time::Instant::now().into_std(),
            &request,
        )
    } else if path == health::PATH {
        health::answer(service, &method).await
    } else if messages::is_messages_path(&path) {
        messages::answer(service, request).await
    } else if path.starts_with(devices::PATH) {
        devices::answer(service, request).await
    } else {
        not_found()
    };
    // Paths hold call ids, extensions and device ids (not secrets); the Authorization
    // header is never logged.
    tracing::debug!(%method, path, status = response.status().as_u16(), "http request");
    response
}

/// The line (in `tokens`' file) of the token of an API request about `extension`,
/// where it must allow the caller to `act` on that extension's `things` (`manage` its
/// `devices`), or the answer refusing it: 401 without a token of the file, 404 for a
/// name that is no extension, 403 for a token whose scope does not cover it.
fn scoped_caller(
    tokens: &tokens::ApiTokens,
    headers: &hyper::HeaderMap,
    extension: &str,
    act: &str,
    things: &str,
) -> Result<usize, Box<Response<Full<Bytes>>>> {
    use crate::devices::fields::{valid_id, MAX_ID_LEN};
    let caller = tokens.caller(bearer(headers));
    let tokens::Caller::Known { line, .. } = caller else {
        return Err(Box::new(unauthorized(
            "send a token of [http] api_tokens_file as Authorization: Bearer <token>",
        )));
    };
    if !valid_id(extension) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            Some("extension"),
            &format!("not an extension: 1 to {MAX_ID_LEN} letters, digits or . _ + @ -"),
        )));
    }
    if !caller.may_manage(extension) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            None,
            &format!("this token may not {act} extension {extension}'s {things}"),
        )));
    }
    Ok(line)
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

/// 401 with a `WWW-Authenticate: Bearer` challenge and `message`.
fn unauthorized(message: &str) -> Response<Full<Bytes>> {
    let mut response = reply(StatusCode::UNAUTHORIZED, json!({ "error": message }));
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pushwake\""),
    );
    response
}

/// 405 naming the methods the path takes.
fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({ "error": format!("method not allowed: use {allow}") }),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn not_found() -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({ "error": "not found" }))
}

/// An error answer: `{"error": message}`, with `"field"` when a field is at fault.
fn error(status: StatusCode, field: Option<&str>, message: &str) -> Response<Full<Bytes>> {
    let mut body = json!({ "error": message });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    reply(status, body)
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What the listener's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Response;

    /// The JSON body of an answer.
    pub(crate) fn body(response: &Response<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = futures_util::FutureExt::now_or_never(response.body().clone().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }
}
