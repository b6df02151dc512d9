//! Validation, table-driven: for each kind, valid documents produce no
//! errors and each invalid one produces an error at the expected path.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod destination_rule;
mod gateway;
mod kubernetes;
mod security;
mod service_entry;
mod telemetry;
mod virtual_service;

use api::{FieldError, parse, validate};

pub(crate) fn errors(text: &str) -> Vec<FieldError> {
    let rs = parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(rs.len(), 1, "{text}");
    validate(&rs[0])
}

/// `(case name, document, expected error path, expected message fragment)`;
/// `None` path means the document must be valid.
pub(crate) type Case = (&'static str, String, Option<(&'static str, &'static str)>);

pub(crate) fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for (name, doc, expected) in cases {
        let errs = errors(&doc);
        let found = |path: &str, fragment: &str| {
            errs.iter()
                .any(|e| e.path == path && e.message.contains(fragment))
        };
        match expected {
            None if !errs.is_empty() => {
                failures.push(format!("{name}: expected valid, got {errs:?}"))
            }
            Some((path, fragment)) if !found(path, fragment) => failures.push(format!(
                "{name}: expected `{path}: …{fragment}…`, got {errs:?}"
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

pub(crate) fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n{spec}"
    )
}

pub(crate) const ROUTE: &str =
    "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

#[test]
fn metadata() {
    run(vec![
        ("ok", vs(ROUTE), None),
        (
            "missing name",
            vs(ROUTE).replace("name: vs, ", ""),
            Some(("metadata.name", "name is required")),
        ),
        (
            "uppercase name",
            vs(ROUTE).replace("name: vs", "name: Reviews"),
            Some(("metadata.name", "invalid name `Reviews`")),
        ),
        (
            "underscore name",
            vs(ROUTE).replace("name: vs", "name: a_b"),
            Some(("metadata.name", "invalid name")),
        ),
        (
            "bad namespace",
            vs(ROUTE).replace("namespace: default", "namespace: a.b"),
            Some(("metadata.namespace", "invalid namespace")),
        ),
        (
            "bad label",
            vs(ROUTE).replace(
                "namespace: default}",
                "namespace: default, labels: {'a b': c}}",
            ),
            Some(("metadata.labels.a b", "invalid label key")),
        ),
    ]);
}

#[test]
fn errors_are_all_reported_at_once() {
    let doc = vs(
        "  hosts: ['a..b']\n  http:\n  - route:\n    - destination: {host: ''}\n      weight: -5\n    retries: {attempts: -1}\n",
    );
    let errs = errors(&doc);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "spec.hosts[0]",
        "spec.http[0].route[0].destination.host",
        "spec.http[0].route[0].weight",
        "spec.http[0].retries.attempts",
    ] {
        assert!(paths.contains(&p), "{p} missing from {errs:?}");
    }
    assert_eq!(
        errs[0].to_string(),
        format!("{}: {}", errs[0].path, errs[0].message)
    );
}

/// A document of `kind` (any API group Trellis knows it by) with `spec`.
pub(crate) fn kind(kind: &str, spec: &str) -> String {
    let group = match kind {
        "PeerAuthentication" | "RequestAuthentication" | "AuthorizationPolicy" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        _ => "networking.istio.io/v1",
    };
    format!(
        "apiVersion: {group}\nkind: {kind}\nmetadata: {{name: x, namespace: foo}}\nspec:\n{spec}"
    )
}
