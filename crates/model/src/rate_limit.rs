//! Rate limiting, as Istio users configure it today: EnvoyFilters that
//! insert Envoy's `envoy.filters.http.local_ratelimit` (a token bucket per
//! proxy) or `envoy.filters.http.ratelimit` (a global limit kept by a rate
//! limit service speaking `envoy.service.ratelimit.v3`) into the HTTP filter
//! chain of a sidecar's inbound listeners or a gateway's, with the
//! `rate_limits` actions a VIRTUAL_HOST patch merges into the routes and
//! the CLUSTER patch that names the service (Istio's rate limit task, and
//! its older form the seeds use). Such EnvoyFilters are recognised and
//! translated into the proxy's `pb::LocalRateLimit` and
//! `pb::GlobalRateLimit`; an EnvoyFilter that does anything else, or uses a
//! field this translation does not carry, is not applied at all (never
//! half) and `analyze` says why ([`recognise`]'s error).
//!
//! Which workloads: as Istio, an EnvoyFilter in the root namespace applies
//! in every namespace, one elsewhere in its own; `workloadSelector.labels`
//! narrows it. The global filter limits nothing without actions (Envoy
//! sends no request without a descriptor), so it is compiled only with them.

use std::collections::BTreeMap;

use serde_json::Value;
use wire::pb;

use crate::mesh::Mesh;
use crate::registry::Workload;

pub const FILTER_NAME: &str = "envoy.filters.http.local_ratelimit";
pub const GLOBAL_FILTER_NAME: &str = "envoy.filters.http.ratelimit";
const LOCAL_RATE_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const GLOBAL_RATE_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit";
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// A recognised EnvoyFilter: where it applies and what its patches set.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitFilter {
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    /// "EnvoyFilter/<namespace>/<name>".
    pub origin: String,
    pub patches: Vec<Patch>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub context: Context,
    pub kind: PatchKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchKind {
    /// HTTP_FILTER inserting local_ratelimit.
    Local(pb::LocalRateLimit),
    /// HTTP_FILTER inserting ratelimit; its `rate_limit_service` cluster by name.
    Global {
        limit: pb::GlobalRateLimit,
        cluster_name: String,
    },
    /// VIRTUAL_HOST merging `rate_limits` into every route.
    Actions(Vec<pb::RateLimitActions>),
    /// CLUSTER adding a cluster of one endpoint (the rate limit service).
    Cluster {
        name: String,
        host: String,
        port: u32,
    },
}

/// `match.context` of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    SidecarInbound,
    Gateway,
    Any,
}

impl Context {
    fn applies(self, gateway: bool) -> bool {
        match self {
            Context::Any => true,
            Context::SidecarInbound => !gateway,
            Context::Gateway => gateway,
        }
    }
}

