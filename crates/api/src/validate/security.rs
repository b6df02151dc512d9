//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules.

use super::common::{self, Errors, at, idx};
use crate::security::{
    Action, AuthorizationPolicy, Condition, Operation, PeerAuthentication, PolicyTargetReference,
    RequestAuthentication, Source, WorkloadSelector,
};

pub(crate) fn peer_authentication(errs: &mut Errors, pa: &PeerAuthentication) {
    let base = "spec";
    selector(errs, base, pa.selector.as_ref());
    let has_selector = pa
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    let port_level = pa.port_level_mtls.as_ref();
    if port_level.is_some_and(|m| m.is_empty()) {
        errs.add(
            at(base, "portLevelMtls"),
            "portLevelMtls, when written, must have at least one port",
        );
    }
    if port_level.is_some_and(|m| !m.is_empty()) && !has_selector {
        // Port numbers are workload ports, so they only mean something for
        // the workloads a selector picks.
        errs.add(
            at(base, "portLevelMtls"),
            "portLevelMtls requires a selector: namespace- and mesh-wide policies cannot set port-level modes",
        );
    }
    for port in port_level.into_iter().flat_map(|m| m.keys()) {
        errs.check(
            at(&at(base, "portLevelMtls"), &port.to_string()),
            common::port(*port),
        );
    }
}

pub(crate) fn request_authentication(
    errs: &mut Errors,
    ra: &RequestAuthentication,
    ns: Option<&str>,
) {
    let base = "spec";
    selector(errs, base, ra.selector.as_ref());
    target_refs(
        errs,
        base,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
        ns,
    );
    let mut issuers = std::collections::BTreeSet::new();
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let p = idx(base, "jwtRules", i);
        // As Istio: the issuer may be left out when the keys' location says
        // where tokens come from.
        let has_jwks_uri = rule.jwks_uri.as_deref().is_some_and(|u| !u.is_empty());
        if rule.issuer.is_empty() {
            if !has_jwks_uri {
                errs.add(at(&p, "issuer"), "issuer or jwksUri is required");
            }
        } else if !issuers.insert(rule.issuer.as_str()) {
            errs.add(
                at(&p, "issuer"),
                format!("duplicate issuer `{}`", rule.issuer),
            );
        }
        for (j, a) in rule.audiences.iter().enumerate() {
            if a.is_empty() {
                errs.add(idx(&p, "audiences", j), "audience must not be empty");
            }
        }
        if let Some(uri) = &rule.jwks_uri {
            let lower = uri.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                errs.add(
                    at(&p, "jwksUri"),
                    format!("jwksUri `{uri}` must be an http:// or https:// URL with a host"),
                );
            }
        }
        if let Some(jwks) = &rule.jwks
            && serde_json::from_str::<serde_json::Value>(jwks).is_err()
        {
            errs.add(at(&p, "jwks"), "jwks must be a JSON Web Key Set document");
        }
        // Istio checks no header name here: a name no request can carry
        // just never yields a token.
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                errs.add(
                    at(&idx(&p, "fromHeaders", j), "name"),
                    "header name is required",
                );
            }
        }
        for (j, q) in rule.from_params.iter().enumerate() {
            if q.is_empty() {
                errs.add(idx(&p, "fromParams", j), "parameter name must not be empty");
            }
        }
        for (j, c) in rule.from_cookies.iter().enumerate() {
            if c.is_empty() {
                errs.add(idx(&p, "fromCookies", j), "cookie name must not be empty");
            }
        }
        if let Some(h) = &rule.output_payload_to_header {
            errs.check(at(&p, "outputPayloadToHeader"), common::header_name(h));
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            let cp = idx(&p, "outputClaimToHeaders", j);
            errs.check(at(&cp, "header"), common::header_name(&c.header));
            if c.claim.is_empty() {
                errs.add(at(&cp, "claim"), "claim is required");
            }
        }
        if let Some(t) = &rule.timeout {
            errs.check(at(&p, "timeout"), common::duration_min_1ms(t));
        }
    }
}

pub(crate) fn authorization_policy(errs: &mut Errors, ap: &AuthorizationPolicy, ns: Option<&str>) {
    let base = "spec";
    selector(errs, base, ap.selector.as_ref());
    target_refs(
        errs,
        base,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
        ns,
    );
    let action = ap.action.unwrap_or_default();
    match (action, &ap.provider) {
        (Action::Custom, None) => {
            errs.add(at(base, "provider"), "action CUSTOM requires a provider")
        }
        (Action::Custom, Some(p)) if p.name.is_empty() => {
            errs.add(
                at(&at(base, "provider"), "name"),
                "provider name is required",
            );
        }
        (Action::Custom, Some(_)) | (_, None) => {}
        (other, Some(_)) => errs.add(
            at(base, "provider"),
            format!("provider is only allowed with action CUSTOM, not {other}"),
        ),
    }
    // Empty rules are meaningful (no rules: ALLOW matches nothing; `{}`:
    // matches everything), so only the contents of rules are checked.
    for (i, rule) in ap.rules.iter().enumerate() {
        let p = idx(base, "rules", i);
        for (j, from) in rule.from.iter().enumerate() {
            source(errs, &at(&idx(&p, "from", j), "source"), &from.source);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(errs, &at(&idx(&p, "to", j), "operation"), &to.operation);
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(errs, &idx(&p, "when", j), c);
        }
    }
}

