//! The catalogue of analyzer messages: code, name, level and text.
//!
//! Codes `IST0xxx` are istioctl's own (`pkg/config/analysis/msg/messages.yaml`),
//! with istioctl's name, level and message template, so that runbooks and CI
//! filters written for `istioctl analyze` work unchanged. Codes `TRL0xxx`
//! are Trellis's own, for checks istioctl has no code for; they are listed
//! here and nowhere else, so the numbering cannot collide.
//!
//! Each text function mirrors the Go template it replaces: `%q` becomes
//! `{:?}` (a double-quoted, escaped string), `%v` of a list becomes `[a b]`.

use super::Level;

/// One kind of message. A code always has the same name and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

const fn ty(code: &'static str, name: &'static str, level: Level) -> MessageType {
    MessageType { code, name, level }
}

pub const DEPRECATED: MessageType = ty("IST0002", "Deprecated", Level::Warning);
pub const REFERENCED_RESOURCE_NOT_FOUND: MessageType =
    ty("IST0101", "ReferencedResourceNotFound", Level::Error);
pub const NAMESPACE_NOT_INJECTED: MessageType = ty("IST0102", "NamespaceNotInjected", Level::Info);
pub const POD_MISSING_PROXY: MessageType = ty("IST0103", "PodMissingProxy", Level::Warning);
pub const MISPLACED_ANNOTATION: MessageType = ty("IST0107", "MisplacedAnnotation", Level::Warning);
pub const UNKNOWN_ANNOTATION: MessageType = ty("IST0108", "UnknownAnnotation", Level::Warning);
pub const SCHEMA_VALIDATION_ERROR: MessageType =
    ty("IST0106", "SchemaValidationError", Level::Error);
pub const CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS: MessageType = ty(
    "IST0109",
    "ConflictingMeshGatewayVirtualServiceHosts",
    Level::Error,
);
pub const CONFLICTING_SIDECAR_WORKLOAD_SELECTORS: MessageType = ty(
    "IST0110",
    "ConflictingSidecarWorkloadSelectors",
    Level::Error,
);
pub const MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS: MessageType = ty(
    "IST0111",
    "MultipleSidecarsWithoutWorkloadSelectors",
    Level::Error,
);
pub const VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED: MessageType = ty(
    "IST0112",
    "VirtualServiceDestinationPortSelectorRequired",
    Level::Error,
);
pub const MTLS_POLICY_CONFLICT: MessageType = ty("IST0113", "MTLSPolicyConflict", Level::Error);
pub const PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION: MessageType =
    ty("IST0118", "PortNameIsNotUnderNamingConvention", Level::Info);
pub const NO_MATCHING_WORKLOADS_FOUND: MessageType =
    ty("IST0127", "NoMatchingWorkloadsFound", Level::Warning);
pub const NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL: MessageType = ty(
    "IST0128",
    "NoServerCertificateVerificationDestinationLevel",
    Level::Warning,
);
pub const NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL: MessageType = ty(
    "IST0129",
    "NoServerCertificateVerificationPortLevel",
    Level::Warning,
);
pub const VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY: MessageType = ty(
    "IST0132",
    "VirtualServiceHostNotFoundInGateway",
    Level::Warning,
);
pub const VIRTUAL_SERVICE_UNREACHABLE_RULE: MessageType =
    ty("IST0130", "VirtualServiceUnreachableRule", Level::Warning);
pub const VIRTUAL_SERVICE_INEFFECTIVE_MATCH: MessageType =
    ty("IST0131", "VirtualServiceIneffectiveMatch", Level::Info);
pub const SCHEMA_WARNING: MessageType = ty("IST0133", "SchemaWarning", Level::Warning);
pub const DEPRECATED_ANNOTATION: MessageType = ty("IST0135", "DeprecatedAnnotation", Level::Info);
pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: MessageType =
    ty("IST0134", "ServiceEntryAddressesRequired", Level::Warning);
pub const GATEWAY_DUPLICATE_CERTIFICATE: MessageType =
    ty("IST0138", "GatewayDuplicateCertificate", Level::Warning);
pub const CONFLICTING_GATEWAYS: MessageType = ty("IST0145", "ConflictingGateways", Level::Error);
pub const EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME: MessageType = ty(
    "IST0150",
    "ExternalNameServiceTypeInvalidPortName",
    Level::Warning,
);
pub const ENVOY_FILTER_USES_RELATIVE_OPERATION: MessageType = ty(
    "IST0151",
    "EnvoyFilterUsesRelativeOperation",
    Level::Warning,
);
pub const ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY: MessageType = ty(
    "IST0152",
    "EnvoyFilterUsesReplaceOperationIncorrectly",
    Level::Error,
);
pub const ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY: MessageType = ty(
    "IST0153",
    "EnvoyFilterUsesAddOperationIncorrectly",
    Level::Error,
);
pub const ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY: MessageType = ty(
    "IST0154",
    "EnvoyFilterUsesRemoveOperationIncorrectly",
    Level::Error,
);
pub const ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION: MessageType = ty(
    "IST0155",
    "EnvoyFilterUsesRelativeOperationWithProxyVersion",
    Level::Warning,
);
pub const INVALID_TELEMETRY_PROVIDER: MessageType =
    ty("IST0157", "InvalidTelemetryProvider", Level::Warning);
