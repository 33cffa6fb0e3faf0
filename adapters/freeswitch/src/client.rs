//! The Event Socket client: one authenticated connection ([`EslConnection`]), and a
//! client that keeps one up ([`EslClient`], from [`spawn_client`]).
//!
//! One task owns the TCP stream. It writes the commands in the order they are asked for
//! and matches the replies in that order — FreeSWITCH answers the commands of a connection
//! one after the other, on the connection's own thread — while events interleave freely:
//! they go to a channel, except a `BACKGROUND_JOB` whose `Job-UUID` belongs to one of our
//! `bgapi`s, which resolves that job instead. When the connection ends, for whatever
//! reason, every request still waiting fails with [`EslError::ConnectionLost`] saying why.
//!
//! FreeSWITCH has no ping, and a TCP connection whose peer vanished (a pulled cable, a
//! host that froze, a firewall dropping packets) stays "open" for as long as nothing is
//! written to it — Linux's own keep-alive starts after two hours. While the socket is
//! dead, calls that park waiting for pushwake wait for nothing. So after
//! [`KeepAlive::idle`] without a byte from FreeSWITCH the task sends a harmless `api`
//! ([`KEEP_ALIVE_COMMAND`]), and when nothing at all comes back within
//! [`KeepAlive::timeout`] the connection is declared dead: with the defaults a dead peer
//! is noticed 15 s after the last byte it sent (a write that cannot get out is given the
//! same 10 s).
//!
//! The same task serves the connection of each call FreeSWITCH hands over through its
//! outbound `socket` application ([`crate::outbound`]), with a bound on each reply in
//! place of the keep-alive.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::frame::{Event, Frame, FrameError, FrameReader};

/// The event socket password. Secret: its `Debug` is `Password(<redacted>)`, it has no
/// `Display`, and nothing in this crate puts it in a log line or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself, for the `auth` command only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl From<&str> for Password {
    fn from(password: &str) -> Self {
        Password::new(password)
    }
}

impl From<String> for Password {
    fn from(password: String) -> Self {
        Password(password)
    }
}

/// When the connection is checked, and how long FreeSWITCH has to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// After this long without a byte from FreeSWITCH, [`KEEP_ALIVE_COMMAND`] is sent.
    pub idle: Duration,
    /// When nothing at all has come this long after that, the connection is dead. It
    /// must be longer than the slowest `api` pushwake sends: FreeSWITCH runs an `api` on
    /// the connection's thread, and says nothing else, not even events, until it returns
    /// (slow commands, `originate` above all, go through `bgapi`).
    pub timeout: Duration,
}

impl KeepAlive {
    /// How long after FreeSWITCH's last byte a dead connection is noticed, at most.
    pub fn bound(&self) -> Duration {
        self.idle + self.timeout
    }
}

