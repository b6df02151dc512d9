//! VirtualService HTTP routes → proxy routes, with Istio's defaults.

use api::Object;
use api::networking::StringMatch as ApiMatch;
use api::networking::grpc_status;
use api::networking::retry_on::RetryOn;
use api::networking::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, HttpRouteDestination,
    VirtualService,
};
use wire::pb;
use wire::pb::route::Action;
use wire::pb::string_match::Kind;
use wire::retry_on;

use crate::mesh::Mesh;

/// The conditions Istio retries when a route's `retryOn` is unset.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The retry policy Istio applies to routes that set none.
pub fn default_retry() -> pb::RetryPolicy {
    pb::RetryPolicy {
        attempts: 2,
        retry_on_bits: compile_retry_on(DEFAULT_RETRY_ON).0,
        retriable_status_codes: vec![503],
        backoff_base_ms: 25,
        per_try_timeout_ms: 0,
    }
}

/// Istio's cluster name: `outbound|<port>|<subset>|<host>`.
pub fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The route a service gets when no VirtualService applies to it.
pub fn default_route(host: &str, port: u32) -> pb::Route {
    pb::Route {
        name: "default".into(),
        action: Some(Action::Forward(pb::RouteAction {
            clusters: vec![pb::WeightedCluster {
                cluster: cluster_name(port, "", host),
                weight: 100,
                ..Default::default()
            }],
            retry: Some(default_retry()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Compiles the HTTP routes of `vs` as seen on `port`, for a proxy bound to
/// `gateway` ("mesh" for sidecars, "<ns>/<name>" for gateways).
pub fn http_routes(
    mesh: &Mesh,
    vs: &Object<VirtualService>,
    port: u32,
    gateway: &str,
) -> Vec<pb::Route> {
    let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
    let origin = format!("VirtualService/{ns}/{}", vs.metadata.name);
    let mut out = Vec::new();
    for (i, route) in vs.spec.http.iter().enumerate() {
        let matches: Vec<&HttpMatchRequest> = route
            .r#match
            .iter()
            .filter(|m| m.port.is_none_or(|p| p == port))
            .filter(|m| {
                m.gateways.is_empty() || m.gateways.iter().any(|g| gateway_ref(g, ns) == gateway)
            })
            .collect();
        // A route whose every match names another port or gateway does not apply here.
        if !route.r#match.is_empty() && matches.is_empty() {
            continue;
        }
        let name = route
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{i}", vs.metadata.name));
        out.push(pb::Route {
            name,
            matches: matches.into_iter().map(route_match).collect(),
            action: Some(action(mesh, route, ns, port)),
            request_headers: header_ops(route.headers.as_ref(), |h| h.request.as_ref()),
            response_headers: header_ops(route.headers.as_ref(), |h| h.response.as_ref()),
            fault: route.fault.as_ref().map(|f| pb::Fault {
                delay_percent: f.delay.as_ref().map_or(0.0, |d| {
                    percent(d.percentage.as_ref().map(|p| p.value), d.percent)
                }),
                delay_ms: f
                    .delay
                    .as_ref()
                    .and_then(|d| d.fixed_delay)
                    .map_or(0, |d| d.as_std().as_millis() as u64),
                abort_percent: f.abort.as_ref().map_or(0.0, |a| {
                    percent(a.percentage.as_ref().map(|p| p.value), None)
                }),
                abort_http_status: f.abort.as_ref().and_then(|a| a.http_status).unwrap_or(0) as u32,
                abort_grpc_code: f
                    .abort
                    .as_ref()
                    .and_then(|a| a.grpc_status.as_deref())
                    .and_then(grpc_status::code),
            }),
            origin: origin.clone(),
            cors: crate::cors::policy(route.cors_policy.as_ref()),
        });
    }
    out
}

/// Istio applies a fault to all requests when no percentage is given.
fn percent(percentage: Option<f64>, legacy: Option<i32>) -> f64 {
    percentage.or(legacy.map(f64::from)).unwrap_or(100.0)
}

/// `gateways` entries are `<ns>/<name>`, or a name in the VirtualService's namespace; `mesh` is reserved.
pub fn gateway_ref(g: &str, vs_ns: &str) -> String {
    if g == "mesh" || g.contains('/') {
        g.to_string()
    } else {
        format!("{vs_ns}/{g}")
    }
}

fn action(mesh: &Mesh, route: &HttpRoute, ns: &str, port: u32) -> Action {
    if let Some(r) = &route.redirect {
        return Action::Redirect(pb::Redirect {
            path: r.uri.clone().unwrap_or_default(),
            authority: r.authority.clone().unwrap_or_default(),
            port: r.port.unwrap_or(0),
            scheme: r.scheme.clone().unwrap_or_default(),
            code: r.redirect_code.unwrap_or(301),
        });
    }
    if let Some(d) = &route.direct_response {
        let body = d
            .body
            .as_ref()
            .and_then(|b| b.string.clone())
            .unwrap_or_default();
        return Action::DirectResponse(pb::DirectResponse {
            status: d.status,
            body: body.into_bytes(),
        });
    }
    let faulted = route.fault.is_some();
    let retry = match &route.retries {
        // Istio: "timeouts or retries will not be enabled when faults are enabled".
        _ if faulted => None,
        None => Some(default_retry()),
        Some(r) if r.attempts == Some(0) => None,
        Some(r) => {
            let (retry_on_bits, retriable_status_codes) =
                compile_retry_on(r.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON));
            Some(pb::RetryPolicy {
                attempts: r.attempts.unwrap_or(2).max(0) as u32,
                per_try_timeout_ms: r
                    .per_try_timeout
                    .map_or(0, |d| d.as_std().as_millis() as u64),
                retry_on_bits,
                retriable_status_codes,
                backoff_base_ms: r.backoff.map_or(25, |d| d.as_std().as_millis() as u64),
            })
        }
    };
    let total: i64 = route
        .route
        .iter()
        .map(|d| i64::from(d.weight.unwrap_or(0)))
        .sum();
    let clusters = route
        .route
        .iter()
        .map(|d| weighted(mesh, d, ns, port, route.route.len(), total))
        .collect();
    let rewrite = route.rewrite.as_ref();
    Action::Forward(pb::RouteAction {
        clusters,
        timeout_ms: if faulted {
            0
        } else {
            route.timeout.map_or(0, |d| d.as_std().as_millis() as u64)
        },
        retry,
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        authority_rewrite: rewrite
            .and_then(|r| r.authority.clone())
            .unwrap_or_default(),
        regex_rewrite: rewrite.and_then(|r| r.uri_regex_rewrite.as_ref()).map(|r| {
            pb::RegexRewrite {
                pattern: r.r#match.clone(),
                substitution: r.rewrite.clone(),
            }
        }),
        mirrors: mirrors(mesh, route, ns, port),
    })
}

fn mirrors(mesh: &Mesh, route: &HttpRoute, ns: &str, port: u32) -> Vec<pb::Mirror> {
    let mut out: Vec<pb::Mirror> = route
        .mirror
        .iter()
        .map(|d| pb::Mirror {
            cluster: destination_cluster(mesh, d, ns, port),
            percent: route
                .mirror_percentage
                .as_ref()
                .map(|p| p.value)
                .or(route.mirror_percent.map(f64::from))
                .unwrap_or(100.0),
        })
        .collect();
    out.extend(route.mirrors.iter().map(|m| pb::Mirror {
        cluster: destination_cluster(mesh, &m.destination, ns, port),
        percent: m.percentage.as_ref().map_or(100.0, |p| p.value),
    }));
    out
}

/// Compiles `retryOn` to the proxy's condition bits and the bare status codes
/// it lists ("503"), which imply `retriable-status-codes`.
fn compile_retry_on(s: &str) -> (u32, Vec<u32>) {
    let mut bits = 0;
    let mut codes = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t.parse::<u32>() {
            Ok(code) => codes.push(code),
            // Validation refuses unknown tokens; like Envoy, the compiler skips
            // one it meets anyway rather than fail the whole route.
            Err(_) => bits |= RetryOn::parse(t).map_or(0, retry_on_bit),
        }
    }
    if !codes.is_empty() {
        bits |= retry_on::RETRIABLE_STATUS_CODES;
    }
    (bits, codes)
}

/// The proxy's bit for a condition; 0 for those the proxy does not implement
/// (they are accepted and have no effect, as they had before they were compiled).
fn retry_on_bit(c: RetryOn) -> u32 {
    match c {
        RetryOn::FiveXx => retry_on::FIVE_XX,
        RetryOn::GatewayError => retry_on::GATEWAY_ERROR,
        RetryOn::Reset => retry_on::RESET,
        RetryOn::ConnectFailure => retry_on::CONNECT_FAILURE,
        RetryOn::Retriable4xx => retry_on::RETRIABLE_4XX,
        RetryOn::RefusedStream => retry_on::REFUSED_STREAM,
        RetryOn::RetriableStatusCodes => retry_on::RETRIABLE_STATUS_CODES,
        RetryOn::Cancelled => retry_on::GRPC_CANCELLED,
        RetryOn::DeadlineExceeded => retry_on::GRPC_DEADLINE_EXCEEDED,
        RetryOn::Internal => retry_on::GRPC_INTERNAL,
        RetryOn::ResourceExhausted => retry_on::GRPC_RESOURCE_EXHAUSTED,
        RetryOn::Unavailable => retry_on::GRPC_UNAVAILABLE,
        RetryOn::ResetBeforeRequest
        | RetryOn::EnvoyRatelimited
        | RetryOn::RetriableHeaders
        | RetryOn::Http3PostConnectFailure => 0,
    }
}

fn weighted(
    mesh: &Mesh,
    d: &HttpRouteDestination,
    ns: &str,
    port: u32,
    n: usize,
    total: i64,
) -> pb::WeightedCluster {
    pb::WeightedCluster {
        cluster: destination_cluster(mesh, &d.destination, ns, port),
        weight: share(d.weight, n, total),
        request_headers: header_ops(d.headers.as_ref(), |h| h.request.as_ref()),
        response_headers: header_ops(d.headers.as_ref(), |h| h.response.as_ref()),
    }
}

/// A destination's weight among `n` whose written weights sum to `total`:
/// one destination without a weight takes everything; weights that do not
/// add up to 100 are used as relative shares, as Istio now does. The one
/// rule for HTTP, TCP and TLS routes.
pub(crate) fn share(weight: Option<i32>, n: usize, total: i64) -> u32 {
    match weight {
        None if n == 1 => 100,
        None if total == 0 => 1,
        w => w.unwrap_or(0).max(0) as u32,
    }
}

/// The cluster a destination names. Without an explicit port, the service's
/// port equal to the listener's is used, else its only port.
pub fn destination_cluster(mesh: &Mesh, d: &Destination, ns: &str, port: u32) -> String {
    let host = mesh.fqdn(&d.host, ns);
    let port =
        d.port
            .as_ref()
            .map(|p| p.number)
            .unwrap_or_else(|| match mesh.registry.service(&host) {
                Some(svc) if svc.port(port).is_none() && svc.ports.len() == 1 => svc.ports[0].port,
                _ => port,
            });
    cluster_name(port, d.subset.as_deref().unwrap_or(""), &host)
}

/// One direction's header operations (`side` picks request or response).
fn header_ops(
    headers: Option<&Headers>,
    side: fn(&Headers) -> Option<&HeaderOperations>,
) -> Option<pb::HeaderOps> {
    let h = headers.and_then(side)?;
    Some(pb::HeaderOps {
        set: h.set.clone(),
        add: h.add.clone(),
        remove: h.remove.clone(),
    })
}

fn route_match(m: &HttpMatchRequest) -> pb::RouteMatch {
    pb::RouteMatch {
        path: m.uri.as_ref().map(string_match),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), string_match(v)))
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| (k.clone(), string_match(v)))
            .collect(),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        scheme: m.scheme.as_ref().map(string_match),
        port: m.port.unwrap_or(0),
        without_headers: m
            .without_headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), string_match(v)))
            .collect(),
        without_headers_present: Vec::new(),
        ignore_case: m.ignore_uri_case.unwrap_or(false),
    }
}

