//! ServiceEntry (`networking/v1alpha3/service_entry.proto`): adds services
//! the registry does not know about (external APIs, VMs) to the mesh.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{WorkloadEntry, WorkloadSelector};
use crate::de::istio_enum;

istio_enum! {
    pub enum Location {
        MeshExternal = (0, "MESH_EXTERNAL"),
        MeshInternal = (1, "MESH_INTERNAL"),
    }
}

istio_enum! {
    /// How the proxy finds the endpoints of a ServiceEntry.
    pub enum Resolution {
        None = (0, "NONE"),
        Static = (1, "STATIC"),
        Dns = (2, "DNS"),
        DnsRoundRobin = (3, "DNS_ROUND_ROBIN"),
        DynamicDns = (4, "DYNAMIC_DNS"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// VIPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Mutually exclusive with `workloadSelector`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::workload::endpoints_sharing_labels"
    )]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, deserialize_with = "crate::de::int")]
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "crate::de::opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_port: Option<u32>,
}