pub const CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS: MessageType = ty(
    "IST0159",
    "ConflictingTelemetryWorkloadSelectors",
    Level::Error,
);
pub const MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS: MessageType = ty(
    "IST0160",
    "MultipleTelemetriesWithoutWorkloadSelectors",
    Level::Error,
);
pub const GATEWAY_PORT_NOT_DEFINED_ON_SERVICE: MessageType =
    ty("IST0162", "GatewayPortNotDefinedOnService", Level::Warning);
pub const REFERENCED_INTERNAL_GATEWAY: MessageType =
    ty("IST0165", "ReferencedInternalGateway", Level::Warning);
pub const DESTINATION_RULE_SUBSET_NOT_SELECT_PODS: MessageType = ty(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    Level::Error,
);
pub const UNKNOWN_DESTINATION_RULE_HOST: MessageType =
    ty("IST0174", "UnknownDestinationRuleHost", Level::Warning);
pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: MessageType =
    ty("IST0177", "ConflictingServiceEntryProtocol", Level::Warning);

pub const UNSUPPORTED_RESOURCE: MessageType = ty("TRL0001", "UnsupportedResource", Level::Warning);
pub const CONFLICTING_DESTINATION_RULES: MessageType =
    ty("TRL0002", "ConflictingDestinationRules", Level::Error);
pub const CONFLICTING_GATEWAY_VIRTUAL_SERVICE_HOSTS: MessageType = ty(
    "TRL0003",
    "ConflictingGatewayVirtualServiceHosts",
    Level::Warning,
);
pub const IGNORED_RESOURCE: MessageType = ty("TRL0004", "IgnoredResource", Level::Info);
pub const NOT_ENFORCED: MessageType = ty("TRL0005", "NotEnforced", Level::Warning);
pub const UNKNOWN_TELEMETRY_PROVIDER: MessageType =
    ty("TRL0006", "UnknownTelemetryProvider", Level::Error);
pub const UNUSABLE_AUTHORIZATION_PROVIDER: MessageType =
    ty("TRL0007", "UnusableAuthorizationProvider", Level::Error);

/// Every message the analyzers can produce, in code order.
pub const ALL: &[MessageType] = &[
    DEPRECATED,
    REFERENCED_RESOURCE_NOT_FOUND,
    NAMESPACE_NOT_INJECTED,
    POD_MISSING_PROXY,
    MISPLACED_ANNOTATION,
    UNKNOWN_ANNOTATION,
    SCHEMA_VALIDATION_ERROR,
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
    MTLS_POLICY_CONFLICT,
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
    NO_MATCHING_WORKLOADS_FOUND,
    NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
    VIRTUAL_SERVICE_UNREACHABLE_RULE,
    VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
    SCHEMA_WARNING,
    SERVICE_ENTRY_ADDRESSES_REQUIRED,
    DEPRECATED_ANNOTATION,
    GATEWAY_DUPLICATE_CERTIFICATE,
    CONFLICTING_GATEWAYS,
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
    ENVOY_FILTER_USES_RELATIVE_OPERATION,
    ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY,
    ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY,
    ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY,
    ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION,
    INVALID_TELEMETRY_PROVIDER,
    CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
    MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
    REFERENCED_INTERNAL_GATEWAY,
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
    UNKNOWN_DESTINATION_RULE_HOST,
    CONFLICTING_SERVICE_ENTRY_PROTOCOL,
    UNSUPPORTED_RESOURCE,
    CONFLICTING_DESTINATION_RULES,
    CONFLICTING_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    IGNORED_RESOURCE,
    NOT_ENFORCED,
    UNKNOWN_TELEMETRY_PROVIDER,
    UNUSABLE_AUTHORIZATION_PROVIDER,
];

/// Where a code is explained: istio.io's page for istioctl's codes, the
/// Trellis analyzer reference for Trellis's own.
pub fn documentation_url(code: &str) -> String {
    let lower = code.to_ascii_lowercase();
    if code.starts_with("IST") {
        format!("https://istio.io/latest/docs/reference/config/analysis/{lower}/")
    } else {
        format!("docs/reference/analysis.md#{lower}")
    }
}

