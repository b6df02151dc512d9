//! Mutual TLS between sidecars, end to end: every workload gets a certificate
//! for its own identity from the control plane, auto mTLS secures every hop
//! to a workload with a sidecar, PeerAuthentication STRICT refuses plaintext,
//! the callee learns the caller's SPIFFE id, and the wire shows no HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{App, Launch, Mesh, eventually, http};
use serde_json::Value;

mod client_certs;
use client_certs::{ClientCert, foreign_root, mtls_request};

fn echo(name: &str, sidecar: bool) -> String {
    let annotations = if sidecar {
        ""
    } else {
        "\n      annotations: {sidecar.istio.io/inject: \"false\"}"
    };
    e2e::echo_workload(name, annotations)
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
    /// Its application, as the test calls it (in its namespace in namespace mode).
    app: App,
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
        app: mesh.app(p, 8080)?,
        pod_ip,
        app_ip,
        admin,
    })
}

/// `from`'s application calls `target` (a mesh URL) through its own sidecar;
/// the callee's echo reply.
async fn call_through_mesh(from: &Pod, target: &str) -> Result<Value> {
    let (status, body) = from.app.get(&format!("/?call={target}")).await?;
    ensure!(status == 200, "{status} from the caller's app: {body}");
    let reply: Value = serde_json::from_str(&body)?;
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
    permissive_then_strict(false).await
}

/// The same, each pod in its own network namespace: capture brings the
/// calls to the sidecars, and the host is the plaintext client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_by_default_then_strict_applied_live_in_namespaces() -> Result<()> {
    if let Some(why) = e2e::netns_unavailable() {
        eprintln!("skipped: namespace mode needs root, iproute2, iptables, setpriv, curl ({why})");
        return Ok(());
    }
    permissive_then_strict(true).await
}

