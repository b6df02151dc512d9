//! Prometheus endpoints where Istio has them: the proxy's own metrics (the
//! standard metrics and its health) on the admin port and on 15090
//! `/stats/prometheus`, and on 15020 `/stats/prometheus` those merged with
//! the application's own metrics, as Istio's agent merges them for pods
//! annotated `prometheus.io/scrape` (the annotation's port and path name
//! the application's endpoint).

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::Admin;

/// The Prometheus text format Envoy and Istio's agent serve.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the merged endpoint waits for the application's metrics.
const APP_TIMEOUT: Duration = Duration::from_secs(5);

/// The application's own metrics endpoint, to merge on 15020.
#[derive(Clone, Debug)]
pub struct AppMetrics {
    pub addr: SocketAddr,
    pub path: String,
}

/// The proxy's metrics, chunk by chunk as the connection takes them (a
/// scrape never holds its whole text): Istio's standard metrics, then the
/// policies' counters and its health series (a few lines each).
pub fn proxy(admin: &Arc<Admin>) -> impl Stream<Item = String> + Send + 'static {
    let (server, client) = admin.store.current().map_or((None, None), |s| {
        (s.metrics.server.clone(), s.metrics.client.clone())
    });
    let admin = admin.clone();
    let standard = admin.telemetry.metrics.exposition(server, client);
    stream::iter(standard.chain(std::iter::once_with(move || {
        let mut out = String::new();
        crate::policy::jwt::encode_metrics(&mut out);
        crate::policy::stats::encode(&mut out);
        health(&admin, &mut out);
        out
    })))
}

fn health(admin: &Admin, out: &mut String) {
    let live = admin.status.ready.load(Ordering::Acquire)
        && !admin.status.draining.load(Ordering::Acquire);
    let _ = writeln!(
        out,
        "# HELP envoy_server_live 1 while the proxy serves (config and identity ready, not draining).\n# TYPE envoy_server_live gauge\nenvoy_server_live {}",
        u8::from(live)
    );
    // What Istio's proxies report (the "Istio Components by Version" panels).
    let _ = writeln!(
        out,
        "# HELP istio_build Istio component build info\n# TYPE istio_build gauge\nistio_build{{component=\"proxy\",tag=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP envoy_server_total_connections Downstream HTTP connections open.\n# TYPE envoy_server_total_connections gauge\nenvoy_server_total_connections {}",
        admin.telemetry.connections.load(Ordering::Relaxed)
    );
    if let Some(snapshot) = admin.store.current() {
        let _ = writeln!(
            out,
            "# HELP envoy_cluster_upstream_cx_active Upstream connections open, by cluster.\n# TYPE envoy_cluster_upstream_cx_active gauge"
        );
        let mut clusters: Vec<_> = snapshot.clusters.values().collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        for c in clusters {
            let open: u64 = c
                .endpoints()
                .iter()
                .map(|e| u64::from(e.open_connections()))
                .sum();
            if open > 0 {
                let _ = writeln!(
                    out,
                    "envoy_cluster_upstream_cx_active{{cluster_name=\"{}\"}} {open}",
                    c.name
                );
            }
        }
    }
    if let Some(cert) = admin.store.mesh_tls().and_then(|m| m.current()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left = cert.not_after.unix_timestamp() - now;
        let _ = writeln!(
            out,
            "# HELP istio_agent_cert_expiry_seconds Seconds until the workload certificate expires.\n# TYPE istio_agent_cert_expiry_seconds gauge\nistio_agent_cert_expiry_seconds {left}"
        );
        let _ = writeln!(
            out,
            "# HELP envoy_server_days_until_first_cert_expiring Days until the workload certificate expires.\n# TYPE envoy_server_days_until_first_cert_expiring gauge\nenvoy_server_days_until_first_cert_expiring {}",
            left.max(0) / 86_400
        );
    }
    let accepted = admin.store.accepted();
    admin.store.updates.encode(out, &|t| {
        accepted
            .iter()
            .find(|(k, _)| **k == t)
            .map(|(_, s)| s.version.clone())
    });
}

/// 15020: the proxy's metrics, then the application's if it has any. An
/// application that does not answer leaves the proxy's alone, as Istio's
/// agent does. The application's text is fetched whole (within
/// [`APP_TIMEOUT`], or left out) once the proxy's is sent: its size is the
/// application's, not the mesh's.
pub fn merged(admin: &Arc<Admin>) -> impl Stream<Item = String> + Send + 'static {
    let app = admin.app_metrics.clone();
    let app_text = async move { app_text(app.as_ref()?).await };
    proxy(admin).chain(stream::once(app_text).filter_map(std::future::ready))
}

/// The application's metrics, to append to the proxy's.
async fn app_text(app: &AppMetrics) -> Option<String> {
    match tokio::time::timeout(APP_TIMEOUT, fetch(app)).await {
        Ok(Ok(text)) => {
            // An OpenMetrics body ends in "# EOF", which would end ours.
            let mut out = String::with_capacity(text.len());
            for line in text.lines().filter(|l| l.trim() != "# EOF") {
                out.push_str(line);
                out.push('\n');
            }
            Some(out)
        }
        Ok(Err(e)) => {
            tracing::debug!(app = %app.addr, path = app.path, error = %e, "cannot scrape the application's metrics");
            None
        }
        Err(_) => {
            tracing::debug!(app = %app.addr, path = app.path, "the application's metrics timed out");
            None
        }
    }
}

async fn fetch(app: &AppMetrics) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(app.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(app.path.as_str())
        .header(http::header::HOST, app.addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
