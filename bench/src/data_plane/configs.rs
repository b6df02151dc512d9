//! The generated configs: trellis-proxy's static config (the proxy API as
//! JSON) and Envoy's static bootstrap, for the same topology and the same
//! work, with or without mTLS between the sidecars.

use std::net::IpAddr;

use serde_json::{Value, json};
use wire::pb::{self, resource::Kind};

use crate::certs::{self, Workload};

pub const ECHO: &str = "echo";
/// The `echo` service's VIP (its ClusterIP).
pub const ECHO_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 1);
pub const PORT: u16 = 8080;
/// The HTTP/2 scenario's port: the app behind it speaks HTTP/2 only (h2c
/// prior knowledge), as nginx's `listen … http2` does, so every hop of that
/// scenario is HTTP/2 and the authority must be right (nginx refuses a Host
/// that differs from `:authority`).
pub const H2_PORT: u16 = 8081;
pub const OUTBOUND_PORT: u16 = 15001;
pub const ADMIN_PORT: u16 = 15000;

/// Telemetry on, as the telemetry scenario turns it on for both proxies
/// (Istio's defaults where it has them): traces sampled at 1 % and sent
/// as Zipkin v2 JSON to `collector`, every request logged in Istio's TEXT
/// format to `log`. Metrics are each proxy's as always (see
/// docs/benchmarks.md).
pub struct Telemetry {
    pub collector: std::net::SocketAddr,
    pub log: String,
}

/// Istio's default sampling, percent.
const SAMPLING_PERCENT: f64 = 1.0;
const ZIPKIN_PATH: &str = "/api/v2/spans";
/// Istio's default access log format (`EnvoyTextLogFormat`): what trellis-proxy
/// writes for an empty format, given to Envoy as Istio gives it.
const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

fn fqdn(svc: &str) -> String {
    format!("{svc}.default.svc.cluster.local")
}

fn cluster_name(svc: &str, port: u16) -> String {
    format!("outbound|{port}||{}", fqdn(svc))
}

/// Every name a client may use for a service, as Istio lists them.
fn domains(svc: &str, vip: &str, port: u16) -> Vec<String> {
    let names = [
        fqdn(svc),
        svc.to_string(),
        format!("{svc}.default.svc"),
        format!("{svc}.default"),
        vip.to_string(),
    ];
    names
        .iter()
        .flat_map(|n| {
            // Without a port, a name means the default port: only there, so
            // that Envoy's one outbound route config has each name once.
            let bare = (port == PORT).then(|| n.clone());
            bare.into_iter().chain([format!("{n}:{port}")])
        })
        .collect()
}

/// A service port of the mesh: name, VIP, port, endpoints (the large
/// mesh's three each are never contacted).
pub struct Service {
    name: String,
    vip: String,
    port: u16,
    endpoints: Vec<(String, u16)>,
}

/// `echo` on both of its ports (the server side's inbound listeners), then
/// `extra` services of the large mesh.
pub fn services(echo_ip: IpAddr, extra: usize) -> Vec<Service> {
    let mut v: Vec<Service> = [PORT, H2_PORT]
        .into_iter()
        .map(|port| Service {
            name: ECHO.into(),
            vip: ECHO_VIP.to_string(),
            port,
            endpoints: vec![(echo_ip.to_string(), port)],
        })
        .collect();
    for i in 0..extra {
        v.push(Service {
            name: format!("svc-{i}"),
            vip: format!("10.97.{}.{}", i / 250, i % 250 + 1),
            port: PORT,
            endpoints: (1..=3)
                .map(|j| (format!("10.{}.{}.{}", 100 + j, i / 250, i % 250 + 1), PORT))
                .collect(),
        });
    }
    v
}

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: "1".into(),
        kind: Some(kind),
    }
}

