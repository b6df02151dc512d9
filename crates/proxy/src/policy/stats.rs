//! Counters of the calls to policy services (Envoy's `ext_authz.*` and
//! `ratelimit.*` stats), process wide, by provider or domain and result.
//! Only requests that reach such a call count, so a lock is fine here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex, PoisonError};

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

/// Appends the counters to a scrape.
pub fn encode(out: &mut String) {
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
