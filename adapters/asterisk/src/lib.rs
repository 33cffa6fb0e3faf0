//! Asterisk's REST Interface (ARI) for pushwake: a REST client ([`AriClient`]), the
//! typed events pushwake reacts to ([`AriEvent`]), and an event pump that keeps the
//! application's WebSocket connected ([`spawn_event_pump`]).
//!
//! This crate knows ARI and nothing of pushwake's wake logic; pushwake's `asterisk`
//! module maps between the two.

pub mod client;
pub mod events;
pub mod model;

pub use client::{AriClient, AriError, Originate};
pub use events::{spawn_event_pump, AriEvent, EventFeed, EventsConfig};
pub use model::{Bridge, CallerId, Channel, ContactInfo, DialplanLocation, Endpoint};
