//! Asterisk for pushwake, through its REST Interface (ARI): everything pushwake knows
//! about Asterisk, and the only crate that knows it.
//!
//! - [`client`], [`events`], [`model`]: ARI itself — a REST client ([`AriClient`]), the
//!   typed events pushwake reacts to ([`AriEvent`]) and an event pump that keeps the
//!   application's WebSocket connected ([`spawn_event_pump`]).
//! - [`control`]: Asterisk as a PBX for the wake logic ([`AsteriskPbx`]): ARI events
//!   become the core's PBX-neutral events, the core's commands become ARI requests, and
//!   the reconnect snapshot is sorted into callers, legs and conversations.
//! - [`rival`]: making sure no other client serves pushwake's application (one
//!   application name, one WebSocket).
//! - [`contacts`]: waiting calls' contact listings, read for many calls at once
//!   ([`ContactLister`]).
//! - [`config`]: the `[asterisk]` section of `pushwake.toml` ([`AsteriskConfig`]).

pub mod client;
pub mod config;
pub mod contacts;
pub mod control;
pub mod events;
pub mod model;
pub mod rival;

pub use config::AsteriskConfig;
pub use contacts::ContactLister;
pub use control::AsteriskPbx;

pub use client::{AriClient, AriError, Originate, MAX_REQUESTS_IN_FLIGHT};
pub use events::{spawn_event_pump, spawn_event_pump_checked, AriEvent, EventFeed, EventsConfig};
pub use model::{Bridge, CallerId, Channel, ContactInfo, DialplanLocation, Endpoint};
