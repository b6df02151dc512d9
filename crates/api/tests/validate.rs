//! Validation, table-driven: for each kind, valid documents produce no
//! errors and each invalid one produces an error at the expected path.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::{FieldError, parse, validate};

fn errors(text: &str) -> Vec<FieldError> {
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(rs.len(), 1, "{text}");
    validate(&rs[0])
}

/// `(case name, document, expected error path, expected message fragment)`;
/// `None` path means the document must be valid.
type Case = (&'static str, String, Option<(&'static str, &'static str)>);

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for (name, doc, expected) in cases {
        let errs = errors(&doc);
        let found = |path: &str, fragment: &str| {
            errs.iter()
                .any(|e| e.path == path && e.message.contains(fragment))
        };
        match expected {
            None if !errs.is_empty() => {
                failures.push(format!("{name}: expected valid, got {errs:?}"))
            }
            Some((path, fragment)) if !found(path, fragment) => failures.push(format!(
                "{name}: expected `{path}: …{fragment}…`, got {errs:?}"
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n{spec}"
    )
}

const ROUTE: &str = "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

#[test]
fn metadata() {
    run(vec![
        ("ok", vs(ROUTE), None),
        (
            "missing name",
            vs(ROUTE).replace("name: vs, ", ""),
            Some(("metadata.name", "name is required")),
        ),
        (
            "uppercase name",
            vs(ROUTE).replace("name: vs", "name: Reviews"),
            Some(("metadata.name", "invalid name `Reviews`")),
        ),
        (
            "underscore name",
            vs(ROUTE).replace("name: vs", "name: a_b"),
            Some(("metadata.name", "invalid name")),
        ),
        (
            "bad namespace",
            vs(ROUTE).replace("namespace: default", "namespace: a.b"),
            Some(("metadata.namespace", "invalid namespace")),
        ),
        (
            "bad label",
            vs(ROUTE).replace(
                "namespace: default}",
                "namespace: default, labels: {'a b': c}}",
            ),
            Some(("metadata.labels.a b", "invalid label key")),
        ),
    ]);
}

#[test]
fn virtual_service() {
    let http = |route: &str| vs(&format!("  hosts: [reviews]\n  http:\n  - {route}\n"));
    run(vec![
        (
            "wildcard host on gateway",
            vs(
                "  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n  - route: [{destination: {host: a}}]\n",
            ),
            None,
        ),
        (
            "wildcard prefix host",
            vs("  hosts: ['*.example.com']\n  http:\n  - route: [{destination: {host: a}}]\n"),
            None,
        ),
        (
            "ip host",
            vs("  hosts: [10.0.0.1]\n  tcp:\n  - route: [{destination: {host: a}}]\n"),
            None,
        ),
        (
            "mesh and gateway",
            vs(
                "  hosts: [a.com]\n  gateways: [mesh, gw]\n  http:\n  - route: [{destination: {host: a}}]\n",
            ),
            None,
        ),
        (
            "* on mesh",
            vs("  hosts: ['*']\n  http:\n  - route: [{destination: {host: a}}]\n"),
            Some((
                "spec.hosts[0]",
                "not allowed for virtual services bound to the mesh gateway",
            )),
        ),
        (
            "bad host",
            vs("  hosts: [foo.*.com]\n  http:\n  - route: [{destination: {host: a}}]\n"),
            Some(("spec.hosts[0]", "`*` is only allowed as the first label")),
        ),
        (
            "bad host chars",
            vs("  hosts: [a_b.com]\n  http:\n  - route: [{destination: {host: a}}]\n"),
            Some(("spec.hosts[0]", "not a valid DNS label")),
        ),
        (
            "bad gateway",
            vs(
                "  hosts: [a]\n  gateways: [a/b/c]\n  http:\n  - route: [{destination: {host: a}}]\n",
            ),
            Some(("spec.gateways[0]", "expected `name` or `namespace/name`")),
        ),
        (
            "no routes",
            vs("  hosts: [a]\n"),
            Some(("spec", "at least one of http, tcp or tls")),
        ),
        (
            "missing route",
            http("match: [{uri: {prefix: /}}]"),
            Some((
                "spec.http[0]",
                "one of route, redirect, directResponse or delegate is required",
            )),
        ),
        (
            "route and redirect",
            http("route: [{destination: {host: a}}]\n    redirect: {uri: /b}"),
            Some(("spec.http[0]", "found route and redirect")),
        ),
        (
            "redirect ok",
            http("redirect: {uri: /b, redirectCode: 302}"),
            None,
        ),
        (
            "redirect empty",
            http("redirect: {}"),
            Some(("spec.http[0].redirect", "at least one of")),
        ),
        (
            "redirect code",
            http("redirect: {uri: /b, redirectCode: 200}"),
            Some(("spec.http[0].redirect.redirectCode", "must be 3xx")),
        ),
        (
            "direct response",
            http("directResponse: {status: 503, body: {string: unavailable}}"),
            None,
        ),
        (
            "direct response status",
            http("directResponse: {status: 99}"),
            Some(("spec.http[0].directResponse.status", "200..599")),
        ),
        (
            "negative weight",
            http(
                "route:\n    - destination: {host: a}\n      weight: -1\n    - destination: {host: b}\n      weight: 101",
            ),
            Some(("spec.http[0].route[0].weight", "must not be negative")),
        ),
        (
            "weights normalised",
            http(
                "route:\n    - destination: {host: a}\n      weight: 1\n    - destination: {host: b}\n      weight: 3",
            ),
            None,
        ),
        (
            "zero total",
            http(
                "route:\n    - destination: {host: a}\n      weight: 0\n    - destination: {host: b}\n      weight: 0",
            ),
            Some(("spec.http[0].route", "total weight")),
        ),
        (
            "missing destination host",
            http("route: [{destination: {subset: v1}}]"),
            Some(("spec.http[0].route[0].destination.host", "host is required")),
        ),
        (
            "bad subset",
            http("route: [{destination: {host: a, subset: V_1}}]"),
            Some((
                "spec.http[0].route[0].destination.subset",
                "invalid subset name",
            )),
        ),
        (
            "bad port",
            http("route: [{destination: {host: a, port: {number: 70000}}}]"),
            Some(("spec.http[0].route[0].destination.port.number", "1..65535")),
        ),
        (
            "bad regex",
            http("match: [{uri: {regex: '/a(b'}}]\n    route: [{destination: {host: a}}]"),
            Some(("spec.http[0].match[0].uri.regex", "invalid regex")),
        ),
        (
            "bad header regex",
            http("match: [{headers: {x-a: {regex: '*'}}}]\n    route: [{destination: {host: a}}]"),
            Some(("spec.http[0].match[0].headers.x-a.regex", "invalid regex")),
        ),
        (
            "uppercase header",
            http("match: [{headers: {X-A: {exact: b}}}]\n    route: [{destination: {host: a}}]"),
            Some(("spec.http[0].match[0].headers.X-A", "must be lowercase")),
        ),
        (
            "presence header",
            http(
                "match: [{headers: {x-a: {}}, withoutHeaders: {x-b: {}}}]\n    route: [{destination: {host: a}}]",
            ),
            None,
        ),
        (
            "uri without slash",
            http("match: [{uri: {prefix: api}}]\n    route: [{destination: {host: a}}]"),
            Some(("spec.http[0].match[0].uri", "must start with `/`")),
        ),
        (
            "retries ok",
            http(
                "route: [{destination: {host: a}}]\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,503'}",
            ),
            None,
        ),
        (
            "negative attempts",
            http("route: [{destination: {host: a}}]\n    retries: {attempts: -1}"),
            Some(("spec.http[0].retries.attempts", "must not be negative")),
        ),
        (
            "bad retryOn",
            http(
                "route: [{destination: {host: a}}]\n    retries: {attempts: 1, retryOn: 'sometimes'}",
            ),
            Some((
                "spec.http[0].retries.retryOn",
                "`sometimes` is not a retry condition",
            )),
        ),
        (
            "tiny per-try timeout",
            http(
                "route: [{destination: {host: a}}]\n    retries: {attempts: 1, perTryTimeout: 100us}",
            ),
            Some(("spec.http[0].retries.perTryTimeout", "at least 1ms")),
        ),
        (
            "zero timeout disables",
            http("route: [{destination: {host: a}}]\n    timeout: 0s"),
            None,
        ),
        (
            "fault percent",
            http(
                "route: [{destination: {host: a}}]\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}",
            ),
            Some(("spec.http[0].fault.delay.percentage.value", "0..100")),
        ),
        (
            "fault delay tiny",
            http("route: [{destination: {host: a}}]\n    fault: {delay: {fixedDelay: 0s}}"),
            Some(("spec.http[0].fault.delay.fixedDelay", "at least 1ms")),
        ),
        (
            "abort status",
            http(
                "route: [{destination: {host: a}}]\n    fault: {abort: {httpStatus: 600, percentage: {value: 10}}}",
            ),
            Some(("spec.http[0].fault.abort.httpStatus", "200..599")),
        ),
        (
            "abort grpc",
            http(
                "route: [{destination: {host: a}}]\n    fault: {abort: {grpcStatus: UNAVAILABLE}}",
            ),
            None,
        ),
        (
            "abort none",
            http(
                "route: [{destination: {host: a}}]\n    fault: {abort: {percentage: {value: 10}}}",
            ),
            Some((
                "spec.http[0].fault.abort",
                "one of httpStatus, grpcStatus or http2Error is required",
            )),
        ),
        (
            "empty fault",
            http("route: [{destination: {host: a}}]\n    fault: {}"),
            Some(("spec.http[0].fault", "delay and/or an abort")),
        ),
        (
            "mirror",
            http(
                "route: [{destination: {host: a}}]\n    mirror: {host: b}\n    mirrorPercentage: {value: 50}",
            ),
            None,
        ),
        (
            "mirror percent",
            http(
                "route: [{destination: {host: a}}]\n    mirror: {host: b}\n    mirrorPercentage: {value: 101}",
            ),
            Some(("spec.http[0].mirrorPercentage.value", "0..100")),
        ),
        (
            "cors",
            http(
                "route: [{destination: {host: a}}]\n    corsPolicy: {allowOrigins: [{exact: 'https://a.com'}, {regex: '.*\\.b\\.com'}], allowMethods: [GET, POST], maxAge: 24h}",
            ),
            None,
        ),
        (
            "cors method",
            http("route: [{destination: {host: a}}]\n    corsPolicy: {allowMethods: [get]}"),
            Some((
                "spec.http[0].corsPolicy.allowMethods[0]",
                "not an HTTP method",
            )),
        ),
        (
            "rewrite both",
            http(
                "route: [{destination: {host: a}}]\n    rewrite: {uri: /a, uriRegexRewrite: {match: '^/b', rewrite: /c}}",
            ),
            Some(("spec.http[0].rewrite", "only one of uri or uriRegexRewrite")),
        ),
        (
            "headers ops",
            http(
                "route: [{destination: {host: a}, headers: {request: {set: {x-a: b}}}}]\n    headers: {response: {add: {x-b: c}, remove: [x-c]}}",
            ),
            None,
        ),
        (
            "bad header op",
            http(
                "route: [{destination: {host: a}}]\n    headers: {request: {set: {'bad header': b}}}",
            ),
            Some((
                "spec.http[0].headers.request.set.bad header",
                "invalid header name",
            )),
        ),
        (
            "delegate",
            http("delegate: {name: reviews-v2, namespace: team}"),
            None,
        ),
        (
            "delegate VS with gateways",
            vs("  gateways: [gw]\n  http:\n  - route: [{destination: {host: a}}]\n"),
            Some(("spec.gateways", "delegate VirtualService")),
        ),
        (
            "tls route",
            vs(
                "  hosts: ['*.example.com']\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [a.example.com], port: 443}]\n    route: [{destination: {host: a}}]\n",
            ),
            None,
        ),
        (
            "tls sni not covered",
            vs(
                "  hosts: [a.example.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [b.example.com]}]\n    route: [{destination: {host: a}}]\n",
            ),
            Some(("spec.tls[0].match[0].sniHosts[0]", "not covered")),
        ),
        (
            "tls no match",
            vs("  hosts: [a]\n  tls:\n  - route: [{destination: {host: a}}]\n"),
            Some(("spec.tls[0].match", "at least one match")),
        ),
        (
            "tcp subnet",
            vs(
                "  hosts: [a]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/40]}]\n    route: [{destination: {host: a}}]\n",
            ),
            Some((
                "spec.tcp[0].match[0].destinationSubnets[0]",
                "invalid IP address or CIDR",
            )),
        ),
        (
            "exportTo",
            vs(&format!("{ROUTE}  exportTo: ['*', '.']\n")),
            Some(("spec.exportTo", "cannot be combined")),
        ),
    ]);
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr}}\nspec:\n  host: reviews\n{spec}"
    )
}

