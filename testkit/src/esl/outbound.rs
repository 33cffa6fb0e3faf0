//! FreeSWITCH dialling out: what its `socket <address> async full` application does for
//! each call, played against pushwake's listener ([`OutboundCall::connect_to`]). It
//! writes the bytes a real FreeSWITCH 1.11.1 wrote (`outbound-socket.log`; the tests of
//! this module replay that capture against it and compare byte for byte), with the
//! call's own `Unique-ID` and `variable_pushwake_extension` in place of the captured ones
//! ([`Channel`]):
//!
//! - `connect` is answered with the captured `command/reply` carrying the whole channel
//!   (`Event-Name: CHANNEL_DATA`, …), or as the test chose ([`OnConnect`]: silence, a
//!   close, garbage);
//! - `myevents` is `+OK Events Enabled`, and from then on the `sendmsg` executes the
//!   capture holds are followed by its `CHANNEL_EXECUTE` / `CHANNEL_EXECUTE_COMPLETE`
//!   events;
//! - `sendmsg` is `+OK` (the application and its argument are recorded,
//!   [`OutboundCall::executed`]);
//! - `exit` is `+OK bye`, the disconnect notice, and the socket closed — the call goes on
//!   with the dialplan;
//! - any other command is `-ERR command not found`.
//!
//! At any time the test can hang the caller up ([`OutboundCall::hang_up`]: the disconnect
//! notice and a close, as FreeSWITCH does when the channel goes down), close the socket
//! without a word or reset it, and hold the replies back (a FreeSWITCH that reads but does
//! not answer). Everything received is recorded, and waits are woken by what they wait
//! for, not by polling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::capture::{self, Direction};
use super::{captured, command_reply, find, url_encode, wait_for};

/// The capture this module speaks.
pub const CAPTURE: &str = "outbound-socket.log";

/// The `Unique-ID` of the captured call.
pub const CAPTURED_UNIQUE_ID: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";

/// The `variable_pushwake_extension` of the captured call.
pub const CAPTURED_EXTENSION: &str = "103";

/// The channel a call hands over: the captured one with this `Unique-ID` (wherever the
/// captured one stands: `Unique-ID`, `Channel-Call-UUID`, `variable_uuid`, the
/// disconnect notice's `Controlled-Session-UUID`, …) and this
/// `variable_pushwake_extension`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// The channel's `Unique-ID`.
    pub unique_id: String,
    /// Its `variable_pushwake_extension` (written URL-encoded, as FreeSWITCH does).
    pub extension: String,
    /// Whether it is the "b" leg of a `loopback/<extension>/pushwake-member` (a ring
    /// group's or a queue's member, `dialplan/freeswitch/pushwake-member.xml`) rather than
    /// the captured SIP caller: named `loopback/<extension>-b`, in context
    /// `pushwake-member`, with mod_loopback's `loopback_leg: B`.
    pub loopback_member: bool,
}

impl Channel {
    /// A channel with this id and extension.
    pub fn new(unique_id: &str, extension: &str) -> Self {
        Self {
            unique_id: unique_id.to_owned(),
            extension: extension.to_owned(),
            loopback_member: false,
        }
    }

    /// The "b" leg of a loopback member with this id, for `extension` (see
    /// [`Channel::loopback_member`]).
    pub fn loopback_member(unique_id: &str, extension: &str) -> Self {
        Self {
            loopback_member: true,
            ..Self::new(unique_id, extension)
        }
    }

    /// The captured channel itself ([`CAPTURED_UNIQUE_ID`], [`CAPTURED_EXTENSION`]).
    pub fn captured() -> Self {
        Self::new(CAPTURED_UNIQUE_ID, CAPTURED_EXTENSION)
    }

    /// The reply to `connect`: the captured `command/reply` with the whole channel.
    pub fn connect_reply(&self) -> Vec<u8> {
        self.personalise(&captured(CAPTURE, "Event-Name: CHANNEL_DATA\n"))
    }

    /// What `exit` is answered with: `+OK bye` and the disconnect notice, as captured.
    pub fn exit_reply(&self) -> Vec<u8> {
        self.personalise(&captured(CAPTURE, "Reply-Text: +OK bye\n"))
    }

