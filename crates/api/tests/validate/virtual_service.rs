//! Validation of VirtualService.

use super::run;
use super::{ROUTE, vs};

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
