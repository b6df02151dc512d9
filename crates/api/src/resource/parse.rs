//! Parsing text (multi-document YAML, or JSON) into [`Resource`]s, with
//! errors that name the file, the document, the resource and the field.

// `ParseError` is deliberately a flat struct with public fields (callers
// match on them); it is built once per failed file, so its size on the
// error path does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Kind, Object, Resource};

/// Why a file could not be parsed. Displays as
/// `bookinfo.yaml: document 3 (VirtualService reviews): spec.http[0].route[0].weight: invalid type: string "x", expected i32`.
///
/// (Display and Error are written by hand rather than with thiserror because
/// thiserror treats a field called `source` as the error's cause.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// File name (or other label) given to [`parse`].
    pub source: String,
    /// 1-based document number within the file.
    pub document: usize,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// `metadata.namespace` as written, when the document has one.
    pub namespace: Option<String>,
    /// Field path such as `spec.http[0].route[0].weight`; empty when the
    /// error is not about one field (e.g. a YAML syntax error).
    pub path: String,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) if !n.is_empty() => write!(f, " ({k} {n})")?,
            (Some(k), _) => write!(f, " ({k})")?,
            (None, Some(n)) if !n.is_empty() => write!(f, " ({n})")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// Multi-document YAML or JSON (a JSON object or array); `kind: List` / `*List` items flattened. Empty documents skipped.
/// `source` is the file name used in errors.
pub fn parse(source: &str, text: &str) -> Result<Vec<Resource>, ParseError> {
    let mut out = Vec::new();
    for (index, doc) in documents(source, text)?.into_iter().enumerate() {
        let document = index + 1;
        collect(source, document, "", doc, &mut out, Fields::Strict)?;
    }
    Ok(out)
}

/// Parses one already-decoded object (e.g. from a Kubernetes watch).
pub fn parse_value(source: &str, value: Value) -> Result<Resource, ParseError> {
    let ctx = Context::new(source, 1, "", &value);
    resource(&ctx, value, Fields::Strict)
}

/// Parses document by document, as `istioctl analyze` reads files: a
/// document that fails does not stop the others, and Kubernetes' own kinds
/// (Pod, Service, Deployment, ...) are read as the API server reads them,
/// dropping fields it does not know. Documents are split at `---` lines
/// first, as Kubernetes' YAML reader does, so a syntax error spoils only
/// its own document. Returns the resources in order and the failures.
pub fn parse_each(source: &str, text: &str) -> (Vec<Resource>, Vec<ParseError>) {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let chunks: Vec<Result<Vec<Value>, ParseError>> =
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            vec![documents(source, text)]
        } else {
            split_documents(text)
                .into_iter()
                .enumerate()
                .map(|(i, chunk)| {
                    yaml_documents(source, chunk).map_err(|mut e| {
                        e.document = i + 1;
                        e
                    })
                })
                .collect()
        };
    for (index, chunk) in chunks.into_iter().enumerate() {
        let docs = match chunk {
            Ok(docs) => docs,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for doc in docs {
            let document = index + 1;
            let mut one = Vec::new();
            match collect(source, document, "", doc, &mut one, Fields::Lenient) {
                Ok(()) => resources.extend(one),
                Err(e) => {
                    resources.extend(one);
                    errors.push(e);
                }
            }
        }
    }
    (resources, errors)
}

/// The documents of a YAML stream, split where a line starts with `---`
/// (Kubernetes' `yaml.NewYAMLReader`).
fn split_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") {
            out.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    out.push(&text[start..]);
    out.retain(|d| !d.trim().is_empty());
    out
}

/// Splits the text into top-level JSON values, one per YAML document (or
/// one per element of a top-level JSON array).
fn documents(source: &str, text: &str) -> Result<Vec<Value>, ParseError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON first; a YAML flow mapping also starts with `{`, so fall back
        // to YAML before giving up, but report the JSON error if both fail.
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(items)) => return Ok(items),
            Ok(v) => return Ok(vec![v]),
            Err(json_err) => {
                if let Ok(docs) = yaml_documents(source, trimmed) {
                    return Ok(docs);
                }
                return Err(ParseError {
                    source: source.to_string(),
                    document: 1,
                    kind: None,
                    name: None,
                    namespace: None,
                    path: String::new(),
                    message: format!("invalid JSON: {json_err}"),
                });
            }
        }
    }
    yaml_documents(source, text)
}

