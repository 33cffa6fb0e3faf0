//! A set of HTTP/2 connections to one provider, opened as the pushes in flight need them.
//!
//! One HTTP/2 connection carries only as many requests at once as the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` allows (Apple: 1,000); the client queues the rest
//! until a stream frees, so 10,000 pushes at once on one connection take ten server
//! round trips instead of one. Apple allows several connections per provider, so a
//! [`ConnectionSet`] opens another one whenever every open connection already carries its
//! limit, up to a cap, and hands each push the first connection with a free stream.
//!
//! A `reqwest::Client` keeps one HTTP/2 connection per host in its own pool, so each
//! connection here is its own client, built by the same recipe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Builds one more client (its own pool, hence its own connection).
type Recipe = Box<dyn Fn() -> Result<reqwest::Client, reqwest::Error> + Send + Sync>;

/// Several clients to one provider, each with at most `streams` pushes in flight.
pub struct ConnectionSet {
    recipe: Recipe,
    streams: usize,
    max_connections: usize,
    lanes: RwLock<Vec<Arc<Lane>>>,
}

/// One client and the pushes it carries now.
struct Lane {
    client: reqwest::Client,
    in_flight: AtomicUsize,
}

impl Lane {
    /// Takes one of the lane's streams if one is free.
    fn try_reserve(&self, streams: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < streams).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The right to send one request on one of the set's connections; the stream is given
/// back when it is dropped.
pub struct Lease {
    lane: Arc<Lane>,
}

impl Lease {
    /// The client to send the request with.
    pub fn client(&self) -> &reqwest::Client {
        &self.lane.client
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSet {
    /// A set whose first client is built now (its errors are the configuration's), with
    /// `streams` requests at once per connection and at most `max_connections` of them.
    pub fn new(
        recipe: impl Fn() -> Result<reqwest::Client, reqwest::Error> + Send + Sync + 'static,
        streams: usize,
        max_connections: usize,
    ) -> Result<Self, reqwest::Error> {
        let first = recipe()?;
        Ok(Self {
            recipe: Box::new(recipe),
            streams: streams.max(1),
            max_connections: max_connections.max(1),
            lanes: RwLock::new(vec![Arc::new(Lane {
                client: first,
                in_flight: AtomicUsize::new(0),
            })]),
        })
    }

    /// The first connection's client (the one kept warm).
    pub fn first(&self) -> reqwest::Client {
        self.lanes.read().expect("lanes lock")[0].client.clone()
    }

    /// Connections (clients) opened so far.
    pub fn connections(&self) -> usize {
        self.lanes.read().expect("lanes lock").len()
    }

    /// A stream on the first connection that has one free, on a new connection when none
    /// has and the cap allows, else on the least busy one (its client then queues the
    /// request until a stream frees).
    pub fn lease(&self) -> Lease {
        if let Some(lease) = self.free_lane(&self.lanes.read().expect("lanes lock")) {
            return lease;
        }
        let mut lanes = self.lanes.write().expect("lanes lock");
        // Another push may have opened one, or freed a stream, meanwhile.
        if let Some(lease) = self.free_lane(&lanes) {
            return lease;
        }
        if lanes.len() < self.max_connections {
            match (self.recipe)() {
                Ok(client) => {
                    let lane = Arc::new(Lane {
                        client,
                        in_flight: AtomicUsize::new(1),
                    });
                    lanes.push(lane.clone());
                    tracing::debug!(
                        connections = lanes.len(),
                        "every connection carries its streams: opening another"
                    );
                    return Lease { lane };
                }
                Err(error) => {
                    // The first client was built by the same recipe; this cannot really
                    // happen, and the busy connections still work.
                    tracing::warn!(%error, "cannot build another HTTP/2 client");
                }
            }
        }
        let lane = lanes
            .iter()
            .min_by_key(|l| l.in_flight.load(Ordering::Acquire))
            .expect("a set always has its first lane")
            .clone();
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        Lease { lane }
    }

    fn free_lane(&self, lanes: &[Arc<Lane>]) -> Option<Lease> {
        lanes
            .iter()
            .find(|lane| lane.try_reserve(self.streams))
            .map(|lane| Lease { lane: lane.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(streams: usize, max: usize) -> ConnectionSet {
        ConnectionSet::new(|| reqwest::Client::builder().build(), streams, max).unwrap()
    }

    #[test]
    fn a_connection_is_opened_only_when_every_one_is_full() {
        let set = set(2, 3);
        let a = set.lease();
        let b = set.lease();
        assert_eq!(set.connections(), 1);
        let c = set.lease();
        assert_eq!(set.connections(), 2);
        drop(a);
        // The first connection has a free stream again: it is used, nothing new opens.
        let d = set.lease();
        assert_eq!(set.connections(), 2);
        assert!(Arc::ptr_eq(&d.lane, &b.lane));
        drop((b, c, d));
    }

    #[test]
    fn past_the_cap_the_least_busy_connection_queues_the_request() {
        let set = set(1, 2);
        let leases: Vec<Lease> = (0..5).map(|_| set.lease()).collect();
        assert_eq!(set.connections(), 2);
        let loads: Vec<usize> = set
            .lanes
            .read()
            .unwrap()
            .iter()
            .map(|l| l.in_flight.load(Ordering::Acquire))
            .collect();
        assert_eq!(loads.iter().sum::<usize>(), 5);
        assert!(loads.iter().all(|&n| n >= 2), "{loads:?}");
        drop(leases);
        let free: usize = set
            .lanes
            .read()
            .unwrap()
            .iter()
            .map(|l| l.in_flight.load(Ordering::Acquire))
            .sum();
        assert_eq!(free, 0, "every stream is given back");
    }
}
