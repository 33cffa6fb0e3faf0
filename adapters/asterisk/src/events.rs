//! ARI events and the WebSocket that carries them.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::Message;

use crate::client::AriClient;
use crate::model::{Channel, ContactInfo, Endpoint, TextMessage};

/// The ARI events pushwake acts on; every other event type parses as [`AriEvent::Other`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum AriEvent {
    /// A channel entered the application.
    StasisStart {
        /// The channel.
        channel: Channel,
        /// Arguments after the application name.
        #[serde(default)]
        args: Vec<String>,
    },
    /// A channel left the application.
    StasisEnd {
        /// The channel.
        channel: Channel,
    },
    /// A channel is being hung up (it is destroyed, or leaves the application, next).
    ChannelHangupRequest {
        /// The channel.
        channel: Channel,
        /// Q.850 cause code (absent on a soft hangup).
        #[serde(default)]
        cause: i64,
    },
    /// A channel was destroyed.
    ChannelDestroyed {
        /// The channel.
        channel: Channel,
        /// Q.850 cause code.
        #[serde(default)]
        cause: i64,
        /// Its text.
        #[serde(default)]
        cause_txt: String,
    },
    /// A channel's state changed (`Ringing`, `Up`, …).
    ChannelStateChange {
        /// The channel.
        channel: Channel,
    },
    /// Progress of a dial.
    Dial {
        /// The channel being dialled.
        peer: Channel,
        /// `RINGING`, `ANSWER`, `BUSY`, `NOANSWER`, `CANCEL`, …
        #[serde(default)]
        dialstatus: String,
    },
    /// A contact of an endpoint changed (registered, removed, …).
    ContactStatusChange {
        /// The endpoint.
        endpoint: Endpoint,
        /// The contact.
        contact_info: ContactInfo,
    },
    /// A user event sent to the application (`POST /events/user/…`): pushwake's rival
    /// probe ([`crate::rival`]).
    ChannelUserevent {
        /// The event's name.
        eventname: String,
        /// Its variables.
        #[serde(default)]
        userevent: serde_json::Value,
    },
    /// A SIP MESSAGE arrived from a subscribed endpoint (the **sender**: pushwake's
    /// `endpoint:PJSIP` subscription covers them all). Asterisk has answered the sender
    /// `202 Accepted` already; the dialplan's message context sees it too.
    TextMessageReceived {
        /// The endpoint that sent it.
        #[serde(default)]
        endpoint: Endpoint,
        /// The message.
        message: TextMessage,
    },
    /// Another WebSocket connected with this application's name and took its events.
    ApplicationReplaced,
    /// Any other event.
    #[serde(other)]
    Other,
}

impl AriEvent {
    /// Parses one WebSocket text frame. The error names the event type and what is
    /// wrong (a missing field, a wrong type, where), never a string value of the event:
    /// a contact URI carries the phone's push token.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            let kind = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                .map(|kind| kind.chars().take(MAX_TYPE_CHARS).collect::<String>())
                .unwrap_or_else(|| "(no type)".to_owned());
            format!(
                "unreadable ARI event {kind:?}: {}",
                pushwake_core::redact::without_values(&e.to_string())
            )
        })
    }
}

/// The most of an unreadable event's `type` an error quotes.
const MAX_TYPE_CHARS: usize = 40;

/// What the event pump delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFeed {
    /// The WebSocket is (re)connected: the application exists in Asterisk again.
    Connected,
    /// An event (boxed: events are large, and most of the feed's traffic).
    Event(Box<AriEvent>),
    /// The WebSocket was lost; the pump reconnects by itself.
    Disconnected,
}

/// Where and as whom to connect the event WebSocket.
#[derive(Clone)]
pub struct EventsConfig {
    /// ARI base URL (`http://host:8088`).
    pub url: String,
    /// ARI user.
    pub username: String,
    /// ARI password.
    pub password: String,
    /// Application name.
    pub app: String,
}

impl std::fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl EventsConfig {
    /// The WebSocket URL (`ws://` for `http://`, `wss://` for `https://`). It carries no
    /// credentials: they go in the `Authorization` header, so the URL can be logged.
    ///
    /// No `subscribeAll=true`: Asterisk 22.10 deadlocks its ARI (every later WebSocket
    /// connect hangs) when an app connected with it disconnects while device-state events
    /// are delivered — a daemon restart could take ARI down. The app subscribes to the
    /// event sources it needs instead ([`crate::AriClient::subscribe`]).
    pub fn websocket_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!("{base}/ari/events?app={}", self.app)
    }
}

