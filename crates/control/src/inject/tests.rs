use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::*;

fn pod(meta: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{
            "name": "app",
            "image": "app:1",
            "ports": [{"name": "http", "containerPort": 9080}],
            "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": 9080}},
            "startupProbe": {"exec": {"command": ["true"]}},
        }]},
    }))
    .unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn decision_follows_istio_policy() {
    let enabled = labels(&[("istio-injection", "enabled")]);
    let disabled = labels(&[("istio-injection", "disabled")]);
    let rev_default = labels(&[("istio.io/rev", "default")]);
    let rev_canary = labels(&[("istio.io/rev", "canary")]);
    let both = labels(&[("istio-injection", "enabled"), ("istio.io/rev", "canary")]);
    let none = labels(&[]);
    type Case<'a> = (&'a str, Value, &'a BTreeMap<String, String>, Policy, bool);
    let cases: &[Case<'_>] = &[
        (
            "labelled namespace",
            json!({"name": "p"}),
            &enabled,
            Policy::Enabled,
            true,
        ),
        (
            "namespace disabled",
            json!({"name": "p"}),
            &disabled,
            Policy::Enabled,
            false,
        ),
        (
            "disabled even if the pod asks",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "true"}}),
            &disabled,
            Policy::Enabled,
            false,
        ),
        (
            "revision label of ours",
            json!({"name": "p"}),
            &rev_default,
            Policy::Enabled,
            true,
        ),
        (
            "revision label of another",
            json!({"name": "p"}),
            &rev_canary,
            Policy::Enabled,
            false,
        ),
        (
            "istio-injection wins over istio.io/rev",
            json!({"name": "p"}),
            &both,
            Policy::Enabled,
            true,
        ),
        (
            "unlabelled namespace",
            json!({"name": "p"}),
            &none,
            Policy::Enabled,
            false,
        ),
        (
            "unlabelled namespace, pod asks by label",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "true"}}),
            &none,
            Policy::Enabled,
            true,
        ),
        (
            "unlabelled namespace, pod names our revision",
            json!({"name": "p", "labels": {"istio.io/rev": "default"}}),
            &none,
            Policy::Enabled,
            true,
        ),
        (
            "pod label false",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "false"}}),
            &enabled,
            Policy::Enabled,
            false,
        ),
        (
            "pod annotation false",
            json!({"name": "p", "annotations": {"sidecar.istio.io/inject": "false"}}),
            &enabled,
            Policy::Enabled,
            false,
        ),
        (
            "label wins over annotation",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "true"}, "annotations": {"sidecar.istio.io/inject": "false"}}),
            &enabled,
            Policy::Enabled,
            true,
        ),
        (
            "anything but yes is no",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "nope"}}),
            &enabled,
            Policy::Enabled,
            false,
        ),
        (
            "YES is yes",
            json!({"name": "p", "labels": {"sidecar.istio.io/inject": "Yes"}}),
            &enabled,
            Policy::Disabled,
            true,
        ),
        (
            "policy disabled, pod silent",
            json!({"name": "p"}),
            &enabled,
            Policy::Disabled,
            false,
        ),
        (
            "injected already",
            json!({"name": "p", "annotations": {"sidecar.istio.io/status": "{}"}}),
            &enabled,
            Policy::Enabled,
            false,
        ),
    ];
    for (what, meta, ns, policy, want) in cases {
        let p = pod(meta.clone());
        let got = decide(
            &p,
            Scope::Namespace {
                name: "shop",
                labels: ns,
            },
            *policy,
            "default",
        );
        assert_eq!(got == Decision::Inject, *want, "{what}: {got:?}");
    }
    let mut host = pod(json!({"name": "h"}));
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_ne!(
        decide(&host, Scope::Chosen, Policy::Enabled, "default"),
        Decision::Inject
    );
    let system = pod(json!({"name": "p"}));
    assert_ne!(
        decide(
            &system,
            Scope::Namespace {
                name: "kube-system",
                labels: &enabled
            },
            Policy::Enabled,
            "default"
        ),
        Decision::Inject
    );
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn proxy_of(p: &Pod) -> &Container {
    let spec = p.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .expect("istio-proxy")
}

fn init_of(p: &Pod) -> &Container {
    let spec = p.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == INIT_CONTAINER)
        .expect("istio-init")
}

