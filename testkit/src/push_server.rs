//! What the five local push servers (APNs, FCM, HMS, webhook, Web Push) share, so each of
//! them is only its protocol — what it checks and what it answers:
//!
//! - [`HttpServer`]: the accept loop on a free loopback port, serving HTTP/1.1, HTTP/2
//!   without TLS (h2c, prior knowledge) or HTTP/2 over TLS (recording the ALPN protocols
//!   each client offered and the one chosen); it counts connections and requests, holds
//!   answers back by a settable delay, reads each request whole and hands it to the
//!   server's handler;
//! - [`Recorder`]: what a server received and what it refused, with waits woken by each
//!   record (a [`Notify`], not polling);
//! - [`Scripts`]: replies scripted per device, for good or a number of times;
//! - a few reply helpers, and [`nth_wake_push`]: the push the providers' tests send.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::rustls;

/// A reply of a local server.
pub type Reply = Response<Full<Bytes>>;

/// The `n`th call the providers' tests and the fan-out bench push: to 101, from Alice
/// (200), call id `5d7d1c1e-0000-4000-8000-<n>`, without a status URL or a node.
pub fn nth_wake_push(
    n: usize,
    kind: pushwake_core::push::PushKind,
) -> pushwake_core::push::WakePush {
    pushwake_core::push::WakePush {
        call_id: pushwake_core::pbx::CallId(format!("5d7d1c1e-0000-4000-8000-{n:012}")),
        extension: "101".into(),
        caller: pushwake_core::pbx::Party {
            number: "200".into(),
            name: "Alice".into(),
        },
        kind,
        status: None,
        node: None,
    }
}

/// How a server talks to its clients.
#[derive(Clone)]
pub enum Transport {
    /// HTTP/1.1 without TLS, connections kept alive (the webhook and Web Push servers).
    Http1,
    /// HTTP/2: without TLS (h2c, prior knowledge) when `tls` is `None`, else over TLS
    /// with this configuration (its ALPN list is what the server offers; HTTP/2 is served
    /// whatever is negotiated). `max_concurrent_streams` is what the server advertises
    /// (hyper's default when `None`).
    Http2 {
        /// The TLS configuration, if any.
        tls: Option<Arc<rustls::ServerConfig>>,
        /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
        max_concurrent_streams: Option<u32>,
    },
}

impl Transport {
    /// HTTP/2 without TLS, with hyper's defaults.
    pub fn h2c() -> Self {
        Transport::Http2 {
            tls: None,
            max_concurrent_streams: None,
        }
    }
}

/// Per TLS connection: the ALPN protocols the client offered, and the one negotiated.
pub type Alpn = (Vec<String>, Option<String>);

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    requests: AtomicUsize,
    delay: Mutex<Duration>,
    alpn: Mutex<Vec<Alpn>>,
}

/// A request, read whole.
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path (no query).
    pub path: String,
    /// The HTTP version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (empty if it could not be read).
    pub body: Bytes,
}

impl Request {
    /// A header's value, if it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header, by its lower-case name (values that are not text are empty).
    pub fn header_map(&self) -> HashMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// A listener bound to a free loopback port, not serving yet (so that a handler can be
/// built knowing the server's own URL).
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    transport: Transport,
}

impl Bound {
    /// Binds `127.0.0.1:0`.
    pub async fn new(transport: Transport) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            transport,
        })
    }

    /// `http://127.0.0.1:<port>`, or `https://…` over TLS.
    pub fn base_url(&self) -> String {
        let tls = matches!(self.transport, Transport::Http2 { tls: Some(_), .. });
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Starts serving: every request is read whole, held back by the delay, and answered
    /// by `handler`.
    pub fn serve(self, handler: impl Fn(Request) -> Reply + Send + Sync + 'static) -> HttpServer {
        let base_url = self.base_url();
        let counters = Arc::new(Counters::default());
        let handler: Handler = Arc::new(handler);
        let serving = counters.clone();
        let transport = self.transport;
        let listener = self.listener;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                serving.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(
                    stream,
                    transport.clone(),
                    serving.clone(),
                    handler.clone(),
                ));
            }
        });
        HttpServer {
            base_url,
            counters,
            task,
        }
    }
}

