//! Resources Trellis ignores or does not support (analyze/unsupported.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "TRL0001",
            resource: "EnvoyFilter ratelimit.istio-system",
            text: "EnvoyFilter is not supported by Trellis and is ignored: EnvoyFilter patches Envoy's internal configuration",
            triggers: ENVOY_FILTER.into(),
            // Translated: a local rate limit EnvoyFilter is no finding.
            clean: LOCAL_RATE_LIMIT.into(),
        },
        Case {
            code: "TRL0001",
            resource: "EnvoyFilter filter-local-ratelimit-svc.istio-system",
            // Named by field, whole path.
            text: "it is not one of the rate limiting patterns Trellis translates (spec.configPatches[0].patch.value.typed_config.local_cluster_rate_limit is not supported)",
            triggers: LOCAL_RATE_LIMIT.replace(
                "stat_prefix: http_local_rate_limiter",
                "stat_prefix: http_local_rate_limiter\n          local_cluster_rate_limit: {}",
            ),
            // Descriptors (wildcards too), always_consume_default_token_bucket
            // and buckets per connection are translated.
            clean: LOCAL_RATE_LIMIT.replace(
                "stat_prefix: http_local_rate_limiter",
                "stat_prefix: http_local_rate_limiter\n          always_consume_default_token_bucket: false\n          local_rate_limit_per_downstream_connection: true\n          descriptors:\n          - entries: [{key: path, value: /limited}, {key: user}]\n            token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}",
            ),
        },
        Case {
            code: "TRL0007",
            resource: "AuthorizationPolicy ext-authz.default",
            text: "extension provider \"sample-ext-authz-grpc\" is not in meshConfig.extensionProviders: the requests this CUSTOM policy selects are denied",
            triggers: custom_policy("CUSTOM\n  provider: {name: sample-ext-authz-grpc}"),
            clean: custom_policy("DENY"),
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
            text: "Telemetry metrics providers other than prometheus not enforced yet",
            triggers: TELEMETRY.into(),
            // Enforced: a RequestAuthentication, a Telemetry's tracing and
            // access logs are no finding.
            clean: format!("{REQUEST_AUTHENTICATION}---{TELEMETRY_ENFORCED}"),
        },
        Case {
            code: "TRL0006",
            resource: "Telemetry tracing.default",
            text: "spec.tracing[0].providers[0].name: provider \"otel\" is not defined in meshConfig.extensionProviders",
            triggers: TELEMETRY_UNKNOWN_PROVIDER.into(),
            // The built-in providers need no definition.
            clean: TELEMETRY_ENFORCED.into(),
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
  metrics: [{providers: [{name: stackdriver}]}]
"#;

const TELEMETRY_UNKNOWN_PROVIDER: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing, namespace: default}
spec:
  tracing: [{providers: [{name: otel}]}]
"#;

const TELEMETRY_ENFORCED: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-logs, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10}]
  accessLogging: [{providers: [{name: envoy}]}]
  metrics: [{reportingInterval: 10s, providers: [{name: prometheus}], overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]
"#;

/// Istio's ext_authz task's policy, with `action` as given.
fn custom_policy(action: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-authz, namespace: default}}
spec:
  action: {action}
  rules: [{{to: [{{operation: {{paths: [/headers]}}}}]}}]
"
    )
}

const ENVOY_FILTER: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit, namespace: istio-system}
spec:
  configPatches: []
"#;

const LOCAL_RATE_LIMIT: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels: {app: productpage}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: http_local_rate_limiter
          token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
          filter_enabled:
            runtime_key: local_rate_limit_enabled
            default_value: {numerator: 100, denominator: HUNDRED}
          filter_enforced:
            runtime_key: local_rate_limit_enforced
            default_value: {numerator: 100, denominator: HUNDRED}
"#;

const ISTIO_OPERATOR: &str = r#"
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: control-plane, namespace: istio-system}
spec: {profile: demo}
"#;
