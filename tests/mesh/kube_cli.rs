//! The CLI against a mesh on a cluster, as kubectl users work:
//! `trellis analyze -k` on the live cluster (`-n`, `-A`, `--context`,
//! `--kubeconfig`, `KUBECONFIG`), and `trellis proxy-status`/`proxy-config`
//! reaching trellisd's debug API through the API server's service proxy,
//! and `trellis get` reading the cluster as kubectl does.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::kube::{Kube, Proxy, ROUTES, Trellisd, to_a_missing_subset};
use e2e::{bin, cli_env, eventually};

/// `trellis ARGS` with a private home (no local mesh to fall back on) and
/// `env` added.
fn trellis(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let home = tempfile::tempdir()?;
    let mut cmd = Command::new(bin("trellis"));
    cmd.args(args)
        .envs(cli_env(home.path()))
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_k_reports_on_the_live_cluster_as_kubectl_users_expect() -> Result<()> {
    let Some(kube) = Kube::start("analyze-live")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.kubectl_ok(&["create", "namespace", "other-team"])?;
    kube.apply(&to_a_missing_subset(&ns))?;
    kube.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: {ns}}}
spec:
  hosts: [broken.example.com]
  http:
  - route:
    - destination: {{host: reviews}}
      weight: -5
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: stray, namespace: other-team}}
spec:
  hosts: [stray.example.com]
  http:
  - route:
    - destination: {{host: nothing-here}}
"#
    ))?;
    let kubeconfig = kube.kubeconfig.display().to_string();
    let mine = format!("(VirtualService to-nowhere.{ns})");
    let invalid = format!("Error [IST0106] (VirtualService broken.{ns})");
    let theirs = "(VirtualService stray.other-team)";

    // The context's namespace by default.
    let out = trellis(&["--kubeconfig", &kubeconfig, "analyze", "-k"], &[])?;
    let all = text(&out);
    ensure!(out.status.code() == Some(79), "issues found: {all}");
    ensure!(
        all.contains(&format!("Error [IST0101] {mine} Referenced host+subset in destinationrule not found: \"reviews+v9\""))
            && all.contains(&invalid)
            && all.contains("weight -5 must not be negative")
            && !all.contains(theirs)
            && all.contains(&format!("when analyzing namespace: {ns}")),
        "{all}"
    );
    // -n, -A.
    let out = trellis(
        &[
            "--kubeconfig",
            &kubeconfig,
            "analyze",
            "-k",
            "-n",
            "other-team",
        ],
        &[],
    )?;
    let all = text(&out);
    ensure!(
        all.contains(&format!(
            "Error [IST0101] {theirs} Referenced host not found: \"nothing-here\""
        )) && !all.contains(&mine)
            && all.contains("namespace: other-team"),
        "{all}"
    );
    let out = trellis(
        &[
            "--kubeconfig",
            &kubeconfig,
            "analyze",
            "-k",
            "-A",
            "-o",
            "json",
        ],
        &[],
    )?;
    let all = text(&out);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| all.clone())?;
    let origins: Vec<&str> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["origin"].as_str())
        .collect();
    for origin in [
        format!("VirtualService to-nowhere.{ns}"),
        format!("VirtualService broken.{ns}"),
        "VirtualService stray.other-team".to_string(),
    ] {
        ensure!(origins.contains(&origin.as_str()), "{origin} in {all}");
    }
    // --context, with the kubeconfig from KUBECONFIG as kubectl reads it.
    kube.kubectl_ok(&[
        "config",
        "set-context",
        "other",
        "--cluster=test",
        "--user=admin",
        "--namespace=other-team",
    ])?;
    let out = trellis(
        &["--context", "other", "analyze", "-k"],
        &[("KUBECONFIG", &kubeconfig)],
    )?;
    let all = text(&out);
    ensure!(
        out.status.code() == Some(79) && all.contains(theirs) && !all.contains(&mine),
        "{all}"
    );
    // A file applied over the cluster: the fixed object replaces the stored one.
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("fix.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: {ns}}}\nspec:\n  host: reviews\n  subsets: [{{name: v9, labels: {{version: v9}}}}]\n"
        ),
    )?;
    let fix = dir.path().join("fix.yaml").display().to_string();
    let out = trellis(&["--kubeconfig", &kubeconfig, "analyze", "-k", &fix], &[])?;
    let all = text(&out);
    ensure!(!all.contains(&mine) && all.contains(&invalid), "{all}");
    Ok(())
}

