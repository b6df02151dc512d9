//! End to end: `trellis up` runs real processes — trellisd, a trellis-proxy
//! per pod, the Bookinfo workloads and an ingress gateway — and the tests
//! drive them as a user would.

mod authz;
mod bench_smoke;
mod bookinfo;
mod browser;
mod capture;
mod control_plane;
mod edge;
mod egress;
mod gateway_tls;
mod install;
mod interop;
mod istioctl_diff;
mod jwt;
mod kube;
mod kube_ca;
mod kube_cli;
mod kube_faults;
mod kube_inject;
mod kube_node;
mod kube_status;
mod mtls;
mod operator;
mod proxy_trust;
mod telemetry;
mod telemetry_tracing;
mod traffic;
mod up;
mod up_netns;
