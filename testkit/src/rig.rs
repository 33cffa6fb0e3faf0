//! The set-up every end-to-end scenario shares, so a test reads as its scenario: the PBX
//! under test (any [`TestPbx`]), the test's [`Slot`], a local APNs server (every
//! configuration has `[apns]`), a directory for the configuration, the real `pushwake`
//! daemon, and sipp callers and phones on the slot's numbers and ports. Whatever fails
//! panics with the daemon's log.
//!
//! ```text
//! let mut rig = Rig::asterisk(10, env!("CARGO_BIN_EXE_pushwake")).await;
//! let ext = rig.phone_number(1);
//! rig.start(rig.config().extension(TestExtension::new(&ext, "20s").device(…))).await;
//! let mut call = rig.call(&ext, CallerEnd::Refused(480));
//! let pushes = rig.unwrap(rig.apns_server.wait_for(1, SECS(15)).await);
//! rig.finish(&mut call, SECS(30)).await;
//! rig.assert_clean().await;
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apns::ApnsServer;
use crate::asterisk::TestAsterisk;
use crate::config::{ConfigBuilder, TestApns};
use crate::daemon::Daemon;
use crate::pbx::TestPbx;
use crate::sipp::{CallerEnd, Phone, SippRun};
use crate::slot::Slot;

/// How long [`Rig::assert_clean`] gives the PBX to drop a slot's calls.
pub const CLEAN_TIMEOUT: Duration = Duration::from_secs(10);

/// One scenario's set-up (see the module documentation).
pub struct Rig<P: TestPbx = TestAsterisk> {
    /// The PBX under test.
    pub pbx: P,
    /// The test's slot.
    pub slot: Slot,
    /// The APNs credentials of [`Rig::config`].
    pub apns: TestApns,
    /// The local APNs server [`Rig::config`] points `[apns]` at.
    pub apns_server: ApnsServer,
    binary: PathBuf,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    daemon: Option<Daemon>,
}

impl Rig<TestAsterisk> {
    /// A rig on the test Asterisk (`scripts/asterisk-up`) for slot `slot`, running the
    /// `pushwake` at `binary` (in a test: `env!("CARGO_BIN_EXE_pushwake")`).
    pub async fn asterisk(slot: u8, binary: impl Into<PathBuf>) -> Self {
        Self::connect(slot, binary).await
    }

    /// Like [`Rig::asterisk`], with the daemon reaching ARI (REST and WebSocket) through
    /// a [`TcpProxy`](crate::proxy::TcpProxy) the test controls.
    pub async fn asterisk_behind_proxy(
        slot: u8,
        binary: impl Into<PathBuf>,
    ) -> (Self, crate::proxy::TcpProxy) {
        let pbx = TestAsterisk::connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let proxy = crate::proxy::TcpProxy::for_url(&pbx.ari_url)
            .await
            .unwrap_or_else(|e| panic!("cannot start the proxy: {e}"));
        let rig = Self::new(pbx.through(&proxy.url()), slot, binary).await;
        (rig, proxy)
    }
}

impl<P: TestPbx> Rig<P> {
    /// A rig on the running test PBX of type `P`; panics with what to do if there is none.
    pub async fn connect(slot: u8, binary: impl Into<PathBuf>) -> Self {
        let pbx = P::connect().await.unwrap_or_else(|e| panic!("{e}"));
        Self::new(pbx, slot, binary).await
    }

    /// A rig on `pbx`: the slot, a local APNs server with fresh credentials and an empty
    /// directory; no daemon yet ([`Rig::start`]).
    pub async fn new(pbx: P, slot: u8, binary: impl Into<PathBuf>) -> Self {
        let slot = Slot::new(slot);
        let apns = TestApns::generate();
        let apns_server = ApnsServer::start(apns.expectations())
            .await
            .unwrap_or_else(|e| panic!("cannot start the local APNs server: {e}"));
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
        Self {
            pbx,
            slot,
            apns,
            apns_server,
            binary: binary.into(),
            dir,
            config: None,
            daemon: None,
        }
    }

    /// The directory the configuration and its files go to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The application pushwake serves the slot's calls as.
    pub fn app(&self) -> String {
        self.pbx.app(self.slot)
    }

    /// The slot's caller endpoint.
    pub fn caller(&self) -> String {
        self.pbx.caller(self.slot)
    }

    /// The slot's phone extension `k`.
    pub fn phone_number(&self, k: u8) -> String {
        self.pbx.phone(self.slot, k)
    }

    /// A configuration for the slot's application with `[apns]` at the rig's APNs server;
    /// add extensions and sections, then [`Rig::start`] it.
    pub fn config(&self) -> ConfigBuilder {
        ConfigBuilder::new(self.dir(), &self.pbx, &self.app())
            .apns(&self.apns, &self.apns_server.endpoint())
    }

    /// Writes `config` and starts the daemon on it (waiting until it is connected to the
    /// PBX).
    pub async fn start(&mut self, config: ConfigBuilder) {
        let path = config
            .write()
            .unwrap_or_else(|e| panic!("cannot write the configuration: {e}"));
        self.config = Some(path);
        self.restart().await;
    }

