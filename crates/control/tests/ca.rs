//! The certificate service over a real gRPC connection: a workload gets a
//! certificate for its own identity with its bootstrap token, and for no other.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::free_port;

use control::bootstrap_token::TokenSecret;
use identity::{CertChain, KeyAndCsr, SpiffeId, TrustBundle};
use wire::certs::{BearerToken, CertRequestError, create_certificate};

const MESH: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: sleep-1, namespace: default, labels: {app: sleep}}
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
    endpoint: String,
    secret: TokenSecret,
    _dir: tempfile::TempDir,
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
    let xds = free_port();
    let options = control::Options {
        config_dir: config,
        xds_addr: ([127, 0, 0, 1], xds).into(),
        http_addr: ([127, 0, 0, 1], free_port()).into(),
        mesh_config: model::MeshConfig::default(),
        debounce: Duration::from_millis(50),
        ca_dir: Some(dir.path().join("ca")),
        token_secret: Some(secret_path),
        api_token_file: None,
        pod_status_file: None,
        kubernetes: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(control::run(options, async {
        let _ = stopped.await;
    }));
    let endpoint = format!("http://127.0.0.1:{xds}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", xds))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "control plane did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ControlPlane {
        endpoint,
        secret,
        _dir: dir,
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
        &cp.endpoint,
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
    let err = create_certificate(
        &cp.endpoint,
        &sleep_token,
        other.csr_pem().to_string(),
        None,
    )
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
        let err = create_certificate(&cp.endpoint, &token, key.csr_pem().to_string(), None)
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