    /// The disconnect notice alone: what FreeSWITCH says when the caller hangs up,
    /// before it closes the socket (mod_event_socket writes the same notice then as
    /// after `exit`).
    pub fn disconnect_notice(&self) -> Vec<u8> {
        let reply = self.exit_reply();
        let bye = command_reply("+OK bye");
        assert!(reply.starts_with(&bye), "the captured exit reply changed");
        reply[bye.len()..].to_vec()
    }

    /// What the capture answered to its `sendmsg` executing `app` with `arg` once
    /// `myevents` was on (the `+OK`, then the application's events), if it has one.
    pub fn captured_execute(&self, app: &str, arg: Option<&str>) -> Option<Vec<u8>> {
        let capture = capture::load(CAPTURE);
        capture
            .blocks
            .windows(2)
            .find(|pair| {
                pair[0].direction == Direction::Sent
                    && pair[1].direction == Direction::Received
                    && Command::parse(&pair[0].bytes).execute()
                        == Some((app.to_owned(), arg.map(str::to_owned)))
            })
            .map(|pair| self.personalise(&pair[1].bytes))
    }

    /// Frames as FreeSWITCH wrote them for the captured channel, rewritten for this one:
    /// its id and extension in place of the captured ones, and each `Content-Length` made
    /// to fit what it counts again.
    pub fn personalise(&self, frames: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frames.len());
        let mut rest = frames;
        while !rest.is_empty() {
            let head_end = find(rest, b"\n\n").map_or(rest.len(), |i| i + 2);
            let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            let body_end = (head_end + length).min(rest.len());
            let body = self.rewrite(&String::from_utf8_lossy(&rest[head_end..body_end]));
            let mut head = self.rewrite(&head);
            if length != body.len() {
                head = head.replace(
                    &format!("Content-Length: {length}\n"),
                    &format!("Content-Length: {}\n", body.len()),
                );
            }
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(body.as_bytes());
            rest = &rest[body_end..];
        }
        out
    }

    fn rewrite(&self, text: &str) -> String {
        let line = |extension: &str| format!("\nvariable_pushwake_extension: {extension}\n");
        let text = text
            .replace(CAPTURED_UNIQUE_ID, &url_encode(&self.unique_id))
            .replace(
                &line(CAPTURED_EXTENSION),
                &line(&url_encode(&self.extension)),
            );
        if !self.loopback_member {
            return text;
        }
        // The names mod_loopback gives (mod_loopback.c: `loopback/%s-b`, the caller
        // profile of the "a" leg cloned, `loopback_leg` set on each leg).
        let name = url_encode(&format!("loopback/{}-b", self.extension));
        text.replace("sofia/internal/200%40127.0.0.1", &name)
            .replace(
                "Caller-Context: default\n",
                "Caller-Context: pushwake-member\n",
            )
            .replace(
                &line(&url_encode(&self.extension)),
                &format!(
                    "{}variable_loopback_leg: B\n",
                    line(&url_encode(&self.extension))
                ),
            )
    }
}

/// How the call answers `connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnConnect {
    /// With the channel ([`Channel::connect_reply`]), as FreeSWITCH does.
    Answer,
    /// Not at all, the socket left open (a FreeSWITCH that hung).
    Silent,
    /// By closing the socket without a word.
    Close,
    /// With these bytes instead (garbage, a reply without a `Unique-ID`, an `-ERR`); the
    /// socket stays open and later commands are answered as usual.
    Send(Vec<u8>),
}

/// One command the call received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Its first line (`connect`, `sendmsg`, `exit`).
    pub line: String,
    /// The header lines after it (`call-command: execute`, …).
    pub headers: Vec<String>,
    /// The bytes exactly as they came, the blank line that ended them included.
    pub bytes: Vec<u8>,
}

