//! Test slots: each test owns one, so tests run in parallel against one Asterisk without
//! touching each other's endpoints, ARI application or ports.
//!
//! Slot `TT` (10..=39) has the caller endpoint `TT00`, phones `TT01`..`TT05`, the ARI
//! application `pwtTT` (the test dialplan runs `Stasis(pwtTT,TTNN)` for a call to
//! `TTNN`) and the UDP ports `20000 + 20·TT + n` for n in 0..20: port 0 for the caller,
//! 2..=9 for the phones' contacts and 12..=19 for the ports they register from (device
//! `d` of phone `k` at `2k + d - 1` and `10 + 2k + d - 1`).

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

    /// The slot's `n`th extra UDP port (n < 40), for scenarios that need many callers at
    /// once: `21000 + 40·(TT − 10) + n`, outside every slot's own 20 ports.
    pub fn extra_port(&self, n: u16) -> u16 {
        assert!(n < 40);
        21000 + 40 * (u16::from(self.0) - 10) + n
    }

    /// Where device `device` (1 or 2) of phone `k` (1..=4) listens once awake: its
    /// registered contact's port.
    pub fn contact_port(&self, k: u8, device: u8) -> u16 {
        assert!((1..=4).contains(&k) && (1..=2).contains(&device));
        self.port(u16::from(k) * 2 + u16::from(device) - 1)
    }

    /// The port device `device` of phone `k` sends its REGISTERs from.
    pub fn register_port(&self, k: u8, device: u8) -> u16 {
        self.contact_port(k, device) + 10
    }

    /// Whether an Asterisk channel name belongs to this slot's endpoints: their SIP
    /// channels, and the Local channels that dial them as a group's members.
    pub fn owns_channel(&self, name: &str) -> bool {
        name.starts_with(&format!("PJSIP/{}0", self.0))
            || name.starts_with(&format!("Local/{}0", self.0))
    }
}
