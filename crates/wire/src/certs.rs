//! The proxy's side of the certificate service: send a CSR, authenticated by
//! the workload's bootstrap token, and get back the signed chain and the mesh
//! roots. The private key never travels: only the CSR does.

use std::fmt;
use std::time::Duration;

use tonic::metadata::MetadataValue;

use crate::pb::CertificateRequest;
use crate::pb::certificate_service_client::CertificateServiceClient;

/// The metadata key carrying the token, as Istio's agents send it.
pub const AUTHORIZATION: &str = "authorization";

/// A credential that proves which workload is asking. Its `Debug` and
/// `Display` never show the value, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The raw value, for the one place that must send or check it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the token from `authorization: Bearer <token>` metadata.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Self> {
        let value = metadata.get(AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        (!token.is_empty()).then(|| BearerToken(token.to_string()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// What the CA returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// Concatenated PEM, leaf first.
    pub chain_pem: String,
    /// Concatenated PEM: the mesh trust bundle.
    pub roots_pem: String,
}

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum CertRequestError {
    #[error("cannot reach the certificate service at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("the bootstrap token cannot be sent as gRPC metadata (it must be printable ASCII)")]
    BadToken,
    #[error("the certificate service refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the certificate service returned {what}")]
    Incomplete { what: &'static str },
}

/// Asks the CA at `endpoint` (e.g. `http://127.10.0.1:15010`) to sign `csr_pem`.
/// `validity`: `None` lets the CA choose (its default, 24 h in Istio).
pub async fn create_certificate(
    endpoint: &str,
    token: &BearerToken,
    csr_pem: String,
    validity: Option<Duration>,
) -> Result<Issued, CertRequestError> {
    let mut client = CertificateServiceClient::connect(endpoint.to_string())
        .await
        .map_err(|e| CertRequestError::Connect {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let mut request = tonic::Request::new(CertificateRequest {
        csr: csr_pem,
        validity_seconds: validity.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    });
    let value: MetadataValue<_> = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| CertRequestError::BadToken)?;
    request.metadata_mut().insert(AUTHORIZATION, value);
    let response = client
        .create_certificate(request)
        .await
        .map_err(|s| CertRequestError::Refused {
            code: s.code(),
            message: s.message().to_string(),
        })?
        .into_inner();
    if response.cert_chain.is_empty() {
        return Err(CertRequestError::Incomplete {
            what: "no certificate chain",
        });
    }
    if response.roots.is_empty() {
        return Err(CertRequestError::Incomplete { what: "no roots" });
    }
    Ok(Issued {
        chain_pem: join_pem(&response.cert_chain),
        roots_pem: join_pem(&response.roots),
    })
}

/// PEM blocks one after the other, each ending in a newline.
fn join_pem(blocks: &[String]) -> String {
    let mut out = String::new();
    for b in blocks {
        out.push_str(b.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_never_printed() {
        let t = BearerToken::new("s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn token_from_metadata() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(BearerToken::from_metadata(&m), None);
        m.insert(AUTHORIZATION, "Basic abc".parse().expect("ascii"));
        assert_eq!(BearerToken::from_metadata(&m), None);
        m.insert(AUTHORIZATION, "Bearer abc".parse().expect("ascii"));
        assert_eq!(
            BearerToken::from_metadata(&m),
            Some(BearerToken::new("abc"))
        );
    }
}
