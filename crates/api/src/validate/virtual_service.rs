//! VirtualService rules (Istio's `ValidateVirtualService` and helpers).

use std::collections::BTreeMap;

use super::common::{self, Errors, at, idx};
use crate::networking::grpc_status;
use crate::networking::retry_on::RetryOn;
use crate::networking::{
    CorsPolicy, Delegate, Destination, HeaderOperations, Headers, HttpDirectResponse,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
    L4MatchAttributes, Percent, StringMatch, TlsMatchAttributes, VirtualService,
};

/// The gateway name that means "all sidecars".
const MESH: &str = "mesh";

pub(crate) fn virtual_service(errs: &mut Errors, vs: &VirtualService) {
    let base = "spec";
    // A VirtualService without hosts is a delegate: it is only reachable
    // through a root VirtualService's `delegate`, so it may not bind gateways.
    let is_delegate = vs.hosts.is_empty();
    if is_delegate {
        if !vs.gateways.is_empty() {
            errs.add(
                at(base, "gateways"),
                "a delegate VirtualService (no hosts) must not set gateways",
            );
        }
        if !vs.tcp.is_empty() || !vs.tls.is_empty() {
            errs.add(
                at(base, "hosts"),
                "at least one host is required (only HTTP routes can be delegated)",
            );
        }
    }
    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == MESH);
    for (i, host) in vs.hosts.iter().enumerate() {
        let p = idx(base, "hosts", i);
        if !common::is_ip(host) {
            errs.check(&p, common::wildcard_domain(host));
        }
        if host == "*" && applies_to_mesh {
            errs.add(
                &p,
                "wildcard host `*` is not allowed for virtual services bound to the mesh gateway",
            );
        }
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        if g != MESH {
            errs.check(idx(base, "gateways", i), common::gateway_ref(g));
        }
    }
    common::export_to(errs, &at(base, "exportTo"), &vs.export_to);

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        errs.add(base, "at least one of http, tcp or tls routes is required");
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route(errs, &idx(base, "http", i), route, is_delegate);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        let p = idx(base, "tls", i);
        if route.r#match.is_empty() {
            errs.add(
                at(&p, "match"),
                "a TLS route needs at least one match (with sniHosts)",
            );
        }
        for (j, m) in route.r#match.iter().enumerate() {
            tls_match(errs, &idx(&p, "match", j), m, &vs.hosts);
        }
        route_destinations(
            errs,
            &p,
            route.route.iter().map(|r| (&r.destination, r.weight)),
        );
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        let p = idx(base, "tcp", i);
        if route.route.is_empty() {
            errs.add(
                at(&p, "route"),
                "a TCP route needs at least one destination",
            );
        }
        for (j, m) in route.r#match.iter().enumerate() {
            l4_match(errs, &idx(&p, "match", j), m);
        }
        route_destinations(
            errs,
            &p,
            route.route.iter().map(|r| (&r.destination, r.weight)),
        );
    }
}

