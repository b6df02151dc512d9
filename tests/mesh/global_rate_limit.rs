//! The global rate limit (issue 18) on a running mesh: the seed's
//! EnvoyFilter (`envoy.filters.http.ratelimit`, domain
//! `productpage-ratelimit`, cluster `rate_limit_cluster`) with the CLUSTER
//! and VIRTUAL_HOST patches of Istio's rate limit task, and a rate limit
//! service written here that speaks Envoy's `envoy.service.ratelimit.v3`
//! and allows three requests per PATH descriptor for `/limited`. The fourth
//! gets 429 with `x-envoy-ratelimited`. Then the service stops: the seed's
//! filter (failure_mode_deny false) lets requests through, a second
//! workload's filter with failure_mode_deny true answers 500.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually};
use wire::envoy::service::ratelimit::v3 as rls;
use wire::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};

/// Requests per PATH=/limited descriptor the service allows.
const LIMIT: u32 = 3;

/// A domain and a descriptor's entries.
type Key = (String, Vec<(String, String)>);

/// Hits by domain and descriptor, as a rate limit service keeps them.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<BTreeMap<Key, u32>>>);

#[tonic::async_trait]
impl RateLimitService for Counts {
    async fn should_rate_limit(
        &self,
        req: tonic::Request<rls::RateLimitRequest>,
    ) -> Result<tonic::Response<rls::RateLimitResponse>, tonic::Status> {
        use rls::rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit};
        let req = req.into_inner();
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut overall = Code::Ok;
        let mut statuses = Vec::new();
        for d in &req.descriptors {
            let entries: Vec<(String, String)> = d
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            let n = counts
                .entry((req.domain.clone(), entries.clone()))
                .or_default();
            *n += 1;
            let limited = entries == [("PATH".to_string(), "/limited".to_string())];
            let over = limited && *n > LIMIT;
            if over {
                overall = Code::OverLimit;
            }
            statuses.push(DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: limited.then_some(RateLimit {
                    name: String::new(),
                    requests_per_unit: LIMIT,
                    unit: Unit::Minute as i32,
                }),
                limit_remaining: LIMIT.saturating_sub(*n),
                duration_until_reset: None,
            });
        }
        Ok(tonic::Response::new(rls::RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            ..Default::default()
        }))
    }
}

/// The service on its own runtime: shutting it down closes its listener
/// and the proxies' connections to it.
struct Service {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
    counts: Counts,
}

impl Service {
    fn start() -> Result<Service> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counts = Counts::default();
        let service = RateLimitServiceServer::new(counts.clone());
        rt.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Ok(Service {
            rt: Some(rt),
            port,
            counts,
        })
    }

    fn domains(&self) -> Vec<String> {
        let counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut d: Vec<String> = counts.keys().map(|(d, _)| d.clone()).collect();
        d.dedup();
        d
    }

    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The task's other half: the cluster the seed names (the service as a
