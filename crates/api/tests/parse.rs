//! Parsing: document handling, formats, and the quality of error messages.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::{Kind, ParseError, Resource, parse};

fn err(text: &str) -> ParseError {
    match parse("test.yaml", text) {
        Ok(rs) => panic!("expected an error, parsed {rs:?}"),
        Err(e) => e,
    }
}

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: bookinfo\n";

#[test]
fn error_display_names_file_document_resource_and_field() {
    let text = format!(
        "{VS_HEAD}spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n      weight: x\n"
    );
    let text = format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\n# only a comment\n---\n{text}"
    );
    let e = err(&text);
    assert_eq!(e.source, "test.yaml");
    assert_eq!(
        e.document, 3,
        "empty documents still count, so numbers match the file"
    );
    assert_eq!(e.kind.as_deref(), Some("VirtualService"));
    assert_eq!(e.name.as_deref(), Some("reviews"));
    assert_eq!(e.path, "spec.http[0].route[0].weight");
    assert_eq!(
        e.to_string(),
        "test.yaml: document 3 (VirtualService reviews): spec.http[0].route[0].weight: invalid type: string \"x\", expected i32"
    );
}

#[test]
fn unknown_fields_suggest_the_closest_name() {
    let cases = [
        (
            "spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subet: v1}\n",
            "spec.http[0].route[0].destination.subet",
            "unknown field `subet`, did you mean `subset`?",
        ),
        (
            "spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weigth: 5\n",
            "spec.http[0].route[0].weigth",
            "unknown field `weigth`, did you mean `weight`?",
        ),
        (
            "spec:\n  host: [a]\n",
            "spec.host",
            "unknown field `host`, did you mean `hosts`?",
        ),
        (
            "spec:\n  hosts: [a]\n  http:\n  - retries: {per_try_timeout: 1s}\n",
            "spec.http[0].retries.per_try_timeout",
            "unknown field `per_try_timeout`, did you mean `perTryTimeout`?",
        ),
        (
            "spec:\n  hosts: [a]\n  http:\n  - match: [{uri: {exakt: /a}}]\n",
            "spec.http[0].match[0].uri.exakt",
            "unknown field `exakt`, did you mean `exact`?",
        ),
        (
            "spex: {}\n",
            "spex",
            "unknown field `spex`, did you mean `spec`?",
        ),
    ];
    for (spec, path, message) in cases {
        let e = err(&format!("{VS_HEAD}{spec}"));
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            (path, message),
            "{spec}"
        );
    }
    // Nothing close: list what is allowed instead of guessing.
    let e = err(&format!("{VS_HEAD}spec:\n  frobnicate: 1\n"));
    assert_eq!(e.path, "spec.frobnicate");
    assert!(
        e.message
            .starts_with("unknown field `frobnicate`, expected one of `hosts`"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_enum_values_suggest_too() {
    let text = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBBIN}\n";
    let e = err(text);
    assert_eq!(e.path, "spec.trafficPolicy.loadBalancer.simple");
    assert_eq!(
        e.message,
        "unknown value `ROUND_ROBBIN`, did you mean `ROUND_ROBIN`?"
    );
    let text = text.replace("ROUND_ROBBIN", "round_robin");
    assert_eq!(
        err(&text).message,
        "unknown value `round_robin`, did you mean `ROUND_ROBIN`?"
    );
}

#[test]
fn bad_durations_are_reported_with_their_path() {
    let e = err(&format!(
        "{VS_HEAD}spec:\n  hosts: [a]\n  http:\n  - timeout: 5 seconds\n    route: [{{destination: {{host: a}}}}]\n"
    ));
    assert_eq!(e.path, "spec.http[0].timeout");
    assert!(
        e.message.contains("invalid duration `5 seconds`"),
        "{}",
        e.message
    );
    let e = err(&format!(
        "{VS_HEAD}spec:\n  hosts: [a]\n  http:\n  - timeout: -1s\n    route: [{{destination: {{host: a}}}}]\n"
    ));
    assert!(e.message.contains("negative"), "{}", e.message);
}

#[test]
fn protobuf_json_leniency() {
    // Integers as strings, enums as numbers, durations in Go form, numeric
    // map keys written as strings: all valid protobuf-JSON or Istio YAML.
    let text = r#"
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  trafficPolicy:
    loadBalancer: {simple: 4}
    connectionPool:
      tcp: {maxConnections: "100", connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 10.0}
    outlierDetection: {consecutive5xxErrors: "7", interval: 1m30s, baseEjectionTime: 0.5s}
"#;
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let Resource::DestinationRule(dr) = &rs[0] else {
        panic!()
    };
    let tp = dr.spec.traffic_policy.as_ref().expect("policy");
    assert_eq!(
        tp.load_balancer.as_ref().and_then(|l| l.simple),
        Some(api::networking::SimpleLb::RoundRobin)
    );
    let pool = tp.connection_pool.as_ref().expect("pool");
    assert_eq!(pool.tcp.as_ref().and_then(|t| t.max_connections), Some(100));
    assert_eq!(
        pool.tcp
            .as_ref()
            .and_then(|t| t.connect_timeout)
            .map(|d| d.as_std().as_millis()),
        Some(250)
    );
    assert_eq!(
        pool.http
            .as_ref()
            .and_then(|h| h.http1_max_pending_requests),
        Some(10)
    );
    let od = tp.outlier_detection.as_ref().expect("od");
    assert_eq!(od.consecutive_5xx_errors, Some(7));
    assert_eq!(od.interval.map(|d| d.as_std().as_secs()), Some(90));
    // Serialised back in canonical protobuf form.
    let yaml = rs[0].to_yaml();
    assert!(yaml.contains("simple: ROUND_ROBIN"), "{yaml}");
    assert!(yaml.contains("connectTimeout: 0.250s"), "{yaml}");
    assert!(yaml.contains("interval: 90s"), "{yaml}");

    let pa = r#"{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"p","namespace":"x"},
      "spec":{"selector":{"matchLabels":{"app":"a"}},"portLevelMtls":{"8080":{"mode":"DISABLE"}}}}"#;
    let rs = parse("pa.json", pa).unwrap_or_else(|e| panic!("{e}"));
    let Resource::PeerAuthentication(pa) = &rs[0] else {
        panic!()
    };
    assert_eq!(
        pa.spec
            .port_level_mtls
            .as_ref()
            .and_then(|p| p.get(&8080))
            .and_then(|m| m.mode),
        Some(api::security::MtlsMode::Disable)
    );
}

