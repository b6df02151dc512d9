//! HTTP request handling, per listener direction:
//! - inbound: to the local application, unchanged but for forwarding headers;
//! - outbound (the explicit proxy): route by the port's route config and the
//!   authority, or pass through to the authority (Istio's ALLOW_ANY);
//! - gateway: route by the listener's route config and the authority.

mod authorize;
mod connect;
pub mod forward;
pub mod headers;
mod limits;
mod mirror;
mod route;
mod upgrade;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::ConfigStore;
use crate::lb::UpstreamProtocol;
use crate::lb::passthrough::Passthrough;
use crate::policy::rate_limit::Decision;
use crate::req_body::{Counted, ReqBody};
use crate::resp_body::RespBody;
use crate::snapshot::routes::VirtualHost;
use crate::snapshot::{Direction, ListenerSpec, Snapshot};
use crate::telemetry::meta::ServiceMeta;
use crate::telemetry::{Flags, LoggedBody, Record, Reporter, Telemetry};
use authorize::{Authorized, authenticate, authorize, jwt_refused};
use forward::{Dest, Head, LocalApp, Policy, SendBody};
use headers::{X_FORWARDED_PROTO, ensure_request_id, strip_hop_by_hop};
use limits::{global_limit, global_refusal, local_limit};

/// State shared by every listener.
pub struct Shared {
    pub store: Arc<ConfigStore>,
    pub telemetry: Arc<Telemetry>,
    pub app_ip: IpAddr,
    /// Pools for the explicit proxy's hosts the mesh does not know (the
    /// local application has its own, `ListenerRt::app`).
    pub passthrough: Arc<Passthrough>,
    pub limits: crate::limits::Limits,
}

/// A listener as its connections see it; swapped when its config changes.
pub struct ListenerRt {
    pub spec: ListenerSpec,
    /// Where inbound traffic goes: app_ip:app_port.
    pub app: Arc<LocalApp>,
    /// Inbound: the port's AuthorizationPolicies.
    pub authz: Arc<crate::policy::authz::ListenerAuthz>,
    /// Inbound: the service the port serves (Istio's `destination_service`).
    pub service: Option<Arc<ServiceMeta>>,
    /// Inbound and gateway: the listener's local rate limit.
    pub rate_limit: Option<Arc<crate::policy::rate_limit::LocalRateLimit>>,
    /// Inbound and gateway: the listener's global rate limit.
    pub global_rate_limit: Option<Arc<crate::policy::global_rate_limit::GlobalRateLimit>>,
}