impl Command {
    /// A command block as read: its line, its header lines, the blank line.
    pub fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        Self {
            line: lines.next().unwrap_or_default().to_owned(),
            headers: lines.filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            bytes: bytes.to_vec(),
        }
    }

    /// The value of header `name` (its first one), as mod_event_socket reads it: the
    /// name without regard to case, the spaces after the colon skipped.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, value) = h.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim_start_matches(' '))
        })
    }

    /// The application and argument of a `sendmsg` with `call-command: execute`.
    pub fn execute(&self) -> Option<(String, Option<String>)> {
        let execute = self.line == "sendmsg" && self.header("call-command") == Some("execute");
        execute.then(|| {
            (
                self.header("execute-app-name")
                    .unwrap_or_default()
                    .to_owned(),
                self.header("execute-app-arg").map(str::to_owned),
            )
        })
    }
}

enum Order {
    HangUp,
    Close,
    Reset,
    Hold(bool),
}

#[derive(Default)]
struct State {
    received: Vec<Command>,
    open: bool,
    /// `myevents` was said.
    subscribed: bool,
}

struct Shared {
    channel: Channel,
    on_connect: OnConnect,
    state: Mutex<State>,
    changed: Notify,
}

/// One call FreeSWITCH hands over (see the module's docs). Dropping it drops the socket.
pub struct OutboundCall {
    shared: Arc<Shared>,
    orders: mpsc::UnboundedSender<Order>,
    task: JoinHandle<()>,
}

impl Drop for OutboundCall {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OutboundCall {
    /// Connects to the listener at `addr` as the `socket` application does for a call
    /// on `channel`, and serves that connection from then on, answering `connect` with
    /// the channel.
    pub async fn connect_to(addr: SocketAddr, channel: Channel) -> std::io::Result<Self> {
        Self::connect_with(addr, channel, OnConnect::Answer).await
    }

    /// The same, answering `connect` as `on_connect` says.
    pub async fn connect_with(
        addr: SocketAddr,
        channel: Channel,
        on_connect: OnConnect,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(Shared {
            channel,
            on_connect,
            state: Mutex::new(State {
                open: true,
                ..State::default()
            }),
            changed: Notify::new(),
        });
        let (orders, ordered) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(shared.clone(), stream, ordered));
        Ok(Self {
            shared,
            orders,
            task,
        })
    }

    /// The channel it hands over.
    pub fn channel(&self) -> &Channel {
        &self.shared.channel
    }

    /// Every command received so far, in order.
    pub fn received(&self) -> Vec<Command> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// Just their first lines.
    pub fn commands(&self) -> Vec<String> {
        self.received().into_iter().map(|c| c.line).collect()
    }

    /// The applications executed through `sendmsg` so far, with their arguments, in
    /// order.
    pub fn executed(&self) -> Vec<(String, Option<String>)> {
        self.received()
            .iter()
            .filter_map(Command::execute)
            .collect()
    }

    /// Waits for a received command that `check` likes (one received before included).
    pub async fn wait_command(
        &self,
        timeout: Duration,
        check: impl Fn(&Command) -> bool,
    ) -> Option<Command> {
        wait_for(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.received.iter().find(|c| check(c)).cloned()
        })
        .await
    }

    /// Holds the replies to every later command back (they are still read and recorded),
    /// or, with `false`, writes the held ones, in order, and answers as usual again.
    pub fn hold_replies(&self, hold: bool) {
        let _ = self.orders.send(Order::Hold(hold));
    }

    /// The caller hangs up: the disconnect notice, and the socket closed.
    pub fn hang_up(&self) {
        let _ = self.orders.send(Order::HangUp);
    }

    /// Closes the socket (FIN) without a word.
    pub fn close(&self) {
        let _ = self.orders.send(Order::Close);
    }

    /// Resets the socket (RST): FreeSWITCH killed, say.
    pub fn reset(&self) {
        let _ = self.orders.send(Order::Reset);
    }

    /// Whether the socket is still open (neither side has closed it).
    pub fn is_open(&self) -> bool {
        self.shared.state.lock().unwrap().open
    }

    /// Waits until the socket is closed, by either side.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        wait_for(&self.shared.state, &self.shared.changed, timeout, |state| {
            (!state.open).then_some(())
        })
        .await
        .is_some()
    }
}

