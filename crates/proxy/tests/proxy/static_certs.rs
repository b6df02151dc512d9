//! Mesh mTLS with the workload certificate from files (no CA): a sidecar
//! pair whose certificates come from a root made here talks mTLS, and a
//! proxy given a key that is not its certificate's refuses to start.

use std::net::SocketAddr;
use std::path::Path;

use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::pb::{self, resource::Kind};

use crate::support::*;

const TD: &str = "cluster.local";

/// A mesh root, as the CA would make it.
struct Root {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn root() -> Root {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("root key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, TD);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("root");
    Root {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `<dir>/{cert-chain,key,root-cert}.pem` for `default/<sa>`.
fn write_workload(root: &Root, sa: &str, dir: &Path) -> proxy::tls::static_files::CertFiles {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    let id = format!("spiffe://{TD}/ns/default/sa/{sa}");
    params.subject_alt_names = vec![SanType::URI(id.try_into().expect("uri"))];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &root.issuer).expect("leaf");
    let files = proxy::tls::static_files::CertFiles {
        cert_chain: dir.join("cert-chain.pem"),
        key: dir.join("key.pem"),
        roots: dir.join("root-cert.pem"),
        trust_domain: TD.into(),
    };
    std::fs::write(&files.cert_chain, cert.pem()).expect("write chain");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    std::fs::write(&files.roots, &root.pem).expect("write roots");
    files
}

fn node_config(ip: std::net::IpAddr, sa: &str) -> proxy::Config {
    let mut config = Proxy::config(ip);
    config.node.service_account = sa.into();
    config.node.pod_name = sa.into();
    config
}

#[tokio::test]
async fn a_pair_with_file_certificates_talks_mtls() {
    let root = root();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("sleep")).expect("dir");
    std::fs::create_dir_all(dir.path().join("reviews")).expect("dir");

    // Server side: STRICT inbound port in front of the app.
    let server_ip = test_ip();
    let app = upstream(server_ip, "app", Behave::default()).await;
    let inbound_port = free_port(server_ip);
    let listener = pb::Listener {
        name: format!("inbound|{inbound_port}"),
        port: u32::from(inbound_port),
        direction: pb::Direction::Inbound as i32,
        protocol: pb::Protocol::Http as i32,
        app_port: u32::from(app.port()),
        mtls_mode: pb::MtlsMode::Strict as i32,
        ..Default::default()
    };
    let mut config = node_config(server_ip, "reviews");
    config.static_certs = Some(write_workload(
        &root,
        "reviews",
        &dir.path().join("reviews"),
    ));
    let server =
        Proxy::start_with(config, vec![resource("inbound", Kind::Listener(listener))]).await;

    // Client side: ISTIO_MUTUAL to the server's inbound port, expecting its identity.
    let inbound = SocketAddr::new(server_ip, inbound_port);
    let cluster = "outbound|9080||reviews.default.svc.cluster.local";
    let resources = vec![
        resource(
            cluster,
            Kind::Cluster(pb::Cluster {
                name: cluster.into(),
                service: "reviews.default.svc.cluster.local".into(),
                connect_timeout_ms: 1000,
                tls: Some(pb::UpstreamTls {
                    mode: pb::UpstreamTlsMode::IstioMutual as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        resource(
            cluster,
            Kind::Endpoints(pb::ClusterEndpoints {
                cluster: cluster.into(),
                compact: None,
                endpoints: vec![pb::Endpoint {
                    address: inbound.ip().to_string(),
                    port: u32::from(inbound.port()),
                    identity: format!("spiffe://{TD}/ns/default/sa/reviews"),
                    healthy: true,
                    has_sidecar: true,
                    ..Default::default()
                }],
            }),
        ),
        route_config(
            "9080",
            &["reviews", "reviews:9080"],
            vec![route(
                "r",
                vec![prefix("/")],
                fwd(forward(&[(cluster, 100)])),
            )],
        ),
    ];
    let client_ip = test_ip();
    let mut config = node_config(client_ip, "sleep");
    config.static_certs = Some(write_workload(&root, "sleep", &dir.path().join("sleep")));
    let client = Proxy::start_with(config, resources).await;

    let r = client.get("reviews:9080", "/", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "app"),
        "{r:?}"
    );
    // The server side saw the client's certificate: its identity reaches the app.
    let xfcc = r.header("echo-x-forwarded-client-cert");
    assert!(
        xfcc.contains(&format!("URI=spiffe://{TD}/ns/default/sa/sleep")),
        "{r:?}"
    );

    // STRICT: the same port refuses plaintext.
    let mut plain = tokio::net::TcpStream::connect(inbound)
        .await
        .expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plaintext got through a STRICT port: {}",
        String::from_utf8_lossy(&buf)
    );

    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_at_start() {
    let root = root();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).expect("dir");
    std::fs::create_dir_all(&b).expect("dir");
    let files = write_workload(&root, "reviews", &a);
    let other = write_workload(&root, "reviews", &b);
    let mut config = node_config(test_ip(), "reviews");
    config.static_certs = Some(proxy::tls::static_files::CertFiles {
        key: other.key.clone(),
        ..files
    });
    let dir2 = tempfile::tempdir().expect("tempdir");
    let path = dir2.path().join("config.json");
    std::fs::write(&path, r#"{"resources": []}"#).expect("write config");
    config.static_config = Some(path);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        proxy::run(config, std::future::pending()),
    )
    .await
    .expect("the proxy returns at once");
    let err = result.expect_err("a wrong key must stop the proxy");
    let text = err.to_string();
    assert!(
        text.contains(&other.key.display().to_string()) && text.contains("does not belong"),
        "{text}"
    );
}

/// A mesh server the test runs itself: presents `reviews`' certificate and
/// answers every request with the address the connection came from.
async fn source_reporting_server(root: &Root, dir: &Path) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let files = write_workload(root, "reviews", dir);
    let chain = CertificateDer::pem_file_iter(&files.cert_chain)
        .expect("chain")
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(identity::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind((test_ip(), 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Two proxies in one process, each with a loopback pod address of its
/// own (as `trellis up` without namespaces gives them): each one's mesh
/// connections come from its own address, which is how a server tells its
/// callers apart on a shared `lo`.
#[tokio::test]
async fn proxies_in_one_process_dial_from_their_own_pod_addresses() {
    let root = root();
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["reviews", "a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
    }
    let server = source_reporting_server(&root, &dir.path().join("reviews")).await;
    let cluster = "outbound|9080||reviews.default.svc.cluster.local";
    let resources = || {
        vec![
            resource(
                cluster,
                Kind::Cluster(pb::Cluster {
                    name: cluster.into(),
                    service: "reviews.default.svc.cluster.local".into(),
                    connect_timeout_ms: 1000,
                    tls: Some(pb::UpstreamTls {
                        mode: pb::UpstreamTlsMode::IstioMutual as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ),
            resource(
                cluster,
                Kind::Endpoints(pb::ClusterEndpoints {
                    cluster: cluster.into(),
                    compact: None,
                    endpoints: vec![pb::Endpoint {
                        address: server.ip().to_string(),
                        port: u32::from(server.port()),
                        identity: format!("spiffe://{TD}/ns/default/sa/reviews"),
                        healthy: true,
                        has_sidecar: true,
                        ..Default::default()
                    }],
                }),
            ),
            route_config(
                "9080",
                &["reviews", "reviews:9080"],
                vec![route(
                    "r",
                    vec![prefix("/")],
                    fwd(forward(&[(cluster, 100)])),
                )],
            ),
        ]
    };
    let mut proxies = Vec::new();
    for sa in ["a", "b"] {
        let ip = test_ip();
        let mut config = node_config(ip, "sleep");
        config.static_certs = Some(write_workload(&root, "sleep", &dir.path().join(sa)));
        proxies.push((ip, Proxy::start_with(config, resources()).await));
    }
    for (ip, proxy) in &proxies {
        let r = proxy.get("reviews:9080", "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(
            r.body,
            ip.to_string(),
            "the proxy at {ip} dialled from elsewhere"
        );
    }
    for (_, proxy) in proxies {
        proxy.stop().await;
    }
}