/// trellis-proxy's static config: the outbound side (every sidecar carries
/// it, as in Istio) and, server side, the inbound listener to the app.
pub fn trellis_config(
    services: &[Service],
    inbound: bool,
    mtls: bool,
    telemetry: Option<&Telemetry>,
) -> Value {
    let mut resources = Vec::new();
    // The same policies on each side: the inbound listeners carry the
    // server side's, virtualOutbound (not bound without capture) the
    // client side's, which the explicit proxy applies too.
    let tracing = telemetry.map(|t| pb::TracingPolicy {
        sampling_percent: SAMPLING_PERCENT,
        collector: Some(pb::TraceCollector {
            name: "zipkin".into(),
            protocol: pb::TraceProtocol::Zipkin as i32,
            address: t.collector.to_string(),
            path: ZIPKIN_PATH.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let access_logs: Vec<pb::AccessLogPolicy> = telemetry
        .map(|t| pb::AccessLogPolicy {
            name: "envoy".into(),
            path: t.log.clone(),
            encoding: pb::AccessLogEncoding::Text as i32,
            ..Default::default()
        })
        .into_iter()
        .collect();
    if telemetry.is_some() && !inbound {
        resources.push(resource(
            "virtualOutbound",
            Kind::Listener(pb::Listener {
                name: "virtualOutbound".into(),
                port: u32::from(OUTBOUND_PORT),
                direction: pb::Direction::Outbound as i32,
                tracing: tracing.clone(),
                access_logs: access_logs.clone(),
                ..Default::default()
            }),
        ));
    }
    let mut vhosts: std::collections::BTreeMap<u16, Vec<pb::VirtualHost>> = Default::default();
    for s in services {
        let name = cluster_name(&s.name, s.port);
        resources.push(resource(
            &name,
            Kind::Cluster(pb::Cluster {
                name: name.clone(),
                service: fqdn(&s.name),
                port: u32::from(s.port),
                connect_timeout_ms: 1000,
                // Captured connections to the VIP belong to the service.
                addresses: vec![s.vip.clone()],
                // Said outright either way (unset would be auto mTLS): ISTIO_MUTUAL
                // checks the server's SPIFFE id against the endpoint's `identity`.
                tls: Some(pb::UpstreamTls {
                    mode: if mtls {
                        pb::UpstreamTlsMode::IstioMutual
                    } else {
                        pb::UpstreamTlsMode::Disable
                    } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ));
        resources.push(resource(
            &name,
            Kind::Endpoints(pb::ClusterEndpoints {
                cluster: name.clone(),
                compact: None,
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|(ip, port)| pb::Endpoint {
                        address: ip.clone(),
                        port: u32::from(*port),
                        labels: [("app".to_string(), s.name.clone())].into(),
                        pod: format!("{}.default", s.name),
                        healthy: true,
                        has_sidecar: true,
                        identity: certs::spiffe_id(&s.name),
                        workload: s.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
        ));
        vhosts.entry(s.port).or_default().push(pb::VirtualHost {
            name: format!("{}:{}", fqdn(&s.name), s.port),
            domains: domains(&s.name, &s.vip, s.port),
            routes: vec![pb::Route {
                name: "default".into(),
                action: Some(pb::route::Action::Forward(pb::RouteAction {
                    clusters: vec![pb::WeightedCluster {
                        cluster: name,
                        weight: 100,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }],
        });
    }
    for (port, virtual_hosts) in vhosts {
        resources.push(resource(
            &port.to_string(),
            Kind::RouteConfig(pb::RouteConfig {
                name: port.to_string(),
                virtual_hosts,
            }),
        ));
    }
    // The app's HTTP port follows the client's protocol; its HTTP/2 port is
    // declared so (Istio: a port named `http2`).
    for (port, protocol) in [(PORT, pb::Protocol::Http), (H2_PORT, pb::Protocol::Http2)] {
        if !inbound {
            break;
        }
        resources.push(resource(
            &format!("inbound|{port}"),
            Kind::Listener(pb::Listener {
                name: format!("inbound|{port}"),
                port: u32::from(port),
                direction: pb::Direction::Inbound as i32,
                protocol: protocol as i32,
                app_port: u32::from(port),
                service: fqdn(ECHO),
                mtls_mode: if mtls {
                    pb::MtlsMode::Strict
                } else {
                    pb::MtlsMode::Disable
                } as i32,
                tracing: tracing.clone(),
                access_logs: access_logs.clone(),
                ..Default::default()
            }),
        ));
    }
    json!({ "resources": resources })
}

fn socket(ip: IpAddr, port: u16) -> Value {
    json!({ "socket_address": { "address": ip.to_string(), "port_value": port } })
}

/// Istio's TLS parameters for mesh traffic: TLS 1.2 to 1.3 (Envoy's client
/// default stops at 1.2; rustls, and so Trellis, speaks 1.3).
fn envoy_tls_params() -> Value {
    json!({ "tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3" })
}

/// The certificate and the roots come from static secrets named as Istio's SDS
/// names them, shared by every cluster (as SDS shares them), not loaded per cluster.
fn envoy_common_tls(san: Value) -> Value {
    json!({
        "tls_params": envoy_tls_params(),
        "tls_certificate_sds_secret_configs": [{ "name": "default" }],
        "combined_validation_context": {
            "default_validation_context": { "match_typed_subject_alt_names": [{ "san_type": "URI", "matcher": san }] },
            "validation_context_sds_secret_config": { "name": "ROOTCA" }
        }
    })
}

/// `tls`: the SPIFFE id the server must present (ISTIO_MUTUAL with secure naming).
fn envoy_cluster(name: &str, endpoints: &[(String, u16)], tls: Option<&str>, http2: bool) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, port)| {
            json!({ "endpoint": { "address": { "socket_address": { "address": ip, "port_value": port } } } })
        })
        .collect();
    let max = u32::MAX;
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        // As Istio sets them: no circuit breaking by default.
        "circuit_breakers": { "thresholds": [{
            "max_connections": max, "max_pending_requests": max,
            "max_requests": max, "max_retries": max
        }]},
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": lb_endpoints }] },
    });
    // The upstream speaks what the client spoke, as trellis-proxy's default,
    // or HTTP/2 always (an HTTP/2 app port).
    let protocol = if http2 {
        json!({ "explicit_http_config": { "http2_protocol_options": {} } })
    } else {
        json!({ "use_downstream_protocol_config": { "http_protocol_options": {}, "http2_protocol_options": {} } })
    };
    let mut options = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    });
    if let (Some(o), Some(p)) = (options.as_object_mut(), protocol.as_object()) {
        o.extend(p.clone());
    }
    cluster["typed_extension_protocol_options"] =
        json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options });
    if let Some(server_id) = tls {
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": envoy_common_tls(json!({ "exact": server_id })),
                "sni": format!("outbound_.{}_._.{}",
                    name.split('|').nth(1).unwrap_or(""),
                    name.rsplit("||").next().unwrap_or(name))
            }
        });
    }
    cluster
}

/// `mtls`: the inbound side of STRICT: a client certificate from the mesh is
/// required, and its identity goes to the app as `x-forwarded-client-cert`
/// (what Trellis's inbound does too).
fn envoy_http_listener(
    name: &str,
    (ip, port): (IpAddr, u16),
    route: Value,
    mtls: bool,
    telemetry: Option<&Telemetry>,
) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": route,
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
        }]
    });
    if let Some(t) = telemetry {
        // As Istio configures Envoy: Zipkin tracer, random sampling at the
        // mesh's percentage; the file access log with Istio's format.
        hcm["tracing"] = json!({
            "client_sampling": { "value": 100.0 },
            "random_sampling": { "value": SAMPLING_PERCENT },
            "overall_sampling": { "value": 100.0 },
            "provider": {
                "name": "envoy.tracers.zipkin",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                    "collector_cluster": "zipkin",
                    "collector_endpoint": ZIPKIN_PATH,
                    "collector_endpoint_version": "HTTP_JSON",
                    "trace_id_128bit": true,
                    "shared_span_context": false
                }
            }
        });
        hcm["access_log"] = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": t.log,
                "log_format": { "text_format_source": { "inline_string": ISTIO_TEXT_FORMAT } }
            }
        }]);
    }
    let mut chain = json!({});
    if mtls {
        hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
        hcm["set_current_client_cert_details"] = json!({ "uri": true });
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": envoy_common_tls(
                    json!({ "prefix": format!("spiffe://{}/", certs::TRUST_DOMAIN) })
                )
            }
        });
    }
    chain["filters"] =
        json!([{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }]);
    json!({ "name": name, "address": socket(ip, port), "filter_chains": [chain] })
}

