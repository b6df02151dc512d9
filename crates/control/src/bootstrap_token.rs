//! Bootstrap tokens: how a workload proves its identity to the CA on one
//! machine, where there is no Kubernetes to review service-account tokens.
//!
//! `trellis up` creates a secret (a file only its user can read), gives it to
//! `trellisd`, and hands each proxy the token of its own service account:
//! `hex(HMAC-SHA256(secret, "<namespace>/<service-account>"))`. The token names
//! nothing; the control plane finds whose it is by checking it against the
//! service accounts of the workloads it knows. So a token can only ever yield
//! the identity it was made for, whatever the CSR asks.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Secret length: the HMAC-SHA256 key size.
const SECRET_LEN: usize = 32;

/// Why the secret could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenSecretError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a token secret: {reason}", path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("cannot generate a random secret")]
    Random,
}

/// The key tokens are derived with. `Debug` never shows it.
#[derive(Clone)]
pub struct TokenSecret {
    key: hmac::Key,
}

impl TokenSecret {
    /// Reads the secret from `path` (hex, as [`create`](Self::create) writes it).
    pub fn load(path: &Path) -> Result<Self, TokenSecretError> {
        let io = |source| TokenSecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = crate::secret_file::read(path, "token secret").map_err(io)?;
        let bytes = from_hex(text.trim()).ok_or_else(|| TokenSecretError::Bad {
            path: path.to_path_buf(),
            reason: "expected hexadecimal".into(),
        })?;
        if bytes.len() < SECRET_LEN {
            return Err(TokenSecretError::Bad {
                path: path.to_path_buf(),
                reason: format!("{} bytes; at least {SECRET_LEN} are needed", bytes.len()),
            });
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Creates a new random secret at `path` (mode 0600), or loads the one
    /// already there, so that restarts keep tokens valid.
    pub fn create(path: &Path) -> Result<Self, TokenSecretError> {
        let io = |source| TokenSecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; SECRET_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenSecretError::Random)?;
        // create_new with the mode set at creation: the secret is never, even
        // briefly, readable by others; an existing secret is kept.
        if crate::secret_file::create_new(path, &hex(&bytes)).map_err(io)? {
            Ok(Self::from_bytes(&bytes))
        } else {
            Self::load(path)
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        TokenSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The bootstrap token of the workloads running as `namespace/service_account`.
    pub fn token(&self, namespace: &str, service_account: &str) -> String {
        hex(hmac::sign(&self.key, subject(namespace, service_account).as_bytes()).as_ref())
    }

    /// Whether `token` is the one of `namespace/service_account`, in constant time.
    pub fn verify(&self, token: &str, namespace: &str, service_account: &str) -> bool {
        let Some(tag) = from_hex(token) else {
            return false;
        };
        hmac::verify(
            &self.key,
            subject(namespace, service_account).as_bytes(),
            &tag,
        )
        .is_ok()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

fn subject(namespace: &str, service_account: &str) -> String {
    format!("{namespace}/{service_account}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_belongs_to_one_service_account() {
        let s = TokenSecret::from_bytes(&[7; 32]);
        let t = s.token("default", "sleep");
        assert_eq!(t.len(), 64);
        assert!(s.verify(&t, "default", "sleep"));
        assert!(!s.verify(&t, "default", "httpbin"));
        assert!(!s.verify(&t, "other", "sleep"));
        // "a/b" + "c" and "a" + "b/c" must not collide... they cannot, as
        // namespaces and service accounts contain no '/'; still, different.
        assert_ne!(s.token("a", "b-c"), s.token("a-b", "c"));
        assert!(!s.verify("zz", "default", "sleep"));
        assert!(!s.verify("", "default", "sleep"));
        let other = TokenSecret::from_bytes(&[8; 32]);
        assert!(!other.verify(&t, "default", "sleep"));
    }

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token-secret");
        let a = TokenSecret::create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = TokenSecret::create(&path).expect("reuse");
        assert_eq!(a.token("ns", "sa"), b.token("ns", "sa"));
        let c = TokenSecret::load(&path).expect("load");
        assert_eq!(a.token("ns", "sa"), c.token("ns", "sa"));
        assert!(!format!("{c:?}").contains(&std::fs::read_to_string(&path).expect("read")));
    }

    #[test]
    fn short_or_garbled_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "abcd").expect("write");
        assert!(TokenSecret::load(&path).is_err());
        std::fs::write(&path, "not hex at all").expect("write");
        assert!(TokenSecret::load(&path).is_err());
    }
}
