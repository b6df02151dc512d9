//! `model::analyze`: one case per message code, each with a fixture that
//! triggers it and a close variant that does not, plus whole-input checks
//! (the Bookinfo example, every seed snippet, determinism).

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

/// An HTTPS server on the default ingress gateway: its Secret belongs in
/// the gateway's namespace (istio-system), not the Gateway's.
fn https_gateway(secret: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: SIMPLE, credentialName: bookinfo-credential}}
    hosts: [bookinfo.example.com]
---
{secret}"#
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

fn namespace_with_workload(labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: legacy, labels: {{{labels}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: batch, namespace: legacy}}
spec:
  selector: {{matchLabels: {{app: batch}}}}
  template:
    metadata: {{labels: {{app: batch}}}}
    spec:
      containers: [{{name: batch, image: batch}}]
"#
    )
}

fn pod(annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1-abc, labels: {{app: reviews, version: v1}}, annotations: {{{annotations}}}}}
spec:
  containers: [{{name: reviews, image: reviews}}]
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

fn service_port(name: &str, service_type: &str) -> String {
    let external = if service_type == "ExternalName" {
        "externalName: web.example.com"
    } else {
        ""
    };
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: {service_type}
  {external}
  ports: [{{name: "{name}", port: 80, targetPort: 8080}}]
"#
    )
}

fn sidecar(name: &str, selector: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}}}
spec:
  {selector}
  egress: [{{hosts: ["./*"]}}]
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

struct Case {
    code: &'static str,
    /// What the finding is about, and a piece of its text.
    resource: &'static str,
    text: &'static str,
    /// Added to BASE: the first must produce the finding, the second must not.
    triggers: String,
    clean: String,
}

