//! The test Asterisk started by `scripts/asterisk-up`: the [`TestPbx`] the end-to-end
//! scenarios run on, plus what only Asterisk has (ARI: its channels and bridges).

use std::time::Duration;

use pushwake_asterisk::{AriClient, Channel};

use crate::pbx::TestPbx;
use crate::slot::Slot;

/// Where the test Asterisk listens, from the environment `scripts/asterisk-up` prints,
/// with the same defaults.
#[derive(Clone, Debug)]
pub struct TestAsterisk {
    /// ARI base URL.
    pub ari_url: String,
    /// ARI user.
    pub ari_user: String,
    /// ARI password.
    pub ari_password: String,
    /// SIP host:port of the test PBX.
    pub sip: String,
    client: AriClient,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl TestAsterisk {
    /// Connects to the test Asterisk; fails with what to do when it is not running (a
    /// test never skips silently).
    pub async fn connect() -> Result<Self, String> {
        let ari_url = env_or("PUSHWAKE_TEST_ARI_URL", "http://127.0.0.1:18088");
        let ari_user = env_or("PUSHWAKE_TEST_ARI_USER", "pushwake");
        let ari_password = env_or("PUSHWAKE_TEST_ARI_PASSWORD", "pushwake-test-secret");
        let sip = env_or("PUSHWAKE_TEST_SIP", "127.0.0.1:15060");
        let client =
            AriClient::new(&ari_url, &ari_user, &ari_password).map_err(|e| e.to_string())?;
        client.info().await.map_err(|e| {
            format!("no test Asterisk answers at {ari_url} ({e}); start one with `scripts/asterisk-up` (or run the whole suite with `scripts/test`)")
        })?;
        which("sipp").map_err(|e| {
            format!("{e}; install it with `apt-get install sip-tester` (scripts/asterisk-up does)")
        })?;
        Ok(Self {
            ari_url,
            ari_user,
            ari_password,
            sip,
            client,
        })
    }

    /// The same PBX, with pushwake's configuration pointing at ARI through `url` (e.g. a
    /// [`crate::proxy::TcpProxy`]); this process's own inspection client stays direct.
    pub fn through(&self, url: &str) -> Self {
        Self {
            ari_url: url.to_owned(),
            ..self.clone()
        }
    }

    /// An ARI client for inspecting the PBX.
    pub fn client(&self) -> &AriClient {
        &self.client
    }

    /// The slot's channels that exist now.
    pub async fn channels_of(&self, slot: Slot) -> Result<Vec<Channel>, String> {
        let all = self.client.channels().await.map_err(|e| e.to_string())?;
        Ok(all
            .into_iter()
            .filter(|c| slot.owns_channel(&c.name))
            .collect())
    }

    /// Waits until the slot has no channel and its application no bridge left.
    pub async fn wait_clean(&self, slot: Slot, timeout: Duration) -> Result<(), String> {
        let result =
            crate::wait_until("the slot's channels and bridges to go", timeout, || async {
                let channels = self.channels_of(slot).await.ok()?;
                let bridges = self.client.bridges().await.ok()?;
                (channels.is_empty() && !bridges.iter().any(|b| b.name == slot.app())).then_some(())
            })
            .await;
        if result.is_err() {
            let channels = self.channels_of(slot).await.unwrap_or_default();
            let names: Vec<String> = channels
                .iter()
                .map(|c| format!("{} ({}, {})", c.name, c.state, c.dialplan.app_name))
                .collect();
            let bridges = self.client.bridges().await.unwrap_or_default();
            let bridges: Vec<String> = bridges
                .iter()
                .filter(|b| b.name == slot.app())
                .map(|b| format!("{} {:?}", b.id, b.channels))
                .collect();
            return Err(format!(
                "left in Asterisk after {timeout:?}: channels {names:?}, bridges {bridges:?}"
            ));
        }
        Ok(())
    }
}

impl TestPbx for TestAsterisk {
    async fn connect() -> Result<Self, String> {
        TestAsterisk::connect().await
    }

    fn name(&self) -> &'static str {
        "Asterisk"
    }

    fn config_section(&self, app: &str) -> String {
        format!(
            "[asterisk]\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\napp = \"{app}\"\n",
            self.ari_url, self.ari_user, self.ari_password
        )
    }

    fn sip_address(&self) -> &str {
        &self.sip
    }

    async fn wait_clean(&self, slot: Slot, timeout: Duration) -> Result<(), String> {
        TestAsterisk::wait_clean(self, slot, timeout).await
    }
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Result<std::path::PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{program}` is not on PATH"))
}
