//! Circuit breakers: Envoy's per-cluster resource limits (Istio's
//! `connectionPool`). Each limit is a counter with a ceiling; a permit holds
//! one unit and gives it back when dropped. A request that finds a limit
//! reached is not queued: it overflows (503, response flag UO).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use wire::pb;

/// Envoy's default for every limit: 2^32-1, effectively none.
const UNLIMITED: u32 = u32::MAX;

/// The ceilings, from the cluster's connection pool settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections: u32,
    pub pending: u32,
    pub requests: u32,
    pub retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: UNLIMITED,
            pending: UNLIMITED,
            requests: UNLIMITED,
            retries: UNLIMITED,
        }
    }
}

impl Limits {
    pub fn from_pb(p: Option<&pb::ConnectionPool>) -> Self {
        let or_unlimited = |v: u32| if v == 0 { UNLIMITED } else { v };
        match p {
            None => Limits::default(),
            Some(p) => Limits {
                connections: or_unlimited(p.max_connections),
                pending: or_unlimited(p.max_pending_requests),
                requests: or_unlimited(p.max_requests),
                retries: or_unlimited(p.max_retries),
            },
        }
    }
}

/// What is in use now. Shared by every build of a cluster, so that a config
/// update neither forgets in-flight requests nor lets them double.
#[derive(Debug, Default)]
pub struct Usage {
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub requests: AtomicU32,
    pub retries: AtomicU32,
}

#[derive(Clone, Copy, Debug)]
pub enum Resource {
    Connections,
    Pending,
    Requests,
    Retries,
}

/// A cluster's limits and its usage.
#[derive(Clone, Debug, Default)]
pub struct Breakers {
    pub limits: Limits,
    pub usage: Arc<Usage>,
}

impl Breakers {
    pub fn new(limits: Limits, usage: Arc<Usage>) -> Self {
        Breakers { limits, usage }
    }

    fn parts(&self, r: Resource) -> (&AtomicU32, u32) {
        let u = &self.usage;
        match r {
            Resource::Connections => (&u.connections, self.limits.connections),
            Resource::Pending => (&u.pending, self.limits.pending),
            Resource::Requests => (&u.requests, self.limits.requests),
            Resource::Retries => (&u.retries, self.limits.retries),
        }
    }

    /// One unit of `r`, or `None` when the limit is reached.
    pub fn try_acquire(&self, r: Resource) -> Option<Permit> {
        let (counter, limit) = self.parts(r);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                usage: self.usage.clone(),
                resource: r,
            })
    }

    /// One unit of `r` whatever the limit: Envoy always lets an endpoint
    /// with no connection open one, or its pending requests could never be
    /// served while other endpoints hold every connection.
    pub fn force(&self, r: Resource) -> Permit {
        self.parts(r).0.fetch_add(1, Ordering::AcqRel);
        Permit {
            usage: self.usage.clone(),
            resource: r,
        }
    }

    pub fn in_use(&self, r: Resource) -> u32 {
        self.parts(r).0.load(Ordering::Acquire)
    }
}

/// One unit of a resource, given back on drop.
#[derive(Debug)]
pub struct Permit {
    usage: Arc<Usage>,
    resource: Resource,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let u = &self.usage;
        let counter = match self.resource {
            Resource::Connections => &u.connections,
            Resource::Pending => &u.pending,
            Resource::Requests => &u.requests,
            Resource::Retries => &u.retries,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_unlimited() {
        assert_eq!(Limits::from_pb(None), Limits::default());
        let l = Limits::from_pb(Some(&pb::ConnectionPool {
            max_connections: 1,
            max_retries: 3,
            ..Default::default()
        }));
        assert_eq!((l.connections, l.pending, l.retries), (1, u32::MAX, 3));
    }

    #[test]
    fn permits_are_bounded_and_given_back() {
        let b = Breakers::new(
            Limits {
                requests: 2,
                ..Limits::default()
            },
            Arc::default(),
        );
        let a = b.try_acquire(Resource::Requests).expect("first");
        let c = b.try_acquire(Resource::Requests).expect("second");
        assert!(b.try_acquire(Resource::Requests).is_none(), "overflow");
        drop(a);
        let d = b.try_acquire(Resource::Requests).expect("a unit came back");
        assert_eq!(b.in_use(Resource::Requests), 2);
        drop((c, d));
        assert_eq!(b.in_use(Resource::Requests), 0);
    }

    #[test]
    fn forced_permits_count_but_ignore_the_limit() {
        let b = Breakers::new(
            Limits {
                connections: 1,
                ..Limits::default()
            },
            Arc::default(),
        );
        let _a = b.try_acquire(Resource::Connections).expect("first");
        let _f = b.force(Resource::Connections);
        assert_eq!(b.in_use(Resource::Connections), 2);
        assert!(b.try_acquire(Resource::Connections).is_none());
    }

    #[test]
    fn usage_is_shared_across_rebuilds() {
        let usage = Arc::new(Usage::default());
        let old = Breakers::new(Limits::default(), usage.clone());
        let _p = old.try_acquire(Resource::Pending).expect("unit");
        let new = Breakers::new(
            Limits {
                pending: 1,
                ..Limits::default()
            },
            usage,
        );
        assert!(new.try_acquire(Resource::Pending).is_none());
    }
}