    /// Starts a new daemon on the same configuration, in place of the current one (killed
    /// first if it still runs).
    pub async fn restart(&mut self) {
        let config = self.config_path().to_owned();
        self.daemon = None;
        let daemon = Daemon::start(&self.binary, &config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.daemon = Some(daemon);
    }

    /// The written configuration.
    pub fn config_path(&self) -> &Path {
        self.config
            .as_deref()
            .expect("the rig's configuration is written by Rig::start")
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .expect("the rig's daemon is not started")
    }

    /// The running daemon, to kill or stop it.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon
            .as_mut()
            .expect("the rig's daemon is not started")
    }

    /// The daemon's log so far (empty before it starts).
    pub fn logs(&self) -> String {
        self.daemon.as_ref().map(Daemon::logs).unwrap_or_default()
    }

    /// The value, or a panic with the error and the daemon's log.
    pub fn unwrap<T>(&self, result: Result<T, String>) -> T {
        result.unwrap_or_else(|e| panic!("{e}\npushwake log:\n{}", self.logs()))
    }

    /// Waits for a daemon log line containing `needle`; returns it (panics with the log
    /// after `timeout`).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let line = self.daemon().wait_log(needle, timeout).await;
        line.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The slot's caller dialling `to`, expecting the call to end as `end`.
    pub fn call(&self, to: &str, end: CallerEnd) -> SippRun {
        let run = SippRun::caller(
            self.pbx.sip_address(),
            &self.caller(),
            to,
            self.slot.port(0),
            end,
        );
        self.unwrap(run)
    }

    /// The slot's caller sending `message` to extension `to` (from the caller's port:
    /// not while that caller is in a call); waits for the expected final response.
    pub async fn send_message(&self, to: &str, message: &crate::sipp::OutgoingMessage) {
        let run = SippRun::sender(
            self.pbx.sip_address(),
            &self.caller(),
            to,
            self.slot.port(0),
            message,
        );
        let mut run = self.unwrap(run);
        self.finish(&mut run, Duration::from_secs(15)).await;
    }

    /// The slot's caller dialling `to` from UDP port `local_port` (for many callers at
    /// once: [`Slot::extra_port`]), expecting the call to end as `end`.
    pub fn call_from(&self, local_port: u16, to: &str, end: CallerEnd) -> SippRun {
        let run = SippRun::caller(self.pbx.sip_address(), &self.caller(), to, local_port, end);
        self.unwrap(run)
    }

    /// Device `device` of phone `k` awake: sipp listening on its contact port, behaving
    /// as `behaviour` when an INVITE comes (it is not registered by this).
    pub async fn phone(&self, k: u8, device: u8, behaviour: Phone) -> SippRun {
        let run = SippRun::phone(self.slot.contact_port(k, device), behaviour).await;
        self.unwrap(run)
    }

    /// One REGISTER of device `device` of phone `k` with its contact, `expires` seconds
    /// (0 unregisters), the RFC 8599 `pn-prid` `pn_prid`.
    pub async fn register(&self, k: u8, device: u8, expires: u32, pn_prid: &str) {
        let run = SippRun::register(
            self.pbx.sip_address(),
            &self.phone_number(k),
            self.slot.register_port(k, device),
            self.slot.contact_port(k, device),
            expires,
            pn_prid,
        )
        .await;
        self.unwrap(run);
    }

    /// One REGISTER of device `device` of phone `k` whose contact carries
    /// `contact_params` whole (`;transport=udp;pn-provider=…`); `expires` 0 unregisters.
    pub async fn register_contact(&self, k: u8, device: u8, expires: u32, contact_params: &str) {
        let run = SippRun::register_contact(
            self.pbx.sip_address(),
            &self.phone_number(k),
            self.slot.register_port(k, device),
            self.slot.contact_port(k, device),
            expires,
            contact_params,
        )
        .await;
        self.unwrap(run);
    }

    /// A REGISTER of device `device` of phone `k` (an endpoint that must authenticate)
    /// with `password`, `expires` (0 unregisters) and `contact_params`: the PBX's final
    /// answer (200, 401, 403).
    pub async fn register_with_password(
        &self,
        k: u8,
        device: u8,
        password: &str,
        expires: u32,
        contact_params: &str,
    ) -> u16 {
        let run = SippRun::register_with_password(
            self.pbx.sip_address(),
            &self.phone_number(k),
            password,
            self.slot.register_port(k, device),
            self.slot.contact_port(k, device),
            expires,
            contact_params,
        )
        .await;
        self.unwrap(run)
    }

    /// Waits for a sipp run to end as its scenario says.
    pub async fn finish(&self, run: &mut SippRun, timeout: Duration) {
        let result = run.finish(timeout).await;
        self.unwrap(result)
    }

    /// Waits until the PBX holds nothing of the slot's calls.
    pub async fn assert_clean(&self) {
        let result = self.pbx.wait_clean(self.slot, CLEAN_TIMEOUT).await;
        self.unwrap(result)
    }
}

/// The `X-Pushwake-Call-Id` of the INVITE `phone` got; panics with its report if none.
pub fn call_id_seen_by(phone: &SippRun) -> String {
    phone.pushwake_call_id().unwrap_or_else(|| {
        panic!(
            "the phone logged no X-Pushwake-Call-Id:\n{}",
            phone.report()
        )
    })
}