impl Default for KeepAlive {
    /// 5 s idle, 10 s to answer: a dead peer is noticed within 15 s; a live one answers
    /// in milliseconds, so ten seconds leave room for a FreeSWITCH that is busy.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the keep-alive sends: a lookup of a UUID no channel has. It changes nothing,
/// costs FreeSWITCH one hash lookup, and is answered at once (`false`, as captured).
pub const KEEP_ALIVE_COMMAND: &str = "api uuid_exists 00000000-0000-0000-0000-000000000000";

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct EslConfig {
    /// `host:port` of the event socket (FreeSWITCH's default is `127.0.0.1:8021`).
    pub address: String,
    /// The event socket password.
    pub password: Password,
    /// Events to subscribe to after `event plain`: names (`CHANNEL_PARK`) and `CUSTOM`
    /// subclasses (`sofia::register`, any name with `::`), in any order. `BACKGROUND_JOB`
    /// is always added: it is how `bgapi` results arrive.
    pub events: Vec<String>,
    /// The keep-alive.
    pub keep_alive: KeepAlive,
    /// How long the TCP connect, and then the authentication and subscription, may take
    /// (each).
    pub connect_timeout: Duration,
}

impl EslConfig {
    /// A configuration with no events beyond `BACKGROUND_JOB`, the default keep-alive and
    /// a 5 s connect timeout.
    pub fn new(address: impl Into<String>, password: impl Into<Password>) -> Self {
        Self {
            address: address.into(),
            password: password.into(),
            events: Vec::new(),
            keep_alive: KeepAlive::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection or a request failed. No message carries the password, nor a
/// command's arguments (they may hold a push token): only the command's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EslError {
    /// The TCP connection could not be made.
    #[error("cannot connect to FreeSWITCH's event socket at {address}: {message}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        message: String,
    },
    /// `auth` was answered `-ERR invalid`.
    #[error("FreeSWITCH refused the event socket password")]
    AuthRefused,
    /// FreeSWITCH's `apply-inbound-acl` refused this address.
    #[error("FreeSWITCH's event socket refused this address (apply-inbound-acl): {0}")]
    Rejected(String),
    /// The connection went wrong before it was ready.
    #[error("FreeSWITCH event socket handshake failed: {0}")]
    Handshake(String),
    /// A command was answered `-ERR …`.
    #[error("FreeSWITCH refused `{command}`: {reply}")]
    Refused {
        /// The command's name (`event plain`, `bgapi originate`).
        command: String,
        /// FreeSWITCH's `Reply-Text`.
        reply: String,
    },
    /// A command got a reply of the wrong type.
    #[error("FreeSWITCH answered `{command}` with an unexpected {content_type}")]
    UnexpectedReply {
        /// The command's name.
        command: String,
        /// The reply's `Content-Type`.
        content_type: String,
    },
    /// Something that cannot be sent (a line break would end the command early and
    /// start another one).
    #[error("not sent to FreeSWITCH: {0}")]
    Invalid(String),
    /// The connection ended before the answer came.
    #[error("the FreeSWITCH event socket connection was lost: {0}")]
    ConnectionLost(String),
    /// [`EslClient`] has no connection right now (it is reconnecting).
    #[error("not connected to FreeSWITCH's event socket (reconnecting)")]
    NotConnected,
}

/// A `bgapi` command accepted by FreeSWITCH: its `Job-UUID`, and its result to come
/// (`.await` it, or [`result`](Self::result)). The result is the job's output as
/// FreeSWITCH wrote it (`+OK <uuid>\n`, `-ERR USER_NOT_REGISTERED\n`): failures of the
/// command itself are in it, not in the `Err`, which is for a connection that ended first.
/// There is no timeout here: `originate` takes as long as the phone rings.
#[derive(Debug)]
pub struct BackgroundJob {
    uuid: String,
    result: oneshot::Receiver<Result<String, EslError>>,
}

impl BackgroundJob {
    /// The job's `Job-UUID`.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Waits for the job's `BACKGROUND_JOB` and returns its body.
    pub async fn result(self) -> Result<String, EslError> {
        self.result
            .await
            .unwrap_or_else(|_| Err(EslError::ConnectionLost("the connection ended".into())))
    }
}

impl IntoFuture for BackgroundJob {
    type Output = Result<String, EslError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result())
    }
}

/// What a request waits for.
enum Pending {
    /// An `api/response`: its body.
    Api(oneshot::Sender<Result<String, EslError>>),
    /// A `command/reply` saying `+OK`: its `Reply-Text`.
    Command(oneshot::Sender<Result<String, EslError>>),
    /// The reply to `bgapi`: the job.
    BgApi(oneshot::Sender<Result<BackgroundJob, EslError>>),
    /// The keep-alive's answer, which nobody reads.
    KeepAlive,
}

impl Pending {
    fn fail(self, error: EslError) {
        // A requester that gave up has dropped its receiver: nothing to tell it.
        let _ = match self {
            Pending::Api(tx) | Pending::Command(tx) => tx.send(Err(error)).map_err(|_| ()),
            Pending::BgApi(tx) => tx.send(Err(error)).map_err(|_| ()),
            Pending::KeepAlive => Ok(()),
        };
    }
}

enum Request {
    /// A command to write, and what its reply goes to.
    Command {
        /// Its name, for errors (never its arguments).
        name: String,
        /// The command, without the blank line that ends it.
        line: String,
        /// What follows that blank line (`sendevent`'s body, its length in the line's
        /// `Content-Length`).
        body: Option<String>,
        pending: Pending,
    },
    /// End the connection from this side once every command asked for before is written;
    /// what still waits fails with this reason.
    Close(String),
}

/// A request written, waiting for its reply.
struct Waiting {
    /// The command's name, for errors.
    name: String,
    pending: Pending,
    /// When it was written (an outbound connection's replies are due within a bound).
    sent: Instant,
}

/// How a connection tells that FreeSWITCH is gone when nothing says so.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Liveness {
    /// Inbound: a probe after [`KeepAlive::idle`] of silence, dead after
    /// [`KeepAlive::timeout`] more (see the module's docs).
    KeepAlive(KeepAlive),
    /// The connection of one call that FreeSWITCH handed over (outbound `socket`): no
    /// probe, since FreeSWITCH closes it when the call ends and an idle call has nothing
    /// to say; but each command's reply is due within this long of writing it (FreeSWITCH
    /// answers `sendmsg` at once in async mode), else the connection is dead.
    Replies(Duration),
}

