//! Istio's own Grafana dashboards, unchanged: every panel query of the mesh,
//! service, workload, performance and control-plane dashboards, read from
//! the istio.io/istio Go module (the version `scripts/istioctl.sh` pins;
//! nothing of it is committed), with Grafana's template variables filled in
//! as Grafana fills them, runs against a real Prometheus scraping Bookinfo
//! under bounded traffic. Each query must parse, and return a series
//! wherever the mesh's traffic implies one; the few that legitimately
//! return nothing are listed below with the reason, and a listed query that
//! starts returning series fails the test so the list stays true.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Launch, Mesh, eventually, http, repo_root};
use serde_json::Value;

use crate::telemetry::{Prometheus, tcp_exchange};

/// `$__rate_interval` as Grafana computes it for Istio's Prometheus data
/// source (samples/addons/grafana.yaml's `timeInterval: 15s`, as
/// manifests/addons/grafana.yaml's): max($__interval + 15s, 4 × 15s) = 1m
/// for these dashboards' default time ranges.
const RATE_INTERVAL: &str = "1m";

/// A dashboard query that returns nothing here, and why that is right.
struct Empty {
    dashboard: &'static str,
    /// The panel's title.
    panel: &'static str,
    /// A piece of the query that singles the target out.
    expr: &'static str,
    why: &'static str,
}

const NO_KUBELET: &str = "cAdvisor's per-container series come from the kubelet, not the mesh; one machine has none (they do on a cluster)";
const NOT_GO: &str = "istiod's Go runtime series (go_*): trellisd is not a Go program";
const CLIENT_POLICY: &str = "the client reports connection_security_policy=\"unknown\" (Istio's standard metrics; istio/proxy's istio_stats filter does the same), so reporter=\"source\" with mutual_tls is empty in Istio too";

const EMPTY: &[Empty] = &[
    // Workload dashboard: outgoing panels that filter the client's
    // reports by mutual_tls.
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Outgoing Success Rate (non-5xx responses) By Destination",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Outgoing Request Duration By Destination",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Outgoing Request Size By Destination",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Response Size By Destination",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Bytes Received from Outgoing TCP Connection",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Bytes Sent on Outgoing TCP Connection",
        expr: "connection_security_policy=\"mutual_tls\"",
        why: CLIENT_POLICY,
    },
    // Outgoing TCP from a workload in the dashboard's namespace list: in
    // `trellis up`'s loopback mode apps reach the mesh through HTTP_PROXY,
    // so only the ingress gateway originates mesh TCP (the mesh dashboard's
    // TCP panels show it); istio-system is not in this dashboard's
    // namespace list, which is built from destination namespaces, as in Istio.
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Bytes Received from Outgoing TCP Connection",
        expr: "connection_security_policy!=\"mutual_tls\"",
        why: "no sidecar in a listed namespace originates TCP in loopback mode (apps call out through HTTP_PROXY); the gateway's TCP is on the mesh dashboard",
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Bytes Sent on Outgoing TCP Connection",
        expr: "connection_security_policy!=\"mutual_tls\"",
        why: "no sidecar in a listed namespace originates TCP in loopback mode (apps call out through HTTP_PROXY); the gateway's TCP is on the mesh dashboard",
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "TCP Client Traffic",
        expr: "",
        why: "no sidecar in a listed namespace originates TCP in loopback mode (apps call out through HTTP_PROXY); the gateway's TCP is on the mesh dashboard",
    },
    Empty {
        dashboard: "istio-workload-dashboard.json",
        panel: "Outgoing Requests By Destination And Response Code",
        expr: "destination_principal!~\"spiffe.*\"",
        why: "requests to destinations without a mesh identity (no sidecar, or outside the mesh): Bookinfo calls only its own sidecar'd services",
    },
    // Performance dashboard: resource series from the kubelet and istiod.
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "vCPU / 1k rps",
        expr: "container_cpu_usage_seconds_total",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "vCPU",
        expr: "container_cpu_usage_seconds_total",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "Memory Usage",
        expr: "container_memory_working_set_bytes",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "Memory",
        expr: "container_",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "Disk",
        expr: "container_fs_usage_bytes",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "Memory",
        expr: "go_memstats_",
        why: NOT_GO,
    },
    Empty {
        dashboard: "istio-performance-dashboard.json",
        panel: "Goroutines",
        expr: "",
        why: NOT_GO,
    },
    // Control-plane dashboard.
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Memory Usage",
        expr: "",
        why: "the kubelet's container_memory_working_set_bytes and istiod's Go heap series (neither exists for trellisd off-cluster; trellisd is not Go)",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Memory Allocations",
        expr: "",
        why: NOT_GO,
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "CPU Usage",
        expr: "",
        why: NO_KUBELET,
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Goroutines",
        expr: "",
        why: NOT_GO,
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Events",
        expr: "pilot_k8s_",
        why: "not emitted by trellisd: pilot_k8s_reg_events / pilot_k8s_cfg_events count Kubernetes watch events; `trellis up` has no Kubernetes",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Events",
        expr: "pilot_push_triggers",
        why: "not emitted by trellisd: pilot_push_triggers (pushes by trigger type)",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Connections",
        expr: "xds-grpc",
        why: "the proxies' xDS connection is not an Envoy cluster named xds-grpc: trellis-proxy does not report it as envoy_cluster_upstream_cx_active (pilot_xds counts the same streams)",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Push Errors",
        expr: "pilot_total_xds_internal_errors",
        why: "not emitted by trellisd: pilot_total_xds_internal_errors",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Push Time",
        expr: "",
        why: "not emitted by trellisd: pilot_xds_push_time (histogram of push durations)",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Push Size",
        expr: "",
        why: "not emitted by trellisd: pilot_xds_config_size_bytes (histogram of pushed config sizes)",
    },
    Empty {
        dashboard: "pilot-dashboard.gen.json",
        panel: "Injection",
        expr: "",
        why: "sidecar_injection_*_total count istiod's injection webhook; `trellis up` injects nothing (on a cluster trellisd's webhook does not count them either)",
    },
];

