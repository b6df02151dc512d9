//! A proxy under endpoint churn: one real trellis-proxy holding the config
//! of a large mesh (the control-plane benchmark's, 1,000 services of 10
//! endpoints), fed by a real trellisd, while a bounded fixed-rate load goes
//! through it to an upstream on loopback. The same load runs twice: with
//! the mesh still, then with endpoint changes applied to trellisd at a fixed
//! rate. Reported: the proxy's RSS (idle with the config, peak and at the
//! end of each phase), its CPU, the requests' p50/p99, and how many config
//! updates it applied.
//!
//! The mesh is written by `bench-control-plane --write-mesh` (ServiceEntry
//! files, the shape istiod is given too); each change rewrites one service's
//! endpoint list from its file: one endpoint moves to a new address, so the
//! count stays what it was and any growth of the proxy is its own.
//!
//! `--discovery on-demand` runs the proxy on demand (it then holds only the
//! hosts it called), and before the phases times the first and second call
//! to `--first-calls` hosts it has not called (see [`first_calls`]). The
//! churn then changes those hosts (see [`Churned`]): the mesh's services
//! are not the proxy's, and their changes would reach it not at all.

mod first_calls;
mod page_cache;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "One proxy with a large mesh's config under endpoint churn")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Endpoint changes per second applied to trellisd during the churn phase.
    #[arg(long, default_value_t = 100)]
    changes_per_sec: u64,
    /// Seconds each phase (still, then churn) lasts.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Requests per second through the proxy in both phases.
    #[arg(long, default_value_t = 200)]
    load_rate: u64,
    /// Directory of trellisd, trellis-proxy, bench-control-plane and
    /// bench-data-plane (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The load client.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run trellisd on these CPUs only (a `taskset -c` list, e.g. "0"), and
    /// the proxy, the load and the upstream on `--proxy-cpus`: on a
    /// machine of few cores, the control plane's own work under churn
    /// (in a mesh it runs elsewhere) then does not compete with the proxy.
    #[arg(long, requires = "proxy_cpus")]
    trellisd_cpus: Option<String>,
    /// See `--trellisd-cpus`.
    #[arg(long, requires = "trellisd_cpus")]
    proxy_cpus: Option<String>,
    /// The proxy's `--discovery`: `whole` or `on-demand` (the churn then
    /// changes the `--first-calls` hosts, the ones the proxy asked for).
    #[arg(long, default_value = "whole")]
    discovery: String,
    /// Hosts whose first and second call are timed before the phases.
    #[arg(long, default_value_t = 20)]
    first_calls: usize,
    /// With `--discovery on-demand`: the proxy forgets hosts unused this
    /// many seconds; after the phases the first-call hosts are called once
    /// more, once forgotten (held again). Shorter than the phases, the
    /// churned hosts are forgotten during them (and their changes no longer
    /// applied).
    #[arg(long)]
    idle_seconds: Option<u64>,
    /// The proxy binary's pages in the page cache when it starts: its RSS
    /// depends on it (see `page_cache`).
    #[arg(long, value_enum, default_value_t = page_cache::PageCache::Cold)]
    page_cache: page_cache::PageCache,
}

/// `bin`, on the CPUs `cpus` only if given (through `taskset`, which execs
/// it: the child's pid is the program's).
fn command_on(bin: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// A child process, killed when dropped.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.0.try_wait()? {
            bail!("{} exited ({status})", self.1);
        }
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU seconds of `pid` so far.
fn cpu_secs(pid: u32) -> f64 {
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The upstream service every request goes to: a ServiceEntry like the
/// mesh's, its one endpoint the local upstream.
fn upstream_service(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: upstream, namespace: ns0}}\nspec:\n  hosts: [{UPSTREAM_HOST}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{name: http, number: 8080, protocol: HTTP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
    )
}

const UPSTREAM_HOST: &str = "upstream.ns0.svc.cluster.local";

