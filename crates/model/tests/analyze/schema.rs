//! Resources that break Istio's rules on their own (analyze/schema.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![Case {
        code: "IST0106",
        resource: "VirtualService bad-weight.default",
        text: "Schema validation error: spec.http[0].route[0].weight: weight -1 must not be negative",
        triggers: BAD_WEIGHTS.into(),
        clean: BAD_WEIGHTS.replace("weight: -1}", "weight: 50}"),
    }]
}

/// A negative weight: well-formed YAML of the right types, but invalid.
const BAD_WEIGHTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-weight}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: -1}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#;
