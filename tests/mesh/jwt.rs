//! RequestAuthentication end to end, after Istio's JWT tasks ("Authorization
//! with JWT", "End-user authentication" at the ingress): keys and tokens made
//! here, policies applied to a running mesh with `trellis apply -f`, enforced
//! by the callee's sidecar and by the ingress gateway.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::{Mesh, counter_sum, eventually, http};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The issuer (and subject) of Istio's demo tokens.
const ISSUER: &str = "testing@secure.istio.io";

/// An ES256 key made for this test, and its JWKS.
struct Signer {
    key: jsonwebtoken::EncodingKey,
    jwks: String,
}

impl Signer {
    fn new() -> Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let raw = kp.public_key_raw();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "test", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
        Ok(Signer {
            key: jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der()),
            jwks: json!({"keys": [jwk]}).to_string(),
        })
    }

    /// A token of `iss` for `sub`, valid for an hour unless `claims` say otherwise.
    fn token(&self, iss: &str, claims: Value) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut payload = json!({"iss": iss, "sub": ISSUER, "iat": now, "exp": now + 3600});
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), claims) {
            p.extend(extra);
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test".into());
        Ok(jsonwebtoken::encode(&header, &payload, &self.key)?)
    }
}

fn echo(name: &str) -> String {
    e2e::echo_workload(name, "")
}

fn apply(mesh: &Mesh, dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
    ensure!(
        out.status.success(),
        "apply {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The answer to one GET: status, body, and the request headers the echo
/// application saw (when it answered).
struct Answer {
    status: u16,
    body: String,
    www_authenticate: Option<String>,
}

impl Answer {
    fn seen_headers(&self) -> Value {
        serde_json::from_str::<Value>(&self.body).map_or(Value::Null, |v| v["headers"].clone())
    }
}

async fn get(url: &str, token: Option<&str>) -> Result<Answer> {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await?;
    let www_authenticate = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Ok(Answer {
        status: resp.status().as_u16(),
        www_authenticate,
        body: resp.text().await?,
    })
}

/// Waits until a GET answers `want` (config reaches proxies asynchronously).
async fn until(what: &str, url: &str, token: Option<&str>, want: u16) -> Result<Answer> {
    eventually(Duration::from_secs(20), || async {
        let a = get(url, token).await?;
        if a.status != want {
            bail!("{what}: {} (want {want}): {}", a.status, a.body);
        }
        Ok(a)
    })
    .await
}

fn request_authentication(selector: &str, ns: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: {ns}
spec:
  selector:
    matchLabels:
      {selector}
  jwtRules:
{rules}"
    )
}

/// Istio's "Authorization with JWT" task on a sidecar: a RequestAuthentication
/// with the issuer's keys inline, then `require-jwt` (requestPrincipals) and
/// a claims-based policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_task_at_the_sidecar() -> Result<()> {
    let signer = Signer::new()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("httpbin.yaml"), echo("httpbin"))?;
    let mesh = Mesh::up(dir.path())?;
    let pod = mesh.pod_of("httpbin")?;
    let ip = pod["status"]["podIP"].as_str().context("pod ip")?;
    // Plaintext straight to the sidecar (PERMISSIVE), as the task's `sleep`.
    let url = format!("http://{ip}:8080/headers");
    until("no policy", &url, Some("not.a.jwt"), 200).await?;

    let edits = tempfile::tempdir()?;
    let jwks = serde_json::to_string(&signer.jwks)?;
    apply(
        &mesh,
        edits.path(),
        "ra.yaml",
        &request_authentication(
            "app: httpbin",
            "default",
            &format!(
                "  - issuer: \"{ISSUER}\"\n    jwks: {jwks}\n    outputClaimToHeaders:\n    - {{header: x-jwt-sub, claim: sub}}\n"
            ),
        ),
    )?;
    // An invalid token is refused, with Envoy's message and challenge.
    let refused = until("invalid token", &url, Some("not.a.jwt"), 401).await?;
    assert_eq!(refused.body, "Jwt header is an invalid JSON");
    assert_eq!(
        refused.www_authenticate.as_deref(),
        Some(
            format!("Bearer realm=\"http://{ip}:8080/headers\", error=\"invalid_token\"").as_str()
        )
    );
    assert_eq!(
        get(&url, Some("invalidToken")).await?.body,
        "Jwt is not in the form of Header.Payload.Signature"
    );
    // No token: passes on (no AuthorizationPolicy yet).
    assert_eq!(get(&url, None).await?.status, 200);
    // A valid token: 200, the token is not forwarded, the claim header is.
    let token = signer.token(ISSUER, json!({"groups": ["group1", "group2"]}))?;
    let ok = get(&url, Some(&token)).await?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = ok.seen_headers();
    assert!(
        seen.get("authorization").is_none(),
        "token stripped: {seen}"
    );
    assert_eq!(seen["x-jwt-sub"], ISSUER, "{seen}");
    // Expired, wrong issuer, other key.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expired = signer.token(ISSUER, json!({"exp": now - 3600}))?;
    assert_eq!(get(&url, Some(&expired)).await?.body, "Jwt is expired");
    let foreign = signer.token("someone-else", json!({}))?;
    assert_eq!(
        get(&url, Some(&foreign)).await?.body,
        "Jwt issuer is not configured"
    );
    let forged = Signer::new()?.token(ISSUER, json!({}))?;
    let a = get(&url, Some(&forged)).await?;
    assert_eq!((a.status, a.body.as_str()), (401, "Jwt verification fails"));

    // require-jwt: only requests with a valid token of this principal.
    apply(
        &mesh,
        edits.path(),
        "require-jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: [\"{ISSUER}/{ISSUER}\"]
"
        ),
    )?;
    let denied = until("require-jwt without a token", &url, None, 403).await?;
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(get(&url, Some(&token)).await?.status, 200);

    // The task's second step: the token must also carry group1.
    apply(
        &mesh,
        edits.path(),
        "require-jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: [\"{ISSUER}/{ISSUER}\"]
    when:
    - key: request.auth.claims[groups]
      values: [\"group1\"]
    - key: request.auth.claims[org][team]
      notValues: [\"blocked\"]
"
        ),
    )?;
    let no_group = signer.token(ISSUER, json!({"groups": ["group2"]}))?;
    until("a token without group1", &url, Some(&no_group), 403).await?;
    assert_eq!(get(&url, Some(&token)).await?.status, 200);
    let blocked = signer.token(
        ISSUER,
        json!({"groups": ["group1"], "org": {"team": "blocked"}}),
    )?;
    assert_eq!(get(&url, Some(&blocked)).await?.status, 403, "nested claim");
    Ok(())
}

