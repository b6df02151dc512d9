//! Mutual TLS between sidecars, end to end: every workload gets a certificate
//! for its own identity from the control plane, auto mTLS secures every hop
//! to a workload with a sidecar, PeerAuthentication STRICT refuses plaintext,
//! the callee learns the caller's SPIFFE id, and the wire shows no HTTP.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Mesh, eventually, http};
use serde_json::Value;

fn echo(name: &str, sidecar: bool) -> String {
    let annotations = if sidecar {
        ""
    } else {
        "\n      annotations: {sidecar.istio.io/inject: \"false\"}"
    };
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
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotations}
    spec:
      serviceAccountName: {name}
      containers:
      - name: echo
        image: trellis-sample
        command: [trellis-sample]
        args: [echo, --service, {name}, --port, \"8080\"]
        ports: [{{containerPort: 8080}}]
"
    )
}

fn peer_authentication(namespace: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}
"
    )
}

fn write_mesh(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A pod's addresses: where its sidecar listens, where its app listens, its admin port.
struct Pod {
    name: String,
    pod_ip: String,
    app_ip: String,
    admin: Option<String>,
}

fn pod(mesh: &Mesh, app: &str) -> Result<Pod> {
    let pods = mesh.pods()?;
    let p = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == app)
        .with_context(|| format!("no pod of {app}"))?;
    let pod_ip = p["status"]["podIP"].as_str().context("pod ip")?.to_string();
    let admin = p["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .map(String::from);
    // `up` gives a pod with a sidecar its app address next to the admin port;
    // a pod without one binds its pod IP.
    let app_ip = match &admin {
        Some(a) => a
            .rsplit_once(':')
            .map(|(ip, _)| ip.to_string())
            .context("admin address")?,
        None => pod_ip.clone(),
    };
    Ok(Pod {
        name: p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        pod_ip,
        app_ip,
        admin,
    })
}

/// `from`'s application calls `target` (a mesh URL) through its own sidecar;
/// the callee's echo reply.
async fn call_through_mesh(from: &Pod, target: &str) -> Result<Value> {
    let url = format!("http://{}:8080/?call={}", from.app_ip, target);
    let reply: Value = http().get(url).send().await?.json().await?;
    let upstream = &reply["upstream"];
    ensure!(upstream["status"] == 200, "the call failed: {upstream}");
    Ok(upstream["body"].clone())
}

async fn plaintext(pod: &Pod) -> Result<Value> {
    let resp = http()
        .get(format!("http://{}:8080/plain", pod.pod_ip))
        .send()
        .await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    Ok(resp.json().await?)
}

fn identity(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

fn proxy_log(mesh: &Mesh, pod: &Pod) -> String {
    let path = mesh
        .logs()
        .join(format!("default.{}.istio-proxy.log", pod.name));
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_by_default_then_strict_applied_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_mesh(
        dir.path(),
        &[
            ("a.yaml", echo("echo-a", true)),
            ("b.yaml", echo("echo-b", true)),
        ],
    )?;
    let mesh = Mesh::up(dir.path())?;
    let (a, b) = (pod(&mesh, "echo-a")?, pod(&mesh, "echo-b")?);

    // PERMISSIVE (no PeerAuthentication): mesh calls are mTLS, and the callee
    // sees who called; plaintext to the same port works too.
    let body = eventually(Duration::from_secs(30), || {
        call_through_mesh(&a, "http://echo-b:8080/")
    })
    .await?;
    assert_eq!(body["peer_identity"], identity("echo-a"), "{body}");
    let plain = eventually(Duration::from_secs(10), || plaintext(&b)).await?;
    assert_eq!(
        plain["peer_identity"],
        Value::Null,
        "a plaintext caller has no identity: {plain}"
    );
    // A caller cannot forge its identity in plaintext: its own header is dropped.
    let forged: Value = http()
        .get(format!("http://{}:8080/", b.pod_ip))
        .header(
            "x-forwarded-client-cert",
            format!("URI={}", identity("admin")),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(forged["peer_identity"], Value::Null, "{forged}");

    // Mesh-wide STRICT, applied while the mesh runs: plaintext is refused.
    let strict = dir.path().join("strict.yaml");
    std::fs::write(&strict, peer_authentication("istio-system", "STRICT"))?;
    let out = mesh.trellis(&["apply", "-f", &strict.display().to_string()]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), || async {
        match plaintext(&b).await {
            Ok(v) => bail!("plaintext still accepted: {v}"),
            Err(_) => Ok(()),
        }
    })
    .await?;
    let body = call_through_mesh(&a, "http://echo-b:8080/").await?;
    assert_eq!(body["peer_identity"], identity("echo-a"), "{body}");
    let log = proxy_log(&mesh, &b);
    assert!(
        log.contains("PeerAuthentication is STRICT") && log.contains("inbound connection refused"),
        "the refusal is logged with its reason: {log}"
    );
    Ok(())
}

/// `tcpdump -A` on loopback for traffic to `ip:port`, until stopped.
struct Capture {
    child: Child,
    out: std::path::PathBuf,
}

impl Capture {
    fn start(ip: &str, port: u16, out: std::path::PathBuf) -> Result<Capture> {
        let file = std::fs::File::create(&out)?;
        let log_path = out.with_extension("log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("tcpdump")
            // Immediate mode: packets are handed over at once, not in blocks
            // that a stop could leave unread.
            .args(["-i", "lo", "-n", "-A", "-U", "-l", "--immediate-mode"])
            .args(["host", ip, "and", "tcp", "port", &port.to_string()])
            .stdout(file)
            .stderr(log)
            .spawn()
            .context("tcpdump is missing: scripts/test.sh installs it (apt-get install tcpdump)")?;
        // tcpdump says "listening on lo" once it captures.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            if said.contains("listening on") {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "tcpdump did not start: {said}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Capture { child, out })
    }

    fn stop(mut self) -> Result<String> {
        // What is in flight on loopback is seen within moments.
        std::thread::sleep(Duration::from_millis(500));
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        self.child.wait()?;
        // -A prints bytes as they are, printable or not.
        Ok(String::from_utf8_lossy(&std::fs::read(&self.out)?).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_namespace_refuses_plaintext_and_the_wire_shows_no_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_mesh(
        dir.path(),
        &[
            ("a.yaml", echo("echo-a", true)),
            ("b.yaml", echo("echo-b", true)),
            ("c.yaml", echo("echo-c", false)),
            ("strict.yaml", peer_authentication("default", "STRICT")),
        ],
    )?;
    let mesh = Mesh::up(dir.path())?;
    let (a, b, c) = (
        pod(&mesh, "echo-a")?,
        pod(&mesh, "echo-b")?,
        pod(&mesh, "echo-c")?,
    );

    let body = eventually(Duration::from_secs(30), || {
        call_through_mesh(&a, "http://echo-b:8080/")
    })
    .await?;
    assert_eq!(body["peer_identity"], identity("echo-a"), "{body}");
    let xfcc = body["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.starts_with(&format!("By={};Hash=", identity("echo-b")))
            && xfcc.ends_with(&format!("URI={}", identity("echo-a"))),
        "Envoy's XFCC shape: {xfcc}"
    );

    // STRICT: a plain request straight to the workload's port is refused.
    let refused = plaintext(&b).await;
    assert!(
        refused.is_err(),
        "plaintext accepted under STRICT: {refused:?}"
    );
    let log = proxy_log(&mesh, &b);
    assert!(
        log.contains("inbound connection refused") && log.contains("PeerAuthentication is STRICT"),
        "{log}"
    );

    // Auto mTLS: a workload without a sidecar is called in plaintext, and answers.
    let body = call_through_mesh(&a, "http://echo-c:8080/").await?;
    assert_eq!(body["peer_identity"], Value::Null, "{body}");
    assert!(c.admin.is_none(), "echo-c runs without a sidecar");

    // On the wire between the two sidecars: TLS, no HTTP.
    let capture = Capture::start(&b.pod_ip, 8080, dir.path().join("capture.txt"))?;
    for i in 0..5 {
        call_through_mesh(&a, &format!("http://echo-b:8080/secret-{i}")).await?;
    }
    let seen = capture.stop()?;
    assert!(
        seen.contains(&b.pod_ip),
        "the capture saw the meshed hop: {seen:.2000}"
    );
    for plain in ["GET /", "HTTP/1.1", "secret-", "x-forwarded"] {
        assert!(
            !seen.contains(plain),
            "{plain:?} in cleartext on the wire: {seen:.4000}"
        );
    }

    // The proxy's certificate, as operators see it (never the key).
    let out = mesh.trellis(&["proxy-config", "secrets", &format!("{}.default", b.name)]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains(&identity("echo-b"))
            && table.contains("NOT AFTER")
            && table.contains("ROOTCA"),
        "{table}"
    );
    let out = mesh.trellis(&[
        "proxy-config",
        "secrets",
        &format!("{}.default", b.name),
        "-o",
        "json",
    ]);
    let dump: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(dump["workload"]["spiffe_id"], identity("echo-b"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    Ok(())
}