#[test]
fn multi_document_yaml_skips_empty_documents() {
    let text = "---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n...\n";
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rs.iter().map(Resource::name).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(
        parse("empty.yaml", "")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert!(
        parse("empty.yaml", "# nothing\n")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
}

#[test]
fn lists_are_flattened() {
    let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: networking.istio.io/v1
  kind: VirtualServiceList
  items:
  - apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: vs}
    spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}
"#;
    let rs = parse("list.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rs.iter().map(Resource::kind).collect::<Vec<_>>(),
        [Kind::Namespace, Kind::VirtualService]
    );
    // Errors inside a list point at the item.
    let bad = text.replace("host: a}}", "host: a}, weight: x}");
    let e = err(&bad);
    assert_eq!(e.path, "items[1].items[0].spec.http[0].route[0].weight");
    assert_eq!(e.kind.as_deref(), Some("VirtualService"));
    assert_eq!(e.name.as_deref(), Some("vs"));
}

#[test]
fn json_objects_and_arrays() {
    let obj = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}"#;
    assert_eq!(parse("a.json", obj).map(|r| r.len()), Ok(1));
    let arr = format!("[{obj}, {}]", obj.replace("\"a\"", "\"b\""));
    let rs = parse("a.json", &arr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rs.iter().map(Resource::name).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let list = format!(r#"{{"apiVersion": "v1", "kind": "List", "items": {arr}}}"#);
    assert_eq!(parse("a.json", &list).map(|r| r.len()), Ok(2));
    // YAML flow mappings also start with `{`.
    assert_eq!(
        parse(
            "a.yaml",
            "{apiVersion: v1, kind: Namespace, metadata: {name: a}}"
        )
        .map(|r| r.len()),
        Ok(1)
    );
    let e = err(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}"#);
    assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
}

#[test]
fn yaml_features_used_in_practice() {
    // Anchors and merge keys (Kubernetes accepts them), `status` from a
    // cluster dump, and extra metadata fields.
    let text = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  uid: 0d8b8d4e-1111-2222-3333-444455556666
  resourceVersion: "12345"
  generation: 3
  creationTimestamp: "2024-01-01T00:00:00Z"
  managedFields: [{manager: kubectl}]
spec:
  hosts: [a]
  http:
  - route:
    - destination: &dest {host: a, subset: v1}
      weight: 50
    - destination:
        <<: *dest
        subset: v2
      weight: 50
status:
  observedGeneration: 3
"#;
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let Resource::VirtualService(vs) = &rs[0] else {
        panic!()
    };
    assert_eq!(vs.spec.http[0].route[1].destination.host, "a");
    assert_eq!(
        vs.spec.http[0].route[1].destination.subset.as_deref(),
        Some("v2")
    );
    assert!(vs.metadata.extra.contains_key("uid"));
    // Metadata extras survive a round trip.
    assert_eq!(parse("rt", &rs[0].to_yaml()).ok(), Some(rs.clone()));
}

#[test]
fn envelope_errors() {
    let e = err("kind: VirtualService\nmetadata: {name: a}\n");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("apiVersion", "missing field `apiVersion`")
    );
    let e = err("apiVersion: v1\nmetadata: {name: a}\n");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("kind", "missing field `kind`")
    );
    let e = err("- a\n- b\n");
    assert!(
        e.message.contains("expected a Kubernetes object"),
        "{}",
        e.message
    );
    let e = err("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n");
    assert_eq!(e.path, "apiVersion");
    assert!(
        e.message.contains(
            "networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"
        ),
        "{}",
        e.message
    );
    let e = err(
        "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: a}\n",
    );
    assert_eq!(e.path, "apiVersion");
    let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [unclosed\n");
    assert_eq!(e.document, 2);
    assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    assert!(
        e.to_string()
            .starts_with("test.yaml: document 2: invalid YAML"),
        "{e}"
    );
    // Kubernetes kinds get paths too.
    let e =
        err("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: many}\n");
    assert_eq!(
        (e.path.as_str(), e.kind.as_deref()),
        ("spec.replicas", Some("Deployment"))
    );
}