#[test]
fn native_sidecar_with_token_identity_and_marks() {
    let p = pod(
        json!({"name": "reviews-1", "namespace": "shop", "labels": {"app": "reviews", "version": "v2"}}),
    );
    let out = inject(&p, &Config::default(), None).unwrap();
    let spec = out.pod.spec.as_ref().unwrap();
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, [INIT_CONTAINER, PROXY_CONTAINER]);
    assert_eq!(spec.containers.len(), 1, "the app alone stays a container");
    let proxy = proxy_of(&out.pod);
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some(), "the app waits for the proxy");
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1337), Some(1337)));
    let args = proxy.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains("--token-file /var/run/secrets/tokens/istio-token"),
        "{args}"
    );
    assert!(args.contains("--label app=reviews"), "{args}");
    assert!(args.contains("--workers 2"), "{args}");
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "istio-token")
        .unwrap();
    let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(projection.audience.as_deref(), Some("istio-ca"));
    let mounted = proxy
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "istio-token" && TOKEN_PATH.starts_with(&m.mount_path));
    assert!(mounted);
    let res = proxy.resources.as_ref().unwrap();
    let get = |m: &Option<BTreeMap<String, Quantity>>, k: &str| m.as_ref().unwrap()[k].0.clone();
    assert_eq!(get(&res.requests, "cpu"), "100m");
    assert_eq!(get(&res.requests, "memory"), "128Mi");
    assert_eq!(get(&res.limits, "cpu"), "2000m");
    assert_eq!(get(&res.limits, "memory"), "1024Mi");
    let ann = out.pod.metadata.annotations.as_ref().unwrap();
    assert!(ann.contains_key(STATUS_ANNOTATION));
    assert_eq!(ann["kubectl.kubernetes.io/default-container"], "app");
    assert_eq!(ann["prometheus.io/port"], "15020");
    let l = out.pod.metadata.labels.as_ref().unwrap();
    assert_eq!(l["security.istio.io/tlsMode"], "istio");
    assert_eq!(l["service.istio.io/canonical-name"], "reviews");
    assert_eq!(l["service.istio.io/canonical-revision"], "v2");
    // Idempotent: an injected pod is not injected again.
    assert_ne!(
        decide(&out.pod, Scope::Chosen, Policy::Enabled, "default"),
        Decision::Inject
    );
}

#[test]
fn plain_container_fallback() {
    let p = pod(json!({"name": "p"}));
    let config = Config {
        native_sidecar: false,
        ..Config::default()
    };
    let out = inject(&p, &config, None).unwrap();
    let spec = out.pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers.last().unwrap().name, PROXY_CONTAINER);
    assert!(spec.containers.last().unwrap().restart_policy.is_none());
    assert_eq!(spec.init_containers.as_ref().unwrap().len(), 1);
    // A pod may ask for the other kind.
    let mut p =
        pod(json!({"name": "p", "annotations": {"sidecar.istio.io/nativeSidecar": "true"}}));
    let out = inject(&p, &config, None).unwrap();
    assert_eq!(proxy_of(&out.pod).restart_policy.as_deref(), Some("Always"));
    p.metadata.annotations = Some(labels(&[(
        "proxy.istio.io/config",
        "holdApplicationUntilProxyStarts: true",
    )]));
    let out = inject(&p, &config, None).unwrap();
    assert_eq!(
        out.pod.spec.as_ref().unwrap().containers[0].name,
        PROXY_CONTAINER
    );
}

