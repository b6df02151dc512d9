//! The local rate limit of a listener's HTTP requests, as Envoy's
//! `envoy.filters.http.local_ratelimit` applies it: token buckets per
//! listener, shared by all its connections and worker threads, or with
//! `local_rate_limit_per_downstream_connection` a set per downstream
//! connection ([`ConnectionBuckets`]). Each of a request's descriptors
//! (made by the routes' `rate_limits` actions) that equals one of the
//! limit's `descriptors`, or else matches one with wildcard entries (an
//! empty value: any value, a bucket per distinct descriptor), takes a
//! token from that bucket, the slowest-filling first; the default bucket
//! gives one too unless `always_consume_default_token_bucket` is off. A
//! request no descriptor matched takes one from the default bucket (none:
//! not limited). With a bucket empty it is answered 429 (or the configured
//! status) with `x-envoy-ratelimited` and the configured headers, unless
//! the filter only counts it (`filter_enforced` below 100 %). Counted as
//! Envoy's `<stat_prefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use wire::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use wire::pb;

use super::rate_limit_actions::{Actions, RequestView};
use super::stats::LocalRateLimitStats;

mod buckets;
#[cfg(test)]
mod tests;

use buckets::{Dynamic, Report, Spec, Tokens};

/// Envoy's default of `max_dynamic_descriptors`.
const DEFAULT_DYNAMIC_DESCRIPTORS: u32 = 20;

pub struct LocalRateLimit {
    /// What it was built from: an unchanged config keeps its buckets.
    source: pb::LocalRateLimit,
    /// Tells a connection's buckets of this limit from an earlier limit's.
    id: u64,
    /// None: the filter's config gave no bucket (only descriptors limit).
    default: Option<Spec>,
    descriptors: Vec<Descriptor>,
    /// The listener's buckets (unused when per connection).
    shared: Buckets,
    per_connection: bool,
    max_dynamic: usize,
    actions: Actions,
    always_consume_default: bool,
    enabled: f64,
    enforced: f64,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    x_headers: bool,
    stats: Arc<LocalRateLimitStats>,
}

/// One of the limit's descriptors.
struct Descriptor {
    /// (key, value); an empty value matches any.
    entries: Vec<(String, String)>,
    wildcard: bool,
    spec: Spec,
    fill_rate: f64,
}

/// The tokens of a limit's buckets, in the order of its descriptors.
struct Buckets {
    default: Option<Tokens>,
    descriptors: Vec<DescriptorTokens>,
}

enum DescriptorTokens {
    Fixed(Tokens),
    Wildcard(Dynamic),
}

/// A bucket a request counts against: a descriptor's own or one a
/// wildcard descriptor made for the request's value.
enum Held<'a> {
    Fixed(&'a Tokens),
    Made(Arc<Tokens>),
}

/// A downstream connection's own buckets, for a limit with
/// `local_rate_limit_per_downstream_connection`: made at the connection's
/// first request and dropped with it. A listener whose limit changed
/// meanwhile starts the connection on fresh buckets of the new limit.
#[derive(Default)]
pub struct ConnectionBuckets {
    /// Of the limit the first request met: found with one atomic load.
    first: OnceLock<(u64, Buckets)>,
    /// Of the listener's limit after it changed.
    changed: ArcSwapOption<(u64, Buckets)>,
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
            .field("per_connection", &self.per_connection)
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

/// A decision and, with x-ratelimit headers configured, the state of the
/// bucket it is reported by: the one that limited the request, else the
/// first (slowest-filling) descriptor's it counted against, else the default.
#[derive(Debug)]
pub struct Checked {
    pub decision: Decision,
    report: Option<Report>,
}

impl Held<'_> {
    fn tokens(&self) -> &Tokens {
        match self {
            Held::Fixed(t) => t,
            Held::Made(t) => t,
        }
    }
}

