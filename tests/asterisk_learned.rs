//! Devices that register themselves, end to end on the real Asterisk 22 with sipp phones:
//! a phone's REGISTER with RFC 8599 parameters (the generic form, and Linphone's exact
//! form) teaches pushwake its token; the phone unregisters and goes silent; a call pushes
//! the learned token and the re-registered phone answers. A phone that registers again
//! from a new port rings there only. A REGISTER that fails digest authentication teaches
//! nothing. None of these extensions is in the configuration: what the phones taught is
//! all pushwake knows. What was learned survives a `kill -9` and a restart (the device
//! store), and a PostgreSQL that stops mid-run: calls push from memory, and what is
//! learned meanwhile is written once it is back. Slots 27 to 31 and 33 (28's phone 4
//! must authenticate).

use std::time::Duration;

use pushwake_core::directory::DeviceToken;
use pushwake_testkit::rig::{call_id_seen_by, Rig};
use pushwake_testkit::sipp::{CallerEnd, Phone};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The rig's `[apns]` team and topic (pushwake_testkit::config::TestApns).
const TEAM: &str = "TEAM123456";
const BUNDLE: &str = "com.example.phone";

/// A VoIP token of this test's own.
fn token(tag: &str) -> String {
    let hex: String = tag.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<64}")
}

/// The contact parameters of a phone built on a generic RFC 8599 stack.
fn generic(token: &str) -> String {
    format!(";transport=udp;pn-provider=apns;pn-param={TEAM}.{BUNDLE}.voip;pn-prid={token}")
}

/// Waits until the daemon says it learned the device with `token` (every daemon of the
/// test PBX hears every phone's registrations: the token tells which one).
async fn learned(rig: &Rig, token: &str) -> String {
    let fingerprint = DeviceToken::new(token).to_string();
    let line = rig
        .wait_log(&format!("token={fingerprint}"), SECS(10))
        .await;
    assert!(
        line.contains("learned a device from its registration"),
        "{line}"
    );
    line
}

