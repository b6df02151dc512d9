//! Mesh-wide settings, in Istio's MeshConfig names and with Istio's defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields Trellis does not use yet are accepted and ignored, so an existing
/// Istio mesh config file can be used as it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// Where mesh-wide policies live (a PeerAuthentication `default` here applies everywhere).
    pub root_namespace: String,
    pub trust_domain: String,
    /// The cluster's DNS suffix: services are `<name>.<namespace>.svc.<domain>`.
    pub domain_suffix: String,
    /// Connect timeout to upstreams, Istio's 10 s.
    pub connect_timeout_ms: u64,
    pub enable_auto_mtls: bool,
    /// ALLOW_ANY (Istio's default) or REGISTRY_ONLY.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Every proxy's settings unless its pod's `proxy.istio.io/config` says otherwise.
    pub default_config: ProxyConfig,
    /// How proxies normalise request paths before routing and authorization.
    pub path_normalization: PathNormalization,
}

/// Istio's `ProxyPathNormalization`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct PathNormalization {
    pub normalization: NormalizationType,
}

/// Istio's `ProxyPathNormalization.NormalizationType`; DEFAULT is BASE.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    #[default]
    Default,
    /// No normalization: paths are routed, authorized and forwarded as sent.
    None,
    /// RFC 3986 normalization (`.`/`..` resolved, `\` as `/`, unreserved
    /// characters decoded).
    Base,
    /// BASE, then repeated slashes merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl NormalizationType {
    pub fn to_pb(self) -> wire::pb::PathNormalization {
        use wire::pb::PathNormalization as Pb;
        match self {
            NormalizationType::Default => Pb::Default,
            NormalizationType::None => Pb::None,
            NormalizationType::Base => Pb::Base,
            NormalizationType::MergeSlashes => Pb::MergeSlashes,
            NormalizationType::DecodeAndMergeSlashes => Pb::DecodeAndMergeSlashes,
        }
    }
}

/// Istio's ProxyConfig, the part Trellis uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// Environment of the proxy process (Istio: of istio-proxy), e.g.
    /// `SECRET_TTL` for the workload certificate's lifetime.
    pub proxy_metadata: BTreeMap<String, String>,
    /// Data-plane worker threads of each sidecar (0: one per CPU of its
    /// limit); unset: 2, Istio's sidecar default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            domain_suffix: "cluster.local".into(),
            connect_timeout_ms: 10_000,
            enable_auto_mtls: true,
            outbound_traffic_policy: OutboundTrafficPolicy {
                mode: "ALLOW_ANY".into(),
            },
            default_config: ProxyConfig::default(),
            path_normalization: PathNormalization::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalization_in_istio_names() {
        let m: MeshConfig = serde_json::from_str(
            r#"{"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}}"#,
        )
        .expect("parses");
        assert_eq!(
            m.path_normalization.normalization,
            NormalizationType::DecodeAndMergeSlashes
        );
        assert_eq!(
            MeshConfig::default()
                .path_normalization
                .normalization
                .to_pb(),
            wire::pb::PathNormalization::Default
        );
        let err = serde_json::from_str::<MeshConfig>(
            r#"{"pathNormalization": {"normalization": "FANCY"}}"#,
        )
        .expect_err("unknown mode");
        assert!(err.to_string().contains("FANCY"), "{err}");
    }
}
