//! What will run: a workload per Pod, and per Deployment (the pods its
//! template creates, as Istio's analyzers see them once scheduled), with
//! whether they carry a sidecar by `trellis up`'s injection rule.

use std::collections::BTreeMap;

use api::Resource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};

use super::names::namespace_of;

/// A set of pods with the same labels: one Pod, or the pods a Deployment's
/// template will create (Istio analyses pods; files usually hold Deployments).
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Container ports by name, to resolve a Service's named targetPort.
    pub ports: Vec<(Option<String>, i32)>,
    /// Whether the pods run with a sidecar (or are a gateway proxy themselves).
    pub in_mesh: bool,
    /// Described by the input rather than implied (the built-in ingress gateway).
    pub from_input: bool,
}

impl Workload {
    /// The container port a Service's targetPort names on this workload.
    pub fn target_port(&self, target: &str) -> Option<i32> {
        self.ports
            .iter()
            .find(|(n, _)| n.as_deref() == Some(target))
            .map(|(_, p)| *p)
    }
}

impl Workload {
    /// The pods a Deployment will run; `None` when scaled to zero.
    pub fn from_deployment(
        r: &Resource,
        d: &Deployment,
        namespace: Option<&Namespace>,
    ) -> Option<Workload> {
        let spec = d.spec.clone().unwrap_or_default();
        if spec.replicas == Some(0) {
            return None;
        }
        let meta = spec.template.metadata.unwrap_or_default();
        let pod = spec.template.spec.unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        let annotations = meta.annotations.unwrap_or_default();
        let in_mesh = injection_enabled(namespace, &labels, &annotations) || is_gateway_pod(&pod);
        Some(Workload::new(r, labels, &pod, in_mesh))
    }

    pub fn from_pod(r: &Resource, p: &Pod) -> Workload {
        let pod = p.spec.clone().unwrap_or_default();
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let in_mesh = pod_has_proxy(r, &pod);
        Workload::new(r, labels, &pod, in_mesh)
    }

    fn new(
        r: &Resource,
        labels: BTreeMap<String, String>,
        pod: &PodSpec,
        in_mesh: bool,
    ) -> Workload {
        Workload {
            name: r.name().to_string(),
            namespace: namespace_of(r).to_string(),
            labels,
            service_account: pod
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            ports: pod
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.clone(), p.container_port))
                .collect(),
            in_mesh,
            from_input: true,
        }
    }
}

/// `trellis up`'s rule for Deployments: a sidecar unless the pod template
/// (label or annotation `sidecar.istio.io/inject: "false"`) or its namespace
/// (`istio-injection=disabled`) opts out.
fn injection_enabled(
    namespace: Option<&Namespace>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    !pod_opts_out(labels, annotations) && !namespace.is_some_and(injection_disabled_label)
}

pub fn pod_opts_out(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    // The label wins over the annotation, as in Istio's injector.
    labels
        .get(INJECT_KEY)
        .or_else(|| annotations.get(INJECT_KEY))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

const INJECT_KEY: &str = "sidecar.istio.io/inject";

pub fn injection_disabled_label(n: &Namespace) -> bool {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("istio-injection"))
        .is_some_and(|v| v == "disabled")
}

/// A pod runs a proxy if it has Istio's `istio-proxy` container or carries
/// the injector's status annotation (which `trellis up` writes on its pods).
pub fn pod_has_proxy(r: &Resource, pod: &PodSpec) -> bool {
    is_gateway_pod(pod) || r.annotations().contains_key("sidecar.istio.io/status")
}

fn is_gateway_pod(pod: &PodSpec) -> bool {
    pod.containers
        .iter()
        .any(|c| c.name == "istio-proxy" && c.image.as_deref().is_some_and(|i| !i.is_empty()))
}
