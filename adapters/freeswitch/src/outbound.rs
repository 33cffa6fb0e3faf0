//! FreeSWITCH's outbound `socket` hand-over, served by pushwake.
//!
//! The dialplan runs `socket <pushwake's address> async full`, and FreeSWITCH connects to
//! pushwake once per call. pushwake says `connect`; FreeSWITCH answers with a
//! `command/reply` that carries the whole channel (`Event-Name: CHANNEL_DATA`,
//! `Unique-ID`, every `variable_*`, `variable_pushwake_extension` among them). From then
//! on that connection is the call's: `sendmsg` runs applications on it (`ring_ready`,
//! `set pushwake_status=…`), each answered `+OK` at once (async mode queues them on the
//! channel), and `exit` gives the call back to the dialplan, which goes on with its next
//! action. So does a connection that pushwake closes, or that drops (measured: at once),
//! which is why a crashed pushwake costs a call nothing but the wake-up. When the caller
//! hangs up, FreeSWITCH sends its disconnect notice and closes the connection.
//!
//! [`OutboundListener`] accepts these connections and does the `connect` of each on its
//! own task, so one slow or broken peer holds up no other call; [`CallSocket`] controls
//! one call, through the same request/reply task as the inbound client
//! ([`crate::client::EslConnection`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::client::{self, EslConnection, EslError, Liveness};
use crate::frame::{Frame, FrameReader, Headers};
use crate::translate::valid_uuid;

/// How long a new connection has to answer `connect` before it is dropped. FreeSWITCH
/// answers in milliseconds; the caller hears nothing until pushwake is done, so a peer
/// that says nothing is not waited for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command on a call's socket may wait for its reply before the socket is
/// declared dead and closed (the call then goes on with the dialplan). FreeSWITCH
/// answers `sendmsg` at once in async mode; ten seconds leave room for a busy switch.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`CallSocket::exit`] waits for `+OK bye` and FreeSWITCH's own close before it
/// closes the socket itself.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Hand-overs in progress at most: beyond this, new connections wait in the kernel's
/// backlog until one is done. A busy switch hands over a few calls a second, each done
/// in milliseconds; this only bounds what a flood of silent peers can hold.
const MAX_HANDSHAKES: usize = 1024;

/// The result of one hand-over, and who it came from (for the log).
type Handshake = (SocketAddr, Result<HandedOver, EslError>);

/// Where FreeSWITCH's `socket` application hands calls over to pushwake.
pub struct OutboundListener {
    listener: TcpListener,
    /// The `connect`s under way. In a mutex because [`accept`](Self::accept) takes
    /// `&self`; tasks of their own so that they go on while nobody is in `accept`, and
    /// are aborted when the listener is dropped.
    handshakes: Mutex<JoinSet<Handshake>>,
}

impl fmt::Debug for OutboundListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl OutboundListener {
    /// Binds the address the dialplan's `socket` application connects to.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            handshakes: Mutex::new(JoinSet::new()),
        })
    }

    /// The address bound (with the port the system chose, if `bind` was given port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for the next call FreeSWITCH hands over; sends `connect` and returns the
    /// channel it describes and the socket to control it with. A connection that fails
    /// its `connect` (closed, malformed, refused, no `Unique-ID`, no answer within
    /// [`CONNECT_TIMEOUT`]) is logged and skipped: accept goes on with the next one. The
    /// only error is one of the listening socket itself.
    ///
    /// Calls are returned in the order their `connect` completes, not the order they
    /// connected. Cancel-safe: a hand-over completed while nobody waits is kept for the
    /// next call.
    pub async fn accept(&self) -> std::io::Result<HandedOver> {
        let mut handshakes = self.handshakes.lock().await;
        loop {
            tokio::select! {
                accepted = self.listener.accept(), if handshakes.len() < MAX_HANDSHAKES => {
                    let (stream, peer) = accepted?;
                    handshakes.spawn(async move { (peer, hand_over(stream, peer).await) });
                }
                Some(done) = handshakes.join_next() => match done {
                    Ok((_, Ok(call))) => return Ok(call),
                    Ok((peer, Err(error))) => {
                        tracing::warn!(%peer, %error, "a FreeSWITCH socket hand-over failed; skipped");
                    }
                    Err(error) => {
                        tracing::error!(%error, "a FreeSWITCH socket hand-over task failed");
                    }
                },
            }
        }
    }
}