#[test]
fn all_api_versions_of_each_istio_kind_are_accepted() {
    for kind in Kind::ALL.iter().filter(|k| k.is_istio()) {
        for version in kind.api_versions() {
            let text =
                format!("apiVersion: {version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n");
            let rs = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rs[0].kind(), *kind);
            assert_eq!(rs[0].api_version(), version);
        }
    }
}

#[test]
fn unsupported_kinds_are_kept_with_a_reason() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns}\nspec: {gatewayClassName: istio}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let reasons: Vec<(&str, &str, Option<&str>, String)> = rs
        .iter()
        .map(|r| match r {
            Resource::Unsupported {
                kind,
                name,
                namespace,
                reason,
                ..
            } => (
                kind.as_str(),
                name.as_str(),
                namespace.as_deref(),
                reason.clone(),
            ),
            other => panic!("expected unsupported, got {other:?}"),
        })
        .collect();
    assert_eq!(reasons[0].0, "Gateway");
    assert_eq!(reasons[0].2, Some("ns"));
    assert!(reasons[0].3.contains("Gateway API"), "{}", reasons[0].3);
    assert!(reasons[1].3.contains("not used"), "{}", reasons[1].3);
    assert_eq!(reasons[2].3, "unknown kind");
    assert_eq!(rs[0].kind_name(), "Gateway");
    assert_eq!(rs[0].kind(), Kind::Unsupported);
    assert!(api::validate(&rs[0]).is_empty());
}

#[test]
fn accessors() {
    let text = format!(
        "{VS_HEAD}  labels: {{app: reviews}}\nspec: {{hosts: [a], http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: n, labels: {{x: y}}}}\nspec: {{ports: [{{port: 80}}]}}\n"
    );
    let mut rs = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs[0].kind(), Kind::VirtualService);
    assert_eq!(rs[0].kind_name(), "VirtualService");
    assert_eq!(rs[0].name(), "reviews");
    assert_eq!(rs[0].namespace(), Some("bookinfo"));
    assert_eq!(
        rs[0].labels().get("app").map(String::as_str),
        Some("reviews")
    );
    assert_eq!(rs[0].display_name(), "VirtualService/bookinfo/reviews");
    assert_eq!(rs[1].kind(), Kind::Service);
    assert_eq!(rs[1].labels().get("x").map(String::as_str), Some("y"));
    assert_eq!(rs[1].api_version(), "v1");
    rs[1].set_namespace("other");
    assert_eq!(rs[1].namespace(), Some("other"));
    let json = rs[0].to_json();
    assert_eq!(json["apiVersion"], "networking.istio.io/v1");
    assert_eq!(json["spec"]["hosts"][0], "a");
    assert_eq!(json["metadata"]["labels"]["app"], "reviews");
}

#[test]
fn parse_value_decodes_one_object() {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
    let r = api::parse_value("watch", v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.kind(), r.name()), (Kind::Namespace, "a"));
}

#[test]
fn kind_parse_accepts_kubectl_names() {
    assert_eq!(Kind::parse("vs"), Some(Kind::VirtualService));
    assert_eq!(Kind::parse("virtualservices"), Some(Kind::VirtualService));
    assert_eq!(Kind::parse("svc"), Some(Kind::Service));
    assert_eq!(Kind::parse("po"), Some(Kind::Pod));
    assert_eq!(Kind::parse("nope"), None);
    assert_eq!("dr".parse::<Kind>(), Ok(Kind::DestinationRule));
    assert_eq!(Kind::AuthorizationPolicy.to_string(), "AuthorizationPolicy");
}

