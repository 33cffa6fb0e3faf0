//! One application name, one WebSocket: a second client connecting with the same `app=`
//! silently takes over every event of the first (Asterisk 22 only tells the first one,
//! `ApplicationReplaced`). Two pushwake daemons on one application would steal each
//! other's calls, so a pushwake makes sure nobody serves its application before it
//! connects.
//!
//! Whether the application exists in Asterisk is no proof of a live rival: after a
//! `kill -9` it lingers while channels are in it, and after a silent network drop our own
//! old socket may linger too. So the newcomer asks: it sends a user event to the
//! application (`POST /events/user/pushwake-probe?application=APP`, a random nonce in
//! it); a live pushwake that receives a probe answers by setting the global variable
//! `PUSHWAKE_PROBE_<APP>` to that nonce; the newcomer reads the variable for
//! [`ANSWER_WAIT`] and refuses to connect when its nonce shows up. A lingering
//! application without a reader never answers. (Checked on Asterisk 22.10.1: the user
//! event reaches the application's WebSocket as `ChannelUserevent` with the variables in
//! `userevent`; a user event to an application that does not exist is a 404.)

use std::time::Duration;

use serde_json::Value;

use crate::client::{AriClient, AriError};
use crate::config::AsteriskConfig;

/// The user event's name.
pub const PROBE_EVENT: &str = "pushwake-probe";
/// How long a newcomer waits for a live holder's answer.
pub const ANSWER_WAIT: Duration = Duration::from_millis(1500);
/// How often it reads the answer variable meanwhile.
const ANSWER_POLL: Duration = Duration::from_millis(100);

/// The global variable a holder answers `app`'s probes in.
fn answer_variable(app: &str) -> String {
    format!("PUSHWAKE_PROBE_{app}")
}

/// What the probe found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Nobody answered: the application is free (or only lingers).
    Free,
    /// A live client answered: it serves the application now.
    Served,
}

/// The refusal a newcomer reports when [`probe`] finds the application served.
pub fn refusal(app: &str) -> String {
    format!(
        "another pushwake (or ARI client) is serving application {app:?} on this Asterisk: \
         it answered pushwake's probe. Two clients with one application name take each \
         other's calls; stop the other one, or give this one its own [asterisk] app"
    )
}

/// Asks whether a live pushwake serves `app` (see the module documentation). An
/// application Asterisk does not know is free at once; an error reaching Asterisk is
/// returned (the caller decides: the event pump's reconnects try again anyway).
pub async fn probe(client: &AriClient, app: &str) -> Result<Probe, AriError> {
    let nonce = nonce();
    match client
        .user_event(app, PROBE_EVENT, &[("nonce", &nonce)])
        .await
    {
        Ok(()) => {}
        Err(AriError::NotFound(_)) => return Ok(Probe::Free),
        Err(error) => return Err(error),
    }
    let variable = answer_variable(app);
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(ANSWER_POLL).await;
        if client.get_global(&variable).await? == nonce {
            return Ok(Probe::Served);
        }
    }
    Ok(Probe::Free)
}

/// Before the first connection: an error (the [`refusal`]) when a live pushwake serves
/// the application of `config`. Asterisk unreachable is no refusal: the event pump keeps
/// trying to connect, and probes again before it does.
pub async fn refuse_if_served(config: &AsteriskConfig) -> Result<(), String> {
    let client = AriClient::new(&config.url, &config.username, &config.password)
        .map_err(|e| e.to_string())?;
    match probe(&client, &config.app).await {
        Ok(Probe::Free) => Ok(()),
        Ok(Probe::Served) => Err(refusal(&config.app)),
        Err(error) => {
            tracing::debug!(%error, "cannot probe the application before connecting");
            Ok(())
        }
    }
}

/// The nonce in a probe event's `userevent` object, if it is one.
pub fn probe_nonce(eventname: &str, userevent: &Value) -> Option<String> {
    (eventname == PROBE_EVENT)
        .then(|| userevent.get("nonce")?.as_str().map(str::to_owned))
        .flatten()
}

/// Answers a probe received on `app`'s WebSocket: we serve it.
pub async fn answer(client: &AriClient, app: &str, nonce: &str) {
    match client.set_global(&answer_variable(app), nonce).await {
        Ok(()) => tracing::warn!(
            app,
            "another client probed application {app:?} before connecting; answered that pushwake serves it (a second pushwake refuses to start)"
        ),
        Err(error) => {
            tracing::warn!(app, %error, "cannot answer another client's probe of the application")
        }
    }
}

/// A random 128-bit nonce, hex. Not a secret: it only has to differ between processes
/// and attempts.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        // RandomState is seeded randomly per instance (enough for a nonce).
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ_and_probe_events_are_recognised() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let event = serde_json::json!({"nonce": a, "eventname": PROBE_EVENT});
        assert_eq!(probe_nonce(PROBE_EVENT, &event), Some(a));
        assert_eq!(probe_nonce("other", &event), None);
        assert_eq!(
            probe_nonce(PROBE_EVENT, &serde_json::json!({"eventname": PROBE_EVENT})),
            None
        );
    }

    #[test]
    fn the_refusal_names_the_application_and_what_to_do() {
        let text = refusal("pushwake");
        assert!(text.contains("\"pushwake\"") && text.contains("another pushwake"));
        assert!(text.contains("[asterisk] app"));
    }
}