fn selector(errs: &mut Errors, base: &str, sel: Option<&WorkloadSelector>) {
    if let Some(sel) = sel {
        common::labels(
            errs,
            &at(&at(base, "selector"), "matchLabels"),
            &sel.match_labels,
        );
    }
}

fn target_refs(
    errs: &mut Errors,
    base: &str,
    sel: Option<&WorkloadSelector>,
    single: Option<&PolicyTargetReference>,
    many: &[PolicyTargetReference],
    ns: Option<&str>,
) {
    if single.is_some() && !many.is_empty() {
        errs.add(
            at(base, "targetRefs"),
            "only one of targetRef or targetRefs may be set",
        );
    }
    if sel.is_some() && (single.is_some() || !many.is_empty()) {
        errs.add(
            at(base, "selector"),
            "only one of selector or targetRef(s) may be set",
        );
    }
    let refs = single
        .map(|r| (at(base, "targetRef"), r))
        .into_iter()
        .chain(
            many.iter()
                .enumerate()
                .map(|(i, r)| (idx(base, "targetRefs", i), r)),
        );
    for (p, r) in refs {
        let group = match r.kind.as_str() {
            "Gateway" | "GatewayClass" => "gateway.networking.k8s.io",
            "Service" => "",
            "ServiceEntry" => "networking.istio.io",
            other => {
                errs.add(
                    at(&p, "kind"),
                    format!("unsupported targetRef kind `{other}`; expected Gateway, GatewayClass, Service or ServiceEntry"),
                );
                continue;
            }
        };
        if r.group != group {
            errs.add(
                at(&p, "group"),
                format!("group for kind {} must be `{group}`", r.kind),
            );
        }
        if r.name.is_empty() {
            errs.add(at(&p, "name"), "name is required");
        }
        if let Some(ns) = ns
            && !r.namespace.is_empty()
            && r.namespace != ns
        {
            errs.add(
                at(&p, "namespace"),
                "cross-namespace targetRefs are not allowed",
            );
        }
    }
}

fn values(
    errs: &mut Errors,
    p: &str,
    field: &str,
    list: &[String],
    check: fn(&str) -> Result<(), String>,
) {
    for (i, v) in list.iter().enumerate() {
        errs.check(idx(p, field, i), check(v));
    }
}

fn source(errs: &mut Errors, p: &str, s: &Source) {
    if s == &Source::default() {
        errs.add(p, "source must set at least one field");
    }
    values(errs, p, "principals", &s.principals, principal);
    values(errs, p, "notPrincipals", &s.not_principals, principal);
    values(
        errs,
        p,
        "requestPrincipals",
        &s.request_principals,
        common::match_value,
    );
    values(
        errs,
        p,
        "notRequestPrincipals",
        &s.not_request_principals,
        common::match_value,
    );
    values(errs, p, "namespaces", &s.namespaces, namespace_value);
    values(errs, p, "notNamespaces", &s.not_namespaces, namespace_value);
    values(
        errs,
        p,
        "serviceAccounts",
        &s.service_accounts,
        service_account,
    );
    values(
        errs,
        p,
        "notServiceAccounts",
        &s.not_service_accounts,
        service_account,
    );
    values(errs, p, "ipBlocks", &s.ip_blocks, common::ip_or_cidr);
    values(errs, p, "notIpBlocks", &s.not_ip_blocks, common::ip_or_cidr);
    values(
        errs,
        p,
        "remoteIpBlocks",
        &s.remote_ip_blocks,
        common::ip_or_cidr,
    );
    values(
        errs,
        p,
        "notRemoteIpBlocks",
        &s.not_remote_ip_blocks,
        common::ip_or_cidr,
    );
    let has_principals = !s.principals.is_empty() || !s.not_principals.is_empty();
    let has_sas = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let has_namespaces = !s.namespaces.is_empty() || !s.not_namespaces.is_empty();
    if has_sas && (has_principals || has_namespaces) {
        errs.add(
            at(p, "serviceAccounts"),
            "serviceAccounts cannot be combined with principals or namespaces in one source",
        );
    }
}

/// A peer identity as Istio matches it: `<trust-domain>/ns/<ns>/sa/<sa>`,
/// without the `spiffe://` scheme, or a prefix/suffix/`*` pattern.
fn principal(v: &str) -> Result<(), String> {
    common::match_value(v)?;
    if v.starts_with("spiffe://") {
        return Err(format!(
            "invalid principal `{v}`: write it without `spiffe://`, e.g. `{}`",
            v.trim_start_matches("spiffe://")
        ));
    }
    // Any other text is a principal as Istio reads it (an exact match on
    // the peer's identity), like a bare `sleep` that only a peer with that
    // exact identity would have.
    Ok(())
}

