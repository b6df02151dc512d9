use super::*;

/// Istio's "Enabling Rate Limits using Envoy" local example.
const ISTIO_DOCS: &str = r#"
workloadSelector:
  labels: {app: productpage}
configPatches:
- applyTo: HTTP_FILTER
  match:
    context: SIDECAR_INBOUND
    listener:
      filterChain:
        filter:
          name: "envoy.filters.network.http_connection_manager"
  patch:
    operation: INSERT_BEFORE
    value:
      name: envoy.filters.http.local_ratelimit
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
        value:
          stat_prefix: http_local_rate_limiter
          token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
          filter_enabled:
            runtime_key: local_rate_limit_enabled
            default_value: {numerator: 100, denominator: HUNDRED}
          filter_enforced:
            runtime_key: local_rate_limit_enforced
            default_value: {numerator: 100, denominator: HUNDRED}
          response_headers_to_add:
          - append: false
            header: {key: x-local-rate-limit, value: 'true'}
"#;

/// The spec of an EnvoyFilter with this spec, as the parser keeps it.
fn spec(yaml: &str) -> Value {
    let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
    let doc = format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: f, namespace: ns}}\nspec:\n{indented}"
    );
    match api::parse("f.yaml", &doc).expect("parses").pop() {
        Some(api::Resource::Unsupported { spec, .. }) => spec,
        other => panic!("not kept as unsupported: {other:?}"),
    }
}

/// The one patch of a filter recognised whole.
fn only_patch(f: &RateLimitFilter) -> &Patch {
    assert_eq!(f.patches.len(), 1, "{f:?}");
    &f.patches[0]
}

#[test]
fn istio_docs_example_is_translated() {
    let f = recognise(
        "istio-system",
        "filter-local-ratelimit-svc",
        &spec(ISTIO_DOCS),
    )
    .expect("recognised");
    let p = only_patch(&f);
    assert_eq!(p.context, Context::SidecarInbound);
    assert_eq!(
        f.selector.get("app").map(String::as_str),
        Some("productpage")
    );
    let PatchKind::Local(l) = &p.kind else {
        panic!("not local: {p:?}")
    };
    assert_eq!(
        (l.max_tokens, l.tokens_per_fill, l.fill_interval_ms),
        (4, 4, 60_000)
    );
    assert_eq!((l.enabled_percent, l.enforced_percent), (100.0, 100.0));
    assert_eq!(
        l.response_headers
            .get("x-local-rate-limit")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        l.origin,
        "EnvoyFilter/istio-system/filter-local-ratelimit-svc"
    );
}

/// The seed's global filter (002-12), the older task's cluster, and the
/// task's VIRTUAL_HOST actions.
const SEED_GLOBAL: &str = r#"
configPatches:
- applyTo: HTTP_FILTER
  match:
    context: SIDECAR_INBOUND
    listener:
      filterChain:
        filter:
          name: "envoy.filters.network.http_connection_manager"
  patch:
    operation: INSERT_BEFORE
    value:
      name: envoy.filters.http.ratelimit
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
        domain: productpage-ratelimit
        rate_limit_service:
          grpc_service:
            envoy_grpc:
              cluster_name: rate_limit_cluster
          transport_api_version: V3
"#;

const CLUSTER_AND_ACTIONS: &str = r#"
configPatches:
- applyTo: CLUSTER
  match: {cluster: {service: ratelimit.default.svc.cluster.local}}
  patch:
    operation: ADD
    value:
      name: rate_limit_cluster
      type: STRICT_DNS
      connect_timeout: 10s
      lb_policy: ROUND_ROBIN
      http2_protocol_options: {}
      load_assignment:
        cluster_name: rate_limit_cluster
        endpoints:
        - lb_endpoints:
          - endpoint:
              address:
                socket_address: {address: ratelimit.default.svc.cluster.local, port_value: 8081}
- applyTo: VIRTUAL_HOST
  match:
    context: SIDECAR_INBOUND
    routeConfiguration:
      vhost:
        name: ""
        route: {action: ANY}
  patch:
    operation: MERGE
    value:
      rate_limits:
      - actions:
        - request_headers: {header_name: ":path", descriptor_key: "PATH"}
      - actions:
        - generic_key: {descriptor_value: all}
        - header_value_match:
            descriptor_value: admin
            headers: [{name: ":path", prefix_match: /admin}]
"#;