#[test]
fn destination_rule() {
    run(vec![
        (
            "subsets",
            dr(
                "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
            ),
            None,
        ),
        (
            "missing host",
            dr("").replace(
                "  host: reviews\n",
                "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
            ),
            Some(("spec.host", "host is required")),
        ),
        (
            "bad host",
            dr("").replace("host: reviews", "host: 'a b'"),
            Some(("spec.host", "not a valid DNS label")),
        ),
        (
            "duplicate subset",
            dr(
                "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n",
            ),
            Some(("spec.subsets[1].name", "duplicate subset name")),
        ),
        (
            "empty subset name",
            dr("  subsets:\n  - {labels: {version: v1}}\n"),
            Some(("spec.subsets[0].name", "subset name is required")),
        ),
        (
            "subset without labels",
            dr("  subsets:\n  - {name: v1}\n"),
            Some(("spec.subsets[0].labels", "needs labels")),
        ),
        (
            "subset labels via policy",
            dr(
                "  subsets:\n  - name: sni\n    trafficPolicy: {tls: {mode: SIMPLE, sni: a.example.com}}\n",
            ),
            None,
        ),
        (
            "empty policy",
            dr("  trafficPolicy: {}\n"),
            Some(("spec.trafficPolicy", "at least one field")),
        ),
        (
            "consistent hash ok",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}\n",
            ),
            None,
        ),
        (
            "consistent hash two keys",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one hash key",
            )),
        ),
        (
            "consistent hash no key",
            dr("  trafficPolicy:\n    loadBalancer: {consistentHash: {minimumRingSize: 1024}}\n"),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one hash key",
            )),
        ),
        (
            "maglev prime",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "prime",
            )),
        ),
        (
            "maglev huge",
            dr(
                "  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 9223372036854775783}}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "at most 5000011",
            )),
        ),
        (
            "simple and hash",
            dr(
                "  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer",
                "only one of simple or consistentHash",
            )),
        ),
        (
            "locality distribute",
            dr(
                "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute: [{from: us-west/zone1/*, to: {'us-west/zone1/*': 80, 'us-west/zone2/*': 10}}]\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "add up to 100",
            )),
        ),
        (
            "locality failover",
            dr(
                "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting: {failover: [{from: us-east, to: us-east}]}\n",
            ),
            Some((
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                "different region",
            )),
        ),
        (
            "pool ok",
            dr(
                "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}\n      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, h2UpgradePolicy: UPGRADE}\n",
            ),
            None,
        ),
        (
            "pool negative",
            dr("  trafficPolicy:\n    connectionPool: {http: {http1MaxPendingRequests: -1}}\n"),
            Some((
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "must not be negative",
            )),
        ),
        (
            "pool empty",
            dr("  trafficPolicy:\n    connectionPool: {}\n"),
            Some((
                "spec.trafficPolicy.connectionPool",
                "at least one of tcp or http",
            )),
        ),
        (
            "outlier ok",
            dr(
                "  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}\n",
            ),
            None,
        ),
        (
            "outlier percent",
            dr("  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 120}\n"),
            Some((
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "0..100",
            )),
        ),
        (
            "outlier interval",
            dr("  trafficPolicy:\n    outlierDetection: {interval: 0s}\n"),
            Some((
                "spec.trafficPolicy.outlierDetection.interval",
                "at least 1ms",
            )),
        ),
        (
            "port level",
            dr(
                "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: LEAST_REQUEST}\n    - port: {number: 80}\n      tls: {mode: DISABLE}\n",
            ),
            Some((
                "spec.trafficPolicy.portLevelSettings[1].port.number",
                "duplicate",
            )),
        ),
        (
            "port level no port",
            dr("  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n"),
            Some((
                "spec.trafficPolicy.portLevelSettings[0].port",
                "port is required",
            )),
        ),
        (
            "tls mutual files",
            dr("  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c.pem}\n"),
            Some(("spec.trafficPolicy.tls.privateKey", "required for MUTUAL")),
        ),
        (
            "tls mutual credential",
            dr("  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: client-creds}\n"),
            None,
        ),
        (
            "istio mutual with certs",
            dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}\n"),
            Some((
                "spec.trafficPolicy.tls",
                "ISTIO_MUTUAL uses the mesh's certificates",
            )),
        ),
        (
            "tunnel",
            dr(
                "  trafficPolicy:\n    tunnel: {protocol: GET, targetHost: 10.0.0.1, targetPort: 443}\n",
            ),
            Some(("spec.trafficPolicy.tunnel.protocol", "CONNECT or POST")),
        ),
        (
            "workload selector",
            dr(
                "  workloadSelector: {matchLabels: {app: a}}\n  trafficPolicy: {tls: {mode: DISABLE}}\n",
            ),
            None,
        ),
    ]);
}

