//! The control plane as operators rely on it: proxies keep serving while it is
//! down, resynchronise when it returns, and report their sync state.

use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::{Mesh, eventually, http, pids_with_arg, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_a_control_plane_crash_and_config_resyncs() -> Result<()> {
    let root = repo_root();
    let mesh = Mesh::up(&root.join("examples/bookinfo"))?;
    let client = http();
    let page = || async {
        let body = client
            .get(format!("{}/productpage", mesh.gateway))
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            body.contains("Book Details") && !body.contains("Error fetching"),
            "page not whole"
        );
        Ok(body)
    };
    eventually(Duration::from_secs(30), page).await?;

    let status = mesh.trellis(&["proxy-status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        table.matches("SYNCED").count(),
        7 * 4,
        "every proxy synced every type:\n{table}"
    );

    // Kill trellisd: no proxy loses its config, so the page keeps working.
    let xds = format!("127.{}.0.1:15010", mesh.block);
    let pids = pids_with_arg(&xds)
        .into_iter()
        .filter(|p| is_trellisd(*p))
        .collect::<Vec<_>>();
    assert_eq!(pids.len(), 1, "one trellisd serves {xds}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    for _ in 0..20 {
        page().await?;
    }

    // `trellis up` restarts it; a change applied then reaches the proxies.
    let all_v1 = ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"];
    eventually(Duration::from_secs(20), || async {
        for file in all_v1 {
            let path = root.join("examples/bookinfo/networking").join(file);
            let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
            ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(20), || async {
        for _ in 0..5 {
            let body = page().await?;
            ensure!(body.contains("reviews-v1-"), "not yet v1 only");
        }
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(10), || async {
        let out = mesh.trellis(&["proxy-status"]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            table.matches("SYNCED").count() == 7 * 4,
            "not all synced again:\n{table}"
        );
        Ok(())
    })
    .await?;
    Ok(())
}

fn is_trellisd(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("trellisd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_apply_is_refused_and_changes_nothing() -> Result<()> {
    let mesh = Mesh::up(&repo_root().join("examples/bookinfo"))?;
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: good}\nspec: {host: reviews}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subet: v1}\n",
    )?;
    let out = mesh.trellis(&["apply", "-f", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("subet") && stderr.contains("subset"),
        "{stderr}"
    );
    // The valid document in the same file was not stored either.
    let out = mesh.trellis(&["get", "destinationrules", "good"]);
    assert!(
        !out.status.success(),
        "nothing from the refused file was stored"
    );
    let out = mesh.trellis(&["get", "virtualservices", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["bookinfo"],
        "only the demo's own VirtualService"
    );
    Ok(())
}

/// An echo server outside the mesh, on loopback; stopped on drop.
struct External(std::process::Child);

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const EXTERNAL_MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: client}
spec:
  selector: {app: client}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
      - {name: client, image: trellis-sample, args: [echo, --service, client, --port, "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-static}
spec:
  hosts: [echo.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: PORT}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-dns}
spec:
  hosts: [dns.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: PORT}]
  endpoints: [{address: localhost}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entries_route_to_an_external_server_with_virtual_service_rules() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let external = External(
        std::process::Command::new(e2e::bin("trellis-sample"))
            .args(["echo", "--service", "external", "--port", &port.to_string()])
            .env("TRELLIS_BIND_ADDR", "127.0.0.1")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    std::fs::write(
        dir.path().join("mesh-external.yaml"),
        EXTERNAL_MESH.replace("PORT", &port.to_string()),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let ip = mesh
        .pods()?
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "client")
        .and_then(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .expect("client pod");
    let client = http();
    // Asks the meshed client to GET `url` through its sidecar: (status, body) as it saw them.
    let call = |url: String| {
        let client = client.clone();
        let ip = ip.clone();
        async move {
            let body: serde_json::Value = client
                .get(format!("http://{ip}:8080/"))
                .query(&[("call", url.as_str())])
                .send()
                .await?
                .json()
                .await?;
            let upstream = &body["upstream"];
            ensure!(upstream["error"].is_null(), "the call failed: {upstream}");
            Ok((
                upstream["status"].as_u64().unwrap_or(0),
                upstream["body"].clone(),
            ))
        }
    };
    // Neither name resolves on this machine: only the ServiceEntries make them reachable.
    for host in ["echo.external.test", "dns.external.test"] {
        eventually(Duration::from_secs(30), || async {
            let (status, body) = call(format!("http://{host}/")).await?;
            ensure!(
                status == 200 && body["service"] == "external",
                "{host}: {status} {body}"
            );
            Ok(())
        })
        .await?;
    }

    let vs = dir.path().join("vs.yaml");
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: external}\nspec:\n  hosts: [echo.external.test]\n  http:\n  - timeout: 1s\n    route: [{destination: {host: echo.external.test}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: external-dns}\nspec:\n  hosts: [dns.external.test]\n  http:\n  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: dns.external.test}}]\n",
    )?;
    let out = mesh.trellis(&["apply", "-f", &vs.display().to_string()]);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), || async {
        let (status, _) = call("http://echo.external.test/?delay_ms=3000".into()).await?;
        ensure!(status == 504, "timeout not in force: {status}");
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(20), || async {
        let (status, _) = call("http://dns.external.test/".into()).await?;
        ensure!(status == 418, "fault not in force: {status}");
        Ok(())
    })
    .await?;
    // Without the delay the route's timeout does not fire.
    let (status, _) = call("http://echo.external.test/".into()).await?;
    assert_eq!(status, 200);
    drop(external);
    Ok(())
}

