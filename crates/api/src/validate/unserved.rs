//! Istio kinds Trellis reads but does not serve (EnvoyFilter, WasmPlugin,
//! ProxyConfig), checked by the rules Istio's own validation applies to
//! them, so a broken one is not reported as valid. Their bodies are not
//! modelled, so the checks read the JSON as written; for EnvoyFilter, whose
//! shape decides what it patches, unknown fields are found too (the Envoy
//! configuration inside `patch.value` is not checked).

use serde_json::Value;

use super::common::{Errors, at, idx};

pub(crate) fn unserved(errs: &mut Errors, group: &str, kind: &str, spec: &Value) {
    match (group, kind) {
        ("networking.istio.io", "EnvoyFilter") => envoy_filter(errs, spec),
        ("extensions.istio.io", "WasmPlugin") => {
            let url = spec.get("url").and_then(Value::as_str).unwrap_or_default();
            if url.is_empty() {
                errs.add("spec.url", "url is required");
            }
        }
        ("networking.istio.io", "ProxyConfig") => {
            let concurrency = spec.get("concurrency").and_then(Value::as_i64);
            if let Some(n) = concurrency.filter(|n| *n < 0) {
                errs.add(
                    "spec.concurrency",
                    format!("concurrency {n} must not be negative"),
                );
            }
        }
        _ => {}
    }
}

