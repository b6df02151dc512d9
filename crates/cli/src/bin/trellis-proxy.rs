//! `trellis-proxy`: the sidecar and gateway proxy.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use wire::pb::{Node, ProxyKind};

/// Which outbound hosts the control plane sends (`trellis.dev/discovery`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Discovery {
    /// Every host the Sidecar resource and exportTo admit (Istio's way).
    Whole,
    /// Only the hosts the application calls: a directory of names and VIPs
    /// always, a host's routes and endpoints when first called (the call
    /// waits for them). Sidecars only.
    OnDemand,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Sidecar,
    Gateway,
}

/// Who may use the admin port's mutating endpoints (`POST /quitquitquit`...).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AdminAuthMode {
    /// Callers send `Authorization: Bearer <token>`: the token from
    /// TRELLIS_ADMIN_TOKEN, else one made at start and written to
    /// --admin-token-file. For a loopback shared with other processes.
    Token,
    /// Callers connect from 127.0.0.1 or ::1: only for a proxy in its pod's
    /// own network namespace, whose loopback no other pod reaches.
    Loopback,
}

#[derive(Parser)]
#[command(
    version,
    about = "Trellis proxy: the mesh's sidecar and gateway",
    after_help = "`trellis-proxy iptables --help`: the rules that capture a pod's traffic"
)]
struct Args {
    #[arg(long, value_enum, default_value = "sidecar")]
    kind: Kind,
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The pod's address: inbound and gateway listeners bind here.
    #[arg(long, env = "INSTANCE_IP")]
    pod_ip: IpAddr,
    /// Where the application listens; inbound traffic is forwarded here.
    #[arg(long, default_value = "127.0.0.1")]
    app_ip: IpAddr,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The workload (Deployment) this pod belongs to; the pod name if not given.
    #[arg(long)]
    workload_name: Option<String>,
    /// Pod labels, `key=value`, repeated.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The control plane's discovery address: https://host:15012 (TLS,
    /// verified with --xds-root-cert for the name `host`), http://host:15010
    /// (plaintext: config only, no token is ever sent to another machine),
    /// or host:port as Istio's discoveryAddress (plaintext on 15010 only).
    #[arg(long, conflicts_with = "static_config")]
    xds: Option<String>,
    /// Which outbound hosts the control plane sends this proxy: all it may
    /// call, or those it calls, asked for on the first call.
    #[arg(long, value_enum, env = "TRELLIS_DISCOVERY", default_value = "whole")]
    discovery: Discovery,
    /// With --discovery=on-demand: how long a call waits for its host's
    /// config before it fails (503, flag NC); Envoy's on-demand default.
    #[arg(long, default_value = "5")]
    on_demand_timeout_seconds: u64,
    /// With --discovery=on-demand: forget a host once the services it sends
    /// to served no call for this many minutes (its next call is held again,
    /// as a first call is). Unset: hosts are kept, as Envoy's on-demand
    /// discovery keeps what it fetched. On a proxy sent every host it has no
    /// effect (it says so in its log).
    #[arg(long, env = "TRELLIS_ON_DEMAND_IDLE_MINUTES",
          value_parser = clap::value_parser!(u64).range(1..=10_080))]
    on_demand_idle_minutes: Option<u64>,
    /// The idle period in seconds (tests).
    #[arg(long, env = "TRELLIS_ON_DEMAND_IDLE_SECONDS", hide = true,
          conflicts_with = "on_demand_idle_minutes",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    on_demand_idle_seconds: Option<u64>,
    /// The mesh root the control plane's TLS certificate must chain to (the
    /// `istio-ca-root-cert` ConfigMap, mounted where Istio mounts it).
    #[arg(long, env = "XDS_ROOT_CA", default_value = wire::address::DEFAULT_ROOT_CERT)]
    xds_root_cert: PathBuf,
    /// Run without a control plane from a JSON file of proxy API resources.
    #[arg(long)]
    static_config: Option<PathBuf>,
    /// The admin server (keep it on a loopback address).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// How callers of the admin port's mutating endpoints prove the right.
    #[arg(long, value_enum, default_value = "token")]
    admin_auth: AdminAuthMode,
    /// With --admin-auth=token: where to write (mode 0600) the admin token
    /// made at start when TRELLIS_ADMIN_TOKEN is not set.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Istio's health port: `GET /healthz/ready` answers 200 once identity
    /// and config are ready, 503 before. Usually <pod address>:15021.
    #[arg(long)]
    health: Option<SocketAddr>,
    /// Istio's status port, usually 0.0.0.0:15020: `GET /app-health/<container>/livez|readyz|startupz`
    /// probes the application as ISTIO_KUBE_APP_PROBERS describes (the
    /// injector rewrites the pod's probes to it), `/healthz/ready`, and
    /// `/stats/prometheus` with the application's metrics merged
    /// (ISTIO_PROMETHEUS_ANNOTATIONS).
    #[arg(long)]
    status: Option<SocketAddr>,
    /// Read the token proving this workload's identity to the CA and the
    /// discovery service from this file (on Kubernetes the projected
    /// service-account token, /var/run/secrets/tokens/istio-token), instead
    /// of TRELLIS_BOOTSTRAP_TOKEN.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve Prometheus on this address as Istio does: the proxy's own
    /// metrics on :15090, and the status port (:15020, unless --status
    /// names another) with those merged with the application's
    /// (`/stats/prometheus`). Usually the pod's address.
    #[arg(long)]
    metrics_ip: Option<IpAddr>,
    /// The application's metrics port (its `prometheus.io/port`), merged
    /// into 15020's.
    #[arg(long, requires = "metrics_ip")]
    app_metrics_port: Option<u16>,
    /// The application's metrics path (its `prometheus.io/path`).
    #[arg(long, default_value = "/metrics")]
    app_metrics_path: String,
    /// The explicit HTTP proxy the application's outbound calls go through.
    #[arg(long)]
    outbound: Option<SocketAddr>,
    /// Serve traffic captured by `trellis-proxy iptables` (outbound 15001,
    /// inbound 15006); inbound ports are then left to the application.
    #[arg(long)]
    capture: bool,
    /// Answer the pod's DNS on 127.0.0.1:15053 (Istio's ISTIO_META_DNS_CAPTURE).
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE")]
    dns_capture: bool,
    /// Data-plane worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Write no access log, whatever the mesh config and Telemetry say.
    #[arg(long)]
    no_access_log: bool,
    /// How long in-flight requests may finish after a stop signal.
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    /// The certificate service; the discovery address (--xds) if not given.
    #[arg(long)]
    ca_address: Option<String>,
    /// The mesh root the certificate service's TLS certificate must chain
    /// to; --xds-root-cert if not given.
    #[arg(long, env = "CA_ROOT_CA")]
    ca_root_cert: Option<PathBuf>,
    /// The mesh's trust domain: this proxy's identity is
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime of the workload certificate to ask for (seconds); if not given,
    /// Istio's SECRET_TTL environment variable (a duration, e.g. "1h"), else the CA's default.
    #[arg(long)]
    cert_ttl_seconds: Option<u64>,
    /// Mesh mTLS without a CA: the workload certificate chain, PEM, leaf
    /// first (Istio's cert-chain.pem). Its URI SAN must be this proxy's
    /// SPIFFE id (--trust-domain, --namespace, --service-account). Read once
    /// at start; needs --key and --roots; replaces the CA (no token needed).
    #[arg(long, requires_all = ["key", "roots"], conflicts_with_all = ["ca_address", "cert_ttl_seconds"])]
    cert_chain: Option<PathBuf>,
    /// The private key of --cert-chain's leaf, PEM, ECDSA P-256 (key.pem).
    #[arg(long, requires = "cert_chain")]
    key: Option<PathBuf>,
    /// The mesh roots peers must chain to, PEM (root-cert.pem).
    #[arg(long, requires = "cert_chain")]
    roots: Option<PathBuf>,
    /// Request headers (HTTP/1: with the request line) larger than this
    /// many KiB are answered 431 (Envoy's max_request_headers_kb).
    #[arg(long, env = "TRELLIS_MAX_REQUEST_HEADERS_KB", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=8192))]
    max_request_headers_kb: u32,
    /// Requests with more headers than this are answered 431 (Envoy's max_headers_count).
    #[arg(long, env = "TRELLIS_MAX_HEADERS_COUNT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_headers_count: u32,
    /// HTTP/2 streams one downstream connection may have open at once.
    #[arg(long, env = "TRELLIS_HTTP2_MAX_CONCURRENT_STREAMS",
          default_value_t = proxy::limits::DEFAULT_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: u32,
    /// What one connection may make the proxy buffer, bytes: a downstream
    /// connection's read buffer and HTTP/2 windows, an upstream HTTP/2
    /// connection's windows (Envoy's per_connection_buffer_limit_bytes).
    #[arg(long, env = "TRELLIS_PER_CONNECTION_BUFFER_LIMIT_BYTES",
          default_value_t = proxy::limits::DEFAULT_CONNECTION_BUFFER_BYTES,
          value_parser = clap::value_parser!(u32).range(65_535..))]
    per_connection_buffer_limit_bytes: u32,
    /// A downstream connection with no request in flight this long is
    /// closed, seconds; 0: never (Envoy's HTTP connection manager idle_timeout).
    #[arg(
        long,
        env = "TRELLIS_DOWNSTREAM_IDLE_TIMEOUT_SECONDS",
        default_value_t = 3600
    )]
    downstream_idle_timeout_seconds: u64,
    /// Idle connections kept per upstream endpoint; those beyond this many
    /// are closed when unused for 5 s.
    #[arg(long, env = "TRELLIS_MAX_IDLE_CONNECTIONS_PER_ENDPOINT",
          default_value_t = proxy::limits::DEFAULT_MAX_IDLE_PER_ENDPOINT)]
    max_idle_connections_per_endpoint: u32,
}

