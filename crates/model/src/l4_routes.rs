//! VirtualService `tcp` and `tls` routes as a gateway's TCP and TLS
//! (passthrough) servers apply them: whole connections, routed by port and
//! (TLS) the ClientHello's SNI, to weighted destinations.

use api::Object;
use api::networking::{Gateway, RouteDestination, Server};
use wire::pb;

use crate::gateway::server_host_admits;
use crate::mesh::Mesh;
use crate::registry::Service;
use crate::routes;
use crate::scope::Scope;

/// The `tls` routes a sidecar applies to connections to `svc` on its TLS
/// port `port` (the VirtualService for the host that sidecars use): one
/// per match for this port (and, if it names them, the "mesh" gateway and
/// the client's namespace), with the match's `sniHosts`. Matches on source
/// labels or subnets are not understood: such a match never applies here.
pub fn sidecar_tls_routes(
    mesh: &Mesh,
    scope: &Scope,
    svc: &Service,
    port: u32,
) -> Vec<pb::L4Route> {
    let Some(vs) = crate::compile::mesh_virtual_service(mesh, &svc.hostname, scope) else {
        return Vec::new();
    };
    let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
    let origin = format!("VirtualService/{ns}/{}", vs.metadata.name);
    let applies = |m: &api::networking::TlsMatchAttributes| {
        m.port.is_none_or(|p| p == port)
            && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
            && m.source_namespace
                .as_deref()
                .is_none_or(|n| n == scope.namespace)
            && m.source_labels.is_empty()
            && m.destination_subnets.is_empty()
    };
    let mut out = Vec::new();
    for r in &vs.spec.tls {
        let clusters = weighted(mesh, &r.route, ns, port);
        for m in r.r#match.iter().filter(|m| applies(m)) {
            out.push(pb::L4Route {
                sni_hosts: m.sni_hosts.clone(),
                clusters: clusters.clone(),
                origin: origin.clone(),
            });
        }
    }
    out
}

/// The routes of `server` (of Gateway `gw`, "ns/name" `gw_ref`), in order:
/// every VirtualService bound to the Gateway whose hosts the server admits;
/// of a TLS server its `tls` routes (one per match, with the match's
/// `sniHosts`), of a TCP server its first `tcp` route that applies.
pub fn gateway_routes(
    mesh: &Mesh,
    gw: &Object<Gateway>,
    gw_ref: &str,
    server: &Server,
    tls: bool,
) -> Vec<pb::L4Route> {
    let gw_ns = gw.metadata.namespace.as_deref().unwrap_or("default");
    let port = server.port.number;
    let mut out = Vec::new();
    for vs in &mesh.virtual_services {
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or("default");
        let bound = |gateways: &[String]| {
            gateways
                .iter()
                .any(|g| routes::gateway_ref(g, vs_ns) == gw_ref)
        };
        if !bound(&vs.spec.gateways) {
            continue;
        }
        if !vs.spec.hosts.iter().any(|h| {
            server
                .hosts
                .iter()
                .any(|sh| server_host_admits(sh, h, vs_ns, gw_ns))
        }) {
            continue;
        }
        let origin = format!("VirtualService/{vs_ns}/{}", vs.metadata.name);
        if tls {
            for r in &vs.spec.tls {
                let clusters = weighted(mesh, &r.route, vs_ns, port);
                for m in &r.r#match {
                    if m.port.is_some_and(|p| p != port)
                        || !(m.gateways.is_empty() || bound(&m.gateways))
                    {
                        continue;
                    }
                    out.push(pb::L4Route {
                        sni_hosts: m.sni_hosts.clone(),
                        clusters: clusters.clone(),
                        origin: origin.clone(),
                    });
                }
            }
        } else {
            let applies = |m: &api::networking::L4MatchAttributes| {
                m.port.is_none_or(|p| p == port) && (m.gateways.is_empty() || bound(&m.gateways))
            };
            if let Some(r) = vs
                .spec
                .tcp
                .iter()
                .find(|r| r.r#match.is_empty() || r.r#match.iter().any(applies))
            {
                out.push(pb::L4Route {
                    sni_hosts: Vec::new(),
                    clusters: weighted(mesh, &r.route, vs_ns, port),
                    origin,
                });
            }
        }
    }
    out
}

