//! Gateway selectors, credentials, conflicts and ports (analyze/gateway.rs).

use super::{Case, gateway};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0101",
            resource: "Gateway egress.default",
            text: r#"Referenced selector not found: "istio=egressgateway""#,
            triggers: gateway("egress", "istio: egressgateway", 80, "*"),
            // The built-in ingress gateway is always there.
            clean: gateway("egress", "istio: ingressgateway", 80, "*"),
        },
        Case {
            code: "IST0145",
            resource: "Gateway gw-b.default",
            text: "Conflict with gateways default/gw-a (workload selector app=istio-ingressgateway,istio=ingressgateway, port 80, hosts bookinfo.example.com).",
            triggers: gateway(
                "gw-a",
                "istio: ingressgateway, app: istio-ingressgateway",
                80,
                "*.example.com",
            ) + "---"
                + &gateway(
                    "gw-b",
                    "app: istio-ingressgateway, istio: ingressgateway",
                    80,
                    "bookinfo.example.com",
                ),
            clean: gateway(
                "gw-a",
                "istio: ingressgateway, app: istio-ingressgateway",
                80,
                "shop.example.com",
            ) + "---"
                + &gateway(
                    "gw-b",
                    "app: istio-ingressgateway, istio: ingressgateway",
                    80,
                    "bookinfo.example.com",
                ),
        },
        Case {
            code: "IST0101",
            resource: "Gateway secure.default",
            text: r#"Referenced credentialName not found: "bookinfo-credential""#,
            triggers: https_gateway(""),
            clean: https_gateway(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: bookinfo-credential, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n",
            ),
        },
        Case {
            code: "IST0162",
            resource: "Gateway internal.default",
            text: "The gateway is listening on a target port (port 8080) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway).",
            triggers: gateway("internal", "istio: ingressgateway", 8080, "*"),
            clean: gateway("internal", "istio: ingressgateway", 443, "*"),
        },
    ]
}

/// An HTTPS server on the default ingress gateway: its Secret belongs in
/// the gateway's namespace (istio-system), not the Gateway's.
fn https_gateway(secret: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: SIMPLE, credentialName: bookinfo-credential}}
    hosts: [bookinfo.example.com]
---
{secret}"#
    )
}
