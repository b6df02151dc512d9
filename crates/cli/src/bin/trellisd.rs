//! `trellisd`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Trellis control plane: config store, service registry and push to proxies"
)]
struct Args {
    /// Directory where applied configuration is stored, one file per
    /// resource. YAML files put there by hand are taken in at start: each
    /// resource into its own file, the original renamed `<file>.imported`.
    #[arg(long, env = "TRELLIS_CONFIG_DIR")]
    config_dir: PathBuf,
    /// The plaintext discovery listener (Istio's 15010): config for proxies
    /// that present no token, which a control plane authenticating workloads
    /// (--token-secret, Kubernetes) refuses. Never a token, never a
    /// certificate: those only over TLS (--xds-tls-addr). Keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_addr: SocketAddr,
    /// The TLS listener of discovery and the CA (Istio's 15012), where
    /// proxies send their tokens, with a certificate from the mesh CA for
    /// the istiod Service's names and this address (needs the CA, --ca-dir).
    /// Default: port 15012 on --xds-addr's address.
    #[arg(long)]
    xds_tls_addr: Option<SocketAddr>,
    /// More names for the TLS listener's certificate (DNS names or IP
    /// addresses proxies reach it by), repeated.
    #[arg(long = "xds-san")]
    xds_sans: Vec<String>,
    /// The tracing UI the dashboard links trace ids to: Jaeger's
    /// (`http://localhost:16686`, a trace is `<url>/trace/<id>`), or any
    /// http(s) URL with `{trace_id}` in it (Zipkin's:
    /// `http://localhost:9411/zipkin/traces/{trace_id}`). Without it trace
    /// ids are shown as text.
    #[arg(long, env = "TRELLIS_TRACING_URL", value_parser = control::dashboard::TracingUi::parse)]
    tracing_url: Option<control::dashboard::TracingUi>,
    /// A Prometheus the dashboard reads the graph's metrics from
    /// (`http://prometheus:9090`: Istio's series, as its Grafana dashboards
    /// query them) instead of scraping the proxies itself. The recent
    /// errors and slowest requests are still read from the proxies.
    #[arg(long, env = "TRELLIS_PROMETHEUS_URL", value_parser = control::graph::prometheus::Prometheus::parse)]
    prometheus: Option<control::graph::prometheus::Prometheus>,
    /// HTTP API and debug listener.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
    /// MeshConfig YAML (Istio's names: rootNamespace, trustDomain, ...).
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// How long to collect changes before pushing.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// The CA: Istio's plug-in files (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem) if root-cert.pem is there, else a self-signed root kept
    /// there. Without it no workload certificates are issued. On Kubernetes
    /// the CA comes from the `cacerts` Secret in --namespace (plug-in), else
    /// the `istio-ca-secret` Secret (made by the first replica), kept here.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The file (mode 0600) the workloads' bootstrap tokens are derived from.
    /// (Not on Kubernetes: there workloads present their service-account
    /// tokens, which the API server's TokenReview checks.)
    #[arg(long, conflicts_with_all = ["kubeconfig", "in_cluster"])]
    token_secret: Option<PathBuf>,
    /// The file (mode 0600) holding the bearer token the HTTP API requires on
    /// every /v1 and /debug route. Without it any local process can change config.
    #[arg(long, env = "TRELLIS_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// The JSON file `trellis up` keeps of its processes (running, restarts),
    /// shown as the Pods' containerStatuses.
    #[arg(long)]
    pod_status_file: Option<PathBuf>,
    /// Read the mesh from the Kubernetes API server this kubeconfig's
    /// current context names (Services, EndpointSlices, Pods, Istio CRDs,
    /// the `istio` ConfigMap in istio-system as MeshConfig).
    #[arg(long, conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// As --kubeconfig, with the pod's own service account (trellisd running in the cluster).
    #[arg(long)]
    in_cluster: bool,
    /// trellisd's namespace on the cluster, where the leader's Lease is.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// The `coordination.k8s.io` Lease whose holder is the one replica
    /// writing to the cluster (the root certificate ConfigMaps).
    #[arg(long, default_value = "trellisd-leader")]
    leader_lease: String,
    /// How long a Lease not renewed stays its holder's (whole seconds).
    #[arg(long, default_value = "15s", value_parser = duration::parse)]
    leader_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    leader_renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    leader_retry_period: Duration,
    /// The admission webhooks' TLS listener (`POST /inject`, `POST /validate`;
    /// the Service `istiod` port 443 points here). Default with
    /// --in-cluster: 0.0.0.0:15017; with --kubeconfig only when given.
    /// Needs --ca-dir: the serving certificate is the mesh CA's.
    #[arg(long)]
    webhook_addr: Option<SocketAddr>,
    /// Serve no admission webhooks (not even in the cluster).
    #[arg(long, conflicts_with = "webhook_addr")]
    no_webhooks: bool,
    /// The injector's settings in Istio's `values` shape (YAML or JSON, as
    /// the `values` key of the istio-sidecar-injector ConfigMap):
    /// global.hub/tag/proxy.image, global.proxy.resources,
    /// global.proxy_init.resources, global.imagePullPolicy, revision.
    #[arg(long)]
    injector_values: Option<PathBuf>,
    /// The address injected sidecars reach this control plane at (default:
    /// the istiod Service in --namespace).
    #[arg(long)]
    injector_discovery_address: Option<String>,
    /// Inject native sidecars (init containers with restartPolicy Always):
    /// `auto` asks the API server's version (1.29 and later have them).
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    native_sidecars: String,
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists: threads that already have an arena keep it.
    // A full push to thousands of proxies allocates and frees their
    // responses in bursts on every thread; one arena per core keeps what
    // they free reusable instead of resident in a dozen arenas.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    sys::compact_heap(cores);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    cli::logging::init("info");
    let args = Args::parse();
    let mesh_config = match &args.mesh_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => model::MeshConfig::default(),
    };
    anyhow::ensure!(
        args.leader_retry_period < args.leader_renew_deadline
            && args.leader_renew_deadline < args.leader_lease_duration,
        "leader election: --leader-retry-period ({:?}) < --leader-renew-deadline ({:?}) < --leader-lease-duration ({:?}) is required, or a leader could lose the Lease while still writing",
        args.leader_retry_period,
        args.leader_renew_deadline,
        args.leader_lease_duration
    );
    let webhook_addr = match (args.webhook_addr, args.in_cluster && !args.no_webhooks) {
        (Some(addr), _) => Some(addr),
        (None, true) => Some(SocketAddr::from(([0, 0, 0, 0], 15017))),
        (None, false) => None,
    };
    let webhooks = if let Some(addr) = webhook_addr {
        let mut injection = match &args.injector_values {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let values: serde_json::Value = serde_yaml_ng::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                control::inject::Config::from_values(&values)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => control::inject::Config::default(),
        };
        injection.discovery_address = args
            .injector_discovery_address
            .clone()
            .unwrap_or_else(|| format!("https://istiod.{}.svc:15012", args.namespace));
        Some(control::Webhooks {
            addr,
            injection,
            native_sidecars: args.native_sidecars.parse().ok(),
            injector_config: control::webhook_config::INJECTOR.into(),
            validator_config: control::webhook_config::validator(&args.namespace),
        })
    } else {
        None
    };
    let options = control::Options {
        config_dir: args.config_dir,
        xds_addr: args.xds_addr,
        xds_tls_addr: args
            .xds_tls_addr
            .unwrap_or_else(|| SocketAddr::new(args.xds_addr.ip(), wire::address::TLS_PORT)),
        xds_sans: args.xds_sans,
        http_addr: args.http_addr,
        mesh_config,
        debounce: Duration::from_millis(args.debounce_ms),
        ca_dir: args.ca_dir,
        token_secret: args.token_secret,
        api_token_file: args.api_token_file,
        pod_status_file: args.pod_status_file,
        dashboard: control::dashboard::Settings {
            tracing_ui: args.tracing_url,
            prometheus: args.prometheus,
        },
        kubernetes: match (args.kubeconfig, args.in_cluster) {
            (Some(path), _) => Some(control::sources::kube::Connect::Kubeconfig(path)),
            (None, true) => Some(control::sources::kube::Connect::InCluster),
            (None, false) => None,
        }
        .map(|connect| control::Kubernetes {
            connect,
            namespace: args.namespace,
            lease_name: args.leader_lease,
            leader_election: control::leader::Timing {
                lease_duration: args.leader_lease_duration,
                renew_deadline: args.leader_renew_deadline,
                retry_period: args.leader_retry_period,
            },
            webhooks,
        }),
    };
    control::run(options, shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
