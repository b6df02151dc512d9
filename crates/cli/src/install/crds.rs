//! The CustomResourceDefinitions of the Istio kinds Trellis serves, with the
//! names, versions (and storage version), scope, status subresource and
//! printer columns of Istio's published CRDs, so `kubectl get vs` prints
//! what it prints on an Istio cluster.
//!
//! Their `spec` schemas are structural, generated from the api types
//! (`api::schema`): the API server prunes and refuses unknown fields as on
//! an Istio cluster (`kubectl apply` of a misspelled field fails, naming
//! it); the validating webhook checks the rest with `trellis validate`'s
//! rules, as istiod's webhook does on top of Istio's schemas. `status` is
//! Istio's `IstioStatus`, open to fields added later as Istio's is.

use api::Kind;
use serde_json::{Value, json};

/// Short names and printer columns, per kind, as Istio publishes them.
struct Extra {
    kind: Kind,
    short_names: &'static [&'static str],
    /// (name, jsonPath, description); "Age" is spelled out where Istio has it.
    columns: &'static [(&'static str, &'static str, &'static str)],
    /// Whether `spec` is required.
    spec_required: bool,
}

const AGE: (&str, &str, &str) = (
    "Age",
    ".metadata.creationTimestamp",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

const EXTRAS: &[Extra] = &[
    Extra {
        kind: Kind::VirtualService,
        short_names: &["vs"],
        columns: &[
            (
                "Gateways",
                ".spec.gateways",
                "The names of gateways and sidecars that should apply these routes",
            ),
            (
                "Hosts",
                ".spec.hosts",
                "The destination hosts to which traffic is being sent",
            ),
            AGE,
        ],
        spec_required: false,
    },
    Extra {
        kind: Kind::DestinationRule,
        short_names: &["dr"],
        columns: &[
            (
                "Host",
                ".spec.host",
                "The name of a service from the service registry",
            ),
            AGE,
        ],
        spec_required: false,
    },
    Extra {
        kind: Kind::Gateway,
        short_names: &["gw"],
        columns: &[],
        spec_required: false,
    },
    Extra {
        kind: Kind::ServiceEntry,
        short_names: &["se"],
        columns: &[
            (
                "Hosts",
                ".spec.hosts",
                "The hosts associated with the ServiceEntry",
            ),
            (
                "Location",
                ".spec.location",
                "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)",
            ),
            (
                "Resolution",
                ".spec.resolution",
                "Service resolution mode for the hosts (NONE, STATIC, or DNS)",
            ),
            AGE,
        ],
        spec_required: true,
    },
    Extra {
        kind: Kind::Sidecar,
        short_names: &[],
        columns: &[],
        spec_required: false,
    },
    Extra {
        kind: Kind::WorkloadEntry,
        short_names: &["we"],
        columns: &[
            AGE,
            (
                "Address",
                ".spec.address",
                "Address associated with the network endpoint.",
            ),
        ],
        spec_required: true,
    },
    Extra {
        kind: Kind::WorkloadGroup,
        short_names: &["wg"],
        columns: &[AGE],
        spec_required: true,
    },
    Extra {
        kind: Kind::PeerAuthentication,
        short_names: &["pa"],
        columns: &[
            (
                "Mode",
                ".spec.mtls.mode",
                "Defines the mTLS mode used for peer authentication.",
            ),
            AGE,
        ],
        spec_required: false,
    },
    Extra {
        kind: Kind::RequestAuthentication,
        short_names: &["ra"],
        columns: &[],
        spec_required: false,
    },
    Extra {
        kind: Kind::AuthorizationPolicy,
        short_names: &["ap"],
        columns: &[("Action", ".spec.action", "The operation to take."), AGE],
        spec_required: false,
    },
    Extra {
        kind: Kind::Telemetry,
        short_names: &["telemetry"],
        columns: &[AGE],
        spec_required: false,
    },
];

/// The storage version of a group's kinds, as Istio stores them (Telemetry
/// is still stored as v1alpha1).
fn storage_version(group: &str) -> &'static str {
    match group {
        "telemetry.istio.io" => "v1alpha1",
        _ => "v1",
    }
}

