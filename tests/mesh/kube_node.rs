//! The seeds' workflow verbatim on a real API server, with `trellis node`
//! running the pods: `kubectl label namespace … istio-injection=enabled`,
//! `kubectl apply -f` Bookinfo and its gateway, and a request routing
//! change (all reviews to v3) applied by kubectl taking effect — the
//! product page, served through the ingress gateway, shows v3's red stars.
//! The node registers itself, binds the pods, runs each in its own network
//! namespace with its init container's capture and its injected sidecar,
//! and reports their status, from which kube-controller-manager builds the
//! EndpointSlices the control plane reads. Deleting a pod tears its
//! namespace down; stopping the node leaves nothing behind.
//!
//! In the first test trellisd runs as a local process against the API
//! server (as in the other Kubernetes tests), its discovery port on the
//! node's address, which the injector and the ingress gateway's Deployment
//! (from `trellis manifest generate`) are told. In the second, `trellis
//! install -f` the seed's IstioOperator runs trellisd and the gateways as
//! pods on the node, found by their Services' names and ClusterIPs as in a
//! cluster; `trellis uninstall` then leaves none of them behind.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::kube::{Kube, webhook_configurations};
use e2e::node::Process;
use e2e::{bin, eventually, http, repo_root};
use serde_json::{Value, json};

const NODE: &str = "trellis-test-node";

/// Network namespaces and links of `block` that still exist.
fn leftovers(block: u8) -> Result<Vec<String>> {
    let text = |args: &[&str]| -> Result<String> {
        Ok(String::from_utf8_lossy(&Command::new("ip").args(args).output()?.stdout).into_owned())
    };
    let prefix = format!("trellis-{block}-");
    let link = format!("trellis{block}");
    let mut found: Vec<String> = text(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect();
    for line in text(&["-o", "link", "show"])?.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name == link || name.starts_with(&format!("{link}-")) {
            found.push(name.to_string());
        }
    }
    Ok(found)
}

/// The logs of the containers whose log file's name contains `needle`.
fn container_logs(dir: &std::path::Path, needle: &str) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(needle) {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out += &format!("\n--- {name}\n{text}");
        }
    }
    out
}

fn json_of(kube: &Kube, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&kube.kubectl_ok(&all)?)?)
}

/// The ingress gateway's objects from `trellis manifest generate`, its
/// proxy reaching the control plane at `xds`.
fn ingress_gateway(xds: &str) -> Result<String> {
    let out = Command::new(bin("trellis"))
        .args(["manifest", "generate"])
        .output()
        .context("trellis manifest generate")?;
    ensure!(
        out.status.success(),
        "trellis manifest generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut items = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc)?;
        if v["metadata"]["name"]
            .as_str()
            .is_none_or(|n| !n.contains("ingressgateway"))
            || !matches!(
                v["kind"].as_str(),
                Some("ServiceAccount" | "Deployment" | "Service")
            )
        {
            continue;
        }
        if v["kind"] == "Deployment" {
            let args = &mut v["spec"]["template"]["spec"]["containers"][0]["args"];
            let at = args
                .as_array()
                .and_then(|a| a.iter().position(|x| x == "--xds"))
                .context("the gateway has no --xds")?;
            args[at + 1] = json!(xds);
        }
        items.push(v);
    }
    ensure!(items.len() == 3, "the ingress gateway's objects: {items:?}");
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string())
}

/// The product page through the gateway at `url`, complete.
async fn product_page(client: &reqwest::Client, url: &str) -> Result<String> {
    let resp = client.get(format!("{url}/productpage")).send().await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    let body = resp.text().await?;
    ensure!(
        body.contains("The Comedy of Errors") && body.contains("Book Details"),
        "not the product page: {body:.300}"
    );
    ensure!(
        !body.contains("Error fetching"),
        "an upstream failed: {body}"
    );
    Ok(body)
}

