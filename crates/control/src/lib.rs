//! The control plane library behind `trellisd`: the config store, the mesh
//! model rebuilt on every change, the discovery stream that pushes each proxy
//! its compiled config, and the HTTP API for `trellis apply/get/delete` and the
//! operator's debug views.
#![forbid(unsafe_code)]

pub mod api_token;
pub mod bootstrap_token;
pub mod ca_secret;
pub mod ca_service;
pub mod dashboard;
pub mod graph;
pub mod http_api;
pub mod inject;
pub mod leader;
pub mod live_ca;
pub mod metrics;
pub mod proxy_node;
pub mod root_cert;
mod secret_file;
pub mod serving_cert;
pub mod sources;
pub mod state;
pub mod status;
pub mod store;
pub mod token_review;
pub mod webhook;
pub mod webhook_config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use state::ControlPlane;

pub struct Options {
    /// Where applied config is stored durably.
    pub config_dir: PathBuf,
    /// The plaintext discovery listener (Istio's 15010): config for proxies
    /// that present no token, which a control plane authenticating
    /// workloads refuses; never a token, never a certificate (see
    /// [`wire::server::TOKEN_OVER_PLAINTEXT`]).
    pub xds_addr: SocketAddr,
    /// The TLS listener of discovery and the CA (Istio's 15012), with a
    /// serving certificate from the mesh CA (see [`serving_cert`]). Not
    /// served without a CA.
    pub xds_tls_addr: SocketAddr,
    /// Names (DNS names or IP addresses) the TLS listener's certificate
    /// carries beyond the istiod Service's and its listen address.
    pub xds_sans: Vec<String>,
    /// The HTTP API and debug listener (loopback only).
    pub http_addr: SocketAddr,
    pub mesh_config: model::MeshConfig,
    /// How long changes are collected before one push.
    pub debounce: Duration,
    /// The CA's directory: Istio's plug-in `cacerts` files if `root-cert.pem`
    /// is there, else a self-signed root kept there. On Kubernetes the
    /// material comes from the cluster's Secrets (see [`ca_secret`]) and is
    /// kept here. `None`: no CA is served.
    pub ca_dir: Option<PathBuf>,
    /// The secret workloads' bootstrap tokens are derived from (see
    /// [`bootstrap_token`]). `None`: certificate requests are refused.
    /// Not used on Kubernetes, where service-account tokens are reviewed
    /// (see [`token_review`]).
    pub token_secret: Option<PathBuf>,
    /// The file holding the HTTP API's bearer token (see [`api_token`]).
    /// `None`: the API is open to every local process.
    pub api_token_file: Option<PathBuf>,
    /// The process status `trellis up` keeps (running, restarts), shown on Pods.
    pub pod_status_file: Option<PathBuf>,
    /// Read the mesh from a Kubernetes API server too (see [`sources::kube`]).
    pub kubernetes: Option<Kubernetes>,
    /// The dashboard's tracing UI and metrics source.
    pub dashboard: dashboard::Settings,
}

/// trellisd on a Kubernetes cluster.
pub struct Kubernetes {
    pub connect: sources::kube::Connect,
    /// trellisd's own namespace, where its Lease is (Istio: istio-system).
    pub namespace: String,
    /// The leader (the only replica writing to the cluster) holds this
    /// Lease in `namespace`.
    pub lease_name: String,
    pub leader_election: leader::Timing,
    /// The admission webhooks (sidecar injection, config validation).
    pub webhooks: Option<Webhooks>,
}

