//! From a profile, IstioOperator files and `--set` overrides to the objects
//! an install consists of, with a warning for every setting given that
//! Trellis does not act on.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use api::operator::IstioOperatorSpec;
use serde_json::{Map, Value, json};

use super::profile::{self, Operator};
use super::{INSTALL_LABEL, control_plane, crds, gateway};

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// IstioOperator files (`-f`), later ones over earlier ones.
    pub files: Vec<PathBuf>,
    /// `--set path=value`, in order, over the files.
    pub sets: Vec<String>,
    /// `--profile`; else `--set profile=`; else the files' `spec.profile`; else default.
    pub profile: Option<String>,
}

/// The objects of an install, in the order they are applied.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub objects: Vec<Value>,
    /// One line per setting given that Trellis does not act on.
    pub warnings: Vec<String>,
    /// The control plane's namespace.
    pub namespace: String,
    /// The owning IstioOperator's name (the install label's value).
    pub owner: String,
    pub profile: String,
}

impl Manifest {
    /// Multi-document YAML, as `kubectl apply -f` reads it.
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(object)?);
        }
        Ok(out)
    }
}

/// MeshConfig fields Trellis acts on (trellisd, the injector or the
/// proxies); any other is written to the `istio` ConfigMap but warned about.
const MESH_CONFIG_FIELDS: &[&str] = &[
    "accessLogFile",
    "accessLogEncoding",
    "enableAutoMtls",
    "rootNamespace",
    "trustDomain",
    "outboundTrafficPolicy.mode",
    "pathNormalization.normalization",
    "defaultConfig.concurrency",
    "defaultConfig.proxyMetadata",
];

pub fn generate(request: &Request) -> Result<Manifest> {
    let mut operators = Vec::new();
    for file in &request.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        operators.push(profile::parse_operator(&text, &file.display().to_string())?);
    }
    generate_from(&operators, &request.sets, request.profile.as_deref())
}

/// As [`generate`], from IstioOperators already read.
pub fn generate_from(
    operators: &[Operator],
    sets: &[String],
    profile_flag: Option<&str>,
) -> Result<Manifest> {
    // The profile first: every other layer goes over it.
    let mut user = Value::Object(Map::new());
    for op in operators {
        profile::merge(&mut user, op.spec.clone());
    }
    let set_profile = sets.iter().rev().find_map(|s| {
        let (k, v) = s.split_once('=')?;
        matches!(k, "profile" | "spec.profile").then(|| v.to_string())
    });
    let profile_name = profile_flag
        .map(str::to_string)
        .or(set_profile)
        .or_else(|| {
            user.get("profile")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".to_string());
    let mut spec = profile::profile(&profile_name)?;
    profile::merge(&mut spec, user);
    for s in sets {
        profile::set(&mut spec, s)?;
    }
    spec["profile"] = Value::String(profile_name.clone());

    let raw_values = spec.get("values").cloned().unwrap_or(json!({}));
    let (typed, unknown) = IstioOperatorSpec::from_value(spec, "spec")
        .map_err(|e| anyhow::anyhow!("IstioOperator {e}"))?;
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|path| format!("{path}: not an install setting Trellis understands; ignored"))
        .collect();
    if let Some(mesh) = &typed.mesh_config {
        for path in leaf_paths(mesh) {
            let known = MESH_CONFIG_FIELDS
                .iter()
                .any(|k| path == *k || path.starts_with(&format!("{k}.")));
            if !known {
                warnings.push(format!(
                    "spec.meshConfig.{path}: written to the istio ConfigMap, but Trellis does not act on it"
                ));
            }
        }
    }

    let owner = operators
        .iter()
        .rev()
        .find_map(|o| o.name.clone())
        .unwrap_or_else(|| "installed-state".to_string());
    let ctx = Context::new(&typed, raw_values, owner.clone())?;
    if ctx.namespace != "istio-system" {
        warnings.push(format!(
            "the control plane's namespace is {}: trellisd reads the istio ConfigMap (MeshConfig) and keeps its Lease in istio-system only",
            ctx.namespace
        ));
    }

    let mut objects = Vec::new();
    if typed.components.base.enabled.unwrap_or(false) {
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ctx.namespace, "labels": ctx.labels("Base", json!({}))},
        }));
        objects.extend(crds::crds(&ctx.labels("Base", json!({}))));
    }
    if typed.components.pilot.enabled.unwrap_or(false) {
        objects.extend(control_plane::objects(&ctx));
    }
    for (kind, list) in [
        (
            gateway::Direction::Ingress,
            &typed.components.ingress_gateways,
        ),
        (
            gateway::Direction::Egress,
            &typed.components.egress_gateways,
        ),
    ] {
        for gw in list.iter().filter(|g| g.enabled.unwrap_or(false)) {
            if gw.name.is_empty() {
                bail!(
                    "a gateway in spec.components.{}Gateways has no name",
                    kind.as_str()
                );
            }
            objects.extend(gateway::objects(&ctx, kind, gw));
        }
    }
    Ok(Manifest {
        objects,
        warnings,
        namespace: ctx.namespace,
        owner,
        profile: profile_name,
    })
}

