//! A TCP proxy in front of the test PBX's HTTP port (ARI): it counts the HTTP requests
//! that pass through it, by method and path, and can stop forwarding in both directions
//! without closing anything — what a firewall that starts dropping packets does to a
//! connection. It can also close the connection of chosen requests instead of
//! forwarding them, as Asterisk's HTTP server does past its `sessionlimit`.
//!
//! Requests are counted from the client's byte stream (request line, headers, a
//! `Content-Length` body, on kept-alive connections too); a connection upgraded to a
//! WebSocket is forwarded without counting its frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; it stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    forwarding: watch::Sender<bool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    closes: Closes,
    task: tokio::task::JoinHandle<()>,
}

/// How many more requests of each `METHOD /path` to close the connection of.
type Closes = Arc<Mutex<HashMap<String, u64>>>;

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (forwarding, gate) = watch::channel(true);
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let closes = Closes::default();
        let task = tokio::spawn(accept(
            listener,
            upstream,
            gate,
            counts.clone(),
            closes.clone(),
        ));
        Ok(Self {
            addr,
            forwarding,
            counts,
            closes,
            task,
        })
    }

    /// A proxy in front of the HTTP server of `url` (`http://host:port`).
    pub async fn for_url(url: &str) -> Result<Self, String> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: not an http:// URL"))?
            .trim_end_matches('/');
        let upstream = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        Self::start(upstream).await.map_err(|e| e.to_string())
    }

    /// The proxy's own URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops forwarding, both ways, on every connection (new ones are accepted and then
    /// left hanging); nothing is closed, and what the peers send meanwhile waits.
    pub fn cut(&self) {
        self.forwarding.send_replace(false);
    }

    /// Forwards again what waited and whatever follows.
    pub fn resume(&self) {
        self.forwarding.send_replace(true);
    }

    /// The next `n` requests that are exactly `request` (`METHOD /path`, written as
    /// [`requests`](Self::requests) counts them) are not forwarded: their connection is
    /// closed both ways instead, without an answer — what a server past its connection
    /// limit does. They are still counted.
    pub fn close_next(&self, request: &str, n: u64) {
        *self
            .closes
            .lock()
            .unwrap()
            .entry(request.to_owned())
            .or_default() += n;
    }

    /// How many requests `close_next` asked for are still to be closed.
    pub fn closes_left(&self) -> u64 {
        self.closes.lock().unwrap().values().sum()
    }

    /// The requests forwarded so far, by `METHOD /path` (the query left off; channel,
    /// bridge and application ids written `{id}`).
    pub fn requests(&self) -> HashMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// How many requests forwarded so far whose `METHOD /path` starts with `prefix`
    /// (`""` counts all).
    pub fn count(&self, prefix: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    gate: watch::Receiver<bool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    closes: Closes,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (gate, counts, closes) = (gate.clone(), counts.clone(), closes.clone());
        tokio::spawn(async move {
            let mut wait = gate.clone();
            // A connection made during a cut gets nowhere until forwarding resumes.
            if wait.wait_for(|open| *open).await.is_err() {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let counter = RequestCounter::new(counts, closes);
            let upstream = pipe(client_read, server_write, gate.clone(), Some(counter));
            let downstream = pipe(server_read, client_write, gate, None);
            tokio::pin!(upstream, downstream);
            // A request to close ends both directions at once (dropping every half
            // closes both sockets); otherwise each direction runs to its end.
            tokio::select! {
                closed = &mut upstream => if !closed {
                    downstream.await;
                },
                _ = &mut downstream => {
                    upstream.await;
                }
            }
        });
    }
}