/// How one dashboard is filled in: for each non-`All` variable, the values
/// to try (each query must answer for at least one of them).
struct Dashboard {
    file: &'static str,
    choices: &'static [&'static [(&'static str, &'static str)]],
}

const DASHBOARDS: &[Dashboard] = &[
    Dashboard {
        file: "istio-mesh-dashboard.gen.json",
        choices: &[&[]],
    },
    Dashboard {
        file: "istio-service-dashboard.json",
        choices: &[
            &[("service", "productpage.default.svc.cluster.local")],
            &[("service", "reviews.default.svc.cluster.local")],
            &[("service", "tcp-echo.default.svc.cluster.local")],
        ],
    },
    Dashboard {
        file: "istio-workload-dashboard.json",
        choices: &[
            &[("namespace", "default"), ("workload", "productpage-v1")],
            &[("namespace", "default"), ("workload", "reviews-v2")],
            &[("namespace", "default"), ("workload", "reviews-v3")],
            &[("namespace", "default"), ("workload", "tcp-echo")],
        ],
    },
    Dashboard {
        file: "istio-performance-dashboard.json",
        choices: &[&[]],
    },
    Dashboard {
        file: "pilot-dashboard.gen.json",
        choices: &[&[]],
    },
];

/// Istio's dashboards, in the istio.io/istio module scripts/istioctl.sh pins.
pub(crate) fn dashboards_dir() -> Result<PathBuf> {
    Ok(e2e::istio_module_dir()?.join("manifests/addons/dashboards"))
}

/// One query of a panel.
struct Target {
    panel: String,
    expr: String,
}

