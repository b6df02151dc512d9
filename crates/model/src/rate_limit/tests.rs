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

/// The seed's global filter (002-12), read from the seeds beside the
/// repository; with it, the older task's cluster and the task's
/// VIRTUAL_HOST actions below.
fn seed_global() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/seeds/yaml/002-12-EnvoyFilter-filter-ratelimit.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the seed {}: {e}", path.display()));
    match api::parse("seed.yaml", &text).expect("parses").pop() {
        Some(api::Resource::Unsupported { spec, .. }) => spec,
        other => panic!("not kept as unsupported: {other:?}"),
    }
}

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
    let seed = recognise("istio-system", "filter-ratelimit", &seed_global())
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
    let PatchKind::Route {
        port: None,
        actions,
        local: None,
    } = &more.patches[1].kind
    else {
        panic!("not actions for every route")
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
    let cluster_share = ISTIO_DOCS.replace(
        "stat_prefix: http_local_rate_limiter",
        "stat_prefix: x\n          local_cluster_rate_limit: {}",
    );
    let err = recognise("ns", "d", &spec(&cluster_share)).expect_err("cluster share");
    assert!(
        err.ends_with("typed_config.local_cluster_rate_limit is not supported"),
        "{err}"
    );
    let no_prefix = ISTIO_DOCS.replace("stat_prefix: http_local_rate_limiter", "");
    let err = recognise("ns", "p", &spec(&no_prefix)).expect_err("stat_prefix");
    assert!(
        err.ends_with("typed_config.stat_prefix: required (as Envoy)"),
        "{err}"
    );
    let route = ISTIO_DOCS.replace("applyTo: HTTP_FILTER", "applyTo: HTTP_ROUTE");
    assert!(recognise("ns", "r", &spec(&route)).is_err());
    let other_vhost = PER_ROUTE.replace("inbound|http|9080", "productpage:9080");
    let err = recognise("ns", "v", &spec(&other_vhost)).expect_err("vhost by host");
    assert!(err.contains("vhost.name \"productpage:9080\""), "{err}");
    let no_bucket = PER_ROUTE.replace(
        "token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}",
        "",
    );
    let err = recognise("ns", "b", &spec(&no_bucket)).expect_err("a route's bucket");
    assert!(
        err.ends_with("token_bucket: required in a route's config (as Envoy)"),
        "{err}"
    );
    let metadata = CLUSTER_AND_ACTIONS.replace(
        "generic_key: {descriptor_value: all}",
        "metadata: {descriptor_key: k, metadata_key: {key: a, path: [{key: b}]}}",
    );
    let err = recognise("ns", "m", &spec(&metadata)).expect_err("metadata");
    assert!(
        err.contains("actions[0].metadata: the rate limit action \"metadata\" is not translated"),
        "{err}"
    );
    let at_gateway = CLUSTER_AND_ACTIONS
        .replace("context: SIDECAR_INBOUND", "context: GATEWAY")
        .replace(
            "generic_key: {descriptor_value: all}",
            "destination_cluster: {}",
        );
    let err = recognise("ns", "g", &spec(&at_gateway)).expect_err("destination_cluster");
    assert!(
        err.contains("destination_cluster is translated at SIDECAR_INBOUND only"),
        "{err}"
    );
    let too_long = CLUSTER_AND_ACTIONS.replace(
        "generic_key: {descriptor_value: all}",
        "masked_remote_address: {v4_prefix_mask_len: 33}",
    );
    let err = recognise("ns", "l", &spec(&too_long)).expect_err("mask length");
    assert!(err.ends_with("v4_prefix_mask_len: 33 is over 32"), "{err}");
    let two_kinds = CLUSTER_AND_ACTIONS.replace(
        "prefix_match: /admin",
        "string_match: {exact: a, prefix: b}",
    );
    // As Envoy's validation: a generic_key has a value, a header_value_match headers.
    let no_value = CLUSTER_AND_ACTIONS.replace("{descriptor_value: all}", "{descriptor_key: k}");
    let err = recognise("ns", "v", &spec(&no_value)).expect_err("generic_key value");
    assert!(
        err.ends_with("generic_key.descriptor_value: required"),
        "{err}"
    );
    let no_headers = CLUSTER_AND_ACTIONS.replace(
        "headers: [{name: \":path\", prefix_match: /admin}]",
        "headers: []",
    );
    let err = recognise("ns", "h", &spec(&no_headers)).expect_err("no headers");
    assert!(
        err.ends_with("header_value_match.headers: at least one"),
        "{err}"
    );
    let err = recognise("ns", "s", &spec(&two_kinds)).expect_err("two kinds");
    assert!(
        err.ends_with("string_match: one of exact, prefix, suffix, contains or safe_regex"),
        "{err}"
    );
}

