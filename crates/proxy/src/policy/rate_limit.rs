//! The local rate limit of a listener's HTTP requests, as Envoy's
//! `envoy.filters.http.local_ratelimit` applies it: token buckets per
//! listener, shared by all its connections and worker threads. A request
//! whose descriptors (made by the routes' `rate_limits` actions) equal some
//! of the limit's `descriptors` takes a token from each of their buckets,
//! the slowest-filling first, and from the default bucket too unless
//! `always_consume_default_token_bucket` is off; a request no descriptor
//! matched takes one from the default bucket (none: not limited). With a
//! bucket empty it is answered 429 (or the configured status) with
//! `x-envoy-ratelimited` and the configured headers, unless the filter
//! only counts it (`filter_enforced` below 100 %). Counted as Envoy's
//! `<stat_prefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}`.
//!
//! Buckets are refilled lazily — when a request finds a fill interval has
//! passed — with atomics only, so that no request waits on a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use wire::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use wire::pb;

use super::rate_limit_actions::{Actions, RequestView};
use super::stats::LocalRateLimitStats;

pub struct LocalRateLimit {
    /// What it was built from: an unchanged config keeps its buckets.
    source: pb::LocalRateLimit,
    /// None: the filter's config gave no bucket (only descriptors limit).
    default: Option<Bucket>,
    /// Each descriptor's entries (key, value) and bucket.
    descriptors: Vec<(Vec<(String, String)>, Bucket)>,
    actions: Actions,
    always_consume_default: bool,
    enabled: f64,
    enforced: f64,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    x_headers: bool,
    stats: Arc<LocalRateLimitStats>,
}

/// One token bucket, refilled every `fill_interval` since `start`.
struct Bucket {
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval: Duration,
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
            .field("origin", &self.source.origin)
            .field("max_tokens", &self.source.max_tokens)
            .field("descriptors", &self.descriptors.len())
            .finish()
    }
}

/// What the filter decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not looked at (`filter_enabled`).
    NotEnabled,
    /// Tokens were taken.
    Pass,
    /// No token, but the limit is not enforced on this request: it passes.
    WouldLimit,
    /// No token: answer with [`LocalRateLimit::limited_response_headers`].
    Limited,
}

/// A decision and the bucket it is reported by (the x-ratelimit headers).
#[derive(Debug)]
pub struct Checked {
    pub decision: Decision,
    /// None: the default bucket; else the index of a descriptor's.
    bucket: Option<usize>,
}