/// The seeds' workflow, verbatim, once a control plane serves: injection
/// enabled by a namespace label, Bookinfo and its gateway applied with
/// kubectl, the product page through the ingress gateway, `kubectl logs`
/// of a sidecar, and a routing change by kubectl taking effect. The
/// Bookinfo pods, Ready.
async fn bookinfo_workflow(
    kube: &Kube,
    node: &Process,
    state: &std::path::Path,
) -> Result<Vec<Value>> {
    let block = kube.block;
    // The seeds' workflow, verbatim.
    let ns = kube.namespace.clone();
    kube.kubectl_ok(&["label", "namespace", &ns, "istio-injection=enabled"])?;
    let bookinfo = repo_root().join("examples/bookinfo");
    for file in [
        "bookinfo.yaml",
        "bookinfo-gateway.yaml",
        "networking/destination-rule-all.yaml",
    ] {
        kube.kubectl_ok(&["apply", "-f", &bookinfo.join(file).display().to_string()])?;
    }

    // Six Bookinfo pods, injected, Ready, with their sidecar's restart count.
    let pods = eventually(Duration::from_secs(180), || async {
        let list = json_of(kube, &["get", "pods"])?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready = |p: &Value| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        let not_ready: Vec<String> = items
            .iter()
            .filter(|p| !ready(p))
            .map(|p| format!("{}: {}", p["metadata"]["name"], p["status"]))
            .collect();
        ensure!(
            items.len() == 6 && not_ready.is_empty(),
            "{} pods, not ready: {not_ready:#?}",
            items.len()
        );
        Ok(items)
    })
    .await
    .with_context(|| format!("node log:\n{}", node.log()))?;
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], NODE);
        let sidecar = p["status"]["initContainerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "istio-proxy")
            .with_context(|| format!("no istio-proxy status: {}", p["status"]))?;
        assert_eq!(sidecar["ready"], true, "{sidecar}");
        assert!(sidecar["restartCount"].is_u64(), "{sidecar}");
        let pod_ip = p["status"]["podIP"].as_str().unwrap_or_default();
        assert!(pod_ip.starts_with(&format!("10.{block}.")), "{pod_ip}");
    }

    // kube-controller-manager made the EndpointSlices from the pods' status.
    eventually(Duration::from_secs(60), || async {
        let slices = json_of(
            kube,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=reviews",
            ],
        )?;
        let ready = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        ensure!(ready == 3, "{ready} ready reviews endpoints: {slices}");
        Ok(())
    })
    .await?;

    // The product page through the ingress gateway.
    let gateway = eventually(Duration::from_secs(120), || async {
        let list = json_of(
            kube,
            &[
                "get",
                "pods",
                "-n",
                "istio-system",
                "-l",
                "istio=ingressgateway",
            ],
        )?;
        let ip = list["items"][0]["status"]["podIP"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .context("the gateway has no address yet")?
            .to_string();
        Ok(format!("http://{ip}:8080"))
    })
    .await?;
    let client = http();
    let logs = state.join("node/logs");
    let gateway_log = || {
        let out = container_logs(&logs, "ingressgateway");
        let status = kube.kubectl(&["get", "pods", "-n", "istio-system", "-o", "yaml"]);
        format!(
            "gateway log:\n{out}\ngateway pods:\n{}\nnode log:\n{}",
            String::from_utf8_lossy(&status.stdout),
            node.log()
        )
    };
    eventually(Duration::from_secs(120), || product_page(&client, &gateway))
        .await
        .with_context(gateway_log)?;

    // `kubectl logs POD -c istio-proxy`: the API server reaches the node's log endpoint.
    let productpage = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "productpage")
        .and_then(|p| p["metadata"]["name"].as_str())
        .context("no productpage pod")?;
    let logs = kube.kubectl_ok(&["logs", productpage, "-c", "istio-proxy"])?;
    ensure!(
        logs.contains("connected to the control plane"),
        "the sidecar's log: {logs}"
    );

    // The seeds' request routing: every reviews request to v3 (red stars).
    kube.kubectl_ok(&[
        "apply",
        "-f",
        &bookinfo
            .join("networking/virtual-service-reviews-v3.yaml")
            .display()
            .to_string(),
    ])?;
    eventually(Duration::from_secs(60), || async {
        for _ in 0..5 {
            let page = product_page(&client, &gateway).await?;
            ensure!(
                page.contains("reviews-v3") && page.contains("<font color=\"red\">"),
                "not v3's red stars yet: {page:.2000}"
            );
        }
        Ok(())
    })
    .await?;

    Ok(pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_runs_on_trellis_node_and_routing_applied_by_kubectl_takes_effect() -> Result<()> {
    if e2e::node::skipped(&[])? {
        return Ok(());
    }
    let Some(kube) = Kube::start("kube-node")? else {
        return Ok(());
    };
    let block = kube.block;
    let state = tempfile::tempdir()?;
    let node_ip = format!("10.{block}.0.1");

    let mut node = e2e::node::start(&kube, NODE, state.path())?;
    let ready = eventually(Duration::from_secs(60), || async {
        let n = json_of(&kube, &["get", "node", NODE])?;
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ensure!(ready, "node not Ready: {}", n["status"]);
        Ok(n)
    })
    .await
    .with_context(|| node.log())?;
    assert_eq!(ready["spec"]["podCIDR"], format!("10.{block}.0.0/16"));
    // The Lease is the node's heartbeat, renewed apart from its status: it
    // may land just after the node turns Ready.
    eventually(Duration::from_secs(30), || async {
        json_of(&kube, &["get", "lease", "-n", "kube-node-lease", NODE])
    })
    .await
    .context("the node's Lease")?;

    // The control plane, its discovery port on the node's address.
    let mesh_config = state.path().join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        "defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\n",
    )?;
    let ip = format!("127.{block}.0.1");
    let _trellisd = Process::start(
        Command::new(bin("trellisd"))
            .arg("--config-dir")
            .arg(state.path().join("config"))
            .arg("--ca-dir")
            .arg(state.path().join("ca"))
            .arg("--mesh-config")
            .arg(&mesh_config)
            .args(["--xds-addr", &format!("{node_ip}:15010")])
            .args(["--http-addr", &format!("{ip}:15014")])
            .args(["--webhook-addr", &format!("{ip}:15017")])
            .args([
                "--injector-discovery-address",
                &format!("https://{node_ip}:15012"),
            ])
            .arg("--kubeconfig")
            .arg(&kube.kubeconfig),
        state.path().join("trellisd.log"),
    )?;
    kube.apply(&webhook_configurations(&format!("https://{ip}:15017")))?;
    // The leader patches the injector's caBundle in: until then the API
    // server cannot call it.
    eventually(Duration::from_secs(60), || async {
        let mwc = json_of(
            &kube,
            &[
                "get",
                "mutatingwebhookconfiguration",
                "istio-sidecar-injector",
            ],
        )?;
        ensure!(
            mwc["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|b| !b.is_empty()),
            "no caBundle yet"
        );
        Ok(())
    })
    .await?;
    kube.apply(&ingress_gateway(&format!("https://{node_ip}:15012"))?)?;

    let pods = bookinfo_workflow(&kube, &node, state.path()).await?;

    // A deleted pod is stopped, its namespace removed, and it is gone.
    let victim = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "ratings")
        .and_then(|p| p["metadata"]["name"].as_str())
        .context("no ratings pod")?
        .to_string();
    let netns = format!("trellis-{block}-{victim}.{}", kube.namespace);
    ensure!(leftovers(block)?.contains(&netns), "no namespace {netns}");
    kube.kubectl_ok(&["delete", "pod", &victim, "--wait=true", "--timeout=60s"])?;
    ensure!(
        !leftovers(block)?.contains(&netns),
        "{netns} is still there after the pod was deleted"
    );

    // Stopping the node removes every namespace and link it made.
    let status = node.stop()?;
    assert!(
        status.success(),
        "trellis node exited {status}: {}",
        node.log()
    );
    assert_eq!(leftovers(block)?, Vec::<String>::new(), "{}", node.log());
    Ok(())
}

