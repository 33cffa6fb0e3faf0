//! `pushwake-bench-floor`: how close pushwake rings a woken phone to the floor, the
//! fastest a plain ARI client can.
//!
//! Alternating rounds in one run on the throwaway Asterisk, on the same phone:
//! - **pushwake**: a caller waits in pushwake's application for the sleeping phone; the
//!   push comes, the phone registers, pushwake dials it (a woken call, `woken_call`);
//! - **floor**: a minimal ARI client written here — its own application, one WebSocket
//!   subscribed to `endpoint:PJSIP`, one kept-alive HTTP connection — originates to the
//!   phone's contact the moment `ContactStatusChange` brings its URI, with the same
//!   `X-Pushwake-Call-Id` header variable pushwake's legs carry.
//!
//! The figure of both is the REGISTER's `200 OK` received by the phone → the INVITE
//! received by it, from sipp's packet timestamps (the same clock, loopback). The goal
//! (issue 15): pushwake's p50 at most 0.8 × the floor's, which only dialling before the
//! contact's URI is announced can reach. Run it with `scripts/bench-floor` (release
//! build). Not a test: figures on a shared machine vary; CI does not run it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::figures::{ms, percentile};
use pushwake_testkit::pbx::TestPbx;
use pushwake_testkit::sipp::{Phone, SippRun};
use pushwake_testkit::slot::Slot;
use pushwake_testkit::trace;
use pushwake_testkit::woken_call::{self, WokenCallBench, WokenCallPlan};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::Message;

/// The goal: pushwake's p50 over the floor's.
const GOAL_RATIO: f64 = 0.8;

/// How often the floor client pings its connection, as pushwake does its own
/// (`pushwake_asterisk::client::KEEP_WARM_INTERVAL`).
const KEEP_WARM: Duration = pushwake_asterisk::client::KEEP_WARM_INTERVAL;

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    if let Err(e) = bench(rounds.max(2)).await {
        eprintln!("pushwake-bench-floor: FAILED: {e}");
        std::process::exit(1);
    }
}

/// The part of an ARI event the floor client reads.
#[derive(Deserialize)]
struct FloorEvent {
    #[serde(rename = "type")]
    kind: String,
    contact_info: Option<FloorContact>,
}

#[derive(Deserialize)]
struct FloorContact {
    uri: String,
    contact_status: String,
    #[serde(default)]
    aor: String,
}

/// What the floor client dials next: the extension whose next registration it rings,
/// and the call id its INVITE carries.
type Armed = Arc<Mutex<Option<(String, String)>>>;

/// The minimal ARI client: its own application, connected and subscribed; it dials
/// only while armed, so pushwake's rounds (same phone) are left alone.
struct FloorClient {
    armed: Armed,
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
    errors: Arc<Mutex<Vec<String>>>,
    /// When the last dial's event came and its originate was answered (µs since the
    /// epoch), for `PUSHWAKE_BENCH_RAW`.
    stamps: Arc<Mutex<(i64, i64)>>,
}

/// Now, in µs since the epoch (the clock sipp's traces use).
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