fn yaml_documents(source: &str, text: &str) -> Result<Vec<Value>, ParseError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let syntax_error = |message: String| ParseError {
            source: source.to_string(),
            document: index + 1,
            kind: None,
            name: None,
            namespace: None,
            path: String::new(),
            message,
        };
        // YAML → generic value first: we must read `kind` before we know
        // which type to decode into. Going through serde_yaml_ng's own Value
        // keeps non-string map keys (`8080:`) and tags from failing here;
        // converting to JSON then stringifies keys as JSON would.
        let yaml = serde_yaml_ng::Value::deserialize(de)
            .map_err(|e| syntax_error(format!("invalid YAML: {e}")))?;
        let mut yaml = strip_tags(yaml);
        // Kubernetes (go-yaml) expands `<<: *anchor` merge keys, so we do too.
        yaml.apply_merge()
            .map_err(|e| syntax_error(format!("invalid YAML merge key: {e}")))?;
        let json = serde_json::to_value(&yaml)
            .map_err(|e| syntax_error(format!("cannot represent this YAML as JSON: {e}")))?;
        docs.push(json);
    }
    Ok(docs)
}

/// Drops YAML tags (`!!str`, custom `!Foo`), which protobuf-JSON has no room
/// for; the tagged value itself is kept.
fn strip_tags(v: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Tagged(t) => strip_tags(t.value),
        Y::Sequence(s) => Y::Sequence(s.into_iter().map(strip_tags).collect()),
        Y::Mapping(m) => Y::Mapping(
            m.into_iter()
                .map(|(k, v)| (strip_tags(k), strip_tags(v)))
                .collect(),
        ),
        other => other,
    }
}

/// What we know about the document being decoded, for error messages.
struct Context<'a> {
    source: &'a str,
    document: usize,
    /// Prefix for field paths of list items, e.g. `items[2].`.
    prefix: String,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

impl<'a> Context<'a> {
    fn new(source: &'a str, document: usize, prefix: &str, value: &Value) -> Self {
        let str_at = |ptr: &str| {
            value
                .pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Context {
            source,
            document,
            prefix: prefix.to_string(),
            kind: str_at("/kind"),
            name: str_at("/metadata/name"),
            namespace: str_at("/metadata/namespace"),
        }
    }

    fn error(&self, path: &str, message: impl Into<String>) -> ParseError {
        let path = match (self.prefix.is_empty(), path.is_empty() || path == ".") {
            (true, true) => String::new(),
            (true, false) => path.to_string(),
            (false, true) => self.prefix.trim_end_matches('.').to_string(),
            (false, false) => format!("{}{}", self.prefix, path),
        };
        ParseError {
            source: self.source.to_string(),
            document: self.document,
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            path,
            message: message.into(),
        }
    }
}

/// How fields Kubernetes' own kinds do not know are treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    /// An error, as `kubectl apply --validate=strict`: a typo must not vanish.
    Strict,
    /// Dropped, as the API server (and istioctl analyze) does.
    Lenient,
}

/// Adds the resources in one document to `out`, flattening `List`s.
fn collect(
    source: &str,
    document: usize,
    prefix: &str,
    value: Value,
    out: &mut Vec<Resource>,
    fields: Fields,
) -> Result<(), ParseError> {
    if value.is_null() {
        return Ok(()); // empty document (`---` followed by nothing, or comments only)
    }
    let ctx = Context::new(source, document, prefix, &value);
    let is_list = ctx
        .kind
        .as_deref()
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some();
    if !is_list {
        out.push(resource(&ctx, value, fields)?);
        return Ok(());
    }
    let Value::Object(mut map) = value else {
        return Ok(()); // unreachable: `items` was found in it
    };
    match map.remove("items") {
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                collect(
                    source,
                    document,
                    &format!("{prefix}items[{i}]."),
                    item,
                    out,
                    fields,
                )?;
            }
            Ok(())
        }
        Some(Value::Null) | None => Ok(()),
        Some(_) => Err(ctx.error("items", "expected a list of objects")),
    }
}