/// ServiceEntry host, its endpoint the test's server) and the actions that
/// make a PATH descriptor of every request.
fn cluster_and_actions(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratelimit, namespace: default}}
spec:
  hosts: [ratelimit.rls.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8081, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: filter-ratelimit-svc, namespace: istio-system}}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {{cluster: {{service: ratelimit.rls.internal}}}}
    patch:
      operation: ADD
      value:
        name: rate_limit_cluster
        type: STRICT_DNS
        connect_timeout: 10s
        lb_policy: ROUND_ROBIN
        http2_protocol_options: {{}}
        load_assignment:
          cluster_name: rate_limit_cluster
          endpoints:
          - lb_endpoints:
            - endpoint:
                address:
                  socket_address: {{address: ratelimit.rls.internal, port_value: 8081}}
  - applyTo: VIRTUAL_HOST
    match:
      context: SIDECAR_INBOUND
      routeConfiguration:
        vhost:
          name: ""
          route: {{action: ANY}}
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - request_headers: {{header_name: ":path", descriptor_key: "PATH"}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: strict-ratelimit, namespace: default}}
spec:
  workloadSelector:
    labels: {{app: strict}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {{context: SIDECAR_INBOUND}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: strict
          failure_mode_deny: true
          timeout: 5s
          enable_x_ratelimit_headers: DRAFT_VERSION_03
          rate_limit_service:
            grpc_service:
              envoy_grpc:
                cluster_name: outbound|8081||ratelimit.rls.internal
            transport_api_version: V3
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [productpage.example.com, strict.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage}}
spec:
  hosts: [productpage.example.com]
  gateways: [istio-system/web]
  http: [{{route: [{{destination: {{host: productpage, port: {{number: 8080}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: strict}}
spec:
  hosts: [strict.example.com]
  gateways: [istio-system/web]
  http: [{{route: [{{destination: {{host: strict, port: {{number: 8080}}}}}}]}}]
---
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_global_rate_limit_with_a_rate_limit_service() -> Result<()> {
    let mut service = Service::start()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    for app in ["productpage", "strict"] {
        std::fs::write(
            dir.path().join(format!("{app}.yaml")),
            e2e::echo_workload(app, ""),
        )?;
    }
    let seed_path =
        e2e::repo_root().join("../shared/seeds/yaml/002-12-EnvoyFilter-filter-ratelimit.yaml");
    let seed = std::fs::read_to_string(&seed_path)
        .with_context(|| format!("the seed {}", seed_path.display()))?;
    // The one change to the seed: a timeout a busy test machine meets
    // (Envoy's default is 20 ms).
    let seed = seed.replace(
        "domain: productpage-ratelimit",
        "domain: productpage-ratelimit\n          timeout: 5s",
    );
    ensure!(seed.contains("timeout: 5s"), "seed changed shape: {seed}");
    std::fs::write(dir.path().join("seed.yaml"), seed)?;
    std::fs::write(
        dir.path().join("rls.yaml"),
        cluster_and_actions(service.port),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let get = |host: &'static str, path: &'static str| {
        let client = client.clone();
        let url = format!("{}{path}", mesh.gateway);
        async move { client.get(url).header("host", host).send().await }
    };
    for host in ["productpage.example.com", "strict.example.com"] {
        eventually(Duration::from_secs(40), || async {
            let status = get(host, "/ip").await?.status().as_u16();
            ensure!(status == 200, "{host}: {status}");
            Ok(())
        })
        .await?;
    }
    ensure!(
        service.domains() == ["productpage-ratelimit", "strict"],
        "domains the service saw: {:?}",
        service.domains()
    );

    // Three pass, the fourth is over the limit.
    for n in 1..=LIMIT {
        let status = get("productpage.example.com", "/limited").await?.status();
        ensure!(status == 200, "request {n}: {status}");
    }
    let r = get("productpage.example.com", "/limited").await?;
    ensure!(r.status() == 429, "request {}: {}", LIMIT + 1, r.status());
    ensure!(
        r.headers()
            .get("x-envoy-ratelimited")
            .is_some_and(|v| v == "true"),
        "{:?}",
        r.headers()
    );
    // Another path has its own descriptor.
    let status = get("productpage.example.com", "/other").await?.status();
    ensure!(status == 200, "/other: {status}");
    // Another domain counts apart; its filter asks for x-ratelimit-*
    // headers, from the service's answer, on every response.
    for n in 1..=LIMIT {
        let r = get("strict.example.com", "/limited").await?;
        ensure!(r.status() == 200, "strict request {n}: {}", r.status());
        let remaining = (LIMIT - n).to_string();
        ensure!(
            r.headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes() == remaining.as_bytes()),
            "strict request {n}: {:?}",
            r.headers()
        );
    }
    let r = get("strict.example.com", "/limited").await?;
    ensure!(
        r.status() == 429,
        "strict request {}: {}",
        LIMIT + 1,
        r.status()
    );
    for (name, want) in [
        ("x-ratelimit-limit", "3"),
        ("x-ratelimit-remaining", "0"),
        ("x-envoy-ratelimited", "true"),
    ] {
        ensure!(
            r.headers().get(name).is_some_and(|v| v == want),
            "{name}: {:?}",
            r.headers()
        );
    }

    // The service stops: failure_mode_deny false lets requests through,
    // true refuses them with 500.
    service.stop();
    let status = get("productpage.example.com", "/limited").await?.status();
    ensure!(
        status == 200,
        "service down, failure_mode_deny false: {status}"
    );
    let status = get("strict.example.com", "/limited").await?.status();
    ensure!(
        status == 500,
        "service down, failure_mode_deny true: {status}"
    );

    // Counted in the sidecar's metrics: the limited request, the failure.
    let pod = mesh.pod_of("productpage")?;
    let endpoints = pod["metadata"]["annotations"]["proxy.trellis.io/metrics"]
        .as_str()
        .context("no metrics annotation")?
        .to_string();
    let stats = endpoints.split(' ').nth(1).context("no 15090")?;
    let text = client
        .get(format!("http://{stats}/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?;
    for (result, least) in [
        ("over_limit", 1.0),
        ("failure_mode_allowed", 1.0),
        ("ok", 4.0),
    ] {
        let n = e2e::counter_sum(
            &text,
            "trellis_ratelimit_total",
            &[("domain", "productpage-ratelimit"), ("result", result)],
        );
        ensure!(n >= least, "trellis_ratelimit_total {result}: {n}");
    }
    let limited = e2e::counter_sum(
        &text,
        "istio_requests_total",
        &[("response_code", "429"), ("response_flags", "RL")],
    );
    ensure!(limited >= 1.0, "istio_requests_total 429/RL: {limited}");
    mesh.stop()?;
    Ok(())
}
