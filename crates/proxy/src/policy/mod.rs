//! Policies the proxy enforces on inbound traffic. mTLS modes live in
//! `tls::inbound`; here are request authentication (compiled
//! RequestAuthentication), authorization (compiled AuthorizationPolicy) and
//! the local rate limit (compiled from an EnvoyFilter's local_ratelimit).

pub mod authz;
pub mod jwt;
pub mod rate_limit;
