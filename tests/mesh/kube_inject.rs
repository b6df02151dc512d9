//! Sidecar injection and config validation on a real API server: the API
//! server calls trellisd's admission webhooks (TLS, the caBundle patched
//! in by the leader), the pods kube-controller-manager makes for a
//! Deployment come out injected, the opt-outs are honoured, a broken
//! VirtualService is refused by `kubectl apply` with its field path, and
//! with trellisd gone pods in an injected namespace are not created
//! unmeshed. `trellis kube-inject` output is accepted by the API server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::kube::{Kube, Trellisd, webhook_configurations};
use e2e::{bin, eventually, repo_root};
use serde_json::Value;

fn deployment(name: &str, namespace: &str, pod_labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, version: v1{pod_labels}}}
    spec:
      containers:
      - name: app
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.2
        ports: [{{name: http, containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /health, port: http}}}}
"#
    )
}

/// The pods of `app` in `namespace`, once there are `count`.
async fn pods_of(kube: &Kube, namespace: &str, app: &str, count: usize) -> Result<Vec<Value>> {
    eventually(Duration::from_secs(60), || async {
        let out = kube.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            &format!("app={app}"),
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&out)?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        ensure!(items.len() >= count, "{} pods of {app} so far", items.len());
        Ok(items)
    })
    .await
}

fn names(containers: &Value) -> Vec<String> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_injects_through_trellisd_and_refuses_invalid_config() -> Result<()> {
    let Some(kube) = Kube::start("kube-inject-webhook")? else {
        return Ok(());
    };
    let mut trellisd = Trellisd::with_webhooks(&kube)?;
    let ns = kube.namespace.clone();
    kube.kubectl_ok(&["label", "namespace", &ns, "istio-injection=enabled"])?;
    kube.kubectl_ok(&["create", "namespace", "plain"])?;
    kube.apply(&webhook_configurations(
        trellisd.webhook.as_deref().unwrap_or_default(),
    ))?;

    // The leader trusts its webhooks in: the mesh root as caBundle, and
    // the validator no longer failing open.
    let root = eventually(Duration::from_secs(60), || async {
        std::fs::read_to_string(trellisd.ca_cert()).context("the CA's root")
    })
    .await?;
    eventually(Duration::from_secs(60), || async {
        let out = kube.kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            "istio-sidecar-injector",
            "-o",
            "json",
        ])?;
        let mwc: Value = serde_json::from_str(&out)?;
        for w in mwc["webhooks"].as_array().into_iter().flatten() {
            ensure!(w["clientConfig"]["caBundle"].is_string(), "no caBundle yet");
        }
        let out = kube.kubectl_ok(&[
            "get",
            "validatingwebhookconfiguration",
            "istio-validator-istio-system",
            "-o",
            "json",
        ])?;
        let vwc: Value = serde_json::from_str(&out)?;
        ensure!(
            vwc["webhooks"][0]["failurePolicy"] == "Fail",
            "validator still fails open"
        );
        Ok(())
    })
    .await
    .with_context(|| trellisd.log())?;
    let out = kube.kubectl_ok(&[
        "get",
        "mutatingwebhookconfiguration",
        "istio-sidecar-injector",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ])?;
    ensure!(
        String::from_utf8_lossy(&decode_base64(out.trim())?).trim() == root.trim(),
        "the caBundle is the mesh root"
    );

    // A Deployment in the labelled namespace: kube-controller-manager makes
    // its pods, the API server has trellisd inject them.
    kube.apply(&deployment("details", &ns, ""))?;
    kube.apply(&deployment(
        "optout",
        &ns,
        ", sidecar.istio.io/inject: \"false\"",
    ))?;
    kube.apply(&deployment("elsewhere", "plain", ""))?;
    let pods = pods_of(&kube, &ns, "details", 2)
        .await
        .with_context(|| trellisd.log())?;
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &pod["spec"];
        ensure!(
            names(&spec["initContainers"]) == ["istio-init", "istio-proxy"],
            "{name}: init containers {:?}",
            names(&spec["initContainers"])
        );
        ensure!(
            names(&spec["containers"]) == ["app"],
            "{name}: {:?}",
            names(&spec["containers"])
        );
        let proxy = &spec["initContainers"][1];
        ensure!(
            proxy["restartPolicy"] == "Always",
            "{name}: a native sidecar"
        );
        ensure!(
            proxy["securityContext"]["runAsUser"] == 1337,
            "{name}: UID 1337"
        );
        let init_args = spec["initContainers"][0]["args"].to_string();
        ensure!(init_args.contains("\"iptables\""), "{name}: {init_args}");
        let token = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "istio-token")
            .context("the istio-token volume")?;
        ensure!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca",
            "{name}: {token}"
        );
        let probe = &spec["containers"][0]["readinessProbe"]["httpGet"];
        ensure!(
            probe["path"] == "/app-health/app/readyz" && probe["port"] == 15020,
            "{name}: the app's probe goes through the sidecar: {probe}"
        );
        let ann = &pod["metadata"]["annotations"];
        ensure!(ann["sidecar.istio.io/status"].is_string(), "{name}: {ann}");
        ensure!(
            pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio",
            "{name}: labels"
        );
        let env = proxy["env"].to_string();
        ensure!(
            env.contains("ISTIO_META_WORKLOAD_NAME") && env.contains("\"details\""),
            "{name}: {env}"
        );
    }
    for (namespace, app) in [(ns.as_str(), "optout"), ("plain", "elsewhere")] {
        for pod in pods_of(&kube, namespace, app, 2).await? {
            let spec = &pod["spec"];
            ensure!(
                spec.get("initContainers").is_none() && names(&spec["containers"]) == ["app"],
                "{namespace}/{app}: not injected: {spec}"
            );
        }
    }

    // An invalid VirtualService is refused by kubectl apply, with its field path.
    let vs = |retry_on: &str| {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: details, namespace: {ns}}}
