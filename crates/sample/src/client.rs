//! The outgoing HTTP client shared by every role.
//!
//! In the mesh the app must reach other services through its sidecar, which
//! the launcher exposes as an explicit HTTP proxy (`HTTP_PROXY`). The proxy is
//! passed in rather than read from the environment here, and no exclusion list
//! is applied: a `NO_PROXY` such as `localhost,127.0.0.1` must not let a call
//! slip past the sidecar.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};

/// Headers every role copies from the request it serves onto each upstream
/// call, as Istio's Bookinfo productpage does, so that traces join up and
/// `end-user` routing rules see the user on every hop.
pub const PROPAGATED_HEADERS: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "end-user",
    "user-agent",
];

pub fn propagated_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for &name in PROPAGATED_HEADERS {
        for value in incoming.get_all(name) {
            out.append(HeaderName::from_static(name), value.clone());
        }
    }
    out
}

/// A finished upstream exchange, whatever its status.
pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
}

impl Client {
    /// `proxy` is the sidecar's address (`http://ip:port`, scheme optional);
    /// when set, every request goes through it.
    pub fn new(proxy: Option<&str>) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = proxy.map(str::trim).filter(|p| !p.is_empty()) {
            let proxy = if proxy.contains("://") {
                proxy.to_owned()
            } else {
                format!("http://{proxy}")
            };
            let proxy =
                reqwest::Proxy::all(&proxy).with_context(|| format!("invalid proxy {proxy}"))?;
            builder = builder.proxy(proxy);
        }
        let inner = builder.build().context("building HTTP client")?;
        Ok(Client { inner })
    }

    /// GETs `url`; `timeout` bounds the whole exchange, body included.
    pub async fn get(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Fetched, reqwest::Error> {
        let resp = self
            .inner
            .get(url)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok(Fetched { status, body })
    }
}

/// reqwest's own message hides the cause ("error sending request"); callers
/// that report failures want the whole chain.
pub fn describe(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
