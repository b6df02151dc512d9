//! mTLS conflicts and AuthorizationPolicy references (analyze/mtls.rs, analyze/authorization.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0101",
            resource: "AuthorizationPolicy reviews-viewer.default",
            text: r#"Referenced namespace not found: "frontend""#,
            triggers: authz(r#"namespaces: ["frontend"]"#),
            clean: authz(r#"namespaces: ["default", "istio-*"]"#),
        },
        Case {
            code: "IST0101",
            resource: "AuthorizationPolicy reviews-viewer.default",
            text: r#"Referenced service account not found: "cluster.local/ns/default/sa/ghost""#,
            triggers: authz(r#"principals: ["cluster.local/ns/default/sa/ghost"]"#),
            clean: authz(r#"principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]"#),
        },
        Case {
            code: "IST0113",
            resource: "DestinationRule reviews-tls.other",
            text: r#"The DestinationRule "other/reviews-tls" specifies that mTLS must be false but the Policy object "default/default" specifies STRICT."#,
            triggers: peer_authentication("STRICT") + "---" + &dr_tls("DISABLE"),
            clean: peer_authentication("STRICT") + "---" + &dr_tls("ISTIO_MUTUAL"),
        },
        Case {
            code: "IST0113",
            resource: "DestinationRule reviews-tls.other",
            text: "specifies that mTLS must be true but the Policy object \"default/default\" specifies DISABLE.",
            triggers: peer_authentication("DISABLE") + "---" + &dr_tls("ISTIO_MUTUAL"),
            clean: peer_authentication("PERMISSIVE") + "---" + &dr_tls("ISTIO_MUTUAL"),
        },
        Case {
            code: "IST0127",
            resource: "AuthorizationPolicy reviews-viewer.default",
            text: "No matching workloads for this resource with the following labels: app=ratings",
            triggers: authz_selecting("app: ratings"),
            clean: authz_selecting("app: reviews"),
        },
    ]
}

fn peer_authentication(mode: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"#
    )
}

fn dr_tls(mode: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-tls, namespace: other}}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: {mode}}}}}
"#
    )
}

fn authz(source: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-viewer}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from:
    - source: {{{source}}}
"#
    )
}

fn authz_selecting(labels: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-viewer}}
spec:
  selector: {{matchLabels: {{{labels}}}}}
  rules: [{{}}]
"#
    )
}