/// One downstream connection.
pub struct Conn {
    pub shared: Arc<Shared>,
    pub listener: Arc<ArcSwap<ListenerRt>>,
    pub peer: SocketAddr,
    /// Inbound over mesh mTLS: the verified peer.
    pub mesh_peer: Option<crate::tls::inbound::MeshPeer>,
    /// The server name a mesh mTLS client asked for (`connection.sni`).
    pub sni: Option<Arc<str>>,
    /// A gateway TLS server's own route config, chosen by SNI at the
    /// handshake; `None`: the listener's.
    pub route_config: Option<Arc<str>>,
    /// A captured connection's original destination (capture::outbound):
    /// where a request for a host the mesh does not know goes.
    pub original_dst: Option<SocketAddr>,
    /// The local rate limit's buckets of this connection, when per connection.
    pub rate_limit_buckets: crate::policy::rate_limit::ConnectionBuckets,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared
            .telemetry
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Marks a request that came with more headers than the limit (counted as
/// received, before the proxy adds any). HTTP/1 heads over the limits never
/// get this far (hyper answers 431); h2 bounds an HTTP/2 header list's size
/// but not its count, so this answers 431 as Envoy does, flagged DPE.
#[derive(Clone, Copy, Debug)]
pub struct TooManyHeaders;

/// Envoy's port for a request without one.
const DEFAULT_PORT: u16 = 80;

pub async fn handle(
    mut req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<LoggedBody>, Infallible> {
    let listener = conn.listener.load_full();
    // One path and one authority for routing, authorization and the upstream.
    let refused = canonicalize(&mut req, listener.spec.path_normalization).err();
    let authority = authority_of(&req);
    let request_id = ensure_request_id(req.headers_mut());
    if listener.spec.direction == Direction::Gateway {
        // The gateway is the edge: the scheme is the one the client used
        // with it, whatever the client claims (as Envoy's edge overwrites it).
        let scheme = if listener.spec.gateway_tls.is_some() {
            "https"
        } else {
            "http"
        };
        req.headers_mut()
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    let reporter = match listener.spec.direction {
        Direction::Inbound => Reporter::Destination,
        Direction::Outbound | Direction::Gateway => Reporter::Source,
    };
    let snapshot = conn.shared.store.current();
    let span = snapshot
        .as_ref()
        .and_then(|s| trace_span(s, &mut req, &authority, &listener));
    let logs = snapshot
        .as_ref()
        .filter(|_| conn.shared.telemetry.access_log)
        .and_then(|s| s.access_logs.side(listener.spec.direction).clone());
    drop(snapshot);
    let mut record = Box::new(Record::start(
        &conn.shared.telemetry,
        reporter,
        &req,
        request_id,
        conn.peer,
        conn.mesh_peer.as_ref().map(|p| p.meta.clone()),
    ));
    record.observe(&req, &authority, span, logs);
    if record.logged() {
        record.downstream_local = Some(conn.original_dst.unwrap_or(listener.spec.bind));
        record.requested_server_name.clone_from(&conn.sni);
    }
    let mut global_headers = Vec::new();
    // The local rate limit first, as the EnvoyFilter inserts it at the
    // head of the HTTP filters (after the codec's own refusals).
    let local = listener
        .rate_limit
        .as_ref()
        .filter(|_| refused.is_none() && req.extensions().get::<TooManyHeaders>().is_none())
        .map(|limit| {
            (
                limit,
                local_limit(limit, &req, &authority, &listener, &conn),
            )
        });
    let mut response = match listener.spec.direction {
        _ if req.extensions().get::<TooManyHeaders>().is_some() => {
            record.flags.set(Flags::DPE);
            record.response_code_details = Some("http2.too_many_headers".into());
            local_reply(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "")
        }
        _ if let Some(details) = refused => {
            tracing::debug!(peer = %conn.peer, details, "request refused");
            record.response_code_details = Some(details.into());
            local_reply(StatusCode::BAD_REQUEST, "Bad Request")
        }
        _ if let Some((limit, checked)) = &local
            && checked.decision == Decision::Limited =>
        {
            record.flags.set(Flags::RL);
            record.response_code_details = Some("local_rate_limited".into());
            let mut response = local_reply(limit.status(), "local_rate_limited");
            limit.limited_response_headers(checked, response.headers_mut());
            response
        }
        // The global rate limit next where its filter is inserted at the head
        // too, then RequestAuthentication: an invalid token is refused
        // before authorization, a valid one is what `request.auth.*` see;
        // a global limit inserted before the router is asked last.
        Direction::Inbound | Direction::Gateway => 'policies: {
            let global = listener.global_rate_limit.as_deref();
            let at_head = global.filter(|g| !g.after_authorization());
            let before_router = global.filter(|g| g.after_authorization());
            if let Some(limit) = at_head {
                match global_limit(limit, &mut req, &authority, &listener, &conn).await {
                    Ok(headers) => global_headers = headers,
                    Err(refused) => break 'policies global_refusal(refused, &mut record),
                }
            }
            let auth = match authenticate(&mut req, &listener).await {
                Ok(auth) => auth,
                Err(failure) => {
                    record.response_code_details = Some(failure.details().into());
                    break 'policies jwt_refused(failure, &req, &authority);
                }
            };
            let external = match authorize(&mut req, &authority, &listener, &conn, auth.as_deref())
                .await
            {
                Authorized::Allow(external) => external,
                Authorized::Deny(details) => {
                    tracing::debug!(peer = %conn.peer, %details, "request denied by authorization policy");
                    record.response_code_details = Some(details);
                    break 'policies local_reply(StatusCode::FORBIDDEN, "RBAC: access denied");
                }
                Authorized::External(response, details) => {
                    record.flags.set(Flags::UAEX);
                    record.response_code_details = Some(details.into());
                    break 'policies response;
                }
                Authorized::BodyTooLarge => {
                    record.response_code_details = Some("request_payload_too_large".into());
                    break 'policies local_reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Payload Too Large",
                    );
                }
                Authorized::BodyFailed => {
                    record.flags.set(Flags::DC);
                    record.response_code_details = Some("downstream_body_failed".into());
                    break 'policies local_reply(StatusCode::BAD_REQUEST, "");
                }
            };
            if let Some(limit) = before_router {
                match global_limit(limit, &mut req, &authority, &listener, &conn).await {
                    Ok(headers) => global_headers = headers,
                    Err(refused) => break 'policies global_refusal(refused, &mut record),
                }
            }
            let mut response = if listener.spec.https_redirect {
                https_redirect(&req, &authority)
            } else if listener.spec.direction == Direction::Inbound {
                inbound(req, &authority, &listener, &mut record).await
            } else {
                routed(req, authority, &listener.spec, &conn, &mut record).await
            };
            if let Some(allowed) = external {
                allowed.apply_to_response(response.headers_mut());
            }
            response
        }
        Direction::Outbound if req.method() == Method::CONNECT => {
            connect::tunnel(req, &authority, &conn, &mut record).await
        }
        Direction::Outbound => routed(req, authority, &listener.spec, &conn, &mut record).await,
    };
    if let Some((limit, checked)) = &local
        && checked.decision != Decision::Limited
    {
        limit.x_ratelimit_headers(checked, response.headers_mut());
    }
    for (name, value) in global_headers {
        response.headers_mut().insert(name, value);
    }
    record.status = response.status().as_u16();
    record.see_grpc_status(response.headers());
    record.see_response_headers(response.headers());
    Ok(response.map(|b| LoggedBody::new(b, record)))
}

/// The request's span, if its side is traced and it is sampled. As Istio
/// configures Envoy: a SERVER span on the inbound side, a CLIENT span on
/// the outbound side and at gateways (whose listeners are outbound).
fn trace_span<B>(
    snapshot: &crate::snapshot::Snapshot,
    req: &mut Request<B>,
    authority: &str,
    listener: &ListenerRt,
) -> Option<Box<crate::telemetry::trace::Span>> {
    use crate::telemetry::trace::{self, SpanKind};
    let policy = snapshot.tracing.side(listener.spec.direction).as_ref()?;
    let kind = match listener.spec.direction {
        Direction::Inbound => SpanKind::Server,
        Direction::Outbound | Direction::Gateway => SpanKind::Client,
    };
    trace::start(policy, kind, req, authority)
}

/// Makes the request what every later step works on, as Envoy's connection
/// manager does before routing: its path normalised (`path`), and its
/// authority in one place — the Host header, which an absolute-form HTTP/1.1
/// request's target overrides (RFC 9112 §3.2.2) and which an HTTP/2 request
/// may carry only if it agrees with `:authority` (RFC 9113 §8.3.1).
/// `Err`: the request is refused with 400, for the reason given (Envoy's
/// response code details).
fn canonicalize<B>(
    req: &mut Request<B>,
    mode: crate::path::Normalization,
) -> Result<(), &'static str> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let std::borrow::Cow::Owned(normalised) =
        crate::path::normalize(pq, mode).map_err(|_| "path_normalization_failed")?
    {
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query =
            Some(PathAndQuery::try_from(normalised).map_err(|_| "path_normalization_failed")?);
        *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| "path_normalization_failed")?;
    }
    // An HTTP/2 client's `:scheme` goes on as Envoy propagates it (in
    // `x-forwarded-proto`, unless a proxy before set that already).
    if req.version() == http::Version::HTTP_2
        && req.uri().scheme() == Some(&http::uri::Scheme::HTTPS)
        && !req.headers().contains_key(X_FORWARDED_PROTO)
    {
        req.headers_mut()
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next().is_some());
    if more {
        return Err("multiple_host_headers");
    }
    let Some(target) = req.uri().authority() else {
        return Ok(());
    };
    if req.version() == http::Version::HTTP_2
        && host.is_some_and(|h| {
            !h.as_bytes()
                .eq_ignore_ascii_case(target.as_str().as_bytes())
        })
    {
        return Err("host_and_authority_differ");
    }
    let target = HeaderValue::from_str(target.as_str()).map_err(|_| "invalid_authority")?;
    req.headers_mut().insert(header::HOST, target);
    Ok(())
}

