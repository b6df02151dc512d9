//! The kubelet's streaming endpoints, for `kubectl exec` and `kubectl
//! port-forward`: `/exec/<namespace>/<pod>/<container>` and
//! `/portForward/<namespace>/<pod>`. At our Kubernetes pin (1.34) kubectl
//! speaks WebSocket to the API server, which translates (exec) or tunnels
//! (port-forward) it and reaches the kubelet with an HTTP/1.1 upgrade to
//! SPDY/3.1 — so that is what is served here ([`spdy`], [`connection`]),
//! with the remote-command protocol `v4.channel.k8s.io` ([`exec`]) and
//! `portforward.k8s.io` ([`port_forward`]). `attach` is refused: a
//! container's input here is not a terminal to attach to.

mod connection;
mod container;
mod exec;
mod port_forward;
mod spdy;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use connection::Connection;

/// Whether `path` is one of the streaming endpoints.
pub fn serves(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next();
    matches!(first, Some("exec" | "portForward" | "attach"))
}

/// Answers a streaming request: 101 and the session in the background, or
/// an error whose text the API server hands on to kubectl.
pub fn handle<B: Send + 'static>(req: Request<B>, logs: &Path) -> Response<Full<Bytes>> {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "kubelet streaming request");
    match accept(req, logs) {
        Ok(r) => r,
        Err((status, message)) => {
            tracing::info!(%status, %message, "kubelet streaming request refused");
            let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
    }
}

enum Session {
    Exec(container::Process, exec::Options),
    PortForward(PathBuf, String),
}

type Refusal = (StatusCode, String);

fn accept<B: Send + 'static>(
    mut req: Request<B>,
    logs: &Path,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let path = req.uri().path().trim_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').collect();
    let safe = |s: &&str| !s.is_empty() && *s != "." && *s != ".." && !s.contains('\0');
    if !parts.iter().all(safe) {
        return Err((StatusCode::BAD_REQUEST, format!("malformed path /{path}")));
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "trellis node streams over an HTTP upgrade to SPDY/3.1 only (asked for {upgrade:?})"
            ),
        ));
    }
    let (protocol, session) = match parts[..] {
        ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => {
            let options = exec::Options::from_query(req.uri().query().unwrap_or_default())
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            let process = container::find(logs, namespace, pod, container)
                .ok_or_else(|| not_running(namespace, pod, Some(container)))?;
            (exec::PROTOCOL, Session::Exec(process, options))
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            let process = container::any(logs, namespace, pod)
                .ok_or_else(|| not_running(namespace, pod, None))?;
            (
                port_forward::PROTOCOL,
                Session::PortForward(process.netns(), format!("{namespace}/{pod}")),
            )
        }
        ["attach", ..] => {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "trellis node does not support attach: its containers have no terminal; use kubectl exec or kubectl logs".into(),
            ));
        }
        _ => {
            return Err((
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint /{path}: trellis node streams /exec/<namespace>/<pod>/<container> and /portForward/<namespace>/<pod>"
                ),
            ));
        }
    };
    let offered: Vec<&str> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&protocol) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, trellis node accepts [{protocol:?}]"
            ),
        ));
    }
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgraded.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::warn!(error = %e, "kubelet streaming: the upgrade failed");
                return;
            }
        };
        let conn = Connection::serve(io);
        match session {
            Session::Exec(process, options) => exec::run(conn, process, options).await,
            Session::PortForward(netns, pod) => port_forward::run(conn, netns, pod).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    Ok(r)
}

fn not_running(namespace: &str, pod: &str, container: Option<&str>) -> Refusal {
    let what = match container {
        Some(c) => format!("container {c:?} of pod {namespace}/{pod} is not running on this node"),
        None => format!("pod {namespace}/{pod} has no running container on this node"),
    };
    (StatusCode::NOT_FOUND, what)
}
