//! The results: medians over the rounds, the Markdown table (with the
//! Trellis ÷ Envoy ratio and issue 7's targets), the JSON, and the part of
//! docs/benchmarks.md between the data-plane markers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde_json::{Value, json};

use crate::{Bench, Metrics, Target};

pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn loadavg() -> String {
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
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

pub(crate) fn machine(cpus: usize) -> Value {
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
    /// Trellis's own figure at least this.
    AtLeast(f64, &'static str),
    None,
}

struct Row {
    label: String,
    key: &'static str,
    decimals: usize,
    goal: Goal,
}

fn rows(rate: u64, services: usize, pinned: bool, mtls: bool, soak: (f64, f64)) -> Vec<Row> {
    let hop = if mtls { "mTLS" } else { "plaintext" };
    let pair = if pinned {
        " (both proxies share one core)"
    } else {
        ""
    };
    let r = |label: String, key, decimals, goal| Row {
        label,
        key,
        decimals,
        goal,
    };
    vec![
        r(
            format!("HTTP/1.1 1 KB at {rate} rps: p50 latency, ms"),
            "lat_p50_ms",
            3,
            Goal::None,
        ),
        r(
            format!("HTTP/1.1 1 KB at {rate} rps: p90 latency, ms"),
            "lat_p90_ms",
            3,
            Goal::None,
        ),
        r(
            format!("HTTP/1.1 1 KB at {rate} rps: p99 latency, ms"),
            "lat_p99_ms",
            3,
            Goal::None,
        ),
        r(
            format!("added by the sidecar pair ({hop}): p50, ms"),
            "added_p50_ms",
            3,
            Goal::RatioAtMost(0.5),
        ),
        r(
            format!("added by the sidecar pair ({hop}): p90, ms"),
            "added_p90_ms",
            3,
            Goal::None,
        ),
        r(
            format!("added by the sidecar pair ({hop}): p99, ms"),
            "added_p99_ms",
            3,
            Goal::RatioAtMost(0.5),
        ),
        r(
            format!("CPU seconds per 1,000 requests at {rate} rps, both proxies"),
            "cpu_s_per_1k",
            4,
            Goal::RatioAtMost(0.5),
        ),
        r(
            format!("HTTP/1.1 closed loop, 32 connections, req/s{pair}"),
            "h1_rps",
            0,
            Goal::None,
        ),
        r(
            "HTTP/1.1 requests per proxy CPU-second (max req/s per proxy core)".into(),
            "h1_req_per_core_s",
            0,
            Goal::RatioAtLeast(1.5),
        ),
        r(
            format!("HTTP/2 closed loop, 4 connections × 8 streams, req/s{pair}"),
            "h2_rps",
            0,
            Goal::None,
        ),
        r(
            "HTTP/2 requests per proxy CPU-second (max req/s per proxy core)".into(),
            "h2_req_per_core_s",
            0,
            Goal::RatioAtLeast(1.5),
        ),
        r(
            format!(
                "gRPC unary closed loop (128 B → 1 KB), 4 connections × 8 calls, calls/s{pair}"
            ),
            "grpc_rps",
            0,
            Goal::None,
        ),
        r(
            "gRPC calls per proxy CPU-second".into(),
            "grpc_req_per_core_s",
            0,
            Goal::None,
        ),
        r(
            "gRPC unary closed loop: p50 latency, ms".into(),
            "grpc_p50_ms",
            3,
            Goal::None,
        ),
        r(
            "gRPC unary closed loop: p99 latency, ms".into(),
            "grpc_p99_ms",
            3,
            Goal::None,
        ),
        r(
            format!(
                "new {} connections/s to the server side, 8 clients, 1 request each{pair}",
                if mtls { "TCP+mTLS" } else { "TCP" }
            ),
            "conn_rps",
            0,
            Goal::None,
        ),
        r(
            format!(
                "new {} connections per server-side proxy CPU-second",
                if mtls { "mTLS (full handshake)" } else { "TCP" }
            ),
            "conn_per_core_s",
            0,
            Goal::None,
        ),
        r(
            "idle RSS per proxy, MiB".into(),
            "rss_idle_mib",
            1,
            Goal::AtMost(8.0, "≤ 8 MiB"),
        ),
        r(
            format!("RSS per proxy under {rate} rps, MiB"),
            "rss_load_mib",
            1,
            Goal::None,
        ),
        r(
            "peak RSS (VmHWM) per proxy after all loads, MiB".into(),
            "hwm_mib",
            1,
            Goal::None,
        ),
        r(
            format!("idle RSS per proxy, {services}-service config, MiB"),
            "mesh_rss_idle_mib",
            1,
            Goal::None,
        ),
        r(
            format!("RSS per proxy under {rate} rps, {services}-service config, MiB"),
            "mesh_rss_load_mib",
            1,
            Goal::AtMost(20.0, "≤ 20 MiB"),
        ),
        r(
            format!("start to ready, {services}-service config, s"),
            "mesh_ready_s",
            2,
            Goal::None,
        ),
        r(
            format!(
                "soak: HTTP/2, 20 connections × 50 streams for {:.0} s, req/s",
                soak.0
            ),
            "soak_req_per_s",
            0,
            Goal::None,
        ),
        r(
            "soak: requests failed (non-2xx or errors)".into(),
            "soak_failed",
            0,
            Goal::None,
        ),
        r(
            "soak: idle RSS per proxy before the load, MiB".into(),
            "soak_rss_idle_mib",
            1,
            Goal::None,
        ),
        r(
            "soak: peak RSS per proxy under the load, MiB".into(),
            "soak_rss_peak_mib",
            1,
            Goal::RatioAtMost(0.5),
        ),
        r(
            format!("soak: RSS per proxy {:.0} s after the load, MiB", soak.1),
            "soak_rss_after_mib",
            1,
            Goal::None,
        ),
        r(
            format!(
                "soak: RSS kept per proxy {:.0} s after the load (after − idle), MiB",
                soak.1
            ),
            "soak_rss_kept_mib",
            1,
            Goal::AtMost(2.0, "≤ 2 MiB"),
        ),
        r(
            format!(
                "soak: sockets held per proxy {:.0} s after the load",
                soak.1
            ),
            "soak_sockets_after",
            0,
            Goal::None,
        ),
        r(
            format!("telemetry off: added p50 at {rate} rps, ms"),
            "tel_off_added_p50_ms",
            3,
            Goal::None,
        ),
        r(
            format!("telemetry on (tracing 1 %, access log): added p50 at {rate} rps, ms"),
            "tel_on_added_p50_ms",
            3,
            Goal::None,
        ),
        r(
            "telemetry on ÷ off: added p50 latency".into(),
            "tel_added_p50_ratio",
            2,
            Goal::AtMost(1.1, "≤ 1.10 (issue 17)"),
        ),
        r(
            "telemetry on ÷ off: added p99 latency".into(),
            "tel_added_p99_ratio",
            2,
            Goal::AtMost(1.1, "≤ 1.10 (issue 17)"),
        ),
        r(
            "telemetry off: HTTP/1.1 requests per proxy CPU-second".into(),
            "tel_off_h1_req_per_core_s",
            0,
            Goal::None,
        ),
        r(
            "telemetry on: HTTP/1.1 requests per proxy CPU-second".into(),
            "tel_on_h1_req_per_core_s",
            0,
            Goal::None,
        ),
        r(
            "telemetry on ÷ off: requests per proxy CPU-second".into(),
            "tel_req_per_core_ratio",
            2,
            Goal::AtLeast(0.9, "≥ 0.90 (issue 17)"),
        ),
    ]
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub struct Report {
    samples: Vec<(usize, Target, Metrics)>,
    medians: BTreeMap<&'static str, Metrics>,
    rows: Vec<Row>,
    header: String,
    settings: Value,
    machine: Value,
    versions: Value,
}

impl Report {
    pub fn new(
        b: &Bench,
        mut samples: Vec<(usize, Target, Metrics)>,
        started: String,
        load_start: String,
    ) -> Report {
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
                if let (Some(x), Some(d)) = (
                    m.get(&format!("lat_{p}_ms")),
                    direct
                        .get(round)
                        .and_then(|d| d.get(&format!("lat_{p}_ms"))),
                ) {
                    m.insert(format!("added_{p}_ms"), x - d);
                }
            }
            // Telemetry's cost: added latency on against off, per round.
            let d = |p: &str| {
                direct
                    .get(round)
                    .and_then(|d| d.get(&format!("lat_{p}_ms")))
                    .copied()
            };
            for p in ["p50", "p99"] {
                let (Some(off), Some(on), Some(d)) = (
                    m.get(&format!("tel_off_{p}_ms")).copied(),
                    m.get(&format!("tel_on_{p}_ms")).copied(),
                    d(p),
                ) else {
                    continue;
                };
                m.insert(format!("tel_off_added_{p}_ms"), off - d);
                m.insert(format!("tel_on_added_{p}_ms"), on - d);
                // (A smoke run's added latency can be about zero, or below.)
                if off - d != 0.0 {
                    m.insert(format!("tel_added_{p}_ratio"), (on - d) / (off - d));
                }
            }
            if let (Some(off), Some(on)) = (
                m.get("tel_off_h1_req_per_core_s").copied(),
                m.get("tel_on_h1_req_per_core_s").copied(),
            ) && off > 0.0
            {
                m.insert("tel_req_per_core_ratio".into(), on / off);
            }
        }
        let mut medians = BTreeMap::new();
        for t in [Target::Direct, Target::Trellis, Target::Envoy] {
            let mut keys: Vec<String> = samples
                .iter()
                .filter(|(_, tt, _)| *tt == t)
                .flat_map(|(_, _, m)| m.keys().cloned())
                .collect();
            keys.sort();
            keys.dedup();
            let mut med = Metrics::new();
            for k in keys {
                let vals = samples
                    .iter()
                    .filter(|(_, tt, _)| *tt == t)
                    .filter_map(|(_, _, m)| m.get(&k).copied())
                    .collect();
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
        // What each hop of the HTTP/2 scenario spoke, and to which app.
        let h2_app = match b.a.h2_app {
            crate::H2App::Nginx => format!(
                "nginx {} (h2c only, strict about the authority)",
                first_line(&b.a.nginx, &["-v"]).trim_start_matches("nginx version: nginx/")
            ),
            crate::H2App::Builtin => "the benchmark's own upstream (hyper, h2c)".to_string(),
        };
        let settings = json!({
            "quick": b.a.quick,
            "rounds": b.s.rounds,
            "rate_rps": b.a.rate,
            "latency_secs": b.s.latency_secs,
            "closed_loop_secs": b.s.load_secs,
            "grpc_secs": b.s.grpc_secs,
            "new_connection_secs": b.s.conn_secs,
            "mesh_services": b.s.services,
            "mesh_load_secs": b.s.mesh_load_secs,
            "body_bytes": b.a.body_size,
            "mtls": b.certs.is_some(),
            "h2_app": h2_app,
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
             one worker per proxy (`--workers 1` / `--concurrency 1`); {hop}.  \n\
             HTTP/1.1 and gRPC scenarios: the app is the benchmark's own upstream, spoken to in the client's protocol; \
             HTTP/2 scenario: HTTP/2 on every hop (client → sidecar → sidecar → app), the app {h2_app}.\n",
            hop = if b.certs.is_some() {
                "**mTLS between the sidecars** (ISTIO_MUTUAL with the server's SPIFFE id checked, STRICT inbound; ECDSA P-256)"
            } else {
                "**plaintext between the sidecars** (`--plaintext`)"
            },
            quick = if b.a.quick {
                " (**--quick: a smoke run, the figures mean nothing**)"
            } else {
                ""
            },
            cpus = machine["cpus"],
            model = machine["cpu_model"].as_str().unwrap_or(""),
            mem = machine["memory_gib"],
            kernel = machine["kernel"].as_str().unwrap_or(""),
            load_end = settings["loadavg_end"].as_str().unwrap_or(""),
            envoy = short_envoy(versions["envoy"].as_str().unwrap_or("")),
            oha = versions["oha"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("oha "),
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
            rows: rows(
                b.a.rate,
                b.s.services,
                b.proxy_cpus.is_some(),
                b.certs.is_some(),
                (b.s.soak_secs, b.s.soak_rest.as_secs_f64()),
            ),
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
            (Goal::RatioAtMost(g), Some(r), _) => {
                format!("≤ {g}× — {}", if r <= g { "met" } else { "**missed**" })
            }
            (Goal::RatioAtLeast(g), Some(r), _) => {
                format!("≥ {g}× — {}", if r >= g { "met" } else { "**missed**" })
            }
            (Goal::AtMost(g, text), _, Some(x)) => {
                format!("{text} — {}", if x <= g { "met" } else { "**missed**" })
            }
            (Goal::AtLeast(g, text), _, Some(x)) => {
                format!("{text} — {}", if x >= g { "met" } else { "**missed**" })
            }
            _ => String::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = self.header.clone();
        s.push('\n');
        s.push_str("| Figure | Direct | Trellis | Envoy | Trellis ÷ Envoy | Target (issue 7) |\n");
        s.push_str("|---|--:|--:|--:|--:|---|\n");
        for row in &self.rows {
            let cell = |t: Target| {
                self.get(t, row.key).map_or("—".to_string(), |x| {
                    format!("{x:.prec$}", prec = row.decimals)
                })
            };
            let ratio = self
                .ratio(row.key)
                .map_or("—".into(), |r| format!("{r:.2}"));
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

    pub fn json(&self, md: &str) -> Value {
        let rounds: Vec<Value> = self
            .samples
            .iter()
            .map(|(r, t, m)| json!({ "round": r + 1, "target": t.name(), "metrics": m }))
            .collect();
        let ratios: BTreeMap<&str, Option<f64>> = self
            .rows
            .iter()
            .map(|r| (r.key, self.ratio(r.key)))
            .collect();
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
        Some(rev) => format!(
            "{} (commit {rev}, work tree as built)",
            version.trim_start_matches("cli ")
        ),
        None => version,
    }
}

const BEGIN: &str = "<!-- data-plane results: begin (bench/run.sh rewrites this part) -->";
const END: &str = "<!-- data-plane results: end -->";

/// Replaces the part between the markers; appends a Data plane section if they are missing.
pub fn write_doc(path: &Path, md: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{BEGIN}\n{md}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n## Data plane\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}
