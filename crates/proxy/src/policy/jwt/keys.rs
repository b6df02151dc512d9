//! A JWKS (RFC 7517) as verification keys, and the signature check itself
//! (`jsonwebtoken` over ring: no cryptography of our own).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::token::{Failure, Jwt};

/// The usable keys of one JWKS document.
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

struct Key {
    kid: Option<String>,
    /// The key's own `alg`, if it names one: then only that algorithm.
    alg: Option<Algorithm>,
    kind: Kind,
    key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeySet {
    /// Parses a JWKS document. Keys of kinds Istio does not verify with
    /// (symmetric `oct`, P-521) are skipped; a document with no usable key
    /// at all is an error, as in Envoy.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            // One odd key (an unknown kty, a certificate-only entry) must not
            // hide the others.
            let jwk: Jwk = match serde_json::from_value(raw) {
                Ok(j) => j,
                Err(e) => {
                    tracing::debug!(key = i, error = %e, "JWKS key skipped");
                    continue;
                }
            };
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Kind::Rsa,
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => Kind::P256,
                    EllipticCurve::P384 => Kind::P384,
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Kind::Ed25519
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                tracing::debug!(key = i, "JWKS key skipped: bad key material");
                continue;
            };
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg: jwk.common.key_algorithm.and_then(algorithm),
                kind,
                key,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS has no usable public key".into());
        }
        Ok(KeySet { keys })
    }

    /// A set with no key (tests of what holds key sets).
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        KeySet { keys: Vec::new() }
    }

    /// Verifies the token's signature with the keys that fit its `kid` and
    /// `alg`: no such key is `NoMatchingKey`, none verifying is `VerificationFails`.
    pub fn verify(&self, jwt: &Jwt<'_>) -> Result<(), Failure> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| {
                kind_fits(k.kind, jwt.alg)
                    && k.alg.is_none_or(|a| a == jwt.alg)
                    && match (&k.kid, &jwt.kid) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(Failure::NoMatchingKey);
        }
        let ok = candidates.any(|k| {
            jsonwebtoken::crypto::verify(jwt.signature, jwt.signed.as_bytes(), &k.key, jwt.alg)
                .unwrap_or(false)
        });
        if ok {
            Ok(())
        } else {
            Err(Failure::VerificationFails)
        }
    }
}

/// Which key kind an algorithm needs: `crypto::verify` does not check it.
fn kind_fits(kind: Kind, alg: Algorithm) -> bool {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => kind == Kind::Rsa,
        ES256 => kind == Kind::P256,
        ES384 => kind == Kind::P384,
        EdDSA => kind == Kind::Ed25519,
        HS256 | HS384 | HS512 => false,
    }
}

fn algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match a {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
