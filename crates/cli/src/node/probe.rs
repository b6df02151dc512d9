//! Container probes as a kubelet runs them, from the host against the
//! pod's address: HTTP(S) GET (success: 200–399; HTTPS unverified), TCP
//! connect and gRPC health checks, made by the sidecar's own prober
//! ([`proxy::admin::app_health`]); `exec` runs the command in the pod's
//! network namespace. The injected sidecar's probes reach its 15021
//! (`/healthz/ready`), and the application's, rewritten by the injector,
//! its 15020 (`/app-health/…`).
//!
//! Liveness and startup probes that fail `failureThreshold` times in a row
//! get the container restarted ([`ProbeState::failed`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proxy::admin::app_health::{self, AppProbe, GrpcAction, Header, HttpGet, TcpSocket};
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

    /// Whether it has failed `failureThreshold` times in a row: a liveness
    /// or startup probe's container is then restarted.
    pub fn failed(&self) -> bool {
        self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
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
        let timeout_seconds = timeout.as_secs();
        if let Some(http) = &self.probe.http_get {
            let port = self.port(&http.port)?;
            let ip = address(http.host.as_deref(), pod_ip).await?;
            let probe = AppProbe {
                http_get: Some(HttpGet {
                    path: http.path.clone().unwrap_or_else(|| "/".into()),
                    port,
                    host: None,
                    scheme: http.scheme.clone(),
                    http_headers: http
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| Header {
                            name: h.name.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                }),
                tcp_socket: None,
                grpc: None,
                timeout_seconds,
            };
            let status = app_health::check(&probe, ip).await?;
            return if (200..400).contains(&status.as_u16()) {
                Ok(())
            } else {
                Err(format!(
                    "GET {ip}:{port}{}: HTTP {}",
                    http.path.as_deref().unwrap_or("/"),
                    status.as_u16()
                ))
            };
        }
        if let Some(tcp) = &self.probe.tcp_socket {
            let port = self.port(&tcp.port)?;
            let ip = address(tcp.host.as_deref(), pod_ip).await?;
            let probe = AppProbe {
                http_get: None,
                tcp_socket: Some(TcpSocket { port }),
                grpc: None,
                timeout_seconds,
            };
            return app_health::check(&probe, ip).await.map(|_| ());
        }
        if let Some(grpc) = &self.probe.grpc {
            let port =
                u16::try_from(grpc.port).map_err(|_| format!("{} is not a port", grpc.port))?;
            let probe = AppProbe {
                http_get: None,
                tcp_socket: None,
                grpc: Some(GrpcAction {
                    port,
                    service: grpc.service.clone(),
                }),
                timeout_seconds,
            };
            return app_health::check(&probe, IpAddr::V4(pod_ip))
                .await
                .map(|_| ());
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
        Err("the probe has none of httpGet, tcpSocket, grpc and exec".into())
    }
}

/// Where a probe connects: its `host` (an address, or a name resolved as
/// the kubelet resolves it, on the host), else the pod's address.
async fn address(host: Option<&str>, pod_ip: Ipv4Addr) -> Result<IpAddr, String> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Ok(IpAddr::V4(pod_ip));
    };
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("probe host {host}: {e}"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("probe host {host}: no address"))
}