/// One call FreeSWITCH handed over.
#[derive(Debug)]
pub struct HandedOver {
    /// The channel, as the reply to `connect` describes it (decoded; `Unique-ID`,
    /// `Caller-Caller-ID-Number`, `variable_pushwake_extension`, … — read it with
    /// [`crate::translate::caller_arrived`]).
    pub channel: Headers,
    /// The call's own connection.
    pub socket: CallSocket,
}

/// The connection of one handed-over call. Cheap to clone; commands are sent in order on
/// the call's own connection, replies matched in order. The connection ends when
/// FreeSWITCH ends it (the caller hung up), after [`exit`](Self::exit), when a reply is
/// late by [`REPLY_TIMEOUT`], or when every clone is dropped — and in each case the call
/// goes on with the dialplan (or is already gone).
#[derive(Clone, Debug)]
pub struct CallSocket {
    channel: Arc<str>,
    connection: EslConnection,
}

impl CallSocket {
    /// The channel's Unique-ID.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Runs application `app` with `arg` on the call (`sendmsg`, `call-command:
    /// execute`): `("ring_ready", None)`, `("set", Some("pushwake_status=TIMEOUT"))`. Ok
    /// once FreeSWITCH said `+OK`, which in async mode means the application is queued on
    /// the channel (it runs in the order queued; this does not wait for it to finish).
    /// [`EslError::Refused`] with FreeSWITCH's `-ERR` text, [`EslError::ConnectionLost`]
    /// when the connection is gone or goes before the answer (the caller hung up), and
    /// [`EslError::Invalid`], before anything is sent, for an `app` or `arg` with a line
    /// break (it would end the command's headers and start new ones) or an empty `app`.
    pub async fn execute(&self, app: &str, arg: Option<&str>) -> Result<(), EslError> {
        let (name, line) = sendmsg_execute(app, arg)?;
        self.connection
            .command(name, line)
            .await
            .map(|_| ())
            .map_err(|e| self.lost(e))
    }

    /// Says `exit`: FreeSWITCH answers `+OK bye` and goes on with the dialplan. Waits for
    /// that answer and for FreeSWITCH to close (together at most [`EXIT_TIMEOUT`]), then
    /// closes the socket in any case. An error says that `+OK bye` did not come (the
    /// connection was gone already, or went, or was too slow); the call is out of
    /// pushwake's hands all the same.
    pub async fn exit(&self) -> Result<(), EslError> {
        let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
        let result = match tokio::time::timeout_at(deadline, self.connection.exit()).await {
            Ok(result) => result.map_err(|e| self.lost(e)),
            Err(_) => Err(EslError::ConnectionLost(format!(
                "call {}: no answer to `exit` within {EXIT_TIMEOUT:?}",
                self.channel
            ))),
        };
        if result.is_ok() {
            // FreeSWITCH sends its disconnect notice and closes right after `+OK bye`:
            // waiting for that close, rather than closing first, spares it a reset.
            let _ = tokio::time::timeout_at(deadline, self.connection.closed()).await;
        }
        self.connection
            .close("closed by pushwake after `exit`")
            .await;
        result
    }

    /// Resolves when the connection is gone (the caller hung up, or FreeSWITCH closed it,
    /// or [`exit`](Self::exit) is done).
    pub async fn closed(&self) {
        self.connection.closed().await;
    }

    /// Whether it is gone already.
    pub fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }

    /// Names the call in a lost connection's error: a log line about one of many calls
    /// should say which.
    fn lost(&self, error: EslError) -> EslError {
        match error {
            EslError::ConnectionLost(reason) => {
                EslError::ConnectionLost(format!("call {}: {reason}", self.channel))
            }
            other => other,
        }
    }
}

