//! The local rate limit with descriptors (issue 18) on a running mesh:
//! Istio's per-route form — the filter inserted with its stat_prefix only,
//! the buckets in the inbound route's `typed_per_filter_config`
//! (`inbound|http|8080`) — with a descriptor per path as Envoy's docs
//! write it. Requests for `/limited` take from their descriptor's bucket
//! (3 per hour), every other request from the default bucket (10 per hour;
//! `always_consume_default_token_bucket: false`, so the two do not share).
//! Hour-long fill intervals make the counts exact on a busy machine.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Mesh, eventually};

const DESCRIPTOR_TOKENS: u32 = 3;
const DEFAULT_TOKENS: u32 = 10;

const LOCAL_RATE_LIMIT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels: {app: limited}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_INBOUND
      routeConfiguration:
        vhost:
          name: "inbound|http|8080"
          route: {action: ANY}
    patch:
      operation: MERGE
      value:
        route:
          rate_limits:
          - actions:
            - request_headers: {header_name: ":path", descriptor_key: path}
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 3600s}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: {numerator: 100, denominator: HUNDRED}
              response_headers_to_add:
              - append: false
                header: {key: x-local-rate-limit, value: 'true'}
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              always_consume_default_token_bucket: false
              descriptors:
              - entries: [{key: path, value: /limited}]
                token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 3600s}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [limited.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: limited}
spec:
  hosts: [limited.example.com]
  gateways: [istio-system/web]
  http: [{route: [{destination: {host: limited, port: {number: 8080}}}]}]
---
"#;

/// A counter without labels from a Prometheus scrape (0 when absent).
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_descriptors_have_their_own_buckets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    std::fs::write(
        dir.path().join("limited.yaml"),
        e2e::echo_workload("limited", ""),
    )?;
    std::fs::write(dir.path().join("limit.yaml"), LOCAL_RATE_LIMIT)?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let get = |path: &'static str| {
        let client = client.clone();
        let url = format!("{}{path}", mesh.gateway);
        async move {
            client
                .get(url)
                .header("host", "limited.example.com")
                .send()
                .await
        }
    };
    let pod = mesh.pod_of("limited")?;
    let endpoints = pod["metadata"]["annotations"]["proxy.trellis.io/metrics"]
        .as_str()
        .context("no metrics annotation")?
        .to_string();
    let stats_url = format!(
        "http://{}/stats/prometheus",
        endpoints.split(' ').nth(1).context("no 15090")?
    );
    let scrape = || {
        let client = client.clone();
        let url = stats_url.clone();
        async move { anyhow::Ok(client.get(url).send().await?.text().await?) }
    };
    const OK: &str = "envoy_http_local_rate_limiter_http_local_rate_limit_ok";
    const LIMITED: &str = "envoy_http_local_rate_limiter_http_local_rate_limit_rate_limited";
    const ENFORCED: &str = "envoy_http_local_rate_limiter_http_local_rate_limit_enforced";

    // Up, with the limit in force: its x-ratelimit headers on a response
    // (a probe takes a token of the default bucket; counted below).
    eventually(Duration::from_secs(40), || async {
        let r = get("/probe").await?;
        ensure!(r.status() == 200, "probe: {}", r.status());
        ensure!(
            r.headers()
                .get("x-ratelimit-limit")
                .is_some_and(|v| v == "10"),
            "not limited yet: {:?}",
            r.headers()
        );
        Ok(())
    })
    .await?;
    let probes = counter(&scrape().await?, OK);
    ensure!(
        probes >= 1.0 && probes <= f64::from(DEFAULT_TOKENS),
        "{OK} after probing: {probes}"
    );
    let default_left = DEFAULT_TOKENS - probes as u32;

    // /limited: its descriptor's bucket of 3; bounded, sequential.
    let (mut allowed, mut limited) = (0u32, None);
    for _ in 0..(DESCRIPTOR_TOKENS + 5) {
        let r = get("/limited").await?;
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {
                if limited.is_none() {
                    limited = Some((r.headers().clone(), r.text().await?));
                }
            }
            other => bail!("/limited: unexpected status {other}"),
        }
    }
    ensure!(
        allowed == DESCRIPTOR_TOKENS,
        "/limited: {allowed} allowed, want {DESCRIPTOR_TOKENS}"
    );
    let (headers, body) = limited.context("no 429 for /limited")?;
    ensure!(body == "local_rate_limited", "{body}");
    for (name, want) in [
        ("x-local-rate-limit", "true"),
        ("x-envoy-ratelimited", "true"),
        ("x-ratelimit-limit", "3"),
        ("x-ratelimit-remaining", "0"),
    ] {
        ensure!(
            headers.get(name).is_some_and(|v| v == want),
            "/limited 429, {name}: {headers:?}"
        );
    }

    // Any other path: the default bucket, untouched by /limited
    // (always_consume_default_token_bucket: false).
    let (mut allowed, mut limited_headers) = (0u32, None);
    for _ in 0..(DEFAULT_TOKENS + 5) {
        let r = get("/other").await?;
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => limited_headers = Some(r.headers().clone()),
            other => bail!("/other: unexpected status {other}"),
        }
    }
    ensure!(
        allowed == default_left,
        "/other: {allowed} allowed, want {default_left} ({probes} probes)"
    );
    let headers = limited_headers.context("no 429 for /other")?;
    ensure!(
        headers.get("x-ratelimit-limit").is_some_and(|v| v == "10"),
        "/other 429: {headers:?}"
    );

    // Counted under Envoy's names on the sidecar's 15090.
    let text = scrape().await?;
    let want_limited = f64::from(5 + (DEFAULT_TOKENS + 5 - default_left));
    for (name, want) in [
        (OK, probes + f64::from(DESCRIPTOR_TOKENS + default_left)),
        (LIMITED, want_limited),
        (ENFORCED, want_limited),
    ] {
        let got = counter(&text, name);
        ensure!(got == want, "{name}: {got}, want {want}");
    }
    mesh.stop()?;
    Ok(())
}

