//! DestinationRule hosts, subsets and duplicates (analyze/destination_rule.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0173",
            resource: "DestinationRule reviews-canary.canary",
            text: "The Subset v3 defined in the DestinationRule does not select any pods.",
            triggers: subset_dr("v3", "v3"),
            clean: subset_dr("v3", "v2"),
        },
        Case {
            code: "IST0174",
            resource: "DestinationRule ratings.default",
            text: "The host ratings defined in the DestinationRule does not match any services in the mesh.",
            triggers: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec: {host: ratings}\n".into(),
            clean: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec: {host: reviews, workloadSelector: {matchLabels: {app: productpage}}}\n".into(),
        },
        Case {
            code: "TRL0002",
            resource: "DestinationRule reviews-pool.default",
            text: "The DestinationRules default/reviews,default/reviews-pool define the same host reviews.default.svc.cluster.local",
            triggers: destination_rule("reviews-pool", "default", "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}"),
            clean: destination_rule(
                "reviews-pool",
                "default",
                "  workloadSelector: {matchLabels: {app: productpage}}\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}",
            ),
        },
    ]
}

fn destination_rule(name: &str, namespace: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: reviews.default.svc.cluster.local
{extra}
"#
    )
}

fn subset_dr(subset: &str, version: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-canary, namespace: canary}}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{{name: {subset}, labels: {{version: {version}}}}}]
"#
    )
}