#[test]
fn probes_go_through_the_status_port() {
    let out = inject(&pod(json!({"name": "p"})), &Config::default(), None).unwrap();
    let app = &out.pod.spec.as_ref().unwrap().containers[0];
    let live = app
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/app-health/app/livez"));
    assert_eq!(live.port, IntOrString::Int(15020));
    assert_eq!(
        app.liveness_probe.as_ref().unwrap().timeout_seconds,
        Some(2)
    );
    let ready = app.readiness_probe.as_ref().unwrap();
    assert!(ready.tcp_socket.is_none());
    assert_eq!(
        ready.http_get.as_ref().unwrap().path.as_deref(),
        Some("/app-health/app/readyz")
    );
    assert!(
        app.startup_probe.as_ref().unwrap().exec.is_some(),
        "exec untouched"
    );
    let probers: Value =
        serde_json::from_str(&env(proxy_of(&out.pod), "ISTIO_KUBE_APP_PROBERS").unwrap()).unwrap();
    assert_eq!(
        probers,
        json!({
            "/app-health/app/livez": {"httpGet": {"path": "/health", "port": 9080, "scheme": "HTTP"}, "timeoutSeconds": 2},
            "/app-health/app/readyz": {"tcpSocket": {"port": 9080}, "timeoutSeconds": 1},
        })
    );
    // Opted out: the probes stay.
    let p = pod(
        json!({"name": "p", "annotations": {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}}),
    );
    let out = inject(&p, &Config::default(), None).unwrap();
    let app = &out.pod.spec.as_ref().unwrap().containers[0];
    assert!(app.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
}

#[test]
fn annotations_shape_the_sidecar() {
    struct Case {
        what: &'static str,
        annotations: &'static [(&'static str, &'static str)],
        init_args: &'static [&'static str],
        proxy_args: &'static [&'static str],
        requests: Option<(&'static str, &'static str)>,
        limits: Option<(&'static str, &'static str)>,
    }
    let cases = [
        Case {
            what: "defaults",
            annotations: &[],
            init_args: &[
                "--includeOutboundIPRanges=*",
                "--excludeOutboundIPRanges=",
                "--includeInboundPorts=*",
                "--excludeInboundPorts=",
                "--excludeOutboundPorts=",
                "--no-dns",
            ],
            proxy_args: &["--status 0.0.0.0:15020"],
            requests: Some(("100m", "128Mi")),
            limits: Some(("2000m", "1024Mi")),
        },
        Case {
            what: "traffic annotations",
            annotations: &[
                (
                    "traffic.sidecar.istio.io/includeOutboundIPRanges",
                    "10.0.0.0/8, 172.16.0.0/12",
                ),
                (
                    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                    "10.96.0.1/32",
                ),
                ("traffic.sidecar.istio.io/includeInboundPorts", "9080,9090"),
                ("traffic.sidecar.istio.io/excludeInboundPorts", "8081"),
                ("traffic.sidecar.istio.io/excludeOutboundPorts", "3306"),
            ],
            init_args: &[
                "--includeOutboundIPRanges=10.0.0.0/8, 172.16.0.0/12",
                "--excludeOutboundIPRanges=10.96.0.1/32",
                "--includeInboundPorts=9080,9090",
                "--excludeInboundPorts=8081",
                "--excludeOutboundPorts=3306",
            ],
            proxy_args: &[],
            requests: Some(("100m", "128Mi")),
            limits: Some(("2000m", "1024Mi")),
        },
        Case {
            what: "status port moved: excluded from capture",
            annotations: &[("status.sidecar.istio.io/port", "15999")],
            init_args: &["--excludeInboundPorts=15999"],
            proxy_args: &["--status 0.0.0.0:15999"],
            requests: Some(("100m", "128Mi")),
            limits: Some(("2000m", "1024Mi")),
        },
        Case {
            what: "resource annotations replace the defaults",
            annotations: &[
                ("sidecar.istio.io/proxyCPU", "50m"),
                ("sidecar.istio.io/proxyMemory", "64Mi"),
                ("sidecar.istio.io/proxyCPULimit", "4"),
            ],
            init_args: &[],
            proxy_args: &["--workers 2"],
            requests: Some(("50m", "64Mi")),
            limits: Some(("4", "")),
        },
        Case {
            what: "requests only",
            annotations: &[("sidecar.istio.io/proxyCPU", "200m")],
            init_args: &[],
            proxy_args: &[],
            requests: Some(("200m", "")),
            limits: None,
        },
        Case {
            what: "concurrency and DNS capture from proxy.istio.io/config",
            annotations: &[(
                "proxy.istio.io/config",
                "concurrency: 3\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n",
            )],
            init_args: &["--includeOutboundIPRanges=*"],
            proxy_args: &["--workers 3"],
            requests: Some(("100m", "128Mi")),
            limits: Some(("2000m", "1024Mi")),
        },
    ];
    for case in cases {
        let p = pod(json!({"name": "p", "annotations": labels(case.annotations)}));
        let out =
            inject(&p, &Config::default(), None).unwrap_or_else(|e| panic!("{}: {e}", case.what));
        let init = init_of(&out.pod).args.as_ref().unwrap().join(" ");
        for want in case.init_args {
            assert!(init.contains(want), "{}: {want} not in {init}", case.what);
        }
        let proxy = proxy_of(&out.pod);
        let args = proxy.args.as_ref().unwrap().join(" ");
        for want in case.proxy_args {
            assert!(args.contains(want), "{}: {want} not in {args}", case.what);
        }
        let res = proxy.resources.as_ref().unwrap();
        let pair = |m: &Option<BTreeMap<String, Quantity>>| {
            m.as_ref().map(|m| {
                let g = |k: &str| m.get(k).map(|q| q.0.clone()).unwrap_or_default();
                (g("cpu"), g("memory"))
            })
        };
        let want = |o: Option<(&str, &str)>| o.map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(pair(&res.requests), want(case.requests), "{}", case.what);
        assert_eq!(pair(&res.limits), want(case.limits), "{}", case.what);
    }
    let dns = pod(
        json!({"name": "p", "annotations": {"proxy.istio.io/config": "proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}"}}),
    );
    let out = inject(&dns, &Config::default(), None).unwrap();
    assert!(
        !init_of(&out.pod)
            .args
            .as_ref()
            .unwrap()
            .contains(&"--no-dns".to_string())
    );
    assert_eq!(
        env(proxy_of(&out.pod), "ISTIO_META_DNS_CAPTURE").as_deref(),
        Some("true")
    );
}