fn http_route(errs: &mut Errors, p: &str, r: &HttpRoute, in_delegate: bool) {
    let actions: Vec<&str> = [
        (!r.route.is_empty(), "route"),
        (r.redirect.is_some(), "redirect"),
        (r.direct_response.is_some(), "directResponse"),
        (r.delegate.is_some(), "delegate"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    match actions.len() {
        0 => errs.add(
            p,
            "one of route, redirect, directResponse or delegate is required",
        ),
        1 => {}
        _ => errs.add(
            p,
            format!(
                "only one of route, redirect, directResponse or delegate may be set, found {}",
                actions.join(" and ")
            ),
        ),
    }
    if r.rewrite.is_some() && r.redirect.is_some() {
        errs.add(at(p, "rewrite"), "rewrite cannot be combined with redirect");
    }
    for (i, m) in r.r#match.iter().enumerate() {
        http_match(errs, &idx(p, "match", i), m);
    }
    route_destinations(errs, p, r.route.iter().map(|d| (&d.destination, d.weight)));
    for (i, d) in r.route.iter().enumerate() {
        if let Some(h) = &d.headers {
            headers(errs, &at(&idx(p, "route", i), "headers"), h);
        }
    }
    if let Some(redirect) = &r.redirect {
        http_redirect(errs, &at(p, "redirect"), redirect);
    }
    if let Some(dr) = &r.direct_response {
        direct_response(errs, &at(p, "directResponse"), dr);
    }
    if let Some(d) = &r.delegate {
        delegate(errs, &at(p, "delegate"), d, in_delegate);
    }
    if let Some(rw) = &r.rewrite {
        rewrite(errs, &at(p, "rewrite"), rw);
    }
    // `timeout: 0s` is the documented way to disable the route timeout, so
    // zero is fine; negative durations are already rejected by the parser.
    if let Some(retries) = &r.retries {
        http_retry(errs, &at(p, "retries"), retries);
    }
    if let Some(f) = &r.fault {
        fault(errs, &at(p, "fault"), f);
    }
    if let Some(m) = &r.mirror {
        destination(errs, &at(p, "mirror"), m);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        errs.add(at(p, "mirrors"), "mirror and mirrors cannot both be set");
    }
    percent_field(
        errs,
        &at(p, "mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    );
    if let Some(v) = r.mirror_percent
        && v > 100
    {
        errs.add(
            at(p, "mirrorPercent"),
            format!("percentage {v} must be in the range 0..100"),
        );
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = idx(p, "mirrors", i);
        destination(errs, &at(&mp, "destination"), &m.destination);
        percent_field(errs, &at(&mp, "percentage"), m.percentage.as_ref());
    }
    if let Some(c) = &r.cors_policy {
        cors(errs, &at(p, "corsPolicy"), c);
    }
    if let Some(h) = &r.headers {
        headers(errs, &at(p, "headers"), h);
    }
}

fn http_match(errs: &mut Errors, p: &str, m: &HttpMatchRequest) {
    for (field, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            string_match(errs, &at(p, field), sm);
        }
    }
    if let Some(StringMatch::Exact(u) | StringMatch::Prefix(u)) = &m.uri
        && !u.is_empty()
        && !u.starts_with('/')
    {
        errs.add(at(p, "uri"), format!("URI `{u}` must start with `/`"));
    }
    header_matches(errs, &at(p, "headers"), &m.headers);
    header_matches(errs, &at(p, "withoutHeaders"), &m.without_headers);
    for (k, sm) in &m.query_params {
        let kp = at(&at(p, "queryParams"), k);
        if k.is_empty() {
            errs.add(&kp, "query parameter name must not be empty");
        }
        string_match(errs, &kp, sm);
    }
    if let Some(port) = m.port {
        errs.check(at(p, "port"), common::port(port));
    }
    common::labels(errs, &at(p, "sourceLabels"), &m.source_labels);
    for (i, g) in m.gateways.iter().enumerate() {
        if g != MESH {
            errs.check(idx(p, "gateways", i), common::gateway_ref(g));
        }
    }
    if let Some(ns) = &m.source_namespace {
        errs.check(at(p, "sourceNamespace"), common::namespace(ns));
    }
}

fn header_matches(errs: &mut Errors, p: &str, headers: &BTreeMap<String, StringMatch>) {
    for (name, sm) in headers {
        let hp = at(p, name);
        // JWT claim routing uses `@request.auth.claims.<name>` pseudo-headers.
        if !name.starts_with("@request.auth.claims") {
            errs.check(&hp, common::header_name(name));
            if name.chars().any(|c| c.is_ascii_uppercase()) {
                errs.add(&hp, format!("header name `{name}` must be lowercase"));
            }
        }
        string_match(errs, &hp, sm);
    }
}

fn string_match(errs: &mut Errors, p: &str, sm: &StringMatch) {
    if let StringMatch::Regex(re) = sm {
        errs.check(at(p, "regex"), common::regex(re));
    }
}

fn tls_match(errs: &mut Errors, p: &str, m: &TlsMatchAttributes, vs_hosts: &[String]) {
    if m.sni_hosts.is_empty() {
        errs.add(at(p, "sniHosts"), "at least one SNI host is required");
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        let sp = idx(p, "sniHosts", i);
        if let Err(e) = common::wildcard_domain(sni) {
            errs.add(&sp, e);
            continue;
        }
        if !vs_hosts.iter().any(|h| common::host_subset_of(sni, h)) {
            errs.add(
                &sp,
                format!("SNI host `{sni}` is not covered by any of the virtual service's hosts"),
            );
        }
    }
    l4_common(
        errs,
        p,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        m.source_namespace.as_deref(),
    );
}

fn l4_match(errs: &mut Errors, p: &str, m: &L4MatchAttributes) {
    l4_common(
        errs,
        p,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        m.source_namespace.as_deref(),
    );
    if let Some(s) = &m.source_subnet {
        errs.check(at(p, "sourceSubnet"), common::ip_or_cidr(s));
    }
}

fn l4_common(
    errs: &mut Errors,
    p: &str,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: Option<&str>,
) {
    for (i, s) in subnets.iter().enumerate() {
        errs.check(idx(p, "destinationSubnets", i), common::ip_or_cidr(s));
    }
    if let Some(port) = port {
        errs.check(at(p, "port"), common::port(port));
    }
    common::labels(errs, &at(p, "sourceLabels"), source_labels);
    for (i, g) in gateways.iter().enumerate() {
        if g != MESH {
            errs.check(idx(p, "gateways", i), common::gateway_ref(g));
        }
    }
    if let Some(ns) = source_namespace {
        errs.check(at(p, "sourceNamespace"), common::namespace(ns));
    }
}

/// Destinations and weights of a route (HTTP, TCP or TLS). Istio normalises
/// weights that do not add up to 100, so only negative weights and an
/// all-zero split are errors.
fn route_destinations<'a>(
    errs: &mut Errors,
    p: &str,
    dests: impl Iterator<Item = (&'a Destination, Option<i32>)>,
) {
    let mut total: i64 = 0;
    let mut count = 0;
    for (i, (d, weight)) in dests.enumerate() {
        count += 1;
        let rp = idx(p, "route", i);
        destination(errs, &at(&rp, "destination"), d);
        if let Some(w) = weight {
            if w < 0 {
                errs.add(
                    at(&rp, "weight"),
                    format!("weight {w} must not be negative"),
                );
            }
            total += i64::from(w.max(0));
        }
    }
    if count > 1 && total == 0 {
        errs.add(
            at(p, "route"),
            "total weight of the destinations is 0; at least one must have a positive weight",
        );
    }
}

pub(crate) fn destination(errs: &mut Errors, p: &str, d: &Destination) {
    if d.host.is_empty() {
        errs.add(at(p, "host"), "host is required");
    } else if d.host == "*" {
        errs.add(at(p, "host"), "destination host cannot be `*`");
    } else {
        errs.check(at(p, "host"), common::host_or_ip(&d.host));
    }
    if let Some(subset) = &d.subset
        && !common::is_dns1123_label(subset)
    {
        errs.add(
            at(p, "subset"),
            format!("invalid subset name `{subset}`: must be a DNS label"),
        );
    }
    if let Some(port) = &d.port {
        errs.check(at(&at(p, "port"), "number"), common::port(port.number));
    }
}

fn headers(errs: &mut Errors, p: &str, h: &Headers) {
    if let Some(ops) = &h.request {
        header_ops(errs, &at(p, "request"), ops);
    }
    if let Some(ops) = &h.response {
        header_ops(errs, &at(p, "response"), ops);
    }
}

fn header_ops(errs: &mut Errors, p: &str, ops: &HeaderOperations) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for name in map.keys() {
            let hp = at(&at(p, field), name);
            errs.check(&hp, common::header_name(name));
            if name.starts_with(':') {
                errs.add(&hp, format!("pseudo-header `{name}` cannot be modified"));
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        errs.check(idx(p, "remove", i), common::header_name(name));
    }
}

fn http_redirect(errs: &mut Errors, p: &str, r: &HttpRedirect) {
    if r.uri.is_none()
        && r.authority.is_none()
        && r.scheme.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        errs.add(
            p,
            "a redirect must set at least one of uri, authority, scheme, port or derivePort",
        );
    }
    if r.port.is_some() && r.derive_port.is_some() {
        errs.add(
            at(p, "derivePort"),
            "port and derivePort cannot both be set",
        );
    }
    if let Some(port) = r.port {
        errs.check(at(p, "port"), common::port(port));
    }
    if let Some(code) = r.redirect_code
        && !(300..=399).contains(&code)
    {
        errs.add(
            at(p, "redirectCode"),
            format!("{code} is not a redirect status; must be 3xx"),
        );
    }
}

fn direct_response(errs: &mut Errors, p: &str, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        errs.add(
            at(p, "status"),
            format!("status {} must be in the range 200..599", d.status),
        );
    }
    if let Some(body) = &d.body {
        if body.string.is_some() && body.bytes.is_some() {
            errs.add(at(p, "body"), "only one of string or bytes may be set");
        }
        if let Some(b) = &body.bytes
            && !is_base64(b)
        {
            errs.add(at(&at(p, "body"), "bytes"), "bytes must be base64-encoded");
        }
        // Envoy caps direct response bodies at 1 MiB by default.
        let len = body
            .string
            .as_ref()
            .map_or(0, String::len)
            .max(body.bytes.as_ref().map_or(0, |b| b.len() * 3 / 4));
        if len > 1 << 20 {
            errs.add(at(p, "body"), "body must be at most 1 MiB");
        }
    }
}

