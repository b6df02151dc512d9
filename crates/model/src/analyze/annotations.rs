//! Istio annotations on Kubernetes objects, istioctl's
//! `annotations.K8sAnalyzer`: an annotation in an Istio domain that Istio
//! does not define (IST0108 UnknownAnnotation, usually a typo that silently
//! does nothing), one on a kind it does not apply to (IST0107
//! MisplacedAnnotation: `sidecar.istio.io/inject` on a Deployment instead of
//! its pod template), and a deprecated one (IST0135 DeprecatedAnnotation).
//! Checked on Namespaces, Services, Pods and Deployments, as istioctl does.

use api::Resource;

use super::context::Context;
use super::messages::{self as m};
use super::{Message, origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        let kind = match r {
            Resource::Namespace(_) => "Namespace",
            Resource::Service(_) => "Service",
            Resource::Pod(_) => "Pod",
            Resource::Deployment(_) => "Deployment",
            _ => continue,
        };
        for name in r.annotations().keys() {
            if !is_istio_annotation(name) || ALWAYS_IGNORED.contains(&name.as_str()) {
                continue;
            }
            let Some((_, deprecated, kinds)) = ANNOTATIONS.iter().find(|(n, _, _)| n == name)
            else {
                out.push(Message::new(
                    m::UNKNOWN_ANNOTATION,
                    origin(r),
                    m::unknown_annotation(name),
                ));
                continue;
            };
            // The injection label replaces the annotation; with both, Istio
            // uses the label and says nothing.
            let labelled = name == "sidecar.istio.io/inject"
                && r.labels().contains_key("sidecar.istio.io/inject");
            if *deprecated && !labelled {
                let extra = if name == "sidecar.istio.io/inject" {
                    " in favor of the \"sidecar.istio.io/inject\" label"
                } else {
                    ""
                };
                out.push(Message::new(
                    m::DEPRECATED_ANNOTATION,
                    origin(r),
                    m::deprecated_annotation(name, extra),
                ));
            }
            if !kinds.contains(&"Any") && !kinds.contains(&kind) {
                out.push(Message::new(
                    m::MISPLACED_ANNOTATION,
                    origin(r),
                    m::misplaced_annotation(name, &kinds.join(", ")),
                ));
            }
        }
    }
}

/// An annotation in a domain ending in `istio.io` (and the ingress class,
/// which Istio reads).
fn is_istio_annotation(name: &str) -> bool {
    name == "kubernetes.io/ingress.class"
        || name
            .split_once('/')
            .is_some_and(|(domain, _)| domain.ends_with("istio.io"))
}

/// Set by Istio itself, never worth a message.
const ALWAYS_IGNORED: &[&str] = &[
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

/// Istio's annotation catalogue (istio.io/api `annotation`): name, whether
/// it is deprecated, and the kinds it applies to.
const ANNOTATIONS: &[(&str, bool, &[&str])] = &[
    (
        "alpha.istio.io/canonical-serviceaccounts",
        true,
        &["Service"],
    ),
    (
        "alpha.istio.io/kubernetes-serviceaccounts",
        true,
        &["Service"],
    ),
    ("ambient.istio.io/bypass-inbound-capture", false, &["Pod"]),
    ("ambient.istio.io/dns-capture", false, &["Pod"]),
    ("ambient.istio.io/redirection", false, &["Pod"]),
    (
        "ambient.istio.io/waypoint-inbound-binding",
        false,
        &["GatewayClass", "Gateway"],
    ),
    ("galley.istio.io/analyze-suppress", false, &["Any"]),
    ("gateway.istio.io/controller-version", false, &["Any"]),
    ("gateway.istio.io/name-override", false, &["Gateway"]),
    ("gateway.istio.io/service-account", false, &["Gateway"]),
    ("inject.istio.io/templates", false, &["Pod"]),
    ("istio.io/autoRegistrationGroup", false, &["WorkloadEntry"]),
    ("istio.io/connectedAt", false, &["WorkloadEntry"]),
    ("istio.io/disconnectedAt", false, &["WorkloadEntry"]),
    ("istio.io/dry-run", false, &["AuthorizationPolicy"]),
    ("istio.io/reroute-virtual-interfaces", false, &["Pod"]),
    ("istio.io/rev", false, &["Pod"]),
    (
        "istio.io/use-waypoint-canary-weight",
        false,
        &["Service", "ServiceEntry", "Namespace"],
    ),
    ("istio.io/workloadController", false, &["WorkloadEntry"]),
    ("kubernetes.io/ingress.class", false, &["Ingress"]),
    ("networking.istio.io/exportTo", false, &["Service"]),
    ("networking.istio.io/service-type", false, &["Gateway"]),
    (
        "networking.istio.io/traffic-distribution",
        false,
        &["Namespace", "Service", "ServiceEntry"],
    ),
    ("prometheus.istio.io/merge-metrics", false, &["Pod"]),
    ("proxy.istio.io/config", false, &["Pod"]),
    ("proxy.istio.io/overrides", false, &["Pod"]),
    (
        "readiness.status.sidecar.istio.io/applicationPorts",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/failureThreshold",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/periodSeconds",
        false,
        &["Pod"],
    ),
    ("sidecar.istio.io/agentLogLevel", false, &["Pod"]),
    ("sidecar.istio.io/bootstrapOverride", false, &["Pod"]),
    ("sidecar.istio.io/componentLogLevel", false, &["Pod"]),
    ("sidecar.istio.io/discoveryAddress", true, &["Pod"]),
    ("sidecar.istio.io/extraStatTags", true, &["Pod"]),
    ("sidecar.istio.io/inject", true, &["Pod"]),
    ("sidecar.istio.io/interceptionMode", false, &["Pod"]),
    ("sidecar.istio.io/logLevel", false, &["Pod"]),
    ("sidecar.istio.io/nativeSidecar", false, &["Pod"]),
    ("sidecar.istio.io/proxyCPU", false, &["Pod"]),
    ("sidecar.istio.io/proxyCPULimit", false, &["Pod"]),
    ("sidecar.istio.io/proxyImage", false, &["Pod"]),
    ("sidecar.istio.io/proxyImageType", false, &["Pod"]),
    ("sidecar.istio.io/proxyMemory", false, &["Pod"]),
    ("sidecar.istio.io/proxyMemoryLimit", false, &["Pod"]),
    ("sidecar.istio.io/rewriteAppHTTPProbers", false, &["Pod"]),
    ("sidecar.istio.io/statsCompression", true, &["Pod"]),
    ("sidecar.istio.io/statsEvictionInterval", false, &["Pod"]),
    ("sidecar.istio.io/statsFlushInterval", false, &["Pod"]),
    ("sidecar.istio.io/statsHistogramBins", false, &["Pod"]),
    ("sidecar.istio.io/statsHistogramBuckets", false, &["Pod"]),
    ("sidecar.istio.io/statsInclusionPrefixes", true, &["Pod"]),
    ("sidecar.istio.io/statsInclusionRegexps", true, &["Pod"]),
    ("sidecar.istio.io/statsInclusionSuffixes", true, &["Pod"]),
    ("sidecar.istio.io/status", false, &["Pod"]),
    ("sidecar.istio.io/userVolume", false, &["Pod"]),
    ("sidecar.istio.io/userVolumeMount", false, &["Pod"]),
    ("status.sidecar.istio.io/port", false, &["Pod"]),
    (
        "topology.istio.io/controlPlaneClusters",
        false,
        &["Namespace"],
    ),
    ("traffic.istio.io/nodeSelector", false, &["Service"]),
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeInterfaces",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeInboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        true,
        &["Pod"],
    ),
];
