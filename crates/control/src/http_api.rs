//! The control plane's HTTP API (loopback only): what `trellis apply`, `get`,
//! `delete`, `proxy-status` and `proxy-config` talk to.
//!
//! Every route but `/healthz`, `/metrics` and the dashboard (see
//! [`crate::dashboard`]) is guarded (see [`guard`]): the bearer token
//! when the control plane has one, a Host that names this listener (DNS
//! rebinding; not on Kubernetes, where only read-only views are served and
//! the API server's service proxy passes on its own Host), no foreign Origin (a web page in a local browser), and a
//! YAML or JSON body on POST (an HTML form cannot send one). Secrets are
//! served with their values redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api_token::ApiToken;
use crate::state::ControlPlane;
use crate::store::{Change, Key};

type Shared = Arc<ControlPlane>;

/// Who may call the API.
#[derive(Debug)]
pub struct Access {
    /// The bearer token every guarded route requires; `None`: no token (any
    /// local process may call; `trellisd` warns at start).
    pub token: Option<ApiToken>,
    /// The listener's own address: the only Host (besides localhost) accepted.
    pub listen: SocketAddr,
    /// Config comes from the Kubernetes API server, whose authentication and
    /// RBAC guard it: this API then serves only read-only views.
    pub read_only: bool,
    /// The dashboard's tracing UI and metrics source.
    pub dashboard: crate::dashboard::Settings,
}

/// Who made a request, as the audit log names them.
#[derive(Clone, Debug)]
struct Caller {
    peer: SocketAddr,
    /// The token's fingerprint, or `none` when the API has no token.
    token: String,
    authenticated: bool,
}

/// Where `trellis up` keeps its processes' state (see [`pod_statuses`]).
#[derive(Clone)]
struct PodStatusFile(Option<Arc<std::path::PathBuf>>);

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
/// `pod_status_file`: the JSON `trellis up` keeps of its processes (running,
/// restarts by `<namespace>/<pod>/<container>`), merged into served Pods.
pub fn router(cp: Shared, access: Access, pod_status_file: Option<std::path::PathBuf>) -> Router {
    let (apply, delete) = if access.read_only {
        (post(config_is_kubernetes), post(config_is_kubernetes))
    } else {
        (post(apply), post(delete))
    };
    let dashboard = crate::dashboard::router(
        &cp,
        access.listen,
        access.read_only,
        access.dashboard.clone(),
    );
    let access = Arc::new(access);
    Router::new()
        .route("/v1/apply", apply)
        .route("/v1/delete", delete)
        .route("/v1/resources", get(list))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route_layer(middleware::from_fn_with_state(access, guard))
        .layer(Extension(PodStatusFile(pod_status_file.map(Arc::new))))
        .route("/healthz", get(|| async { "ok" }))
        // As istiod's monitoring port: metrics are read without a token
        // (Prometheus scrapes them); they name no secret.
        .route("/metrics", get(metrics))
        .with_state(cp)
        // The live service graph: read-only views, guarded on their own.
        .merge(dashboard)
}

/// The body types a POST may carry: what `kubectl`/`curl --data-binary` users send.
const BODY_TYPES: [&str; 5] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
];

