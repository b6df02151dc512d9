//! Outlier detection: passive health checking as Envoy does it for Istio's
//! `outlierDetection`.
//!
//! Each request's outcome is reported for its endpoint. An endpoint that
//! answers `consecutive_5xx` 5xx in a row (or `consecutive_gateway` 502, 503,
//! 504 or connection failures in a row) is ejected at once, unless
//! `max_ejection_percent` of the cluster is ejected already. It stays out for
//! `base_ejection × n`, n counting its recent ejections, and comes back at the
//! next sweep (every `interval`) after that. n decreases by one for every
//! sweep the endpoint passes healthy, so a flapping endpoint stays out
//! longer and longer while one that recovered is forgiven.
//!
//! Nothing runs in the background: the sweep times are a grid from the
//! detector's epoch, and an ejection's end is computed on that grid when it
//! starts. Callers pass the time, so the state machine is tested with
//! instants it chooses.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use wire::pb;

/// Envoy's cap on one ejection, `max_ejection_time` (unless the base is longer).
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 0: off.
    pub consecutive_5xx: u32,
    /// 0: off.
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of available endpoints the balancer uses all of them.
    pub min_health_percent: u32,
}

impl Config {
    /// `None` when the cluster has no outlier detection.
    pub fn from_pb(od: Option<&pb::OutlierDetection>) -> Option<Self> {
        let od = od?;
        let ms = |v: u64, default: u64| Duration::from_millis(if v == 0 { default } else { v });
        Some(Config {
            consecutive_5xx: od.consecutive_5xx,
            consecutive_gateway: od.consecutive_gateway_errors,
            interval: ms(od.interval_ms, 10_000),
            base_ejection: ms(od.base_ejection_time_ms, 30_000),
            max_ejection_percent: match od.max_ejection_percent {
                0 => 10,
                p => p.min(100),
            },
            min_health_percent: od.min_health_percent.min(100),
        })
    }
}

/// What became of a request, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No connection could be made (Envoy counts it as a 503).
    ConnectFailure,
    /// The connection or stream broke (a 503).
    Reset,
    /// No answer in time (a 504).
    Timeout,
}

impl Outcome {
    fn status(self) -> u16 {
        match self {
            Outcome::Status(s) => s,
            Outcome::ConnectFailure | Outcome::Reset => 503,
            Outcome::Timeout => 504,
        }
    }
}

/// One endpoint's record. Kept across config updates.
#[derive(Debug, Default)]
pub struct HostState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    /// When the current or last ejection ends (a sweep time).
    until: Option<Instant>,
    /// The multiplier of the base ejection time for the next ejection - 1.
    backoff: u32,
    /// Times ejected, for operators.
    total: u64,
}

impl HostState {
    fn record(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ejected at `now`; `Some(end)` if so.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.record().until.filter(|u| now < *u)
    }

    pub fn ejections(&self) -> u64 {
        self.record().total
    }
}

/// A cluster's detector: its sweep grid and a generation that changes with
/// every ejection, so that balancers know to recompute their endpoints.
#[derive(Debug)]
pub struct Detector {
    epoch: Instant,
    generation: AtomicU64,
}

