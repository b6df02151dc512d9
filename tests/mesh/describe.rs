//! `trellis describe pod` on the mesh `trellis up examples/bookinfo` runs,
//! with Istio's reviews split between v2 and v3: the v2 pod is told it is
//! behind the reviews Service, in subset v2 which gets 50% of reviews, its
//! mTLS mode and where it came from, the AuthorizationPolicy that selects
//! it, and that its proxy is connected and synced; the ingress gateway's
//! pod is told the Gateway it serves and the routes bound to it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually, repo_root};
use serde_json::Value;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]
---
# The control plane serves Secrets redacted; describe is not put off by one.
apiVersion: v1
kind: Secret
metadata: {name: reviews-credential, namespace: default}
type: Opaque
data: {password: aHVudGVyMg==}
"#;

fn apply(mesh: &Mesh, path: &std::path::Path) -> Result<()> {
    let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
    ensure!(
        out.status.success(),
        "apply {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_says_what_applies_to_a_reviews_v2_pod_and_why() -> Result<()> {
    let root = repo_root();
    let mesh = Mesh::up(&root.join("examples/bookinfo"))?;
    let networking = root.join("examples/bookinfo/networking");
    apply(&mesh, &networking.join("destination-rule-all.yaml"))?;
    apply(
        &mesh,
        &networking.join("virtual-service-reviews-v2-v3.yaml"),
    )?;
    let policies = tempfile::NamedTempFile::new()?;
    std::fs::write(policies.path(), POLICIES)?;
    apply(&mesh, policies.path())?;

    let v2 = mesh
        .pods()?
        .into_iter()
        .find(|p| {
            p["metadata"]["labels"]["app"] == "reviews"
                && p["metadata"]["labels"]["version"] == "v2"
        })
        .context("no reviews-v2 pod")?;
    let name = v2["metadata"]["name"]
        .as_str()
        .context("pod name")?
        .to_string();

    // The proxy has the new config once it has acked it: until then
    // describe says what is stale.
    let text = eventually(Duration::from_secs(30), || async {
        let out = mesh.trellis(&["describe", "pod", &name]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            out.status.success(),
            "describe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(text.contains("Proxy: connected and SYNCED"), "{text}");
        Ok(text)
    })
    .await?;
    for expected in [
        "Service: reviews.default.svc.cluster.local",
        "why: its selector {app=reviews} matches the pod's labels",
        "Port: http 9080/HTTP targets pod port 9080",
        "DestinationRule: default/reviews",
        "Matching subsets: v2",
        "(Non-matching subsets v1,v3)",
        "VirtualService: default/reviews",
        "reviews.default.svc.cluster.local 9080 subset v2: 50% — this pod is in subset v2, which gets 50% of reviews",
        "reviews.default.svc.cluster.local 9080 subset v3: 50%\n",
        "Workload mTLS mode: STRICT (PeerAuthentication default/default: the namespace's, no selector)",
        "Port 9080: STRICT",
        "ALLOW default/reviews-viewer: 1 rule (its selector {app=reviews} matches the pod's labels)",
        "Sidecar resource: none",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }

    // The same as JSON, and `NAME.NAMESPACE` as istioctl takes it.
    let out = mesh.trellis(&["describe", "pod", &format!("{name}.default"), "-o", "json"]);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout)?;
    let route = &json["pod"]["services"][0]["virtualService"]["routes"][0];
    assert_eq!(route["percentToPod"], 50.0, "{json}");

    // A v1 pod gets none of reviews' traffic under this VirtualService.
    let v1 = mesh
        .pods()?
        .into_iter()
        .find(|p| {
            p["metadata"]["labels"]["version"] == "v1"
                && p["metadata"]["labels"]["app"] == "reviews"
        })
        .context("no reviews-v1 pod")?;
    let out = mesh.trellis(&[
        "describe",
        "pod",
        v1["metadata"]["name"].as_str().unwrap_or_default(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Matching subsets: v1"), "{text}");
    assert!(text.contains(": 0% to this pod"), "{text}");

    // The ingress gateway's pod: the Gateway that selects it, its server,
    // and the VirtualService bound to it with its routes.
    let gateway = mesh
        .pods()?
        .into_iter()
        .find(|p| p["metadata"]["labels"]["istio"] == "ingressgateway")
        .context("no ingress gateway pod")?;
    let out = mesh.trellis(&[
        "describe",
        "pod",
        gateway["metadata"]["name"].as_str().unwrap_or_default(),
        "-n",
        gateway["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "Gateway: default/bookinfo-gateway",
        "why: its selector {istio=ingressgateway} matches the pod's labels",
        "Server http 80/HTTP (pod port ",
        "VirtualService: default/bookinfo (its gateways name default/bookinfo-gateway",
        "uri exact /productpage | uri prefix /static",
        "productpage.default.svc.cluster.local:9080 100%",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }

    // A pod that does not exist is an error naming it.
    let out = mesh.trellis(&["describe", "pod", "nope", "-n", "default"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pod default/nope"), "{err}");
    Ok(())
}
