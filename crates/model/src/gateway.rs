//! Gateway proxies: listeners from the Gateway servers that select them and
//! routes from the VirtualServices bound to those Gateways.

use std::collections::BTreeMap;

use api::Object;
use api::networking::{Gateway, ServerTlsMode};
use wire::pb;

use crate::compile::ProxyConfig;
use crate::host;
use crate::mesh::Mesh;
use crate::routes;

mod tls;

pub(crate) use tls::client_credential;
use tls::server_tls;

pub fn compile(mesh: &Mesh, node: &pb::Node, config: &mut ProxyConfig) {
    // listen port → its route configs, in order
    let mut listeners: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    // route config → virtual hosts by domain key
    let mut route_configs: BTreeMap<String, BTreeMap<String, pb::VirtualHost>> = BTreeMap::new();
    let mut tls: BTreeMap<u32, Vec<pb::GatewayTls>> = BTreeMap::new();
    // listen port → whether every plaintext server on it asked for httpsRedirect
    let mut redirect: BTreeMap<u32, bool> = BTreeMap::new();
    // listen port → its TCP or TLS-passthrough servers' routes
    let mut l4: BTreeMap<u32, L4Port> = BTreeMap::new();
    for gw in mesh.gateways.iter().filter(|g| selects(g, node)) {
        let gw_ns = gw.metadata.namespace.as_deref().unwrap_or("default");
        let gw_ref = format!("{gw_ns}/{}", gw.metadata.name);
        for server in &gw.spec.servers {
            let protocol = server.port.protocol.to_ascii_uppercase();
            let listen = listen_port(mesh, node, server.port.number);
            let mode = server.tls.as_ref().and_then(|t| t.mode);
            let passthrough = matches!(
                mode,
                None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
            );
            let l4_kind = match protocol.as_str() {
                "TCP" => Some(L4Kind::Tcp),
                "TLS" | "HTTPS" if passthrough && (protocol == "TLS" || server.tls.is_some()) => {
                    Some(L4Kind::Tls {
                        auto: mode == Some(ServerTlsMode::AutoPassthrough),
                    })
                }
                "TLS" => {
                    tracing::warn!(gateway = %gw_ref, port = server.port.number, "TLS server that terminates TLS (tls.mode SIMPLE/MUTUAL) skipped: only PASSTHROUGH and AUTO_PASSTHROUGH TLS servers are supported");
                    continue;
                }
                _ => None,
            };
            if let Some(kind) = l4_kind {
                let port = l4.entry(listen).or_insert_with(|| L4Port {
                    kind,
                    routes: Vec::new(),
                });
                if port.kind.is_tls() != kind.is_tls() {
                    tracing::warn!(gateway = %gw_ref, port = server.port.number, "TCP and TLS servers share a port; this server is skipped");
                    continue;
                }
                if let L4Kind::Tls { auto: true } = kind {
                    port.kind = kind;
                }
                port.routes.extend(crate::l4_routes::gateway_routes(
                    mesh,
                    gw,
                    &gw_ref,
                    server,
                    kind.is_tls(),
                ));
                continue;
            }
            let route_config = match protocol.as_str() {
                "HTTP" | "HTTP2" | "GRPC" => {
                    let wants = server.tls.as_ref().is_some_and(|t| t.https_redirect);
                    let all = redirect.entry(listen).or_insert(wants);
                    if *all != wants {
                        // The redirect is per port here, not per host as in Istio.
                        tracing::warn!(gateway = %gw_ref, port = server.port.number, "servers on one port disagree on httpsRedirect; none is redirected");
                    }
                    *all &= wants;
                    format!("http.{listen}")
                }
                "HTTPS" => match server_tls(mesh, node, server) {
                    Ok(mut t) => {
                        // Istio's name: each HTTPS server routes only its own hosts.
                        t.route_config = format!(
                            "https.{}.{}.{}.{gw_ns}",
                            server.port.number, server.port.name, gw.metadata.name
                        );
                        let name = t.route_config.clone();
                        tls.entry(listen).or_default().push(t);
                        name
                    }
                    Err(why) => {
                        // As Istio does: this server is left out, the others still serve.
                        tracing::warn!(gateway = %gw_ref, port = server.port.number, "HTTPS server skipped: {why}");
                        continue;
                    }
                },
                _ => continue,
            };
            let names = listeners.entry(listen).or_default();
            if !names.contains(&route_config) {
                names.push(route_config.clone());
            }
            let vhosts = route_configs.entry(route_config).or_default();
            for vs in &mesh.virtual_services {
                let vs_ns = vs.metadata.namespace.as_deref().unwrap_or("default");
                if !vs
                    .spec
                    .gateways
                    .iter()
                    .any(|g| routes::gateway_ref(g, vs_ns) == gw_ref)
                {
                    continue;
                }
                for h in &vs.spec.hosts {
                    if !server
                        .hosts
                        .iter()
                        .any(|sh| server_host_admits(sh, h, vs_ns, gw_ns))
                    {
                        continue;
                    }
                    let vh = vhosts.entry(h.clone()).or_insert_with(|| pb::VirtualHost {
                        name: format!("{h}:{}", server.port.number),
                        domains: gateway_domains(h, server.port.number),
                        routes: Vec::new(),
                    });
                    // Istio merges the routes of every VirtualService for one host on a gateway.
                    vh.routes.extend(server_port_checked(routes::http_routes(
                        mesh,
                        vs,
                        server.port.number,
                        &gw_ref,
                    )));
                }
            }
        }
    }
    // The gateway's own AuthorizationPolicies (selected by its labels, as
    // Istio's ingress gateway), the same on every port: its HTTPS servers end
    // TLS and serve HTTP, so HTTP rules apply everywhere.
    let workload = mesh.registry.workload(&node.pod_name, &node.namespace);
    let authz_http = workload
        .map(|w| crate::authz::WorkloadAuthz::new(mesh, w).http)
        .unwrap_or_default();
    // Its RequestAuthentications, the same way.
    let jwt_rules = workload
        .map(|w| crate::jwt::workload_rules(mesh, w))
        .unwrap_or_default();
    // On TCP and TLS-passthrough servers, its policies as for TCP.
    let authz_tcp = workload
        .map(|w| crate::authz::WorkloadAuthz::new(mesh, w).tcp)
        .unwrap_or_default();
    for (port, l4) in l4 {
        if listeners.contains_key(&port) {
            tracing::warn!(
                port,
                "HTTP and TCP/TLS-passthrough gateway servers share a port; it serves HTTP only"
            );
            continue;
        }
        let protocol = if l4.kind.is_tls() {
            pb::Protocol::Tls
        } else {
            pb::Protocol::Tcp
        };
        config.listeners.push(pb::Listener {
            name: format!("gateway|{port}"),
            authz_tcp: authz_tcp.clone(),
            address: node.pod_ip.clone(),
            port,
            direction: pb::Direction::Gateway as i32,
            protocol: protocol as i32,
            l4_routes: l4.routes,
            auto_passthrough: matches!(l4.kind, L4Kind::Tls { auto: true }),
            ..Default::default()
        });
    }
    let first_http = config.listeners.len();
    for (port, names) in listeners {
        // A TLS connection routes by its server's own config; this one is
        // what a plaintext port (or a proxy without per-server routing) uses.
        let route_config = names
            .first()
            .cloned()
            .unwrap_or_else(|| format!("http.{port}"));
        let gateway_tls = tls.remove(&port).unwrap_or_default();
        if !gateway_tls.is_empty() && redirect.contains_key(&port) {
            tracing::warn!(
                port,
                "plaintext and HTTPS gateway servers share a port; it serves HTTPS only"
            );
        }
        let protocol = if gateway_tls.is_empty() {
            pb::Protocol::Http
        } else {
            pb::Protocol::Https
        };
        config.listeners.push(pb::Listener {
            name: format!("gateway|{port}"),
            authz_http: authz_http.clone(),
            jwt_rules: jwt_rules.clone(),
            address: node.pod_ip.clone(),
            port,
            direction: pb::Direction::Gateway as i32,
            protocol: protocol as i32,
            app_port: 0,
            route_config: route_config.clone(),
            https_redirect: gateway_tls.is_empty() && redirect.get(&port).copied().unwrap_or(false),
            gateway_tls,
            path_normalization: mesh.config.path_normalization.normalization.to_pb() as i32,
            num_trusted_proxies: mesh
                .config
                .default_config
                .gateway_topology
                .num_trusted_proxies,
            ..Default::default()
        });
        for name in names {
            let vhosts = route_configs.remove(&name).unwrap_or_default();
            config.routes.push(pb::RouteConfig {
                name,
                virtual_hosts: vhosts.into_values().collect(),
            });
        }
    }
    if let Some(w) = workload {
        crate::rate_limit::apply(mesh, w, true, &mut config.listeners[first_http..]);
    }
}

