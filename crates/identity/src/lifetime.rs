//! How long a workload asks its certificate to live: Istio's `SECRET_TTL`,
//! read by the proxy from its environment and checked by `trellis up` when
//! it plans a pod, within what the CA grants.

use std::time::Duration;

use crate::ca::MAX_WORKLOAD_TTL;

/// Istio's proxy environment variable for the lifetime of the workload
/// certificate it requests (a Go duration, default 24h); the proxy renews at half-life.
pub const SECRET_TTL: &str = "SECRET_TTL";

/// The CA grants whole seconds (`validity_seconds`); less would read as "default".
const MIN_SECRET_TTL: Duration = Duration::from_secs(1);

/// Why a `SECRET_TTL` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretTtlError {
    #[error(transparent)]
    Syntax(#[from] duration::DurationError),
    #[error("{0:?} is shorter than the shortest certificate lifetime, {MIN_SECRET_TTL:?}")]
    TooShort(String),
    #[error(
        "{0:?} is longer than the CA's max workload certificate lifetime, {max}h",
        max = MAX_WORKLOAD_TTL.as_secs() / 3600
    )]
    TooLong(String),
}

/// The value of `SECRET_TTL` as Istio's agent reads it (Go's `time.ParseDuration`),
/// within what the CA grants: at least 1s, at most its maximum (90 days, Istio's
/// `max-workload-cert-ttl`). Istio's agent falls back to 24h on a value it cannot
/// parse; here it is an error, so a typo cannot silently give day-long certificates.
pub fn secret_ttl(value: &str) -> Result<Duration, SecretTtlError> {
    let ttl = duration::parse(value)?;
    if ttl < MIN_SECRET_TTL {
        return Err(SecretTtlError::TooShort(value.into()));
    }
    if ttl > MAX_WORKLOAD_TTL {
        return Err(SecretTtlError::TooLong(value.into()));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ttl_reads_go_durations_within_the_cas_limits() {
        assert_eq!(secret_ttl("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(secret_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(secret_ttl("2160h"), Ok(MAX_WORKLOAD_TTL));
        let long = secret_ttl("2160h1s").expect_err("too long").to_string();
        assert!(long.contains("max"), "{long}");
        assert!(secret_ttl("0").is_err());
        assert!(secret_ttl("-4s").is_err());
        let unitless = secret_ttl("4").expect_err("no unit").to_string();
        assert!(unitless.contains("unit"), "{unitless}");
    }
}