/// First reconnect delay; doubled after each failure up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two connection attempts. Short, because while the events are
/// down `Stasis()` fails and no caller is pushed: after an outage pushwake must be back
/// within a couple of seconds of Asterisk (with a 30 s cap it once came back 10.9 s after
/// a 20 s outage). A refused connection costs Asterisk nothing.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The wait after `delay` when the next attempt fails too.
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RECONNECT_DELAY)
}
/// A WebSocket ping is sent when nothing was received for this long (Asterisk 22 answers
/// a ping with a pong at once: checked on 22.10.1)…
const PING_AFTER: Duration = Duration::from_secs(4);
/// …and the connection is given up when not even the pong came within this long. A
/// connection cut without a close (a firewall dropping packets) is so noticed within
/// `PING_AFTER + PONG_WAIT` (8 s) of the last frame received (it used to take 40 s):
/// while it goes unnoticed, no new caller is handed over to pushwake.
const PONG_WAIT: Duration = Duration::from_secs(4);

/// Keeps the application's event WebSocket connected for as long as the returned
/// receiver lives, reconnecting with capped exponential backoff forever. Logs state
/// changes (connected, lost, still failing), not every retry.
pub fn spawn_event_pump(config: EventsConfig) -> mpsc::Receiver<EventFeed> {
    spawn_event_pump_checked(config, Arc::new(Notify::new()))
}

/// Like [`spawn_event_pump`]; in addition, each time `check` is notified (the REST side
/// found Asterisk unreachable) the WebSocket is pinged at once, and given up if even
/// the pong does not come within [`PONG_WAIT`].
pub fn spawn_event_pump_checked(
    config: EventsConfig,
    check: Arc<Notify>,
) -> mpsc::Receiver<EventFeed> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(pump(config, tx, check));
    rx
}

/// How long the pump stays away after another client took the application over (or
/// while a live pushwake answers its probe), before it probes again: taking the
/// application back at once would only steal the events back and forth.
const REPLACED_WAIT: Duration = Duration::from_secs(30);

async fn pump(config: EventsConfig, tx: mpsc::Sender<EventFeed>, check: Arc<Notify>) {
    let url = config.websocket_url();
    let app = config.app.as_str();
    // For the rival probe and its answers only; without it (an unusable URL) the
    // WebSocket cannot connect either.
    let client = AriClient::new(&config.url, &config.username, &config.password).ok();
    let mut delay = FIRST_RECONNECT_DELAY;
    let mut failures = 0u32;
    // The daemon probed before it started the pump ([`crate::rival`]); every reconnect
    // probes again, so a pushwake that started while we were away keeps its calls.
    let mut reconnecting = false;
    loop {
        if reconnecting && served_by_another(client.as_ref(), app).await {
            tracing::error!(
                app,
                "{}; not reconnecting while it does (trying again in {}s)",
                crate::rival::refusal(app),
                REPLACED_WAIT.as_secs()
            );
            if wait_or_closed(&tx, REPLACED_WAIT).await {
                return;
            }
            continue;
        }
        reconnecting = true;
        match connect(&config, &url).await {
            Ok(socket) => {
                tracing::info!(%url, "ARI events connected");
                failures = 0;
                delay = FIRST_RECONNECT_DELAY;
                if tx.send(EventFeed::Connected).await.is_err() {
                    return;
                }
                let ended = read(socket, &tx, client.as_ref().map(|c| (c, app)), &check).await;
                if tx.is_closed() {
                    return;
                }
                if ended.replaced {
                    tracing::error!(app, "another client connected to Asterisk with this ARI application name and took over its events (ApplicationReplaced): calls for {app:?} no longer reach this pushwake; stop the other client, or give one of them its own application name");
                } else {
                    tracing::warn!(reason = %ended.reason, "ARI events lost; reconnecting");
                }
                if tx.send(EventFeed::Disconnected).await.is_err() {
                    return;
                }
                if ended.replaced {
                    if wait_or_closed(&tx, REPLACED_WAIT).await {
                        return;
                    }
                    continue;
                }
            }
            Err(error) => {
                failures += 1;
                // Say it once, then again only now and then, not on every retry.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%url, %error, failures, "cannot connect to ARI events; retrying");
                } else {
                    tracing::debug!(%url, %error, failures, "cannot connect to ARI events");
                }
            }
        }
        if wait_or_closed(&tx, delay).await {
            return;
        }
        delay = next_delay(delay);
    }
}

/// Sleeps `wait`; true when the receiver went away meanwhile (the pump should end).
async fn wait_or_closed(tx: &mpsc::Sender<EventFeed>, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = tx.closed() => true,
    }
}

