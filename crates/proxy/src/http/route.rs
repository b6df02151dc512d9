//! Serving a request by its route: faults, then the route's action
//! (forward, redirect or direct response) and its header operations.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::forward::{self, Dest, Head, Policy, SendBody};
use super::{DEFAULT_PORT, local_reply, mirror, prepare_headers, split};
use crate::lb::Balancer;
use crate::req_body::{REPLAY_LIMIT, Replay, ReqBody, buffer_for_replay};
use crate::resp_body::RespBody;
use crate::snapshot::matcher::{PathMatch, RequestView};
use crate::snapshot::routes::cors::Verdict;
use crate::snapshot::routes::fault::Abort;
use crate::snapshot::routes::rewrite::{prefix_rewrite, with_query};
use crate::snapshot::routes::{Action, Forward, Route, VirtualHost};
use crate::telemetry::{Flags, Record};

pub struct Ctx<'a> {
    pub vh: &'a VirtualHost,
    /// Lowercase, as the client sent it.
    pub authority: &'a str,
    /// The port route matches compare with.
    pub port: u16,
    /// The downstream address (consistent hashing by source IP).
    pub peer: SocketAddr,
}

pub async fn serve(
    ctx: Ctx<'_>,
    req: Request<Incoming>,
    record: &mut Record,
) -> Response<RespBody> {
    let scheme = if req.uri().scheme() == Some(&Scheme::HTTPS) {
        "https"
    } else {
        "http"
    };
    let view = RequestView {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority: ctx.authority,
        scheme,
        port: ctx.port,
        headers: req.headers(),
    };
    let Some((route, matched)) = ctx.vh.select(&view) else {
        record.flags.set(Flags::NR);
        return local_reply(StatusCode::NOT_FOUND, "");
    };
    if !route.name.is_empty() {
        record.route_name = Some(route.name.clone());
    }
    // The CORS filter runs before faults and the router, as in Istio's chain.
    let cors = match &route.cors {
        None => None,
        Some(c) => match c.check(req.method(), req.headers()) {
            Verdict::Pass => None,
            Verdict::Reply(resp) => return *resp,
            Verdict::Decorate(origin) => Some((c, origin)),
        },
    };
    let mut resp = act(route, matched, &ctx, scheme, req, record).await;
    if let Some((c, origin)) = cors {
        c.decorate(origin, resp.headers_mut());
    }
    resp
}

/// Faults, then the route's action.
async fn act(
    route: &Route,
    matched: Option<&PathMatch>,
    ctx: &Ctx<'_>,
    scheme: &str,
    req: Request<Incoming>,
    record: &mut Record,
) -> Response<RespBody> {
    if let Some(fault) = &route.fault {
        if let Some(delay) = fault.delay() {
            record.flags.set(Flags::DI);
            tokio::time::sleep(delay).await;
        }
        if let Some(abort) = fault.abort() {
            record.flags.set(Flags::FI);
            // The request never leaves, but Istio's labels still name the
            // service its route is for (Envoy's: the route's cluster), so
            // that the fault shows on the caller → service edge.
            if let Action::Forward(f) = &route.action
                && let Some(cluster) = f.targets.first().and_then(|t| t.cluster.as_ref())
            {
                record.service = Some(cluster.service.clone());
            }
            let mut resp = abort_reply(abort);
            route.response_headers.apply(resp.headers_mut());
            return resp;
        }
    }

    let mut resp = match &route.action {
        Action::Forward(f) => return forward(f, route, matched, ctx, req, record).await,
        Action::Direct { status, body } => {
            let mut resp = Response::new(RespBody::text(body.clone()));
            *resp.status_mut() = *status;
            if !body.is_empty() {
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            resp
        }
        Action::Redirect(r) => {
            let location = r.location(scheme, ctx.authority, req.uri().path(), req.uri().query());
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    let mut resp = Response::new(RespBody::Empty);
                    *resp.status_mut() = r.code;
                    resp.headers_mut().insert(header::LOCATION, v);
                    resp
                }
                Err(_) => local_reply(StatusCode::BAD_REQUEST, "invalid redirect location"),
            }
        }
    };
    route.response_headers.apply(resp.headers_mut());
    resp
}

