//! Where a proxy reaches the control plane, and how it knows that the other
//! end is the control plane before it sends a token there.
//!
//! - `https://host:port`: TLS (Istio's 15012), the server's certificate
//!   verified with the mesh root (`root-cert.pem`) for the name `host`, as
//!   Istio's agents verify istiod's for `istiod.istio-system.svc`.
//! - `http://host:port`: plaintext (Istio's 15010): config only. A token is
//!   never sent there unless the host is a loopback address, and even then
//!   the control plane refuses it.
//! - `host:port`, as Istio reads `discoveryAddress`: plaintext on port 15010,
//!   TLS on any other.
//!
//! The root file is read again for every connection, so a root the
//! `istio-ca-root-cert` ConfigMap's mount brings is used from the next one.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

/// Istio's plaintext discovery port: config only, no certificates, no tokens.
pub const PLAINTEXT_PORT: u16 = 15010;
/// Istio's TLS port for discovery and the CA.
pub const TLS_PORT: u16 = 15012;
/// Where Istio mounts the mesh root in a pod (the `istio-ca-root-cert` ConfigMap).
pub const DEFAULT_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";

/// How long connecting (TCP and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane's discovery or certificate service.
#[derive(Clone)]
pub struct XdsAddress {
    /// As the operator wrote it, for messages.
    given: String,
    /// With the scheme that says plaintext (`http`) or TLS (`https`).
    uri: Uri,
    /// The name the server's certificate must carry (brackets of an IPv6
    /// address removed).
    host: String,
    /// The mesh root verifying the server: `Some` exactly for TLS.
    root_cert: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("control plane address {address:?}: {reason}")]
    Invalid { address: String, reason: String },
    #[error(
        "control plane address {address}: TLS needs the mesh root certificate to verify the control plane (--xds-root-cert, or XDS_ROOT_CA)"
    )]
    NoRootCert { address: String },
    #[error("control plane address {address}: the root certificate {}: {reason}", path.display())]
    RootCert {
        address: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "refusing to send the workload's token in plaintext to {address}: anyone on the path could read it and take the workload's identity; use https://<control plane>:{TLS_PORT} with the mesh root (--xds-root-cert)"
    )]
    PlaintextToken { address: String },
}

/// Why no connection to the control plane was made.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the control plane at {address}: {reason}")]
pub struct ConnectError {
    pub address: String,
    pub reason: String,
}

impl XdsAddress {
    /// Reads `address` (see the module's documentation); `root_cert` is the
    /// mesh root, required (and checked now) when the address is TLS, not
    /// used otherwise.
    pub fn parse(address: &str, root_cert: Option<&Path>) -> Result<XdsAddress, AddressError> {
        let invalid = |reason: String| AddressError::Invalid {
            address: address.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = address.strip_prefix("https://") {
            (Some(true), rest)
        } else if let Some(rest) = address.strip_prefix("http://") {
            (Some(false), rest)
        } else if address.contains("://") {
            return Err(invalid("the scheme must be https:// or http://".into()));
        } else {
            (None, address)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(invalid("expected [https://|http://]host:port".into()));
        }
        let authority: tonic::codegen::http::uri::Authority =
            rest.parse().map_err(|e| invalid(format!("{e}")))?;
        let tls = match tls {
            Some(tls) => tls,
            None => match authority.port_u16() {
                Some(port) => port != PLAINTEXT_PORT,
                None => {
                    return Err(invalid(format!(
                        "give the port: host:{TLS_PORT} (TLS) or host:{PLAINTEXT_PORT} (plaintext)"
                    )));
                }
            },
        };
        let scheme = if tls { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let root_cert = if tls {
            let path = root_cert.ok_or_else(|| AddressError::NoRootCert {
                address: address.to_string(),
            })?;
            // Checked now, so a wrong path stops the proxy at start with its name.
            read_roots(path).map_err(|reason| AddressError::RootCert {
                address: address.to_string(),
                path: path.to_path_buf(),
                reason,
            })?;
            Some(path.to_path_buf())
        } else {
            None
        };
        Ok(XdsAddress {
            given: address.to_string(),
            uri,
            host,
            root_cert,
        })
    }

    /// Whether connections are TLS, verified with the mesh root.
    pub fn is_tls(&self) -> bool {
        self.root_cert.is_some()
    }

    /// Whether a token may be sent here: over TLS, or over plaintext to this
    /// machine only (where the control plane refuses it with a clear status).
    pub fn check_token_allowed(&self) -> Result<(), AddressError> {
        let loopback = self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if self.is_tls() || loopback {
            Ok(())
        } else {
            Err(AddressError::PlaintextToken {
                address: self.given.clone(),
            })
        }
    }

    /// A gRPC channel to the control plane; over TLS, only once its
    /// certificate chains to the mesh root and names the host.
    pub async fn connect(&self) -> Result<Channel, ConnectError> {
        let failed = |reason: String| ConnectError {
            address: self.given.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from(self.uri.clone()).connect_timeout(CONNECT_TIMEOUT);
        if let Some(path) = &self.root_cert {
            let pem = tokio::fs::read(path).await.map_err(|e| {
                failed(format!(
                    "reading the root certificate {}: {e}",
                    path.display()
                ))
            })?;
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(self.host.clone());
            endpoint = endpoint.tls_config(tls).map_err(|e| failed(causes(&e)))?;
        }
        endpoint.connect().await.map_err(|e| failed(causes(&e)))
    }
}

/// The certificates of the PEM file at `path`; at least one.
fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// An error and its causes, one after the other: tonic's own message says
/// only "transport error", the cause (refused, a certificate the root does
/// not sign...) is further down.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl fmt::Display for XdsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.given)
    }
}

impl fmt::Debug for XdsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsAddress")
            .field("address", &self.given)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIBXTCCAQOgAwIBAgIUY2FsbWx5LXRlc3Qtcm9vdC1jZXJ0MAoGCCqGSM49BAMC\n-----END CERTIFICATE-----\n";

