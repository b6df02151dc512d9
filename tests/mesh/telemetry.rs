//! Istio's telemetry, read as operators read it: a real Prometheus scrapes a
//! running `trellis up` mesh through the service discovery files `up`
//! writes, and answers the queries of Istio's Grafana dashboards with the
//! numbers this test's own bounded traffic implies — exact for counters.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Launch, Mesh, counter_sum, eventually, http};
use serde_json::Value;

const SERVER: &str = "server.default.svc.cluster.local";
const TCP_SERVER: &str = "tcpserver.default.svc.cluster.local";

/// client and server (HTTP, mTLS between their sidecars), tcpserver (a port
/// named `tcp`: its sidecar forwards bytes).
fn mesh_yaml() -> String {
    let workload = |name: &str, port_name: &str, labels: &str| {
        format!(
            "apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}{labels}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: echo
        image: trellis-sample
        command: [trellis-sample]
        args: [echo, --service, {name}, --port, \"8080\"]
        ports: [{{containerPort: 8080}}]
---
"
        )
    };
    [
        workload("client", "http", ""),
        workload("server", "http", ", version: v2"),
        workload("tcpserver", "tcp", ""),
    ]
    .concat()
}

/// A Prometheus server the test started, stopped when dropped.
pub(crate) struct Prometheus {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Prometheus {
    pub(crate) fn start(config: &Path, listen: &str) -> Result<Prometheus> {
        let data = tempfile::tempdir()?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting prometheus (Debian package `prometheus`; scripts/test.sh installs it)",
            )?;
        Ok(Prometheus {
            child,
            url: format!("http://{listen}"),
            _data: data,
        })
    }

    /// The instant vector of `query`: (labels, value) per series.
    pub(crate) async fn query(&self, query: &str) -> Result<Vec<(Value, f64)>> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )?;
        let body: Value = http().get(url).send().await?.json().await?;
        ensure!(body["status"] == "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .context("result")?
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().context("value")?.parse::<f64>()?;
                Ok((s["metric"].clone(), v))
            })
            .collect()
    }

    /// The value of a query that yields one series.
    async fn scalar(&self, query: &str) -> Result<f64> {
        match self.query(query).await?.as_slice() {
            [(_, v)] => Ok(*v),
            other => bail!("{query}: expected one series, got {other:?}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One TCP exchange with the server's sidecar: an HTTP request as bytes;
/// returns (bytes sent, bytes received) as the client counts them.
pub(crate) fn tcp_exchange(addr: &str) -> Result<(u64, u64)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = b"GET /?delay_ms=1 HTTP/1.1\r\nHost: tcpserver\r\nConnection: close\r\n\r\n";
    s.write_all(req)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    ensure!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    Ok((req.len() as u64, resp.len() as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_istio_dashboard_queries_with_exact_counts() -> Result<()> {
    scraped_mesh(false).await
}

/// The same with pods in network namespaces: the proxies serve metrics on
/// their pods' addresses, which capture leaves alone, and the server's
/// sidecar knows its caller by its pod's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_pods_in_network_namespaces() -> Result<()> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let tools = ["ip", "iptables-restore", "setpriv"]
        .into_iter()
        .all(|tool| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        });
    if !root || !tools {
        eprintln!(
            "skipped: namespace mode needs root, ip, iptables-restore and setpriv (scripts/test.sh installs them; CI runs as root)"
        );
        return Ok(());
    }
    scraped_mesh(true).await
}

async fn scraped_mesh(netns: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("workloads.yaml"), mesh_yaml())?;
    // trellisd's dashboard reads its graph from the Prometheus below.
    let (block, _block_lock) = e2e::reserve_block()?;
    let prometheus_addr = format!("127.{block}.0.9:9090");
    let mesh = Mesh::launch(
        dir.path(),
        Launch {
            netns,
            block: Some(block),
            env: vec![(
                "TRELLIS_PROMETHEUS_URL".into(),
                format!("http://{prometheus_addr}"),
            )],
            ..Launch::default()
        },
    )?;
    let client = http();
    let pods = mesh.pods()?;
    let pod_ip = |app: &str| -> Result<String> {
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == app)
            .with_context(|| format!("no {app} pod"))?;
        Ok(pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let client_url = format!("http://{}:8080/", pod_ip("client")?);
    // A proxy's own metrics (15090), straight from it.
    let proxy_stats = |app: &str| {
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == app)
            .cloned()
            .unwrap_or_default();
        let client = client.clone();
        async move {
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
            anyhow::Ok(text)
        }
    };

    // `get pods -o wide` lists each proxy's Prometheus endpoints.
    let wide = mesh.trellis(&["get", "pods", "-o", "wide"]);
    let wide = String::from_utf8_lossy(&wide.stdout);
    assert!(
        wide.contains("METRICS") && wide.contains(":15020,") && wide.contains(":15090"),
        "{wide}"
    );

    // A Prometheus on the mesh's block, scraping every second from the
    // file_sd targets `trellis up` wrote, from before the traffic on (rates
    // need samples on both sides of it).
    let sd = mesh.state.path().join("prometheus");
    let checked = Command::new("promtool")
        .args(["check", "config"])
        .arg(sd.join("prometheus.yml"))
        .output();
    if let Ok(out) = checked {
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
- job_name: kubernetes-pods
  file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]
- job_name: istiod
  file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]
",
            sd.join("pods.json").display(),
            sd.join("control-plane.json").display()
        ),
    )?;
    let prom = Prometheus::start(&config, &prometheus_addr)?;

    // The traffic: client → server through both sidecars, 20 fast 200s,
    // 5 slow (300 ms) 200s and 5 fast 500s (not retried: Istio's default retries 503 only).
    let call = |inner: &str| {
        let inner = format!("http://server:8080/{inner}");
        reqwest::Url::parse_with_params(&client_url, &[("call", inner.as_str())])
    };
    eventually(Duration::from_secs(30), || async {
        // Ready when the client reaches the server (not counted below: other path).
        let r = client.get(call("warmup")?).send().await?;
        ensure!(r.status() == 200 && r.text().await?.contains("\"status\":200"));
        Ok(())
    })
    .await?;
    // What the warm-up left (it may have taken a few tries), from each side.
    let count_of = |text: &str, reporter: &str, code: &str| {
        counter_sum(
            text,
            "istio_requests_total",
            &[
                ("reporter", reporter),
                ("source_workload", "client"),
                ("destination_service", SERVER),
                ("response_code", code),
            ],
        )
    };
    let (server_before, client_before) =
        (proxy_stats("server").await?, proxy_stats("client").await?);
    let base_ok = count_of(&server_before, "destination", "200");
    let base_err = count_of(&server_before, "destination", "500");
    assert_eq!(base_ok, count_of(&client_before, "source", "200"));
    assert_eq!(base_err, count_of(&client_before, "source", "500"));
    assert!(base_ok + base_err <= 5.0, "warm-up: {base_ok} + {base_err}");
    let (ok, err) = (base_ok + 25.0, base_err + 5.0);
    let total = ok + err;
    let server = format!("destination_service=\"{SERVER}\"");
    let dest = format!("reporter=\"destination\",{server},request_protocol=\"http\"");
    // Both sides' counts as Prometheus has them.
    let scraped = || async {
        let mut n = [0.0; 2];
        for (i, reporter) in ["source", "destination"].into_iter().enumerate() {
            n[i] = prom
                .scalar(&format!(
                    "sum(istio_requests_total{{reporter=\"{reporter}\",{server},source_workload=\"client\"}})"
                ))
                .await?;
        }
        anyhow::Ok(n)
    };
    // In two rounds, the first scraped before the second starts: a rate
    // needs a series to grow between samples (a counter appears with its
    // first value, in Istio as here).
    let rounds = [
        [
            (10, "?x=1", 200),
            (2, "?delay_ms=300", 200),
            (2, "?status=500", 500),
        ],
        [
            (10, "?x=1", 200),
            (3, "?delay_ms=300", 200),
            (3, "?status=500", 500),
        ],
    ];
    let mut done = base_ok + base_err;
    // TCP: connections straight to the tcpserver's sidecar, one per round
    // and one more.
    let tcp_addr = format!("{}:8080", pod_ip("tcpserver")?);
    let (mut sent, mut received) = (0, 0);
    let tcp_closed =
        format!("sum(istio_tcp_connections_closed_total{{destination_service=\"{TCP_SERVER}\"}})");
    for (i, round) in rounds.iter().enumerate() {
        let extra = if i == 0 { 1 } else { 2 };
        for _ in 0..extra {
            let (s, r) = tcp_exchange(&tcp_addr)?;
            sent += s;
            received += r;
        }
        for (count, inner, status) in round {
            for _ in 0..*count {
                let r = client.get(call(inner)?).send().await?;
                let body = r.text().await?;
                ensure!(
                    body.contains(&format!("\"status\":{status}")),
                    "{inner}: {body}"
                );
                done += 1.0;
            }
        }
        if i == 0 {
            eventually(Duration::from_secs(60), || async {
                let n = scraped().await?;
                ensure!(n == [done; 2], "scraped {n:?}, sent {done}");
                let closed = prom.scalar(&tcp_closed).await?;
                ensure!(closed == 1.0, "tcp connections closed: {closed}");
                Ok(())
            })
            .await?;
        }
    }
    assert_eq!(done, total);
    // Each TCP connection also has its access log line (`trellis up` logs
    // to stdout): Istio's TEXT format, with no request in it.
    let tcp_pod = mesh.pod_of("tcpserver")?;
    let tcp_log = mesh.logs().join(format!(
        "default.{}.istio-proxy.log",
        tcp_pod["metadata"]["name"].as_str().unwrap_or_default()
    ));
    eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&tcp_log).unwrap_or_default();
        let lines = text
            .lines()
            .filter(|l| l.contains("\"- - -\" 0 - - - \"-\"") && l.contains(" inbound|8080 "))
            .count();
        ensure!(lines >= 2, "{lines} TCP access log lines: {text:.3000}");
        Ok(())
    })
    .await?;
    // Exact counts, once scraped.
    eventually(Duration::from_secs(60), || async {
        let n = scraped().await?;
        ensure!(n == [total; 2], "scraped {n:?}, sent {total}");
        let closed = prom
            .scalar(&format!(
                "sum(istio_tcp_connections_closed_total{{destination_service=\"{TCP_SERVER}\"}})"
            ))
            .await?;
        ensure!(closed == 3.0, "tcp connections closed: {closed}");
        Ok(())
    })
    .await?;

    // The dashboard's graph, read from this Prometheus (trellisd
    // --prometheus): the client → server edge with every request counted.
    eventually(Duration::from_secs(30), || async {
        let graph: Value = client
            .get(format!("{}/dashboard/api/graph", mesh.api))
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            graph["metrics_source"] == format!("http://{prometheus_addr}"),
            "metrics from {}",
            graph["metrics_source"]
        );
        let edge = graph["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["source"] == "workload:default/client"
                    && e["target"] == format!("service:{SERVER}")
            })
            .with_context(|| format!("no client → server edge: {graph}"))?;
        ensure!(
            edge["total"].as_f64() == Some(total),
            "{edge} (sent {total})"
        );
        ensure!(edge["mtls"] == "mutual_tls", "{edge}");
        Ok(())
    })
    .await?;

    // Istio's labels, the same on both sides: the Deployment names, the
    // canonical names, principals, mTLS as the server saw it.
    for reporter in ["source", "destination"] {
        let by_code = prom
            .query(&format!(
                "sum(istio_requests_total{{reporter=\"{reporter}\",{server},source_workload=\"client\"}}) by (response_code)"
            ))
            .await?;
        let count = |code: &str| {
            by_code
                .iter()
                .find(|(m, _)| m["response_code"] == code)
                .map(|(_, v)| *v)
        };
        assert_eq!(count("200"), Some(ok), "{reporter}: {by_code:?}");
        assert_eq!(count("500"), Some(err), "{reporter}: {by_code:?}");
        let series = prom
            .query(&format!(
                "istio_requests_total{{reporter=\"{reporter}\",{server},response_code=\"500\"}}"
            ))
            .await?;
        let [(labels, _)] = series.as_slice() else {
            bail!("{reporter}: one 500 series expected: {series:?}");
        };
        for (k, v) in [
            ("source_workload", "client"),
            ("source_workload_namespace", "default"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/client",
            ),
            ("source_app", "client"),
            ("source_version", "unknown"),
            ("source_canonical_service", "client"),
            ("source_canonical_revision", "latest"),
            ("source_cluster", "Kubernetes"),
            ("destination_workload", "server"),
            ("destination_workload_namespace", "default"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/server",
            ),
            ("destination_app", "server"),
            ("destination_version", "v2"),
            ("destination_canonical_service", "server"),
            ("destination_canonical_revision", "v2"),
            ("destination_cluster", "Kubernetes"),
            ("destination_service", SERVER),
            ("destination_service_name", "server"),
            ("destination_service_namespace", "default"),
            ("request_protocol", "http"),
            ("grpc_response_status", ""),
            ("response_flags", "-"),
            (
                "connection_security_policy",
                if reporter == "destination" {
                    "mutual_tls"
                } else {
                    "unknown"
                },
            ),
        ] {
            // An empty label is no label in Prometheus.
            let got = labels[k].as_str().unwrap_or_default();
            assert_eq!(got, v, "{reporter}: {k} in {labels}");
        }
    }

    // Istio Service dashboard: request rate by destination_service and
    // response_code (over the whole run: the traffic has stopped).
    let rates = eventually(Duration::from_secs(20), || async {
        let rates = prom
            .query(&format!(
                "round(sum(rate(istio_requests_total{{reporter=\"destination\",{server}}}[5m])) by (destination_service, response_code), 0.001)"
            ))
            .await?;
        ensure!(rates.len() == 2, "{rates:?}");
        Ok(rates)
    })
    .await?;
    let codes: Vec<_> = rates
        .iter()
        .map(|(m, _)| m["response_code"].as_str().unwrap_or(""))
        .collect();
    assert!(
        codes.contains(&"200") && codes.contains(&"500"),
        "{rates:?}"
    );
    assert!(rates.iter().all(|(_, v)| *v > 0.0), "{rates:?}");
    // Success rate (non-5xx / all): exact in counts, about that in rates.
    let success = |f: &str| {
        format!(
            "sum({f}(istio_requests_total{{reporter=\"destination\",{server},response_code!~\"5.*\"}}{w})) / sum({f}(istio_requests_total{{reporter=\"destination\",{server}}}{w}))",
            w = if f.is_empty() { "" } else { "[5m]" }
        )
    };
    let exact = prom.scalar(&success("")).await?;
    assert!(
        (exact - ok / total).abs() < 1e-9,
        "success ratio {exact}, not {ok}/{total}"
    );
    let rated = prom.scalar(&success("rate")).await?;
    assert!(rated > 0.5 && rated < 1.0, "success rate {rated}");

    // Latency percentiles from Istio's histogram: 5 of at most 35 requests
    // took 300 ms or more, so p90 and p99 (ranks above total - 5) lie in
    // the (250, 500] ms bucket or above; never below 250 ms.
    let buckets = prom
        .query(&format!(
            "sum(istio_request_duration_milliseconds_bucket{{{dest}}}) by (le)"
        ))
        .await?;
    let le = |b: &str| buckets.iter().find(|(m, _)| m["le"] == b).map(|(_, v)| *v);
    assert_eq!(le("+Inf"), Some(total), "{buckets:?}");
    assert!(le("250").is_some_and(|n| n <= total - 5.0), "{buckets:?}");
    assert!(
        le("600000").is_some_and(|n| n == total),
        "Istio's buckets: {buckets:?}"
    );
    // From the counts the quantiles are exact in bucket terms; the
    // dashboards' own form (rates over a window) is Prometheus's
    // extrapolation of the same buckets: a number, ordered, no more.
    let (mut exact, mut dashboard) = (Vec::new(), Vec::new());
    for q in ["0.50", "0.90", "0.99"] {
        exact.push(
            prom.scalar(&format!(
                "histogram_quantile({q}, sum(istio_request_duration_milliseconds_bucket{{{dest}}}) by (le))"
            ))
            .await?,
        );
        dashboard.push(
            prom.scalar(&format!(
                "histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket{{{dest}}}[1m])) by (le))"
            ))
            .await?,
        );
    }
    assert!(
        exact[1] > 250.0 && exact[2] > 250.0,
        "p90, p99 {exact:?} ({buckets:?})"
    );
    for values in [&exact, &dashboard] {
        assert!(
            values.iter().all(|v| v.is_finite() && *v > 0.0) && values.is_sorted(),
            "p50, p90, p99: {values:?}"
        );
    }
    let count = prom
        .scalar(&format!(
            "sum(istio_request_duration_milliseconds_count{{{dest}}})"
        ))
        .await?;
    assert_eq!(count, total);

    // TCP bytes, as the server's sidecar counted them: exactly what the
    // test sent and read.
    let tcp = |m: &str| {
        format!("sum({m}{{reporter=\"destination\",destination_service=\"{TCP_SERVER}\"}})")
    };
    assert_eq!(
        prom.scalar(&tcp("istio_tcp_received_bytes_total")).await?,
        sent as f64
    );
    assert_eq!(
        prom.scalar(&tcp("istio_tcp_sent_bytes_total")).await?,
        received as f64
    );
    assert_eq!(
        prom.scalar(&tcp("istio_tcp_connections_opened_total"))
            .await?,
        3.0
    );
    let tcp_rate = prom
        .query(&format!(
            "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"destination\",destination_service=~\"{TCP_SERVER}\"}}[5m])) by (destination_workload)"
        ))
        .await?;
    assert!(
        matches!(tcp_rate.as_slice(), [(m, v)] if m["destination_workload"] == "tcpserver" && *v > 0.0),
        "{tcp_rate:?}"
    );

    // Every proxy was scraped, and the control plane too: its proxies are
    // the pods' (three sidecars and the ingress gateway).
    let up = prom.query("up{job=\"kubernetes-pods\"}").await?;
    assert_eq!(up.len(), 4, "{up:?}");
    assert!(up.iter().all(|(_, v)| *v == 1.0), "{up:?}");
    assert_eq!(prom.scalar("sum(pilot_xds)").await?, 4.0);
    assert!(prom.scalar("sum(pilot_xds_pushes)").await? >= 4.0 * 4.0);
    assert_eq!(prom.scalar("sum(pilot_total_xds_rejects)").await?, 0.0);
    assert_eq!(
        prom.scalar("sum(envoy_server_live{job=\"kubernetes-pods\"})")
            .await?,
        4.0
    );

    Ok(())
}

