//! A set of HTTP/2 connections to one provider host, opened as the pushes in flight need
//! them, each a bare HTTP/2 connection (the `h2` crate, on which hyper is built).
//!
//! One HTTP/2 connection carries only as many requests at once as the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` allows (Apple: 1,000); further requests wait for a
//! stream, so 10,000 pushes at once on one connection take ten server round trips
//! instead of one. Apple allows several connections per provider, so a
//! [`ConnectionSet`] opens another one whenever every open connection already carries its
//! limit, up to a cap, and hands each push the first connection with a free stream.
//!
//! Not reqwest's pooled client, nor hyper's: for a burst of pushes their per-request work
//! (URL parsing, the pool checkout, middleware, a task per request) was most of
//! pushwake's CPU time per push (`cargo bench --bench push_fanout`, docs/design.md). A
//! push needs none of it: one host, one protocol, a small body sent whole, requests
//! built from parts known at start-up. What hyper added that a push does need, the
//! keep-alive ping, is [`drive`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

use super::describe_error as describe;

/// How long opening a connection (TCP, TLS, HTTP/2 settings) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection is pinged this often, so a dead one is found before a push needs
/// it (and middleboxes keep it open)…
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and closed when the ping is not answered within this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer's body that is read: APNs answers a refusal with a short JSON
/// reason; anything longer is cut here.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where a set's connections go: `https://host[:port]` (TLS, HTTP/2 by ALPN) or
/// `http://host[:port]` (HTTP/2 without TLS, "prior knowledge": local test servers).
#[derive(Clone, Debug)]
struct Host {
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    /// `host:port` to connect to.
    address: String,
    /// The name the server's certificate must carry.
    name: String,
}

impl Host {
    fn parse(base: &str) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{base:?} has no scheme (https://…)"))?;
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("{base:?}: {other:?} is neither https nor http")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{base:?} has no host"))?;
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("{base:?}: a path after the host is not supported"));
        }
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(default_port)
        );
        Ok(Self {
            scheme,
            authority,
            address,
            name,
        })
    }
}

/// Several HTTP/2 connections to one host, each with at most `streams` requests at once.
pub struct ConnectionSet {
    host: Host,
    /// For `https://` hosts: rustls with the system's roots (and a client certificate
    /// where the provider authenticates with one), ALPN `h2`.
    tls: Option<tokio_rustls::TlsConnector>,
    streams: usize,
    max_connections: usize,
    lanes: RwLock<Vec<Arc<Lane>>>,
}

/// One connection (opened on first use, again after it closed) and the requests it
/// carries now.
struct Lane {
    /// The open connection, read by every push (a clone of it is all a push needs).
    open: RwLock<Option<Open>>,
    /// Held while the connection is being opened, so that pushes arriving meanwhile
    /// wait for that one instead of each opening its own.
    opening: tokio::sync::Mutex<()>,
    in_flight: AtomicUsize,
}

impl Lane {
    fn new(in_flight: usize) -> Arc<Self> {
        Arc::new(Self {
            open: RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
            in_flight: AtomicUsize::new(in_flight),
        })
    }

    /// The lane's connection if it is open.
    fn open_sender(&self) -> Option<SendRequest<Bytes>> {
        self.open
            .read()
            .expect("lane lock")
            .as_ref()
            .filter(|open| !open.closed.load(Ordering::Acquire))
            .map(|open| open.sender.clone())
    }

    /// Takes one of the lane's streams if one is free.
    fn try_reserve(&self, streams: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < streams).then_some(n + 1)
            })
            .is_ok()
    }
}

/// An open connection: what sends on it, and whether [`drive`] saw it end.
struct Open {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// The right to send one request on one of the set's connections; the stream is given
/// back when it is dropped.
pub struct Lease<'a> {
    set: &'a ConnectionSet,
    lane: Arc<Lane>,
}

/// Why a request got no answer. The texts name no URL: a push's path carries its device
/// token.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be opened.
    #[error("cannot connect to {host}: {reason}")]
    Connect {
        /// `host:port`.
        host: String,
        /// Why.
        reason: String,
    },
    /// The request or its answer failed on the connection.
    #[error("{0}")]
    Request(String),
}

