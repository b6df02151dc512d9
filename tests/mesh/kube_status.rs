//! Status on Istio objects (see `control::status`): an object the API server
//! stored but Trellis finds invalid, or one the analyzers find fault with,
//! says so in its `status` in Istio's shape; only the leader writes, and
//! when it stops the next leader carries on.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::eventually;
use e2e::kube::{Kube, Trellisd, to_a_missing_subset};
use serde_json::Value;

/// The object's `status`, `Null` if it has none.
fn status_of(kube: &Kube, kind: &str, name: &str) -> Result<Value> {
    let out = kube.kubectl_ok(&["get", kind, name, "-o", "json"])?;
    let object: Value = serde_json::from_str(&out)?;
    Ok(object["status"].clone())
}

/// Waits until the status of `name` satisfies `check`.
async fn until_status(
    kube: &Kube,
    trellisd: &Trellisd,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    eventually(Duration::from_secs(30), || async {
        let status = status_of(kube, "virtualservice", name)?;
        ensure!(check(&status), "{name}: {what}: not yet; status {status}");
        Ok(status)
    })
    .await
    .with_context(|| trellisd.log())
}

fn codes(status: &Value) -> Vec<String> {
    status["validationMessages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["type"]["code"].as_str().map(String::from))
        .collect()
}

/// A VirtualService for `NAME.example.com` routing to ratings.example.com
/// with `weight`; a negative one passes Istio's CRD schema (which does not
/// bound it) and fails Trellis's validation (as istiod's webhook).
fn virtual_service(ns: &str, name: &str, weight: i32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{name}.example.com]
  http:
  - route:
    - destination: {{host: ratings.example.com}}
      weight: {weight}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_reported_in_their_status_by_the_leader() -> Result<()> {
    let Some(kube) = Kube::start("status-conditions")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.apply(&virtual_service(&ns, "broken", -5))?;
    // Valid, but routes to a subset no DestinationRule defines (IST0101).
    kube.apply(&to_a_missing_subset(&ns))?;
    kube.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fine, namespace: {ns}}}
spec:
  hosts: [ratings.example.com]
  http:
  - route:
    - destination: {{host: ratings.example.com}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: {ns}}}
spec:
  hosts: [ratings.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
"#
    ))?;
    let flags = [
        "--leader-lease-duration",
        "120s",
        "--leader-renew-deadline",
        "3s",
        "--leader-retry-period",
        "200ms",
    ];
    let mut first = Trellisd::replica(&kube, 0, &flags)?;
    let status = until_status(&kube, &first, "broken", "IST0106", |s| {
        codes(s) == ["IST0106"]
    })
    .await?;
    let message = &status["validationMessages"][0];
    ensure!(
        message["level"] == "ERROR"
            && message["type"]["name"] == "SchemaValidationError"
            && message["documentationUrl"]
                == "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
        "Istio's AnalysisMessageBase shape: {message}"
    );
    let condition = &status["conditions"][0];
    ensure!(
        condition["type"] == "Reconciled"
            && condition["status"] == "False"
            && condition["message"]
                .as_str()
                .is_some_and(|m| m.contains("weight"))
            && condition["lastTransitionTime"].is_string(),
        "the condition says why: {condition}"
    );
    ensure!(
        status["observedGeneration"] == 1,
        "observedGeneration: {status}"
    );
    let status = until_status(&kube, &first, "to-nowhere", "IST0101", |s| {
        codes(s) == ["IST0101"]
    })
    .await?;
    ensure!(
        status["validationMessages"][0]["level"] == "ERROR" && status.get("conditions").is_none(),
        "an analysis finding on a served object, no condition: {status}"
    );
    // Nothing to say: nothing written.
    ensure!(
        status_of(&kube, "virtualservice", "fine")?.is_null(),
        "no status on a fine object"
    );

    // A second replica, which does not write while the first leads.
    let second = Trellisd::replica(&kube, 1, &flags)?;
    second
        .until_logged("the second replica is up", &["Kubernetes source synced"])
        .await?;
    first.terminate()?;
    second.until_leads(&kube).await?;
    ensure!(
        !second.log().contains("status written"),
        "the second replica wrote no status before it led: {}",
        second.log()
    );

    // The new leader writes: a new invalid object is reported, a fixed one
    // and a fixed reference cleared.
    kube.apply(&virtual_service(&ns, "broken-later", -5))?;
    kube.apply(&virtual_service(&ns, "broken", 100))?;
    kube.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {ns}}}
spec:
  host: reviews
  subsets: [{{name: v9, labels: {{version: v9}}}}]
"#
    ))?;
    until_status(&kube, &second, "broken-later", "IST0106", |s| {
        codes(s) == ["IST0106"]
    })
    .await?;
    until_status(&kube, &second, "broken", "cleared", |s| {
        codes(s).is_empty() && s.get("conditions").is_none()
    })
    .await?;
    until_status(&kube, &second, "to-nowhere", "cleared", |s| {
        codes(s).is_empty()
    })
    .await?;
    ensure!(
        second.log().contains("status written"),
        "the new leader wrote them: {}",
        second.log()
    );
    Ok(())
}