async fn guard(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // On Kubernetes only read-only views are served, reached through the
    // API server's service proxy (its authentication and RBAC on
    // `services/proxy`), which passes on the Host the user sent it.
    if !access.read_only && !is_own_authority(host, access.listen) {
        tracing::warn!(%peer, host, path = %req.uri().path(), "API request refused: foreign Host");
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not this control plane ({}): refused (DNS rebinding protection)",
                access.listen
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|a| is_own_authority(a, access.listen));
        if !own {
            tracing::warn!(%peer, origin, path = %req.uri().path(), "API request refused: cross-origin");
            return error(
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin:?} refused"),
            );
        }
    }
    let caller = match &access.token {
        Some(token) => {
            let presented = bearer(headers);
            if !presented.is_some_and(|p| token.verify(p)) {
                tracing::warn!(%peer, path = %req.uri().path(), "API request refused: missing or wrong token");
                return error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API token: send `Authorization: Bearer <token>` \
                     (`trellis up` keeps it in <state dir>/api-token; the CLI sends it)",
                );
            }
            Caller {
                peer,
                token: token.fingerprint().to_string(),
                authenticated: true,
            }
        }
        None => Caller {
            peer,
            token: "none".into(),
            authenticated: false,
        },
    };
    if req.method() == Method::POST {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !BODY_TYPES.contains(&essence.as_str()) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {ct:?} refused: send one of {}",
                    BODY_TYPES.join(", ")
                ),
            );
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `authority` (`host[:port]`) names the listener `listen`: its own
/// IP or a loopback name, and its port if one is given.
pub(crate) fn is_own_authority(authority: &str, listen: SocketAddr) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:15014`, `127.0.0.1:15014`, `localhost:15014`; not the colons inside `[::1]`.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().ok() != Some(listen.port())) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == listen.ip() || (ip.is_loopback() && listen.ip().is_loopback()))
}

#[derive(Deserialize)]
struct SourceQuery {
    /// The file the body came from, for error messages.
    source: Option<String>,
}

#[derive(Serialize)]
struct Outcome {
    key: Key,
    result: Change,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Parses and validates every document first; stores nothing unless all are valid.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn parse_valid(source: &str, body: &str) -> Result<Vec<api::Resource>, Response> {
    let resources =
        api::parse(source, body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut problems = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        if let api::Resource::Unsupported { kind, reason, .. } = r
            && !model::rate_limit::is_translated(r)
        {
            problems.push(format!(
                "{source}: document {}: {kind} {}: {reason}",
                i + 1,
                r.name()
            ));
            continue;
        }
        for e in api::validate(r) {
            problems.push(format!(
                "{source}: document {} ({} {}): {}: {}",
                i + 1,
                r.kind_name(),
                r.name(),
                e.path,
                e.message
            ));
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(error(StatusCode::BAD_REQUEST, problems.join("\n")))
    }
}

/// Writes on a control plane whose config is the Kubernetes API server's.
async fn metrics(State(cp): State<Shared>) -> Response {
    let body = cp.metrics.encode(cp.connected_proxies());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn config_is_kubernetes() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this control plane reads its config from the Kubernetes API server: \
         change it with kubectl, where the API server's authentication and RBAC apply",
    )
}

async fn apply(
    State(cp): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SourceQuery>,
    body: String,
) -> Response {
    let source = q.source.unwrap_or_else(|| "<request>".into());
    let resources = match parse_valid(&source, &body) {
        Ok(r) => {
            cp.metrics.validated(true);
            r
        }
        Err(resp) => {
            cp.metrics.validated(false);
            return resp;
        }
    };
    // Accepted but not enforced: said in `Warning` headers, as the Kubernetes
    // API server says it, so that curl users see it too (the CLI says it itself).
    let warnings: Vec<String> = resources
        .iter()
        .filter_map(|r| {
            let text = model::analyze::not_enforced_in(r, Some(&cp.mesh().config))?;
            tracing::warn!(peer = %caller.peer, resource = %Key::of(r), "{text}");
            Some(format!("{} {}: {text}", r.kind_name(), r.name()))
        })
        .collect();
    let mut outcomes = Vec::new();
    let failed = {
        let mut store = cp.store();
        let mut failed = None;
        for r in resources {
            let key = Key::of(&r);
            match store.apply(r) {
                Ok(result) => outcomes.push(Outcome { key, result }),
                Err(e) => {
                    failed = Some(format!("storing {key}: {e}"));
                    break;
                }
            }
        }
        let changed = outcomes.iter().filter(|o| o.result != Change::Unchanged);
        told(&cp, changed.map(|o| &o.key));
        failed
    };
    if let Some(failed) = failed {
        return error(StatusCode::INTERNAL_SERVER_ERROR, failed);
    }
    audit(&caller, "apply", &outcomes);
    let mut resp = Json(outcomes).into_response();
    for w in warnings {
        // RFC 7234's warn-text is a quoted string; header values must be visible ASCII.
        let text: String = w
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .filter(|c| *c != '"' && *c != '\\')
            .collect();
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn delete(
    State(cp): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SourceQuery>,
    body: String,
) -> Response {
    let source = q.source.unwrap_or_else(|| "<request>".into());
    let resources = match api::parse(&source, &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    let failed = {
        let mut store = cp.store();
        let mut failed = None;
        for r in &resources {
            let key = Key::of(r);
            match store.delete(&key) {
                Ok(Some(_)) => outcomes.push(Outcome {
                    key,
                    result: Change::Deleted,
                }),
                Ok(None) => missing.push(key.to_string()),
                Err(e) => {
                    failed = Some(format!("deleting {key}: {e}"));
                    break;
                }
            }
        }
        told(&cp, outcomes.iter().map(|o| &o.key));
        failed
    };
    if let Some(failed) = failed {
        return error(StatusCode::INTERNAL_SERVER_ERROR, failed);
    }
    audit(&caller, "delete", &outcomes);
    if !missing.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("not found: {}", missing.join(", ")),
        );
    }
    Json(outcomes).into_response()
}

/// Tells the control plane of the objects changed in the store, if any.
/// Called with the store still locked: a push reads the store and takes
/// the changes in one step, so it never reads a change it is not told of
/// (it would compare it with itself next time, and miss it).
fn told<'a>(cp: &ControlPlane, changed: impl Iterator<Item = &'a Key>) {
    let touched = crate::store::touched(changed);
    if !touched.is_empty() {
        cp.changed_objects(touched);
    }
}

/// One log line per mutating call: who, what, and with what result.
fn audit(caller: &Caller, verb: &str, outcomes: &[Outcome]) {
    let changes: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} {:?}", o.key, o.result).to_lowercase())
        .collect();
    tracing::info!(
        peer = %caller.peer,
        token = %caller.token,
        verb,
        changes = %changes.join(", "),
        "config changed through the API"
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    /// Secrets' values in clear: only for a caller holding the API token, and logged.
    #[serde(default)]
    show_secret_data: bool,
}

async fn list(
    State(cp): State<Shared>,
    Extension(caller): Extension<Caller>,
    Extension(PodStatusFile(status_file)): Extension<PodStatusFile>,
    Query(q): Query<ListQuery>,
) -> Response {
    let processes = status_file.as_deref().and_then(|f| {
        let bytes = std::fs::read(f).ok()?;
        serde_json::from_slice::<BTreeMap<String, Value>>(&bytes).ok()
    });
    if q.show_secret_data {
        if !caller.authenticated {
            return error(
                StatusCode::FORBIDDEN,
                "showSecretData needs the API token, and this control plane runs without one",
            );
        }
        tracing::warn!(peer = %caller.peer, token = %caller.token, kind = ?q.kind, namespace = ?q.namespace, name = ?q.name, "secret data shown in clear");
    }
    let kind = match q.kind.as_deref().map(api::Kind::parse) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown kind {:?}", q.kind.unwrap_or_default()),
            );
        }
        Some(Some(k)) => Some(k),
        None => None,
    };
    let store = cp.store();
    let items: Vec<Value> = store
        .resources()
        .filter(|r| kind.is_none_or(|k| r.kind() == k))
        .filter(|r| {
            q.namespace
                .as_deref()
                .is_none_or(|ns| r.namespace().unwrap_or("default") == ns)
        })
        .filter(|r| q.name.as_deref().is_none_or(|n| r.name() == n))
        .map(|r| {
            // A pod is kept slim in memory and shown whole, as stored.
            let whole = match r {
                api::Resource::SlimPod(_) => {
                    let key = crate::store::Key::of(r);
                    store.whole(&key).unwrap_or_else(|e| {
                        tracing::warn!(resource = %key, error = %e, "shown in its slim form");
                        None
                    })
                }
                _ => None,
            };
            let r = whole.as_ref().unwrap_or(r);
            let mut json = r.to_json();
            if r.kind() == api::Kind::Secret && !q.show_secret_data {
                redact_secret(&mut json);
            }
            if let (api::Kind::Pod, Some(processes)) = (r.kind(), &processes) {
                pod_statuses(&mut json, processes);
            }
            json
        })
        .collect();
    Json(items).into_response()
}

/// Sets a Pod's `status.containerStatuses` (Kubernetes' shape: name, ready,
/// restartCount, state) from the supervisor's view of its processes, the
/// sidecar (`istio-proxy`) included when the pod has one.
fn pod_statuses(pod: &mut Value, processes: &BTreeMap<String, Value>) {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    if pod
        .pointer("/metadata/annotations/sidecar.istio.io~1status")
        .is_some()
    {
        containers.push("istio-proxy".into());
    }
    let statuses: Vec<Value> = containers
        .iter()
        .filter_map(|c| {
            let p = processes.get(&format!("{ns}/{name}/{c}"))?;
            let running = p["running"].as_bool().unwrap_or(false);
            let state = if running {
                json!({ "running": {} })
            } else if p["backingOff"].as_bool().unwrap_or(false) {
                json!({ "waiting": { "reason": "CrashLoopBackOff" } })
            } else {
                json!({ "waiting": { "reason": "ContainerCreating" } })
            };
            Some(json!({
                "name": c,
                "ready": running,
                "restartCount": p["restartCount"].as_u64().unwrap_or(0),
                "state": state,
            }))
        })
        .collect();
    if statuses.is_empty() {
        return;
    }
    if let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("containerStatuses".into(), Value::Array(statuses));
    } else if let Some(obj) = pod.as_object_mut() {
        obj.insert("status".into(), json!({ "containerStatuses": statuses }));
    }
}

/// Replaces a Secret's values by `[redacted] (N bytes)`, keeping the keys,
/// as `kubectl describe secret` shows them.
pub fn redact_secret(secret: &mut Value) {
    for (field, base64) in [("data", true), ("stringData", false)] {
        let Some(map) = secret.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        for value in map.values_mut() {
            let text = value.as_str().unwrap_or("");
            let size = if base64 {
                decoded_len(text)
            } else {
                text.len()
            };
            *value = Value::String(format!("[redacted] ({size} bytes)"));
        }
    }
}

/// The length of the bytes a base64 text encodes.
fn decoded_len(text: &str) -> usize {
    let chars = text.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    let padding = text
        .trim_end()
        .bytes()
        .rev()
        .take_while(|b| *b == b'=')
        .count();
    (chars * 3 / 4).saturating_sub(padding)
}

async fn syncz(State(cp): State<Shared>) -> Response {
    Json(cp.proxy_status()).into_response()
}

#[derive(Deserialize)]
struct DumpQuery {
    proxy: String,
}

/// The config the control plane would push to a proxy now, by type.
async fn config_dump(State(cp): State<Shared>, Query(q): Query<DumpQuery>) -> Response {
    let Some(node) = cp.node(&q.proxy) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no proxy {:?} is or was connected", q.proxy),
        );
    };
    let config = model::compile(&cp.mesh(), &node);
    let mut dump = BTreeMap::new();
    dump.insert("clusters", json!(config.clusters));
    dump.insert("endpoints", json!(config.endpoints));
    dump.insert("listeners", json!(config.listeners));
    dump.insert("routes", json!(config.routes));
    Json(dump).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_listener_and_loopback_names_are_own_authorities() {
        let listen: SocketAddr = "127.10.0.1:15014".parse().unwrap();
        for ok in [
            "127.10.0.1:15014",
            "127.10.0.1",
            "localhost:15014",
            "LOCALHOST",
            "127.0.0.1:15014",
            "[::1]:15014",
        ] {
            assert!(is_own_authority(ok, listen), "{ok}");
        }
        for bad in [
            "evil.example:15014",
            "evil.example",
            "127.10.0.1:80",
            "10.0.0.1:15014",
            "localhost.evil.example:15014",
            "",
        ] {
            assert!(!is_own_authority(bad, listen), "{bad}");
        }
    }

    #[test]
    fn secrets_keep_their_keys_and_sizes_but_not_their_values() {
        let mut secret = json!({
            "kind": "Secret",
            "data": {"tls.key": "aGVsbG8=", "empty": ""},
            "stringData": {"token": "s3cr3t"},
        });
        redact_secret(&mut secret);
        assert_eq!(secret["data"]["tls.key"], "[redacted] (5 bytes)");
        assert_eq!(secret["data"]["empty"], "[redacted] (0 bytes)");
        assert_eq!(secret["stringData"]["token"], "[redacted] (6 bytes)");
    }

    #[tokio::test]
    async fn a_control_plane_fed_by_kubernetes_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let cp = Arc::new(ControlPlane::new(store, model::MeshConfig::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let access = Access {
            token: None,
            listen,
            read_only: true,
            dashboard: Default::default(),
        };
        let app = router(cp.clone(), access, None);
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}\n";
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for path in ["/v1/apply", "/v1/delete"] {
            let resp = client
                .post(format!("http://{listen}{path}"))
                .header("content-type", "application/yaml")
                .body(vs)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert!(resp.text().await.unwrap().contains("kubectl"), "{path}");
        }
        let listed = client
            .get(format!("http://{listen}/v1/resources?kind=VirtualService"))
            .send()
            .await
            .unwrap();
        assert!(listed.status().is_success());
        assert!(!listed.text().await.unwrap().contains("\"r\""));
    }
}
