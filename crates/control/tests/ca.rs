//! The certificate service and discovery over real gRPC connections: over
//! TLS (15012) a workload gets a certificate for its own identity with its
//! bootstrap token, and for no other; a client that does not trust the mesh
//! root does not even connect; over plaintext (15010) no token is accepted;
//! a token file is read again when the stream reconnects.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::free_port;

use control::bootstrap_token::TokenSecret;
use identity::{CertChain, KeyAndCsr, SpiffeId, TrustBundle};
use wire::address::XdsAddress;
use wire::certs::{BearerToken, CertRequestError, TokenSource, create_certificate};
use wire::pb::{DiscoveryRequest, Node, ProxyKind, Resource};

const MESH: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: sleep-1
  namespace: default
  labels: {app: sleep}
  annotations: {sidecar.istio.io/status: '{\"containers\":[\"istio-proxy\"]}'}
spec: {serviceAccountName: sleep, containers: [{name: sleep, image: sleep}]}
status: {podIP: 127.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-1, namespace: default, labels: {app: httpbin}}
spec: {serviceAccountName: httpbin, containers: [{name: httpbin, image: httpbin}]}
status: {podIP: 127.0.0.12}
";

struct ControlPlane {
    /// Discovery and the CA over TLS, verified with the mesh root.
    tls: XdsAddress,
    /// The plaintext listener.
    plaintext: XdsAddress,
    tls_port: u16,
    secret: TokenSecret,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start() -> ControlPlane {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    let mut store = control::store::Store::open(&config).expect("store");
    for r in api::parse("mesh.yaml", MESH).expect("parse") {
        store.apply(r).expect("apply");
    }
    drop(store);
    let secret_path = dir.path().join("token-secret");
    let secret = TokenSecret::create(&secret_path).expect("secret");
    let (xds, tls_port) = (free_port(), free_port());
    let options = control::Options {
        config_dir: config,
        xds_addr: ([127, 0, 0, 1], xds).into(),
        xds_tls_addr: ([127, 0, 0, 1], tls_port).into(),
        xds_sans: Vec::new(),
        http_addr: ([127, 0, 0, 1], free_port()).into(),
        mesh_config: model::MeshConfig::default(),
        debounce: Duration::from_millis(50),
        ca_dir: Some(dir.path().join("ca")),
        token_secret: Some(secret_path),
        api_token_file: None,
        pod_status_file: None,
        dashboard: Default::default(),
        kubernetes: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(control::run(options, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in [xds, tls_port] {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "control plane did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The self-signed root the CA made: what `trellis up` hands its proxies.
    let root_cert = dir.path().join("ca").join(identity::CA_CERT_FILE);
    ControlPlane {
        tls: XdsAddress::parse(&format!("https://127.0.0.1:{tls_port}"), Some(&root_cert))
            .expect("address"),
        plaintext: XdsAddress::parse(&format!("http://127.0.0.1:{xds}"), None).expect("address"),
        tls_port,
        secret,
        dir,
        stop: Some(stop),
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).expect("id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_its_own_certificate_and_no_other() {
    let cp = start().await;
    let sleep_token = BearerToken::new(cp.secret.token("default", "sleep"));

    // Its own token and a CSR for its own identity: a certificate for it.
    let key = KeyAndCsr::generate(&id("sleep")).expect("csr");
    let issued = create_certificate(
        &cp.tls,
        &sleep_token,
        key.csr_pem().to_string(),
        Some(Duration::from_secs(600)),
    )
    .await
    .expect("issued");
    let chain = CertChain::from_pem(&issued.chain_pem).expect("chain");
    assert_eq!(chain.spiffe_id().expect("id"), id("sleep"));
    let info = chain.info().expect("info");
    let lifetime = info.not_after - time::OffsetDateTime::now_utc();
    assert!(
        lifetime <= time::Duration::seconds(600),
        "the requested validity is honoured: {lifetime}"
    );
    TrustBundle::from_pem(&issued.roots_pem).expect("roots");

    // Its own (valid) token, but a CSR for another workload's identity: refused.
    let other = KeyAndCsr::generate(&id("httpbin")).expect("csr");
    let err = create_certificate(&cp.tls, &sleep_token, other.csr_pem().to_string(), None)
        .await
        .expect_err("another identity");
    match err {
        CertRequestError::Refused { code, message } => {
            assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
            assert!(
                message.contains("sa/httpbin") && message.contains("sa/sleep"),
                "{message}"
            );
        }
        other => panic!("unexpected: {other}"),
    }

    // A token that is nobody's, a token for a service account no workload
    // runs as, and no token at all: refused before the CSR is looked at.
    for token in [
        BearerToken::new("00".repeat(32)),
        BearerToken::new("not-hex"),
        BearerToken::new(cp.secret.token("default", "ghost")),
        BearerToken::new(TokenSecret::from_bytes(&[9; 32]).token("default", "sleep")),
        BearerToken::new(""),
    ] {
        let err = create_certificate(&cp.tls, &token, key.csr_pem().to_string(), None)
            .await
            .expect_err("bad token");
        assert!(
            matches!(
                &err,
                CertRequestError::Refused {
                    code: tonic::Code::Unauthenticated,
                    ..
                }
            ),
            "{err}"
        );
    }
}

/// A CSR and a discovery stream with a token over plaintext are refused
/// with a status saying why, before the token is looked at; a stream
/// without one is refused too, since this control plane authenticates
/// workloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_takes_a_token() {
    let cp = start().await;
    let token = BearerToken::new(cp.secret.token("default", "sleep"));
    let key = KeyAndCsr::generate(&id("sleep")).expect("csr");
    match create_certificate(&cp.plaintext, &token, key.csr_pem().to_string(), None).await {
        Err(CertRequestError::Refused { code, message }) => {
            assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
            assert!(
                message.contains("tokens are accepted only over TLS on 15012"),
                "{message}"
            );
        }
        other => panic!("a CSR over plaintext: {other:?}"),
    }

    let refused = open_stream(&cp.plaintext, Some(&token))
        .await
        .expect_err("a token over plaintext");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("tokens are accepted only over TLS on 15012"),
        "{}",
        refused.message()
    );
    let refused = open_stream(&cp.plaintext, None)
        .await
        .expect_err("no token, and workloads must prove who they are");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("over TLS on 15012"),
        "{}",
        refused.message()
    );
}

/// A client that trusts another root fails the handshake: it never sends
/// its token to a server it cannot verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_another_root_does_not_connect() {
    let cp = start().await;
    let other = tempfile::tempdir().expect("tempdir");
    identity::Ca::self_signed("cluster.local", &other.path().join("ca")).expect("another CA");
    let other_root = other.path().join("ca").join(identity::CA_CERT_FILE);
    let address = XdsAddress::parse(
        &format!("https://127.0.0.1:{}", cp.tls_port),
        Some(&other_root),
    )
    .expect("address");
    let token = BearerToken::new(cp.secret.token("default", "sleep"));
    let key = KeyAndCsr::generate(&id("sleep")).expect("csr");
    match create_certificate(&address, &token, key.csr_pem().to_string(), None).await {
        Err(CertRequestError::Connect(e)) => assert!(
            e.reason.contains("certificate") || e.reason.contains("UnknownIssuer"),
            "the handshake fails on the server's certificate: {e}"
        ),
        other => panic!("a client with another root: {other:?}"),
    }
}

/// Opens a discovery stream as sleep's sidecar, with `token` if given.
async fn open_stream(
    address: &XdsAddress,
    token: Option<&BearerToken>,
) -> Result<(), tonic::Status> {
    let mut client = wire::pb::aggregated_discovery_client::AggregatedDiscoveryClient::new(
        address.connect().await.expect("connect"),
    );
    let first = DiscoveryRequest {
        node: Some(sleep_node()),
        type_url: wire::types::CLUSTER.into(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(tokio_stream::iter([first]));
    if let Some(token) = token {
        let value = format!("Bearer {}", token.expose()).parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    client.stream(request).await.map(|_| ())
}

fn sleep_node() -> Node {
    Node {
        id: "sleep-1.default".into(),
        pod_name: "sleep-1".into(),
        namespace: "default".into(),
        service_account: "sleep".into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    }
}

/// The types a proxy was sent.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<BTreeSet<String>>>);

impl wire::client::ConfigHandler for Received {
    fn apply(
        &self,
        type_url: &str,
        _version: &str,
        _resources: Vec<Resource>,
    ) -> Result<(), String> {
        self.0.lock().unwrap().insert(type_url.to_string());
        Ok(())
    }
}

/// Over TLS a sidecar with its token gets its config; its token file is
/// read again on every connection: refused while the file holds a stale
/// token, served once it is rewritten, without restarting the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_over_tls_reads_the_token_file_on_each_connect() {
    let cp = start().await;
    let token_file = cp.dir.path().join("istio-token");
    std::fs::write(&token_file, "expired-token\n").expect("write");
    let received = Received::default();
    tokio::spawn(wire::client::run(
        cp.tls.clone(),
        sleep_node(),
        Some(TokenSource::File(token_file.clone())),
        received.clone(),
    ));
    // The stale token is refused over TLS as well: it is not the file's
    // first reading that the client goes on using.
    let stale = BearerToken::new("expired-token");
    let refused = open_stream(&cp.tls, Some(&stale))
        .await
        .expect_err("a stale token");
    assert_eq!(
        refused.code(),
        tonic::Code::PermissionDenied,
        "{}",
        refused.message()
    );

    std::fs::write(&token_file, cp.secret.token("default", "sleep")).expect("rewrite");
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.0.lock().unwrap().len() < wire::types::ALL.len() {
        assert!(
            Instant::now() < deadline,
            "the rewritten token was not used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