/// Where captured DNS goes (`trellis-proxy iptables --dns-port`).
const DNS_CAPTURE_PORT: u16 = 15053;
/// Istio's Prometheus port for the proxy's own metrics, and its status port
/// (probes, readiness, the proxy's metrics merged with the application's).
const STATS_PORT: u16 = 15090;
const STATUS_PORT: u16 = 15020;

/// The bootstrap token proving this workload's identity to the CA. Read from
/// the environment only: a command-line flag would show it to every `ps`.
const BOOTSTRAP_TOKEN_ENV: &str = "TRELLIS_BOOTSTRAP_TOKEN";
/// The admin token (--admin-auth=token), from the environment for the same reason.
const ADMIN_TOKEN_ENV: &str = "TRELLIS_ADMIN_TOKEN";

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

// This thread only waits for the stop signal: the proxy runs its data plane
// and its control work (xDS, admin) on runtimes of its own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // One glibc heap for all of the proxy's threads, set before any other
    // starts: an arena per thread kept ~1 MiB more resident at a churn peak
    // (docs/benchmarks.md, h-pmem).
    sys::limit_heap_arenas(1);
    // Blocks of 256 KiB and more (a config's decoded messages, a metrics
    // scrape of many destinations: 11 MB with 200) returned when freed:
    // glibc's moving thresholds kept 10 MiB of a scrape resident for good.
    // Request buffers stay under it.
    sys::unmap_large_blocks(256 * 1024);
    cli::logging::init("info");
    // `trellis-proxy iptables ...`: the capture rules, not a proxy (see cli::iptables).
    if std::env::args().nth(1).as_deref() == Some("iptables") {
        let args = cli::iptables::Args::parse_from(std::env::args().skip(1));
        return cli::iptables::run(args);
    }
    let args = Args::parse();
    anyhow::ensure!(
        args.xds.is_some() || args.static_config.is_some(),
        "give --xds or --static-config"
    );
    anyhow::ensure!(
        args.admin.ip().is_loopback(),
        "the admin port must be on a loopback address, not {}",
        args.admin
    );
    let node = Node {
        workload_name: args.workload_name.unwrap_or_else(|| args.pod_name.clone()),
        id: format!("{}.{}", args.pod_name, args.namespace),
        pod_name: args.pod_name,
        namespace: args.namespace,
        pod_ip: args.pod_ip.to_string(),
        labels: args.labels.into_iter().collect(),
        service_account: args.service_account,
        kind: match args.kind {
            Kind::Sidecar => ProxyKind::Sidecar,
            Kind::Gateway => ProxyKind::Gateway,
        } as i32,
        // Set by the discovery client, for the config store that asks.
        on_demand: false,
        asked_hosts: Vec::new(),
    };
    // The environment of a process is readable only by its user (and root),
    // unlike its command line. A token file is read again for every request
    // (the kubelet rotates it); read now too, so a wrong path stops the start.
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            (!text.trim().is_empty()).then(|| wire::certs::TokenSource::File(path.clone()))
        }
        None => std::env::var(BOOTSTRAP_TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| wire::certs::TokenSource::Value(wire::certs::BearerToken::new(t.trim()))),
    };
    let xds = args
        .xds
        .as_deref()
        .map(|a| wire::address::XdsAddress::parse(a, Some(args.xds_root_cert.as_path())))
        .transpose()?;
    let ca_address = match &args.ca_address {
        Some(a) => Some(wire::address::XdsAddress::parse(
            a,
            Some(args.ca_root_cert.as_deref().unwrap_or(&args.xds_root_cert)),
        )?),
        None => xds.clone(),
    };
    // A token is never sent in plaintext to another machine: stop now with
    // why, rather than retry for ever.
    if token.is_some() {
        for address in xds.iter().chain(&ca_address) {
            address.check_token_allowed()?;
        }
    }
    let mut status = proxy::admin::status::StatusConfig::from_env(
        std::env::var("ISTIO_KUBE_APP_PROBERS").ok().as_deref(),
        std::env::var("ISTIO_PROMETHEUS_ANNOTATIONS")
            .ok()
            .as_deref(),
        args.app_ip,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(port) = args.app_metrics_port {
        status.app_metrics = Some(proxy::admin::stats::AppMetrics {
            addr: SocketAddr::new(args.app_ip, port),
            path: args.app_metrics_path.clone(),
        });
    }
    let static_certs = match (args.cert_chain, args.key, args.roots) {
        (Some(cert_chain), Some(key), Some(roots)) => Some(proxy::tls::static_files::CertFiles {
            cert_chain,
            key,
            roots,
            trust_domain: args.trust_domain.clone(),
        }),
        _ => None,
    };
    let identity = match (token, ca_address) {
        _ if static_certs.is_some() => None,
        (Some(token), Some(ca_address)) => Some(proxy::tls::workload::WorkloadIdentity {
            ca_address,
            token,
            trust_domain: args.trust_domain.clone(),
            cert_ttl: match args.cert_ttl_seconds {
                Some(s) => Some(Duration::from_secs(s)),
                None => match std::env::var(identity::SECRET_TTL) {
                    Ok(v) => Some(
                        identity::secret_ttl(&v)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", identity::SECRET_TTL))?,
                    ),
                    Err(_) => None,
                },
            },
        }),
        (None, _) => {
            tracing::warn!(
                "no token ({BOOTSTRAP_TOKEN_ENV} or --token-file): no workload certificate, so no mesh mTLS"
            );
            None
        }
        (Some(_), None) => {
            tracing::warn!("no --ca-address or --xds: no workload certificate, so no mesh mTLS");
            None
        }
    };
    let admin_auth = admin_auth(args.admin_auth, args.admin_token_file.as_deref())?;
    let config = proxy::Config {
        identity,
        static_certs,
        node,
        xds_address: xds,
        static_config: args.static_config,
        app_ip: args.app_ip,
        outbound_addr: args.outbound,
        admin_addr: args.admin,
        admin_auth,
        health_addr: args.health,
        status_addr: args
            .status
            .or_else(|| args.metrics_ip.map(|ip| SocketAddr::new(ip, STATUS_PORT))),
        status,
        stats_addr: args.metrics_ip.map(|ip| SocketAddr::new(ip, STATS_PORT)),
        release_freed_memory: Some(release_freed_memory),
        on_control_thread: Some(lower_control_priority),
        drain_timeout: Duration::from_secs(args.drain_seconds),
        workers: args.workers,
        access_log: !args.no_access_log,
        capture: args.capture.then(proxy::capture::CapturePorts::default),
        dns: args
            .dns_capture
            .then(|| SocketAddr::from(([127, 0, 0, 1], DNS_CAPTURE_PORT))),
        on_demand: (args.discovery == Discovery::OnDemand)
            .then(|| Duration::from_secs(args.on_demand_timeout_seconds)),
        on_demand_idle: args
            .on_demand_idle_minutes
            .map(|m| m * 60)
            .or(args.on_demand_idle_seconds)
            .map(Duration::from_secs),
        limits: proxy::limits::Limits {
            max_request_headers_bytes: args.max_request_headers_kb as usize * 1024,
            max_headers: args.max_headers_count as usize,
            max_concurrent_streams: args.http2_max_concurrent_streams,
            connection_buffer_bytes: args.per_connection_buffer_limit_bytes,
            downstream_idle_timeout: (args.downstream_idle_timeout_seconds > 0)
                .then(|| Duration::from_secs(args.downstream_idle_timeout_seconds)),
            max_idle_per_endpoint: args.max_idle_connections_per_endpoint,
            ..Default::default()
        },
    };
    proxy::run(config, shutdown()).await?;
    Ok(())
}

