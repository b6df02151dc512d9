//! The generator of inputs: for each kind a valid base and edits to its
//! fields (some harmless, some breaking a rule), hand-written seeds of the
//! tricky cases, and folders of several resources for `analyze`.

use anyhow::Result;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use super::runner;

// The generator: for each kind a valid base, and edits to its fields, some
// harmless, some breaking a rule; a document is a base with up to three edits.

/// A change to one field: a dotted path under the object (`spec.http.0.timeout`)
/// and the YAML value to put there (`~` removes the field).
type Edit = (&'static str, &'static str);

struct Family {
    api_version: &'static str,
    kind: &'static str,
    base: &'static str,
    edits: &'static [Edit],
}

const FAMILIES: &[Family] = &[
    Family {
        api_version: "networking.istio.io/v1",
        kind: "VirtualService",
        base: "{hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}",
        edits: &[
            ("spec.hosts", "[]"),
            ("spec.hosts", "['*']"),
            (
                "spec.hosts",
                "[reviews.default.svc.cluster.local, '*.example.com']",
            ),
            ("spec.hosts", "['http://reviews']"),
            ("spec.hosts", "['10.0.0.1']"),
            ("spec.gateways", "[mesh, istio-system/ingress]"),
            ("spec.gateways", "[a/b/c]"),
            ("spec.exportTo", "['.', '*']"),
            ("spec.exportTo", "['~bad']"),
            ("spec.http.0.timeout", "1.5s"),
            ("spec.http.0.timeout", "-1s"),
            ("spec.http.0.timeout", "1x"),
            (
                "spec.http.0.retries",
                "{attempts: 3, perTryTimeout: 2s, retryOn: 5xx}",
            ),
            ("spec.http.0.retries", "{attempts: -1}"),
            (
                "spec.http.0.retries",
                "{attempts: 3, retryOn: 'bogus-condition'}",
            ),
            ("spec.http.0.route.0.weight", "100"),
            ("spec.http.0.route.0.weight", "-1"),
            ("spec.http.0.route.0.destination.port", "{number: 9080}"),
            ("spec.http.0.route.0.destination.port", "{number: 0}"),
            ("spec.http.0.route.0.destination.host", "''"),
            ("spec.http.0.route.0.destination.subset", "v1"),
            (
                "spec.http.0.match",
                "[{uri: {prefix: /api}}, {headers: {x-user: {exact: a}}}]",
            ),
            ("spec.http.0.match", "[{uri: {regex: '('}}]"),
            (
                "spec.http.0.match",
                "[{headers: {'Bad Header': {exact: a}}}]",
            ),
            ("spec.http.0.match", "[{uri: {}}]"),
            ("spec.http.0.redirect", "{uri: /new}"),
            (
                "spec.http.0.fault",
                "{abort: {httpStatus: 503, percentage: {value: 10}}}",
            ),
            (
                "spec.http.0.fault",
                "{abort: {httpStatus: 700, percentage: {value: 10}}}",
            ),
            (
                "spec.http.0.fault",
                "{delay: {fixedDelay: 1s, percentage: {value: 150}}}",
            ),
            ("spec.http.0.mirror", "{host: mirror}"),
            ("spec.http.0.mirrorPercentage", "{value: 150}"),
            (
                "spec.http.0.corsPolicy",
                "{allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET]}",
            ),
            ("spec.http.0.headers", "{request: {set: {x-a: b}}}"),
            ("spec.http.0.headers", "{request: {set: {'bad header': b}}}"),
            ("spec.http.0.name", "primary"),
            (
                "spec.tcp",
                "[{route: [{destination: {host: reviews, port: {number: 9080}}}]}]",
            ),
            ("spec.tcp", "[{route: []}]"),
            (
                "spec.tls",
                "[{match: [{sniHosts: [reviews]}], route: [{destination: {host: reviews}}]}]",
            ),
            (
                "spec.tls",
                "[{match: [{port: 443}], route: [{destination: {host: reviews}}]}]",
            ),
            ("spec.http", "~"),
            ("spec.unknownField", "1"),
            ("metadata.name", "Bad_Name"),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "DestinationRule",
        base: "{host: reviews}",
        edits: &[
            ("spec.host", "''"),
            ("spec.host", "'*'"),
            ("spec.host", "'*.example.com'"),
            ("spec.subsets", "[{name: v1, labels: {version: v1}}]"),
            ("spec.subsets", "[{name: '', labels: {version: v1}}]"),
            ("spec.subsets", "[{name: v1}, {name: v1}]"),
            ("spec.subsets", "[{name: V_1}]"),
            (
                "spec.trafficPolicy",
                "{loadBalancer: {simple: LEAST_REQUEST}}",
            ),
            (
                "spec.trafficPolicy",
                "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
            ),
            (
                "spec.trafficPolicy",
                "{connectionPool: {tcp: {maxConnections: -1}}}",
            ),
            (
                "spec.trafficPolicy",
                "{connectionPool: {http: {http2KeepAlive: {time: 10s}}}}",
            ),
            (
                "spec.trafficPolicy",
                "{connectionPool: {http: {idleTimeout: 0s}}}",
            ),
            (
                "spec.trafficPolicy",
                "{outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}",
            ),
            (
                "spec.trafficPolicy",
                "{outlierDetection: {maxEjectionPercent: 150}}",
            ),
            (
                "spec.trafficPolicy",
                "{outlierDetection: {interval: 0.0001s}}",
            ),
            ("spec.trafficPolicy", "{tls: {mode: SIMPLE}}"),
            ("spec.trafficPolicy", "{tls: {mode: MUTUAL}}"),
            (
                "spec.trafficPolicy",
                "{tls: {mode: ISTIO_MUTUAL, sni: a.example}}",
            ),
            ("spec.trafficPolicy", "{portLevelSettings: []}"),
            (
                "spec.trafficPolicy",
                "{portLevelSettings: [{port: {number: 9080}, tls: {mode: DISABLE}}]}",
            ),
            (
                "spec.trafficPolicy",
                "{portLevelSettings: [{tls: {mode: DISABLE}}]}",
            ),
            ("spec.workloadSelector", "{matchLabels: {app: reviews}}"),
            ("spec.exportTo", "['.']"),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "Gateway",
        base: "{selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        edits: &[
            ("spec.servers.0.hosts", "[]"),
            ("spec.servers.0.hosts", "[bookinfo/reviews.example.com]"),
            ("spec.servers.0.hosts", "[a/b/c]"),
            ("spec.servers.0.hosts", "['*.example.com', 'example.com']"),
            ("spec.servers.0.port.number", "0"),
            ("spec.servers.0.port.name", "''"),
            ("spec.servers.0.port.protocol", "HTTPS"),
            ("spec.servers.0.port.protocol", "BOGUS"),
            (
                "spec.servers.0.tls",
                "{mode: SIMPLE, credentialName: reviews-cert}",
            ),
            ("spec.servers.0.tls", "{mode: SIMPLE}"),
            ("spec.servers.0.tls", "{httpsRedirect: true}"),
            ("spec.servers.0.tls", "{mode: MUTUAL, credentialName: c}"),
            ("spec.servers", "[]"),
            ("spec.selector", "~"),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "ServiceEntry",
        base: "{hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS, location: MESH_EXTERNAL}",
        edits: &[
            ("spec.addresses", "[10.1.0.0/24]"),
            ("spec.addresses", "[10.1.0.5]"),
            ("spec.addresses", "['2001:db8::1']"),
            ("spec.addresses", "[not-an-ip]"),
            ("spec.resolution", "NONE"),
            ("spec.resolution", "STATIC"),
            ("spec.resolution", "DNS_ROUND_ROBIN"),
            ("spec.endpoints", "[{address: 10.0.0.1}]"),
            ("spec.endpoints", "[{address: 'unix:///var/run/a.sock'}]"),
            (
                "spec.endpoints",
                "[{address: 10.0.0.1, ports: {https: 8443}}]",
            ),
            (
                "spec.endpoints",
                "[{address: 10.0.0.1, ports: {other: 8443}}]",
            ),
            ("spec.endpoints", "[{address: api.internal}]"),
            ("spec.workloadSelector", "{labels: {app: api}}"),
            ("spec.hosts", "['*']"),
            ("spec.hosts", "['*.example.com']"),
            ("spec.hosts", "[]"),
            ("spec.ports", "[]"),
            (
                "spec.ports",
                "[{number: 443, name: https, protocol: TLS}, {number: 443, name: https2, protocol: TLS}]",
            ),
            ("spec.ports", "[{number: 80, name: '', protocol: HTTP}]"),
            (
                "spec.ports",
                "[{number: 80, name: http, protocol: HTTP, targetPort: 8080}]",
            ),
            ("spec.location", "MESH_INTERNAL"),
            ("spec.exportTo", "['.']"),
            (
                "spec.subjectAltNames",
                "['spiffe://cluster.local/ns/a/sa/b']",
            ),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "Sidecar",
        base: "{egress: [{hosts: ['./*', 'istio-system/*']}]}",
        edits: &[
            ("spec.egress.0.hosts", "['*/*']"),
            ("spec.egress.0.hosts", "[reviews]"),
            ("spec.egress.0.hosts", "[]"),
            (
                "spec.egress.0.port",
                "{number: 9080, protocol: HTTP, name: http}",
            ),
            (
                "spec.ingress",
                "[{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}]",
            ),
            (
                "spec.ingress",
                "[{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: 'bogus'}]",
            ),
            ("spec.outboundTrafficPolicy", "{mode: REGISTRY_ONLY}"),
            ("spec.workloadSelector", "{labels: {app: reviews}}"),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "WorkloadEntry",
        base: "{address: 10.0.0.7, labels: {app: vm}}",
        edits: &[
            ("spec.address", "'unix:///var/run/vm.sock'"),
            ("spec.address", "vm.example.com"),
            ("spec.address", "''"),
            ("spec.ports", "{http: 8080}"),
            ("spec.ports", "{'bad name': 8080}"),
            ("spec.ports", "{http: 0}"),
            ("spec.weight", "10"),
            ("spec.serviceAccount", "vm-sa"),
            ("spec.network", "net1"),
        ],
    },
    Family {
        api_version: "networking.istio.io/v1",
        kind: "WorkloadGroup",
        base: "{template: {serviceAccount: vm-sa}}",
        edits: &[
            ("spec.metadata", "{labels: {app: vm}}"),
            ("spec.probe", "{httpGet: {port: 8080, path: /ready}}"),
            ("spec.probe", "{httpGet: {port: 0}}"),
            ("spec.probe", "{tcpSocket: {port: 8080}}"),
            ("spec.probe", "{exec: {command: [true]}}"),
            ("spec.probe", "{}"),
            ("spec.probe", "{periodSeconds: 5, httpGet: {port: 80}}"),
            ("spec.template.address", "10.0.0.9"),
            ("spec.template.ports", "{'bad name': 80}"),
        ],
    },
    Family {
        api_version: "security.istio.io/v1",
        kind: "PeerAuthentication",
        base: "{mtls: {mode: STRICT}}",
        edits: &[
            ("spec.mtls.mode", "PERMISSIVE"),
            ("spec.mtls.mode", "BOGUS"),
            ("spec.selector", "{matchLabels: {app: reviews}}"),
            ("spec.portLevelMtls", "{'8080': {mode: DISABLE}}"),
            ("spec.portLevelMtls", "{}"),
            ("spec.portLevelMtls", "{'0': {mode: DISABLE}}"),
            ("spec.mtls", "~"),
        ],
    },
    Family {
        api_version: "security.istio.io/v1",
        kind: "RequestAuthentication",
        base: "{jwtRules: [{issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks'}]}",
        edits: &[
            ("spec.jwtRules.0.issuer", "''"),
            ("spec.jwtRules.0.jwksUri", "'not a uri'"),
            ("spec.jwtRules.0.jwksUri", "~"),
            (
                "spec.jwtRules.0.fromHeaders",
                "[{name: x-jwt, prefix: 'Bearer '}]",
            ),
            ("spec.jwtRules.0.fromHeaders", "[{name: ''}]"),
            ("spec.jwtRules.0.fromHeaders", "[{name: 'bad header'}]"),
            (
                "spec.jwtRules.0.outputClaimToHeaders",
                "[{header: x-sub, claim: sub}]",
            ),
            (
                "spec.jwtRules.0.outputClaimToHeaders",
                "[{header: '', claim: sub}]",
            ),
            ("spec.jwtRules.0.audiences", "[a, b]"),
            ("spec.selector", "{matchLabels: {app: reviews}}"),
            (
                "spec.targetRef",
                "{kind: Gateway, group: gateway.networking.k8s.io, name: gw}",
            ),
            (
                "spec.targetRef",
                "{kind: Gateway, group: gateway.networking.k8s.io, name: gw, namespace: other}",
            ),
        ],
    },
    Family {
        api_version: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        base: "{rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]}]}",
        edits: &[
            ("spec.action", "DENY"),
            ("spec.action", "AUDIT"),
            ("spec.action", "CUSTOM"),
            ("spec.provider", "{name: ext-authz}"),
            (
                "spec.rules.0.from.0.source",
                "{serviceAccounts: [productpage]}",
            ),
            (
                "spec.rules.0.from.0.source",
                "{serviceAccounts: [default/productpage]}",
            ),
            (
                "spec.rules.0.from.0.source",
                "{serviceAccounts: [productpage], namespaces: [default]}",
            ),
            ("spec.rules.0.from.0.source", "{principals: [productpage]}"),
            ("spec.rules.0.from.0.source", "{principals: ['*']}"),
            (
                "spec.rules.0.from.0.source",
                "{ipBlocks: [10.0.0.0/8], notIpBlocks: ['bogus']}",
            ),
            (
                "spec.rules.0.from.0.source",
                "{requestPrincipals: ['issuer/sub']}",
            ),
            ("spec.rules.0.from.0.source", "{}"),
            (
                "spec.rules.0.to",
                "[{operation: {methods: [GET], paths: ['/api/*'], ports: ['9080']}}]",
            ),
            ("spec.rules.0.to", "[{operation: {ports: ['abc']}}]"),
            ("spec.rules.0.to", "[{operation: {ports: ['70000']}}]"),
            ("spec.rules.0.to", "[{operation: {paths: ['/a/{*}/b']}}]"),
            (
                "spec.rules.0.when",
                "[{key: 'request.auth.claims[iss]', values: [a]}]",
            ),
            ("spec.rules.0.when", "[{key: bogus.key, values: [a]}]"),
            ("spec.rules.0.when", "[{key: source.ip, values: []}]"),
            ("spec.selector", "{matchLabels: {app: reviews}}"),
            (
                "spec.targetRef",
                "{kind: Gateway, group: gateway.networking.k8s.io, name: gw}",
            ),
            ("spec.rules", "[{}]"),
            ("spec.rules", "[]"),
        ],
    },
    Family {
        api_version: "telemetry.istio.io/v1",
        kind: "Telemetry",
        base: "{tracing: [{randomSamplingPercentage: 10}]}",
        edits: &[
            ("spec.tracing.0.randomSamplingPercentage", "150"),
            ("spec.tracing.0.providers", "[{name: zipkin}]"),
            ("spec.tracing.0.customTags", "{a: {literal: {value: b}}}"),
            (
                "spec.metrics",
                "[{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]",
            ),
            ("spec.metrics", "[{overrides: [{match: {metric: BOGUS}}]}]"),
            ("spec.accessLogging", "[{providers: [{name: envoy}]}]"),
            (
                "spec.accessLogging",
                "[{filter: {expression: 'response.code >= 400'}}]",
            ),
            ("spec.selector", "{matchLabels: {app: reviews}}"),
            (
                "spec.targetRef",
                "{kind: Service, group: '', name: reviews}",
            ),
        ],
    },
];

/// A document: family, edits (indices), the namespace, and its name.
fn document(family: &Family, edits: &[usize], name: &str) -> Result<Value> {
    let spec: Value = serde_yaml_ng::from_str(family.base)?;
    let mut doc = json!({
        "apiVersion": family.api_version,
        "kind": family.kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    });
    for &i in edits {
        let (path, value) = family.edits[i];
        let value: Value = serde_yaml_ng::from_str(value)?;
        set(&mut doc, path, value);
    }
    // A document's own name is how verdicts are matched to it.
    doc["metadata"]["name"] = json!(name);
    Ok(doc)
}

/// Puts `value` at `path` (dotted; numbers index lists), creating maps on the way;
/// a null value removes the field.
fn set(root: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(n) = part.parse::<usize>() {
            let Some(list) = cur.as_array_mut() else {
                return;
            };
            while list.len() <= n {
                list.push(json!({}));
            }
            if last {
                list[n] = value;
                return;
            }
            cur = &mut list[n];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if last {
            if value.is_null() {
                map.remove(*part);
            } else {
                map.insert((*part).to_string(), value);
            }
            return;
        }
        let next_is_index = parts[i + 1].parse::<usize>().is_ok();
        cur = map
            .entry(*part)
            .or_insert_with(|| if next_is_index { json!([]) } else { json!({}) });
    }
}

pub(super) fn generated(count: usize) -> Result<Vec<(String, String)>> {
    let strategy = (0..FAMILIES.len()).prop_flat_map(|f| {
        (
            Just(f),
            proptest::collection::vec(0..FAMILIES[f].edits.len(), 0..=3),
        )
    });
    let mut runner = runner();
    let mut out = Vec::new();
    for i in 0..count {
        let tree = strategy
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (f, edits) = tree.current();
        let name = format!("g{i}");
        let doc = document(&FAMILIES[f], &edits, &name)?;
        out.push((name, serde_yaml_ng::to_string(&doc)?));
    }
    Ok(out)
}

/// Hand-written documents for cases a generator finds only by luck; each
/// disagreement found once is kept here. `NAME` is replaced by the
/// document's name.
const SEEDS: &[&str] = &[
    // notTrustDomains is not an AuthorizationPolicy field at all; a typo'd field name must fail.
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: NAME}\nspec:\n  rules: [{from: [{source: {notPrincipalz: [a]}}]}]\n",
    // A bare service account name, and a namespace-qualified one.
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: NAME}\nspec:\n  rules: [{from: [{source: {serviceAccounts: [sa, other/sa]}}]}]\n",
    // serviceAccounts together with principals.
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: NAME}\nspec:\n  rules: [{from: [{source: {serviceAccounts: [sa], principals: [cluster.local/ns/a/sa/b]}}]}]\n",
    // An IPv6 address list, flow style, as Kubernetes parses it.
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [v6.example.com]\n  addresses: ['2001:db8::/64', ::1]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: '2001:db8::5'}]\n",
    // A CIDR with DNS resolution.
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [cidr.example.com]\n  addresses: [10.2.0.0/16]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
    // NONE resolution with endpoints.
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [none.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: NONE\n  endpoints: [{address: 10.0.0.1}]\n",
    // HTTP/2 keepalive in the connection pool (a current CRD field).
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: NAME}\nspec:\n  host: reviews\n  trafficPolicy: {connectionPool: {http: {http2KeepAlive: {time: 30s, interval: 5s, timeout: 3s}}}}\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: NAME}\nspec:\n  host: reviews\n  trafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 5s, timeout: 3s}}}}\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: NAME}\nspec:\n  host: reviews\n  trafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 5s}}}}\n",
    // A principal written with its scheme.
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: NAME}\nspec:\n  rules: [{from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]\n",
    // An IPv6 address list, quoted.
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [v6.example.com]\n  addresses: ['2001:db8::/64', '::1']\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: '2001:db8::5'}]\n",
    // An old apiVersion that Istio still serves.
    "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: NAME}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n",
    // Disagreements the generator found, kept once fixed:
    // a TCP route without destinations;
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: NAME}\nspec:\n  hosts: [reviews]\n  tcp: [{route: []}]\n",
    // STATIC resolution with no endpoints (valid: WorkloadEntries may come later);
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: STATIC\n",
    // a unix address with ports, a port name that is not a DNS label, and
    // the same name in a WorkloadGroup template (not checked by Istio);
    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: NAME}\nspec:\n  address: unix:///var/run/vm.sock\n  ports: {http: 8080}\n",
    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: NAME}\nspec:\n  address: 10.0.0.7\n  ports: {'bad name': 8080}\n",
    "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: NAME}\nspec:\n  template: {serviceAccount: vm, ports: {'bad name': 80}}\n",
    // certificates on a plaintext Gateway server, and a plain httpsRedirect;
    "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: NAME}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]\n",
    "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: NAME}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}]\n",
    // an empty ServiceEntry port protocol (protocol detection), from Istio's own test inputs;
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: NAME}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: ''}]\n  resolution: DNS\n",
    // a JWT header name no request can carry, and no issuer beside a jwksUri.
    "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: NAME}\nspec:\n  jwtRules: [{jwksUri: 'https://issuer.example/jwks', fromHeaders: [{name: 'bad header'}]}]\n",
    // Kinds Trellis does not serve: one valid, one broken each.
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: a}}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: BOGUS}]\n",
    "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: NAME}\nspec:\n  url: oci://example.com/plugin:1\n",
    "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: NAME}\nspec:\n  url: ''\n",
    "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: NAME}\nspec:\n  concurrency: 2\n",
    "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: NAME}\nspec:\n  concurrency: -2\n",
    // An empty portLevelMtls (Istio: "if defined, must have at least one element").
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME}\nspec:\n  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}\n  portLevelMtls: {}\n",
    // Kubernetes kinds are checked only as istioctl checks them: a Pod
    // without images, a Service port with an application protocol in
    // `protocol`, a Service without ports, a document that is no
    // Kubernetes object at all (a mesh config) all pass;
    "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers: [{name: app}]\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{name: http, port: 80, protocol: HTTP}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n",
    "enableAutoMtls: true\n",
    // a UDP port and a Service in the control plane's namespace need no prefix;
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{name: dns, port: 53, protocol: UDP}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME, namespace: istio-system}\nspec:\n  selector: {app: a}\n  ports: [{name: web, port: 80}]\n",
    // an appProtocol Istio does not know fails.
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{name: http, port: 80, appProtocol: foo}]\n",
    // EnvoyFilter: an unknown match field, a cluster patch with a listener
    // match, an insert without a value, a subFilter match without the HTTP
    // connection manager, and a valid removal with a route match.
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: HTTP_FILTER, match: {app: reviews}, patch: {operation: INSERT_BEFORE, value: {name: a}}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: CLUSTER, match: {listener: {portNumber: 80}}, patch: {operation: MERGE, value: {connect_timeout: 1s}}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: HTTP_FILTER, match: {listener: {filterChain: {filter: {name: envoy.filters.network.tcp_proxy, subFilter: {name: a}}}}}, patch: {operation: INSERT_BEFORE, value: {name: a}}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: NAME}\nspec:\n  configPatches: [{applyTo: HTTP_ROUTE, match: {routeConfiguration: {vhost: {name: a}}}, patch: {operation: REMOVE}}]\n",
    // Kubernetes kinds: a Service port without a protocol prefix, an unnamed one.
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{name: web, port: 80}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{port: 80}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: a}\n  ports: [{name: http-web, port: 80, appProtocol: http}]\n",
];

