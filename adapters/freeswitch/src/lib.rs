//! FreeSWITCH for pushwake, through its Event Socket (mod_event_socket, inbound mode):
//! everything pushwake knows about FreeSWITCH, and the only crate that knows it.
//!
//! - [`frame`]: the wire format as a plain parser (bytes in, typed [`Frame`]s out).
//! - [`client`]: one authenticated connection ([`EslConnection`]: `api`, `bgapi` with its
//!   `BACKGROUND_JOB` matched by `Job-UUID`, events on a channel, a keep-alive that
//!   notices a dead peer), and a client that keeps one up ([`spawn_client`]: reconnects
//!   with backoff and says [`EslFeed::Connected`] after each connect).
//!
//! - [`translate`]: FreeSWITCH's events and replies in the engine's vocabulary, and the
//!   engine's commands as Event Socket commands (plain functions, no I/O).
//!
//! - [`config`]: the `[freeswitch]` section.
//!
//! Call control comes next, on top of these.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod frame;
pub mod outbound;
pub mod translate;

pub use client::{
    spawn_client, BackgroundJob, EslClient, EslConfig, EslConnection, EslError, EslFeed, KeepAlive,
    Password,
};
pub use config::FreeSwitchConfig;
pub use frame::{CommandReply, Event, Frame, FrameError, FrameReader, Headers};
pub use outbound::{CallSocket, HandedOver, OutboundListener};
