//! The ARI REST client.
//!
//! One reqwest client with a kept-alive connection pool: every REST round trip on the
//! path from a phone's REGISTER to its INVITE counts, so connections are reused and a
//! light `ping` keeps one warm (see [`AriClient::keep_warm`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::model::{Bridge, Channel};

/// Why an ARI request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AriError {
    /// 404: the channel, bridge or variable does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Asterisk answered with another error status.
    #[error("ARI {method} {path}: {status} {message}")]
    Status {
        /// Request method.
        method: String,
        /// Request path (no credentials in it).
        path: String,
        /// HTTP status.
        status: u16,
        /// Asterisk's message.
        message: String,
    },
    /// Asterisk could not be reached.
    #[error("ARI {method} {path}: {message}")]
    Transport {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The reply could not be read.
    #[error("ARI {path}: unreadable reply: {message}")]
    Decode {
        /// Request path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// A request to create and dial a channel in one round trip (`POST /channels`).
#[derive(Clone, Debug, Default)]
pub struct Originate {
    /// Dial string, e.g. `PJSIP/101/sip:101@10.0.0.5:5060;transport=udp`.
    pub endpoint: String,
    /// Application the channel enters once answered.
    pub app: String,
    /// Its arguments.
    pub app_args: Vec<String>,
    /// The id the channel gets.
    pub channel_id: String,
    /// The channel it is originated on behalf of (links the two).
    pub originator: Option<String>,
    /// Caller id presented, `"Name" <number>`.
    pub caller_id: Option<String>,
    /// Seconds to ring before giving up.
    pub timeout_secs: u64,
    /// Channel variables to set (e.g. `PJSIP_HEADER(add,X-…)`).
    pub variables: Vec<(String, String)>,
}

/// The ARI REST client.
#[derive(Clone)]
pub struct AriClient {
    http: reqwest::Client,
    /// A permit per request in flight (see [`MAX_REQUESTS_IN_FLIGHT`]), shared by the
    /// client's clones.
    in_flight: Arc<Semaphore>,
    base: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for AriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AriClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How often [`AriClient::keep_warm`] touches the connection. Asterisk closes idle HTTP
/// connections after `session_keep_alive` (15 s by default).
pub const KEEP_WARM_INTERVAL: Duration = Duration::from_secs(5);

/// The most requests one client has in flight at once; the rest wait their turn.
/// Asterisk's HTTP server takes at most `sessionlimit` connections at once (`http.conf`,
/// 100 by default, the event WebSocket among them) and closes any beyond that before
/// answering; HTTP/1.1 carries one request per connection at a time, so a call storm's
/// 200 originates at once lost a quarter of them ("connection closed before message
/// completed", `tests/asterisk_http_limit.rs`). pushwake holds two clients (calls and
/// contact listings; dials), so together they stay well under the default. Asterisk
/// works through ARI requests a few milliseconds each: more at once would only queue
/// there instead of here.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

/// How long [`AriClient::ping`] waits for Asterisk's answer (it answers within
/// milliseconds; a ping still unanswered after this means Asterisk is unreachable).
pub const PING_TIMEOUT: Duration = Duration::from_secs(4);

impl AriClient {
    /// A client for the ARI at `url` (`http://host:8088`).
    pub fn new(url: &str, username: &str, password: &str) -> Result<Self, AriError> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(12))
            // Every connection a burst opened stays for the next one (until idle).
            .pool_max_idle_per_host(MAX_REQUESTS_IN_FLIGHT)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AriError::Transport {
                method: String::new(),
                path: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            in_flight: Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            base: format!("{}/ari", url.trim_end_matches('/')),
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<bytes_body::Body, AriError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.username, Some(&self.password))
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |message: String| AriError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            message,
        };
        // Held until the answer is read: the connection is busy until then. The
        // semaphore is never closed.
        let _permit = self.in_flight.acquire().await;
        let response = request.send().await.map_err(|e| transport(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(describe(&e)))?;
        if status.is_success() {
            return Ok(bytes_body::Body(bytes.to_vec()));
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        if status == StatusCode::NOT_FOUND {
            return Err(AriError::NotFound(format!("{path}: {message}")));
        }
        Err(AriError::Status {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, AriError> {
        let body = self.call(method, path, query, body).await?;
        serde_json::from_slice(&body.0).map_err(|e| AriError::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// `GET /asterisk/ping`: cheap, and keeps a pooled connection open. Fails after
    /// [`PING_TIMEOUT`] without an answer.
    pub async fn ping(&self) -> Result<(), AriError> {
        let path = "/asterisk/ping";
        match tokio::time::timeout(PING_TIMEOUT, self.call(Method::GET, path, &[], None)).await {
            Ok(done) => done.map(|_| ()),
            Err(_) => Err(AriError::Transport {
                method: "GET".into(),
                path: path.into(),
                message: format!("no answer within {}s", PING_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Pings every [`KEEP_WARM_INTERVAL`] forever, so the dial after a REGISTER finds an
    /// open connection; each ping that fails to reach Asterisk notifies `unreachable`
    /// (the event pump then checks its WebSocket at once). Run it in its own task.
    pub async fn keep_warm(self, unreachable: Arc<Notify>) {
        let mut tick = tokio::time::interval(KEEP_WARM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.ping().await {
                tracing::debug!(%error, "ARI ping failed");
                if matches!(error, AriError::Transport { .. }) {
                    unreachable.notify_one();
                }
            }
        }
    }

    /// Ringback to the channel (`POST /channels/{id}/ring`).
    pub async fn ring(&self, channel: &str) -> Result<(), AriError> {
        self.call(
            Method::POST,
            &format!("/channels/{}/ring", seg(channel)),
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Answers the channel.
    pub async fn answer(&self, channel: &str) -> Result<(), AriError> {
        self.call(
            Method::POST,
            &format!("/channels/{}/answer", seg(channel)),
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Hangs the channel up with an ARI reason (`normal`, `answered_elsewhere`, …).
    pub async fn hangup(&self, channel: &str, reason: &str) -> Result<(), AriError> {
        self.call(
            Method::DELETE,
            &format!("/channels/{}", seg(channel)),
            &[("reason", reason)],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Sets a channel variable.
    pub async fn set_variable(
        &self,
        channel: &str,
        name: &str,
        value: &str,
    ) -> Result<(), AriError> {
        let query = [("variable", name), ("value", value)];
        self.call(
            Method::POST,
            &format!("/channels/{}/variable", seg(channel)),
            &query,
            None,
        )
        .await
        .map(|_| ())
    }

    /// Reads a channel variable or evaluates a dialplan function on the channel.
    pub async fn get_variable(&self, channel: &str, name: &str) -> Result<String, AriError> {
        let value: Value = self
            .call_json(
                Method::GET,
                &format!("/channels/{}/variable", seg(channel)),
                &[("variable", name)],
                None,
            )
            .await?;
        Ok(value
            .get("value")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned())
    }

    /// Returns the channel to the dialplan at the next priority.
    pub async fn continue_in_dialplan(&self, channel: &str) -> Result<(), AriError> {
        self.call(
            Method::POST,
            &format!("/channels/{}/continue", seg(channel)),
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Creates and dials a channel in one round trip.
    pub async fn originate(&self, o: &Originate) -> Result<Channel, AriError> {
        let args = o.app_args.join(",");
        let timeout = o.timeout_secs.to_string();
        let mut query = vec![
            ("endpoint", o.endpoint.as_str()),
            ("app", o.app.as_str()),
            ("channelId", o.channel_id.as_str()),
            ("timeout", timeout.as_str()),
        ];
        if !args.is_empty() {
            query.push(("appArgs", args.as_str()));
        }
        if let Some(originator) = &o.originator {
            query.push(("originator", originator.as_str()));
        }
        if let Some(caller_id) = &o.caller_id {
            query.push(("callerId", caller_id.as_str()));
        }
        let variables: serde_json::Map<String, Value> = o
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let body = serde_json::json!({ "variables": variables });
        self.call_json(Method::POST, "/channels", &query, Some(&body))
            .await
    }

    /// Creates a bridge with the given id.
    pub async fn create_bridge(
        &self,
        id: &str,
        kind: &str,
        name: &str,
    ) -> Result<Bridge, AriError> {
        self.call_json(
            Method::POST,
            &format!("/bridges/{}", seg(id)),
            &[("type", kind), ("name", name)],
            None,
        )
        .await
    }

    /// Adds channels to a bridge.
    pub async fn add_channels(&self, bridge: &str, channels: &[&str]) -> Result<(), AriError> {
        let list = channels.join(",");
        self.call(
            Method::POST,
            &format!("/bridges/{}/addChannel", seg(bridge)),
            &[("channel", list.as_str())],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Sets an ARI-controlled device state (`Stasis:…`; created by its first setting) to
    /// `state` (`NOT_INUSE`, `INUSE`, `RINGING`, `UNAVAILABLE`, …).
    pub async fn set_device_state(&self, name: &str, state: &str) -> Result<(), AriError> {
        self.call(
            Method::PUT,
            &format!("/deviceStates/{}", seg(name)),
            &[("deviceState", state)],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Sends a SIP MESSAGE to PJSIP endpoint `endpoint` from `from` (a URI or
    /// `"Name" <sip:…>`), with `body` and `headers` (`X-…: value`, added to the request).
    /// Needs `res_pjsip_messaging`. `Ok` once Asterisk queued it for the endpoint's
    /// contacts: **the phone's answer is never known** (Asterisk sends it without a
    /// response callback; tests/asterisk_messages.rs shows a 500 reported as `Ok`).
    /// [`AriError::NotFound`] for an endpoint without a contact.
    pub async fn send_message(
        &self,
        endpoint: &str,
        from: &str,
        body: &str,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), AriError> {
        let variables = serde_json::json!({ "variables": headers });
        self.call(
            Method::PUT,
            &format!("/endpoints/PJSIP/{}/sendMessage", seg(endpoint)),
            &[("from", from), ("body", body)],
            Some(&variables),
        )
        .await
        .map(|_| ())
    }

    /// An ARI-controlled device state's value (`NOT_INUSE`, `RINGING`, …).
    pub async fn device_state(&self, name: &str) -> Result<String, AriError> {
        let value: Value = self
            .call_json(
                Method::GET,
                &format!("/deviceStates/{}", seg(name)),
                &[],
                None,
            )
            .await?;
        Ok(value
            .get("state")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned())
    }

    /// Destroys a bridge (its channels stay).
    pub async fn destroy_bridge(&self, bridge: &str) -> Result<(), AriError> {
        self.call(
            Method::DELETE,
            &format!("/bridges/{}", seg(bridge)),
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Subscribes `app` to an event source (`endpoint:PJSIP`, `channel:<id>`, …). A
    /// subscription lasts as long as the application's WebSocket.
    pub async fn subscribe(&self, app: &str, source: &str) -> Result<(), AriError> {
        self.call(
            Method::POST,
            &format!("/applications/{}/subscription", seg(app)),
            &[("eventSource", source)],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Channel>, AriError> {
        self.call_json(Method::GET, "/channels", &[], None).await
    }

    /// Every bridge.
    pub async fn bridges(&self) -> Result<Vec<Bridge>, AriError> {
        self.call_json(Method::GET, "/bridges", &[], None).await
    }

    /// Sends the user event `name` to application `app` with these variables
    /// (`POST /events/user/{name}?application={app}`); [`AriError::NotFound`] when Asterisk
    /// has no such application.
    pub async fn user_event(
        &self,
        app: &str,
        name: &str,
        variables: &[(&str, &str)],
    ) -> Result<(), AriError> {
        let variables: serde_json::Map<String, Value> = variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let body = serde_json::json!({ "variables": variables });
        self.call(
            Method::POST,
            &format!("/events/user/{}", seg(name)),
            &[("application", app)],
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// A global variable's value (`GET /asterisk/variable`); empty when unset.
    pub async fn get_global(&self, name: &str) -> Result<String, AriError> {
        let value: Value = self
            .call_json(
                Method::GET,
                "/asterisk/variable",
                &[("variable", name)],
                None,
            )
            .await?;
        Ok(value["value"].as_str().unwrap_or_default().to_owned())
    }

    /// Sets a global variable (`POST /asterisk/variable`).
    pub async fn set_global(&self, name: &str, value: &str) -> Result<(), AriError> {
        self.call(
            Method::POST,
            "/asterisk/variable",
            &[("variable", name), ("value", value)],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Asterisk's `GET /asterisk/info` (used to check the connection and credentials).
    pub async fn info(&self) -> Result<Value, AriError> {
        self.call_json(Method::GET, "/asterisk/info", &[], None)
            .await
    }
}

/// Percent-encodes a path segment (ids are usually safe, but a caller-chosen id might not be).
fn seg(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reqwest error with its causes, without the URL (whose query may carry a contact URI).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

mod bytes_body {
    /// A successful reply's body.
    pub struct Body(pub Vec<u8>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("1700000000.12"), "1700000000.12");
        assert_eq!(seg("pwleg-abc-1"), "pwleg-abc-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
