//! The Telemetry API's metrics overrides, applied when Prometheus scrapes:
//! metrics disabled, labels removed or set from per-series attributes.

/// The Telemetry API's metrics overrides for one reporter (`pb::MetricsPolicy`).
#[derive(Debug, Default)]
pub struct Overrides {
    /// Metric names without `istio_`.
    disabled: Vec<String>,
    tags: Vec<TagOverride>,
}

#[derive(Debug)]
struct TagOverride {
    /// Empty: every metric.
    metric: String,
    tag: String,
    /// `None`: REMOVE.
    value: Option<expr::Expr>,
}

impl Overrides {
    pub fn compile(p: &wire::pb::MetricsPolicy) -> Result<Self, String> {
        let tags =
            p.tag_overrides
                .iter()
                .map(|t| {
                    let value = if t.remove {
                        None
                    } else {
                        Some(expr::Expr::parse(&t.value).map_err(|e| {
                            format!("metrics: tag {:?} of {:?}: {e}", t.tag, t.metric)
                        })?)
                    };
                    Ok(TagOverride {
                        metric: t.metric.clone(),
                        tag: t.tag.clone(),
                        value,
                    })
                })
                .collect::<Result<_, String>>()?;
        Ok(Overrides {
            disabled: p.disabled.clone(),
            tags,
        })
    }

    pub(super) fn enabled(&self, metric: &str) -> bool {
        !self.disabled.iter().any(|d| d == metric)
    }

    /// `labels` with this metric's tag overrides applied; values are
    /// evaluated against the series' standard labels.
    pub(super) fn apply(&self, metric: &str, labels: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = labels.to_vec();
        for t in self
            .tags
            .iter()
            .filter(|t| t.metric.is_empty() || t.metric == metric)
        {
            match &t.value {
                None => out.retain(|(name, _)| *name != t.tag),
                Some(e) => {
                    let v = e.eval(&|a| series_attr(labels, a)).to_string();
                    match out.iter_mut().find(|(name, _)| *name == t.tag) {
                        Some((_, old)) => *old = v,
                        None => out.push((t.tag.clone(), v)),
                    }
                }
            }
        }
        out
    }
}

/// An attribute as a series' labels know it (see `expr::Attr::in_metric_labels`).
fn series_attr(labels: &[(String, String)], a: &expr::Attr) -> expr::Value {
    use expr::{Attr, Value};
    let get = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let int = |name: &str| {
        get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(Value::Absent, Value::Int)
    };
    let string = |name: &str| get(name).map_or(Value::Absent, |v| Value::Str(v.to_string()));
    match a {
        Attr::ResponseCode => int("response_code"),
        Attr::ResponseGrpcStatus => int("grpc_response_status"),
        Attr::ResponseFlags => string("response_flags"),
        Attr::RequestProtocol => string("request_protocol"),
        Attr::SourcePrincipal => string("source_principal"),
        Attr::ConnectionMtls => {
            Value::Bool(get("connection_security_policy") == Some("mutual_tls"))
        }
        _ => Value::Absent,
    }
}
