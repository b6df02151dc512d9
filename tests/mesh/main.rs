//! End to end: `trellis up` runs real processes — trellisd, a trellis-proxy
//! per pod, the Bookinfo workloads and an ingress gateway — and the tests
//! drive them as a user would.

mod authz;
mod bench_smoke;
mod bookinfo;
mod browser;
mod capture;
mod control_plane;
mod gateway_tls;
mod interop;
mod jwt;
mod kube;
mod mtls;
mod operator;
mod proxy_trust;
mod traffic;
mod up;
mod up_netns;
