//! `trellis-proxy`'s library: the data plane that replaces Envoy sidecars
//! and gateways. It knows only the compiled proxy API of crate `wire`.
//!
//! Threads: the data plane runs on its own multi-threaded runtime
//! (`Config::workers` threads); the discovery client and the admin server
//! run on a single-threaded runtime in a thread of their own, so that
//! neither starves the other (as ztunnel and linkerd2-proxy do).
#![forbid(unsafe_code)]

pub mod admin;
pub mod capture;
pub mod config;
pub mod dns;
mod error;
pub mod failure;
pub mod http;
pub mod lb;
pub mod limits;
pub mod listeners;
pub mod on_demand;
pub mod path;
pub mod policy;
pub mod req_body;
pub mod resp_body;
pub mod snapshot;
pub mod sniff;
mod tcp;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use wire::pb;

pub use error::Error;

use config::{ConfigStore, XdsHandler};
use listeners::Status;
use telemetry::Telemetry;

#[derive(Clone, Debug)]
pub struct Config {
    /// Who this proxy is: pod name, namespace, pod IP, labels, service account, kind.
    pub node: pb::Node,
    /// The control plane ("https://127.10.0.1:15012"); `None` with `static_config`.
    pub xds_address: Option<wire::address::XdsAddress>,
    /// A JSON file `{"resources": [...]}` to run with no control plane.
    pub static_config: Option<PathBuf>,
    /// Where the local application listens; inbound traffic goes to `app_ip:app_port`.
    pub app_ip: IpAddr,
    /// The explicit HTTP proxy for the application's outbound calls; `None` for gateways.
    pub outbound_addr: Option<SocketAddr>,
    /// The admin server; must be a loopback address.
    pub admin_addr: SocketAddr,
    /// Who may use the admin server's mutating endpoints (`/quitquitquit`...).
    pub admin_auth: admin::AdminAuth,
    /// Istio's health port (15021 on the pod's address): `GET /healthz/ready`
    /// answers 200 once identity and config are ready. `None`: not served.
    pub health_addr: Option<SocketAddr>,
    /// Istio's status port (15020 on the pod's address): the application's
    /// probes through the sidecar, readiness, merged metrics. `None`: not served.
    pub status_addr: Option<SocketAddr>,
    /// What the status port probes and merges.
    pub status: admin::status::StatusConfig,
    /// The proxy's own metrics for Prometheus (Istio's 15090, on the pod's
    /// address); `None`: only the admin server's `/stats/prometheus`.
    pub stats_addr: Option<SocketAddr>,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Data-plane worker threads (1 suits a sidecar; gateways want more).
    pub workers: usize,
    /// Write the access logs the config asks for (`false`: none whatever
    /// it says).
    pub access_log: bool,
    /// Where to get the workload certificate for mesh mTLS; `None`: no mesh
    /// TLS (inbound plaintext only, outbound auto mTLS falls back to plaintext).
    pub identity: Option<tls::workload::WorkloadIdentity>,
    /// The workload certificate, key and mesh roots from files instead of a
    /// CA (exclusive with `identity`).
    pub static_certs: Option<tls::static_files::CertFiles>,
    /// Called after each config update to hand the memory it freed back to
    /// the OS (the binary knows its allocator; see
    /// [`ConfigStore::with_memory_release`]). `None`: nothing is called.
    pub release_freed_memory: Option<fn()>,
    /// Called first on the control thread (the binary lowers its
    /// scheduling priority there, so that config compiles yield to
    /// requests). `None`: nothing is called.
    pub on_control_thread: Option<fn()>,
    /// Serve traffic captured by `trellis-proxy iptables` (15001, 15006);
    /// inbound ports are then not bound (the application has them).
    pub capture: Option<capture::CapturePorts>,
    /// Answer DNS on this address (15053), as Istio's ISTIO_META_DNS_CAPTURE.
    pub dns: Option<SocketAddr>,
    /// Header, stream, buffer and idle-connection limits.
    pub limits: limits::Limits,
    /// Discover outbound hosts on demand (sidecars; see [`on_demand`]),
    /// holding a request for a host not yet sent at most this long.
    /// `None`: the control plane sends every host the scope admits.
    pub on_demand: Option<Duration>,
    /// With `on_demand`: forget a host asked for once its services served
    /// no call for this long (see [`on_demand::sweep`]); `None`: keep them.
    pub on_demand_idle: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: pb::Node::default(),
            xds_address: None,
            static_config: None,
            app_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            outbound_addr: None,
            admin_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000),
            admin_auth: admin::AdminAuth::default(),
            health_addr: None,
            status_addr: None,
            status: admin::status::StatusConfig::default(),
            stats_addr: None,
            drain_timeout: Duration::from_secs(5),
            workers: 1,
            access_log: true,
            identity: None,
            static_certs: None,
            release_freed_memory: None,
            on_control_thread: None,
            capture: None,
            dns: None,
            limits: limits::Limits::default(),
            on_demand: None,
            on_demand_idle: None,
        }
    }
}

