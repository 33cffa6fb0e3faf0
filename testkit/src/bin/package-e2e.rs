//! `package-e2e`: the end-to-end part of `scripts/test-package`. One woken call through
//! a pushwake that this program does not start: the one the package installed, run by
//! the script inside the Asterisk root as the `pushwake` user.
//!
//! 1. Starts a local APNs server with a fresh key; writes the key and the values the
//!    installed configuration needs into `--out DIR` (`AuthKey_<key id>.p8`, `apns.env`).
//! 2. Waits for the file `--ready FILE`: the script creates it once it has filled in the
//!    configuration, started pushwake and seen it connect to ARI.
//! 3. Places the call 200 → 101 with sipp, while phone 101 is asleep; waits for the push,
//!    registers the woken phone; the caller must get its 200 and the phone an INVITE
//!    carrying the push's call id in `X-Pushwake-Call-Id`.
//! 4. Checks that the caller entered `Stasis(pushwake,101)` in the dialplan context
//!    `--context` (where the script has included the installed snippet's context: a
//!    channel keeps its context when the extension comes from an included one), and
//!    that Asterisk holds no channel of the call afterwards.
//!
//! Usage: package-e2e --out DIR --ready FILE [--context pushwake-demo]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::config::TestApns;
use pushwake_testkit::sipp::SippRun;
use pushwake_testkit::woken_call::{self, WokenCallPlan};

/// The ARI application of the installed configuration.
const APP: &str = "pushwake";
/// The phone (an endpoint of the test PBX's demo context).
const EXTENSION: &str = "101";
/// The caller (endpoint 200 calls in the demo context).
const CALLER: &str = "200";
/// The device token written into the installed configuration.
const TOKEN: &str = "5ac4a6e0d1b2c3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8";
/// Ports of this test's sipp instances (the demo uses 162xx/161xx).
const CALLER_PORT: u16 = 16300;
const PHONE_PORT: u16 = 16301;
const REGISTER_PORT: u16 = 16302;

#[tokio::main]
async fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "package-e2e: {e}\nusage: package-e2e --out DIR --ready FILE [--context CONTEXT]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args).await {
        eprintln!("package-e2e: FAILED: {e}");
        std::process::exit(1);
    }
}

struct Args {
    out: PathBuf,
    ready: PathBuf,
    context: String,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut out = None;
        let mut ready = None;
        let mut context = "pushwake-demo".to_owned();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--out" => out = Some(PathBuf::from(value()?)),
                "--ready" => ready = Some(PathBuf::from(value()?)),
                "--context" => context = value()?,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(Self {
            out: out.ok_or("--out is required")?,
            ready: ready.ok_or("--ready is required")?,
            context,
        })
    }
}

