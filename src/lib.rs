//! pushwake: makes a PBX ring mobile softphones that are asleep.
//!
//! When a call arrives for a push-enabled extension, pushwake holds the caller with
//! ringback, sends each of the extension's devices a VoIP push, dials every contact the
//! extension has registered (and each new one that registers while the caller waits),
//! bridges the first device that answers, and otherwise returns the caller to the
//! dialplan with a `PUSHWAKE_STATUS`.
//!
//! The pieces:
//! - [`config`]: the TOML file, checked with errors that name file, line and key.
//! - [`directory`]: push-enabled extensions and their devices.
//! - [`wake`]: the call/wake logic as a plain state machine (no I/O, no runtime).
//! - [`driver`]: the async driver that runs the state machine against a PBX.
//! - [`pbx`]: the PBX-agnostic vocabulary between the two; [`asterisk`] maps ARI onto it.
//! - [`push`]: push providers behind one interface; [`test_push`] the operators' check.
//! - [`status`]: what each call's status is, for apps woken late; [`http`] serves it.

pub mod asterisk;
pub mod config;
pub mod directory;
pub mod driver;
pub mod http;
pub mod pbx;
pub mod push;
pub mod status;
pub mod test_push;
pub mod wake;