impl Lease<'_> {
    /// Sends `request` (made by [`ConnectionSet::request`]) and reads the whole answer.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, SendError> {
        let failed = |e: h2::Error| SendError::Request(describe(&e));
        // Ready once the connection may open another stream (the server's limit).
        let mut sender = self.sender().await?.ready().await.map_err(failed)?;
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(CONTENT_LENGTH, body.len().into());
        let end_of_stream = body.is_empty();
        let (answer, mut stream) = sender
            .send_request(Request::from_parts(parts, ()), end_of_stream)
            .map_err(failed)?;
        if !end_of_stream {
            // Buffered by h2 and written as the flow-control windows allow.
            stream.send_data(body, true).map_err(failed)?;
        }
        let (parts, mut received) = answer.await.map_err(failed)?.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(failed)?;
            let _ = received.flow_control().release_capacity(chunk.len());
            let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }

    /// The lane's connection, opened now when it has none or it closed. Pushes that come
    /// meanwhile wait for the same opening.
    async fn sender(&self) -> Result<SendRequest<Bytes>, SendError> {
        if let Some(sender) = self.lane.open_sender() {
            return Ok(sender);
        }
        let _opening = self.lane.opening.lock().await;
        // Opened by the push that held the lock before this one?
        if let Some(sender) = self.lane.open_sender() {
            return Ok(sender);
        }
        let open = tokio::time::timeout(CONNECT_TIMEOUT, self.set.connect())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no connection within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })
            .map_err(|reason| SendError::Connect {
                host: self.set.host.address.clone(),
                reason,
            })?;
        let sender = open.sender.clone();
        *self.lane.open.write().expect("lane lock") = Some(open);
        Ok(sender)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSet {
    /// A set of connections to `base` (`https://host[:port]`, or `http://` for HTTP/2
    /// without TLS), none open yet, with `streams` requests at once per connection and
    /// at most `max_connections` of them. `tls` is used for `https://` hosts (ALPN is set
    /// to `h2` here).
    pub fn new(
        base: &str,
        tls: &rustls::ClientConfig,
        streams: usize,
        max_connections: usize,
    ) -> Result<Self, String> {
        let host = Host::parse(base)?;
        let tls = (host.scheme == hyper::http::uri::Scheme::HTTPS).then(|| {
            let mut config = tls.clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Ok(Self {
            host,
            tls,
            streams: streams.max(1),
            max_connections: max_connections.max(1),
            lanes: RwLock::new(vec![Lane::new(0)]),
        })
    }

    /// A request to `path_and_query` on the set's host, to be completed with headers.
    /// The caller adds the body (sent whole); the content length is set when it is sent.
    pub fn request(&self, path_and_query: &str) -> hyper::http::request::Builder {
        let uri = Uri::builder()
            .scheme(self.host.scheme.clone())
            .authority(self.host.authority.clone())
            .path_and_query(path_and_query)
            .build();
        match uri {
            Ok(uri) => Request::post(uri),
            // A path that is no URI path (a token with a space, say): the builder carries
            // the error to `body()`, which the caller reports.
            Err(_) => Request::post(path_and_query),
        }
    }

    /// Connections the set has opened at least once (the first counts from the start).
    pub fn connections(&self) -> usize {
        self.lanes.read().expect("lanes lock").len()
    }

    /// Opens the first connection now, so the first push does not wait for TCP, TLS and
    /// the server's first answer (a ping's).
    pub async fn warm_up(&self) -> Result<(), SendError> {
        let lease = self.lease();
        lease.sender().await.map(|_| ())
    }

    /// A stream on the first connection that has one free, on a new connection when none
    /// has and the cap allows, else on the least busy one (which then holds the request
    /// until a stream frees).
    pub fn lease(&self) -> Lease<'_> {
        if let Some(lease) = self.free_lane(&self.lanes.read().expect("lanes lock")) {
            return lease;
        }
        let mut lanes = self.lanes.write().expect("lanes lock");
        // Another push may have opened one, or freed a stream, meanwhile.
        if let Some(lease) = self.free_lane(&lanes) {
            return lease;
        }
        if lanes.len() < self.max_connections {
            let lane = Lane::new(1);
            lanes.push(lane.clone());
            tracing::debug!(
                host = %self.host.address,
                connections = lanes.len(),
                "every connection carries its streams: opening another"
            );
            return Lease { set: self, lane };
        }
        let lane = lanes
            .iter()
            .min_by_key(|l| l.in_flight.load(Ordering::Acquire))
            .expect("a set always has its first lane")
            .clone();
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        Lease { set: self, lane }
    }

    fn free_lane(&self, lanes: &[Arc<Lane>]) -> Option<Lease<'_>> {
        lanes
            .iter()
            .find(|lane| lane.try_reserve(self.streams))
            .map(|lane| Lease {
                set: self,
                lane: lane.clone(),
            })
    }

    /// TCP, then TLS with ALPN `h2` for `https://`, then the HTTP/2 handshake and a
    /// ping answered; the connection is then driven by a task of its own until it closes.
    async fn connect(&self) -> Result<Open, String> {
        let tcp = tokio::net::TcpStream::connect(&self.host.address)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let Some(tls) = &self.tls else {
            return handshake(tcp, self.host.address.clone()).await;
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.name.clone())
            .map_err(|e| format!("{:?} is no server name: {e}", self.host.name))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {}", describe(&e)))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("the server did not agree to speak HTTP/2 (ALPN h2)".into());
        }
        handshake(stream, self.host.address.clone()).await
    }
}

