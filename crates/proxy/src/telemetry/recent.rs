//! The proxy's recent notable requests, for the dashboard's service detail:
//! the last [`ERRORS_KEPT`] failed ones and the [`SLOWEST_KEPT`] slowest of
//! the last [`WINDOW`], each with its trace id (when it was traced), request
//! id, route, code, flags, duration and the workload on the other side.
//!
//! Kept only while someone reads them (`GET /stats/recent`, which trellisd
//! asks while its dashboard is looked at): for [`WATCHED_FOR`] after each
//! read. Otherwise a finished request costs one atomic load; while watched,
//! a fast successful request costs three and takes no lock. Memory is
//! bounded by the two list sizes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use serde::Serialize;

use super::meta::{PeerMeta, ServiceMeta};
use super::{Flags, Reporter};

pub const ERRORS_KEPT: usize = 20;
pub const SLOWEST_KEPT: usize = 10;
/// The slowest requests are those of this last stretch of time.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Requests are kept this long after the list was last read.
pub const WATCHED_FOR: Duration = Duration::from_secs(120);

/// One notable request, as it finished.
pub struct Notable {
    pub end: Instant,
    pub end_time: SystemTime,
    pub reporter: Reporter,
    pub source: Arc<PeerMeta>,
    pub destination: Arc<PeerMeta>,
    pub service: Arc<ServiceMeta>,
    pub route: Option<Arc<str>>,
    pub method: http::Method,
    pub code: u16,
    pub grpc_status: Option<u16>,
    pub flags: Flags,
    pub duration: Duration,
    pub trace_id: Option<[u8; 16]>,
    pub request_id: HeaderValue,
}

/// A failed request, as the dashboard counts them: 5xx, no response at
/// all, or a gRPC status other than OK.
pub fn is_error(code: u16, grpc_status: Option<u16>) -> bool {
    code >= 500 || code == 0 || grpc_status.is_some_and(|s| s != 0)
}

pub struct Recent {
    /// Instants are kept as milliseconds since this one.
    epoch: Instant,
    /// Until when requests are kept (ms since `epoch`); 0: never read.
    watched_until: AtomicU64,
    /// A successful request no slower than this (µs) is not among the
    /// slowest (0 while fewer than [`SLOWEST_KEPT`] are kept).
    slow_floor_us: AtomicU64,
    /// When the floor drops, because the oldest of the slowest leaves the
    /// window (ms since `epoch`).
    floor_until: AtomicU64,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    errors: VecDeque<Notable>,
    /// At most [`SLOWEST_KEPT`], slowest first.
    slowest: Vec<Notable>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            epoch: Instant::now(),
            watched_until: AtomicU64::new(0),
            slow_floor_us: AtomicU64::new(0),
            floor_until: AtomicU64::new(0),
            lists: Mutex::default(),
        }
    }
}

impl Recent {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request that ended at `end` after `duration` is to be
    /// kept: cheap, and called for every request before anything is built.
    pub fn wants(&self, end: Instant, duration: Duration, error: bool) -> bool {
        let now = self.ms(end);
        if now >= self.watched_until.load(Ordering::Relaxed) {
            return false;
        }
        error
            || duration.as_micros() as u64 > self.slow_floor_us.load(Ordering::Relaxed)
            || now >= self.floor_until.load(Ordering::Relaxed)
    }

    /// Keeps `n` where it belongs (see [`wants`](Self::wants)).
    pub fn keep(&self, n: Notable) {
        let mut lists = self.lock();
        let now = n.end;
        if is_error(n.code, n.grpc_status) {
            if lists.errors.len() == ERRORS_KEPT {
                lists.errors.pop_front();
            }
            lists.errors.push_back(n);
        } else {
            lists
                .slowest
                .retain(|s| now.saturating_duration_since(s.end) < WINDOW);
            let at = lists
                .slowest
                .iter()
                .position(|s| s.duration < n.duration)
                .unwrap_or(lists.slowest.len());
            if at < SLOWEST_KEPT {
                lists.slowest.insert(at, n);
                lists.slowest.truncate(SLOWEST_KEPT);
            }
        }
        self.set_floor(&lists);
    }

    fn set_floor(&self, lists: &Lists) {
        let full = lists.slowest.len() == SLOWEST_KEPT;
        let floor = match lists.slowest.last() {
            Some(s) if full => s.duration.as_micros() as u64,
            _ => 0,
        };
        let until = lists
            .slowest
            .iter()
            .map(|s| self.ms(s.end + WINDOW))
            .min()
            .unwrap_or(u64::MAX);
        self.slow_floor_us.store(floor, Ordering::Relaxed);
        self.floor_until
            .store(if full { until } else { 0 }, Ordering::Relaxed);
    }

