//! End to end: `trellis up` runs real processes — trellisd, a trellis-proxy
//! per pod, the Bookinfo workloads and an ingress gateway — and the tests
//! drive them as a user would.

mod addons;
mod authz;
mod bench_smoke;
mod bookinfo;
mod browser;
mod capture;
mod control_plane;
mod dashboard;
mod dashboards;
mod describe;
mod edge;
mod egress;
mod ext_authz;
mod gateway_tls;
mod global_rate_limit;
mod install;
mod interop;
mod istioctl_diff;
mod jwt;
mod kube;
mod kube_ca;
mod kube_cli;
mod kube_crds;
mod kube_faults;
mod kube_inject;
mod kube_node;
mod kube_status;
mod kube_streaming;
mod local_rate_limit;
mod mtls;
mod on_demand;
mod operator;
mod proxy_trust;
mod telemetry;
mod telemetry_tracing;
mod traffic;
mod up;
mod up_netns;
