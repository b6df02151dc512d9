//! Policies the proxy enforces on inbound traffic. mTLS modes live in
//! `tls::inbound`; here are request authentication (compiled
//! RequestAuthentication) and authorization (compiled AuthorizationPolicy).

pub mod authz;
pub mod jwt;