/// The seeds' workflow with the control plane installed as they write it:
/// `trellis install -f` the seed's IstioOperator runs trellisd and the
/// gateways as pods on `trellis node`, which gives its pods the cluster's
/// Services as kube-proxy and cluster DNS would (trellisd reaches the API
/// server through the `kubernetes` Service with its service account; the
/// sidecars and gateways reach `istiod.istio-system.svc`; the API server
/// calls the webhooks behind the `istiod` Service). Then Bookinfo as in
/// the other test, and `trellis uninstall` leaves no pod and no network
/// namespace of the control plane behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trellis_install_runs_the_control_plane_on_trellis_node() -> Result<()> {
    if e2e::node::skipped(&[])? {
        return Ok(());
    }
    let Some(kube) = Kube::start("kube-node-install")? else {
        return Ok(());
    };
    let block = kube.block;
    let state = tempfile::tempdir()?;
    let mut node = e2e::node::start(&kube, NODE, state.path())?;

    let seed =
        repo_root().join("../shared/seeds/yaml/002-00-IstioOperator-istio-control-plane.yaml");
    let out = Command::new(bin("trellis"))
        .arg("--kubeconfig")
        .arg(&kube.kubeconfig)
        .args(["install", "-y", "--readiness-timeout", "120s", "-f"])
        .arg(&seed)
        .output()
        .context("trellis install")?;
    ensure!(
        out.status.success(),
        "trellis install -f {}: {}{}\nistio-system:\n{}\nnode log:\n{}",
        seed.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(
            &kube
                .kubectl(&["get", "pods", "-n", "istio-system", "-o", "yaml"])
                .stdout
        ),
        node.log() + &container_logs(&state.path().join("node/logs"), "istio-system.")
    );
    // trellisd is a pod of the node, not a process of the test.
    let istiod = json_of(
        &kube,
        &["get", "pods", "-n", "istio-system", "-l", "app=istiod"],
    )?;
    let istiod = &istiod["items"][0];
    assert_eq!(istiod["spec"]["nodeName"], NODE, "{istiod}");
    let istiod_ip = istiod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(istiod_ip.starts_with(&format!("10.{block}.")), "{istiod}");

    let pods = bookinfo_workflow(&kube, &node, state.path()).await?;
    // The sidecars found the control plane by its Service's name.
    let productpage = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "productpage")
        .context("no productpage pod")?;
    let proxy = productpage["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            productpage["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .find(|c| c["name"] == "istio-proxy")
        .context("no istio-proxy container")?;
    assert!(
        proxy.to_string().contains("istiod.istio-system.svc:15012"),
        "the sidecar's discovery address: {proxy}"
    );

    // Uninstalled, the control plane's pods and their namespaces are gone.
    let out = Command::new(bin("trellis"))
        .arg("--kubeconfig")
        .arg(&kube.kubeconfig)
        .args(["uninstall", "-y", "--purge"])
        .output()
        .context("trellis uninstall")?;
    ensure!(
        out.status.success(),
        "trellis uninstall: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(120), || async {
        let left: Vec<String> = leftovers(block)?
            .into_iter()
            .filter(|n| n.ends_with(".istio-system"))
            .collect();
        ensure!(left.is_empty(), "still there: {left:?}");
        let pods = kube.kubectl(&["get", "pods", "-n", "istio-system", "-o", "name"]);
        let pods = String::from_utf8_lossy(&pods.stdout).trim().to_string();
        ensure!(pods.is_empty(), "pods still in istio-system: {pods}");
        let objects = kube.kubectl_ok(&[
            "get",
            "deploy,rs,svc,cm,sa,mutatingwebhookconfigurations,validatingwebhookconfigurations,clusterroles,clusterrolebindings",
            "-A",
            "-l",
            "trellis.io/install",
            "-o",
            "name",
        ])?;
        ensure!(objects.trim().is_empty(), "left behind: {objects}");
        Ok(())
    })
    .await
    .with_context(|| node.log())?;

    let status = node.stop()?;
    assert!(
        status.success(),
        "trellis node exited {status}: {}",
        node.log()
    );
    assert_eq!(leftovers(block)?, Vec::<String>::new(), "{}", node.log());
    Ok(())
}

