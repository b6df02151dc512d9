//! A JWT taken apart (RFC 7519), and what a validated one tells
//! authorization. Failures carry the status messages of Envoy's
//! `jwt_verify_lib`, which Istio users see as the 401 body.

use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// Why a token was refused: Envoy's messages, word for word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    AlgNotImplemented,
    PayloadBadBase64,
    PayloadBadJson,
    SignatureBadBase64,
    UnknownIssuer,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    NoMatchingKey,
    VerificationFails,
    JwksFetchFailed,
}

impl Failure {
    pub fn message(self) -> &'static str {
        use Failure::*;
        match self {
            BadFormat => "Jwt is not in the form of Header.Payload.Signature",
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            AlgNotImplemented => "Jwt header [alg] is not supported",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            UnknownIssuer => "Jwt issuer is not configured",
            Expired => "Jwt is expired",
            NotYetValid => "Jwt not yet valid",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            VerificationFails => "Jwt verification fails",
            JwksFetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// Envoy's response code details: `jwt_authn_access_denied{Jwt_is_expired}`.
    pub fn details(self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.message().replace(' ', "_")
        )
    }
}

/// A token parsed but not yet verified.
#[derive(Debug)]
pub struct Jwt<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `<header>.<payload>`: what the signature signs.
    pub signed: &'a str,
    pub payload_b64: &'a str,
    pub signature: &'a str,
    pub claims: Map<String, Value>,
    pub iss: String,
}

/// Envoy's default clock skew for `exp` and `nbf`.
const CLOCK_SKEW_SECS: u64 = 60;

impl<'a> Jwt<'a> {
    pub fn parse(token: &'a str) -> Result<Self, Failure> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::BadFormat);
        };
        let header: Map<String, Value> =
            serde_json::from_slice(&b64(header).ok_or(Failure::HeaderBadBase64)?)
                .map_err(|_| Failure::HeaderBadJson)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Failure::HeaderBadAlg)?;
        let alg = supported(alg).ok_or(Failure::AlgNotImplemented)?;
        let kid = header.get("kid").and_then(Value::as_str).map(String::from);
        let claims: Map<String, Value> =
            serde_json::from_slice(&b64(payload).ok_or(Failure::PayloadBadBase64)?)
                .map_err(|_| Failure::PayloadBadJson)?;
        if signature.is_empty() || b64(signature).is_none() {
            return Err(Failure::SignatureBadBase64);
        }
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Jwt {
            alg,
            kid,
            // Everything before the last dot.
            signed: &token[..token.len() - signature.len() - 1],
            payload_b64: payload,
            signature,
            claims,
            iss,
        })
    }

    /// `exp` and `nbf`, with Envoy's 60 s of clock skew.
    pub fn check_time(&self, now_secs: u64) -> Result<(), Failure> {
        let num = |k: &str| self.claims.get(k).and_then(Value::as_f64);
        if let Some(exp) = num("exp")
            && (now_secs as f64) > exp + CLOCK_SKEW_SECS as f64
        {
            return Err(Failure::Expired);
        }
        if let Some(nbf) = num("nbf")
            && (now_secs as f64) + (CLOCK_SKEW_SECS as f64) < nbf
        {
            return Err(Failure::NotYetValid);
        }
        Ok(())
    }

    /// The token's audiences: `aud` as a string or a list of strings.
    pub fn audiences(&self) -> Vec<String> {
        audiences(&self.claims)
    }
}