#[test]
fn bad_annotations_are_refused_by_name() {
    let cases = [
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/33",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "ten.0.0.0/8",
        ),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "70000"),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "http"),
        ("traffic.sidecar.istio.io/includeInboundPorts", "0"),
        ("sidecar.istio.io/proxyCPU", "lots"),
        ("sidecar.istio.io/proxyMemoryLimit", "1GB"),
        ("status.sidecar.istio.io/port", "-1"),
        ("proxy.istio.io/config", "concurrency: many"),
        ("sidecar.istio.io/nativeSidecar", "maybe"),
        ("readiness.status.sidecar.istio.io/periodSeconds", "often"),
        ("trellis.dev/discovery", "lazy"),
    ];
    for (key, value) in cases {
        let p = pod(json!({"name": "p", "annotations": {key: value}}));
        let err = inject(&p, &Config::default(), None).unwrap_err();
        assert_eq!(err.annotation, key, "{key}={value}: {err}");
    }
}

#[test]
fn the_discovery_annotation_becomes_the_proxy_flag() {
    let args = |meta: Value| {
        let out = inject(&pod(meta), &Config::default(), None).unwrap();
        proxy_of(&out.pod).args.clone().unwrap()
    };
    let on_demand =
        args(json!({"name": "p", "annotations": {"trellis.dev/discovery": "on-demand"}}));
    let at = on_demand
        .iter()
        .position(|a| a == "--discovery")
        .expect("--discovery");
    assert_eq!(on_demand[at + 1], "on-demand");
    for meta in [
        json!({"name": "p"}),
        json!({"name": "p", "annotations": {"trellis.dev/discovery": "whole"}}),
    ] {
        assert!(!args(meta).contains(&"--discovery".to_string()));
    }
}

#[test]
fn a_namespace_on_demand_applies_to_its_pods_unless_a_pod_says_whole() {
    let config = Config {
        namespace_discovery: Discovery::OnDemand,
        ..Config::default()
    };
    let args = |meta: Value| {
        let out = inject(&pod(meta), &config, None).unwrap();
        proxy_of(&out.pod).args.clone().unwrap()
    };
    let silent = args(json!({"name": "p"}));
    let at = silent
        .iter()
        .position(|a| a == "--discovery")
        .expect("the namespace's on-demand");
    assert_eq!(silent[at + 1], "on-demand");
    let whole = args(json!({"name": "p", "annotations": {"trellis.dev/discovery": "whole"}}));
    assert!(
        !whole.contains(&"--discovery".to_string()),
        "the pod's own wins"
    );
}

#[test]
fn the_discovery_a_namespace_chooses_is_read_from_its_annotations() {
    let of = |v: &str| Discovery::chosen(Some(&labels(&[(DISCOVERY_ANNOTATION, v)])));
    assert_eq!(of("on-demand"), Ok(Some(Discovery::OnDemand)));
    assert_eq!(of("whole"), Ok(Some(Discovery::Whole)));
    assert_eq!(Discovery::chosen(Some(&labels(&[]))), Ok(None));
    assert_eq!(Discovery::chosen(None), Ok(None));
    let err = of("lazy").expect_err("not a choice");
    assert!(err.contains("\"lazy\" is neither"), "{err}");
}

#[test]
fn prometheus_scrapes_the_sidecar_and_remembers_the_app() {
    let p = pod(json!({"name": "p", "annotations": {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}}));
    let out = inject(&p, &Config::default(), None).unwrap();
    let ann = out.pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/port"], "15020");
    assert_eq!(ann["prometheus.io/path"], "/stats/prometheus");
    let saved: Value =
        serde_json::from_str(&env(proxy_of(&out.pod), "ISTIO_PROMETHEUS_ANNOTATIONS").unwrap())
            .unwrap();
    assert_eq!(
        saved,
        json!({"scrape": "true", "port": "9090", "path": "/metrics"})
    );
    // Opted out of scraping: left alone.
    let p = pod(json!({"name": "p", "annotations": {"prometheus.io/scrape": "false"}}));
    let out = inject(&p, &Config::default(), None).unwrap();
    let ann = out.pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "false");
    assert!(!ann.contains_key("prometheus.io/port"));
}

