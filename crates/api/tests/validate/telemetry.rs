//! Validation of Telemetry.

use super::kind;
use super::run;

#[test]
fn telemetry() {
    let t = |spec: &str| kind("Telemetry", spec);
    run(vec![
        (
            "tracing",
            t(
                "  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10.5, customTags: {env: {environment: {name: ENV, defaultValue: dev}}}}]\n",
            ),
            None,
        ),
        (
            "sampling range",
            t("  tracing: [{randomSamplingPercentage: 101}]\n"),
            Some(("spec.tracing[0].randomSamplingPercentage", "0..100")),
        ),
        (
            "two providers",
            t("  tracing: [{providers: [{name: a}, {name: b}]}]\n"),
            Some(("spec.tracing[0].providers", "at most one provider")),
        ),
        (
            "custom tag empty",
            t("  tracing: [{customTags: {a: {}}}]\n"),
            Some(("spec.tracing[0].customTags.a", "exactly one of literal")),
        ),
        (
            "metrics upsert value",
            t("  metrics: [{overrides: [{tagOverrides: {a: {operation: UPSERT}}}]}]\n"),
            Some((
                "spec.metrics[0].overrides[0].tagOverrides.a.value",
                "required for UPSERT",
            )),
        ),
        (
            "metrics disable",
            t(
                "  metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: ALL_METRICS, mode: CLIENT}, disabled: true}]}]\n",
            ),
            None,
        ),
        (
            "access log",
            t(
                "  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]\n",
            ),
            None,
        ),
        (
            "access log empty filter",
            t("  accessLogging: [{filter: {expression: ''}}]\n"),
            Some((
                "spec.accessLogging[0].filter.expression",
                "expression is required",
            )),
        ),
        (
            "access log unparsable filter",
            t("  accessLogging: [{filter: {expression: 'response.code >='}}]\n"),
            Some((
                "spec.accessLogging[0].filter.expression",
                "not an expression Trellis evaluates",
            )),
        ),
        (
            "access log unknown attribute",
            t("  accessLogging: [{filter: {expression: 'response.cod >= 400'}}]\n"),
            Some(("spec.accessLogging[0].filter.expression", "response.cod")),
        ),
        (
            "tag override expression",
            t(
                "  metrics: [{overrides: [{tagOverrides: {failed: {value: 'response.code >= 500'}}}]}]\n",
            ),
            None,
        ),
        (
            "tag override unparsable",
            t(
                "  metrics: [{overrides: [{tagOverrides: {failed: {value: 'response.code >>'}}}]}]\n",
            ),
            Some((
                "spec.metrics[0].overrides[0].tagOverrides.failed.value",
                "not an expression Trellis evaluates",
            )),
        ),
        (
            "tag override per-request attribute",
            t("  metrics: [{overrides: [{tagOverrides: {method: {value: request.method}}}]}]\n"),
            Some((
                "spec.metrics[0].overrides[0].tagOverrides.method.value",
                "request.method is not known per metric series",
            )),
        ),
    ]);
}