impl Descriptor {
    /// Envoy's match: the same keys in the same order, each value equal
    /// or the configured one empty.
    fn matches(&self, d: &RateLimitDescriptor) -> bool {
        d.entries.len() == self.entries.len()
            && d.entries
                .iter()
                .zip(&self.entries)
                .all(|(e, (k, v))| e.key == *k && (v.is_empty() || e.value == *v))
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

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
        let default = (c.max_tokens > 0)
            .then(|| {
                valid(c.max_tokens, c.fill_interval_ms, "")?;
                Ok::<_, String>(Spec::new(
                    c.max_tokens,
                    c.tokens_per_fill,
                    c.fill_interval_ms,
                ))
            })
            .transpose()?;
        let mut descriptors: Vec<Descriptor> = Vec::with_capacity(c.descriptors.len());
        for (i, d) in c.descriptors.iter().enumerate() {
            let at = format!(" descriptors[{i}]");
            valid(d.max_tokens, d.fill_interval_ms, &at)?;
            if d.entries.is_empty() {
                return Err(format!("local_rate_limit{at}: no entries"));
            }
            let entries: Vec<(String, String)> = d
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            if descriptors.iter().any(|o| o.entries == entries) {
                return Err(format!("local_rate_limit{at}: a duplicate descriptor"));
            }
            let spec = Spec::new(d.max_tokens, d.tokens_per_fill, d.fill_interval_ms);
            descriptors.push(Descriptor {
                wildcard: entries.iter().any(|(_, v)| v.is_empty()),
                entries,
                fill_rate: spec.fill_rate(),
                spec,
            });
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
        let max_dynamic = match c.max_dynamic_descriptors {
            0 => DEFAULT_DYNAMIC_DESCRIPTORS,
            n => n,
        } as usize;
        let mut limit = LocalRateLimit {
            source: c.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            default,
            descriptors,
            shared: Buckets {
                default: None,
                descriptors: Vec::new(),
            },
            per_connection: c.per_downstream_connection,
            max_dynamic,
            actions: Actions::compile(&c.rate_limits)
                .map_err(|e| format!("local_rate_limit {e}"))?,
            always_consume_default: c.always_consume_default_token_bucket,
            enabled: c.enabled_percent,
            enforced: c.enforced_percent,
            status,
            headers,
            x_headers: c.x_ratelimit_headers,
            stats: super::stats::local_rate_limit(&c.stat_prefix),
        };
        if !limit.per_connection {
            limit.shared = limit.buckets();
        }
        Ok(limit)
    }

    /// A full set of this limit's buckets.
    fn buckets(&self) -> Buckets {
        let start = Instant::now();
        Buckets {
            default: self.default.as_ref().map(|s| Tokens::full(s, start)),
            descriptors: self
                .descriptors
                .iter()
                .map(|d| {
                    if d.wildcard {
                        DescriptorTokens::Wildcard(Dynamic::new(self.max_dynamic))
                    } else {
                        DescriptorTokens::Fixed(Tokens::full(&d.spec, start))
                    }
                })
                .collect(),
        }
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

    /// Consults the buckets for one request with these descriptors, on
    /// connection `conn` (whose buckets count when the limit is per connection).
    pub fn check(&self, conn: &ConnectionBuckets, request: &[RateLimitDescriptor]) -> Checked {
        if !roll(self.enabled) {
            return Checked {
                decision: Decision::NotEnabled,
                report: None,
            };
        }
        self.stats.enabled.fetch_add(1, Ordering::Relaxed);
        let (allowed, report) = if self.per_connection {
            conn.with(self, |own| self.take(own, request))
        } else {
            self.take(&self.shared, request)
        };
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
        Checked { decision, report }
    }

    /// Takes the request's tokens from `buckets`: whether it may pass, and
    /// the reported bucket's state when x-ratelimit headers are configured.
    fn take(&self, buckets: &Buckets, request: &[RateLimitDescriptor]) -> (bool, Option<Report>) {
        // One clock read for the request's refills and report.
        let now = Instant::now();
        // Each request descriptor counts against the descriptor equal to
        // it, else the first wildcard one it matches (as Envoy's look-up).
        let mut matched: Vec<(&Descriptor, Held<'_>)> = Vec::new();
        if !self.descriptors.is_empty() {
            for d in request {
                let found = self
                    .descriptors
                    .iter()
                    .position(|c| !c.wildcard && c.matches(d))
                    .or_else(|| {
                        self.descriptors
                            .iter()
                            .position(|c| c.wildcard && c.matches(d))
                    });
                let Some(i) = found else { continue };
                let config = &self.descriptors[i];
                let held = match &buckets.descriptors[i] {
                    DescriptorTokens::Fixed(t) => Held::Fixed(t),
                    DescriptorTokens::Wildcard(dynamic) => {
                        Held::Made(dynamic.bucket(&config.spec, &d.entries, now))
                    }
                };
                matched.push((config, held));
            }
            matched.sort_by(|a, b| a.0.fill_rate.total_cmp(&b.0.fill_rate));
        }
        let report =
            |spec: &Spec, tokens: &Tokens| self.x_headers.then(|| tokens.report(spec, now));
        for (config, held) in &matched {
            if !held.tokens().take(&config.spec, now) {
                return (false, report(&config.spec, held.tokens()));
            }
        }
        if (matched.is_empty() || self.always_consume_default)
            && let (Some(spec), Some(tokens)) = (&self.default, &buckets.default)
        {
            let allowed = tokens.take(spec, now);
            if !allowed || matched.is_empty() {
                return (allowed, report(spec, tokens));
            }
        }
        let first = matched
            .first()
            .and_then(|(c, h)| report(&c.spec, h.tokens()));
        (true, first)
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
    /// [`Checked`] reports: `x-ratelimit-limit`, `-remaining` and `-reset`
    /// (seconds to its next fill). None on a request the filter did not look at.
    pub fn x_ratelimit_headers(&self, checked: &Checked, headers: &mut HeaderMap) {
        if let Some(r) = &checked.report
            && self.x_headers
        {
            r.insert(headers);
        }
    }
}

impl ConnectionBuckets {
    /// Runs `f` on the connection's buckets of `limit`, made at its first request.
    fn with<R>(&self, limit: &LocalRateLimit, f: impl FnOnce(&Buckets) -> R) -> R {
        // Only the first requests of a connection (HTTP/2 streams at once)
        // may wait here, for one of them to make the buckets.
        let first = self.first.get_or_init(|| (limit.id, limit.buckets()));
        if first.0 == limit.id {
            return f(&first.1);
        }
        let current = self.changed.load();
        if let Some(own) = current.as_ref()
            && own.0 == limit.id
        {
            return f(&own.1);
        }
        let fresh = Arc::new((limit.id, limit.buckets()));
        // Two requests at once (HTTP/2): the first one's buckets stay.
        let before = self
            .changed
            .compare_and_swap(&*current, Some(fresh.clone()));
        match before.as_ref() {
            Some(won) if won.0 == limit.id => f(&won.1),
            _ => f(&fresh.1),
        }
    }
}

/// True for `percent` % of calls.
fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}
