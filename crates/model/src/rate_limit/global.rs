//! The global limit: Envoy's `envoy.filters.http.ratelimit` filter, the
//! `rate_limits` actions that make its descriptors, and the CLUSTER patch
//! that names the rate limit service.

use super::*;

/// Envoy's RateLimit filter message, as far as it is translated.
pub(super) fn global_rate_limit(c: &Value, at: &str, origin: &str) -> Result<PatchKind, String> {
    only(
        c,
        &[
            "@type",
            "domain",
            "stage",
            "request_type",
            "timeout",
            "failure_mode_deny",
            "rate_limit_service",
            "enable_x_ratelimit_headers",
            "disable_x_envoy_ratelimited_header",
            "rate_limited_status",
            "stat_prefix",
        ],
        at,
    )?;
    let domain = c
        .get("domain")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{at}.domain: required"))?;
    if uint(c.get("stage"), &format!("{at}.stage"))?.unwrap_or(0) != 0 {
        return Err(format!("{at}.stage: only stage 0 is translated"));
    }
    if c.get("request_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "both")
    {
        return Err(format!("{at}.request_type: only \"both\" is translated"));
    }
    let timeout_ms = match c.get("timeout").and_then(Value::as_str) {
        None => 0,
        Some(t) => t
            .parse::<api::Duration>()
            .map_err(|e| format!("{at}.timeout: {e}"))?
            .as_std()
            .as_millis() as u64,
    };
    let svc = c
        .get("rate_limit_service")
        .ok_or_else(|| format!("{at}.rate_limit_service: required"))?;
    let sat = format!("{at}.rate_limit_service");
    only(svc, &["grpc_service", "transport_api_version"], &sat)?;
    if svc
        .get("transport_api_version")
        .and_then(Value::as_str)
        .is_some_and(|v| v != "V3")
    {
        return Err(format!("{sat}.transport_api_version: only V3"));
    }
    let grpc = svc.get("grpc_service").unwrap_or(&Value::Null);
    only(
        grpc,
        &["envoy_grpc", "timeout"],
        &format!("{sat}.grpc_service"),
    )?;
    let envoy_grpc = grpc.get("envoy_grpc").ok_or_else(|| {
        format!("{sat}.grpc_service.envoy_grpc: required (google_grpc is not translated)")
    })?;
    only(
        envoy_grpc,
        &["cluster_name", "authority"],
        &format!("{sat}.grpc_service.envoy_grpc"),
    )?;
    let cluster_name = envoy_grpc
        .get("cluster_name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{sat}.grpc_service.envoy_grpc.cluster_name: required"))?;
    // The calls' :authority when given (Istio's task sets the host).
    let authority = envoy_grpc
        .get("authority")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let x_ratelimit_headers = match c.get("enable_x_ratelimit_headers").and_then(Value::as_str) {
        None | Some("OFF") => false,
        Some("DRAFT_VERSION_03") => true,
        Some(other) => {
            return Err(format!(
                "{at}.enable_x_ratelimit_headers {other:?}: OFF or DRAFT_VERSION_03"
            ));
        }
    };
    let status = match c.pointer("/rate_limited_status/code") {
        None => 0,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        Some(Value::String(s)) => status_by_name(s).ok_or_else(|| {
            format!("{at}.rate_limited_status.code {s:?} is not a known HTTP status")
        })?,
        Some(_) => return Err(format!("{at}.rate_limited_status.code: expected a status")),
    };
    Ok(PatchKind::Global {
        limit: pb::GlobalRateLimit {
            domain: domain.to_string(),
            timeout_ms,
            failure_mode_deny: c
                .get("failure_mode_deny")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            x_ratelimit_headers,
            status,
            disable_x_envoy_ratelimited_header: c
                .get("disable_x_envoy_ratelimited_header")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            origin: origin.to_string(),
            authority: authority.to_string(),
            ..Default::default()
        },
        cluster_name: cluster_name.to_string(),
    })
}

