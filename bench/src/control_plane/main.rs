//! The control plane at scale: many services and endpoints, many connected
//! proxies. Measures the first full push to every proxy, how long one
//! endpoint change takes to reach all of them, and trellisd's memory.
//!
//! trellisd runs as its own process (the real binary); the proxies are
//! simulated in this one by a light discovery client: one connection and
//! stream per proxy, subscribing to every type as trellis-proxy does (taking
//! partial responses), answering each response as trellis-proxy does, but
//! counting the resources' bytes instead of decoding and applying them, so
//! that the two cores measure the control plane rather than 2,000 proxies'
//! config parsing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use wire::client::Takes;
use wire::pb::{DiscoveryRequest, Node, ProxyKind};

mod composition;
mod mesh;

#[derive(Parser)]
#[command(about = "Control plane scale benchmark")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Endpoint changes to time.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// The trellisd binary (default: next to this one).
    #[arg(long)]
    trellisd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// VirtualService changes to time (each changes every proxy's routes).
    #[arg(long, default_value_t = 3)]
    vs_changes: usize,
    /// How services and endpoints are written (service-entries: the mesh
    /// istiod is given in bench/control-plane-vs-istiod.sh).
    #[arg(long, value_enum, default_value_t = mesh::Format::Pods)]
    format: mesh::Format,
    /// Only write the mesh and its changes into this directory (`mesh/`,
    /// `changes/`), for another control plane, and exit.
    #[arg(long)]
    write_mesh: Option<PathBuf>,
    /// A Sidecar per namespace limits its proxies to their namespace's
    /// services: a change is then timed to the proxies that see it only.
    #[arg(long)]
    sidecars: bool,
    /// After the full push, print what one proxy's config is made of (bytes
    /// by type and field), in the compact forms and whole.
    #[arg(long)]
    composition: bool,
    /// Simulate proxies from before route configs were sent in pieces and
    /// resources in compact forms (they say neither `joins_route_pieces` nor
    /// `compact_resources`): trellisd sends them each route config whole and
    /// every resource in its whole form, the version-skew path of an upgrade.
    #[arg(long)]
    old_proxies: bool,
    /// Proxies discover on demand (`Node.on_demand`), each having asked for
    /// this many hosts (spread over the services): trellisd sends each its
    /// directory and those hosts' config only. 0: every proxy is sent every
    /// host its scope admits. Changes are not timed with it (a change
    /// reaches only the proxies that asked for its host): give
    /// --changes 0 --vs-changes 0.
    #[arg(long, default_value_t = 0)]
    on_demand: usize,
}

impl Args {
    fn shape(&self) -> mesh::Shape {
        mesh::Shape {
            format: self.format,
            services: self.services,
            endpoints_per_service: self.endpoints_per_service,
            namespaces: self.namespaces,
            endpoint_changes: self.changes,
            vs_changes: self.vs_changes,
            sidecars: self.sidecars,
        }
    }
}

/// What one simulated proxy has received: per type, how many versions and when the last arrived.
#[derive(Default)]
struct Received {
    types: HashMap<String, (usize, Instant)>,
    /// Per type, when its first version arrived (across reconnects).
    first: HashMap<String, Instant>,
    /// Resources received in endpoint updates after the first (changed or removed).
    endpoint_resources: usize,
    /// Encoded bytes of every response received.
    bytes: usize,
    /// Streams opened again after one failed or ended.
    reconnects: usize,
}

/// `DiscoveryResponse` with its resources left encoded: the simulated proxy
/// counts them and does not decode them.
#[derive(Clone, PartialEq, prost::Message)]
struct LightResponse {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    version_info: String,
    #[prost(string, tag = "3")]
    nonce: String,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    resources: Vec<bytes::Bytes>,
    #[prost(bool, tag = "5")]
    partial: bool,
    #[prost(string, repeated, tag = "6")]
    removed: Vec<String>,
    #[prost(bool, tag = "7")]
    more: bool,
}

/// How often a simulated proxy opens its stream again before it gives up:
/// bounded, so a control plane that refuses every stream ends the run (the
/// waits report the proxies left behind).
const MAX_STREAMS: usize = 100;