/// How the admin port's mutating endpoints authenticate their callers.
fn admin_auth(
    mode: AdminAuthMode,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<proxy::admin::AdminAuth> {
    use proxy::admin::{AdminAuth, AdminToken};
    if mode == AdminAuthMode::Loopback {
        tracing::info!(
            "admin changes are open to 127.0.0.1 and ::1: safe only in the pod's own network namespace"
        );
        return Ok(AdminAuth::Loopback);
    }
    let given = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .and_then(AdminToken::new);
    let token = match (given, token_file) {
        (Some(token), _) => token,
        (None, Some(path)) => {
            let token = AdminToken::generate().context("making the admin token")?;
            token
                .write_private(path)
                .with_context(|| format!("writing the admin token to {}", path.display()))?;
            token
        }
        (None, None) => {
            tracing::info!(
                "neither {ADMIN_TOKEN_ENV} nor --admin-token-file: the admin port's mutating endpoints are closed"
            );
            return Ok(AdminAuth::Closed);
        }
    };
    Ok(AdminAuth::Token(token))
}

/// Returns the free pages of glibc's heap to the kernel: after a config
/// update they are the decoded resources and the previous snapshot, 7 MiB
/// of resident memory for a 1,000-service mesh.
fn release_freed_memory() {
    sys::release_freed_memory();
}

/// How much lower than requests the control thread runs (nice value).
const CONTROL_NICE: i32 = 10;

/// Run first on the proxy's control thread: its config compiles (about
/// 2.5 ms per endpoint update with a 1,000-service mesh) yield the core to
/// a request thread that wakes up meanwhile.
fn lower_control_priority() {
    if let Err(e) = sys::lower_thread_priority(CONTROL_NICE) {
        tracing::warn!("could not lower the control thread's priority: {e}");
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["trellis-proxy", "--pod-name", "p", "--pod-ip", "10.0.0.1"];
        Args::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn an_idle_period_out_of_range_or_given_twice_is_refused_naming_the_flag() {
        let ok =
            parse(&["--discovery", "on-demand", "--on-demand-idle-minutes", "30"]).expect("valid");
        assert_eq!(ok.on_demand_idle_minutes, Some(30));
        for bad in [
            ["--on-demand-idle-minutes", "0"],
            ["--on-demand-idle-minutes", "x"],
        ] {
            let err = parse(&bad).err().expect("refused").to_string();
            assert!(err.contains("--on-demand-idle-minutes"), "{err}");
        }
        let err = parse(&[
            "--on-demand-idle-minutes",
            "30",
            "--on-demand-idle-seconds",
            "2",
        ])
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
