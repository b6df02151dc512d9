//! AuthorizationPolicy compiled into inbound listeners: which policies apply
//! to a workload, and what each rule becomes on an HTTP and on a TCP port.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use model::{Mesh, MeshConfig, compile};
use wire::pb::{self, ProxyKind};

/// httpbin serves HTTP on 8000, TCP on 9000 and an undeclared port 7000
/// (sniffed: it gets both the HTTP and the TCP form).
const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000}, {name: tcp, port: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-1, namespace: foo, labels: {app: httpbin, version: v1}}
spec:
  serviceAccountName: httpbin
  containers: [{name: c, ports: [{containerPort: 8000}, {containerPort: 9000}, {containerPort: 7000}]}]
status: {podIP: 127.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: gw-1, namespace: foo, labels: {app: gw, gateway.networking.k8s.io/gateway-name: edge}}
spec:
  containers: [{name: c, ports: [{containerPort: 8080}]}]
status: {podIP: 127.1.0.2}
"#;

fn policy(ns: &str, name: &str, spec: &str) -> String {
    let spec = spec.trim_matches('\n');
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

fn listeners(extra: &str, pod: &str) -> Vec<pb::Listener> {
    let mut resources = api::parse("mesh.yaml", MESH).expect("fixture parses");
    if !extra.is_empty() {
        resources.extend(api::parse("policies.yaml", extra).expect("policies parse"));
    }
    let mesh = Mesh::build(&resources, MeshConfig::default());
    let node = pb::Node {
        pod_name: pod.into(),
        namespace: "foo".into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    };
    compile(&mesh, &node).listeners
}

/// A compact, readable form: `ALLOW ns[foo]-policy[x] #0 from(principal=a|b) to(method=GET&path=!/x)`.
fn summary(policies: &[pb::AuthzPolicy]) -> Vec<String> {
    let matcher = |m: &pb::AuthzMatch| {
        let field = pb::AuthzField::try_from(m.field)
            .expect("field")
            .as_str_name()
            .trim_start_matches("AUTHZ_FIELD_")
            .to_lowercase();
        let header = if m.header.is_empty() {
            m.claim.iter().map(|c| format!("[{c}]")).collect()
        } else {
            format!("[{}]", m.header)
        };
        let mut s = format!("{field}{header}=");
        s.push_str(&m.values.join("|"));
        if !m.not_values.is_empty() {
            s.push('!');
            s.push_str(&m.not_values.join("|"));
        }
        s
    };
    let clause = |c: &pb::AuthzClause| c.all.iter().map(matcher).collect::<Vec<_>>().join("&");
    policies
        .iter()
        .map(|p| {
            let action = pb::AuthzAction::try_from(p.action)
                .expect("action")
                .as_str_name()
                .trim_start_matches("AUTHZ_ACTION_");
            let mut s = format!(
                "{action} {}{}",
                p.name,
                if p.dry_run { " (dry-run)" } else { "" }
            );
            for r in &p.rules {
                s.push_str(&format!(" #{}", r.index));
                if !r.from.is_empty() {
                    s.push_str(&format!(
                        " from({})",
                        r.from.iter().map(clause).collect::<Vec<_>>().join(" or ")
                    ));
                }
                if !r.to.is_empty() {
                    s.push_str(&format!(
                        " to({})",
                        r.to.iter().map(clause).collect::<Vec<_>>().join(" or ")
                    ));
                }
                if !r.when.is_empty() {
                    s.push_str(&format!(
                        " when({})",
                        r.when.iter().map(matcher).collect::<Vec<_>>().join("&")
                    ));
                }
            }
            s
        })
        .collect()
}

/// (HTTP form, TCP form) of the listener on `port`.
fn on_port(ls: &[pb::Listener], port: u32) -> (Vec<String>, Vec<String>) {
    let l = ls
        .iter()
        .find(|l| l.port == port)
        .unwrap_or_else(|| panic!("no listener on {port}"));
    (summary(&l.authz_http), summary(&l.authz_tcp))
}

#[test]
fn which_policies_apply() {
    let all = "  rules: [{}]";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("no policy", String::new(), vec![]),
        (
            "namespace-wide",
            policy("foo", "a", all),
            vec!["ALLOW ns[foo]-policy[a] #0"],
        ),
        (
            "root namespace is mesh-wide",
            policy("istio-system", "a", all),
            vec!["ALLOW ns[istio-system]-policy[a] #0"],
        ),
        ("another namespace's", policy("bar", "a", all), vec![]),
        (
            "selector picks the workload",
            policy(
                "foo",
                "a",
                "  selector: {matchLabels: {app: httpbin}}\n  rules: [{}]",
            ),
            vec!["ALLOW ns[foo]-policy[a] #0"],
        ),
        (
            "selector for others",
            policy(
                "foo",
                "a",
                "  selector: {matchLabels: {app: other}}\n  rules: [{}]",
            ),
            vec![],
        ),
        (
            "root-namespace selector selects in every namespace",
            policy(
                "istio-system",
                "a",
                "  selector: {matchLabels: {app: httpbin}}\n  rules: [{}]",
            ),
            vec!["ALLOW ns[istio-system]-policy[a] #0"],
        ),
        (
            "targetRef to a Service is for waypoints, not sidecars",
            policy(
                "foo",
                "a",
                "  targetRef: {kind: Service, group: \"\", name: httpbin}\n  rules: [{}]",
            ),
            vec![],
        ),
        (
            "root namespace first",
            format!(
                "{}{}",
                policy("foo", "a", all),
                policy("istio-system", "z", all)
            ),
            vec![
                "ALLOW ns[istio-system]-policy[z] #0",
                "ALLOW ns[foo]-policy[a] #0",
            ],
        ),
    ];
    for (name, policies, want) in cases {
        let ls = listeners(&policies, "httpbin-1");
        let (http, tcp) = on_port(&ls, 8000);
        assert_eq!(http, want, "{name}: HTTP");
        assert!(tcp.is_empty(), "{name}: an HTTP port has no TCP form");
    }
    // A Gateway targetRef attaches to the Gateway's own deployment only.
    let gw = policy(
        "foo",
        "edge",
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: edge}]\n  rules: [{}]",
    );
    let (on_gw, _) = on_port(&listeners(&gw, "gw-1"), 8080);
    assert_eq!(on_gw, vec!["ALLOW ns[foo]-policy[edge] #0"]);
    assert!(on_port(&listeners(&gw, "httpbin-1"), 8000).0.is_empty());
}