fn is_base64(s: &str) -> bool {
    let s = s.trim_end_matches('=');
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_')
}

fn delegate(errs: &mut Errors, p: &str, d: &Delegate, in_delegate: bool) {
    if in_delegate {
        errs.add(p, "a delegate VirtualService cannot delegate again");
    }
    errs.check(at(p, "name"), common::name(&d.name));
    if let Some(ns) = &d.namespace {
        errs.check(at(p, "namespace"), common::namespace(ns));
    }
}

fn rewrite(errs: &mut Errors, p: &str, r: &HttpRewrite) {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        errs.add(p, "only one of uri or uriRegexRewrite may be set");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rp = at(p, "uriRegexRewrite");
        if rr.r#match.is_empty() {
            errs.add(at(&rp, "match"), "match regex is required");
        } else {
            errs.check(at(&rp, "match"), common::regex(&rr.r#match));
        }
    }
}

fn http_retry(errs: &mut Errors, p: &str, r: &HttpRetry) {
    if let Some(a) = r.attempts
        && a < 0
    {
        errs.add(
            at(p, "attempts"),
            format!("attempts {a} must not be negative"),
        );
    }
    if let Some(d) = &r.per_try_timeout {
        errs.check(at(p, "perTryTimeout"), common::duration_min_1ms(d));
    }
    if let Some(d) = &r.backoff {
        errs.check(at(p, "backoff"), common::duration_min_1ms(d));
    }
    if let Some(on) = &r.retry_on {
        for token in on.split(',').map(str::trim) {
            let known = RetryOn::parse(token).is_some()
                || token.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !known {
                errs.add(
                    at(p, "retryOn"),
                    format!("`{token}` is not a retry condition (e.g. 5xx, connect-failure, reset, retriable-4xx, unavailable) or an HTTP status code"),
                );
            }
        }
    }
}

