//! Mesh-wide settings, in Istio's MeshConfig names and with Istio's defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields Trellis does not use yet are accepted and ignored, so an existing
/// Istio mesh config file can be used as it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// Where mesh-wide policies live (a PeerAuthentication `default` here applies everywhere).
    pub root_namespace: String,
    pub trust_domain: String,
    /// Other trust domains that are this mesh's too (after a migration): an
    /// AuthorizationPolicy principal in the trust domain, one of these or
    /// `cluster.local` matches the identity in any of them.
    pub trust_domain_aliases: Vec<String>,
    /// The cluster's DNS suffix: services are `<name>.<namespace>.svc.<domain>`.
    pub domain_suffix: String,
    /// Connect timeout to upstreams, Istio's 10 s.
    pub connect_timeout_ms: u64,
    pub enable_auto_mtls: bool,
    /// ALLOW_ANY (Istio's default) or REGISTRY_ONLY.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Every proxy's settings unless its pod's `proxy.istio.io/config` says otherwise.
    pub default_config: ProxyConfig,
    /// How proxies normalise request paths before routing and authorization.
    pub path_normalization: PathNormalization,
    /// Tracing with `defaultConfig.tracing` when no Telemetry resource or
    /// default provider says otherwise; Istio's default is on.
    pub enable_tracing: bool,
    /// The built-in `envoy` access log: empty is off, else a path
    /// (`/dev/stdout`, as `kubectl logs -c istio-proxy` shows it).
    pub access_log_file: String,
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy command operators; empty: Istio's default for the encoding.
    pub access_log_format: String,
    /// Named telemetry backends the Telemetry API refers to.
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used where no Telemetry resource names one.
    pub default_providers: DefaultProviders,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    pub tracing: Vec<String>,
    pub metrics: Vec<String>,
    pub access_logging: Vec<String>,
}

/// One `extensionProviders` entry. Kinds Trellis does not implement are
/// accepted (an existing mesh config keeps loading) and named by
/// [`ExtensionProvider::kind`]; a Telemetry using one is reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<serde_json::Value>,
    /// External authorizers that AuthorizationPolicy CUSTOM names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttpProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpcProvider>,
    /// Any other kind, by its key (e.g. `envoyExtAuthzHttp`, `datadog`).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl ExtensionProvider {
    pub fn kind(&self) -> &str {
        if self.opentelemetry.is_some() {
            "opentelemetry"
        } else if self.zipkin.is_some() {
            "zipkin"
        } else if self.envoy_file_access_log.is_some() {
            "envoyFileAccessLog"
        } else if self.prometheus.is_some() {
            "prometheus"
        } else if self.envoy_ext_authz_http.is_some() {
            "envoyExtAuthzHttp"
        } else if self.envoy_ext_authz_grpc.is_some() {
            "envoyExtAuthzGrpc"
        } else {
            self.other.keys().next().map_or("", String::as_str)
        }
    }
}

/// Istio's `EnvoyExternalAuthorizationHttpProvider`: Envoy's ext_authz
/// filter calling an HTTP authorization service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzHttpProvider {
    /// `[<namespace>/]<host>`: a Kubernetes service or ServiceEntry host.
    pub service: String,
    pub port: u32,
    /// Unset: 600 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<api::duration::Duration>,
    pub path_prefix: String,
    pub fail_open: bool,
    /// An HTTP status as a string ("503"); empty: 403.
    pub status_on_error: String,
    /// Deprecated alias of `includeRequestHeadersInCheck`.
    pub include_headers_in_check: Vec<String>,
    pub include_request_headers_in_check: Vec<String>,
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// Istio's `EnvoyExternalAuthorizationGrpcProvider` (Envoy's
/// `envoy.service.auth.v3.Authorization` over gRPC).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzGrpcProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<api::duration::Duration>,
    pub fail_open: bool,
    pub status_on_error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

