//! A local webhook server, standing in for an operator's backend: HTTP/1.1 without TLS.
//!
//! Every `POST` is checked the way the README tells operators to: the
//! `X-Pushwake-Signature` (`v1=` + lowercase hex HMAC-SHA256 with the shared secret over
//! `"<X-Pushwake-Timestamp>.<body>"`) is verified with `aws-lc-rs` (not pushwake's code),
//! the timestamp must be within 5 minutes of now and equal the body's `sent_at`, the
//! `X-Pushwake-Event` header must match the body's `event`, and the body must carry
//! `device` and a `call` object. Requests failing a check are answered 401 and recorded
//! as mistakes; good ones are recorded as events and answered 200, or as scripted per
//! device (503 n times, 410, 400, with an optional `Retry-After`). Answers can be delayed.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::push_server::{
    reply, unix_now, with_retry_after, Bound, HttpServer, Recorder, Reply, Request, Scripts,
    Transport,
};

/// How far a timestamp may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A random secret of 64 hex characters (32 random bytes), as `openssl rand -hex 32`.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One verified event.
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    /// `event` (and the `X-Pushwake-Event` header).
    pub event: String,
    /// `device`: the device token.
    pub device: String,
    /// `sent_at` (and the `X-Pushwake-Timestamp` header).
    pub sent_at: u64,
    /// `call`: the payload object.
    pub call: Value,
    /// The whole body.
    pub body: Value,
    /// The status it was answered with.
    pub answered: u16,
    /// The HTTP version of the request.
    pub version: String,
}

/// A scripted answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookReply {
    /// The status.
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

impl WebhookReply {
    /// An answer with this status and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// Verified events (whatever they were answered), and mistakes.
    recorder: Recorder<WebhookEvent, String>,
    scripts: Scripts<WebhookReply>,
}

/// The running server; stops when dropped.
pub struct WebhookServer {
    http: HttpServer,
    state: Arc<State>,
}

impl WebhookServer {
    /// Starts a server on a free loopback port, verifying signatures with `secret`.
    pub async fn start(secret: &[u8]) -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let serving = state.clone();
        let http = Bound::new(Transport::Http1)
            .await?
            .serve(move |request| handle(&serving, &key, request));
        Ok(Self { http, state })
    }

    /// The URL to configure as `webhook.url`.
    pub fn url(&self) -> String {
        format!("{}/pushwake/events", self.http.base_url())
    }

    /// Answers the next `times` events for `device` with `reply` (then 200 again).
    pub fn script(&self, device: &str, reply: WebhookReply, times: usize) {
        self.state.scripts.times(device, reply, times);
    }

    /// Holds every answer back this long.
    pub fn set_delay(&self, delay: Duration) {
        self.http.set_delay(delay);
    }

    /// Every verified event, in arrival order, whatever it was answered.
    pub fn events(&self) -> Vec<WebhookEvent> {
        self.state.recorder.received()
    }

    /// The verified events answered 2xx.
    pub fn delivered(&self) -> Vec<WebhookEvent> {
        self.events()
            .into_iter()
            .filter(|e| (200..300).contains(&e.answered))
            .collect()
    }

    /// Requests that failed a check (bad signature, stale timestamp, malformed body).
    pub fn mistakes(&self) -> Vec<String> {
        self.state.recorder.refused()
    }

    /// Requests received, counted on arrival (before any delay).
    pub fn requests(&self) -> usize {
        self.http.requests()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.http.connections()
    }

    /// Waits for the first delivered event named `event`; fails after `timeout`, listing
    /// what arrived and the mistakes.
    pub async fn wait_for_event(
        &self,
        event: &str,
        timeout: Duration,
    ) -> Result<WebhookEvent, String> {
        self.state
            .recorder
            .wait(timeout, |_| {
                self.delivered().into_iter().find(|e| e.event == event)
            })
            .await
            .ok_or_else(|| {
                format!(
                    "webhook server: no delivered {event} after {timeout:?}; events: {:?}; mistakes: {:?}",
                    self.events().iter().map(|e| (&e.event, e.answered)).collect::<Vec<_>>(),
                    self.mistakes()
                )
            })
    }

    /// Waits until `count` events (whatever their answer) have arrived in all.
    pub async fn wait_for_events(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<WebhookEvent>, String> {
        self.state
            .recorder
            .wait_received(count, timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "webhook server: {} event(s) after {timeout:?}, wanted {count}; mistakes: {:?}",
                    self.events().len(),
                    self.mistakes()
                )
            })
    }
}

