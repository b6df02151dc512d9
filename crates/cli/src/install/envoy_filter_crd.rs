//! The CustomResourceDefinition of Istio's EnvoyFilter
//! (`networking.istio.io/v1alpha3`), which Trellis reads for the rate
//! limit patterns it translates (and reports the others). EnvoyFilter is
//! not one of the api crate's kinds, so its schema is written here with
//! the shape of Istio's published one: the structure of `configPatches`,
//! `workloadSelector`, `targetRefs` and `priority` is checked (a misspelled
//! field is refused by the API server as on an Istio cluster), while each
//! patch's `value` — Envoy configuration — is kept as given
//! (`x-kubernetes-preserve-unknown-fields`), as Istio's schema keeps it.

use serde_json::{Value, json};

/// An unsigned 32-bit number, as Istio's schemas write a `uint32`.
fn uint32() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn enumeration(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

/// `configPatches[].match`: at most one of listener, routeConfiguration,
/// cluster and waypoint (this one with context WAYPOINT only).
fn patch_match() -> Value {
    let sub_filter = object(json!({"name": string()}));
    let filter = object(json!({"name": string(), "subFilter": sub_filter}));
    let filter_chain = object(json!({
        "applicationProtocols": string(),
        "destinationPort": uint32(),
        "filter": filter,
        "name": string(),
        "sni": string(),
        "transportProtocol": string(),
    }));
    let listener = object(json!({
        "filterChain": filter_chain,
        "listenerFilter": string(),
        "name": string(),
        "portName": string(),
        "portNumber": uint32(),
    }));
    let route = object(json!({
        "action": enumeration(&["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"]),
        "name": string(),
    }));
    let vhost = object(json!({"domainName": string(), "name": string(), "route": route}));
    let route_configuration = object(json!({
        "gateway": string(),
        "name": string(),
        "portName": string(),
        "portNumber": uint32(),
        "vhost": vhost,
    }));
    let cluster = object(json!({
        "name": string(),
        "portNumber": uint32(),
        "service": string(),
        "subset": string(),
    }));
    let proxy = object(json!({
        "metadata": {"type": "object", "additionalProperties": string()},
        "proxyVersion": string(),
    }));
    let waypoint = object(json!({
        "filter": object(json!({
            "name": string(),
            "subFilter": object(json!({"name": string()})),
        })),
        "portNumber": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4294967295u64,
            "x-kubernetes-validations": [{
                "rule": "0 < self && self <= 65535",
                "message": "port must be between 1-65535",
            }],
        },
        "route": object(json!({"name": string()})),
    }));
    let mut m = object(json!({
        "cluster": cluster,
        "context": enumeration(&[
            "ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT",
        ]),
        "listener": listener,
        "proxy": proxy,
        "routeConfiguration": route_configuration,
        "waypoint": waypoint,
    }));
    let one = |field: &str| json!({"required": [field]});
    let kinds = ["listener", "routeConfiguration", "cluster", "waypoint"];
    let mut choices = vec![json!({"not": {"anyOf": kinds.map(one)}})];
    choices.extend(kinds.map(one));
    m["oneOf"] = json!(choices);
    m["x-kubernetes-validations"] = json!([{
        "rule": "has(self.context) ? ((self.context == 'WAYPOINT') ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)",
        "message": "only support waypointMatch when context is WAYPOINT",
    }]);
    m
}

fn spec_schema() -> Value {
    let patch = object(json!({
        "filterClass": enumeration(&["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"]),
        "operation": enumeration(&[
            "INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER",
            "INSERT_FIRST", "REPLACE",
        ]),
        // Envoy's configuration, kept whole.
        "value": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    }));
    let config_patch = object(json!({
        "applyTo": enumeration(&[
            "INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
            "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER",
            "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER",
        ]),
        "match": patch_match(),
        "patch": patch,
    }));
    let target_ref = json!({
        "type": "object",
        "required": ["kind", "name"],
        "properties": {
            "group": {
                "type": "string",
                "maxLength": 253,
                "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            },
            "kind": {
                "type": "string",
                "minLength": 1,
                "maxLength": 63,
                "pattern": "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
            },
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "namespace": {
                "type": "string",
                "x-kubernetes-validations": [{
                    "rule": "self.size() == 0",
                    "message": "cross namespace referencing is not currently supported",
                }],
            },
        },
    });
    let label_value = json!({
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [{
            "rule": "!self.contains('*')",
            "message": "wildcard is not supported in selector",
        }],
    });
    json!({
        "type": "object",
        "properties": {
            "configPatches": {"type": "array", "items": config_patch},
            "priority": {"type": "integer", "format": "int32"},
            "targetRefs": {"type": "array", "maxItems": 16, "items": target_ref},
            "workloadSelector": object(json!({
                "labels": {
                    "type": "object",
                    "maxProperties": 256,
                    "additionalProperties": label_value,
                },
            })),
        },
        "x-kubernetes-validations": [{
            "rule": "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1",
            "message": "only one of targetRefs or workloadSelector can be set",
        }],
    })
}

/// EnvoyFilter's CRD: `v1alpha3` only, served and stored, no short name.
pub fn crd(labels: &Value, status: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "envoyfilters.networking.istio.io",
            "labels": labels,
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": "networking.istio.io",
            "names": {
                "kind": "EnvoyFilter",
                "listKind": "EnvoyFilterList",
                "plural": "envoyfilters",
                "singular": "envoyfilter",
                "categories": ["istio-io", "networking-istio-io"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha3",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": spec_schema(), "status": status},
                }},
            }],
        },
    })
}
