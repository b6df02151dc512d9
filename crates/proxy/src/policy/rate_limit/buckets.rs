//! The local rate limit's token buckets: one bucket's tokens, refilled
//! lazily with atomics when a request finds a fill interval has passed (no
//! request waits on another), and the buckets a wildcard descriptor makes,
//! one per distinct request descriptor it matches, the least recently used
//! dropped past the limit's `max_dynamic_descriptors` (as Envoy's LRU).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;
use wire::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

/// A bucket's configuration: at most `max_tokens`, `tokens_per_fill` added
/// every `fill_interval`.
#[derive(Debug)]
pub(super) struct Spec {
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval: Duration,
}

/// One bucket's tokens, full at `start` and refilled every fill interval since.
#[derive(Debug)]
pub(super) struct Tokens {
    start: Instant,
    tokens: AtomicU64,
    /// Fill intervals since `start` already added to `tokens`.
    fills: AtomicU64,
}

/// A bucket's `x-ratelimit-*` values when a request was counted against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    limit: u64,
    remaining: u64,
    /// Seconds to the next fill.
    reset: u64,
}

/// A wildcard descriptor's buckets, by the values of the request
/// descriptors it matched.
#[derive(Debug)]
pub(super) struct Dynamic {
    capacity: usize,
    lru: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    /// Bumped at every use; a bucket's last use says which goes first.
    clock: u64,
    buckets: HashMap<Vec<String>, (Arc<Tokens>, u64)>,
}

impl Spec {
    pub(super) fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval_ms: u64) -> Self {
        let max = u64::from(max_tokens);
        Spec {
            max_tokens: max,
            tokens_per_fill: match tokens_per_fill {
                0 => max,
                n => u64::from(n),
            },
            fill_interval: Duration::from_millis(fill_interval_ms),
        }
    }

    /// Tokens per second, to try the slowest-filling bucket first.
    pub(super) fn fill_rate(&self) -> f64 {
        self.tokens_per_fill as f64 / self.fill_interval.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Tokens {
    pub(super) fn full(spec: &Spec, start: Instant) -> Self {
        Tokens {
            start,
            tokens: AtomicU64::new(spec.max_tokens),
            fills: AtomicU64::new(0),
        }
    }

    /// Takes a token if there is one, at `now`.
    pub(super) fn take(&self, spec: &Spec, now: Instant) -> bool {
        self.refill(spec, now);
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .is_ok()
    }

    /// Adds the tokens of the fill intervals that have passed.
    fn refill(&self, spec: &Spec, now: Instant) {
        let interval = spec.fill_interval.as_nanos().max(1);
        let due = (now.duration_since(self.start).as_nanos() / interval) as u64;
        let done = self.fills.load(Ordering::Acquire);
        if due <= done {
            return;
        }
        // One request adds them; the others see `fills` already moved on.
        if self
            .fills
            .compare_exchange(done, due, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let add = (due - done).saturating_mul(spec.tokens_per_fill);
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(add).min(spec.max_tokens))
                });
        }
    }

    pub(super) fn report(&self, spec: &Spec, now: Instant) -> Report {
        let interval = spec.fill_interval.as_millis().max(1);
        let into = now.duration_since(self.start).as_millis() % interval;
        Report {
            limit: spec.max_tokens,
            remaining: self.tokens.load(Ordering::Acquire),
            reset: (interval - into).div_ceil(1000) as u64,
        }
    }
}

impl Report {
    /// Envoy's DRAFT_VERSION_03 headers: `x-ratelimit-limit`, `-remaining`, `-reset`.
    pub(super) fn insert(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", self.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

impl Dynamic {
    pub(super) fn new(capacity: usize) -> Self {
        Dynamic {
            capacity: capacity.max(1),
            lru: Mutex::default(),
        }
    }

    /// The bucket of the request descriptor with these entries, full when
    /// new at `now` (or made again after it was dropped, as Envoy's).
    pub(super) fn bucket(&self, spec: &Spec, entries: &[Entry], now: Instant) -> Arc<Tokens> {
        let key: Vec<String> = entries.iter().map(|e| e.value.clone()).collect();
        // Held for a map look-up only, and only by requests this descriptor matched.
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        lru.clock += 1;
        let tick = lru.clock;
        if let Some((tokens, used)) = lru.buckets.get_mut(&key) {
            *used = tick;
            return tokens.clone();
        }
        if lru.buckets.len() >= self.capacity
            && let Some(oldest) = lru
                .buckets
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            lru.buckets.remove(&oldest);
        }
        let tokens = Arc::new(Tokens::full(spec, now));
        lru.buckets.insert(key, (tokens.clone(), tick));
        tokens
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}
