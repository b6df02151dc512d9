use super::*;
use crate::MeshConfig;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2-abc
  namespace: shop
  labels: {app: reviews, version: v2}
  annotations: {sidecar.istio.io/status: "{}"}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: reviews, image: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-abc
  namespace: shop
  labels: {app: reviews, version: v1}
spec:
  containers: [{name: reviews, image: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 10}}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {9080: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all-posts, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings}}
  rules: [{}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
"#;

fn describe(pod_name: &str) -> PodDescription {
    let resources = api::parse("mesh.yaml", MESH).expect("the mesh parses");
    let mesh = Mesh::build(&resources, MeshConfig::default());
    pod(&mesh, pod_name, "shop").expect("the pod is described")
}

#[test]
fn the_service_its_rule_subset_and_routes_that_reach_the_pod() {
    let d = describe("reviews-v2-abc");
    assert_eq!(d.workload, "reviews-v2-abc");
    assert!(d.sidecar_injected);
    assert_eq!(d.service_account, "bookinfo-reviews");
    let [svc] = &d.services[..] else {
        panic!("one service: {:?}", d.services)
    };
    assert_eq!(svc.hostname, "reviews.shop.svc.cluster.local");
    assert!(svc.why.contains("{app=reviews}"), "{}", svc.why);
    assert!(svc.endpoint, "the pod is an endpoint of its service");
    assert_eq!(svc.ports[0].target_port, Some(9080));
    assert_eq!(svc.ports[0].protocol, "HTTP");

    let dr = svc.destination_rule.as_ref().expect("the rule applies");
    assert_eq!(dr.rule.name, "shop/reviews");
    assert_eq!(dr.matching_subsets, ["v2"]);
    assert_eq!(dr.other_subsets, ["v1", "v3"]);
    // The top level's tls and the v2 subset's own connection pool.
    assert_eq!(dr.policies, ["tls", "connectionPool"]);
    assert_eq!(dr.tls, [(9080, "ISTIO_MUTUAL".to_string())]);

    let vs = svc.virtual_service.as_ref().expect("the routes apply");
    assert_eq!(vs.virtual_service.name, "shop/reviews");
    let [jason, split] = &vs.routes[..] else {
        panic!("two routes: {:?}", vs.routes)
    };
    assert_eq!(jason.matches, ["header end-user exact jason"]);
    assert_eq!(jason.percent_to_pod, 100.0);
    assert_eq!(split.matches, Vec::<String>::new());
    assert_eq!(split.percent_to_pod, 50.0);
    assert_eq!(
        split
            .destinations
            .iter()
            .map(|d| (d.subset.as_str(), d.percent, d.to_pod))
            .collect::<Vec<_>>(),
        [("v1", 50.0, false), ("v2", 50.0, true)]
    );
}

#[test]
fn another_subsets_pod_gets_none_of_the_header_route() {
    let d = describe("reviews-v1-abc");
    let svc = &d.services[0];
    let dr = svc.destination_rule.as_ref().expect("the rule applies");
    assert_eq!(dr.matching_subsets, ["v1"]);
    // The v1 subset has no policy of its own.
    assert_eq!(dr.policies, ["tls"]);
    let routes = &svc.virtual_service.as_ref().expect("routes").routes;
    assert_eq!(routes[0].percent_to_pod, 0.0);
    assert_eq!(routes[1].percent_to_pod, 50.0);
    assert!(!d.sidecar_injected);
}

#[test]
fn mtls_per_port_names_the_level_and_policy_that_decided_it() {
    let d = describe("reviews-v2-abc");
    let modes: Vec<(u32, &str)> = d.mtls.iter().map(|m| (m.port, m.mode.as_str())).collect();
    assert_eq!(modes, [(0, "STRICT"), (9080, "PERMISSIVE")]);
    // The workload policy sets no mode of its own (UNSET): the mesh's applies.
    assert!(
        d.mtls[0]
            .why
            .contains("PeerAuthentication istio-system/default: mesh-wide"),
        "{}",
        d.mtls[0].why
    );
    assert!(
        d.mtls[1]
            .why
            .contains("PeerAuthentication shop/reviews: portLevelMtls 9080"),
        "{}",
        d.mtls[1].why
    );
}

#[test]
fn authorization_policies_that_select_the_pod_root_namespace_first() {
    let d = describe("reviews-v2-abc");
    let policies: Vec<(&str, &str, usize)> = d
        .authorization_policies
        .iter()
        .map(|p| (p.policy.name.as_str(), p.action.as_str(), p.rules))
        .collect();
    assert_eq!(
        policies,
        [
            ("istio-system/deny-all-posts", "DENY", 1),
            ("shop/reviews-viewer", "ALLOW", 2)
        ]
    );
    assert!(d.authorization_policies[0].policy.why.contains("mesh-wide"));
    assert!(
        d.authorization_policies[1]
            .policy
            .why
            .contains("{app=reviews}")
    );
}

#[test]
fn the_namespaces_sidecar_resource() {
    let d = describe("reviews-v2-abc");
    let sidecar = d.sidecar.expect("the namespace's Sidecar applies");
    assert_eq!(sidecar.name, "shop/default");
    assert!(sidecar.why.contains("without workloadSelector"));
}

#[test]
fn a_pod_not_in_the_registry_is_an_error_naming_it() {
    let resources = api::parse("mesh.yaml", MESH).expect("the mesh parses");
    let mesh = Mesh::build(&resources, MeshConfig::default());
    let e = pod(&mesh, "nope", "shop").unwrap_err().to_string();
    assert!(e.contains("shop/nope"), "{e}");
}

const GATEWAY_MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-abc
  namespace: istio-system
  labels: {istio: ingressgateway, app: istio-ingressgateway}
  annotations: {sidecar.istio.io/status: "{}"}
spec:
  containers: [{name: istio-proxy, image: proxyv2, ports: [{containerPort: 8080}, {containerPort: 8443}]}]
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: shop}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["shop/bookinfo.example.com"]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-gateway, namespace: shop}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: not-bound, namespace: shop}
spec:
  hosts: ["*"]
  http: [{route: [{destination: {host: productpage}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: "testing@secure.istio.io", jwksUri: "https://example.com/jwks.json"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: "other"}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ingress-tracing, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  tracing: [{randomSamplingPercentage: 10, match: {mode: CLIENT}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-only, namespace: istio-system}
spec:
  selector: {matchLabels: {app: reviews}}
  metrics: [{providers: [{name: prometheus}]}]
"#;

fn describe_gateway() -> PodDescription {
    let resources = api::parse("mesh.yaml", GATEWAY_MESH).expect("the mesh parses");
    let mesh = Mesh::build(&resources, MeshConfig::default());
    pod(&mesh, "istio-ingressgateway-abc", "istio-system").expect("the pod is described")
}

#[test]
fn a_gateway_pod_shows_its_gateways_servers_and_bound_routes() {
    let d = describe_gateway();
    let [gw] = &d.gateways[..] else {
        panic!("only the Gateway selecting the pod: {:?}", d.gateways)
    };
    assert_eq!(gw.gateway.name, "shop/bookinfo-gateway");
    assert!(
        gw.gateway.why.contains("{istio=ingressgateway}"),
        "{}",
        gw.gateway.why
    );
    let [http, https] = &gw.servers[..] else {
        panic!("two servers: {:?}", gw.servers)
    };
    // Server ports are the Service's; the pod listens on their targetPorts.
    assert_eq!(
        (http.port, http.listen_port, http.protocol.as_str()),
        (80, 8080, "HTTP")
    );
    assert_eq!(http.tls, None);
    assert_eq!((https.port, https.listen_port), (443, 8443));
    assert_eq!(https.hosts, ["shop/bookinfo.example.com"]);
    assert_eq!(
        https.tls.as_deref(),
        Some("SIMPLE, credentialName bookinfo-cert")
    );
    // Only the VirtualService bound to the Gateway; its routes as compiled.
    let [bound] = &http.virtual_services[..] else {
        panic!("one bound VirtualService: {:?}", http.virtual_services)
    };
    assert_eq!(bound.virtual_service.name, "shop/bookinfo");
    assert!(bound.virtual_service.why.contains("shop/bookinfo-gateway"));
    let [route] = &bound.routes[..] else {
        panic!("one route: {:?}", bound.routes)
    };
    assert_eq!(
        route.matches,
        ["uri exact /productpage", "uri prefix /static"]
    );
    assert_eq!(
        route.destinations[0].host,
        "productpage.shop.svc.cluster.local"
    );
    // The HTTPS server's host is bookinfo.example.com: the `*` VirtualService is admitted too.
    assert_eq!(https.virtual_services.len(), 1);
    assert_eq!(https.virtual_services[0].hosts, ["*"]);
}

#[test]
fn request_authentications_and_telemetries_that_select_the_pod_with_why() {
    let d = describe_gateway();
    let [ra] = &d.request_authentications[..] else {
        panic!("one RequestAuthentication: {:?}", d.request_authentications)
    };
    assert_eq!(ra.policy.name, "istio-system/ingress-jwt");
    assert_eq!(ra.issuers, ["testing@secure.istio.io"]);
    assert!(
        ra.policy.why.contains("{istio=ingressgateway}"),
        "{}",
        ra.policy.why
    );

    let telemetries: Vec<(&str, &str)> = d
        .telemetries
        .iter()
        .map(|t| (t.telemetry.name.as_str(), t.level.as_str()))
        .collect();
    assert_eq!(
        telemetries,
        [
            ("istio-system/mesh-default", "mesh"),
            ("istio-system/ingress-tracing", "workload")
        ]
    );
    assert!(d.telemetries[0].telemetry.why.contains("mesh-wide"));
    assert_eq!(d.telemetries[0].sets, ["access logging: providers envoy"]);
    assert_eq!(
        d.telemetries[1].sets,
        ["tracing: the default providers, sampling 10% (CLIENT side)"]
    );
    // A sidecar pod elsewhere gets neither the gateway's JWT rule nor its tracing.
    let d = describe("reviews-v2-abc");
    assert!(d.gateways.is_empty());
    assert!(d.request_authentications.is_empty());
    assert!(d.telemetries.is_empty());
}
