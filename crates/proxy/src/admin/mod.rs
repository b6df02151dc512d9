//! The admin server (loopback only, Envoy's paths so operators' habits carry
//! over): readiness, config dump, Prometheus stats, clusters, listeners and
//! graceful shutdown. It runs on the control thread, apart from the data
//! plane, so that a busy data plane never starves readiness probes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigStore;
use crate::listeners::Status;
use crate::snapshot::TypeState;
use crate::telemetry::Telemetry;

pub struct Admin {
    pub store: Arc<ConfigStore>,
    pub telemetry: Arc<Telemetry>,
    pub status: Arc<Status>,
    /// Set to true by `POST /quitquitquit`.
    pub quit: watch::Sender<bool>,
}

pub async fn serve(listener: std::net::TcpListener, admin: Arc<Admin>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "admin server cannot start"),
    };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, admin.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, admin: Arc<Admin>) -> Result<Reply, Infallible> {
    let json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/healthz/ready") => ready(&admin),
        (&Method::GET, "/config_dump") => config_dump(&admin),
        (&Method::GET, "/stats/prometheus") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            admin.telemetry.metrics.encode(),
        ),
        (&Method::GET, "/clusters") => clusters(&admin, json),
        (&Method::GET, "/listeners") => to_json(&admin.status.listeners()),
        (&Method::GET, "/certs") => to_json(&crate::tls::SecretsDump::of(admin.store.mesh_tls().map(Arc::as_ref))),
        (&Method::POST, "/quitquitquit") => {
            tracing::info!("shutdown requested through the admin server");
            admin.quit.send_replace(true);
            reply(StatusCode::OK, "text/plain", "OK\n".into())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "GET /ready /config_dump /stats/prometheus /clusters[?format=json] /listeners /certs; POST /quitquitquit\n".into(),
        ),
    })
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn to_json<T: Serialize>(value: &T) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(s) => reply(StatusCode::OK, "application/json", s),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode: {e}\n"),
        ),
    }
}

/// Envoy's answers: LIVE once serving, else why not.
fn ready(admin: &Admin) -> Reply {
    if admin.status.draining.load(Ordering::Acquire) {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "DRAINING\n".into(),
        )
    } else if admin.status.ready.load(Ordering::Acquire) {
        reply(StatusCode::OK, "text/plain", "LIVE\n".into())
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "PRE_INITIALIZING\n".into(),
        )
    }
}

/// The accepted resources by type, straight from the proxy's state.
fn config_dump(admin: &Admin) -> Reply {
    #[derive(Serialize)]
    struct Dump<'a> {
        configs: BTreeMap<&'static str, &'a TypeState>,
    }
    let accepted = admin.store.accepted();
    to_json(&Dump {
        configs: accepted
            .iter()
            .map(|(t, s)| (wire::types::short_name(t), &**s))
            .collect(),
    })
}

fn clusters(admin: &Admin, json: bool) -> Reply {
    #[derive(Serialize)]
    struct EndpointDump<'a> {
        address: &'a str,
        healthy: bool,
        rq_active: u64,
        rq_total: u64,
        /// Connections open (or opening) to it.
        cx_active: u32,
        /// Ejected by outlier detection now.
        ejected: bool,
        /// Times ejected since the proxy started.
        ejections: u64,
        workload: &'a str,
        version: &'a str,
    }
    #[derive(Serialize)]
    struct ClusterDump<'a> {
        name: &'a str,
        service: &'a str,
        /// Envoy's circuit breaker thresholds (4294967295: none).
        max_connections: u32,
        max_pending_requests: u32,
        max_requests: u32,
        max_retries: u32,
        endpoints: Vec<EndpointDump<'a>>,
    }
    let Some(snapshot) = admin.store.current() else {
        return if json {
            to_json(&Vec::<()>::new())
        } else {
            reply(StatusCode::OK, "text/plain", String::new())
        };
    };
    let mut list: Vec<_> = snapshot.clusters.values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let dump: Vec<ClusterDump<'_>> = list
        .iter()
        .map(|c| ClusterDump {
            name: &c.name,
            service: &c.service.host,
            max_connections: c.breakers.limits.connections,
            max_pending_requests: c.breakers.limits.pending,
            max_requests: c.breakers.limits.requests,
            max_retries: c.breakers.limits.retries,
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointDump {
                    address: &e.key,
                    healthy: e.healthy,
                    rq_active: e.load.active.load(Ordering::Relaxed),
                    rq_total: e.load.total.load(Ordering::Relaxed),
                    cx_active: e.pool.open_connections(),
                    ejected: c.is_ejected(e),
                    ejections: e.outlier.ejections(),
                    workload: &e.meta.workload,
                    version: &e.meta.version,
                })
                .collect(),
        })
        .collect();
    if json {
        return to_json(&dump);
    }
    // Envoy's text format: cluster::address::stat::value.
    let mut out = String::new();
    for c in &dump {
        for (what, v) in [
            ("max_connections", c.max_connections),
            ("max_pending_requests", c.max_pending_requests),
            ("max_requests", c.max_requests),
            ("max_retries", c.max_retries),
        ] {
            let _ = writeln!(out, "{}::default_priority::{what}::{v}", c.name);
        }
        for e in &c.endpoints {
            let health = match (e.healthy, e.ejected) {
                (true, false) => "healthy",
                (true, true) => "/failed_outlier_check",
                (false, false) => "/failed_eds_health",
                (false, true) => "/failed_eds_health/failed_outlier_check",
            };
            let _ = writeln!(out, "{}::{}::health_flags::{health}", c.name, e.address);
            let _ = writeln!(out, "{}::{}::rq_active::{}", c.name, e.address, e.rq_active);
            let _ = writeln!(out, "{}::{}::rq_total::{}", c.name, e.address, e.rq_total);
            let _ = writeln!(out, "{}::{}::cx_active::{}", c.name, e.address, e.cx_active);
            let _ = writeln!(
                out,
                "{}::{}::outlier_ejections::{}",
                c.name, e.address, e.ejections
            );
        }
    }
    reply(StatusCode::OK, "text/plain", out)
}
