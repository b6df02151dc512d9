//! `trellis dashboard`: opens the live service graph trellisd serves on its
//! monitoring port, and on a cluster the telemetry add-ons' UIs
//! (`trellis dashboard prometheus|grafana|jaeger|kiali`), as `istioctl
//! dashboard` does.
//!
//! On one machine the graph is on the control plane's own address, which
//! the host reaches in both network modes: its URL is printed (and opened).
//! On a cluster nothing in it is reachable from here, so a local listener
//! forwards every request through the API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/http:<service>:<port>/proxy/`) —
//! the user's own credentials and RBAC (`services/proxy`) apply, and no
//! kubelet port-forward is needed.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result, bail};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// What to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Prometheus,
    Grafana,
    Jaeger,
    Kiali,
}

/// Where an add-on is on the cluster, as Istio's `samples/addons` install it.
struct Addon {
    service: &'static str,
    /// The Service's port, by number or name (the service proxy takes both).
    port: &'static str,
    /// The local port `istioctl dashboard` uses for it.
    local_port: u16,
    /// Where its UI starts.
    path: &'static str,
}

impl Target {
    fn addon(self) -> Addon {
        match self {
            Target::Prometheus => Addon {
                service: "prometheus",
                port: "9090",
                local_port: 9090,
                path: "/",
            },
            Target::Grafana => Addon {
                service: "grafana",
                port: "3000",
                local_port: 3000,
                path: "/",
            },
            // Istio's Service `tracing` serves Jaeger's query UI (16686) on
            // its port named `http-query`.
            Target::Jaeger => Addon {
                service: "tracing",
                port: "http-query",
                local_port: 16686,
                path: "/",
            },
            Target::Kiali => Addon {
                service: "kiali",
                port: "20001",
                local_port: 20001,
                path: "/kiali",
            },
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// An add-on's UI on the cluster instead of the service graph.
    #[arg(value_enum)]
    pub target: Option<Target>,
    /// On a cluster: the address the local forward listens on (keep it on loopback).
    #[arg(long, default_value = "localhost")]
    pub address: String,
    /// On a cluster: the local port (default: the add-on's, as istioctl's;
    /// any free one if that is taken).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Open a browser ($BROWSER, else xdg-open) at the address.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub browser: bool,
}

/// The service graph of a mesh `trellis up` runs, whose control plane's
/// HTTP API is `api`: prints where it is, and opens it.
pub fn local(args: &Args, api: &str) -> Result<()> {
    if let Some(target) = args.target {
        bail!(
            "{target:?} runs on a cluster (give --kubeconfig or --context); on one machine, \
             `trellis up` prints the command that starts Prometheus on its targets, \
             and the service graph is `trellis dashboard`"
        );
    }
    let url = format!("{}/dashboard/", api.trim_end_matches('/'));
    say(&format!("Trellis service graph: {url}\n"));
    if args.browser {
        open(&url);
    }
    Ok(())
}

/// On a cluster: forwards a local port to trellisd's monitoring port (the
/// graph) or to an add-on, through the API server, until Ctrl-C.
pub async fn cluster(args: &Args, client: kube::Client, istio_namespace: &str) -> Result<()> {
    let (prefix, local_port, path, what) = match args.target {
        None => (
            format!(
                "/api/v1/namespaces/{istio_namespace}/services/http:{}:{}/proxy",
                crate::cluster::CONTROL_PLANE_SERVICE,
                crate::cluster::CONTROL_PLANE_PORT
            ),
            crate::cluster::CONTROL_PLANE_PORT,
            "/dashboard/",
            "Trellis service graph".to_string(),
        ),
        Some(t) => {
            let a = t.addon();
            (
                format!(
                    "/api/v1/namespaces/{istio_namespace}/services/http:{}:{}/proxy",
                    a.service, a.port
                ),
                a.local_port,
                a.path,
                format!("{t:?} ({istio_namespace}/{}:{})", a.service, a.port),
            )
        }
    };
    // Reachable at all? Said now, rather than as a 502 in the browser.
    let probe = http::Request::get(format!("{prefix}{path}")).body(Vec::new())?;
    if let Err(e) = client.request_text(probe).await {
        bail!(
            "{what} is not reachable through the API server ({prefix}{path}): {e}; \
             is it installed in {istio_namespace}?"
        );
    }
    let listener = listen(
        &args.address,
        args.port.unwrap_or(local_port),
        args.port.is_some(),
    )
    .await?;
    let local = listener.local_addr()?;
    let url = format!("http://{}{path}", authority(&args.address, local));
    say(&format!(
        "{what}: {url}\n  (forwarded through the API server: {prefix}/)\nPress Ctrl-C to stop.\n"
    ));
    if args.browser {
        open(&url);
    }
    serve(listener, client, prefix).await
}

/// Prints `text`; a closed stdout does not stop the forward.
fn say(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn authority(address: &str, local: SocketAddr) -> String {
    if address == "localhost" {
        format!("localhost:{}", local.port())
    } else {
        local.to_string()
    }
}

/// A listener on `address:port`; any free port if that one is taken and
/// the user did not ask for it.
async fn listen(address: &str, port: u16, exact: bool) -> Result<tokio::net::TcpListener> {
    let ip: IpAddr = if address == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        address
            .parse()
            .with_context(|| format!("--address {address:?}: an IP address or localhost"))?
    };
    match tokio::net::TcpListener::bind((ip, port)).await {
        Ok(l) => Ok(l),
        Err(e) if exact => Err(e).with_context(|| format!("listening on {ip}:{port}")),
        Err(_) => tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("listening on {ip}")),
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    client: kube::Client,
    prefix: String,
) -> Result<()> {
    let stop = crate::local::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let (client, prefix) = (client.clone(), prefix.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(client.clone(), prefix.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Headers that belong to one connection, not passed on.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn forward(
    client: kube::Client,
    prefix: String,
    req: http::Request<Incoming>,
) -> Result<http::Response<kube::client::Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{prefix}{path}"));
    for (name, value) in &parts.headers {
        if name != http::header::HOST && !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let reply = |status: http::StatusCode, text: String| {
        let mut resp = http::Response::new(kube::client::Body::from(text.into_bytes()));
        *resp.status_mut() = status;
        resp
    };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            return Ok(reply(
                http::StatusCode::BAD_REQUEST,
                format!("reading the request: {e}\n"),
            ));
        }
    };
    let request = match out.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return Ok(reply(http::StatusCode::BAD_REQUEST, format!("{e}\n"))),
    };
    Ok(match client.send(request).await {
        Ok(resp) => resp,
        Err(e) => reply(
            http::StatusCode::BAD_GATEWAY,
            format!("the Kubernetes API server's service proxy: {e}\n"),
        ),
    })
}

/// Opens `url` in the user's browser ($BROWSER, else xdg-open) if there is
/// one; never fails the command (a headless machine has none).
fn open(url: &str) {
    let browser = std::env::var("BROWSER")
        .ok()
        .and_then(|b| b.split(':').find(|s| !s.is_empty()).map(str::to_string));
    let program = browser.or_else(|| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("xdg-open").is_file()))
            .then(|| "xdg-open".to_string())
    });
    let Some(program) = program else {
        eprintln!(
            "(no browser found: set $BROWSER or install xdg-open; open the address yourself)"
        );
        return;
    };
    let spawned = std::process::Command::new(&program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("(could not start {program}: {e}; open the address yourself)");
    }
}
