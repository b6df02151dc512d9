//! The local rate limit of a listener's HTTP requests, as Envoy's
//! `envoy.filters.http.local_ratelimit` applies it: one token bucket per
//! listener, shared by all its connections and worker threads. A request
//! takes a token; with none left it is answered 429 (or the configured
//! status) with `x-envoy-ratelimited` and the configured headers, unless the
//! filter only counts it (`filter_enforced` below 100 %).
//!
//! The bucket is refilled lazily — when a request finds a fill interval has
//! passed — with atomics only, so that no request waits on a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use wire::pb;

pub struct LocalRateLimit {
    /// What it was built from: an unchanged config keeps its bucket.
    source: pb::LocalRateLimit,
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval: Duration,
    enabled: f64,
    enforced: f64,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    x_headers: bool,
    start: Instant,
    /// Tokens in the bucket.
    tokens: AtomicU64,
    /// Fill intervals since `start` already added to `tokens`.
    fills: AtomicU64,
}

impl PartialEq for LocalRateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl std::fmt::Debug for LocalRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimit")
            .field("max_tokens", &self.max_tokens)
            .field("tokens_per_fill", &self.tokens_per_fill)
            .field("fill_interval", &self.fill_interval)
            .finish()
    }
}

/// What the filter decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not looked at (`filter_enabled`), or a token was taken.
    Pass,
    /// No token, but the limit is not enforced on this request: it passes.
    WouldLimit,
    /// No token: answer with [`LocalRateLimit::limited_response_headers`].
    Limited,
}

impl LocalRateLimit {
    pub fn new(c: &pb::LocalRateLimit) -> Result<Self, String> {
        if c.max_tokens == 0 {
            return Err("local_rate_limit: max_tokens must be above 0".into());
        }
        if c.fill_interval_ms < 50 {
            return Err("local_rate_limit: fill_interval must be at least 50ms".into());
        }
        let status = match c.status {
            0 => StatusCode::TOO_MANY_REQUESTS,
            s => match StatusCode::from_u16(u16::try_from(s).unwrap_or(0)) {
                // As Envoy: a status below 400 means 429.
                Ok(s) if s.as_u16() >= 400 => s,
                _ => StatusCode::TOO_MANY_REQUESTS,
            },
        };
        let headers = c
            .response_headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("local_rate_limit: header name {k:?} is invalid"))?;
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("local_rate_limit: header {k:?} has an invalid value"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        let max = u64::from(c.max_tokens);
        Ok(LocalRateLimit {
            source: c.clone(),
            max_tokens: max,
            tokens_per_fill: match c.tokens_per_fill {
                0 => max,
                n => u64::from(n),
            },
            fill_interval: Duration::from_millis(c.fill_interval_ms),
            enabled: c.enabled_percent,
            enforced: c.enforced_percent,
            status,
            headers,
            x_headers: c.x_ratelimit_headers,
            start: Instant::now(),
            tokens: AtomicU64::new(max),
            fills: AtomicU64::new(0),
        })
    }

    /// Where it came from ("EnvoyFilter/<namespace>/<name>"), for logs.
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// Consults the bucket for one request.
    pub fn check(&self) -> Decision {
        if !roll(self.enabled) {
            return Decision::Pass;
        }
        self.refill();
        let took = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .is_ok();
        match took {
            true => Decision::Pass,
            false if roll(self.enforced) => Decision::Limited,
            false => Decision::WouldLimit,
        }
    }

    /// Adds the tokens of the fill intervals that have passed.
    fn refill(&self) {
        let interval = self.fill_interval.as_nanos().max(1);
        let due = (self.start.elapsed().as_nanos() / interval) as u64;
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
            let add = (due - done).saturating_mul(self.tokens_per_fill);
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(add).min(self.max_tokens))
                });
        }
    }

    /// The status of a limited request.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Headers of a limited request's response: Envoy's
    /// `x-envoy-ratelimited`, the configured ones, and the x-ratelimit ones.
    pub fn limited_response_headers(&self, headers: &mut HeaderMap) {
        headers.insert(
            HeaderName::from_static("x-envoy-ratelimited"),
            HeaderValue::from_static("true"),
        );
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        self.x_ratelimit_headers(headers);
    }

    /// `x-ratelimit-limit`, `-remaining` and `-reset` (seconds to the next
    /// fill), as Envoy's DRAFT_VERSION_03 headers, when configured.
    pub fn x_ratelimit_headers(&self, headers: &mut HeaderMap) {
        if !self.x_headers {
            return;
        }
        let interval = self.fill_interval.as_millis().max(1);
        let into = self.start.elapsed().as_millis() % interval;
        let reset = (interval - into).div_ceil(1000);
        for (name, value) in [
            ("x-ratelimit-limit", self.max_tokens),
            ("x-ratelimit-remaining", self.tokens.load(Ordering::Acquire)),
            ("x-ratelimit-reset", reset as u64),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// True for `percent` % of calls.
fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32, per_fill: u32, interval_ms: u64) -> LocalRateLimit {
        LocalRateLimit::new(&pb::LocalRateLimit {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ms: interval_ms,
            enabled_percent: 100.0,
            enforced_percent: 100.0,
            x_ratelimit_headers: true,
            ..Default::default()
        })
        .expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_empties_and_refills_per_interval() {
        let l = limit(3, 2, 1000);
        for _ in 0..3 {
            assert_eq!(l.check(), Decision::Pass);
        }
        assert_eq!(l.check(), Decision::Limited);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(l.check(), Decision::Pass);
        assert_eq!(l.check(), Decision::Pass);
        assert_eq!(l.check(), Decision::Limited);
        // A long pause fills it to max_tokens, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(l.check(), Decision::Pass);
        }
        assert_eq!(l.check(), Decision::Limited);
        let mut h = HeaderMap::new();
        l.limited_response_headers(&mut h);
        assert_eq!(h["x-envoy-ratelimited"], "true");
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "1");
    }

    #[tokio::test(start_paused = true)]
    async fn not_enabled_or_not_enforced_lets_requests_through() {
        let mut c = pb::LocalRateLimit {
            max_tokens: 1,
            fill_interval_ms: 1000,
            ..Default::default()
        };
        // filter_enabled unset: 0 %, as Envoy's default.
        let off = LocalRateLimit::new(&c).expect("valid");
        assert!((0..5).all(|_| off.check() == Decision::Pass));
        c.enabled_percent = 100.0;
        let counting = LocalRateLimit::new(&c).expect("valid");
        assert_eq!(counting.check(), Decision::Pass);
        assert_eq!(counting.check(), Decision::WouldLimit);
        assert!(LocalRateLimit::new(&pb::LocalRateLimit::default()).is_err());
    }
}
