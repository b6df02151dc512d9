//! Counters of the calls to policy services (Envoy's `ext_authz.*` and
//! `ratelimit.*` stats), process wide, by provider or domain and result.
//! Only requests that reach such a call count, so a lock is fine here.
//! The local rate limit counts every request it sees, so its counters are
//! atomics that each limit holds, found by stat_prefix when it is built.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// (metric, label value, result).
type Key = (&'static str, String, &'static str);

static COUNTS: LazyLock<Mutex<BTreeMap<Key, u64>>> = LazyLock::new(Mutex::default);

const EXT_AUTHZ: &str = "trellis_ext_authz_total";
const RATE_LIMIT: &str = "trellis_ratelimit_total";

/// One external authorization check: ok, denied, error, failure_mode_allowed.
pub fn ext_authz(provider: &str, result: &'static str) {
    count(EXT_AUTHZ, provider, result);
}

/// One rate limit service call: ok, over_limit, error, failure_mode_allowed.
pub fn rate_limit(domain: &str, result: &'static str) {
    count(RATE_LIMIT, domain, result);
}

fn count(metric: &'static str, label: &str, result: &'static str) {
    *COUNTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((metric, label.to_string(), result))
        .or_default() += 1;
}

/// Envoy's `<stat_prefix>.http_local_rate_limit.*` counters of one prefix.
#[derive(Debug, Default)]
pub struct LocalRateLimitStats {
    /// Requests the filter looked at (filter_enabled).
    pub enabled: AtomicU64,
    /// Requests refused (over the limit and enforced).
    pub enforced: AtomicU64,
    /// Requests over the limit, enforced or not.
    pub rate_limited: AtomicU64,
    /// Requests under the limit.
    pub ok: AtomicU64,
}

static LOCAL: LazyLock<Mutex<BTreeMap<String, Arc<LocalRateLimitStats>>>> =
    LazyLock::new(Mutex::default);

/// The counters of a local rate limit's stat_prefix, shared by every limit
/// with that prefix and kept across config changes, as Envoy's stats are.
pub fn local_rate_limit(stat_prefix: &str) -> Arc<LocalRateLimitStats> {
    LOCAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(stat_prefix.to_string())
        .or_default()
        .clone()
}

/// Appends the counters to a scrape.
pub fn encode(out: &mut String) {
    encode_local(out);
    let counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    for (metric, label, help) in [
        (
            EXT_AUTHZ,
            "provider",
            "External authorization checks by extension provider and result (ok, denied, error, failure_mode_allowed).",
        ),
        (
            RATE_LIMIT,
            "domain",
            "Rate limit service calls by domain and result (ok, over_limit, error, failure_mode_allowed).",
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for ((_, value, result), n) in counts.iter().filter(|((m, _, _), _)| *m == metric) {
            let mut escaped = String::new();
            crate::telemetry::metrics::escape_label_value(&mut escaped, value);
            let _ = writeln!(
                out,
                "{metric}{{{label}=\"{escaped}\",result=\"{result}\"}} {n}"
            );
        }
    }
}

/// The local rate limit counters under the names Envoy's Prometheus
/// endpoint gives them: `envoy_<stat_prefix>_http_local_rate_limit_<name>`.
fn encode_local(out: &mut String) {
    let local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    for (prefix, stats) in local.iter() {
        let prefix: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        for (name, n, help) in [
            (
                "enabled",
                &stats.enabled,
                "Requests the local rate limit looked at.",
            ),
            (
                "enforced",
                &stats.enforced,
                "Requests the local rate limit refused.",
            ),
            (
                "rate_limited",
                &stats.rate_limited,
                "Requests over the local rate limit, enforced or not.",
            ),
            ("ok", &stats.ok, "Requests under the local rate limit."),
        ] {
            let metric = format!("envoy_{prefix}_http_local_rate_limit_{name}");
            let _ = writeln!(
                out,
                "# HELP {metric} {help}\n# TYPE {metric} counter\n{metric} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}
