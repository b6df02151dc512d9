//! `trellis dashboard`: the live service graph trellisd serves on its
//! monitoring port, driven in a real headless Chromium through the DevTools
//! protocol while Bookinfo serves traffic; a fault injected with a
//! VirtualService turns the right edge red on the open page, and the
//! service's detail lists the failed requests with the trace ids they
//! carried (linked to the tracing UI) and the request ids of their access
//! log lines.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use e2e::{Launch, Mesh, bin, bin_dir, eventually, http, repo_root};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium with its DevTools endpoint, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn start() -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-proxy-server",
                "--window-size=1600,1000",
                // Any free port on loopback, written to DevToolsActivePort.
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!("chromium must be installed (scripts/test.sh installs it): {e}")
            })?;
        let mut browser = Browser {
            child,
            _profile: profile,
            port: 0,
        };
        let file = browser._profile.path().join("DevToolsActivePort");
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                browser.port = port;
                return Ok(browser);
            }
            if let Some(status) = browser.child.try_wait()? {
                bail!("chromium exited ({status}) before its DevTools endpoint was up");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("chromium wrote no {} in 30 s", file.display())
    }

    /// A DevTools session on the browser's page.
    async fn page(&self) -> Result<Page> {
        let targets: Value = http()
            .get(format!("http://127.0.0.1:{}/json/list", self.port))
            .send()
            .await?
            .json()
            .await?;
        let url = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("no page target")?;
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Page(tokio::sync::Mutex::new((socket, 0))))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page's DevTools protocol session: a command, then its answer
/// (events in between are skipped); with the last command's id.
struct Page(tokio::sync::Mutex<(Socket, u64)>);

impl Page {
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let mut guard = self.0.lock().await;
        let (socket, next) = &mut *guard;
        *next += 1;
        let id = *next;
        let command = json!({ "id": id, "method": method, "params": params });
        socket
            .send(Message::Text(command.to_string().into()))
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(msg) = socket.next().await {
                if let Message::Text(text) = msg? {
                    let v: Value = serde_json::from_str(&text)?;
                    if v["id"] == id {
                        return Ok(v);
                    }
                }
            }
            bail!("the DevTools connection closed")
        })
        .await
        .with_context(|| format!("{method}: no answer in 30 s"))??;
        if let Some(error) = answer.get("error") {
            bail!("{method}: {error}");
        }
        Ok(answer["result"].clone())
    }

    /// The value of a JavaScript expression evaluated in the page.
    async fn eval(&self, expression: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }
}

/// What the open page shows now: its nodes and edges as drawn (the SVG's
/// data attributes), and how many times it redrew from the API.
const SHOWN: &str = r#"JSON.stringify({
  updates: Number(document.body.dataset.updates || 0),
  nodes: [...document.querySelectorAll('#graph .node')].map(n => ({id: n.dataset.id, name: n.dataset.name, version: n.dataset.version, kind: n.getAttribute('class')})),
  edges: [...document.querySelectorAll('#graph .edge')].map(e => ({source: e.dataset.source, target: e.dataset.target, rps: Number(e.dataset.rps), errors: Number(e.dataset.errorRatio), total: Number(e.dataset.total), mtls: e.dataset.mtls, class: e.getAttribute('class'), label: e.dataset.label})),
})"#;

async fn shown(page: &Page) -> Result<Value> {
    let text = page.eval(SHOWN).await?;
    Ok(serde_json::from_str(text.as_str().context("a string")?)?)
}

fn edge<'a>(shown: &'a Value, source: &str, target: &str) -> Option<&'a Value> {
    shown["edges"]
        .as_array()?
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
}

const PRODUCTPAGE: &str = "workload:default/productpage-v1";
const REVIEWS: &str = "service:reviews.default.svc.cluster.local";
const RATINGS: &str = "service:ratings.default.svc.cluster.local";
const DETAILS: &str = "service:details.default.svc.cluster.local";

const RATINGS_FAULT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {httpStatus: 500, percentage: {value: 100}}
    route:
    - destination: {host: ratings}