/// Runs the proxy until `shutdown` resolves (or `POST /quitquitquit`), then
/// drains: stops accepting, lets in-flight requests finish for up to
/// `drain_timeout`, and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    match (&config.xds_address, &config.static_config) {
        (None, None) => return Err(Error::NoConfigSource),
        (Some(_), Some(_)) => return Err(Error::TwoConfigSources),
        _ => {}
    }
    if !config.admin_addr.ip().is_loopback() {
        return Err(Error::AdminNotLoopback(config.admin_addr));
    }
    if config.identity.is_some() && config.static_certs.is_some() {
        return Err(Error::TwoIdentitySources);
    }
    let mut store = ConfigStore::new(&config.node).with_limits(config.limits);
    if let Some(timeout) = config.on_demand {
        if config.node.kind() == pb::ProxyKind::Gateway {
            return Err(Error::OnDemandGateway);
        }
        if config.static_config.is_some() {
            return Err(Error::OnDemandStatic);
        }
        store = store.with_on_demand(on_demand::OnDemand::new(&config.node.namespace, timeout));
    }
    if let Some(release) = config.release_freed_memory {
        store = store.with_memory_release(release);
    }
    let store = Arc::new(store);
    // Before the static config: its clusters are built with mesh TLS.
    if let Some(files) = &config.static_certs {
        let mesh_tls =
            tls::static_files::load(files, &config.node.namespace, &config.node.service_account)?;
        store.set_mesh_tls(mesh_tls);
    }
    let identity = config
        .identity
        .as_ref()
        .map(|id| tls::workload::start(id, &config.node.namespace, &config.node.service_account))
        .transpose()?;
    if identity.is_none()
        && let Some(path) = &config.static_config
    {
        config::static_file::load(path, &store)?;
    }
    // Who this proxy is in the standard metrics' principals: its
    // certificate's SPIFFE id (files), or the one it asks the CA for.
    let principal = match (store.mesh_tls(), &config.identity) {
        (Some(tls), _) => tls.id().to_string(),
        (None, Some(id)) if !config.node.namespace.is_empty() => format!(
            "spiffe://{}/ns/{}/sa/{}",
            id.trust_domain, config.node.namespace, config.node.service_account
        ),
        _ => String::new(),
    };
    let telemetry = Arc::new(Telemetry::new(&config.node, &principal, config.access_log));
    let status = Arc::new(Status::default());
    let admin_listener = bind(config.admin_addr).map_err(|source| Error::AdminBind {
        addr: config.admin_addr,
        source,
    })?;
    // Bound now, before identity and config: until then it answers 503.
    let health_listener = config
        .health_addr
        .map(|addr| bind(addr).map_err(|source| Error::HealthBind { addr, source }))
        .transpose()?;
    let status_listener = config
        .status_addr
        .map(|addr| bind(addr).map_err(|source| Error::HealthBind { addr, source }))
        .transpose()?;
    let stats_listener = config
        .stats_addr
        .map(|addr| bind(addr).map_err(|source| Error::MetricsBind { addr, source }))
        .transpose()?;
    let (quit_tx, mut quit_rx) = watch::channel(false);

    let data_plane = RuntimeGuard(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers.max(1))
            .thread_name("trellis-worker")
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime {
                what: "data plane",
                source,
            })?,
    ));

    let (stop_control, control_stopped) = oneshot::channel::<()>();
    let (control_started_tx, control_started) =
        oneshot::channel::<Result<tokio::runtime::Handle, std::io::Error>>();
    let admin = Arc::new(admin::Admin {
        store: store.clone(),
        telemetry: telemetry.clone(),
        status: status.clone(),
        quit: quit_tx,
        auth: config.admin_auth.clone(),
        health_failed: Default::default(),
        app_metrics: config.status.app_metrics.clone(),
    });
    let listeners = AdminListeners {
        admin: admin_listener,
        health: health_listener,
        status: status_listener.map(|l| (l, Arc::new(config.status.clone()))),
        stats: stats_listener,
    };
    let on_control_thread = config.on_control_thread;
    std::thread::Builder::new()
        .name("trellis-control".into())
        .spawn(move || {
            if let Some(setup) = on_control_thread {
                setup();
            }
            control_thread(listeners, admin, control_started_tx, control_stopped)
        })
        .map_err(|source| Error::Runtime {
            what: "control",
            source,
        })?;
    let control = match control_started.await {
        Ok(Ok(handle)) => handle,
        Ok(Err(source)) => {
            return Err(Error::Runtime {
                what: "control",
                source,
            });
        }
        Err(_) => return Err(Error::ThreadDied("control")),
    };

    // The workload certificate comes before any config and any listener:
    // clusters are built with mTLS, and nothing is served without identity.
    let mut shutdown = std::pin::pin!(shutdown);
    if let Some((renewal, ready)) = identity {
        control.spawn(renewal);
        let ready = control.spawn(ready);
        let mesh_tls = tokio::select! {
            r = ready => r.map_err(|_| Error::ThreadDied("control"))??,
            () = shutdown.as_mut() => {
                let _ = stop_control.send(());
                return Ok(());
            }
        };
        store.set_mesh_tls(mesh_tls);
        if let Some(path) = &config.static_config {
            config::static_file::load(path, &store)?;
        }
    }
    if let Some(addr) = config.xds_address.clone() {
        control.spawn(wire::client::run(
            addr,
            config.node.clone(),
            config.identity.as_ref().map(|i| i.token.clone()),
            XdsHandler(store.clone()),
        ));
    }

    if let Some(addr) = config.dns {
        let bound = data_plane.spawn(dns::bind(
            addr,
            store.clone(),
            config.node.namespace.clone(),
        ));
        let server = bound.await.map_err(|_| Error::ThreadDied("data plane"))??;
        data_plane.spawn(server);
    }
    match (config.on_demand_idle, store.on_demand()) {
        (Some(idle), Some(_)) => {
            control.spawn(on_demand::sweep::run(
                store.clone(),
                telemetry.clone(),
                idle,
            ));
        }
        // Set mesh-wide (proxyMetadata), it reaches proxies that are sent
        // every host: they have nothing to forget.
        (Some(idle), None) => {
            tracing::warn!(
                ?idle,
                "an on-demand idle period, but this proxy does not discover on demand: nothing is forgotten"
            )
        }
        (None, _) => {}
    }
    let shared = Arc::new(http::Shared {
        store,
        telemetry,
        app_ip: config.app_ip,
        passthrough: lb::passthrough::Passthrough::new(
            lb::upstream::ConnSettings::from_limits(&config.limits),
            lb::breaker::Breakers::default(),
        ),
        limits: config.limits,
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // On the control thread: a release walks the heap (0.2–1.7 ms measured
    // under endpoint churn), which on a data-plane thread holds up its requests.
    let releasing = control.spawn(listeners::release_memory(
        freed.clone(),
        shared.store.clone(),
    ));
    let serving = data_plane.spawn(listeners::run(
        shared,
        freed,
        config.outbound_addr,
        config.capture,
        status.clone(),
        drain_rx,
        config.drain_timeout,
    ));

    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        () = listeners::until_true(&mut quit_rx) => {}
    }
    status.draining.store(true, Ordering::Release);
    drain_tx.send_replace(true);
    if serving.await.is_err() {
        tracing::warn!("the data plane stopped abnormally while draining");
    }
    releasing.abort();
    let _ = stop_control.send(());
    // The access-log writers batch: the last lines go out before we return.
    let _ =
        tokio::task::spawn_blocking(|| telemetry::access_log::flush(Duration::from_secs(1))).await;
    // Whatever is left (upgraded tunnels, mirrors) ends with the runtime.
    drop(data_plane);
    Ok(())
}

