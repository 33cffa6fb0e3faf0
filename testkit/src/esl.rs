//! A local FreeSWITCH Event Socket (mod_event_socket, inbound mode) for the FreeSWITCH
//! adapter's tests. It writes the bytes a real FreeSWITCH 1.11.1 wrote ([`capture`]; the
//! tests of this module replay the captures against it and compare byte for byte) and
//! behaves as mod_event_socket does where the adapter can tell:
//!
//! - on accept it says `auth/request`; `auth <password>` is `+OK accepted`, a wrong
//!   password `-ERR invalid`, a disconnect notice, and the socket closed; any other
//!   command before that is `-ERR command not found`;
//! - `event plain <names…>` adds to the connection's subscription (every name after
//!   `CUSTOM` is a subclass, as FreeSWITCH reads it) and is `+OK event listener enabled
//!   plain`; events pushed by the test reach only the connections subscribed to them;
//! - `api <command>` is answered from a table (by default what the captures hold:
//!   `sofia_contact`, `show registrations`, `show channels`, `uuid_*`, `originate` and
//!   their errors; `-ERR <name> Command not found!` for the rest). An answer may be
//!   [`Answer::Hang`]: like an `api` that never returns in FreeSWITCH (which runs it on the
//!   connection's own thread), the connection then says nothing more;
//! - `bgapi <command>` is `+OK Job-UUID: …` at once, and the same table's answer comes as
//!   a `BACKGROUND_JOB` (shaped like the captured one) to connections subscribed to it —
//!   right away, or when the test releases it ([`EslServer::hold_jobs`]);
//! - `exit` is `+OK bye`, the disconnect notice, and the socket closed.
//!
//! The test can also freeze every connection (nothing read, nothing written, the socket
//! left open: a peer that died without a word), close or reset them, write in tiny
//! pieces, refuse connections as FreeSWITCH's ACL does, and read back every command it
//! received. Waits are woken by what they wait for, not by polling.
//!
//! FreeSWITCH's other direction, its `socket` application connecting to pushwake for each
//! call (outbound mode), is [`outbound`].

#![warn(missing_docs)]

pub mod capture;
pub mod outbound;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// FreeSWITCH's default event socket password, and the captures'.
pub const PASSWORD: &str = "ClueCon";

/// The first thing FreeSWITCH says on a connection.
pub const AUTH_REQUEST: &[u8] = b"Content-Type: auth/request\n\n";

/// What FreeSWITCH says before it closes a connection (`exit`, a wrong password).
pub const DISCONNECT_NOTICE: &[u8] = b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// What FreeSWITCH says to an address its `apply-inbound-acl` refuses, before closing (from
/// mod_event_socket's source; not in the captures).
pub const RUDE_REJECTION: &[u8] =
    b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n";

/// The body of `api sofia_contact 101@127.0.0.1` while 101 is registered (captured).
pub const CONTACT_101: &str = "sofia/internal/sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";

/// A `command/reply` frame with this `Reply-Text`.
pub fn command_reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

/// An `api/response` frame with this body.
pub fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The reply to `bgapi`.
pub fn bgapi_reply(job_uuid: &str) -> Vec<u8> {
    format!(
        "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job_uuid}\nJob-UUID: {job_uuid}\n\n"
    )
    .into_bytes()
}