type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

async fn connection(
    stream: TcpStream,
    transport: Transport,
    counters: Arc<Counters>,
    handler: Handler,
) {
    let record = counters.clone();
    let service = hyper::service::service_fn(move |request| {
        let (counters, handler) = (counters.clone(), handler.clone());
        async move { Ok::<_, Infallible>(answer(&counters, &handler, request).await) }
    });
    match transport {
        Transport::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Transport::Http2 {
            tls,
            max_concurrent_streams,
        } => {
            let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            if let Some(streams) = max_concurrent_streams {
                http2.max_concurrent_streams(streams);
            }
            let Some(config) = tls else {
                let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                return;
            };
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let Ok(start) = acceptor.await else { return };
            let offered: Vec<String> = start
                .client_hello()
                .alpn()
                .map(|protocols| {
                    protocols
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            // A client the configuration refuses (e.g. without an acceptable client
            // certificate) fails the handshake here.
            let Ok(stream) = start.into_stream(config).await else {
                return;
            };
            let chosen = stream
                .get_ref()
                .1
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            record.alpn.lock().unwrap().push((offered, chosen));
            let _ = http2.serve_connection(TokioIo::new(stream), service).await;
        }
    }
}

async fn answer(
    counters: &Counters,
    handler: &Handler,
    request: hyper::Request<hyper::body::Incoming>,
) -> Reply {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *counters.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (head, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    handler(Request {
        method: head.method,
        path: head.uri.path().to_owned(),
        version: head.version,
        headers: head.headers,
        body,
    })
}

/// A running server; stops accepting when dropped.
pub struct HttpServer {
    base_url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// `http://127.0.0.1:<port>`, or `https://…` over TLS.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far, counted on arrival (before any delay).
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Holds every answer back this long from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.counters.delay.lock().unwrap() = delay;
    }

    /// Per TLS connection: the ALPN protocols the client offered and the one negotiated.
    pub fn alpn(&self) -> Vec<Alpn> {
        self.counters.alpn.lock().unwrap().clone()
    }
}

/// The fields pushwake's payload contract (docs/app-developers.md) gives every call
/// push (a wake-up, or a call's end), whatever carries it: the stand-ins check them.
pub const DATA_FIELDS: [&str; 7] = [
    "type",
    "version",
    "call_id",
    "extension",
    "caller_number",
    "caller_name",
    "expires_at",
];

/// The fields the payload contract gives every message push.
pub const MESSAGE_FIELDS: [&str; 8] = [
    "type",
    "version",
    "message_id",
    "extension",
    "sender_number",
    "sender_name",
    "received_at",
    "expires_at",
];

/// What a server received (`T`) and refused (`R`), in arrival order; every record wakes
/// the waits.
pub struct Recorder<T, R> {
    received: Mutex<Vec<T>>,
    refused: Mutex<Vec<R>>,
    changed: Notify,
}

impl<T, R> Default for Recorder<T, R> {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            refused: Mutex::default(),
            changed: Notify::new(),
        }
    }
}

impl<T: Clone, R: Clone> Recorder<T, R> {
    /// Records something received.
    pub fn receive(&self, item: T) {
        self.received.lock().unwrap().push(item);
        self.changed.notify_waiters();
    }