/// The HTTP/2 handshake on `io`, and the task that drives the connection.
async fn handshake<T>(io: T, host: String) -> Result<Open, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| describe(&e))?;
    let mut ping = connection.ping_pong();
    // Open once the server answered a ping: it speaks HTTP/2 and is alive (a server that
    // accepts the TCP connection and says nothing is found here, not by the first push).
    if let Some(ping) = ping.as_mut() {
        let pinged = ping.ping(h2::Ping::opaque());
        tokio::pin!(pinged);
        tokio::select! {
            ended = &mut connection => {
                return Err(match ended {
                    Ok(()) => "the server closed the connection at once".to_owned(),
                    Err(e) => describe(&e),
                })
            }
            pong = &mut pinged => pong.map_err(|e| describe(&e))?,
        };
    }
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn(drive(connection, ping, closed.clone(), host));
    Ok(Open { sender, closed })
}

/// Runs one connection until it closes (the server's GOAWAY, a network error) or a
/// keep-alive ping goes unanswered: every [`KEEP_ALIVE_INTERVAL`] a ping, which must be
/// answered within [`KEEP_ALIVE_TIMEOUT`], so a connection cut without a close is found
/// before a push needs it (and middleboxes keep it open). Then `closed` is set and the
/// next push on the lane opens a new connection; pushes still on this one fail and are
/// retried.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    ping: Option<h2::PingPong>,
    closed: Arc<AtomicBool>,
    host: String,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let keep_alive = async {
        let Some(mut ping) = ping else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
            match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                Ok(Err(error)) => return describe(&error),
                Err(_) => {
                    return format!(
                        "no answer to a ping within {} s",
                        KEEP_ALIVE_TIMEOUT.as_secs()
                    )
                }
            }
        }
    };
    let ended = tokio::select! {
        result = &mut connection => result.err().map(|e| describe(&e)),
        reason = keep_alive => Some(reason),
    };
    closed.store(true, Ordering::Release);
    match ended {
        None => tracing::debug!(%host, "HTTP/2 connection closed"),
        Some(error) => {
            tracing::info!(%host, %error, "HTTP/2 connection lost; the next push opens another")
        }
    }
}

