//! The admin server (loopback only, Envoy's paths so operators' habits carry
//! over): readiness, config dump, Prometheus stats, clusters, listeners and
//! graceful shutdown; and Istio's health port (15021), which serves readiness
//! alone. Both run on the control thread, apart from the data plane, so that
//! a busy data plane never starves readiness probes.
//!
//! Views are open to whoever reaches the port (keys are redacted in all of
//! them); what changes the proxy needs the caller to prove the right (see [`auth`]).

pub mod app_health;
pub mod auth;
pub mod stats;
pub mod status;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{AdminAuth, AdminToken};

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
    /// Who may use the mutating endpoints.
    pub auth: AdminAuth,
    /// Set by `POST /healthcheck/fail`, cleared by `POST /healthcheck/ok`:
    /// readiness then fails, so that load balancers stop sending here.
    pub health_failed: AtomicBool,
    /// The application's own metrics, merged into 15020's.
    pub app_metrics: Option<stats::AppMetrics>,
}

/// Serves the admin API on `listener`.
pub async fn serve(listener: std::net::TcpListener, admin: Arc<Admin>) {
    accept_loop(listener, "admin", move |req, peer| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &admin)) }
    })
    .await
}

/// Serves Istio's health port: `GET /healthz/ready`, which a kubelet's
/// readiness probe (and `trellis up`) asks; nothing else, so that it may
/// listen on the pod's address.
pub async fn serve_health(listener: std::net::TcpListener, admin: Arc<Admin>) {
    accept_loop(listener, "health", move |req, _| {
        let admin = admin.clone();
        async move {
            Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                (&Method::GET, "/healthz/ready") => ready(&admin),
                _ => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "GET /healthz/ready\n".into(),
                ),
            })
        }
    })
    .await
}

/// Serves Prometheus's scrape endpoint `GET /stats/prometheus` with the
/// proxy's own metrics (Istio's 15090, on the pod's address); the status
/// port (15020, [`status`]) serves them merged with the application's.
/// `GET /stats/recent`: the recent errors and slowest requests
/// ([`crate::telemetry::recent`]: ids, codes, flags, durations and
/// workloads; no paths, headers or bodies), which the dashboard reads.
pub async fn serve_stats(listener: std::net::TcpListener, admin: Arc<Admin>) {
    accept_loop(listener, "metrics", move |req, _| {
        let admin = admin.clone();
        async move {
            Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                (&Method::GET, "/stats/prometheus") => prometheus(stats::proxy(&admin)),
                (&Method::GET, "/stats/recent") => to_json(&admin.telemetry.recent.read()),
                _ => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "GET /stats/prometheus /stats/recent\n".into(),
                ),
            })
        }
    })
    .await
}

async fn accept_loop<F, Fut>(listener: std::net::TcpListener, what: &'static str, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Reply, Infallible>> + Send + 'static,
{
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "{what} server cannot start"),
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler(req, peer));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A body whole or streamed (the metrics, a chunk at a time).
type Reply = Response<UnsyncBoxBody<Bytes, Infallible>>;

const USAGE: &str = "GET /ready /config_dump /stats/prometheus /stats/recent /clusters[?format=json] /listeners /certs; \
POST (with the admin token) /quitquitquit /healthcheck/fail /healthcheck/ok\n";