/// The remainders of Envoy's local limit and actions: a bucket per
/// connection, wildcard descriptor entries with max_dynamic_descriptors,
/// and the actions source_cluster (the workload's service cluster, as
/// Istio's bootstrap names it), masked_remote_address,
/// query_parameter_value_match and header_value_match's other matchers.
#[test]
fn per_connection_wildcards_and_the_other_actions_are_translated() {
    let yaml = PER_ROUTE
        .replace(
            "            always_consume_default_token_bucket: false",
            "            always_consume_default_token_bucket: false\n            local_rate_limit_per_downstream_connection: true\n            max_dynamic_descriptors: 100",
        )
        .replace(
            "entries: [{key: path, value: /limited}]",
            "entries: [{key: path, value: /limited}, {key: user}]",
        )
        .replace(
            "          - request_headers: {header_name: \":path\", descriptor_key: path}",
            "          - request_headers: {header_name: \":path\", descriptor_key: path}
        - actions:
          - source_cluster: {}
          - masked_remote_address: {v4_prefix_mask_len: 24}
        - actions:
          - query_parameter_value_match:
              descriptor_value: debug
              query_parameters: [{name: debug, present_match: true}]
          - header_value_match:
              descriptor_value: gold
              headers:
              - {name: x-tier, string_match: {exact: GOLD, ignore_case: true}}
              - {name: x-n, range_match: {start: 1, end: 10}, treat_missing_header_as_empty: true}",
        );
    let f = recognise("istio-system", "f", &spec(&yaml)).expect("recognised");
    let PatchKind::Route {
        actions,
        local: Some(route),
        ..
    } = &f.patches[1].kind
    else {
        panic!("not a route patch: {f:?}")
    };
    assert!(route.per_downstream_connection);
    assert_eq!(route.max_dynamic_descriptors, 100);
    assert_eq!(
        route.descriptors[0].entries[1],
        pb::LocalRateLimitEntry {
            key: "user".into(),
            value: String::new()
        }
    );
    use pb::rate_limit_action::Action as A;
    let kinds: Vec<&A> = actions
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(|a| a.action.as_ref())
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(kinds[1], &A::SourceCluster(String::new()));
    assert_eq!(
        kinds[2],
        &A::MaskedRemoteAddress(pb::MaskedRemoteAddressAction {
            v4_prefix_len: 24,
            v6_prefix_len: 128
        })
    );
    let A::HeaderValueMatch(m) = kinds[4] else {
        panic!("header_value_match: {kinds:?}")
    };
    assert!(m.headers[0].ignore_case && !m.headers[0].treat_missing_as_empty);
    assert_eq!(
        m.headers[1].kind,
        Some(pb::header_value_matcher::Kind::Range(
            pb::HeaderValueRange { start: 1, end: 10 }
        ))
    );
    assert!(m.headers[1].treat_missing_as_empty);

    // Applied to a workload: source_cluster is its service cluster.
    let yaml = "apiVersion: v1
kind: Pod
metadata: {name: productpage-1, namespace: default, labels: {app: productpage}}
spec:
  containers:
  - name: app
    ports: [{containerPort: 9080}]
status: {podIP: 10.0.0.7}
";
    let mut mesh = Mesh::build(
        &api::parse("t.yaml", yaml).expect("parses"),
        Default::default(),
    );
    mesh.rate_limit_filters = vec![f];
    let mut w = mesh
        .registry
        .workload("productpage-1", "default")
        .expect("the pod")
        .clone();
    let mut listeners = vec![pb::Listener {
        port: 9080,
        app_port: 9080,
        protocol: pb::Protocol::Http as i32,
        ..Default::default()
    }];
    apply(&mesh, &w, false, &mut listeners);
    let limit = listeners[0].local_rate_limit.as_ref().expect("a limit");
    assert_eq!(
        limit.rate_limits[1].actions[0].action,
        Some(A::SourceCluster("productpage.default".into()))
    );
    // Without an app label: the workload's name, else istio-proxy.
    w.labels = Default::default();
    w.workload = "reviews-v1".into();
    assert_eq!(source_cluster(&w), "reviews-v1.default");
    w.workload.clear();
    assert_eq!(source_cluster(&w), "istio-proxy.default");
}