/// Routes whose matches' `port` the compiler already held against the
/// server's port, with that condition dropped: the gateway listens on the
/// Service's target port (443 → 8443), which the proxy would compare with
/// the match's 443 and never route.
fn server_port_checked(mut routes: Vec<pb::Route>) -> Vec<pb::Route> {
    for m in routes.iter_mut().flat_map(|r| &mut r.matches) {
        m.port = 0;
    }
    routes
}

/// A listen port's TCP or TLS-passthrough servers.
struct L4Port {
    kind: L4Kind,
    routes: Vec<pb::L4Route>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum L4Kind {
    Tcp,
    /// `auto`: AUTO_PASSTHROUGH (SNI names the cluster).
    Tls {
        auto: bool,
    },
}

impl L4Kind {
    fn is_tls(self) -> bool {
        matches!(self, L4Kind::Tls { .. })
    }
}

pub(crate) fn selects(gw: &Object<Gateway>, node: &pb::Node) -> bool {
    !gw.spec.selector.is_empty()
        && gw
            .spec
            .selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
}

/// Gateway server ports are service ports; the gateway pod listens on the
/// target port of its Service (Istio's ingress maps 80 → 8080).
pub(crate) fn listen_port(mesh: &Mesh, node: &pb::Node, port: u32) -> u32 {
    let Some(w) = mesh.registry.workload(&node.pod_name, &node.namespace) else {
        return port;
    };
    mesh.registry
        .services_of(w)
        .find_map(|svc| {
            let sp = svc.port(port)?;
            mesh.registry
                .endpoints(svc, sp, &BTreeMap::new())
                .find(|(e, _)| e.name == w.name)
                .map(|(_, t)| t)
        })
        .unwrap_or(port)
}

/// A server host is `host` or `<ns>/host`: `*` is any namespace, `.` the Gateway's own.
pub(crate) fn server_host_admits(
    server_host: &str,
    vs_host: &str,
    vs_ns: &str,
    gw_ns: &str,
) -> bool {
    let (ns, h) = server_host.split_once('/').unwrap_or(("*", server_host));
    let ns_ok = ns == "*" || ns == vs_ns || (ns == "." && vs_ns == gw_ns);
    ns_ok && (host::matches(h, vs_host) || host::matches(vs_host, h))
}

fn gateway_domains(h: &str, port: u32) -> Vec<String> {
    if h == "*" {
        vec!["*".into()]
    } else {
        vec![h.to_string(), format!("{h}:{port}")]
    }
}

#[cfg(test)]
mod tests {
    use super::tls::TlsError;
    use super::*;
    use crate::mesh_config::MeshConfig;