/// Probes as a kubelet runs them on `trellis node`: a container whose
/// liveness probe keeps failing is restarted (its restartCount grows), one
/// whose liveness probe passes is left alone, and readiness and startup
/// gate Ready. No sidecar here: the node probes the applications itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_liveness_probes_restart_the_container() -> Result<()> {
    if e2e::node::skipped(&[])? {
        return Ok(());
    }
    let Some(kube) = Kube::start("node-probes")? else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let mut node = e2e::node::start(&kube, NODE, state.path())?;
    let pod = |name: &str, liveness: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: details
    image: examples-bookinfo-details-v1
    ports: [{{containerPort: 9080}}]
    resources: {{requests: {{cpu: 50m, memory: 32Mi}}, limits: {{cpu: 500m, memory: 256Mi}}}}
    startupProbe: {{tcpSocket: {{port: 9080}}, periodSeconds: 1, failureThreshold: 30}}
    readinessProbe: {{httpGet: {{path: /health, port: 9080}}, periodSeconds: 1}}
    livenessProbe: {{httpGet: {{path: {liveness}, port: 9080}}, periodSeconds: 1, failureThreshold: 2}}
"#
        )
    };
    // The namespace's `default` service account comes soon after it.
    // A container that ignores SIGTERM is killed after the grace period.
    let stubborn = r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: sh
    command: [sh, -c, "trap '' TERM; while true; do sleep 1; done"]
    livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 1}