    /// Records a refusal.
    pub fn refuse(&self, item: R) {
        self.refused.lock().unwrap().push(item);
        self.changed.notify_waiters();
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<T> {
        self.received.lock().unwrap().clone()
    }

    /// How many were received so far (without copying them).
    pub fn received_count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// How many were refused so far (without copying them).
    pub fn refused_count(&self) -> usize {
        self.refused.lock().unwrap().len()
    }

    /// Every refusal so far.
    pub fn refused(&self) -> Vec<R> {
        self.refused.lock().unwrap().clone()
    }

    /// Waits until `check` finds what it wants (checked now and after every record);
    /// `None` after `timeout`.
    pub async fn wait<V>(
        &self,
        timeout: Duration,
        check: impl Fn(&Self) -> Option<V>,
    ) -> Option<V> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check, so a record between the two still wakes it.
            let changed = self.changed.notified();
            if let Some(value) = check(self) {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until `count` things have been received in all; returns them all.
    pub async fn wait_received(&self, count: usize, timeout: Duration) -> Option<Vec<T>> {
        self.wait(timeout, |r| {
            let received = r.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }

    /// Waits until `count` refusals have been recorded in all; returns them all.
    pub async fn wait_refused(&self, count: usize, timeout: Duration) -> Option<Vec<R>> {
        self.wait(timeout, |r| {
            let refused = r.refused();
            (refused.len() >= count).then_some(refused)
        })
        .await
    }
}

/// Replies scripted per key (a device token, a subscription): each key has a queue of
/// replies, each for a number of uses or for good.
pub struct Scripts<R> {
    queues: Mutex<HashMap<String, VecDeque<Scripted<R>>>>,
}

/// A scripted reply and how many more uses it has (`None`: for good).
type Scripted<R> = (R, Option<usize>);

impl<R> Default for Scripts<R> {
    fn default() -> Self {
        Self {
            queues: Mutex::default(),
        }
    }
}

impl<R: Clone> Scripts<R> {
    /// Answers `key` with `reply` from now on, whatever was scripted before.
    pub fn always(&self, key: &str, reply: R) {
        let mut queues = self.queues.lock().unwrap();
        queues.insert(key.to_owned(), VecDeque::from([(reply, None)]));
    }

    /// Answers `key` with `reply` `times` more times, after what is already scripted.
    pub fn times(&self, key: &str, reply: R, times: usize) {
        if times == 0 {
            return;
        }
        let mut queues = self.queues.lock().unwrap();
        let queue = queues.entry(key.to_owned()).or_default();
        queue.push_back((reply, Some(times)));
    }

    /// The scripted reply for `key` now, if any (using it up).
    pub fn next(&self, key: &str) -> Option<R> {
        let mut queues = self.queues.lock().unwrap();
        let queue = queues.get_mut(key)?;
        let (reply, left) = queue.front_mut()?;
        let reply = reply.clone();
        if let Some(left) = left {
            *left -= 1;
            if *left == 0 {
                queue.pop_front();
            }
        }
        if queue.is_empty() {
            queues.remove(key);
        }
        Some(reply)
    }
}

/// A reply with this status (400 if it is not one) and body.
pub fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

/// `response` with this `Content-Type`.
pub fn with_content_type(mut response: Reply, content_type: &'static str) -> Reply {
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

/// `response` with a `Retry-After` of so many seconds, if any.
pub fn with_retry_after(mut response: Reply, seconds: Option<u64>) -> Reply {
    if let Some(seconds) = seconds {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_used_up_in_order_and_always_replaces() {
        let scripts = Scripts::default();
        scripts.times("a", 503, 2);
        scripts.times("a", 410, 1);
        assert_eq!(
            [(); 4].map(|_| scripts.next("a")),
            [Some(503), Some(503), Some(410), None]
        );
        scripts.times("b", 503, 1);
        scripts.always("b", 400);
        assert_eq!([(); 3].map(|_| scripts.next("b")), [Some(400); 3]);
        scripts.times("c", 1, 0);
        assert_eq!(scripts.next("c"), None);
    }

    #[tokio::test]
    async fn a_wait_is_woken_by_a_record_and_times_out_otherwise() {
        let recorder = Arc::new(Recorder::<u32, String>::default());
        let writer = recorder.clone();
        let waiting =
            tokio::spawn(async move { writer.wait_received(2, Duration::from_secs(10)).await });
        recorder.receive(1);
        recorder.receive(2);
        assert_eq!(waiting.await.unwrap(), Some(vec![1, 2]));
        assert_eq!(
            recorder.wait_refused(1, Duration::from_millis(10)).await,
            None
        );
    }
}