fn gw(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

#[test]
fn gateway() {
    run(vec![
        (
            "http",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
            None,
        ),
        (
            "ns/host",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [bookinfo/reviews.example.com, './*', '*/foo.com']\n",
            ),
            None,
        ),
        (
            "https credential",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n",
            ),
            None,
        ),
        (
            "https redirect",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n    tls: {httpsRedirect: true}\n",
            ),
            None,
        ),
        (
            "passthrough",
            gw(
                "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n",
            ),
            None,
        ),
        (
            "no servers",
            gw("  []\n").replace("  servers:\n  []\n", "  servers: []\n"),
            Some(("spec.servers", "at least one server")),
        ),
        (
            "no hosts",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n"),
            Some(("spec.servers[0].hosts", "at least one host")),
        ),
        (
            "bad port",
            gw("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.number", "1..65535")),
        ),
        (
            "no port name",
            gw("  - port: {number: 80, protocol: HTTP}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.name", "port name is required")),
        ),
        (
            "bad protocol",
            gw("  - port: {number: 80, name: http, protocol: HTTPX}\n    hosts: [a]\n"),
            Some(("spec.servers[0].port.protocol", "unknown protocol")),
        ),
        (
            "bad ns/host",
            gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a/b/c]\n"),
            Some((
                "spec.servers[0].hosts[0]",
                "expected `host` or `namespace/host`",
            )),
        ),
        (
            "https without tls",
            gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n"),
            Some(("spec.servers[0].tls", "TLS settings are required")),
        ),
        (
            "simple without cert",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: SIMPLE, privateKey: /k.pem}\n",
            ),
            Some((
                "spec.servers[0].tls.serverCertificate",
                "required for SIMPLE",
            )),
        ),
        (
            "mutual without ca",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n",
            ),
            Some(("spec.servers[0].tls.caCertificates", "required for MUTUAL")),
        ),
        (
            "duplicate port name",
            gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [b]\n",
            ),
            Some(("spec.servers[1].port.name", "already used for port 80")),
        ),
        (
            "tls versions",
            gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a]\n    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}\n",
            ),
            Some((
                "spec.servers[0].tls.maxProtocolVersion",
                "must not be lower",
            )),
        ),
    ]);
}