/// What Istio warns about in a kind Trellis does not serve.
pub(crate) fn warnings(group: &str, kind: &str, spec: &Value) -> Vec<String> {
    if (group, kind) != ("networking.istio.io", "EnvoyFilter") {
        return Vec::new();
    }
    let mut out = vec![
        "EnvoyFilter exposes internal implementation details that may change at any time. Prefer other APIs if possible, and exercise extreme caution, especially around upgrades.".to_string(),
    ];
    // A filter named without its typed configuration: Envoy's deprecated
    // lookup by name. Checked on the patched filter itself (Istio looks
    // through the whole Envoy object, which Trellis has no schema for).
    let patches = field(spec, "configPatches", "config_patches")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for patch in patches {
        let apply_to = field(patch, "applyTo", "apply_to").and_then(Value::as_str);
        let filter = matches!(
            apply_to,
            Some("HTTP_FILTER" | "NETWORK_FILTER" | "LISTENER_FILTER")
        );
        let Some(value) = patch
            .get("patch")
            .and_then(|p| p.get("value"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let operation = patch
            .get("patch")
            .and_then(|p| p.get("operation"))
            .and_then(Value::as_str);
        if let Some(unknown) = apply_to.and_then(|a| unknown_envoy_field(a, value))
            && operation != Some("REMOVE")
        {
            out.push(unknown);
            continue;
        }
        let typed = [
            "typed_config",
            "typedConfig",
            "config_discovery",
            "configDiscovery",
        ]
        .iter()
        .any(|k| value.get(*k).is_some_and(|v| !v.is_null()));
        if filter && !typed {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push(format!(
                "using deprecated types by name without typed_config; {name}"
            ));
        }
    }
    out
}

/// The Envoy message each kind of patch edits, and its fields (protobuf
/// names, oneof members included), from Envoy's v3 API.
const ENVOY_MESSAGES: &[(&str, &str, &[&str])] = &[
    (
        "LISTENER",
        "envoy.config.listener.v3.Listener",
        &[
            "access_log",
            "additional_addresses",
            "address",
            "api_listener",
            "bind_to_port",
            "bypass_overload_manager",
            "connection_balance_config",
            "continue_on_listener_filters_timeout",
            "default_filter_chain",
            "deprecated_v1",
            "drain_type",
            "enable_mptcp",
            "enable_reuse_port",
            "fcds_config",
            "filter_chain_matcher",
            "filter_chains",
            "freebind",
            "ignore_global_conn_limit",
            "internal_listener",
            "listener_filters",
            "listener_filters_timeout",
            "max_connections_to_accept_per_socket_event",
            "metadata",
            "name",
            "per_connection_buffer_high_watermark_timeout",
            "per_connection_buffer_limit_bytes",
            "reuse_port",
            "socket_options",
            "stat_prefix",
            "tcp_backlog_size",
            "tcp_fast_open_queue_length",
            "tcp_keepalive",
            "traffic_direction",
            "transparent",
            "udp_listener_config",
            "use_original_dst",
        ],
    ),
    (
        "FILTER_CHAIN",
        "envoy.config.listener.v3.FilterChain",
        &[
            "filter_chain_match",
            "filters",
            "metadata",
            "name",
            "transport_socket",
            "transport_socket_connect_timeout",
            "use_proxy_proto",
        ],
    ),
    (
        "NETWORK_FILTER",
        "envoy.config.listener.v3.Filter",
        &["name", "typed_config", "config_discovery"],
    ),
    (
        "HTTP_FILTER",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &[
            "name",
            "typed_config",
            "config_discovery",
            "is_optional",
            "disabled",
        ],
    ),
    (
        "LISTENER_FILTER",
        "envoy.config.listener.v3.ListenerFilter",
        &[
            "name",
            "typed_config",
            "config_discovery",
            "filter_disabled",
        ],
    ),
    (
        "ROUTE_CONFIGURATION",
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "cluster_specifier_plugins",
            "ignore_path_parameters_in_path_matching",
            "ignore_port_in_host_matching",
            "internal_only_headers",
            "max_direct_response_body_size_bytes",
            "metadata",
            "most_specific_header_mutations_wins",
            "name",
            "request_headers_to_add",
            "request_headers_to_remove",
            "request_mirror_policies",
            "response_headers_to_add",
            "response_headers_to_remove",
            "typed_per_filter_config",
            "validate_clusters",
            "vhds",
            "vhost_header",
            "virtual_hosts",
        ],
    ),
    (
        "VIRTUAL_HOST",
        "envoy.config.route.v3.VirtualHost",
        &[
            "cors",
            "domains",
            "hedge_policy",
            "include_attempt_count_in_response",
            "include_is_timeout_retry_header",
            "include_request_attempt_count",
            "matcher",
            "metadata",
            "name",
            "per_request_buffer_limit_bytes",
            "rate_limits",
            "request_body_buffer_limit",
            "request_headers_to_add",
            "request_headers_to_remove",
            "request_mirror_policies",
            "require_tls",
            "response_headers_to_add",
            "response_headers_to_remove",
            "retry_policy",
            "retry_policy_typed_config",
            "routes",
            "typed_per_filter_config",
            "virtual_clusters",
        ],
    ),
    (
        "HTTP_ROUTE",
        "envoy.config.route.v3.Route",
        &[
            "decorator",
            "direct_response",
            "filter_action",
            "match",
            "metadata",
            "name",
            "non_forwarding_action",
            "per_request_buffer_limit_bytes",
            "redirect",
            "request_body_buffer_limit",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "route",
            "stat_prefix",
            "tracing",
            "typed_per_filter_config",
        ],
    ),
    (
        "CLUSTER",
        "envoy.config.cluster.v3.Cluster",
        &[
            "alt_stat_name",
            "circuit_breakers",
            "cleanup_interval",
            "close_connections_on_host_health_failure",
            "cluster_type",
            "common_http_protocol_options",
            "common_lb_config",
            "connect_timeout",
            "connection_pool_per_downstream_connection",
            "dns_failure_refresh_rate",
            "dns_jitter",
            "dns_lookup_family",
            "dns_refresh_rate",
            "dns_resolution_config",
            "dns_resolvers",
            "eds_cluster_config",
            "filters",
            "health_checks",
            "http2_protocol_options",
            "http_protocol_options",
            "ignore_health_on_host_removal",
            "lb_policy",
            "lb_subset_config",
            "least_request_lb_config",
            "load_assignment",
            "load_balancing_policy",
            "lrs_report_endpoint_metrics",
            "lrs_server",
            "maglev_lb_config",
            "max_requests_per_connection",
            "metadata",
            "name",
            "original_dst_lb_config",
            "outlier_detection",
            "per_connection_buffer_high_watermark_timeout",
            "per_connection_buffer_limit_bytes",
            "preconnect_policy",
            "protocol_selection",
            "respect_dns_ttl",
            "ring_hash_lb_config",
            "round_robin_lb_config",
            "track_cluster_stats",
            "track_timeout_budgets",
            "transport_socket",
            "transport_socket_matcher",
            "transport_socket_matches",
            "type",
            "typed_dns_resolver_config",
            "typed_extension_protocol_options",
            "upstream_bind_config",
            "upstream_config",
            "upstream_connection_options",
            "upstream_http_protocol_options",
            "use_tcp_for_dns_lookups",
            "wait_for_warm_on_init",
        ],
    ),
];

/// The first field (in name order, as Istio's decoder meets them) of a
/// patch's value that the Envoy message it edits does not have, in Istio's
/// words. Only the value's own fields are checked, not nested messages.
fn unknown_envoy_field(apply_to: &str, value: &serde_json::Map<String, Value>) -> Option<String> {
    let (_, message, fields) = ENVOY_MESSAGES.iter().find(|(a, _, _)| *a == apply_to)?;
    let mut keys: Vec<&String> = value.keys().collect();
    keys.sort();
    let unknown = keys.into_iter().find(|k| {
        let camel = snake_to_camel(k);
        !fields.iter().any(|f| snake_to_camel(f) == camel)
    })?;
    Some(format!(
        "Envoy filter: unknown field {unknown:?} in {message}"
    ))
}

const APPLY_TO: &[&str] = &[
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
];
const OPERATIONS: &[&str] = &[
    "INVALID",
    "MERGE",
    "ADD",
    "REMOVE",
    "INSERT_BEFORE",
    "INSERT_AFTER",
    "INSERT_FIRST",
    "REPLACE",
];
const CONTEXTS: &[&str] = &[
    "ANY",
    "SIDECAR_INBOUND",
    "SIDECAR_OUTBOUND",
    "GATEWAY",
    "WAYPOINT",
];

/// The fields of a message (JSON names; protobuf's snake_case names are
/// accepted too, as Istio's decoder accepts them), with the shape of those
/// that are messages themselves.
#[derive(Clone, Copy)]
enum Shape {
    /// A scalar, a map of strings, or free-form (`patch.value`).
    Any,
    Message(&'static [(&'static str, Shape)]),
    List(&'static [(&'static str, Shape)]),
}

