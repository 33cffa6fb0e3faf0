//! The daemon's log: the `PUSHWAKE_LOG` filter, with the network libraries' trace output
//! held back because it carries secrets.
//!
//! At trace level tungstenite writes out the whole WebSocket handshake request, whose
//! `Authorization: Basic …` header is the ARI password; tokio-tungstenite, hyper, h2,
//! reqwest and rustls trace bytes, frames and URLs (an APNs URL ends in the device
//! token). None of pushwake's own code logs at trace, so `PUSHWAKE_LOG=trace` would show
//! nothing of pushwake's that debug does not, only those secrets. Every target that is
//! not pushwake's own is therefore capped at debug, whatever `PUSHWAKE_LOG` says, unless
//! [`WIRE_VAR`] is set to `1` (for a test system, never for production: the log then
//! holds the secrets).

use tracing::{Level, Metadata};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable with the log filter (`EnvFilter` syntax; default `info`).
pub const FILTER_VAR: &str = "PUSHWAKE_LOG";
/// The environment variable that, set to `1`, lets the libraries' trace output through.
pub const WIRE_VAR: &str = "PUSHWAKE_LOG_WIRE";

/// Whether an event at `level` from `target` may be written; `wire` is [`WIRE_VAR`]'s
/// ask for the libraries' traces.
pub fn allowed(target: &str, level: Level, wire: bool) -> bool {
    wire || level != Level::TRACE || is_own(target)
}

/// Whether `target` (a module path, or a `log` record's target) is pushwake's own code.
fn is_own(target: &str) -> bool {
    let crate_name = target.split("::").next().unwrap_or(target);
    crate_name == "pushwake" || crate_name.starts_with("pushwake_")
}

/// Installs the log on stderr (also for the `log` crate's records, which tungstenite
/// and reqwest write): `PUSHWAKE_LOG`'s filter and the cap described above. Colours only
/// for a person at a terminal, never in the journal or a log file.
pub fn init() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let wire = std::env::var(WIRE_VAR).is_ok_and(|value| value == "1");
    let guard = tracing_subscriber::filter::filter_fn(move |metadata: &Metadata<'_>| {
        allowed(metadata.target(), *metadata.level(), wire)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Both filters global, as before this module, not per-layer: with them per-layer, a
    // daemon on a PostgreSQL store logged nothing of opening it and never wrote to it
    // under `PUSHWAKE_LOG=info,pushwake=debug` (tests/asterisk_learned.rs found it; the
    // cause inside sqlx was not traced).
    tracing_subscriber::registry()
        .with(filter)
        .with(guard)
        .with(layer)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libraries_trace_is_held_back_and_their_debug_is_not() {
        for target in [
            "tungstenite::handshake::client",
            "tokio_tungstenite",
            "hyper::proto::h1::role",
            "h2::codec::framed_write",
            "reqwest::connect",
            "rustls::client::hs",
            "pushwakeish",
        ] {
            assert!(!allowed(target, Level::TRACE, false), "{target} at trace");
            assert!(allowed(target, Level::DEBUG, false), "{target} at debug");
            assert!(
                allowed(target, Level::TRACE, true),
                "{target} with the wire asked for"
            );
        }
    }

    #[test]
    fn pushwakes_own_trace_goes_through() {
        for target in ["pushwake", "pushwake::driver", "pushwake_asterisk::events"] {
            assert!(allowed(target, Level::TRACE, false), "{target}");
        }
    }
}
