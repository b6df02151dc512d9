//! SPIFFE identities in Istio's shape: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! The id is what a workload *is* in the mesh: it is the only SAN the CA puts in a
//! workload certificate, what the client checks for secure naming, and what
//! authorization policies call a `principal` (the id without `spiffe://`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
/// The SPIFFE spec caps the URI at 2048 bytes and the trust domain at 255.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A workload identity, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// Parse with [`str::parse`] (or [`SpiffeId::new`] from parts); [`Display`](fmt::Display)
/// gives the URI back. Serializes as the URI string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not an Istio-shaped SPIFFE id. Each variant carries the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {input:?} must start with \"spiffe://\"")]
    MissingScheme { input: String },
    #[error("SPIFFE id {input:?} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong { input: String, len: usize },
    #[error("SPIFFE id {input:?} has an empty trust domain")]
    EmptyTrustDomain { input: String },
    #[error(
        "SPIFFE id {input:?}: trust domain {trust_domain:?} is invalid: {reason} \
         (allowed: lowercase letters, digits, '.', '-', '_'; at most {MAX_TRUST_DOMAIN_LEN} bytes)"
    )]
    InvalidTrustDomain {
        input: String,
        trust_domain: String,
        reason: String,
    },
    #[error(
        "SPIFFE id {input:?}: path {path:?} is not of the form /ns/<namespace>/sa/<service-account>"
    )]
    BadPath { input: String, path: String },
    #[error(
        "SPIFFE id {input:?}: {what} {value:?} is invalid: {reason} \
         (allowed: letters, digits, '.', '-', '_'; not empty, not \".\" or \"..\")"
    )]
    InvalidSegment {
        input: String,
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl SpiffeId {
    /// Builds `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, validating each part.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let input = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        check_trust_domain(&input, trust_domain)?;
        check_segment(&input, "namespace", namespace)?;
        check_segment(&input, "service account", service_account)?;
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                len: input.len(),
                input,
            });
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account of the workload.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The id as Istio's authorization policies spell a principal: the URI without
    /// `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

// Debug shows the URI: it is what operators grep logs for.
impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                input: owned(),
                len: input.len(),
            });
        }
        // The scheme is case-insensitive in URIs, but SPIFFE requires lowercase; be strict
        // so that one identity has exactly one spelling (ids are compared as strings).
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::MissingScheme { input: owned() })?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(input, trust_domain)?;
        let bad_path = || SpiffeIdError::BadPath {
            input: owned(),
            path: path.to_owned(),
        };
        let mut parts = path.split('/');
        // `path` starts with '/', so the first piece is empty.
        let (Some(""), Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad_path());
        };
        check_segment(input, "namespace", namespace)?;
        check_segment(input, "service account", service_account)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn check_trust_domain(input: &str, td: &str) -> Result<(), SpiffeIdError> {
    let invalid = |reason: String| SpiffeIdError::InvalidTrustDomain {
        input: input.to_owned(),
        trust_domain: td.to_owned(),
        reason,
    };
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain {
            input: input.to_owned(),
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(invalid(format!("it is {} bytes long", td.len())));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    Ok(())
}

fn check_segment(input: &str, what: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let invalid = |reason: String| SpiffeIdError::InvalidSegment {
        input: input.to_owned(),
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if value == "." || value == ".." {
        return Err(invalid("dot segments are not allowed".into()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            .parse()
            .expect("valid id");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "bookinfo-productpage"),
            Ok(id)
        );
    }

    #[test]
    fn rejects_bad_ids_naming_the_problem() {
        // (input, a fragment the error message must contain)
        let cases = [
            (
                "http://cluster.local/ns/a/sa/b",
                "must start with \"spiffe://\"",
            ),
            ("SPIFFE://cluster.local/ns/a/sa/b", "must start with"),
            ("spiffe:///ns/a/sa/b", "empty trust domain"),
            ("spiffe://Cluster.local/ns/a/sa/b", "contains 'C'"),
            ("spiffe://cluster.local:8080/ns/a/sa/b", "contains ':'"),
            ("spiffe://cluster.local", "path \"\" is not of the form"),
            ("spiffe://cluster.local/ns/a", "path \"/ns/a\""),
            (
                "spiffe://cluster.local/ns/a/sa/b/extra",
                "is not of the form",
            ),
            ("spiffe://cluster.local/sa/b/ns/a", "is not of the form"),
            (
                "spiffe://cluster.local/ns//sa/b",
                "namespace \"\" is invalid: it is empty",
            ),
            (
                "spiffe://cluster.local/ns/a/sa/",
                "service account \"\" is invalid",
            ),
            ("spiffe://cluster.local/ns/../sa/b", "dot segments"),
            ("spiffe://cluster.local/ns/a b/sa/b", "contains ' '"),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", "contains '?'"),
        ];
        for (input, fragment) in cases {
            let err = input
                .parse::<SpiffeId>()
                .expect_err(&format!("{input} must be rejected"));
            let msg = err.to_string();
            assert!(
                msg.contains(fragment),
                "{input}: {msg:?} lacks {fragment:?}"
            );
            assert!(
                msg.contains(input),
                "{input}: message must quote the input: {msg}"
            );
        }
        let long = format!("spiffe://td/ns/a/sa/{}", "x".repeat(3000));
        assert!(matches!(
            long.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong { .. })
        ));
        assert!(SpiffeId::new("td", "a/b", "c").is_err());
    }

    #[test]
    fn serde_roundtrip_as_string() {
        let id = SpiffeId::new("td", "ns1", "sa1").expect("valid");
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, "\"spiffe://td/ns/ns1/sa/sa1\"");
        let back: SpiffeId = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, id);
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://td/ns/x\"").expect_err("bad id");
        assert!(err.to_string().contains("is not of the form"), "{err}");
    }
}