fn handle(req: Request<Incoming>, peer: SocketAddr, admin: &Arc<Admin>) -> Reply {
    let json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    let path = req.uri().path();
    if let Some(change) = Change::of(path) {
        if req.method() != Method::POST {
            // As Envoy: a change is never made by a GET (a link, a prefetch).
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                format!("{path} needs a POST\n"),
            );
        }
        if let Err(refusal) = admin.auth.check(peer, req.headers()) {
            tracing::warn!(%peer, path, reason = %refusal, "admin request refused");
            let mut resp = reply(refusal.status(), "text/plain", format!("{refusal}\n"));
            if refusal.status() == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"trellis-proxy admin\""),
                );
            }
            return resp;
        }
        tracing::info!(%peer, path, "admin change requested");
        return change.apply(admin);
    }
    match (req.method(), path) {
        (&Method::GET, "/ready" | "/healthz/ready") => ready(admin),
        (&Method::GET, "/config_dump") => config_dump(admin),
        (&Method::GET, "/stats/prometheus") => prometheus(stats::proxy(admin)),
        (&Method::GET, "/stats/recent") => to_json(&admin.telemetry.recent.read()),
        (&Method::GET, "/clusters") => clusters(admin, json),
        (&Method::GET, "/listeners") => to_json(&admin.status.listeners()),
        (&Method::GET, "/certs") => to_json(&crate::tls::SecretsDump::of(
            admin.store.mesh_tls().map(Arc::as_ref),
        )),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", USAGE.into()),
    }
}

/// What the mutating endpoints do.
#[derive(Clone, Copy)]
enum Change {
    /// Drain and stop.
    Quit,
    /// Fail readiness from now on.
    FailHealth,
    /// Pass readiness again.
    RestoreHealth,
}

impl Change {
    fn of(path: &str) -> Option<Change> {
        Some(match path {
            "/quitquitquit" => Change::Quit,
            "/healthcheck/fail" => Change::FailHealth,
            "/healthcheck/ok" => Change::RestoreHealth,
            _ => return None,
        })
    }

    fn apply(self, admin: &Admin) -> Reply {
        match self {
            Change::Quit => {
                tracing::info!("shutdown requested through the admin server");
                // After this reply is on its way: an idle proxy drains at
                // once and its process could end before writing the 200
                // (the caller then sees the connection close instead).
                let quit = admin.quit.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(QUIT_REPLY_GRACE).await;
                    quit.send_replace(true);
                });
            }
            Change::FailHealth => admin.health_failed.store(true, Ordering::Release),
            Change::RestoreHealth => admin.health_failed.store(false, Ordering::Release),
        }
        reply(StatusCode::OK, "text/plain", "OK\n".into())
    }
}

/// How long `POST /quitquitquit` waits before the drain begins, for its
/// reply to be written.
const QUIT_REPLY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A scrape's answer: the metrics' text, sent a chunk at a time as the
/// connection takes it.
fn prometheus(chunks: impl Stream<Item = String> + Send + 'static) -> Reply {
    let body = StreamBody::new(chunks.map(|c| Ok(Frame::data(Bytes::from(c)))));
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(stats::CONTENT_TYPE),
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

/// Envoy's answers: LIVE once serving (identity and first config in force,
/// every listener bound), else why not.
fn ready(admin: &Admin) -> Reply {
    let unavailable = |why: &str| {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{why}\n"),
        )
    };
    if admin.status.draining.load(Ordering::Acquire) {
        unavailable("DRAINING")
    } else if admin.health_failed.load(Ordering::Acquire) {
        unavailable("HEALTH_CHECK_FAILED")
    } else if admin.status.ready.load(Ordering::Acquire) {
        reply(StatusCode::OK, "text/plain", "LIVE\n".into())
    } else {
        unavailable("PRE_INITIALIZING")
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
    let mut list: Vec<_> = snapshot
        .clusters
        .values()
        .map(|c| (c, c.endpoints()))
        .collect();
    list.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let dump: Vec<ClusterDump<'_>> = list
        .iter()
        .map(|(c, endpoints)| ClusterDump {
            name: &c.name,
            service: &c.service.host,
            max_connections: c.breakers.limits.connections,
            max_pending_requests: c.breakers.limits.pending,
            max_requests: c.breakers.limits.requests,
            max_retries: c.breakers.limits.retries,
            endpoints: endpoints
                .iter()
                .map(|e| EndpointDump {
                    address: e.key(),
                    healthy: e.healthy,
                    rq_active: e.load().active.load(Ordering::Relaxed),
                    rq_total: e.load().total.load(Ordering::Relaxed),
                    cx_active: e.open_connections(),
                    ejected: c.is_ejected(e),
                    ejections: e.ejections(),
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
