//! The control plane at scale: many services and endpoints, many connected
//! proxies. Measures the first full push to every proxy, how long one
//! endpoint change takes to reach all of them, and trellisd's memory.
//!
//! trellisd runs as its own process (the real binary); the proxies are
//! simulated in this one with the real discovery client from `wire`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use wire::pb::{Node, ProxyKind, Resource};

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
    /// Simulated proxies ask for the whole set of a type on every change
    /// (state of the world) instead of only the changed resources.
    #[arg(long)]
    full_sets: bool,
}

/// What one simulated proxy has received: per type, how many versions and when the last arrived.
#[derive(Default)]
struct Received {
    types: HashMap<String, (usize, Instant)>,
    /// Resources received in endpoint updates after the first (changed or removed).
    endpoint_resources: usize,
}

/// A simulated proxy: takes partial updates, as trellis-proxy does, unless
/// told to ask for the whole set every time.
struct Recorder(Arc<Mutex<Received>>, bool);

impl Recorder {
    fn record(&self, type_url: &str, resources: usize) -> Result<(), String> {
        let mut r = self.0.lock().map_err(|_| "poisoned".to_string())?;
        let entry = r
            .types
            .entry(type_url.to_string())
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
        if type_url == wire::types::ENDPOINTS && entry.0 > 1 {
            r.endpoint_resources += resources;
        }
        Ok(())
    }
}

impl wire::client::ConfigHandler for Recorder {
    fn apply(
        &self,
        type_url: &str,
        _version: &str,
        resources: Vec<Resource>,
    ) -> Result<(), String> {
        self.record(type_url, resources.len())
    }

    fn accepts_partial(&self) -> bool {
        self.1
    }

    fn apply_partial(
        &self,
        type_url: &str,
        _: &str,
        changed: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        self.record(type_url, changed.len() + removed.len())
    }
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

fn pod_name(svc: usize, ep: usize) -> String {
    format!("svc{svc}-v1-{ep}")
}

/// Services and their pods, one YAML file per namespace.
fn write_mesh(dir: &std::path::Path, a: &Args) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<String> = vec![String::new(); a.namespaces];
    for s in 0..a.services {
        let ns = s % a.namespaces;
        let f = &mut files[ns];
        writeln!(
            f,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  selector: {{app: svc{s}}}\n  ports: [{{name: http, port: 8080}}]\n---"
        )?;
        for e in 0..a.endpoints_per_service {
            writeln!(f, "{}---", pod_yaml(s, e, ns))?;
        }
    }
    for (ns, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("ns{ns}.yaml")), text)?;
    }
    Ok(())
}

fn pod_yaml(s: usize, e: usize, ns: usize) -> String {
    let ip = format!("10.{}.{}.{}", (s / 250) % 250, s % 250, e % 250 + 1);
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: ns{ns}, labels: {{app: svc{s}, version: v1}}, annotations: {{sidecar.istio.io/status: \"{{}}\"}}}}\nspec:\n  containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: {ip}}}\n",
        pod_name(s, e)
    )
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
    let config = tmp.path().join("config");
    write_mesh(&config, &a)?;
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

    // Connect every proxy at once and wait until each has all four types.
    let endpoint = format!("http://127.0.0.1:{xds}");
    let mut proxies = Vec::new();
    let connect_start = Instant::now();
    for i in 0..a.proxies {
        let svc = i % a.services;
        let ep = (i / a.services) % a.endpoints_per_service;
        let ns = format!("ns{}", svc % a.namespaces);
        let node = Node {
            id: format!("{}.{ns}", pod_name(svc, ep)),
            pod_name: pod_name(svc, ep),
            namespace: ns,
            kind: ProxyKind::Sidecar as i32,
            ..Default::default()
        };
        let received = Arc::new(Mutex::new(Received::default()));
        tokio::spawn(wire::client::run(
            endpoint.clone(),
            node,
            None,
            Recorder(received.clone(), !a.full_sets),
        ));
        proxies.push(received);
    }
    let counts = |t: &str| -> Vec<(usize, Instant)> {
        proxies
            .iter()
            .map(|p| {
                p.lock()
                    .map(|r| r.types.get(t).copied())
                    .ok()
                    .flatten()
                    .unwrap_or((0, connect_start))
            })
            .collect()
    };
    loop {
        let done = wire::types::ALL
            .iter()
            .all(|t| counts(t).iter().all(|(n, _)| *n > 0));
        if done {
            break;
        }
        if connect_start.elapsed() > Duration::from_secs(600) {
            bail!("not every proxy got its config within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let full_push = wire::types::ALL
        .iter()
        .flat_map(|t| counts(t))
        .map(|(_, at)| at.duration_since(connect_start))
        .max()
        .unwrap_or_default();
    let rss_connected = rss_kib(pid, "VmRSS:");

    // One new endpoint at a time; every proxy sees every service, so all must get it.
    let mut latencies = Vec::new();
    for c in 0..a.changes {
        let svc = (c * 7919) % a.services;
        let before = counts(wire::types::ENDPOINTS);
        let body = pod_yaml(svc, a.endpoints_per_service + c, svc % a.namespaces);
        let t0 = Instant::now();
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
            let now = counts(wire::types::ENDPOINTS);
            if now.iter().zip(&before).all(|(n, b)| n.0 > b.0) {
                latencies.extend(
                    now.iter()
                        .map(|(_, at)| at.duration_since(t0).as_secs_f64() * 1000.0),
                );
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("change {c} did not reach every proxy within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    let resources_per_update = proxies
        .iter()
        .map(|p| p.lock().map(|r| r.endpoint_resources).unwrap_or(0))
        .sum::<usize>() as f64
        / (a.proxies * a.changes).max(1) as f64;
    let rss_peak = rss_kib(pid, "VmHWM:");
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = cpu
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);

    let results = serde_json::json!({
        "services": a.services, "endpoints": a.services * a.endpoints_per_service, "proxies": a.proxies,
        "startup_ms": startup.as_millis(), "full_push_ms": full_push.as_millis(),
        "endpoint_change_p50_ms": percentile(&latencies, 0.5), "endpoint_change_p99_ms": percentile(&latencies, 0.99),
        "rss_idle_mib": rss_idle as f64 / 1024.0, "rss_connected_mib": rss_connected as f64 / 1024.0, "rss_peak_mib": rss_peak as f64 / 1024.0,
        "cpu_seconds": ticks as f64 / 100.0, "endpoint_resources_per_update": resources_per_update,
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
        "| trellisd RSS idle / connected / peak | {:.0} / {:.0} / {:.0} MiB |",
        rss_idle as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "| trellisd CPU for the whole run | {:.1} s |",
        ticks as f64 / 100.0
    );
    println!("| endpoint resources sent per proxy per change | {resources_per_update:.1} |");
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
