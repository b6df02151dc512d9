//! Errors that stop the proxy from starting. Everything that goes wrong later
//! (a bad config, a failed upstream) is handled where it happens: a NACK, a
//! local reply, a log line — never a crash of the whole proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no config source: set either xds_address or static_config")]
    NoConfigSource,
    #[error("both xds_address and static_config are set: choose one config source")]
    TwoConfigSources,
    #[error("static config {path}: cannot read it: {source}")]
    StaticRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("static config {path}: {reason}")]
    StaticConfig { path: PathBuf, reason: String },
    #[error("admin address {0}: the admin server only listens on a loopback address")]
    AdminNotLoopback(SocketAddr),
    #[error("admin server: cannot listen on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the metrics port {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("health or status port: cannot listen on {addr}: {source}")]
    HealthBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the {0} thread stopped unexpectedly")]
    ThreadDied(&'static str),
    #[error("workload identity: {0}")]
    Identity(#[from] crate::tls::workload::IdentityError),
    #[error("workload certificate files: {0}")]
    StaticCerts(#[from] crate::tls::static_files::StaticCertError),
    #[error("{0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("both a CA (identity) and certificate files (static_certs) are set: choose one")]
    TwoIdentitySources,
    #[error("on-demand discovery is for sidecars: a gateway is sent every host its routes name")]
    OnDemandGateway,
    #[error("on-demand discovery needs a control plane (--xds): a static config holds every host")]
    OnDemandStatic,
}
