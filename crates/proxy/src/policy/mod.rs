//! Policies the proxy enforces on inbound traffic. mTLS modes live in
//! `tls::inbound`; here is authorization (compiled AuthorizationPolicy).

pub mod authz;
