//! Who the request's sender is and whether the port's policies let it in:
//! RequestAuthentication (JWT) and AuthorizationPolicies, CUSTOM first.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::headers::X_FORWARDED_PROTO;
use super::{Conn, ListenerRt, local_reply};
use crate::resp_body::RespBody;
use crate::snapshot::Direction;

/// The outcome of the port's AuthorizationPolicies.
pub(super) enum Authorized {
    /// With what an external authorizer asked to add to the response.
    Allow(Option<crate::policy::ext_authz::Allowed>),
    Deny(Arc<str>),
    /// An external authorizer's refusal (or its failure), as the client gets it.
    External(Response<RespBody>, &'static str),
    /// The body the authorizer is to see is over its `maxRequestBytes`.
    BodyTooLarge,
    /// The client's body failed while it was read for the authorizer.
    BodyFailed,
}

/// The port's AuthorizationPolicies on one inbound request: CUSTOM (an
/// external authorizer, whose allowing headers the request then carries),
/// then the others.
pub(super) async fn authorize(
    req: &mut Request<Incoming>,
    authority: &str,
    listener: &ListenerRt,
    conn: &Conn,
    auth: Option<&crate::policy::jwt::Verified>,
) -> Authorized {
    use crate::policy::authz::{Custom, Decision};
    use crate::policy::ext_authz::{BodyRefused, CheckRequest, Verdict};
    let engine = &listener.authz.http;
    if engine.is_empty() {
        return Authorized::Allow(None);
    }
    let mut external = None;
    match engine.custom(&attrs(req, authority, listener, conn, auth)) {
        Custom::None => {}
        Custom::Deny(details) => return Authorized::Deny(details),
        Custom::Check(authorizer) => {
            let Some(snapshot) = conn.shared.store.current() else {
                return Authorized::Deny("ext_authz_error".into());
            };
            let body = match authorizer.request_body(req).await {
                Ok(body) => body,
                Err(BodyRefused::TooLarge) => return Authorized::BodyTooLarge,
                Err(BodyRefused::Failed(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "request body failed while read for the external authorizer");
                    return Authorized::BodyFailed;
                }
            };
            let check = CheckRequest {
                source: conn.peer,
                principal: conn.mesh_peer.as_ref().map(|p| &*p.meta.principal),
                destination: conn.original_dst.unwrap_or(listener.spec.bind),
                method: req.method(),
                path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                host: authority,
                headers: req.headers(),
                version: req.version(),
                body: body.as_ref(),
            };
            match authorizer.check(&snapshot, &check).await {
                Verdict::Deny(response, details) => {
                    tracing::debug!(peer = %conn.peer, provider = authorizer.provider(), details, "request denied by the external authorizer");
                    return Authorized::External(response, details);
                }
                Verdict::Allow(allowed) => {
                    allowed.apply_to_request(req.headers_mut());
                    external = Some(allowed);
                }
            }
        }
    }
    match engine.decide_after_custom(&attrs(req, authority, listener, conn, auth)) {
        Decision::Allow => Authorized::Allow(external),
        Decision::Deny(details) => Authorized::Deny(details),
    }
}

/// What authorization policies match a request on.
fn attrs<'a, B>(
    req: &'a Request<B>,
    authority: &'a str,
    listener: &ListenerRt,
    conn: &'a Conn,
    auth: Option<&'a crate::policy::jwt::Verified>,
) -> crate::policy::authz::Attrs<'a> {
    use crate::policy::authz::{self, Attrs, HttpAttrs};
    let principal = conn.mesh_peer.as_ref().map(|p| &*p.meta.principal);
    Attrs {
        source: conn.peer.ip(),
        // A gateway is the edge: the client is its peer (what it wrote in
        // x-forwarded-for proves nothing), unless numTrustedProxies says
        // who stands in front of it.
        remote: if listener.spec.direction == Direction::Gateway {
            authz::trusted_client_ip(
                req.headers(),
                conn.peer.ip(),
                listener.spec.num_trusted_proxies,
            )
        } else {
            authz::remote_ip(req.headers(), conn.peer.ip())
        },
        destination: listener.spec.bind,
        principal,
        sni: conn.sni.as_deref(),
        http: Some(HttpAttrs {
            method: req.method().as_str(),
            // Normalised already (`canonicalize`).
            path: req.uri().path(),
            host: authority,
            headers: req.headers(),
            auth,
        }),
    }
}

/// The listener's JWT rules on one request; `Ok(None)`: no token.
pub(super) async fn authenticate<B>(
    req: &mut Request<B>,
    listener: &ListenerRt,
) -> Result<Option<Arc<crate::policy::jwt::Verified>>, crate::policy::jwt::Failure> {
    let jwt = &listener.authz.jwt;
    if jwt.is_empty() {
        return Ok(None);
    }
    let uri = req.uri().clone();
    jwt.authenticate(req.headers_mut(), &uri)
        .await
        .map_err(|crate::policy::jwt::Refused(f)| f)
}

/// Envoy's answer to a request whose JWT is refused: 401, the reason as the
/// body, and a `www-authenticate` challenge naming the request's URL.
pub(super) fn jwt_refused<B>(
    failure: crate::policy::jwt::Failure,
    req: &Request<B>,
    authority: &str,
) -> Response<RespBody> {
    let mut response = local_reply(StatusCode::UNAUTHORIZED, failure.message());
    let scheme = req
        .headers()
        .get(X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let challenge = format!(
        "Bearer realm=\"{scheme}://{authority}{}\", error=\"invalid_token\"",
        req.uri().path()
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}
