//! The Event Socket's wire format as a plain parser: bytes in, [`Frame`]s out. No I/O, so
//! every capture of a real FreeSWITCH can be replayed through it, whole or byte by byte.
//!
//! A frame is a header block — `Name: value` lines ended by a blank line — followed, when
//! the block has a `Content-Length`, by that many bytes of body. FreeSWITCH writes the
//! headers in no fixed order (an event's `Content-Length` comes before its
//! `Content-Type`, a disconnect notice's after it), so nothing here depends on the order.
//! An event (`text/event-plain`) carries as its body another header block whose values
//! are URL-encoded, possibly followed by an inner `Content-Length` and a body of its own
//! (the result of a `BACKGROUND_JOB`).
//!
//! Errors come in two kinds ([`FrameError::is_fatal`]): a frame that cannot be delimited
//! (a header line without a colon, a `Content-Length` that is not a number or too big)
//! leaves the stream out of step, and the connection has to go; an event whose body does
//! not read as an event was delimited all right, so it is skipped and the next frame is
//! read as usual.

use std::fmt;

/// Longest header block accepted (the frame's own, and an event's inner one). FreeSWITCH's
/// largest are the `CHANNEL_*` events at about 12 KiB; a megabyte is not FreeSWITCH.
pub const MAX_HEADER_BLOCK: usize = 1024 * 1024;

/// Longest body accepted. Bodies are bigger than header blocks: `show channels` on a busy
/// switch is about 600 bytes per channel, so thousands of calls run to megabytes. Beyond
/// this a `Content-Length` is a broken or hostile peer, and buffering it would only eat
/// memory.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Size limits of a [`FrameReader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest header block, in bytes.
    pub header_block: usize,
    /// Longest body, in bytes.
    pub body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_block: MAX_HEADER_BLOCK,
            body: MAX_BODY,
        }
    }
}

/// Why bytes did not make a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No blank line within the limit.
    #[error("ESL header block longer than the {limit}-byte limit")]
    HeaderBlockTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A `Content-Length` over the limit.
    #[error("ESL body of {length} bytes is over the {limit}-byte limit")]
    BodyTooLarge {
        /// The announced length.
        length: u64,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A header line without a name and a colon.
    #[error("ESL header line without `Name:`: {line:?}")]
    BadHeaderLine {
        /// The line (its first 80 characters).
        line: String,
    },
    /// A `Content-Length` that is not a number, or several that disagree.
    #[error("ESL Content-Length is not a length: {value:?}")]
    BadContentLength {
        /// The value(s) found.
        value: String,
    },
    /// A frame without `Content-Type`.
    #[error("ESL frame without a Content-Type")]
    MissingContentType,
    /// A frame of a known type without a header it must have.
    #[error("ESL {content_type} frame without {header}")]
    MissingHeader {
        /// The frame's type.
        content_type: String,
        /// The missing header.
        header: &'static str,
    },
    /// A `text/event-plain` frame whose body is not an event. Not fatal: the frame was
    /// delimited by its `Content-Length`, the next one starts where it ends.
    #[error("unreadable ESL event: {reason}")]
    BadEvent {
        /// What is wrong with it.
        reason: String,
    },
}

impl FrameError {
    /// Whether the byte stream is out of step after this error (the connection has to be
    /// closed), as opposed to one unreadable event that was skipped.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::BadEvent { .. })
    }
}

/// Headers in the order they came, repeats kept (`CHANNEL_HANGUP_COMPLETE` has
/// `Hangup-Cause` twice), values URL-decoded. Names are looked up without regard to case,
/// as FreeSWITCH itself does.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many headers (repeats counted).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// An event (`text/event-plain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its headers, decoded, in order (`Event-Name`, `Unique-ID`, every `variable_*`, …).
    pub headers: Headers,
    /// What followed its inner `Content-Length`, if it had one: a `BACKGROUND_JOB`'s
    /// result.
    pub body: Option<String>,
}