impl RateLimitFilter {
    fn selects(&self, mesh: &Mesh, w: &Workload) -> bool {
        let namespace =
            self.namespace == mesh.config.root_namespace || self.namespace == w.namespace;
        namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

/// Sets the limits of the EnvoyFilters (namespace/name order) that apply
/// to `w` on its HTTP listeners (inbound for a sidecar, every HTTP listener
/// of a gateway): the first local bucket, the first global filter with the
/// actions of every VIRTUAL_HOST patch.
pub fn apply(mesh: &Mesh, w: &Workload, gateway: bool, listeners: &mut [pb::Listener]) {
    let filters: Vec<&RateLimitFilter> = mesh
        .rate_limit_filters
        .iter()
        .filter(|f| f.selects(mesh, w))
        .collect();
    let patches = || {
        filters
            .iter()
            .flat_map(|f| &f.patches)
            .filter(|p| p.context.applies(gateway))
            .map(|p| &p.kind)
    };
    let local = patches().find_map(|k| match k {
        PatchKind::Local(l) => Some(l),
        _ => None,
    });
    let actions: Vec<pb::RateLimitActions> = patches()
        .filter_map(|k| match k {
            PatchKind::Actions(a) => Some(a.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let global = patches()
        .find_map(|k| match k {
            PatchKind::Global {
                limit,
                cluster_name,
            } => Some((limit, cluster_name)),
            _ => None,
        })
        .filter(|_| !actions.is_empty())
        .map(|(limit, cluster_name)| {
            let (cluster, authority) = match service_cluster(mesh, &filters, cluster_name) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(filter = %limit.origin, workload = %w.name, namespace = %w.namespace, "{e}; every rate limit call fails (failure_mode_deny decides)");
                    Default::default()
                }
            };
            pb::GlobalRateLimit {
                cluster,
                authority: if limit.authority.is_empty() {
                    authority
                } else {
                    limit.authority.clone()
                },
                rate_limits: actions.clone(),
                ..limit.clone()
            }
        });
    for l in listeners {
        let http = matches!(
            pb::Protocol::try_from(l.protocol),
            Ok(pb::Protocol::Http
                | pb::Protocol::Http2
                | pb::Protocol::Grpc
                | pb::Protocol::Https
                | pb::Protocol::Unspecified)
        );
        if http && l.l4_routes.is_empty() {
            l.local_rate_limit = local.cloned();
            l.global_rate_limit.clone_from(&global);
        }
    }
}

/// The rate limit service's cluster and authority: Istio's own cluster
/// name (`outbound|<port>||<host>`, today's task) or a cluster a CLUSTER
/// patch adds (the older task's `rate_limit_cluster`), its endpoint being a
/// mesh host.
pub fn service_cluster(
    mesh: &Mesh,
    filters: &[&RateLimitFilter],
    name: &str,
) -> Result<(String, String), String> {
    let (host, port) = if let Some(rest) = name.strip_prefix("outbound|") {
        let mut parts = rest.splitn(3, '|');
        let port = parts.next().and_then(|p| p.parse::<u32>().ok());
        let subset = parts.next().unwrap_or("");
        match (port, subset, parts.next()) {
            (Some(port), "", Some(host)) => (host.to_string(), port),
            _ => {
                return Err(format!(
                    "cluster {name:?}: expected outbound|<port>||<host>"
                ));
            }
        }
    } else {
        filters
            .iter()
            .flat_map(|f| &f.patches)
            .find_map(|p| match &p.kind {
                PatchKind::Cluster {
                    name: n,
                    host,
                    port,
                } if n == name => Some((host.clone(), *port)),
                _ => None,
            })
            .ok_or_else(|| {
                format!("rate limit service cluster {name:?} is neither outbound|<port>||<host> nor added by a CLUSTER patch")
            })?
    };
    if mesh.registry.service(&host).is_none() {
        return Err(format!(
            "rate limit service {host}: not a service or ServiceEntry host of the mesh"
        ));
    }
    Ok((
        crate::routes::cluster_name(port, "", &host),
        format!("{host}:{port}"),
    ))
}

/// Whether `r` is an EnvoyFilter Trellis translates (and so stores and
/// serves, where other unsupported kinds are refused or left out).
pub fn is_translated(r: &api::Resource) -> bool {
    match r {
        api::Resource::Unsupported {
            api_version,
            kind,
            name,
            namespace,
            spec,
            ..
        } => {
            kind == "EnvoyFilter"
                && api_version.starts_with("networking.istio.io/")
                && recognise(namespace.as_deref().unwrap_or("default"), name, spec).is_ok()
        }
        _ => false,
    }
}

/// Reads an EnvoyFilter's `spec`: `Ok` if every patch is one of the rate
/// limiting patterns, `Err` with what is not (the EnvoyFilter is then
/// ignored whole).
pub fn recognise(namespace: &str, name: &str, spec: &Value) -> Result<RateLimitFilter, String> {
    let known = [
        "workloadSelector",
        "configPatches",
        "priority",
        "targetRefs",
    ];
    only(spec, &known, "spec")?;
    if spec.get("targetRefs").is_some() {
        return Err("spec.targetRefs is not supported (use workloadSelector)".into());
    }
    let selector = match spec.pointer("/workloadSelector/labels") {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| "spec.workloadSelector.labels must map strings to strings".to_string())?,
    };
    let list = spec
        .get("configPatches")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or("spec.configPatches: none")?;
    let origin = format!("EnvoyFilter/{namespace}/{name}");
    let patches = list
        .iter()
        .enumerate()
        .map(|(i, p)| patch(p, &format!("spec.configPatches[{i}]"), &origin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RateLimitFilter {
        namespace: namespace.to_string(),
        selector,
        origin,
        patches,
    })
}

fn patch(patch: &Value, at: &str, origin: &str) -> Result<Patch, String> {
    only(patch, &["applyTo", "match", "patch"], at)?;
    let m = patch.get("match").unwrap_or(&Value::Null);
    let context = match m.get("context").and_then(Value::as_str).unwrap_or("ANY") {
        "SIDECAR_INBOUND" => Context::SidecarInbound,
        "GATEWAY" => Context::Gateway,
        "ANY" => Context::Any,
        other => {
            return Err(format!(
                "{at}.match.context {other}: only SIDECAR_INBOUND, GATEWAY and ANY are translated"
            ));
        }
    };
    let p = patch.get("patch").unwrap_or(&Value::Null);
    only(p, &["operation", "value"], &format!("{at}.patch"))?;
    let op = p.get("operation").and_then(Value::as_str).unwrap_or("");
    let value = p.get("value").unwrap_or(&Value::Null);
    let kind = match patch.get("applyTo").and_then(Value::as_str).unwrap_or("") {
        "HTTP_FILTER" => http_filter(m, op, value, at, origin)?,
        "VIRTUAL_HOST" => {
            only(
                m,
                &["context", "routeConfiguration"],
                &format!("{at}.match"),
            )?;
            if let Some(rc) = m.get("routeConfiguration") {
                let vhost = rc.get("vhost").unwrap_or(&Value::Null);
                let any_vhost = vhost
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty();
                let any_route = vhost
                    .pointer("/route/action")
                    .and_then(Value::as_str)
                    .is_none_or(|a| a == "ANY");
                only(rc, &["vhost"], &format!("{at}.match.routeConfiguration"))?;
                only(
                    vhost,
                    &["name", "route"],
                    &format!("{at}.match.routeConfiguration.vhost"),
                )?;
                if !any_vhost || !any_route {
                    return Err(format!(
                        "{at}.match.routeConfiguration: only every virtual host and route (vhost name \"\", route action ANY) is translated"
                    ));
                }
            }
            if op != "MERGE" {
                return Err(format!(
                    "{at}.patch.operation {op:?}: a VIRTUAL_HOST patch is translated as MERGE only"
                ));
            }
            only(value, &["rate_limits"], &format!("{at}.patch.value"))?;
            let list = value
                .get("rate_limits")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("{at}.patch.value.rate_limits: none"))?;
            PatchKind::Actions(
                list.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        rate_limit_actions(
                            r,
                            &format!("{at}.patch.value.rate_limits[{i}]"),
                            context,
                        )
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        "CLUSTER" => {
            if op != "ADD" {
                return Err(format!(
                    "{at}.patch.operation {op:?}: a CLUSTER patch is translated as ADD only"
                ));
            }
            cluster(value, &format!("{at}.patch.value"))?
        }
        other => {
            return Err(format!(
                "{at}.applyTo {other:?}: only HTTP_FILTER (inserting {FILTER_NAME} or {GLOBAL_FILTER_NAME}), VIRTUAL_HOST (rate_limits) and CLUSTER (the rate limit service) are translated"
            ));
        }
    };
    Ok(Patch { context, kind })
}

fn http_filter(
    m: &Value,
    op: &str,
    value: &Value,
    at: &str,
    origin: &str,
) -> Result<PatchKind, String> {
    only(m, &["context", "listener"], &format!("{at}.match"))?;
    if let Some(l) = m.get("listener") {
        only(
            l,
            &["filterChain", "portNumber"],
            &format!("{at}.match.listener"),
        )?;
        if l.get("portNumber").is_some() {
            return Err(format!("{at}.match.listener.portNumber is not supported"));
        }
        let filter = l
            .pointer("/filterChain/filter/name")
            .and_then(Value::as_str);
        if filter.is_some_and(|f| f != "envoy.filters.network.http_connection_manager") {
            return Err(format!(
                "{at}.match.listener.filterChain.filter.name must be envoy.filters.network.http_connection_manager"
            ));
        }
    }
    if !matches!(
        op,
        "INSERT_BEFORE" | "INSERT_FIRST" | "INSERT_AFTER" | "ADD"
    ) {
        return Err(format!(
            "{at}.patch.operation {op:?}: only inserting the filter is translated"
        ));
    }
    let name = value.get("name").and_then(Value::as_str).unwrap_or("");
    let (ty, what) = match name {
        FILTER_NAME => (LOCAL_RATE_LIMIT_TYPE, "local"),
        GLOBAL_FILTER_NAME => (GLOBAL_RATE_LIMIT_TYPE, "global"),
        _ => {
            return Err(format!(
                "{at}.patch.value.name is not {FILTER_NAME} or {GLOBAL_FILTER_NAME}: only rate limiting is translated"
            ));
        }
    };
    let typed = value
        .get("typed_config")
        .or_else(|| value.get("typedConfig"))
        .ok_or_else(|| format!("{at}.patch.value.typed_config: none"))?;
    let t = typed.get("@type").and_then(Value::as_str).unwrap_or("");
    let config = if t == ty {
        typed
    } else if TYPED_STRUCTS.contains(&t)
        && typed.get("type_url").and_then(Value::as_str) == Some(ty)
    {
        typed.get("value").unwrap_or(&Value::Null)
    } else {
        return Err(format!(
            "{at}.patch.value.typed_config: @type {t:?} is not {ty}"
        ));
    };
    let at = format!("{at}.patch.value.typed_config");
    if what == "local" {
        let mut limit = local_rate_limit(config, &at)?;
        limit.origin = origin.to_string();
        Ok(PatchKind::Local(limit))
    } else {
        global_rate_limit(config, &at, origin)
    }
}

/// Envoy's RateLimit filter message, as far as it is translated.
fn global_rate_limit(c: &Value, at: &str, origin: &str) -> Result<PatchKind, String> {
    only(
        c,
        &[
            "@type",
            "domain",
            "stage",
            "request_type",
            "timeout",
            "failure_mode_deny",
            "rate_limit_service",
            "enable_x_ratelimit_headers",
            "disable_x_envoy_ratelimited_header",
            "rate_limited_status",
            "stat_prefix",
        ],
        at,
    )?;
    let domain = c
        .get("domain")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{at}.domain: required"))?;
    if uint(c.get("stage"), &format!("{at}.stage"))?.unwrap_or(0) != 0 {
        return Err(format!("{at}.stage: only stage 0 is translated"));
    }
    if c.get("request_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "both")
    {
        return Err(format!("{at}.request_type: only \"both\" is translated"));
    }
    let timeout_ms = match c.get("timeout").and_then(Value::as_str) {
        None => 0,
        Some(t) => t
            .parse::<api::Duration>()
            .map_err(|e| format!("{at}.timeout: {e}"))?
            .as_std()
            .as_millis() as u64,
    };
    let svc = c
        .get("rate_limit_service")
        .ok_or_else(|| format!("{at}.rate_limit_service: required"))?;
    let sat = format!("{at}.rate_limit_service");
    only(svc, &["grpc_service", "transport_api_version"], &sat)?;
    if svc
        .get("transport_api_version")
        .and_then(Value::as_str)
        .is_some_and(|v| v != "V3")
    {
        return Err(format!("{sat}.transport_api_version: only V3"));
    }
    let grpc = svc.get("grpc_service").unwrap_or(&Value::Null);
    only(
        grpc,
        &["envoy_grpc", "timeout"],
        &format!("{sat}.grpc_service"),
    )?;
    let envoy_grpc = grpc.get("envoy_grpc").ok_or_else(|| {
        format!("{sat}.grpc_service.envoy_grpc: required (google_grpc is not translated)")
    })?;
    only(
        envoy_grpc,
        &["cluster_name", "authority"],
        &format!("{sat}.grpc_service.envoy_grpc"),
    )?;
    let cluster_name = envoy_grpc
        .get("cluster_name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{sat}.grpc_service.envoy_grpc.cluster_name: required"))?;
    // The calls' :authority when given (Istio's task sets the host).
    let authority = envoy_grpc
        .get("authority")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let x_ratelimit_headers = match c.get("enable_x_ratelimit_headers").and_then(Value::as_str) {
        None | Some("OFF") => false,
        Some("DRAFT_VERSION_03") => true,
        Some(other) => {
            return Err(format!(
                "{at}.enable_x_ratelimit_headers {other:?}: OFF or DRAFT_VERSION_03"
            ));
        }
    };
    let status = match c.pointer("/rate_limited_status/code") {
        None => 0,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        Some(Value::String(s)) => status_by_name(s).ok_or_else(|| {
            format!("{at}.rate_limited_status.code {s:?} is not a known HTTP status")
        })?,
        Some(_) => return Err(format!("{at}.rate_limited_status.code: expected a status")),
    };
    Ok(PatchKind::Global {
        limit: pb::GlobalRateLimit {
            domain: domain.to_string(),
            timeout_ms,
            failure_mode_deny: c
                .get("failure_mode_deny")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            x_ratelimit_headers,
            status,
            disable_x_envoy_ratelimited_header: c
                .get("disable_x_envoy_ratelimited_header")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            origin: origin.to_string(),
            authority: authority.to_string(),
            ..Default::default()
        },
        cluster_name: cluster_name.to_string(),
    })
}

/// One entry of a route's `rate_limits`: its actions.
fn rate_limit_actions(
    r: &Value,
    at: &str,
    context: Context,
) -> Result<pb::RateLimitActions, String> {
    only(r, &["actions", "stage"], at)?;
    if uint(r.get("stage"), &format!("{at}.stage"))?.unwrap_or(0) != 0 {
        return Err(format!("{at}.stage: only stage 0 is translated"));
    }
    let list = r
        .get("actions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{at}.actions: none"))?;
    let mut actions = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let aat = format!("{at}.actions[{i}]");
        use pb::rate_limit_action::Action;
        let obj = a
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| format!("{aat}: one action"))?;
        let (key, v) = obj
            .iter()
            .next()
            .ok_or_else(|| format!("{aat}: one action"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let action = match key.as_str() {
            "request_headers" => {
                only(
                    v,
                    &["header_name", "descriptor_key", "skip_if_absent"],
                    &format!("{aat}.request_headers"),
                )?;
                if s("header_name").is_empty() || s("descriptor_key").is_empty() {
                    return Err(format!(
                        "{aat}.request_headers: header_name and descriptor_key are required"
                    ));
                }
                Action::RequestHeaders(pb::RequestHeadersAction {
                    header_name: s("header_name").to_ascii_lowercase(),
                    descriptor_key: s("descriptor_key"),
                    skip_if_absent: v
                        .get("skip_if_absent")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            }
            "remote_address" => Action::RemoteAddress(true),
            "generic_key" => {
                only(
                    v,
                    &["descriptor_key", "descriptor_value"],
                    &format!("{aat}.generic_key"),
                )?;
                Action::GenericKey(pb::GenericKeyAction {
                    descriptor_key: s("descriptor_key"),
                    descriptor_value: s("descriptor_value"),
                })
            }
            "header_value_match" => {
                only(
                    v,
                    &[
                        "descriptor_key",
                        "descriptor_value",
                        "expect_match",
                        "headers",
                    ],
                    &format!("{aat}.header_value_match"),
                )?;
                let headers = v
                    .get("headers")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .map(|(j, h)| {
                        header_matcher(h, &format!("{aat}.header_value_match.headers[{j}]"))
                    })
                    .collect::<Result<_, _>>()?;
                Action::HeaderValueMatch(pb::HeaderValueMatchAction {
                    descriptor_key: s("descriptor_key"),
                    descriptor_value: s("descriptor_value"),
                    expect_match: v
                        .get("expect_match")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    headers,
                })
            }
            // The route's cluster is known on a sidecar's inbound side only.
            "destination_cluster" if context == Context::SidecarInbound => {
                Action::DestinationCluster(true)
            }
            other => {
                return Err(format!(
                    "{aat}.{other} is not translated (request_headers, remote_address, generic_key, header_value_match, and destination_cluster at SIDECAR_INBOUND are)"
                ));
            }
        };
        actions.push(pb::RateLimitAction {
            action: Some(action),
        });
    }
    Ok(pb::RateLimitActions { actions })
}

/// Envoy's HeaderMatcher, the forms header_value_match uses.
fn header_matcher(h: &Value, at: &str) -> Result<pb::HeaderValueMatcher, String> {
    use pb::header_value_matcher::Kind;
    let name = h
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{at}.name: required"))?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    let mut kind = None;
    for (k, v) in h.as_object().into_iter().flatten() {
        let this = match k.as_str() {
            "name" | "invert_match" => continue,
            "exact_match" => s(v).map(Kind::Exact),
            "prefix_match" => s(v).map(Kind::Prefix),
            "suffix_match" => s(v).map(Kind::Suffix),
            "contains_match" => s(v).map(Kind::Contains),
            "present_match" => v.as_bool().map(Kind::Present),
            "safe_regex_match" => v.get("regex").and_then(s).map(Kind::Regex),
            "string_match" => {
                let m = v.as_object().filter(|o| o.len() == 1);
                m.and_then(|o| o.iter().next())
                    .and_then(|(mk, mv)| match mk.as_str() {
                        "exact" => s(mv).map(Kind::Exact),
                        "prefix" => s(mv).map(Kind::Prefix),
                        "suffix" => s(mv).map(Kind::Suffix),
                        "contains" => s(mv).map(Kind::Contains),
                        "safe_regex" => mv.get("regex").and_then(s).map(Kind::Regex),
                        _ => None,
                    })
            }
            other => return Err(format!("{at}.{other} is not translated")),
        };
        kind = Some(this.ok_or_else(|| format!("{at}.{k}: not understood"))?);
    }
    if let Some(Kind::Regex(r)) = &kind {
        regex::Regex::new(r).map_err(|e| format!("{at}: regex {r:?}: {e}"))?;
    }
    Ok(pb::HeaderValueMatcher {
        name: name.to_ascii_lowercase(),
        kind: Some(kind.unwrap_or(Kind::Present(true))),
        invert: h
            .get("invert_match")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// A CLUSTER patch's cluster: a name and one endpoint (host and port).
fn cluster(v: &Value, at: &str) -> Result<PatchKind, String> {
    only(
        v,
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "http2_protocol_options",
            "typed_extension_protocol_options",
            "load_assignment",
        ],
        at,
    )?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{at}.name: required"))?;
    let endpoints: Vec<&Value> = v
        .pointer("/load_assignment/endpoints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|e| {
            e.get("lb_endpoints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
        .collect();
    let [endpoint] = endpoints.as_slice() else {
        return Err(format!(
            "{at}.load_assignment: one endpoint (the rate limit service's host) is translated, found {}",
            endpoints.len()
        ));
    };
    let sa = endpoint
        .pointer("/endpoint/address/socket_address")
        .ok_or_else(|| format!("{at}.load_assignment: endpoint.address.socket_address required"))?;
    let host = sa
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.load_assignment: socket_address.address required"))?;
    let port = uint(
        sa.get("port_value"),
        &format!("{at}.load_assignment: socket_address.port_value"),
    )?
    .filter(|p| (1..=65535).contains(p))
    .ok_or_else(|| format!("{at}.load_assignment: socket_address.port_value required"))?;
    Ok(PatchKind::Cluster {
        name: name.to_string(),
        host: host.to_string(),
        port,
    })
}

/// Envoy's LocalRateLimit message, as far as it is translated.
fn local_rate_limit(c: &Value, at: &str) -> Result<pb::LocalRateLimit, String> {
    only(
        c,
        &[
            "@type",
            "stat_prefix",
            "token_bucket",
            "filter_enabled",
            "filter_enforced",
            "response_headers_to_add",
            "status",
            "enable_x_ratelimit_headers",
            "local_rate_limit_per_downstream_connection",
        ],
        at,
    )?;
    if c.get("local_rate_limit_per_downstream_connection")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(format!(
            "{at}.local_rate_limit_per_downstream_connection: a bucket per connection is not supported"
        ));
    }
    let bucket = c
        .get("token_bucket")
        .ok_or_else(|| format!("{at}.token_bucket: none (per-route buckets are not supported)"))?;
    let bat = format!("{at}.token_bucket");
    only(
        bucket,
        &["max_tokens", "tokens_per_fill", "fill_interval"],
        &bat,
    )?;
    let max_tokens = uint(bucket.get("max_tokens"), &format!("{bat}.max_tokens"))?
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{bat}.max_tokens: must be above 0"))?;
    let tokens_per_fill = uint(
        bucket.get("tokens_per_fill"),
        &format!("{bat}.tokens_per_fill"),
    )?
    .unwrap_or(1);
    let fill = bucket
        .get("fill_interval")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{bat}.fill_interval: none"))?;
    let fill_interval = fill
        .parse::<api::Duration>()
        .map_err(|e| format!("{bat}.fill_interval: {e}"))?
        .as_std();
    if fill_interval < std::time::Duration::from_millis(50) {
        return Err(format!(
            "{bat}.fill_interval: must be at least 50ms (as Envoy)"
        ));
    }
    let mut headers = BTreeMap::new();
    for (i, h) in c
        .get("response_headers_to_add")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let key = h.pointer("/header/key").and_then(Value::as_str);
        let value = h.pointer("/header/value").and_then(Value::as_str);
        match (key, value) {
            (Some(k), Some(v)) => {
                headers.insert(k.to_ascii_lowercase(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "{at}.response_headers_to_add[{i}]: needs header.key and header.value"
                ));
            }
        }
    }
    let x_headers = match c.get("enable_x_ratelimit_headers").and_then(Value::as_str) {
        None | Some("OFF") => false,
        Some("DRAFT_VERSION_03") => true,
        Some(other) => {
            return Err(format!(
                "{at}.enable_x_ratelimit_headers {other:?}: OFF or DRAFT_VERSION_03"
            ));
        }
    };
    let status = match c.pointer("/status/code") {
        None => 0,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        Some(Value::String(s)) => status_by_name(s)
            .ok_or_else(|| format!("{at}.status.code {s:?} is not a known HTTP status"))?,
        Some(_) => return Err(format!("{at}.status.code: expected a status")),
    };
    Ok(pb::LocalRateLimit {
        max_tokens,
        tokens_per_fill,
        fill_interval_ms: fill_interval.as_millis() as u64,
        enabled_percent: percent(c.get("filter_enabled"), &format!("{at}.filter_enabled"))?,
        enforced_percent: percent(c.get("filter_enforced"), &format!("{at}.filter_enforced"))?,
        response_headers: headers,
        x_ratelimit_headers: x_headers,
        status,
        origin: String::new(),
    })
}

/// A RuntimeFractionalPercent's default value in percent; absent: 0 (Envoy's default).
fn percent(v: Option<&Value>, at: &str) -> Result<f64, String> {
    let Some(v) = v else {
        return Ok(0.0);
    };
    let d = v.get("default_value").unwrap_or(&Value::Null);
    let numerator = d.get("numerator").and_then(Value::as_f64).unwrap_or(0.0);
    let per = match d
        .get("denominator")
        .and_then(Value::as_str)
        .unwrap_or("HUNDRED")
    {
        "HUNDRED" => 100.0,
        "TEN_THOUSAND" => 10_000.0,
        "MILLION" => 1_000_000.0,
        other => {
            return Err(format!(
                "{at}.default_value.denominator {other:?} is unknown"
            ));
        }
    };
    Ok((numerator / per * 100.0).clamp(0.0, 100.0))
}

fn uint(v: Option<&Value>, at: &str) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{at}: expected a whole number")),
        Some(_) => Err(format!("{at}: expected a whole number")),
    }
}

/// Envoy's `type.v3.StatusCode` names for the statuses a limit is answered with.
fn status_by_name(name: &str) -> Option<u32> {
    Some(match name {
        "TooManyRequests" => 429,
        "ServiceUnavailable" => 503,
        "Forbidden" => 403,
        "BadRequest" => 400,
        "Unauthorized" => 401,
        "InternalServerError" => 500,
        _ => return None,
    })
}

/// Fields of `v` outside `known` are named as unsupported.
fn only(v: &Value, known: &[&str], at: &str) -> Result<(), String> {
    if let Some(map) = v.as_object()
        && let Some(k) = map.keys().find(|k| !known.contains(&k.as_str()))
    {
        return Err(format!("{at}.{k} is not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