pub(super) fn seeds() -> Vec<(String, String)> {
    SEEDS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = format!("s{i}");
            (name.clone(), s.replace("NAME", &name))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Folders for analyze: a small world (Services, Pods, a namespace) and Istio
// resources that may or may not fit it.

const WORLD: &[&str] = &[
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v1-1, namespace: default, labels: {app: reviews, version: v1}}\nspec:\n  containers: [{name: reviews, image: reviews}, {name: istio-proxy, image: proxyv2}]\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: ratings-v1-1, namespace: default, labels: {app: ratings, version: v1}}\nspec:\n  containers: [{name: ratings, image: ratings}, {name: istio-proxy, image: proxyv2}]\n",
];

const ANALYZE_PIECES: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-route}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v1}}]}]\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-other}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings-route}\nspec:\n  hosts: [ratings]\n  http: [{route: [{destination: {host: ratings}}]}]\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: missing-route}\nspec:\n  hosts: [reviews.example.com]\n  gateways: [no-such-gateway]\n  http: [{route: [{destination: {host: nowhere}}]}]\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v9, labels: {version: v9}}]\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ghost}\nspec:\n  host: ghost\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: tls-origination}\nspec:\n  host: ratings\n  trafficPolicy: {tls: {mode: SIMPLE}}\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: one}\nspec:\n  egress: [{hosts: ['./*']}]\n",
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: two}\nspec:\n  egress: [{hosts: ['./*']}]\n",
    "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t-one}\nspec:\n  tracing: [{randomSamplingPercentage: 10}]\n",
    "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t-two}\nspec:\n  tracing: [{randomSamplingPercentage: 20}]\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad-weight}\nspec:\n  hosts: [ratings.default.svc.cluster.local]\n  http: [{route: [{destination: {host: ratings}, weight: -5}]}]\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nobody}\nspec:\n  selector: {matchLabels: {app: nobody}}\n  rules: [{}]\n",
];

