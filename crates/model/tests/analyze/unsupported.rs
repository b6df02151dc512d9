//! Resources Trellis ignores or does not support (analyze/unsupported.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "TRL0001",
            resource: "EnvoyFilter ratelimit.istio-system",
            text: "EnvoyFilter is not supported by Trellis and is ignored: EnvoyFilter patches Envoy's internal configuration",
            triggers: ENVOY_FILTER.into(),
            clean: String::new(),
        },
        Case {
            code: "TRL0004",
            resource: "IstioOperator control-plane.istio-system",
            text: "IstioOperator is ignored by Trellis: IstioOperator configures istioctl's installer",
            triggers: ISTIO_OPERATOR.into(),
            clean: String::new(),
        },
        Case {
            code: "TRL0005",
            resource: "Telemetry mesh-default.istio-system",
            text: "Telemetry has no effect (tracing, accessLogging ignored)",
            triggers: TELEMETRY.into(),
            // Enforced: a RequestAuthentication is no finding.
            clean: REQUEST_AUTHENTICATION.into(),
        },
        Case {
            code: "TRL0005",
            resource: "VirtualService by-source.default",
            text: "http[0].match[0].sourceLabels not enforced",
            triggers: vs_matching(
                "{sourceLabels: {app: ratings}}",
                "{destinationSubnets: [10.0.0.0/8]}",
            ),
            // Enforced: a TCP match on the source's labels and subnet is no finding.
            clean: vs_matching(
                "{uri: {prefix: /}}",
                "{sourceLabels: {app: ratings}, sourceSubnet: 10.0.0.0/8}",
            ),
        },
        Case {
            code: "TRL0005",
            resource: "VirtualService by-source.default",
            text: "tcp[0].match[0].destinationSubnets not enforced",
            triggers: vs_matching(
                "{sourceLabels: {app: ratings}}",
                "{destinationSubnets: [10.0.0.0/8]}",
            ),
            clean: vs_matching("{uri: {prefix: /}}", "{port: 9080}"),
        },
    ]
}

/// A VirtualService for reviews with one HTTP and one TCP route, matching as given.
fn vs_matching(http: &str, tcp: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: by-source}}
spec:
  hosts: [reviews]
  http:
  - match: [{http}]
    route: [{{destination: {{host: reviews}}}}]
  tcp:
  - match: [{tcp}]
    route: [{{destination: {{host: reviews}}}}]
"#
    )
}

const REQUEST_AUTHENTICATION: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules: [{issuer: "https://issuer.example"}]
"#;

const TELEMETRY: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10}]
  accessLogging: [{providers: [{name: envoy}]}]
"#;

const ENVOY_FILTER: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit, namespace: istio-system}
spec:
  configPatches: []
"#;

const ISTIO_OPERATOR: &str = r#"
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: control-plane, namespace: istio-system}
spec: {profile: demo}
"#;
