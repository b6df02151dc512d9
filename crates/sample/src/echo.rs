//! `echo`: tells the caller what it received, and can be told to misbehave
//! (status, delay, flakiness, upstream calls) so that mesh tests can exercise
//! routing, retries, timeouts and header handling end to end.
//!
//! It is also the benchmark target, so the common paths avoid needless
//! allocation: the query is parsed in place, headers are serialised straight
//! from the request, and `raw=1` answers with a shared buffer and no JSON.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use url::form_urlencoded;

use crate::Workload;
use crate::client::{Client, describe, propagated_headers};
use crate::reply::{self, Body};
use crate::server::{ConnInfo, Handler};

/// Generous, so that the mesh's own timeouts are what a test observes.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DELAY: Duration = Duration::from_secs(600);
const MAX_BODY_SIZE: usize = 64 << 20;
/// Padding up to this size is sliced from one shared buffer.
const SHARED_PADDING: usize = 1 << 20;

pub struct Echo {
    workload: Workload,
    client: Client,
    /// Requests seen per `fail_first` key. Keys are chosen by tests and never
    /// forgotten; fine for a test workload.
    seen: Mutex<HashMap<String, u64>>,
}

impl Echo {
    pub fn new(workload: Workload, client: Client) -> Echo {
        Echo {
            workload,
            client,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts this request against `key`; true while it is among the first `n`.
    fn should_fail(&self, key: &str, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let count = match seen.get_mut(key) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                seen.insert(key.to_owned(), 1);
                1
            }
        };
        count <= n
    }

    async fn call(&self, url: &str, incoming: &HeaderMap) -> Upstream {
        match self
            .client
            .get(url, propagated_headers(incoming), CALL_TIMEOUT)
            .await
        {
            Ok(fetched) => Upstream::Reply {
                status: fetched.status.as_u16(),
                body: serde_json::from_slice(&fetched.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&fetched.body).into_owned())
                }),
            },
            Err(e) => Upstream::Error {
                error: describe(&e),
            },
        }
    }
}

impl Handler for Echo {
    async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query();
        let params = match Params::parse(query.unwrap_or("")) {
            Ok(params) => params,
            Err(message) => return reply::error(StatusCode::BAD_REQUEST, &message),
        };
        let body_bytes = reply::drain_body(body).await;
        let failing = self.should_fail(&params.key, params.fail_first);
        if let Some(delay) = params.delay {
            tokio::time::sleep(delay).await;
        }
        let upstream = match &params.call {
            Some(url) => Some(self.call(url, &parts.headers).await),
            None => None,
        };

        let mut resp = if params.raw {
            reply::with_type(
                StatusCode::OK,
                reply::TEXT,
                padding(params.body_size.unwrap_or(0)),
            )
        } else {
            let padding = params.body_size.map(padding);
            let reply = EchoReply {
                service: &self.workload.service,
                version: &self.workload.version,
                pod: &self.workload.pod,
                namespace: &self.workload.namespace,
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query,
                host: host(&parts.uri, &parts.headers),
                protocol: protocol(parts.version),
                headers: HeadersJson(&parts.headers),
                peer_identity: peer_identity(&parts.headers),
                body_bytes,
                port: conn.local.port(),
                upstream,
                padding: padding
                    .as_deref()
                    .map(|p| std::str::from_utf8(p).unwrap_or_default()),
            };
            reply::json(StatusCode::OK, &reply)
        };

        *resp.status_mut() = if failing {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            params.status.unwrap_or(StatusCode::OK)
        };
        for (name, value) in params.response_headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// The query parameters that change echo's behaviour; others are ignored.
#[derive(Default)]
struct Params<'q> {
    status: Option<StatusCode>,
    delay: Option<Duration>,
    call: Option<Cow<'q, str>>,
    fail_first: u64,
    key: Cow<'q, str>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
    body_size: Option<usize>,
    raw: bool,
}