    fn root_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), ROOT).expect("write");
        file
    }

    #[test]
    fn schemes_and_istios_bare_addresses() {
        let root = root_file();
        let tls = XdsAddress::parse("https://istiod.istio-system.svc:15012", Some(root.path()))
            .expect("https");
        assert!(tls.is_tls());
        assert_eq!(tls.host, "istiod.istio-system.svc");
        // Bare, as Istio's discoveryAddress: plaintext only on 15010.
        assert!(
            XdsAddress::parse("istiod.istio-system.svc:15012", Some(root.path()))
                .expect("bare")
                .is_tls()
        );
        assert!(
            !XdsAddress::parse("127.0.0.1:15010", None)
                .expect("bare")
                .is_tls()
        );
        let v6 = XdsAddress::parse("https://[::1]:15012", Some(root.path())).expect("v6");
        assert_eq!(v6.host, "::1");
        for bad in ["ftp://x:1", "https://", "istiod", "http://h:1/path"] {
            assert!(
                matches!(
                    XdsAddress::parse(bad, Some(root.path())),
                    Err(AddressError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_needs_a_root_certificate_that_is_one() {
        assert!(matches!(
            XdsAddress::parse("https://cp:15012", None),
            Err(AddressError::NoRootCert { .. })
        ));
        let missing =
            XdsAddress::parse("https://cp:15012", Some(Path::new("/nonexistent/root.pem")));
        assert!(
            matches!(missing, Err(AddressError::RootCert { .. })),
            "{missing:?}"
        );
        let empty = tempfile::NamedTempFile::new().expect("temp file");
        let err = XdsAddress::parse("https://cp:15012", Some(empty.path())).expect_err("empty");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn no_token_in_plaintext_off_this_machine() {
        let root = root_file();
        for local in [
            "http://127.0.0.1:15010",
            "http://localhost:15010",
            "http://[::1]:15010",
        ] {
            assert!(
                XdsAddress::parse(local, None)
                    .expect("parse")
                    .check_token_allowed()
                    .is_ok(),
                "{local}"
            );
        }
        let remote =
            XdsAddress::parse("http://istiod.istio-system.svc:15010", None).expect("parse");
        let err = remote
            .check_token_allowed()
            .expect_err("plaintext to another host");
        assert!(err.to_string().contains("refusing to send"), "{err}");
        assert!(
            XdsAddress::parse("https://istiod.istio-system.svc:15012", Some(root.path()))
                .expect("parse")
                .check_token_allowed()
                .is_ok()
        );
    }
}
