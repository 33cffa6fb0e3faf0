//! One complete woken call, as the demo shows it and the benchmark repeats it: a caller
//! dials an extension whose phone is asleep, the push arrives at the local APNs server,
//! the phone wakes and registers, pushwake dials it, it answers, the caller hangs up.

use std::time::Duration;

use tokio::time::Instant;

use crate::apns::ApnsServer;
use crate::pbx::TestPbx;
use crate::sipp::{CallerEnd, Phone, SippRun};
use crate::slot::Slot;
use crate::trace;

/// Who calls whom, and on which ports.
#[derive(Clone, Debug)]
pub struct WokenCallPlan {
    /// Caller endpoint.
    pub caller: String,
    /// The sleeping phone's extension.
    pub extension: String,
    /// The caller's local port.
    pub caller_port: u16,
    /// Where the phone listens once awake (its contact).
    pub phone_port: u16,
    /// The port the phone registers from.
    pub register_port: u16,
    /// The device token (also used as the contact's `pn-prid`).
    pub token: String,
    /// How long the phone's app takes to start after the push.
    pub wake_delay: Duration,
    /// How long the phone takes to answer once it rings.
    pub answer_after: Duration,
    /// How long the call lasts before the caller hangs up.
    pub talk: Duration,
}

impl WokenCallPlan {
    /// The benchmarks' call on `slot`: its caller dials phone 1, whose app starts 150 ms
    /// after the push (the call's set-up, ringback and first contact listing, is over by
    /// then: what is measured is a registration arriving mid-call), answers at once and
    /// is hung up at once.
    pub fn mid_call_wake(slot: Slot, token: &str) -> Self {
        Self {
            caller: slot.caller(),
            extension: slot.phone(1),
            caller_port: slot.port(0),
            phone_port: slot.port(1),
            register_port: slot.port(2),
            token: token.to_owned(),
            wake_delay: Duration::from_millis(150),
            answer_after: Duration::from_millis(0),
            talk: Duration::from_millis(0),
        }
    }

    /// The phone registers its contact (with its token) at `pbx` for `expires` seconds;
    /// 0 unregisters it.
    pub async fn register(&self, pbx: &str, expires: u32) -> Result<SippRun, String> {
        SippRun::register(
            pbx,
            &self.extension,
            self.register_port,
            self.phone_port,
            expires,
            &self.token,
        )
        .await
    }
}

/// What happened, when. Instants are on this process's clock; the REGISTER→INVITE
/// latency comes from sipp's own packet timestamps at the phone.
#[derive(Clone, Debug)]
pub struct WokenCall {
    /// The caller's sipp started.
    pub dialled: Instant,
    /// The APNs server accepted the push.
    pub pushed: Instant,
    /// The phone's REGISTER was answered.
    pub registered: Instant,
    /// The caller's call ended (BYE answered).
    pub ended: Instant,
    /// The call id in the push.
    pub push_call_id: String,
    /// The call id in the INVITE's `X-Pushwake-Call-Id`.
    pub invite_call_id: String,
    /// REGISTER sent by the phone → INVITE received by the phone, per sipp's traces.
    pub register_to_invite: Duration,
    /// When the phone sent its REGISTER (µs since the epoch, sipp's clock).
    pub register_sent_micros: i64,
    /// The REGISTER's 200 received by the phone → INVITE received by it, per sipp's
    /// traces: what Asterisk and pushwake take once the registration is stored.
    pub registered_to_invite: Duration,
    /// How many INVITEs the phone received (one, unless it was rung twice).
    pub invites: usize,
}

/// How far apart sipp's own traces of two causally ordered messages may be, the wrong
/// way round (see [`run`]).
const TRACE_SLACK: Duration = Duration::from_millis(10);

