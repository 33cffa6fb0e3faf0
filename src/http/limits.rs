//! How many connections the listener serves at once, in all and from one client address,
//! and the rate-limited warning about the ones it refuses.
//!
//! A client that opens connections faster than it closes them (a flood, or slowloris
//! connections that trickle their headers until [`super::HEADER_READ_TIMEOUT`] cuts them)
//! gets at most [`MAX_PER_CLIENT`] of the [`MAX_CONNECTIONS`]; its further connections
//! are closed at once, so other clients still find a free one. Behind a reverse proxy
//! every connection comes from the proxy's address: it keeps connections alive and
//! needs far fewer than [`MAX_PER_CLIENT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections served at once from one client address; more are closed at once.
pub const MAX_PER_CLIENT: usize = 64;
/// At most one warning about refused connections in this time.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The connections being served, in all and by client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`MAX_CONNECTIONS`] are open.
    Total,
    /// [`MAX_PER_CLIENT`] are open from the same address.
    Client,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, `max_per_client` of them from one address.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a connection from `client`, or why there is none.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max_total {
            return Err(Refused::Total);
        }
        let from_client = open.by_client.entry(client).or_default();
        if *from_client >= self.max_per_client {
            return Err(Refused::Client);
        }
        *from_client += 1;
        open.total += 1;
        Ok(Admitted {
            limits: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(from_client) = open.by_client.get_mut(&self.client) {
            *from_client -= 1;
            if *from_client == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// Counts refused connections and says when to warn: the first refusal at once, then at
/// most once per interval with the number refused meanwhile, so that a flood writes a
/// few lines, not one per connection.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    last_warned: Option<Instant>,
    unreported: u64,
}

impl RefusalLog {
    /// A log warning at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warned: None,
            unreported: 0,
        }
    }

    /// One more refusal at `now`: `Some(n)` when it is time to warn about the `n`
    /// refused since the last warning (this one included).
    pub fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        due.then(|| {
            self.last_warned = Some(now);
            std::mem::take(&mut self.unreported)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_client_gets_its_share_and_the_others_still_get_in() {
        let limits = ConnectionLimits::new(5, 2);
        let a1 = limits.admit(ip(1)).unwrap();
        let _a2 = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(1)).unwrap_err(), Refused::Client);
        let _b = limits.admit(ip(2)).unwrap();
        drop(a1);
        let _a3 = limits.admit(ip(1)).expect("a freed place is free again");
        assert_eq!(limits.open(), 3);
    }

    #[test]
    fn the_total_bounds_every_client_together() {
        let limits = ConnectionLimits::new(3, 2);
        let held: Vec<_> = (1..=3).map(|n| limits.admit(ip(n)).unwrap()).collect();
        assert_eq!(limits.admit(ip(4)).unwrap_err(), Refused::Total);
        drop(held);
        assert_eq!(limits.open(), 0);
        assert!(
            limits.open.lock().unwrap().by_client.is_empty(),
            "no address is remembered once its connections are gone"
        );
    }

    #[test]
    fn refusals_are_reported_at_once_then_at_most_once_per_interval() {
        let mut log = RefusalLog::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.refused(start), Some(1));
        for n in 1..100 {
            assert_eq!(log.refused(start + Duration::from_millis(n * 10)), None);
        }
        assert_eq!(log.refused(start + Duration::from_secs(10)), Some(100));
        assert_eq!(log.refused(start + Duration::from_secs(11)), None);
    }
}