#[test]
fn kubernetes_kinds_reject_unknown_fields() {
    let e = err(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containerz: [{name: c, image: i}]\n",
    );
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        (
            "spec.template.spec.containerz",
            "unknown field `containerz`"
        )
    );
    let e = err(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, targetport: 8080}]\n",
    );
    assert_eq!(e.path, "spec.ports[0].targetport");
}

#[test]
fn realistic_kubernetes_objects_have_no_false_unknown_fields() {
    // Shapes as `kubectl get -o yaml` prints them, with server-set fields.
    let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  uid: 6f1c1b2a-0000-4000-8000-000000000000
  resourceVersion: "4242"
  generation: 2
  creationTimestamp: "2024-05-01T10:00:00Z"
  annotations: {deployment.kubernetes.io/revision: "2"}
spec:
  replicas: 2
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: web, version: v1}
      annotations: {sidecar.istio.io/inject: "true"}
    spec:
      serviceAccountName: web
      terminationGracePeriodSeconds: 30
      securityContext: {runAsNonRoot: true, fsGroup: 2000}
      tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
              topologyKey: kubernetes.io/hostname
      containers:
      - name: web
        image: example/web:1.2.3
        command: [/bin/web]
        args: [--port, "8080"]
        env:
        - {name: MODE, value: prod}
        - name: POD_IP
          valueFrom: {fieldRef: {apiVersion: v1, fieldPath: status.podIP}}
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
        ports: [{name: http, containerPort: 8080, protocol: TCP}]
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: "1", memory: 1Gi}
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 5}
        livenessProbe: {tcpSocket: {port: 8080}, initialDelaySeconds: 10}
        volumeMounts: [{name: config, mountPath: /etc/web, readOnly: true}]
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
      volumes:
      - name: config
        configMap: {name: web-config, items: [{key: web.yaml, path: web.yaml}]}
status:
  observedGeneration: 2
  replicas: 2
  conditions: [{type: Available, status: "True", lastUpdateTime: "2024-05-01T10:01:00Z", lastTransitionTime: "2024-05-01T10:01:00Z", reason: MinimumReplicasAvailable, message: ok}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.12
  clusterIPs: [10.96.0.12]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  sessionAffinity: None
  internalTrafficPolicy: Cluster
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP, appProtocol: http}]
status: {loadBalancer: {}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: web}
  ownerReferences: [{apiVersion: v1, kind: Service, name: web, uid: 1b2c, controller: true, blockOwnerDeletion: true}]
addressType: IPv4
endpoints:
- addresses: [10.244.0.7]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: kind-control-plane
  zone: us-east-1a
  targetRef: {kind: Pod, name: web-5d9c, namespace: shop, uid: 9a8b}
ports: [{name: http, port: 8080, protocol: TCP}]
"#;
    let rs = parse("cluster.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.len(), 3);
    for r in &rs {
        assert!(
            api::validate(r).is_empty(),
            "{}: {:?}",
            r.display_name(),
            api::validate(r)
        );
        assert_eq!(
            parse("rt", &r.to_yaml()).ok(),
            Some(vec![r.clone()]),
            "{}",
            r.display_name()
        );
    }
}

/// A ServiceEntry's endpoints with equal labels hold one copy of them (a
/// label map is a B-tree node of ~540 bytes however few its labels); an
/// endpoint with other labels keeps its own.
#[test]
fn endpoints_with_equal_labels_share_them() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: ns}\nspec:\n  hosts: [svc.example]\n  resolution: STATIC\n  ports: [{name: http, number: 80}]\n  endpoints:\n  - {address: 10.0.0.1, labels: {app: svc, version: v1}}\n  - {address: 10.0.0.2, labels: {app: svc, version: v1}}\n  - {address: 10.0.0.3, labels: {app: svc, version: v2}}\n  - {address: 10.0.0.4, labels: {app: svc, version: v2}}\n";
    let Resource::ServiceEntry(se) = parse("test.yaml", text).unwrap().remove(0) else {
        panic!("a ServiceEntry");
    };
    let labels: Vec<_> = se.spec.endpoints.iter().map(|e| &e.labels).collect();
    assert!(std::sync::Arc::ptr_eq(labels[0], labels[1]));
    assert!(!std::sync::Arc::ptr_eq(labels[1], labels[2]));
    assert!(std::sync::Arc::ptr_eq(labels[2], labels[3]));
    assert_eq!(labels[3].get("version").map(String::as_str), Some("v2"));
    // Written as they were read.
    let written = serde_json::to_value(&se.spec.endpoints[0]).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"address": "10.0.0.1", "labels": {"app": "svc", "version": "v1"}})
    );
}