/// Whether a live pushwake answers the probe of `app`. Unreachable Asterisk, or no answer
/// in time: no (the connection attempt that follows finds out the rest).
async fn served_by_another(client: Option<&AriClient>, app: &str) -> bool {
    let Some(client) = client else {
        return false;
    };
    let probing = crate::rival::probe(client, app);
    matches!(
        tokio::time::timeout(crate::rival::ANSWER_WAIT + Duration::from_secs(1), probing).await,
        Ok(Ok(crate::rival::Probe::Served))
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(config: &EventsConfig, url: &str) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", config.username, config.password));
    let value =
        HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|e| e.to_string())?;
    request.headers_mut().insert(AUTHORIZATION, value);
    let connecting = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// How a read of the WebSocket ended.
struct Ended {
    /// Why, for the log.
    reason: String,
    /// Another client took the application over (`ApplicationReplaced`).
    replaced: bool,
}

impl From<String> for Ended {
    fn from(reason: String) -> Self {
        Self {
            reason,
            replaced: false,
        }
    }
}

/// Reads events until the socket fails; returns why it ended. A rival's probe is
/// answered through `prober` (the client and our application name): we serve it. Each
/// time `check` is notified the socket is pinged at once (see
/// [`spawn_event_pump_checked`]).
async fn read(
    mut socket: Socket,
    tx: &mpsc::Sender<EventFeed>,
    prober: Option<(&AriClient, &str)>,
    check: &Notify,
) -> Ended {
    let mut last_heard = tokio::time::Instant::now();
    // When a ping went out unanswered: the pong is due by then + PONG_WAIT.
    let mut pinged: Option<tokio::time::Instant> = None;
    loop {
        let deadline = match pinged {
            Some(at) => at + PONG_WAIT,
            None => last_heard + PING_AFTER,
        };
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = tokio::time::sleep_until(deadline) => {
                if pinged.is_some() {
                    return format!(
                        "nothing received for {:.0}s, not even the pong to a ping",
                        last_heard.elapsed().as_secs_f64()
                    )
                    .into();
                }
                pinged = Some(tokio::time::Instant::now());
                if let Err(e) = socket.send(Message::Ping(Vec::new().into())).await {
                    return e.to_string().into();
                }
                continue;
            }
            () = check.notified(), if pinged.is_none() => {
                // The REST side cannot reach Asterisk: is this connection still alive?
                pinged = Some(tokio::time::Instant::now());
                if let Err(e) = socket.send(Message::Ping(Vec::new().into())).await {
                    return e.to_string().into();
                }
                continue;
            }
            () = tx.closed() => return "shutting down".to_owned().into(),
        };
        last_heard = tokio::time::Instant::now();
        pinged = None;
        match frame {
            None => return "connection closed".to_owned().into(),
            Some(Err(e)) => return e.to_string().into(),
            Some(Ok(Message::Text(text))) => match AriEvent::parse(text.as_str()) {
                Ok(AriEvent::Other) => {}
                Ok(AriEvent::ApplicationReplaced) => {
                    return Ended {
                        reason: "application replaced".to_owned(),
                        replaced: true,
                    }
                }
                Ok(AriEvent::ChannelUserevent {
                    eventname,
                    userevent,
                }) => {
                    let nonce = crate::rival::probe_nonce(&eventname, &userevent);
                    if let (Some(nonce), Some((client, app))) = (nonce, prober) {
                        let (client, app) = (client.clone(), app.to_owned());
                        tokio::spawn(
                            async move { crate::rival::answer(&client, &app, &nonce).await },
                        );
                    }
                }
                Ok(event) => {
                    if let AriEvent::ContactStatusChange { contact_info, .. } = &event {
                        tracing::debug!(aor = %contact_info.aor, status = %contact_info.contact_status, "contact event received");
                    }
                    if tx.send(EventFeed::Event(Box::new(event))).await.is_err() {
                        return "shutting down".to_owned().into();
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring an ARI event"),
            },
            Some(Ok(Message::Close(frame))) => {
                return format!(
                    "closed by Asterisk: {}",
                    frame.map(|f| f.reason.to_string()).unwrap_or_default()
                )
                .into();
            }
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_two_seconds_at_most() {
        let mut delay = FIRST_RECONNECT_DELAY;
        let mut waits = vec![delay];
        for _ in 0..6 {
            delay = next_delay(delay);
            waits.push(delay);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 2000, 2000, 2000]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_contact_status_change_with_rfc8599_params() {
        let text = r#"{"type":"ContactStatusChange","timestamp":"2026-11-23T10:00:00.000+0000",
            "contact_info":{"uri":"sip:101@127.0.0.1:5070;pn-provider=apns;pn-param=ABCDE12345.com.example.app.voip;pn-prid=00fc13","contact_status":"NonQualified","aor":"101","roundtrip_usec":"0"},
            "endpoint":{"technology":"PJSIP","resource":"101","state":"online","channel_ids":[]},"asterisk_id":"x","application":"pushwake"}"#;
        match AriEvent::parse(text).unwrap() {
            AriEvent::ContactStatusChange {
                endpoint,
                contact_info,
            } => {
                assert_eq!(endpoint.resource, "101");
                assert_eq!(contact_info.contact_status, "NonQualified");
                assert!(contact_info.uri.ends_with("pn-prid=00fc13"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// As the test Asterisk 22 sent it for a sipp MESSAGE from 3900 to 3901
    /// (2026-12-01, `res_pjsip_messaging` loaded, an application subscribed to
    /// `endpoint:PJSIP`), byte for byte.
    const TEXT_MESSAGE_RECEIVED: &str = r#"{"type":"TextMessageReceived","timestamp":"2026-12-01T21:05:57.460+0000","endpoint":{"technology":"PJSIP","resource":"3900","state":"offline","channel_ids":[]},"message":{"from":"\"Alice Example\" <sip:3900@127.0.0.1>","to":"pjsip:3901@127.0.0.1","body":"Hello from 3900, are you awake?","variables":{"PJSIP_RECVADDR":"127.0.0.1:21999","PJSIP_TRANSPORT":"udp","Via":"SIP/2.0/UDP 127.0.0.1:21999;received=127.0.0.1;branch=z9hG4bK-14876-1-0","From":"\"Alice Example\" <sip:3900@127.0.0.1>;tag=14876SIPpTag001","To":"<sip:3901@127.0.0.1>","Call-ID":"1-14876@127.0.0.1","CSeq":"7 MESSAGE","Max-Forwards":"70","Content-Type":"text/plain;charset=UTF-8","Content-Length":"33"}},"asterisk_id":"02:fc:00:00:00:01","application":"msgcapture"}"#;

    #[test]
    fn parses_a_text_message_as_asterisk_sends_it() {
        let AriEvent::TextMessageReceived { endpoint, message } =
            AriEvent::parse(TEXT_MESSAGE_RECEIVED).unwrap()
        else {
            panic!("not a TextMessageReceived");
        };
        assert_eq!(endpoint.resource, "3900", "the sender");
        assert_eq!(message.recipient(), Some("3901"));
        assert_eq!(message.from, "\"Alice Example\" <sip:3900@127.0.0.1>");
        assert_eq!(message.body, "Hello from 3900, are you awake?");
        assert_eq!(message.dedup_key(), Some(("1-14876@127.0.0.1", 7)));
        assert_eq!(message.content_type(), "text/plain;charset=UTF-8");
        assert_eq!(message.declared_len(), Some(33));
        let shown = format!("{message:?}");
        assert!(
            !shown.contains("awake"),
            "the body is not in Debug: {shown}"
        );
    }

    #[test]
    fn a_text_message_names_its_recipient_and_key_only_when_it_has_them() {
        let message = |to: &str, vars: &[(&str, &str)]| TextMessage {
            to: to.into(),
            variables: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..TextMessage::default()
        };
        for (to, user) in [
            ("pjsip:101@pbx.example.com", Some("101")),
            ("pjsip:101", Some("101")),
            ("sip:101@pbx;transport=udp", Some("101")),
            ("pjsip:+15551234567@pbx", Some("+15551234567")),
            ("pjsip:@pbx", None),
            ("", None),
            ("pjsip:<sip:101@pbx>", None),
        ] {
            assert_eq!(message(to, &[]).recipient(), user, "{to:?}");
        }
        assert_eq!(message("", &[]).dedup_key(), None);
        assert_eq!(
            message("", &[("Call-ID", "a"), ("CSeq", "MESSAGE 7")]).dedup_key(),
            None
        );
        assert_eq!(
            message("", &[("Call-ID", " "), ("CSeq", "7 MESSAGE")]).dedup_key(),
            None
        );
        assert_eq!(message("", &[]).content_type(), "text/plain");
    }

    #[test]
    fn unknown_events_are_other_and_broken_known_events_are_errors() {
        assert_eq!(
            AriEvent::parse(r#"{"type":"ChannelVarset","variable":"X"}"#).unwrap(),
            AriEvent::Other
        );
        let e = AriEvent::parse(r#"{"type":"StasisStart","args":[]}"#).unwrap_err();
        assert!(e.contains("StasisStart") && e.contains("channel"), "{e}");
        let e = AriEvent::parse(
            r#"{"type":"ContactStatusChange","endpoint":{},"contact_info":"sip:1@h;pn-prid=5ecre7\"x"}"#,
        )
        .unwrap_err();
        assert!(e.contains("invalid type: a string, expected"), "{e}");
        assert!(!e.contains("5ecre7") && !e.contains("pn-prid"), "{e}");
        assert!(AriEvent::parse("not json").is_err());
    }

    #[test]
    fn websocket_url_follows_the_scheme_and_carries_no_secret() {
        let config = EventsConfig {
            url: "https://pbx.example:8089/".into(),
            username: "u".into(),
            password: "hunter2".into(),
            app: "pushwake".into(),
        };
        assert_eq!(
            config.websocket_url(),
            "wss://pbx.example:8089/ari/events?app=pushwake"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