spec:
  hosts: [details]
  http:
  - route: [{{destination: {{host: details}}}}]
    retries: {{attempts: 3, retryOn: "{retry_on}"}}
"#
        )
    };
    let refused = kube
        .apply(&vs("5xx,sometimes"))
        .err()
        .context("an invalid VirtualService was accepted")?;
    let message = format!("{refused:#}");
    ensure!(
        message.contains("denied the request") && message.contains("spec.http[0].retries.retryOn"),
        "kubectl's error names the webhook's refusal and the field: {message}"
    );
    kube.apply(&vs("5xx,connect-failure"))?;

    // trellisd gone: a pod in the injected namespace is not created without
    // its sidecar (failurePolicy Fail), it is not created at all.
    trellisd.stop();
    let out = kube.kubectl(&[
        "run",
        "unmeshed",
        "-n",
        &ns,
        "--image=busybox",
        "--restart=Never",
    ]);
    ensure!(
        !out.status.success(),
        "a pod was created while the injector was down"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("sidecar-injector.istio.io"), "{err}");
    Ok(())
}

fn decode_base64(s: &str) -> Result<Vec<u8>> {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut i| i.write_all(s.as_bytes()));
            child.wait_with_output()
        })?;
    ensure!(out.status.success(), "base64 -d");
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_inject_output_is_accepted_by_the_api_server() -> Result<()> {
    let Some(kube) = Kube::start("kube-inject-offline")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("bookinfo-injected.yaml");
    let bookinfo = repo_root().join("examples/bookinfo/bookinfo.yaml");
    let status = Command::new(bin("trellis"))
        .arg("kube-inject")
        .arg("-f")
        .arg(&bookinfo)
        .arg("-o")
        .arg(&out)
        .status()?;
    ensure!(
        status.success(),
        "trellis kube-inject -f {}",
        bookinfo.display()
    );
    let text = std::fs::read_to_string(&out)?;
    ensure!(
        text.matches("name: istio-proxy").count() == 6,
        "each of Bookinfo's six Deployments gets a sidecar"
    );
    let file = out.display().to_string();
    let applied = kube.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-n",
        &kube.namespace,
        "-f",
        &file,
    ])?;
    ensure!(
        applied.contains("deployment.apps/productpage-v1"),
        "{applied}"
    );
    // A plain-container sidecar is accepted as well.
    let plain = dir.path().join("plain.yaml");
    let status = Command::new(bin("trellis"))
        .args(["kube-inject", "--native-sidecars=false", "-f"])
        .arg(&bookinfo)
        .arg("-o")
        .arg(&plain)
        .status()?;
    ensure!(status.success(), "kube-inject --native-sidecars=false");
    kube.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-n",
        &kube.namespace,
        "-f",
        &plain.display().to_string(),
    ])?;
    Ok(())
}

/// `ip netns exec <ns>` of a command, its output.
fn in_netns(ns: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()?)
}

