//! What a local process can do to a running mesh's proxies (issue 13,
//! findings 4 and 5): stop one through its admin port, or obtain a
//! gateway's config and private keys by claiming to be a gateway.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually, http, pids_with_arg};
use serde_json::Value;
use wire::pb::aggregated_discovery_client::AggregatedDiscoveryClient;
use wire::pb::{DiscoveryRequest, Node, ProxyKind, resource};

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: secure-credential}
    hosts: [secure.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure.example.com]
  gateways: [secure]
  http: [{route: [{destination: {host: productpage, port: {number: 8080}}}]}]
"#;

/// A mesh of one workload, `productpage`, and an HTTPS Gateway whose
/// Secret's private key is returned with it.
fn mesh_with_a_secure_gateway() -> Result<(Mesh, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert =
        rcgen::CertificateParams::new(vec!["secure.example.com".to_string()])?.self_signed(&key)?;
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let key_pem = key.serialize_pem();
    // In the gateway's namespace, and in productpage's, where a gateway
    // that productpage's proxy pretended to be would look for it.
    let secret = |ns: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: secure-credential, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
            indent(&cert.pem()),
            indent(&key_pem)
        )
    };
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("productpage.yaml"),
        e2e::echo_workload("productpage", ""),
    )?;
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!("{}{}{GATEWAY}", secret("istio-system"), secret("default")),
    )?;
    let mesh = Mesh::up(dir.path())?;
    // The key's base64 body, as it would appear in any encoding of it.
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    Ok((mesh, body))
}

/// The pod of `app` (its `app` label) as `trellis get pods` shows it.
fn pod(mesh: &Mesh, app: &str) -> Result<Value> {
    mesh.pods()?
        .into_iter()
        .find(|p| p["metadata"]["labels"]["app"] == app)
        .with_context(|| format!("no pod of {app}"))
}

/// Every response of a discovery stream for `node` sending `token`, one per
/// type of the proxy API, or the refusal.
async fn config_for(
    xds: &wire::address::XdsAddress,
    node: Node,
    token: &str,
) -> Result<Result<Vec<wire::pb::DiscoveryResponse>, tonic::Status>> {
    let mut client = AggregatedDiscoveryClient::new(xds.connect().await?);
    let subscribe: Vec<DiscoveryRequest> = wire::types::ALL
        .iter()
        .map(|t| DiscoveryRequest {
            node: Some(node.clone()),
            type_url: t.to_string(),
            ..Default::default()
        })
        .collect();
    let requests =
        tokio_stream::StreamExt::chain(tokio_stream::iter(subscribe), tokio_stream::pending());
    let mut request = tonic::Request::new(requests);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = match client.stream(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    let mut responses = Vec::new();
    while responses.len() < wire::types::ALL.len() {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(r))) => responses.push(r),
            Ok(Ok(None)) => break,
            Ok(Err(status)) => return Ok(Err(status)),
            Err(_) => anyhow::bail!("no config within 10 s"),
        }
    }
    Ok(Ok(responses))
}

