//! FreeSWITCH for pushwake: everything pushwake knows about FreeSWITCH, and the only
//! crate that knows it.
//!
//! - [`frame`]: the Event Socket's wire format as a plain parser (bytes in, typed
//!   [`Frame`]s out).
//! - [`client`]: one authenticated inbound connection ([`EslConnection`]: `api`, `bgapi`
//!   with its `BACKGROUND_JOB` matched by `Job-UUID`, events on a channel, a keep-alive
//!   that notices a dead peer), and a client that keeps one up ([`spawn_client`]:
//!   reconnects with backoff and says [`EslFeed::Connected`] after each connect).
//! - [`outbound`]: the calls the dialplan's `socket` application hands over, one
//!   connection each ([`OutboundListener`], [`CallSocket`]).
//! - [`translate`]: FreeSWITCH's events and replies in the engine's vocabulary, and the
//!   engine's commands as Event Socket commands (plain functions, no I/O).
//! - [`control`]: FreeSWITCH as the engine's PBX ([`FreeSwitchPbx`]), on all of the above.
//! - [`config`]: the `[freeswitch]` section.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod control;
pub mod frame;
pub mod outbound;
pub mod translate;

pub use client::{
    spawn_client, BackgroundJob, EslClient, EslConfig, EslConnection, EslError, EslFeed, KeepAlive,
    Password,
};
pub use config::FreeSwitchConfig;
pub use control::FreeSwitchPbx;
pub use frame::{CommandReply, Event, Frame, FrameError, FrameReader, Headers};
pub use outbound::{CallSocket, HandedOver, OutboundListener};
