//! A FreeSWITCH for end-to-end tests and benchmarks without one: the Event Socket
//! stand-in ([`EslServer`], FreeSWITCH's captured frames), a local APNs server, and the
//! pushwake daemon configured for them, taking hand-overs as the dialplan's `socket`
//! application would give them ([`OutboundCall`]).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::apns::ApnsServer;
use crate::config::{ConfigBuilder, TestApns, TestExtension};
use crate::daemon::Daemon;
use crate::esl::outbound::{Channel, OutboundCall};
use crate::esl::{event_frame, sofia_register, url_encode, Answer, EslServer};
use crate::pbx::TestPbx;
use crate::slot::Slot;

/// The FreeSWITCH stand-in as the configuration builder sees it: its `[freeswitch]`
/// section. (The scenarios that run on the real Asterisk need more of a PBX than this.)
pub struct StandIn {
    /// Its `[freeswitch]` section.
    pub section: String,
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

/// The stand-in FreeSWITCH, a local APNs server, and pushwake on them with `extensions`.
pub struct FreeSwitchRig {
    /// The Event Socket stand-in.
    pub server: EslServer,
    /// The local APNs server the daemon pushes to.
    pub apns: ApnsServer,
    /// The daemon.
    pub daemon: Daemon,
    /// Where the daemon takes the hand-overs.
    pub listen: std::net::SocketAddr,
    binary: std::path::PathBuf,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FreeSwitchRig {
    /// Started with `extensions`, listening on `slot`'s `port`-th port (TCP); nothing
    /// registered, no channel. `binary` is the pushwake binary to run.
    pub async fn start_with(
        binary: &Path,
        slot: u8,
        port: u16,
        extensions: Vec<TestExtension>,
    ) -> Self {
        let filter =
            std::env::var("PUSHWAKE_TEST_LOG").unwrap_or_else(|_| "info,pushwake=debug".into());
        Self::start_with_env(binary, slot, port, extensions, &[("PUSHWAKE_LOG", &filter)]).await
    }

    /// Like [`FreeSwitchRig::start_with`], the daemon started with these environment
    /// variables (its own `PUSHWAKE_LOG`, say).
    pub async fn start_with_env(
        binary: &Path,
        slot: u8,
        port: u16,
        extensions: Vec<TestExtension>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_configured(binary, slot, port, extensions, "", env).await
    }

    /// Like [`FreeSwitchRig::start_with_env`], with `raw` (whole sections, `[messages]`
    /// say) added to the configuration.
    pub async fn start_configured(
        binary: &Path,
        slot: u8,
        port: u16,
        extensions: Vec<TestExtension>,
        raw: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], Slot::new(slot).port(port)));
        let server = EslServer::start().await;
        server.answer(
            "show channels",
            Answer::body("uuid,direction\n\n0 total.\n"),
        );
        for user in ["101", "102", "103"] {
            server.answer(
                &format!("sofia_contact {user}@127.0.0.1"),
                Answer::body("error/user_not_registered"),
            );
        }
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
        // The missed-call alert's topic: a device with an alert_token is told of a call
        // that ended without it.
        let mut config = ConfigBuilder::new(dir.path(), &stand_in, "unused")
            .apns(&apns, &apns_server.endpoint())
            .apns_option("alert_topic", "com.example.phone");
        for extension in extensions {
            config = config.extension(extension);
        }
        if !raw.is_empty() {
            config = config.raw(raw);
        }
        let config = config.write().unwrap();
        let daemon = Daemon::start_with_env(binary, &config, crate::daemon::SERVING, env)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            server,
            apns: apns_server,
            daemon,
            listen,
            binary: binary.to_owned(),
            config,
            _dir: dir,
        }
    }

    /// A new daemon on the same configuration, in place of the current one (killed with
    /// SIGKILL first if it still runs: a crash).
    pub async fn restart(&mut self) {
        self.daemon.kill().await;
        self.daemon = Daemon::start_until(&self.binary, &self.config, crate::daemon::SERVING)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The dialplan hands a call for `extension` over.
    pub async fn call(&self, channel: &str, extension: &str) -> OutboundCall {
        OutboundCall::connect_to(self.listen, Channel::new(channel, extension))
            .await
            .unwrap()
    }

    /// The `pushwake-member` context hands over the "b" leg of a ring group's (or a
    /// queue's) loopback member for `extension` ([`Channel::loopback_member`]).
    pub async fn member_call(&self, channel: &str, extension: &str) -> OutboundCall {
        OutboundCall::connect_to(self.listen, Channel::loopback_member(channel, extension))
            .await
            .unwrap()
    }

    /// Waits until pushwake gives `call` back with `status` (set, then exit).
    pub async fn given_back(&self, call: &OutboundCall, status: &str, within: Duration) {
        let set = Some(("set".to_owned(), Some(format!("pushwake_status={status}"))));
        call.wait_command(within, |c| c.execute() == set)
            .await
            .unwrap_or_else(|| {
                panic!("not given back with {status}; log:\n{}", self.daemon.logs())
            });
        assert!(
            call.wait_closed(Duration::from_secs(10)).await,
            "exit ends the hand-over"
        );
    }

    /// Waits for pushwake's `bgapi originate`; its command and the leg's uuid.
    pub async fn originate(&self) -> (String, String) {
        let command = self
            .server
            .wait_command(Duration::from_secs(10), |r| {
                r.command.starts_with("bgapi originate")
            })
            .await
            .unwrap_or_else(|| panic!("no originate; log:\n{}", self.daemon.logs()))
            .command;
        let leg = leg_of(&command);
        (command, leg)
    }

    /// Waits until pushwake has sent exactly `command` (`api uuid_kill …`); fails with
    /// the daemon's log.
    pub async fn sent(&self, command: &str) {
        self.server
            .wait_command(Duration::from_secs(10), |r| r.command == command)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "pushwake never sent {command:?}; log:\n{}",
                    self.daemon.logs()
                )
            });
    }
}

/// The leg's uuid in an `originate` command (its `origination_uuid`).
pub fn leg_of(originate: &str) -> String {
    originate
        .split("origination_uuid=")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .expect("the originate names its leg's uuid")
        .to_owned()
}

/// The captured `sofia::register` (events.log) of `user` with this contact instead.
pub fn register_of(user: &str, contact: &str) -> Vec<u8> {
    let captured = String::from_utf8(sofia_register()).unwrap();
    let (_, body) = captured.split_once("\n\n").expect("a framed event");
    let body: String = body
        .lines()
        .map(|line| match line.split_once(": ") {
            Some(("from-user" | "username" | "to-user", _)) => {
                format!("{}: {user}", line.split_once(": ").unwrap().0)
            }
            Some(("contact", _)) => format!("contact: {}", url_encode(contact)),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    event_frame(&format!("{body}\n"))
}
