//! Gateway proxies: listeners from the Gateway servers that select them and
//! routes from the VirtualServices bound to those Gateways.

use std::collections::BTreeMap;

use api::networking::Gateway;
use api::Object;
use wire::pb;

use crate::compile::ProxyConfig;
use crate::host;
use crate::mesh::Mesh;
use crate::routes;

pub fn compile(mesh: &Mesh, node: &pb::Node, config: &mut ProxyConfig) {
    // listen port → (route config, virtual hosts by domain key)
    let mut listeners: BTreeMap<u32, BTreeMap<String, pb::VirtualHost>> = BTreeMap::new();
    for gw in mesh.gateways.iter().filter(|g| selects(g, node)) {
        let gw_ns = gw.metadata.namespace.as_deref().unwrap_or("default");
        let gw_ref = format!("{gw_ns}/{}", gw.metadata.name);
        for server in &gw.spec.servers {
            let protocol = server.port.protocol.to_ascii_uppercase();
            if !matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC") {
                continue;
            }
            let listen = listen_port(mesh, node, server.port.number);
            let vhosts = listeners.entry(listen).or_default();
            for vs in &mesh.virtual_services {
                let vs_ns = vs.metadata.namespace.as_deref().unwrap_or("default");
                if !vs.spec.gateways.iter().any(|g| routes::gateway_ref(g, vs_ns) == gw_ref) {
                    continue;
                }
                for h in &vs.spec.hosts {
                    if !server.hosts.iter().any(|sh| server_host_admits(sh, h, vs_ns, gw_ns)) {
                        continue;
                    }
                    let vh = vhosts.entry(h.clone()).or_insert_with(|| pb::VirtualHost {
                        name: format!("{h}:{}", server.port.number),
                        domains: gateway_domains(h, server.port.number),
                        routes: Vec::new(),
                    });
                    // Istio merges the routes of every VirtualService for one host on a gateway.
                    vh.routes.extend(routes::http_routes(mesh, vs, server.port.number, &gw_ref));
                }
            }
        }
    }
    for (port, vhosts) in listeners {
        let route_config = format!("http.{port}");
        config.listeners.push(pb::Listener {
            name: format!("gateway|{port}"),
            address: node.pod_ip.clone(),
            port,
            direction: pb::Direction::Gateway as i32,
            protocol: pb::Protocol::Http as i32,
            app_port: 0,
            route_config: route_config.clone(),
            ..Default::default()
        });
        config.routes.push(pb::RouteConfig { name: route_config, virtual_hosts: vhosts.into_values().collect() });
    }
}

fn selects(gw: &Object<Gateway>, node: &pb::Node) -> bool {
    !gw.spec.selector.is_empty() && gw.spec.selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// Gateway server ports are service ports; the gateway pod listens on the
/// target port of its Service (Istio's ingress maps 80 → 8080).
fn listen_port(mesh: &Mesh, node: &pb::Node, port: u32) -> u32 {
    let Some(w) = mesh.registry.workload(&node.pod_name, &node.namespace) else { return port };
    mesh.registry
        .services_of(w)
        .find_map(|svc| {
            let sp = svc.port(port)?;
            mesh.registry.endpoints(svc, sp, &BTreeMap::new()).find(|(e, _)| e.name == w.name).map(|(_, t)| t)
        })
        .unwrap_or(port)
}

/// A server host is `host` or `<ns>/host`: `*` is any namespace, `.` the Gateway's own.
fn server_host_admits(server_host: &str, vs_host: &str, vs_ns: &str, gw_ns: &str) -> bool {
    let (ns, h) = server_host.split_once('/').unwrap_or(("*", server_host));
    let ns_ok = ns == "*" || ns == vs_ns || (ns == "." && vs_ns == gw_ns);
    ns_ok && (host::matches(h, vs_host) || host::matches(vs_host, h))
}

fn gateway_domains(h: &str, port: u32) -> Vec<String> {
    if h == "*" { vec!["*".into()] } else { vec![h.to_string(), format!("{h}:{port}")] }
}