/// Envoy's static bootstrap for the same topology and work as trellis-proxy's;
/// `tls`: this side's workload certificate, for mTLS between the sidecars.
pub fn envoy_config(
    services: &[Service],
    ip: IpAddr,
    inbound_app: Option<IpAddr>,
    tls: Option<&Workload>,
    telemetry: Option<&Telemetry>,
) -> Value {
    let mut clusters = Vec::new();
    let mut vhosts = Vec::new();
    for s in services {
        let name = cluster_name(&s.name, s.port);
        let server_id = certs::spiffe_id(&s.name);
        clusters.push(envoy_cluster(
            &name,
            &s.endpoints,
            tls.map(|_| server_id.as_str()),
            false,
        ));
        vhosts.push(json!({
            "name": format!("{}:{}", fqdn(&s.name), s.port),
            "domains": domains(&s.name, &s.vip, s.port),
            "routes": [{ "name": "default", "match": { "prefix": "/" }, "route": { "cluster": name } }]
        }));
    }
    let mut listeners = vec![envoy_http_listener(
        "outbound_proxy",
        (ip, OUTBOUND_PORT),
        json!({ "name": PORT.to_string(), "virtual_hosts": vhosts }),
        false,
        telemetry,
    )];
    if let Some(t) = telemetry {
        clusters.push(envoy_cluster(
            "zipkin",
            &[(t.collector.ip().to_string(), t.collector.port())],
            None,
            false,
        ));
    }
    for (port, http2) in [(PORT, false), (H2_PORT, true)] {
        let Some(app) = inbound_app else { break };
        let name = format!("inbound|{port}||");
        clusters.push(envoy_cluster(
            &name,
            &[(app.to_string(), port)],
            None,
            http2,
        ));
        listeners.push(envoy_http_listener(
            &format!("inbound|{port}"),
            (ip, port),
            json!({ "name": "inbound", "virtual_hosts": [{
                "name": format!("inbound|http|{port}"), "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": name } }]
            }]}),
            tls.is_some(),
            telemetry,
        ));
    }
    let mut static_resources = json!({ "listeners": listeners, "clusters": clusters });
    if let Some(w) = tls {
        static_resources["secrets"] = json!([
            { "name": "default", "tls_certificate": {
                "certificate_chain": { "filename": w.cert_chain },
                "private_key": { "filename": w.key }
            }},
            { "name": "ROOTCA", "validation_context": { "trusted_ca": { "filename": w.roots } } }
        ]);
    }
    json!({
        "node": { "id": format!("{ip}"), "cluster": "bench" },
        "admin": { "address": socket(ip, ADMIN_PORT) },
        "static_resources": static_resources
    })
}