/// The connection, from connect to close.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream, orders: mpsc::UnboundedReceiver<Order>) {
    run(&shared, &mut stream, orders).await;
    shared.state.lock().unwrap().open = false;
    shared.changed.notify_waiters();
}

async fn run(shared: &Shared, stream: &mut TcpStream, mut orders: mpsc::UnboundedReceiver<Order>) {
    let mut input = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut holding = false;
    let mut held: Vec<Command> = Vec::new();
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                input.extend_from_slice(&chunk[..n]);
                while let Some(end) = find(&input, b"\n\n") {
                    let command = Command::parse(&input.drain(..end + 2).collect::<Vec<u8>>());
                    shared.state.lock().unwrap().received.push(command.clone());
                    shared.changed.notify_waiters();
                    if holding {
                        held.push(command);
                    } else if !answer(shared, stream, &command).await {
                        return;
                    }
                }
            }
            order = orders.recv() => match order {
                None => return,
                Some(Order::HangUp) => {
                    let _ = write(stream, &shared.channel.disconnect_notice()).await;
                    let _ = stream.shutdown().await;
                    return;
                }
                Some(Order::Close) => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Some(Order::Reset) => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                Some(Order::Hold(hold)) => {
                    holding = hold;
                    let release = if hold { Vec::new() } else { std::mem::take(&mut held) };
                    for command in release {
                        if !answer(shared, stream, &command).await {
                            return;
                        }
                    }
                }
            },
        }
    }
}

