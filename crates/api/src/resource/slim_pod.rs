//! A Pod as the mesh reads it: how the control plane keeps pods in memory.
//!
//! k8s-openapi's `Pod` is mostly inline `Option`s: 2,176 bytes for the pod
//! and 2,120 for each container however little they say, so a mesh of
//! 11,000 pods kept whole held 74 MiB. The registry reads a few fields of
//! them ([`SlimPod`] keeps those), and the rest of the object stays where it
//! was stored (the store's file, the API server).
//!
//! The pods of one ReplicaSet have the same labels, read annotations,
//! controller and containers: [`SlimPod::share`] makes a pod hold the copies of a like pod,
//! so that 10,000 pods of 1,000 Deployments hold ~1,000 of each (a label map
//! is a B-tree node of ~540 bytes however few labels it has).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The annotations of a pod Trellis reads; a slim pod keeps these alone
/// (others, `kubectl.kubernetes.io/last-applied-configuration` say, can be
/// kilobytes each).
pub const READ_ANNOTATIONS: &[&str] = &[
    // Injected: the pod has a sidecar.
    "sidecar.istio.io/status",
    // `gateway`: the pod is a gateway proxy.
    "inject.istio.io/templates",
    // The Deployment `trellis up` planned the pod from.
    "trellis.io/workload",
    // Where `trellis up`'s proxy serves its metrics (the dashboard).
    "proxy.trellis.io/metrics",
];

/// What the mesh reads of a Pod: its name, labels, the annotations in
/// [`READ_ANNOTATIONS`], its controller, service account, IP and container
/// ports. Made only from a Pod that parsed and validated ([`SlimPod::of`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SlimPod {
    pub name: String,
    pub namespace: Option<String>,
    /// Shared with the registry's workload of this pod, and with like pods.
    pub labels: Arc<BTreeMap<String, String>>,
    pub annotations: Arc<BTreeMap<String, String>>,
    /// The owner reference with `controller: true` (a ReplicaSet's name says
    /// the Deployment's); shared with the other pods of that controller.
    pub controller: Option<Arc<OwnerReference>>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
    /// `status.podIP`: none until the pod is scheduled and started.
    pub ip: Option<String>,
    /// Each container's name and ports (name, number), in order; shared
    /// with like pods.
    pub containers: Arc<[SlimContainer]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlimContainer {
    pub name: String,
    pub ports: Vec<(Option<String>, i32)>,
}

