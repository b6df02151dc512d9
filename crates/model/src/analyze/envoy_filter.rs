//! EnvoyFilter patches that cannot work as written, istioctl's
//! `envoyfilter.EnvoyPatchAnalyzer`: an operation the object class ignores
//! (IST0152 REPLACE, IST0153 ADD, IST0154 REMOVE), and a relative operation
//! (INSERT_BEFORE/AFTER, REPLACE, REMOVE) without a `priority`, whose effect
//! depends on the order filters are applied in (IST0151) — worse when an
//! earlier patch of the same object only applies to some proxy versions
//! (IST0155). Trellis applies no EnvoyFilter (TRL0001 says so); these
//! messages are for configuration shared with an Istio mesh.

use api::Resource;
use serde_json::Value;

use super::context::Context;
use super::messages::{self as m};
use super::names::namespace_of;
use super::{Message, origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let mut filters: Vec<(&Resource, &Value)> = ctx
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Unsupported {
                api_version,
                kind,
                spec,
                ..
            } if kind == "EnvoyFilter" && api_version.starts_with("networking.istio.io/") => {
                Some((r, spec))
            }
            _ => None,
        })
        .collect();
    filters.sort_by_key(|(r, _)| (namespace_of(r).to_string(), r.name().to_string()));
    // The objects earlier patches touch only on some proxy versions, across
    // all filters in order (as Istio's analyzer keeps them).
    let mut versioned: Vec<String> = Vec::new();
    for (r, spec) in filters {
        let priority = spec.get("priority").and_then(Value::as_i64).unwrap_or(0);
        let patches = spec
            .get("configPatches")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for patch in patches {
            let Some(body) = patch.get("patch").filter(|b| !b.is_null()) else {
                break;
            };
            let target = patched_object(patch, body);
            let apply_to = patch.get("applyTo").and_then(Value::as_str).unwrap_or("");
            let operation = body.get("operation").and_then(Value::as_str).unwrap_or("");
            let route_class = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
            let relative = match operation {
                "ADD" if route_class => {
                    out.push(message(r, m::ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY));
                    false
                }
                "REMOVE" if route_class => {
                    out.push(message(
                        r,
                        m::ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY,
                    ));
                    false
                }
                "REPLACE"
                    if !matches!(apply_to, "NETWORK_FILTER" | "HTTP_FILTER" | "VIRTUAL_HOST") =>
                {
                    out.push(message(
                        r,
                        m::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY,
                    ));
                    false
                }
                "REMOVE" | "REPLACE" | "INSERT_BEFORE" | "INSERT_AFTER" => true,
                _ => false,
            };
            if relative && priority == 0 {
                let ty = if versioned.contains(&target) {
                    m::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION
                } else {
                    m::ENVOY_FILTER_USES_RELATIVE_OPERATION
                };
                out.push(message(r, ty));
            }
            let proxy_version = patch
                .pointer("/match/proxy/proxyVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty());
            if proxy_version {
                versioned.push(target);
            }
        }
    }
}

/// What a patch touches, as far as the analyzer can tell: the name in its
/// value, else the filter its listener match names (kept apart, as Istio
/// compares them, by a prefix).
fn patched_object(patch: &Value, body: &Value) -> String {
    let Some(value) = body.get("value").and_then(Value::as_object) else {
        return String::new();
    };
    if let Some(name) = value.get("name") {
        return format!("value:{name}");
    }
    patch
        .pointer("/match/listener/filterChain/filter/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn message(r: &Resource, ty: m::MessageType) -> Message {
    Message::new(ty, origin(r), m::envoy_filter_text(ty).to_string())
}