/// At the gateway, per downstream connection
/// (`local_rate_limit_per_downstream_connection: true`): a default bucket
/// of 3 per hour and a wildcard descriptor `{key: user}` (no value) of 2 per
/// hour, the `x-user` header making the request's descriptor. Each client
/// connection gets the whole of every bucket, and on one connection each
/// user gets a bucket of its own.
const PER_CONNECTION: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: per-connection, namespace: istio-system}
spec:
  workloadSelector:
    labels: {istio: ingressgateway}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: per_connection
          token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 3600s}
          filter_enabled:
            default_value: {numerator: 100, denominator: HUNDRED}
          filter_enforced:
            default_value: {numerator: 100, denominator: HUNDRED}
          enable_x_ratelimit_headers: DRAFT_VERSION_03
          local_rate_limit_per_downstream_connection: true
          always_consume_default_token_bucket: false
          descriptors:
          - entries: [{key: user}]
            token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 3600s}
  - applyTo: VIRTUAL_HOST
    match:
      context: GATEWAY
      routeConfiguration:
        vhost: {name: "", route: {action: ANY}}
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - request_headers: {header_name: x-user, descriptor_key: user}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [limited.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: limited}
spec:
  hosts: [limited.example.com]
  gateways: [istio-system/web]
  http: [{route: [{destination: {host: limited, port: {number: 8080}}}]}]
---
"#;

/// One HTTP/1.1 connection to the gateway, kept for all its requests
/// (a pooling client may open another at any time).
struct Connection(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>);

impl Connection {
    async fn open(gateway: &str) -> Result<Self> {
        let addr = gateway.trim_start_matches("http://").trim_end_matches('/');
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Connection(send))
    }

    /// GET / with `x-user` when given: the status and the x-ratelimit-limit
    /// and -remaining headers.
    async fn get(&mut self, user: Option<&str>) -> Result<(u16, String, String)> {
        use http_body_util::BodyExt;
        self.0.ready().await.context("the connection closed")?;
        let mut req = hyper::Request::get("/").header("host", "limited.example.com");
        if let Some(u) = user {
            req = req.header("x-user", u);
        }
        let response = self.0.send_request(req.body(Default::default())?).await?;
        let (parts, body) = response.into_parts();
        body.collect().await?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Ok((
            parts.status.as_u16(),
            header("x-ratelimit-limit"),
            header("x-ratelimit-remaining"),
        ))
    }

    /// How many of `n` sequential requests pass before the first 429, and
    /// that 429's x-ratelimit-limit; every request after it must be 429 too.
    async fn count(&mut self, what: &str, n: u32, user: Option<&str>) -> Result<(u32, String)> {
        let (mut allowed, mut limit) = (0, None);
        for _ in 0..n {
            match (self.get(user).await?, &limit) {
                ((200, _, _), None) => allowed += 1,
                ((429, l, _), _) => limit = Some(l),
                ((status, _, _), _) => bail!("{what}: status {status} after {allowed} allowed"),
            }
        }
        Ok((allowed, limit.context(format!("{what}: never limited"))?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_buckets_and_wildcard_descriptors_at_the_gateway() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    std::fs::write(
        dir.path().join("limited.yaml"),
        e2e::echo_workload("limited", ""),
    )?;
    std::fs::write(dir.path().join("limit.yaml"), PER_CONNECTION)?;
    let mesh = Mesh::up(dir.path())?;

    // Up, with the limit in force (on a connection of its own each try).
    eventually(Duration::from_secs(40), || async {
        let (status, limit, _) = Connection::open(&mesh.gateway).await?.get(None).await?;
        ensure!(status == 200, "probe: {status}");
        ensure!(limit == "3", "not limited yet: x-ratelimit-limit {limit:?}");
        Ok(())
    })
    .await?;

    let mut first = Connection::open(&mesh.gateway).await?;
    let mut second = Connection::open(&mesh.gateway).await?;
    for (name, conn) in [("first", &mut first), ("second", &mut second)] {
        // Each connection: 2 per user, alice and bob apart, 3 without a user.
        for user in ["alice", "bob"] {
            let what = format!("{name} connection, {user}");
            let got = conn.count(&what, 4, Some(user)).await?;
            ensure!(
                got == (2, "2".to_string()),
                "{what}: {got:?}, want 2 allowed then 429 of limit 2"
            );
        }
        let what = format!("{name} connection, no user");
        let got = conn.count(&what, 5, None).await?;
        ensure!(
            got == (3, "3".to_string()),
            "{what}: {got:?}, want 3 allowed then 429 of limit 3"
        );
    }
    // The first connection's buckets are still empty: they are its own.
    let (status, _, remaining) = first.get(Some("alice")).await?;
    ensure!(
        (status, remaining.as_str()) == (429, "0"),
        "first connection again: {status}, remaining {remaining}"
    );
    mesh.stop()?;
    Ok(())
}
