//! The operating system's CSPRNG as the wake engine's randomness: call ids, leg ids and
//! status secrets (credentials an app presents) come from it.

use pushwake_core::random::Randomness;

/// Random bytes from the operating system (`getrandom`), through aws-lc-rs, the
/// library pushwake's other cryptography uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Randomness for OsRandom {
    /// # Panics
    /// If the operating system's random number generator fails, which happens only on a
    /// broken system: no call could be given a secret then.
    fn fill(&mut self, bytes: &mut [u8]) {
        use aws_lc_rs::rand::SecureRandom;
        aws_lc_rs::rand::SystemRandom::new()
            .fill(bytes)
            .expect("the system's random number generator failed");
    }
}