#[test]
fn rules_on_http_and_tcp_ports() {
    // (name, policy spec, HTTP form on 8000, TCP form on 9000)
    let cases: Vec<(&str, &str, Vec<&str>, Vec<&str>)> = vec![
        (
            "spec {} denies all",
            "  {}",
            vec!["ALLOW ns[foo]-policy[p]"],
            vec!["ALLOW ns[foo]-policy[p]"],
        ),
        (
            "DENY without rules does nothing",
            "  action: DENY",
            vec!["DENY ns[foo]-policy[p]"],
            vec!["DENY ns[foo]-policy[p]"],
        ),
        (
            "ALLOW: an HTTP-only rule is dropped on TCP, the others stay",
            r#"
  rules:
  - to: [{operation: {methods: ["GET"]}}]
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]"#,
            vec![
                "ALLOW ns[foo]-policy[p] #0 to(method=GET) #1 from(principal=cluster.local/ns/foo/sa/sleep)",
            ],
            vec!["ALLOW ns[foo]-policy[p] #1 from(principal=cluster.local/ns/foo/sa/sleep)"],
        ),
        (
            "DENY: HTTP-only fields are left out on TCP, the rule stays (more restrictive)",
            r#"
  action: DENY
  rules:
  - to: [{operation: {methods: ["GET"], ports: ["9000"]}}]"#,
            vec!["DENY ns[foo]-policy[p] #0 to(method=GET&destination_port=9000)"],
            vec!["DENY ns[foo]-policy[p] #0 to(destination_port=9000)"],
        ),
        (
            "DENY on POST alone denies every TCP connection",
            "  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]",
            vec!["DENY ns[foo]-policy[p] #0 to(method=POST)"],
            vec!["DENY ns[foo]-policy[p] #0 to()"],
        ),
        (
            "ALLOW: a header condition drops the rule on TCP",
            "  rules: [{when: [{key: \"request.headers[X-Token]\", values: [admin]}]}]",
            vec!["ALLOW ns[foo]-policy[p] #0 when(request_header[x-token]=admin)"],
            vec!["ALLOW ns[foo]-policy[p]"],
        ),
        (
            "AUDIT is lenient like DENY",
            "  action: AUDIT\n  rules: [{when: [{key: \"request.auth.claims[iss]\", values: [x]}, {key: source.ip, values: [10.0.0.0/8]}]}]",
            vec!["AUDIT ns[foo]-policy[p] #0 when(request_claim[iss]=x&source_ip=10.0.0.0/8)"],
            vec!["AUDIT ns[foo]-policy[p] #0 when(source_ip=10.0.0.0/8)"],
        ),
        (
            "sources: each field, service accounts qualified, request principals",
            r#"
  rules:
  - from:
    - source:
        principals: ["*"]
        notNamespaces: ["bar"]
        serviceAccounts: ["sleep", "bar/client"]
        ipBlocks: ["127.0.0.0/8"]
        remoteIpBlocks: ["10.1.2.3"]
    - source: {requestPrincipals: ["*"]}"#,
            vec![
                "ALLOW ns[foo]-policy[p] #0 from(principal=*&namespace=!bar&service_account=foo/sleep|bar/client&remote_ip=10.1.2.3&source_ip=127.0.0.0/8 or request_principal=*)",
            ],
            vec!["ALLOW ns[foo]-policy[p]"],
        ),
        (
            "request.auth conditions: principal, audiences, presenter, nested claims",
            r#"
  rules:
  - when:
    - {key: request.auth.principal, values: ["iss/sub"]}
    - {key: request.auth.audiences, notValues: ["bad"]}
    - {key: request.auth.presenter, values: ["web"]}
    - {key: "request.auth.claims[foo][bar]", values: ["baz"]}"#,
            vec![
                "ALLOW ns[foo]-policy[p] #0 when(request_principal=iss/sub&request_audiences=!bad&request_presenter=web&request_claim[foo][bar]=baz)",
            ],
            vec!["ALLOW ns[foo]-policy[p]"],
        ),
        (
            "a malformed claim key: ALLOW loses the rule",
            "  rules: [{when: [{key: \"request.auth.claims[]\", values: [x]}]}]",
            vec!["ALLOW ns[foo]-policy[p]"],
            vec!["ALLOW ns[foo]-policy[p]"],
        ),
        (
            "CUSTOM: what it selects is denied (no external authorizer)",
            "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: [\"/custom\"]}}]}]",
            vec!["CUSTOM ns[foo]-policy[p] #0 to(path=/custom)"],
            vec!["CUSTOM ns[foo]-policy[p] #0 to()"],
        ),
    ];
    for (name, spec, http, tcp) in cases {
        let ls = listeners(&policy("foo", "p", spec), "httpbin-1");
        assert_eq!(on_port(&ls, 8000).0, http, "{name}: HTTP on 8000");
        assert_eq!(on_port(&ls, 9000).1, tcp, "{name}: TCP on 9000");
        assert!(
            on_port(&ls, 9000).0.is_empty() && on_port(&ls, 8000).1.is_empty(),
            "{name}"
        );
        // The sniffed port gets both forms.
        assert_eq!(
            on_port(&ls, 7000),
            (
                http.iter().map(|s| s.to_string()).collect(),
                tcp.iter().map(|s| s.to_string()).collect()
            ),
            "{name}: 7000"
        );
    }
}

