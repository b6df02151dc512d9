//! Who a connecting proxy is. Its credential proves a namespace and service
//! account; everything else that decides its config — which pod, sidecar or
//! gateway, its labels (which select Gateways, Sidecars and policies), its
//! address — is read from the registry entry of the pod it names, never
//! taken from the node it sends. A claim the registry contradicts about what
//! the proxy is (its kind, its identity) is refused; a stale or made-up
//! description (labels, address) is replaced, and logged.

use model::Mesh;
use model::registry::WorkloadKind;
use wire::pb::{Node, ProxyKind};

/// Why a proxy's claim was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("node.id {id:?} is not <pod>.<namespace> ({expected:?})")]
    Id { id: String, expected: String },
    #[error("no pod {namespace}/{pod} in the mesh")]
    NoPod { namespace: String, pod: String },
    #[error("pod {namespace}/{pod} runs as service account {actual:?}, not {proven:?}")]
    ServiceAccount {
        namespace: String,
        pod: String,
        actual: String,
        proven: String,
    },
    #[error("pod {namespace}/{pod} has no proxy (not injected, not a gateway)")]
    NoProxy { namespace: String, pod: String },
    #[error("pod {namespace}/{pod} is a {actual}, but its proxy claims to be a {claimed}")]
    Kind {
        namespace: String,
        pod: String,
        actual: &'static str,
        claimed: &'static str,
    },
}

fn kind_name(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Sidecar => "sidecar",
        ProxyKind::Gateway => "gateway",
    }
}

/// The node of the proxy of pod `claimed.pod_name` in `claimed.namespace`,
/// as `mesh` knows it, for a proxy whose credential proved `service_account`
/// in that namespace; with the claims the registry overrode (for the log).
pub fn verified(
    mesh: &Mesh,
    claimed: &Node,
    service_account: &str,
) -> Result<(Node, Vec<&'static str>), Refused> {
    let (namespace, pod) = (claimed.namespace.clone(), claimed.pod_name.clone());
    let expected = format!("{pod}.{namespace}");
    if claimed.id != expected {
        return Err(Refused::Id {
            id: claimed.id.clone(),
            expected,
        });
    }
    let w = mesh
        .registry
        .workload(&pod, &namespace)
        .filter(|w| w.kind == WorkloadKind::Pod)
        .ok_or_else(|| Refused::NoPod {
            namespace: namespace.clone(),
            pod: pod.clone(),
        })?;
    if w.service_account != service_account {
        return Err(Refused::ServiceAccount {
            namespace,
            pod,
            actual: w.service_account.clone(),
            proven: service_account.into(),
        });
    }
    let kind = match (w.gateway, w.has_sidecar) {
        (true, _) => ProxyKind::Gateway,
        (false, true) => ProxyKind::Sidecar,
        (false, false) => return Err(Refused::NoProxy { namespace, pod }),
    };
    if claimed.kind() != kind {
        return Err(Refused::Kind {
            namespace,
            pod,
            actual: kind_name(kind),
            claimed: kind_name(claimed.kind()),
        });
    }
    let node = Node {
        id: claimed.id.clone(),
        pod_name: pod,
        namespace,
        pod_ip: w.ip.clone(),
        labels: (*w.labels).clone().into_iter().collect(),
        service_account: w.service_account.clone(),
        kind: kind as i32,
        workload_name: w.workload.clone(),
        // The proxy's to decide, not the pod's: what it is sent, not who it is.
        on_demand: claimed.on_demand,
        asked_hosts: claimed.asked_hosts.clone(),
    };
    let overridden = [
        ("labels", claimed.labels != node.labels),
        ("pod_ip", claimed.pod_ip != node.pod_ip),
        ("workload_name", claimed.workload_name != node.workload_name),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    Ok((node, overridden))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: productpage-0
  namespace: default
  labels: {app: productpage}
  annotations: {sidecar.istio.io/status: "{}", trellis.io/workload: productpage-v1}
spec: {serviceAccountName: bookinfo-productpage, containers: []}
status: {podIP: 127.9.1.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: gw-0
  namespace: istio-system
  labels: {istio: ingressgateway}
  annotations: {inject.istio.io/templates: gateway}
spec: {serviceAccountName: gw, containers: []}
status: {podIP: 127.9.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-0, namespace: default}
spec: {serviceAccountName: plain, containers: []}
status: {podIP: 127.9.1.3}
"#;
        let resources = api::parse("test.yaml", yaml).expect("parse");
        Mesh::build(&resources, model::MeshConfig::default())
    }

    fn node(pod: &str, ns: &str, kind: ProxyKind) -> Node {
        Node {
            id: format!("{pod}.{ns}"),
            pod_name: pod.into(),
            namespace: ns.into(),
            kind: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_registry_says_who_a_proxy_is() {
        let mesh = mesh();
        let mut claim = node("productpage-0", "default", ProxyKind::Sidecar);
        claim.labels = [("istio".to_string(), "ingressgateway".to_string())].into();
        claim.pod_ip = "127.9.9.9".into();
        let (n, overridden) = verified(&mesh, &claim, "bookinfo-productpage").expect("its own pod");
        assert_eq!(n.kind(), ProxyKind::Sidecar);
        assert_eq!(
            n.labels,
            [("app".to_string(), "productpage".to_string())].into()
        );
        assert_eq!(n.pod_ip, "127.9.1.1");
        assert_eq!(n.workload_name, "productpage-v1");
        assert_eq!(n.service_account, "bookinfo-productpage");
        assert_eq!(overridden, ["labels", "pod_ip", "workload_name"]);

        let (gw, _) = verified(
            &mesh,
            &node("gw-0", "istio-system", ProxyKind::Gateway),
            "gw",
        )
        .expect("the gateway");
        assert_eq!(gw.kind(), ProxyKind::Gateway);
    }

    #[test]
    fn claims_the_registry_contradicts_are_refused() {
        let mesh = mesh();
        let forged = node("productpage-0", "default", ProxyKind::Gateway);
        assert!(matches!(
            verified(&mesh, &forged, "bookinfo-productpage"),
            Err(Refused::Kind {
                actual: "sidecar",
                claimed: "gateway",
                ..
            })
        ));
        // The gateway's pod with productpage's credential.
        assert!(matches!(
            verified(
                &mesh,
                &node("gw-0", "istio-system", ProxyKind::Gateway),
                "bookinfo-productpage"
            ),
            Err(Refused::ServiceAccount { .. })
        ));
        assert!(matches!(
            verified(
                &mesh,
                &node("made-up", "default", ProxyKind::Sidecar),
                "bookinfo-productpage"
            ),
            Err(Refused::NoPod { .. })
        ));
        assert!(matches!(
            verified(
                &mesh,
                &node("plain-0", "default", ProxyKind::Sidecar),
                "plain"
            ),
            Err(Refused::NoProxy { .. })
        ));
        let mut other_id = node("productpage-0", "default", ProxyKind::Sidecar);
        other_id.id = "reviews-0.default".into();
        assert!(matches!(
            verified(&mesh, &other_id, "bookinfo-productpage"),
            Err(Refused::Id { .. })
        ));
    }
}