/// Owns the data-plane runtime. Dropping a runtime blocks, which tokio
/// forbids inside async code (and `run` is async, and may be cancelled):
/// this shuts it down in the background instead.
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl RuntimeGuard {
    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(future),
            // Unreachable: only `drop` empties it.
            None => tokio::spawn(future),
        }
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The control thread's own listeners.
struct AdminListeners {
    admin: std::net::TcpListener,
    health: Option<std::net::TcpListener>,
    status: Option<(std::net::TcpListener, Arc<admin::status::StatusConfig>)>,
    /// Istio's 15090.
    stats: Option<std::net::TcpListener>,
}

/// The admin server, and (spawned through the handle it sends back) the
/// discovery client and certificate renewal, on a runtime of their own.
fn control_thread(
    listeners: AdminListeners,
    admin: Arc<admin::Admin>,
    started: oneshot::Sender<Result<tokio::runtime::Handle, std::io::Error>>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(runtime.handle().clone()));
    runtime.block_on(async move {
        if let Some(health) = listeners.health {
            tokio::spawn(admin::serve_health(health, admin.clone()));
        }
        if let Some((status, config)) = listeners.status {
            tokio::spawn(admin::status::serve_status(status, admin.clone(), config));
        }
        if let Some(stats) = listeners.stats {
            tokio::spawn(admin::serve_stats(stats, admin.clone()));
        }
        tokio::select! {
            () = admin::serve(listeners.admin, admin) => {}
            _ = stop => {}
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}