const NAME: &[(&str, Shape)] = &[("name", Shape::Any)];
const LISTENER_MATCH: &[(&str, Shape)] = &[
    ("portNumber", Shape::Any),
    ("portName", Shape::Any),
    ("listenerFilter", Shape::Any),
    ("name", Shape::Any),
    (
        "filterChain",
        Shape::Message(&[
            ("name", Shape::Any),
            ("sni", Shape::Any),
            ("transportProtocol", Shape::Any),
            ("applicationProtocols", Shape::Any),
            ("destinationPort", Shape::Any),
            (
                "filter",
                Shape::Message(&[("name", Shape::Any), ("subFilter", Shape::Message(NAME))]),
            ),
        ]),
    ),
];
const ROUTE_CONFIGURATION_MATCH: &[(&str, Shape)] = &[
    ("portNumber", Shape::Any),
    ("portName", Shape::Any),
    ("gateway", Shape::Any),
    ("name", Shape::Any),
    (
        "vhost",
        Shape::Message(&[
            ("name", Shape::Any),
            ("domainName", Shape::Any),
            (
                "route",
                Shape::Message(&[("name", Shape::Any), ("action", Shape::Any)]),
            ),
        ]),
    ),
];
const OBJECT_MATCH: &[(&str, Shape)] = &[
    ("context", Shape::Any),
    (
        "proxy",
        Shape::Message(&[("proxyVersion", Shape::Any), ("metadata", Shape::Any)]),
    ),
    ("listener", Shape::Message(LISTENER_MATCH)),
    (
        "routeConfiguration",
        Shape::Message(ROUTE_CONFIGURATION_MATCH),
    ),
    (
        "cluster",
        Shape::Message(&[
            ("portNumber", Shape::Any),
            ("service", Shape::Any),
            ("subset", Shape::Any),
            ("name", Shape::Any),
        ]),
    ),
    (
        "waypoint",
        Shape::Message(&[
            ("portNumber", Shape::Any),
            ("route", Shape::Message(NAME)),
            (
                "filter",
                Shape::Message(&[("name", Shape::Any), ("subFilter", Shape::Message(NAME))]),
            ),
        ]),
    ),
];
const ENVOY_FILTER: &[(&str, Shape)] = &[
    (
        "workloadSelector",
        Shape::Message(&[("labels", Shape::Any)]),
    ),
    (
        "targetRefs",
        Shape::List(&[
            ("group", Shape::Any),
            ("kind", Shape::Any),
            ("name", Shape::Any),
            ("namespace", Shape::Any),
        ]),
    ),
    ("priority", Shape::Any),
    (
        "configPatches",
        Shape::List(&[
            ("applyTo", Shape::Any),
            ("match", Shape::Message(OBJECT_MATCH)),
            (
                "patch",
                Shape::Message(&[
                    ("operation", Shape::Any),
                    ("value", Shape::Any),
                    ("filterClass", Shape::Any),
                ]),
            ),
        ]),
    ),
];