impl FloorClient {
    async fn start(pbx: &TestAsterisk, app: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("{}/ari", pbx.ari_url.trim_end_matches('/'));
        let ws_url = format!("{}/events?app={app}", base.replacen("http://", "ws://", 1));
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", pbx.ari_user, pbx.ari_password));
        request.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|e| e.to_string())?,
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("floor client: cannot connect the ARI WebSocket: {e}"))?;
        let client = Self {
            armed: Arc::new(Mutex::new(None)),
            http,
            base,
            user: pbx.ari_user.clone(),
            password: pbx.ari_password.clone(),
            errors: Arc::new(Mutex::new(Vec::new())),
            stamps: Arc::new(Mutex::new((0, 0))),
        };
        let subscribed = client
            .http
            .post(format!("{}/applications/{app}/subscription", client.base))
            .basic_auth(&client.user, Some(&client.password))
            .query(&[("eventSource", "endpoint:PJSIP")])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !subscribed.status().is_success() {
            return Err(format!(
                "floor client: subscribing to endpoint:PJSIP: {}",
                subscribed.status()
            ));
        }
        let (armed, errors, stamps) = (
            client.armed.clone(),
            client.errors.clone(),
            client.stamps.clone(),
        );
        let (http, base, user, password) = (
            client.http.clone(),
            client.base.clone(),
            client.user.clone(),
            client.password.clone(),
        );
        // Kept warm as pushwake keeps its own: Asterisk closes an HTTP connection idle
        // for 15 s.
        let (warm, ping) = (
            client.http.clone(),
            format!("{}/asterisk/ping", client.base),
        );
        let (warm_user, warm_password) = (client.user.clone(), client.password.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEEP_WARM);
            loop {
                tick.tick().await;
                let _ = warm
                    .get(&ping)
                    .basic_auth(&warm_user, Some(&warm_password))
                    .send()
                    .await;
            }
        });
        let app = app.to_owned();
        tokio::spawn(async move {
            let (_sink, mut stream) = socket.split();
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let heard = now_micros();
                let Ok(event) = serde_json::from_str::<FloorEvent>(text.as_str()) else {
                    continue;
                };
                if event.kind != "ContactStatusChange" {
                    continue;
                }
                let Some(contact) = event.contact_info else {
                    continue;
                };
                if !matches!(contact.contact_status.as_str(), "Created" | "NonQualified") {
                    continue;
                }
                let call = {
                    let mut armed = armed.lock().unwrap();
                    match armed.as_ref() {
                        Some((extension, _)) if *extension == contact.aor => armed.take(),
                        _ => None,
                    }
                };
                let Some((extension, call)) = call else {
                    continue;
                };
                // Dialled right here, in the event loop: nothing between the event
                // and the request.
                let endpoint = format!("PJSIP/{extension}/{}", contact.uri);
                let body = serde_json::json!({
                    "variables": { "PJSIP_HEADER(add,X-Pushwake-Call-Id)": call }
                });
                let sent = http
                    .post(format!("{base}/channels"))
                    .basic_auth(&user, Some(&password))
                    .query(&[
                        ("endpoint", endpoint.as_str()),
                        ("app", app.as_str()),
                        ("timeout", "20"),
                    ])
                    .json(&body)
                    .send()
                    .await;
                *stamps.lock().unwrap() = (heard, now_micros());
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => errors
                        .lock()
                        .unwrap()
                        .push(format!("originate: {}", r.status())),
                    Err(e) => errors.lock().unwrap().push(format!("originate: {e}")),
                }
            }
        });
        Ok(client)
    }

    /// Dials `extension`'s next registration. The connection is not touched first: it
    /// is kept alive the way pushwake keeps its own (a ping every 5 s), and a request
    /// made just before the REGISTER would give the floor a connection (and an Asterisk
    /// HTTP thread) fresher than any real client has when a phone wakes.
    fn arm(&self, extension: &str, call: &str) {
        *self.armed.lock().unwrap() = Some((extension.to_owned(), call.to_owned()));
    }

    fn errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}

/// One floor round: the phone listens, the floor client is armed, the phone registers
/// and is rung; then it unregisters. Returns 200 → INVITE at the phone.
async fn floor_round(
    pbx: &TestAsterisk,
    client: &FloorClient,
    plan: &WokenCallPlan,
    round: usize,
) -> Result<Duration, String> {
    let mut phone = SippRun::phone(
        plan.phone_port,
        Phone::AnswerThenBye {
            answer_after_ms: 0,
            talk_ms: 0,
        },
    )
    .await?;
    let call = format!("floor-{round}");
    client.arm(&plan.extension, &call);
    let register = plan.register(pbx.sip_address(), 120).await?;
    let finished = phone.finish(Duration::from_secs(15)).await;
    *client.armed.lock().unwrap() = None;
    plan.register(pbx.sip_address(), 0).await?;
    finished.map_err(|e| format!("{e}\nfloor client: {:?}", client.errors()))?;
    let ok = trace::parse(&register.messages())
        .into_iter()
        .find(|m| !m.sent && m.first_line.starts_with("SIP/2.0 200"))
        .ok_or("no 200 to the REGISTER in the phone's trace")?;
    let invites: Vec<_> = trace::parse(&phone.messages())
        .into_iter()
        .filter(|m| !m.sent && m.is_request("INVITE"))
        .collect();
    let invite = invites.first().ok_or("no INVITE in the phone's trace")?;
    if phone.pushwake_call_id().as_deref() != Some(call.as_str()) {
        return Err(format!(
            "the phone was rung by someone else than the floor client: {:?}",
            phone.pushwake_call_id()
        ));
    }
    if std::env::var_os("PUSHWAKE_BENCH_RAW").is_some() {
        let (heard, answered) = *client.stamps.lock().unwrap();
        eprintln!(
            "  round {}: 200 at the phone +0, floor hears ContactStatusChange {} µs, ARI answers its originate {} µs, INVITE at the phone {} µs",
            round + 1,
            heard - ok.at_micros,
            answered - ok.at_micros,
            invite.at_micros - ok.at_micros
        );
    }
    Ok(Duration::from_micros(
        (invite.at_micros - ok.at_micros).max(0) as u64,
    ))
}

