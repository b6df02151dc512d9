//! Pods as a list or watch decodes them: only what the mesh reads of a pod,
//! the rest of each object skipped as it is read.
//!
//! A cluster has thousands of pods, and an injected pod is ~10 KB of JSON
//! (its sidecar's arguments, environment and mounts, managed fields) of
//! which the mesh keeps a few hundred bytes ([`api::SlimPod`]). Decoded as
//! JSON trees, as other kinds are, a list page of 500 such pods held ~15 MB
//! at once, and each pod was copied three more times to be parsed, checked
//! for unknown fields and slimmed; the long-lived pods allocated among that
//! garbage kept its pages resident after the list.

use std::borrow::Cow;
use std::collections::BTreeMap;

use api::{Kind, Resource};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::{ApiResource, NamespaceResourceScope};
use serde::{Deserialize, Deserializer};

use super::{Watchable, Watched};

/// A Pod as the fields [`api::SlimPod::of`] and the validation of a Pod
/// ([`api::validate`]) read, and its `resourceVersion` (the watch resumes
/// from it); a k8s-openapi `Pod` only as it is converted (its inline
/// structs are ~10 KiB with every container, and a page holds 100). A
/// field either of them comes to read must be added here too: test
/// `a_pod_decoded_for_the_mesh_converts_as_the_whole_pod` compares the two
/// on an injected pod.
///
/// Unlike a pod read from a file, one read from the API server is not
/// checked for fields k8s-openapi does not know: the API server has
/// validated it, and a field newer than k8s-openapi must not leave a
/// running pod out of the mesh.
#[derive(Clone, Debug)]
pub(super) struct WatchedPod {
    metadata: ObjectMeta,
    spec: Option<SpecFields>,
    status: Option<StatusFields>,
}

impl<'de> Deserialize<'de> for WatchedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = PodFields::deserialize(d)?;
        let m = p.metadata;
        Ok(WatchedPod {
            metadata: ObjectMeta {
                name: m.name,
                generate_name: m.generate_name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                labels: m.labels,
                annotations: m.annotations,
                owner_references: m.owner_references,
                ..Default::default()
            },
            spec: p.spec,
            status: p.status,
        })
    }
}

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Watchable for WatchedPod {
    fn status(&self) -> Option<&serde_json::Value> {
        None
    }

    fn convert(self, kind: Watched, _: &ApiResource) -> Result<Resource, Vec<String>> {
        debug_assert_eq!(kind, Watched::Kind(Kind::Pod));
        let r = Resource::Pod(Box::new(self.into()));
        let errors = api::validate(&r);
        if !errors.is_empty() {
            return Err(errors.iter().map(ToString::to_string).collect());
        }
        Ok(r.slim())
    }
}

