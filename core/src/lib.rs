//! The core of pushwake: the wake logic as a plain state machine, and the vocabulary
//! that every PBX adapter and every push provider shares.
//!
//! Nothing here opens a socket, spawns a task, reads a clock or draws a random number
//! by itself: PBX events, push verdicts and the current time go in, commands come out,
//! and randomness is handed in ([`random::Randomness`]). That is what lets the tests of
//! [`wake`] replay any call exactly, without a runtime and without sleeping.
//!
//! The pieces:
//! - [`pbx`]: what a PBX adapter reports ([`pbx::PbxEvent`]) and carries out
//!   ([`pbx::PbxCommand`]), in words no particular PBX uses. The adapters live in the
//!   workspace's `adapters/` folder, one crate per PBX.
//! - [`directory`]: the push-enabled extensions and their devices.
//! - [`messages`]: the outbox keeping SIP MESSAGEs for sleeping phones.
//! - [`push`]: what a push says about a call and what became of it.
//! - [`status`]: a call's status as the call status endpoint reports it.
//! - [`rfc8599`]: the push parameters phones put in their SIP contacts.
//! - [`wake`]: the state machine itself.
//! - [`config`]: the shared rules of `pushwake.toml` (sections by name, errors naming
//!   file and line), so each adapter and provider reads its own section.
//! - [`random`]: where the engine's randomness comes from.
//! - [`redact`]: serde's error messages without the values they quote (secrets).

pub mod config;
pub mod directory;
pub mod messages;
pub mod pbx;
pub mod push;
pub mod random;
pub mod redact;
pub mod rfc8599;
pub mod status;
pub mod wake;
