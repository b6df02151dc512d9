//! The ingress gateway every Trellis mesh has: `trellis up` starts one in
//! `istio-system` labelled `istio: ingressgateway`, with a Service mapping
//! 80 and 443 to 8080 and 8443, as an Istio install does. No file describes
//! it, yet Gateways select it and policies name its identity, so the
//! analyzers must know it is there.

use std::collections::{BTreeMap, BTreeSet};

use api::Resource;
use k8s_openapi::api::core::v1::{Service as K8sService, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::namespace_of;
use super::workload::Workload;
use crate::mesh::Mesh;

pub const INGRESS_NAMESPACE: &str = "istio-system";
pub const INGRESS_NAME: &str = "istio-ingressgateway";
const INGRESS_LABELS: [(&str, &str); 2] = [("app", INGRESS_NAME), ("istio", "ingressgateway")];
const INGRESS_PORTS: [(&str, i32, i32); 3] = [
    ("status-port", 15021, 15021),
    ("http2", 80, 8080),
    ("https", 443, 8443),
];

/// Adds the built-in ingress gateway (workload, Service, service account)
/// unless the input already describes one under the same name.
pub fn add(
    resources: &[Resource],
    mesh: &mut Mesh,
    workloads: &mut Vec<Workload>,
    service_accounts: &mut BTreeSet<(String, String)>,
) {
    let labels: BTreeMap<String, String> = INGRESS_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let defined = |kind: api::Kind| {
        resources.iter().any(|r| {
            r.kind() == kind && r.name() == INGRESS_NAME && namespace_of(r) == INGRESS_NAMESPACE
        })
    };
    if !defined(api::Kind::Service) {
        let service = K8sService {
            metadata: ObjectMeta {
                name: Some(INGRESS_NAME.into()),
                namespace: Some(INGRESS_NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels.clone()),
                ports: Some(
                    INGRESS_PORTS
                        .iter()
                        .map(|(name, port, target)| ServicePort {
                            name: Some(name.to_string()),
                            port: *port,
                            target_port: Some(IntOrString::Int(*target)),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut mesh.registry).add_k8s_service(&service, &mesh.config);
    }
    if !defined(api::Kind::Deployment)
        && !workloads
            .iter()
            .any(|w| w.namespace == INGRESS_NAMESPACE && w.labels == labels)
    {
        let service_account = format!("{INGRESS_NAME}-service-account");
        service_accounts.insert((INGRESS_NAMESPACE.into(), service_account.clone()));
        workloads.push(Workload {
            name: INGRESS_NAME.into(),
            namespace: INGRESS_NAMESPACE.into(),
            labels,
            service_account,
            ports: INGRESS_PORTS.iter().map(|(_, _, t)| (None, *t)).collect(),
            in_mesh: true,
            from_input: false,
        });
    }
}
