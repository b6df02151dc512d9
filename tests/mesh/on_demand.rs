//! On-demand discovery end to end: a client whose pod asks for it
//! (`trellis.dev/discovery: on-demand`) starts with no outbound host; its
//! first call to a service is held while its sidecar asks trellisd for the
//! host, then succeeds; its sidecar's config then has that host and no
//! other; a host outside the mesh is refused as before (REGISTRY_ONLY:
//! 502). In network namespaces the call goes by name through the DNS
//! proxy (answered from the directory, the host not yet called) to the
//! service's VIP, captured. The client's sidecar forgets a host after a
//! short idle period (the test-only idle in seconds, as proxyMetadata): the
//! host leaves its config, and the next call is held and succeeds again.

use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::{Launch, Mesh, eventually, http};
use serde_json::Value;

const APPS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  selector: {app: other}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata:
      labels: {app: client}
      annotations:
        trellis.dev/discovery: on-demand
        proxy.istio.io/config: '{proxyMetadata: {TRELLIS_ON_DEMAND_IDLE_SECONDS: "IDLE_SECONDS"}}'
    spec:
      containers:
      - {name: client, image: trellis-sample, args: [echo, --service, client, --port, "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - {name: echo, image: trellis-sample, args: [echo, --service, echo, --port, "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other}
spec:
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other}}
    spec:
      containers:
      - {name: other, image: trellis-sample, args: [echo, --service, other, --port, "8080"], ports: [{containerPort: 8080}]}
"#;

/// The client's sidecar forgets a host unused this long: long enough for
/// the checks right after a call, short enough to wait for.
const IDLE_SECONDS: u64 = 5;

const ECHO: &str = "outbound|8080||echo.default.svc.cluster.local";
const OTHER: &str = "outbound|8080||other.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_is_held_until_the_host_is_discovered() -> Result<()> {
    on_demand(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_is_held_until_the_host_is_discovered_in_namespaces() -> Result<()> {
    if let Some(why) = e2e::netns_unavailable() {
        eprintln!("skipped: namespace mode needs root, iproute2, iptables, setpriv, curl ({why})");
        return Ok(());
    }
    on_demand(true).await
}

async fn on_demand(netns: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    )?;
    std::fs::write(
        dir.path().join("apps.yaml"),
        APPS.replace("\"IDLE_SECONDS\"", &format!("\"{IDLE_SECONDS}\"")),
    )?;
    let mesh = Mesh::launch(
        dir.path(),
        Launch {
            netns,
            ..Launch::default()
        },
    )?;
    let client = mesh.pod_of("client")?;
    let ip = client["status"]["podIP"].as_str().unwrap_or_default();
    let base = format!("http://{ip}:8080/");
    let pod = format!(
        "{}.default",
        client["metadata"]["name"].as_str().unwrap_or_default()
    );
    let clusters = || {
        let out = mesh.trellis(&["proxy-config", "clusters", &pod]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The client and its sidecar are up, configured with no outbound host.
    let web = http();
    eventually(Duration::from_secs(30), || async {
        let status = web.get(&base).send().await?.status();
        ensure!(status == 200, "client: {status}");
        let out = mesh.trellis(&["proxy-config", "listeners", &pod]);
        ensure!(
            String::from_utf8_lossy(&out.stdout).contains("inbound|8080"),
            "no config yet"
        );
        Ok(())
    })
    .await?;
    let before = clusters();
    ensure!(
        !before.contains(ECHO) && !before.contains(OTHER),
        "{before}"
    );

    // The first call: held while the host is discovered, then routed.
    let call = |target: &'static str| {
        let (web, base) = (web.clone(), base.clone());
        async move {
            let body: Value = web
                .get(&base)
                .query(&[("call", target)])
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(body["upstream"].clone())
        }
    };
    let first = call("http://echo:8080/").await?;
    ensure!(first["status"] == 200, "the first call: {first}");
    ensure!(first["body"]["service"] == "echo", "{first}");

    // Its sidecar now has echo, and still not the service it never called.
    let after = clusters();
    ensure!(after.contains(ECHO), "{after}");
    ensure!(!after.contains(OTHER), "a host never called: {after}");

    // Outside the mesh: refused as before, not held (REGISTRY_ONLY: 502).
    let outside = call("http://192.0.2.1:8080/").await?;
    ensure!(
        outside["status"] == 502,
        "a host outside the mesh: {outside}"
    );

    // The other service is called on its own first call too.
    let second = call("http://other:8080/").await?;
    ensure!(second["status"] == 200, "{second}");
    ensure!(clusters().contains(OTHER));

    // Unused for the idle period, both are forgotten: their clusters leave
    // the sidecar's config.
    eventually(Duration::from_secs(30), || async {
        let now = clusters();
        ensure!(!now.contains(ECHO) && !now.contains(OTHER), "{now}");
        Ok(())
    })
    .await?;
    // The next call asks again, is held as a first call is, and succeeds.
    let again = call("http://echo:8080/").await?;
    ensure!(again["status"] == 200, "the call after forgetting: {again}");
    ensure!(again["body"]["service"] == "echo", "{again}");
    ensure!(clusters().contains(ECHO), "asked for again");
    mesh.stop()?;
    Ok(())
}