impl Bucket {
    fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval_ms: u64, start: Instant) -> Self {
        let max = u64::from(max_tokens);
        Bucket {
            max_tokens: max,
            tokens_per_fill: match tokens_per_fill {
                0 => max,
                n => u64::from(n),
            },
            fill_interval: Duration::from_millis(fill_interval_ms),
            start,
            tokens: AtomicU64::new(max),
            fills: AtomicU64::new(0),
        }
    }

    /// Tokens per second, to try the slowest-filling bucket first.
    fn fill_rate(&self) -> f64 {
        self.tokens_per_fill as f64 / self.fill_interval.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Takes a token if there is one.
    fn take(&self) -> bool {
        self.refill();
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .is_ok()
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

    /// `x-ratelimit-limit`, `-remaining` and `-reset` (seconds to the next fill).
    fn x_ratelimit_headers(&self, headers: &mut HeaderMap) {
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

impl LocalRateLimit {
    pub fn new(c: &pb::LocalRateLimit) -> Result<Self, String> {
        let valid = |max: u32, interval_ms: u64, what: &str| {
            if max == 0 {
                return Err(format!(
                    "local_rate_limit{what}: max_tokens must be above 0"
                ));
            }
            if interval_ms < 50 {
                return Err(format!(
                    "local_rate_limit{what}: fill_interval must be at least 50ms"
                ));
            }
            Ok(())
        };
        if c.max_tokens == 0 && c.descriptors.is_empty() {
            return Err("local_rate_limit: neither a token bucket nor descriptors".into());
        }
        let start = Instant::now();
        let default = (c.max_tokens > 0)
            .then(|| {
                valid(c.max_tokens, c.fill_interval_ms, "")?;
                Ok::<_, String>(Bucket::new(
                    c.max_tokens,
                    c.tokens_per_fill,
                    c.fill_interval_ms,
                    start,
                ))
            })
            .transpose()?;
        let descriptors = c
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                valid(
                    d.max_tokens,
                    d.fill_interval_ms,
                    &format!(" descriptors[{i}]"),
                )?;
                if d.entries.is_empty() {
                    return Err(format!("local_rate_limit descriptors[{i}]: no entries"));
                }
                let entries = d
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                Ok((
                    entries,
                    Bucket::new(d.max_tokens, d.tokens_per_fill, d.fill_interval_ms, start),
                ))
            })
            .collect::<Result<_, String>>()?;
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
        Ok(LocalRateLimit {
            source: c.clone(),
            default,
            descriptors,
            actions: Actions::compile(&c.rate_limits)
                .map_err(|e| format!("local_rate_limit {e}"))?,
            always_consume_default: c.always_consume_default_token_bucket,
            enabled: c.enabled_percent,
            enforced: c.enforced_percent,
            status,
            headers,
            x_headers: c.x_ratelimit_headers,
            stats: super::stats::local_rate_limit(&c.stat_prefix),
        })
    }

    /// Where it came from ("EnvoyFilter/<namespace>/<name>"), for logs.
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// Whether a request's descriptors matter (there are descriptors to
    /// match and actions to make them); if not, none need be made.
    pub fn uses_descriptors(&self) -> bool {
        !self.descriptors.is_empty() && !self.actions.is_empty()
    }

    /// The request's descriptors, made by the routes' actions.
    pub fn descriptors(&self, r: &RequestView<'_>) -> Vec<RateLimitDescriptor> {
        self.actions.descriptors(r)
    }

    /// Consults the buckets for one request with these descriptors.
    pub fn check(&self, request: &[RateLimitDescriptor]) -> Checked {
        if !roll(self.enabled) {
            return Checked {
                decision: Decision::NotEnabled,
                bucket: None,
            };
        }
        self.stats.enabled.fetch_add(1, Ordering::Relaxed);
        let mut matched: Vec<usize> = (0..self.descriptors.len())
            .filter(|&i| {
                let entries = &self.descriptors[i].0;
                request.iter().any(|d| {
                    d.entries.len() == entries.len()
                        && d.entries
                            .iter()
                            .zip(entries)
                            .all(|(e, (k, v))| e.key == *k && e.value == *v)
                })
            })
            .collect();
        matched.sort_by(|a, b| {
            let rate = |i: &usize| self.descriptors[*i].1.fill_rate();
            rate(a).total_cmp(&rate(b))
        });
        let mut reported = matched.first().copied();
        let mut allowed = true;
        for &i in &matched {
            if !self.descriptors[i].1.take() {
                (allowed, reported) = (false, Some(i));
                break;
            }
        }
        if allowed
            && (matched.is_empty() || self.always_consume_default)
            && let Some(default) = &self.default
        {
            allowed = default.take();
            if !allowed {
                reported = None;
            }
        }
        let decision = if allowed {
            self.stats.ok.fetch_add(1, Ordering::Relaxed);
            Decision::Pass
        } else {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            if roll(self.enforced) {
                self.stats.enforced.fetch_add(1, Ordering::Relaxed);
                Decision::Limited
            } else {
                Decision::WouldLimit
            }
        };
        Checked {
            decision,
            bucket: reported,
        }
    }

    /// The status of a limited request.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Headers of a limited request's response: Envoy's
    /// `x-envoy-ratelimited`, the configured ones, and the x-ratelimit ones.
    pub fn limited_response_headers(&self, checked: &Checked, headers: &mut HeaderMap) {
        headers.insert(
            HeaderName::from_static("x-envoy-ratelimited"),
            HeaderValue::from_static("true"),
        );
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        self.x_ratelimit_headers(checked, headers);
    }

    /// Envoy's DRAFT_VERSION_03 headers, when configured, of the bucket
    /// that limited the request or else the one it was counted against
    /// first: `x-ratelimit-limit`, `-remaining` and `-reset` (seconds to
    /// its next fill). None on a request the filter did not look at.
    pub fn x_ratelimit_headers(&self, checked: &Checked, headers: &mut HeaderMap) {
        if !self.x_headers || checked.decision == Decision::NotEnabled {
            return;
        }
        let bucket = match checked.bucket {
            Some(i) => self.descriptors.get(i).map(|(_, b)| b),
            None => self.default.as_ref(),
        };
        if let Some(b) = bucket {
            b.x_ratelimit_headers(headers);
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
    use wire::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn limit(max: u32, per_fill: u32, interval_ms: u64) -> LocalRateLimit {
        LocalRateLimit::new(&pb::LocalRateLimit {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ms: interval_ms,
            enabled_percent: 100.0,
            enforced_percent: 100.0,
            x_ratelimit_headers: true,
            stat_prefix: "test".into(),
            ..Default::default()
        })
        .expect("valid")
    }

    fn path(p: &str) -> Vec<RateLimitDescriptor> {
        vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "path".into(),
                value: p.into(),
            }],
        }]
    }

    /// A default bucket of `default` tokens and a descriptor for
    /// path=/limited of 2, both per minute.
    fn with_descriptor(default: u32, always_consume_default: bool) -> LocalRateLimit {
        let mut c = pb::LocalRateLimit {
            fill_interval_ms: 60_000,
            max_tokens: default,
            tokens_per_fill: default,
            descriptors: vec![pb::LocalRateLimitDescriptor {
                entries: vec![pb::LocalRateLimitEntry {
                    key: "path".into(),
                    value: "/limited".into(),
                }],
                max_tokens: 2,
                tokens_per_fill: 2,
                fill_interval_ms: 60_000,
            }],
            always_consume_default_token_bucket: always_consume_default,
            x_ratelimit_headers: true,
            stat_prefix: "descriptors".into(),
            ..limit(1, 1, 1000).source
        };
        c.rate_limits = Vec::new();
        LocalRateLimit::new(&c).expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_empties_and_refills_per_interval() {
        let l = limit(3, 2, 1000);
        let check = || l.check(&[]).decision;
        for _ in 0..3 {
            assert_eq!(check(), Decision::Pass);
        }
        assert_eq!(check(), Decision::Limited);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(check(), Decision::Pass);
        assert_eq!(check(), Decision::Pass);
        assert_eq!(check(), Decision::Limited);
        // A long pause fills it to max_tokens, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(check(), Decision::Pass);
        }
        let limited = l.check(&[]);
        assert_eq!(limited.decision, Decision::Limited);
        let mut h = HeaderMap::new();
        l.limited_response_headers(&limited, &mut h);
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
            x_ratelimit_headers: true,
            ..Default::default()
        };
        // filter_enabled unset: 0 %, as Envoy's default; no headers then.
        let off = LocalRateLimit::new(&c).expect("valid");
        assert!((0..5).all(|_| off.check(&[]).decision == Decision::NotEnabled));
        let mut h = HeaderMap::new();
        off.x_ratelimit_headers(&off.check(&[]), &mut h);
        assert!(h.is_empty(), "{h:?}");
        c.enabled_percent = 100.0;
        let counting = LocalRateLimit::new(&c).expect("valid");
        assert_eq!(counting.check(&[]).decision, Decision::Pass);
        assert_eq!(counting.check(&[]).decision, Decision::WouldLimit);
        assert!(LocalRateLimit::new(&pb::LocalRateLimit::default()).is_err());
    }

    /// Envoy's descriptors: a request whose descriptor matches takes from
    /// that descriptor's bucket (and the default one, unless
    /// always_consume_default_token_bucket is off); others from the default.
    #[tokio::test(start_paused = true)]
    async fn a_matching_descriptor_has_its_own_bucket() {
        let l = with_descriptor(5, false);
        let stats = l.stats.clone();
        let before = stats.rate_limited.load(Ordering::Relaxed);
        let limited = path("/limited");
        assert_eq!(l.check(&limited).decision, Decision::Pass);
        let second = l.check(&limited);
        assert_eq!(second.decision, Decision::Pass);
        let mut h = HeaderMap::new();
        l.x_ratelimit_headers(&second, &mut h);
        assert_eq!(
            (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
            (&"2".parse().expect("v"), &"0".parse().expect("v"))
        );
        assert_eq!(l.check(&limited).decision, Decision::Limited);
        // The default bucket was not touched: five others pass, the sixth not.
        for _ in 0..5 {
            assert_eq!(l.check(&path("/other")).decision, Decision::Pass);
        }
        assert_eq!(l.check(&path("/other")).decision, Decision::Limited);
        assert_eq!(l.check(&[]).decision, Decision::Limited);
        assert_eq!(stats.rate_limited.load(Ordering::Relaxed) - before, 3);
        // A minute later both are full again.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(l.check(&limited).decision, Decision::Pass);

        // Consuming the default bucket too (Envoy's default): the
        // descriptor's requests empty it for the others.
        let l = with_descriptor(2, true);
        assert_eq!(l.check(&limited).decision, Decision::Pass);
        assert_eq!(l.check(&limited).decision, Decision::Pass);
        assert_eq!(l.check(&path("/other")).decision, Decision::Limited);

        // No default bucket: only the descriptor limits.
        let l = with_descriptor(0, true);
        assert!((0..20).all(|_| l.check(&path("/other")).decision == Decision::Pass));
        assert_eq!(l.check(&limited).decision, Decision::Pass);
        assert_eq!(l.check(&limited).decision, Decision::Pass);
        assert_eq!(l.check(&limited).decision, Decision::Limited);
    }
}