/// A `text/event-plain` frame around an event's body (its header block and any inner
/// body), the outer `Content-Length` first as FreeSWITCH writes it.
pub fn event_frame(body: &str) -> Vec<u8> {
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A channel event named `name` with these headers (values URL-encoded, as FreeSWITCH
/// writes them), framed.
pub fn channel_event(name: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut body = format!("Event-Name: {name}\n");
    for (key, value) in headers {
        body.push_str(&format!("{key}: {}\n", url_encode(value)));
    }
    body.push('\n');
    event_frame(&body)
}

/// A `BACKGROUND_JOB` event as FreeSWITCH 1.11.1 wrote it (the captured one of
/// `api-errors.log`, with this job's UUID, command and result).
pub fn background_job(job_uuid: &str, command: &str, result: &str) -> Vec<u8> {
    let (name, arg) = match command.split_once(' ') {
        Some((name, arg)) => (name, Some(arg)),
        None => (command, None),
    };
    let mut body = String::from(
        "Event-Name: BACKGROUND_JOB\n\
         Core-UUID: a29cc34a-0666-4a2b-88de-552ed7353941\n\
         FreeSWITCH-Hostname: vm\n\
         FreeSWITCH-Switchname: vm\n\
         FreeSWITCH-IPv4: 192.0.2.2\n\
         FreeSWITCH-IPv6: fd00%3A%3A2\n\
         Event-Date-Local: 2026-12-01%2008%3A27%3A40\n\
         Event-Date-GMT: Tue,%2001%20Dec%202026%2008%3A27%3A40%20GMT\n\
         Event-Date-Timestamp: 1796113660639229\n\
         Event-Calling-File: mod_event_socket.c\n\
         Event-Calling-Function: api_exec\n\
         Event-Calling-Line-Number: 1569\n\
         Event-Sequence: 656\n",
    );
    body.push_str(&format!("Job-UUID: {job_uuid}\nJob-Command: {name}\n"));
    if let Some(arg) = arg {
        body.push_str(&format!("Job-Command-Arg: {}\n", url_encode(arg)));
    }
    body.push_str(&format!("Content-Length: {}\n\n{result}", result.len()));
    event_frame(&body)
}

/// URL-encodes a header value the way FreeSWITCH's `switch_url_encode` does: control
/// characters, non-ASCII bytes and ` "#%&+:;<=>?@[\]^`{|}` become `%XX`.
pub fn url_encode(value: &str) -> String {
    const UNSAFE: &[u8] = b" \"#%&+:;<=>?@[\\]^`{|}";
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if !(0x20..0x7f).contains(&b) || UNSAFE.contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A captured frame: the first block of capture `file` that FreeSWITCH sent and that
/// contains `needle`. Panics if there is none (a fixture that is not there).
pub fn captured(file: &str, needle: &str) -> Vec<u8> {
    capture::load(file)
        .received_with(needle)
        .unwrap_or_else(|| panic!("{file} has no frame with {needle:?}"))
        .bytes
        .clone()
}

/// The captured `sofia::register` of 101 with its RFC 8599 contact (`events.log`).
pub fn sofia_register() -> Vec<u8> {
    captured("events.log", "Event-Subclass: sofia%3A%3Aregister")
}

/// The captured `CHANNEL_PARK` of a call from 200 to 101 (`events.log`).
pub fn channel_park() -> Vec<u8> {
    captured("events.log", "Event-Name: CHANNEL_PARK")
}

/// The captured `CHANNEL_HANGUP_COMPLETE` of that call (`events.log`; `Hangup-Cause`
/// twice).
pub fn channel_hangup_complete() -> Vec<u8> {
    captured("events.log", "Event-Name: CHANNEL_HANGUP_COMPLETE")
}

/// How the server answers an `api` (or a `bgapi`'s job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This body.
    Body(String),
    /// Never: for `api`, the connection then goes silent for good (FreeSWITCH runs an
    /// `api` on the connection's thread, so nothing else is written or read until it
    /// returns); for `bgapi`, the job never ends.
    Hang,
}

impl Answer {
    /// [`Answer::Body`] of this text.
    pub fn body(text: &str) -> Self {
        Answer::Body(text.to_owned())
    }
}

/// One command the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Which connection, counted from 0 in the order they were accepted.
    pub connection: usize,
    /// The command's line (`api sofia_contact 101@127.0.0.1`), without its newline.
    pub command: String,
    /// Header lines after it, if any (`Job-UUID: …`).
    pub headers: Vec<String>,
    /// What followed the blank line, for a command with a `Content-Length`
    /// (`sendevent`'s body).
    pub body: Option<String>,
}

impl Received {
    /// The value of header `name` (`dest_proto: sip` → `sip`), if the command has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            h.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
    }
}

enum Control {
    Write(Vec<u8>),
    Freeze,
    Close,
    Reset,
}

struct Connection {
    control: mpsc::UnboundedSender<Control>,
    task: Option<JoinHandle<()>>,
    open: bool,
    authed: bool,
    /// Event names after `event plain`, upper-cased (`ALL` included).
    events: HashSet<String>,
    /// `CUSTOM` subclasses.
    subclasses: HashSet<String>,
}

impl Connection {
    fn wants(&self, name: &str, subclass: Option<&str>) -> bool {
        if self.events.contains("ALL") {
            return true;
        }
        if !self.events.contains(&name.to_ascii_uppercase()) {
            return false;
        }
        name != "CUSTOM" || subclass.is_none_or(|s| self.subclasses.contains(s))
    }
}

/// A job held back by [`EslServer::hold_jobs`].
struct HeldJob {
    uuid: String,
    connection: usize,
    command: String,
    result: String,
}

#[derive(Default)]
struct State {
    /// Whether channel commands are judged as FreeSWITCH would ([`EslServer::judge`]).
    judging: bool,
    /// Whether originated legs answer at once (their phones "pick up").
    phones_answer: bool,
    /// Channels answered or pre-answered (`uuid_answer`, `uuid_pre_answer`, an
    /// originated leg that answered).
    answered: HashSet<String>,
    standing: HashMap<String, Answer>,
    once: HashMap<String, VecDeque<Answer>>,
    held_commands: HashSet<String>,
    hold_all: bool,
    held: Vec<HeldJob>,
    job_uuids: VecDeque<String>,
    jobs: u64,
    connections: Vec<Connection>,
    received: Vec<Received>,
    piece: Option<usize>,
    reject: bool,
    /// The delivery reports to give the next `SMS::SEND_MESSAGE`s: success, and sofia's
    /// `Delivery-Result-Code`.
    reports: VecDeque<(bool, u16)>,
}

impl State {
    fn answer(&mut self, command: &str) -> Answer {
        if let Some(queue) = self.once.get_mut(command) {
            if let Some(answer) = queue.pop_front() {
                return answer;
            }
        }
        if let Some(answer) = self.standing.get(command) {
            return answer.clone();
        }
        default_answer(command)
    }

    fn next_job_uuid(&mut self) -> String {
        self.jobs += 1;
        self.job_uuids
            .pop_front()
            .unwrap_or_else(|| format!("0b5e7a1d-0000-4000-8000-{:012x}", self.jobs))
    }
}

/// What the captured FreeSWITCH answered, for commands the test did not script.
fn default_answer(command: &str) -> Answer {
    let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
    let body = match (name, arg) {
        ("sofia_contact", "101@127.0.0.1") => CONTACT_101.to_owned(),
        ("sofia_contact", _) => "error/user_not_registered".to_owned(),
        ("show", "registrations") => captured_api_body("api_after_register.log", 1),
        ("show", "channels") => captured_api_body("park-after-close.log", 2),
        ("uuid_exists", _) => "false".to_owned(),
        ("uuid_kill" | "uuid_getvar" | "uuid_pre_answer" | "uuid_answer", _) => {
            "-ERR No such channel!\n".to_owned()
        }
        ("uuid_bridge", _) => "-ERR Invalid uuid\n".to_owned(),
        ("originate", arg) if arg.starts_with("user/999@") => "-ERR SUBSCRIBER_ABSENT\n".into(),
        ("originate", _) => "-ERR USER_NOT_REGISTERED\n".to_owned(),
        _ => format!("-ERR {name} Command not found!\n"),
    };
    Answer::Body(body)
}

