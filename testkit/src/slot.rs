//! Test slots: each test owns one, so tests run in parallel against one Asterisk without
//! touching each other's endpoints, ARI application or ports.
//!
//! Slot `TT` (10..=39) has the caller endpoint `TT00`, phones `TT01`..`TT05`, the ARI
//! application `pwtTT` (the test dialplan runs `Stasis(pwtTT,TTNN)` for a call to
//! `TTNN`) and the UDP ports `20000 + 20·TT + n` for n in 0..20.

/// One test slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u8);

impl Slot {
    /// A slot; panics outside 10..=39 (the test PBX has endpoints for those only).
    pub fn new(id: u8) -> Self {
        assert!((10..=39).contains(&id), "test slots are 10..=39, not {id}");
        Self(id)
    }

    /// The caller endpoint (`TT00`).
    pub fn caller(&self) -> String {
        format!("{}00", self.0)
    }

    /// Phone extension `k` (1..=5): `TT0k`.
    pub fn phone(&self, k: u8) -> String {
        assert!((1..=5).contains(&k));
        format!("{}0{k}", self.0)
    }

    /// The ARI application name of this slot.
    pub fn app(&self) -> String {
        format!("pwt{}", self.0)
    }

    /// The slot's `n`th UDP port (n < 20).
    pub fn port(&self, n: u16) -> u16 {
        assert!(n < 20);
        20000 + 20 * u16::from(self.0) + n
    }

    /// Whether an Asterisk channel name belongs to this slot's endpoints.
    pub fn owns_channel(&self, name: &str) -> bool {
        name.starts_with(&format!("PJSIP/{}0", self.0))
    }
}