/// A JWKS served over plain HTTP by the test; every request is answered
/// with `body` (and the connection closed).
async fn serve_jwks(body: String) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(format!("http://{addr}/jwks.json"))
}

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
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
metadata: {name: httpbin}
spec:
  hosts: [\"*\"]
  gateways: [edge]
  http: [{route: [{destination: {host: httpbin, port: {number: 8080}}}]}]
";

/// Istio's ingress JWT task: the gateway validates tokens with keys from a
/// jwksUri, denies requests without a request principal on one path
/// (`notRequestPrincipals: ["*"]`), and an issuer whose jwksUri cannot be
/// fetched has its tokens refused — never passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_at_the_ingress_gateway_with_a_jwks_uri() -> Result<()> {
    let signer = Signer::new()?;
    let jwks_uri = serve_jwks(signer.jwks.clone()).await?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let unreachable = format!("http://{}/jwks.json", closed.local_addr()?);
    drop(closed);

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("httpbin.yaml"), echo("httpbin"))?;
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY)?;
    let mesh = Mesh::up(dir.path())?;
    let headers = format!("{}/headers", mesh.gateway);
    let ip = format!("{}/ip", mesh.gateway);
    until("through the gateway", &headers, Some("not.a.jwt"), 200).await?;

    let edits = tempfile::tempdir()?;
    apply(
        &mesh,
        edits.path(),
        "ra.yaml",
        &request_authentication(
            "istio: ingressgateway",
            "istio-system",
            &format!(
                "  - issuer: \"{ISSUER}\"\n    jwksUri: \"{jwks_uri}\"\n  - issuer: down.example\n    jwksUri: \"{unreachable}\"\n    timeout: 2s\n"
            ),
        ),
    )?;
    until(
        "an invalid token at the gateway",
        &headers,
        Some("not.a.jwt"),
        401,
    )
    .await?;
    let token = signer.token(ISSUER, json!({}))?;
    assert_eq!(get(&headers, Some(&token)).await?.status, 200);
    assert_eq!(get(&headers, None).await?.status, 200);
    let down = signer.token("down.example", json!({}))?;
    let a = get(&headers, Some(&down)).await?;
    assert_eq!(
        (a.status, a.body.as_str()),
        (401, "Jwks remote fetch is failed"),
        "an unfetchable jwksUri fails its issuer's tokens"
    );

    // Deny requests without a request principal, on /headers only.
    apply(
        &mesh,
        edits.path(),
        "deny.yaml",
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: frontend-ingress
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: [\"*\"]
    to:
    - operation:
        paths: [\"/headers\"]
",
    )?;
    until("/headers without a token", &headers, None, 403).await?;
    assert_eq!(get(&ip, None).await?.status, 200, "/ip needs no token");
    assert_eq!(get(&headers, Some(&token)).await?.status, 200);

    // The failure is counted at the gateway.
    let pods = mesh.pods()?;
    let gw = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["istio"] == "ingressgateway")
        .context("gateway pod")?;
    let admin = gw["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .context("gateway admin")?;
    let stats = http()
        .get(format!("http://{admin}/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        counter_sum(
            &stats,
            "trellis_jwt_authn_jwks_fetch_failed_total",
            &[("uri", &unreachable)]
        ) >= 1.0,
        "fetch failures counted: {stats:.4000}"
    );
    ensure!(
        counter_sum(
            &stats,
            "trellis_jwt_authn_jwks_fetch_success_total",
            &[("uri", &jwks_uri)]
        ) >= 1.0,
        "fetches counted"
    );
    Ok(())
}
