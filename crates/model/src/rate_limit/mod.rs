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

mod global;
mod local;
#[cfg(test)]
mod tests;

use global::{cluster, global_rate_limit, rate_limit_actions};
use local::{local_rate_limit, status_by_name, uint};

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
    /// VIRTUAL_HOST or HTTP_ROUTE merging `rate_limits` (the actions that
    /// make a request's descriptors, for both filters) and the local
    /// limit's per-route config (`typed_per_filter_config`, which replaces
    /// the filter's) into the routes of every virtual host, or of one
    /// inbound port's (`inbound|http|<port>`, Istio's inbound vhost name).
    Route {
        port: Option<u32>,
        actions: Vec<pb::RateLimitActions>,
        local: Option<pb::LocalRateLimit>,
    },
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
/// of a gateway): the first local filter, with the first per-route config
/// for the listener in its place when there is one, and the first global
/// filter, both with the actions of every route patch for the listener.
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
    let routes: Vec<(
        Option<u32>,
        &Vec<pb::RateLimitActions>,
        Option<&pb::LocalRateLimit>,
    )> = patches()
        .filter_map(|k| match k {
            PatchKind::Route {
                port,
                actions,
                local,
            } => Some((*port, actions, local.as_ref())),
            _ => None,
        })
        .collect();
    let global = patches()
        .find_map(|k| match k {
            PatchKind::Global {
                limit,
                cluster_name,
            } => Some((limit, cluster_name)),
            _ => None,
        })
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
        if !http || !l.l4_routes.is_empty() {
            continue;
        }
        // A port names an inbound listener (Istio's inbound vhosts are per port).
        let here =
            |port: Option<u32>| port.is_none_or(|p| !gateway && (p == l.port || p == l.app_port));
        let here_routes = || routes.iter().filter(|(port, _, _)| here(*port));
        let mut actions: Vec<pb::RateLimitActions> = here_routes()
            .flat_map(|(_, a, _)| a.iter().cloned())
            .collect();
        for a in actions.iter_mut().flat_map(|r| &mut r.actions) {
            if let Some(pb::rate_limit_action::Action::SourceCluster(c)) = &mut a.action {
                *c = source_cluster(w);
            }
        }
        // The route's config only counts where the filter is inserted.
        l.local_rate_limit = local
            .map(|filter| {
                let mut c = here_routes()
                    .find_map(|(_, _, local)| *local)
                    .unwrap_or(filter)
                    .clone();
                c.rate_limits.clone_from(&actions);
                c
            })
            // Without a bucket of any kind it limits nothing.
            .filter(|c| c.max_tokens > 0 || !c.descriptors.is_empty());
        // Envoy's global filter sends nothing without descriptors.
        l.global_rate_limit =
            global
                .as_ref()
                .filter(|_| !actions.is_empty())
                .map(|g| pb::GlobalRateLimit {
                    rate_limits: actions.clone(),
                    ..g.clone()
                });
    }
}

/// The `source_cluster` action's value: the workload's service cluster as
/// Istio's bootstrap names it (Envoy's `--service-cluster`, with the
/// default `tracingServiceName` APP_LABEL_AND_NAMESPACE):
/// "<app label>.<namespace>", else "<workload name>.<namespace>", else
/// "istio-proxy.<namespace>".
pub fn source_cluster(w: &Workload) -> String {
    let name = match w.labels.get("app") {
        Some(app) => app.as_str(),
        None if !w.workload.is_empty() => w.workload.as_str(),
        None => "istio-proxy",
    };
    format!("{name}.{}", w.namespace)
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
        applied @ ("VIRTUAL_HOST" | "HTTP_ROUTE") => {
            route_patch(applied, m, op, value, at, context, origin)?
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
                "{at}.applyTo {other:?}: only HTTP_FILTER (inserting {FILTER_NAME} or {GLOBAL_FILTER_NAME}), VIRTUAL_HOST and HTTP_ROUTE (rate_limits, the local limit's typed_per_filter_config) and CLUSTER (the rate limit service) are translated"
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
    let after_authorization = placement(m, op, at)?;
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
    let at = format!("{at}.patch.value.typed_config");
    let config = typed_value(typed, ty, &at)?;
    if what == "local" {
        let mut limit = local_rate_limit(config, &at, false)?;
        if after_authorization {
            return Err(format!(
                "{at}: the local rate limit is translated at the head of the HTTP filters only (no subFilter)"
            ));
        }
        limit.origin = origin.to_string();
        Ok(PatchKind::Local(limit))
    } else {
        let mut kind = global_rate_limit(config, &at, origin)?;
        if let PatchKind::Global { limit, .. } = &mut kind {
            limit.after_authorization = after_authorization;
        }
        Ok(kind)
    }
}

/// A typed config's message: given whole with its `@type`, or in a TypedStruct.
fn typed_value<'a>(typed: &'a Value, ty: &str, at: &str) -> Result<&'a Value, String> {
    let t = typed.get("@type").and_then(Value::as_str).unwrap_or("");
    if t == ty {
        Ok(typed)
    } else if TYPED_STRUCTS.contains(&t)
        && typed.get("type_url").and_then(Value::as_str) == Some(ty)
    {
        Ok(typed.get("value").unwrap_or(&Value::Null))
    } else {
        Err(format!("{at}: @type {t:?} is not {ty}"))
    }
}

