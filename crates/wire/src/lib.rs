//! The proxy API shared by `trellisd` and `trellis-proxy`: the protobuf types
//! (see `proto/proxy.proto`), the per-proxy snapshot the control plane
//! compiles, and (feature `grpc`) both halves of the discovery stream, the
//! certificate service client, and how a proxy reaches the control plane
//! (TLS on 15012, see [`address`]). Without `grpc` this crate is plain data and
//! links no tonic, which is what the pure compiler (`model`) needs.
#![forbid(unsafe_code)]

#[cfg(feature = "grpc")]
pub mod address;
#[cfg(feature = "grpc")]
pub mod asks;
#[cfg(feature = "grpc")]
pub mod certs;
#[cfg(feature = "grpc")]
pub mod client;
pub mod endpoints;
pub mod names;
#[cfg(feature = "grpc")]
pub mod server;
pub mod snapshot;

/// Generated protobuf types of the proxy API (and, with `grpc`, the tonic
/// services; build.rs generates those only when the feature is on).
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/trellis.proxy.v1.rs"));
}

/// Envoy's external authorization (`envoy.service.auth.v3`) and global rate
/// limit (`envoy.service.ratelimit.v3`) services, as far as the proxy uses
/// them (`proto/envoy/`): messages, and with `grpc` tonic's client and
/// server (the proxy frames its calls itself; tests serve them).
#[allow(clippy::all)]
pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
        }
    }
    pub mod service {
        pub mod auth {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v3.rs"));
            }
        }
        pub mod ratelimit {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.ratelimit.v3.rs"));
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/envoy.extensions.common.ratelimit.v3.rs"
                    ));
                }
            }
        }
    }
}

/// google.rpc.Status (without details), as the authorization service answers.
#[allow(clippy::all)]
pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// `resource` in its whole form, as a proxy from before the compact forms
/// reads it and as dumps show it: the names its name gives put back
/// ([`names`]) and its endpoints whole ([`endpoints`]).
pub fn whole_form(mut resource: pb::Resource) -> Result<pb::Resource, endpoints::EndpointsError> {
    if let Some(kind) = &mut resource.kind {
        names::put_back(&resource.name, kind);
    }
    if let Some(pb::resource::Kind::Endpoints(e)) = resource.kind {
        resource.kind = Some(pb::resource::Kind::Endpoints(endpoints::whole(e)?));
    }
    Ok(resource)
}

/// Serializes a secret field (a private key) as a marker, never its value;
/// an empty field stays empty so that a dump still shows whether it was set.
fn redacted<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { "[redacted]" })
}

impl std::fmt::Debug for pb::GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTls")
            .field("sni", &self.sni)
            .field("cert_chain_len", &self.cert_chain.len())
            .field(
                "private_key",
                &if self.private_key.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .field("client_ca_len", &self.client_ca.len())
            .finish()
    }
}

impl std::fmt::Debug for pb::UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode)
            .field("sni", &self.sni)
            .field("ca_certificates", &self.ca_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("private_key", &self.private_key)
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("ca_certificates_pem_len", &self.ca_certificates_pem.len())
            .field(
                "client_certificate_pem_len",
                &self.client_certificate_pem.len(),
            )
            .field(
                "private_key_pem",
                &if self.private_key_pem.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .field("credential_error", &self.credential_error)
            .finish()
    }
}

/// The bits of `RetryPolicy.retry_on_bits`: which outcomes a route retries.
pub mod retry_on {
    pub const FIVE_XX: u32 = 1;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const CONNECT_FAILURE: u32 = 1 << 2;
    pub const REFUSED_STREAM: u32 = 1 << 3;
    pub const RESET: u32 = 1 << 4;
    pub const RETRIABLE_4XX: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const GRPC_CANCELLED: u32 = 1 << 7;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 9;
    pub const GRPC_INTERNAL: u32 = 1 << 10;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 11;
}

/// Type URLs of the resources on the discovery stream, in the order a proxy
/// subscribes to them: clusters and endpoints before the listeners and routes
/// that refer to them, so that no route points at a cluster the proxy lacks.
pub mod types {
    pub const CLUSTER: &str = "trellis.proxy.v1.Cluster";
    pub const ENDPOINTS: &str = "trellis.proxy.v1.ClusterEndpoints";
    pub const LISTENER: &str = "trellis.proxy.v1.Listener";
    pub const ROUTE_CONFIG: &str = "trellis.proxy.v1.RouteConfig";
    pub const ALL: [&str; 4] = [CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG];
    /// The directory of an on-demand proxy (`Node.on_demand`): only such
    /// proxies subscribe to it, before the other types.
    pub const DIRECTORY: &str = "trellis.proxy.v1.DirectoryHost";
    /// Every type the control plane serves, in the order it pushes them.
    pub const SERVED: [&str; 5] = [DIRECTORY, CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG];

    /// The short name operators use (`trellis proxy-config <pod> clusters`).
    pub fn short_name(type_url: &str) -> &'static str {
        match type_url {
            CLUSTER => "clusters",
            ENDPOINTS => "endpoints",
            LISTENER => "listeners",
            ROUTE_CONFIG => "routes",
            DIRECTORY => "directory",
            _ => "unknown",
        }
    }
}