/// One entry of a route's `rate_limits`: its actions.
pub(super) fn rate_limit_actions(
    r: &Value,
    at: &str,
    context: Context,
) -> Result<pb::RateLimitActions, String> {
    only(r, &["actions", "stage"], at)?;
    if uint(r.get("stage"), &format!("{at}.stage"))?.unwrap_or(0) != 0 {
        return Err(format!("{at}.stage: only stage 0 is translated"));
    }
    let list = r
        .get("actions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{at}.actions: none"))?;
    let mut actions = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let aat = format!("{at}.actions[{i}]");
        use pb::rate_limit_action::Action;
        let obj = a
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| format!("{aat}: one action"))?;
        let (key, v) = obj
            .iter()
            .next()
            .ok_or_else(|| format!("{aat}: one action"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let action = match key.as_str() {
            "request_headers" => {
                only(
                    v,
                    &["header_name", "descriptor_key", "skip_if_absent"],
                    &format!("{aat}.request_headers"),
                )?;
                if s("header_name").is_empty() || s("descriptor_key").is_empty() {
                    return Err(format!(
                        "{aat}.request_headers: header_name and descriptor_key are required"
                    ));
                }
                Action::RequestHeaders(pb::RequestHeadersAction {
                    header_name: s("header_name").to_ascii_lowercase(),
                    descriptor_key: s("descriptor_key"),
                    skip_if_absent: v
                        .get("skip_if_absent")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            }
            "remote_address" => Action::RemoteAddress(true),
            "generic_key" => {
                only(
                    v,
                    &["descriptor_key", "descriptor_value"],
                    &format!("{aat}.generic_key"),
                )?;
                if s("descriptor_value").is_empty() {
                    return Err(format!("{aat}.generic_key.descriptor_value: required"));
                }
                Action::GenericKey(pb::GenericKeyAction {
                    descriptor_key: s("descriptor_key"),
                    descriptor_value: s("descriptor_value"),
                })
            }
            "header_value_match" => {
                only(
                    v,
                    &[
                        "descriptor_key",
                        "descriptor_value",
                        "expect_match",
                        "headers",
                    ],
                    &format!("{aat}.header_value_match"),
                )?;
                let hat = format!("{aat}.header_value_match");
                if s("descriptor_value").is_empty() {
                    return Err(format!("{hat}.descriptor_value: required"));
                }
                let headers = v
                    .get("headers")
                    .and_then(Value::as_array)
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| format!("{hat}.headers: at least one"))?
                    .iter()
                    .enumerate()
                    .map(|(j, h)| {
                        header_matcher(h, &format!("{aat}.header_value_match.headers[{j}]"))
                    })
                    .collect::<Result<_, _>>()?;
                Action::HeaderValueMatch(pb::HeaderValueMatchAction {
                    descriptor_key: s("descriptor_key"),
                    descriptor_value: s("descriptor_value"),
                    expect_match: v
                        .get("expect_match")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    headers,
                })
            }
            // The route's cluster is known on a sidecar's inbound side only.
            "destination_cluster" if context == Context::SidecarInbound => {
                Action::DestinationCluster(true)
            }
            "destination_cluster" => {
                return Err(format!(
                    "{aat}.destination_cluster is translated at SIDECAR_INBOUND only (a gateway's limits are applied before its routes choose a cluster)"
                ));
            }
            // The workload's service cluster is set where the filter is applied.
            "source_cluster" => {
                only(v, &[], &format!("{aat}.source_cluster"))?;
                Action::SourceCluster(String::new())
            }
            "masked_remote_address" => {
                let mat = format!("{aat}.masked_remote_address");
                only(v, &["v4_prefix_mask_len", "v6_prefix_mask_len"], &mat)?;
                let len = |k: &str, max: u32, default: u32| {
                    let at = format!("{mat}.{k}");
                    // A UInt32Value: a number, or {value: n}.
                    let n = v.get(k).map(|n| n.get("value").unwrap_or(n));
                    match uint(n, &at)? {
                        None => Ok(default),
                        Some(n) if n <= max => Ok(n),
                        Some(n) => Err(format!("{at}: {n} is over {max}")),
                    }
                };
                Action::MaskedRemoteAddress(pb::MaskedRemoteAddressAction {
                    v4_prefix_len: len("v4_prefix_mask_len", 32, 32)?,
                    v6_prefix_len: len("v6_prefix_mask_len", 128, 128)?,
                })
            }
            "query_parameter_value_match" => {
                let qat = format!("{aat}.query_parameter_value_match");
                only(
                    v,
                    &[
                        "descriptor_key",
                        "descriptor_value",
                        "expect_match",
                        "query_parameters",
                    ],
                    &qat,
                )?;
                let parameters = v
                    .get("query_parameters")
                    .and_then(Value::as_array)
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("{qat}.query_parameters: at least one"))?
                    .iter()
                    .enumerate()
                    .map(|(j, q)| query_matcher(q, &format!("{qat}.query_parameters[{j}]")))
                    .collect::<Result<_, _>>()?;
                if s("descriptor_value").is_empty() {
                    return Err(format!("{qat}.descriptor_value: required"));
                }
                Action::QueryParameterValueMatch(pb::QueryParameterValueMatchAction {
                    descriptor_key: s("descriptor_key"),
                    descriptor_value: s("descriptor_value"),
                    expect_match: v
                        .get("expect_match")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    parameters,
                })
            }
            other => {
                return Err(format!(
                    "{aat}.{other}: the rate limit action {other:?} is not translated (request_headers, remote_address, masked_remote_address, generic_key, header_value_match, query_parameter_value_match, source_cluster, and destination_cluster at SIDECAR_INBOUND are)"
                ));
            }
        };
        actions.push(pb::RateLimitAction {
            action: Some(action),
        });
    }
    Ok(pb::RateLimitActions { actions })
}