#[test]
fn unusable_values_follow_the_action() {
    // A malformed address: ALLOW loses the rule, DENY the value.
    let spec = |action: &str| {
        format!(
            "  action: {action}\n  rules: [{{from: [{{source: {{ipBlocks: [\"10.0.0.0/8\", \"10.0.0.0/99\"]}}}}]}}]"
        )
    };
    let allow = listeners(&policy("foo", "p", &spec("ALLOW")), "httpbin-1");
    assert_eq!(on_port(&allow, 8000).0, vec!["ALLOW ns[foo]-policy[p]"]);
    let deny = listeners(&policy("foo", "p", &spec("DENY")), "httpbin-1");
    assert_eq!(
        on_port(&deny, 8000).0,
        vec!["DENY ns[foo]-policy[p] #0 from(source_ip=10.0.0.0/8)"]
    );
}

#[test]
fn dry_run_annotation() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec: {}\n";
    let ls = listeners(text, "httpbin-1");
    assert_eq!(
        on_port(&ls, 8000).0,
        vec!["ALLOW ns[foo]-policy[p] (dry-run)"]
    );
}

/// The AuthorizationPolicy snippets of the user's texts (shared/seeds),
/// compiled for the workloads they name: they say what the text says.
#[test]
fn seed_snippets() {
    const WORKLOADS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: my-app-1, namespace: default, labels: {app: my-app}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 127.2.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: api-service, namespace: production}