fn summary(name: &str, samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let (p50, p95) = (percentile(&sorted, 50.0), percentile(&sorted, 95.0));
    println!(
        "  {name:<34} p50 {:.3} ms   p95 {:.3} ms   (min {:.3}, max {:.3} ms, {} rounds)",
        ms(p50),
        ms(p95),
        ms(sorted[0]),
        ms(*sorted.last().unwrap()),
        sorted.len()
    );
    (p50, p95)
}

async fn bench(rounds: usize) -> Result<(), String> {
    let slot = Slot::new(39);
    let WokenCallBench {
        pbx,
        server,
        token,
        daemon,
        binary,
        dir: _dir,
    } = WokenCallBench::start(slot).await?;
    let floor = FloorClient::start(&pbx, &format!("{}-floor", pbx.app(slot))).await?;

    let plan = WokenCallPlan::mid_call_wake(slot, &token);
    // Asleep to begin with: the endpoint has no contact.
    plan.register(&pbx.sip, 0).await?;
    println!(
        "pushwake-bench-floor: {rounds} alternating rounds on {} against {} ({})",
        plan.extension,
        pbx.ari_url,
        binary.display()
    );
    let mut pushwake = Vec::with_capacity(rounds / 2 + 1);
    let mut baseline = Vec::with_capacity(rounds / 2 + 1);
    for round in 0..rounds {
        if round % 2 == 0 {
            let call = woken_call::run(&pbx, &server, &plan).await.map_err(|e| {
                format!("round {}: {e}\npushwake log:\n{}", round + 1, daemon.logs())
            })?;
            if call.invite_call_id != call.push_call_id {
                return Err(format!(
                    "round {}: X-Pushwake-Call-Id {} != push call_id {}",
                    round + 1,
                    call.invite_call_id,
                    call.push_call_id
                ));
            }
            if call.invites != 1 {
                return Err(format!(
                    "round {}: the woken phone got {} INVITEs: rung twice",
                    round + 1,
                    call.invites
                ));
            }
            pushwake.push(call.registered_to_invite);
            if std::env::var_os("PUSHWAKE_BENCH_RAW").is_some() {
                // From the 200 at the phone, by pushwake's log stamps (same clock).
                let ok = call.register_sent_micros + call.register_to_invite.as_micros() as i64
                    - call.registered_to_invite.as_micros() as i64;
                let logs = daemon.logs();
                let stamp_of = |needle: &str| {
                    logs.lines()
                        .find(|l| {
                            l.contains(needle)
                                && !l.contains("dialling contacts")
                                && l.contains(&call.push_call_id)
                        })
                        .and_then(|l| l.split_whitespace().next())
                        .and_then(trace::parse_stamp)
                        .map(|t| t - ok)
                };
                eprintln!(
                    "  round {}: 200 at the phone +0, pushwake decides {:?} µs, ARI answers the originate {:?} µs, INVITE at the phone {} µs",
                    round + 1,
                    stamp_of(" dialling contact"),
                    stamp_of("dial request accepted"),
                    call.registered_to_invite.as_micros()
                );
            }
        } else {
            let took = floor_round(&pbx, &floor, &plan, round)
                .await
                .map_err(|e| format!("round {} (floor client): {e}", round + 1))?;
            baseline.push(took);
        }
        if (round + 1) % 10 == 0 {
            eprintln!("  {} rounds done", round + 1);
        }
    }
    pbx.wait_clean(slot, Duration::from_secs(10)).await?;
    let early = daemon
        .logs()
        .lines()
        .filter(|l| l.contains("dialling contact (the extension's only one"))
        .count();
    println!(
        "REGISTER's 200 at the woken phone → INVITE at it (sipp packet timestamps, loopback):"
    );
    let (ours, ours95) = summary("pushwake", &pushwake);
    let (floor50, floor95) = summary("minimal ARI client (floor)", &baseline);
    let ratio = ms(ours) / ms(floor50);
    println!(
        "  pushwake p50 / floor p50 = {ratio:.2} (goal ≤ {GOAL_RATIO:.2}); p95 ratio {:.2}",
        ms(ours95) / ms(floor95)
    );
    println!(
        "  pushwake dialled {early} of {} woken phones before their contact's URI was announced; each got one INVITE",
        pushwake.len()
    );
    pushwake_testkit::figures::figure(
        "Asterisk: woken phone's REGISTER 200 → INVITE, pushwake p50 / minimal ARI client p50",
        &format!(
            "{ratio:.2} ({:.2} / {:.2} ms; p95 {:.2} / {:.2} ms)",
            ms(ours),
            ms(floor50),
            ms(ours95),
            ms(floor95)
        ),
        &format!("≤ {GOAL_RATIO:.2}"),
        ratio <= GOAL_RATIO,
    );
    Ok(())
}