/// A network namespace of the test's, removed (with what runs in it) on drop.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The status port of `ns`'s sidecar: the HTTP status of `path`, 0 when no answer.
fn status_of(ns: &str, path: &str) -> Result<u16> {
    let out = in_netns(
        ns,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
            &format!("http://127.0.0.1:15020{path}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The containers kube-inject writes run as written: the init container's
/// arguments write capture rules with the real `trellis-proxy iptables`,
/// and the sidecar, started with the injected arguments and environment in
/// the pod's own network namespace, answers the rewritten probes by probing
/// the application itself — and is not ready while it has no certificate.
#[test]
fn injected_containers_run_and_the_sidecar_probes_the_app() -> Result<()> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let tools = ["ip", "iptables-restore", "curl"].iter().all(|t| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    });
    if !root || !tools {
        // scripts/test.sh installs the tools, and CI runs as root.
        eprintln!("SKIPPED: needs root, ip, iptables-restore and curl");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: shop, labels: {app: echo}}
spec:
  containers:
  - name: app
    image: echo
    ports: [{name: http, containerPort: 9080}]
    livenessProbe: {httpGet: {path: /live, port: http}}
    readinessProbe: {tcpSocket: {port: 9080}}
"#,
    )?;
    let out = Command::new(bin("trellis"))
        .args(["kube-inject", "-f"])
        .arg(&pod)
        .output()?;
    ensure!(
        out.status.success(),
        "kube-inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected: Value = serde_yaml_ng::from_str(&String::from_utf8_lossy(&out.stdout))?;
    let spec = &injected["spec"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let init = &spec["initContainers"][0];
    let proxy = &spec["initContainers"][1];
    ensure!(strings(&init["command"]) == ["trellis-proxy"], "{init}");

    let mut ns = Netns {
        name: format!("trellis-inject-{}", std::process::id()),
        children: Vec::new(),
    };
    let added = Command::new("ip")
        .args(["netns", "add", &ns.name])
        .output()?;
    ensure!(
        added.status.success(),
        "ip netns add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    in_netns(&ns.name, &["ip", "link", "set", "lo", "up"])?;

    // The init container, as the kubelet would run it.
    let proxy_bin = bin("trellis-proxy").display().to_string();
    let mut args = vec![proxy_bin.clone()];
    args.extend(strings(&init["args"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let written = in_netns(&ns.name, &args)?;
    ensure!(
        written.status.success(),
        "istio-init {args:?}: {}",
        String::from_utf8_lossy(&written.stderr)
    );
    let rules = in_netns(&ns.name, &["iptables-save", "-t", "nat"])?;
    ensure!(
        String::from_utf8_lossy(&rules.stdout).contains("15001"),
        "the capture rules are in place"
    );

    // The application.
    let app = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin("trellis-sample"))
        .args(["echo", "--port", "9080"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    ns.children.push(app);

    // The sidecar, with the injected arguments and environment; the
    // control plane's address is one where nothing listens, the token a file.
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "not-a-real-token")?;
    let mut sidecar_args = strings(&proxy["args"]);
    for (i, flag) in sidecar_args.clone().iter().enumerate() {
        match flag.as_str() {
            "--xds" => sidecar_args[i + 1] = "http://127.0.0.1:1".into(),
            "--token-file" => sidecar_args[i + 1] = token.display().to_string(),
            _ => {}
        }
    }
    let log = std::fs::File::create(dir.path().join("sidecar.log"))?;
    let mut sidecar = Command::new("ip");
    sidecar
        .args(["netns", "exec", &ns.name, &proxy_bin])
        .args(&sidecar_args)
        .env_clear()
        .env("POD_NAME", "echo")
        .env("POD_NAMESPACE", "shop")
        .env("INSTANCE_IP", "127.0.0.1")
        .env("SERVICE_ACCOUNT", "default")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    for e in proxy["env"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) {
            sidecar.env(name, value);
        }
    }
    ns.children.push(sidecar.spawn()?);
    let sidecar_log =
        || std::fs::read_to_string(dir.path().join("sidecar.log")).unwrap_or_default();

    // The kubelet's rewritten probes, answered by probing the app.
    let live_path = spec["containers"][0]["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ready_path = spec["containers"][0]["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(live_path == "/app-health/app/livez" && ready_path == "/app-health/app/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status_of(&ns.name, &ready_path)? != 200 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the readiness probe through the sidecar never passed: {}",
            sidecar_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        status_of(&ns.name, &live_path)? == 200,
        "liveness: {}",
        sidecar_log()
    );
    ensure!(status_of(&ns.name, "/app-health/other/livez")? == 404);
    // No certificate (no control plane): the sidecar is not ready.
    ensure!(
        status_of(&ns.name, "/healthz/ready")? == 503,
        "{}",
        sidecar_log()
    );
    // The application gone: its probes fail through the sidecar.
    let app = &mut ns.children[0];
    app.kill()?;
    app.wait()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status_of(&ns.name, &ready_path)? != 500 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the probe still passes without the app"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(status_of(&ns.name, &live_path)? == 500);
    Ok(())
}