impl<'q> Params<'q> {
    fn parse(query: &'q str) -> Result<Params<'q>, String> {
        let mut params = Params::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "status" => {
                    let status = number(&name, &value)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .and_then(|s| StatusCode::from_u16(s as u16).ok())
                        .ok_or_else(|| format!("status must be 200-599, got {value:?}"))?;
                    params.status = Some(status);
                }
                "delay_ms" => {
                    let delay = Duration::from_millis(number(&name, &value)?);
                    if delay > MAX_DELAY {
                        return Err(format!(
                            "delay_ms must be at most {}",
                            MAX_DELAY.as_millis()
                        ));
                    }
                    params.delay = Some(delay);
                }
                "call" => params.call = Some(value),
                "fail_first" => params.fail_first = number(&name, &value)?,
                "key" => params.key = value,
                "response_header" => {
                    let (header, header_value) = value.split_once(':').ok_or_else(|| {
                        format!("response_header must be name:value, got {value:?}")
                    })?;
                    let header = HeaderName::try_from(header.trim())
                        .map_err(|_| format!("bad response_header name {header:?}"))?;
                    let header_value = HeaderValue::try_from(header_value.trim())
                        .map_err(|_| format!("bad response_header value {header_value:?}"))?;
                    params.response_headers.push((header, header_value));
                }
                "body_size" => {
                    let size = number(&name, &value)?;
                    if size > MAX_BODY_SIZE as u64 {
                        return Err(format!("body_size must be at most {MAX_BODY_SIZE}"));
                    }
                    params.body_size = Some(size as usize);
                }
                "raw" => params.raw = matches!(&*value, "1" | "true"),
                _ => {}
            }
        }
        Ok(params)
    }
}

fn number(name: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{name} must be a non-negative integer, got {value:?}"))
}

/// `n` bytes of 'x'.
fn padding(n: usize) -> Bytes {
    static SHARED: OnceLock<Bytes> = OnceLock::new();
    if n <= SHARED_PADDING {
        SHARED
            .get_or_init(|| Bytes::from(vec![b'x'; SHARED_PADDING]))
            .slice(..n)
    } else {
        Bytes::from(vec![b'x'; n])
    }
}

#[derive(Serialize)]
struct EchoReply<'a> {
    service: &'a str,
    version: &'a str,
    pod: &'a str,
    namespace: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    host: Option<&'a str>,
    protocol: &'static str,
    headers: HeadersJson<'a>,
    peer_identity: Option<String>,
    body_bytes: u64,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    padding: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Upstream {
    Reply { status: u16, body: Value },
    Error { error: String },
}

/// Headers as one JSON object; a repeated header's values are joined with ",".
struct HeadersJson<'a>(&'a HeaderMap);

impl Serialize for HeadersJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self.0.get_all(name).iter().map(header_str);
            let mut joined = values.next().unwrap_or_default();
            for value in values {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(&value);
            }
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

fn header_str(value: &HeaderValue) -> Cow<'_, str> {
    match value.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

/// The authority the client addressed: `:authority` for HTTP/2 and absolute-form
/// HTTP/1.1 requests (as sent to a proxy), else the Host header.
fn host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(http::header::HOST)?.to_str().ok())
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// The `URI=` of the element of `x-forwarded-client-cert` added last, i.e. by
/// the sidecar in front of us: that is the identity of our direct peer.
fn peer_identity(headers: &HeaderMap) -> Option<String> {
    let xfcc = headers
        .get_all("x-forwarded-client-cert")
        .iter()
        .next_back()?
        .to_str()
        .ok()?;
    let element = split_unquoted(xfcc, ',').pop()?;
    split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| unquote(value.trim()))
    })
}