impl Liveness {
    /// How long a write may wait for a peer that does not read.
    fn write_timeout(&self) -> Duration {
        match self {
            Liveness::KeepAlive(keep_alive) => keep_alive.timeout,
            Liveness::Replies(bound) => *bound,
        }
    }
}

/// One authenticated, subscribed Event Socket connection. Cloning it gives another
/// handle on the same connection; the connection ends when FreeSWITCH or the network
/// ends it, after [`exit`](Self::exit), or when every handle is gone.
#[derive(Clone)]
pub struct EslConnection {
    address: String,
    requests: mpsc::Sender<Request>,
    closed: watch::Receiver<Option<String>>,
}

impl fmt::Debug for EslConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EslConnection")
            .field("address", &self.address)
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

impl EslConnection {
    /// Connects, waits for `auth/request`, authenticates, and subscribes to
    /// `BACKGROUND_JOB` and `config.events`. Events come on the returned receiver from
    /// then on; it ends when the connection does.
    pub async fn connect(
        config: &EslConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), EslError> {
        let subscription = subscription(&config.events)?;
        let password = config.password.expose();
        if password.contains(['\n', '\r']) {
            return Err(EslError::Invalid(
                "the event socket password has a line break".into(),
            ));
        }
        let connect_error = |message: String| EslError::Connect {
            address: config.address.clone(),
            message,
        };
        let mut stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(connect_error(e.to_string())),
                Err(_) => {
                    return Err(connect_error(format!(
                        "timed out after {:?}",
                        config.connect_timeout
                    )))
                }
            };
        // Commands are small and each waits for its answer: do not let Nagle hold them.
        let _ = stream.set_nodelay(true);
        let mut reader = FrameReader::new();
        let handshake = handshake(&mut stream, &mut reader, password, &subscription);
        match tokio::time::timeout(config.connect_timeout, handshake).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(EslError::Handshake(format!(
                    "no answer within {:?}",
                    config.connect_timeout
                )))
            }
        }

        Ok(Self::start(
            stream,
            reader,
            config.address.clone(),
            Liveness::KeepAlive(config.keep_alive),
        ))
    }

    /// Serves a connection that is ready (authenticated, or handed over by FreeSWITCH's
    /// `socket` application) from its own task. `reader` holds whatever was read past the
    /// handshake.
    pub(crate) fn start(
        stream: TcpStream,
        reader: FrameReader,
        address: String,
        liveness: Liveness,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (requests, requested) = mpsc::channel(64);
        let (events, events_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(None);
        let link = Link {
            stream,
            reader,
            waiting: VecDeque::new(),
            jobs: HashMap::new(),
            events,
            liveness,
            notice: None,
        };
        tokio::spawn(link.run(requested, closed_tx));
        (
            EslConnection {
                address,
                requests,
                closed,
            },
            events_rx,
        )
    }

    /// Runs `api <command>` and returns its output exactly (often without a final
    /// newline). FreeSWITCH reports a failing command inside the output, each command in
    /// its own words (`-ERR No such channel!\n`, `error/user_not_registered`), so reading
    /// it is the caller's business; `Err` is for the connection, or for an `api` refused
    /// as a command (`-ERR permission denied`). Keep it for quick commands: a slow one
    /// holds up everything else on the connection (see [`KeepAlive::timeout`]).
    pub async fn api(&self, command: &str) -> Result<String, EslError> {
        let line = line("api", command)?;
        let (tx, rx) = oneshot::channel();
        self.request(line, Pending::Api(tx)).await?;
        self.answer(rx).await
    }

    /// Runs `bgapi <command>`: FreeSWITCH accepts it at once with a `Job-UUID` and runs
    /// it in the background; the returned job resolves with its result when the
    /// `BACKGROUND_JOB` of that UUID arrives, whatever came in between.
    pub async fn bgapi(&self, command: &str) -> Result<BackgroundJob, EslError> {
        let line = line("bgapi", command)?;
        let (tx, rx) = oneshot::channel();
        self.request(line, Pending::BgApi(tx)).await?;
        self.answer(rx).await
    }

    /// Subscribes to more events (`event plain <names…>`; FreeSWITCH adds them to what
    /// the connection already has). The same rules as [`EslConfig::events`].
    pub async fn subscribe(&self, events: &[&str]) -> Result<(), EslError> {
        let events: Vec<String> = events.iter().map(|e| (*e).to_owned()).collect();
        let line = subscription(&events)?;
        self.command(name(&line), line).await.map(|_| ())
    }

    /// Says `exit`: FreeSWITCH answers `+OK bye`, sends its disconnect notice and closes
    /// the connection.
    pub async fn exit(&self) -> Result<(), EslError> {
        self.command("exit".to_owned(), "exit".to_owned())
            .await
            .map(|_| ())
    }

    /// Sends a command FreeSWITCH answers with a `command/reply` (`line` may span several
    /// lines: `sendmsg` and its headers) and returns the `Reply-Text` of its `+OK`;
    /// [`EslError::Refused`] with the `-ERR` text otherwise. `name` is what errors call it.
    pub(crate) async fn command(&self, name: String, line: String) -> Result<String, EslError> {
        let (tx, rx) = oneshot::channel();
        self.send_request(Request::Command {
            name,
            line,
            body: None,
            pending: Pending::Command(tx),
        })
        .await?;
        self.answer(rx).await
    }

    /// Fires an event into FreeSWITCH (`sendevent <name>`, with `headers` and `body`),
    /// and returns the `Reply-Text` of its `+OK` (`+OK <Event-UUID>`). A header name or
    /// value with a line break is refused: it would end the command early.
    pub async fn sendevent(
        &self,
        name: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<String, EslError> {
        let mut line = line("sendevent", name)?;
        for (header, value) in headers {
            if format!("{header}{value}").contains(['\n', '\r']) || header.contains(':') {
                return Err(EslError::Invalid(format!(
                    "`sendevent {name}`: header {header:?} has a line break or a colon"
                )));
            }
            line.push('\n');
            line.push_str(header);
            line.push_str(": ");
            line.push_str(value);
        }
        line.push_str(&format!("\nContent-Length: {}", body.len()));
        let (tx, rx) = oneshot::channel();
        self.send_request(Request::Command {
            name: format!("sendevent {name}"),
            line,
            body: Some(body.to_owned()),
            pending: Pending::Command(tx),
        })
        .await?;
        self.answer(rx).await
    }

    /// Ends the connection from this side, once every command asked for before is
    /// written; returns when it has ended. Whatever still waits fails with `reason`.
    pub(crate) async fn close(&self, reason: &str) {
        // Refused only when the task has already ended: closed then all the same.
        let _ = self.send_request(Request::Close(reason.to_owned())).await;
        self.closed().await;
    }

    /// Waits until the connection has ended; why it did.
    pub async fn closed(&self) -> String {
        let mut closed = self.closed.clone();
        let reason = match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the connection ended".to_owned(),
        };
        reason
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    fn lost(&self) -> EslError {
        let reason = self.closed.borrow().clone();
        EslError::ConnectionLost(reason.unwrap_or_else(|| "the connection ended".into()))
    }

    async fn request(&self, line: String, pending: Pending) -> Result<(), EslError> {
        self.send_request(Request::Command {
            name: name(&line),
            line,
            body: None,
            pending,
        })
        .await
    }

    async fn send_request(&self, request: Request) -> Result<(), EslError> {
        self.requests.send(request).await.map_err(|_| self.lost())
    }

    async fn answer<T>(&self, rx: oneshot::Receiver<Result<T, EslError>>) -> Result<T, EslError> {
        // The task answers every request it took, even when it ends; a dropped sender
        // means the request was still in the queue when it ended.
        rx.await.unwrap_or_else(|_| Err(self.lost()))
    }
}

/// `<verb> <command>` if the command can be sent as one line.
fn line(verb: &str, command: &str) -> Result<String, EslError> {
    if command.contains(['\n', '\r']) {
        return Err(EslError::Invalid(format!(
            "`{}` has a line break",
            name(&format!("{verb} {command}"))
        )));
    }
    if command.trim().is_empty() {
        return Err(EslError::Invalid(format!("`{verb}` without a command")));
    }
    Ok(format!("{verb} {command}"))
}

/// A command's name for messages: its first two words (`api sofia_contact`, `event
/// plain`), never the arguments, which may carry a contact and its push token.
fn name(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// The `event plain …` command for these events. FreeSWITCH takes every word after
/// `CUSTOM` as a subclass, so plain names go first, then `CUSTOM` and the subclasses;
/// `BACKGROUND_JOB` leads, since `bgapi` results are only delivered to connections
/// subscribed to it.
fn subscription(events: &[String]) -> Result<String, EslError> {
    let mut names = vec!["BACKGROUND_JOB".to_owned()];
    let mut subclasses: Vec<String> = Vec::new();
    let mut custom = false;
    for event in events {
        let event = event.trim();
        if event.is_empty() || event.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(EslError::Invalid(format!(
                "event name {event:?} is empty or has spaces"
            )));
        }
        if event.contains("::") {
            if !subclasses.iter().any(|s| s == event) {
                subclasses.push(event.to_owned());
            }
        } else if event.eq_ignore_ascii_case("CUSTOM") {
            custom = true;
        } else if !names.iter().any(|n| n.eq_ignore_ascii_case(event)) {
            names.push(event.to_owned());
        }
    }
    if custom || !subclasses.is_empty() {
        names.push("CUSTOM".to_owned());
        names.extend(subclasses);
    }
    Ok(format!("event plain {}", names.join(" ")))
}

/// auth/request → `auth` → `+OK accepted` → `event plain …` → `+OK event listener …`.
async fn handshake(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    password: &str,
    subscription: &str,
) -> Result<(), EslError> {
    match read_frame(stream, reader).await? {
        Frame::AuthRequest => {}
        Frame::Other {
            content_type, body, ..
        } if content_type == "text/rude-rejection" => {
            return Err(EslError::Rejected(
                String::from_utf8_lossy(&body).trim().to_owned(),
            ))
        }
        other => {
            return Err(EslError::Handshake(format!(
                "expected auth/request, got {}",
                other.content_type()
            )))
        }
    }
    // The one place the password is used; this line is never logged.
    write(stream, &format!("auth {password}")).await?;
    match read_frame(stream, reader).await? {
        Frame::CommandReply(reply) if reply.is_ok() => {}
        Frame::CommandReply(reply) if reply.reply_text.starts_with("-ERR") => {
            return Err(EslError::AuthRefused)
        }
        other => {
            return Err(EslError::Handshake(format!(
                "unexpected answer to auth: {}",
                other.content_type()
            )))
        }
    }
    write(stream, subscription).await?;
    match read_frame(stream, reader).await? {
        Frame::CommandReply(reply) if reply.is_ok() => Ok(()),
        Frame::CommandReply(reply) => Err(EslError::Refused {
            command: "event plain".into(),
            reply: reply.reply_text,
        }),
        other => Err(EslError::Handshake(format!(
            "unexpected answer to event plain: {}",
            other.content_type()
        ))),
    }
}

/// The next frame during the handshake (nothing else is expected then).
pub(crate) async fn read_frame(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<Frame, EslError> {
    let mut buf = [0u8; 4096];
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(error) if !error.is_fatal() => continue,
            Err(error) => return Err(EslError::Handshake(error.to_string())),
        }
        match stream.read(&mut buf).await {
            Ok(0) => {
                return Err(EslError::Handshake(
                    "FreeSWITCH closed the connection".into(),
                ))
            }
            Ok(n) => reader.feed(&buf[..n]),
            Err(e) => return Err(EslError::Handshake(e.to_string())),
        }
    }
}

