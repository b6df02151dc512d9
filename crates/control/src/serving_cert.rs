//! The control plane's own TLS serving certificate, issued by the mesh CA
//! for the istiod Service's names, as istiod's DNS certificate: what the
//! discovery and CA listener (15012) and the admission webhooks (15017)
//! present. Clients verify it with the mesh root they already hold (proxies:
//! the `istio-ca-root-cert` ConfigMap; the API server: the webhook
//! configurations' `caBundle`), and every replica's certificate chains to
//! that one root, where self-signed certificates would need every replica's
//! in every client.
//!
//! Renewed at half its lifetime. The certificate is the resolver of the TLS
//! configs built from it, so each new handshake gets the newest one while
//! connections already open (the proxies' discovery streams) go on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use identity::Ca;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

use crate::live_ca::LiveCa;

/// How long a serving certificate is valid; renewed at half of it.
pub const TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A failed renewal is tried again this soon (the certificate in use is
/// still valid for half its lifetime).
const RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    #[error("issuing the control plane's serving certificate: {0}")]
    Issue(#[from] identity::CaError),
    #[error("the control plane's serving certificate: {0}")]
    Tls(String),
}

/// A serving certificate kept fresh.
pub struct ServingCert {
    /// Replaceable (a reloaded `cacerts`): each renewal asks the CA of the day.
    ca: Arc<LiveCa>,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    ttl: Duration,
    current: ArcSwap<CertifiedKey>,
}

impl ServingCert {
    /// Issues the first certificate for `names` (DNS SANs) and `ips` (IP SANs).
    pub fn issue(
        ca: Arc<LiveCa>,
        names: Vec<String>,
        ips: Vec<IpAddr>,
        ttl: Duration,
    ) -> Result<Arc<ServingCert>, ServingCertError> {
        let first = certified_key(&ca.current(), &names, &ips, ttl)?;
        Ok(Arc::new(ServingCert {
            ca,
            names,
            ips,
            ttl,
            current: ArcSwap::from_pointee(first),
        }))
    }

    /// Replaces the certificate with a new one (a new key too); new
    /// handshakes present it from now on.
    pub fn renew(&self) -> Result<(), ServingCertError> {
        let next = certified_key(&self.ca.current(), &self.names, &self.ips, self.ttl)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Renews at half of each certificate's lifetime, and when the CA is
    /// replaced (so that the certificate chains to the new root), for ever.
    pub async fn renew_at_half_life(self: Arc<Self>) {
        let mut wait = self.ttl / 2;
        let mut roots = self.ca.roots();
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = roots.changed() => {
                    if changed.is_err() {
                        // The CA is gone: keep the time-based renewals.
                        roots = self.ca.roots();
                    }
                }
            }
            wait = match self.renew() {
                Ok(()) => {
                    tracing::info!(names = ?self.names, ips = ?self.ips, "renewed the control plane's serving certificate");
                    self.ttl / 2
                }
                Err(error) => {
                    tracing::warn!(%error, "could not renew the control plane's serving certificate; retrying");
                    RETRY
                }
            };
        }
    }

    /// A TLS server config presenting this certificate (and its renewals),
    /// offering `alpn` (`h2` for gRPC, `http/1.1` for the webhooks).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, ServingCertError> {
        let mut config = ServerConfig::builder_with_provider(identity::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServingCertError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The roots clients verify the certificate with (PEM): the mesh's.
    pub fn roots_pem(&self) -> String {
        self.ca.current().roots().concat()
    }
}

fn certified_key(
    ca: &Ca,
    names: &[String],
    ips: &[IpAddr],
    ttl: Duration,
) -> Result<CertifiedKey, ServingCertError> {
    let (chain, key) = ca.issue_serving_cert(names, ips, ttl)?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| ServingCertError::Tls(e.to_string()))?;
    CertifiedKey::from_der(chain.certs().to_vec(), key, &identity::crypto_provider())
        .map_err(|e| ServingCertError::Tls(e.to_string()))
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("ips", &self.ips)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The names the istiod Service answers to in `namespace`, as istiod's DNS
/// certificate carries them.
pub fn service_names(namespace: &str, domain_suffix: &str) -> Vec<String> {
    let mut names = vec![
        "istiod".to_string(),
        format!("istiod.{namespace}"),
        format!("istiod.{namespace}.svc"),
    ];
    if !domain_suffix.is_empty() {
        names.push(format!("istiod.{namespace}.svc.{domain_suffix}"));
    }
    names
}

/// The listen address's IP as a SAN, for clients that reach the listener by
/// address (a test's or `trellis up`'s loopback address, a webhook's
/// `clientConfig.url`); on every address, the loopback ones.
pub fn address_sans(addr: SocketAddr) -> Vec<IpAddr> {
    if addr.ip().is_unspecified() {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ]
    } else {
        vec![addr.ip()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS client trusting the mesh root, connected to `addr` as `name`.
    async fn connect(
        roots: &str,
        addr: SocketAddr,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut store = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(roots.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(identity::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("istiod.istio-system.svc").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    fn leaf(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// An echo server over TLS with the serving certificate, and a
    /// connection made before a renewal: it goes on with the certificate it
    /// started with, while the next handshake gets the new one.
    #[tokio::test]
    async fn a_renewal_serves_new_handshakes_and_keeps_open_connections() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LiveCa::new(Ca::self_signed("cluster.local", &dir.path().join("ca")).unwrap());
        let cert = ServingCert::issue(
            ca,
            service_names("istio-system", "cluster.local"),
            vec![],
            Duration::from_secs(3600),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&[b"h2"]).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let roots = cert.roots_pem();
        let mut before = connect(&roots, addr).await;
        let first = leaf(&before);

        cert.renew().unwrap();
        let after = connect(&roots, addr).await;
        assert_ne!(
            leaf(&after),
            first,
            "a new handshake gets the renewed certificate"
        );

        before.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        before.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            &buf, b"still here",
            "the connection made before the renewal goes on"
        );
    }
}