fn kind(kind: &str, spec: &str) -> String {
    let group = match kind {
        "PeerAuthentication" | "RequestAuthentication" | "AuthorizationPolicy" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        _ => "networking.istio.io/v1",
    };
    format!(
        "apiVersion: {group}\nkind: {kind}\nmetadata: {{name: x, namespace: foo}}\nspec:\n{spec}"
    )
}

#[test]
fn service_entry_sidecar_workloads() {
    run(vec![
        (
            "se dns",
            kind(
                "ServiceEntry",
                "  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: TLS}]\n",
            ),
            None,
        ),
        (
            "se static",
            kind(
                "ServiceEntry",
                "  hosts: [db.internal]\n  addresses: [10.1.0.0/16]\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]\n  endpoints: [{address: 10.1.2.3, ports: {tcp-pg: 15432}}]\n",
            ),
            None,
        ),
        (
            "se no hosts",
            kind("ServiceEntry", "  ports: [{number: 80, name: http}]\n"),
            Some(("spec.hosts", "at least one host")),
        ),
        (
            "se star",
            kind("ServiceEntry", "  hosts: ['*']\n"),
            Some(("spec.hosts[0]", "host `*` is not allowed")),
        ),
        (
            "se wildcard dns",
            kind(
                "ServiceEntry",
                "  hosts: ['*.example.com']\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]\n",
            ),
            Some(("spec.hosts[0]", "cannot be resolved with DNS")),
        ),
        (
            "se static needs ip",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: foo.bar}]\n",
            ),
            Some(("spec.endpoints[0].address", "need an IP address")),
        ),
        (
            "se dup port",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  ports: [{number: 80, name: http}, {number: 80, name: http2}]\n",
            ),
            Some(("spec.ports[1].number", "duplicate port number")),
        ),
        (
            "se endpoint port name",
            kind(
                "ServiceEntry",
                "  hosts: [a.b]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 1.2.3.4, ports: {grpc: 81}}]\n",
            ),
            Some((
                "spec.endpoints[0].ports.grpc",
                "not one of the service entry's port names",
            )),
        ),
        (
            "se bad address",
            kind("ServiceEntry", "  hosts: [a.b]\n  addresses: [not-an-ip]\n"),
            Some(("spec.addresses[0]", "invalid IP")),
        ),
        (
            "sidecar",
            kind(
                "Sidecar",
                "  egress:\n  - hosts: ['./*', 'istio-system/*']\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
            ),
            None,
        ),
        (
            "sidecar empty",
            kind("Sidecar", "  {}\n").replace("spec:\n  {}\n", "spec: {}\n"),
            Some(("spec", "empty Sidecar")),
        ),
        (
            "sidecar host form",
            kind("Sidecar", "  egress:\n  - hosts: [reviews]\n"),
            Some(("spec.egress[0].hosts[0]", "expected `namespace/host`")),
        ),
        (
            "sidecar catch-all order",
            kind(
                "Sidecar",
                "  egress:\n  - hosts: ['./*']\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['./*']\n",
            ),
            Some(("spec.egress[0]", "must be the last one")),
        ),
        (
            "sidecar ingress",
            kind(
                "Sidecar",
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n",
            ),
            None,
        ),
        (
            "sidecar bad endpoint",
            kind(
                "Sidecar",
                "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 10.0.0.1:8080\n",
            ),
            Some(("spec.ingress[0].defaultEndpoint", "invalid defaultEndpoint")),
        ),
        (
            "egress proxy mode",
            kind(
                "Sidecar",
                "  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress, port: {number: 80}}}\n",
            ),
            Some((
                "spec.outboundTrafficPolicy.egressProxy",
                "requires mode ALLOW_ANY",
            )),
        ),
        (
            "workload entry",
            kind(
                "WorkloadEntry",
                "  address: 10.0.0.5\n  labels: {app: vm}\n  serviceAccount: vm-sa\n  ports: {http: 8080}\n",
            ),
            None,
        ),
        (
            "workload entry no address",
            kind("WorkloadEntry", "  labels: {app: vm}\n"),
            Some(("spec.address", "address is required")),
        ),
        (
            "workload entry port",
            kind("WorkloadEntry", "  address: 10.0.0.5\n  ports: {http: 0}\n"),
            Some(("spec.ports.http", "1..65535")),
        ),
        (
            "workload group",
            kind(
                "WorkloadGroup",
                "  metadata: {labels: {app: vm}}\n  template: {serviceAccount: vm-sa}\n  probe: {periodSeconds: 5, httpGet: {path: /ready, port: 8080}}\n",
            ),
            None,
        ),
        (
            "workload group probe",
            kind(
                "WorkloadGroup",
                "  template: {}\n  probe: {periodSeconds: 5}\n",
            ),
            Some(("spec.probe", "exactly one of httpGet")),
        ),
    ]);
}

