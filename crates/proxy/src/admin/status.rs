//! Istio's status port (15020 on the pod's address), which the kubelet and
//! Prometheus reach directly (it is never captured):
//! - `GET /app-health/<container>/livez|readyz|startupz`: the application's
//!   own probe, made from inside the pod. The injector points the kubelet's
//!   HTTP(S), TCP and gRPC probes here so that they pass under STRICT mTLS,
//!   and hands the originals over in `ISTIO_KUBE_APP_PROBERS` (JSON, keyed
//!   by path); [`super::app_health`] runs them. An HTTP probe answers with
//!   the application's status code; a TCP or gRPC probe 200 if it passes,
//!   500 otherwise.
//! - `GET /healthz/ready`: the proxy's readiness.
//! - `GET /stats/prometheus`: the proxy's metrics followed by the
//!   application's, when the pod's original `prometheus.io/*` annotations
//!   (`ISTIO_PROMETHEUS_ANNOTATIONS`) name a port (Istio's metrics merging).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use serde::Deserialize;

use super::stats::{self, AppMetrics};
use super::{Admin, Reply, prometheus, ready, reply};

pub use super::app_health::{AppProbe, GrpcAction, Header, HttpGet, TcpSocket};

/// The original `prometheus.io/*` annotations of the pod.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct PrometheusAnnotations {
    scrape: Option<String>,
    path: Option<String>,
    port: Option<String>,
}

impl PrometheusAnnotations {
    /// The application's metrics endpoint, unless it asked not to be scraped.
    fn endpoint(&self, app_ip: IpAddr) -> Option<AppMetrics> {
        if self.scrape.as_deref() == Some("false") {
            return None;
        }
        let port = self.port.as_deref()?.parse().ok()?;
        Some(AppMetrics {
            addr: SocketAddr::new(app_ip, port),
            path: self.path.clone().unwrap_or_else(|| "/metrics".into()),
        })
    }
}

/// What the status port serves beyond the proxy's own readiness.
#[derive(Clone, Debug, Default)]
pub struct StatusConfig {
    /// Keyed by path (`/app-health/<container>/<kind>`).
    pub probers: BTreeMap<String, AppProbe>,
    /// Where the application listens (the proxy's `app_ip`).
    pub app_ip: Option<IpAddr>,
    /// The application's own metrics, merged into `/stats/prometheus`.
    pub app_metrics: Option<AppMetrics>,
}

impl StatusConfig {
    /// From the injector's environment variables' values (each may be empty).
    pub fn from_env(
        probers: Option<&str>,
        prometheus: Option<&str>,
        app_ip: IpAddr,
    ) -> Result<StatusConfig, String> {
        let probers = match probers.filter(|s| !s.trim().is_empty()) {
            Some(json) => {
                serde_json::from_str(json).map_err(|e| format!("ISTIO_KUBE_APP_PROBERS: {e}"))?
            }
            None => BTreeMap::new(),
        };
        let app_metrics = match prometheus.filter(|s| !s.trim().is_empty()) {
            Some(json) => serde_json::from_str::<PrometheusAnnotations>(json)
                .map_err(|e| format!("ISTIO_PROMETHEUS_ANNOTATIONS: {e}"))?
                .endpoint(app_ip),
            None => None,
        };
        Ok(StatusConfig {
            probers,
            app_ip: Some(app_ip),
            app_metrics,
        })
    }
}

/// Serves the status port on `listener`.
pub async fn serve_status(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    config: Arc<StatusConfig>,
) {
    super::accept_loop(listener, "status", move |req, _| {
        let (admin, config) = (admin.clone(), config.clone());
        async move { Ok::<_, Infallible>(handle(req, &admin, &config).await) }
    })
    .await
}

async fn handle<B>(req: Request<B>, admin: &Arc<Admin>, config: &StatusConfig) -> Reply {
    let path = req.uri().path();
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let app_ip = config.app_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if path == "/healthz/ready" {
        return ready(admin);
    }
    if path == "/stats/prometheus" {
        return prometheus(stats::merged(admin));
    }
    if path.starts_with("/app-health/") {
        let Some(probe) = config.probers.get(path) else {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no application probe {path}\n"),
            );
        };
        return app_probe(probe, app_ip).await;
    }
    reply(
        StatusCode::NOT_FOUND,
        "text/plain",
        "GET /healthz/ready /app-health/<container>/<livez|readyz|startupz> /stats/prometheus\n"
            .into(),
    )
}

/// The application's answer to an HTTP probe is passed on (its status
/// code); a TCP or gRPC probe that passes is 200; one that cannot be made
/// or fails is 500 with the reason.
async fn app_probe(probe: &AppProbe, app_ip: IpAddr) -> Reply {
    match super::app_health::check(probe, app_ip).await {
        Ok(status) => reply(status, "text/plain", String::new()),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probers_from_the_injector() {
        let c = StatusConfig::from_env(
            Some(r#"{"/app-health/app/livez":{"httpGet":{"path":"/health","port":9080,"scheme":"HTTP"},"timeoutSeconds":2},"/app-health/app/readyz":{"tcpSocket":{"port":9080},"timeoutSeconds":1}}"#),
            Some(r#"{"scrape":"true","port":"9090"}"#),
            IpAddr::from([127, 0, 0, 1]),
        )
        .unwrap();
        assert_eq!(c.probers["/app-health/app/livez"].timeout_seconds, 2);
        assert_eq!(
            c.probers["/app-health/app/readyz"].tcp_socket,
            Some(TcpSocket { port: 9080 })
        );
        let app = c.app_metrics.unwrap();
        assert_eq!((app.addr.port(), app.path.as_str()), (9090, "/metrics"));
        assert!(StatusConfig::from_env(Some("{"), None, IpAddr::from([127, 0, 0, 1])).is_err());
    }
}