/// `a.b.c` for every leaf of `map` (empty maps count as leaves).
fn leaf_paths(map: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in map {
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.extend(leaf_paths(m).into_iter().map(|p| format!("{k}.{p}")))
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

/// What every object's rendering needs: the resolved spec and its names.
pub(crate) struct Context<'a> {
    pub spec: &'a IstioOperatorSpec,
    /// `values` as given (the injector's ConfigMap carries them, as Istio's).
    pub raw_values: Value,
    pub namespace: String,
    pub owner: String,
    hub: String,
    tag: String,
    pub pull_policy: String,
}

impl<'a> Context<'a> {
    fn new(spec: &'a IstioOperatorSpec, raw_values: Value, owner: String) -> Result<Self> {
        let global = &spec.values.global;
        let hub = spec.hub.clone().or_else(|| global.hub.clone());
        let tag = spec.tag.clone().or_else(|| global.tag.clone());
        let (Some(hub), Some(tag)) = (hub, tag) else {
            bail!("values.global.hub and values.global.tag must be set");
        };
        Ok(Context {
            spec,
            raw_values,
            namespace: spec
                .namespace
                .clone()
                .or_else(|| global.istio_namespace.clone())
                .unwrap_or_else(|| "istio-system".to_string()),
            owner,
            hub,
            tag,
            pull_policy: global
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".to_string()),
        })
    }

    /// `<hub>/<name>:<tag>`, or `name` itself when it is a full reference.
    pub fn image(&self, name: &str) -> String {
        if name.contains('/') || name.contains(':') {
            name.to_string()
        } else {
            format!("{}/{name}:{}", self.hub, self.tag)
        }
    }

    /// `extra` plus the labels every installed object carries.
    pub fn labels(&self, component: &str, extra: Value) -> Value {
        let mut labels = match extra {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        labels.insert(INSTALL_LABEL.into(), json!(self.owner));
        labels.insert("operator.istio.io/component".into(), json!(component));
        Value::Object(labels)
    }

    pub fn pdb_enabled(&self) -> bool {
        self.spec
            .values
            .global
            .default_pod_disruption_budget
            .enabled
            .unwrap_or(true)
    }
}

/// A HorizontalPodAutoscaler (autoscaling/v2) for Deployment `name`.
pub(crate) fn hpa(
    ctx: &Context,
    name: &str,
    labels: Value,
    min: u32,
    max: u32,
    metrics: Value,
) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min,
            "maxReplicas": max,
            "metrics": metrics,
        },
    })
}

/// The CPU-utilization metric Istio's HPAs use.
pub(crate) fn cpu_metric(utilization: u32) -> Value {
    json!([{
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": utilization}},
    }])
}

/// A PodDisruptionBudget over pods labelled `selector`: `minAvailable: 1`
/// unless the component's k8s.podDisruptionBudget says otherwise.
pub(crate) fn pdb(
    ctx: &Context,
    name: &str,
    labels: Value,
    selector: Value,
    spec: Option<&api::operator::PodDisruptionBudgetSpec>,
) -> Value {
    let mut body = json!({"selector": {"matchLabels": selector}});
    match spec {
        Some(s) if s.min_available.is_some() || s.max_unavailable.is_some() => {
            if let Some(v) = &s.min_available {
                body["minAvailable"] = v.clone();
            }
            if let Some(v) = &s.max_unavailable {
                body["maxUnavailable"] = v.clone();
            }
        }
        _ => body["minAvailable"] = json!(1),
    }
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels},
        "spec": body,
    })
}