/// Reports each field of `value` that the message `fields` does not have.
fn known_fields(errs: &mut Errors, path: &str, value: &Value, fields: &[(&str, Shape)]) {
    let Some(map) = value.as_object() else { return };
    for (key, v) in map {
        let camel = snake_to_camel(key);
        let Some((name, shape)) = fields.iter().find(|(n, _)| *n == camel) else {
            errs.add(at(path, key), format!("unknown field `{key}`"));
            continue;
        };
        let here = at(path, name);
        match shape {
            Shape::Any => {}
            Shape::Message(inner) => known_fields(errs, &here, v, inner),
            Shape::List(inner) => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    known_fields(errs, &format!("{here}[{i}]"), item, inner);
                }
            }
        }
    }
}

fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The field of `v` under its JSON name or its protobuf name.
fn field<'a>(v: &'a Value, json_name: &str, proto_name: &str) -> Option<&'a Value> {
    v.get(json_name)
        .or_else(|| v.get(proto_name))
        .filter(|f| !f.is_null())
}

fn envoy_filter(errs: &mut Errors, spec: &Value) {
    known_fields(errs, "spec", spec, ENVOY_FILTER);
    let patches = field(spec, "configPatches", "config_patches")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, patch) in patches.iter().enumerate() {
        let p = idx("spec", "configPatches", i);
        let apply_to = field(patch, "applyTo", "apply_to");
        let matcher = patch.get("match").filter(|m| !m.is_null());
        let body = patch.get("patch").filter(|v| !v.is_null());
        let operation = body.and_then(|b| b.get("operation"));
        let context = matcher.and_then(|m| m.get("context"));
        let fields: [(&str, Option<&Value>, &[&str]); 3] = [
            ("applyTo", apply_to, APPLY_TO),
            ("patch.operation", operation, OPERATIONS),
            ("match.context", context, CONTEXTS),
        ];
        let mut known_values = true;
        for (name, value, allowed) in fields {
            let Some(v) = value else { continue };
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                known_values = false;
                errs.add(
                    at(&p, name),
                    format!("unknown value {v}; expected one of {}", allowed.join(", ")),
                );
            }
        }
        if !known_values || context.and_then(Value::as_str) == Some("WAYPOINT") {
            continue; // Istio does not check waypoint patches further
        }
        let apply_to = apply_to.and_then(Value::as_str).unwrap_or("INVALID");
        let operation = operation.and_then(Value::as_str).unwrap_or("INVALID");
        if apply_to == "INVALID" {
            errs.add(at(&p, "applyTo"), "applyTo is required");
            continue;
        }
        let Some(body) = body else {
            errs.add(at(&p, "patch"), "patch is required");
            continue;
        };
        if operation == "INVALID" {
            errs.add(at(&p, "patch.operation"), "operation is required");
            continue;
        }
        if operation != "REMOVE" && body.get("value").is_none_or(Value::is_null) {
            errs.add(
                at(&p, "patch.value"),
                format!("a value is required for operation {operation}"),
            );
            continue;
        }
        let Some(m) = matcher else { continue };
        if let Some(version) = m
            .get("proxy")
            .and_then(|p| field(p, "proxyVersion", "proxy_version"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= 1024)
            && let Err(e) = super::common::regex(version)
        {
            errs.add(at(&p, "match.proxy.proxyVersion"), e);
            continue;
        }
        match_class(errs, &p, apply_to, m);
    }
}

