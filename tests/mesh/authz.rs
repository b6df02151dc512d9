//! AuthorizationPolicy end to end, with Istio's own YAML from its
//! authorization tasks: applied to a running mesh with `trellis apply -f`,
//! enforced by the callee's sidecar on real mTLS connections, and removed
//! with `trellis delete -f`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{App, Launch, Mesh, eventually, http};
use serde_json::Value;

fn echo(name: &str) -> String {
    e2e::echo_workload(name, "")
}

/// Istio's "allow-nothing" (Authorization on HTTP traffic).
const ALLOW_NOTHING: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec:
  {}
";

/// As Istio's `get-ratings`: only echo-a's service account may GET echo-c.
const ALLOW_A: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: get-echo-c
  namespace: default
spec:
  selector:
    matchLabels:
      app: echo-c
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [\"cluster.local/ns/default/sa/echo-a\"]
    to:
    - operation:
        methods: [\"GET\"]
";

/// As Istio's explicit-deny task (`deny-method-get`), on POST and on /admin paths.
const DENY_ADMIN_AND_POST: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin-and-post
  namespace: default
spec:
  selector:
    matchLabels:
      app: echo-c
  action: DENY
  rules:
  - to:
    - operation:
        paths: [\"/admin*\"]
  - to:
    - operation:
        methods: [\"POST\"]
";

struct Pod {
    name: String,
    pod_ip: String,
    /// Its application, as the test calls it (in its namespace in namespace mode).
    app: App,
}

fn pod(mesh: &Mesh, app: &str) -> Result<Pod> {
    let p = mesh.pod_of(app)?;
    Ok(Pod {
        name: p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        pod_ip: p["status"]["podIP"].as_str().context("pod ip")?.to_string(),
        app: mesh.app(&p, 8080)?,
    })
}

/// `from`'s application GETs `target` through its own sidecar (mTLS to the
/// callee's sidecar): the status and body the callee's side answered.
async fn call(from: &Pod, target: &str) -> Result<(u16, Value)> {
    let (status, body) = from.app.get(&format!("/?call={target}")).await?;
    ensure!(status == 200, "{status} from the caller's app: {body}");
    let reply: Value = serde_json::from_str(&body)?;
    let upstream = &reply["upstream"];
    let status = upstream["status"]
        .as_u64()
        .with_context(|| format!("no upstream status: {reply}"))?;
    Ok((status as u16, upstream["body"].clone()))
}

/// A plaintext request straight to the callee's sidecar (PERMISSIVE).
async fn plain(to: &Pod, method: &str, path: &str) -> Result<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let resp = http()
        .request(method, format!("http://{}:8080{path}", to.pod_ip))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn kubectl(mesh: &Mesh, verb: &str, dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    let out = mesh.trellis(&[verb, "-f", &path.display().to_string()]);
    ensure!(
        out.status.success(),
        "{verb} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until `f` gives `want`.
async fn until<F, Fut>(what: &str, want: u16, f: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(u16, Value)>>,
{
    eventually(Duration::from_secs(20), || async {
        let (status, body) = f().await?;
        if status != want {
            bail!("{what}: {status} (want {want}): {body}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_applied_and_removed_live() -> Result<()> {
    policies_applied_and_removed(false).await
}

/// The same, each pod in its own network namespace: the callers' requests
/// are captured, the host is the plaintext client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_applied_and_removed_live_in_namespaces() -> Result<()> {
    if let Some(why) = e2e::netns_unavailable() {
        eprintln!("skipped: namespace mode needs root, iproute2, iptables, setpriv, curl ({why})");
        return Ok(());
    }
    policies_applied_and_removed(true).await
}

async fn policies_applied_and_removed(netns: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    for name in ["echo-a", "echo-b", "echo-c"] {
        std::fs::write(dir.path().join(format!("{name}.yaml")), echo(name))?;
    }
    let mesh = Mesh::launch(
        dir.path(),
        Launch {
            netns,
            ..Launch::default()
        },
    )?;
    let (a, b, c) = (
        pod(&mesh, "echo-a")?,
        pod(&mesh, "echo-b")?,
        pod(&mesh, "echo-c")?,
    );
    let policies = tempfile::tempdir()?;
    let c_url = "http://echo-c:8080/";

    // No policy: everything gets through.
    until("a → c, no policy", 200, || call(&a, c_url)).await?;

    // allow-nothing: every request in the namespace is refused, as Envoy refuses it.
    kubectl(
        &mesh,
        "apply",
        policies.path(),
        "allow-nothing.yaml",
        ALLOW_NOTHING,
    )?;
    until("a → c under allow-nothing", 403, || call(&a, c_url)).await?;
    let (_, body) = call(&b, c_url).await?;
    assert_eq!(
        body,
        Value::String("RBAC: access denied".into()),
        "Envoy's body"
    );
    assert_eq!(
        plain(&c, "GET", "/").await?,
        (403, "RBAC: access denied".to_string())
    );
    // Istio's default TEXT line: "... 403 - rbac_access_denied_matched_policy[none] - ...".
    let c_log = mesh
        .logs()
        .join(format!("default.{}.istio-proxy.log", c.name));
    eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&c_log).unwrap_or_default();
        ensure!(
            log.contains(" 403 - rbac_access_denied_matched_policy[none] "),
            "the access log says why: {log:.3000}"
        );
        Ok(())
    })
    .await?;
    kubectl(
        &mesh,
        "delete",
        policies.path(),
        "allow-nothing.yaml",
        ALLOW_NOTHING,
    )?;
    until("a → c after delete", 200, || call(&a, c_url)).await?;

    // ALLOW from one principal: echo-a gets in over mTLS, echo-b and plaintext do not.
    kubectl(&mesh, "apply", policies.path(), "allow-a.yaml", ALLOW_A)?;
    until("b → c under get-echo-c", 403, || call(&b, c_url)).await?;
    let (status, body) = call(&a, c_url).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["peer_identity"], "spiffe://cluster.local/ns/default/sa/echo-a",
        "{body}"
    );
    assert_eq!(
        plain(&c, "GET", "/").await?.0,
        403,
        "a plaintext caller has no principal"
    );
    until("a → b: the policy selects echo-c only", 200, || {
        call(&a, "http://echo-b:8080/")
    })
    .await?;
    kubectl(&mesh, "delete", policies.path(), "allow-a.yaml", ALLOW_A)?;
    until("b → c after delete", 200, || call(&b, c_url)).await?;

    // DENY on paths and methods.
    kubectl(
        &mesh,
        "apply",
        policies.path(),
        "deny.yaml",
        DENY_ADMIN_AND_POST,
    )?;
    until("a → c /admin", 403, || {
        call(&a, "http://echo-c:8080/admin/users")
    })
    .await?;
    assert_eq!(call(&a, "http://echo-c:8080/public").await?.0, 200);
    assert_eq!(plain(&c, "POST", "/public").await?.0, 403, "DENY on POST");
    assert_eq!(plain(&c, "GET", "/public").await?.0, 200);
    kubectl(
        &mesh,
        "delete",
        policies.path(),
        "deny.yaml",
        DENY_ADMIN_AND_POST,
    )?;
    until("a → c /admin after delete", 200, || {
        call(&a, "http://echo-c:8080/admin/users")
    })
    .await?;
    Ok(())
}

const GATEWAY_MESH: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [\"*\"]
  gateways: [edge]
  http: [{route: [{destination: {host: echo-g, port: {number: 8080}}}]}]
";

/// Istio's "Ingress Gateway" authorization task: an ALLOW policy on the
/// ingress gateway admitting only listed client addresses (`remoteIpBlocks`).
/// At the edge the client is the gateway's peer, so an `x-forwarded-for`
/// naming an allowed address does not get a refused client in.
fn ingress_allow(blocks: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-policy
  namespace: istio-system
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        remoteIpBlocks: [{blocks}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_gateway_enforces_its_own_policies() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("echo.yaml"), echo("echo-g"))?;
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY_MESH)?;
    let mesh = Mesh::up(dir.path())?;
    let get = |xff: Option<&'static str>| {
        let url = format!("{}/hello", mesh.gateway);
        async move {
            let mut req = http().get(url);
            if let Some(xff) = xff {
                req = req.header("x-forwarded-for", xff);
            }
            let resp = req.send().await?;
            Ok((resp.status().as_u16(), Value::String(resp.text().await?)))
        }
    };
    until("through the gateway", 200, || get(None)).await?;

    let edits = tempfile::tempdir()?;
    kubectl(
        &mesh,
        "apply",
        edits.path(),
        "deny.yaml",
        &ingress_allow("\"1.2.3.4\", \"5.6.7.0/24\""),
    )?;
    until("a client not in remoteIpBlocks", 403, || get(None)).await?;
    let (status, body) = get(Some("1.2.3.4")).await?;
    assert_eq!(
        (status, body.as_str()),
        (403, Some("RBAC: access denied")),
        "x-forwarded-for is no way in at the edge"
    );

    kubectl(
        &mesh,
        "apply",
        edits.path(),
        "allow.yaml",
        &ingress_allow("\"127.0.0.0/8\""),
    )?;
    until("a client in remoteIpBlocks", 200, || get(None)).await?;
    Ok(())
}
