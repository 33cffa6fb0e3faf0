//! The apps' confirmation of a message (`[messages] confirmation = "app"`):
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/extensions/{ext}/messages/{message_id}/delivered` | 204: the message was kept for the extension and is removed now; 404: no such message (already confirmed, expired, or another extension's) |
//!
//! `{message_id}` is the `X-Pushwake-Message-Id` header of the MESSAGE the phone got
//! (and the `message_id` of the message push). The request carries `Authorization:
//! Bearer <token>`, a token of `[http] api_tokens_file` whose scope covers the
//! extension, like the device API's; an app's backend relays its users'
//! confirmations. 404 with a reason when confirmation by the app is off.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use pushwake_core::messages::MessageId;
use tokio::sync::oneshot;

use super::devices::PATH;
use super::{error, method_not_allowed, not_found, scoped_caller, Service};
use crate::driver::MessageConfirmation;

/// The last segment of a confirmation's path.
const DELIVERED: &str = "delivered";
/// The longest message id taken (pushwake's are UUIDs: 36).
const MAX_MESSAGE_ID_LEN: usize = 64;
/// How long a confirmation waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `path` is one of this module's (`/v1/extensions/{ext}/messages/…`).
pub fn is_messages_path(path: &str) -> bool {
    path.strip_prefix(PATH)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, rest)| rest.starts_with("messages/"))
}

/// The answer to a request under `/v1/extensions/{ext}/messages/`.
pub async fn answer<B>(service: &Service, request: Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let Some((extension, id)) = parse_path(&path) else {
        return not_found();
    };
    let (Some(confirmations), Some(tokens)) = (&service.messages, &service.api_tokens) else {
        return error(
            StatusCode::NOT_FOUND,
            None,
            "confirmation by the app is off: set [messages] confirmation = \"app\" and [http] api_tokens_file",
        );
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    if let Err(refusal) = scoped_caller(tokens, request.headers(), extension, "confirm", "messages")
    {
        return *refusal;
    }
    if id.is_empty()
        || id.len() > MAX_MESSAGE_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return error(
            StatusCode::NOT_FOUND,
            Some("message_id"),
            &format!("not a message id: 1 to {MAX_MESSAGE_ID_LEN} letters, digits or -"),
        );
    }
    let (reply, answered) = oneshot::channel();
    let confirmation = MessageConfirmation {
        extension: extension.to_owned(),
        id: MessageId(id.to_owned()),
        reply,
    };
    if confirmations.send(confirmation).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "pushwake is stopping",
        );
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answered).await {
        Ok(Ok(true)) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("a valid response"),
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            Some("message_id"),
            &format!("extension {extension} has no message {id} waiting"),
        ),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "pushwake did not answer in time",
        ),
    }
}

/// `{ext}` and `{message_id}` of `/v1/extensions/{ext}/messages/{message_id}/delivered`.
fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PATH)?;
    let (extension, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("messages/")?;
    let (id, last) = rest.split_once('/')?;
    (last == DELIVERED).then_some((extension, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_delivered_path_is_read() {
        assert_eq!(
            parse_path("/v1/extensions/101/messages/5d7d-1/delivered"),
            Some(("101", "5d7d-1"))
        );
        for path in [
            "/v1/extensions/101/messages/5d7d-1",
            "/v1/extensions/101/messages/5d7d-1/read",
            "/v1/extensions/101/messages//delivered",
            "/v1/extensions/101/devices/x",
        ] {
            assert_eq!(
                parse_path(path).filter(|(_, id)| !id.is_empty()),
                None,
                "{path}"
            );
        }
        assert!(is_messages_path("/v1/extensions/101/messages/x/delivered"));
        assert!(!is_messages_path("/v1/extensions/101/devices/x"));
    }
}
