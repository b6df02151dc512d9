//! Traffic management through real sidecars, written as Istio YAML and
//! applied to a running mesh: canary splits, header routing, faults, retries,
//! timeouts and circuit breaking, observed as a client would.

use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::{Launch, Mesh, eventually, http};
use serde_json::Value;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: client}
spec:
  selector: {app: client}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client, version: v1}}
    spec:
      containers:
      - {name: client, image: trellis-sample, args: [echo, --service, client, --port, "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn deployment(version: &str) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: echo-{version}}}\nspec:\n  selector: {{matchLabels: {{app: echo, version: {version}}}}}\n  template:\n    metadata: {{labels: {{app: echo, version: {version}}}}}\n    spec:\n      containers:\n      - {{name: echo, image: trellis-sample, args: [echo, --service, echo, --version, {version}, --port, \"8080\"], ports: [{{containerPort: 8080}}]}}\n"
    )
}

struct Bench {
    mesh: Mesh,
    client: reqwest::Client,
    /// The client workload's pod address: requests to it make it call `echo` through its sidecar.
    client_pod: String,
    dir: tempfile::TempDir,
}

impl Bench {
    async fn start() -> Result<Bench> {
        Bench::launch(false).await
    }

    /// The same mesh with its pods in network namespaces, their traffic
    /// captured (`trellis up` as root); `None` where that cannot run.
    async fn in_namespaces() -> Result<Option<Bench>> {
        if let Some(why) = e2e::netns_unavailable() {
            eprintln!(
                "skipped: namespace mode needs root, iproute2, iptables, setpriv, curl ({why})"
            );
            return Ok(None);
        }
        Bench::launch(true).await.map(Some)
    }

    async fn launch(netns: bool) -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
        std::fs::write(
            dir.path().join("echo.yaml"),
            format!("{MESH}{}{}", deployment("v1"), deployment("v2")),
        )?;
        let mesh = Mesh::launch(
            dir.path(),
            Launch {
                netns,
                ..Launch::default()
            },
        )?;
        let pods = mesh.pods()?;
        let ip = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == "client")
            .and_then(|p| p["status"]["podIP"].as_str())
            .expect("client pod")
            .to_string();
        let bench = Bench {
            mesh,
            client: http(),
            client_pod: format!("{ip}:8080"),
            dir,
        };
        eventually(Duration::from_secs(30), || async {
            let (status, _) = bench.call("/", &[]).await?;
            ensure!(status == 200, "status {status}");
            Ok(())
        })
        .await?;
        Ok(bench)
    }

    fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let path = self.dir.path().join(format!("applied-{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let out = self
            .mesh
            .trellis(&["apply", "-f", &path.display().to_string()]);
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Asks the client to GET `http://echo:8080{path}` through its sidecar;
    /// returns the upstream status and body as the client saw them.
    async fn call(&self, path: &str, headers: &[(&str, &str)]) -> Result<(u64, Value)> {
        let target = format!("http://echo:8080{path}");
        let mut req = self
            .client
            .get(format!("http://{}/", self.client_pod))
            .query(&[("call", target.as_str())]);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body: Value = req.send().await?.json().await?;
        let upstream = &body["upstream"];
        ensure!(upstream["error"].is_null(), "the call failed: {upstream}");
        Ok((
            upstream["status"].as_u64().unwrap_or(0),
            upstream["body"].clone(),
        ))
    }

    async fn versions(&self, n: usize, headers: &[(&str, &str)]) -> Result<(usize, usize)> {
        let (mut v1, mut v2) = (0, 0);
        for _ in 0..n {
            let (_, body) = self.call("/", headers).await?;
            match body["version"].as_str() {
                Some("v1") => v1 += 1,
                Some("v2") => v2 += 1,
                other => anyhow::bail!("unexpected version {other:?}"),
            }
        }
        Ok((v1, v2))
    }
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo}}\nspec:\n  hosts: [echo]\n  http:\n{http}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_and_header_routing() -> Result<()> {
    canary_split(Bench::start().await?).await
}

/// The same, each pod in its own network namespace: the client's calls are
/// captured, not sent to an HTTP proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_and_header_routing_in_namespaces() -> Result<()> {
    match Bench::in_namespaces().await? {
        Some(b) => canary_split(b).await,
        None => Ok(()),
    }
}