/// rustls' client configuration with the system's trust store (as the rest of pushwake
/// verifies servers: the platform verifier, which honours `SSL_CERT_FILE`), and a client
/// certificate when one is given. ALPN is set by [`ConnectionSet::new`].
pub fn tls_config(
    client_certificate: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| format!("cannot read the system's trusted certificates: {e}"))?;
    match client_certificate {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(streams: usize, max: usize) -> ConnectionSet {
        ConnectionSet::new(
            "http://127.0.0.1:9",
            &tls_config(None).unwrap(),
            streams,
            max,
        )
        .unwrap()
    }

    #[test]
    fn a_connection_is_opened_only_when_every_one_is_full() {
        let set = set(2, 3);
        let a = set.lease();
        let b = set.lease();
        assert_eq!(set.connections(), 1);
        let c = set.lease();
        assert_eq!(set.connections(), 2);
        drop(a);
        // The first connection has a free stream again: it is used, nothing new opens.
        let d = set.lease();
        assert_eq!(set.connections(), 2);
        assert!(Arc::ptr_eq(&d.lane, &b.lane));
        drop((b, c, d));
    }

    #[test]
    fn past_the_cap_the_least_busy_connection_queues_the_request() {
        let set = set(1, 2);
        let leases: Vec<Lease> = (0..5).map(|_| set.lease()).collect();
        assert_eq!(set.connections(), 2);
        let loads: Vec<usize> = set
            .lanes
            .read()
            .unwrap()
            .iter()
            .map(|l| l.in_flight.load(Ordering::Acquire))
            .collect();
        assert_eq!(loads.iter().sum::<usize>(), 5);
        assert!(loads.iter().all(|&n| n >= 2), "{loads:?}");
        drop(leases);
        let free: usize = set
            .lanes
            .read()
            .unwrap()
            .iter()
            .map(|l| l.in_flight.load(Ordering::Acquire))
            .sum();
        assert_eq!(free, 0, "every stream is given back");
    }

    #[test]
    fn hosts_are_read_with_their_default_ports() {
        let apple = Host::parse("https://api.push.apple.com").unwrap();
        assert_eq!(apple.address, "api.push.apple.com:443");
        assert_eq!(apple.name, "api.push.apple.com");
        assert_eq!(
            Host::parse("http://127.0.0.1:8443/").unwrap().address,
            "127.0.0.1:8443"
        );
        assert_eq!(Host::parse("https://[::1]:9").unwrap().name, "::1");
        for bad in [
            "api.push.apple.com",
            "ftp://x",
            "https://x/prefix",
            "https://",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
    }

    /// A bare HTTP/2 server on loopback answering every request with 200 and closing
    /// each connection after `per_connection` requests. Returns its base URL and the
    /// number of connections it accepted.
    async fn closing_server(per_connection: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.unwrap();
                    for _ in 0..per_connection {
                        let Some(Ok((_request, mut respond))) = connection.accept().await else {
                            return;
                        };
                        let answer = hyper::Response::builder().status(200).body(()).unwrap();
                        respond.send_response(answer, true).unwrap();
                    }
                    // Then a GOAWAY and the end of the connection.
                    connection.graceful_shutdown();
                    while connection.accept().await.is_some() {}
                });
            }
        });
        (base, accepted)
    }

    fn push_to(set: &ConnectionSet) -> Request<Bytes> {
        set.request("/3/device/abc")
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_by_the_next_push() {
        let (base, accepted) = closing_server(1).await;
        let set = ConnectionSet::new(&base, &tls_config(None).unwrap(), 10, 1).unwrap();
        let answer = set.lease().send(push_to(&set)).await.unwrap();
        assert_eq!(answer.status(), 200);
        // The server's GOAWAY reaches the connection's task, which marks it closed.
        let lane = set.lanes.read().unwrap()[0].clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lane.open_sender().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the closed connection is still taken as open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let answer = set.lease().send(push_to(&set)).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a second connection was opened"
        );
        assert_eq!(set.connections(), 1, "on the same lane");
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_says_nothing_fails_the_opening() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let set = ConnectionSet::new(&base, &tls_config(None).unwrap(), 10, 1).unwrap();
        let error = set.warm_up().await.unwrap_err().to_string();
        assert!(error.contains("no connection within 5 s"), "{error}");
        silent.abort();
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_naming_the_host() {
        // Port 9 (discard) is not listened on here: the connection is refused.
        let set = set(1, 1);
        let request = set
            .request("/3/device/secret-token")
            .body(Bytes::new())
            .unwrap();
        let error = set.lease().send(request).await.unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("cannot connect to 127.0.0.1:9"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }
}