async fn permissive_then_strict(netns: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_mesh(
        dir.path(),
        &[
            ("a.yaml", echo("echo-a", true)),
            ("b.yaml", echo("echo-b", true)),
        ],
    )?;
    let mesh = Mesh::launch(
        dir.path(),
        Launch {
            netns,
            ..Launch::default()
        },
    )?;
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

/// The proxy's current workload certificate, from its admin `/certs`.
async fn workload_cert(pod: &Pod) -> Result<Value> {
    let admin = pod.admin.as_deref().context("the pod has no sidecar")?;
    let dump: Value = http()
        .get(format!("http://{admin}/certs"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(dump["workload"].is_object(), "no certificate yet: {dump}");
    Ok(dump["workload"].clone())
}

/// Seconds between notBefore and notAfter: the requested TTL plus the CA's
/// backdating for clock skew (both from one clock reading, so exact).
fn lifetime_seconds(cert: &Value) -> Result<i64> {
    let at = |field: &str| -> Result<i64> {
        let text = cert[field]
            .as_str()
            .with_context(|| format!("{field}: {cert}"))?;
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{field}: {text:?}"))?;
        Ok(t.unix_timestamp())
    };
    Ok(at("not_after")? - at("not_before")?)
}

/// Seconds the mesh CA backdates notBefore by (identity::CLOCK_SKEW_ALLOWANCE).
const CLOCK_SKEW_ALLOWANCE: i64 = 120;

/// The `Hash=` of an `x-forwarded-client-cert`: which client certificate the
/// callee's sidecar saw on that connection.
fn xfcc_hash(body: &Value) -> Option<String> {
    let xfcc = body["headers"]["x-forwarded-client-cert"].as_str()?;
    xfcc.split(';')
        .find_map(|part| part.strip_prefix("Hash="))
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_rotate_under_load_without_a_failed_request() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Istio's knobs: SECRET_TTL mesh-wide in meshConfig.defaultConfig, and per
    // pod in proxy.istio.io/config (which wins, key by key).
    let annotated = "\n      annotations:\n        proxy.istio.io/config: |\n          proxyMetadata:\n            SECRET_TTL: 3s";
    // One request per connection, so that every request is a new handshake
    // with whatever certificates both sidecars hold at that moment.
    let one_request_per_connection = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-b}
spec:
  host: echo-b
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
";
    write_mesh(
        dir.path(),
        &[
            (
                "mesh.yaml",
                "defaultConfig:\n  proxyMetadata: {SECRET_TTL: 4s}\n".into(),
            ),
            ("a.yaml", echo("echo-a", true)),
            ("b.yaml", e2e::echo_workload("echo-b", annotated)),
            ("dr.yaml", one_request_per_connection.into()),
            ("strict.yaml", peer_authentication("default", "STRICT")),
        ],
    )?;
    let mesh = Mesh::up(dir.path())?;
    let (a, b) = (pod(&mesh, "echo-a")?, pod(&mesh, "echo-b")?);
    eventually(Duration::from_secs(30), || {
        call_through_mesh(&a, "http://echo-b:8080/")
    })
    .await?;

    // The lifetimes asked for are the ones granted.
    let (cert_a, cert_b) = (workload_cert(&a).await?, workload_cert(&b).await?);
    assert_eq!(
        lifetime_seconds(&cert_a)?,
        CLOCK_SKEW_ALLOWANCE + 4,
        "mesh-wide SECRET_TTL: {cert_a}"
    );
    assert_eq!(
        lifetime_seconds(&cert_b)?,
        CLOCK_SKEW_ALLOWANCE + 3,
        "the pod's SECRET_TTL: {cert_b}"
    );

    // A client calling continuously, bounded in time and count.
    let (mut ok, mut failures) = (0usize, Vec::new());
    let mut client_certs = std::collections::BTreeSet::new();
    let mut server_serials = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for i in 0..3000 {
        if std::time::Instant::now() >= deadline {
            break;
        }
        match call_through_mesh(&a, &format!("http://echo-b:8080/r{i}")).await {
            Ok(body) => {
                ok += 1;
                if body["peer_identity"] != identity("echo-a") {
                    failures.push(format!("request {i}: callee saw {}", body["peer_identity"]));
                }
                client_certs.extend(xfcc_hash(&body));
            }
            Err(e) => failures.push(format!("request {i}: {e:#}")),
        }
        if i % 10 == 0 {
            server_serials.insert(workload_cert(&b).await?["serial"].to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    // echo-b's sidecar accepted at least three different certificates of
    // echo-a's in new handshakes, and itself presented at least three.
    assert!(
        client_certs.len() >= 3,
        "the callee saw {} client certificate(s) in {ok} requests: {client_certs:?}",
        client_certs.len()
    );
    assert!(
        server_serials.len() >= 3,
        "echo-b's serial changed only {} time(s): {server_serials:?}",
        server_serials.len().saturating_sub(1)
    );
    let now = workload_cert(&b).await?;
    assert_ne!(now["serial"], cert_b["serial"], "rotated");
    assert_eq!(now["spiffe_id"], identity("echo-b"));
    let installs = proxy_log(&mesh, &a)
        .matches("workload certificate installed")
        .count();
    assert!(
        installs >= 4,
        "echo-a's proxy installed {installs} certificate(s)"
    );
    println!(
        "{ok} requests, all succeeded; echo-b saw {} client certificates, presented {} serials; echo-a installed {installs}",
        client_certs.len(),
        server_serials.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_refuses_forged_foreign_expired_and_anonymous_certificates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_mesh(
        dir.path(),
        &[
            ("a.yaml", echo("echo-a", true)),
            ("b.yaml", echo("echo-b", true)),
            ("strict.yaml", peer_authentication("default", "STRICT")),
            // echo-a's sidecar is told echo-b must prove to be someone else.
            (
                "dr.yaml",
                pinned_server_identity("echo-b", &identity("echo-b-impostor-check")),
            ),
        ],
    )?;
    let mesh = Mesh::up(dir.path())?;
    let (a_pod, b) = (pod(&mesh, "echo-a")?, pod(&mesh, "echo-b")?);
    let target = format!("{}:8080", b.pod_ip);
    eventually(Duration::from_secs(30), || workload_cert(&b)).await?;

    // The mesh CA's own files, where trellisd keeps them; the key is the
    // control plane's alone.
    let ca_dir = mesh.state.path().join("ca");
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca-cert.pem"))?;
    let ca_key_path = ca_dir.join("ca-key.pem");
    let mode = std::fs::metadata(&ca_key_path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", ca_key_path.display());
    let ca_key = std::fs::read_to_string(&ca_key_path)?;
    let mesh_ca = Some((ca_cert.as_str(), ca_key.as_str()));
    let (other_cert, other_key) = foreign_root()?;
    let a = identity("echo-a");

    // The control: a certificate made the way the mesh CA makes them is accepted,
    // so each refusal below is down to its one defect.
    let reply = eventually(Duration::from_secs(20), || async {
        let (cert, key) = ClientCert::valid_for(&a).issue(mesh_ca)?;
        let (_, reply) = mtls_request(&target, cert, &key).await?;
        reply.context("a well-formed mesh certificate must be accepted")
    })
    .await?;
    assert!(reply.contains("200"), "{reply}");

    let now = time::OffsetDateTime::now_utc();
    let expired = ClientCert {
        not_before: now - time::Duration::hours(2),
        not_after: now - time::Duration::hours(1),
        ..ClientCert::valid_for(&a)
    };
    let anonymous = ClientCert {
        uri: None,
        ..ClientCert::valid_for(&a)
    };
    let cases = [
        (
            "forged (self-signed, valid mesh id)",
            ClientCert::valid_for(&a).issue(None)?,
            "not issued by a trusted mesh root",
        ),
        (
            "from another root",
            ClientCert::valid_for(&a).issue(Some((&other_cert, &other_key)))?,
            "not issued by a trusted mesh root",
        ),
        (
            "expired, mesh CA",
            expired.issue(mesh_ca)?,
            "certificate expired at ",
        ),
        (
            "no SPIFFE id, mesh CA",
            anonymous.issue(mesh_ca)?,
            "no URI SAN, so it carries no SPIFFE id",
        ),
    ];
    for (what, (cert, key), reason) in cases {
        let (local, outcome) = mtls_request(&target, cert, &key).await?;
        assert!(outcome.is_err(), "{what}: accepted: {outcome:?}");
        // The refusal is logged with who and why, on one line.
        let line = eventually(Duration::from_secs(5), || async {
            let log = proxy_log(&mesh, &b);
            log.lines()
                .find(|l| {
                    l.contains("inbound mTLS handshake refused")
                        && l.contains(&format!("peer={local}"))
                })
                .map(String::from)
                .with_context(|| format!("{what}: no refusal logged for {local}"))
        })
        .await?;
        assert!(
            line.contains(reason) && line.contains("mode=Strict"),
            "{what}: the log line does not say {reason:?} under STRICT: {line}"
        );
        println!("{what}: {line}");
    }
    // The forgery is called what it is on the certificate's own line.
    let log = proxy_log(&mesh, &b);
    assert!(
        log.lines()
            .any(|l| l.contains("mTLS peer certificate rejected") && l.contains("self-signed")),
        "{log}"
    );

    // Secure naming, client side: echo-b presents a valid mesh certificate,
    // but for an identity other than the one echo-a's sidecar must see.
    let url = format!("http://{}:8080/?call=http://echo-b:8080/", a_pod.app_ip);
    let reply: Value = http().get(&url).send().await?.json().await?;
    assert_ne!(
        reply["upstream"]["status"], 200,
        "the wrong server was trusted: {reply}"
    );
    let expected = identity("echo-b-impostor-check");
    let line = eventually(Duration::from_secs(5), || async {
        proxy_log(&mesh, &a_pod)
            .lines()
            .find(|l| {
                l.contains("upstream TLS handshake failed")
                    && l.contains("is not one of the identities expected")
            })
            .map(String::from)
            .context("no secure-naming refusal in echo-a's proxy log")
    })
    .await?;
    assert!(
        line.contains(&format!("peer identity {}", identity("echo-b")))
            && line.contains(&format!("expected={expected}")),
        "the line names the presented and the expected identity: {line}"
    );
    println!("secure naming: {line}");
    // The same call with the right identity pinned goes through: the refusal
    // was the identity, nothing else.
    let fixed = dir.path().join("dr.yaml");
    std::fs::write(
        &fixed,
        pinned_server_identity("echo-b", &identity("echo-b")),
    )?;
    let out = mesh.trellis(&["apply", "-f", &fixed.display().to_string()]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = eventually(Duration::from_secs(20), || {
        call_through_mesh(&a_pod, "http://echo-b:8080/")
    })
    .await?;
    assert_eq!(body["peer_identity"], identity("echo-a"), "{body}");
    Ok(())
}

/// A DestinationRule for `host` requiring mesh mTLS with the server proving `san`.
fn pinned_server_identity(host: &str, san: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [\"{san}\"]}}
"
    )
}