#[test]
fn seed_global_filter_with_its_cluster_and_actions() {
    let seed = recognise("istio-system", "filter-ratelimit", &spec(SEED_GLOBAL))
        .expect("the seed's global filter");
    let PatchKind::Global {
        limit,
        cluster_name,
    } = &only_patch(&seed).kind
    else {
        panic!("not global: {seed:?}")
    };
    assert_eq!(limit.domain, "productpage-ratelimit");
    assert_eq!(cluster_name, "rate_limit_cluster");
    assert_eq!((limit.failure_mode_deny, limit.timeout_ms), (false, 0));
    let more = recognise(
        "istio-system",
        "filter-ratelimit-svc",
        &spec(CLUSTER_AND_ACTIONS),
    )
    .expect("cluster and actions");
    assert_eq!(more.patches.len(), 2);
    assert!(
        matches!(&more.patches[0].kind, PatchKind::Cluster { name, host, port: 8081 }
        if name == "rate_limit_cluster" && host == "ratelimit.default.svc.cluster.local")
    );
    let PatchKind::Actions(actions) = &more.patches[1].kind else {
        panic!("not actions")
    };
    assert_eq!(actions.len(), 2);
    use pb::rate_limit_action::Action;
    assert_eq!(
        actions[0].actions[0].action,
        Some(Action::RequestHeaders(pb::RequestHeadersAction {
            header_name: ":path".into(),
            descriptor_key: "PATH".into(),
            skip_if_absent: false,
        }))
    );
    assert!(
        matches!(&actions[1].actions[1].action, Some(Action::HeaderValueMatch(m)) if m.expect_match && m.headers.len() == 1)
    );

    // Compiled for a sidecar: the service resolved to its outbound cluster.
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: ratelimit, namespace: default}
spec:
  selector: {app: ratelimit}
  ports: [{name: grpc, port: 8081}]
";
    let resources = api::parse("t.yaml", yaml).expect("parses");
    let mut mesh = Mesh::build(&resources, Default::default());
    mesh.rate_limit_filters = vec![seed, more];
    let filters: Vec<&RateLimitFilter> = mesh.rate_limit_filters.iter().collect();
    assert_eq!(
        service_cluster(&mesh, &filters, "rate_limit_cluster").expect("resolved"),
        (
            "outbound|8081||ratelimit.default.svc.cluster.local".to_string(),
            "ratelimit.default.svc.cluster.local:8081".to_string()
        )
    );
    assert_eq!(
        service_cluster(
            &mesh,
            &filters,
            "outbound|8081||ratelimit.default.svc.cluster.local"
        )
        .expect("Istio's name")
        .0,
        "outbound|8081||ratelimit.default.svc.cluster.local"
    );
    assert!(service_cluster(&mesh, &filters, "other").is_err());
    assert!(service_cluster(&mesh, &filters, "outbound|1||nowhere.example").is_err());
}

#[test]
fn anything_else_is_refused_with_the_reason() {
    let other = spec(
        r#"
configPatches:
- applyTo: HTTP_FILTER
  match: {context: SIDECAR_INBOUND}
  patch:
    operation: INSERT_BEFORE
    value:
      name: envoy.filters.http.lua
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}
"#,
    );
    let err = recognise("istio-system", "lua", &other).expect_err("lua");
    assert!(err.contains("only rate limiting is translated"), "{err}");
    let descriptors = ISTIO_DOCS.replace(
        "stat_prefix: http_local_rate_limiter",
        "stat_prefix: x\n          descriptors: []",
    );
    let err = recognise("ns", "d", &spec(&descriptors)).expect_err("descriptors");
    assert!(
        err.ends_with("typed_config.descriptors is not supported"),
        "{err}"
    );
    let route = ISTIO_DOCS.replace("applyTo: HTTP_FILTER", "applyTo: HTTP_ROUTE");
    assert!(recognise("ns", "r", &spec(&route)).is_err());
    let masked = CLUSTER_AND_ACTIONS.replace(
        "generic_key: {descriptor_value: all}",
        "masked_remote_address: {}",
    );
    let err = recognise("ns", "m", &spec(&masked)).expect_err("masked_remote_address");
    assert!(
        err.contains("masked_remote_address is not translated"),
        "{err}"
    );
}

/// The seed's filter sits at the head of the HTTP filters; Istio's task
/// inserts it before the router, after authorization; a subFilter naming
/// another of Envoy's filters is refused, never guessed.
#[test]
fn global_filter_placement_follows_the_sub_filter() {
    let with_sub = |op: &str, sub: &str| {
        SEED_GLOBAL
            .replace(
                "          name: \"envoy.filters.network.http_connection_manager\"\n",
                &format!(
                    "          name: \"envoy.filters.network.http_connection_manager\"\n          subFilter: {{name: \"{sub}\"}}\n"
                ),
            )
            .replace("operation: INSERT_BEFORE", &format!("operation: {op}"))
    };
    let placed = |yaml: &str| -> Result<bool, String> {
        let f = recognise("istio-system", "filter-ratelimit", &spec(yaml))?;
        match &only_patch(&f).kind {
            PatchKind::Global { limit, .. } => Ok(limit.after_authorization),
            other => panic!("not global: {other:?}"),
        }
    };
    assert_eq!(placed(SEED_GLOBAL), Ok(false));
    assert_ne!(with_sub("INSERT_BEFORE", "x"), SEED_GLOBAL);
    assert_eq!(
        placed(&with_sub("INSERT_BEFORE", "envoy.filters.http.router")),
        Ok(true)
    );
    assert_eq!(
        placed(&with_sub("INSERT_FIRST", "envoy.filters.http.router")),
        Ok(false)
    );
    let refused = placed(&with_sub("INSERT_AFTER", "envoy.filters.http.rbac")).unwrap_err();
    assert!(
        refused.contains("subFilter.name \"envoy.filters.http.rbac\""),
        "{refused}"
    );
}