/// Folders for checks a random pick finds only by luck, each the world and
/// one piece; every disagreement found once is kept here.
const ANALYZE_SEEDS: &[&str] = &[
    // EnvoyFilter: relative operations without a priority (IST0151), one
    // after a proxy-version patch of the same filter (IST0155), REPLACE on a
    // cluster (IST0152), ADD and REMOVE on route configurations (IST0153,
    // IST0154); every EnvoyFilter carries Istio's warning (IST0133).
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: relative}\nspec:\n  configPatches:\n  - {applyTo: HTTP_FILTER, match: {proxy: {proxyVersion: '^1\\.2.*'}, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}, patch: {operation: INSERT_FIRST, value: {name: envoy.lua}}}\n  - {applyTo: HTTP_FILTER, match: {listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}, patch: {operation: INSERT_BEFORE, value: {name: envoy.lua}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_AFTER, value: {name: envoy.other}}}\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: misplaced}\nspec:\n  configPatches:\n  - {applyTo: CLUSTER, patch: {operation: REPLACE, value: {name: c}}}\n  - {applyTo: ROUTE_CONFIGURATION, patch: {operation: ADD, value: {name: r}}}\n  - {applyTo: HTTP_ROUTE, match: {routeConfiguration: {vhost: {name: v}}}, patch: {operation: REMOVE}}\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: prioritized}\nspec:\n  priority: 10\n  configPatches: [{applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: envoy.lua}}}]\n",
    // Fields the patched Envoy object does not have (IST0133), and filters
    // named without their typed configuration (IST0133).
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: unknown-fields}\nspec:\n  priority: 1\n  configPatches:\n  - {applyTo: ROUTE_CONFIGURATION, patch: {operation: MERGE, value: {typed_config: {'@type': type.googleapis.com/envoy.config.route.v3.RouteConfiguration}}}}\n  - {applyTo: NETWORK_FILTER, patch: {operation: INSERT_FIRST, value: {name: envoy.filters.network.rbac, type: x}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_FIRST, value: {name: envoy.filters.http.lua}}}\n",
    // A patch whose match names the wrong class of object (IST0106).
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: wrong-class}\nspec:\n  configPatches: [{applyTo: HTTP_ROUTE, match: {cluster: {service: reviews}}, patch: {operation: MERGE, value: {name: r}}}]\n",
    // Rules no request reaches (IST0130) and matches an earlier one takes
    // (IST0131): a repeated match, a second match-all rule, a prefix covered
    // by a shorter one.
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: dead-rules}\nspec:\n  hosts: [reviews]\n  http:\n  - name: api\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: reviews}}]\n  - name: api-again\n    match: [{name: again, uri: {prefix: /api}}]\n    route: [{destination: {host: reviews}}]\n  - match: [{uri: {prefix: /api/v1}}, {uri: {exact: /x}}]\n    route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: dead-tcp}\nspec:\n  hosts: [ratings]\n  tcp:\n  - match: [{port: 9090}]\n    route: [{destination: {host: ratings}}]\n  - match: [{port: 9090}]\n    route: [{destination: {host: ratings}}]\n  - route: [{destination: {host: ratings}}]\n  - route: [{destination: {host: ratings}}]\n",
    // Two Gateways serving one certificate to the same workloads (IST0138).
    "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw-a}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: shared}}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw-b}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [b.example.com], tls: {mode: SIMPLE, credentialName: shared}}]\n",
    // Deprecated fields (IST0002).
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: old-fault}\nspec:\n  hosts: [ratings]\n  http: [{fault: {delay: {percent: 10, fixedDelay: 1s}}, route: [{destination: {host: ratings}}]}]\n",
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: egress-proxy}\nspec:\n  workloadSelector: {labels: {app: ratings}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com, port: {number: 80}}}\n",
    // An access log without a provider while the mesh has no default (IST0157).
    "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: no-provider}\nspec:\n  accessLogging: [{providers: [{name: envoy}]}, {filter: {expression: 'response.code >= 400'}}]\n",
    // A ServiceEntry with NONE resolution and a TCP port but no addresses:
    // Istio allocates none (IST0133 beside IST0134).
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: tcp-none}\nspec:\n  hosts: [db.example.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n",
    // A route bound to a Gateway Istio generates from a Kubernetes Gateway (IST0165).
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: internal-gw}\nspec:\n  hosts: [a.example.com]\n  gateways: [istio-system/gw~istio-autogenerated-k8s-gateway~http]\n  http: [{route: [{destination: {host: reviews}}]}]\n",
];

/// The seed folders: the world and one of [`ANALYZE_SEEDS`] each.
pub(super) fn seed_folders() -> Vec<String> {
    ANALYZE_SEEDS
        .iter()
        .map(|piece| format!("{}---\n{piece}", WORLD.join("---\n")))
        .collect()
}

/// `count` folders, each the world and up to five pieces, as one YAML text.
pub(super) fn folders(count: usize) -> Result<Vec<String>> {
    let strategy =
        proptest::sample::subsequence((0..ANALYZE_PIECES.len()).collect::<Vec<_>>(), 1..=5);
    let mut runner = runner();
    let mut out = Vec::new();
    for _ in 0..count {
        let picked = strategy
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let mut all = WORLD.join("---\n");
        for p in &picked {
            all.push_str("---\n");
            all.push_str(ANALYZE_PIECES[*p]);
        }
        out.push(all);
    }
    Ok(out)
}
