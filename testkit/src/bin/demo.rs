//! `pushwake-demo`: one call to a sleeping phone, end to end, each step with its time.
//!
//! Needs the test Asterisk (`scripts/asterisk-up`); `scripts/demo` does everything. Uses
//! the demo dialplan, which is the snippet operators include: `Stasis(pushwake,${EXTEN})`.

use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::woken_call::{self, WokenCallPlan};
use tokio::time::Instant;

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

#[tokio::main]
async fn main() {
    if let Err(e) = demo().await {
        eprintln!("\npushwake-demo: FAILED: {e}");
        std::process::exit(1);
    }
}

fn step(start: Instant, at: Instant, text: &str) {
    println!(
        "  [{:>8.3} s] {text}",
        at.saturating_duration_since(start).as_secs_f64()
    );
}

async fn demo() -> Result<(), String> {
    println!("pushwake demo: a call to a phone whose app is asleep\n");
    let start = Instant::now();
    let pbx = TestAsterisk::connect().await?;
    let info = pbx.client().info().await.map_err(|e| e.to_string())?;
    let version = info["system"]["version"].as_str().unwrap_or("?").to_owned();
    step(
        start,
        Instant::now(),
        &format!("Asterisk {version} answers on ARI {}", pbx.ari_url),
    );

    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations())
        .await
        .map_err(|e| e.to_string())?;
    step(
        start,
        Instant::now(),
        &format!(
            "local APNs server on {} (HTTP/2; verifies the ES256 provider token, headers, payload)",
            server.endpoint()
        ),
    );

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = ConfigBuilder::new(dir.path(), &pbx, "pushwake")
        .apns(&apns, &server.endpoint())
        .extension(TestExtension::new("101", "30s").device(TestDevice::apns(TOKEN)))
        .write()
        .map_err(|e| e.to_string())?;
    let daemon = Daemon::start(&woken_call::pushwake_binary()?, &config).await?;
    step(
        start,
        Instant::now(),
        "pushwake running, connected to ARI as application \"pushwake\"",
    );

    let plan = WokenCallPlan {
        caller: "200".into(),
        extension: "101".into(),
        caller_port: 16200,
        phone_port: 16101,
        register_port: 16201,
        token: TOKEN.into(),
        wake_delay: Duration::from_millis(500),
        answer_after: Duration::from_millis(300),
        talk: Duration::from_secs(2),
    };
    // Start asleep even if an earlier run was interrupted.
    pushwake_testkit::sipp::SippRun::register(
        &pbx.sip,
        "101",
        plan.register_port,
        plan.phone_port,
        0,
        TOKEN,
    )
    .await?;
    step(
        start,
        Instant::now(),
        "phone 101 is asleep: no contact registered, its app gets no INVITE",
    );
    let call = woken_call::run(&pbx, &server, &plan)
        .await
        .map_err(|e| format!("{e}\npushwake log:\n{}", daemon.logs()))?;
    step(
        start,
        call.dialled,
        "Alice (200) dials 101; the dialplan runs Stasis(pushwake,101); Alice hears ringback",
    );
    let push = server.accepted().last().cloned().ok_or("no push")?;
    // How long pushwake itself took: from the call entering it to the push delivered,
    // by its own log (the time since the dial includes starting sipp).
    let logs = daemon.logs();
    let stamp = |needle: &str| {
        logs.lines()
            .find(|l| l.contains(needle) && l.contains(&call.push_call_id))
            .and_then(|l| l.split_whitespace().next())
            .and_then(pushwake_testkit::trace::parse_stamp)
    };
    let inside = match (stamp("caller waiting"), stamp("push delivered")) {
        (Some(entered), Some(delivered)) => format!(
            "; {:.1} ms after the call entered pushwake",
            (delivered - entered) as f64 / 1000.0
        ),
        _ => String::new(),
    };
    step(
        start,
        call.pushed,
        &format!(
            "APNs accepted a VoIP push for 101 ({} ms after the caller's sipp started{inside}): call_id {}, caller \"{}\" <{}>",
            call.pushed.saturating_duration_since(call.dialled).as_millis(),
            call.push_call_id,
            push.body["caller_name"].as_str().unwrap_or(""),
            push.body["caller_number"].as_str().unwrap_or("")
        ),
    );

    step(
        start,
        call.registered,
        &format!(
            "the app woke ({} ms later) and the phone REGISTERed",
            plan.wake_delay.as_millis()
        ),
    );
    step(
        start,
        call.registered,
        &format!(
            "pushwake dialled it at once: INVITE at the phone {:.2} ms after its REGISTER (sipp packet times); X-Pushwake-Call-Id {} the push",
            call.register_to_invite.as_secs_f64() * 1000.0,
            if call.invite_call_id == call.push_call_id { "matches" } else { "DOES NOT match" }
        ),
    );
    step(
        start,
        call.ended,
        &format!(
            "the phone answered after {} ms, they talked {} s, Alice hung up",
            plan.answer_after.as_millis(),
            plan.talk.as_secs()
        ),
    );
    pbx.wait_clean(
        pushwake_testkit::slot::Slot::new(10),
        Duration::from_secs(1),
    )
    .await
    .ok();
    let leftover = pbx.client().channels().await.map_err(|e| e.to_string())?;
    let leftover: Vec<_> = leftover
        .iter()
        .filter(|c| c.name.starts_with("PJSIP/101-") || c.name.starts_with("PJSIP/200-"))
        .collect();
    if !leftover.is_empty() {
        return Err(format!("channels left in Asterisk: {leftover:?}"));
    }
    step(
        start,
        Instant::now(),
        "both legs torn down; Asterisk holds no channel of the call",
    );
    if call.invite_call_id != call.push_call_id {
        return Err("the INVITE's X-Pushwake-Call-Id does not match the push".into());
    }
    println!("\npushwake's own log of the call:");
    for line in daemon
        .logs()
        .lines()
        .filter(|l| l.contains(&call.push_call_id))
    {
        println!("    {line}");
    }
    println!("\ndemo passed");
    Ok(())
}
