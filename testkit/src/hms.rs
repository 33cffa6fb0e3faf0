//! A local Huawei Push Kit: the OAuth2 token endpoint (client credentials, checked
//! against the app's id and secret) and `messages:send` (bearer token it issued, the app
//! id in the path, a high-urgency data message to one token, `data` a JSON string), over
//! HTTP/2 without TLS. Answers like Push Kit, with a result code in the body; replies can
//! be scripted per device token, e.g. `80300007` (token invalid).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::push_server::{
    reply, with_content_type, with_retry_after, Bound, HttpServer, Recorder, Reply, Request,
    Scripts, Transport,
};

/// Path of the token endpoint on this server.
pub const TOKEN_PATH: &str = "/oauth2/v3/token";

/// One message the server accepted.
#[derive(Clone, Debug)]
pub struct HmsMessage {
    /// The device token.
    pub token: String,
    /// `message.data`, parsed from its JSON string.
    pub data: Value,
    /// `message.android`.
    pub android: Value,
}

/// A scripted answer: HTTP status, Push Kit code, optional `Retry-After`.
#[derive(Clone, Debug)]
struct Scripted {
    status: u16,
    code: String,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct State {
    recorder: Recorder<HmsMessage, String>,
    scripts: Scripts<Scripted>,
    issued: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
    token_requests: AtomicUsize,
}

/// The running server; stops when dropped.
pub struct HmsServer {
    http: HttpServer,
    state: Arc<State>,
}

impl HmsServer {
    /// Starts a server for the app `app_id` with secret `secret`.
    pub async fn start(app_id: &str, secret: &str) -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        let serving = state.clone();
        let app = (app_id.to_owned(), secret.to_owned());
        let http = Bound::new(Transport::h2c())
            .await?
            .serve(move |request| handle(&serving, &app, request));
        Ok(Self { http, state })
    }

    /// The base URL to configure as `hms.endpoint`.
    pub fn endpoint(&self) -> String {
        self.http.base_url().to_owned()
    }

    /// The token endpoint's URL (`hms.token_url`).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.http.base_url())
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<HmsMessage> {
        self.state.recorder.received()
    }

    /// What was refused so far, and why.
    pub fn refused(&self) -> Vec<String> {
        self.state.recorder.refused()
    }

    /// Token requests so far.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// TCP connections so far.
    pub fn connections(&self) -> usize {
        self.http.connections()
    }

    /// Access tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    /// Every access token issued so far is refused from now on (401, `80200003`).
    pub fn expire_access_tokens(&self) {
        let issued = self.issued_tokens();
        self.state.revoked.lock().unwrap().extend(issued);
    }

    /// Answers pushes to `token` with this HTTP status and Push Kit code, `times` times
    /// (or always), with an optional `Retry-After`.
    pub fn script(
        &self,
        token: &str,
        status: u16,
        code: &str,
        retry_after: Option<u64>,
        times: Option<usize>,
    ) {
        let scripted = Scripted {
            status,
            code: code.to_owned(),
            retry_after,
        };
        match times {
            None => self.state.scripts.always(token, scripted),
            Some(times) => self.state.scripts.times(token, scripted, times),
        }
    }

    /// Waits until `count` messages have been accepted in all.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<HmsMessage>, String> {
        self.state
            .recorder
            .wait_received(count, timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "HMS server: {} message(s) after {timeout:?}, wanted {count}; refused: {:?}",
                    self.accepted().len(),
                    self.refused()
                )
            })
    }
}

fn hms_reply(status: u16, code: &str, msg: &str, retry_after: Option<u64>) -> Reply {
    let body = json!({ "code": code, "msg": msg, "requestId": "1795480000000000000" }).to_string();
    with_retry_after(
        with_content_type(reply(status, body), "application/json"),
        retry_after,
    )
}

fn handle(state: &State, app: &(String, String), request: Request) -> Reply {
    let authorization = request.header("authorization").unwrap_or_default();
    let body = &request.body;
    let refuse = |why: String, status: u16, code: &str| {
        state.recorder.refuse(why.clone());
        hms_reply(status, code, &why, None)
    };
    if request.path == TOKEN_PATH {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id") == Some(&app.0)
            && form.get("client_secret") == Some(&app.1);
        if !ok {
            return reply(
                400,
                r#"{"error":1101,"sub_error":20601,"error_description":"invalid client"}"#,
            );
        }
        let token = format!("hmsat-{}", state.token_requests.load(Ordering::SeqCst));
        state.issued.lock().unwrap().push(token.clone());
        let body = json!({ "access_token": token, "expires_in": 3600, "token_type": "Bearer" })
            .to_string();
        return reply(200, body);
    }
    if request.path != format!("/v1/{}/messages:send", app.0) {
        return hms_reply(404, "", "not found", None);
    }
    let bearer = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    if !state.issued.lock().unwrap().contains(&bearer) {
        return refuse("bearer token not issued here".into(), 401, "80200001");
    }
    if state.revoked.lock().unwrap().contains(&bearer) {
        return refuse("access token expired".into(), 401, "80200003");
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return refuse("body is not JSON".into(), 400, "80100003");
    };
    let message = &body["message"];
    let tokens = message["token"].as_array().cloned().unwrap_or_default();
    let [token] = tokens.as_slice() else {
        return refuse(
            format!("want exactly one token, got {}", tokens.len()),
            400,
            "80300010",
        );
    };
    let token = token.as_str().unwrap_or_default().to_owned();
    let Some(data) = message["data"]
        .as_str()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    else {
        return refuse("message.data is not a JSON string".into(), 400, "80100003");
    };
    if message.get("notification").is_some()
        || message["android"]["urgency"] != "HIGH"
        || !message["android"]["ttl"]
            .as_str()
            .is_some_and(|t| t.ends_with('s'))
    {
        return refuse(
            format!("not a high-urgency data message with a ttl: {message}"),
            400,
            "80100003",
        );
    }
    for field in crate::push_server::DATA_FIELDS {
        if data.get(field).is_none() {
            return refuse(format!("data lacks {field}"), 400, "80100003");
        }
    }
    if let Some(s) = state.scripts.next(&token) {
        state
            .recorder
            .refuse(format!("scripted {} {}", s.status, s.code));
        // Push Kit lists the failing tokens in `msg`.
        let msg = format!(r#"{{"success":0,"failure":1,"illegal_tokens":["{token}"]}}"#);
        return hms_reply(s.status, &s.code, &msg, s.retry_after);
    }
    state.recorder.receive(HmsMessage {
        token,
        data,
        android: message["android"].clone(),
    });
    hms_reply(200, "80000000", "Success", None)
}
