//! A local Huawei Push Kit: the OAuth2 token endpoint (client credentials, checked
//! against the app's id and secret) and `messages:send` (bearer token it issued, the app
//! id in the path, a high-urgency data message to one token, `data` a JSON string), over
//! HTTP/2 without TLS. Answers like Push Kit, with a result code in the body; replies can
//! be scripted per device token, e.g. `80300007` (token invalid).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

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

/// A scripted answer: HTTP status, Push Kit code, optional `Retry-After`, how many times.
#[derive(Clone, Debug)]
struct Scripted {
    status: u16,
    code: String,
    retry_after: Option<u64>,
    times: Option<usize>,
}

#[derive(Default)]
struct State {
    accepted: Mutex<Vec<HmsMessage>>,
    refused: Mutex<Vec<String>>,
    scripted: Mutex<HashMap<String, Scripted>>,
    issued: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
    token_requests: AtomicUsize,
    connections: AtomicUsize,
    arrived: Notify,
}

/// The running server; stops when dropped.
pub struct HmsServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HmsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HmsServer {
    /// Starts a server for the app `app_id` with secret `secret`.
    pub async fn start(app_id: &str, secret: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let serving = state.clone();
        let app: Arc<(String, String)> = Arc::new((app_id.to_owned(), secret.to_owned()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serving.connections.fetch_add(1, Ordering::SeqCst);
                let (state, app) = (serving.clone(), app.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(state.clone(), app.clone(), request)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The base URL to configure as `hms.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint's URL (`hms.token_url`).
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<HmsMessage> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// What was refused so far, and why.
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().unwrap().clone()
    }

    /// Token requests so far.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// TCP connections so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
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
        self.state.scripted.lock().unwrap().insert(
            token.to_owned(),
            Scripted {
                status,
                code: code.to_owned(),
                retry_after,
                times,
            },
        );
    }

    /// Waits until `count` messages have been accepted in all.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<HmsMessage>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let accepted = self.accepted();
            if accepted.len() >= count {
                return Ok(accepted);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "HMS server: {} message(s) after {timeout:?}, wanted {count}; refused: {:?}",
                    accepted.len(),
                    self.refused()
                ));
            }
        }
    }
}

fn reply(status: u16, code: &str, msg: &str, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let body = json!({ "code": code, "msg": msg, "requestId": "1795480000000000000" }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from(seconds));
    }
    response
}

async fn handle(
    state: Arc<State>,
    app: Arc<(String, String)>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let refuse = |why: String, status: u16, code: &str| {
        state.refused.lock().unwrap().push(why.clone());
        state.arrived.notify_waiters();
        Ok(reply(status, code, &why, None))
    };
    if path == TOKEN_PATH {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id") == Some(&app.0)
            && form.get("client_secret") == Some(&app.1);
        if !ok {
            let mut response = Response::new(Full::new(Bytes::from(
                r#"{"error":1101,"sub_error":20601,"error_description":"invalid client"}"#,
            )));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
        let token = format!("hmsat-{}", state.token_requests.load(Ordering::SeqCst));
        state.issued.lock().unwrap().push(token.clone());
        let body = json!({ "access_token": token, "expires_in": 3600, "token_type": "Bearer" })
            .to_string();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    if path != format!("/v1/{}/messages:send", app.0) {
        return Ok(reply(404, "", "not found", None));
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
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
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
    for field in [
        "type",
        "version",
        "call_id",
        "extension",
        "caller_number",
        "caller_name",
        "expires_at",
    ] {
        if data.get(field).is_none() {
            return refuse(format!("data lacks {field}"), 400, "80100003");
        }
    }
    let scripted = {
        let mut scripted = state.scripted.lock().unwrap();
        match scripted.get_mut(&token) {
            Some(s) if s.times == Some(0) => None,
            Some(s) => {
                if let Some(times) = s.times.as_mut() {
                    *times -= 1;
                }
                Some(s.clone())
            }
            None => None,
        }
    };
    if let Some(s) = scripted {
        state
            .refused
            .lock()
            .unwrap()
            .push(format!("scripted {} {}", s.status, s.code));
        state.arrived.notify_waiters();
        // Push Kit lists the failing tokens in `msg`.
        let msg = format!(r#"{{"success":0,"failure":1,"illegal_tokens":["{token}"]}}"#);
        return Ok(reply(s.status, &s.code, &msg, s.retry_after));
    }
    state.accepted.lock().unwrap().push(HmsMessage {
        token,
        data,
        android: message["android"].clone(),
    });
    state.arrived.notify_waiters();
    Ok(reply(200, "80000000", "Success", None))
}
