//! Istio kinds Trellis reads but does not serve (EnvoyFilter, WasmPlugin,
//! ProxyConfig), checked by the rules Istio's own validation applies to
//! them, so a broken one is not reported as valid. Their bodies are not
//! modelled, so the checks read the JSON as written; unknown fields in them
//! are not detected.

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
const CONTEXTS: &[&str] = &["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"];

fn envoy_filter(errs: &mut Errors, spec: &Value) {
    let patches = spec
        .get("configPatches")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, patch) in patches.iter().enumerate() {
        let p = idx("spec", "configPatches", i);
        if patch.get("patch").is_none_or(Value::is_null) {
            errs.add(at(&p, "patch"), "patch is required");
        }
        let fields: [(&str, Option<&Value>, &[&str]); 3] = [
            ("applyTo", patch.get("applyTo"), APPLY_TO),
            (
                "patch.operation",
                patch.get("patch").and_then(|v| v.get("operation")),
                OPERATIONS,
            ),
            (
                "match.context",
                patch.get("match").and_then(|v| v.get("context")),
                CONTEXTS,
            ),
        ];
        for (field, value, allowed) in fields {
            let Some(v) = value else { continue };
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                errs.add(
                    at(&p, field),
                    format!("unknown value {v}; expected one of {}", allowed.join(", ")),
                );
            }
        }
    }
}