/// Splits on `sep` except inside double quotes (Subject values contain
/// commas), honouring backslash escapes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::testutil::{DeadServer, TestServer, direct_client, get_json, http, workload};

    fn echo(service: &str, version: &str) -> Echo {
        Echo::new(workload(service, version), direct_client())
    }

    fn encode(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[tokio::test]
    async fn reports_the_request() {
        let server = TestServer::start(echo("echo", "v7")).await;
        let resp = http()
            .post(server.url("/some/path?a=1&b=two"))
            .header("X-Custom", "one")
            .header(
                "x-forwarded-client-cert",
                r#"By=spiffe://cluster.local/ns/test-ns/sa/echo;Hash=abc;Subject="CN=a,O=b;c";URI=spiffe://cluster.local/ns/default/sa/sleep"#,
            )
            .body("hello")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["service"], "echo");
        assert_eq!(body["version"], "v7");
        assert_eq!(body["pod"], "echo-v7-pod");
        assert_eq!(body["namespace"], "test-ns");
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], "/some/path");
        assert_eq!(body["query"], "a=1&b=two");
        assert_eq!(body["host"], server.addr().to_string());
        assert_eq!(body["protocol"], "HTTP/1.1");
        assert_eq!(body["headers"]["x-custom"], "one");
        assert_eq!(
            body["peer_identity"],
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        assert_eq!(body["body_bytes"], 5);
        assert_eq!(body["port"], server.addr().port());
        assert!(body.get("upstream").is_none());
    }

    #[tokio::test]
    async fn no_query_no_identity_and_repeated_headers() {
        let server = TestServer::start(echo("echo", "v1")).await;
        let resp = http()
            .get(server.url("/"))
            .header("x-dup", "a")
            .header("x-dup", "b")
            .send()
            .await
            .expect("request");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["query"], Value::Null);
        assert_eq!(body["peer_identity"], Value::Null);
        assert_eq!(body["headers"]["x-dup"], "a,b");
        assert_eq!(body["body_bytes"], 0);
    }

    #[tokio::test]
    async fn listens_on_every_port() {
        let server = TestServer::start_on(echo("echo", "v1"), 2).await;
        assert_eq!(server.addrs.len(), 2);
        for addr in &server.addrs {
            let (status, body) = get_json(&format!("http://{addr}/")).await;
            assert_eq!(status, 200);
            assert_eq!(body["port"], addr.port());
        }
    }

    #[tokio::test]
    async fn status_delay_and_response_headers() {
        let server = TestServer::start(echo("echo", "v1")).await;
        let started = Instant::now();
        let resp = http()
            .get(server.url(
                "/?status=418&delay_ms=200&response_header=x-one:1&response_header=x-two%3A%20two",
            ))
            .send()
            .await
            .expect("request");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(resp.status(), 418);
        assert_eq!(resp.headers()["x-one"], "1");
        assert_eq!(resp.headers()["x-two"], "two");
        let body: Value = resp.json().await.expect("still JSON");
        assert_eq!(body["service"], "echo");
    }

    #[tokio::test]
    async fn bad_parameters_are_rejected() {
        let server = TestServer::start(echo("echo", "v1")).await;
        for query in [
            "status=abc",
            "status=99",
            "delay_ms=-1",
            "response_header=novalue",
            "body_size=1e3",
        ] {
            let (status, body) = get_json(&server.url(&format!("/?{query}"))).await;
            assert_eq!(status, 400, "{query}");
            assert!(body["error"].is_string(), "{query}");
        }
    }

    #[tokio::test]
    async fn fail_first_counts_per_key() {
        let server = TestServer::start(echo("echo", "v1")).await;
        let url = |key: &str| server.url(&format!("/?fail_first=2&key={key}"));
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(get_json(&url("a")).await.0);
        }
        assert_eq!(seen, [503, 503, 200, 200]);
        // Another key has its own counter.
        assert_eq!(get_json(&url("b")).await.0, 503);
    }

    #[tokio::test]
    async fn padding_and_raw_bodies() {
        let server = TestServer::start(echo("echo", "v1")).await;
        let (_, body) = get_json(&server.url("/?body_size=10")).await;
        assert_eq!(body["padding"], "xxxxxxxxxx");

        let resp = http()
            .get(server.url("/?raw=1&body_size=1024&response_header=x-a:b"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-a"], "b");
        let bytes = resp.bytes().await.expect("body");
        assert_eq!(bytes.len(), 1024);
        assert!(bytes.iter().all(|&b| b == b'x'));

        let big = SHARED_PADDING + 3;
        let resp = http()
            .get(server.url(&format!("/?raw=1&body_size={big}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.bytes().await.expect("body").len(), big);
    }

    #[tokio::test]
    async fn call_chains_and_propagates_tracing_headers() {
        let c = TestServer::start(echo("c", "v1")).await;
        let b = TestServer::start(echo("b", "v1")).await;
        let a = TestServer::start(echo("a", "v1")).await;
        let to_c = c.url("/leaf?status=201");
        let to_b = b.url(&format!("/mid?call={}", encode(&to_c)));
        let resp = http()
            .get(a.url(&format!("/?call={}", encode(&to_b))))
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("x-request-id", "req-1")
            .header("end-user", "jason")
            .header("user-agent", "test-agent")
            .header("x-not-propagated", "1")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        let at_b = &body["upstream"];
        assert_eq!(at_b["status"], 200);
        assert_eq!(at_b["body"]["service"], "b");
        assert_eq!(at_b["body"]["path"], "/mid");
        let at_c = &at_b["body"]["upstream"];
        assert_eq!(at_c["status"], 201);
        assert_eq!(at_c["body"]["service"], "c");
        for hop in [&at_b["body"]["headers"], &at_c["body"]["headers"]] {
            assert_eq!(
                hop["traceparent"],
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            );
            assert_eq!(hop["x-request-id"], "req-1");
            assert_eq!(hop["end-user"], "jason");
            assert_eq!(hop["user-agent"], "test-agent");
            assert!(hop.get("x-not-propagated").is_none());
        }
    }

    #[tokio::test]
    async fn call_failure_is_reported() {
        let dead = DeadServer::start().await;
        let server = TestServer::start(echo("echo", "v1")).await;
        let (status, body) = get_json(&server.url(&format!("/?call={}", encode(&dead.url)))).await;
        assert_eq!(status, 200);
        assert!(
            body["upstream"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }

    #[tokio::test]
    async fn calls_go_through_the_proxy() {
        // The "sidecar" is another echo: it sees the absolute-form request.
        let sidecar = TestServer::start(echo("sidecar", "v1")).await;
        let app = Echo::new(
            workload("app", "v1"),
            Client::new(Some(&sidecar.addr().to_string())).expect("client"),
        );
        let app = TestServer::start(app).await;
        // NO_PROXY-style hosts (localhost) must be proxied too.
        for target in ["http://reviews:9080/reviews/0", "http://localhost:1/x"] {
            let (_, body) = get_json(&app.url(&format!("/?call={}", encode(target)))).await;
            let seen = &body["upstream"]["body"];
            assert_eq!(seen["service"], "sidecar", "{body}");
            let url = url::Url::parse(target).expect("url");
            assert_eq!(seen["path"], url.path());
            assert_eq!(
                seen["host"],
                format!(
                    "{}:{}",
                    url.host_str().unwrap_or_default(),
                    url.port().unwrap_or(80)
                )
            );
        }
    }

    #[tokio::test]
    async fn http2_prior_knowledge() {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client as H2Client;
        use hyper_util::rt::TokioExecutor;

        let server = TestServer::start(echo("echo", "v1")).await;
        let client = H2Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Empty<Bytes>>();
        let uri: http::Uri = server.url("/h2?x=1").parse().expect("uri");
        let resp = client.get(uri).await.expect("h2 request");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["protocol"], "HTTP/2.0");
        assert_eq!(body["path"], "/h2");
        assert_eq!(body["host"], server.addr().to_string());
    }

    #[test]
    fn xfcc_takes_the_last_element() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static(
                r#"By=a;URI=spiffe://td/ns/x/sa/first,By=b;Subject="O=\"q,;\"";URI="spiffe://td/ns/y/sa/second""#,
            ),
        );
        assert_eq!(
            peer_identity(&headers).as_deref(),
            Some("spiffe://td/ns/y/sa/second")
        );
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("By=a"));
        assert_eq!(peer_identity(&headers), None);
    }
}