impl SlimPod {
    pub fn of(pod: &Pod) -> SlimPod {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        SlimPod {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            labels: Arc::new(meta.labels.clone().unwrap_or_default()),
            annotations: Arc::new(
                meta.annotations
                    .iter()
                    .flatten()
                    .filter(|(k, _)| READ_ANNOTATIONS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            controller: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| Arc::new(o.clone())),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            containers: spec
                .into_iter()
                .flat_map(|s| &s.containers)
                .map(|c| SlimContainer {
                    name: c.name.clone(),
                    ports: c
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.clone(), p.container_port))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Holds `like`'s labels, annotations, controller and containers where they equal
    /// this pod's, dropping its own copies: call it with a pod of the same
    /// ReplicaSet (the pod next to it by name, say). What the pod says is
    /// unchanged.
    pub fn share(&mut self, like: &SlimPod) {
        fn take<T: PartialEq + ?Sized>(mine: &mut Arc<T>, like: &Arc<T>) {
            if !Arc::ptr_eq(mine, like) && **mine == **like {
                *mine = like.clone();
            }
        }
        take(&mut self.labels, &like.labels);
        take(&mut self.annotations, &like.annotations);
        take(&mut self.containers, &like.containers);
        if let (Some(mine), Some(like)) = (&mut self.controller, &like.controller) {
            take(mine, like);
        }
    }

    /// The container ports of every container, in order: (name, number).
    pub fn ports(&self) -> impl Iterator<Item = (Option<&str>, i32)> {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter().map(|(n, p)| (n.as_deref(), *p)))
    }

    /// The Pod holding exactly what this one keeps: what it is shown and
    /// serialised as. Parsed back, it slims to this pod again.
    pub fn to_pod(&self) -> Pod {
        let map = |m: &Arc<BTreeMap<String, String>>| (!m.is_empty()).then(|| (**m).clone());
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: self.namespace.clone(),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                owner_references: self.controller.as_ref().map(|o| vec![(**o).clone()]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: self.service_account.clone(),
                containers: self
                    .containers
                    .iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        ports: (!c.ports.is_empty()).then(|| {
                            c.ports
                                .iter()
                                .map(|(name, port)| ContainerPort {
                                    name: name.clone(),
                                    container_port: *port,
                                    ..Default::default()
                                })
                                .collect()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: self.ip.as_ref().map(|ip| PodStatus {
                pod_ip: Some(ip.clone()),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-7f9c8d-abcde
  namespace: shop
  labels: {app: reviews, version: v1}
  annotations:
    sidecar.istio.io/status: '{"containers":["istio-proxy"]}'
    kubectl.kubernetes.io/last-applied-configuration: '{"a":"very long text"}'
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7f9c8d, uid: u1, controller: true}
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: reviews:v1
    env: [{name: A, value: b}]
    ports: [{containerPort: 9080, name: http}]
  - name: helper
    image: helper
status: {podIP: 10.0.0.5, phase: Running}
"#;

    fn pod() -> Resource {
        crate::parse("pod.yaml", POD).unwrap().remove(0)
    }

    #[test]
    fn keeps_what_the_mesh_reads_and_only_that() {
        let Resource::SlimPod(slim) = pod().slim() else {
            panic!("a Pod slims to a SlimPod")
        };
        assert_eq!(slim.name, "reviews-v1-7f9c8d-abcde");
        assert_eq!(slim.namespace.as_deref(), Some("shop"));
        assert_eq!(slim.labels.len(), 2);
        assert_eq!(
            slim.annotations.keys().collect::<Vec<_>>(),
            ["sidecar.istio.io/status"]
        );
        assert_eq!(
            slim.controller.as_ref().map(|o| o.name.as_str()),
            Some("reviews-v1-7f9c8d")
        );
        assert_eq!(slim.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(slim.ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(slim.ports().collect::<Vec<_>>(), [(Some("http"), 9080)]);
        assert_eq!(slim.containers.len(), 2);
    }

    #[test]
    fn reads_back_as_the_pod_it_keeps() {
        let slim = pod().slim();
        let back = crate::parse("back.yaml", &slim.to_yaml())
            .unwrap()
            .remove(0);
        assert!(matches!(back, Resource::Pod(_)));
        assert_eq!(back.slim(), slim);
        assert_eq!(slim.kind(), crate::Kind::Pod);
        assert_eq!(slim.name(), "reviews-v1-7f9c8d-abcde");
        assert_eq!(slim.namespace(), Some("shop"));
    }

    /// `share` takes a like pod's copies of what is equal, keeps its own of
    /// what is not, and changes nothing the pod says.
    #[test]
    fn shares_what_a_like_pod_has_alike() {
        let Resource::SlimPod(like) = pod().slim() else {
            panic!("a Pod slims to a SlimPod")
        };
        let mut other = like.clone();
        other.labels = Arc::new((*like.labels).clone());
        other.containers = like.containers.iter().cloned().collect();
        let mut v2 = other.clone();
        Arc::make_mut(&mut v2.labels).insert("version".into(), "v2".into());
        let before = (other.clone(), v2.clone());
        other.share(&like);
        v2.share(&like);
        assert!(Arc::ptr_eq(&other.labels, &like.labels));
        assert!(Arc::ptr_eq(&other.containers, &like.containers));
        assert!(!Arc::ptr_eq(&v2.labels, &like.labels));
        assert!(Arc::ptr_eq(&v2.containers, &like.containers));
        assert_eq!((other, v2), before);
    }

    /// What keeps 11,000 pods small: the slim form is a small part of the
    /// whole, and the resource holding it is not the size of a Pod, nor of
    /// the largest other kind (a WorkloadGroup is 608 bytes inline).
    #[test]
    fn is_a_fraction_of_a_pod() {
        assert!(size_of::<SlimPod>() < 256, "{}", size_of::<SlimPod>());
        assert!(size_of::<Resource>() <= 240, "{}", size_of::<Resource>());
    }
}