fn string_match(m: &ApiMatch) -> pb::StringMatch {
    let kind = match m {
        ApiMatch::Exact(s) => Kind::Exact(s.clone()),
        ApiMatch::Prefix(s) if s.is_empty() => Kind::Present(true),
        ApiMatch::Prefix(s) => Kind::Prefix(s.clone()),
        ApiMatch::Regex(s) => Kind::Regex(s.clone()),
    };
    pb::StringMatch { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_splits_codes() {
        let (bits, c) = compile_retry_on("5xx, 503,reset");
        assert_eq!(
            bits,
            retry_on::FIVE_XX | retry_on::RESET | retry_on::RETRIABLE_STATUS_CODES
        );
        assert_eq!(c, vec![503]);
    }

    #[test]
    fn default_retry_on() {
        let (bits, c) = compile_retry_on(DEFAULT_RETRY_ON);
        assert_eq!(
            bits,
            retry_on::CONNECT_FAILURE
                | retry_on::REFUSED_STREAM
                | retry_on::GRPC_UNAVAILABLE
                | retry_on::GRPC_CANCELLED
                | retry_on::RETRIABLE_STATUS_CODES
        );
        assert!(c.is_empty());
    }

    #[test]
    fn gateway_refs() {
        assert_eq!(
            gateway_ref("bookinfo-gateway", "default"),
            "default/bookinfo-gateway"
        );
        assert_eq!(gateway_ref("istio-system/gw", "default"), "istio-system/gw");
        assert_eq!(gateway_ref("mesh", "default"), "mesh");
    }
}
