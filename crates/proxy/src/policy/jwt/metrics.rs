//! Request authentication's counters (Envoy's `jwt_authn` stats), process
//! wide: JWKS caches outlive configs, so their counts do too. Written in
//! the Prometheus text format next to the standard metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use super::token::Failure;

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    /// By Envoy's reason (a handful of fixed texts).
    denied: Mutex<BTreeMap<&'static str, u64>>,
    /// By jwksUri: (fetched, failed).
    fetches: Mutex<BTreeMap<String, (u64, u64)>>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// Appends the counters to a scrape.
pub fn encode(out: &mut String) {
    let c = &*COUNTERS;
    let _ = writeln!(
        out,
        "# HELP trellis_jwt_authn_allowed_total Requests whose JWT was validated.\n# TYPE trellis_jwt_authn_allowed_total counter\ntrellis_jwt_authn_allowed_total {}",
        c.allowed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP trellis_jwt_authn_denied_total Requests refused with 401 for their JWT, by Envoy's reason.\n# TYPE trellis_jwt_authn_denied_total counter"
    );
    for (reason, n) in c
        .denied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let _ = writeln!(
            out,
            "trellis_jwt_authn_denied_total{{reason=\"{}\"}} {n}",
            escape(reason)
        );
    }
    let fetches = c.fetches.lock().unwrap_or_else(PoisonError::into_inner);
    for (name, help, pick) in [
        (
            "trellis_jwt_authn_jwks_fetch_success_total",
            "Successful fetches of a jwksUri.",
            0,
        ),
        (
            "trellis_jwt_authn_jwks_fetch_failed_total",
            "Failed fetches of a jwksUri (unreachable, bad status, or not a usable JWKS).",
            1,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (uri, counts) in fetches.iter() {
            let n = if pick == 0 { counts.0 } else { counts.1 };
            let _ = writeln!(out, "{name}{{uri=\"{}\"}} {n}", escape(uri));
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    crate::telemetry::metrics::escape_label_value(&mut out, v);
    out
}

pub(super) fn allowed() {
    COUNTERS.allowed.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn denied(f: Failure) {
    *COUNTERS
        .denied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(f.message())
        .or_default() += 1;
}

pub(super) fn jwks_fetch(uri: &str, ok: bool) {
    let mut fetches = COUNTERS
        .fetches
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let counts = fetches.entry(uri.to_string()).or_default();
    if ok {
        counts.0 += 1;
    } else {
        counts.1 += 1;
    }
}
