//! The rate limits on a request's way: the listener's local token bucket
//! and its global limit (a call to the rate limit service).

use super::*;
use crate::policy::rate_limit::{Checked, Decision, LocalRateLimit};
use crate::policy::rate_limit_actions::RequestView;

/// The listener's local rate limit on one request: its decision, with the
/// request's descriptors made only when the limit has descriptors of its own.
pub(super) fn local_limit<B>(
    limit: &LocalRateLimit,
    req: &Request<B>,
    authority: &str,
    listener: &ListenerRt,
    conn: &Conn,
) -> Checked {
    let descriptors = if limit.uses_descriptors() {
        limit.descriptors(&request_view(req, authority, listener, conn))
    } else {
        Vec::new()
    };
    let checked = limit.check(&conn.rate_limit_buckets, &descriptors);
    if checked.decision == Decision::WouldLimit {
        tracing::debug!(
            limit = limit.origin(),
            "over the local rate limit (not enforced)"
        );
    }
    checked
}

/// What the rate limits' actions may read of a request.
fn request_view<'a, B>(
    req: &'a Request<B>,
    authority: &'a str,
    listener: &ListenerRt,
    conn: &Conn,
) -> RequestView<'a> {
    RequestView {
        method: req.method(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
        authority,
        scheme: req
            .headers()
            .get(X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http"),
        headers: req.headers(),
        remote: if listener.spec.direction == Direction::Gateway {
            conn.peer.ip()
        } else {
            crate::policy::authz::remote_ip(req.headers(), conn.peer.ip())
        },
        // Istio's inbound cluster is named by the application's port.
        inbound_port: (listener.spec.direction == Direction::Inbound)
            .then_some(listener.spec.app_port),
    }
}

/// The listener's global rate limit on one request: `Ok` with the
/// headers to add to its response (the request got the service's), `Err`
/// with the reply, Envoy's details, and whether the service failed.
pub(super) async fn global_limit<B>(
    limit: &crate::policy::global_rate_limit::GlobalRateLimit,
    req: &mut Request<B>,
    authority: &str,
    listener: &ListenerRt,
    conn: &Conn,
) -> Result<Vec<(header::HeaderName, HeaderValue)>, (Response<RespBody>, &'static str, bool)> {
    use crate::policy::global_rate_limit::Outcome;
    let descriptors = limit.descriptors(&request_view(req, authority, listener, conn));
    if descriptors.is_empty() {
        return Ok(Vec::new());
    }
    let Some(snapshot) = conn.shared.store.current() else {
        return Ok(Vec::new());
    };
    match limit.check(&snapshot, descriptors).await {
        Outcome::Pass { response, request } => {
            for (name, value) in request {
                req.headers_mut().insert(name, value);
            }
            Ok(response)
        }
        Outcome::Refuse(response, details, service_failed) => {
            Err((*response, details, service_failed))
        }
    }
}

/// A global rate limit's refusal, flagged as Envoy flags it: RL when over
/// the limit, RLSE when the service failed and failure_mode_deny is set.
pub(super) fn global_refusal(
    (response, details, service_failed): (Response<RespBody>, &'static str, bool),
    record: &mut Record,
) -> Response<RespBody> {
    record.flags.set(if service_failed {
        Flags::RLSE
    } else {
        Flags::RL
    });
    record.response_code_details = Some(details.into());
    response
}
