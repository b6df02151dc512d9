//! Request authentication's counters (Envoy's `jwt_authn` stats), process
//! wide: JWKS caches outlive configs, so their counts do too.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::token::Failure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Uri {
    uri: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

struct Counters {
    allowed: Counter,
    denied: Family<Reason, Counter>,
    fetch_success: Family<Uri, Counter>,
    fetch_failed: Family<Uri, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    allowed: Counter::default(),
    denied: Family::default(),
    fetch_success: Family::default(),
    fetch_failed: Family::default(),
});

/// Adds the counters to a registry (the proxy's `/stats/prometheus`).
pub fn register(registry: &mut Registry) {
    let c = &*COUNTERS;
    registry.register(
        "trellis_jwt_authn_allowed",
        "Requests whose JWT was validated",
        c.allowed.clone(),
    );
    registry.register(
        "trellis_jwt_authn_denied",
        "Requests refused with 401 for their JWT, by Envoy's reason",
        c.denied.clone(),
    );
    registry.register(
        "trellis_jwt_authn_jwks_fetch_success",
        "Successful fetches of a jwksUri",
        c.fetch_success.clone(),
    );
    registry.register(
        "trellis_jwt_authn_jwks_fetch_failed",
        "Failed fetches of a jwksUri (unreachable, bad status, or not a usable JWKS)",
        c.fetch_failed.clone(),
    );
}

pub(super) fn allowed() {
    COUNTERS.allowed.inc();
}

pub(super) fn denied(f: Failure) {
    COUNTERS
        .denied
        .get_or_create(&Reason {
            reason: f.message(),
        })
        .inc();
}

pub(super) fn jwks_fetch(uri: &str, ok: bool) {
    let family = if ok {
        &COUNTERS.fetch_success
    } else {
        &COUNTERS.fetch_failed
    };
    family
        .get_or_create(&Uri {
            uri: uri.to_string(),
        })
        .inc();
}