/// The authority the client asked for, lowercase: the absolute URI's (an
/// explicit-proxy request, or HTTP/2's `:authority`), else the Host header.
fn authority_of<B>(req: &Request<B>) -> Host {
    let raw: &[u8] = match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(&[][..], |h| h.as_bytes()),
    };
    if raw
        .iter()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii_graphic())
    {
        return Host::Owned(String::from_utf8_lossy(raw).to_ascii_lowercase());
    }
    // Sharing the request's own bytes: no copy for the usual lowercase host.
    match req.uri().authority() {
        Some(a) => Host::Uri(a.clone()),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(Host::Owned(String::new()), |h| Host::Header(h.clone())),
    }
}

/// A lowercase authority, shared with the request where possible.
enum Host {
    Uri(Authority),
    Header(HeaderValue),
    Owned(String),
}

impl std::ops::Deref for Host {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Host::Uri(a) => a.as_str(),
            // Checked to be visible ASCII when made.
            Host::Header(h) => h.to_str().unwrap_or(""),
            Host::Owned(s) => s,
        }
    }
}

/// A reply the proxy makes itself, with a text body (as Envoy's local replies).
pub fn local_reply(status: StatusCode, text: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::text(text));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// Istio's `httpsRedirect` (a gateway port whose servers ask for it): a 301
/// to the same host and path over https on its default port, as Envoy's
/// `require_tls`.
fn https_redirect<B>(req: &Request<B>, authority: &str) -> Response<RespBody> {
    let host = crate::snapshot::domains::strip_port(authority);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::try_from(format!("https://{host}{path}")) {
        Ok(location) if !host.is_empty() => {
            let mut resp = local_reply(StatusCode::MOVED_PERMANENTLY, "");
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        _ => local_reply(StatusCode::BAD_REQUEST, "missing host"),
    }
}

/// Headers every proxied request gets: no hop-by-hop headers but `te:
/// trailers` (as Envoy keeps it: gRPC servers may insist on it, and HTTP/2
/// allows it), a Host header (HTTP/2 clients send `:authority` only; it
/// goes upstream as `:authority` again on HTTP/2), `x-forwarded-proto`.
/// Returns the downstream connection's upgrade when the request asks for a
/// WebSocket (whose `Connection`/`Upgrade` then stay).
fn prepare_headers(
    parts: &mut http::request::Parts,
    authority: &str,
) -> Option<hyper::upgrade::OnUpgrade> {
    let websocket = upgrade::websocket(parts);
    let headers = &mut parts.headers;
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(authority)
    {
        headers.insert(header::HOST, v);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if websocket.is_some() {
        upgrade::request_headers(headers);
    }
    websocket
}

fn split(req: Request<Incoming>, record: &Record) -> (http::request::Parts, Counted) {
    let (mut parts, body) = req.into_parts();
    let peeked = parts.extensions.remove::<crate::req_body::Peeked>();
    (
        parts,
        Counted::new(body, record.received.clone())
            .with_peeked(peeked)
            .with_grpc_messages(record.request_messages.clone()),
    )
}

fn path_of(parts: &http::request::Parts) -> PathAndQuery {
    parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

async fn inbound(
    req: Request<Incoming>,
    authority: &str,
    listener: &ListenerRt,
    record: &mut Record,
) -> Response<RespBody> {
    let (mut parts, body) = split(req, record);
    let upgrade = prepare_headers(&mut parts, authority);
    record.upstream_cluster = Some(listener.spec.name.clone());
    record.service.clone_from(&listener.service);
    let protocol = if listener.spec.app_http2 {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Downstream
    };
    let head = Head {
        method: parts.method.clone(),
        path: path_of(&parts),
        headers: parts.headers,
        downstream: parts.version,
        upgrade,
    };
    let dest = Dest::Local {
        app: &listener.app,
        protocol,
    };
    forward::send(
        dest,
        head,
        SendBody::Once(ReqBody::stream(body)),
        Policy::default(),
        record,
    )
    .await
}

/// Outbound and gateway requests: find the virtual host, then the route.
async fn routed(
    req: Request<Incoming>,
    authority: Host,
    spec: &ListenerSpec,
    conn: &Conn,
    record: &mut Record,
) -> Response<RespBody> {
    let shared = &*conn.shared;
    if authority.is_empty() {
        return local_reply(StatusCode::BAD_REQUEST, "missing host");
    }
    let port = match authority.rsplit_once(':') {
        Some((_, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return local_reply(StatusCode::BAD_REQUEST, "invalid port in host"),
        },
        _ => DEFAULT_PORT,
    };
    // A captured request is routed by the port it was sent to (Envoy's
    // listener port), whatever its Host header says.
    let port = conn.original_dst.map_or(port, |dst| dst.port());
    let Some(mut snapshot) = shared.store.current() else {
        // Listeners open only after the first config, so this is brief if ever.
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no config yet");
    };
    let mut virtual_host = find_virtual_host(&snapshot, spec, conn, port, &authority);
    if virtual_host.is_none()
        && spec.direction == Direction::Outbound
        && let Some(on_demand) = shared.store.on_demand()
    {
        // A host of the directory whose routes this proxy lacks: held until
        // the control plane sends them (see crate::on_demand). Only a miss
        // gets here: a hit costs what it costs without on-demand.
        match on_demand
            .on_miss(&shared.store, &authority, conn.original_dst, port)
            .await
        {
            Ok(Some(s)) => {
                snapshot = s;
                virtual_host = find_virtual_host(&snapshot, spec, conn, port, &authority);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(authority = &*authority, error = %e, "request for a host discovered on demand failed");
                record.flags.set(Flags::NC);
                return local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no config for the host (on-demand discovery)",
                );
            }
        }
    }
    match (virtual_host, spec.direction) {
        (Some(vh), _) => {
            let match_port = if spec.direction == Direction::Gateway {
                spec.bind.port()
            } else {
                port
            };
            route::serve(
                route::Ctx {
                    vh,
                    authority: &authority,
                    port: match_port,
                    peer: conn.peer,
                },
                req,
                record,
            )
            .await
        }
        // outboundTrafficPolicy REGISTRY_ONLY: Istio's block_all virtual host.
        (None, Direction::Outbound) if snapshot.registry_only => {
            blackhole(&authority, conn.original_dst, record)
        }
        // Istio's default outbound policy, ALLOW_ANY: an unknown destination
        // is reached directly (a captured one at the address it was sent to).
        (None, Direction::Outbound) => {
            let target = match conn.original_dst {
                Some(dst) => dst.to_string(),
                None => format!(
                    "{}:{port}",
                    crate::snapshot::domains::strip_port(&authority)
                ),
            };
            passthrough(req, &authority, &target, shared, record).await
        }
        (None, _) => {
            record.flags.set(Flags::NR);
            local_reply(StatusCode::NOT_FOUND, "")
        }
    }
}

/// The virtual host `authority` names in the route table of the listener
/// (a gateway's by name, a sidecar's by `port`).
fn find_virtual_host<'s>(
    snapshot: &'s Snapshot,
    spec: &ListenerSpec,
    conn: &Conn,
    port: u16,
    authority: &str,
) -> Option<&'s VirtualHost> {
    let table = match spec.direction {
        Direction::Gateway => {
            let name = conn.route_config.as_deref().unwrap_or(&spec.route_config);
            snapshot.routes.get(name)
        }
        _ => snapshot.routes_by_port.get(&port),
    };
    table.and_then(|t| t.virtual_host(authority))
}

/// A request for a destination outside the mesh under REGISTRY_ONLY: 502,
/// logged and counted as Istio's BlackHoleCluster.
fn blackhole(
    authority: &str,
    original_dst: Option<SocketAddr>,
    record: &mut Record,
) -> Response<RespBody> {
    tracing::info!(%authority, original_dst = ?original_dst, "destination not in the mesh registry: refused (outboundTrafficPolicy REGISTRY_ONLY, BlackHoleCluster)");
    record.upstream_cluster = Some(Arc::from(crate::capture::BLACKHOLE_CLUSTER));
    // Istio's labels: destination_service(_name)="BlackHoleCluster".
    record.service = Some(ServiceMeta::interned(crate::capture::BLACKHOLE_CLUSTER));
    record.flags.set(Flags::NR);
    local_reply(StatusCode::BAD_GATEWAY, "")
}

async fn passthrough(
    req: Request<Incoming>,
    authority: &str,
    target: &str,
    shared: &Shared,
    record: &mut Record,
) -> Response<RespBody> {
    let host = crate::snapshot::domains::strip_port(authority);
    let Ok(target) = target.parse::<Authority>() else {
        return local_reply(StatusCode::BAD_REQUEST, "invalid host");
    };
    record.upstream_cluster = Some(passthrough_cluster());
    record.service = Some(ServiceMeta::interned(host));
    let (mut parts, body) = split(req, record);
    let upgrade = prepare_headers(&mut parts, authority);
    let head = Head {
        method: parts.method.clone(),
        path: path_of(&parts),
        headers: parts.headers,
        downstream: parts.version,
        upgrade,
    };
    let dest = Dest::Fixed {
        pool: shared.passthrough.pool(&target),
        protocol: UpstreamProtocol::Http1,
    };
    forward::send(
        dest,
        head,
        SendBody::Once(ReqBody::stream(body)),
        Policy::default(),
        record,
    )
    .await
}

/// Istio's name for the destination of traffic it does not route.
fn passthrough_cluster() -> Arc<str> {
    thread_local! {
        // One shared name per thread: logging it costs no allocation.
        static PASSTHROUGH: Arc<str> = Arc::from("PassthroughCluster");
    }
    PASSTHROUGH.with(Arc::clone)
}
