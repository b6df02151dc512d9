//! Telemetry rules.

use super::common::{self, Errors, at, idx};
use crate::telemetry::{ProviderRef, TagOperation, Telemetry};

pub(crate) fn telemetry(errs: &mut Errors, t: &Telemetry) {
    let base = "spec";
    if let Some(sel) = &t.selector {
        common::labels(
            errs,
            &at(&at(base, "selector"), "matchLabels"),
            &sel.match_labels,
        );
    }
    if t.selector.is_some() && (t.target_ref.is_some() || !t.target_refs.is_empty()) {
        errs.add(
            at(base, "selector"),
            "only one of selector or targetRef(s) may be set",
        );
    }
    if t.target_ref.is_some() && !t.target_refs.is_empty() {
        errs.add(
            at(base, "targetRefs"),
            "only one of targetRef or targetRefs may be set",
        );
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let p = idx(base, "tracing", i);
        providers(errs, &p, &tr.providers);
        if tr.providers.len() > 1 {
            errs.add(at(&p, "providers"), "at most one provider per tracing rule");
        }
        if let Some(pct) = tr.random_sampling_percentage {
            errs.check(at(&p, "randomSamplingPercentage"), common::percent(pct));
        }
        for (name, tag) in &tr.custom_tags {
            let tp = at(&at(&p, "customTags"), name);
            if name.is_empty() {
                errs.add(&tp, "tag name must not be empty");
            }
            let kinds = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ]
            .into_iter()
            .filter(|b| *b)
            .count();
            if kinds != 1 {
                errs.add(
                    &tp,
                    "exactly one of literal, environment, header or formatter is required",
                );
            }
            if let Some(e) = &tag.environment
                && e.name.is_empty()
            {
                errs.add(at(&at(&tp, "environment"), "name"), "name is required");
            }
            if let Some(h) = &tag.header {
                errs.check(at(&at(&tp, "header"), "name"), common::header_name(&h.name));
            }
        }
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let p = idx(base, "metrics", i);
        providers(errs, &p, &m.providers);
        if let Some(d) = &m.reporting_interval {
            errs.check(at(&p, "reportingInterval"), common::duration_min_1ms(d));
        }
        for (j, o) in m.overrides.iter().enumerate() {
            let op = idx(&p, "overrides", j);
            if let Some(sel) = &o.r#match {
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    errs.add(
                        at(&op, "match"),
                        "only one of metric or customMetric may be set",
                    );
                }
                if sel.custom_metric.as_deref() == Some("") {
                    errs.add(at(&at(&op, "match"), "customMetric"), "must not be empty");
                }
            }
            for (tag, to) in &o.tag_overrides {
                let tp = at(&at(&op, "tagOverrides"), tag);
                if tag.is_empty() {
                    errs.add(&tp, "tag name must not be empty");
                }
                match to.operation.unwrap_or_default() {
                    TagOperation::Upsert if to.value.as_deref().is_none_or(str::is_empty) => {
                        errs.add(at(&tp, "value"), "a value is required for UPSERT");
                    }
                    TagOperation::Upsert => {
                        match expr::Expr::parse(to.value.as_deref().unwrap_or_default()) {
                            Err(e) => errs.add(
                                at(&tp, "value"),
                                format!("not an expression Trellis evaluates: {e}"),
                            ),
                            Ok(e) => {
                                if let Some(a) =
                                    e.attributes().into_iter().find(|a| !a.in_metric_labels())
                                {
                                    errs.add(
                                        at(&tp, "value"),
                                        format!(
                                            "{a} is not known per metric series in Trellis; \
                                             use response.code, response.grpc_status, response.flags, \
                                             request.protocol, source.principal, connection.mtls or a literal"
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    TagOperation::Remove if to.value.is_some() => {
                        errs.add(at(&tp, "value"), "value must not be set for REMOVE");
                    }
                    _ => {}
                }
            }
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        let p = idx(base, "accessLogging", i);
        providers(errs, &p, &a.providers);
        if let Some(f) = &a.filter {
            let path = at(&at(&p, "filter"), "expression");
            if f.expression.trim().is_empty() {
                errs.add(path, "expression is required");
            } else if let Err(e) = expr::Expr::parse(&f.expression) {
                errs.add(path, format!("not an expression Trellis evaluates: {e}"));
            }
        }
    }
}

fn providers(errs: &mut Errors, p: &str, list: &[ProviderRef]) {
    for (i, pr) in list.iter().enumerate() {
        if pr.name.is_empty() {
            errs.add(
                at(&idx(p, "providers", i), "name"),
                "provider name is required",
            );
        }
    }
}
