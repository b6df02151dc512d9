//! The first call to each of a few hosts the proxy has not called yet,
//! then a second: with `--discovery on-demand` the first is held while the
//! proxy asks trellisd for the host, trellisd compiles the proxy's hosts and
//! pushes them, and the proxy applies them (docs/on-demand.md); with the
//! whole config it is routed at once. Both open a new upstream pool; the
//! difference between the two runs' first calls is what on-demand adds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// The hosts measured: ServiceEntries like the upstream's, one each.
pub fn host(i: usize) -> String {
    format!("first{i}.ns0.svc.cluster.local")
}

/// The ServiceEntry of [`host`] `i`, its one endpoint the local upstream.
pub fn service(i: usize, upstream_port: u16) -> String {
    entry(i, upstream_port, "")
}

/// [`service`] `i` with its endpoint's labels at `generation`: an endpoint
/// change the proxy applies (trellisd pushes the host's endpoints again)
/// while the endpoint stays the live upstream, so that the host can still
/// be called. The on-demand proxy's churn (its hosts are these; see
/// `Churned`).
pub fn relabeled_service(i: usize, upstream_port: u16, generation: usize) -> String {
    let labels = format!(", labels: {{app: first{i}, generation: \"{generation}\"}}");
    entry(i, upstream_port, &labels)
}

/// The ServiceEntry of [`host`] `i`; `more`: the endpoint's fields after its ports.
fn entry(i: usize, upstream_port: u16, more: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: first{i}, namespace: ns0}}\nspec:\n  hosts: [{}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{name: http, number: 8080, protocol: HTTP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {upstream_port}}}{more}}}\n",
        host(i)
    )
}

/// The latencies of the first and the second call to each host, in ms.
pub struct FirstCalls {
    pub first_ms: Vec<f64>,
    pub second_ms: Vec<f64>,
}

/// Calls through the explicit proxy at `outbound`, one at a time, on one
/// kept-alive connection to it, opened before anything is timed.
struct Caller(reqwest::Client);

impl Caller {
    async fn new(outbound: SocketAddr) -> Result<Caller> {
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{outbound}"))?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let caller = Caller(client);
        caller
            .call(format!("http://{}:8080/", super::UPSTREAM_HOST))
            .await?;
        Ok(caller)
    }

    /// One call's latency, in ms.
    async fn call(&self, url: String) -> Result<f64> {
        let t0 = Instant::now();
        let status = self.0.get(&url).send().await?.status();
        ensure!(status.is_success(), "{url}: {status}");
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    }
}

/// Calls each of `count` hosts twice, one call at a time, through the
/// explicit proxy at `outbound` (one kept-alive connection to it).
pub async fn measure(outbound: SocketAddr, count: usize) -> Result<FirstCalls> {
    let caller = Caller::new(outbound).await?;
    let mut out = FirstCalls {
        first_ms: Vec::new(),
        second_ms: Vec::new(),
    };
    for i in 0..count {
        let url = format!("http://{}:8080/", host(i));
        out.first_ms
            .push(caller.call(url.clone()).await.context("a first call")?);
        out.second_ms
            .push(caller.call(url).await.context("a second call")?);
    }
    Ok(out)
}

/// Once the proxy (admin at `admin`) has forgotten all `count` hosts
/// (`--on-demand-idle-*`, docs/on-demand.md), how long that took from now
/// (s), and the latency of one call to each again: held as a first call.
pub async fn after_forgetting(
    outbound: SocketAddr,
    admin: SocketAddr,
    count: usize,
) -> Result<(f64, Vec<f64>)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let t0 = Instant::now();
    loop {
        let clusters = client
            .get(format!("http://{admin}/clusters"))
            .send()
            .await?
            .text()
            .await?;
        if !(0..count).any(|i| clusters.contains(&host(i))) {
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "the proxy did not forget the hosts first called within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = t0.elapsed().as_secs_f64();
    let caller = Caller::new(outbound).await?;
    let mut again = Vec::new();
    for i in 0..count {
        let url = format!("http://{}:8080/", host(i));
        again.push(caller.call(url).await.context("a call after forgetting")?);
    }
    Ok((waited, again))
}

/// The median and the largest of `ms`.
pub fn p50_max(ms: &[f64]) -> (f64, f64) {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    (p50, sorted.last().copied().unwrap_or(f64::NAN))
}
