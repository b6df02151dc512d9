//! Fault injection (Istio's `fault`): a delay, then maybe an abort. Both
//! happen before the request is routed upstream, as Envoy's fault filter
//! runs before its router: an aborted request is never retried, and a
//! delay does not count against the route timeout.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;
use wire::pb;

#[derive(Debug)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status code, sent as a trailers-only response.
    Grpc(u8),
}

#[derive(Debug, Default)]
pub struct Fault {
    delay: Option<(f64, Duration)>,
    abort: Option<(f64, Abort)>,
}

impl Fault {
    pub fn compile(f: Option<&pb::Fault>) -> Result<Option<Self>, String> {
        let Some(f) = f else { return Ok(None) };
        let fraction = |pct: f64, what: &str| {
            if (0.0..=100.0).contains(&pct) {
                Ok(pct / 100.0)
            } else {
                Err(format!("fault {what} percent {pct} is not within 0..=100"))
            }
        };
        let delay = if f.delay_ms > 0 && f.delay_percent > 0.0 {
            Some((
                fraction(f.delay_percent, "delay")?,
                Duration::from_millis(f.delay_ms),
            ))
        } else {
            None
        };
        let abort = if f.abort_percent <= 0.0 {
            None
        } else if let Some(code) = f.abort_grpc_code {
            Some((
                fraction(f.abort_percent, "abort")?,
                Abort::Grpc(grpc_code(code)?),
            ))
        } else {
            let status = u16::try_from(f.abort_http_status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    format!(
                        "fault abort status {} is not within 200..=599",
                        f.abort_http_status
                    )
                })?;
            Some((fraction(f.abort_percent, "abort")?, Abort::Http(status)))
        };
        Ok((delay.is_some() || abort.is_some()).then_some(Fault { delay, abort }))
    }

    /// The delay to inject into this request, if it is drawn.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
            .as_ref()
            .filter(|(p, _)| drawn(*p))
            .map(|(_, d)| *d)
    }

    /// The abort to inject into this request, if it is drawn.
    pub fn abort(&self) -> Option<&Abort> {
        self.abort
            .as_ref()
            .filter(|(p, _)| drawn(*p))
            .map(|(_, a)| a)
    }
}

fn drawn(fraction: f64) -> bool {
    fraction >= 1.0 || (fraction > 0.0 && rand::rng().random::<f64>() < fraction)
}

/// gRPC status codes run from 0 (OK) to 16 (UNAUTHENTICATED).
fn grpc_code(code: u32) -> Result<u8, String> {
    u8::try_from(code)
        .ok()
        .filter(|c| *c <= 16)
        .ok_or_else(|| format!("gRPC status {code} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_and_never() {
        let f = Fault::compile(Some(&pb::Fault {
            abort_percent: 100.0,
            abort_http_status: 503,
            delay_percent: 0.0,
            delay_ms: 5,
            ..Default::default()
        }))
        .expect("valid")
        .expect("some");
        assert!(matches!(f.abort(), Some(Abort::Http(s)) if s.as_u16() == 503));
        assert!(f.delay().is_none());
    }

    #[test]
    fn fraction_is_about_right() {
        let f = Fault::compile(Some(&pb::Fault {
            delay_percent: 30.0,
            delay_ms: 1,
            ..Default::default()
        }))
        .expect("valid")
        .expect("some");
        let n = (0..10_000).filter(|_| f.delay().is_some()).count();
        assert!((2_500..3_500).contains(&n), "{n}");
    }

    #[test]
    fn validation() {
        assert!(
            Fault::compile(Some(&pb::Fault {
                abort_percent: 50.0,
                abort_http_status: 99,
                ..Default::default()
            }))
            .is_err()
        );
        assert!(
            Fault::compile(Some(&pb::Fault {
                delay_percent: 150.0,
                delay_ms: 1,
                ..Default::default()
            }))
            .is_err()
        );
        let g = Fault::compile(Some(&pb::Fault {
            abort_percent: 100.0,
            abort_grpc_code: Some(14),
            ..Default::default()
        }));
        assert!(matches!(g, Ok(Some(f)) if matches!(f.abort(), Some(Abort::Grpc(14)))));
        assert!(
            Fault::compile(Some(&pb::Fault::default()))
                .expect("valid")
                .is_none()
        );
    }
}
