//! The kubelet endpoints `kubectl logs`, `exec` and `port-forward` need:
//! the API server proxies `GET /containerLogs/<namespace>/<pod>/<container>`
//! (and the streaming ones, [`super::streaming`]) to the node's
//! address and `daemonEndpoints.kubeletEndpoint` port, over TLS. Served on
//! the node's address (the host's end of the pod network) with a
//! self-signed certificate made at start — an API server without
//! `--kubelet-certificate-authority` does not verify it, as with a
//! kubelet's own self-signed one. Only the host may call it: pods share
//! the network the node's address is on, and must not read each other's
//! logs. `follow` returns what is written so far and ends; `previous` is
//! the same file (a restarted container appends to it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The kubelet's port.
pub const PORT: u16 = 10250;

/// Binds `ip:10250`; the returned future serves until dropped.
pub async fn serve(ip: Ipv4Addr, logs: PathBuf) -> Result<impl Future<Output = ()>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(ip)));
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = ServerConfig::builder_with_provider(identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let addr = SocketAddr::from((ip, PORT));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (the kubelet API, for kubectl logs)"))?;
    let logs = Arc::new(logs);
    Ok(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            // The API server runs on the host and comes from the node's own address.
            if peer.ip() != IpAddr::V4(ip) && !peer.ip().is_loopback() {
                continue;
            }
            let (acceptor, logs) = (acceptor.clone(), logs.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let logs = logs.clone();
                    async move {
                        if super::streaming::serves(req.uri().path()) {
                            return Ok(super::streaming::handle(req, &logs));
                        }
                        let (status, body) = answer(&req, &logs);
                        Ok::<_, std::convert::Infallible>(text(status, body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

fn text(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

fn answer<B>(req: &Request<B>, logs: &std::path::Path) -> (StatusCode, Vec<u8>) {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts[..] else {
        return (
            StatusCode::NOT_FOUND,
            b"trellis node serves only /containerLogs/<namespace>/<pod>/<container>\n".to_vec(),
        );
    };
    let safe = |s: &str| !s.is_empty() && !s.contains("..") && !s.contains('/');
    if req.method() != http::Method::GET || ![namespace, pod, container].iter().all(|s| safe(s)) {
        return (StatusCode::BAD_REQUEST, b"bad request\n".to_vec());
    }
    let file = logs.join(format!("{namespace}.{pod}.{container}.log"));
    let Ok(content) = std::fs::read(&file) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no log for container {container} of pod {namespace}/{pod} on this node\n")
                .into_bytes(),
        );
    };
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let mut body = &content[..];
    if let Some(n) = param("tailLines") {
        let mut seen = 0;
        let end = body
            .len()
            .saturating_sub(usize::from(body.ends_with(b"\n")));
        let start = body[..end]
            .iter()
            .rposition(|b| {
                *b == b'\n' && {
                    seen += 1;
                    seen == n
                }
            })
            .map_or(0, |i| i + 1);
        body = if n == 0 { &[] } else { &body[start..] };
    }
    if let Some(limit) = param("limitBytes") {
        body = &body[..body.len().min(limit)];
    }
    (StatusCode::OK, body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_by_path_with_tail_and_no_escape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.p.istio-proxy.log"), "a\nb\nc\n").unwrap();
        let get = |uri: &str| answer(&Request::get(uri).body(()).unwrap(), dir.path());
        assert_eq!(get("/containerLogs/ns/p/istio-proxy").1, b"a\nb\nc\n");
        assert_eq!(
            get("/containerLogs/ns/p/istio-proxy?tailLines=2").1,
            b"b\nc\n"
        );
        assert_eq!(get("/containerLogs/ns/p/istio-proxy?tailLines=0").1, b"");
        assert_eq!(get("/containerLogs/ns/p/other").0, StatusCode::NOT_FOUND);
        assert_eq!(
            get("/containerLogs/../p/istio-proxy").0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get("/pods").0, StatusCode::NOT_FOUND);
    }
}