";

/// Access logs on for the whole mesh (Istio's built-in `envoy` provider).
const ACCESS_LOGS: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
";

/// The trace ids the test's requests carry: this, plus the request's number.
const TRACE_BASE: u128 = 0x7e57_da5b_0000_0000_0000_0000_0000_0000;
/// The tracing UI trellisd is told about (nothing needs to answer there).
const TRACING_UI: &str = "http://tracing.example:16686";

/// A trace id of the test's traffic: which request carried it.
fn sent_trace(id: &str) -> Option<u128> {
    let n = u128::from_str_radix(id, 16).ok()?.checked_sub(TRACE_BASE)?;
    (n < 4_000).then_some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_graph_and_an_injected_fault() -> Result<()> {
    let mesh = Mesh::launch(
        &repo_root().join("examples/bookinfo"),
        Launch {
            env: vec![("TRELLIS_TRACING_URL".into(), TRACING_UI.into())],
            ..Launch::default()
        },
    )?;
    let product = format!("{}/productpage", mesh.gateway);
    let client = http();
    eventually(Duration::from_secs(30), || async {
        let body = client.get(&product).send().await?.text().await?;
        ensure!(body.contains("Book Reviews"), "not ready");
        Ok(())
    })
    .await?;

    // The CLI finds the mesh and prints where the dashboard is.
    let out = Command::new(bin("trellis"))
        .args(["dashboard", "--browser=false", "--control-plane", &mesh.api])
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "trellis dashboard: {out:?}");
    let url = format!("{}/dashboard/", mesh.api);
    ensure!(
        printed.contains(&url),
        "trellis dashboard printed {printed:?}, not {url}"
    );

    // Bounded traffic: at most 4,000 requests, ~25 a second, until stopped,
    // each starting a sampled trace of a known id (W3C traceparent), which
    // Bookinfo's services pass on.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn({
        let (stop, sent, client, product) =
            (stop.clone(), sent.clone(), client.clone(), product.clone());
        async move {
            for i in 0..4_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let traceparent =
                    format!("00-{:032x}-{:016x}-01", TRACE_BASE + u128::from(i), i + 1);
                let _ = client
                    .get(&product)
                    .header("traceparent", traceparent)
                    .send()
                    .await
                    .map(|r| r.status());
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });

    let browser = Browser::start()?;
    let page = &browser.page().await?;
    page.call("Page.enable", json!({})).await?;
    page.call("Page.navigate", json!({ "url": url })).await?;

    // Every Bookinfo workload and service appears, with the calls between
    // them carrying requests, over mTLS; reviews' three versions share its traffic.
    let first = eventually(Duration::from_secs(60), || async move {
        let s = shown(page).await?;
        let names: Vec<&str> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["name"].as_str())
            .collect();
        for n in [
            "productpage-v1",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
            "details-v1",
            "ratings-v1",
            "reviews",
            "ratings",
            "details",
            "productpage",
        ] {
            ensure!(names.contains(&n), "no node {n} in {names:?}");
        }
        for (from, to) in [
            (PRODUCTPAGE, REVIEWS),
            (PRODUCTPAGE, DETAILS),
            (REVIEWS, "workload:default/reviews-v1"),
            (REVIEWS, "workload:default/reviews-v2"),
            (REVIEWS, "workload:default/reviews-v3"),
            ("workload:default/reviews-v2", RATINGS),
            ("workload:default/reviews-v3", RATINGS),
            (RATINGS, "workload:default/ratings-v1"),
        ] {
            let e = edge(&s, from, to).with_context(|| format!("no edge {from} -> {to}: {s}"))?;
            ensure!(
                e["rps"].as_f64() > Some(0.0),
                "{from} -> {to} carries nothing: {e}"
            );
            ensure!(
                e["errors"].as_f64() == Some(0.0),
                "{from} -> {to} fails: {e}"
            );
        }
        let e = edge(&s, PRODUCTPAGE, REVIEWS).context("edge")?;
        ensure!(
            e["mtls"] == "mutual_tls",
            "productpage -> reviews is not mTLS: {e}"
        );
        ensure!(
            e["label"].as_str().is_some_and(|l| l.contains("rps")),
            "no rate label: {e}"
        );
        Ok(s)
    })
    .await?;
    println!(
        "graph: {} nodes, {} edges after {} requests",
        first["nodes"].as_array().map_or(0, Vec::len),
        first["edges"].as_array().map_or(0, Vec::len),
        sent.load(Ordering::Relaxed)
    );

    // The page updates itself: the counts behind the same edge grow without a reload.
    let before = edge(&first, PRODUCTPAGE, REVIEWS).context("edge")?["total"]
        .as_f64()
        .context("total")?;
    let updates = first["updates"].as_f64().context("updates")?;
    eventually(Duration::from_secs(30), || async move {
        let s = shown(page).await?;
        let now = edge(&s, PRODUCTPAGE, REVIEWS).context("edge")?["total"]
            .as_f64()
            .context("total")?;
        ensure!(s["updates"].as_f64() > Some(updates), "not redrawn");
        ensure!(
            now > before,
            "productpage -> reviews still at {now} requests"
        );
        Ok(())
    })
    .await?;

    // A fault on ratings: reviews' sidecars answer 500 themselves, which
    // the open page shows as errors on the edges into ratings, while
    // ratings-v1 itself is not called.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ratings-fault.yaml");
    std::fs::write(&file, format!("{RATINGS_FAULT}---\n{ACCESS_LOGS}"))?;
    let applied = mesh.trellis(&["apply", "-f", &file.display().to_string()]);
    ensure!(applied.status.success(), "apply: {applied:?}");
    let faulty = eventually(Duration::from_secs(60), || async move {
        let s = shown(page).await?;
        for from in ["workload:default/reviews-v2", "workload:default/reviews-v3"] {
            let e = edge(&s, from, RATINGS).context("edge")?;
            ensure!(e["errors"].as_f64() >= Some(0.5), "{from} -> ratings: {e}");
            ensure!(
                e["class"].as_str().is_some_and(|c| c.contains("error")),
                "{from} -> ratings is not drawn as failing: {e}"
            );
        }
        // Other edges stay healthy.
        let e = edge(&s, PRODUCTPAGE, DETAILS).context("edge")?;
        ensure!(e["errors"].as_f64() == Some(0.0), "details fails: {e}");
        Ok(s)
    })
    .await?;
    println!(
        "reviews-v2 -> ratings after the fault: {}",
        edge(&faulty, "workload:default/reviews-v2", RATINGS).context("edge")?
    );

    // The service's detail: the VirtualService that applies, and the
    // failures with the flag saying the caller's proxy injected them.
    page.eval(
        "document.querySelector('#graph .node[data-id=\"service:ratings.default.svc.cluster.local\"]')\
         .dispatchEvent(new MouseEvent('click', {bubbles: true}))",
    )
    .await?;
    eventually(Duration::from_secs(20), || async move {
        let text = page
            .eval("document.getElementById('detail').innerText")
            .await?;
        let text = text.as_str().unwrap_or("");
        ensure!(text.contains("VirtualService default/ratings"), "{text}");
        ensure!(text.contains("FI"), "{text}");
        ensure!(text.contains("ratings-v1"), "{text}");
        Ok(())
    })
    .await?;
    let detail: Value = client
        .get(format!(
            "{}/dashboard/api/service/default/ratings",
            mesh.api
        ))
        .send()
        .await?
        .json()
        .await?;
    let failures = detail["failures"].as_array().context("failures")?;
    ensure!(
        failures
            .iter()
            .any(|f| f["response_code"] == 500 && f["response_flags"] == "FI"),
        "{detail}"
    );

    // Single requests: the recent errors are the injected faults, from
    // reviews-v2 and v3, each with the trace id its request carried (so the
    // tracing export has it) linked to the tracing UI, and a request id
    // the access log of the reviews sidecar that answered has on a 500 FI line.
    let recent = eventually(Duration::from_secs(30), || async {
        let detail: Value = client
            .get(format!(
                "{}/dashboard/api/service/default/ratings",
                mesh.api
            ))
            .send()
            .await?
            .json()
            .await?;
        let errors = detail["recent_errors"]
            .as_array()
            .context("recent_errors")?;
        let logs = proxy_logs(&mesh)?;
        let mut logged = 0;
        for e in errors {
            ensure!(
                e["response_code"] == 500 && e["response_flags"] == "FI",
                "not the fault: {e}"
            );
            ensure!(
                e["destination_service"] == "ratings.default.svc.cluster.local",
                "{e}"
            );
            let from = e["source_workload"].as_str().unwrap_or_default();
            ensure!(
                from == "reviews-v2" || from == "reviews-v3",
                "from {from}: {e}"
            );
            let trace = e["trace_id"].as_str().context("no trace id")?;
            ensure!(
                sent_trace(trace).is_some(),
                "trace {trace} is not one the test sent: {e}"
            );
            ensure!(
                e["trace_url"] == format!("{TRACING_UI}/trace/{trace}"),
                "trace link: {e}"
            );
            let request_id = e["request_id"].as_str().unwrap_or_default();
            ensure!(!request_id.is_empty(), "no request id: {e}");
            if logs
                .lines()
                .any(|l| l.contains(request_id) && l.contains(" 500 FI "))
            {
                logged += 1;
            }
        }
        // The log lines of the newest errors may be a moment behind.
        ensure!(
            errors.len() >= 3 && logged >= 3,
            "{} recent errors, {logged} in the access logs: {errors:?}",
            errors.len()
        );
        Ok(errors.clone())
    })
    .await?;
    let first_trace = recent[0]["trace_id"]
        .as_str()
        .context("trace id")?
        .to_string();
    println!(
        "recent errors of ratings: {}, newest {}",
        recent.len(),
        recent[0]
    );
    // The page shows them, the trace id as a link to the tracing UI.
    eventually(Duration::from_secs(20), || async {
        let text = page
            .eval("document.getElementById('detail').innerText")
            .await?;
        let text = text.as_str().unwrap_or("");
        ensure!(text.contains("Recent errors") && text.contains("Slowest requests"), "{text}");
        let links = page
            .eval(
                "JSON.stringify([...document.querySelectorAll('#detail a')].map(a => [a.textContent, a.href]))",
            )
            .await?;
        let links: Vec<(String, String)> =
            serde_json::from_str(links.as_str().context("a string")?)?;
        ensure!(
            links
                .iter()
                .any(|(t, href)| sent_trace(t).is_some() && href == &format!("{TRACING_UI}/trace/{t}")),
            "no trace link among {links:?} (newest error's trace {first_trace})"
        );
        Ok(())
    })
    .await?;

    // A screenshot for people to look at, with the recent errors in view.
    page.eval(
        "[...document.querySelectorAll('#detail h3')].find(h => h.textContent === 'Recent errors').scrollIntoView()",
    )
    .await?;
    let shot = page
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().context("screenshot data")?)?;
    let path = bin_dir()
        .parent()
        .context("target dir")?
        .join("dashboard.png");
    std::fs::write(&path, png)?;
    println!("screenshot: {}", path.display());

    stop.store(true, Ordering::Relaxed);
    traffic.await?;
    Ok(())
}