/// Every target with an expression, in every panel, rows included.
fn targets(dashboard: &Value) -> Vec<Target> {
    fn walk(panels: &Value, out: &mut Vec<Target>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for t in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    out.push(Target {
                        panel: title.to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's escaping of a multi-value or `All` variable's values in a
/// Prometheus query (they land in `=~` matchers): regex metacharacters
/// get a backslash, itself escaped for the PromQL string.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c == '\\' {
            out.push_str("\\\\\\\\");
        } else if "$^*{}[]'+?.()|".contains(c) {
            out.push_str("\\\\");
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Grafana's text for one series of `query_result(…)`: `name{k="v", …} value timestamp`.
fn query_result_line(labels: &Value, value: f64) -> String {
    let map = labels.as_object().cloned().unwrap_or_default();
    let name = map
        .get("__name__")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pairs: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default()))
        .collect();
    format!("{name}{{{}}} {value} 0", pairs.join(", "))
}

fn substitute(expr: &str, vars: &[(String, String)]) -> String {
    let mut out = expr.replace("$__rate_interval", RATE_INTERVAL);
    // Longest names first: `$srcwl` must not be taken for a `$srcw…`.
    let mut vars: Vec<_> = vars.iter().collect();
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in vars {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The dashboard's template variables as Grafana resolves them, in order
/// (later ones use earlier ones): `query_result` variables run their query
/// and take the regex's capture from each series' text; single-value ones
/// take `chosen` (which must be among the options, as a user picks it from
/// the list); multi-value ones with `All` take every option.
async fn variables(
    prom: &Prometheus,
    dashboard: &Value,
    chosen: &[(&str, &str)],
) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().unwrap_or_default();
        let options: Vec<String> = match var["type"].as_str() {
            Some("datasource") => continue,
            Some("custom") => var["query"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            Some("query") => {
                let query = var["query"]
                    .as_str()
                    .or_else(|| var["query"]["query"].as_str())
                    .unwrap_or_default();
                let inner = query
                    .trim()
                    .strip_prefix("query_result(")
                    .and_then(|q| q.strip_suffix(')'))
                    .with_context(|| format!("${name}: not a query_result: {query}"))?;
                let series = prom.query(&substitute(inner, &vars)).await?;
                let pattern = var["regex"].as_str().unwrap_or_default();
                let pattern = pattern
                    .strip_prefix('/')
                    .and_then(|p| p.rsplit_once('/'))
                    .map_or(pattern, |(p, _flags)| p);
                let re = regex::Regex::new(&format!("^(?:{pattern})$"))?;
                let found: BTreeSet<String> = series
                    .iter()
                    .filter_map(|(labels, v)| {
                        let line = query_result_line(labels, *v);
                        re.captures(&line)
                            .and_then(|c| c.get(1))
                            .map(|m| m.as_str().to_string())
                    })
                    .collect();
                found.into_iter().collect()
            }
            other => bail!("${name}: variable type {other:?} not handled"),
        };
        let value = if let Some((_, v)) = chosen.iter().find(|(n, _)| *n == name) {
            ensure!(
                options.iter().any(|o| o == v),
                "${name}: {v} is not among Grafana's options {options:?}"
            );
            if var["multi"] == true || var["includeAll"] == true {
                regex_escape(v)
            } else {
                v.to_string()
            }
        } else if var["multi"] == true || var["includeAll"] == true {
            // Every option: `All`, or every value ticked.
            let escaped: Vec<String> = options.iter().map(|o| regex_escape(o)).collect();
            match escaped.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", escaped.join("|")),
            }
        } else {
            bail!("${name}: a single-value variable the test must choose (options {options:?})");
        };
        vars.push((name.to_string(), value));
    }
    Ok(vars)
}

/// What one evaluation round found.
#[derive(Default)]
struct Verdict {
    /// Queries that returned nothing and are not listed in [`EMPTY`].
    missing: Vec<String>,
    /// Listed queries that returned series after all.
    stale: Vec<String>,
    answered: usize,
    listed_empty: Vec<String>,
}

async fn evaluate(prom: &Prometheus, dir: &Path) -> Result<Verdict> {
    let mut verdict = Verdict::default();
    for d in DASHBOARDS {
        let path = dir.join(d.file);
        let json: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let targets = targets(&json);
        ensure!(!targets.is_empty(), "{}: no panel queries", d.file);
        let mut answered = vec![false; targets.len()];
        for chosen in d.choices {
            let vars = variables(prom, &json, chosen).await?;
            for (i, t) in targets.iter().enumerate() {
                let query = substitute(&t.expr, &vars);
                ensure!(
                    !query.contains('$'),
                    "{} / {}: a variable left in {query}",
                    d.file,
                    t.panel
                );
                // Parses (an error here is a bad query, not an empty one).
                let series = prom
                    .query(&query)
                    .await
                    .with_context(|| format!("{} / {}", d.file, t.panel))?;
                answered[i] |= !series.is_empty();
            }
        }
        for (t, answered) in targets.iter().zip(answered) {
            let listed = EMPTY
                .iter()
                .find(|e| e.dashboard == d.file && e.panel == t.panel && t.expr.contains(e.expr));
            let name = format!("{} / {}: {}", d.file, t.panel, t.expr);
            match (answered, listed) {
                (true, None) => verdict.answered += 1,
                (true, Some(_)) => verdict.stale.push(name),
                (false, None) => verdict.missing.push(name),
                (false, Some(e)) => verdict
                    .listed_empty
                    .push(format!("{} / {} — {}", d.file, t.panel, e.why)),
            }
        }
    }
    Ok(verdict)
}

/// Bookinfo, plus a TCP echo service the ingress gateway forwards port
/// 31400 to (mesh TCP over mTLS, from the gateway as the source reporter).
fn mesh_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let bookinfo = repo_root().join("examples/bookinfo");
    for file in ["bookinfo.yaml", "bookinfo-gateway.yaml"] {
        std::fs::copy(bookinfo.join(file), dir.path().join(file))?;
    }
    std::fs::write(
        dir.path().join("tcp-echo.yaml"),
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: tcp-echo}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  template:
    metadata:
      labels: {app: tcp-echo, version: v1}
    spec:
      serviceAccountName: tcp-echo
      containers:
      - name: echo
        image: trellis-sample
        command: [trellis-sample]
        args: [echo, --service, tcp-echo, --port, "8080"]
        ports: [{containerPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [tcp-gateway]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo.default.svc.cluster.local, port: {number: 8080}}}]
"#,
    )?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_dashboards_answer_every_query_unchanged() -> Result<()> {
    let dashboards = dashboards_dir()?;
    let dir = mesh_dir()?;
    let mesh = Mesh::launch(dir.path(), Launch::default())?;
    let client = http();

    // Prometheus scraping the proxies and the control plane through the
    // file_sd targets `trellis up` writes.
    let sd = mesh.state.path().join("prometheus");
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
    let prom = Prometheus::start(&config, &format!("127.{}.0.9:9090", mesh.block))?;

    let gateway = mesh.gateway.clone();
    eventually(Duration::from_secs(60), || async {
        let r = client.get(format!("{gateway}/productpage")).send().await?;
        ensure!(r.status() == 200, "productpage: {}", r.status());
        Ok(())
    })
    .await?;
    let gateway_ip = gateway
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .context("gateway address")?;
    let productpage = mesh.pod_of("productpage")?;
    let productpage_ip = productpage["status"]["podIP"]
        .as_str()
        .context("productpage pod IP")?
        .to_string();
    let tcp_echo = mesh.pod_of("tcp-echo")?;
    let tcp_echo_ip = tcp_echo["status"]["podIP"]
        .as_str()
        .context("tcp-echo pod IP")?
        .to_string();

    // Bounded traffic in the background until the queries are answered:
    // product pages through the gateway (mTLS on every hop), a 404, the
    // product page straight at its sidecar and a TCP exchange straight at
    // tcp-echo's (plaintext: the `none` policy panels), and a TCP exchange
    // through the gateway's port 31400 (mTLS).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        let tcp = format!("{gateway_ip}:31400");
        let plain_tcp = format!("{tcp_echo_ip}:8080");
        async move {
            for i in 0..1200u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = if i % 10 == 9 {
                    "/productpage/missing"
                } else {
                    "/productpage"
                };
                let _ = client.get(format!("{gateway}{path}")).send().await;
                if i % 3 == 0 {
                    let _ = client
                        .get(format!("http://{productpage_ip}:9080/productpage"))
                        .send()
                        .await;
                }
                if i % 2 == 0 {
                    let tcp = if i % 4 == 0 {
                        tcp.clone()
                    } else {
                        plain_tcp.clone()
                    };
                    let _ = tokio::task::spawn_blocking(move || tcp_exchange(&tcp)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let verdict = eventually(Duration::from_secs(90), || async {
        let v = evaluate(&prom, &dashboards).await?;
        ensure!(
            v.missing.is_empty(),
            "{} dashboard queries return nothing:\n{}",
            v.missing.len(),
            v.missing.join("\n")
        );
        Ok(v)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    let verdict = verdict?;
    eprintln!(
        "{} dashboard queries answered; {} return nothing, as listed:\n{}",
        verdict.answered,
        verdict.listed_empty.len(),
        verdict.listed_empty.join("\n")
    );
    assert!(
        verdict.stale.is_empty(),
        "listed as empty but answered (take them off the list):\n{}",
        verdict.stale.join("\n")
    );
    Ok(())
}