/// Starts a daemon for the slot with `[apns]` only (production and sandbox at the rig's
/// local server); no extension configured. First removes the contacts (phone, device,
/// contact parameters) an earlier run may have left: a REGISTER that only refreshes a
/// contact Asterisk already has is not announced, so nothing would be learned from it.
async fn setup(slot: u8, leftovers: &[(u8, u8, &str)]) -> Rig {
    let mut rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    for (k, device, params) in leftovers {
        rig.register_contact(*k, *device, 0, params).await;
    }
    let config = rig
        .config()
        .apns_option("sandbox_endpoint", &rig.apns_server.endpoint());
    rig.start(config).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_registered_its_token_is_woken_with_it_after_it_went_silent() {
    let voip = token("learned-27-1");
    let rig = setup(27, &[(1, 1, &generic(&voip))]).await;
    let ext = rig.phone_number(1);
    let before = rig.daemon().log_len();
    rig.register_contact(1, 1, 120, &generic(&voip)).await;
    let line = learned(&rig, &voip).await;
    assert!(line.contains(&format!("extension=\"{ext}\"")), "{line}");
    assert!(
        !rig.logs().contains(&voip),
        "the token itself is never logged"
    );
    // The app is suspended: it unregisters and goes silent.
    rig.register_contact(1, 1, 0, &generic(&voip)).await;

    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 1000 });
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].token, voip);
    assert_eq!(pushes[0].headers["apns-topic"], format!("{BUNDLE}.voip"));
    assert_eq!(pushes[0].body["extension"], ext.as_str());
    // Woken, it registers again, and is dialled and answers.
    rig.register_contact(1, 1, 120, &generic(&voip)).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    assert_eq!(
        call_id_seen_by(&phone),
        pushes[0].body["call_id"].as_str().unwrap()
    );
    rig.assert_clean().await;
    assert!(
        rig.apns_server.rejected().is_empty(),
        "{:?}",
        rig.apns_server.rejected()
    );
    assert!(
        !rig.daemon().logs_after(before).contains("were not taken"),
        "{}",
        rig.logs()
    );
    rig.register_contact(1, 1, 0, &generic(&voip)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_s_registration_is_learned_with_its_voip_token_for_the_sandbox() {
    let (remote, voip) = (token("remote-29-2"), token("voip-29-2"));
    // As a real liblinphone 5 wrote it: transport first, its own pn-* in another order,
    // `&` and `:` not escaped.
    let linphone = format!(
        ";transport=udp;pn-provider=apns.dev;pn-prid={remote}:remote&{voip}:voip;pn-param={TEAM}.{BUNDLE}.remote&voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf"
    );
    let rig = setup(29, &[(2, 1, &linphone)]).await;
    let ext = rig.phone_number(2);
    rig.register_contact(2, 1, 120, &linphone).await;
    let line = learned(&rig, &voip).await;
    assert!(line.contains(&format!("extension=\"{ext}\"")), "{line}");
    rig.register_contact(2, 1, 0, &linphone).await;

    let mut call = rig.call(&ext, CallerEnd::Cancels { after_ms: 1500 });
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].token, voip, "the VoIP token, not the remote one");
    assert_eq!(pushes[0].headers["apns-topic"], format!("{BUNDLE}.voip"));
    assert_eq!(pushes[0].headers["apns-push-type"], "voip");
    rig.finish(&mut call, SECS(30)).await;
    rig.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registering_again_from_a_new_port_rings_there_only() {
    let voip = token("moving-30-1");
    let rig = setup(30, &[(1, 1, &generic(&voip)), (1, 2, &generic(&voip))]).await;
    let ext = rig.phone_number(1);
    // Registered from its old address, which still listens (it would ring too).
    let mut old = rig.phone(1, 1, Phone::Ignore).await;
    rig.register_contact(1, 1, 120, &generic(&voip)).await;
    learned(&rig, &voip).await;

    let mut call = rig.call(&ext, CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 });
    rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    // The woken app comes back on another port: its old leg is cancelled, the new
    // address rings and answers.
    let mut new = rig
        .phone(
            1,
            2,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    rig.register_contact(1, 2, 120, &generic(&voip)).await;
    rig.wait_log("the phone registered again from another address", SECS(10))
        .await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut new, SECS(30)).await;
    // The old address got its INVITE cancelled (phone-ignore expects the CANCEL).
    rig.finish(&mut old, SECS(30)).await;
    let invites = new.messages().matches("INVITE sip:").count();
    assert_eq!(invites, 1, "{}", new.messages());
    rig.assert_clean().await;
    for device in [1, 2] {
        rig.register_contact(1, device, 0, &generic(&voip)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_that_fails_digest_authentication_teaches_nothing() {
    let (planted, real) = (token("planted-28-4"), token("real-28-4"));
    let rig = setup(28, &[]).await;
    let ext = rig.phone_number(4);
    // What an earlier run left registered goes first (a refresh would teach nothing).
    assert_eq!(
        rig.register_with_password(4, 1, "pw-2804", 0, &generic(&real))
            .await,
        200
    );
    let before = rig.daemon().log_len();
    // Someone without the password tries to plant a token.
    let code = rig
        .register_with_password(4, 1, "wrong-password", 60, &generic(&planted))
        .await;
    assert!(matches!(code, 401 | 403), "Asterisk answered {code}");
    // The phone itself, with the password: learned (ARI events come in order, so had
    // the first REGISTER taught anything, it would show before this).
    let code = rig
        .register_with_password(4, 1, "pw-2804", 60, &generic(&real))
        .await;
    assert_eq!(code, 200);
    learned(&rig, &real).await;
    let log = rig.daemon().logs_after(before);
    assert!(
        !log.contains(&DeviceToken::new(planted.clone()).to_string()),
        "{log}"
    );

    let mut call = rig.call(&ext, CallerEnd::Cancels { after_ms: 1500 });
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].token, real);
    rig.finish(&mut call, SECS(30)).await;
    assert!(
        rig.apns_server
            .accepted()
            .iter()
            .all(|p| p.token != planted),
        "the planted token was pushed"
    );
    rig.assert_clean().await;
    rig.register_with_password(4, 1, "pw-2804", 0, &generic(&real))
        .await;
}

