//! The control plane library behind `trellisd`: the config store, the mesh
//! model rebuilt on every change, the discovery stream that pushes each proxy
//! its compiled config, and the HTTP API for `trellis apply/get/delete` and the
//! operator's debug views.
#![forbid(unsafe_code)]

pub mod api_token;
pub mod bootstrap_token;
pub mod ca_service;
pub mod http_api;
pub mod proxy_node;
mod secret_file;
pub mod sources;
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
    /// The CA's directory: Istio's plug-in `cacerts` files if `root-cert.pem`
    /// is there, else a self-signed root kept there. `None`: no CA is served.
    pub ca_dir: Option<PathBuf>,
    /// The secret workloads' bootstrap tokens are derived from (see
    /// [`bootstrap_token`]). `None`: certificate requests are refused.
    pub token_secret: Option<PathBuf>,
    /// The file holding the HTTP API's bearer token (see [`api_token`]).
    /// `None`: the API is open to every local process.
    pub api_token_file: Option<PathBuf>,
    /// The process status `trellis up` keeps (running, restarts), shown on Pods.
    pub pod_status_file: Option<PathBuf>,
    /// Read the mesh from a Kubernetes API server too (see [`sources::kube`]).
    pub kubernetes: Option<sources::kube::Connect>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config store: {0}")]
    Store(#[from] store::StoreError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("discovery server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("certificate authority: {0}")]
    Ca(#[from] identity::CaError),
    #[error("bootstrap token secret: {0}")]
    TokenSecret(#[from] bootstrap_token::TokenSecretError),
    #[error("API token: {0}")]
    ApiToken(#[from] api_token::ApiTokenError),
    #[error(transparent)]
    Kubernetes(#[from] sources::kube::KubeError),
}

/// Runs the control plane until `shutdown` completes.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = store::Store::open(&options.config_dir)?;
    let api_token = match &options.api_token_file {
        Some(path) => Some(api_token::ApiToken::load(path)?),
        None => {
            tracing::warn!(
                "no --api-token-file: any local process can change the mesh's config through the HTTP API"
            );
            None
        }
    };
    let trust_domain = options.mesh_config.trust_domain.clone();
    let cp = Arc::new(ControlPlane::new(store, options.mesh_config));
    if let Some(connect) = &options.kubernetes {
        // Listed in full before any proxy can connect: none is ever served
        // a half-read cluster.
        let source = sources::kube::start(connect).await?;
        cp.follow(source.clone());
        let cp = Arc::downgrade(&cp);
        tokio::spawn(async move {
            loop {
                source.changed().await;
                let Some(cp) = cp.upgrade() else { return };
                cp.changed();
            }
        });
    }
    let credentials = workload_credentials(options.token_secret.as_deref(), &cp)?;
    if let Some(auth) = &credentials {
        cp.require_credentials(auth.clone());
    }
    let ca = certificate_service(options.ca_dir.as_deref(), credentials, &trust_domain)?;
    let http = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: options.http_addr,
            source,
        })?;
    let xds = tokio::net::TcpListener::bind(options.xds_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: options.xds_addr,
            source,
        })?;
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
    let api = http_api::router(
        cp.clone(),
        http_api::Access {
            token: api_token,
            listen: http.local_addr().unwrap_or(options.http_addr),
            read_only: options.kubernetes.is_some(),
        },
        options.pod_status_file.clone(),
    );
    let http_task = tokio::spawn(
        axum::serve(
            http,
            api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
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
        .add_optional_service(ca)
        .serve_with_incoming_shutdown(incoming, grpc_stopped)
        .await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    Ok(())
}

/// How workloads prove who they are: bootstrap tokens derived from the
/// secret at `token_secret`, valid for the service accounts of the
/// workloads in the registry now (a token is good only while its workload
/// is part of the mesh). `None` without a secret.
fn workload_credentials(
    token_secret: Option<&std::path::Path>,
    cp: &Arc<ControlPlane>,
) -> Result<Option<Arc<dyn ca_service::Authenticator>>, Error> {
    let Some(path) = token_secret else {
        return Ok(None);
    };
    let secret = bootstrap_token::TokenSecret::load(path)?;
    let cp = Arc::downgrade(cp);
    Ok(Some(Arc::new(ca_service::BootstrapTokens::new(
        secret,
        move || {
            let Some(cp) = cp.upgrade() else {
                return Default::default();
            };
            let mesh = cp.mesh();
            let accounts = mesh
                .registry
                .workloads
                .iter()
                .map(|w| (w.namespace.clone(), w.service_account.clone()))
                .collect();
            (mesh.config.trust_domain.clone(), accounts)
        },
    ))))
}

/// The CA, if the control plane has one, and how it authenticates callers.
fn certificate_service(
    ca_dir: Option<&std::path::Path>,
    credentials: Option<Arc<dyn ca_service::Authenticator>>,
    trust_domain: &str,
) -> Result<
    Option<wire::pb::certificate_service_server::CertificateServiceServer<ca_service::CaService>>,
    Error,
> {
    let Some(dir) = ca_dir else {
        tracing::info!("no --ca-dir: the control plane issues no workload certificates");
        return Ok(None);
    };
    let ca = if dir.join(identity::ROOT_CERT_FILE).is_file() {
        identity::Ca::from_cacerts(dir)?
    } else {
        identity::Ca::self_signed(trust_domain, dir)?
    };
    let auth = credentials.unwrap_or_else(|| {
        tracing::warn!("no --token-secret: every certificate request will be refused");
        Arc::new(ca_service::NoAuthenticator)
    });
    Ok(Some(ca_service::CaService::new(Arc::new(ca), auth)))
}
