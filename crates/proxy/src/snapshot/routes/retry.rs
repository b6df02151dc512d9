//! Retry policy: which outcomes are retried (Envoy's `retry_on` conditions, as
//! bits the control plane compiled them to) and how long to wait between tries.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use rand::Rng;
use wire::pb;
use wire::retry_on::*;

use crate::failure::Failure;

/// Envoy's default backoff base interval.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Retries are bounded whatever the config says: a storm of retries only
/// adds load to an upstream that is already failing.
const MAX_ATTEMPTS: u32 = 25;

#[derive(Debug)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    on: u32,
    status_codes: Vec<u16>,
    backoff_base: Duration,
}

impl RetryPolicy {
    /// `None` when the policy allows no retry (and sets no per-try timeout).
    pub fn compile(p: Option<&pb::RetryPolicy>) -> Result<Option<Self>, String> {
        let Some(p) = p else { return Ok(None) };
        let mut status_codes: Vec<u16> = Vec::new();
        for code in &p.retriable_status_codes {
            status_codes.push(status_code(*code)?);
        }
        let per_try_timeout =
            (p.per_try_timeout_ms > 0).then(|| Duration::from_millis(p.per_try_timeout_ms));
        if p.attempts == 0 && per_try_timeout.is_none() {
            return Ok(None);
        }
        Ok(Some(RetryPolicy {
            attempts: p.attempts.min(MAX_ATTEMPTS),
            per_try_timeout,
            on: p.retry_on_bits,
            status_codes,
            backoff_base: match p.backoff_base_ms {
                0 => DEFAULT_BACKOFF_BASE,
                ms => Duration::from_millis(ms),
            },
        }))
    }

    pub fn retries_failure(&self, f: Failure) -> bool {
        let mask = match f {
            // Envoy counts a connect failure as a reset, which 5xx and gateway-error cover.
            Failure::Connect => CONNECT_FAILURE | FIVE_XX | GATEWAY_ERROR,
            Failure::Refused => REFUSED_STREAM | RESET | FIVE_XX | GATEWAY_ERROR,
            Failure::Reset | Failure::PerTryTimeout => RESET | FIVE_XX | GATEWAY_ERROR,
        };
        self.on & mask != 0
    }

    pub fn retries_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        let s = status.as_u16();
        (self.on & FIVE_XX != 0 && s >= 500)
            || (self.on & GATEWAY_ERROR != 0 && matches!(s, 502..=504))
            || (self.on & RETRIABLE_4XX != 0 && s == 409)
            || (self.on & RETRIABLE_STATUS_CODES != 0 && self.status_codes.contains(&s))
            || self.retries_grpc(headers)
    }

    /// gRPC errors arrive as a `grpc-status` header on a trailers-only response.
    fn retries_grpc(&self, headers: &HeaderMap) -> bool {
        let grpc = GRPC_CANCELLED
            | GRPC_DEADLINE_EXCEEDED
            | GRPC_RESOURCE_EXHAUSTED
            | GRPC_INTERNAL
            | GRPC_UNAVAILABLE;
        if self.on & grpc == 0 {
            return false;
        }
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok());
        let bit = match code {
            Some(1) => GRPC_CANCELLED,
            Some(4) => GRPC_DEADLINE_EXCEEDED,
            Some(8) => GRPC_RESOURCE_EXHAUSTED,
            Some(13) => GRPC_INTERNAL,
            Some(14) => GRPC_UNAVAILABLE,
            _ => 0,
        };
        self.on & bit != 0
    }

    /// Envoy's backoff before retry `n` (1-based): a random time up to
    /// (2^n - 1) × base, never more than 10 × base ("full jitter").
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self.backoff_base.as_millis() as u64;
        let cap = base.saturating_mul(10);
        let upper = base.saturating_mul((1u64 << n.min(16)) - 1).min(cap);
        Duration::from_millis(rand::rng().random_range(0..=upper))
    }
}

fn status_code(code: u32) -> Result<u16, String> {
    u16::try_from(code)
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| format!("retriable status code {code} is not an HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: u32, codes: &[u32]) -> RetryPolicy {
        RetryPolicy::compile(Some(&pb::RetryPolicy {
            attempts: 2,
            retry_on_bits: on,
            retriable_status_codes: codes.to_vec(),
            ..Default::default()
        }))
        .expect("valid")
        .expect("some")
    }

    #[test]
    fn tokens_table() {
        let h = HeaderMap::new();
        let s = |c: u16| StatusCode::from_u16(c).expect("status");
        let p = policy(FIVE_XX, &[]);
        assert!(
            p.retries_response(s(500), &h)
                && p.retries_response(s(503), &h)
                && !p.retries_response(s(404), &h)
        );
        assert!(p.retries_failure(Failure::Connect) && p.retries_failure(Failure::Reset));
        let p = policy(GATEWAY_ERROR, &[]);
        assert!(p.retries_response(s(502), &h) && !p.retries_response(s(500), &h));
        let p = policy(CONNECT_FAILURE, &[]);
        assert!(
            p.retries_failure(Failure::Connect)
                && !p.retries_failure(Failure::Reset)
                && !p.retries_response(s(503), &h)
        );
        let p = policy(RETRIABLE_4XX, &[]);
        assert!(p.retries_response(s(409), &h) && !p.retries_response(s(400), &h));
        let p = policy(RETRIABLE_STATUS_CODES, &[418]);
        assert!(p.retries_response(s(418), &h));
        let p = policy(
            CONNECT_FAILURE | REFUSED_STREAM | RETRIABLE_STATUS_CODES,
            &[503],
        );
        assert!(
            p.retries_response(s(503), &h)
                && p.retries_failure(Failure::Refused)
                && !p.retries_response(s(500), &h)
        );
        let p = policy(GRPC_UNAVAILABLE, &[]);
        let mut g = HeaderMap::new();
        g.insert("grpc-status", "14".parse().expect("value"));
        assert!(p.retries_response(s(200), &g) && !p.retries_response(s(200), &h));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = policy(FIVE_XX, &[]);
        for n in 1..30 {
            assert!(p.backoff(n) <= Duration::from_millis(250));
        }
        assert!(p.backoff(1) <= Duration::from_millis(25));
    }

    #[test]
    fn no_attempts_no_policy() {
        assert!(
            RetryPolicy::compile(Some(&pb::RetryPolicy::default()))
                .expect("valid")
                .is_none()
        );
        assert!(
            RetryPolicy::compile(Some(&pb::RetryPolicy {
                retriable_status_codes: vec![700],
                attempts: 1,
                ..Default::default()
            }))
            .is_err()
        );
    }
}