    const BASE: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
    hosts: [bookinfo.example.com]
  - port: {number: 443, name: https-mtls, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: mtls-credential}
    hosts: ["istio-system/*.mtls.example.com"]
  - port: {number: 80, name: http, protocol: HTTP}
    tls: {httpsRedirect: true}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: [bookinfo.example.com, "*.mtls.example.com"]
  gateways: [gw]
  http: [{route: [{destination: {host: echo.default.svc.cluster.local}}]}]
"#;

    const BOOKINFO_SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: bookinfo-credential, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n"
  tls.key: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"
"#;

    fn config(extra: &str) -> ProxyConfig {
        let mut resources = api::parse("base.yaml", BASE).expect("base parses");
        resources.extend(api::parse("extra.yaml", extra).expect("extra parses"));
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let node = pb::Node {
            id: "gw-0.istio-system".into(),
            pod_name: "gw-0".into(),
            namespace: "istio-system".into(),
            kind: pb::ProxyKind::Gateway as i32,
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        };
        let mut config = ProxyConfig::default();
        compile(&mesh, &node, &mut config);
        config
    }

    fn listener(config: &ProxyConfig, port: u32) -> &pb::Listener {
        config
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener on the port")
    }

    /// The virtual host names of a route config.
    fn virtual_hosts<'a>(config: &'a ProxyConfig, route_config: &str) -> Vec<&'a str> {
        config
            .routes
            .iter()
            .find(|r| r.name == route_config)
            .expect("route config")
            .virtual_hosts
            .iter()
            .map(|v| v.name.as_str())
            .collect()
    }

    #[test]
    fn simple_server_carries_the_secret_and_hosts_as_sni() {
        let config = config(BOOKINFO_SECRET);
        let l = listener(&config, 443);
        assert_eq!(l.protocol, pb::Protocol::Https as i32);
        // The MUTUAL server's Secret is missing: it alone is skipped.
        assert_eq!(l.gateway_tls.len(), 1);
        let tls = &l.gateway_tls[0];
        assert_eq!(tls.sni, ["bookinfo.example.com"]);
        assert!(tls.cert_chain.contains("\nCERT\n") && tls.private_key.contains("\nKEY\n"));
        assert_eq!(tls.client_ca, "");
        assert_eq!(tls.route_config, "https.443.https.gw.istio-system");
        assert_eq!(l.route_config, tls.route_config);
        let hosts = virtual_hosts(&config, &tls.route_config);
        assert_eq!(hosts, ["bookinfo.example.com:443"]);
        let plain = listener(&config, 80);
        assert!(plain.https_redirect && plain.gateway_tls.is_empty());
        assert_eq!(plain.protocol, pb::Protocol::Http as i32);
    }

    #[test]
    fn mutual_takes_the_ca_from_the_secret_or_its_cacert_twin() {
        let generic = r#"
apiVersion: v1
kind: Secret
metadata: {name: mtls-credential, namespace: istio-system}
data:
  cert: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkMyCg==
  key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCg==
---
apiVersion: v1
kind: Secret
metadata: {name: mtls-credential-cacert, namespace: istio-system}
stringData: {cacert: CA2}
"#;
        let config = config(generic);
        let l = listener(&config, 443);
        assert_eq!(l.gateway_tls.len(), 1, "bookinfo's Secret is missing");
        let tls = &l.gateway_tls[0];
        assert_eq!(
            tls.sni,
            ["*.mtls.example.com"],
            "the namespace part of the host is no SNI"
        );
        assert_eq!(
            (tls.cert_chain.as_str(), tls.client_ca.as_str()),
            ("-----BEGIN CERTIFICATE-----\nC2\n", "CA2")
        );
        let hosts = virtual_hosts(&config, &tls.route_config);
        assert_eq!(
            hosts,
            ["*.mtls.example.com:443"],
            "only this server's hosts"
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut resources = api::parse("base.yaml", BASE).expect("base parses");
        resources.extend(
            api::parse(
                "x.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: mtls-credential, namespace: istio-system}\nstringData: {tls.crt: '-----BEGIN CERTIFICATE-----', tls.key: '-----BEGIN PRIVATE KEY-----'}\n",
            )
            .expect("parses"),
        );
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let node = pb::Node {
            namespace: "istio-system".into(),
            ..Default::default()
        };
        let servers = &mesh.gateways[0].spec.servers;
        let err = server_tls(&mesh, &node, &servers[0]).expect_err("no secret");
        assert_eq!(
            err.to_string(),
            "Secret istio-system/bookinfo-credential (tls.credentialName) not found"
        );
        let err = server_tls(&mesh, &node, &servers[1]).expect_err("no CA");
        assert!(err.to_string().contains("MUTUAL needs a CA"), "{err}");
        resources.extend(
            api::parse(
                "y.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: bookinfo-credential, namespace: istio-system}\nstringData: {tls.crt: C, tls.key: K}\n",
            )
            .expect("parses"),
        );
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let err = server_tls(&mesh, &node, &servers[0]).expect_err("not PEM");
        assert_eq!(
            err.to_string(),
            "Secret istio-system/bookinfo-credential: the certificate is not PEM"
        );
        // Secrets are looked up in the gateway workload's namespace only.
        let elsewhere = pb::Node {
            namespace: "default".into(),
            ..Default::default()
        };
        assert!(matches!(
            server_tls(&mesh, &elsewhere, &servers[1]),
            Err(TlsError::SecretNotFound { .. })
        ));
    }

    #[test]
    fn no_usable_server_means_no_https_listener() {
        let config = config("");
        assert!(config.listeners.iter().all(|l| l.port != 443));
        assert!(listener(&config, 80).https_redirect);
    }

    #[test]
    fn destination_rule_credential_name_resolves_at_gateways_only() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 8443, name: https-alt, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, credentialName: client-credential, sni: secure.example.test}
    - port: {number: 8443}
      tls: {mode: SIMPLE, credentialName: missing}
