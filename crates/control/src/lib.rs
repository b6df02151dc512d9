//! The control plane library behind `trellisd`: the config store, the mesh
//! model rebuilt on every change, the discovery stream that pushes each proxy
//! its compiled config, and the HTTP API for `trellis apply/get/delete` and the
//! operator's debug views.
#![forbid(unsafe_code)]

pub mod http_api;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use state::ControlPlane;

pub struct Options {
    /// Where applied config is stored durably.
    pub config_dir: PathBuf,
    /// The discovery (gRPC) listener.
    pub xds_addr: SocketAddr,
    /// The HTTP API and debug listener (loopback only).
    pub http_addr: SocketAddr,
    pub mesh_config: model::MeshConfig,
    /// How long changes are collected before one push.
    pub debounce: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config store: {0}")]
    Store(#[from] store::StoreError),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("discovery server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs the control plane until `shutdown` completes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let store = store::Store::open(&options.config_dir)?;
    let cp = Arc::new(ControlPlane::new(store, options.mesh_config));
    let http = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| Error::Bind { addr: options.http_addr, source })?;
    let xds = tokio::net::TcpListener::bind(options.xds_addr)
        .await
        .map_err(|source| Error::Bind { addr: options.xds_addr, source })?;
    tracing::info!(xds = %options.xds_addr, http = %options.http_addr, "control plane listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    tokio::spawn(state::push_loop(cp.clone(), options.debounce));
    let api = http_api::router(cp.clone());
    let http_task = tokio::spawn(
        axum::serve(http, api).with_graceful_shutdown(stopped(stop_rx.clone())).into_future(),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds);
    let cp_for_stop = cp.clone();
    let grpc_stopped = async move {
        stopped(stop_rx).await;
        // Discovery streams never end on their own; closing every proxy's
        // config channel ends them, so the server can finish.
        cp_for_stop.disconnect_all();
    };
    tonic::transport::Server::builder()
        .add_service(wire::server::DiscoveryService::new(cp.clone()))
        .serve_with_incoming_shutdown(incoming, grpc_stopped)
        .await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    Ok(())
}