/// Istio's `IstioStatus` (istio.meta.v1alpha1): conditions, the observed
/// generation and the analyzers' messages; other fields are kept.
fn status_schema() -> Value {
    let int_or_string = json!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": true,
    });
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                "lastProbeTime": time,
                "lastTransitionTime": time,
                "message": string,
                "observedGeneration": int_or_string,
                "reason": string,
                "status": string,
                "type": string,
            }}},
            "observedGeneration": int_or_string,
            "validationMessages": {"type": "array", "items": {"type": "object", "properties": {
                "documentationUrl": string,
                "level": {"type": "string", "enum": ["UNKNOWN", "ERROR", "WARNING", "INFO"]},
                "type": {"type": "object", "properties": {"code": string, "name": string}},
            }}},
        },
    })
}

/// One CRD per Istio kind Trellis serves, in `Kind::ALL`'s order, then
/// EnvoyFilter's (read for the rate limits it translates).
pub fn crds(labels: &Value) -> Vec<Value> {
    Kind::ALL
        .iter()
        .filter(|k| k.is_istio())
        .map(|kind| crd(*kind, labels))
        .chain([super::envoy_filter_crd::crd(labels, status_schema())])
        .collect()
}

fn crd(kind: Kind, labels: &Value) -> Value {
    let group = kind.api_group();
    let extra = EXTRAS.iter().find(|e| e.kind == kind);
    let short_names: Vec<&str> = extra.map(|e| e.short_names.to_vec()).unwrap_or_default();
    let columns: Vec<Value> = extra
        .map(|e| e.columns)
        .unwrap_or_default()
        .iter()
        .map(|(name, path, description)| {
            json!({
                "name": name,
                "jsonPath": path,
                "description": description,
                "type": if *name == "Age" { "date" } else { "string" },
            })
        })
        .collect();
    let spec = api::schema::spec_schema(kind)
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let mut schema = json!({
        "type": "object",
        "properties": {"spec": spec, "status": status_schema()},
    });
    if extra.is_some_and(|e| e.spec_required) {
        schema["required"] = json!(["spec"]);
    }
    let storage = storage_version(group);
    // Istio lists v1 first, then the older versions in order.
    let mut versions: Vec<String> = kind
        .api_versions()
        .iter()
        .filter_map(|v| v.rsplit_once('/').map(|(_, v)| v.to_string()))
        .collect();
    versions.sort_by_key(|v| (v != "v1", v.clone()));
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut version = json!({
                "name": v,
                "served": true,
                "storage": v == storage,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": schema},
            });
            if !columns.is_empty() {
                version["additionalPrinterColumns"] = json!(columns);
            }
            version
        })
        .collect();
    let singular = kind.as_str().to_ascii_lowercase();
    let category = group.replace('.', "-");
    let mut names = json!({
        "kind": kind.as_str(),
        "listKind": format!("{}List", kind.as_str()),
        "plural": kind.plural(),
        "singular": singular,
        "categories": ["istio-io", category],
    });
    if !short_names.is_empty() {
        names["shortNames"] = json!(short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{group}", kind.plural()),
            "labels": labels,
            // Deleting a CRD deletes every object of its kind: Helm keeps
            // them on `helm uninstall`, as Istio's chart does.
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": versions,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Helm chart renders the CRDs from this file; it must say what
    /// `manifest generate` says. To refresh it: `TRELLIS_BLESS=1 cargo test -p cli chart_crds`.
    #[test]
    fn chart_crds_are_the_generated_ones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../manifests/charts/trellis/files/crds.json"
        );
        let mut ours = crds(&json!({}));
        for crd in &mut ours {
            crd["metadata"].as_object_mut().unwrap().remove("labels");
        }
        if std::env::var_os("TRELLIS_BLESS").is_some() {
            std::fs::write(path, serde_json::to_string_pretty(&ours).unwrap() + "\n").unwrap();
        }
        let chart: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            chart,
            Value::Array(ours),
            "{path} is stale: TRELLIS_BLESS=1 cargo test -p cli chart_crds"
        );
    }

    #[test]
    fn every_istio_kind_has_a_crd() {
        let crds = crds(&json!({}));
        assert_eq!(crds.len(), 12);
        let vs = crds
            .iter()
            .find(|c| c["metadata"]["name"] == "virtualservices.networking.istio.io")
            .unwrap();
        let versions: Vec<&str> = vs["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v1", "v1alpha3", "v1beta1"]);
        assert_eq!(vs["spec"]["names"]["shortNames"], json!(["vs"]));
        let telemetry = crds
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == "Telemetry")
            .unwrap();
        let stored: Vec<&str> = telemetry["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(stored, ["v1alpha1"]);
    }
}