spec: {selector: {app: api-service}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: production, labels: {app: api-service}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 127.2.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: bookinfo, labels: {app: reviews}}
spec: {containers: [{name: c, ports: [{containerPort: 9080}]}]}
status: {podIP: 127.2.0.3}
"#;
    // (seed file text, pod, namespace, port, compiled HTTP form)
    let seeds: &[(&str, &str, &str, u32, &str)] = &[
        (
            include_str!("seeds/000-01-AuthorizationPolicy-allow-specific-user.yaml"),
            "my-app-1",
            "default",
            8080,
            "ALLOW ns[default]-policy[allow-specific-user] #0 from(principal=cluster.local/ns/default/sa/specific-user)",
        ),
        (
            include_str!("seeds/001-02-AuthorizationPolicy-api-auth.yaml"),
            "api-1",
            "production",
            8080,
            "ALLOW ns[production]-policy[api-auth] #0 from(principal=cluster.local/ns/production/sa/frontend-sa) to(method=GET|POST&path=/api/*)",
        ),
        (
            include_str!("seeds/002-07-AuthorizationPolicy-reviews-viewer.yaml"),
            "reviews-1",
            "bookinfo",
            9080,
            "ALLOW ns[bookinfo]-policy[reviews-viewer] #0 from(principal=cluster.local/ns/default/sa/bookinfo-productpage) to(method=GET)",
        ),
        (
            include_str!("seeds/004-02-AuthorizationPolicy-allow-frontend.yaml"),
            "my-app-1",
            "default",
            8080,
            "ALLOW ns[default]-policy[allow-frontend] #0 from(namespace=frontend)",
        ),
    ];
    for (text, pod, ns, port, want) in seeds {
        let mut resources = api::parse("workloads.yaml", WORKLOADS).expect("workloads parse");
        let seed = api::parse("seed.yaml", text).expect("seed parses");
        for r in &seed {
            assert!(
                api::validate(r).is_empty(),
                "{want}: {:?}",
                api::validate(r)
            );
        }
        resources.extend(seed);
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let node = pb::Node {
            pod_name: pod.to_string(),
            namespace: ns.to_string(),
            ..Default::default()
        };
        let ls = compile(&mesh, &node).listeners;
        assert_eq!(on_port(&ls, *port).0, vec![want.to_string()], "{pod}");
    }
}

/// meshConfig.trustDomainAliases (Istio's trust domain migration): a
/// principal of the trust domain, an alias or `cluster.local` matches the
/// identity in every one of them; `*` and other trust domains stay.
#[test]
fn trust_domain_aliases_expand_principals() {
    let extra = policy(
        "foo",
        "td",
        r#"
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/a/sa/x, old-td/ns/b/sa/y, other-td/ns/c/sa/z, "*/ns/d/sa/w"]
        notPrincipals: [new-td/ns/e/sa/v]
    when:
    - {key: source.principal, values: [old-td/ns/f/sa/u]}
"#,
    );
    let mut resources = api::parse("mesh.yaml", MESH).expect("fixture parses");
    resources.extend(api::parse("policies.yaml", &extra).expect("policy parses"));
    let config = MeshConfig {
        trust_domain: "new-td".into(),
        trust_domain_aliases: vec!["old-td".into()],
        ..MeshConfig::default()
    };
    let mesh = Mesh::build(&resources, config);
    let node = pb::Node {
        pod_name: "httpbin-1".into(),
        namespace: "foo".into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    };
    let (http, _) = on_port(&compile(&mesh, &node).listeners, 8000);
    assert_eq!(
        http,
        ["ALLOW ns[foo]-policy[td] #0 \
          from(principal=new-td/ns/a/sa/x|old-td/ns/a/sa/x|new-td/ns/b/sa/y|old-td/ns/b/sa/y|other-td/ns/c/sa/z|*/ns/d/sa/w!new-td/ns/e/sa/v|old-td/ns/e/sa/v) \
          when(principal=new-td/ns/f/sa/u|old-td/ns/f/sa/u)"]
    );
}