"#;
    eventually(Duration::from_secs(30), || async {
        kube.apply(
            &(pod("live", "/health") + "---" + &pod("dying", "/no-such-path") + "---" + stubborn),
        )
    })
    .await?;

    let restart_count = |p: &Value| p["status"]["containerStatuses"][0]["restartCount"].as_u64();
    let (live, dying, stubborn) = eventually(Duration::from_secs(120), || async {
        let live = json_of(&kube, &["get", "pod", "live"])?;
        let dying = json_of(&kube, &["get", "pod", "dying"])?;
        ensure!(
            restart_count(&dying) >= Some(2),
            "not restarted twice yet: {}",
            dying["status"]
        );
        let stubborn = json_of(&kube, &["get", "pod", "stubborn"])?;
        ensure!(
            restart_count(&stubborn) >= Some(1),
            "stubborn not restarted yet: {}",
            stubborn["status"]
        );
        ensure!(
            live["status"]["containerStatuses"][0]["ready"] == true,
            "live not ready: {}",
            live["status"]
        );
        Ok((live, dying, stubborn))
    })
    .await
    .with_context(|| node.log())?;
    // 404 from /no-such-path: restarted over and over; /health: never.
    assert_eq!(restart_count(&live), Some(0), "{}", live["status"]);
    assert!(restart_count(&dying) >= Some(2), "{}", dying["status"]);
    // How the previous run ended, as a kubelet reports it after a restart:
    // ended by a signal, 128 + SIGKILL after the grace period (or SIGTERM,
    // when the probe failed before the shell set its trap).
    let last = |p: &Value| p["status"]["containerStatuses"][0]["lastState"]["terminated"].clone();
    let killed = last(&stubborn);
    assert!(
        killed["exitCode"] == 128 + 9 || killed["exitCode"] == 128 + 15,
        "{}",
        stubborn["status"]
    );
    assert_eq!(killed["reason"], "Error", "{}", stubborn["status"]);
    let ended = last(&dying);
    let code = ended["exitCode"]
        .as_i64()
        .with_context(|| format!("no lastState: {}", dying["status"]))?;
    assert_eq!(
        ended["reason"],
        if code == 0 { "Completed" } else { "Error" },
        "{ended}"
    );
    for t in [&killed, &ended] {
        let (started, finished) = (t["startedAt"].as_str(), t["finishedAt"].as_str());
        assert!(
            started.is_some_and(|s| s.ends_with('Z')) && started <= finished,
            "{t}"
        );
    }
    assert_eq!(
        live["status"]["containerStatuses"][0]["lastState"],
        json!({}),
        "{}",
        live["status"]
    );
    // What the container was given is in its status, as a kubelet reports it.
    let given = &live["status"]["containerStatuses"][0];
    assert_eq!(
        given["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}),
        "{given}"
    );
    assert_eq!(
        given["allocatedResources"],
        json!({"cpu": "50m", "memory": "32Mi"}),
        "{given}"
    );
    let log = node.log();
    assert!(
        log.contains("container failed its liveness probe; restarting it"),
        "{log}"
    );
    assert!(log.contains("HTTP 404"), "{log}");
    assert!(
        log.contains("still running 1 s after SIGTERM; killing it"),
        "{log}"
    );
    node.stop()?;
    Ok(())
}
