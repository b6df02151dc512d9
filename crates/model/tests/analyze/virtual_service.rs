//! VirtualService references, duplicate hosts and gateway binding (analyze/virtual_service*.rs).

use super::{Case, gateway, gateway_vs, vs_to};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0101",
            resource: "VirtualService reviews.default",
            text: r#"Referenced host+subset in destinationrule not found: "reviews+v4""#,
            triggers: vs_to("reviews", "reviews", "v4"),
            clean: vs_to("reviews", "reviews", "v2"),
        },
        Case {
            code: "IST0101",
            resource: "VirtualService reviews.default",
            text: r#"Referenced host not found: "ratings""#,
            triggers: vs_to("reviews", "ratings", "v1"),
            clean: vs_to("reviews", "reviews.default.svc.cluster.local", "v1"),
        },
        Case {
            code: "IST0101",
            resource: "VirtualService reviews.default",
            text: r#"Referenced mirror host not found: "reviews-shadow""#,
            triggers: mirror_vs("reviews-shadow"),
            clean: mirror_vs("reviews"),
        },
        Case {
            code: "IST0101",
            resource: "VirtualService front.default",
            text: r#"Referenced gateway not found: "missing-gateway""#,
            triggers: gateway_vs("front", "*", "missing-gateway", "/"),
            clean: gateway_vs("front", "*", "front-gateway", "/")
                + "---"
                + &gateway("front-gateway", "istio: ingressgateway", 80, "*"),
        },
        Case {
            code: "IST0101",
            resource: "VirtualService api.default",
            text: r#"Referenced host:port not found: "api:7070""#,
            triggers: two_port_service_vs(", port: {number: 7070}"),
            clean: two_port_service_vs(", port: {number: 9090}"),
        },
        Case {
            code: "IST0109",
            resource: "VirtualService reviews-b.default",
            text: "The VirtualServices default/reviews-a,default/reviews-b associated with mesh gateway define the same host */reviews.default.svc.cluster.local",
            triggers: vs_to("reviews-a", "reviews", "v1")
                + "---"
                + &vs_to("reviews-b", "reviews", "v2"),
            clean: vs_to("reviews-a", "reviews", "v1"),
        },
        Case {
            code: "IST0112",
            resource: "VirtualService api.default",
            text: r#"This VirtualService routes to a service "api" that exposes multiple ports [8080 9090]."#,
            triggers: two_port_service_vs(""),
            clean: two_port_service_vs(", port: {number: 8080}"),
        },
        Case {
            code: "IST0132",
            resource: "VirtualService front.default",
            text: "one or more host [bookinfo.example.com] defined in VirtualService default/front not found in Gateway default/front-gateway.",
            triggers: gateway_vs("front", "bookinfo.example.com", "front-gateway", "/")
                + "---"
                + &gateway(
                    "front-gateway",
                    "istio: ingressgateway",
                    80,
                    "shop.example.com",
                ),
            clean: gateway_vs("front", "bookinfo.example.com", "front-gateway", "/")
                + "---"
                + &gateway(
                    "front-gateway",
                    "istio: ingressgateway",
                    80,
                    "*.example.com",
                ),
        },
        Case {
            code: "TRL0003",
            resource: "VirtualService front-b.default",
            text: "The VirtualServices default/front-a,default/front-b bound to gateway default/front-gateway define the same host bookinfo.example.com, and default/front-a has a route that matches every request.",
            triggers: gateway_vs("front-a", "bookinfo.example.com", "front-gateway", "/")
                + "---"
                + &gateway_vs("front-b", "bookinfo.example.com", "front-gateway", "/api")
                + "---"
                + &gateway("front-gateway", "istio: ingressgateway", 80, "*"),
            clean: gateway_vs("front-a", "bookinfo.example.com", "front-gateway", "/shop")
                + "---"
                + &gateway_vs("front-b", "bookinfo.example.com", "front-gateway", "/api")
                + "---"
                + &gateway("front-gateway", "istio: ingressgateway", 80, "*"),
        },
    ]
}

fn mirror_vs(host: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
    mirror: {{host: {host}}}
"#
    )
}

fn two_port_service_vs(port: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 8080}}, {{name: grpc, port: 9090}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api}}
spec:
  hosts: [api]
  http:
  - route:
    - destination: {{host: api{port}}}
"#
    )
}
