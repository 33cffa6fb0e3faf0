//! FreeSWITCH for pushwake, through its Event Socket (mod_event_socket, inbound mode):
//! everything pushwake knows about FreeSWITCH, and the only crate that knows it.
//!
//! - [`frame`]: the wire format as a plain parser (bytes in, typed [`Frame`]s out).
//!
//! The connection, call control and the `[freeswitch]` configuration section come next,
//! on top of it.

pub mod frame;

pub use frame::{CommandReply, Event, Frame, FrameError, FrameReader, Headers};
