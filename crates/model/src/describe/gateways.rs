//! The Gateways a gateway pod serves, as `istioctl x describe pod` shows an
//! ingress gateway: each Gateway whose selector picks the pod (the
//! compiler's [`gateway::selects`]), its servers — port, the pod port the
//! proxy listens on, hosts, TLS — and the VirtualServices bound to it whose
//! hosts a server admits, with their compiled routes.

use api::Object;
use api::networking::{Gateway, Server, ServerTlsMode};
use serde::{Deserialize, Serialize};
use wire::pb;

use super::{Applied, RouteView, labels, match_text, namespace_of, route_view};
use crate::gateway;
use crate::mesh::Mesh;
use crate::registry::Workload;
use crate::routes;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    pub gateway: Applied,
    pub servers: Vec<ServerView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    pub port: u32,
    pub name: String,
    pub protocol: String,
    /// The pod port the gateway listens on for it (its Service's targetPort).
    pub listen_port: u32,
    pub hosts: Vec<String>,
    /// `SIMPLE`, `MUTUAL`, `PASSTHROUGH`, … with where its certificate
    /// comes from; `None`: plaintext.
    pub tls: Option<String>,
    pub virtual_services: Vec<BoundView>,
}

/// A VirtualService bound to the Gateway, on one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundView {
    pub virtual_service: Applied,
    /// Its hosts the server admits.
    pub hosts: Vec<String>,
    /// Its HTTP routes on this server's port (empty for TCP and TLS servers).
    pub routes: Vec<RouteView>,
}

pub(super) fn gateways(mesh: &Mesh, node: &pb::Node, w: &Workload) -> Vec<GatewayView> {
    mesh.gateways
        .iter()
        .filter(|g| gateway::selects(g, node))
        .map(|g| GatewayView {
            gateway: Applied {
                name: format!("{}/{}", namespace_of(&g.metadata), g.metadata.name),
                why: format!(
                    "its selector {} matches the pod's labels",
                    labels(&g.spec.selector)
                ),
            },
            servers: g
                .spec
                .servers
                .iter()
                .map(|s| server(mesh, node, w, g, s))
                .collect(),
        })
        .collect()
}

fn server(
    mesh: &Mesh,
    node: &pb::Node,
    w: &Workload,
    gw: &Object<Gateway>,
    server: &Server,
) -> ServerView {
    let gw_ns = namespace_of(&gw.metadata);
    let gw_ref = format!("{gw_ns}/{}", gw.metadata.name);
    let protocol = server.port.protocol.to_ascii_uppercase();
    let http = matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "HTTPS")
        && !matches!(
            server.tls.as_ref().and_then(|t| t.mode),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        );
    let virtual_services = mesh
        .virtual_services
        .iter()
        .filter_map(|vs| {
            let vs_ns = namespace_of(&vs.metadata);
            let bound = vs
                .spec
                .gateways
                .iter()
                .any(|g| routes::gateway_ref(g, vs_ns) == gw_ref);
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .filter(|h| {
                    server
                        .hosts
                        .iter()
                        .any(|sh| gateway::server_host_admits(sh, h, vs_ns, gw_ns))
                })
                .cloned()
                .collect();
            if !bound || hosts.is_empty() {
                return None;
            }
            let routes = if http {
                routes::http_routes(mesh, vs, server.port.number, &gw_ref)
                    .iter()
                    .map(|r| {
                        let clusters = match &r.action {
                            Some(pb::route::Action::Forward(f)) => f.clusters.clone(),
                            _ => Vec::new(),
                        };
                        route_view(
                            mesh,
                            vs_ns,
                            w,
                            r.name.clone(),
                            server.port.number,
                            r.matches.iter().map(match_text).collect(),
                            &clusters,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Some(BoundView {
                virtual_service: Applied {
                    name: format!("{vs_ns}/{}", vs.metadata.name),
                    why: format!(
                        "its gateways name {gw_ref}, and the server's hosts {} admit {}",
                        server.hosts.join(","),
                        hosts.join(",")
                    ),
                },
                hosts,
                routes,
            })
        })
        .collect();
    ServerView {
        port: server.port.number,
        name: server.port.name.clone(),
        protocol,
        listen_port: gateway::listen_port(mesh, node, server.port.number),
        hosts: server.hosts.clone(),
        tls: server.tls.as_ref().and_then(|t| {
            let mode = match t.mode {
                Some(m) => m.as_str().to_string(),
                None if t.https_redirect => return Some("httpsRedirect to HTTPS".into()),
                None => return None,
            };
            let source = match (&t.credential_name, &t.server_certificate) {
                (Some(c), _) => format!(", credentialName {c}"),
                (None, Some(file)) => format!(", certificate file {file}"),
                (None, None) => String::new(),
            };
            Some(format!("{mode}{source}"))
        }),
        virtual_services,
    }
}