/// A veth pair whose host end holds `10.<block>.254.1`, its peer in a
/// network namespace made for the test: an address of this host that is
/// not loopback, which the API server proxies to (it refuses loopback
/// endpoints). Removed with the namespace on drop.
pub(crate) struct HostAddress {
    netns: String,
    pub(crate) address: String,
}

impl HostAddress {
    pub(crate) fn add(block: u8) -> Result<HostAddress> {
        let netns = format!("trellis-kube-{block}");
        let host_end = format!("tk{block}");
        let ip = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        // Left over by a killed run of this test on this block.
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns])?;
        let address = HostAddress {
            netns: netns.clone(),
            address: format!("10.{block}.254.1"),
        };
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "peer", "netns", &netns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", address.address),
            "dev",
            &host_end,
        ])?;
        ip(&["link", "set", &host_end, "up"])?;
        Ok(address)
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair, both ends.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_config_reach_trellisd_through_the_api_server() -> Result<()> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!(
            "SKIPPED: needs root (a veth pair: the API server proxies to no loopback address)"
        );
        return Ok(());
    }
    let Some(kube) = Kube::start("proxy-status-kube")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    let host = HostAddress::add(kube.block)?;
    let addr = &host.address;
    let http = format!("{addr}:15014");
    let trellisd = Trellisd::replica(&kube, 0, &["--http-addr", &http])?;
    // trellisd as the `istiod` Service in istio-system: its pod at that
    // address (no kubelet here: the address is set in its status), and the
    // Endpoints the API server's service proxy reads.
    eventually(Duration::from_secs(30), || async {
        kube.apply(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: istiod-0, namespace: istio-system, labels: {app: istiod}}
spec:
  containers: [{name: discovery, image: trellisd}]
"#,
        )
    })
    .await?;
    kube.set_pod_ip("istiod-0", "istio-system", addr)?;
    kube.apply(&format!(
        r#"
apiVersion: v1
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
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-route, namespace: {ns}}}
spec:
  hosts: [reviews.example.com]
  http:
  - route:
    - destination: {{host: reviews.example.com}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: {ns}}}
spec:
  hosts: [reviews.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
"#
    ))?;
    let proxy = Proxy::connect(&kube, &trellisd, "client-1", &ns, "10.9.0.1").await?;
    proxy
        .until(ROUTES, "the VirtualService", |d| {
            d.contains("reviews-route")
        })
        .await
        .with_context(|| trellisd.log())?;

    let kubeconfig = kube.kubeconfig.display().to_string();
    let pod = format!("client-1.{ns}");
    let status = eventually(Duration::from_secs(30), || async {
        let out = trellis(&["--kubeconfig", &kubeconfig, "proxy-status"], &[])?;
        let all = text(&out);
        ensure!(
            out.status.success() && all.contains(&pod) && all.contains("SYNCED"),
            "{all}"
        );
        Ok(all)
    })
    .await
    .with_context(|| trellisd.log())?;
    ensure!(!status.contains("NACK"), "{status}");
    // describe pod asks the same control plane, the same way, for the proxy's sync.
    let out = trellis(
        &["--kubeconfig", &kubeconfig, "describe", "pod", "client-1"],
        &[],
    )?;
    let all = text(&out);
    ensure!(
        out.status.success() && all.contains("Proxy: connected and SYNCED"),
        "{all}"
    );
    let out = trellis(
        &[
            "--kubeconfig",
            &kubeconfig,
            "proxy-config",
            "routes",
            &pod,
            "-o",
            "json",
        ],
        &[],
    )?;
    let all = text(&out);
    ensure!(
        out.status.success()
            && all.contains("reviews-route")
            && all.contains("reviews.example.com"),
        "{all}"
    );
    // Another control-plane namespace: nothing there, and it says so.
    let out = trellis(
        &[
            "--kubeconfig",
            &kubeconfig,
            "-i",
            "elsewhere",
            "proxy-status",
        ],
        &[],
    )?;
    ensure!(!out.status.success(), "{}", text(&out));
    // Changing config through it is refused: the cluster's config is kubectl's.
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("x.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    )?;
    let out = trellis(
        &[
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "-f",
            &dir.path().join("x.yaml").display().to_string(),
        ],
        &[],
    )?;
    ensure!(
        !out.status.success() && text(&out).contains("kubectl apply"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// `trellis get` with `--kubeconfig` reads the cluster's API server as
/// kubectl does (no trellisd runs here), in the format `trellis get` has
/// against a mesh: Istio kinds, `pods` with kubectl's columns, `-o yaml`,
/// a Secret's values redacted, and a name that is not there an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reads_the_cluster_as_kubectl_does() -> Result<()> {
    let Some(kube) = Kube::start("get-cluster")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    let objects = format!(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: reviews-route, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sleep, namespace: {ns}}}
spec:
  containers: [{{name: sleep, image: curl}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{password: hunter2}}
"#
    );
    // A new namespace's `default` service account, which the Pod needs,
    // comes from the controller manager shortly after the namespace.
    eventually(Duration::from_secs(30), || async { kube.apply(&objects) }).await?;
    let kubeconfig = kube.kubeconfig.display().to_string();
    let get = |args: &[&str]| -> Result<String> {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["--kubeconfig", &kubeconfig]);
        let out = trellis(&all, &[])?;
        ensure!(
            out.status.success(),
            "trellis {}: {}",
            all.join(" "),
            text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let vs = get(&["vs", "-n", &ns])?;
    ensure!(
        vs.lines()
            .next()
            .is_some_and(|h| h.split_whitespace().eq(["NAMESPACE", "NAME"]))
            && vs
                .lines()
                .any(|l| l.split_whitespace().eq([ns.as_str(), "reviews-route"])),
        "{vs}"
    );
    let all = get(&["virtualservices", "-A"])?;
    ensure!(all.contains("reviews-route"), "{all}");
    let pods = get(&["pods", "-n", &ns])?;
    let header: Vec<&str> = pods
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "IP"],
        "{pods}"
    );
    // No nodes: the pod is never scheduled.
    ensure!(
        pods.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 4 && cols[..2] == [ns.as_str(), "sleep"] && cols[3] == "Pending"
        }),
        "{pods}"
    );
    let yaml = get(&["vs", "reviews-route", "-n", &ns, "-o", "yaml"])?;
    ensure!(
        yaml.contains("kind: List")
            && yaml.contains("apiVersion: networking.istio.io/v1")
            && yaml.contains("host: reviews")
            && !yaml.contains("managedFields"),
        "{yaml}"
    );
    let secret = get(&["secret", "creds", "-n", &ns, "-o", "json"])?;
    ensure!(
        secret.contains("[redacted] (7 bytes)") && !secret.contains("aHVudGVyMg"),
        "{secret}"
    );
    let missing = trellis(
        &["get", "vs", "nope", "-n", &ns, "--kubeconfig", &kubeconfig],
        &[],
    )?;
    ensure!(
        !missing.status.success() && text(&missing).contains("\"nope\" not found"),
        "{}",
        text(&missing)
    );
    Ok(())
}