/// What is decoded of a Pod; every other field is skipped unread.
#[derive(Deserialize)]
struct PodFields {
    #[serde(default)]
    metadata: MetaFields,
    spec: Option<SpecFields>,
    status: Option<StatusFields>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    service_account_name: Option<String>,
    containers: Option<Vec<ContainerFields>>,
    init_containers: Option<Vec<ContainerFields>>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerFields {
    name: Option<String>,
    image: Option<String>,
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Clone, Debug, Deserialize)]
struct StatusFields {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

impl From<WatchedPod> for Pod {
    fn from(p: WatchedPod) -> Pod {
        let container = |c: ContainerFields| Container {
            name: c.name.unwrap_or_default(),
            image: c.image,
            ports: c.ports,
            ..Default::default()
        };
        Pod {
            metadata: p.metadata,
            spec: p.spec.map(|s| PodSpec {
                service_account_name: s.service_account_name,
                containers: s.containers.into_iter().flatten().map(container).collect(),
                init_containers: s
                    .init_containers
                    .map(|cs| cs.into_iter().map(container).collect()),
                ..Default::default()
            }),
            status: p.status.map(|s| PodStatus {
                pod_ip: s.pod_ip,
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::DynamicObject;
    use kube::core::{GroupVersionKind, ObjectList};
    use serde_json::{Value, json};
    use sys::CountingAlloc;

    // Counts per thread: the tests beside these do not disturb them.
    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    /// A pod of a ReplicaSet as the API server returns it after Istio's
    /// injection: sidecar and init container, their environment, volumes,
    /// managed fields, status.
    fn injected_pod(name: &str, replica_set: &str) -> Value {
        let env: Vec<Value> = (0..20)
            .map(|i| json!({"name": format!("ISTIO_META_{i}"), "value": format!("value-{i}-{name}")}))
            .collect();
        let proxy = json!({
            "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0",
            "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                     "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
            "env": env,
            "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15},
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 1337, "runAsGroup": 1337},
            "volumeMounts": [{"mountPath": "/var/run/secrets/workload-spiffe-uds", "name": "workload-socket"},
                             {"mountPath": "/etc/istio/proxy", "name": "istio-envoy"},
                             {"mountPath": "/var/run/secrets/tokens", "name": "istio-token"}],
        });
        json!({
            "metadata": {
                "name": name, "namespace": "ns-3", "uid": format!("uid-{name}"),
                "resourceVersion": "4711", "generateName": format!("{replica_set}-"),
                "creationTimestamp": "2026-12-08T00:00:00Z",
                "labels": {"app": "svc-7", "version": "v1", "pod-template-hash": "5d8f7c",
                           "security.istio.io/tlsMode": "istio",
                           "service.istio.io/canonical-name": "svc-7",
                           "service.istio.io/canonical-revision": "v1"},
                "annotations": {
                    "istio.io/rev": "default",
                    "kubectl.kubernetes.io/default-container": "app",
                    "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020",
                    "sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"workload-socket\",\"istio-envoy\",\"istio-token\"],\"revision\":\"default\"}",
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                                     "uid": format!("uid-{replica_set}"), "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:version": {}}},
                                   "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}],
            },
            "spec": {
                "serviceAccountName": "svc-7", "nodeName": "node-1",
                "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28.0",
                                    "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337"]}],
                "containers": [
                    {"name": "app", "image": "registry.example/svc-7:v1",
                     "ports": [{"containerPort": 9080, "name": "http", "protocol": "TCP"}]},
                    proxy,
                ],
                "volumes": [{"name": "workload-socket", "emptyDir": {}},
                            {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
                            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken":
                                {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}],
            },
            "status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "192.168.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    fn pod_resource() -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods")
    }

    /// Through [`super::super::convert`], the path of every other kind.
    fn converted_whole(pod: &Value) -> Result<Resource, Vec<String>> {
        let obj: DynamicObject = serde_json::from_value(pod.clone()).unwrap();
        Watchable::convert(obj, Watched::Kind(Kind::Pod), &pod_resource())
    }

    fn converted_for_the_mesh(pod: &Value) -> Result<Resource, Vec<String>> {
        let obj: WatchedPod = serde_json::from_value(pod.clone()).unwrap();
        obj.convert(Watched::Kind(Kind::Pod), &pod_resource())
    }

    /// What [`WatchedPod`] decodes is all the mesh reads: the pod it makes
    /// and the validation errors it reports are those of the whole pod.
    #[test]
    fn a_pod_decoded_for_the_mesh_converts_as_the_whole_pod() {
        let pod = injected_pod("svc-7-v1-5d8f7c-abcde", "svc-7-v1-5d8f7c");
        let slim = converted_for_the_mesh(&pod).unwrap();
        assert_eq!(Ok(&slim), converted_whole(&pod).as_ref());
        let Resource::SlimPod(p) = &slim else {
            panic!("{slim:?}")
        };
        assert_eq!(p.ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(p.service_account.as_deref(), Some("svc-7"));
        assert!(p.annotations.contains_key("sidecar.istio.io/status"));
        assert_eq!(p.containers[0].ports, [(Some("http".into()), 9080)]);
        assert_eq!(p.containers.len(), 2);
        assert!(p.controller.is_some() && p.labels.len() == 6);
        let decoded: WatchedPod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(
            kube::Resource::meta(&decoded).resource_version.as_deref(),
            Some("4711")
        );

        let mut invalid = pod.clone();
        invalid["spec"]["initContainers"][0]["image"] = Value::Null;
        invalid["spec"]["containers"][1]["ports"][0]["containerPort"] = json!(0);
        invalid["metadata"]["labels"]["app"] = json!("not a label value!");
        let errors = converted_for_the_mesh(&invalid).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(Err(errors), converted_whole(&invalid));
    }

    /// A list page is decoded whole before its first pod is read: decoded
    /// for the mesh, a page of injected pods holds a small part of what it
    /// holds as JSON trees (the path of other kinds), which is more than its
    /// text.
    #[test]
    fn a_page_of_pods_holds_a_small_part_of_its_json_trees() {
        let items: Vec<Value> = (0..100)
            .map(|i| injected_pod(&format!("svc-7-v1-5d8f7c-{i:05}"), "svc-7-v1-5d8f7c"))
            .collect();
        let text = json!({"apiVersion": "v1", "kind": "PodList",
                          "metadata": {"resourceVersion": "4711"}, "items": items})
        .to_string();
        let mut page = None;
        let for_the_mesh = CountingAlloc::peak_in(|| {
            page = Some(serde_json::from_str::<ObjectList<WatchedPod>>(&text).unwrap());
        });
        assert_eq!(page.map(|p| p.items.len()), Some(100));
        let mut trees = None;
        let as_trees = CountingAlloc::peak_in(|| {
            trees = Some(serde_json::from_str::<ObjectList<DynamicObject>>(&text).unwrap());
        });
        assert_eq!(trees.map(|p| p.items.len()), Some(100));
        assert!(
            as_trees.bytes > text.len() && for_the_mesh.bytes * 4 < as_trees.bytes,
            "a page of {} bytes of text held {} bytes decoded for the mesh, {} as JSON trees",
            text.len(),
            for_the_mesh.bytes,
            as_trees.bytes
        );
    }
}