/// Istio's `EnvoyExternalAuthorizationRequestBody`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzRequestBody {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryProvider {
    /// The collector's host ("otel-collector.observability.svc.cluster.local").
    pub service: String,
    pub port: u32,
    /// Set: OTLP over HTTP/protobuf; unset: OTLP over gRPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<OtlpHttp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<OtlpGrpc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OtlpHttp {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<api::duration::Duration>,
    pub headers: Vec<ProviderHeader>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OtlpGrpc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<api::duration::Duration>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinProvider {
    pub service: String,
    pub port: u32,
    pub max_tag_length: u32,
    /// The collector's span endpoint; empty: `/api/v2/spans`.
    pub path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct FileAccessLogProvider {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// oneof: a text format, or JSON labels (each a format).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct LogFormat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Istio's `ProxyPathNormalization`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct PathNormalization {
    pub normalization: NormalizationType,
}

/// Istio's `ProxyPathNormalization.NormalizationType`; DEFAULT is BASE.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    #[default]
    Default,
    /// No normalization: paths are routed, authorized and forwarded as sent.
    None,
    /// RFC 3986 normalization (`.`/`..` resolved, `\` as `/`, unreserved
    /// characters decoded).
    Base,
    /// BASE, then repeated slashes merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl NormalizationType {
    pub fn to_pb(self) -> wire::pb::PathNormalization {
        use wire::pb::PathNormalization as Pb;
        match self {
            NormalizationType::Default => Pb::Default,
            NormalizationType::None => Pb::None,
            NormalizationType::Base => Pb::Base,
            NormalizationType::MergeSlashes => Pb::MergeSlashes,
            NormalizationType::DecodeAndMergeSlashes => Pb::DecodeAndMergeSlashes,
        }
    }
}

/// Istio's ProxyConfig, the part Trellis uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// Environment of the proxy process (Istio: of istio-proxy), e.g.
    /// `SECRET_TTL` for the workload certificate's lifetime.
    pub proxy_metadata: BTreeMap<String, String>,
    /// Data-plane worker threads of each sidecar (0: one per CPU of its
    /// limit); unset: 2, Istio's sidecar default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// The legacy tracing settings (`meshConfig.enableTracing`).
    pub tracing: TracingConfig,
    /// Gateways: the proxies in front of them (`numTrustedProxies`).
    pub gateway_topology: GatewayTopology,
}

/// Istio's `ProxyConfig.gatewayTopology`: how many proxies (load balancers)
/// stand in front of a gateway; the client is then the last of that many
/// `x-forwarded-for` entries, for `remote.ip` and `remoteIpBlocks`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTopology {
    pub num_trusted_proxies: u32,
}

/// Istio's `ProxyConfig.tracing`, the parts a proxy uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingConfig {
    /// Percent of requests sampled; unset: 1 (Istio's PILOT_TRACE_SAMPLING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    pub custom_tags: BTreeMap<String, api::telemetry::CustomTag>,
    /// The legacy Zipkin collector; unset: `zipkin.istio-system:9411`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinAddress>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinAddress {
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            domain_suffix: "cluster.local".into(),
            connect_timeout_ms: 10_000,
            enable_auto_mtls: true,
            outbound_traffic_policy: OutboundTrafficPolicy {
                mode: "ALLOW_ANY".into(),
            },
            default_config: ProxyConfig::default(),
            path_normalization: PathNormalization::default(),
            enable_tracing: true,
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            extension_providers: Vec::new(),
            default_providers: DefaultProviders::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalization_in_istio_names() {
        let m: MeshConfig = serde_json::from_str(
            r#"{"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}}"#,
        )
        .expect("parses");
        assert_eq!(
            m.path_normalization.normalization,
            NormalizationType::DecodeAndMergeSlashes
        );
        assert_eq!(
            MeshConfig::default()
                .path_normalization
                .normalization
                .to_pb(),
            wire::pb::PathNormalization::Default
        );
        let err = serde_json::from_str::<MeshConfig>(
            r#"{"pathNormalization": {"normalization": "FANCY"}}"#,
        )
        .expect_err("unknown mode");
        assert!(err.to_string().contains("FANCY"), "{err}");
    }
}