/// `trellis describe pod --kubeconfig`: the cluster's resources, read as
/// kubectl reads them, described as on the local mesh; with no control
/// plane to ask, the proxy's sync state is `unknown`, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_on_the_cluster() -> Result<()> {
    let Some(kube) = Kube::start("describe-kube")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    // The namespace's `default` service account comes soon after it.
    eventually(Duration::from_secs(30), || async {
        kube.apply(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2-0
  labels: {app: reviews, version: v2}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  containers: [{name: reviews, image: reviews, ports: [{containerPort: 9080}]}]
"#,
        )
    })
    .await?;
    kube.set_pod_ip("reviews-v2-0", &ns, "10.9.0.2")?;
    kube.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"#,
    )?;
    let kubeconfig = kube.kubeconfig.display().to_string();
    // The context's namespace is the test's: no -n needed.
    let describe = || {
        trellis(
            &[
                "--kubeconfig",
                &kubeconfig,
                "describe",
                "pod",
                "reviews-v2-0",
            ],
            &[],
        )
    };
    // No kubelet runs the pod (it has no node): kube-controller-manager's
    // EndpointSlice leaves it out, so it is no endpoint — the compiler
    // sends no client to it — and describe says so.
    let all = eventually(Duration::from_secs(30), || async {
        let all = text(&describe()?);
        ensure!(
            all.contains("but its EndpointSlices do not list the pod as a ready endpoint"),
            "{all}"
        );
        Ok(all)
    })
    .await?;
    for expected in [
        &format!("Service: reviews.{ns}.svc.cluster.local"),
        "Matching subsets: v2",
        "Port: http 9080/HTTP targets no port of this pod",
        &format!("reviews.{ns}.svc.cluster.local 9080 subset v2: 20%\n"),
        &format!(
            "Workload mTLS mode: STRICT (PeerAuthentication {ns}/default: the namespace's, no selector)"
        ),
        "Proxy: unknown: cannot reach the control plane through the Kubernetes API server's proxy",
    ] {
        ensure!(all.contains(expected), "{expected:?} not in:\n{all}");
    }
    Ok(())
}