/// The algorithms Istio accepts with public keys. HMAC (`HS*`) is refused:
/// a JWKS is public, and a shared secret in it would let anyone sign.
fn supported(alg: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match alg {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// Base64url as Envoy decodes it (absl's web-safe unescape): padded or not,
/// non-zero trailing bits allowed.
fn b64(s: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a validated token tells authorization (`request.auth.*`).
#[derive(Debug, Default)]
pub struct Verified {
    /// `<iss>/<sub>`: `requestPrincipals`, `request.auth.principal`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The payload, with space-delimited claims already split into lists.
    pub claims: Map<String, Value>,
}

/// Claims whose string value Istio always treats as a space-separated list.
const SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

impl Verified {
    pub fn new(jwt: Jwt<'_>, space_delimited: &[String]) -> Arc<Self> {
        Self::from_payload(jwt.claims, space_delimited)
    }

    /// From a validated token's payload.
    pub fn from_payload(mut claims: Map<String, Value>, space_delimited: &[String]) -> Arc<Self> {
        let audiences = audiences(&claims);
        for name in SPACE_DELIMITED
            .iter()
            .copied()
            .chain(space_delimited.iter().map(String::as_str))
        {
            if let Some(Value::String(s)) = claims.get(name)
                && s.contains(' ')
            {
                let list = s
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect();
                claims.insert(name.to_string(), Value::Array(list));
            }
        }
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Arc::new(Verified {
            principal: format!("{iss}/{sub}"),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(String::from),
            claims,
        })
    }

    /// The claim at `path` (outermost first), when it is nested in objects.
    pub fn claim(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.claims.get(first)?;
        for k in rest {
            v = v.as_object()?.get(k)?;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn parse_failures_in_envoys_order() {
        let h = enc(r#"{"alg":"RS256","kid":"k"}"#);
        let p = enc(r#"{"iss":"i","sub":"s"}"#);
        let cases = [
            ("deadbeef", Failure::BadFormat),
            ("a.b.c.d", Failure::BadFormat),
            ("not.a.jwt", Failure::HeaderBadJson),
            ("!!.a.b", Failure::HeaderBadBase64),
            (&format!("{}.{p}.c2ln", enc("{}")), Failure::HeaderBadAlg),
            (
                &format!("{}.{p}.c2ln", enc(r#"{"alg":"HS256"}"#)),
                Failure::AlgNotImplemented,
            ),
            (&format!("{h}.!!.c2ln"), Failure::PayloadBadBase64),
            (&format!("{h}.{}.c2ln", enc("[")), Failure::PayloadBadJson),
            (&format!("{h}.{p}."), Failure::SignatureBadBase64),
        ];
        for (token, want) in cases {
            assert_eq!(Jwt::parse(token).err(), Some(want), "{token}");
        }
        let token = format!("{h}.{p}.c2ln");
        let jwt = Jwt::parse(&token).expect("parses");
        assert_eq!(jwt.iss, "i");
        assert_eq!(jwt.kid.as_deref(), Some("k"));
        assert_eq!(jwt.signed, format!("{h}.{p}"));
    }

    #[test]
    fn time_and_claims() {
        let h = enc(r#"{"alg":"ES256"}"#);
        let p = enc(
            r#"{"iss":"i","sub":"s","exp":1000,"nbf":500,"aud":["a","b"],"azp":"web",
                "scope":"read write","groups":["g1"],"foo":{"bar":"baz"}}"#,
        );
        let token = format!("{h}.{p}.c2ln");
        let jwt = Jwt::parse(&token).expect("parses");
        assert_eq!(jwt.check_time(1000 + 60), Ok(()));
        assert_eq!(jwt.check_time(1000 + 61), Err(Failure::Expired));
        assert_eq!(jwt.check_time(500 - 61), Err(Failure::NotYetValid));
        let v = Verified::new(jwt, &[]);
        assert_eq!(v.principal, "i/s");
        assert_eq!(v.audiences, ["a", "b"]);
        assert_eq!(v.presenter.as_deref(), Some("web"));
        assert_eq!(
            v.claim(&["scope".into()]),
            Some(&serde_json::json!(["read", "write"]))
        );
        assert_eq!(
            v.claim(&["foo".into(), "bar".into()]),
            Some(&serde_json::json!("baz"))
        );
        assert_eq!(v.claim(&["foo".into(), "nope".into()]), None);
    }

    #[test]
    fn details_name_the_failure() {
        assert_eq!(
            Failure::Expired.details(),
            "jwt_authn_access_denied{Jwt_is_expired}"
        );
    }
}