/// The body of the `index`-th `api/response` of a capture.
fn captured_api_body(file: &str, index: usize) -> String {
    let capture = capture::load(file);
    let block = capture
        .received()
        .filter(|b| b.bytes.starts_with(b"Content-Type: api/response\n"))
        .nth(index)
        .unwrap_or_else(|| panic!("{file} has no api/response #{index}"));
    let text = block.text();
    let (_, body) = text.split_once("\n\n").unwrap_or_default();
    body.to_owned()
}

struct Shared {
    password: String,
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn changed(&self) {
        self.changed.notify_waiters();
    }
}

/// The local event socket (see the module's docs). Dropping it closes every connection.
pub struct EslServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for EslServer {
    fn drop(&mut self) {
        self.accept.abort();
        let mut state = self.shared.state.lock().unwrap();
        for connection in &mut state.connections {
            if let Some(task) = connection.task.take() {
                task.abort();
            }
        }
    }
}

impl EslServer {
    /// A server on a free loopback port with FreeSWITCH's default password, `ClueCon`.
    pub async fn start() -> Self {
        Self::with_password(PASSWORD).await
    }

    /// A server on a free loopback port with this password.
    pub async fn with_password(password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let shared = Arc::new(Shared {
            password: password.to_owned(),
            state: Mutex::default(),
            changed: Notify::new(),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (control, controlled) = mpsc::unbounded_channel();
                let mut state = accepting.state.lock().unwrap();
                let id = state.connections.len();
                let task = tokio::spawn(serve(accepting.clone(), id, stream, controlled));
                state.connections.push(Connection {
                    control,
                    task: Some(task),
                    open: true,
                    authed: false,
                    events: HashSet::new(),
                    subclasses: HashSet::new(),
                });
                drop(state);
                accepting.changed();
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Answers `api <command>` (and `bgapi <command>`'s job) with `answer` from now on.
    /// `command` is everything after `api `, exactly.
    pub fn answer(&self, command: &str, answer: Answer) {
        let mut state = self.shared.state.lock().unwrap();
        state.standing.insert(command.to_owned(), answer);
    }

    /// From now on, answers the channel commands as FreeSWITCH 1.11.1 does and emits the
    /// events it emits (to subscribed connections), instead of the table:
    /// - `uuid_answer X` / `uuid_pre_answer X`: `+OK` (call-flow.log), X answered;
    /// - `uuid_setvar X …`: `+OK` (mod_commands' `uuid_setvar_function` writes `+OK\n`);
    /// - `uuid_bridge A B`: `+OK B`, then `CHANNEL_BRIDGE` when A was answered
    ///   (call-flow.log), or, when it never was, both legs hung up:
    ///   `DESTINATION_OUT_OF_ORDER` for A, `ORIGINATOR_CANCEL` for B
    ///   (uuid-bridge-unanswered.log);
    /// - `uuid_kill X [cause]`: `+OK`, then X's `CHANNEL_HANGUP_COMPLETE`
    ///   (park-after-close.log);
    /// - `bgapi originate {…origination_uuid=X…}… &park()`, with [`EslServer::phones_answer`]:
    ///   X's `CHANNEL_ANSWER`, then the `BACKGROUND_JOB` with `+OK X`, then X's
    ///   `CHANNEL_PARK`, in that order (call-flow.log: the job ends when the leg answers).
    pub fn judge(&self) {
        self.shared.state.lock().unwrap().judging = true;
    }

    /// Whether the phones of originated legs answer at once (with [`EslServer::judge`]).
    pub fn phones_answer(&self, answer: bool) {
        self.shared.state.lock().unwrap().phones_answer = answer;
    }

    /// Answers the next `api <command>` with `answer`, before any standing answer (several
    /// are used in the order they were given).
    pub fn answer_once(&self, command: &str, answer: Answer) {
        let mut state = self.shared.state.lock().unwrap();
        state
            .once
            .entry(command.to_owned())
            .or_default()
            .push_back(answer);
    }

    /// The UUID the next `bgapi` job gets (unless its command names one in a `Job-UUID`
    /// header, which FreeSWITCH honours).
    pub fn next_job_uuid(&self, uuid: &str) {
        let mut state = self.shared.state.lock().unwrap();
        state.job_uuids.push_back(uuid.to_owned());
    }

    /// Holds the `BACKGROUND_JOB` of every later `bgapi <command>` until
    /// [`complete_job`](Self::complete_job); `None` holds every job.
    pub fn hold_jobs(&self, command: Option<&str>) {
        let mut state = self.shared.state.lock().unwrap();
        match command {
            Some(command) => {
                state.held_commands.insert(command.to_owned());
            }
            None => state.hold_all = true,
        }
    }

    /// Sends a held job's `BACKGROUND_JOB` now (if its connection subscribed to it);
    /// whether such a job was held.
    pub fn complete_job(&self, uuid: &str) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        let Some(i) = state.held.iter().position(|j| j.uuid == uuid) else {
            return false;
        };
        let job = state.held.remove(i);
        let connection = &state.connections[job.connection];
        if connection.wants("BACKGROUND_JOB", None) {
            let frame = background_job(&job.uuid, &job.command, &job.result);
            let _ = connection.control.send(Control::Write(frame));
        }
        true
    }

    /// Waits until `count` jobs are held; their UUIDs, in the order their `bgapi`s came.
    pub async fn wait_held_jobs(&self, count: usize, timeout: Duration) -> Option<Vec<String>> {
        self.wait(timeout, |state| {
            (state.held.len() >= count).then(|| state.held.iter().map(|j| j.uuid.clone()).collect())
        })
        .await
    }

    /// Sends an event frame (a captured one, say) to every connection subscribed to its
    /// `Event-Name` (and `Event-Subclass`), as FreeSWITCH would; to how many.
    pub fn push_event(&self, frame: &[u8]) -> usize {
        broadcast(&self.shared, frame)
    }

    /// Writes these bytes, whatever they are, to every open connection; to how many.
    pub fn push_raw(&self, bytes: &[u8]) -> usize {
        self.control_all(|| Control::Write(bytes.to_vec()))
    }

    /// Every open connection goes silent and stays open: nothing more is read or written
    /// (a FreeSWITCH that hung, a cable pulled, a firewall that drops the packets). New
    /// connections are served as usual.
    pub fn freeze(&self) -> usize {
        self.control_all(|| Control::Freeze)
    }

    /// Closes every open connection (FIN), without a disconnect notice.
    pub fn close_all(&self) -> usize {
        self.control_all(|| Control::Close)
    }

    /// Resets every open connection (RST): FreeSWITCH killed, say.
    pub fn reset_all(&self) -> usize {
        self.control_all(|| Control::Reset)
    }

    fn control_all(&self, control: impl Fn() -> Control) -> usize {
        let state = self.shared.state.lock().unwrap();
        state
            .connections
            .iter()
            .filter(|c| c.open && c.control.send(control()).is_ok())
            .count()
    }

    /// From now on every write goes out in pieces of this many bytes, each on its own
    /// (`None`: whole).
    pub fn write_in_pieces(&self, piece: Option<usize>) {
        self.shared.state.lock().unwrap().piece = piece.map(|p| p.max(1));
    }

    /// Refuses new connections as FreeSWITCH's `apply-inbound-acl` does
    /// ([`RUDE_REJECTION`], then close), or serves them again.
    pub fn reject_connections(&self, reject: bool) {
        self.shared.state.lock().unwrap().reject = reject;
    }

    /// The next `SMS::SEND_MESSAGE`s get these delivery reports, in order: whether the
    /// phone took the message, and its answer's code (0: nobody registered, or no
    /// answer). A send beyond them gets none (as without mod_sms).
    pub fn report_messages(&self, reports: &[(bool, u16)]) {
        self.shared
            .state
            .lock()
            .unwrap()
            .reports
            .extend(reports.iter().copied());
    }

    /// Every command received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// Just the command lines received so far.
    pub fn commands(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.command).collect()
    }

    /// Waits for a received command that `check` likes (one received before included).
    pub async fn wait_command(
        &self,
        timeout: Duration,
        check: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        self.wait(timeout, |state| {
            state.received.iter().find(|r| check(r)).cloned()
        })
        .await
    }

    /// Waits until `count` commands that `check` likes were received; returns them.
    pub async fn wait_commands(
        &self,
        count: usize,
        timeout: Duration,
        check: impl Fn(&Received) -> bool,
    ) -> Option<Vec<Received>> {
        self.wait(timeout, |state| {
            let found: Vec<Received> = state
                .received
                .iter()
                .filter(|r| check(r))
                .cloned()
                .collect();
            (found.len() >= count).then_some(found)
        })
        .await
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state.lock().unwrap().connections.len()
    }

    /// How many are open now.
    pub fn open_connections(&self) -> usize {
        let state = self.shared.state.lock().unwrap();
        state.connections.iter().filter(|c| c.open).count()
    }

    /// Waits until `count` connections were accepted in all.
    pub async fn wait_connections(&self, count: usize, timeout: Duration) -> bool {
        self.wait(timeout, |state| {
            (state.connections.len() >= count).then_some(())
        })
        .await
        .is_some()
    }

    /// Waits until connection `id` is closed (by either side).
    pub async fn wait_closed(&self, id: usize, timeout: Duration) -> bool {
        self.wait(timeout, |state| {
            state
                .connections
                .get(id)
                .is_some_and(|c| !c.open)
                .then_some(())
        })
        .await
        .is_some()
    }

    /// Waits until `check` finds what it wants in the server's state (checked now and
    /// after every change); `None` after `timeout`.
    async fn wait<T>(&self, timeout: Duration, check: impl Fn(&State) -> Option<T>) -> Option<T> {
        wait_for(&self.shared.state, &self.shared.changed, timeout, check).await
    }
}

/// Waits until `check` finds what it wants in `state` (checked now and after every
/// `changed`); `None` after `timeout`.
async fn wait_for<S, T>(
    state: &Mutex<S>,
    changed: &Notify,
    timeout: Duration,
    check: impl Fn(&S) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Created before the check, so a change between the two still wakes it.
        let notified = changed.notified();
        if let Some(value) = check(&state.lock().unwrap()) {
            return Some(value);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return None;
        }
    }
}

/// `Event-Name` and `Event-Subclass` of an event frame (decoded: `sofia::register`).
/// Sends an event frame to every connection subscribed to it; to how many.
fn broadcast(shared: &Shared, frame: &[u8]) -> usize {
    broadcast_except(shared, frame, None)
}

/// [`broadcast`], leaving out connection `except`.
fn broadcast_except(shared: &Shared, frame: &[u8], except: Option<usize>) -> usize {
    let (name, subclass) = event_name(frame);
    let state = shared.state.lock().unwrap();
    let mut sent = 0;
    for (id, connection) in state.connections.iter().enumerate() {
        if Some(id) != except
            && connection.open
            && connection.authed
            && connection.wants(&name, subclass.as_deref())
            && connection
                .control
                .send(Control::Write(frame.to_vec()))
                .is_ok()
        {
            sent += 1;
        }
    }
    sent
}

fn event_name(frame: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(frame);
    let body = text.split_once("\n\n").map_or("", |(_, body)| body);
    let mut name = String::new();
    let mut subclass = None;
    for line in body.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Event-Name: ") {
            name = value.to_owned();
        } else if let Some(value) = line.strip_prefix("Event-Subclass: ") {
            subclass = Some(value.replace("%3A", ":"));
        }
    }
    (name, subclass)
}