/// Every sidecar's log so far (their access log lines are on stdout).
fn proxy_logs(mesh: &Mesh) -> Result<String> {
    let mut all = String::new();
    for entry in std::fs::read_dir(mesh.logs())? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".istio-proxy.log"))
        {
            all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    Ok(all)
}

/// The dashboard's API answers only requests that name this control plane
/// (DNS rebinding) and come from no other origin, and needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_other_sites() -> Result<()> {
    let mesh = Mesh::up(&repo_root().join("examples/bookinfo"))?;
    let client = http();
    let graph = format!("{}/dashboard/api/graph", mesh.api);
    let ok = client.get(&graph).send().await?;
    ensure!(ok.status() == 200, "{:?}", ok.status());
    let body: Value = ok.json().await?;
    ensure!(
        body["proxies"].as_array().is_some_and(|p| !p.is_empty()),
        "{body}"
    );
    let page = client
        .get(format!("{}/dashboard/", mesh.api))
        .send()
        .await?;
    ensure!(page.status() == 200);
    ensure!(page.text().await?.contains("app.js"));
    for (name, value) in [
        ("host", "evil.example:15014"),
        ("origin", "http://evil.example"),
    ] {
        let r = client.get(&graph).header(name, value).send().await?;
        ensure!(r.status() == 403, "{name}: {value}: {:?}", r.status());
    }
    Ok(())
}

