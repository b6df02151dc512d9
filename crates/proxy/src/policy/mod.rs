//! Policies the proxy enforces on inbound traffic. mTLS modes live in
//! `tls::inbound`; here are request authentication (compiled
//! RequestAuthentication), authorization (compiled AuthorizationPolicy, with
//! CUSTOM's external authorizer), the local rate limit (compiled from an
//! EnvoyFilter's local_ratelimit) and the global one (an EnvoyFilter's
//! ratelimit filter and its rate limit service).

pub mod authz;
mod call;
pub mod ext_authz;
pub mod global_rate_limit;
pub mod jwt;
pub mod rate_limit;
pub mod rate_limit_actions;
pub mod stats;