/// Envoy's HeaderMatcher, the forms header_value_match uses.
pub(super) fn header_matcher(h: &Value, at: &str) -> Result<pb::HeaderValueMatcher, String> {
    use pb::header_value_matcher::Kind;
    let name = h
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{at}.name: required"))?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    let mut kind = None;
    let mut ignore_case = false;
    for (k, v) in h.as_object().into_iter().flatten() {
        let this = match k.as_str() {
            "name" | "invert_match" | "treat_missing_header_as_empty" => continue,
            "exact_match" => s(v).map(Kind::Exact),
            "prefix_match" => s(v).map(Kind::Prefix),
            "suffix_match" => s(v).map(Kind::Suffix),
            "contains_match" => s(v).map(Kind::Contains),
            "present_match" => v.as_bool().map(Kind::Present),
            "safe_regex_match" => v.get("regex").and_then(s).map(Kind::Regex),
            "range_match" => {
                only(v, &["start", "end"], &format!("{at}.range_match"))?;
                // int64s: JSON numbers, or strings as protobuf's JSON writes them.
                let int = |k: &str| match v.get(k) {
                    Some(Value::Number(n)) => n.as_i64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                int("start")
                    .zip(int("end"))
                    .map(|(start, end)| Kind::Range(pb::HeaderValueRange { start, end }))
            }
            "string_match" => {
                let (m, folded) = string_matcher(v, &format!("{at}.string_match"))?;
                ignore_case = folded;
                Some(match m {
                    StringKind::Exact(x) => Kind::Exact(x),
                    StringKind::Prefix(x) => Kind::Prefix(x),
                    StringKind::Suffix(x) => Kind::Suffix(x),
                    StringKind::Contains(x) => Kind::Contains(x),
                    StringKind::Regex(x) => Kind::Regex(x),
                })
            }
            other => {
                return Err(format!(
                    "{at}.{other} is not translated (exact_match, prefix_match, suffix_match, contains_match, present_match, safe_regex_match, range_match and string_match are)"
                ));
            }
        };
        kind = Some(this.ok_or_else(|| format!("{at}.{k}: not understood"))?);
    }
    if let Some(Kind::Regex(r)) = &kind {
        regex::Regex::new(r).map_err(|e| format!("{at}: regex {r:?}: {e}"))?;
    }
    let flag = |k: &str| h.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(pb::HeaderValueMatcher {
        name: name.to_ascii_lowercase(),
        kind: Some(kind.unwrap_or(Kind::Present(true))),
        invert: flag("invert_match"),
        ignore_case,
        treat_missing_as_empty: flag("treat_missing_header_as_empty"),
    })
}

/// The kinds of Envoy's StringMatcher that are translated.
enum StringKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(String),
}