fn say(text: &str) {
    eprintln!("package-e2e: {text}");
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the caller's channel was when it sat in Stasis: (context, app data).
type Seen = Arc<Mutex<Option<(String, String)>>>;

/// Polls the channels until the caller's shows up in Stasis, and records where it is.
fn watch_caller(pbx: TestAsterisk) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(channels) = pbx.client().channels().await {
                if let Some(c) = channels.iter().find(|c| {
                    c.name.starts_with(&format!("PJSIP/{CALLER}-"))
                        && c.dialplan.app_name.eq_ignore_ascii_case("Stasis")
                }) {
                    *record.lock().unwrap() =
                        Some((c.dialplan.context.clone(), c.dialplan.app_data.clone()));
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (seen, task)
}

async fn run(args: &Args) -> Result<(), String> {
    let pbx = TestAsterisk::connect().await?;

    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations())
        .await
        .map_err(|e| format!("cannot start the APNs server: {e}"))?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let key_file = args.out.join(format!("AuthKey_{}.p8", apns.key_id));
    apns.key
        .write_private(&key_file)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    write_atomically(
        &args.out.join("apns.env"),
        &format!(
            "APNS_ENDPOINT={}\nAPNS_TEAM_ID={}\nAPNS_KEY_ID={}\nAPNS_KEY_FILE={}\nAPNS_TOPIC={}\nDEVICE_TOKEN={TOKEN}\n",
            server.endpoint(),
            apns.team_id,
            apns.key_id,
            key_file.display(),
            apns.topic
        ),
    )?;
    say(&format!(
        "APNs server on {}; key and settings in {}; waiting for {}",
        server.endpoint(),
        args.out.display(),
        args.ready.display()
    ));

    pushwake_testkit::wait_until(
        &format!("{} (pushwake connected to ARI)", args.ready.display()),
        Duration::from_secs(60),
        || async { args.ready.exists().then_some(()) },
    )
    .await?;
    say(&format!(
        "pushwake is connected as ARI application \"{APP}\""
    ));

    // Phone 101 is asleep: no contact registered (even if an earlier run was interrupted).
    SippRun::register(&pbx.sip, EXTENSION, REGISTER_PORT, PHONE_PORT, 0, TOKEN).await?;

    let (seen, watcher) = watch_caller(pbx.clone());
    let plan = WokenCallPlan {
        caller: CALLER.into(),
        extension: EXTENSION.into(),
        caller_port: CALLER_PORT,
        phone_port: PHONE_PORT,
        register_port: REGISTER_PORT,
        token: TOKEN.into(),
        wake_delay: Duration::from_millis(300),
        answer_after: Duration::from_millis(200),
        talk: Duration::from_millis(1000),
    };
    let call = woken_call::run(&pbx, &server, &plan).await;
    watcher.abort();
    let call = call?;

    let push = server
        .accepted()
        .last()
        .cloned()
        .ok_or("the APNs server accepted no push")?;
    let mut problems = Vec::new();
    if push.token != TOKEN {
        problems.push(format!(
            "the push went to token {}, not {TOKEN}",
            push.token
        ));
    }
    if push.body["extension"] != EXTENSION || push.body["caller_number"] != CALLER {
        problems.push(format!("the push body is {}", push.body));
    }
    if call.push_call_id.is_empty() || call.invite_call_id != call.push_call_id {
        problems.push(format!(
            "the INVITE's X-Pushwake-Call-Id {:?} is not the push's call id {:?}",
            call.invite_call_id, call.push_call_id
        ));
    }
    let rejected = server.rejected();
    if !rejected.is_empty() {
        problems.push(format!("the APNs server refused pushes: {rejected:?}"));
    }
    match seen.lock().unwrap().clone() {
        Some((context, data)) => {
            if context != args.context || data != format!("{APP},{EXTENSION}") {
                problems.push(format!(
                    "the caller ran Stasis({data}) in context {context}, not Stasis({APP},{EXTENSION}) in {}",
                    args.context
                ));
            }
        }
        None => problems.push("the caller's channel was never seen in Stasis".into()),
    }
    let leftover = pushwake_testkit::wait_until(
        "the call's channels to go",
        Duration::from_secs(5),
        || async {
            let channels = pbx.client().channels().await.ok()?;
            (!channels.iter().any(|c| {
                c.name.starts_with(&format!("PJSIP/{EXTENSION}-"))
                    || c.name.starts_with(&format!("PJSIP/{CALLER}-"))
            }))
            .then_some(())
        },
    )
    .await;
    if let Err(e) = leftover {
        problems.push(e);
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    say(&format!(
        "woken call done: {CALLER} → {EXTENSION} in context {}; push {} ms after the dial; \
         INVITE {:.2} ms after the REGISTER with X-Pushwake-Call-Id {}; caller answered (200), \
         hung up, nothing left in Asterisk",
        args.context,
        call.pushed
            .saturating_duration_since(call.dialled)
            .as_millis(),
        call.register_to_invite.as_secs_f64() * 1000.0,
        call.push_call_id
    ));
    Ok(())
}