/// A proxy receives config only as the workload its bootstrap token proves
/// it is, as istiod authorizes an xDS stream against the caller's identity:
/// no token, or another workload's token, is refused with PermissionDenied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_streams_need_the_workloads_own_token() -> Result<()> {
    use wire::pb::aggregated_discovery_client::AggregatedDiscoveryClient;
    use wire::pb::{DiscoveryRequest, Node};

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("a.yaml"), e2e::echo_workload("echo-a", ""))?;
    std::fs::write(dir.path().join("b.yaml"), e2e::echo_workload("echo-b", ""))?;
    let mesh = Mesh::up(dir.path())?;
    let secret =
        control::bootstrap_token::TokenSecret::load(&mesh.state.path().join("token-secret"))?;
    let xds = mesh.xds()?;

    // The first response of a stream for `node` sending `token`, or the refusal.
    // echo-a's pod: the control plane knows a proxy by the pod it names.
    let pod_a = mesh
        .pods()?
        .into_iter()
        .find(|p| p["metadata"]["labels"]["app"] == "echo-a")
        .and_then(|p| p["metadata"]["name"].as_str().map(String::from))
        .ok_or_else(|| anyhow::anyhow!("no pod of echo-a"))?;
    let first_response = |service_account: &str, token: Option<String>| {
        let node = Node {
            id: format!("{pod_a}.default"),
            pod_name: pod_a.clone(),
            namespace: "default".into(),
            service_account: service_account.into(),
            ..Default::default()
        };
        let xds = xds.clone();
        async move {
            let mut client = AggregatedDiscoveryClient::new(xds.connect().await?);
            let subscribe = DiscoveryRequest {
                node: Some(node),
                type_url: wire::types::ALL[0].to_string(),
                ..Default::default()
            };
            // The stream stays open after the request, as a proxy's does.
            let requests = tokio_stream::StreamExt::chain(
                tokio_stream::iter([subscribe]),
                tokio_stream::pending(),
            );
            let mut request = tonic::Request::new(requests);
            if let Some(token) = token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
            }
            let outcome = match client.stream(request).await {
                Ok(response) => response.into_inner().message().await.map(|m| m.is_some()),
                Err(status) => Err(status),
            };
            anyhow::Ok(outcome)
        }
    };

    let own = first_response("echo-a", Some(secret.token("default", "echo-a"))).await?;
    assert!(
        matches!(own, Ok(true)),
        "echo-a with its own token gets its config: {own:?}"
    );
    let none = first_response("echo-a", None).await?;
    assert_eq!(
        none.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied),
        "no token"
    );
    let stolen = first_response("echo-a", Some(secret.token("default", "echo-b"))).await?;
    let status = stolen.expect_err("echo-b's token claiming to be echo-a");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("echo-b"),
        "the refusal says whose token it was: {}",
        status.message()
    );
    let forged = first_response("echo-a", Some("00".repeat(32))).await?;
    assert_eq!(
        forged.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied),
        "a made-up token"
    );
    Ok(())
}