/// Decodes one object (not a list).
fn resource(ctx: &Context<'_>, value: Value, fields: Fields) -> Result<Resource, ParseError> {
    let Value::Object(map) = &value else {
        return Err(ctx.error(
            "",
            format!(
                "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                describe(&value)
            ),
        ));
    };
    let api_version = match map.get("apiVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => {
            return Err(ctx.error("apiVersion", "missing field `apiVersion`"));
        }
        Some(other) => {
            return Err(ctx.error(
                "apiVersion",
                format!("expected a string, found {}", describe(other)),
            ));
        }
    };
    let kind = match map.get("kind") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(ctx.error("kind", "missing field `kind`")),
        Some(other) => {
            return Err(ctx.error(
                "kind",
                format!("expected a string, found {}", describe(other)),
            ));
        }
    };
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);

    let Some(known) = Kind::from_kind_and_group(&kind, group) else {
        return Ok(unsupported(ctx, map, &api_version, kind));
    };
    if !known.accepts_api_version(&api_version) {
        return Err(ctx.error(
            "apiVersion",
            format!(
                "unsupported apiVersion `{api_version}` for {kind}; expected one of: {}",
                known.api_versions().join(", ")
            ),
        ));
    }
    Ok(match known {
        Kind::VirtualService => {
            Resource::VirtualService(Box::new(typed::<Object<_>>(ctx, &value)?))
        }
        Kind::DestinationRule => {
            Resource::DestinationRule(Box::new(typed::<Object<_>>(ctx, &value)?))
        }
        Kind::Gateway => Resource::Gateway(typed::<Object<_>>(ctx, &value)?),
        Kind::ServiceEntry => Resource::ServiceEntry(Box::new(typed::<Object<_>>(ctx, &value)?)),
        Kind::Sidecar => Resource::Sidecar(Box::new(typed::<Object<_>>(ctx, &value)?)),
        Kind::WorkloadEntry => Resource::WorkloadEntry(Box::new(typed::<Object<_>>(ctx, &value)?)),
        Kind::WorkloadGroup => Resource::WorkloadGroup(Box::new(typed::<Object<_>>(ctx, &value)?)),
        Kind::PeerAuthentication => Resource::PeerAuthentication(typed::<Object<_>>(ctx, &value)?),
        Kind::RequestAuthentication => {
            Resource::RequestAuthentication(Box::new(typed::<Object<_>>(ctx, &value)?))
        }
        Kind::AuthorizationPolicy => {
            Resource::AuthorizationPolicy(Box::new(typed::<Object<_>>(ctx, &value)?))
        }
        Kind::Telemetry => Resource::Telemetry(Box::new(typed::<Object<_>>(ctx, &value)?)),
        Kind::Namespace => Resource::Namespace(Box::new(k8s(ctx, &value, fields)?)),
        Kind::ServiceAccount => Resource::ServiceAccount(Box::new(k8s(ctx, &value, fields)?)),
        Kind::Secret => Resource::Secret(Box::new(k8s(ctx, &value, fields)?)),
        Kind::Service => Resource::Service(Box::new(k8s(ctx, &value, fields)?)),
        Kind::Deployment => Resource::Deployment(Box::new(k8s(ctx, &value, fields)?)),
        Kind::Pod => Resource::Pod(Box::new(k8s(ctx, &value, fields)?)),
        Kind::EndpointSlice => Resource::EndpointSlice(Box::new(k8s(ctx, &value, fields)?)),
        Kind::Unsupported => return Ok(unsupported(ctx, map, &api_version, kind)),
    })
}

/// Decodes into `T`, turning serde's error into one with a field path and,
/// for a misspelt field or enum value, a suggestion.
fn typed<T: DeserializeOwned>(ctx: &Context<'_>, value: &Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let (path, message) = explain(&path, &message);
        ctx.error(&path, message)
    })
}

/// Decodes a k8s-openapi type, rejecting fields it does not know when strict.
fn k8s<T: DeserializeOwned + serde::Serialize>(
    ctx: &Context<'_>,
    value: &Value,
    fields: Fields,
) -> Result<T, ParseError> {
    match fields {
        Fields::Strict => strict_k8s(ctx, value),
        Fields::Lenient => typed(ctx, value),
    }
}

/// Decodes a k8s-openapi type and rejects fields it does not know.
///
/// k8s-openapi (like the API server by default) silently drops unknown
/// fields, so a typo such as `containerz:` would vanish and the Deployment
/// would run without containers. Every field k8s-openapi keeps is written
/// back by its serializer, so any non-null input key missing from the
/// re-serialised value was dropped: that is the unknown field (the same
/// check as `kubectl apply --validate=strict`).
fn strict_k8s<T: DeserializeOwned + serde::Serialize>(
    ctx: &Context<'_>,
    value: &Value,
) -> Result<T, ParseError> {
    let typed: T = typed(ctx, value)?;
    let round = serde_json::to_value(&typed).map_err(|e| ctx.error("", e.to_string()))?;
    if let Some(path) = dropped_field(value, &round, String::new()) {
        let field = path
            .rsplit(['.', ']'])
            .next()
            .unwrap_or_default()
            .to_string();
        return Err(ctx.error(&path, format!("unknown field `{field}`")));
    }
    Ok(typed)
}

/// The path of the first key present (and non-null) in `input` but absent
/// from `output`, descending through objects and same-length arrays.
fn dropped_field(input: &Value, output: &Value, path: String) -> Option<String> {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => i.iter().find_map(|(k, iv)| {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match o.get(k) {
                None if !iv.is_null() => Some(child),
                None => None,
                Some(ov) => dropped_field(iv, ov, child),
            }
        }),
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => i
            .iter()
            .zip(o)
            .enumerate()
            .find_map(|(n, (iv, ov))| dropped_field(iv, ov, format!("{path}[{n}]"))),
        _ => None,
    }
}

