//! The measurements of one target in one round: every scenario (latency
//! at a fixed rate, closed-loop HTTP/1.1 and HTTP/2, gRPC, new
//! connections, memory), and the load runs they are made of.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nix::sched::CpuSet;
use serde_json::Value;

use crate::configs::{self, PORT};
use crate::procs::{Proc, cpu_secs, http_get, mem_mib, pin_all_threads, sockets};
use crate::{Bench, Metrics, Scenario, Target, certs, clients};

#[derive(Clone, Copy)]
pub(crate) enum Load {
    /// Open loop at `rate` for `secs`, latency corrected for coordinated omission.
    Fixed { rate: u64, secs: f64 },
    /// As fast as it goes for `secs`.
    Closed { h2: bool, secs: f64 },
    /// A few requests to open connections and fill caches.
    Warmup,
}

#[derive(Default)]
pub(crate) struct LoadResult {
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

impl Bench {
    /// `apps`: the upstream processes (pinned with the client in closed loops).
    pub(crate) fn measure(&self, t: Target, apps: &[u32], round: usize) -> Result<Metrics> {
        let mut m = Metrics::new();
        if self.a.only == [Scenario::Soak] {
            if t != Target::Direct && round == 0 {
                self.soak(t, &mut m)?;
            }
            return Ok(m);
        }
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
            for app in apps {
                pin_all_threads(*app, client_cpus);
            }
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
                addr: self.entry(t, PORT).to_string(),
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
                addr: self.inbound(t).to_string(),
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
        for app in apps {
            pin_all_threads(*app, &self.all_cpus);
        }
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
            drop(pair);
        }
        if self.wants(Scenario::Telemetry) {
            if t == Target::Direct {
                // The telemetry ratios take added latency against this
                // round's direct run; measured here when the latency
                // scenario did not.
                if !self.wants(Scenario::Latency) {
                    let f = self.oha(
                        t,
                        Load::Fixed {
                            rate: self.a.rate,
                            secs: self.s.latency_secs,
                        },
                        &[],
                    )?;
                    m.insert("lat_p50_ms".into(), f.p50_ms);
                    m.insert("lat_p90_ms".into(), f.p90_ms);
                    m.insert("lat_p99_ms".into(), f.p99_ms);
                }
            } else if !self.a.capture {
                self.telemetry_cost(t, apps, round, &mut m)?;
            }
        }
        if t != Target::Direct && round == 0 && self.wants(Scenario::Soak) {
            self.soak(t, &mut m)?;
        }
        Ok(m)
    }

    /// The same pair with telemetry off and on (the order alternates by
    /// round): latency at the fixed rate and HTTP/1.1 requests per proxy
    /// core, as the latency and h1 scenarios measure them. Figures
    /// `tel_off_…` and `tel_on_…`; the report takes the ratios.
    fn telemetry_cost(&self, t: Target, apps: &[u32], round: usize, m: &mut Metrics) -> Result<()> {
        let modes = if round.is_multiple_of(2) {
            [("off", false), ("on", true)]
        } else {
            [("on", true), ("off", false)]
        };
        let exports = || -> Result<u64> {
            let (status, body) =
                http_get(self.collector, "collector", crate::collector::EXPORTS_PATH)?;
            ensure!(status == 200, "the trace collector answered {status}");
            Ok(String::from_utf8_lossy(&body).trim().parse()?)
        };
        let log = self.telemetry_log(t);
        for (mode, on) in modes {
            let _ = std::fs::remove_file(&log);
            let exported = exports()?;
            let pair = self.start_pair_with(t, 0, on)?;
            let watch: Vec<u32> = pair.iter().map(Proc::pid).collect();
            self.oha(t, Load::Warmup, &watch)?;
            let f = self.oha(
                t,
                Load::Fixed {
                    rate: self.a.rate,
                    secs: self.s.latency_secs,
                },
                &watch,
            )?;
            m.insert(format!("tel_{mode}_p50_ms"), f.p50_ms);
            m.insert(format!("tel_{mode}_p99_ms"), f.p99_ms);
            if let (Some(proxy_cpus), Some(client_cpus)) = (&self.proxy_cpus, &self.client_cpus) {
                for app in apps {
                    pin_all_threads(*app, client_cpus);
                }
                for p in &watch {
                    pin_all_threads(*p, proxy_cpus);
                }
            }
            let r = self.oha(
                t,
                Load::Closed {
                    h2: false,
                    secs: self.s.load_secs,
                },
                &watch,
            )?;
            for app in apps {
                pin_all_threads(*app, &self.all_cpus);
            }
            m.insert(
                format!("tel_{mode}_h1_req_per_core_s"),
                r.requests / (r.cpu_s.max(0.01) / 2.0),
            );
            drop(pair);
            // Telemetry was on (or off) indeed: spans reached the collector
            // (1 % of at least the warm-up and the fixed-rate run, batched)
            // and each side logged the requests.
            let spans = exports()? - exported;
            let lines = std::fs::read(&log)
                .map(|b| b.iter().filter(|c| **c == b'\n').count())
                .unwrap_or(0);
            let _ = std::fs::remove_file(&log);
            if on {
                ensure!(
                    spans > 0 && lines as f64 >= 2.0 * r.requests,
                    "{} with telemetry on: {spans} trace exports, {lines} access log lines for {} requests",
                    t.name(),
                    r.requests
                );
            } else {
                ensure!(
                    spans == 0 && lines == 0,
                    "{} with telemetry off: {spans} trace exports, {lines} access log lines",
                    t.name()
                );
            }
            m.insert(format!("tel_{mode}_trace_exports"), spans as f64);
        }
        Ok(())
    }