#[test]
fn workload_from_owner() {
    let p = pod(json!({
        "name": "reviews-v1-5d8f-abcde",
        "namespace": "shop",
        "labels": {"pod-template-hash": "5d8f"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5d8f", "uid": "u", "controller": true}],
    }));
    let out = inject(&p, &Config::default(), None).unwrap();
    let proxy = proxy_of(&out.pod);
    assert_eq!(
        env(proxy, "ISTIO_META_WORKLOAD_NAME").as_deref(),
        Some("reviews-v1")
    );
    assert_eq!(
        env(proxy, "ISTIO_META_OWNER").as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v1")
    );
    assert!(
        proxy
            .args
            .as_ref()
            .unwrap()
            .join(" ")
            .contains("--workload-name reviews-v1")
    );
}

#[test]
fn quantities() {
    for ok in ["100m", "1", "0.5", "128Mi", "1Gi", "1e3", "2k", ".5"] {
        assert!(sidecar::is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "1GB", "lots", "1..2", "1e"] {
        assert!(!sidecar::is_quantity(bad), "{bad}");
    }
}

#[test]
fn the_patch_inserts_before_the_pods_own_init_containers() {
    let raw = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "a"}},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "m:1", "futureField": "kept"}],
            "containers": [{"name": "app", "image": "a:1", "futureField": "kept"}],
        },
    });
    let before: Pod = serde_json::from_value(raw.clone()).unwrap();
    let after = inject(&before, &Config::default(), None).unwrap().pod;
    let mut patched = raw.clone();
    json_patch::patch(&mut patched, &patch(&before, &after).unwrap()).unwrap();
    let inits = patched["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<_> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["istio-init", "istio-proxy", "migrate"]);
    assert!(inits[0].get("futureField").is_none(), "{}", inits[0]);
    assert_eq!(inits[2]["futureField"], "kept");
    assert_eq!(patched["spec"]["containers"][0]["futureField"], "kept");
    assert!(patched["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    // Without init containers of its own, the same.
    let raw = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "a:1"}]}});
    let before: Pod = serde_json::from_value(raw.clone()).unwrap();
    let after = inject(&before, &Config::default(), None).unwrap().pod;
    let mut patched = raw;
    json_patch::patch(&mut patched, &patch(&before, &after).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&after).unwrap(), patched);
}

#[test]
fn https_and_grpc_probes_go_through_the_status_port_too() {
    let mut containers: Vec<k8s_openapi::api::core::v1::Container> = serde_json::from_value(json!([{
        "name": "api",
        "ports": [{"name": "https", "containerPort": 8443}],
        "livenessProbe": {"httpGet": {"path": "/live", "port": "https", "scheme": "HTTPS"}, "timeoutSeconds": 3},
        "readinessProbe": {"grpc": {"port": 9090, "service": "shop.Reviews"}},
        "startupProbe": {"grpc": {"port": 9090}, "failureThreshold": 30},
    }]))
    .unwrap();
    let mut warnings = Vec::new();
    let probers = super::probes::rewrite(&mut containers, 15020, &mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        serde_json::to_value(&probers).unwrap(),
        json!({
            "/app-health/api/livez": {"httpGet": {"path": "/live", "port": 8443, "scheme": "HTTPS"}, "timeoutSeconds": 3},
            "/app-health/api/readyz": {"grpc": {"port": 9090, "service": "shop.Reviews"}, "timeoutSeconds": 1},
            "/app-health/api/startupz": {"grpc": {"port": 9090, "service": null}, "timeoutSeconds": 1},
        })
    );
    // The kubelet asks the sidecar in plain HTTP, every kind of probe, and
    // the probes keep their thresholds.
    let c = &containers[0];
    for (probe, path) in [
        (&c.liveness_probe, "/app-health/api/livez"),
        (&c.readiness_probe, "/app-health/api/readyz"),
        (&c.startup_probe, "/app-health/api/startupz"),
    ] {
        let probe = probe.as_ref().unwrap();
        assert!(probe.grpc.is_none());
        let get = probe.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::Int(15020));
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    }
    assert_eq!(
        c.startup_probe.as_ref().unwrap().failure_threshold,
        Some(30)
    );
}
