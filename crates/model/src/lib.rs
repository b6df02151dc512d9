//! The mesh as the control plane sees it, and the compiler that turns it into
//! each proxy's configuration.
//!
//! Everything here is pure: [`Mesh::build`] reads resources, [`compile`]
//! produces the proxy API for one proxy. No I/O, deterministic output, so the
//! same input always yields the same versions and nothing is pushed twice.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod authz;
mod cluster_policy;
pub mod compile;
mod cors;
pub mod describe;
pub mod encodings;
pub mod endpoint_slice;
pub mod ext_authz;
mod gateway;
pub mod host;
pub mod incremental;
pub mod jwt;
mod l4_routes;
pub mod mesh;
pub mod mesh_config;
mod mtls;
pub mod on_demand;
pub mod protocol;
pub mod rate_limit;
pub mod registry;
mod registry_patch;
mod routes;
pub mod scope;
pub mod service_entry;
pub mod telemetry;

pub use compile::{Compiler, ProxyConfig, compile};
pub use mesh::Mesh;
pub use mesh_config::MeshConfig;
pub use registry::{Registry, Service, ServicePort, Workload};
