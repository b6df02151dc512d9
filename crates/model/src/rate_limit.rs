//! Local rate limiting, as Istio users configure it today: an EnvoyFilter
//! that inserts Envoy's `envoy.filters.http.local_ratelimit` into the HTTP
//! filter chain of a sidecar's inbound listeners or a gateway's. Such a
//! filter is recognised and translated into the proxy's own token bucket
//! (`pb::LocalRateLimit`); an EnvoyFilter that does anything else, or uses a
//! field of the filter this translation does not carry, is not applied at
//! all (never half) and `analyze` says why ([`recognise`]'s error).
//!
//! Which workloads: as Istio, an EnvoyFilter in the root namespace applies
//! in every namespace, one elsewhere in its own; `workloadSelector.labels`
//! narrows it.

use std::collections::BTreeMap;

use serde_json::Value;
use wire::pb;

use crate::mesh::Mesh;
use crate::registry::Workload;

pub const FILTER_NAME: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_RATE_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// A recognised EnvoyFilter: where it applies and the bucket it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimitFilter {
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub context: Context,
    pub limit: pb::LocalRateLimit,
}

/// `match.context` of the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    SidecarInbound,
    Gateway,
    Any,
}

impl LocalRateLimitFilter {
    fn applies(&self, mesh: &Mesh, w: &Workload, gateway: bool) -> bool {
        let context = match self.context {
            Context::Any => true,
            Context::SidecarInbound => !gateway,
            Context::Gateway => gateway,
        };
        let namespace =
            self.namespace == mesh.config.root_namespace || self.namespace == w.namespace;
        context
            && namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

/// Sets the bucket of the first EnvoyFilter (namespace/name order) that
/// applies to `w` on its HTTP listeners (inbound for a sidecar, every
/// HTTP listener of a gateway).
pub fn apply(mesh: &Mesh, w: &Workload, gateway: bool, listeners: &mut [pb::Listener]) {
    let Some(filter) = mesh
        .local_rate_limits
        .iter()
        .find(|f| f.applies(mesh, w, gateway))
    else {
        return;
    };
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
            l.local_rate_limit = Some(filter.limit.clone());
        }
    }
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

/// Reads an EnvoyFilter's `spec`: `Ok` if it is the local rate limit
/// pattern, `Err` with what is not (the EnvoyFilter is then ignored whole).
pub fn recognise(
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<LocalRateLimitFilter, String> {
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
    let patches = spec
        .get("configPatches")
        .and_then(Value::as_array)
        .ok_or("spec.configPatches: none")?;
    let [patch] = patches.as_slice() else {
        return Err(format!(
            "spec.configPatches has {} patches; only a single HTTP_FILTER patch inserting {FILTER_NAME} is translated",
            patches.len()
        ));
    };
    let at = "spec.configPatches[0]";
    only(patch, &["applyTo", "match", "patch"], at)?;
    if patch.get("applyTo").and_then(Value::as_str) != Some("HTTP_FILTER") {
        return Err(format!(
            "{at}.applyTo is not HTTP_FILTER: only inserting {FILTER_NAME} is translated"
        ));
    }
    let m = patch.get("match").unwrap_or(&Value::Null);
    only(m, &["context", "listener"], &format!("{at}.match"))?;
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
    let p = patch.get("patch").unwrap_or(&Value::Null);
    only(p, &["operation", "value"], &format!("{at}.patch"))?;
    let op = p.get("operation").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        op,
        "INSERT_BEFORE" | "INSERT_FIRST" | "INSERT_AFTER" | "ADD"
    ) {
        return Err(format!(
            "{at}.patch.operation {op:?}: only inserting the filter is translated"
        ));
    }
    let value = p.get("value").unwrap_or(&Value::Null);
    if value.get("name").and_then(Value::as_str) != Some(FILTER_NAME) {
        return Err(format!(
            "{at}.patch.value.name is not {FILTER_NAME}: only local rate limiting is translated"
        ));
    }
    let typed = value
        .get("typed_config")
        .or_else(|| value.get("typedConfig"))
        .ok_or_else(|| format!("{at}.patch.value.typed_config: none"))?;
    let ty = typed.get("@type").and_then(Value::as_str).unwrap_or("");
    let config = if ty == LOCAL_RATE_LIMIT_TYPE {
        typed
    } else if TYPED_STRUCTS.contains(&ty)
        && typed.get("type_url").and_then(Value::as_str) == Some(LOCAL_RATE_LIMIT_TYPE)
    {
        typed.get("value").unwrap_or(&Value::Null)
    } else {
        return Err(format!(
            "{at}.patch.value.typed_config: @type {ty:?} is not {LOCAL_RATE_LIMIT_TYPE}"
        ));
    };
    let mut limit = local_rate_limit(config, &format!("{at}.patch.value.typed_config"))?;
    limit.origin = format!("EnvoyFilter/{namespace}/{name}");
    Ok(LocalRateLimitFilter {
        namespace: namespace.to_string(),
        selector,
        context,
        limit,
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

    #[test]
    fn istio_docs_example_is_translated() {
        let f = recognise(
            "istio-system",
            "filter-local-ratelimit-svc",
            &spec(ISTIO_DOCS),
        )
        .expect("recognised");
        assert_eq!(f.context, Context::SidecarInbound);
        assert_eq!(
            f.selector.get("app").map(String::as_str),
            Some("productpage")
        );
        let l = &f.limit;
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

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let seed = spec(
            r#"
configPatches:
- applyTo: HTTP_FILTER
  match: {context: SIDECAR_INBOUND}
  patch:
    operation: INSERT_BEFORE
    value:
      name: envoy.filters.http.ratelimit
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit}
"#,
        );
        let err = recognise("istio-system", "filter-ratelimit", &seed).expect_err("global");
        assert!(err.contains("only local rate limiting"), "{err}");
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
    }
}