impl Detector {
    pub fn new(epoch: Instant) -> Self {
        Detector {
            epoch,
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The first sweep at or after `t`.
    fn sweep_at_or_after(&self, t: Instant, interval: Duration) -> Instant {
        let since = t.saturating_duration_since(self.epoch);
        let step = interval.as_nanos().max(1);
        let ticks = since.as_nanos().div_ceil(step);
        self.epoch + Duration::from_nanos(u64::try_from(ticks * step).unwrap_or(u64::MAX))
    }

    /// Records `outcome` for `host`, one of the cluster's `hosts` (`None`:
    /// a host with no record yet, never ejected), and ejects it if that was
    /// one error too many. True when it was ejected.
    pub fn report<'a>(
        &self,
        config: &Config,
        host: &HostState,
        hosts: impl Iterator<Item = Option<&'a HostState>>,
        outcome: Outcome,
        now: Instant,
    ) -> bool {
        let status = outcome.status();
        if status < 500 {
            host.consecutive_5xx.store(0, Ordering::Relaxed);
            host.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        let mut trip = false;
        if matches!(status, 502..=504) {
            let n = host.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1;
            if config.consecutive_gateway > 0 && n == config.consecutive_gateway {
                trip = true;
            }
        } else {
            host.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = host.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
        if config.consecutive_5xx > 0 && n == config.consecutive_5xx {
            trip = true;
        }
        if !trip {
            return false;
        }
        // Whether or not the ejection happens, a new run of errors is needed
        // to trip again (as Envoy resets the counter that fired).
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        self.eject(config, host, hosts, now)
    }

    fn eject<'a>(
        &self,
        config: &Config,
        host: &HostState,
        hosts: impl Iterator<Item = Option<&'a HostState>>,
        now: Instant,
    ) -> bool {
        if host.ejected_until(now).is_some() {
            return false;
        }
        let (mut total, mut ejected) = (0u64, 0u64);
        for h in hosts {
            total += 1;
            if h.is_some_and(|h| h.ejected_until(now).is_some()) {
                ejected += 1;
            }
        }
        // Envoy ejects while the share already ejected is below the maximum,
        // so the first ejection always happens (unless the maximum is 0).
        if ejected * 100 >= u64::from(config.max_ejection_percent) * total.max(1) {
            tracing::debug!(
                ejected,
                total,
                "outlier: ejection skipped, max_ejection_percent reached"
            );
            return false;
        }
        let mut rec = host.record();
        if let Some(prev) = rec.until {
            // One step of forgiveness per sweep passed healthy since the last ejection ended.
            let healthy_sweeps =
                now.saturating_duration_since(prev).as_nanos() / config.interval.as_nanos().max(1);
            rec.backoff = rec
                .backoff
                .saturating_sub(u32::try_from(healthy_sweeps).unwrap_or(u32::MAX));
        }
        rec.backoff = rec.backoff.saturating_add(1);
        let cap = MAX_EJECTION_TIME.max(config.base_ejection);
        let duration = config.base_ejection.saturating_mul(rec.backoff).min(cap);
        rec.until = Some(self.sweep_at_or_after(now + duration, config.interval));
        rec.total += 1;
        drop(rec);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_pb(Some(&pb::OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 100,
            min_health_percent: 0,
        }))
        .expect("config")
    }

    struct Cluster {
        detector: Detector,
        hosts: Vec<HostState>,
        config: Config,
    }

    impl Cluster {
        fn new(n: usize, config: Config) -> Self {
            Cluster {
                detector: Detector::new(Instant::now()),
                hosts: (0..n).map(|_| HostState::default()).collect(),
                config,
            }
        }

        fn report(&self, i: usize, outcome: Outcome, now: Instant) -> bool {
            self.detector.report(
                &self.config,
                &self.hosts[i],
                self.hosts.iter().map(Some),
                outcome,
                now,
            )
        }

        fn fail(&self, i: usize, times: u32, now: Instant) -> bool {
            (0..times).any(|_| self.report(i, Outcome::Status(500), now))
        }
    }

    #[test]
    fn defaults_when_fields_are_zero() {
        let c = Config::from_pb(Some(&pb::OutlierDetection::default())).expect("config");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.base_ejection, Duration::from_secs(30));
        assert_eq!(c.max_ejection_percent, 10);
        assert!(Config::from_pb(None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_errors_eject_and_a_success_resets_the_count() {
        let c = Cluster::new(2, config());
        let t0 = Instant::now();
        assert!(!c.fail(0, 2, t0));
        assert!(!c.report(0, Outcome::Status(200), t0), "success resets");
        assert!(!c.fail(0, 2, t0));
        assert!(c.hosts[0].ejected_until(t0).is_none());
        assert!(
            c.report(0, Outcome::Status(503), t0),
            "third in a row ejects"
        );
        assert!(c.hosts[0].ejected_until(t0).is_some());
        assert_eq!(c.detector.generation(), 1);
        // 4xx and connection failures are counted as Envoy maps them.
        assert!(!c.report(1, Outcome::Status(404), t0));
        assert!(!c.report(1, Outcome::ConnectFailure, t0));
        assert!(!c.report(1, Outcome::Timeout, t0));
        assert!(c.report(1, Outcome::Reset, t0));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_lasts_base_time_to_the_next_sweep_and_grows() {
        let c = Cluster::new(2, config());
        let epoch = Instant::now();
        // Eject at 5 s: back at the first sweep ≥ 35 s, which is 40 s.
        tokio::time::advance(Duration::from_secs(5)).await;
        let t = Instant::now();
        assert!(c.fail(0, 3, t));
        assert_eq!(
            c.hosts[0].ejected_until(t),
            Some(epoch + Duration::from_secs(40))
        );
        tokio::time::advance(Duration::from_secs(34)).await;
        assert!(
            c.hosts[0].ejected_until(Instant::now()).is_some(),
            "at 39 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            c.hosts[0].ejected_until(Instant::now()).is_none(),
            "at 40 s"
        );
        // Ejected again right away: twice the base time (60 s) → 100 s.
        let t = Instant::now();
        assert!(c.fail(0, 3, t));
        assert_eq!(
            c.hosts[0].ejected_until(t),
            Some(epoch + Duration::from_secs(100))
        );
        // Healthy for 3 sweeps after 100 s: the multiplier drops from 2 to 0,
        // so the next ejection is one base time again.
        tokio::time::advance(Duration::from_secs(95)).await;
        let t = Instant::now(); // 135 s
        assert!(c.fail(0, 3, t));
        assert_eq!(
            c.hosts[0].ejected_until(t),
            Some(epoch + Duration::from_secs(170)),
            "135 + 30 = 165 → the 170 s sweep"
        );
        assert_eq!(c.hosts[0].ejections(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped() {
        let c = Cluster::new(1, config());
        for _ in 0..20 {
            let t = Instant::now();
            assert!(c.fail(0, 3, t));
            let until = c.hosts[0].ejected_until(t).expect("ejected");
            assert!(until - t <= Duration::from_secs(310), "{:?}", until - t);
            tokio::time::advance(until - t).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_bounds_ejections() {
        // Envoy's default 10 %: with 4 endpoints the first ejection is
        // allowed (0 % ejected so far), the second is not (25 % ≥ 10 %).
        let c = Cluster::new(
            4,
            Config {
                max_ejection_percent: 10,
                ..config()
            },
        );
        let t = Instant::now();
        assert!(c.fail(0, 3, t));
        assert!(!c.fail(1, 3, t));
        assert!(c.hosts[1].ejected_until(t).is_none());
        // 50 %: two of four.
        let c = Cluster::new(
            4,
            Config {
                max_ejection_percent: 50,
                ..config()
            },
        );
        assert!(c.fail(0, 3, t) && c.fail(1, 3, t));
        assert!(!c.fail(2, 3, t));
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_count_apart() {
        let c = Cluster::new(
            2,
            Config {
                consecutive_5xx: 0,
                consecutive_gateway: 2,
                ..config()
            },
        );
        let t = Instant::now();
        assert!(!c.report(0, Outcome::Status(502), t));
        assert!(!c.report(0, Outcome::Status(500), t), "500 breaks the run");
        assert!(!c.report(0, Outcome::Status(504), t));
        assert!(c.report(0, Outcome::ConnectFailure, t));
        // With the 5xx detector off, plain 500s never eject.
        assert!(!c.fail(1, 10, t));
    }
}