/// On a cluster `trellis dashboard` forwards a local port to trellisd's
/// monitoring port through the API server's service proxy (there is no
/// kubelet port-forward here), and the page and its API answer through it;
/// an add-on that is not installed is reported at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_dashboard_is_forwarded_through_the_api_server() -> Result<()> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!(
            "SKIPPED: needs root (a veth pair: the API server proxies to no loopback address)"
        );
        return Ok(());
    }
    let Some(kube) = e2e::kube::Kube::start("dashboard-forward")? else {
        return Ok(());
    };
    let host = crate::kube_cli::HostAddress::add(kube.block)?;
    let addr = &host.address;
    let trellisd =
        e2e::kube::Trellisd::replica(&kube, 0, &["--http-addr", &format!("{addr}:15014")])?;
    eventually(Duration::from_secs(30), || async {
        kube.apply(
            "apiVersion: v1
kind: Pod
metadata: {name: istiod-0, namespace: istio-system, labels: {app: istiod}}
spec:
  containers: [{name: discovery, image: trellisd}]
",
        )
    })
    .await?;
    kube.set_pod_ip("istiod-0", "istio-system", addr)?;
    kube.apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: istiod, namespace: istio-system}}
spec:
  ports: [{{name: http-monitoring, port: 15014}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: istiod, namespace: istio-system}}
