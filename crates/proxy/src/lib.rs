//! `trellis-proxy`'s library: the data plane that replaces Envoy sidecars
//! and gateways. It knows only the compiled proxy API of crate `wire`.
//!
//! Threads: the data plane runs on its own multi-threaded runtime
//! (`Config::workers` threads); the discovery client and the admin server
//! run on a single-threaded runtime in a thread of their own, so that
//! neither starves the other (as ztunnel and linkerd2-proxy do).
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
mod error;
pub mod http;
pub mod lb;
pub mod limits;
pub mod listeners;
pub mod policy;
pub mod snapshot;
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
    /// The control plane ("http://127.10.0.1:15010"); `None` with `static_config`.
    pub xds_address: Option<String>,
    /// A JSON file `{"resources": [...]}` to run with no control plane.
    pub static_config: Option<PathBuf>,
    /// Where the local application listens; inbound traffic goes to `app_ip:app_port`.
    pub app_ip: IpAddr,
    /// The explicit HTTP proxy for the application's outbound calls; `None` for gateways.
    pub outbound_addr: Option<SocketAddr>,
    /// The admin server; must be a loopback address.
    pub admin_addr: SocketAddr,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Data-plane worker threads (1 suits a sidecar; gateways want more).
    pub workers: usize,
    /// Write the JSON access log to stdout.
    pub access_log: bool,
    /// Where to get the workload certificate for mesh mTLS; `None`: no mesh
    /// TLS (inbound plaintext only, outbound auto mTLS falls back to plaintext).
    pub identity: Option<tls::workload::WorkloadIdentity>,
    /// The workload certificate, key and mesh roots from files instead of a
    /// CA (exclusive with `identity`).
    pub static_certs: Option<tls::static_files::CertFiles>,
    /// Header, stream, buffer and idle-connection limits.
    pub limits: limits::Limits,
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
            drain_timeout: Duration::from_secs(5),
            workers: 1,
            access_log: true,
            identity: None,
            static_certs: None,
            limits: limits::Limits::default(),
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
    let store = Arc::new(ConfigStore::new(&config.node));
    store.pools().set_limits(config.limits);
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
    let telemetry = Arc::new(Telemetry::new(&config.node, config.access_log));
    let status = Arc::new(Status::default());
    let admin_listener = bind_admin(config.admin_addr)?;
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
    });
    std::thread::Builder::new()
        .name("trellis-control".into())
        .spawn(move || control_thread(admin_listener, admin, control_started_tx, control_stopped))
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

    let shared = Arc::new(http::Shared {
        store,
        telemetry,
        app_ip: config.app_ip,
        direct_pool: Arc::new(lb::pool::Pool::new(
            lb::pool::DEFAULT_CONNECT_TIMEOUT,
            config.limits.max_idle_per_endpoint,
        )),
        limits: config.limits,
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    let serving = data_plane.spawn(listeners::run(
        shared,
        config.outbound_addr,
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
    let _ = stop_control.send(());
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

fn bind_admin(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::AdminBind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::AdminBind { addr, source })?;
    Ok(listener)
}

/// The admin server, and (spawned through the handle it sends back) the
/// discovery client and certificate renewal, on a runtime of their own.
fn control_thread(
    admin_listener: std::net::TcpListener,
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
        tokio::select! {
            () = admin::serve(admin_listener, admin) => {}
            _ = stop => {}
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}
