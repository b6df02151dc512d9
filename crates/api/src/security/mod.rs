//! `security.istio.io` (v1beta1 and v1 share one schema).

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use crate::selector::{PolicyTargetReference, WorkloadSelector};
pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;
