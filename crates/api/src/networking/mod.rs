//! `networking.istio.io` (v1alpha3, v1beta1 and v1 share one schema).

mod destination_rule;
mod gateway;
pub mod grpc_status;
pub mod retry_on;
mod service_entry;
mod sidecar;
mod string_match;
mod virtual_service;
mod workload;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use string_match::StringMatch;
pub use virtual_service::*;
pub use workload::*;
