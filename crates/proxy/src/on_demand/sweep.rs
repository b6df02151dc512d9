//! Forgetting hosts after disuse: every [`period`] a sweep reads the
//! client-side request and connection counters the proxy's telemetry keeps
//! anyway (nothing is added to a request's path) and forgets the hosts
//! asked for whose services served no call for the idle period
//! (`--on-demand-idle-minutes`). The control plane is told (`forget_hosts`)
//! and sends the smaller config; the next call to a forgotten host asks
//! again and is held, as a first call is.
//!
//! A host's use is that of the services its config sends calls to: its
//! routes' clusters on every port and the clusters behind its VIPs. The
//! counters count services, not the names called, so a host whose routes
//! send to a service called under another name counts as used: a host in
//! use is never forgotten, an unused one may be kept longer. A connection
//! still open counts as use; a request still running does not, until it ends.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::config::ConfigStore;
use crate::lb::Cluster;
use crate::snapshot::Snapshot;
use crate::snapshot::routes::Action;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::ServiceUse;

/// How often the sweep looks: each minute, or four times in a shorter idle
/// period (a host is forgotten at most a period after its idle time).
pub fn period(idle: Duration) -> Duration {
    (idle / 4).min(Duration::from_secs(60))
}

/// What the sweep last saw of each host asked for.
#[derive(Debug)]
pub struct Sweep {
    idle: Duration,
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    /// The calls its services had served when last seen to change.
    calls: u64,
    since: Instant,
}

impl Sweep {
    pub fn new(idle: Duration) -> Sweep {
        Sweep {
            idle,
            seen: HashMap::new(),
        }
    }

    /// Looks at the hosts `asked` at `now`, each used as the services
    /// `services` names for it are in `usage`; returns those unused for the
    /// idle period. A host first seen here counts from now.
    pub fn idle(
        &mut self,
        now: Instant,
        asked: &[String],
        services: impl Fn(&str) -> BTreeSet<Arc<str>>,
        usage: &HashMap<Arc<str>, ServiceUse>,
    ) -> Vec<String> {
        let asked_set: HashSet<&str> = asked.iter().map(String::as_str).collect();
        self.seen.retain(|h, _| asked_set.contains(h.as_str()));
        let mut idle = Vec::new();
        for host in asked {
            let used = services(host).iter().filter_map(|s| usage.get(s)).fold(
                ServiceUse::default(),
                |a, u| ServiceUse {
                    calls: a.calls + u.calls,
                    open: a.open + u.open,
                },
            );
            match self.seen.get_mut(host) {
                Some(seen) if seen.calls == used.calls && used.open == 0 => {
                    if now.duration_since(seen.since) >= self.idle {
                        idle.push(host.clone());
                    }
                }
                Some(seen) => {
                    seen.calls = used.calls;
                    seen.since = now;
                }
                None => {
                    let seen = Seen {
                        calls: used.calls,
                        since: now,
                    };
                    self.seen.insert(host.clone(), seen);
                }
            }
        }
        for host in &idle {
            self.seen.remove(host);
        }
        idle
    }
}

/// The services (by host) whose clusters `host`'s config sends calls to:
/// its HTTP routes' targets and mirrors on every port, the clusters behind
/// its VIPs and their TCP routes'; `host` itself always.
pub fn services(snapshot: Option<&Snapshot>, host: &str) -> BTreeSet<Arc<str>> {
    let mut out = BTreeSet::from([Arc::from(host)]);
    let Some(s) = snapshot else {
        return out;
    };
    let mut add = |c: &Cluster| {
        out.insert(c.service.host.clone());
    };
    for table in s.routes_by_port.values() {
        // Its own virtual host ("<host>:<port>"), not a catch-all one.
        let Some(vh) = table
            .virtual_host(host)
            .filter(|vh| vh.name.rsplit_once(':').is_some_and(|(h, _)| h == host))
        else {
            continue;
        };
        for route in &vh.routes {
            if let Action::Forward(f) = &route.action {
                let targets = f.targets.iter().filter_map(|t| t.cluster.as_deref());
                let mirrors = f.mirrors.iter().filter_map(|m| m.cluster.as_deref());
                targets.chain(mirrors).for_each(&mut add);
            }
        }
    }
    if let Some(ips) = s.hosts.get(host) {
        for (_, vip) in s.vips.iter().filter(|(a, _)| ips.contains(&a.ip())) {
            add(&vip.cluster);
            if let Some(route) = &vip.tcp_route {
                route.clusters().for_each(|c| add(c));
            }
        }
    }
    out
}

/// Forgets, every [`period`], the hosts asked for whose services served no
/// call for `idle`; runs until the process ends.
pub async fn run(store: Arc<ConfigStore>, telemetry: Arc<Telemetry>, idle: Duration) {
    let Some(on_demand) = store.on_demand().cloned() else {
        return;
    };
    let asks = on_demand.asks();
    let mut sweep = Sweep::new(idle);
    let mut ticks = tokio::time::interval(period(idle));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = store.current();
        let usage = telemetry.metrics.outbound_use();
        let forget = sweep.idle(
            Instant::now(),
            &asks.asked(),
            |h| services(snapshot.as_deref(), h),
            &usage,
        );
        if !forget.is_empty() {
            tracing::info!(hosts = ?forget, ?idle, "forgetting on-demand hosts unused for the idle period");
            asks.forget_idle(&forget);
        }
    }
}

#[cfg(test)]
mod tests;