    /// The lists as they are, and requests kept for [`WATCHED_FOR`] from now.
    pub fn read(&self) -> RecentView {
        let now = Instant::now();
        self.watched_until
            .store(self.ms(now + WATCHED_FOR), Ordering::Relaxed);
        let mut lists = self.lock();
        lists
            .slowest
            .retain(|s| now.saturating_duration_since(s.end) < WINDOW);
        self.set_floor(&lists);
        RecentView {
            errors: lists.errors.iter().rev().map(NotableView::of).collect(),
            slowest: lists.slowest.iter().map(NotableView::of).collect(),
        }
    }
}

/// `GET /stats/recent`: newest errors first, slowest first.
#[derive(Serialize)]
pub struct RecentView {
    pub errors: Vec<NotableView>,
    pub slowest: Vec<NotableView>,
}

#[derive(Serialize)]
pub struct NotableView {
    /// Unix time the request ended, in milliseconds.
    pub end_ms: u64,
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_service: String,
    pub route: Option<String>,
    pub method: String,
    pub response_code: u16,
    pub grpc_status: Option<u16>,
    pub response_flags: String,
    pub duration_ms: f64,
    /// 32 hex digits, when the request was traced.
    pub trace_id: Option<String>,
    pub request_id: String,
}

impl NotableView {
    fn of(n: &Notable) -> Self {
        NotableView {
            end_ms: n
                .end_time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reporter: match n.reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
            source_workload: n.source.workload.to_string(),
            source_namespace: n.source.namespace.to_string(),
            destination_workload: n.destination.workload.to_string(),
            destination_namespace: n.destination.namespace.to_string(),
            destination_service: n.service.host.to_string(),
            route: n.route.as_deref().map(str::to_string),
            method: n.method.to_string(),
            response_code: n.code,
            grpc_status: n.grpc_status,
            response_flags: n.flags.to_string(),
            duration_ms: n.duration.as_secs_f64() * 1000.0,
            trace_id: n.trace_id.map(|t| super::trace::context::hex(&t)),
            request_id: String::from_utf8_lossy(n.request_id.as_bytes()).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notable(end: Instant, ms: u64, code: u16) -> Notable {
        let peer = Arc::new(PeerMeta::unknown());
        Notable {
            end,
            end_time: SystemTime::now(),
            reporter: Reporter::Destination,
            source: peer.clone(),
            destination: peer,
            service: Arc::new(ServiceMeta::from_host("a.default.svc.cluster.local")),
            route: None,
            method: http::Method::GET,
            code,
            grpc_status: None,
            flags: Flags::default(),
            duration: Duration::from_millis(ms),
            trace_id: Some([7; 16]),
            request_id: HeaderValue::from_static("req"),
        }
    }

    fn offer(r: &Recent, end: Instant, ms: u64, code: u16) -> bool {
        let wanted = r.wants(end, Duration::from_millis(ms), is_error(code, None));
        if wanted {
            r.keep(notable(end, ms, code));
        }
        wanted
    }

    #[test]
    fn nothing_is_kept_until_read() {
        let r = Recent::default();
        let now = Instant::now();
        assert!(!offer(&r, now, 5_000, 500));
        let v = r.read();
        assert!(v.errors.is_empty() && v.slowest.is_empty());
        assert!(offer(&r, Instant::now(), 1, 503));
        let v = r.read();
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].trace_id.as_deref(), Some(&*"07".repeat(16)));
        // Long after the last read, nothing is kept again.
        assert!(!offer(&r, Instant::now() + WATCHED_FOR * 2, 1, 500));
    }

    #[test]
    fn bounded_errors_and_the_slowest_of_the_window() {
        let r = Recent::default();
        r.read();
        let t = Instant::now();
        for i in 0..(ERRORS_KEPT as u64 + 5) {
            offer(&r, t, i, 500);
        }
        for ms in 1..=(SLOWEST_KEPT as u64 * 3) {
            offer(&r, t, ms, 200);
        }
        // Full: a fast success is turned away before any lock.
        assert!(!r.wants(t, Duration::from_millis(3), false));
        let v = r.read();
        assert_eq!(v.errors.len(), ERRORS_KEPT);
        // Newest first.
        assert_eq!(v.errors[0].duration_ms, (ERRORS_KEPT + 4) as f64);
        let kept: Vec<f64> = v.slowest.iter().map(|s| s.duration_ms).collect();
        let want: Vec<f64> = (0..SLOWEST_KEPT)
            .map(|i| (SLOWEST_KEPT * 3 - i) as f64)
            .collect();
        assert_eq!(kept, want);
        // Once they leave the window, faster ones are kept again.
        let later = t + WINDOW + Duration::from_secs(1);
        assert!(offer(&r, later, 2, 200));
        let slowest = {
            let lists = r.lock();
            lists.slowest.iter().map(|s| s.duration).collect::<Vec<_>>()
        };
        assert_eq!(slowest, vec![Duration::from_millis(2)]);
    }
}