/// trellisd's admission webhooks (see [`webhook`]).
pub struct Webhooks {
    /// The TLS listener (Istio: 15017, behind Service `istiod` port 443).
    pub addr: SocketAddr,
    pub injection: inject::Config,
    /// Whether the cluster runs native sidecars; `None`: asked of the API
    /// server (Kubernetes 1.29 and later have them on).
    pub native_sidecars: Option<bool>,
    /// The configurations whose `caBundle` the leader keeps (Istio's names
    /// by default, see [`webhook_config`]).
    pub injector_config: String,
    pub validator_config: String,
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
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("certificate authority: {0}")]
    CaSecret(#[from] ca_secret::CaSecretError),
    #[error(transparent)]
    ServingCert(#[from] serving_cert::ServingCertError),
}

/// The namespace whose istiod Service names the serving certificates carry
/// off Kubernetes (Istio's).
const DEFAULT_NAMESPACE: &str = "istio-system";

/// Runs the control plane until `shutdown` completes.
///
/// The allocator's parameters are the binary's to choose, before it starts
/// any thread (trellisd calls [`sys::compact_heap`]): a full push to
/// thousands of proxies allocates and frees their responses in bursts on
/// every thread, which glibc's defaults keep resident in a dozen arenas.
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The leader election, finished (the Lease released) before returning.
    let mut elector = None;
    // On a cluster, workloads prove who they are with service-account tokens.
    let mut token_reviews: Option<Arc<dyn ca_service::Authenticator>> = None;
    let mut ca = None;
    if let Some(kubernetes) = &options.kubernetes {
        // Listed in full before any proxy can connect: none is ever served
        // a half-read cluster.
        let source = sources::kube::start(&kubernetes.connect).await?;
        let client = sources::kube::client(&kubernetes.connect).await?;
        // Every replica signs with the root kept in the cluster.
        if let Some(dir) = &options.ca_dir {
            let loaded =
                ca_secret::load(client.clone(), &kubernetes.namespace, &trust_domain, dir).await?;
            let live = live_ca::LiveCa::new(loaded.ca);
            tokio::spawn(ca_secret::follow_plugged(
                client.clone(),
                kubernetes.namespace.clone(),
                dir.clone(),
                Arc::downgrade(&live),
                loaded.plugged,
            ));
            ca = Some(live);
        }
        let weak = Arc::downgrade(&cp);
        token_reviews = Some(Arc::new(token_review::TokenReviews::new(
            client.clone(),
            move || {
                weak.upgrade()
                    .map(|cp| cp.mesh().config.trust_domain.clone())
                    .unwrap_or_default()
            },
        )));
        let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
        let candidate = leader::Elector::new(
            client.clone(),
            &kubernetes.namespace,
            &kubernetes.lease_name,
            &leader::identity(),
            kubernetes.leader_election,
        );
        elector = Some(tokio::spawn(
            candidate.run(leader_tx, stopped(stop_rx.clone())),
        ));
        if let Some(options) = &kubernetes.webhooks {
            start_webhooks(
                options,
                ca.as_ref(),
                &cp,
                client.clone(),
                &kubernetes.namespace,
                leader_rx.clone(),
                stopped(stop_rx.clone()),
            )
            .await?;
        }
        if let Some(ca) = &ca {
            tokio::spawn(root_cert::publish_while_leader(
                client.clone(),
                ca.roots(),
                leader_rx.clone(),
            ));
        }
        let weak = Arc::downgrade(&cp);
        tokio::spawn(status::write_while_leader(
            client,
            source.clone(),
            move || {
                weak.upgrade()
                    .map(|cp| cp.mesh().config.clone())
                    .unwrap_or_default()
            },
            leader_rx,
        ));
        cp.follow(source.clone());
        let cp = Arc::downgrade(&cp);
        tokio::spawn(async move {
            loop {
                source.changed().await;
                let Some(cp) = cp.upgrade() else { return };
                // The push takes the objects changed from the source itself.
                cp.changed_objects(Default::default());
            }
        });
    }
    let ca = match ca {
        Some(ca) => Some(ca),
        None if options.kubernetes.is_none() => {
            certificate_authority(options.ca_dir.as_deref(), &trust_domain)?
        }
        None => None,
    };
    let credentials = match token_reviews {
        Some(reviews) => Some(reviews),
        None => workload_credentials(options.token_secret.as_deref(), &cp)?,
    };
    if let Some(auth) = &credentials {
        cp.require_credentials(auth.clone());
    }
    let namespace = options
        .kubernetes
        .as_ref()
        .map_or(DEFAULT_NAMESPACE, |k| k.namespace.as_str());
    let mut renewal = None;
    let xds_tls = match &ca {
        Some(ca) => {
            let (names, ips) = xds_names(
                namespace,
                &cp.mesh().config.domain_suffix,
                options.xds_tls_addr,
                &options.xds_sans,
            );
            let cert = serving_cert::ServingCert::issue(ca.clone(), names, ips, serving_cert::TTL)?;
            renewal = Some(tokio::spawn(cert.clone().renew_at_half_life()));
            let listener = bind_for_proxies(options.xds_tls_addr)?;
            Some((listener, cert.server_config(&[identity::ALPN_H2])?))
        }
        None if credentials.is_some() => {
            tracing::warn!(
                "no CA (--ca-dir): no TLS discovery listener, so every proxy is refused (tokens are accepted only over TLS)"
            );
            None
        }
        None => None,
    };
    let ca = certificate_service(ca, credentials);
    let http = bind(options.http_addr).await?;
    let xds = bind_for_proxies(options.xds_addr)?;
    tracing::info!(
        xds = %options.xds_addr,
        xds_tls = %xds_tls.as_ref().map_or_else(|| "off (no CA)".to_string(), |_| options.xds_tls_addr.to_string()),
        http = %options.http_addr,
        "control plane listening"
    );

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    tokio::spawn(state::push_loop(cp.clone(), options.debounce));
    tokio::spawn(state::release_memory_loop(
        cp.clone(),
        std::time::Duration::from_millis(500),
    ));
    let api = http_api::router(
        cp.clone(),
        http_api::Access {
            token: api_token,
            listen: http.local_addr().unwrap_or(options.http_addr),
            read_only: options.kubernetes.is_some(),
            dashboard: options.dashboard.clone(),
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
    let cp_for_stop = cp.clone();
    let grpc_stopped = futures::FutureExt::shared(Box::pin(async move {
        stopped(stop_rx).await;
        // Discovery streams never end on their own; closing every proxy's
        // config channel ends them, so the servers can finish.
        cp_for_stop.disconnect_all();
    }));
    // One service, so one limit on concurrent pushes, behind both listeners.
    // The CA is on the plaintext one too, to refuse a CSR with a status that
    // says why (see `ca_service`).
    let discovery = wire::server::DiscoveryService::new(cp.clone());
    let plaintext = tonic::transport::Server::builder()
        .add_service(discovery.clone())
        .add_optional_service(ca.clone())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds),
            grpc_stopped.clone(),
        );
    let tls = async move {
        let Some((listener, config)) = xds_tls else {
            return Ok(());
        };
        tonic::transport::Server::builder()
            .add_service(discovery)
            .add_optional_service(ca)
            .serve_with_incoming_shutdown(tls_connections(listener, config), grpc_stopped)
            .await
    };
    let served = tokio::try_join!(plaintext, tls);
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    served?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    if let Some(elector) = elector {
        // Releasing the Lease lets another replica lead at once.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), elector).await;
    }
    Ok(())
}