/// Go's `%v` of a `[]string` or `[]int`: `[a b c]`.
pub fn go_list<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(" "))
}

pub fn deprecated(detail: &str) -> String {
    format!("Deprecated: {detail}")
}

pub fn invalid_telemetry_provider(name: &str, namespace: &str) -> String {
    format!("The Telemetry {name} in namespace {namespace:?} with empty providers will be ignored.")
}

pub fn referenced_resource_not_found(reftype: &str, refval: &str) -> String {
    format!("Referenced {reftype} not found: {refval:?}")
}

pub fn namespace_not_injected(namespace: &str) -> String {
    format!(
        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {namespace} \
         istio-injection=enabled' to enable it, or 'kubectl label namespace {namespace} \
         istio-injection=disabled' to explicitly mark it as not needing injection."
    )
}

pub fn pod_missing_proxy(pod: &str) -> String {
    format!(
        "The pod {pod} is missing the Istio proxy. This can often be resolved by restarting or \
         redeploying the workload."
    )
}

pub fn misplaced_annotation(annotation: &str, kinds: &str) -> String {
    format!("Misplaced annotation: {annotation} can only be applied to {kinds}")
}

pub fn unknown_annotation(annotation: &str) -> String {
    format!("Unknown annotation: {annotation}")
}

pub fn deprecated_annotation(annotation: &str, extra: &str) -> String {
    format!(
        "Annotation {annotation:?} has been deprecated{extra} and may not work in future Istio versions."
    )
}

pub fn schema_validation_error(error: &str) -> String {
    format!("Schema validation error: {error}")
}

pub fn conflicting_mesh_gateway_virtual_service_hosts(
    virtual_services: &str,
    host: &str,
) -> String {
    format!(
        "The VirtualServices {virtual_services} associated with mesh gateway define the same host \
         {host} which can lead to undefined behavior. This can be fixed by merging the conflicting \
         VirtualServices into a single resource."
    )
}

pub fn conflicting_sidecar_workload_selectors(
    sidecars: &[String],
    namespace: &str,
    pod: &str,
) -> String {
    format!(
        "The Sidecars {} in namespace {namespace:?} select the same workload pod {pod:?}, which can \
         lead to undefined behavior.",
        go_list(sidecars)
    )
}

pub fn multiple_sidecars_without_workload_selectors(
    sidecars: &[String],
    namespace: &str,
) -> String {
    format!(
        "The Sidecars {} in namespace {namespace:?} have no workload selector, which can lead to \
         undefined behavior.",
        go_list(sidecars)
    )
}

pub fn virtual_service_destination_port_selector_required(host: &str, ports: &[u32]) -> String {
    format!(
        "This VirtualService routes to a service {host:?} that exposes multiple ports {}. \
         Specifying a port in the destination is required to disambiguate.",
        go_list(ports)
    )
}

pub fn mtls_policy_conflict(
    host: &str,
    destination_rule: &str,
    destination_rule_mtls: bool,
    policy: &str,
    policy_mode: &str,
) -> String {
    format!(
        "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The \
         DestinationRule {destination_rule:?} specifies that mTLS must be {destination_rule_mtls} \
         but the Policy object {policy:?} specifies {policy_mode}."
    )
}

pub fn port_name_is_not_under_naming_convention(
    name: &str,
    port: i32,
    target_port: &str,
) -> String {
    format!(
        "Port name {name} (port: {port}, targetPort: {target_port}) doesn't follow the naming \
         convention of Istio port."
    )
}

pub fn no_matching_workloads_found(labels: &str) -> String {
    format!("No matching workloads for this resource with the following labels: {labels}")
}

pub fn no_server_certificate_verification_destination_level(
    destination_rule: &str,
    namespace: &str,
    mode: &str,
    host: &str,
) -> String {
    format!(
        "DestinationRule {destination_rule} in namespace {namespace} has TLS mode set to {mode} but \
         no caCertificates are set to validate server identity for host: {host}"
    )
}

pub fn no_server_certificate_verification_port_level(
    destination_rule: &str,
    namespace: &str,
    mode: &str,
    host: &str,
    port: &str,
) -> String {
    format!(
        "DestinationRule {destination_rule} in namespace {namespace} has TLS mode set to {mode} but \
         no caCertificates are set to validate server identity for host: {host} at port {port}"
    )
}

pub fn virtual_service_unreachable_rule(rule: &str, reason: &str) -> String {
    format!("VirtualService rule {rule} not used ({reason}).")
}

pub fn virtual_service_ineffective_match(rule: &str, matched: &str, duplicate: &str) -> String {
    format!(
        "VirtualService rule {rule} match {matched} is not used (duplicate/overlapping match in rule {duplicate})."
    )
}

