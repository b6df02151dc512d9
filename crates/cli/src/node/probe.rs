//! Container probes as a kubelet runs them, from the host against the
//! pod's address: HTTP GET (success: 200–399) and TCP connect; `exec`
//! runs the command in the pod's network namespace. The injected
//! sidecar's probes reach its 15021 (`/healthz/ready`), and the
//! application's, rewritten by the injector, its 15020 (`/app-health/…`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use crate::local::netns;

/// One probe of one container, with the kubelet's thresholds.
pub struct ProbeState {
    probe: Probe,
    ports: Vec<(String, i32)>,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The verdict: reached `successThreshold` successes in a row, not
    /// since `failureThreshold` failures.
    pub passing: bool,
    /// The last failure, for the pod's status.
    pub last_error: Option<String>,
}

impl ProbeState {
    pub fn new(probe: &Probe, container: &Container) -> ProbeState {
        let ports = container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
            .collect();
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        ProbeState {
            probe: probe.clone(),
            ports,
            next: Instant::now() + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            passing: false,
            last_error: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }

    /// Runs the probe if it is due; returns whether its verdict changed.
    pub async fn tick(&mut self, pod_ip: Ipv4Addr, ns: &str, uid: u32) -> bool {
        if Instant::now() < self.next {
            return false;
        }
        self.next = Instant::now() + self.period();
        let before = self.passing;
        match self.run(pod_ip, ns, uid).await {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                self.last_error = None;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = true;
                }
            }
            Err(e) => {
                self.successes = 0;
                self.failures += 1;
                self.last_error = Some(e);
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("no container port named {name:?}"))?,
        };
        u16::try_from(n).map_err(|_| format!("{n} is not a port"))
    }

    async fn run(&self, pod_ip: Ipv4Addr, ns: &str, uid: u32) -> Result<(), String> {
        let timeout = Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        if let Some(http) = &self.probe.http_get {
            let port = self.port(&http.port)?;
            let scheme = http.scheme.as_deref().unwrap_or("HTTP");
            if !scheme.eq_ignore_ascii_case("http") {
                return Err(format!("{scheme} probes are not supported by trellis node"));
            }
            let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let path = http.path.as_deref().unwrap_or("/");
            let url = format!("http://{host}:{port}{path}");
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let mut request = client.get(&url).header("User-Agent", "kube-probe/trellis");
            for h in http.http_headers.iter().flatten() {
                request = request.header(&h.name, &h.value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status().as_u16();
            return if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("GET {url}: HTTP {status}"))
            };
        }
        if let Some(tcp) = &self.probe.tcp_socket {
            let port = self.port(&tcp.port)?;
            let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let addr = format!("{host}:{port}");
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!("connect {addr}: timed out")),
            };
        }
        if let Some(exec) = &self.probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let Some((program, args)) = command.split_first() else {
                return Err("exec probe without a command".into());
            };
            let (ip, all) = netns::in_pod(ns, uid, Path::new(program), args);
            let run = tokio::process::Command::new(ip)
                .args(all)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            return match tokio::time::timeout(timeout, run).await {
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => Err(format!("{program}: {}", out.status)),
                Ok(Err(e)) => Err(format!("{program}: {e}")),
                Err(_) => Err(format!("{program}: timed out")),
            };
        }
        Err("only httpGet, tcpSocket and exec probes are supported by trellis node".into())
    }
}
