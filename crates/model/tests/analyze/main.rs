//! `model::analyze`: one case per message code, each with a fixture that
//! triggers it and a close variant that does not, plus whole-input checks
//! (the Bookinfo example, every seed snippet, determinism).

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod destination_rule;
mod gateway;
mod istio_fidelity;
mod istio_more;
mod schema;
mod security;
mod unsupported;
mod virtual_service;
mod workload;

use std::path::{Path, PathBuf};

use model::MeshConfig;
use model::analyze::{Level, Message, analyze, messages};

/// A small mesh in `default`: the reviews Service (one HTTP port), two
/// versions of its Deployment with their service account, and a
/// DestinationRule with a subset per version.
const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-reviews}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: reviews, image: trellis-sample, ports: [{containerPort: 9080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: reviews, image: trellis-sample, ports: [{containerPort: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn vs_to(name: &str, host: &str, subset: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: {host}, subset: {subset}}}
"#
    )
}

fn gateway(name: &str, selector: &str, port: u32, host: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}}}
spec:
  selector: {{{selector}}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["{host}"]
"#
    )
}

fn gateway_vs(name: &str, host: &str, gateway: &str, prefix: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["{host}"]
  gateways: [{gateway}]
  http:
  - match: [{{uri: {{prefix: "{prefix}"}}}}]
    route:
    - destination: {{host: reviews}}
"#
    )
}

struct Case {
    code: &'static str,
    /// What the finding is about, and a piece of its text.
    resource: &'static str,
    text: &'static str,
    /// Added to BASE: the first must produce the finding, the second must not.
    triggers: String,
    clean: String,
}

