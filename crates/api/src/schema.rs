//! The OpenAPI v3 schema of each Istio kind's `spec`, generated from the
//! types (`schemars`) and put in the structural form a Kubernetes CRD
//! needs, so that the API server prunes and refuses what Istio's CRDs
//! prune and refuse (a misspelled field above all).
//!
//! What a structural schema may not carry is dropped: `$ref`s (every
//! subschema is inlined), null types (an unset field is simply absent),
//! `additionalProperties: false` (pruning and kubectl's strict field
//! validation do that job), defaults (the API server would write them into
//! stored objects) and required lists (the validating webhook names a
//! missing field with its path). Integer formats are Kubernetes' own:
//! `int32`/`int64` stay, an unsigned 32-bit field becomes a bounded integer
//! as in Istio's schemas.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::resource::Kind;
use crate::{networking, security, telemetry};

/// The structural schema of `kind`'s `spec`; `None` for the Kubernetes kinds.
pub fn spec_schema(kind: Kind) -> Option<Value> {
    let schema = match kind {
        Kind::VirtualService => generate::<networking::VirtualService>(),
        Kind::DestinationRule => generate::<networking::DestinationRule>(),
        Kind::Gateway => generate::<networking::Gateway>(),
        Kind::ServiceEntry => generate::<networking::ServiceEntry>(),
        Kind::Sidecar => generate::<networking::Sidecar>(),
        Kind::WorkloadEntry => generate::<networking::WorkloadEntry>(),
        Kind::WorkloadGroup => generate::<networking::WorkloadGroup>(),
        Kind::PeerAuthentication => generate::<security::PeerAuthentication>(),
        Kind::RequestAuthentication => generate::<security::RequestAuthentication>(),
        Kind::AuthorizationPolicy => generate::<security::AuthorizationPolicy>(),
        Kind::Telemetry => generate::<telemetry::Telemetry>(),
        _ => return None,
    };
    Some(structural(schema))
}

fn generate<T: JsonSchema>() -> Value {
    let generator: SchemaGenerator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Kubernetes' form of one (sub)schema, recursively.
fn structural(schema: Value) -> Value {
    let object = match schema {
        Value::Object(object) if !object.is_empty() => object,
        // `serde_json::Value` (kept verbatim): anything goes.
        _ => return json!({"x-kubernetes-preserve-unknown-fields": true}),
    };
    // `Option<T>` of a non-inlined shape: `anyOf: [T, {type: null}]`, and
    // a described field: `allOf: [T]`.
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(alternatives)) = object.get(combinator) {
            let mut real = alternatives
                .iter()
                .filter(|a| a.get("type") != Some(&json!("null")));
            if let (Some(only), None) = (real.next(), real.next()) {
                let mut merged = only.as_object().cloned().unwrap_or_default();
                for (key, value) in &object {
                    if key != combinator {
                        merged.entry(key.clone()).or_insert(value.clone());
                    }
                }
                return structural(Value::Object(merged));
            }
        }
    }
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "type" => {
                let real: Vec<Value> = match value {
                    Value::Array(types) => types.into_iter().filter(|t| t != "null").collect(),
                    single => vec![single],
                };
                if let [only] = real.as_slice() {
                    out.insert(key, only.clone());
                }
            }
            "properties" => {
                let properties: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, sub)| (name.clone(), structural(sub.clone())))
                    .collect();
                out.insert(key, Value::Object(properties));
            }
            // `false` (deny_unknown_fields): pruning does that job.
            "additionalProperties" | "items" if value != Value::Bool(false) => {
                out.insert(key, structural(value));
            }
            // Integer-keyed maps (`portLevelMtls`): their values' schema.
            "patternProperties" => {
                if let Some(sub) = value.as_object().and_then(|p| p.values().next()) {
                    out.insert("additionalProperties".into(), structural(sub.clone()));
                }
            }
            "format" => match value.as_str() {
                Some("uint32") => {
                    out.insert("maximum".into(), json!(u32::MAX));
                }
                Some("int32" | "int64" | "double" | "float" | "byte" | "date-time") => {
                    out.insert(key, value);
                }
                _ => {}
            },
            "enum" => {
                let names: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| !v.is_null())
                    .cloned()
                    .collect();
                out.insert(key, Value::Array(names));
            }
            "minimum" | "maximum" | "x-kubernetes-preserve-unknown-fields" => {
                out.insert(key, value);
            }
            // $schema, title, description, default, required,
            // propertyNames, uniqueItems, examples...: see the module doc.
            _ => {}
        }
    }
    if out.contains_key("properties") || out.contains_key("additionalProperties") {
        out.insert("type".into(), json!("object"));
    }
    Value::Object(out)
}

/// Every path of a schema with its type, `.` between properties, `.*` for
/// a map's values and `[]` for a list's items: what the tests compare with
/// Istio's published schemas. A node with no type says what else it is
/// (`int-or-string`, `any`).
pub fn field_types(schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, String::new(), &mut out);
    out
}

fn walk(schema: &Value, path: String, out: &mut Vec<(String, String)>) {
    let kind = if schema["x-kubernetes-int-or-string"] == true {
        "int-or-string"
    } else {
        match schema["type"].as_str() {
            Some(t) => t,
            None if schema["x-kubernetes-preserve-unknown-fields"] == true => "any",
            None => "none",
        }
    };
    out.push((path.clone(), kind.to_string()));
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(sub, child, out);
        }
    }
    if schema["additionalProperties"].is_object() {
        walk(&schema["additionalProperties"], format!("{path}.*"), out);
    }
    if schema["items"].is_object() {
        walk(&schema["items"], format!("{path}[]"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes refuses a CRD whose schema is not structural: every node
    /// typed (or explicitly open), no references, no null types.
    #[test]
    fn every_spec_schema_is_structural() {
        for kind in Kind::ALL.iter().filter(|k| k.is_istio()) {
            let schema = spec_schema(*kind).unwrap();
            let text = schema.to_string();
            for forbidden in [
                "$ref",
                "anyOf",
                "oneOf",
                "allOf",
                "\"null\"",
                "\"default\":",
            ] {
                assert!(!text.contains(forbidden), "{kind:?}: {forbidden} in {text}");
            }
            for (path, kind_of) in field_types(&schema) {
                assert_ne!(kind_of, "none", "{kind:?}: {path} has no type");
            }
        }
    }

    #[test]
    fn fields_are_typed_as_in_istio() {
        let schema = spec_schema(Kind::VirtualService).unwrap();
        let types: std::collections::BTreeMap<String, String> =
            field_types(&schema).into_iter().collect();
        for (path, expected) in [
            ("", "object"),
            ("hosts", "array"),
            ("hosts[]", "string"),
            ("http[].match[].uri.prefix", "string"),
            ("http[].match[].headers.*.exact", "string"),
            ("http[].route[].weight", "integer"),
            ("http[].timeout", "string"),
            ("http[].fault.abort.percentage.value", "number"),
            ("http[].corsPolicy.unmatchedPreflights", "string"),
        ] {
            assert_eq!(
                types.get(path).map(String::as_str),
                Some(expected),
                "{path}"
            );
        }
        let port = &schema["properties"]["http"]["items"]["properties"]["match"]["items"]["properties"]
            ["port"];
        assert_eq!(
            port,
            &json!({"type": "integer", "minimum": 0, "maximum": 4294967295u32})
        );
        let pa = spec_schema(Kind::PeerAuthentication).unwrap();
        assert_eq!(
            pa["properties"]["mtls"]["properties"]["mode"]["enum"],
            json!(["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
        );
    }
}
