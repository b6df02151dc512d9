//! The control plane's HTTP API (loopback only): what `trellis apply`, `get`,
//! `delete`, `proxy-status` and `proxy-config` talk to.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::ControlPlane;
use crate::store::{Change, Key};

type Shared = Arc<ControlPlane>;

pub fn router(cp: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/apply", post(apply))
        .route("/v1/delete", post(delete))
        .route("/v1/resources", get(list))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(cp)
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
        if let api::Resource::Unsupported { kind, reason, .. } = r {
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

async fn apply(State(cp): State<Shared>, Query(q): Query<SourceQuery>, body: String) -> Response {
    let source = q.source.unwrap_or_else(|| "<request>".into());
    let resources = match parse_valid(&source, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut outcomes = Vec::new();
    {
        let mut store = cp.store();
        for r in resources {
            let key = Key::of(&r);
            match store.apply(r) {
                Ok(result) => outcomes.push(Outcome { key, result }),
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("storing {key}: {e}"),
                    );
                }
            }
        }
    }
    if outcomes.iter().any(|o| o.result != Change::Unchanged) {
        cp.changed();
    }
    Json(outcomes).into_response()
}

async fn delete(State(cp): State<Shared>, Query(q): Query<SourceQuery>, body: String) -> Response {
    let source = q.source.unwrap_or_else(|| "<request>".into());
    let resources = match api::parse(&source, &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    {
        let mut store = cp.store();
        for r in &resources {
            let key = Key::of(r);
            match store.delete(&key) {
                Ok(Some(_)) => outcomes.push(Outcome {
                    key,
                    result: Change::Deleted,
                }),
                Ok(None) => missing.push(key.to_string()),
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("deleting {key}: {e}"),
                    );
                }
            }
        }
    }
    if !outcomes.is_empty() {
        cp.changed();
    }
    if !missing.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("not found: {}", missing.join(", ")),
        );
    }
    Json(outcomes).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

async fn list(State(cp): State<Shared>, Query(q): Query<ListQuery>) -> Response {
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
        .map(|r| r.to_json())
        .collect();
    Json(items).into_response()
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