---
apiVersion: v1
kind: Secret
metadata: {name: client-credential, namespace: istio-system}
stringData: {tls.crt: CERT, tls.key: KEY, ca.crt: CA}
"#;
        let resources = api::parse("mesh.yaml", yaml).expect("parses");
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let tls_of = |kind: pb::ProxyKind, port: u32| {
            let node = pb::Node {
                pod_name: "p-0".into(),
                namespace: "istio-system".into(),
                kind: kind as i32,
                ..Default::default()
            };
            let config = crate::compile::compile(&mesh, &node);
            let name = format!("outbound|{port}||secure.example.test");
            let c = config
                .clusters
                .iter()
                .find(|c| c.name == name)
                .expect("cluster");
            c.tls.clone().expect("tls")
        };
        let gw = tls_of(pb::ProxyKind::Gateway, 443);
        assert_eq!(gw.mode, pb::UpstreamTlsMode::Mutual as i32);
        assert_eq!(
            (
                gw.ca_certificates_pem.as_str(),
                gw.client_certificate_pem.as_str(),
                gw.private_key_pem.as_str()
            ),
            ("CA", "CERT", "KEY")
        );
        assert!(!format!("{gw:?}").contains("KEY"), "Debug shows no key");
        let missing = tls_of(pb::ProxyKind::Gateway, 8443);
        assert!(
            missing
                .credential_error
                .contains("istio-system/missing not found"),
            "{missing:?}"
        );
        // Sidecars keep to the certificate paths, as Istio's do: without
        // them this one cluster refuses, saying why (the proxy's config is
        // not rejected as a whole).
        let sidecar = tls_of(pb::ProxyKind::Sidecar, 443);
        assert!(sidecar.private_key_pem.is_empty());
        assert!(
            sidecar.credential_error.contains("gateways only"),
            "{sidecar:?}"
        );
        let simple = tls_of(pb::ProxyKind::Sidecar, 8443);
        assert!(simple.credential_error.is_empty(), "{simple:?}");
    }

    #[test]
    fn gateway_listeners_carry_num_trusted_proxies() {
        let resources = api::parse("base.yaml", BASE).expect("base parses");
        let mut mesh_config = MeshConfig::default();
        mesh_config
            .default_config
            .gateway_topology
            .num_trusted_proxies = 2;
        let mesh = Mesh::build(&resources, mesh_config);
        let node = pb::Node {
            pod_name: "gw-0".into(),
            namespace: "istio-system".into(),
            kind: pb::ProxyKind::Gateway as i32,
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ..Default::default()
        };
        let mut config = ProxyConfig::default();
        compile(&mesh, &node, &mut config);
        assert!(!config.listeners.is_empty());
        assert!(config.listeners.iter().all(|l| l.num_trusted_proxies == 2));
    }

    #[test]
    fn istio_mutual_server_uses_the_workload_certificate_and_routes_its_port() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: mesh, protocol: HTTPS}
    hosts: [edition.example.test]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: out, namespace: istio-system}