/// Waits until the daemon has written extension `ext`'s learned device to its store.
async fn written(rig: &Rig, ext: &str) {
    rig.wait_log(
        &format!("device store: device written extension={ext} "),
        SECS(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_devices_survive_kill_9_and_a_restart() {
    let (first, second) = (token("survive-31-1"), token("survive-31-2"));
    let mut rig = setup(31, &[(1, 1, &generic(&first)), (2, 1, &generic(&second))]).await;
    let (ext1, ext2) = (rig.phone_number(1), rig.phone_number(2));

    // Learned and written, then a crash; the phone goes silent while pushwake is down.
    rig.register_contact(1, 1, 120, &generic(&first)).await;
    learned(&rig, &first).await;
    written(&rig, &ext1).await;
    rig.daemon_mut().kill().await;
    rig.register_contact(1, 1, 0, &generic(&first)).await;
    rig.restart().await;

    // Learned, then a clean stop (which waits for the store's writes).
    rig.register_contact(2, 1, 120, &generic(&second)).await;
    learned(&rig, &second).await;
    let stopped = rig.daemon_mut().terminate(SECS(10)).await;
    rig.unwrap(stopped);
    rig.register_contact(2, 1, 0, &generic(&second)).await;
    rig.restart().await;
    let opened = rig.wait_log("device store opened", SECS(10)).await;
    assert!(!opened.contains("devices=0"), "{opened}");

    // Neither phone is registered: only the store knows their tokens.
    for (ext, voip, n) in [(&ext1, &first, 1), (&ext2, &second, 2)] {
        let mut call = rig.call(ext, CallerEnd::Cancels { after_ms: 1500 });
        let pushes = rig.unwrap(rig.apns_server.wait_for(n, SECS(15)).await);
        assert_eq!(&pushes[n - 1].token, voip);
        assert_eq!(pushes[n - 1].body["extension"], ext.as_str());
        rig.finish(&mut call, SECS(30)).await;
    }
    rig.assert_clean().await;
}

/// PostgreSQL stopped mid-run: a call still pushes the device learned before (from the
/// devices in memory); a device learned while it is down reaches it once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_calls_push_from_memory_and_nothing_learned_is_lost() {
    let mut server = pushwake_testkit::postgres::TestPostgres::start()
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = server.url();
    let (before, during) = (token("pg-33-1"), token("pg-33-2"));
    let mut rig = Rig::asterisk(33, env!("CARGO_BIN_EXE_pushwake")).await;
    rig.register_contact(1, 1, 0, &generic(&before)).await;
    rig.register_contact(2, 1, 0, &generic(&during)).await;
    let config = rig.config().store(&url);
    rig.start(config).await;
    let (ext1, ext2) = (rig.phone_number(1), rig.phone_number(2));
    rig.register_contact(1, 1, 120, &generic(&before)).await;
    learned(&rig, &before).await;
    written(&rig, &ext1).await;

    server.stop().unwrap();
    rig.register_contact(1, 1, 0, &generic(&before)).await;
    let mut call = rig.call(&ext1, CallerEnd::Cancels { after_ms: 1500 });
    let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
    assert_eq!(pushes[0].token, before);
    rig.finish(&mut call, SECS(30)).await;

    // Learned while the database is down: pushed from memory, written once it is back.
    rig.register_contact(2, 1, 120, &generic(&during)).await;
    learned(&rig, &during).await;
    rig.wait_log("the device store is unavailable", SECS(15))
        .await;
    server.start_again().unwrap();
    written(&rig, &ext2).await;
    rig.register_contact(2, 1, 0, &generic(&during)).await;
    let stored = pushwake::store::DeviceStore::open(&pushwake::store::StoreConfig { url })
        .await
        .unwrap()
        .load_all()
        .await
        .unwrap();
    let tokens: Vec<&str> = stored.iter().map(|d| d.token.as_str()).collect();
    assert!(
        tokens.contains(&before.as_str()) && tokens.contains(&during.as_str()),
        "{stored:?}"
    );
    rig.assert_clean().await;
}
