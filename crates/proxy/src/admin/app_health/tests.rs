//! Against real servers started here: a gRPC server with the standard
//! health service (tonic-health), and an HTTPS server with a self-signed
//! certificate the probe does not verify, as the kubelet does not.

use std::net::{IpAddr, Ipv4Addr};

use hyper::service::service_fn;
use tonic_health::ServingStatus;

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn grpc(port: u16, service: Option<&str>) -> AppProbe {
    AppProbe {
        http_get: None,
        tcp_socket: None,
        grpc: Some(GrpcAction {
            port,
            service: service.map(String::from),
        }),
        timeout_seconds: 5,
    }
}

fn https(port: u16, path: &str) -> AppProbe {
    AppProbe {
        http_get: Some(HttpGet {
            path: path.into(),
            port,
            host: None,
            scheme: Some("HTTPS".into()),
            http_headers: vec![Header {
                name: "x-probe".into(),
                value: "yes".into(),
            }],
        }),
        tcp_socket: None,
        grpc: None,
        timeout_seconds: 5,
    }
}

#[tokio::test]
async fn grpc_probes_ask_the_standard_health_service() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Reviews", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // The server as a whole serves (tonic-health sets "" to SERVING).
    assert_eq!(check(&grpc(port, None), LOOPBACK).await, Ok(StatusCode::OK));
    let e = check(&grpc(port, Some("shop.Reviews")), LOOPBACK)
        .await
        .unwrap_err();
    assert!(e.contains("NOT_SERVING"), "{e}");
    reporter
        .set_service_status("shop.Reviews", ServingStatus::Serving)
        .await;
    assert_eq!(
        check(&grpc(port, Some("shop.Reviews")), LOOPBACK).await,
        Ok(StatusCode::OK)
    );
    // A service the server does not know: NOT_FOUND, a failure.
    let e = check(&grpc(port, Some("shop.Unknown")), LOOPBACK)
        .await
        .unwrap_err();
    assert!(e.contains("NotFound"), "{e}");
    server.abort();

    // Nobody listening: a failure that says where.
    let closed = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = check(&grpc(port, None), LOOPBACK).await.unwrap_err();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[tokio::test]
async fn https_probes_speak_tls_without_verifying_the_certificate() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let answer = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let ok = req.uri().path() == "/healthz"
                        && req.headers().get("x-probe").is_some_and(|v| v == "yes")
                        && req
                            .headers()
                            .get(http::header::USER_AGENT)
                            .is_some_and(|v| v == "kube-probe");
                    let status = if ok {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    http::Response::builder()
                        .status(status)
                        .body(Empty::<Bytes>::new())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), answer)
                    .await;
            });
        }
    });

    assert_eq!(
        check(&https(port, "/healthz"), LOOPBACK).await,
        Ok(StatusCode::NO_CONTENT)
    );
    // The application's own answer is passed on.
    assert_eq!(
        check(&https(port, "/other"), LOOPBACK).await,
        Ok(StatusCode::SERVICE_UNAVAILABLE)
    );
    // Plain HTTP to the TLS port is not an answer.
    let mut plain = https(port, "/healthz");
    if let Some(get) = plain.http_get.as_mut() {
        get.scheme = Some("HTTP".into());
    }
    assert!(check(&plain, LOOPBACK).await.is_err());
    server.abort();
}

#[test]
fn istio_probers_with_https_and_grpc_parse() {
    let probers: std::collections::BTreeMap<String, AppProbe> = serde_json::from_str(
        r#"{"/app-health/app/livez":{"httpGet":{"path":"/ready","port":8443,"scheme":"HTTPS"},"timeoutSeconds":3},
            "/app-health/app/readyz":{"grpc":{"port":9090,"service":"shop.Reviews"},"timeoutSeconds":1},
            "/app-health/app/startupz":{"grpc":{"port":9090,"service":null}}}"#,
    )
    .unwrap();
    assert_eq!(
        probers["/app-health/app/livez"]
            .http_get
            .as_ref()
            .and_then(|g| g.scheme.as_deref()),
        Some("HTTPS")
    );
    assert_eq!(
        probers["/app-health/app/readyz"].grpc,
        Some(GrpcAction {
            port: 9090,
            service: Some("shop.Reviews".into())
        })
    );
    assert_eq!(probers["/app-health/app/startupz"].timeout_seconds, 1);
}