spec:
  hosts: [edition.example.test]
  gateways: [egress]
  http:
  - match: [{gateways: [egress], port: 8443}]
    route: [{destination: {host: edition.example.test, port: {number: 80}}}]
  - match: [{gateways: [egress], port: 9999}]
    route: [{destination: {host: other.example.test}}]
"#;
        let config = config(yaml);
        let l = listener(&config, 8443);
        assert_eq!(l.gateway_tls.len(), 1);
        let tls = &l.gateway_tls[0];
        assert!(tls.istio_mutual, "{tls:?}");
        assert!(
            tls.cert_chain.is_empty() && tls.private_key.is_empty() && tls.client_ca.is_empty()
        );
        assert_eq!(tls.sni, ["edition.example.test"]);
        let rc = config
            .routes
            .iter()
            .find(|r| r.name == tls.route_config)
            .expect("route config");
        let routes = &rc.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 1, "the other port's route is left out");
        // Checked here against the server's port: the proxy, listening on the
        // Service's target port, must not compare it again.
        assert_eq!(routes[0].matches[0].port, 0);
    }
}

/// Secrets reach the compiler through the control plane's store, which
/// keeps them as YAML.
#[cfg(test)]
mod roundtrip {
    #[test]
    fn secret_string_data_survives_the_store() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    AAAA\n    -----END CERTIFICATE-----\n  tls.key: |\n    -----BEGIN PRIVATE KEY-----\n    BBBB\n    -----END PRIVATE KEY-----\n";
        let r = api::parse("a.yaml", yaml).expect("parse");
        let again = r[0].to_yaml();
        let back = api::parse("b.yaml", &again).expect("reparse");
        assert_eq!(r, back);
    }
}