subsets:
- addresses: [{{ip: {addr}, targetRef: {{kind: Pod, name: istiod-0, namespace: istio-system}}}}]
  ports: [{{name: http-monitoring, port: 15014}}]
"
    ))?;
    let kubeconfig = kube.kubeconfig.display().to_string();
    let home = tempfile::tempdir()?;

    let missing = Command::new(bin("trellis"))
        .args([
            "dashboard",
            "kiali",
            "--browser=false",
            "--kubeconfig",
            &kubeconfig,
        ])
        .envs(e2e::cli_env(home.path()))
        .output()?;
    let said = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        !missing.status.success() && said.contains("services/http:kiali:20001/proxy"),
        "trellis dashboard kiali without Kiali: {missing:?}"
    );

    let mut forward = Command::new(bin("trellis"))
        .args([
            "dashboard",
            "--browser=false",
            "--port",
            "0",
            "--kubeconfig",
            &kubeconfig,
        ])
        .envs(e2e::cli_env(home.path()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = forward.stdout.take().context("stdout")?;
    // The first line naming the dashboard; the rest read (and dropped) until it ends.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("trellis dashboard: {line}");
            if line.contains("/dashboard/")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    let line = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .context("trellis dashboard printed no address in 60 s")?
        .context("trellis dashboard ended without an address")?;
    let result = async {
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .context("a URL")?
            .to_string();
        ensure!(url.starts_with("http://localhost:"), "{line}");
        let page = http().get(&url).send().await?;
        ensure!(page.status() == 200, "{url}: {:?}", page.status());
        ensure!(page.text().await?.contains("app.js"), "not the dashboard");
        let graph: Value = http()
            .get(format!("{url}api/graph"))
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            graph["nodes"].is_array() && graph["proxies"].is_array(),
            "{graph}"
        );
        Ok(())
    }
    .await;
    let _ = forward.kill();
    let _ = forward.wait();
    result.with_context(|| trellisd.log())
}
