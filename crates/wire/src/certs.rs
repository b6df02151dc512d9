//! The proxy's side of the certificate service: send a CSR, authenticated by
//! the workload's token, and get back the signed chain and the mesh roots.
//! The private key never travels: only the CSR does, and the token only over
//! TLS (see [`crate::address`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::MetadataValue;

use crate::address::{AddressError, ConnectError, XdsAddress};
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

/// Where the workload's token comes from. A file is read again for every
/// connection and every certificate request: the kubelet rotates a projected
/// service-account token (and it expires, 12 h after it was made), so the
/// one read at start stops working.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A token that does not change (`trellis up`'s bootstrap token).
    Value(BearerToken),
    /// The file holding the token (on Kubernetes the projected token,
    /// /var/run/secrets/tokens/istio-token).
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} is empty", path.display())]
    Empty { path: PathBuf },
}

impl TokenSource {
    /// The token as of now.
    pub async fn read(&self) -> Result<BearerToken, TokenError> {
        match self {
            TokenSource::Value(token) => Ok(token.clone()),
            TokenSource::File(path) => {
                let text =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| TokenError::Read {
                            path: path.clone(),
                            source,
                        })?;
                let token = BearerToken::new(text.trim());
                if token.is_empty() {
                    return Err(TokenError::Empty { path: path.clone() });
                }
                Ok(token)
            }
        }
    }
}

/// The `authorization` metadata value carrying `token`.
pub(crate) fn authorization(token: &BearerToken) -> Option<MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {}", token.expose()).parse().ok()
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
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("certificate service: {0}")]
    Connect(#[from] ConnectError),
    #[error("the token cannot be sent as gRPC metadata (it must be printable ASCII)")]
    BadToken,
    #[error("the certificate service refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the certificate service returned {what}")]
    Incomplete { what: &'static str },
}

/// Asks the CA at `address` (e.g. `https://127.10.0.1:15012`) to sign
/// `csr_pem`. `validity`: `None` lets the CA choose (its default, 24 h in
/// Istio). The token is sent only where [`XdsAddress::check_token_allowed`] says.
pub async fn create_certificate(
    address: &XdsAddress,
    token: &BearerToken,
    csr_pem: String,
    validity: Option<Duration>,
) -> Result<Issued, CertRequestError> {
    address.check_token_allowed()?;
    let value = authorization(token).ok_or(CertRequestError::BadToken)?;
    let mut client = CertificateServiceClient::new(address.connect().await?);
    let mut request = tonic::Request::new(CertificateRequest {
        csr: csr_pem,
        validity_seconds: validity.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    });
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

    #[tokio::test]
    async fn a_token_file_is_read_each_time() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let source = TokenSource::File(file.path().to_path_buf());
        assert!(matches!(source.read().await, Err(TokenError::Empty { .. })));
        std::fs::write(file.path(), "first\n").expect("write");
        assert_eq!(
            source.read().await.expect("read"),
            BearerToken::new("first")
        );
        // The kubelet rotated it.
        std::fs::write(file.path(), "second").expect("write");
        assert_eq!(
            source.read().await.expect("read"),
            BearerToken::new("second")
        );
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