/// The finding: with productpage's token, a client claiming `kind=GATEWAY`
/// with made-up labels received a gateway listener with a Secret's private
/// key. Now what a proxy is comes from its pod: the forged kind is refused,
/// made-up labels are replaced by the pod's, and the gateway's own pod
/// cannot be claimed with another workload's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_gateway_claim_gets_no_gateway_config_and_no_key() -> Result<()> {
    let (mesh, key_body) = mesh_with_a_secure_gateway()?;
    let secret =
        control::bootstrap_token::TokenSecret::load(&mesh.state.path().join("token-secret"))?;
    let token = secret.token("default", "productpage");
    let xds = mesh.xds()?;
    let productpage = pod(&mesh, "productpage")?;
    let name = productpage["metadata"]["name"]
        .as_str()
        .context("pod name")?
        .to_string();
    let gateway_labels = [
        ("istio".to_string(), "ingressgateway".to_string()),
        ("app".to_string(), "istio-ingressgateway".to_string()),
    ];
    let claim = |kind: ProxyKind| Node {
        id: format!("{name}.default"),
        pod_name: name.clone(),
        namespace: "default".into(),
        service_account: "productpage".into(),
        pod_ip: productpage["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .into(),
        labels: gateway_labels.clone().into_iter().collect(),
        kind: kind as i32,
        ..Default::default()
    };
    let leaks = |responses: &[wire::pb::DiscoveryResponse]| {
        responses.iter().flat_map(|r| &r.resources).any(|r| {
            let gateway_listener = matches!(
                &r.kind,
                Some(resource::Kind::Listener(l)) if l.direction == wire::pb::Direction::Gateway as i32
            );
            gateway_listener || format!("{r:?}").contains(&key_body[..40])
        })
    };

    // The real gateway gets its listener and key: the check below is not vacuous.
    let gw = pod(&mesh, "istio-ingressgateway")?;
    let gw_name = gw["metadata"]["name"].as_str().context("gateway pod")?;
    let gw_node = Node {
        id: format!("{gw_name}.istio-system"),
        pod_name: gw_name.into(),
        namespace: "istio-system".into(),
        service_account: "istio-ingressgateway-service-account".into(),
        pod_ip: gw["status"]["podIP"].as_str().unwrap_or_default().into(),
        labels: gateway_labels.clone().into_iter().collect(),
        kind: ProxyKind::Gateway as i32,
        ..Default::default()
    };
    let gw_token = secret.token("istio-system", "istio-ingressgateway-service-account");
    let real = eventually(Duration::from_secs(20), || async {
        let r = config_for(&xds, gw_node.clone(), &gw_token).await??;
        ensure!(leaks(&r), "the gateway has no HTTPS listener yet");
        Ok(r)
    })
    .await;
    assert!(real.is_ok(), "the real gateway's config: {real:?}");

    // productpage's token, kind GATEWAY, the gateway's labels: refused.
    let forged = config_for(&xds, claim(ProxyKind::Gateway), &token).await?;
    let status = match forged {
        Ok(r) => panic!(
            "a sidecar's pod claiming to be a gateway was accepted; sent a gateway listener or the key: {}",
            leaks(&r)
        ),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("gateway"),
        "the refusal says why: {}",
        status.message()
    );

    // As a sidecar with the gateway's labels: the labels are the pod's, so
    // no Gateway selects it, and nothing of the gateway's is sent.
    let sidecar = config_for(&xds, claim(ProxyKind::Sidecar), &token)
        .await?
        .map_err(|s| anyhow::anyhow!("productpage's own pod refused: {s}"))?;
    assert_eq!(sidecar.len(), wire::types::ALL.len());
    assert!(!leaks(&sidecar), "made-up labels selected the Gateway");

    // The gateway's own pod, claimed with productpage's token.
    let mut stolen = gw_node.clone();
    stolen.service_account = "productpage".into();
    let refused = config_for(&xds, stolen, &token).await?;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied),
        "another pod claimed with productpage's token"
    );
    Ok(())
}

/// The finding: seven `POST /quitquitquit` from any local process restarted
/// a sidecar seven times. Now the admin port's changes need the proxy's
/// admin token, which `trellis up` has it write 0600 beside its log; and
/// Istio's health port answers readiness on sidecars and the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_need_the_token_and_health_port_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("productpage.yaml"),
        e2e::echo_workload("productpage", ""),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let client = http();
    for app in ["productpage", "istio-ingressgateway"] {
        let p = pod(&mesh, app)?;
        let ip = p["status"]["podIP"].as_str().context("pod IP")?;
        let url = format!("http://{ip}:15021/healthz/ready");
        let body = eventually(Duration::from_secs(20), || async {
            let r = client.get(&url).send().await?;
            ensure!(r.status() == 200, "{app}: {url}: {}", r.status());
            Ok(r.text().await?)
        })
        .await?;
        assert_eq!(body.trim(), "LIVE", "{app}");
    }

    let p = pod(&mesh, "productpage")?;
    let admin = p["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .context("admin annotation")?
        .to_string();
    let name = p["metadata"]["name"].as_str().context("pod name")?;
    let ready = format!("http://{admin}/ready");
    let quit = format!("http://{admin}/quitquitquit");
    // The proxy is the one process with the pod's name as an argument.
    let before = pids_with_arg(name);
    assert_eq!(before.len(), 1, "{before:?}");
    for i in 0..7 {
        let r = client.post(&quit).send().await?;
        assert_eq!(r.status(), 401, "unauthenticated quit #{i}");
        let r = client
            .post(&quit)
            .bearer_auth("0".repeat(64))
            .send()
            .await?;
        assert_eq!(r.status(), 401, "a made-up token, quit #{i}");
    }
    assert_eq!(
        client.get(&ready).send().await?.status(),
        200,
        "the proxy kept running"
    );
    assert_eq!(pids_with_arg(name), before, "the proxy was not restarted");

    let token_file = mesh
        .logs()
        .join(format!("default.{name}.istio-proxy.admin-token"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", token_file.display());
    let token = std::fs::read_to_string(&token_file)?;
    let r = client.post(&quit).bearer_auth(token.trim()).send().await?;
    assert_eq!(r.status(), 200, "quit with the proxy's token");
    // It stopped (and `up` starts it again, with a new token).
    eventually(Duration::from_secs(10), || async {
        ensure!(pids_with_arg(name) != before, "still the same process");
        Ok(())
    })
    .await?;
    Ok(())
}
