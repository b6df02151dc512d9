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
}

/// Istio's ProxyConfig, the part Trellis uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// Environment of the proxy process (Istio: of istio-proxy), e.g.
    /// `SECRET_TTL` for the workload certificate's lifetime.
    pub proxy_metadata: BTreeMap<String, String>,
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
        }
    }
}