/// The seed's filter sits at the head of the HTTP filters; Istio's task
/// inserts it before the router, after authorization; a subFilter naming
/// another of Envoy's filters is refused, never guessed.
#[test]
fn global_filter_placement_follows_the_sub_filter() {
    let with_sub = |op: &str, sub: &str| {
        let mut v = seed_global();
        let p = &mut v["configPatches"][0];
        p["match"]["listener"]["filterChain"]["filter"]["subFilter"] =
            serde_json::json!({"name": sub});
        p["patch"]["operation"] = serde_json::json!(op);
        v
    };
    let placed = |v: &Value| -> Result<bool, String> {
        let f = recognise("istio-system", "filter-ratelimit", v)?;
        match &only_patch(&f).kind {
            PatchKind::Global { limit, .. } => Ok(limit.after_authorization),
            other => panic!("not global: {other:?}"),
        }
    };
    assert_eq!(placed(&seed_global()), Ok(false));
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

/// Istio's per-route local limit (the filter inserted with its stat_prefix
/// only, the bucket in the inbound route's typed_per_filter_config), with
/// a descriptor per path as Envoy's docs write it.
const PER_ROUTE: &str = r#"
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
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
        value: {stat_prefix: http_local_rate_limiter}
- applyTo: HTTP_ROUTE
  match:
    context: SIDECAR_INBOUND
    routeConfiguration:
      vhost:
        name: "inbound|http|9080"
        route: {action: ANY}
  patch:
    operation: MERGE
    value:
      route:
        rate_limits:
        - actions:
          - request_headers: {header_name: ":path", descriptor_key: path}
      typed_per_filter_config:
        envoy.filters.http.local_ratelimit:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
            filter_enabled:
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              default_value: {numerator: 100, denominator: HUNDRED}
            always_consume_default_token_bucket: false
            descriptors:
            - entries: [{key: path, value: /limited}]
              token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
"#;

#[test]
fn per_route_config_and_descriptors_reach_the_inbound_listener_of_their_port() {
    let f = recognise(
        "istio-system",
        "filter-local-ratelimit-svc",
        &spec(PER_ROUTE),
    )
    .expect("recognised");
    assert_eq!(f.patches.len(), 2);
    let PatchKind::Local(filter) = &f.patches[0].kind else {
        panic!("not local: {f:?}")
    };
    assert_eq!(filter.max_tokens, 0, "the filter's config has no bucket");
    let PatchKind::Route {
        port: Some(9080),
        actions,
        local: Some(route),
    } = &f.patches[1].kind
    else {
        panic!("not a route patch for port 9080: {f:?}")
    };
    assert_eq!(actions.len(), 1);
    assert_eq!((route.max_tokens, route.fill_interval_ms), (10, 60_000));
    assert!(!route.always_consume_default_token_bucket);
    assert_eq!(
        route.descriptors,
        [pb::LocalRateLimitDescriptor {
            entries: vec![pb::LocalRateLimitEntry {
                key: "path".into(),
                value: "/limited".into()
            }],
            max_tokens: 2,
            tokens_per_fill: 2,
            fill_interval_ms: 60_000,
        }]
    );

    // Compiled: the route's config, with the actions, on port 9080's
    // inbound listener; another port keeps the filter's config, which
    // has no bucket, so it gets no limit at all.
    let yaml = "apiVersion: v1
kind: Pod
metadata: {name: productpage-1, namespace: default, labels: {app: productpage}}
spec:
  containers:
  - name: app
    ports: [{containerPort: 9080}, {containerPort: 9090}]
status: {podIP: 10.0.0.7}
";
    let resources = api::parse("t.yaml", yaml).expect("parses");
    let mut mesh = Mesh::build(&resources, Default::default());
    mesh.rate_limit_filters = vec![f];
    let w = mesh
        .registry
        .workload("productpage-1", "default")
        .expect("the pod")
        .clone();
    let listener = |port: u32| pb::Listener {
        port,
        app_port: port,
        protocol: pb::Protocol::Http as i32,
        ..Default::default()
    };
    let mut listeners = vec![listener(9080), listener(9090)];
    apply(&mesh, &w, false, &mut listeners);
    let limit = listeners[0].local_rate_limit.as_ref().expect("port 9080");
    assert_eq!(limit.max_tokens, 10);
    assert_eq!(limit.descriptors.len(), 1);
    assert_eq!(limit.rate_limits.len(), 1);
    assert_eq!(
        limit.origin,
        "EnvoyFilter/istio-system/filter-local-ratelimit-svc"
    );
    assert_eq!(listeners[1].local_rate_limit, None);
    // At a gateway the inbound vhost names nothing.
    let mut at_gateway = vec![listener(9080)];
    apply(&mesh, &w, true, &mut at_gateway);
    assert_eq!(at_gateway[0].local_rate_limit, None);
}
