//! The proxy end to end: a real `proxy::run` with static config (or a real
//! discovery server), tiny hyper upstreams, real sockets. Every test gets
//! loopback addresses of its own (127.0.0.0/8 is all loopback on Linux), so
//! tests running in parallel never share a port.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod allocations;
mod authority;
mod authz;
mod control;
mod cors_policy;
mod limits;
mod paths;
mod routing;
mod scrape;
mod static_certs;
mod support;
mod traffic_policy;