fn fault(errs: &mut Errors, p: &str, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        errs.add(p, "fault injection needs a delay and/or an abort");
    }
    if let Some(d) = &f.delay {
        let dp = at(p, "delay");
        match (&d.fixed_delay, &d.exponential_delay) {
            (None, None) => errs.add(&dp, "fixedDelay is required"),
            (Some(_), Some(_)) => {
                errs.add(&dp, "only one of fixedDelay or exponentialDelay may be set")
            }
            _ => {}
        }
        if let Some(fd) = &d.fixed_delay {
            errs.check(at(&dp, "fixedDelay"), common::duration_min_1ms(fd));
        }
        if let Some(ed) = &d.exponential_delay {
            errs.check(at(&dp, "exponentialDelay"), common::duration_min_1ms(ed));
        }
        percent_field(errs, &at(&dp, "percentage"), d.percentage.as_ref());
        if let Some(v) = d.percent {
            errs.check(at(&dp, "percent"), common::percent_i32(v));
        }
    }
    if let Some(a) = &f.abort {
        let ap = at(p, "abort");
        let kinds = [
            a.http_status.is_some(),
            a.grpc_status.is_some(),
            a.http2_error.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        match kinds {
            0 => errs.add(
                &ap,
                "one of httpStatus, grpcStatus or http2Error is required",
            ),
            1 => {}
            _ => errs.add(
                &ap,
                "only one of httpStatus, grpcStatus or http2Error may be set",
            ),
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            errs.add(
                at(&ap, "httpStatus"),
                format!("HTTP status {s} must be in the range 200..599"),
            );
        }
        if let Some(g) = &a.grpc_status
            && grpc_status::code(g).is_none()
        {
            errs.add(
                at(&ap, "grpcStatus"),
                format!("unknown gRPC status `{g}`; expected a name such as UNAVAILABLE"),
            );
        }
        percent_field(errs, &at(&ap, "percentage"), a.percentage.as_ref());
    }
}

fn percent_field(errs: &mut Errors, p: &str, pct: Option<&Percent>) {
    if let Some(pct) = pct {
        errs.check(at(p, "value"), common::percent(pct.value));
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn cors(errs: &mut Errors, p: &str, c: &CorsPolicy) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        string_match(errs, &idx(p, "allowOrigins", i), o);
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if m != "*" && !HTTP_METHODS.contains(&m.as_str()) {
            errs.add(
                idx(p, "allowMethods", i),
                format!("`{m}` is not an HTTP method (they are upper case, e.g. GET)"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" {
                errs.check(idx(p, field, i), common::header_name(h));
            }
        }
    }
    if let Some(max_age) = &c.max_age
        && max_age.0.subsec_nanos() != 0
    {
        errs.add(at(p, "maxAge"), "maxAge is only accurate to whole seconds");
    }
}
