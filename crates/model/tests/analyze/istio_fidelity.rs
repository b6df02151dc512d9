//! Istio annotations (analyze/annotations.rs), deprecated fields
//! (analyze/deprecation.rs), Istio's validation warnings
//! (analyze/schema.rs: unreachable routes, schema warnings), duplicate
//! gateway certificates (analyze/gateway_certificate.rs), EnvoyFilter
//! patches (analyze/envoy_filter.rs), access logs without a provider
//! (analyze/telemetry.rs), internal gateway references
//! (analyze/virtual_service.rs) and HTTP/2 keepalive not enforced
//! (analyze/unsupported.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0002",
            resource: "VirtualService old-fault.default",
            text: "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
            triggers: vs_http(
                "old-fault",
                "  - fault: {delay: {percent: 10, fixedDelay: 1s}}\n    route: [{destination: {host: reviews}}]\n",
            ),
            clean: vs_http(
                "old-fault",
                "  - fault: {delay: {percentage: {value: 10}, fixedDelay: 1s}}\n    route: [{destination: {host: reviews}}]\n",
            ),
        },
        Case {
            code: "IST0107",
            resource: "Service reviews-annotated.default",
            text: "Misplaced annotation: sidecar.istio.io/proxyCPU can only be applied to Pod",
            triggers: annotated_service("sidecar.istio.io/proxyCPU: 100m"),
            clean: annotated_service("networking.istio.io/exportTo: ."),
        },
        Case {
            code: "IST0108",
            resource: "Service reviews-annotated.default",
            text: "Unknown annotation: networking.istio.io/exportTwo",
            triggers: annotated_service("networking.istio.io/exportTwo: ."),
            clean: annotated_service("networking.istio.io/exportTo: ."),
        },
        Case {
            code: "IST0135",
            resource: "Service reviews-annotated.default",
            text: "Annotation \"alpha.istio.io/kubernetes-serviceaccounts\" has been deprecated and may not work in future Istio versions.",
            triggers: annotated_service("alpha.istio.io/kubernetes-serviceaccounts: reviews"),
            clean: annotated_service("example.com/kubernetes-serviceaccounts: reviews"),
        },
        Case {
            code: "IST0130",
            resource: "VirtualService dead.default",
            text: "VirtualService rule #1 not used (only the last rule can have no matches).",
            triggers: vs_http(
                "dead",
                "  - route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n",
            ),
            clean: vs_http(
                "dead",
                "  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n",
            ),
        },
        Case {
            code: "IST0131",
            resource: "VirtualService dead.default",
            text: "VirtualService rule \"second\" match #0 of prefix /api/v1 is not used (duplicate/overlapping match in rule #0 of prefix /api on \"first\").",
            triggers: vs_http(
                "dead",
                "  - name: first\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: reviews}}]\n  - name: second\n    match: [{uri: {prefix: /api/v1}}]\n    route: [{destination: {host: reviews}}]\n",
            ),
            clean: vs_http(
                "dead",
                "  - name: first\n    match: [{uri: {prefix: /api/v1}}]\n    route: [{destination: {host: reviews}}]\n  - name: second\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: reviews}}]\n",
            ),
        },
        Case {
            code: "IST0133",
            resource: "ServiceEntry db.default",
            text: "Schema validation warning: addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            triggers: service_entry("NONE"),
            clean: service_entry("DNS"),
        },
        Case {
            code: "IST0138",
            resource: "Gateway gw-a.default",
            text: "Duplicate certificate in multiple gateways [default/gw-a default/gw-b] may cause 404s if clients re-use HTTP2 connections.",
            triggers: format!(
                "{}---\n{}",
                tls_gateway("gw-a", "shared"),
                tls_gateway("gw-b", "shared")
            ),
            clean: format!(
                "{}---\n{}",
                tls_gateway("gw-a", "a-cert"),
                tls_gateway("gw-b", "b-cert")
            ),
        },
        Case {
            code: "IST0151",
            resource: "EnvoyFilter lua.default",
            text: "This EnvoyFilter does not have a priority and has a relative patch operation set",
            triggers: envoy_filter(
                "",
                "  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: a}}}\n",
            ),
            clean: envoy_filter(
                "  priority: 10\n",
                "  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: a}}}\n",
            ),
        },
        Case {
            code: "IST0152",
            resource: "EnvoyFilter lua.default",
            text: "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
            triggers: envoy_filter(
                "  priority: 1\n",
                "  - {applyTo: CLUSTER, patch: {operation: REPLACE, value: {name: c}}}\n",
            ),
            clean: envoy_filter(
                "  priority: 1\n",
                "  - {applyTo: NETWORK_FILTER, patch: {operation: REPLACE, value: {name: c}}}\n",
            ),
        },
        Case {
            code: "IST0153",
            resource: "EnvoyFilter lua.default",
            text: "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
            triggers: envoy_filter(
                "",
                "  - {applyTo: ROUTE_CONFIGURATION, patch: {operation: ADD, value: {name: r}}}\n",
            ),
            clean: envoy_filter(
                "",
                "  - {applyTo: VIRTUAL_HOST, patch: {operation: ADD, value: {name: r}}}\n",
            ),
        },
        Case {
            code: "IST0154",
            resource: "EnvoyFilter lua.default",
            text: "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
            triggers: envoy_filter(
                "",
                "  - {applyTo: HTTP_ROUTE, patch: {operation: REMOVE}}\n",
            ),
            clean: envoy_filter(
                "  priority: 1\n",
                "  - {applyTo: VIRTUAL_HOST, patch: {operation: REMOVE}}\n",
            ),
        },
        Case {
            code: "IST0155",
            resource: "EnvoyFilter lua.default",
            text: "and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade.",
            triggers: envoy_filter(
                "",
                "  - {applyTo: HTTP_FILTER, match: {proxy: {proxyVersion: '^1\\.2.*'}}, patch: {operation: INSERT_FIRST, value: {name: a}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: a}}}\n",
            ),
            clean: envoy_filter(
                "",
                "  - {applyTo: HTTP_FILTER, match: {proxy: {proxyVersion: '^1\\.2.*'}}, patch: {operation: INSERT_FIRST, value: {name: a}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: b}}}\n",
            ),
        },
        Case {
            code: "IST0157",
            resource: "Telemetry logs.default",
            text: "The Telemetry logs in namespace \"default\" with empty providers will be ignored.",
            triggers: telemetry("{filter: {expression: 'response.code >= 400'}}"),
            clean: telemetry(
                "{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}",
            ),
        },
        Case {
            code: "IST0165",
            resource: "VirtualService internal.default",
            text: "Gateway reference in VirtualService default/internal is to an implementation-generated internal Gateway: istio-system/gw~istio-autogenerated-k8s-gateway~http.",
            triggers: internal_gateway_vs("istio-system/gw~istio-autogenerated-k8s-gateway~http"),
            clean: internal_gateway_vs("mesh"),
        },
        Case {
            code: "TRL0005",
            resource: "DestinationRule reviews-pool.default",
            text: "connectionPool.http.http2KeepAlive has no effect",
            triggers: pool_dr("{http2KeepAlive: {interval: 5s, timeout: 3s}}"),
            clean: pool_dr("{idleTimeout: 30s}"),
        },
    ]
}

fn vs_http(name: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

fn service_entry(resolution: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  ports: [{{number: 5432, name: tcp, protocol: TCP}}]\n  resolution: {resolution}\n"
    )
}

fn tls_gateway(name: &str, credential: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: [{name}.example.com], tls: {{mode: SIMPLE, credentialName: {credential}}}}}]\n"
    )
}

fn envoy_filter(priority: &str, patches: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: lua}}\nspec:\n{priority}  configPatches:\n{patches}"
    )
}

fn telemetry(log: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: logs}}\nspec:\n  accessLogging: [{log}]\n"
    )
}

fn internal_gateway_vs(gateway: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: internal}}\nspec:\n  hosts: [reviews]\n  gateways: [{gateway}]\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n"
    )
}

fn pool_dr(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews-pool}}\nspec:\n  host: reviews\n  workloadSelector: {{matchLabels: {{app: productpage}}}}\n  trafficPolicy: {{connectionPool: {{http: {http}}}}}\n"
    )
}

fn annotated_service(annotation: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews-annotated\n  annotations: {{{annotation}}}\nspec:\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n"
    )
}