#[test]
fn security() {
    let ap = |spec: &str| kind("AuthorizationPolicy", spec);
    run(vec![
        (
            "pa strict",
            kind("PeerAuthentication", "  mtls: {mode: STRICT}\n"),
            None,
        ),
        (
            "pa port level",
            kind(
                "PeerAuthentication",
                "  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
            ),
            None,
        ),
        (
            "pa port level without selector",
            kind(
                "PeerAuthentication",
                "  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
            ),
            Some(("spec.portLevelMtls", "requires a selector")),
        ),
        (
            "pa bad port",
            kind(
                "PeerAuthentication",
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n",
            ),
            Some(("spec.portLevelMtls.0", "1..65535")),
        ),
        (
            "ra",
            kind(
                "RequestAuthentication",
                "  selector: {matchLabels: {app: a}}\n  jwtRules:\n  - issuer: https://issuer.example.com\n    jwksUri: https://issuer.example.com/jwks.json\n    fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]\n    outputClaimToHeaders: [{header: x-sub, claim: sub}]\n",
            ),
            None,
        ),
        (
            "ra no issuer",
            kind(
                "RequestAuthentication",
                "  jwtRules:\n  - jwksUri: https://a/jwks\n",
            ),
            Some(("spec.jwtRules[0].issuer", "issuer is required")),
        ),
        (
            "ra bad jwks uri",
            kind(
                "RequestAuthentication",
                "  jwtRules:\n  - issuer: a\n    jwksUri: ftp://a/jwks\n",
            ),
            Some(("spec.jwtRules[0].jwksUri", "http:// or https://")),
        ),
        (
            "ra selector and targetRef",
            kind(
                "RequestAuthentication",
                "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
            ),
            Some(("spec.selector", "only one of selector or targetRef")),
        ),
        (
            "ap allow nothing",
            ap("  {}\n").replace("spec:\n  {}\n", "spec: {}\n"),
            None,
        ),
        ("ap allow all", ap("  rules: [{}]\n"), None),
        (
            "ap deny",
            ap(
                "  action: DENY\n  rules:\n  - from: [{source: {notNamespaces: [foo], ipBlocks: [10.0.0.0/8]}}]\n    to: [{operation: {methods: [POST], paths: ['/admin/*'], ports: ['8080']}}]\n    when: [{key: 'request.auth.claims[groups]', values: [admins]}]\n",
            ),
            None,
        ),
        (
            "ap principals",
            ap(
                "  rules:\n  - from: [{source: {principals: ['cluster.local/ns/default/sa/sleep', '*', 'cluster.local/ns/foo/*']}}]\n",
            ),
            None,
        ),
        (
            "ap bad principal",
            ap("  rules:\n  - from: [{source: {principals: [sleep]}}]\n"),
            Some((
                "spec.rules[0].from[0].source.principals[0]",
                "expected `<trust-domain>/ns/<namespace>/sa/<service-account>`",
            )),
        ),
        (
            "ap spiffe principal",
            ap(
                "  rules:\n  - from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]\n",
            ),
            Some((
                "spec.rules[0].from[0].source.principals[0]",
                "without `spiffe://`",
            )),
        ),
        (
            "ap wildcard middle",
            ap("  rules:\n  - from: [{source: {principals: ['cluster.local/*/sa/b']}}]\n"),
            Some((
                "spec.rules[0].from[0].source.principals[0]",
                "only allowed as a prefix",
            )),
        ),
        (
            "ap bad namespace",
            ap("  rules:\n  - from: [{source: {namespaces: [Foo]}}]\n"),
            Some((
                "spec.rules[0].from[0].source.namespaces[0]",
                "invalid namespace",
            )),
        ),
        (
            "ap empty source",
            ap("  rules:\n  - from: [{source: {}}]\n"),
            Some(("spec.rules[0].from[0].source", "at least one field")),
        ),
        (
            "ap bad port",
            ap("  rules:\n  - to: [{operation: {ports: [http]}}]\n"),
            Some(("spec.rules[0].to[0].operation.ports[0]", "must be a number")),
        ),
        (
            "ap numeric ports",
            ap("  rules:\n  - to: [{operation: {ports: [8080, 9090]}}]\n"),
            None,
        ),
        (
            "ap bad path",
            ap("  rules:\n  - to: [{operation: {paths: ['api/v1']}}]\n"),
            Some((
                "spec.rules[0].to[0].operation.paths[0]",
                "must start with `/`",
            )),
        ),
        (
            "ap path template",
            ap("  rules:\n  - to: [{operation: {paths: ['/foo/{*}/bar/{**}']}}]\n"),
            None,
        ),
        (
            "ap bad template",
            ap("  rules:\n  - to: [{operation: {paths: ['/foo/{**}/bar']}}]\n"),
            Some((
                "spec.rules[0].to[0].operation.paths[0]",
                "must be the last segment",
            )),
        ),
        (
            "ap bad condition key",
            ap("  rules:\n  - when: [{key: request.body, values: [x]}]\n"),
            Some(("spec.rules[0].when[0].key", "unknown condition key")),
        ),
        (
            "ap condition no values",
            ap("  rules:\n  - when: [{key: source.ip}]\n"),
            Some((
                "spec.rules[0].when[0]",
                "at least one of values or notValues",
            )),
        ),
        (
            "ap condition bad ip",
            ap("  rules:\n  - when: [{key: source.ip, values: [10.0.0.300]}]\n"),
            Some(("spec.rules[0].when[0].values[0]", "invalid IP")),
        ),
        (
            "ap condition header",
            ap(
                "  rules:\n  - when: [{key: 'request.headers[x-token]', values: [secret]}, {key: destination.port, notValues: ['22']}]\n",
            ),
            None,
        ),
        (
            "ap condition header name",
            ap("  rules:\n  - when: [{key: 'request.headers[]', values: [a]}]\n"),
            Some((
                "spec.rules[0].when[0].key",
                "request.headers[<header-name>]",
            )),
        ),
        (
            "ap custom needs provider",
            ap("  action: CUSTOM\n  rules: [{}]\n"),
            Some(("spec.provider", "requires a provider")),
        ),
        (
            "ap custom",
            ap(
                "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: ['/admin']}}]}]\n",
            ),
            None,
        ),
        (
            "ap provider without custom",
            ap("  action: DENY\n  provider: {name: ext-authz}\n"),
            Some(("spec.provider", "only allowed with action CUSTOM")),
        ),
        (
            "ap service accounts",
            ap("  rules:\n  - from: [{source: {serviceAccounts: [default/sleep]}}]\n"),
            None,
        ),
        (
            "ap bad service account",
            ap("  rules:\n  - from: [{source: {serviceAccounts: [sleep]}}]\n"),
            Some((
                "spec.rules[0].from[0].source.serviceAccounts[0]",
                "`<namespace>/<service-account>`",
            )),
        ),
        (
            "ap target ref kind",
            ap("  targetRefs: [{kind: Pod, name: p}]\n"),
            Some(("spec.targetRefs[0].kind", "unsupported targetRef kind")),
        ),
        (
            "ap target ref ok",
            ap(
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n",
            ),
            None,
        ),
    ]);
}

