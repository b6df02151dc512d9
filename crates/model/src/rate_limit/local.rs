//! The local limit: Envoy's `envoy.filters.http.local_ratelimit` token
//! bucket, and the value shapes both filters share.

use super::*;

/// Envoy's LocalRateLimit message, as far as it is translated. `per_route`:
/// a route's or virtual host's `typed_per_filter_config`, which Envoy
/// requires to have a token bucket (the filter's own config may leave it
/// to the routes).
pub(super) fn local_rate_limit(
    c: &Value,
    at: &str,
    per_route: bool,
) -> Result<pb::LocalRateLimit, String> {
    only(
        c,
        &[
            "@type",
            "stat_prefix",
            "stage",
            "token_bucket",
            "filter_enabled",
            "filter_enforced",
            "response_headers_to_add",
            "status",
            "enable_x_ratelimit_headers",
            "local_rate_limit_per_downstream_connection",
            "descriptors",
            "always_consume_default_token_bucket",
            "max_dynamic_descriptors",
        ],
        at,
    )?;
    let stat_prefix = c
        .get("stat_prefix")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("{at}.stat_prefix: required (as Envoy)"))?;
    if uint(c.get("stage"), &format!("{at}.stage"))?.unwrap_or(0) != 0 {
        return Err(format!("{at}.stage: only stage 0 is translated"));
    }
    let per_downstream_connection = match c.get("local_rate_limit_per_downstream_connection") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            format!("{at}.local_rate_limit_per_downstream_connection: expected true or false")
        })?,
    };
    let max_dynamic_descriptors = match uint(
        c.get("max_dynamic_descriptors"),
        &format!("{at}.max_dynamic_descriptors"),
    )? {
        Some(0) => {
            return Err(format!(
                "{at}.max_dynamic_descriptors: must be at least 1 (as Envoy)"
            ));
        }
        n => n.unwrap_or(0),
    };
    let (max_tokens, tokens_per_fill, fill_interval_ms) = match c.get("token_bucket") {
        Some(b) => token_bucket(b, &format!("{at}.token_bucket"))?,
        None if per_route => {
            return Err(format!(
                "{at}.token_bucket: required in a route's config (as Envoy)"
            ));
        }
        // The routes' configs give the buckets; without one nothing is limited.
        None => (0, 0, 0),
    };
    let descriptors = c
        .get("descriptors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, d)| descriptor(d, &format!("{at}.descriptors[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
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
        fill_interval_ms,
        enabled_percent: percent(c.get("filter_enabled"), &format!("{at}.filter_enabled"))?,
        enforced_percent: percent(c.get("filter_enforced"), &format!("{at}.filter_enforced"))?,
        response_headers: headers,
        x_ratelimit_headers: x_headers,
        status,
        origin: String::new(),
        descriptors,
        rate_limits: Vec::new(),
        always_consume_default_token_bucket: c
            .get("always_consume_default_token_bucket")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        stat_prefix: stat_prefix.to_string(),
        per_downstream_connection,
        max_dynamic_descriptors,
    })
}

/// Envoy's TokenBucket: (max_tokens, tokens_per_fill, fill_interval in ms).
fn token_bucket(b: &Value, at: &str) -> Result<(u32, u32, u64), String> {
    only(b, &["max_tokens", "tokens_per_fill", "fill_interval"], at)?;
    let max_tokens = uint(b.get("max_tokens"), &format!("{at}.max_tokens"))?
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{at}.max_tokens: must be above 0"))?;
    let tokens_per_fill =
        uint(b.get("tokens_per_fill"), &format!("{at}.tokens_per_fill"))?.unwrap_or(1);
    let fill = b
        .get("fill_interval")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.fill_interval: none"))?;
    let fill_interval = fill
        .parse::<api::Duration>()
        .map_err(|e| format!("{at}.fill_interval: {e}"))?
        .as_std();
    if fill_interval < std::time::Duration::from_millis(50) {
        return Err(format!(
            "{at}.fill_interval: must be at least 50ms (as Envoy)"
        ));
    }
    Ok((
        max_tokens,
        tokens_per_fill,
        fill_interval.as_millis() as u64,
    ))
}

/// One of `descriptors`: its entries and its own token bucket. An entry
/// without a value (or with an empty one) is Envoy's wildcard: it matches
/// any value of its key, and each distinct request descriptor it matches
/// gets a bucket of its own (at most `max_dynamic_descriptors` kept).
fn descriptor(d: &Value, at: &str) -> Result<pb::LocalRateLimitDescriptor, String> {
    only(d, &["entries", "token_bucket"], at)?;
    let entries = d
        .get("entries")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| format!("{at}.entries: at least one"))?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let eat = format!("{at}.entries[{i}]");
            only(e, &["key", "value"], &eat)?;
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{eat}.key: required"))?;
            let value = match e.get("value") {
                None | Some(Value::Null) => "",
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| format!("{eat}.value: expected a string"))?,
            };
            Ok(pb::LocalRateLimitEntry {
                key: key.to_string(),
                value: value.to_string(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let bucket = d
        .get("token_bucket")
        .ok_or_else(|| format!("{at}.token_bucket: required"))?;
    let (max_tokens, tokens_per_fill, fill_interval_ms) =
        token_bucket(bucket, &format!("{at}.token_bucket"))?;
    Ok(pb::LocalRateLimitDescriptor {
        entries,
        max_tokens,
        tokens_per_fill,
        fill_interval_ms,
    })
}

/// A RuntimeFractionalPercent's default value in percent; absent: 0 (Envoy's default).
pub(super) fn percent(v: Option<&Value>, at: &str) -> Result<f64, String> {
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

pub(super) fn uint(v: Option<&Value>, at: &str) -> Result<Option<u32>, String> {
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
pub(super) fn status_by_name(name: &str) -> Option<u32> {
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