/// Every family's cases in one list, for the checks that span them.
fn cases() -> Vec<Case> {
    [
        virtual_service::cases(),
        gateway::cases(),
        destination_rule::cases(),
        security::cases(),
        workload::cases(),
        unsupported::cases(),
        schema::cases(),
        istio_more::cases(),
        istio_fidelity::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn parse(name: &str, yaml: &str) -> Vec<api::Resource> {
    match api::parse(name, yaml) {
        Ok(r) => r,
        Err(e) => panic!("fixture {name} does not parse: {e}\n{yaml}"),
    }
}

fn run(name: &str, extra: &str) -> Vec<Message> {
    let text = if extra.trim().is_empty() {
        BASE.to_string()
    } else {
        format!("{BASE}\n---\n{extra}")
    };
    analyze(&parse(name, &text), &MeshConfig::default())
}

/// Every fixture is valid on its own, except those about invalid
/// resources (IST0106, and IST0165: a reference to an internal Gateway is
/// also an invalid name, for Istio too): a finding must come from its
/// analyzer, not from a fixture's typo.
#[test]
fn fixtures_are_valid_resources() {
    let texts = cases()
        .into_iter()
        .filter(|c| c.code != "IST0106" && c.code != "IST0165")
        .flat_map(|c| [c.triggers, c.clean])
        .chain([BASE.to_string()]);
    for (i, text) in texts.enumerate() {
        for r in parse("fixture", &text) {
            let errors = api::validate(&r);
            assert!(
                errors.is_empty(),
                "fixture {i}: {} is invalid: {errors:?}",
                r.display_name()
            );
        }
    }
}

fn show(messages: &[Message]) -> String {
    messages.iter().map(|m| format!("  {m}\n")).collect()
}

#[test]
fn base_fixture_is_clean() {
    let messages = run("base", "");
    assert!(
        messages.is_empty(),
        "base fixture should analyze clean:\n{}",
        show(&messages)
    );
}

#[test]
fn each_case_triggers_its_message_and_its_variant_does_not() {
    for case in cases() {
        let label = format!("{} {}", case.code, case.text);
        let found = run(&label, &case.triggers);
        assert!(
            found.iter().any(|m| m.code == case.code
                && m.resource == case.resource
                && m.message.contains(case.text)),
            "{label}: expected on {}, got:\n{}",
            case.resource,
            show(&found)
        );
        let clean = run(&label, &case.clean);
        assert!(
            !clean.iter().any(|m| m.code == case.code),
            "{label}: the clean variant still reports it:\n{}",
            show(&clean)
        );
    }
}

#[test]
fn every_code_has_a_case_and_matches_the_catalogue() {
    let cases = cases();
    for ty in messages::ALL {
        assert!(
            cases.iter().any(|c| c.code == ty.code),
            "no test case for {} {}",
            ty.code,
            ty.name
        );
    }
    // Codes, names and levels as istioctl's messages.yaml defines them.
    let istio = [
        ("IST0002", "Deprecated", Level::Warning),
        ("IST0101", "ReferencedResourceNotFound", Level::Error),
        ("IST0102", "NamespaceNotInjected", Level::Info),
        ("IST0103", "PodMissingProxy", Level::Warning),
        ("IST0106", "SchemaValidationError", Level::Error),
        ("IST0107", "MisplacedAnnotation", Level::Warning),
        ("IST0108", "UnknownAnnotation", Level::Warning),
        ("IST0135", "DeprecatedAnnotation", Level::Info),
        (
            "IST0109",
            "ConflictingMeshGatewayVirtualServiceHosts",
            Level::Error,
        ),
        (
            "IST0110",
            "ConflictingSidecarWorkloadSelectors",
            Level::Error,
        ),
        (
            "IST0111",
            "MultipleSidecarsWithoutWorkloadSelectors",
            Level::Error,
        ),
        (
            "IST0112",
            "VirtualServiceDestinationPortSelectorRequired",
            Level::Error,
        ),
        ("IST0113", "MTLSPolicyConflict", Level::Error),
        ("IST0118", "PortNameIsNotUnderNamingConvention", Level::Info),
        ("IST0127", "NoMatchingWorkloadsFound", Level::Warning),
        (
            "IST0128",
            "NoServerCertificateVerificationDestinationLevel",
            Level::Warning,
        ),
        (
            "IST0129",
            "NoServerCertificateVerificationPortLevel",
            Level::Warning,
        ),
        ("IST0134", "ServiceEntryAddressesRequired", Level::Warning),
        (
            "IST0159",
            "ConflictingTelemetryWorkloadSelectors",
            Level::Error,
        ),
        (
            "IST0160",
            "MultipleTelemetriesWithoutWorkloadSelectors",
            Level::Error,
        ),
        (
            "IST0132",
            "VirtualServiceHostNotFoundInGateway",
            Level::Warning,
        ),
        ("IST0145", "ConflictingGateways", Level::Error),
        ("IST0130", "VirtualServiceUnreachableRule", Level::Warning),
        ("IST0131", "VirtualServiceIneffectiveMatch", Level::Info),
        ("IST0133", "SchemaWarning", Level::Warning),
        ("IST0138", "GatewayDuplicateCertificate", Level::Warning),
        (
            "IST0151",
            "EnvoyFilterUsesRelativeOperation",
            Level::Warning,
        ),
        (
            "IST0152",
            "EnvoyFilterUsesReplaceOperationIncorrectly",
            Level::Error,
        ),
        (
            "IST0153",
            "EnvoyFilterUsesAddOperationIncorrectly",
            Level::Error,
        ),
        (
            "IST0154",
            "EnvoyFilterUsesRemoveOperationIncorrectly",
            Level::Error,
        ),
        (
            "IST0155",
            "EnvoyFilterUsesRelativeOperationWithProxyVersion",
            Level::Warning,
        ),
        ("IST0157", "InvalidTelemetryProvider", Level::Warning),
        ("IST0165", "ReferencedInternalGateway", Level::Warning),
        (
            "IST0150",
            "ExternalNameServiceTypeInvalidPortName",
            Level::Warning,
        ),
        ("IST0162", "GatewayPortNotDefinedOnService", Level::Warning),
        (
            "IST0173",
            "DestinationRuleSubsetNotSelectPods",
            Level::Error,
        ),
        ("IST0174", "UnknownDestinationRuleHost", Level::Warning),
        ("IST0177", "ConflictingServiceEntryProtocol", Level::Warning),
    ];
    for (code, name, level) in istio {
        let ty = messages::ALL.iter().find(|t| t.code == code);
        assert_eq!(ty.map(|t| (t.name, t.level)), Some((name, level)), "{code}");
    }
    for m in run(
        "all",
        &cases
            .iter()
            .map(|c| c.triggers.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    ) {
        let ty = messages::ALL.iter().find(|t| t.code == m.code);
        assert_eq!(
            ty.map(|t| (t.name, t.level)),
            Some((m.name, m.level)),
            "{m}"
        );
    }
}

#[test]
fn log_line_is_istioctls() {
    let found = run("log", &vs_to("reviews", "reviews", "v4"));
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        lines.contains(
            &r#"Error [IST0101] (VirtualService reviews.default) Referenced host+subset in destinationrule not found: "reviews+v4""#
                .to_string()
        ),
        "{lines:?}"
    );
}

#[test]
fn output_is_sorted_deduplicated_and_deterministic() {
    let all = cases()
        .iter()
        .map(|c| c.triggers.clone())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let first = run("all", &all);
    let second = run("all", &all);
    assert_eq!(first, second);
    let mut sorted = first.clone();
    sorted
        .sort_by(|a, b| (&a.resource, a.code, &a.message).cmp(&(&b.resource, b.code, &b.message)));
    sorted.dedup();
    assert_eq!(first, sorted);

    // The same subset referenced twice is one finding, as in istioctl.
    let twice = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - route: [{destination: {host: reviews, subset: v9}}]
"#;
    let found = run("twice", twice);
    assert_eq!(
        found.iter().filter(|m| m.code == "IST0101").count(),
        1,
        "{}",
        show(&found)
    );
}

#[test]
fn odd_but_valid_input_does_not_panic() {
    let odd = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: empty}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bare}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: istio-system}