/// The object a patch applies to and the object its match names are of
/// one class (a listener patch matches listeners, ...), and a filter match
/// names the filter; otherwise the patch can never apply.
fn match_class(errs: &mut Errors, p: &str, apply_to: &str, m: &Value) {
    let listener = m.get("listener").filter(|v| !v.is_null());
    let route = field(m, "routeConfiguration", "route_configuration");
    let cluster = m.get("cluster").filter(|v| !v.is_null());
    if listener.is_none() && route.is_none() && cluster.is_none() {
        return; // no object match: applies to every object of the class
    }
    match apply_to {
        "LISTENER" | "FILTER_CHAIN" | "NETWORK_FILTER" | "HTTP_FILTER" => {
            let Some(listener) = listener else {
                errs.add(
                    at(p, "match"),
                    format!(
                        "applyTo {apply_to} patches listeners; the match must be a listener match"
                    ),
                );
                return;
            };
            let filter = field(listener, "filterChain", "filter_chain")
                .and_then(|fc| fc.get("filter"))
                .filter(|f| !f.is_null());
            let Some(filter) = filter else { return };
            let path = at(p, "match.listener.filterChain.filter");
            let name = filter
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name.is_empty() {
                errs.add(at(&path, "name"), "a filter match needs the filter's name");
                return;
            }
            let Some(sub) = field(filter, "subFilter", "sub_filter") else {
                return;
            };
            if apply_to != "HTTP_FILTER" {
                errs.add(
                    at(&path, "subFilter"),
                    "a subFilter match applies to HTTP_FILTER patches only",
                );
            } else if name != "envoy.filters.network.http_connection_manager"
                && name != "envoy.http_connection_manager"
            {
                errs.add(
                    at(&path, "subFilter"),
                    "a subFilter match needs the filter match `envoy.filters.network.http_connection_manager`",
                );
            } else if sub
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                errs.add(
                    at(&path, "subFilter.name"),
                    "a subFilter match needs the filter's name",
                );
            }
        }
        "ROUTE_CONFIGURATION" | "VIRTUAL_HOST" | "HTTP_ROUTE" if route.is_none() => errs.add(
            at(p, "match"),
            format!(
                "applyTo {apply_to} patches routes; the match must be a routeConfiguration match"
            ),
        ),
        "CLUSTER" if cluster.is_none() => errs.add(
            at(p, "match"),
            "applyTo CLUSTER patches clusters; the match must be a cluster match",
        ),
        _ => {}
    }
}