enum Flow {
    Go,
    /// Stop reading and writing, keep the socket.
    Freeze,
    /// Close the socket.
    Close,
}

/// One connection, from accept to close.
async fn serve(
    shared: Arc<Shared>,
    id: usize,
    mut stream: TcpStream,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let reject = shared.state.lock().unwrap().reject;
    if reject {
        let _ = write(&shared, &mut stream, RUDE_REJECTION).await;
    } else if write(&shared, &mut stream, AUTH_REQUEST).await.is_ok() {
        run(&shared, id, &mut stream, &mut control).await;
    }
    let mut state = shared.state.lock().unwrap();
    state.connections[id].open = false;
    drop(state);
    shared.changed();
}

async fn run(
    shared: &Shared,
    id: usize,
    stream: &mut TcpStream,
    control: &mut mpsc::UnboundedReceiver<Control>,
) {
    let mut input = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut frozen = false;
    loop {
        tokio::select! {
            read = stream.read(&mut chunk), if !frozen => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                input.extend_from_slice(&chunk[..n]);
                while let Some(end) = find(&input, b"\n\n") {
                    // A command with a Content-Length (sendevent) has its body after the
                    // blank line, as mod_event_socket reads it.
                    let whole = end + 2 + body_length(&input[..end]);
                    if input.len() < whole {
                        break;
                    }
                    let block: Vec<u8> = input.drain(..whole).collect();
                    match command(shared, id, stream, &block).await {
                        Flow::Go => {}
                        Flow::Freeze => {
                            frozen = true;
                            break;
                        }
                        Flow::Close => {
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                }
            }
            order = control.recv() => match order {
                None => return,
                Some(Control::Write(bytes)) => {
                    if !frozen && write(shared, stream, &bytes).await.is_err() {
                        return;
                    }
                }
                Some(Control::Freeze) => frozen = true,
                Some(Control::Close) => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Some(Control::Reset) => {
                    let _ = stream.set_zero_linger();
                    return;
                }
            },
        }
    }
}

/// The `Content-Length` of a command's head, 0 without one.
fn body_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .skip(1)
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn write(shared: &Shared, stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let piece = shared.state.lock().unwrap().piece;
    match piece {
        None => stream.write_all(bytes).await?,
        Some(piece) => {
            for part in bytes.chunks(piece) {
                stream.write_all(part).await?;
                stream.flush().await?;
            }
        }
    }
    stream.flush().await
}

/// Answers one command block (its line, header lines, the blank line).
async fn command(shared: &Shared, id: usize, stream: &mut TcpStream, block: &[u8]) -> Flow {
    let text = String::from_utf8_lossy(block);
    let (head, body) = match text.split_once("\n\n") {
        Some((head, body)) if !body.is_empty() => (head, Some(body.to_owned())),
        _ => (text.as_ref(), None),
    };
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<String> = lines.filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let authed = {
        let mut state = shared.state.lock().unwrap();
        state.received.push(Received {
            connection: id,
            command: line.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        state.connections[id].authed
    };
    shared.changed();

    let lower = line.to_ascii_lowercase();
    // mod_event_socket looks at `exit` before anything else, authenticated or not.
    if lower.starts_with("exit") || lower.starts_with("...") {
        let _ = write(shared, stream, &command_reply("+OK bye")).await;
        let _ = write(shared, stream, DISCONNECT_NOTICE).await;
        return Flow::Close;
    }
    if !authed {
        let reply = if let Some(password) = line.strip_prefix("auth ") {
            if password == shared.password {
                shared.state.lock().unwrap().connections[id].authed = true;
                shared.changed();
                "+OK accepted"
            } else {
                let _ = write(shared, stream, &command_reply("-ERR invalid")).await;
                let _ = write(shared, stream, DISCONNECT_NOTICE).await;
                return Flow::Close;
            }
        } else {
            "-ERR command not found"
        };
        return reply_flow(write(shared, stream, &command_reply(reply)).await);
    }
    if let Some(command) = line.strip_prefix("api ") {
        let judged = judge_api(shared, command);
        let answer = match &judged {
            Some((body, _)) => Answer::Body(body.clone()),
            None => shared.state.lock().unwrap().answer(command),
        };
        let flow = match answer {
            Answer::Body(body) => reply_flow(write(shared, stream, &api_response(&body)).await),
            Answer::Hang => Flow::Freeze,
        };
        // What FreeSWITCH emits after its answer.
        for frame in judged.map(|(_, events)| events).unwrap_or_default() {
            broadcast(shared, &frame);
        }
        return flow;
    }
    if let Some(command) = line.strip_prefix("bgapi ") {
        return bgapi(shared, id, stream, command, &headers).await;
    }
    if lower.starts_with("sendevent") {
        return sendevent(shared, stream, &headers).await;
    }
    if lower.starts_with("event") {
        let reply = subscribe(shared, id, &line);
        shared.changed();
        return reply_flow(write(shared, stream, &command_reply(&reply)).await);
    }
    reply_flow(write(shared, stream, &command_reply("-ERR command not found")).await)
}

/// `sendevent`: `+OK <Event-UUID>`, then, for mod_sms's `SMS::SEND_MESSAGE` with a
/// report scripted ([`EslServer::report_messages`]), its `SMS::DELIVERY_REPORT`: every
/// header of the request copied (its Content-Length too, not its body: mod_sms.c,
/// `send_report`), `Status`, `Delivery-Failure` and sofia's `Delivery-Result-Code`.
async fn sendevent(shared: &Shared, stream: &mut TcpStream, headers: &[String]) -> Flow {
    let (uuid, report) = {
        let mut state = shared.state.lock().unwrap();
        state.jobs += 1;
        let uuid = format!("5e4d0000-0000-4000-8000-{:012x}", state.jobs);
        let sms = headers.iter().any(|h| {
            h.replace(' ', "")
                .eq_ignore_ascii_case("Event-Subclass:SMS::SEND_MESSAGE")
        });
        let report = if sms { state.reports.pop_front() } else { None };
        (uuid, report)
    };
    if write(shared, stream, &command_reply(&format!("+OK {uuid}")))
        .await
        .is_err()
    {
        return Flow::Close;
    }
    if let Some((success, code)) = report {
        let mut event =
            String::from("Event-Name: CUSTOM\nEvent-Subclass: SMS%3A%3ADELIVERY_REPORT\n");
        for header in headers {
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("Event-Name")
                || name.eq_ignore_ascii_case("Event-Subclass")
            {
                continue;
            }
            event.push_str(&format!("{name}: {}\n", url_encode(value.trim())));
        }
        event.push_str(&format!(
            "Event-UUID: {uuid}\nDelivery-Result-Code: {code}\n"
        ));
        event.push_str(&format!("Delivery-Failure: {}\n", !success));
        event.push_str(&format!(
            "Status: {}\n\n",
            if success { "Success" } else { "Failure" }
        ));
        broadcast(shared, &event_frame(&event));
    }
    Flow::Go
}

/// A `MESSAGE` event as sofia fires it for a SIP MESSAGE to `to_user` (sofia_presence.c,
/// `sofia_presence_handle_sip_i_message`; the header names are the source's, no
/// capture), from `from_full`, with `body`.
pub fn message_event(to_user: &str, from_full: &str, content_type: &str, body: &str) -> Vec<u8> {
    let from = from_full
        .split_once("sip:")
        .and_then(|(_, rest)| rest.split(['>', ';']).next())
        .unwrap_or_default();
    let mut event = String::from("Event-Name: MESSAGE\n");
    for (name, value) in [
        ("login", "sip:mod_sofia@127.0.0.1:5060"),
        ("proto", "sip"),
        ("to_proto", "sip"),
        ("from", from),
        ("from_user", from.split('@').next().unwrap_or_default()),
        ("from_host", "127.0.0.1"),
        ("to_user", to_user),
        ("to_host", "127.0.0.1"),
        ("from_sip_ip", "127.0.0.1"),
        ("from_sip_port", "5062"),
        ("to", &format!("{to_user}@127.0.0.1")),
        ("subject", "SIMPLE MESSAGE"),
        ("context", "public"),
        ("type", content_type),
        ("from_full", from_full),
        ("sip_profile", "internal"),
        ("dest_proto", "sip"),
        ("Nonblocking-Delivery", "true"),
    ] {
        event.push_str(&format!("{name}: {}\n", url_encode(value)));
    }
    event.push_str(&format!("Content-Length: {}\n\n{body}", body.len()));
    event_frame(&event)
}

fn reply_flow(written: std::io::Result<()>) -> Flow {
    match written {
        Ok(()) => Flow::Go,
        Err(_) => Flow::Close,
    }
}

/// `event <format> <names…>`, read as mod_event_socket reads it.
fn subscribe(shared: &Shared, id: usize, line: &str) -> String {
    let mut words = line.split(' ').skip(1).filter(|w| !w.is_empty()).peekable();
    let format = match words.peek().map(|w| w.to_ascii_lowercase()) {
        Some(f) if ["plain", "xml", "json"].contains(&f.as_str()) => {
            words.next();
            f
        }
        _ => "plain".to_owned(),
    };
    let mut state = shared.state.lock().unwrap();
    let connection = &mut state.connections[id];
    let mut keys = 0;
    let mut custom = false;
    for word in words {
        if custom {
            connection.subclasses.insert(word.to_owned());
        } else {
            keys += 1;
            let name = word.to_ascii_uppercase();
            custom = name == "CUSTOM";
            connection.events.insert(name);
        }
    }
    if keys == 0 {
        return "-ERR no keywords supplied".to_owned();
    }
    format!("+OK event listener enabled {format}")
}

/// A channel's `CHANNEL_HANGUP_COMPLETE` with this cause (the captured header names).
fn hangup_complete(channel: &str, cause: &str) -> Vec<u8> {
    channel_event(
        "CHANNEL_HANGUP_COMPLETE",
        &[
            ("Hangup-Cause", cause),
            ("Unique-ID", channel),
            ("Answer-State", "hangup"),
            ("Hangup-Cause", cause),
        ],
    )
}

/// FreeSWITCH's answer to a channel command, and the events it emits after it, when the
/// server judges ([`EslServer::judge`]); `None` for the table.
fn judge_api(shared: &Shared, command: &str) -> Option<(String, Vec<Vec<u8>>)> {
    let mut state = shared.state.lock().unwrap();
    if !state.judging {
        return None;
    }
    let words: Vec<&str> = command.split(' ').collect();
    match words.as_slice() {
        ["uuid_answer" | "uuid_pre_answer", channel] => {
            state.answered.insert((*channel).to_owned());
            Some(("+OK\n".into(), Vec::new()))
        }
        ["uuid_setvar", _, _, ..] => Some(("+OK\n".into(), Vec::new())),
        ["uuid_bridge", a, b] => {
            let events = if state.answered.contains(*a) {
                vec![channel_event(
                    "CHANNEL_BRIDGE",
                    &[
                        ("Bridge-A-Unique-ID", a),
                        ("Bridge-B-Unique-ID", b),
                        ("Unique-ID", a),
                        ("Channel-Call-State", "ACTIVE"),
                    ],
                )]
            } else {
                vec![
                    hangup_complete(a, "DESTINATION_OUT_OF_ORDER"),
                    hangup_complete(b, "ORIGINATOR_CANCEL"),
                ]
            };
            Some((format!("+OK {b}\n"), events))
        }
        ["uuid_kill", channel, rest @ ..] => {
            let cause = rest.first().copied().unwrap_or("NORMAL_CLEARING");
            Some(("+OK\n".into(), vec![hangup_complete(channel, cause)]))
        }
        _ => None,
    }
}

async fn bgapi(
    shared: &Shared,
    id: usize,
    stream: &mut TcpStream,
    command: &str,
    headers: &[String],
) -> Flow {
    let (uuid, answer, held, answering) = {
        let mut state = shared.state.lock().unwrap();
        let named = headers
            .iter()
            .find_map(|h| h.strip_prefix("Job-UUID: "))
            .map(str::to_owned);
        let uuid = named.unwrap_or_else(|| state.next_job_uuid());
        let leg = (state.judging && state.phones_answer && command.starts_with("originate "))
            .then(|| {
                command
                    .split("origination_uuid=")
                    .nth(1)
                    .and_then(|rest| rest.split([',', '}']).next())
                    .map(str::to_owned)
            })
            .flatten();
        let answer = match &leg {
            Some(leg) => {
                state.answered.insert(leg.clone());
                Answer::Body(format!("+OK {leg}\n"))
            }
            None => state.answer(command),
        };
        let held = leg.is_none() && (state.hold_all || state.held_commands.contains(command));
        (uuid, answer, held, leg)
    };
    if write(shared, stream, &bgapi_reply(&uuid)).await.is_err() {
        return Flow::Close;
    }
    if let Some(leg) = &answering {
        // The phone answers: its CHANNEL_ANSWER comes before the job's end, on this
        // connection too (written here, in order, rather than queued behind the job).
        let frame = channel_event(
            "CHANNEL_ANSWER",
            &[
                ("Unique-ID", leg),
                ("Call-Direction", "outbound"),
                ("Answer-State", "answered"),
            ],
        );
        broadcast_except(shared, &frame, Some(id));
        let wanted = shared.state.lock().unwrap().connections[id].wants("CHANNEL_ANSWER", None);
        if wanted && write(shared, stream, &frame).await.is_err() {
            return Flow::Close;
        }
    }
    let Answer::Body(result) = answer else {
        return Flow::Go;
    };
    if held {
        let mut state = shared.state.lock().unwrap();
        state.held.push(HeldJob {
            uuid,
            connection: id,
            command: command.to_owned(),
            result,
        });
        drop(state);
        shared.changed();
        return Flow::Go;
    }
    let wanted = shared.state.lock().unwrap().connections[id].wants("BACKGROUND_JOB", None);
    let flow = if wanted {
        reply_flow(write(shared, stream, &background_job(&uuid, command, &result)).await)
    } else {
        Flow::Go
    };
    if let Some(leg) = &answering {
        // `&park()`: the answered leg parks.
        broadcast(
            shared,
            &channel_event(
                "CHANNEL_PARK",
                &[("Unique-ID", leg), ("Call-Direction", "outbound")],
            ),
        );
    }
    flow
}

#[cfg(test)]
mod tests {
    use super::capture::{Capture, Direction};
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    pub(super) async fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        tokio::time::timeout(WAIT, stream.read_exact(&mut bytes))
            .await
            .expect("the server stalled")
            .expect("the server closed early");
        bytes
    }

    pub(super) async fn assert_closed(stream: &mut TcpStream) {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
            .await
            .expect("the server did not close")
            .ok();
        assert_eq!(String::from_utf8_lossy(&rest), "", "bytes after the end");
    }

    /// Plays the client's side of a capture against the server and checks that every
    /// byte the server sends is the byte FreeSWITCH sent. `api` answers (and `bgapi` job
    /// UUIDs) are scripted from the capture itself unless `defaults`; events that
    /// FreeSWITCH sent on its own are pushed when the capture has them, through the
    /// server's subscription filter; the server's own `BACKGROUND_JOB`s are compared
    /// when `own_jobs`, else jobs are held and the captured event pushed.
    async fn replay(capture: &Capture, defaults: bool, own_jobs: bool) {
        let server = EslServer::start().await;
        let blocks = &capture.blocks;
        for (i, block) in blocks.iter().enumerate() {
            if block.direction != Direction::Sent {
                continue;
            }
            let text = block.text();
            let reply = |prefix: &str| {
                blocks[i + 1..]
                    .iter()
                    .map(|b| b.text())
                    .find(|t| t.starts_with(prefix))
                    .unwrap_or_else(|| panic!("{}: no {prefix:?} after {text:?}", capture.name))
            };
            if let Some(command) = text.strip_prefix("api ") {
                if !defaults {
                    let response = reply("Content-Type: api/response\n");
                    let (_, body) = response.split_once("\n\n").unwrap();
                    server.answer_once(command.trim_end(), Answer::body(body));
                }
            }
            if let Some(command) = text.strip_prefix("bgapi ") {
                let response = reply("Content-Type: command/reply\nReply-Text: +OK Job-UUID: ");
                let uuid = response.rsplit("Job-UUID: ").next().unwrap().trim();
                server.next_job_uuid(uuid);
                if !own_jobs {
                    server.hold_jobs(Some(command.trim_end()));
                }
            }
        }

        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        let mut sent = 0;
        for block in blocks {
            match block.direction {
                Direction::Sent => {
                    stream.write_all(&block.bytes).await.unwrap();
                    sent += 1;
                }
                Direction::Received => {
                    let spontaneous = block.bytes.starts_with(b"Content-Length: ")
                        && (!own_jobs || !block.text().contains("Event-Name: BACKGROUND_JOB\n"));
                    if spontaneous {
                        // Only once the server has read everything sent before it.
                        server
                            .wait_commands(sent, WAIT, |_| true)
                            .await
                            .expect("the server did not read the commands");
                        assert_eq!(
                            server.push_event(&block.bytes),
                            1,
                            "{}: {}",
                            capture.name,
                            block.time
                        );
                    }
                    let got = read_exactly(&mut stream, block.bytes.len()).await;
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        block.text(),
                        "{}: the block at {}",
                        capture.name,
                        block.time
                    );
                }
            }
        }
        let last = capture.sent().last().unwrap().text();
        if last.starts_with("exit") || last.starts_with("auth wrong") {
            assert_closed(&mut stream).await;
        }
        assert_eq!(server.received().len(), sent);
    }

    #[tokio::test]
    async fn every_inbound_capture_replays_byte_for_byte() {
        for capture in capture::all() {
            if capture.name == "outbound-socket.log" {
                continue; // FreeSWITCH connecting out: not what this server is
            }
            replay(&capture, false, false).await;
        }
    }

    #[tokio::test]
    async fn the_default_answers_and_the_own_background_job_are_the_captured_ones() {
        replay(&capture::load("api-errors.log"), true, true).await;
        replay(&capture::load("api_after_register.log"), false, false).await;
        let server = EslServer::start().await;
        let mut state = server.shared.state.lock().unwrap();
        assert_eq!(
            state.answer("sofia_contact 101@127.0.0.1"),
            Answer::body(CONTACT_101)
        );
        assert_eq!(
            state.answer("show registrations"),
            Answer::Body(captured_api_body("api_after_register.log", 1))
        );
        assert!(
            matches!(state.answer("show channels"), Answer::Body(b) if b.ends_with("\n1 total.\n"))
        );
    }

    #[test]
    fn url_encoding_matches_the_captured_values() {
        assert_eq!(
            url_encode("{origination_caller_id_number=200}user/101@127.0.0.1 &park()"),
            "%7Borigination_caller_id_number%3D200%7Duser/101%40127.0.0.1%20%26park()"
        );
        assert_eq!(
            url_encode("Tue, 01 Dec 2026 08:27:40 GMT"),
            "Tue,%2001%20Dec%202026%2008%3A27%3A40%20GMT"
        );
    }

    #[test]
    fn event_names_are_read_from_frames() {
        assert_eq!(
            event_name(&sofia_register()),
            ("CUSTOM".to_owned(), Some("sofia::register".to_owned()))
        );
        assert_eq!(
            event_name(&channel_park()),
            ("CHANNEL_PARK".to_owned(), None)
        );
    }

    #[tokio::test]
    async fn freezing_keeps_the_socket_open_and_silent() {
        let server = EslServer::start().await;
        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        assert_eq!(
            read_exactly(&mut stream, AUTH_REQUEST.len()).await,
            AUTH_REQUEST
        );
        stream.write_all(b"auth ClueCon\n\n").await.unwrap();
        read_exactly(&mut stream, command_reply("+OK accepted").len()).await;
        assert_eq!(server.freeze(), 1);
        stream.write_all(b"api status\n\n").await.unwrap();
        let mut byte = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
        assert!(silent.is_err(), "a frozen connection answered: {silent:?}");
        assert_eq!(server.open_connections(), 1);
        // Only the auth was read: the frozen connection reads nothing.
        assert_eq!(server.commands(), ["auth ClueCon"]);
        server.close_all();
        assert!(server.wait_closed(0, WAIT).await);
    }

    #[tokio::test]
    async fn acl_rejection_and_pieces() {
        let server = EslServer::start().await;
        server.reject_connections(true);
        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        assert_eq!(
            read_exactly(&mut stream, RUDE_REJECTION.len()).await,
            RUDE_REJECTION
        );
        assert_closed(&mut stream).await;
        server.reject_connections(false);
        server.write_in_pieces(Some(1));
        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        assert_eq!(
            read_exactly(&mut stream, AUTH_REQUEST.len()).await,
            AUTH_REQUEST
        );
    }
}