/// Bookinfo's reviews-v1, v2 and v3 all run as `bookinfo-reviews`, so the
/// certificate alone cannot tell ratings which of them called. Its sidecar
/// knows anyway (the caller's address, checked against that certificate,
/// in the pushed workload data): separate series for reviews-v2 and
/// reviews-v3 with their own versions, counting what each caller's own
/// sidecar counted, and nothing from an "unknown" workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_sharing_a_service_account_are_told_apart() -> Result<()> {
    let mesh = Mesh::up(&e2e::repo_root().join("examples/bookinfo"))?;
    let product = format!("{}/productpage", mesh.gateway);
    let client = http();
    eventually(Duration::from_secs(30), || async {
        let body = client.get(&product).send().await?.text().await?;
        ensure!(body.contains("Book Reviews"), "not ready");
        Ok(())
    })
    .await?;
    // Bounded: 60 pages, ~20 to each version of reviews (v2 and v3 call ratings).
    for _ in 0..60 {
        client.get(&product).send().await?;
    }
    let pods = mesh.pods()?;
    let stats = |app: &str, version: &str| {
        let pod = pods.iter().find(|p| {
            p["metadata"]["labels"]["app"] == app && p["metadata"]["labels"]["version"] == version
        });
        let endpoints = pod
            .and_then(|p| p["metadata"]["annotations"]["proxy.trellis.io/metrics"].as_str())
            .map(str::to_string);
        let (client, what) = (client.clone(), format!("{app}-{version}"));
        async move {
            let endpoints = endpoints.with_context(|| format!("no {what} pod with metrics"))?;
            let own = endpoints.split(' ').nth(1).context("no 15090")?;
            let text = client
                .get(format!("http://{own}/stats/prometheus"))
                .send()
                .await?
                .text()
                .await?;
            anyhow::Ok(text)
        }
    };
    eventually(Duration::from_secs(30), || async {
        let ratings = stats("ratings", "v1").await?;
        for version in ["v2", "v3"] {
            let workload = format!("reviews-{version}");
            let of = |reporter: &'static str| {
                [
                    ("reporter", reporter),
                    ("source_workload", workload.as_str()),
                    ("source_app", "reviews"),
                    ("source_version", version),
                    ("source_canonical_service", "reviews"),
                    ("source_canonical_revision", version),
                    (
                        "source_principal",
                        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                    ),
                    ("destination_workload", "ratings-v1"),
                ]
            };
            let server = counter_sum(&ratings, "istio_requests_total", &of("destination"));
            let caller = counter_sum(
                &stats("reviews", version).await?,
                "istio_requests_total",
                &of("source"),
            );
            ensure!(
                server > 0.0 && server == caller,
                "{workload} → ratings: ratings counted {server}, {workload} counted {caller}"
            );
        }
        let unknown = counter_sum(
            &ratings,
            "istio_requests_total",
            &[("reporter", "destination"), ("source_workload", "unknown")],
        );
        ensure!(
            unknown == 0.0,
            "ratings counted {unknown} from an unknown workload"
        );
        Ok(())
    })
    .await?;
    Ok(())
}
