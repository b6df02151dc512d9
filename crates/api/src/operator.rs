//! Istio's `IstioOperator` (install.istio.io/v1alpha1): the install
//! settings `trellis install -f` and `trellis manifest generate` take, in
//! Istio's field names.
//!
//! Only the fields Trellis acts on are typed here. Everything else a file
//! may carry (Istio has hundreds of install options) is collected by
//! [`IstioOperatorSpec::from_value`] as a field path, so that the caller can
//! say which ones it ignores: an option a user wrote is never dropped
//! without a word. Kubernetes-shaped parts (resources, env, service ports,
//! HPA metrics) stay JSON values: they are written into the manifests as
//! given, and the API server checks them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The `spec` of an IstioOperator.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct IstioOperatorSpec {
    /// istioctl's profile: default, demo, minimal, empty.
    pub profile: Option<String>,
    /// Image registry and tag (the same as `values.global.hub`/`tag`).
    pub hub: Option<String>,
    pub tag: Option<String>,
    /// The control plane's namespace (Istio: istio-system).
    pub namespace: Option<String>,
    pub components: Components,
    /// MeshConfig, written as it is into the `istio` ConfigMap.
    pub mesh_config: Option<serde_json::Map<String, Value>>,
    pub values: Values,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Components {
    /// The CRDs and the control plane's namespace.
    pub base: Component,
    /// trellisd (Istio: istiod), with its webhooks, RBAC and config maps.
    pub pilot: Component,
    pub ingress_gateways: Vec<GatewayComponent>,
    pub egress_gateways: Vec<GatewayComponent>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Component {
    pub enabled: Option<bool>,
    pub k8s: K8s,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayComponent {
    /// Required: a gateway is known by its name.
    pub name: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Where the gateway runs (default: the control plane's namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels of the gateway's pods and the selector of its Service.
    #[serde(default)]
    pub label: BTreeMap<String, String>,
    #[serde(default)]
    pub k8s: K8s,
}

/// Istio's `KubernetesResourcesSpec`, the part Trellis applies.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct K8s {
    /// A container's `resources` (requests, limits).
    pub resources: Option<Value>,
    pub replica_count: Option<u32>,
    pub hpa_spec: Option<HpaSpec>,
    /// Extra container environment (`[{name, value}]`).
    pub env: Option<Vec<Value>>,
    pub pod_annotations: BTreeMap<String, String>,
    pub service_annotations: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub service: Option<ServiceSpec>,
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct HpaSpec {
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    /// autoscaling/v2 `metrics`.
    pub metrics: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Service ports (`[{name, port, targetPort}]`).
    pub ports: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    pub min_available: Option<Value>,
    pub max_unavailable: Option<Value>,
}

/// `values`: the Helm values of Istio's charts, the part Trellis uses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Values {
    pub global: Global,
    pub pilot: PilotValues,
    /// Per gateway name (`istio-ingressgateway`, ...).
    pub gateways: BTreeMap<String, GatewayValues>,
    pub sidecar_injector_webhook: SidecarInjectorWebhook,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Global {
    pub hub: Option<String>,
    pub tag: Option<String>,
    pub image_pull_policy: Option<String>,
    pub istio_namespace: Option<String>,
    pub proxy: ProxyValues,
    pub default_pod_disruption_budget: Enabled,
    /// Install the validating webhook.
    pub config_validation: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Enabled {
    pub enabled: Option<bool>,
}

/// `values.global.proxy`: the injected sidecars' (and gateways') settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyValues {
    /// The proxy image's name under the hub (Istio: proxyv2).
    pub image: Option<String>,
    pub resources: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PilotValues {
    pub image: Option<String>,
    pub replica_count: Option<u32>,
    pub autoscale_enabled: Option<bool>,
    pub autoscale_min: Option<u32>,
    pub autoscale_max: Option<u32>,
    pub cpu: Utilization,
    pub resources: Option<Value>,
    /// Extra environment, as a map (Istio's `values.pilot.env`).
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Utilization {
    pub target_average_utilization: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewayValues {
    pub autoscale_enabled: Option<bool>,
    pub autoscale_min: Option<u32>,
    pub autoscale_max: Option<u32>,
    pub cpu: Utilization,
    /// The gateway container's `resources`.
    pub resources: Option<Value>,
    /// The Service's type (LoadBalancer for the ingress, ClusterIP for the egress gateway).
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SidecarInjectorWebhook {
    /// The injection webhook's `reinvocationPolicy` (Never or IfNeeded).
    pub reinvocation_policy: Option<String>,
}

/// A spec that does not have the shape Trellis expects, with the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl IstioOperatorSpec {
    /// Reads a spec, returning it with the paths of the fields it does not
    /// know (`values.kiali.enabled`, `components.cni`), sorted by key (a JSON value's maps are).
    /// `prefix` is prepended to every path (e.g. `spec`).
    pub fn from_value(value: Value, prefix: &str) -> Result<(Self, Vec<String>), SpecError> {
        let mut unknown = Vec::new();
        let spec = {
            let mut note = |path: serde_ignored::Path| {
                unknown.push(join(prefix, &field_path(&path)));
            };
            let ignored = serde_ignored::Deserializer::new(value, &mut note);
            serde_path_to_error::deserialize(ignored).map_err(|e| SpecError {
                path: join(prefix, &e.path().to_string()),
                message: e.inner().to_string(),
            })?
        };
        Ok((spec, unknown))
    }
}

/// `components.ingressGateways[0].k8s.strategy`, as the rest of Trellis
/// writes field paths (serde_ignored's own form is `ingressGateways.0.k8s`).
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path == "." || path.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => path.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let (spec, unknown) = IstioOperatorSpec::from_value(
            json!({
                "profile": "demo",
                "components": {"pilot": {"enabled": true, "k8s": {"replicaCount": 2, "strategy": {}}}, "cni": {"enabled": true}},
                "values": {"pilot": {"cpu": {"targetAverageUtilization": 80}}, "kiali": {"enabled": true}}
            }),
            "spec",
        )
        .unwrap();
        assert_eq!(spec.profile.as_deref(), Some("demo"));
        assert_eq!(spec.components.pilot.k8s.replica_count, Some(2));
        assert_eq!(spec.values.pilot.cpu.target_average_utilization, Some(80));
        assert_eq!(
            unknown,
            [
                "spec.components.cni",
                "spec.components.pilot.k8s.strategy",
                "spec.values.kiali"
            ]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = IstioOperatorSpec::from_value(
            json!({"components": {"ingressGateways": [{"name": "gw", "k8s": {"replicaCount": "two"}}]}}),
            "spec",
        )
        .unwrap_err();
        assert_eq!(
            err.path,
            "spec.components.ingressGateways[0].k8s.replicaCount"
        );
    }
}
