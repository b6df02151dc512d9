//! Upstreams that are not a cluster's endpoints: the destination the client
//! named, for Istio's PassthroughCluster (ORIGINAL_DST) and the explicit
//! proxy's unknown hosts. Each destination gets the same kind of
//! `EndpointPool` a cluster's endpoints have — same connection handling,
//! same circuit breakers — on first use, and loses it once it holds no
//! connection, so that a proxy that talks to many one-off destinations
//! keeps only what is in use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use http::uri::Authority;

use super::breaker::Breakers;
use super::upstream::{ConnSettings, EndpointPool};

/// Destinations are swept for idle pools when their number doubles.
const FIRST_SWEEP_AT: usize = 64;

pub struct Passthrough {
    config: RwLock<(ConnSettings, Breakers)>,
    pools: RwLock<HashMap<Authority, Arc<EndpointPool>>>,
    /// The number of destinations at which the next insert sweeps.
    sweep_at: AtomicUsize,
}

impl Passthrough {
    pub fn new(settings: ConnSettings, breakers: Breakers) -> Arc<Self> {
        Arc::new(Passthrough {
            config: RwLock::new((settings, breakers)),
            pools: RwLock::default(),
            sweep_at: AtomicUsize::new(FIRST_SWEEP_AT),
        })
    }

    /// A config update may change the limits and settings; connections stay.
    pub fn configure(&self, settings: ConnSettings, breakers: Breakers) {
        // Poisoned only if a holder panicked; the values are still whole.
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = (settings, breakers.clone());
        for pool in self
            .pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            pool.configure(settings, breakers.clone());
        }
    }

    /// The pool of connections to `dest`. A read lock on the common path
    /// (the destination was seen before); the write lock only to add one.
    pub fn pool(&self, dest: &Authority) -> Arc<EndpointPool> {
        if let Some(p) = self
            .pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dest)
        {
            return p.clone();
        }
        let (settings, breakers) = self
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        if pools.len() >= self.sweep_at.load(Ordering::Relaxed) {
            // Idle: no connection open and no request holding the pool.
            pools.retain(|_, p| Arc::strong_count(p) > 1 || p.open_connections() > 0);
            self.sweep_at
                .store((pools.len() * 2).max(FIRST_SWEEP_AT), Ordering::Relaxed);
        }
        pools
            .entry(dest.clone())
            .or_insert_with(|| EndpointPool::new(dest.clone(), settings, breakers))
            .clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(i: usize) -> Authority {
        format!("10.0.{}.{}:80", i / 256, i % 256).parse().unwrap()
    }

    #[test]
    fn a_destination_keeps_its_pool() {
        let p = Passthrough::new(ConnSettings::default(), Breakers::default());
        let a = p.pool(&authority(1));
        assert!(Arc::ptr_eq(&a, &p.pool(&authority(1))));
        assert!(!Arc::ptr_eq(&a, &p.pool(&authority(2))));
    }

    #[test]
    fn idle_destinations_are_dropped_and_used_ones_kept() {
        let p = Passthrough::new(ConnSettings::default(), Breakers::default());
        let held = p.pool(&authority(0));
        for i in 1..1000 {
            p.pool(&authority(i));
        }
        // Each sweep drops what no one holds; the count never runs away.
        assert!(p.len() <= 2 * FIRST_SWEEP_AT, "{} pools kept", p.len());
        assert!(Arc::ptr_eq(&held, &p.pool(&authority(0))));
    }
}
