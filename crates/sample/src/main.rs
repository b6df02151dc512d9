//! `trellis-sample`: one binary that plays every role of Istio's Bookinfo
//! sample, plus an `echo` workload for tests and benchmarks.
//!
//! The environment is read here and only here; the roles get plain
//! configuration values, so tests can run many differently configured
//! servers in one process.

#![forbid(unsafe_code)]

mod bookinfo;
mod client;
mod echo;
mod reply;
mod server;
#[cfg(test)]
mod testutil;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::bookinfo::{
    Upstreams, details::Details, productpage::ProductPage, ratings::Ratings, reviews::Reviews,
};
use crate::client::Client;
use crate::echo::Echo;
use crate::server::{Handler, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Productpage,
    Details,
    Reviews,
    Ratings,
    Echo,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Productpage => "productpage",
            Role::Details => "details",
            Role::Reviews => "reviews",
            Role::Ratings => "ratings",
            Role::Echo => "echo",
        }
    }
}

#[derive(Parser, Debug)]
// No `version` here: `--version` is the service version, not ours.
#[command(name = "trellis-sample", about)]
struct Args {
    /// Which service to be.
    #[arg(value_enum)]
    role: Role,
    /// Port to listen on; repeat to listen on several.
    #[arg(long = "port", default_value = "9080")]
    ports: Vec<u16>,
    /// Version reported (echo) or behaviour chosen (reviews: v1, v2, v3).
    #[arg(long, env = "SERVICE_VERSION", default_value = "v1")]
    version: String,
    /// Service name reported; defaults to the role's name.
    #[arg(long)]
    service: Option<String>,
}

/// Who this process is, as reported to callers.
#[derive(Clone, Debug)]
pub struct Workload {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub namespace: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn hostname() -> Option<String> {
    env("HOSTNAME").or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Launchers capture stderr into files; colour codes only help a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args = Args::parse();
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| args.role.name().to_owned());
    let workload = Workload {
        pod: env("POD_NAME")
            .or_else(hostname)
            .unwrap_or_else(|| format!("{service}-local")),
        namespace: env("POD_NAMESPACE").unwrap_or_else(|| "default".to_owned()),
        version: args.version.clone(),
        service,
    };
    let bind: IpAddr = match env("TRELLIS_BIND_ADDR") {
        Some(addr) => addr
            .parse()
            .with_context(|| format!("TRELLIS_BIND_ADDR {addr:?} is not an IP address"))?,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    // Only HTTP_PROXY: in the mesh it names the sidecar, and every outgoing
    // call must go through it whatever NO_PROXY says.
    let proxy = env("HTTP_PROXY").or_else(|| env("http_proxy"));
    let client = Client::new(proxy.as_deref())?;
    let upstreams = Upstreams::from_vars(env);

    let server = Server::bind(bind, &args.ports).await?;
    let addrs = server.local_addrs();
    tracing::info!(
        role = args.role.name(),
        address = ?addrs,
        version = %workload.version,
        service = %workload.service,
        pod = %workload.pod,
        namespace = %workload.namespace,
        proxy = proxy.as_deref().unwrap_or("none"),
        "trellis-sample started"
    );

    match args.role {
        Role::Details => run(server, Details).await,
        Role::Ratings => run(server, Ratings).await,
        Role::Reviews => {
            let reviews = Reviews::new(
                &workload.version,
                client,
                upstreams.ratings,
                workload.pod.clone(),
                env("CLUSTER_NAME"),
            );
            run(server, reviews).await
        }
        Role::Productpage => run(server, ProductPage::new(client, upstreams)).await,
        Role::Echo => run(server, Echo::new(workload, client)).await,
    }
    tracing::info!("trellis-sample stopped");
    Ok(())
}

async fn run<H: Handler>(server: Server, handler: H) {
    server
        .serve(Arc::new(handler), server::shutdown_signal())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_parses_roles_ports_and_version() {
        let args = Args::try_parse_from([
            "trellis-sample",
            "echo",
            "--port",
            "8080",
            "--port",
            "9090",
            "--version",
            "v2",
            "--service",
            "httpbin",
        ])
        .expect("valid");
        assert_eq!(args.role, Role::Echo);
        assert_eq!(args.ports, [8080, 9090]);
        assert_eq!(args.version, "v2");
        assert_eq!(args.service.as_deref(), Some("httpbin"));

        let args = Args::try_parse_from(["trellis-sample", "reviews"]).expect("valid");
        assert_eq!(args.ports, [9080]);
        assert!(Args::try_parse_from(["trellis-sample", "nope"]).is_err());
    }
}