/// Rewrites `unknown field `x`, expected one of `a`, `b`` into
/// `unknown field `x`, did you mean `a`?` when one candidate is close, and
/// makes sure the path names the offending field itself.
fn explain(path: &str, message: &str) -> (String, String) {
    for (what, is_field) in [("unknown field `", true), ("unknown variant `", false)] {
        let Some(rest) = message.strip_prefix(what) else {
            continue;
        };
        let Some((bad, tail)) = rest.split_once('`') else {
            continue;
        };
        let candidates = backticked(tail);
        // serde_path_to_error reports an unknown field at the enclosing
        // struct's path; users look for the field itself.
        let path = if is_field && !path_ends_with(path, bad) {
            join_path(path, bad)
        } else {
            path.to_string()
        };
        let noun = if is_field { "field" } else { "value" };
        let message = match suggest(bad, &candidates) {
            Some(best) => format!("unknown {noun} `{bad}`, did you mean `{best}`?"),
            None if candidates.is_empty() => format!("unknown {noun} `{bad}`"),
            None => format!(
                "unknown {noun} `{bad}`, expected one of {}",
                quote_list(&candidates)
            ),
        };
        return (path, message);
    }
    (path.to_string(), message.to_string())
}

fn path_ends_with(path: &str, field: &str) -> bool {
    path == field || path.ends_with(&format!(".{field}"))
}

fn join_path(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `...` names in serde's "expected one of `a`, `b`" tail.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The closest candidate, if it is close enough to be a plausible typo.
/// Case and `_`/`-` are ignored first so `per_try_timeout` finds
/// `perTryTimeout` and `round_robin` finds `ROUND_ROBIN`.
fn suggest<'a>(bad: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    // Names are short; a huge key is garbage, not a typo (and would make
    // the quadratic distance below expensive).
    if bad.len() > 64 {
        return None;
    }
    let bad_n = norm(bad);
    let mut best: Option<(usize, &str)> = None;
    for &c in candidates {
        let d = edit_distance(&bad_n, &norm(c));
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    // One edit per three characters, at least one: `subet`→`subset`,
    // `weigth`→`weight`, but not `foo`→`host`.
    let limit = (bad_n.chars().count() / 3).max(1);
    (d <= limit).then_some(c)
}

/// Levenshtein distance (insert/delete/substitute, and adjacent swaps
/// counted as one edit because they are the commonest typo).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Builds the placeholder for a kind Trellis does not act on, with a reason
/// an operator can act on.
fn unsupported(
    ctx: &Context<'_>,
    map: &serde_json::Map<String, Value>,
    api_version: &str,
    kind: String,
) -> Resource {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let namespace = map
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let reason = unsupported_reason(&kind, group);
    Resource::Unsupported {
        api_version: api_version.to_string(),
        kind,
        name: ctx.name.clone().unwrap_or_default(),
        namespace,
        reason,
        spec: map.get("spec").cloned().unwrap_or(Value::Null),
    }
}

fn unsupported_reason(kind: &str, group: &str) -> String {
    let why = match (group, kind) {
        ("install.istio.io", "IstioOperator") => {
            "IstioOperator configures istioctl's installer; Trellis is installed with `trellis up`/`trellis install`, and mesh-wide settings (meshConfig) go in mesh.yaml or the `istio` ConfigMap"
        }
        ("networking.istio.io", "EnvoyFilter") => {
            "EnvoyFilter patches Envoy's internal configuration; trellis-proxy is not Envoy, so there is nothing to patch"
        }
        ("networking.istio.io", "ProxyConfig") => "ProxyConfig is not supported by Trellis",
        ("extensions.istio.io", _) => "Wasm plugins are not supported by Trellis",
        ("monitoring.coreos.com", _) => {
            "Prometheus Operator resources configure Prometheus, not the mesh; Trellis exposes metrics on the usual ports (15020/15090) for any scraper"
        }
        ("gateway.networking.k8s.io", _) | ("gateway.networking.x-k8s.io", _) => {
            "the Kubernetes Gateway API is not supported yet; use Istio's networking.istio.io Gateway and VirtualService"
        }
        (g, _) if g.ends_with(".istio.io") => "this Istio kind is not supported by Trellis",
        ("", "ConfigMap" | "Secret" | "Endpoints" | "Node" | "PersistentVolumeClaim")
        | ("apps", _)
        | ("batch", _)
        | ("autoscaling", _)
        | ("policy", _)
        | ("networking.k8s.io", _)
        | ("rbac.authorization.k8s.io", _)
        | ("apiextensions.k8s.io", _)
        | ("admissionregistration.k8s.io", _) => {
            "this Kubernetes kind is not used by the Trellis mesh"
        }
        _ => "unknown kind",
    };
    why.to_string()
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