/// A VIRTUAL_HOST or HTTP_ROUTE MERGE patch: the routes' `rate_limits`
/// (a VIRTUAL_HOST's own, or `route.rate_limits` of the routes) and the
/// local limit's `typed_per_filter_config`, for every virtual host and
/// route, or for Istio's inbound virtual host of one port.
fn route_patch(
    applied: &str,
    m: &Value,
    op: &str,
    value: &Value,
    at: &str,
    context: Context,
    origin: &str,
) -> Result<PatchKind, String> {
    only(
        m,
        &["context", "routeConfiguration"],
        &format!("{at}.match"),
    )?;
    let mut port = None;
    if let Some(rc) = m.get("routeConfiguration") {
        let vat = format!("{at}.match.routeConfiguration");
        only(rc, &["vhost"], &vat)?;
        let vhost = rc.get("vhost").unwrap_or(&Value::Null);
        only(vhost, &["name", "route"], &format!("{vat}.vhost"))?;
        let route = vhost.get("route").unwrap_or(&Value::Null);
        only(route, &["action"], &format!("{vat}.vhost.route"))?;
        if route
            .get("action")
            .and_then(Value::as_str)
            .is_some_and(|a| a != "ANY")
        {
            return Err(format!(
                "{vat}.vhost.route.action: only ANY (every route) is translated"
            ));
        }
        let name = vhost.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() {
            port = name
                .strip_prefix("inbound|http|")
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|_| context == Context::SidecarInbound);
            if port.is_none() {
                return Err(format!(
                    "{vat}.vhost.name {name:?}: only every virtual host (\"\") or, at SIDECAR_INBOUND, \"inbound|http|<port>\" is translated"
                ));
            }
        }
    }
    if op != "MERGE" {
        return Err(format!(
            "{at}.patch.operation {op:?}: a {applied} patch is translated as MERGE only"
        ));
    }
    let vat = format!("{at}.patch.value");
    let list = if applied == "VIRTUAL_HOST" {
        only(value, &["rate_limits", "typed_per_filter_config"], &vat)?;
        value.get("rate_limits")
    } else {
        only(value, &["route", "typed_per_filter_config"], &vat)?;
        let route = value.get("route").unwrap_or(&Value::Null);
        only(route, &["rate_limits"], &format!("{vat}.route"))?;
        route.get("rate_limits")
    };
    let list_at = if applied == "VIRTUAL_HOST" {
        format!("{vat}.rate_limits")
    } else {
        format!("{vat}.route.rate_limits")
    };
    let actions = match list {
        None => Vec::new(),
        Some(l) => l
            .as_array()
            .ok_or_else(|| format!("{list_at}: expected a list"))?
            .iter()
            .enumerate()
            .map(|(i, r)| rate_limit_actions(r, &format!("{list_at}[{i}]"), context))
            .collect::<Result<_, _>>()?,
    };
    let local = match value.get("typed_per_filter_config") {
        None => None,
        Some(per) => {
            let pat = format!("{vat}.typed_per_filter_config");
            only(per, &[FILTER_NAME], &pat)?;
            per.get(FILTER_NAME)
                .map(|typed| {
                    let at = format!("{pat}.{FILTER_NAME}");
                    let mut l = local_rate_limit(
                        typed_value(typed, LOCAL_RATE_LIMIT_TYPE, &at)?,
                        &at,
                        true,
                    )?;
                    l.origin = origin.to_string();
                    Ok::<_, String>(l)
                })
                .transpose()?
        }
    };
    if actions.is_empty() && local.is_none() {
        return Err(format!(
            "{vat}: neither rate_limits nor a {FILTER_NAME} typed_per_filter_config"
        ));
    }
    Ok(PatchKind::Route {
        port,
        actions,
        local,
    })
}

/// Where in Istio's HTTP filter chain the inserted filter sits: `false` at
/// its head (INSERT_FIRST, or INSERT_BEFORE/AFTER/ADD without a subFilter,
/// as Istio inserts), `true` just before the router (INSERT_BEFORE
/// `envoy.filters.http.router`, the placement of Istio's rate limit task),
/// which is after authentication and authorization: requests they refuse
/// never count against the limit. Other subFilters name filters of Envoy's
/// chain Trellis does not have, so they are refused rather than guessed.
fn placement(m: &Value, op: &str, at: &str) -> Result<bool, String> {
    let sub = m
        .pointer("/listener/filterChain/filter/subFilter/name")
        .and_then(Value::as_str);
    match (op, sub) {
        (_, None) | ("INSERT_FIRST", _) => Ok(false),
        ("INSERT_BEFORE", Some("envoy.filters.http.router")) => Ok(true),
        (_, Some(other)) => Err(format!(
            "{at}.match.listener.filterChain.filter.subFilter.name {other:?} with {op}: only the head of the HTTP filters or INSERT_BEFORE envoy.filters.http.router is translated"
        )),
    }
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
