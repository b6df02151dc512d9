//! A relist after 410 Gone catches up with what changed while trellisd was
//! away and drops nothing else: the API server dies, an object is deleted
//! behind its back (in etcd, as a restore or another API server would),
//! and when the API server is back trellisd's resumed watches are answered
//! 410 Gone and relist — the deleted route leaves the proxy, everything
//! else stays as it was.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::kube::{ENDPOINTS, Kube, Proxy, ROUTES, Trellisd, reviews};

/// `text` in base64, as etcd's JSON gateway takes keys (coreutils' base64).
fn base64(text: &str) -> Result<String> {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$0\" | base64 -w0", text])
        .output()?;
    ensure!(out.status.success(), "base64 failed");
    Ok(String::from_utf8(out.stdout)?)
}

/// Deletes `key` from the cluster's etcd through its JSON gateway.
async fn etcd_delete(kube: &Kube, key: &str) -> Result<()> {
    let url = format!("http://127.{}.0.1:2379/v3/kv/deleterange", kube.block);
    let answer: serde_json::Value = e2e::http()
        .post(&url)
        .json(&serde_json::json!({"key": base64(key)?}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(answer["deleted"] == "1", "etcd deleted {key}: {answer}");
    Ok(())
}

fn virtual_service(ns: &str, name: &str, host: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
  - headers:
      request:
        set: {{x-route: {name}}}
    route:
    - destination: {{host: {host}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_catches_up_and_drops_nothing_else() -> Result<()> {
    let Some(mut kube) = Kube::start("relist-410")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.apply(&reviews(&ns, "10.3.0.1"))?;
    kube.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 9080}}]
"#
    ))?;
    kube.apply(&virtual_service(&ns, "kept-route", "reviews"))?;
    kube.apply(&virtual_service(&ns, "deleted-route", "ratings"))?;
    let trellisd = Trellisd::start(&kube)?;
    let proxy = Proxy::connect(&kube, &trellisd, "client-1", &ns, "10.9.0.1").await?;
    proxy
        .until(ROUTES, "both routes", |d| {
            d.contains("kept-route") && d.contains("deleted-route")
        })
        .await
        .with_context(|| trellisd.log())?;
    proxy
        .until(ENDPOINTS, "the endpoint", |d| d.contains("10.3.0.1"))
        .await?;
    let endpoints = proxy.dump(ENDPOINTS);

    kube.kill_apiserver()?;
    trellisd
        .until_logged("a watch failure", &["watch failed"])
        .await?;
    etcd_delete(
        &kube,
        &format!("/registry/networking.istio.io/virtualservices/{ns}/deleted-route"),
    )
    .await?;
    // Away from the API server, trellisd serves what it last saw.
    ensure!(
        proxy.dump(ROUTES).contains("deleted-route"),
        "the last known state is served while the API server is away"
    );

    kube.start_apiserver()?;
    trellisd
        .until_logged("410 Gone", &["too old resource version"])
        .await?;
    proxy
        .until(ROUTES, "the relisted routes", |d| {
            d.contains("kept-route") && !d.contains("deleted-route")
        })
        .await
        .with_context(|| trellisd.log())?;
    ensure!(
        proxy.dump(ENDPOINTS) == endpoints,
        "the endpoints are as they were: {}",
        proxy.dump(ENDPOINTS)
    );
    // And the watches run again.
    kube.apply(&virtual_service(&ns, "new-route", "ratings"))?;
    proxy
        .until(ROUTES, "a route made after the relist", |d| {
            d.contains("new-route") && d.contains("kept-route")
        })
        .await
        .with_context(|| trellisd.log())?;
    Ok(())
}