#[test]
fn telemetry() {
    let t = |spec: &str| kind("Telemetry", spec);
    run(vec![
        (
            "tracing",
            t(
                "  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10.5, customTags: {env: {environment: {name: ENV, defaultValue: dev}}}}]\n",
            ),
            None,
        ),
        (
            "sampling range",
            t("  tracing: [{randomSamplingPercentage: 101}]\n"),
            Some(("spec.tracing[0].randomSamplingPercentage", "0..100")),
        ),
        (
            "two providers",
            t("  tracing: [{providers: [{name: a}, {name: b}]}]\n"),
            Some(("spec.tracing[0].providers", "at most one provider")),
        ),
        (
            "custom tag empty",
            t("  tracing: [{customTags: {a: {}}}]\n"),
            Some(("spec.tracing[0].customTags.a", "exactly one of literal")),
        ),
        (
            "metrics upsert value",
            t("  metrics: [{overrides: [{tagOverrides: {a: {operation: UPSERT}}}]}]\n"),
            Some((
                "spec.metrics[0].overrides[0].tagOverrides.a.value",
                "required for UPSERT",
            )),
        ),
        (
            "metrics disable",
            t(
                "  metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: ALL_METRICS, mode: CLIENT}, disabled: true}]}]\n",
            ),
            None,
        ),
        (
            "access log",
            t(
                "  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]\n",
            ),
            None,
        ),
        (
            "access log empty filter",
            t("  accessLogging: [{filter: {expression: ''}}]\n"),
            Some((
                "spec.accessLogging[0].filter.expression",
                "expression is required",
            )),
        ),
    ]);
}