/// Copies `from` to `to` while the gate is open; a read that completes while it is shut
/// is held until it opens again (as TCP retransmits what a firewall dropped). True when
/// it stopped at a request to close.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
    mut counter: Option<RequestCounter>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return false;
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            shut = gate.wait_for(|open| !*open) => {
                if shut.is_err() {
                    return false;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(n) => n,
        };
        if gate.wait_for(|open| *open).await.is_err() {
            return false;
        }
        if let Some(counter) = &mut counter {
            if counter.feed(&buf[..n]) == Feed::Close {
                // Nothing of this read goes on: the server never sees a whole request.
                return true;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}

/// Finds the requests in a client's byte stream.
struct RequestCounter {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    closes: Closes,
    state: Parse,
    head: Vec<u8>,
}

/// What to do with the bytes a counter was fed.
#[derive(Debug, PartialEq, Eq)]
enum Feed {
    Forward,
    /// They end a request to close the connection of.
    Close,
}

enum Parse {
    /// Reading a request's head.
    Head,
    /// Skipping this many more body bytes.
    Body(usize),
    /// Upgraded (WebSocket) or unparseable: nothing more is counted.
    Opaque,
}

impl RequestCounter {
    fn new(counts: Arc<Mutex<HashMap<String, u64>>>, closes: Closes) -> Self {
        Self {
            counts,
            closes,
            state: Parse::Head,
            head: Vec::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Feed {
        while !bytes.is_empty() {
            match &mut self.state {
                Parse::Opaque => return Feed::Forward,
                Parse::Body(left) => {
                    let skip = (*left).min(bytes.len());
                    *left -= skip;
                    bytes = &bytes[skip..];
                    if *left == 0 {
                        self.state = Parse::Head;
                    }
                }
                Parse::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(bytes);
                    let Some(end) = find(&self.head, b"\r\n\r\n") else {
                        if self.head.len() > 64 * 1024 {
                            self.state = Parse::Opaque;
                        }
                        return Feed::Forward;
                    };
                    let used = end + 4 - before;
                    bytes = &bytes[used..];
                    let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
                    self.head.clear();
                    let (next, feed) = self.count(&head);
                    self.state = next;
                    if feed == Feed::Close {
                        return Feed::Close;
                    }
                }
            }
        }
        Feed::Forward
    }

    /// Counts one request head; what follows it, and whether to close its connection.
    fn count(&self, head: &str) -> (Parse, Feed) {
        let mut lines = head.split("\r\n");
        let mut request = lines.next().unwrap_or_default().split(' ');
        let (method, target) = (
            request.next().unwrap_or_default(),
            request.next().unwrap_or_default(),
        );
        let path = target.split('?').next().unwrap_or_default();
        let request = format!("{method} {}", normalise(path));
        let feed = match self.closes.lock().unwrap().get_mut(&request) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Feed::Close
            }
            _ => Feed::Forward,
        };
        *self.counts.lock().unwrap().entry(request).or_default() += 1;
        let mut length = 0;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "upgrade" => return (Parse::Opaque, feed),
                "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                    return (Parse::Opaque, feed)
                }
                _ => {}
            }
        }
        let next = if length > 0 {
            Parse::Body(length)
        } else {
            Parse::Head
        };
        (next, feed)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `/ari/channels/1733.4/variable` → `/ari/channels/{id}/variable`.
fn normalise(path: &str) -> String {
    let mut out = Vec::new();
    let mut id_next = false;
    for segment in path.split('/') {
        if id_next && !segment.is_empty() {
            out.push("{id}");
        } else {
            out.push(segment);
        }
        id_next = matches!(segment, "channels" | "bridges" | "applications");
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kept_alive_requests_split_anywhere_and_stops_at_an_upgrade() {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let mut counter = RequestCounter::new(counts.clone(), Closes::default());
        let stream = b"GET /ari/channels/1733.4/variable?variable=X HTTP/1.1\r\nHost: a\r\n\r\n\
POST /ari/channels?endpoint=x HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /GET /ari/asterisk/ping HTTP/1.1\r\n\r\n\
GET /ari/events?app=a HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /not/counted HTTP/1.1\r\n\r\n";
        // Byte by byte: a request may be split across reads anywhere.
        for b in stream.iter() {
            assert_eq!(counter.feed(std::slice::from_ref(b)), Feed::Forward);
        }
        let counts = counts.lock().unwrap().clone();
        assert_eq!(counts["GET /ari/channels/{id}/variable"], 1);
        assert_eq!(counts["POST /ari/channels"], 1);
        assert_eq!(counts["GET /ari/asterisk/ping"], 1);
        assert_eq!(counts["GET /ari/events"], 1);
        assert_eq!(counts.len(), 4, "{counts:?}");
    }

    #[tokio::test]
    async fn forwards_counts_and_holds_everything_while_cut() {
        // An upstream that echoes each request's first line back.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(upstream_addr).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let request = b"GET /ari/asterisk/ping HTTP/1.1\r\n\r\n";
        client.write_all(request).await.unwrap();
        let mut echo = vec![0u8; request.len()];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, request);
        assert_eq!(proxy.count("GET /ari/asterisk"), 1);

        proxy.cut();
        client.write_all(request).await.unwrap();
        let mut one = [0u8; 1];
        let held = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            client.read_exact(&mut one),
        )
        .await;
        assert!(held.is_err(), "a byte came through the cut");
        proxy.resume();
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, request);
        assert_eq!(proxy.count(""), 2);
    }

    #[tokio::test]
    async fn closes_the_connection_of_a_chosen_request_without_forwarding_it() {
        // An upstream that echoes, and counts the bytes it got.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(upstream_addr).await.unwrap();
        proxy.close_next("POST /ari/channels", 1);
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let ping = b"GET /ari/asterisk/ping HTTP/1.1\r\n\r\n";
        client.write_all(ping).await.unwrap();
        let mut echo = vec![0u8; ping.len()];
        client.read_exact(&mut echo).await.unwrap();
        let dial = b"POST /ari/channels?endpoint=x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        client.write_all(dial).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut rest),
        )
        .await
        .expect("the connection was not closed");
        assert!(read.is_err() || rest.is_empty(), "answered: {rest:?}");
        assert_eq!(
            received.lock().unwrap().as_slice(),
            ping,
            "the POST went on"
        );
        assert_eq!(proxy.closes_left(), 0);
        assert_eq!(proxy.count("POST /ari/channels"), 1);
        // The next one goes through.
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(dial).await.unwrap();
        let mut echo = vec![0u8; dial.len()];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, dial);
    }
}
