//! The client certificates the refusal test presents to a STRICT sidecar:
//! a workload's look-alike with one thing changed (forged, expired, no SPIFFE
//! id), a root of nobody's mesh, and a tokio-rustls client that presents them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS client that checks nothing about the server: these tests are about
/// what the *server* sidecar accepts.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate as a workload's would look, with one thing changed.
pub(super) struct ClientCert {
    /// The URI SAN; `None`: no SAN at all.
    pub(super) uri: Option<String>,
    pub(super) not_before: time::OffsetDateTime,
    pub(super) not_after: time::OffsetDateTime,
}

impl ClientCert {
    pub(super) fn valid_for(id: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        ClientCert {
            uri: Some(id.to_string()),
            not_before: now - time::Duration::minutes(2),
            not_after: now + time::Duration::hours(1),
        }
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(uri) = &self.uri {
            params.subject_alt_names = vec![SanType::URI(uri.clone().try_into()?)];
        } else {
            // Something to identify it by, but no SPIFFE id.
            params.distinguished_name.push(DnType::CommonName, "echo-a");
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        Ok(params)
    }

    /// Signed by `issuer` (its certificate PEM and key PEM); self-signed if `None`.
    pub(super) fn issue(
        &self,
        issuer: Option<(&str, &str)>,
    ) -> Result<(CertificateDer<'static>, KeyPair)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = self.params()?;
        let cert = match issuer {
            Some((cert_pem, key_pem)) => {
                let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
                params.signed_by(&key, &issuer)?
            }
            None => params.self_signed(&key)?,
        };
        Ok((cert.der().clone(), key))
    }
}

/// A root CA of nobody's mesh: its certificate and key, PEM.
pub(super) fn foreign_root() -> Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    // Named as the mesh's own self-signed root is: only the key differs.
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cluster.local");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Connects to `addr` with the client certificate `cert`, as a mesh client
/// would (ALPN http/1.1 + istio), and sends a request. `Ok(status line)` if
/// the sidecar answered; `Err` if the handshake or the request was refused.
/// Also returns the local address, which the sidecar's log names.
pub(super) async fn mtls_request(
    addr: &str,
    cert: CertificateDer<'static>,
    key: &KeyPair,
) -> Result<(SocketAddr, Result<String>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"istio".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let local = tcp.local_addr()?;
    let name = rustls_pki_types::ServerName::try_from(
        "outbound_.8080_._.echo-b.default.svc.cluster.local",
    )?;
    let outcome = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // With TLS 1.3 the server checks the client's certificate after the
        // client is done: a refusal shows on the first read.
        tls.write_all(b"GET /crafted HTTP/1.1\r\nhost: echo-b:8080\r\nconnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        ensure!(
            !text.is_empty(),
            "the connection was closed without a reply"
        );
        Ok(text.lines().next().unwrap_or_default().to_string())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 10 s")));
    Ok((local, outcome))
}