/// Serves the admission webhooks, and keeps their configurations' `caBundle`
/// while this replica leads.
async fn start_webhooks(
    options: &Webhooks,
    ca: Option<&Arc<live_ca::LiveCa>>,
    cp: &Arc<ControlPlane>,
    client: kube::Client,
    namespace: &str,
    leader: tokio::sync::watch::Receiver<bool>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let ca = ca.ok_or(webhook::WebhookError::NoCa)?;
    let names = serving_cert::service_names(namespace, &cp.mesh().config.domain_suffix);
    let cert = serving_cert::ServingCert::issue(
        ca.clone(),
        names,
        serving_cert::address_sans(options.addr),
        serving_cert::TTL,
    )?;
    tokio::spawn(cert.clone().renew_at_half_life());
    let tls = cert.server_config(&[identity::ALPN_HTTP11])?;
    let bundle = cert.roots_pem();
    let listener = bind(options.addr).await?;
    let native = match options.native_sidecars {
        Some(n) => n,
        None => match client.apiserver_version().await {
            Ok(info) => native_sidecars_in(&info.major, &info.minor),
            Err(error) => {
                tracing::warn!(%error, "cannot read the API server's version; injecting plain sidecar containers");
                false
            }
        },
    };
    tracing::info!(addr = %options.addr, native_sidecars = native, "admission webhooks listening");
    let webhooks = Arc::new(webhook::Webhooks {
        injection: inject::Config {
            native_sidecar: native,
            ..options.injection.clone()
        },
        control_plane: Arc::downgrade(cp),
        client: Some(client.clone()),
    });
    tokio::spawn(webhook::serve(listener, tls, webhooks, stop));
    tokio::spawn(webhook_config::patch_while_leader(
        client,
        bundle,
        options.injector_config.clone(),
        options.validator_config.clone(),
        leader,
    ));
    Ok(())
}

