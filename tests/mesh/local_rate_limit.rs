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