/// Envoy's fault filter replies: the status and "fault filter abort", or for
/// gRPC a trailers-only response carrying the gRPC status.
fn abort_reply(abort: &Abort) -> Response<RespBody> {
    match abort {
        Abort::Http(status) => local_reply(*status, "fault filter abort"),
        Abort::Grpc(code) => {
            let mut resp = Response::new(RespBody::Empty);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(u16::from(*code)));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            resp
        }
    }
}

async fn forward(
    f: &Forward,
    route: &Route,
    matched: Option<&PathMatch>,
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    record: &mut Record,
) -> Response<RespBody> {
    let target = f.pick();
    record.upstream_cluster = Some(target.name.clone());
    let Some(cluster) = &target.cluster else {
        // The route names a cluster this proxy was not given (Envoy: NC).
        record.flags.set(Flags::NC);
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "");
    };
    record.service = Some(cluster.service.clone());
    // Hashed on the request as the client sent it.
    let request_hash = cluster
        .hash_key()
        .map(|k| k.of(req.headers(), req.uri().query(), ctx.peer))
        .unwrap_or_default();

    let (mut parts, body) = split(req, record);
    let upgrade = prepare_headers(&mut parts, ctx.authority);
    // The most specific operations win: the route's, then the destination's.
    route.request_headers.apply(&mut parts.headers);
    target.request_headers.apply(&mut parts.headers);
    if let Some(a) = &f.authority_rewrite {
        parts.headers.insert(header::HOST, HeaderValue::clone(a));
    }
    let Some(path) = rewritten_path(f, matched, &parts.uri) else {
        return local_reply(StatusCode::BAD_REQUEST, "invalid path after rewrite");
    };

    // Retries and mirrors need the body more than once: keep it if it is small.
    let replay_needed = f.retry.as_ref().is_some_and(|r| r.attempts > 0) || !f.mirrors.is_empty();
    let body = if replay_needed {
        match buffer_for_replay(body, REPLAY_LIMIT).await {
            Ok(Replay::Whole(b)) => SendBody::Replay(b),
            Ok(Replay::Once(b)) => SendBody::Once(b),
            Err(_) => {
                record.flags.set(Flags::DC);
                return local_reply(StatusCode::BAD_REQUEST, "");
            }
        }
    } else {
        SendBody::Once(ReqBody::stream(body))
    };
    let head = Head {
        method: parts.method,
        path,
        headers: parts.headers,
        downstream: parts.version,
        upgrade,
    };

    if let SendBody::Replay(bytes) = &body {
        for m in f.mirrors.iter().filter(|m| m.drawn()) {
            mirror::spawn(m, &head, bytes.clone(), f.timeout);
        }
    }

    // A passthrough cluster sends where the client asked to go.
    let original = (cluster.balancer == Balancer::Passthrough)
        .then(|| original_authority(ctx.authority))
        .flatten();
    let dest = Dest::Cluster {
        cluster,
        original: original.as_ref(),
        hash: request_hash.hash,
    };
    let mut resp = forward::send(
        dest,
        head,
        body,
        Policy {
            timeout: f.timeout,
            retry: f.retry.as_ref(),
        },
        record,
    )
    .await;
    route.response_headers.apply(resp.headers_mut());
    target.response_headers.apply(resp.headers_mut());
    if let Some(cookie) = request_hash.set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

fn original_authority(authority: &str) -> Option<Authority> {
    let host = crate::snapshot::domains::strip_port(authority);
    if host.len() == authority.len() {
        format!("{authority}:{DEFAULT_PORT}").parse().ok()
    } else {
        authority.parse().ok()
    }
}

fn rewritten_path(
    f: &Forward,
    matched: Option<&PathMatch>,
    uri: &http::Uri,
) -> Option<PathAndQuery> {
    let original = || {
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    let path = if let Some(r) = &f.regex_rewrite {
        r.apply(uri.path())
    } else if let Some(p) = &f.prefix_rewrite {
        prefix_rewrite(uri.path(), matched, p)
    } else {
        return Some(original());
    };
    PathAndQuery::try_from(with_query(path, uri.query())).ok()
}