/// A `tcp` or `tls` route's destinations as weighted clusters, weighted as
/// HTTP's ([`routes::share`]); sidecars' TCP routes use it too.
pub(crate) fn weighted(
    mesh: &Mesh,
    route: &[RouteDestination],
    ns: &str,
    port: u32,
) -> Vec<pb::WeightedCluster> {
    let total: i64 = route.iter().map(|d| i64::from(d.weight.unwrap_or(0))).sum();
    route
        .iter()
        .map(|d| pb::WeightedCluster {
            cluster: routes::destination_cluster(mesh, &d.destination, ns, port),
            weight: routes::share(d.weight, route.len(), total),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::compile::ProxyConfig;
    use crate::mesh::Mesh;
    use crate::mesh_config::MeshConfig;
    use wire::pb;

    const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.example.com"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 15443, name: tls-auto, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: a.default.svc.cluster.local, port: {number: 8443}}}]
  - match: [{port: 443, sniHosts: [b.example.com]}]
    route:
    - {destination: {host: b.default.svc.cluster.local, port: {number: 8443}}, weight: 50}
    - {destination: {host: c.default.svc.cluster.local, port: {number: 8443}}, weight: 50}
  - match: [{port: 9999, sniHosts: [b.example.com]}]
    route: [{destination: {host: z.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: lines.default.svc.cluster.local, port: {number: 9000}}}]
"#;

    fn gateway_config() -> ProxyConfig {
        let resources = api::parse("mesh.yaml", MESH).expect("parses");
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let node = pb::Node {
            pod_name: "gw-0".into(),
            namespace: "istio-system".into(),
            kind: pb::ProxyKind::Gateway as i32,
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        };
        let mut config = ProxyConfig::default();
        crate::gateway::compile(&mesh, &node, &mut config);
        config
    }

    fn listener(config: &ProxyConfig, port: u32) -> &pb::Listener {
        config
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener")
    }

    #[test]
    fn passthrough_server_routes_by_sni_with_weights() {
        let config = gateway_config();
        let l = listener(&config, 443);
        assert_eq!(l.protocol, pb::Protocol::Tls as i32);
        assert!(l.gateway_tls.is_empty() && !l.auto_passthrough);
        let routes: Vec<_> = l
            .l4_routes
            .iter()
            .map(|r| {
                let clusters: Vec<_> = r
                    .clusters
                    .iter()
                    .map(|c| (c.cluster.as_str(), c.weight))
                    .collect();
                (r.sni_hosts.clone(), clusters)
            })
            .collect();
        assert_eq!(
            routes,
            [
                (
                    vec!["a.example.com".to_string()],
                    vec![("outbound|8443||a.default.svc.cluster.local", 100)]
                ),
                (
                    vec!["b.example.com".to_string()],
                    vec![
                        ("outbound|8443||b.default.svc.cluster.local", 50),
                        ("outbound|8443||c.default.svc.cluster.local", 50)
                    ]
                ),
            ],
            "the match for another port is left out"
        );
        assert_eq!(l.l4_routes[0].origin, "VirtualService/default/sni");
    }

    #[test]
    fn sidecars_get_the_tls_routes_of_a_tls_port() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: alt, namespace: default}
spec:
  hosts: [alt.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}, {port: 8443, sniHosts: [x.example.com]}]
    route: [{destination: {host: alt.example.com}}]
"#;
        let resources = api::parse("mesh.yaml", yaml).expect("parses");
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let node = pb::Node {
            pod_name: "client-0".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let config = crate::compile::compile(&mesh, &node);
        let api = config
            .clusters
            .iter()
            .find(|c| c.name == "outbound|443||api.example.com")
            .expect("cluster");
        assert_eq!(
            api.tls_routes.len(),
            1,
            "the match for another port is left out"
        );
        let route = &api.tls_routes[0];
        assert_eq!(route.sni_hosts, ["api.example.com"]);
        assert_eq!(route.clusters[0].cluster, "outbound|443||alt.example.com");
        assert_eq!(route.clusters[0].weight, 100);
        assert!(api.tcp_route.is_empty());
    }

    #[test]
    fn tcp_server_takes_the_first_tcp_route_of_its_port() {
        let config = gateway_config();
        let l = listener(&config, 31400);
        assert_eq!(l.protocol, pb::Protocol::Tcp as i32);
        assert_eq!(l.l4_routes.len(), 1);
        assert!(l.l4_routes[0].sni_hosts.is_empty());
        assert_eq!(
            l.l4_routes[0].clusters[0].cluster,
            "outbound|9000||lines.default.svc.cluster.local"
        );
        assert!(listener(&config, 15443).auto_passthrough);
    }
}