/// A service's ServiceEntry (the first document of its mesh file) with
/// endpoint `generation % endpoints` moved to a new address.
fn changed_service(file: &str, generation: usize) -> Result<String> {
    let entry = file.split("\n---\n").next().unwrap_or(file);
    let endpoints: Vec<usize> = entry
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- {address: "))
        .map(|(i, _)| i)
        .collect();
    ensure!(!endpoints.is_empty(), "a service file with no endpoints");
    let moved = endpoints[generation % endpoints.len()];
    let mut out = String::with_capacity(entry.len() + 16);
    for (i, line) in entry.lines().enumerate() {
        if i == moved {
            // "  - {address: 10.0.5.3, labels: ...}": a new last octet, out of
            // the generator's range (1..=250 for 10 endpoints: 1..=10).
            let (head, rest) = line.split_once("address: ").context("address")?;
            let (addr, tail) = rest.split_once(',').context("address end")?;
            let (net, _) = addr.rsplit_once('.').context("IPv4 address")?;
            let octet = 100 + generation % 150;
            out.push_str(&format!("{head}address: {net}.{octet},{tail}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The services the churn phase changes, one change at a time.
enum Churned {
    /// The mesh's services (each one's file as written, svc{s}.yaml): one
    /// endpoint of a service moves to a new address per change.
    Mesh(Vec<String>),
    /// The first-call hosts, those an on-demand proxy asked for: their one
    /// endpoint, the live upstream, is relabeled per change (a move would
    /// leave them unreachable).
    FirstCalls { hosts: usize, upstream_port: u16 },
}

impl Churned {
    /// The ServiceEntry that applies change `g` (0, 1, ...).
    fn change(&self, g: usize) -> Result<String> {
        match self {
            Churned::Mesh(files) => {
                let s = (g * 7919) % files.len();
                changed_service(&files[s], g / files.len() + 1)
            }
            Churned::FirstCalls {
                hosts,
                upstream_port,
            } => Ok(first_calls::relabeled_service(
                g % hosts,
                *upstream_port,
                g / hosts + 1,
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Churned::Mesh(files) => format!("the mesh's {} services", files.len()),
            Churned::FirstCalls { hosts, .. } => format!("the {hosts} first-call hosts"),
        }
    }
}

/// What oha measured and what the proxy did meanwhile.
struct Phase {
    requests: f64,
    ok: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    trellisd_cpu_s: f64,
    secs: f64,
    rss_peak_mib: f64,
    rss_end_mib: f64,
    updates: u64,
    rejected: u64,
    changes_sent: u64,
    changes_failed: u64,
}

/// The proxy's accepted and rejected endpoint updates so far (its metrics).
async fn endpoint_updates(client: &reqwest::Client, admin: SocketAddr) -> Result<(u64, u64)> {
    let text = client
        .get(format!("http://{admin}/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?;
    let count = |result: &str| {
        let prefix = format!(
            "trellis_proxy_config_updates_total{{type=\"endpoints\",result=\"{result}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((count("accepted"), count("rejected")))
}

struct Setup {
    a: Args,
    dir: PathBuf,
    churned: Arc<Churned>,
    api: String,
    outbound: SocketAddr,
    admin: SocketAddr,
    client: reqwest::Client,
    trellisd: u32,
}

impl Setup {
    /// Runs the fixed-rate load for `secs` (churning trellisd's endpoints
    /// meanwhile if `churn`), watching the proxy `pid`.
    async fn phase(&self, pid: u32, churn: bool, generation: &mut usize) -> Result<Phase> {
        let trellisd_cpu0 = cpu_secs(self.trellisd);
        let a = &self.a;
        let out = self.dir.join(if churn {
            "oha-churn.json"
        } else {
            "oha-still.json"
        });
        let n = a.load_rate * a.secs;
        let mut oha = command_on(&a.oha, a.proxy_cpus.as_deref());
        oha.args(["--no-tui", "--output-format", "json", "-o"])
            .arg(&out)
            .args(["-n", &n.to_string(), "-q", &a.load_rate.to_string()])
            .args(["--latency-correction", "-c", "8", "-t", "10s"])
            .args([
                "--connect-to",
                &format!(
                    "{UPSTREAM_HOST}:8080:{}:{}",
                    self.outbound.ip(),
                    self.outbound.port()
                ),
            ])
            .arg(format!("http://{UPSTREAM_HOST}:8080/"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let (updates0, rejected0) = endpoint_updates(&self.client, self.admin).await?;
        let cpu0 = cpu_secs(pid);
        let t0 = Instant::now();
        let mut oha = Proc(oha.spawn().context("starting oha")?, "oha");
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let churner = churn.then(|| {
            let changes = (a.changes_per_sec * a.secs) as usize;
            let churned = self.churned.clone();
            let (client, api) = (self.client.clone(), self.api.clone());
            let (sent, failed) = (sent.clone(), failed.clone());
            let first = *generation;
            let period = Duration::from_secs_f64(1.0 / a.changes_per_sec.max(1) as f64);
            *generation += changes;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // At most this many applies in flight: a slow trellisd lowers
                // the rate (reported) rather than piling up requests.
                let inflight = Arc::new(tokio::sync::Semaphore::new(8));
                for g in first..first + changes {
                    tick.tick().await;
                    let body = churned.change(g)?;
                    let permit = inflight.clone().acquire_owned().await?;
                    let (client, api) = (client.clone(), api.clone());
                    let (sent, failed) = (sent.clone(), failed.clone());
                    tokio::spawn(async move {
                        let ok = client
                            .post(format!("{api}/v1/apply?source=bench"))
                            .header("content-type", "application/yaml")
                            .body(body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        let counter = if ok { sent } else { failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                anyhow::Ok(())
            })
        });
        let mut rss_peak = 0.0f64;
        let status = loop {
            if let Some(status) = oha.0.try_wait()? {
                break status;
            }
            rss_peak = rss_peak.max(mem_mib(pid, "VmRSS:"));
            if t0.elapsed() > Duration::from_secs(a.secs * 3 + 30) {
                bail!("the load did not end within {} s", a.secs * 3 + 30);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let secs = t0.elapsed().as_secs_f64();
        let cpu_s = cpu_secs(pid) - cpu0;
        let trellisd_cpu_s = cpu_secs(self.trellisd) - trellisd_cpu0;
        if let Some(c) = churner {
            c.abort();
            // One that ended early with an error says why (0 changes is no result).
            if let Ok(Err(e)) = c.await {
                return Err(e.context("applying endpoint changes to trellisd"));
            }
        }
        // Let the last changes arrive before counting them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_end = mem_mib(pid, "VmRSS:");
        rss_peak = rss_peak.max(rss_end);
        let (updates1, rejected1) = endpoint_updates(&self.client, self.admin).await?;
        ensure!(status.success(), "oha failed ({status})");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&out)?).context("oha's JSON")?;
        let codes = &v["statusCodeDistribution"];
        let requests: f64 = codes
            .as_object()
            .map_or(0.0, |o| o.values().filter_map(Value::as_f64).sum());
        let pct = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
        Ok(Phase {
            requests,
            ok: codes["200"].as_f64().unwrap_or(0.0),
            p50_ms: pct("p50"),
            p99_ms: pct("p99"),
            cpu_s,
            trellisd_cpu_s,
            secs,
            rss_peak_mib: rss_peak,
            rss_end_mib: rss_end,
            updates: updates1 - updates0,
            rejected: rejected1 - rejected0,
            changes_sent: sent.load(Ordering::Relaxed),
            changes_failed: failed.load(Ordering::Relaxed),
        })
    }
}

fn phase_json(p: &Phase) -> Value {
    json!({
        "requests": p.requests, "ok": p.ok, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms,
        "proxy_cpu_s": p.cpu_s, "trellisd_cpu_s": p.trellisd_cpu_s, "secs": p.secs,
        "proxy_rss_peak_mib": p.rss_peak_mib, "proxy_rss_end_mib": p.rss_end_mib,
        "endpoint_updates_applied": p.updates, "endpoint_updates_rejected": p.rejected,
        "changes_applied_to_trellisd": p.changes_sent, "changes_failed": p.changes_failed,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_path_buf(),
    };
    let bin = |name: &str| bin_dir.join(name);
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let dir = tmp.path().to_path_buf();

    // The mesh, as the control-plane benchmark writes it.
    let status = Command::new(bin("bench-control-plane"))
        .args(["--write-mesh", &dir.display().to_string()])
        .args(["--format", "service-entries"])
        .args(["--services", &a.services.to_string()])
        .args([
            "--endpoints-per-service",
            &a.endpoints_per_service.to_string(),
        ])
        .args(["--namespaces", &a.namespaces.to_string()])
        .args(["--changes", "0", "--vs-changes", "0"])
        .status()
        .context("running bench-control-plane --write-mesh")?;
    ensure!(status.success(), "bench-control-plane --write-mesh failed");
    // Read before trellisd starts: it takes files found in its config
    // directory into its own store and renames them `.imported`.
    let services = (0..a.services)
        .map(|s| std::fs::read_to_string(dir.join(format!("mesh/svc{s}.yaml"))))
        .collect::<Result<Vec<_>, _>>()
        .context("reading the mesh's service files")?;

    let upstream_port = free_port()?;
    let churned = match a.discovery.as_str() {
        "on-demand" => {
            ensure!(
                a.first_calls > 0,
                "--discovery on-demand churns the first-call hosts: give --first-calls 1 or more"
            );
            Churned::FirstCalls {
                hosts: a.first_calls,
                upstream_port,
            }
        }
        _ => Churned::Mesh(services),
    };
    std::fs::write(
        dir.join("mesh/upstream.yaml"),
        upstream_service(upstream_port),
    )?;
    for i in 0..a.first_calls {
        std::fs::write(
            dir.join(format!("mesh/first{i}.yaml")),
            first_calls::service(i, upstream_port),
        )?;
    }
    let mut upstream = Proc(
        command_on(bin("bench-data-plane"), a.proxy_cpus.as_deref())
            .args(["--serve-upstream", &format!("127.0.0.1:{upstream_port}")])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the upstream (bench-data-plane --serve-upstream)")?,
        "upstream",
    );

    let (xds, http) = (free_port()?, free_port()?);
    let mut trellisd = Proc(
        command_on(bin("trellisd"), a.trellisd_cpus.as_deref())
            .args(["--config-dir", &dir.join("mesh").display().to_string()])
            .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting trellisd")?,
        "trellisd",
    );
    let api = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    while client.get(format!("{api}/healthz")).send().await.is_err() {
        trellisd.alive()?;
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "trellisd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outbound = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    page_cache::prepare(&bin("trellis-proxy"), a.page_cache)?;
    let mut proxy = Proc(
        command_on(bin("trellis-proxy"), a.proxy_cpus.as_deref())
            .args(["--xds", &format!("http://127.0.0.1:{xds}")])
            .args(["--pod-name", "client-0", "--namespace", "ns0"])
            .args(["--pod-ip", "127.0.0.1"])
            .args(["--outbound", &outbound.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--discovery", &a.discovery])
            .args(
                a.idle_seconds
                    .map(|s| format!("--on-demand-idle-seconds={s}")),
            )
            .arg("--no-access-log")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting trellis-proxy")?,
        "trellis-proxy",
    );
    let pid = proxy.pid();
    // Ready when a request through it reaches the upstream.
    let through = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{outbound}"))?)
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    loop {
        proxy.alive()?;
        trellisd.alive()?;
        upstream.alive()?;
        let ok = through
            .get(format!("http://{UPSTREAM_HOST}:8080/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no request through the proxy succeeded within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = mem_mib(pid, "VmRSS:");
    // The config's own memory: the rest is mostly the binary's pages.
    let anon_idle = mem_mib(pid, "RssAnon:");
    let calls = first_calls::measure(outbound, a.first_calls).await?;
    let (first_p50, first_max) = first_calls::p50_max(&calls.first_ms);
    let (second_p50, second_max) = first_calls::p50_max(&calls.second_ms);
    let setup = Setup {
        a,
        dir,
        churned: Arc::new(churned),
        api,
        outbound,
        admin,
        client,
        trellisd: trellisd.pid(),
    };
    let mut generation = 0;
    let load_before = load_average();
    let still = setup.phase(pid, false, &mut generation).await?;
    let churn = setup.phase(pid, true, &mut generation).await?;
    let load_after = load_average();
    proxy.alive()?;
    let rss_hwm = mem_mib(pid, "VmHWM:");
    let forgotten = match setup.a.idle_seconds {
        Some(_) => Some(
            first_calls::after_forgetting(setup.outbound, setup.admin, setup.a.first_calls).await?,
        ),
        None => None,
    };

    let a = &setup.a;
    println!(
        "proxy churn: {} services × {} endpoints, load {} req/s, churn {} changes/s, {} s per phase",
        a.services, a.endpoints_per_service, a.load_rate, a.changes_per_sec, a.secs
    );
    println!("| figure | still | endpoint churn |\n|---|---|---|");
    println!(
        "| requests (200 / all) | {:.0} / {:.0} | {:.0} / {:.0} |",
        still.ok, still.requests, churn.ok, churn.requests
    );
    println!(
        "| latency p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
        still.p50_ms, still.p99_ms, churn.p50_ms, churn.p99_ms
    );
    println!(
        "| proxy RSS peak / at end | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB |",
        still.rss_peak_mib, still.rss_end_mib, churn.rss_peak_mib, churn.rss_end_mib
    );
    println!(
        "| proxy CPU | {:.1} s ({:.0} % of a core) | {:.1} s ({:.0} % of a core) |",
        still.cpu_s,
        100.0 * still.cpu_s / still.secs,
        churn.cpu_s,
        100.0 * churn.cpu_s / churn.secs
    );
    println!(
        "| trellisd CPU | {:.0} % of a core | {:.0} % of a core |",
        100.0 * still.trellisd_cpu_s / still.secs,
        100.0 * churn.trellisd_cpu_s / churn.secs
    );
    println!(
        "| endpoint changes applied to trellisd (failed), to {} | – | {} ({}) |",
        setup.churned.describe(),
        churn.changes_sent,
        churn.changes_failed
    );
    println!(
        "| endpoint updates the proxy applied (rejected) | {} ({}) | {} ({}) |",
        still.updates, still.rejected, churn.updates, churn.rejected
    );
    println!(
        "discovery {}: first call to {} new hosts p50 / max {first_p50:.1} / {first_max:.1} ms, second call {second_p50:.1} / {second_max:.1} ms",
        a.discovery, a.first_calls
    );
    if let (Some(idle), Some((waited, again))) = (a.idle_seconds, &forgotten) {
        let (p50, max) = first_calls::p50_max(again);
        println!(
            "after forgetting (idle {idle} s; all gone {waited:.1} s after the phases): a call to each again p50 / max {p50:.1} / {max:.1} ms"
        );
    }
    println!(
        "proxy RSS idle with the config {rss_idle:.1} MiB ({anon_idle:.1} MiB anonymous; high-water mark {rss_hwm:.1} MiB), config in {config_s:.1} s, binary {:?} in the page cache; load average {load_before} before, {load_after} after",
        a.page_cache
    );
    if let Some(path) = &a.json {
        let results = json!({
            "services": a.services, "endpoints_per_service": a.endpoints_per_service,
            "load_rate": a.load_rate, "changes_per_sec": a.changes_per_sec, "secs": a.secs,
            "proxy_rss_idle_mib": rss_idle, "proxy_anon_idle_mib": anon_idle, "proxy_rss_hwm_mib": rss_hwm, "config_s": config_s,
            "trellisd_cpus": a.trellisd_cpus, "proxy_cpus": a.proxy_cpus, "discovery": a.discovery,
            "churned": setup.churned.describe(),
            "page_cache": format!("{:?}", a.page_cache).to_lowercase(),
            "first_call_ms": calls.first_ms, "second_call_ms": calls.second_ms,
            "idle_seconds": a.idle_seconds, "after_forgetting_call_ms": forgotten.as_ref().map(|f| &f.1),
            "load_average_before": load_before, "load_average_after": load_after,
            "still": phase_json(&still), "churn": phase_json(&churn),
        });
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    ensure!(
        still.ok == still.requests && churn.ok == churn.requests,
        "some requests failed (see the table)"
    );
    Ok(())
}