async fn canary_split(b: Bench) -> Result<()> {
    b.apply(
        "split",
        &vs("  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: echo, subset: v2}}]\n  - route:\n    - {destination: {host: echo, subset: v1}, weight: 80}\n    - {destination: {host: echo, subset: v2}, weight: 20}\n"),
    )?;
    eventually(Duration::from_secs(15), || async {
        let (v1, v2) = b.versions(1, &[("end-user", "jason")]).await?;
        ensure!(v1 == 0 && v2 == 1, "header route not in force yet");
        Ok(())
    })
    .await?;
    // 2,000 requests: 20% ± 3% reach v2 (the tolerance is over 3 standard deviations).
    let (v1, v2) = b.versions(2000, &[]).await?;
    let share = v2 as f64 / (v1 + v2) as f64;
    assert!(
        (share - 0.20).abs() < 0.03,
        "v2 got {:.1}% ({v1}/{v2})",
        share * 100.0
    );
    let (v1, v2) = b.versions(50, &[("end-user", "jason")]).await?;
    assert_eq!((v1, v2), (0, 50), "jason always reaches v2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_timeouts_and_retries() -> Result<()> {
    let b = Bench::start().await?;
    // Abort half the requests with 500.
    b.apply("abort", &vs("  - fault: {abort: {httpStatus: 500, percentage: {value: 50}}}\n    route: [{destination: {host: echo}}]\n"))?;
    eventually(Duration::from_secs(15), || async {
        let (status, _) = (b.call("/", &[]).await?, ());
        let mut aborted = status.0 == 500;
        for _ in 0..20 {
            aborted |= b.call("/", &[]).await?.0 == 500;
        }
        ensure!(aborted, "abort fault not in force yet");
        Ok(())
    })
    .await?;
    let mut aborted = 0;
    for _ in 0..400 {
        if b.call("/", &[]).await?.0 == 500 {
            aborted += 1;
        }
    }
    assert!(
        (140..=260).contains(&aborted),
        "{aborted} of 400 aborted, about half expected"
    );

    // A 3 s delay from the upstream with a 1 s route timeout: 504.
    b.apply(
        "timeout",
        &vs("  - timeout: 1s\n    route: [{destination: {host: echo}}]\n"),
    )?;
    eventually(Duration::from_secs(15), || async {
        let (status, _) = b.call("/?delay_ms=3000", &[]).await?;
        ensure!(status == 504, "status {status}");
        Ok(())
    })
    .await?;

    // A flaky upstream (each endpoint fails its first request) succeeds with retries…
    b.apply(
        "retries",
        &vs("  - retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: echo}}]\n"),
    )?;
    eventually(Duration::from_secs(15), || async {
        let key = format!("k{}", rand_key());
        let (status, _) = b.call(&format!("/?fail_first=1&key={key}"), &[]).await?;
        ensure!(status == 200, "status {status}");
        Ok(())
    })
    .await?;
    // …and fails without them.
    b.apply(
        "no-retries",
        &vs("  - retries: {attempts: 0}\n    route: [{destination: {host: echo}}]\n"),
    )?;
    eventually(Duration::from_secs(15), || async {
        let key = format!("k{}", rand_key());
        let (status, _) = b.call(&format!("/?fail_first=1&key={key}"), &[]).await?;
        ensure!(status == 503, "status {status}");
        Ok(())
    })
    .await?;
    Ok(())
}

fn rand_key() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflows_with_503() -> Result<()> {
    let b = Bench::start().await?;
    b.apply(
        "breaker",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n  host: echo\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    )?;
    eventually(Duration::from_secs(20), || async {
        // Ten concurrent slow requests through one connection and one pending slot.
        let calls = (0..10).map(|_| b.call("/?delay_ms=300", &[]));
        let results = futures_join(calls).await;
        let overflowed = results.iter().filter(|r| matches!(r, Ok((503, _)))).count();
        let ok = results.iter().filter(|r| matches!(r, Ok((200, _)))).count();
        ensure!(overflowed > 0 && ok > 0, "ok {ok}, overflowed {overflowed}");
        Ok(())
    })
    .await?;
    // One at a time, every request passes.
    for _ in 0..5 {
        assert_eq!(b.call("/", &[]).await?.0, 200);
    }
    Ok(())
}

async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.collect();
    let mut out = Vec::new();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = handles.into_iter().map(Box::pin).collect();
    // Poll them together: a simple join without another dependency.
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().flatten());
    out
}
