//! The control-plane API's bearer token: the one credential that lets a
//! caller change the mesh's config or read its debug views. `trellis up`
//! makes it (random, in a file only its user can read) and the CLI sends it.

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

const TOKEN_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the API token file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("cannot generate a random token")]
    Random,
}

/// A token, and the means to check a presented one in constant time.
/// `Debug` never shows it.
pub struct ApiToken {
    /// A per-process random key: presented tokens are compared as HMAC tags
    /// under it, which `hmac::verify` does in constant time whatever their length.
    key: hmac::Key,
    tag: hmac::Tag,
    fingerprint: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken({})", self.fingerprint)
    }
}

impl ApiToken {
    /// Reads the token (one line) from `path`.
    pub fn load(path: &Path) -> Result<ApiToken, ApiTokenError> {
        let io = |source| ApiTokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let token = crate::secret_file::read(path, "API token file").map_err(io)?;
        if token.is_empty() {
            return Err(ApiTokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Self::from_secret(&token)
    }

    /// Creates a random token at `path` (mode 0600 from the start), or loads
    /// the one already there. Returns the token's text too, for the caller to hand out.
    pub fn create(path: &Path) -> Result<(ApiToken, String), ApiTokenError> {
        let io = |source| ApiTokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; TOKEN_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ApiTokenError::Random)?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if crate::secret_file::create_new(path, &text).map_err(io)? {
            Ok((Self::from_secret(&text)?, text))
        } else {
            let existing = crate::secret_file::read(path, "API token file").map_err(io)?;
            Ok((Self::load(path)?, existing))
        }
    }

    fn from_secret(token: &str) -> Result<ApiToken, ApiTokenError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| ApiTokenError::Random)?;
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(ApiToken {
            key,
            tag,
            fingerprint: fingerprint(token),
        })
    }

    /// Whether `presented` is the token, in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }

    /// What logs name the token by: the first bytes of its SHA-256, never the token.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// `sha256:<first 8 bytes, hex>` of a token.
pub fn fingerprint(token: &str) -> String {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_token_is_private_kept_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        let (token, text) = ApiToken::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(token.verify(&text));
        assert!(!token.verify(""));
        assert!(!token.verify(&text[1..]));
        assert!(!format!("{token:?}").contains(&text));
        let (again, text2) = ApiToken::create(&path).unwrap();
        assert_eq!(text, text2, "an existing token is kept");
        assert!(again.verify(&text));
    }
}
