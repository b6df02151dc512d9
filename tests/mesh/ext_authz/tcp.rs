//! CUSTOM on TCP: a gRPC authorizer asked once per connection (Envoy's
//! network ext_authz), what it denies closed.

use super::*;

/// A TCP service (its port named `tcp`) behind the ingress gateway's TCP
/// server on 31400.
const TCP_APP: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: tcp-app}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-app}
spec:
  selector: {app: tcp-app}
  ports: [{name: tcp, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-app}
spec:
  selector: {matchLabels: {app: tcp-app}}
  template:
    metadata:
      labels: {app: tcp-app}
    spec:
      serviceAccountName: tcp-app
      containers:
      - name: echo
        image: trellis-sample
        command: [trellis-sample]
        args: [echo, --service, tcp-app, --port, "8080"]
        ports: [{containerPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-app}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp-gateway]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-app.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-tcp, namespace: default}
spec:
  selector: {matchLabels: {app: tcp-app}}
  action: CUSTOM
  provider: {name: ext-authz-grpc}
  rules: [{}]
---
"#;

/// One HTTP exchange over a raw TCP connection to `addr`: the status line,
/// or `None` when the connection was closed without an answer.
async fn over_tcp(addr: &str) -> Result<Option<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    // A refused connection may be closed before the request is written.
    let _ = stream
        .write_all(b"GET /tcp HTTP/1.1\r\nhost: tcp-app\r\nconnection: close\r\n\r\n")
        .await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .context("no answer and no close within 10 s")?;
    if read.is_err() || reply.is_empty() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_on_tcp_checks_each_connection_once() -> Result<()> {
    use std::sync::atomic::Ordering;
    let authorizers = Authorizers::start()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), MESH_CONFIG)?;
    let config = [
        entry("ext-authz-grpc.authz.internal", "GRPC", authorizers.grpc),
        TCP_APP.to_string(),
    ]
    .concat();
    std::fs::write(dir.path().join("tcp.yaml"), config)?;
    let mesh = Mesh::up(dir.path())?;
    let gateway_ip = mesh
        .gateway
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .context("gateway address")?;
    let addr = format!("{gateway_ip}:31400");
    let tcp_checks = || {
        authorizers
            .seen
            .all()
            .into_iter()
            .filter(|s| s.0 == "tcp")
            .collect::<Vec<_>>()
    };

    // Allowed: served, after one check naming the gateway's mesh identity.
    ALLOW_CONNECTIONS.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(40), || async {
        let line = over_tcp(&addr).await?;
        ensure!(
            line.as_deref().is_some_and(|l| l.contains(" 200 ")),
            "allowed connection: {line:?}"
        );
        ensure!(!tcp_checks().is_empty(), "served without a check");
        Ok(())
    })
    .await?;
    let before = tcp_checks().len();
    let line = over_tcp(&addr).await?;
    ensure!(
        line.as_deref().is_some_and(|l| l.contains(" 200 ")),
        "allowed connection: {line:?}"
    );
    let checks = tcp_checks();
    ensure!(
        checks.len() == before + 1,
        "one check per connection: {checks:?}"
    );
    let principal = &checks[checks.len() - 1].2;
    ensure!(
        principal.starts_with("spiffe://cluster.local/ns/istio-system/"),
        "source principal {principal:?}"
    );

    // Denied: closed without reaching the app.
    ALLOW_CONNECTIONS.store(false, Ordering::SeqCst);
    let line = over_tcp(&addr).await?;
    ensure!(line.is_none(), "denied connection was served: {line:?}");
    ensure!(tcp_checks().len() == before + 2, "denied without a check");
    ALLOW_CONNECTIONS.store(true, Ordering::SeqCst);
    mesh.stop()?;
    Ok(())
}
