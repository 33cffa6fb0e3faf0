//! The real pushwake binary on FreeSWITCH, as far as CI can have one: the test Event
//! Socket server speaks the frames a real FreeSWITCH 1.11.1 sent (the captures), a test
//! FreeSWITCH dials out to pushwake's `socket` listener as the dialplan would, and a
//! local APNs server takes the pushes. A call for a sleeping phone: rung, pushed, the
//! phone's `sofia::register` dialled at once with the call's id, its answer bridged,
//! the hang-ups; then a call nobody answers goes back with TIMEOUT.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::{ConfigBuilder, TestApns, TestDevice, TestExtension};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::esl::outbound::{Channel, OutboundCall};
use pushwake_testkit::esl::{channel_event, sofia_register, Answer, EslServer};
use pushwake_testkit::pbx::TestPbx;
use pushwake_testkit::slot::Slot;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// This file's TCP port for pushwake's `socket` listener (slot 35's numbers).
const SLOT: u8 = 35;
const CALLER: &str = "e48d5ed0-81cd-4bb8-b8fa-afe5b70856cd";
const SECOND: &str = "a1b2c3d4-0000-4000-8000-00000000abcd";
/// The contact of the captured `sofia::register` (`esl::sofia_register`).
const CONTACT: &str = "sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip";

/// The FreeSWITCH stand-in as the configuration builder sees it: its `[freeswitch]`
/// section. (The scenarios that run on the real Asterisk need more of a PBX than this.)
struct StandIn {
    section: String,
}

impl TestPbx for StandIn {
    async fn connect() -> Result<Self, String> {
        Err("the FreeSWITCH stand-in is made by the test itself".into())
    }

    fn name(&self) -> &'static str {
        "FreeSWITCH (test Event Socket server)"
    }

    fn config_section(&self, _app: &str) -> String {
        self.section.clone()
    }

    fn sip_address(&self) -> &str {
        "127.0.0.1:5090"
    }

    async fn wait_clean(&self, _slot: Slot, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }
}

fn voip_token() -> String {
    "35".repeat(32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_freeswitch_pushes_dials_the_woken_phone_and_bridges_it() {
    let slot = Slot::new(SLOT);
    let listen = format!("127.0.0.1:{}", slot.port(0));
    let server = EslServer::start().await;
    server.answer(
        "show channels",
        Answer::body("uuid,direction\n\n0 total.\n"),
    );
    // The phone is asleep: nothing registered.
    server.answer(
        "sofia_contact 101@127.0.0.1",
        Answer::body("error/user_not_registered"),
    );
    let apns = TestApns::generate();
    let apns_server = ApnsServer::start(apns.expectations()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("esl.password");
    std::fs::write(&password, "ClueCon\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stand_in = StandIn {
        section: format!(
            "[freeswitch]\naddress = \"{}\"\npassword_file = \"{}\"\nlisten = \"{listen}\"\ndomain = \"127.0.0.1\"\n",
            server.address(),
            password.display()
        ),
    };
    let config = ConfigBuilder::new(dir.path(), &stand_in, "unused")
        .apns(&apns, &apns_server.endpoint())
        .extension(TestExtension::new("101", "10s").device(TestDevice::apns(voip_token())))
        .write()
        .unwrap();
    let mut daemon = Daemon::start_until(
        Path::new(env!("CARGO_BIN_EXE_pushwake")),
        &config,
        "FreeSWITCH event socket connected",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let listen_addr = listen.parse().unwrap();

    // The dialplan hands a call for 101 over; pushwake rings the caller and pushes.
    let call = OutboundCall::connect_to(listen_addr, Channel::new(CALLER, "101"))
        .await
        .unwrap();
    call.wait_command(SECS(10), |c| {
        c.execute() == Some(("ring_ready".to_owned(), None))
    })
    .await
    .unwrap_or_else(|| panic!("no ring_ready; log:\n{}", daemon.logs()));
    let pushes = apns_server
        .wait_for(1, SECS(15))
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.logs()));
    assert_eq!(pushes[0].token, voip_token());
    assert_eq!(pushes[0].body["extension"], "101");
    let call_id = pushes[0].body["call_id"].as_str().unwrap().to_owned();

    // Woken, the phone registers: pushwake originates to that very contact at once,
    // with the call's id on the INVITE.
    server.hold_jobs(None);
    assert_eq!(server.push_event(&sofia_register()), 1);
    let originate = server
        .wait_command(SECS(10), |r| r.command.starts_with("bgapi originate"))
        .await
        .unwrap_or_else(|| panic!("no originate; log:\n{}", daemon.logs()));
    let command = originate.command;
    assert!(
        command.contains(&format!("sip_h_X-Pushwake-Call-Id={call_id}"))
            && command.contains(&format!("pushwake_caller={CALLER}"))
            && command.ends_with(&format!("}}sofia/internal/{CONTACT} &park()")),
        "{command}"
    );
    let leg = command
        .split("origination_uuid=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the leg's uuid")
        .to_owned();

    // It answers: pushwake bridges it to the caller.
    for command in [
        format!("uuid_setvar {CALLER} pushwake_status ANSWERED"),
        format!("uuid_answer {CALLER}"),
        format!("uuid_bridge {CALLER} {leg}"),
    ] {
        server.answer(&command, Answer::body("+OK\n"));
    }
    server.push_event(&channel_event(
        "CHANNEL_ANSWER",
        &[
            ("Unique-ID", &leg),
            ("Call-Direction", "outbound"),
            ("variable_pushwake_call", &call_id),
        ],
    ));
    server
        .wait_command(SECS(10), |r| {
            r.command == format!("api uuid_bridge {CALLER} {leg}")
        })
        .await
        .unwrap_or_else(|| panic!("no bridge; log:\n{}", daemon.logs()));
    let sent = server.commands();
    let at = |c: &str| sent.iter().position(|s| s == c).unwrap();
    assert!(
        at(&format!(
            "api uuid_setvar {CALLER} pushwake_status ANSWERED"
        )) < at(&format!("api uuid_answer {CALLER}"))
            && at(&format!("api uuid_answer {CALLER}"))
                < at(&format!("api uuid_bridge {CALLER} {leg}")),
        "{sent:?}"
    );

    daemon
        .wait_log("caller connected", SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // They talk, then the caller hangs up: both channels end.
    for id in [CALLER, leg.as_str()] {
        server.push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("Unique-ID", id)],
        ));
    }
    daemon
        .wait_log(&format!("caller hung up call={call_id}"), SECS(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A second call nobody answers: back to the dialplan with TIMEOUT after 10 s.
    let second = OutboundCall::connect_to(listen_addr, Channel::new(SECOND, "101"))
        .await
        .unwrap();
    second
        .wait_command(SECS(25), |c| {
            c.execute() == Some(("set".to_owned(), Some("pushwake_status=TIMEOUT".to_owned())))
        })
        .await
        .unwrap_or_else(|| panic!("no TIMEOUT; log:\n{}", daemon.logs()));
    assert!(
        second.wait_closed(SECS(10)).await,
        "exit ends the hand-over"
    );
    assert!(!daemon.logs().contains(&voip_token()), "a token in the log");
    let stopped = daemon.terminate(SECS(10)).await.unwrap();
    assert!(stopped.success(), "{stopped:?}");
}