/// The hardened container security context of Istio's control plane and gateways.
pub(crate) fn restricted_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 1337,
        "runAsGroup": 1337,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// Environment variables from the pod's own fields.
pub(crate) fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(text: &str) -> Vec<Operator> {
        vec![profile::parse_operator(text, "seed.yaml").unwrap()]
    }

    fn find<'m>(m: &'m Manifest, kind: &str, name: &str) -> Option<&'m Value> {
        m.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    #[test]
    fn default_profile_objects() {
        let m = generate_from(&[], &[], None).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let kinds: Vec<String> = m
            .objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "Namespace/istio-system",
            "CustomResourceDefinition/virtualservices.networking.istio.io",
            "ServiceAccount/istiod",
            "ClusterRole/istiod-clusterrole-istio-system",
            "ClusterRoleBinding/istiod-clusterrole-istio-system",
            "Role/istiod",
            "RoleBinding/istiod",
            "ConfigMap/istio",
            "ConfigMap/istio-sidecar-injector",
            "Deployment/istiod",
            "Service/istiod",
            "MutatingWebhookConfiguration/istio-sidecar-injector",
            "ValidatingWebhookConfiguration/istio-validator-istio-system",
            "PodDisruptionBudget/istiod",
            "HorizontalPodAutoscaler/istiod",
            "Deployment/istio-ingressgateway",
            "Service/istio-ingressgateway",
        ] {
            assert!(
                kinds.contains(&want.to_string()),
                "{want} missing from {kinds:?}"
            );
        }
        assert!(
            !kinds.iter().any(|k| k.contains("egressgateway")),
            "{kinds:?}"
        );
        let svc = find(&m, "Service", "istio-ingressgateway").unwrap();
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(
            svc["spec"]["selector"],
            json!({"app": "istio-ingressgateway", "istio": "ingressgateway"})
        );
        // Autoscaled: the HPA owns the replica count.
        assert!(
            find(&m, "Deployment", "istiod").unwrap()["spec"]
                .get("replicas")
                .is_none()
        );
    }

    #[test]
    fn the_demo_seed() {
        let m = generate_from(
            &seed(include_str!(
                "../../../../tests/fixtures/install/002-00-IstioOperator-istio-control-plane.yaml"
            )),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(m.profile, "demo");
        assert_eq!(m.owner, "istio-control-plane");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(find(&m, "Deployment", "istio-egressgateway").is_some());
        assert!(find(&m, "HorizontalPodAutoscaler", "istiod").is_none());
        assert_eq!(
            find(&m, "Deployment", "istiod").unwrap()["spec"]["replicas"],
            json!(1)
        );
        let values: Value = serde_json::from_str(
            find(&m, "ConfigMap", "istio-sidecar-injector").unwrap()["data"]["values"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            values["global"]["proxy"]["resources"],
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}})
        );
        let mesh: Value = serde_yaml_ng::from_str(
            find(&m, "ConfigMap", "istio").unwrap()["data"]["mesh"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(mesh["accessLogFile"], "/dev/stdout");
        // demo's five ingress ports survive the seed's `enabled: true`.
        let ports = &find(&m, "Service", "istio-ingressgateway").unwrap()["spec"]["ports"];
        assert_eq!(ports.as_array().unwrap().len(), 5);
    }

    #[test]
    fn pilot_resources_and_hpa_target_from_the_seeds() {
        let m = generate_from(
            &seed(include_str!(
                "../../../../tests/fixtures/install/002-13-IstioOperator-x.yaml"
            )),
            &[],
            None,
        )
        .unwrap();
        let container =
            &find(&m, "Deployment", "istiod").unwrap()["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["resources"],
            json!({"requests": {"cpu": "500m", "memory": "2048Mi"}, "limits": {"cpu": "1000m", "memory": "4096Mi"}})
        );
        let m = generate_from(
            &seed(include_str!(
                "../../../../tests/fixtures/install/002-16-IstioOperator-x.yaml"
            )),
            &["values.pilot.cpu.targetAverageUtilization=65".to_string()],
            None,
        )
        .unwrap();
        let hpa = find(&m, "HorizontalPodAutoscaler", "istiod").unwrap();
        assert_eq!(hpa["spec"]["metrics"], cpu_metric(65));
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["maxReplicas"], 5);
        let m = generate_from(
            &seed(include_str!(
                "../../../../tests/fixtures/install/002-15-IstioOperator-x.yaml"
            )),
            &[],
            None,
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let mesh: Value = serde_yaml_ng::from_str(
            find(&m, "ConfigMap", "istio").unwrap()["data"]["mesh"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(mesh["defaultConfig"]["concurrency"], 2);
        assert_eq!(
            mesh["defaultConfig"]["proxyMetadata"]["ISTIO_META_HTTP10"],
            "1"
        );
    }

    #[test]
    fn k8s_settings_override_values() {
        let m = generate_from(
            &seed(
                "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    pilot:\n      k8s:\n        replicaCount: 3\n        hpaSpec: {minReplicas: 2, maxReplicas: 7}\n    ingressGateways:\n    - name: istio-ingressgateway\n      enabled: true\n      k8s:\n        service: {type: NodePort}\n        hpaSpec: {maxReplicas: 9}\n",
            ),
            &["values.global.hub=registry.example/mesh".into(), "values.global.tag=1.2.3".into()],
            None,
        )
        .unwrap();
        let istiod = find(&m, "Deployment", "istiod").unwrap();
        assert_eq!(istiod["spec"]["replicas"], 3);
        assert_eq!(
            istiod["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/mesh/trellisd:1.2.3"
        );
        let hpa = find(&m, "HorizontalPodAutoscaler", "istiod").unwrap();
        assert_eq!(
            (
                hpa["spec"]["minReplicas"].clone(),
                hpa["spec"]["maxReplicas"].clone()
            ),
            (json!(2), json!(7))
        );
        let gw_hpa = find(&m, "HorizontalPodAutoscaler", "istio-ingressgateway").unwrap();
        assert_eq!(gw_hpa["spec"]["maxReplicas"], 9);
        assert_eq!(
            find(&m, "Service", "istio-ingressgateway").unwrap()["spec"]["type"],
            "NodePort"
        );
    }

    #[test]
    fn settings_not_understood_are_warned_by_path() {
        let m = generate_from(
            &seed(
                "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    cni: {enabled: true}\n    pilot:\n      k8s:\n        strategy: {rollingUpdate: {maxSurge: 1}}\n  meshConfig:\n    enableTracing: true\n    accessLogFile: /dev/stdout\n  values:\n    kiali: {enabled: true}\n",
            ),
            &["values.global.logAsJson=true".into()],
            None,
        )
        .unwrap();
        let w = m.warnings.join("\n");
        for path in [
            "spec.components.cni",
            "spec.components.pilot.k8s.strategy",
            "spec.values.kiali",
            "spec.values.global.logAsJson",
            "spec.meshConfig.enableTracing",
        ] {
            assert!(w.contains(path), "{path} not in\n{w}");
        }
        assert!(!w.contains("accessLogFile"), "{w}");
    }

    #[test]
    fn profiles_as_istioctl() {
        let names = |p: &str| -> Vec<String> {
            generate_from(&[], &[], Some(p))
                .unwrap()
                .objects
                .iter()
                .filter(|o| o["kind"] != "CustomResourceDefinition")
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(names("empty").is_empty());
        let minimal = names("minimal");
        assert!(minimal.contains(&"istiod".to_string()));
        assert!(!minimal.iter().any(|n| n.contains("gateway")));
        let demo = names("demo");
        assert!(demo.contains(&"istio-egressgateway".to_string()));
        assert!(demo.contains(&"istio-ingressgateway".to_string()));
        // `--set profile=` and `--profile` choose the same way.
        let by_set = generate_from(&[], &["profile=minimal".into()], None).unwrap();
        assert_eq!(by_set.profile, "minimal");
        assert!(generate_from(&[], &[], Some("production")).is_err());
    }
}
