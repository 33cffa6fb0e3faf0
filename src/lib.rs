//! pushwake: makes a PBX ring mobile softphones that are asleep.
//!
//! When a call arrives for a push-enabled extension, pushwake holds the caller with
//! ringback, sends each of the extension's devices a push, dials every contact the
//! extension has registered (and each new one that registers while the caller waits),
//! connects the first device that answers, and otherwise returns the caller to the
//! dialplan with a `PUSHWAKE_STATUS`.
//!
//! The wake logic itself is the `pushwake-core` crate, a plain state machine; each PBX
//! has its adapter crate under `adapters/`. This crate is the daemon around them:
//! - [`config`]: the TOML file; [`pbx`]: which adapter reads its section and runs.
//! - [`driver`]: the async driver that runs the state machine against a PBX adapter.
//! - [`push`]: push providers behind one interface, each reading its own section;
//!   [`test_push`] the operators' check.
//! - [`status`]: what each call's status is, for apps woken late; [`http`] serves it.
//! - [`logging`]: the log filter, which keeps the libraries' secrets out of the log.
//! - [`random`]: the randomness the engine is given.
//! - [`metrics`]: the Prometheus metrics and their endpoint; [`health`] and
//!   [`systemd`]: what `/healthz` and systemd's watchdog are told.
//! - [`store`]: the devices that registered themselves, kept in SQLite or PostgreSQL.

pub mod config;
pub mod devices;
pub mod driver;
pub mod health;
pub mod http;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod pbx;
pub mod push;
pub mod random;
pub mod status;
pub mod store;
pub mod systemd;
pub mod test_push;
