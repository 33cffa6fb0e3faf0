//! The call status endpoint: `GET /v1/calls/{call_id}` with `Authorization: Bearer
//! <status_token>` answers the call's status from the
//! [`StatusBoard`](crate::status::StatusBoard):
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"call_id": …, "status": "ringing" \| "answered" \| "ended", "reason": …}` | the call is known and the token is its secret (`reason` only when ended) |
//! | 401 with `WWW-Authenticate: Bearer` | no `Authorization: Bearer <token>` header |
//! | 404 `{"error": "not found"}` | an unknown or forgotten call, a wrong token (the same answer, so call ids cannot be probed), any other path |
//! | 405 with `Allow: GET` | another method on a call's path |

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{bearer, method_not_allowed, not_found, reply, unauthorized};
use crate::status::SharedBoard;

/// The path prefix of a call's status.
pub const CALLS_PATH: &str = "/v1/calls/";
/// The longest call id looked up (pushwake's are 36-character UUIDs).
const MAX_CALL_ID_LEN: usize = 64;

/// The answer to one request, given the board and the time.
pub fn answer<B>(board: &SharedBoard, now: Instant, request: &Request<B>) -> Response<Full<Bytes>> {
    route(
        board,
        now,
        request.method(),
        request.uri().path(),
        request.headers(),
    )
}

fn route(
    board: &SharedBoard,
    now: Instant,
    method: &Method,
    path: &str,
    headers: &hyper::HeaderMap,
) -> Response<Full<Bytes>> {
    let Some(call) = path.strip_prefix(CALLS_PATH).filter(|id| valid_call_id(id)) else {
        return not_found();
    };
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let Some(token) = bearer(headers) else {
        return unauthorized(
            "send the push's status_token as Authorization: Bearer <status_token>",
        );
    };
    let status = board
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .lookup(now, call, token);
    match status {
        Some(status) => {
            let mut body = json!({ "call_id": call, "status": status.as_str() });
            if let Some(reason) = status.reason() {
                body["reason"] = json!(reason.as_str());
            }
            reply(StatusCode::OK, body)
        }
        None => not_found(),
    }
}

/// Call ids are UUIDs; anything that could not be one is not looked up.
fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CALL_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::EndReason;
    use crate::status::{StatusBoard, StatusSecret, StatusUpdate};
    use hyper::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
    use pushwake_core::pbx::CallId;

    const CALL: &str = "5d7d1c1e-0000-4000-8000-000000000001";

    fn request(method: Method, path: &str, authorization: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).unwrap()
    }

    use crate::http::testing::body;

    fn board_with_call() -> (SharedBoard, StatusSecret) {
        let board = StatusBoard::shared();
        let secret = crate::status::fresh_secret();
        board.lock().unwrap().apply(
            Instant::now(),
            &CallId(CALL.into()),
            StatusUpdate::Ringing {
                extension: "101".into(),
                secret: secret.clone(),
            },
        );
        (board, secret)
    }

    #[test]
    fn answers_by_status_path_method_and_token() {
        let (board, secret) = board_with_call();
        let path = format!("{CALLS_PATH}{CALL}");
        let good = format!("Bearer {}", secret.expose());
        let now = Instant::now();

        let ok = answer(&board, now, &request(Method::GET, &path, Some(&good)));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(ok.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body(&ok), json!({"call_id": CALL, "status": "ringing"}));
        // The scheme in any case, as RFC 7235 allows.
        let lower = format!("bearer {}", secret.expose());
        let ok = answer(&board, now, &request(Method::GET, &path, Some(&lower)));
        assert_eq!(ok.status(), StatusCode::OK);

        for auth in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer "),
            Some(secret.expose()),
        ] {
            let r = answer(&board, now, &request(Method::GET, &path, auth));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(
                r.headers()[hyper::header::WWW_AUTHENTICATE],
                "Bearer realm=\"pushwake\""
            );
            assert!(body(&r)["error"].is_string());
        }
        let wrong = format!("Bearer {}", crate::status::fresh_secret().expose());
        let unknown = format!("{CALLS_PATH}5d7d1c1e-0000-4000-8000-000000000002");
        let a = answer(&board, now, &request(Method::GET, &path, Some(&wrong)));
        let b = answer(&board, now, &request(Method::GET, &unknown, Some(&good)));
        for r in [&a, &b] {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(body(r), json!({"error": "not found"}));
        }
        for other in [
            "/",
            "/v1/calls/",
            "/v1/calls",
            "/v1/calls/a/b",
            "/v1/other/x",
        ] {
            let r = answer(&board, now, &request(Method::GET, other, Some(&good)));
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{other}");
        }
        for method in [Method::POST, Method::DELETE, Method::HEAD, Method::PUT] {
            let r = answer(&board, now, &request(method.clone(), &path, Some(&good)));
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(r.headers()[ALLOW], "GET");
        }

        board.lock().unwrap().apply(
            now,
            &CallId(CALL.into()),
            StatusUpdate::Ended(EndReason::Timeout),
        );
        let ended = answer(&board, now, &request(Method::GET, &path, Some(&good)));
        assert_eq!(
            body(&ended),
            json!({"call_id": CALL, "status": "ended", "reason": "timeout"})
        );
        let forgotten = now + crate::status::RETENTION;
        let r = answer(&board, forgotten, &request(Method::GET, &path, Some(&good)));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