/// Answers one command as FreeSWITCH's outbound socket does; `false`: the socket is to
/// be closed.
async fn answer(shared: &Shared, stream: &mut TcpStream, command: &Command) -> bool {
    let channel = &shared.channel;
    let lower = command.line.to_ascii_lowercase();
    let reply = if lower == "connect" {
        match &shared.on_connect {
            OnConnect::Answer => channel.connect_reply(),
            OnConnect::Silent => return true,
            OnConnect::Close => {
                let _ = stream.shutdown().await;
                return false;
            }
            OnConnect::Send(bytes) => bytes.clone(),
        }
    } else if lower.starts_with("exit") {
        let _ = write(stream, &channel.exit_reply()).await;
        let _ = stream.shutdown().await;
        return false;
    } else if lower == "myevents" {
        shared.state.lock().unwrap().subscribed = true;
        command_reply("+OK Events Enabled")
    } else if lower == "sendmsg" {
        let subscribed = shared.state.lock().unwrap().subscribed;
        let events = match command.execute() {
            Some((app, arg)) if subscribed => channel.captured_execute(&app, arg.as_deref()),
            _ => None,
        };
        events.unwrap_or_else(|| command_reply("+OK"))
    } else {
        command_reply("-ERR command not found")
    };
    write(stream, &reply).await.is_ok()
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::tests::{assert_closed, read_exactly};
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// A listener standing for pushwake's, and a call connected to it.
    async fn connected(channel: Channel, on_connect: OnConnect) -> (OutboundCall, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let call = OutboundCall::connect_with(addr, channel, on_connect)
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        (call, stream)
    }

    #[tokio::test]
    async fn the_captured_conversation_replays_byte_for_byte() {
        let capture = capture::load(CAPTURE);
        let (call, mut stream) = connected(Channel::captured(), OnConnect::Answer).await;
        for block in &capture.blocks {
            match block.direction {
                Direction::Sent => stream.write_all(&block.bytes).await.unwrap(),
                Direction::Received => {
                    let got = read_exactly(&mut stream, block.bytes.len()).await;
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        block.text(),
                        "the block at {}",
                        block.time
                    );
                }
            }
        }
        assert_closed(&mut stream).await;
        assert!(call.wait_closed(WAIT).await);
        let sent: Vec<Vec<u8>> = capture.sent().map(|b| b.bytes.clone()).collect();
        let received: Vec<Vec<u8>> = call.received().into_iter().map(|c| c.bytes).collect();
        assert_eq!(received, sent);
        assert_eq!(
            call.executed(),
            [
                ("ring_ready".to_owned(), None),
                ("set".to_owned(), Some("pushwake_status=TIMEOUT".to_owned()))
            ]
        );
        assert_eq!(
            call.commands(),
            ["connect", "myevents", "sendmsg", "sendmsg", "exit"]
        );
    }

    #[tokio::test]
    async fn another_channel_replaces_the_id_and_extension_and_keeps_lengths_right() {
        let channel = Channel::new("0d5e4c3b-1111-4222-8333-444455556666", "ext 4242");
        let reply = String::from_utf8(channel.connect_reply()).unwrap();
        assert!(!reply.contains(CAPTURED_UNIQUE_ID));
        assert!(reply.contains("\nUnique-ID: 0d5e4c3b-1111-4222-8333-444455556666\n"));
        assert!(reply.contains("\nvariable_pushwake_extension: ext%204242\n"));
        assert!(reply.contains("\nReply-Text: %2BOK%0A\n"));
        assert!(reply.ends_with("\n\n"));
        // The events' Content-Length counts the rewritten bodies.
        let events = channel.captured_execute("ring_ready", None).unwrap();
        let mut rest = &events[command_reply("+OK").len()..];
        let mut frames = 0;
        while !rest.is_empty() {
            let head_end = find(rest, b"\n\n").unwrap() + 2;
            let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
            let length: usize = head
                .strip_prefix("Content-Length: ")
                .and_then(|h| h.lines().next())
                .unwrap()
                .parse()
                .unwrap();
            let body = String::from_utf8_lossy(&rest[head_end..head_end + length]);
            assert!(body.starts_with("Event-Name: CHANNEL_"), "{body:.40}");
            assert!(body.ends_with("\n\n"), "{head}");
            assert!(body.contains("variable_pushwake_extension: ext%204242\n"));
            rest = &rest[head_end + length..];
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert!(channel.captured_execute("playback", None).is_none());
        let notice = String::from_utf8(channel.disconnect_notice()).unwrap();
        assert!(notice.starts_with("Content-Type: text/disconnect-notice\n"));
        assert!(notice.contains("Controlled-Session-UUID: 0d5e4c3b-1111-4222-8333-444455556666\n"));
    }

    #[tokio::test]
    async fn hanging_up_sends_the_notice_and_closes_and_held_replies_wait() {
        let channel = Channel::captured();
        let (call, mut stream) = connected(channel.clone(), OnConnect::Answer).await;
        stream.write_all(b"connect\n\n").await.unwrap();
        let reply = channel.connect_reply();
        assert_eq!(read_exactly(&mut stream, reply.len()).await, reply);
        call.hold_replies(true);
        stream
            .write_all(b"sendmsg\ncall-command: execute\nexecute-app-name: ring_ready\n\n")
            .await
            .unwrap();
        call.wait_command(WAIT, |c| c.line == "sendmsg")
            .await
            .unwrap();
        call.hang_up();
        // The held reply never comes: the notice, then the end.
        let notice = channel.disconnect_notice();
        assert_eq!(read_exactly(&mut stream, notice.len()).await, notice);
        assert_closed(&mut stream).await;
        assert!(call.wait_closed(WAIT).await);
        assert_eq!(call.executed(), [("ring_ready".to_owned(), None)]);
    }

    #[tokio::test]
    async fn connect_can_be_refused_in_every_way() {
        let (call, mut stream) = connected(Channel::captured(), OnConnect::Close).await;
        stream.write_all(b"connect\n\n").await.unwrap();
        assert_closed(&mut stream).await;
        assert!(call.wait_closed(WAIT).await);

        let garbage = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        let (call, mut stream) =
            connected(Channel::captured(), OnConnect::Send(garbage.clone())).await;
        stream.write_all(b"connect\n\n").await.unwrap();
        assert_eq!(read_exactly(&mut stream, garbage.len()).await, garbage);
        assert!(call.is_open());
        call.close();
        assert_closed(&mut stream).await;

        let (call, mut stream) = connected(Channel::captured(), OnConnect::Silent).await;
        stream.write_all(b"connect\n\nnoise\n\n").await.unwrap();
        // Only later commands are answered.
        let error = command_reply("-ERR command not found");
        assert_eq!(read_exactly(&mut stream, error.len()).await, error);
        assert_eq!(call.commands(), ["connect", "noise"]);
    }
}
