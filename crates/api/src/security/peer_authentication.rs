//! PeerAuthentication (`security/v1beta1/peer_authentication.proto`): whether
//! a workload accepts plaintext, mTLS, or both.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkloadSelector;
use crate::de::istio_enum;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// No selector: applies to the whole namespace (the whole mesh in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Workload (container) port → mode. Only meaningful with a selector.
    /// `Some` when written, even empty (which Istio rejects).
    #[serde(
        default,
        deserialize_with = "crate::de::opt_int_key_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_level_mtls: Option<BTreeMap<u32, MutualTls>>,
}

istio_enum! {
    pub enum MtlsMode {
        /// Inherit from the parent scope; PERMISSIVE at the root.
        Unset = (0, "UNSET"),
        Disable = (1, "DISABLE"),
        Permissive = (2, "PERMISSIVE"),
        Strict = (3, "STRICT"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}