/// One simulated proxy: its discovery stream, opened again whenever it fails
/// or ends, as a real proxy does. 2,000 proxies connecting at once overflow a
/// listener's accept queue; a connection whose handshake the server dropped
/// looks established to the client until its first data is answered with a
/// reset, so the stream (not only the connect) fails and must be retried.
async fn simulated_proxy(
    endpoint: String,
    node: Node,
    takes: Takes,
    received: Arc<Mutex<Received>>,
) -> Result<()> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(endpoint)?.connect_timeout(Duration::from_secs(10));
    let mut last_error = None;
    for attempt in 0..MAX_STREAMS {
        if attempt > 0 {
            if let Ok(mut got) = received.lock() {
                got.reconnects += 1;
            }
            // Envoy backs off between attempts too; spread so a crowd that
            // failed together does not retry together.
            let jitter = (node.id.len() * 37 + attempt * 101) % 500;
            tokio::time::sleep(Duration::from_millis(200 + jitter as u64)).await;
        }
        match one_stream(&endpoint, &node, takes, &received).await {
            Ok(()) => last_error = None,
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e.context(format!("proxy {}: {MAX_STREAMS} streams failed", node.id))),
        None => Ok(()),
    }
}

/// A discovery stream on `endpoint` subscribed to every type as `takes`
/// says (the first request carrying `node`): the sender for the ACKs, and
/// the responses decoded as `R`.
async fn open_stream<R>(
    endpoint: &tonic::transport::Endpoint,
    node: &Node,
    takes: Takes,
) -> Result<(
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<R>,
)>
where
    R: prost::Message + Default + Send + 'static,
{
    let channel = endpoint.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // An on-demand proxy subscribes to its directory too.
    let types: &[&str] = if node.on_demand {
        &wire::types::SERVED
    } else {
        &wire::types::ALL
    };
    for (i, type_url) in types.iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            ..takes.subscribe(type_url)
        })
        .await?;
    }
    let path = http::uri::PathAndQuery::from_static("/trellis.proxy.v1.AggregatedDiscovery/Stream");
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, R>::default();
    let responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            path,
            codec,
        )
        .await?
        .into_inner();
    Ok((tx, responses))
}