/// Runs one woken call; the phone is unregistered again at the end, so the next call
/// finds it asleep.
pub async fn run(
    pbx: &impl TestPbx,
    apns: &ApnsServer,
    plan: &WokenCallPlan,
) -> Result<WokenCall, String> {
    let before = apns.accepted().len();
    let mut phone = SippRun::phone(
        plan.phone_port,
        Phone::Answer {
            answer_after_ms: plan.answer_after.as_millis() as u64,
        },
    )
    .await?;
    let dialled = Instant::now();
    let mut caller = SippRun::caller(
        pbx.sip_address(),
        &plan.caller,
        &plan.extension,
        plan.caller_port,
        CallerEnd::AnsweredCallerHangsUp {
            talk_ms: plan.talk.as_millis() as u64,
        },
    )?;
    let pushes = apns.wait_for(before + 1, Duration::from_secs(15)).await?;
    let push = pushes.last().expect("one push").clone();
    let push_call_id = push.body["call_id"].as_str().unwrap_or_default().to_owned();
    tokio::time::sleep(plan.wake_delay).await;
    let register = plan.register(pbx.sip_address(), 120).await?;
    let registered = Instant::now();
    caller.finish(Duration::from_secs(30)).await?;
    let ended = Instant::now();
    phone.finish(Duration::from_secs(30)).await?;
    plan.register(pbx.sip_address(), 0).await?;

    let sent = trace::parse(&register.messages())
        .into_iter()
        .find(|m| m.sent && m.is_request("REGISTER"))
        .ok_or("no REGISTER in the phone's trace")?;
    let ok = trace::parse(&register.messages())
        .into_iter()
        .find(|m| !m.sent && m.first_line.starts_with("SIP/2.0 200"))
        .ok_or("no 200 to the REGISTER in the phone's trace")?;
    let received: Vec<_> = trace::parse(&phone.messages())
        .into_iter()
        .filter(|m| !m.sent && m.is_request("INVITE"))
        .collect();
    let invite = received
        .first()
        .cloned()
        .ok_or("no INVITE in the phone's trace")?;
    let micros = invite.at_micros - sent.at_micros;
    // sipp stamps a message when it traces it, after sending: on a loaded machine a
    // REGISTER answered and dialled within a millisecond can be traced after the INVITE
    // it caused. A phone rung before it woke (a leg to an old contact) is rung at least
    // the wake delay earlier.
    if micros < -(TRACE_SLACK.as_micros() as i64) {
        return Err(format!(
            "INVITE traced {micros} µs before the REGISTER: the phone was rung before it woke"
        ));
    }
    let micros = micros.max(0);
    let invite_call_id = phone.pushwake_call_id().unwrap_or_default();
    Ok(WokenCall {
        dialled,
        pushed: push.at,
        registered,
        ended,
        push_call_id,
        invite_call_id,
        register_to_invite: Duration::from_micros(micros as u64),
        register_sent_micros: sent.at_micros,
        registered_to_invite: Duration::from_micros((invite.at_micros - ok.at_micros).max(0) as u64),
        invites: received.len(),
    })
}

/// What a benchmark of woken calls runs on: the test Asterisk, a local APNs server, and
/// a daemon serving the slot's phone 1 (ring timeout 20 s) with one iOS device, `token`.
pub struct WokenCallBench {
    /// The running test Asterisk.
    pub pbx: crate::asterisk::TestAsterisk,
    /// The APNs server the daemon pushes to.
    pub server: ApnsServer,
    /// Phone 1's device token.
    pub token: String,
    /// The daemon.
    pub daemon: crate::daemon::Daemon,
    /// The binary the daemon runs.
    pub binary: std::path::PathBuf,
    /// Holds the daemon's configuration.
    pub dir: tempfile::TempDir,
}

impl WokenCallBench {
    /// Starts the APNs server and the daemon ([`pushwake_binary`]) for `slot`.
    pub async fn start(slot: Slot) -> Result<Self, String> {
        use crate::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
        let pbx = crate::asterisk::TestAsterisk::connect().await?;
        let apns = TestApns::generate();
        let server = ApnsServer::start(apns.expectations())
            .await
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let token = format!("{:02}", slot.0).repeat(32);
        let config = ConfigBuilder::new(dir.path(), &pbx, &pbx.app(slot))
            .apns(&apns, &server.endpoint())
            .extension(
                TestExtension::new(pbx.phone(slot, 1), "20s").device(TestDevice::apns(&token)),
            )
            .write()
            .map_err(|e| e.to_string())?;
        let binary = pushwake_binary()?;
        let daemon = crate::daemon::Daemon::start(&binary, &config).await?;
        Ok(Self {
            pbx,
            server,
            token,
            daemon,
            binary,
            dir,
        })
    }
}

/// The `pushwake` binary next to the running one (`target/<profile>/`), or `$PUSHWAKE_BIN`.
pub fn pushwake_binary() -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os("PUSHWAKE_BIN") {
        return Ok(path.into());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let sibling = me.with_file_name("pushwake");
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(format!(
            "no pushwake binary at {} (build it with `cargo build --release`, or set PUSHWAKE_BIN)",
            sibling.display()
        ))
    }
}