/// Writes a command (and the blank line that ends it) during the handshake.
pub(crate) async fn write(stream: &mut TcpStream, line: &str) -> Result<(), EslError> {
    let mut bytes = Vec::with_capacity(line.len() + 2);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\n\n");
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| EslError::Handshake(e.to_string()))
}

/// The connection's task: the stream, the requests waiting for replies in order, the
/// jobs waiting for their `BACKGROUND_JOB`.
struct Link {
    stream: TcpStream,
    reader: FrameReader,
    waiting: VecDeque<Waiting>,
    jobs: HashMap<String, oneshot::Sender<Result<String, EslError>>>,
    events: mpsc::UnboundedSender<Event>,
    liveness: Liveness,
    /// The first line of a disconnect notice, if FreeSWITCH sent one.
    notice: Option<String>,
}

impl Link {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        closed: watch::Sender<Option<String>>,
    ) {
        let reason = self.serve(&mut requests).await;
        tracing::debug!(%reason, "FreeSWITCH event socket connection ended");
        // The reason first, so that a request failing from now on can say it.
        closed.send_replace(Some(reason.clone()));
        let error = EslError::ConnectionLost(reason);
        for waiting in self.waiting.drain(..) {
            waiting.pending.fail(error.clone());
        }
        for (_, job) in self.jobs.drain() {
            let _ = job.send(Err(error.clone()));
        }
        requests.close();
        while let Ok(request) = requests.try_recv() {
            if let Request::Command { pending, .. } = request {
                pending.fail(error.clone());
            }
        }
        // Dropping `self` ends the events channel, after every event sent before.
    }

    /// Serves the connection until it ends; returns why.
    async fn serve(&mut self, requests: &mut mpsc::Receiver<Request>) -> String {
        // Events may have come in the same read as the subscription's reply.
        if let Err(reason) = self.take_frames() {
            return reason;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_heard = Instant::now();
        let mut probe_sent: Option<Instant> = None;
        loop {
            let deadline = match (self.liveness, probe_sent) {
                (Liveness::KeepAlive(keep_alive), Some(sent)) => Some(sent + keep_alive.timeout),
                (Liveness::KeepAlive(keep_alive), None) => Some(last_heard + keep_alive.idle),
                // Replies come in order, so the oldest command's is the one due first.
                (Liveness::Replies(bound), _) => self.waiting.front().map(|w| w.sent + bound),
            };
            tokio::select! {
                read = self.stream.read(&mut buf) => match read {
                    Ok(0) => {
                        return match &self.notice {
                            Some(notice) => format!("FreeSWITCH closed the connection ({notice})"),
                            None => "FreeSWITCH closed the connection".to_owned(),
                        }
                    }
                    Ok(n) => {
                        self.reader.feed(&buf[..n]);
                        last_heard = Instant::now();
                        probe_sent = None;
                        if let Err(reason) = self.take_frames() {
                            return reason;
                        }
                    }
                    Err(e) => return format!("reading from FreeSWITCH failed: {e}"),
                },
                request = requests.recv() => match request {
                    None => return "closed: no handle on the connection is left".to_owned(),
                    Some(Request::Close(reason)) => return reason,
                    Some(Request::Command { name, line, body, pending }) => {
                        self.waiting.push_back(Waiting { name, pending, sent: Instant::now() });
                        if let Err(reason) = self.send_with_body(&line, body.as_deref()).await {
                            return reason;
                        }
                    }
                },
                () = sleep_until(deadline) => {
                    let keep_alive = match self.liveness {
                        Liveness::KeepAlive(keep_alive) => keep_alive,
                        Liveness::Replies(bound) => {
                            let name = self.waiting.front().map_or("", |w| w.name.as_str());
                            return format!("FreeSWITCH did not answer `{name}` within {bound:?}");
                        }
                    };
                    if probe_sent.is_some() {
                        return format!(
                            "FreeSWITCH sent nothing for {:?}, not even an answer to the keep-alive",
                            keep_alive.bound()
                        );
                    }
                    self.waiting.push_back(Waiting {
                        name: "keep-alive".to_owned(),
                        pending: Pending::KeepAlive,
                        sent: Instant::now(),
                    });
                    if let Err(reason) = self.send(KEEP_ALIVE_COMMAND).await {
                        return reason;
                    }
                    probe_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Writes a command. A peer that stops reading fills the socket's buffers and the
    /// write would wait forever, so it gets as long as FreeSWITCH has to answer.
    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.send_with_body(line, None).await
    }

    /// Writes a command, and the body after its blank line if it has one.
    async fn send_with_body(&mut self, line: &str, body: Option<&str>) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 2 + body.map_or(0, str::len));
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\n\n");
        bytes.extend_from_slice(body.unwrap_or_default().as_bytes());
        let timeout = self.liveness.write_timeout();
        match tokio::time::timeout(timeout, self.stream.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to FreeSWITCH failed: {e}")),
            Err(_) => Err(format!("FreeSWITCH took nothing written for {timeout:?}")),
        }
    }

    /// Handles every whole frame read so far. `Err`: the connection must end.
    fn take_frames(&mut self) -> Result<(), String> {
        loop {
            match self.reader.next_frame() {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => self.frame(frame)?,
                Err(error) if !error.is_fatal() => {
                    tracing::warn!(%error, "skipping an event from FreeSWITCH");
                }
                Err(error) => return Err(unreadable(&error)),
            }
        }
    }

    fn frame(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Event(event) => {
                self.event(*event);
                Ok(())
            }
            Frame::CommandReply(_) | Frame::ApiResponse { .. } => {
                let Some(waiting) = self.waiting.pop_front() else {
                    // Replies are matched by order: one too many means we are out of step.
                    return Err(format!(
                        "FreeSWITCH sent a {} nobody asked for",
                        frame.content_type()
                    ));
                };
                self.answer(waiting, frame);
                Ok(())
            }
            Frame::DisconnectNotice { body } => {
                self.notice = Some(body.lines().next().unwrap_or_default().to_owned());
                Ok(())
            }
            Frame::AuthRequest => Err("FreeSWITCH asked for authentication again".to_owned()),
            Frame::Other { content_type, .. } => {
                tracing::debug!(%content_type, "ignoring a frame from FreeSWITCH");
                Ok(())
            }
        }
    }

    fn event(&mut self, event: Event) {
        if event.name() == "BACKGROUND_JOB" {
            if let Some(job) = event.job_uuid().and_then(|uuid| self.jobs.remove(uuid)) {
                let _ = job.send(Ok(event.body.unwrap_or_default()));
                return;
            }
            // Another client's job (FreeSWITCH sends every job to every subscriber), or
            // one whose requester gave up: an event like any other.
        }
        // With nobody listening, events are dropped; replies still flow.
        let _ = self.events.send(event);
    }

    fn answer(&mut self, waiting: Waiting, frame: Frame) {
        let Waiting { name, pending, .. } = waiting;
        let refused = |reply: String| EslError::Refused {
            command: name.clone(),
            reply,
        };
        match (pending, frame) {
            (Pending::KeepAlive, _) => {}
            (Pending::Api(tx), Frame::ApiResponse { body }) => {
                let _ = tx.send(Ok(body));
            }
            (Pending::Command(tx), Frame::CommandReply(reply)) => {
                let result = if reply.is_ok() {
                    Ok(reply.reply_text)
                } else {
                    Err(refused(reply.reply_text))
                };
                let _ = tx.send(result);
            }
            (Pending::BgApi(tx), Frame::CommandReply(reply)) => {
                if !reply.is_ok() {
                    let _ = tx.send(Err(refused(reply.reply_text)));
                    return;
                }
                let uuid = reply.job_uuid.or_else(|| {
                    let uuid = reply.reply_text.strip_prefix("+OK Job-UUID:")?.trim();
                    (!uuid.is_empty()).then(|| uuid.to_owned())
                });
                let Some(uuid) = uuid else {
                    let _ = tx.send(Err(EslError::UnexpectedReply {
                        command: name,
                        content_type: "command/reply without a Job-UUID".into(),
                    }));
                    return;
                };
                // Jobs whose requester gave up are forgotten here, not kept forever.
                self.jobs.retain(|_, job| !job.is_closed());
                let (job, result) = oneshot::channel();
                self.jobs.insert(uuid.clone(), job);
                // FreeSWITCH writes a bgapi's reply before the job's BACKGROUND_JOB (the
                // event waits in the connection's queue until the reply is out), so the
                // job is known here before its result can be read.
                if tx
                    .send(Ok(BackgroundJob {
                        uuid: uuid.clone(),
                        result,
                    }))
                    .is_err()
                {
                    self.jobs.remove(&uuid);
                }
            }
            (pending, Frame::CommandReply(reply)) if !reply.is_ok() => {
                pending.fail(refused(reply.reply_text));
            }
            (pending, frame) => pending.fail(EslError::UnexpectedReply {
                command: name,
                content_type: frame.content_type().to_owned(),
            }),
        }
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn unreadable(error: &FrameError) -> String {
    format!("unreadable frame from FreeSWITCH: {error}")
}

/// First reconnect delay; doubled after each failure up to [`MAX_RECONNECT_DELAY`]. Short,
/// because while pushwake is disconnected, calls that park for it are not handed to it.
pub const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two connection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// What [`spawn_client`] delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EslFeed {
    /// A connection is up, authenticated and subscribed (after the first connect and
    /// after every reconnect): whatever happened meanwhile was missed, so resynchronise.
    Connected,
    /// An event (boxed: events are large, and most of the feed's traffic).
    Event(Box<Event>),
    /// The connection was lost; the client reconnects by itself.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// Requests through whatever connection [`spawn_client`] has up. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EslClient {
    current: watch::Receiver<Option<EslConnection>>,
}

impl EslClient {
    /// The connection up now, if there is one.
    pub fn connection(&self) -> Result<EslConnection, EslError> {
        self.current
            .borrow()
            .clone()
            .filter(|c| !c.is_closed())
            .ok_or(EslError::NotConnected)
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connection().is_ok()
    }

    /// [`EslConnection::api`] on the connection up now; [`EslError::NotConnected`] at
    /// once when there is none (waiting would only delay the caller's own fallback).
    pub async fn api(&self, command: &str) -> Result<String, EslError> {
        self.connection()?.api(command).await
    }

    /// [`EslConnection::bgapi`] on the connection up now. If that connection is lost
    /// before the job's `BACKGROUND_JOB` comes, the job fails and its outcome is unknown:
    /// the job may still run in FreeSWITCH (resynchronise after [`EslFeed::Connected`]).
    pub async fn bgapi(&self, command: &str) -> Result<BackgroundJob, EslError> {
        self.connection()?.bgapi(command).await
    }

    /// [`EslConnection::sendevent`] on the connection up now.
    pub async fn sendevent(
        &self,
        name: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<String, EslError> {
        self.connection()?.sendevent(name, headers, body).await
    }
}

/// Keeps an Event Socket connection up for as long as the returned feed lives,
/// reconnecting with capped exponential backoff ([`FIRST_RECONNECT_DELAY`] doubling to
/// [`MAX_RECONNECT_DELAY`]) forever. The feed says [`EslFeed::Connected`] after each
/// connect, then the events, then [`EslFeed::Disconnected`]. Logs changes of state
/// (connected, lost, still failing), not every retry.
pub fn spawn_client(config: EslConfig) -> (EslClient, mpsc::Receiver<EslFeed>) {
    let (feed, feed_rx) = mpsc::channel(1024);
    let (current, current_rx) = watch::channel(None);
    tokio::spawn(async move {
        keep_connected(&config, &current, &feed).await;
        current.send_replace(None);
    });
    (
        EslClient {
            current: current_rx,
        },
        feed_rx,
    )
}

async fn keep_connected(
    config: &EslConfig,
    current: &watch::Sender<Option<EslConnection>>,
    feed: &mpsc::Sender<EslFeed>,
) {
    let address = &config.address;
    let mut delay = FIRST_RECONNECT_DELAY;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            attempt = EslConnection::connect(config) => attempt,
            () = feed.closed() => return,
        };
        match attempt {
            Ok((connection, mut events)) => {
                if failures == 0 {
                    tracing::info!(%address, "FreeSWITCH event socket connected");
                } else {
                    tracing::info!(%address, failures, "FreeSWITCH event socket connected after failed attempts");
                }
                failures = 0;
                delay = FIRST_RECONNECT_DELAY;
                current.send_replace(Some(connection.clone()));
                if feed.send(EslFeed::Connected).await.is_err() {
                    return;
                }
                loop {
                    let event = tokio::select! {
                        event = events.recv() => event,
                        () = feed.closed() => return,
                    };
                    let Some(event) = event else { break };
                    if feed.send(EslFeed::Event(Box::new(event))).await.is_err() {
                        return;
                    }
                }
                current.send_replace(None);
                let reason = connection.closed().await;
                tracing::warn!(%address, %reason, "FreeSWITCH event socket lost; reconnecting");
                if feed.send(EslFeed::Disconnected { reason }).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                failures += 1;
                // Say it once, then again only now and then, not on every retry.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%address, %error, failures, "cannot connect to FreeSWITCH's event socket; retrying");
                } else {
                    tracing::debug!(%address, %error, failures, "cannot connect to FreeSWITCH's event socket");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = feed.closed() => return,
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_subscription_puts_subclasses_after_custom_and_background_job_first() {
        assert_eq!(subscription(&[]).unwrap(), "event plain BACKGROUND_JOB");
        assert_eq!(
            subscription(&events(&[
                "sofia::register",
                "CUSTOM",
                "CHANNEL_PARK",
                "sofia::expire",
                "BACKGROUND_JOB",
                "CHANNEL_PARK"
            ]))
            .unwrap(),
            "event plain BACKGROUND_JOB CHANNEL_PARK CUSTOM sofia::register sofia::expire"
        );
        assert_eq!(
            subscription(&events(&["CUSTOM"])).unwrap(),
            "event plain BACKGROUND_JOB CUSTOM"
        );
        assert!(matches!(
            subscription(&events(&["CHANNEL_PARK\nexit"])),
            Err(EslError::Invalid(_))
        ));
        assert!(subscription(&events(&[""])).is_err());
    }

    #[test]
    fn commands_are_one_line_and_errors_name_them_without_arguments() {
        assert_eq!(
            line("api", "sofia_contact 101@127.0.0.1").unwrap(),
            "api sofia_contact 101@127.0.0.1"
        );
        let error = line("api", "uuid_kill x\n\nexit").unwrap_err();
        assert_eq!(
            error.to_string(),
            "not sent to FreeSWITCH: `api uuid_kill` has a line break"
        );
        assert!(line("bgapi", " ").is_err());
        assert_eq!(
            name("bgapi originate {x=1}user/101 &park()"),
            "bgapi originate"
        );
    }

    #[test]
    fn the_password_is_redacted() {
        let config = EslConfig::new("127.0.0.1:8021", "hunter2");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Password(<redacted>)"), "{debug}");
        assert_eq!(KeepAlive::default().bound(), Duration::from_secs(15));
    }
}