/// One discovery stream, until it ends or fails.
async fn one_stream(
    endpoint: &tonic::transport::Endpoint,
    node: &Node,
    takes: Takes,
    received: &Arc<Mutex<Received>>,
) -> Result<()> {
    use prost::Message as _;
    // What trellis-proxy says it takes (a test there checks they agree),
    // unless --old-proxies: trellisd sends other forms to proxies that say
    // otherwise.
    let (tx, mut responses) = open_stream::<LightResponse>(endpoint, node, takes).await?;
    // Per type: resources of a version sent in pieces, until the last.
    let mut pending: HashMap<String, usize> = HashMap::new();
    while let Some(r) = responses.message().await? {
        let count = pending.remove(&r.type_url).unwrap_or(0) + r.resources.len() + r.removed.len();
        {
            let mut got = received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            got.bytes += r.encoded_len();
            if r.more {
                pending.insert(r.type_url.clone(), count);
                continue;
            }
            let entry = got
                .types
                .entry(r.type_url.clone())
                .or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
            let (updates, at) = (entry.0, entry.1);
            got.first.entry(r.type_url.clone()).or_insert(at);
            if r.type_url == wire::types::ENDPOINTS && updates > 1 {
                got.endpoint_resources += count;
            }
        }
        // Only the last piece of a version is answered, as trellis-proxy does.
        tx.send(DiscoveryRequest {
            type_url: r.type_url,
            version_info: r.version_info,
            response_nonce: r.nonce,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// trellisd's CPU time so far (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// How many proxies have received every type.
fn configured(proxies: &[Arc<Mutex<Received>>]) -> usize {
    proxies
        .iter()
        .filter(|p| {
            p.lock().is_ok_and(|r| {
                wire::types::ALL
                    .iter()
                    .all(|t| r.types.get(*t).is_some_and(|(n, _)| *n > 0))
            })
        })
        .count()
}

fn reconnects(proxies: &[Arc<Mutex<Received>>]) -> usize {
    proxies
        .iter()
        .map(|p| p.lock().map(|r| r.reconnects).unwrap_or(0))
        .sum()
}

fn received_bytes(proxies: &[Arc<Mutex<Received>>]) -> usize {
    proxies
        .iter()
        .map(|p| p.lock().map(|r| r.bytes).unwrap_or(0))
        .sum()
}

fn counts(proxies: &[Arc<Mutex<Received>>], t: &str, since: Instant) -> Vec<(usize, Instant)> {
    proxies
        .iter()
        .map(|p| {
            p.lock()
                .map(|r| r.types.get(t).copied())
                .ok()
                .flatten()
                .unwrap_or((0, since))
        })
        .collect()
}

/// Applies `body` and waits until every proxy (with Sidecars: every proxy in
/// `namespace`, the ones that see the change) has a new version of
/// `type_url`; the milliseconds each took.
async fn timed_change(
    client: &reqwest::Client,
    api: &str,
    body: String,
    proxies: &[Proxy],
    namespace: Option<usize>,
    type_url: &str,
) -> Result<Vec<f64>> {
    let proxies: Vec<Arc<Mutex<Received>>> = proxies
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .map(|p| p.received.clone())
        .collect();
    let proxies = &proxies[..];
    let t0 = Instant::now();
    let before = counts(proxies, type_url, t0);
    let resp = client
        .post(format!("{api}/v1/apply?source=bench"))
        .header("content-type", "application/yaml")
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("apply failed: {}", resp.text().await?);
    }
    loop {
        let now = counts(proxies, type_url, t0);
        if now.iter().zip(&before).all(|(n, b)| n.0 > b.0) {
            return Ok(now
                .iter()
                .map(|(_, at)| at.duration_since(t0).as_secs_f64() * 1000.0)
                .collect());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let reached = now.iter().zip(&before).filter(|(n, b)| n.0 > b.0).count();
            bail!(
                "a change of {type_url} reached {reached} of {} proxies within 120 s",
                proxies.len()
            );
        }
        // The proxies time their own responses; polling is only for the end.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One simulated proxy: its namespace's number, and what it received.
struct Proxy {
    namespace: usize,
    received: Arc<Mutex<Received>>,
}

struct Trellisd(Child);

impl Drop for Trellisd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    if a.on_demand > 0 && (a.changes > 0 || a.vs_changes > 0) {
        bail!("--on-demand times no change: give --changes 0 --vs-changes 0");
    }
    if let Some(dir) = &a.write_mesh {
        return mesh::write(dir, &a.shape());
    }
    // Each simulated proxy holds a connection, and so does trellisd for each.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    mesh::write(tmp.path(), &a.shape())?;
    let config = tmp.path().join("mesh");
    let trellisd = match &a.trellisd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("trellisd"),
    };
    let (xds, http) = (free_port()?, free_port()?);
    let started = Instant::now();
    let child = Command::new(&trellisd)
        .args([
            "--config-dir",
            &config.display().to_string(),
            "--xds-addr",
            &format!("127.0.0.1:{xds}"),
        ])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", trellisd.display()))?;
    let cp = Trellisd(child);
    let pid = cp.0.id();
    let api = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::builder().no_proxy().build()?;
    while client.get(format!("{api}/healthz")).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("trellisd did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup = started.elapsed();
    let rss_idle = rss_kib(pid, "VmRSS:");
    // Loading and indexing the mesh is counted apart: istiod's figures
    // (bench/xds-load) start when it is ready too.
    let cpu_startup = cpu_seconds(pid);

    // Connect every proxy at once and wait until each has all four types.
    let endpoint = format!("http://127.0.0.1:{xds}");
    let takes = if a.old_proxies {
        Takes {
            partial: true,
            route_pieces: false,
            compact_resources: false,
        }
    } else {
        Takes::PROXY
    };
    let mut proxies = Vec::new();
    let mut timed = Vec::new();
    let connect_start = Instant::now();
    for i in 0..a.proxies {
        let (pod, ns): (String, usize) = match a.format {
            // Proxy i is a pod of service i, so it has inbound listeners too.
            mesh::Format::Pods => {
                let svc = i % a.services;
                let ep = (i / a.services) % a.endpoints_per_service;
                (mesh::pod_name(svc, ep), svc % a.namespaces)
            }
            // A client of every service and the workload of none, as
            // bench/xds-load's proxies are for istiod.
            mesh::Format::ServiceEntries => (format!("client-{i}"), i % a.namespaces),
        };
        let node = Node {
            id: format!("{pod}.ns{ns}"),
            pod_name: pod,
            namespace: format!("ns{ns}"),
            kind: ProxyKind::Sidecar as i32,
            on_demand: a.on_demand > 0,
            // Hosts spread over the services and namespaces, a different
            // set for each proxy (so no two share config but by chance).
            asked_hosts: (0..a.on_demand)
                .map(|k| {
                    let s = (i * 7 + k * 131) % a.services;
                    format!("svc{s}.ns{}.svc.cluster.local", s % a.namespaces)
                })
                .collect(),
            ..Default::default()
        };
        let received = Arc::new(Mutex::new(Received::default()));
        let (endpoint, got) = (endpoint.clone(), received.clone());
        // A stream that fails leaves its proxy behind, which the waits below report.
        tokio::spawn(simulated_proxy(endpoint, node, takes, got));
        proxies.push(received.clone());
        timed.push(Proxy {
            namespace: ns,
            received,
        });
    }
    let mut progress = Instant::now();
    loop {
        let configured = configured(&proxies);
        if configured == a.proxies {
            break;
        }
        if progress.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{:.0} s: {configured} of {} proxies configured, {} streams reopened",
                connect_start.elapsed().as_secs_f64(),
                a.proxies,
                reconnects(&proxies)
            );
            progress = Instant::now();
        }
        if connect_start.elapsed() > Duration::from_secs(600) {
            bail!(
                "{configured} of {} proxies got their config within 600 s ({} streams reopened)",
                a.proxies,
                reconnects(&proxies)
            );
        }
        // The proxies time their own responses; this only looks now and then,
        // so that it takes no CPU from the control plane.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until every proxy had its first version of every type.
    let full_push = proxies
        .iter()
        .filter_map(|p| p.lock().ok()?.first.values().max().copied())
        .map(|at| at.duration_since(connect_start))
        .max()
        .unwrap_or_default();
    let rss_connected = rss_kib(pid, "VmRSS:");

    let bytes_full_push = received_bytes(&proxies) as f64 / a.proxies.max(1) as f64;
    let cpu_full_push = cpu_seconds(pid) - cpu_startup;
    let composition = if a.composition {
        let node = Node {
            id: "composition.ns0".into(),
            pod_name: "composition".into(),
            namespace: "ns0".into(),
            kind: ProxyKind::Sidecar as i32,
            ..Default::default()
        };
        let whole = Takes {
            compact_resources: false,
            ..Takes::PROXY
        };
        println!("Composition of one proxy's config, in the compact forms:");
        let compact = composition::report(endpoint.clone(), node.clone(), Takes::PROXY).await?;
        println!("\nThe same in the whole forms (a proxy from before the compact ones):");
        let whole = composition::report(endpoint.clone(), node, whole).await?;
        println!();
        serde_json::json!({"compact": compact, "whole": whole})
    } else {
        serde_json::Value::Null
    };

    // One new endpoint at a time; every proxy sees every service, so all must
    // get it. The changes are apart by more than trellisd's debounce (100 ms):
    // each is a lone change, pushed at once; a burst is coalesced instead.
    let bytes_before = received_bytes(&proxies);
    let shape = a.shape();
    let scoped = |ns| a.sidecars.then_some(ns);
    let mut latencies = Vec::new();
    for c in 0..a.changes {
        let body = mesh::change(tmp.path(), "endpoints", c)?;
        let ns = scoped(shape.endpoint_change_namespace(c));
        latencies
            .extend(timed_change(&client, &api, body, &timed, ns, wire::types::ENDPOINTS).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Per proxy reached (all of them without Sidecars).
    let bytes_per_change =
        (received_bytes(&proxies) - bytes_before) as f64 / (latencies.len()).max(1) as f64;
    let mut vs_latencies = Vec::new();
    for c in 0..a.vs_changes {
        let body = mesh::change(tmp.path(), "vs", c)?;
        let ns = scoped(shape.vs_change_namespace());
        vs_latencies.extend(
            timed_change(&client, &api, body, &timed, ns, wire::types::ROUTE_CONFIG).await?,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    vs_latencies.sort_by(|x, y| x.total_cmp(y));
    let resources_per_update = proxies
        .iter()
        .map(|p| p.lock().map(|r| r.endpoint_resources).unwrap_or(0))
        .sum::<usize>() as f64
        / latencies.len().max(1) as f64;
    let rss_peak = rss_kib(pid, "VmHWM:");
    let cpu_total = cpu_seconds(pid) - cpu_startup;
    // Settled: a second after the last change, with every proxy connected.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_settled = rss_kib(pid, "VmRSS:");

    let results = serde_json::json!({
        "format": format!("{:?}", a.format), "sidecars": a.sidecars, "old_proxies": a.old_proxies, "on_demand": a.on_demand,
        "services": a.services, "endpoints": a.services * a.endpoints_per_service, "proxies": a.proxies,
        "startup_ms": startup.as_millis(), "full_push_ms": full_push.as_millis(),
        "endpoint_change_p50_ms": percentile(&latencies, 0.5), "endpoint_change_p99_ms": percentile(&latencies, 0.99),
        "vs_change_p50_ms": percentile(&vs_latencies, 0.5), "vs_change_p99_ms": percentile(&vs_latencies, 0.99),
        "rss_idle_mib": rss_idle as f64 / 1024.0, "rss_connected_mib": rss_connected as f64 / 1024.0, "rss_peak_mib": rss_peak as f64 / 1024.0, "rss_settled_mib": rss_settled as f64 / 1024.0,
        "cpu_seconds_startup": cpu_startup, "cpu_seconds_full_push": cpu_full_push, "cpu_seconds": cpu_total,
        "bytes_per_proxy_full_push": bytes_full_push, "bytes_per_proxy_per_endpoint_change": bytes_per_change,
        "endpoint_resources_per_update": resources_per_update,
        "streams_reopened": reconnects(&proxies),
        "composition": composition,
    });
    println!("| figure | value |\n|---|---|");
    println!(
        "| services / endpoints / proxies | {} / {} / {} |",
        a.services,
        a.services * a.endpoints_per_service,
        a.proxies
    );
    println!(
        "| trellisd start (load + index) | {} ms |",
        startup.as_millis()
    );
    println!(
        "| first full push to every proxy | {} ms |",
        full_push.as_millis()
    );
    println!(
        "| one endpoint change to all proxies, p50 / p99 | {:.0} ms / {:.0} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "| one VirtualService change to all proxies, p50 / p99 | {:.0} ms / {:.0} ms |",
        percentile(&vs_latencies, 0.5),
        percentile(&vs_latencies, 0.99)
    );
    println!(
        "| bytes per proxy: full push / per endpoint change | {:.0} KiB / {:.0} B |",
        bytes_full_push / 1024.0,
        bytes_per_change
    );
    println!(
        "| trellisd RSS idle / connected / peak | {:.0} / {:.0} / {:.0} MiB |",
        rss_idle as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "| trellisd RSS 1 s after the last change (all connected) | {:.0} MiB |",
        rss_settled as f64 / 1024.0
    );
    println!(
        "| trellisd CPU: start / connect + full push / after start, whole run | {cpu_startup:.1} s / {cpu_full_push:.1} s / {cpu_total:.1} s |"
    );
    println!("| endpoint resources sent per proxy per change | {resources_per_update:.1} |");
    println!(
        "| discovery streams reopened (failed connects or streams) | {} |",
        reconnects(&proxies)
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