/// Envoy's StringMatcher: one kind, and whether it ignores case.
fn string_matcher(v: &Value, at: &str) -> Result<(StringKind, bool), String> {
    only(
        v,
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
        at,
    )?;
    let ignore_case = v
        .get("ignore_case")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let kinds = [
        s("exact").map(StringKind::Exact),
        s("prefix").map(StringKind::Prefix),
        s("suffix").map(StringKind::Suffix),
        s("contains").map(StringKind::Contains),
        v.pointer("/safe_regex/regex")
            .and_then(Value::as_str)
            .map(|r| StringKind::Regex(r.to_string())),
    ];
    let mut found = kinds.into_iter().flatten();
    match (found.next(), found.next()) {
        (Some(StringKind::Regex(r)), None) => {
            regex::Regex::new(&r).map_err(|e| format!("{at}: regex {r:?}: {e}"))?;
            Ok((StringKind::Regex(r), ignore_case))
        }
        (Some(k), None) => Ok((k, ignore_case)),
        _ => Err(format!(
            "{at}: one of exact, prefix, suffix, contains or safe_regex"
        )),
    }
}

/// Envoy's QueryParameterMatcher: a name and a string_match, or present_match.
fn query_matcher(q: &Value, at: &str) -> Result<pb::QueryParameterMatcher, String> {
    only(q, &["name", "string_match", "present_match"], at)?;
    let name = q
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{at}.name: required"))?;
    let value = match (q.get("string_match"), q.get("present_match")) {
        (Some(m), None) => {
            use pb::query_value_matcher::Kind;
            let (k, ignore_case) = string_matcher(m, &format!("{at}.string_match"))?;
            Some(pb::QueryValueMatcher {
                kind: Some(match k {
                    StringKind::Exact(x) => Kind::Exact(x),
                    StringKind::Prefix(x) => Kind::Prefix(x),
                    StringKind::Suffix(x) => Kind::Suffix(x),
                    StringKind::Contains(x) => Kind::Contains(x),
                    StringKind::Regex(x) => Kind::Regex(x),
                }),
                ignore_case,
            })
        }
        (None, Some(Value::Bool(true))) => None,
        _ => {
            return Err(format!("{at}: string_match, or present_match: true"));
        }
    };
    Ok(pb::QueryParameterMatcher {
        name: name.to_string(),
        value,
    })
}

/// A CLUSTER patch's cluster: a name and one endpoint (host and port).
pub(super) fn cluster(v: &Value, at: &str) -> Result<PatchKind, String> {
    only(
        v,
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "http2_protocol_options",
            "typed_extension_protocol_options",
            "load_assignment",
        ],
        at,
    )?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{at}.name: required"))?;
    let endpoints: Vec<&Value> = v
        .pointer("/load_assignment/endpoints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|e| {
            e.get("lb_endpoints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
        .collect();
    let [endpoint] = endpoints.as_slice() else {
        return Err(format!(
            "{at}.load_assignment: one endpoint (the rate limit service's host) is translated, found {}",
            endpoints.len()
        ));
    };
    let sa = endpoint
        .pointer("/endpoint/address/socket_address")
        .ok_or_else(|| format!("{at}.load_assignment: endpoint.address.socket_address required"))?;
    let host = sa
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.load_assignment: socket_address.address required"))?;
    let port = uint(
        sa.get("port_value"),
        &format!("{at}.load_assignment: socket_address.port_value"),
    )?
    .filter(|p| (1..=65535).contains(p))
    .ok_or_else(|| format!("{at}.load_assignment: socket_address.port_value required"))?;
    Ok(PatchKind::Cluster {
        name: name.to_string(),
        host: host.to_string(),
        port,
    })
}