/// The names and addresses of the TLS discovery listener's certificate: the
/// istiod Service's names in `namespace`, the listen address (the loopback
/// ones when it listens on all), and `extra` (IP addresses or DNS names).
fn xds_names(
    namespace: &str,
    domain_suffix: &str,
    addr: SocketAddr,
    extra: &[String],
) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut names = serving_cert::service_names(namespace, domain_suffix);
    let mut ips = serving_cert::address_sans(addr);
    if ips.iter().any(|ip| ip.is_loopback()) {
        names.push("localhost".into());
    }
    for san in extra {
        match san.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(san.clone()),
        }
    }
    names.dedup();
    ips.dedup();
    (names, ips)
}

/// The TLS connections of `listener`, each handshake on a task of its own
/// so that a slow or silent client holds up no other.
fn tls_connections(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    /// A client that has not finished its handshake by then is dropped.
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "discovery (TLS) accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                // The server stopped.
                () = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "discovery TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "discovery TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A listener on `addr`, or an error naming it.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// A discovery listener (plaintext or TLS), with room for a connect storm.
fn bind_for_proxies(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    listen_for_proxies(addr).map_err(|source| Error::Bind { addr, source })
}

/// Native sidecars are on by default from Kubernetes 1.29 (minor versions
/// may carry a `+`, as some providers report them).
fn native_sidecars_in(major: &str, minor: &str) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    matches!((number(major), number(minor)), (Some(1), Some(m)) if m >= 29)
        || number(major).is_some_and(|m| m > 1)
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
                .all_workloads()
                .map(|w| (w.namespace.clone(), w.service_account.clone()))
                .collect();
            (mesh.config.trust_domain.clone(), accounts)
        },
    ))))
}

/// The CA, if the control plane has one; a plug-in CA's files are
/// followed and reloaded when they change.
fn certificate_authority(
    ca_dir: Option<&std::path::Path>,
    trust_domain: &str,
) -> Result<Option<Arc<live_ca::LiveCa>>, Error> {
    let Some(dir) = ca_dir else {
        tracing::info!("no --ca-dir: the control plane issues no workload certificates");
        return Ok(None);
    };
    if dir.join(identity::ROOT_CERT_FILE).is_file() {
        let live = live_ca::LiveCa::new(identity::Ca::from_cacerts(dir)?);
        tokio::spawn(live_ca::follow_files(
            Arc::downgrade(&live),
            dir.to_path_buf(),
        ));
        Ok(Some(live))
    } else {
        Ok(Some(live_ca::LiveCa::new(identity::Ca::self_signed(
            trust_domain,
            dir,
        )?)))
    }
}

/// The certificate service of the CA, if there is one, and how it
/// authenticates callers.
fn certificate_service(
    ca: Option<Arc<live_ca::LiveCa>>,
    credentials: Option<Arc<dyn ca_service::Authenticator>>,
) -> Option<wire::pb::certificate_service_server::CertificateServiceServer<ca_service::CaService>> {
    let ca = ca?;
    let auth = credentials.unwrap_or_else(|| {
        tracing::warn!("no --token-secret: every certificate request will be refused");
        Arc::new(ca_service::NoAuthenticator)
    });
    Some(ca_service::CaService::new(ca, auth))
}

/// The discovery listener. Its accept queue is as long as the system allows
/// (`net.core.somaxconn`, as Go's listeners do) rather than tokio's 1,024:
/// after a restart every proxy of the mesh reconnects at once, and a
/// connection that finds the queue full waits for the client's SYN retry
/// (1 s, 3 s, 7 s...) or is reset after the client sent its first request.
fn listen_for_proxies(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's listeners do: a restarted trellisd binds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps the backlog at net.core.somaxconn.
    socket.listen(u32::from(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More proxies than tokio's default backlog (1,024) connecting while
    /// the server accepts none of them are all queued, not dropped.
    #[tokio::test]
    async fn the_discovery_listener_queues_more_connections_than_tokios_default() {
        const CONNECTIONS: usize = 1_100;
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if somaxconn <= CONNECTIONS {
            eprintln!("net.core.somaxconn is {somaxconn}: the system caps the queue; not tested");
            return;
        }
        let listener =
            listen_for_proxies("127.0.0.1:0".parse().expect("address")).expect("listening");
        let addr = listener.local_addr().expect("address");
        let mut held = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            // A connection the queue has room for is established at once; one
            // it has not waits for SYN retries that find it still full (the
            // bound only keeps a failure from hanging the test).
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_secs(20), connect).await {
                Ok(Ok(stream)) => held.push(stream),
                other => panic!("connection {i} was not queued: {other:?}"),
            }
        }
        drop(listener);
    }
}