spec: {host: "*.local", trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: idle}
spec:
  replicas: 0
  selector: {matchLabels: {app: idle}}
  template: {metadata: {labels: {app: idle}}, spec: {containers: [{name: idle, image: idle}]}}
"#;
    let found = analyze(&parse("odd", odd), &MeshConfig::default());
    // A mesh-wide DISABLE rule against a mesh-wide STRICT policy breaks every call.
    assert!(
        found
            .iter()
            .any(|m| m.code == "IST0113" && m.resource == "DestinationRule wildcard.istio-system"),
        "{}",
        show(&found)
    );
    assert!(analyze(&[], &MeshConfig::default()).is_empty());
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn parse_file(path: &Path) -> Vec<api::Resource> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&path.display().to_string(), &text)
}

#[test]
fn bookinfo_example_has_no_broken_references() {
    let mut resources = Vec::new();
    for f in [
        "examples/bookinfo/bookinfo.yaml",
        "examples/bookinfo/bookinfo-gateway.yaml",
        "examples/bookinfo/networking/destination-rule-all.yaml",
        "examples/bookinfo/networking/virtual-service-all-v1.yaml",
    ] {
        resources.extend(parse_file(&repo_path(f)));
    }
    let found = analyze(&resources, &MeshConfig::default());
    // Istio's destination-rule-all.yaml names subsets (ratings v2-mysql, ...)
    // whose Deployments Bookinfo does not run; istioctl reports those
    // (IST0173) too. Everything else must be clean.
    let unexpected: Vec<&Message> = found.iter().filter(|m| m.code != "IST0173").collect();
    assert!(
        unexpected.is_empty(),
        "{}",
        unexpected
            .iter()
            .map(|m| format!("  {m}\n"))
            .collect::<String>()
    );
}

#[test]
fn every_seed_analyzes_together_and_alone() {
    let dir = repo_path("../shared/seeds/yaml");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    let mut all = Vec::new();
    for f in &files {
        let resources = parse_file(f);
        // Alone: no panic is the whole requirement.
        analyze(&resources, &MeshConfig::default());
        all.extend(resources);
    }
    let found = analyze(&all, &MeshConfig::default());
    let kinds_reported = |code: &str, kind: &str| {
        found
            .iter()
            .any(|m| m.code == code && m.resource.starts_with(&format!("{kind} ")))
    };
    // The seed's global rate limit filter is translated, but alone (no
    // rate_limits actions, its cluster undefined) it limits nothing: said.
    assert!(kinds_reported("TRL0005", "EnvoyFilter"), "{}", show(&found));
    assert!(
        kinds_reported("TRL0004", "IstioOperator"),
        "{}",
        show(&found)
    );
    let envoy_filter = found
        .iter()
        .find(|m| m.code == "TRL0005" && m.resource.starts_with("EnvoyFilter "));
    assert!(
        envoy_filter.is_some_and(|m| m.message.contains("limits nothing")),
        "the seed's EnvoyFilter should say it limits nothing alone: {envoy_filter:?}"
    );
}