pub fn schema_warning(warning: &str) -> String {
    format!("Schema validation warning: {warning}")
}

pub fn gateway_duplicate_certificate(gateways: &[String]) -> String {
    format!(
        "Duplicate certificate in multiple gateways {} may cause 404s if clients re-use HTTP2 \
         connections.",
        go_list(gateways)
    )
}

/// The fixed texts of the EnvoyFilter messages (IST0151–IST0155).
pub fn envoy_filter_text(ty: MessageType) -> &'static str {
    match ty.code {
        "IST0151" => {
            "This EnvoyFilter does not have a priority and has a relative patch operation set \
             which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD \
             option or setting the priority may help in ensuring the EnvoyFilter is applied \
             correctly."
        }
        "IST0152" => "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
        "IST0153" => {
            "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or \
             HTTP_ROUTE."
        }
        "IST0154" => {
            "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or \
             HTTP_ROUTE."
        }
        // IST0155; "NSTERT" is istioctl's spelling, kept so filters on the text match.
        _ => {
            "This EnvoyFilter does not have a priority and has a relative patch operation \
             (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause \
             the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD \
             option or setting the priority may help in ensuring the EnvoyFilter is applied \
             correctly."
        }
    }
}

pub fn service_entry_addresses_required() -> String {
    "ServiceEntry addresses are required for this protocol.".to_string()
}

pub fn conflicting_telemetry_workload_selectors(
    telemetries: &[String],
    namespace: &str,
    pod: &str,
) -> String {
    format!(
        "The Telemetries {} in namespace {namespace:?} select the same workload pod {pod:?}, which \
         can lead to undefined behavior.",
        go_list(telemetries)
    )
}

pub fn multiple_telemetries_without_workload_selectors(
    telemetries: &[String],
    namespace: &str,
) -> String {
    format!(
        "The Telemetries {} in namespace {namespace:?} have no workload selector, which can lead \
         to undefined behavior.",
        go_list(telemetries)
    )
}

pub fn virtual_service_host_not_found_in_gateway(
    hosts: &[String],
    vs: &str,
    gateway: &str,
) -> String {
    format!(
        "one or more host {} defined in VirtualService {vs} not found in Gateway {gateway}.",
        go_list(hosts)
    )
}

pub fn conflicting_gateways(gateways: &str, selector: &str, port: u32, hosts: &str) -> String {
    format!(
        "Conflict with gateways {gateways} (workload selector {selector}, port {port}, hosts {hosts})."
    )
}

pub fn external_name_service_type_invalid_port_name() -> String {
    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and \
     unmatched traffic for ports serving TCP protocol from being forwarded correctly"
        .to_string()
}

pub fn gateway_port_not_defined_on_service(port: u32, selector: &str) -> String {
    format!(
        "The gateway is listening on a target port (port {port}) that is not defined in the \
         Service associated with its workload instances (Pod selector {selector}). If you need to \
         access the gateway port through the gateway Service, it will not be available."
    )
}

pub fn referenced_internal_gateway(virtual_service: &str, gateway: &str) -> String {
    format!(
        "Gateway reference in VirtualService {virtual_service} is to an implementation-generated \
         internal Gateway: {gateway}."
    )
}

pub fn destination_rule_subset_not_select_pods(subset: &str) -> String {
    format!(
        "The Subset {subset} defined in the DestinationRule does not select any pods. Which may \
         lead to 503 UH (NoHealthyUpstream)."
    )
}

pub fn unknown_destination_rule_host(host: &str) -> String {
    format!(
        "The host {host} defined in the DestinationRule does not match any services in the mesh."
    )
}

pub fn conflicting_service_entry_protocol(
    service_entries: &str,
    host: &str,
    port: u32,
    protocols: &str,
) -> String {
    format!(
        "Multiple ServiceEntries ({service_entries}) define the same host {host:?} and port {port} \
         with conflicting protocols ({protocols})."
    )
}

pub fn conflicting_destination_rules(destination_rules: &str, host: &str) -> String {
    format!(
        "The DestinationRules {destination_rules} define the same host {host} without a workload \
         selector, which can lead to undefined behavior: only one of them is used, so the \
         subsets and traffic policy of the others are ignored. This can be fixed by merging the \
         conflicting DestinationRules into a single resource."
    )
}

pub fn conflicting_gateway_virtual_service_hosts(
    virtual_services: &str,
    gateway: &str,
    host: &str,
    catch_all: &str,
) -> String {
    format!(
        "The VirtualServices {virtual_services} bound to gateway {gateway} define the same host \
         {host}, and {catch_all} has a route that matches every request. Their routes are merged \
         in an unspecified order, so routes placed after that one are never used. This can be \
         fixed by merging the conflicting VirtualServices into a single resource."
    )
}
