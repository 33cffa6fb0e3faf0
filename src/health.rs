//! Whether the PBX's event stream is up, as `/healthz` reports it: the driver records
//! every `Connected`/`Disconnected` it hands the engine.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use pushwake_core::pbx::PbxEvent;

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const DISCONNECTED: u8 = 2;

/// The PBX connection's state, shared by the driver (writer) and the HTTP listener
/// (reader). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PbxHealth(Arc<AtomicU8>);

/// What [`PbxHealth::state`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbxState {
    /// Not connected yet since pushwake started.
    Connecting,
    /// Events flow: calls are handed over and served.
    Connected,
    /// The connection was lost; pushwake is reconnecting. Calls the dialplan hands
    /// over meanwhile go on to their normal route.
    Disconnected,
}

impl PbxState {
    /// The word `/healthz` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            PbxState::Connecting => "connecting",
            PbxState::Connected => "connected",
            PbxState::Disconnected => "disconnected",
        }
    }
}

impl PbxHealth {
    /// Records what `event` says of the connection (other events change nothing).
    pub fn observe(&self, event: &PbxEvent) {
        match event {
            PbxEvent::Connected(_) => self.0.store(CONNECTED, Ordering::Relaxed),
            PbxEvent::Disconnected => self.0.store(DISCONNECTED, Ordering::Relaxed),
            _ => {}
        }
    }

    /// The state now.
    pub fn state(&self) -> PbxState {
        match self.0.load(Ordering::Relaxed) {
            CONNECTING => PbxState::Connecting,
            CONNECTED => PbxState::Connected,
            _ => PbxState::Disconnected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_connection_events() {
        let health = PbxHealth::default();
        assert_eq!(health.state(), PbxState::Connecting);
        health.observe(&PbxEvent::Connected(Default::default()));
        assert_eq!(health.state(), PbxState::Connected);
        health.observe(&PbxEvent::LegRinging { leg: "x".into() });
        assert_eq!(health.state(), PbxState::Connected);
        health.observe(&PbxEvent::Disconnected);
        assert_eq!(health.clone().state(), PbxState::Disconnected);
    }
}
