//! Building responses and reading request bodies.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

pub type Body = Full<Bytes>;

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, JSON, Bytes::from(body)),
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            Bytes::from(format!("cannot encode response: {e}")),
        ),
    }
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

pub fn html(body: String) -> Response<Body> {
    with_type(StatusCode::OK, HTML, Bytes::from(body))
}

pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not found")
}

pub fn health() -> Response<Body> {
    with_type(
        StatusCode::OK,
        JSON,
        Bytes::from_static(br#"{"status": "Healthy"}"#),
    )
}

/// A 302 to `location` that also sets (or clears) a cookie.
pub fn redirect_with_cookie(location: &'static str, cookie: &str) -> Response<Body> {
    let mut resp = with_type(StatusCode::FOUND, TEXT, Bytes::new());
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    if let Ok(value) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(SET_COOKIE, value);
    }
    resp
}

/// Reads a whole request body of at most `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Option<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}

/// Reads and discards a request body, returning its length. Reading it (rather
/// than dropping it) keeps HTTP/1.1 connections reusable.
pub async fn drain_body(mut body: Incoming) -> u64 {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    len
}