impl Event {
    /// `Event-Name` (`CHANNEL_PARK`, `BACKGROUND_JOB`, `CUSTOM`, …). The parser only makes
    /// events that have one.
    pub fn name(&self) -> &str {
        self.headers.get("Event-Name").unwrap_or_default()
    }

    /// `Event-Subclass` of a `CUSTOM` event (`sofia::register`).
    pub fn subclass(&self) -> Option<&str> {
        self.headers.get("Event-Subclass")
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// `Job-UUID` of a `BACKGROUND_JOB`.
    pub fn job_uuid(&self) -> Option<&str> {
        self.headers.get("Job-UUID")
    }

    /// `Unique-ID`: the channel a channel event is about.
    pub fn unique_id(&self) -> Option<&str> {
        self.headers.get("Unique-ID")
    }
}

/// The answer to a command (`auth`, `event`, `bgapi`, `exit`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandReply {
    /// `Reply-Text`: `+OK accepted`, `-ERR invalid`, `+OK Job-UUID: …`.
    pub reply_text: String,
    /// `Job-UUID`, in the reply to `bgapi`.
    pub job_uuid: Option<String>,
    /// Every header, decoded (the reply to an outbound socket's `connect` carries the
    /// whole channel).
    pub headers: Headers,
}

impl CommandReply {
    /// Whether FreeSWITCH said `+OK`.
    pub fn is_ok(&self) -> bool {
        self.reply_text.starts_with("+OK")
    }
}

/// One frame from FreeSWITCH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `auth/request`: the first thing FreeSWITCH says on an inbound connection.
    AuthRequest,
    /// `command/reply`.
    CommandReply(CommandReply),
    /// `api/response`: an `api` command's output. Failures are in it too (`-ERR …`),
    /// each command words them its own way.
    ApiResponse {
        /// The output, exactly (often without a final newline).
        body: String,
    },
    /// `text/event-plain` (boxed: events are large, and most of the traffic).
    Event(Box<Event>),
    /// `text/disconnect-notice`: FreeSWITCH is about to close the connection.
    DisconnectNotice {
        /// Its text (`Disconnected, goodbye.\n…`).
        body: String,
    },
    /// A frame of another type (`log/data`, `text/rude-rejection`, …).
    Other {
        /// Its `Content-Type`.
        content_type: String,
        /// Its headers.
        headers: Headers,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Frame {
    /// The frame's `Content-Type`, for messages.
    pub fn content_type(&self) -> &str {
        match self {
            Frame::AuthRequest => "auth/request",
            Frame::CommandReply(_) => "command/reply",
            Frame::ApiResponse { .. } => "api/response",
            Frame::Event(_) => "text/event-plain",
            Frame::DisconnectNotice { .. } => "text/disconnect-notice",
            Frame::Other { content_type, .. } => content_type,
        }
    }
}

/// Cuts a byte stream into frames: [`feed`](Self::feed) what was read, then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. A frame may arrive in
/// any number of pieces, and one read may hold several frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (dropped from the buffer now and then, not after
    /// every frame, so that many small frames in one read are not copied over and over).
    start: usize,
    /// How far past `start` the header block was already scanned, so that a header block
    /// arriving a byte at a time is not rescanned from its beginning each time.
    scanned: usize,
    /// A header block read, waiting for its body of this many bytes.
    waiting: Option<(Headers, usize)>,
    /// A fatal error, repeated from then on.
    failed: Option<FrameError>,
    limits: Limits,
}