    /// High concurrency for a while on a fresh pair, then idle: how far RSS
    /// climbs, whether it comes back, and what the proxies still hold.
    /// Figures per proxy: the larger of the two sides.
    fn soak(&self, t: Target, m: &mut Metrics) -> Result<()> {
        let pair = self.start_pair(t, 0)?;
        let watch: Vec<u32> = pair.iter().map(Proc::pid).collect();
        let rss =
            |watch: &[u32]| -> Vec<f64> { watch.iter().map(|p| mem_mib(*p, "VmRSS:")).collect() };
        std::thread::sleep(self.s.settle);
        let idle = rss(&watch);
        let (r, failed) = self.h2load(t, self.s.soak_secs, &watch)?;
        std::thread::sleep(self.s.soak_rest);
        let after = rss(&watch);
        let held: Vec<usize> = watch.iter().map(|p| sockets(*p)).collect();
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        m.insert("soak_req_per_s".into(), r.rps);
        m.insert("soak_failed".into(), failed);
        m.insert("soak_rss_idle_mib".into(), max(&idle));
        m.insert("soak_rss_peak_mib".into(), r.rss_max_mib);
        m.insert("soak_rss_after_mib".into(), max(&after));
        // Each side against its own idle figure.
        let kept = idle
            .iter()
            .zip(&after)
            .map(|(i, a)| a - i)
            .fold(f64::MIN, f64::max);
        m.insert("soak_rss_kept_mib".into(), kept);
        m.insert(
            "soak_sockets_after".into(),
            held.iter().copied().max().unwrap_or(0) as f64,
        );
        eprintln!(
            "soak {}: {failed} requests failed; idle {idle:.1?} MiB, peak {:.1} MiB, {:.1}s after {after:.1?} MiB, sockets {held:?}",
            t.name(),
            r.rss_max_mib,
            self.s.soak_rest.as_secs_f64()
        );
        Ok(())
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

    /// h2load (as in the finding the soak reproduces): HTTP/2 with prior
    /// knowledge, 20 connections × 50 streams, as fast as it goes for
    /// `secs`, watching the RSS of `watch`. Returns the requests that failed
    /// too (a proxy that sheds load answers 503s: counted, not fatal).
    fn h2load(&self, t: Target, secs: f64, watch: &[u32]) -> Result<(LoadResult, f64)> {
        let entry = self.entry(t, PORT);
        let mut cmd = Command::new(&self.a.h2load);
        cmd.args(["-c", "20", "-m", "50", "-t", "1", "-D"])
            .arg(format!("{}", secs.ceil().max(1.0) as u64))
            .args(["-H", &format!(":authority: {}:{PORT}", configs::ECHO)])
            .arg(format!("http://{entry}/"));
        let log = self.log("h2load");
        let _ = std::fs::remove_file(&log);
        let cpu0: f64 = watch.iter().map(|p| cpu_secs(*p)).sum();
        let mut child = self.spawn("h2load", &mut cmd, None)?;
        let deadline = Instant::now() + Duration::from_secs_f64(secs + 60.0);
        let mut rss_max = 0.0f64;
        let status = loop {
            if let Some(status) = child.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "h2load against {} did not finish",
                t.name()
            );
            for p in watch {
                rss_max = rss_max.max(mem_mib(*p, "VmRSS:"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let cpu_s = watch.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(
            status.success(),
            "h2load failed ({status}) against {}; see {}",
            t.name(),
            log.display()
        );
        // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout"
        // "finished in 10.00s, 5234.50 req/s, 6.12MB/s"
        let field = |line: &str, after: &str| -> Option<f64> {
            let l = text.lines().find(|l| l.starts_with(line))?;
            let words: Vec<&str> = l.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let i = words.iter().position(|w| *w == after)?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        };
        let done = field("requests:", "succeeded").unwrap_or(0.0);
        let failed = field("requests:", "failed").unwrap_or(f64::NAN);
        let errored = field("requests:", "errored").unwrap_or(f64::NAN);
        ensure!(
            done > 0.0 && failed.is_finite() && errored.is_finite(),
            "{} under the soak: {done} succeeded, {failed} failed, {errored} errored; see {}",
            t.name(),
            log.display()
        );
        let rps = text
            .lines()
            .find(|l| l.starts_with("finished in"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|w| w.trim_end_matches(" req/s").parse().ok())
            .unwrap_or(0.0);
        let result = LoadResult {
            requests: done,
            rps,
            cpu_s,
            rss_max_mib: rss_max,
            ..Default::default()
        };
        Ok((result, failed + errored))
    }

    fn oha(&self, t: Target, load: Load, watch: &[u32]) -> Result<LoadResult> {
        // The HTTP/2 scenario goes to the app's HTTP/2 port: h2 on every hop.
        let port = match load {
            Load::Closed { h2: true, .. } => configs::H2_PORT,
            _ => PORT,
        };
        let entry = self.entry(t, port);
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
                &format!("echo:{port}:{}:{}", entry.ip(), entry.port()),
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
        cmd.arg(format!("http://echo:{port}/"));
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