#[test]
fn kubernetes() {
    let svc = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n{spec}")
    };
    let deploy = |labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {labels}}}\n    spec:\n      containers: [{{name: c, image: app, ports: [{{containerPort: 8080}}]}}]\n"
        )
    };
    run(vec![
        ("service", svc("  selector: {app: a}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: grpc-port}]\n"), None),
        ("service bad port", svc("  ports: [{port: 0}]\n"), Some(("spec.ports[0].port", "1..65535"))),
        ("service unnamed ports", svc("  ports: [{port: 80}, {port: 81}]\n"), Some(("spec.ports[0].name", "required when a Service has more than one port"))),
        ("service dup names", svc("  ports: [{port: 80, name: http}, {port: 81, name: http}]\n"), Some(("spec.ports[1].name", "duplicate port name"))),
        ("service bad target", svc("  ports: [{port: 80, targetPort: 70000}]\n"), Some(("spec.ports[0].targetPort", "1..65535"))),
        ("service name", svc("  ports: [{port: 80}]\n").replace("name: reviews", "name: 1reviews"), Some(("metadata.name", "starting with a letter"))),
        ("deployment", deploy("{app: a, version: v1}"), None),
        ("selector mismatch", deploy("{app: b}"), Some(("spec.template.metadata.labels", "selector `app: a` does not match"))),
        ("no containers", deploy("{app: a}").replace("[{name: c, image: app, ports: [{containerPort: 8080}]}]", "[]"), Some(("spec.template.spec.containers", "at least one container"))),
        ("no image", deploy("{app: a}").replace(", image: app", ""), Some(("spec.template.spec.containers[0].image", "image is required"))),
        ("namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_NS}\n".to_string(), Some(("metadata.name", "invalid name"))),
        ("pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n".to_string(), None),
        ("endpoint slice", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}]\n".to_string(), None),
        ("endpoint slice bad ip", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: ['::1']}]\n".to_string(), Some(("endpoints[0].addresses[0]", "not a valid IPv4 address"))),
    ]);
}

#[test]
fn errors_are_all_reported_at_once() {
    let doc = vs(
        "  hosts: ['a..b']\n  http:\n  - route:\n    - destination: {host: ''}\n      weight: -5\n    retries: {attempts: -1}\n",
    );
    let errs = errors(&doc);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "spec.hosts[0]",
        "spec.http[0].route[0].destination.host",
        "spec.http[0].route[0].weight",
        "spec.http[0].retries.attempts",
    ] {
        assert!(paths.contains(&p), "{p} missing from {errs:?}");
    }
    assert_eq!(
        errs[0].to_string(),
        format!("{}: {}", errs[0].path, errs[0].message)
    );
}