fn cases() -> Vec<Case> {
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
            resource: "Gateway egress.default",
            text: r#"Referenced selector not found: "istio=egressgateway""#,
            triggers: gateway("egress", "istio: egressgateway", 80, "*"),
            // The built-in ingress gateway is always there.
            clean: gateway("egress", "istio: ingressgateway", 80, "*"),
        },
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
            code: "IST0101",
            resource: "VirtualService api.default",
            text: r#"Referenced host:port not found: "api:7070""#,
            triggers: two_port_service_vs(", port: {number: 7070}"),
            clean: two_port_service_vs(", port: {number: 9090}"),
        },
        Case {
            code: "IST0102",
            resource: "Namespace legacy",
            text: "The namespace is not enabled for Istio injection. Run 'kubectl label namespace legacy istio-injection=enabled'",
            triggers: namespace_with_workload("istio-injection: disabled"),
            clean: namespace_with_workload("team: batch"),
        },
        Case {
            code: "IST0103",
            resource: "Pod reviews-v1-abc.default",
            text: "The pod default/reviews-v1-abc is missing the Istio proxy.",
            triggers: pod(""),
            clean: pod(r#"sidecar.istio.io/status: "{}""#),
        },
        Case {
            code: "IST0109",
            resource: "VirtualService reviews-b.default",
            text: "The VirtualServices default/reviews-a,default/reviews-b associated with mesh gateway define the same host */reviews.default.svc.cluster.local",
            triggers: vs_to("reviews-a", "reviews", "v1") + "---" + &vs_to("reviews-b", "reviews", "v2"),
            clean: vs_to("reviews-a", "reviews", "v1"),
        },
        Case {
            code: "IST0110",
            resource: "Sidecar narrow-b.default",
            text: r#"The Sidecars [narrow-a narrow-b] in namespace "default" select the same workload pod "reviews-v1""#,
            triggers: sidecar("narrow-a", "workloadSelector: {labels: {app: reviews}}")
                + "---"
                + &sidecar("narrow-b", "workloadSelector: {labels: {version: v1}}"),
            clean: sidecar("narrow-a", "workloadSelector: {labels: {version: v2}}")
                + "---"
                + &sidecar("narrow-b", "workloadSelector: {labels: {version: v1}}"),
        },
        Case {
            code: "IST0111",
            resource: "Sidecar wide-a.default",
            text: r#"The Sidecars [wide-a wide-b] in namespace "default" have no workload selector"#,
            triggers: sidecar("wide-a", "") + "---" + &sidecar("wide-b", ""),
            clean: sidecar("wide-a", "") + "---" + &sidecar("wide-b", "workloadSelector: {labels: {app: reviews}}"),
        },
        Case {
            code: "IST0112",
            resource: "VirtualService api.default",
            text: r#"This VirtualService routes to a service "api" that exposes multiple ports [8080 9090]."#,
            triggers: two_port_service_vs(""),
            clean: two_port_service_vs(", port: {number: 8080}"),
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
            code: "IST0118",
            resource: "Service web.default",
            text: "Port name web (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.",
            triggers: service_port("web", "ClusterIP"),
            clean: service_port("http-web", "ClusterIP"),
        },
        Case {
            code: "IST0127",
            resource: "AuthorizationPolicy reviews-viewer.default",
            text: "No matching workloads for this resource with the following labels: app=ratings",
            triggers: authz_selecting("app: ratings"),
            clean: authz_selecting("app: reviews"),
        },
        Case {
            code: "IST0132",
            resource: "VirtualService front.default",
            text: "one or more host [bookinfo.example.com] defined in VirtualService default/front not found in Gateway default/front-gateway.",
            triggers: gateway_vs("front", "bookinfo.example.com", "front-gateway", "/")
                + "---"
                + &gateway("front-gateway", "istio: ingressgateway", 80, "shop.example.com"),
            clean: gateway_vs("front", "bookinfo.example.com", "front-gateway", "/")
                + "---"
                + &gateway("front-gateway", "istio: ingressgateway", 80, "*.example.com"),
        },
        Case {
            code: "IST0145",
            resource: "Gateway gw-b.default",
            text: "Conflict with gateways default/gw-a (workload selector app=istio-ingressgateway,istio=ingressgateway, port 80, hosts bookinfo.example.com).",
            triggers: gateway("gw-a", "istio: ingressgateway, app: istio-ingressgateway", 80, "*.example.com")
                + "---"
                + &gateway("gw-b", "app: istio-ingressgateway, istio: ingressgateway", 80, "bookinfo.example.com"),
            clean: gateway("gw-a", "istio: ingressgateway, app: istio-ingressgateway", 80, "shop.example.com")
                + "---"
                + &gateway("gw-b", "app: istio-ingressgateway, istio: ingressgateway", 80, "bookinfo.example.com"),
        },
        Case {
            code: "IST0101",
            resource: "Gateway secure.default",
            text: r#"Referenced credentialName not found: "bookinfo-credential""#,
            triggers: https_gateway(""),
            clean: https_gateway(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: bookinfo-credential, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: C, tls.key: K}\n",
            ),
        },
        Case {
            code: "IST0150",
            resource: "Service web.default",
            text: "Port name for ExternalName service is invalid.",
            triggers: service_port("tcp", "ExternalName"),
            clean: service_port("https", "ExternalName"),
        },
        Case {
            code: "IST0162",
            resource: "Gateway internal.default",
            text: "The gateway is listening on a target port (port 8080) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway).",
            triggers: gateway("internal", "istio: ingressgateway", 8080, "*"),
            clean: gateway("internal", "istio: ingressgateway", 443, "*"),
        },
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
            code: "TRL0001",
            resource: "EnvoyFilter ratelimit.istio-system",
            text: "EnvoyFilter is not supported by Trellis and is ignored: EnvoyFilter patches Envoy's internal configuration",
            triggers: ENVOY_FILTER.into(),
            clean: String::new(),
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
        Case {
            code: "TRL0004",
            resource: "IstioOperator control-plane.istio-system",
            text: "IstioOperator is ignored by Trellis: IstioOperator configures istioctl's installer",
            triggers: ISTIO_OPERATOR.into(),
            clean: String::new(),
        },
    ]
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
    let resources = parse(name, &text);
    for r in &resources {
        let errors = api::validate(r);
        assert!(
            errors.is_empty(),
            "fixture {name}: {} is invalid: {errors:?}",
            r.display_name()
        );
    }
    analyze(&resources, &MeshConfig::default())
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
        ("IST0101", "ReferencedResourceNotFound", Level::Error),
        ("IST0102", "NamespaceNotInjected", Level::Info),
        ("IST0103", "PodMissingProxy", Level::Warning),
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
            "IST0132",
            "VirtualServiceHostNotFoundInGateway",
            Level::Warning,
        ),
        ("IST0145", "ConflictingGateways", Level::Error),
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
    assert!(kinds_reported("TRL0001", "EnvoyFilter"), "{}", show(&found));
    assert!(
        kinds_reported("TRL0004", "IstioOperator"),
        "{}",
        show(&found)
    );
    let envoy_filter = found.iter().find(|m| m.code == "TRL0001");
    assert!(
        envoy_filter.is_some_and(|m| m.message.contains("Use instead")),
        "EnvoyFilter should come with an alternative: {envoy_filter:?}"
    );
}