impl FrameReader {
    /// A reader with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader with other limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed and not yet made into frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. After a fatal error
    /// ([`FrameError::is_fatal`]) every call returns that error again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.step();
        if let Err(error) = &result {
            if error.is_fatal() {
                self.failed = Some(error.clone());
            }
        }
        result
    }

    fn step(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.waiting.is_none() {
            let Some((block_len, end)) = self.find_header_block()? else {
                return Ok(None);
            };
            let block = &self.buf[self.start..self.start + block_len];
            let headers = parse_header_block(block)?;
            let length = content_length(&headers, self.limits.body)?;
            self.start += end;
            self.scanned = 0;
            self.waiting = Some((headers, length));
        }
        let length = match &self.waiting {
            Some((_, length)) => *length,
            None => return Ok(None),
        };
        if self.buffered() < length {
            return Ok(None);
        }
        let Some((headers, _)) = self.waiting.take() else {
            return Ok(None);
        };
        let body = self.buf[self.start..self.start + length].to_vec();
        self.start += length;
        decode(headers, body).map(Some)
    }

    /// Finds the blank line ending the header block that starts at `start`: returns the
    /// block's length (without the blank line) and where the frame's body starts, both
    /// from `start`. Blank lines before a header block are skipped, as libesl does: they
    /// carry nothing, and a peer that sends an extra newline after a frame stays in step.
    fn find_header_block(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        loop {
            let data = &self.buf[self.start..];
            let Some(newline) = data[self.scanned..].iter().position(|&b| b == b'\n') else {
                if data.len() > self.limits.header_block {
                    return Err(FrameError::HeaderBlockTooLarge {
                        limit: self.limits.header_block,
                    });
                }
                return Ok(None);
            };
            let line_end = self.scanned + newline;
            let line = trim_cr(&data[self.scanned..line_end]);
            if !line.is_empty() {
                self.scanned = line_end + 1;
                if self.scanned > self.limits.header_block {
                    return Err(FrameError::HeaderBlockTooLarge {
                        limit: self.limits.header_block,
                    });
                }
                continue;
            }
            if self.scanned == 0 {
                // A blank line before any header: skip it.
                self.start += line_end + 1;
                continue;
            }
            return Ok(Some((self.scanned, line_end + 1)));
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Name: value` lines (no blank line among them, each possibly ended by `\n`).
fn parse_header_block(block: &[u8]) -> Result<Headers, FrameError> {
    let mut headers = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = trim_cr(line);
        if line.is_empty() {
            continue;
        }
        headers.push(parse_header_line(line)?);
    }
    Ok(Headers(headers))
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), FrameError> {
    let bad = || FrameError::BadHeaderLine {
        line: String::from_utf8_lossy(line).chars().take(80).collect(),
    };
    let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let name = std::str::from_utf8(&line[..colon])
        .map_err(|_| bad())?
        .trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    // libesl skips spaces and tabs after the colon; the rest is the value.
    let mut value = &line[colon + 1..];
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    Ok((name.to_owned(), url_decode(value)))
}

/// Percent-decoding, as FreeSWITCH encodes (`%3A`, `%20`, `%25`…; `+` is a plus, not a
/// space). A `%` not followed by two hex digits is kept as it is: FreeSWITCH never writes
/// one, and a value is more use with it than the whole frame refused. Bytes that are not
/// UTF-8 become U+FFFD (a caller name in Latin-1 must not cost the call).
pub fn url_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(hi), Some(lo)) = (hex(value[i + 1]), hex(value[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The body length a header block announces (0 without `Content-Length`).
fn content_length(headers: &Headers, limit: usize) -> Result<usize, FrameError> {
    let mut values = headers.get_all("Content-Length");
    let Some(first) = values.next() else {
        return Ok(0);
    };
    if values.any(|other| other.trim() != first.trim()) {
        let all: Vec<&str> = headers.get_all("Content-Length").collect();
        return Err(FrameError::BadContentLength {
            value: all.join(", "),
        });
    }
    let text = first.trim();
    let bad = || FrameError::BadContentLength {
        value: first.chars().take(40).collect(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Digits only, so the only way to fail is being too big for a u64.
    let length: u64 = text.parse().unwrap_or(u64::MAX);
    if length > limit as u64 {
        return Err(FrameError::BodyTooLarge { length, limit });
    }
    Ok(length as usize)
}

/// Makes a frame of a header block and its body.
fn decode(headers: Headers, body: Vec<u8>) -> Result<Frame, FrameError> {
    let content_type = headers
        .get("Content-Type")
        .ok_or(FrameError::MissingContentType)?
        .trim()
        .to_owned();
    let text = |body: Vec<u8>| match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(match content_type.as_str() {
        "auth/request" => Frame::AuthRequest,
        "command/reply" => {
            let reply_text = headers
                .get("Reply-Text")
                .ok_or(FrameError::MissingHeader {
                    content_type: content_type.clone(),
                    header: "Reply-Text",
                })?
                .to_owned();
            let job_uuid = headers.get("Job-UUID").map(str::to_owned);
            Frame::CommandReply(CommandReply {
                reply_text,
                job_uuid,
                headers,
            })
        }
        "api/response" => Frame::ApiResponse { body: text(body) },
        "text/event-plain" => Frame::Event(Box::new(parse_event(&body)?)),
        "text/disconnect-notice" => Frame::DisconnectNotice { body: text(body) },
        _ => Frame::Other {
            content_type,
            headers,
            body,
        },
    })
}

/// An event's body: a header block, and after its blank line exactly as many bytes as
/// its own `Content-Length` says (none without one).
pub fn parse_event(body: &[u8]) -> Result<Event, FrameError> {
    let bad = |reason: String| FrameError::BadEvent { reason };
    // The header block ends at the first blank line, or with the body.
    let mut block_end = body.len();
    let mut rest_start = body.len();
    let mut line_start = 0;
    while line_start < body.len() {
        let line_end = body[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| line_start + i);
        if trim_cr(&body[line_start..line_end]).is_empty() {
            block_end = line_start;
            rest_start = (line_end + 1).min(body.len());
            break;
        }
        line_start = line_end + 1;
    }
    if block_end > MAX_HEADER_BLOCK {
        return Err(bad(format!(
            "header block longer than the {MAX_HEADER_BLOCK}-byte limit"
        )));
    }
    let headers = parse_header_block(&body[..block_end]).map_err(|e| bad(e.to_string()))?;
    if headers.get("Event-Name").is_none_or(str::is_empty) {
        return Err(bad("no Event-Name".to_owned()));
    }
    let rest = &body[rest_start..];
    let inner = match headers.get("Content-Length") {
        None if rest.is_empty() => None,
        None => {
            return Err(bad(format!(
                "{} bytes after the headers without a Content-Length",
                rest.len()
            )))
        }
        Some(_) => {
            let length = content_length(&headers, MAX_BODY).map_err(|e| bad(e.to_string()))?;
            // mod_sms's SMS::DELIVERY_REPORT copies every header of the message it
            // reports on, its Content-Length too, but not the body (mod_sms.c,
            // send_report): a Content-Length with nothing at all after the headers is
            // such a copy, not a body.
            if rest.is_empty() && length > 0 {
                return Ok(Event {
                    headers,
                    body: None,
                });
            }
            if rest.len() != length {
                return Err(bad(format!(
                    "inner Content-Length {length}, but {} bytes follow",
                    rest.len()
                )));
            }
            Some(match String::from_utf8(rest.to_vec()) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            })
        }
    };
    Ok(Event {
        headers,
        body: inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(reader: &mut FrameReader) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn one(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut reader = FrameReader::new();
        reader.feed(bytes);
        let frame = reader.next_frame()?.expect("a whole frame");
        assert_eq!(reader.buffered(), 0, "bytes left over");
        Ok(frame)
    }

    // From api-errors.log: a failed originate's BACKGROUND_JOB (the outer Content-Length
    // comes first, the inner one closes the event's own header block).
    const BACKGROUND_JOB: &[u8] = b"Content-Length: 613\nContent-Type: text/event-plain\n\nEvent-Name: BACKGROUND_JOB\nCore-UUID: a29cc34a-0666-4a2b-88de-552ed7353941\nFreeSWITCH-Hostname: vm\nFreeSWITCH-Switchname: vm\nFreeSWITCH-IPv4: 192.0.2.2\nFreeSWITCH-IPv6: fd00%3A%3A2\nEvent-Date-Local: 2026-12-01%2008%3A27%3A40\nEvent-Date-GMT: Tue,%2001%20Dec%202026%2008%3A27%3A40%20GMT\nEvent-Date-Timestamp: 1796113660639229\nEvent-Calling-File: mod_event_socket.c\nEvent-Calling-Function: api_exec\nEvent-Calling-Line-Number: 1569\nEvent-Sequence: 656\nJob-UUID: c19e2e80-1041-49d6-8499-d0bf650145cf\nJob-Command: originate\nJob-Command-Arg: user/102%40127.0.0.1%20%26park()\nContent-Length: 25\n\n-ERR USER_NOT_REGISTERED\n";

    #[test]
    fn command_reply_api_response_and_disconnect_notice() {
        let mut reader = FrameReader::new();
        reader.feed(b"Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK Job-UUID: c19e2e80-1041-49d6-8499-d0bf650145cf\nJob-UUID: c19e2e80-1041-49d6-8499-d0bf650145cf\n\nContent-Type: api/response\nContent-Length: 25\n\nerror/user_not_registeredContent-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n");
        let frames = all(&mut reader);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], Frame::AuthRequest);
        let Frame::CommandReply(reply) = &frames[1] else {
            panic!("{:?}", frames[1])
        };
        assert!(reply.is_ok());
        assert_eq!(
            reply.job_uuid.as_deref(),
            Some("c19e2e80-1041-49d6-8499-d0bf650145cf")
        );
        assert_eq!(
            frames[2],
            Frame::ApiResponse {
                body: "error/user_not_registered".into()
            }
        );
        assert_eq!(
            frames[3],
            Frame::DisconnectNotice {
                body: "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
                    .into()
            }
        );
    }

    #[test]
    fn a_background_job_has_its_own_body_and_decoded_headers() {
        let Frame::Event(event) = one(BACKGROUND_JOB).unwrap() else {
            panic!()
        };
        assert_eq!(event.name(), "BACKGROUND_JOB");
        assert_eq!(
            event.job_uuid(),
            Some("c19e2e80-1041-49d6-8499-d0bf650145cf")
        );
        assert_eq!(
            event.header("Job-Command-Arg"),
            Some("user/102@127.0.0.1 &park()")
        );
        assert_eq!(
            event.header("Event-Date-GMT"),
            Some("Tue, 01 Dec 2026 08:27:40 GMT")
        );
        assert_eq!(event.header("freeswitch-ipv6"), Some("fd00::2"));
        assert_eq!(event.body.as_deref(), Some("-ERR USER_NOT_REGISTERED\n"));
        // The inner Content-Length is a header of the event like any other.
        assert_eq!(event.header("Content-Length"), Some("25"));
    }

    #[test]
    fn a_delivery_report_s_copied_content_length_is_no_body() {
        // mod_sms's SMS::DELIVERY_REPORT (send_report) copies the request's headers,
        // its Content-Length among them, and not its body.
        let event = b"Event-Name: CUSTOM\nEvent-Subclass: SMS%3A%3ADELIVERY_REPORT\nStatus: Success\nContent-Length: 5\n";
        let frame = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            event.len()
        );
        let Frame::Event(report) = one(&[frame.as_bytes(), event].concat()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(report.subclass(), Some("SMS::DELIVERY_REPORT"));
        assert_eq!(report.header("Status"), Some("Success"));
        assert_eq!(report.body, None);
    }

    #[test]
    fn every_split_of_a_frame_gives_the_same_frame() {
        let whole = one(BACKGROUND_JOB).unwrap();
        for cut in 0..BACKGROUND_JOB.len() {
            let mut reader = FrameReader::new();
            reader.feed(&BACKGROUND_JOB[..cut]);
            assert_eq!(reader.next_frame().unwrap(), None, "cut at {cut}");
            reader.feed(&BACKGROUND_JOB[cut..]);
            assert_eq!(reader.next_frame().unwrap().as_ref(), Some(&whole));
            assert_eq!(reader.next_frame().unwrap(), None);
        }
        let mut reader = FrameReader::new();
        let mut frames = Vec::new();
        for byte in BACKGROUND_JOB.iter().chain(BACKGROUND_JOB) {
            reader.feed(std::slice::from_ref(byte));
            frames.extend(all(&mut reader));
        }
        assert_eq!(frames, vec![whole.clone(), whole]);
    }

    #[test]
    fn repeated_headers_are_kept_in_order() {
        let body = b"Event-Name: CHANNEL_HANGUP_COMPLETE\nHangup-Cause: NORMAL_CLEARING\nAnswer-State: hangup\nHangup-Cause: NORMAL_CLEARING\n\n";
        let event = parse_event(body).unwrap();
        assert_eq!(
            event.headers.get_all("hangup-cause").collect::<Vec<_>>(),
            ["NORMAL_CLEARING", "NORMAL_CLEARING"]
        );
        assert_eq!(
            event.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["Event-Name", "Hangup-Cause", "Answer-State", "Hangup-Cause"]
        );
        assert_eq!(event.body, None);
    }

    #[test]
    fn url_decoding_keeps_plus_and_stray_percent_signs() {
        assert_eq!(
            url_decode(b"%22%22%20%3Csip%3A101%40127.0.0.1%3A5091%3Btransport%3DUDP%3E"),
            "\"\" <sip:101@127.0.0.1:5091;transport=UDP>"
        );
        assert_eq!(url_decode(b"+OK accepted"), "+OK accepted");
        assert_eq!(url_decode(b"%2BOK%0A"), "+OK\n");
        assert_eq!(url_decode(b"100%"), "100%");
        assert_eq!(url_decode(b"100%2"), "100%2");
        assert_eq!(url_decode(b"%zz%25"), "%zz%");
        assert_eq!(url_decode(b"Jos%E9"), "Jos\u{fffd}");
    }

    #[test]
    fn blank_lines_between_frames_and_crlf_are_tolerated() {
        let mut reader = FrameReader::new();
        reader.feed(b"\n\r\nContent-Type: auth/request\r\n\r\n\nContent-Type: command/reply\nReply-Text:+OK accepted\n\n");
        let frames = all(&mut reader);
        assert_eq!(frames[0], Frame::AuthRequest);
        let Frame::CommandReply(reply) = &frames[1] else {
            panic!()
        };
        assert_eq!(reply.reply_text, "+OK accepted");
    }

    #[test]
    fn unknown_content_types_are_other_frames() {
        let frame = one(b"Content-Type: text/rude-rejection\nContent-Length: 4\n\nno!\n").unwrap();
        assert_eq!(
            frame,
            Frame::Other {
                content_type: "text/rude-rejection".into(),
                headers: [
                    ("Content-Type", "text/rude-rejection"),
                    ("Content-Length", "4")
                ]
                .into_iter()
                .collect(),
                body: b"no!\n".to_vec(),
            }
        );
    }

    #[test]
    fn malformed_frames_are_fatal_errors_that_stick() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"Content-Type: api/response\nno colon here\n\n",
                "no colon here",
            ),
            (b": no name\n\n", "no name"),
            (b"Content Type: x\n\n", "Content Type"),
            (
                b"Content-Type: api/response\nContent-Length: 12x\n\n",
                "12x",
            ),
            (b"Content-Type: api/response\nContent-Length: -1\n\n", "-1"),
            (
                b"Content-Type: api/response\nContent-Length: 3\nContent-Length: 4\n\n",
                "3, 4",
            ),
            (b"Content-Length: 0\n\n", "without a Content-Type"),
            (b"Content-Type: command/reply\n\n", "without Reply-Text"),
        ];
        for (bytes, needle) in cases {
            let mut reader = FrameReader::new();
            reader.feed(bytes);
            let error = reader.next_frame().unwrap_err();
            assert!(error.is_fatal());
            assert!(error.to_string().contains(needle), "{error} ({needle})");
            // The stream is out of step: the error stays, whatever comes next.
            reader.feed(b"Content-Type: auth/request\n\n");
            assert_eq!(reader.next_frame().unwrap_err(), error);
        }
    }

    #[test]
    fn limits_are_named_in_the_errors() {
        let limits = Limits {
            header_block: 64,
            body: 100,
        };
        let mut reader = FrameReader::with_limits(limits);
        reader.feed(&[b'x'; 65]);
        let error = reader.next_frame().unwrap_err();
        assert_eq!(error, FrameError::HeaderBlockTooLarge { limit: 64 });
        assert!(error.to_string().contains("64-byte limit"), "{error}");

        // Many short lines and no blank one.
        let mut reader = FrameReader::with_limits(limits);
        reader.feed(&b"A: b\n".repeat(20));
        assert_eq!(
            reader.next_frame().unwrap_err(),
            FrameError::HeaderBlockTooLarge { limit: 64 }
        );

        let mut reader = FrameReader::with_limits(limits);
        reader.feed(b"Content-Type: api/response\nContent-Length: 101\n\n");
        let error = reader.next_frame().unwrap_err();
        assert_eq!(
            error,
            FrameError::BodyTooLarge {
                length: 101,
                limit: 100
            }
        );
        assert!(error.to_string().contains("100-byte limit"), "{error}");

        // A length that does not even fit in 64 bits is too large, not a number error.
        let mut reader = FrameReader::new();
        reader.feed(b"Content-Type: api/response\nContent-Length: 99999999999999999999999\n\n");
        assert!(matches!(
            reader.next_frame().unwrap_err(),
            FrameError::BodyTooLarge {
                length: u64::MAX,
                limit: MAX_BODY
            }
        ));

        // The defaults: a megabyte of header block, 16 MiB of body.
        let mut reader = FrameReader::new();
        reader.feed(&vec![b'y'; MAX_HEADER_BLOCK + 1]);
        assert_eq!(
            reader.next_frame().unwrap_err().to_string(),
            "ESL header block longer than the 1048576-byte limit"
        );
    }

    #[test]
    fn a_bad_event_is_skipped_and_the_stream_goes_on() {
        let mut reader = FrameReader::new();
        let events: &[&[u8]] = &[
            b"no colon\n\n",
            b"Core-UUID: x",
            b"Event-Name: X\nContent-Length: 9\n\nshort\n",
            b"Event-Name: X\n\ntrailer",
        ];
        for body in events {
            let head = format!(
                "Content-Length: {}\nContent-Type: text/event-plain\n\n",
                body.len()
            );
            reader.feed(head.as_bytes());
            reader.feed(body);
        }
        reader.feed(b"Content-Type: auth/request\n\n");
        let mut reasons = Vec::new();
        for _ in events {
            let error = reader.next_frame().unwrap_err();
            assert!(!error.is_fatal(), "{error}");
            reasons.push(error.to_string());
        }
        assert_eq!(reader.next_frame().unwrap(), Some(Frame::AuthRequest));
        assert!(reasons[0].contains("no colon"), "{reasons:?}");
        assert!(reasons[1].contains("no Event-Name"), "{reasons:?}");
        assert!(
            reasons[2].contains("inner Content-Length 9, but 6 bytes follow"),
            "{reasons:?}"
        );
        assert!(
            reasons[3].contains("7 bytes after the headers without a Content-Length"),
            "{reasons:?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix and every byte-flip of a real frame: errors or frames, no panic.
        let mut frames = 0;
        for i in 0..BACKGROUND_JOB.len() {
            for flip in [0x00u8, b'\n', b':', b'%', 0xff] {
                let mut bytes = BACKGROUND_JOB.to_vec();
                bytes[i] = flip;
                let mut reader = FrameReader::new();
                reader.feed(&bytes);
                for _ in 0..4 {
                    match reader.next_frame() {
                        Ok(Some(_)) => frames += 1,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        assert!(frames > 0);
    }
}
