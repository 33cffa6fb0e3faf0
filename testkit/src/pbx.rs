//! The PBX under test, as a scenario sees it: what the rig ([`crate::rig`]) and the
//! configuration builder ([`crate::config`]) need from it, whichever PBX it is.
//!
//! [`TestAsterisk`](crate::asterisk::TestAsterisk) implements it; a FreeSWITCH stand-in
//! implementing it runs the same scenarios. What only one PBX has (Asterisk's ARI
//! channels and bridges) stays in that PBX's own type, for the tests that are about it.

use std::future::Future;
use std::time::Duration;

use crate::slot::Slot;

/// A PBX that end-to-end scenarios run against.
///
/// Its test configuration follows the slot plan of [`Slot`]: slot `TT` has the caller
/// endpoint `TT00` and the phones `TT01`..`TT05`, a call to a phone goes to pushwake as
/// application `pwtTT`. The numbering methods default to that plan.
pub trait TestPbx: Send + Sync + Sized + 'static {
    /// Connects to the running test PBX; fails with what to do when there is none (a
    /// test never skips silently).
    fn connect() -> impl Future<Output = Result<Self, String>> + Send;

    /// The PBX's name, for messages ("Asterisk").
    fn name(&self) -> &'static str;

    /// The PBX part of a pushwake configuration that serves calls as application `app`
    /// (for Asterisk the `[asterisk]` section: url, username, password, app), ending
    /// with a newline.
    fn config_section(&self, app: &str) -> String;

    /// Where callers and phones send SIP: `host:port`.
    fn sip_address(&self) -> &str;

    /// The application pushwake serves `slot`'s calls as.
    fn app(&self, slot: Slot) -> String {
        slot.app()
    }

    /// The caller endpoint of `slot`.
    fn caller(&self, slot: Slot) -> String {
        slot.caller()
    }

    /// Phone extension `k` (1..=5) of `slot`.
    fn phone(&self, slot: Slot, k: u8) -> String {
        slot.phone(k)
    }

    /// Waits until the PBX holds nothing of `slot`'s calls any more (for Asterisk: no
    /// channel of the slot's endpoints, no bridge of its application); the error says
    /// what is left.
    fn wait_clean(
        &self,
        slot: Slot,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;
}
