//! With credentials required, a proxy is what its pod is: its kind and
//! labels come from the registry when it connects, and again when its pod
//! changes, whatever its node said.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use control::ca_service::Authenticator;
use control::state::ControlPlane;
use control::store::Store;
use wire::certs::BearerToken;
use wire::pb::{Node, ProxyKind};
use wire::server::ConfigProvider;

/// Every token proves `default/web` (the token itself is bootstrap_token's concern).
struct Web;

#[tonic::async_trait]
impl Authenticator for Web {
    async fn authenticate(&self, _token: &BearerToken) -> Result<identity::SpiffeId, String> {
        identity::SpiffeId::new("cluster.local", "default", "web").map_err(|e| e.to_string())
    }
}

fn pod(labels: &str) -> api::Resource {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: default
  labels: {labels}
  annotations: {{sidecar.istio.io/status: '{{}}'}}
spec: {{serviceAccountName: web, containers: []}}
status: {{podIP: 127.9.1.1}}
"
    );
    api::parse("pod.yaml", &yaml).expect("pod").remove(0)
}

#[tokio::test]
async fn a_proxy_is_its_pod_when_it_connects_and_when_the_pod_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("store");
    store.apply(pod("{app: web}")).expect("apply");
    let cp = ControlPlane::new(store, model::MeshConfig::default());
    cp.require_credentials(Arc::new(Web));
    let token = BearerToken::new("t".repeat(64));
    let claim = |kind: ProxyKind| Node {
        id: "web-0.default".into(),
        pod_name: "web-0".into(),
        namespace: "default".into(),
        service_account: "web".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        pod_ip: "127.1.1.1".into(),
        kind: kind as i32,
        ..Default::default()
    };

    let refused = cp
        .connect(&claim(ProxyKind::Gateway), Some(&token))
        .await
        .err()
        .expect("a sidecar's pod claiming to be a gateway");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let accepted = cp
        .connect(&claim(ProxyKind::Sidecar), Some(&token))
        .await
        .expect("its own pod");
    let labels = |n: &Node| n.labels.clone().into_iter().collect::<BTreeMap<_, _>>();
    let of = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(labels(&accepted.node), of(&[("app", "web")]));
    assert_eq!(accepted.node.pod_ip, "127.9.1.1");

    // The pod's labels change: the proxy is recompiled with the new ones.
    cp.store()
        .apply(pod("{app: web, version: v2}"))
        .expect("apply");
    cp.push();
    let now = cp.node("web-0.default").expect("connected");
    assert_eq!(labels(&now), of(&[("app", "web"), ("version", "v2")]));
    drop(accepted);
}