fn namespace_value(v: &str) -> Result<(), String> {
    common::match_value(v)?;
    if v.contains('*') {
        return Ok(());
    }
    common::namespace(v)
}

/// `namespace/service-account`, or a service account name alone (in the
/// policy's namespace), as Istio accepts both.
fn service_account(v: &str) -> Result<(), String> {
    let ok = match v.split_once('/') {
        Some((ns, sa)) => common::is_dns1123_label(ns) && common::is_dns1123_subdomain(sa),
        None => common::is_dns1123_subdomain(v),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service account `{v}`: expected `<service-account>` or `<namespace>/<service-account>`"
        ))
    }
}

fn operation(errs: &mut Errors, p: &str, o: &Operation) {
    if o == &Operation::default() {
        errs.add(p, "operation must set at least one field");
    }
    values(errs, p, "hosts", &o.hosts, common::match_value);
    values(errs, p, "notHosts", &o.not_hosts, common::match_value);
    values(errs, p, "ports", &o.ports, port_value);
    values(errs, p, "notPorts", &o.not_ports, port_value);
    values(errs, p, "methods", &o.methods, method);
    values(errs, p, "notMethods", &o.not_methods, method);
    values(errs, p, "paths", &o.paths, path);
    values(errs, p, "notPaths", &o.not_paths, path);
}

fn port_value(v: &str) -> Result<(), String> {
    match v.parse::<u32>() {
        Ok(n) => common::port(n),
        Err(_) => Err(format!("invalid port `{v}`: must be a number in 1..65535")),
    }
}

fn method(v: &str) -> Result<(), String> {
    common::match_value(v)?;
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!("invalid method `{v}`"))
    }
}

/// Paths: exact, `prefix*`, `*suffix`, `*`, or a URI template using whole
/// `{*}` (one segment) / `{**}` (the rest, last only) segments.
fn path(v: &str) -> Result<(), String> {
    if !v.contains('{') {
        common::match_value(v)?;
        if !v.starts_with('/') && !v.starts_with('*') {
            return Err(format!("invalid path `{v}`: must start with `/`"));
        }
        return Ok(());
    }
    let segments: Vec<&str> = v.split('/').collect();
    if !v.starts_with('/') {
        return Err(format!("invalid path template `{v}`: must start with `/`"));
    }
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains('{') || seg.contains('}') || seg.contains('*') {
            match *seg {
                "{*}" => {}
                "{**}" if i == segments.len() - 1 => {}
                "{**}" => {
                    return Err(format!(
                        "invalid path template `{v}`: `{{**}}` must be the last segment"
                    ));
                }
                _ => {
                    return Err(format!(
                        "invalid path template `{v}`: `{{*}}` and `{{**}}` must be whole segments, and `*` cannot be mixed with them"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Condition keys Istio supports in `when` (see Istio's "Authorization
/// Policy Conditions"). Keys with `[...]` take a header or claim name.
fn condition(errs: &mut Errors, p: &str, c: &Condition) {
    let kp = at(p, "key");
    if c.key.is_empty() {
        errs.add(&kp, "key is required");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errs.add(
            p,
            format!(
                "at least one of values or notValues is required for `{}`",
                c.key
            ),
        );
    }
    let key = c.key.as_str();
    let value_check: fn(&str) -> Result<(), String> = if let Some(rest) =
        key.strip_prefix("request.headers")
    {
        if !is_bracketed_names(rest, false) {
            errs.add(
                &kp,
                format!("invalid key `{key}`: expected `request.headers[<header-name>]`"),
            );
        }
        common::match_value
    } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
        if !is_bracketed_names(rest, true) {
            errs.add(&kp, format!("invalid key `{key}`: expected `request.auth.claims[<claim>]` (nested: `[a][b]`)"));
        }
        common::match_value
    } else {
        match key {
            "source.ip" | "remote.ip" | "destination.ip" => common::ip_or_cidr,
            "destination.port" => port_value,
            "source.namespace" => namespace_value,
            "source.principal" => principal,
            "source.serviceAccount" => service_account,
            "source.trustDomain"
            | "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter"
            | "connection.sni" => common::match_value,
            k if k.starts_with("experimental.envoy.filters.") => common::match_value,
            _ => {
                errs.add(
                    &kp,
                    format!(
                        "unknown condition key `{key}`; supported: request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni"
                    ),
                );
                return;
            }
        }
    };
    values(errs, p, "values", &c.values, value_check);
    values(errs, p, "notValues", &c.not_values, value_check);
}

/// `[name]`, or `[a][b]...` when nesting is allowed.
fn is_bracketed_names(s: &str, nested: bool) -> bool {
    let mut rest = s;
    let mut count = 0;
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return false;
        };
        let Some(end) = inner.find(']') else {
            return false;
        };
        if end == 0 {
            return false;
        }
        rest = &inner[end + 1..];
        count += 1;
    }
    count == 1 || (nested && count > 1)
}