/// The `sendmsg` executing `app` with `arg`, and its name for errors (the application,
/// never its argument).
fn sendmsg_execute(app: &str, arg: Option<&str>) -> Result<(String, String), EslError> {
    let breaks = |text: &str| text.contains(['\n', '\r']);
    if app.trim().is_empty() || breaks(app) {
        return Err(EslError::Invalid(format!(
            "application name {app:?} is empty or has a line break"
        )));
    }
    if arg.is_some_and(breaks) {
        return Err(EslError::Invalid(format!(
            "the argument of `{app}` has a line break"
        )));
    }
    let mut line = format!("sendmsg\ncall-command: execute\nexecute-app-name: {app}");
    if let Some(arg) = arg {
        line.push_str("\nexecute-app-arg: ");
        line.push_str(arg);
    }
    Ok((format!("sendmsg execute {app}"), line))
}

/// `connect`, and the channel FreeSWITCH answers with, within [`CONNECT_TIMEOUT`].
async fn hand_over(mut stream: TcpStream, peer: SocketAddr) -> Result<HandedOver, EslError> {
    // Commands are small and each waits for its answer: do not let Nagle hold them.
    let _ = stream.set_nodelay(true);
    let mut reader = FrameReader::new();
    let connect = async {
        client::write(&mut stream, "connect").await?;
        client::read_frame(&mut stream, &mut reader).await
    };
    let frame = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(frame) => frame?,
        Err(_) => {
            return Err(EslError::Handshake(format!(
                "no answer to `connect` within {CONNECT_TIMEOUT:?}"
            )))
        }
    };
    let reply = match frame {
        Frame::CommandReply(reply) if reply.is_ok() => reply,
        Frame::CommandReply(reply) => {
            return Err(EslError::Refused {
                command: "connect".into(),
                reply: reply.reply_text,
            })
        }
        other => {
            return Err(EslError::UnexpectedReply {
                command: "connect".into(),
                content_type: other.content_type().to_owned(),
            })
        }
    };
    // The channel's id is what everything else about the call refers to (and goes into
    // later commands): without a well-formed one, this is not a call pushwake can serve.
    let channel = match reply.headers.get("Unique-ID") {
        Some(id) if valid_uuid(id) => Arc::<str>::from(id),
        _ => {
            return Err(EslError::Handshake(
                "the reply to `connect` names no channel (Unique-ID)".into(),
            ))
        }
    };
    // Events never come unasked (pushwake sends no `myevents`); were they to, they
    // would be dropped with the receiver.
    let (connection, _events) = EslConnection::start(
        stream,
        reader,
        peer.to_string(),
        Liveness::Replies(REPLY_TIMEOUT),
    );
    Ok(HandedOver {
        channel: reply.headers,
        socket: CallSocket {
            channel,
            connection,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendmsg_is_the_captured_command_and_refuses_line_breaks() {
        let (name, line) = sendmsg_execute("set", Some("pushwake_status=TIMEOUT")).unwrap();
        assert_eq!(name, "sendmsg execute set");
        assert_eq!(
            line,
            "sendmsg\ncall-command: execute\nexecute-app-name: set\nexecute-app-arg: pushwake_status=TIMEOUT"
        );
        let (_, line) = sendmsg_execute("ring_ready", None).unwrap();
        assert_eq!(
            line,
            "sendmsg\ncall-command: execute\nexecute-app-name: ring_ready"
        );
        for (app, arg) in [
            ("set", Some("a=1\n\nsendmsg")),
            ("set", Some("a=1\rb")),
            ("ring_ready\nexecute-app-name: hangup", None),
            ("", None),
            (" ", Some("x")),
        ] {
            assert!(
                matches!(sendmsg_execute(app, arg), Err(EslError::Invalid(_))),
                "{app:?} {arg:?}"
            );
        }
        // The error names the application, not the argument.
        let error = sendmsg_execute("set", Some("secret\n")).unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