/// Checks a request as an operator's backend should; returns the event, or what is wrong.
pub fn verify(
    key: &hmac::Key,
    content_type: Option<&str>,
    event_header: Option<&str>,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(String, String, u64, Value, Value), String> {
    if content_type != Some("application/json") {
        return Err(format!("Content-Type is {content_type:?}"));
    }
    let timestamp_text = timestamp_header.ok_or("no X-Pushwake-Timestamp")?;
    let timestamp: u64 = timestamp_text
        .parse()
        .map_err(|_| format!("X-Pushwake-Timestamp {timestamp_text:?} is not a number"))?;
    if now.abs_diff(timestamp) > MAX_SKEW.as_secs() {
        return Err(format!(
            "timestamp {timestamp} is {}s from now",
            now.abs_diff(timestamp)
        ));
    }
    let signature = signature_header.ok_or("no X-Pushwake-Signature")?;
    let hex = signature
        .strip_prefix("v1=")
        .ok_or("the signature does not start with v1=")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("the signature is not 64 lowercase hex digits".into());
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut signed = format!("{timestamp_text}.").into_bytes();
    signed.extend_from_slice(body);
    hmac::verify(key, &signed, &tag).map_err(|_| "the signature does not verify".to_owned())?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let event = value["event"].as_str().ok_or("no event")?.to_owned();
    if !matches!(event.as_str(), "call.push_wakeup" | "call.cancelled") {
        return Err(format!("unknown event {event}"));
    }
    if event_header != Some(event.as_str()) {
        return Err(format!("X-Pushwake-Event {event_header:?} is not {event}"));
    }
    let device = value["device"].as_str().ok_or("no device")?.to_owned();
    if value["sent_at"].as_u64() != Some(timestamp) {
        return Err("sent_at is not the timestamp".into());
    }
    let call = value["call"].clone();
    if !call.is_object() || call["call_id"].as_str().is_none() {
        return Err("call is not a payload object".into());
    }
    let wanted_type = if event == "call.cancelled" {
        "call_cancelled"
    } else {
        "incoming_call"
    };
    if call["type"] != wanted_type {
        return Err(format!("call.type is {} for {event}", call["type"]));
    }
    Ok((event, device, timestamp, call, value))
}

fn handle(state: &State, key: &hmac::Key, request: Request) -> Reply {
    if request.method != hyper::Method::POST {
        state.recorder.refuse(format!("{} request", request.method));
        return reply(405, "");
    }
    let checked = verify(
        key,
        request.header("content-type"),
        request.header("x-pushwake-event"),
        request.header("x-pushwake-timestamp"),
        request.header("x-pushwake-signature"),
        &request.body,
        unix_now(),
    );
    match checked {
        Err(mistake) => {
            state.recorder.refuse(mistake);
            reply(401, "{\"error\":\"bad signature\"}")
        }
        Ok((event, device, sent_at, call, value)) => {
            let scripted = state
                .scripts
                .next(&device)
                .unwrap_or(WebhookReply::status(200));
            state.recorder.receive(WebhookEvent {
                event,
                device,
                sent_at,
                call,
                body: value,
                answered: scripted.status,
                version: format!("{:?}", request.version),
            });
            with_retry_after(reply(scripted.status, ""), scripted.retry_after)
        }
    }
}
