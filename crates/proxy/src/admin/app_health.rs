//! An application's probes as a kubelet makes them, from inside the pod:
//! the sidecar's `/app-health/…` (Istio's `ISTIO_KUBE_APP_PROBERS` entries)
//! and `trellis node`'s own prober both run them here.
//! - `httpGet`: one HTTP/1.1 GET, over TLS for `scheme: HTTPS` without
//!   verifying the certificate (as the kubelet: a probe checks liveness,
//!   not identity); the application's status code is the answer;
//! - `tcpSocket`: the port accepts a connection;
//! - `grpc`: `grpc.health.v1.Health/Check` over h2c for `service` (empty:
//!   the server as a whole); `SERVING` passes, anything else fails.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

/// One of the application's original probes (Istio's `Prober`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    pub grpc: Option<GrpcAction>,
    /// The kubelet's default: 1 s.
    #[serde(default = "one")]
    pub timeout_seconds: u64,
}

fn one() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default)]
    pub path: String,
    pub port: u16,
    /// Sent as the `Host` header.
    pub host: Option<String>,
    /// `HTTP` (the default) or `HTTPS`.
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TcpSocket {
    pub port: u16,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GrpcAction {
    pub port: u16,
    /// The service name to check; none or empty: the server's overall health.
    pub service: Option<String>,
}

/// Runs `probe` against the application at `ip`: the HTTP status the
/// application answered (200 for a TCP or gRPC probe that passed), or why
/// it could not be probed or failed.
pub async fn check(probe: &AppProbe, ip: IpAddr) -> Result<StatusCode, String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1));
    let within = |what: String| move |_| format!("{what}: no answer within {timeout:?}");
    if let Some(get) = &probe.http_get {
        let addr = SocketAddr::new(ip, get.port);
        let https = get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let what = format!(
            "{}://{addr}{}",
            if https { "https" } else { "http" },
            get.path
        );
        return tokio::time::timeout(timeout, http_get(addr, get, https))
            .await
            .map_err(within(what.clone()))?
            .map_err(|e| format!("{what}: {e}"));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let addr = SocketAddr::new(ip, tcp.port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(StatusCode::OK),
            Ok(Err(e)) => Err(format!("{addr}: {e}")),
            Err(_) => Err(format!("{addr}: no connection within {timeout:?}")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let addr = SocketAddr::new(ip, grpc.port);
        let service = grpc.service.clone().unwrap_or_default();
        let what = format!("gRPC health of {service:?} at {addr}");
        return tokio::time::timeout(timeout, grpc_check(addr, service))
            .await
            .map_err(within(what.clone()))?
            .map_err(|e| format!("{what}: {e}"));
    }
    Err("the probe has none of httpGet, tcpSocket and grpc".into())
}

async fn http_get(addr: SocketAddr, get: &HttpGet, https: bool) -> Result<StatusCode, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    if !https {
        return exchange(stream, addr, get).await;
    }
    // The kubelet names the server by the address it dials: an IP, so no SNI.
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(tls_config()?)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    exchange(tls, addr, get).await
}

async fn exchange<S>(stream: S, addr: SocketAddr, get: &HttpGet) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = if get.path.is_empty() { "/" } else { &get.path };
    // A `Host` among the probe's headers is the one sent, as the kubelet does.
    let is_host = |h: &&Header| h.name.eq_ignore_ascii_case("host");
    let host = match get.http_headers.iter().find(is_host) {
        Some(h) => h.value.clone(),
        None => get.host.clone().unwrap_or_else(|| addr.to_string()),
    };
    let mut builder = Request::get(path).header(http::header::HOST, host);
    for h in get.http_headers.iter().filter(|h| !is_host(h)) {
        builder = builder.header(h.name.as_str(), h.value.as_str());
    }
    let request = builder
        .header(http::header::USER_AGENT, "kube-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read to the end, as the kubelet does (it keeps up to 10 KiB of it).
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

async fn grpc_check(addr: SocketAddr, service: String) -> Result<StatusCode, String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match answer.status() {
        ServingStatus::Serving => Ok(StatusCode::OK),
        other => Err(format!("status {}", other.as_str_name())),
    }
}

/// TLS that accepts any server certificate (handshake signatures are still
/// checked), as the kubelet's HTTPS probe.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
