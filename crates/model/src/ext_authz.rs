//! `meshConfig.extensionProviders` entries of kind `envoyExtAuthzGrpc` and
//! `envoyExtAuthzHttp` → the proxy's `ExtAuthz`, as istiod's authz builder
//! makes Envoy's ext_authz filter for the AuthorizationPolicies with
//! `action: CUSTOM` that name the provider.
//!
//! As istiod: the provider's `service` is `[<namespace>/]<hostname>`, a
//! hostname of the registry (a Kubernetes service or a ServiceEntry host)
//! written in full; the check goes to the proxy's outbound cluster of that
//! host and port (`outbound|<port>||<host>`), so a meshed authorizer is
//! reached over mTLS. A provider that is missing, of another kind or
//! invalid makes the CUSTOM policies that name it deny what they select
//! (istiod turns their rules into DENY rules) — [`resolve`]'s error says why,
//! and `analyze` reports it.

use std::time::Duration;

use wire::pb;

use crate::mesh::Mesh;
use crate::mesh_config::ExtAuthzRequestBody;

/// Istio's default for both kinds: 600 s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The provider `name` as the proxy calls it, or why it cannot be used.
pub fn resolve(mesh: &Mesh, name: &str) -> Result<pb::ExtAuthz, String> {
    let p = mesh
        .config
        .extension_providers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            format!("extension provider {name:?} is not in meshConfig.extensionProviders")
        })?;
    let mut out = if let Some(h) = &p.envoy_ext_authz_http {
        // The deprecated field counts only when the new one is not set.
        let include = if h.include_request_headers_in_check.is_empty() {
            &h.include_headers_in_check
        } else {
            &h.include_request_headers_in_check
        };
        for (field, values) in [
            ("includeRequestHeadersInCheck", include),
            ("headersToUpstreamOnAllow", &h.headers_to_upstream_on_allow),
            (
                "headersToDownstreamOnDeny",
                &h.headers_to_downstream_on_deny,
            ),
            (
                "headersToDownstreamOnAllow",
                &h.headers_to_downstream_on_allow,
            ),
        ] {
            if values.iter().any(|v| v == "*") {
                return Err(format!(
                    "extension provider {name:?}: a single wildcard (\"*\") is not supported in {field}, use a prefix or suffix match"
                ));
            }
        }
        pb::ExtAuthz {
            authority: service(mesh, name, &h.service, h.port)?,
            grpc: false,
            timeout_ms: timeout_ms(h.timeout.as_ref()),
            fail_open: h.fail_open,
            status_on_error: status(name, &h.status_on_error)?,
            path_prefix: path_prefix(name, &h.path_prefix)?,
            include_request_headers: lower(include.clone()),
            additional_headers: h
                .include_additional_headers_in_check
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            headers_to_upstream_on_allow: lower(h.headers_to_upstream_on_allow.clone()),
            headers_to_downstream_on_deny: lower(h.headers_to_downstream_on_deny.clone()),
            headers_to_downstream_on_allow: lower(h.headers_to_downstream_on_allow.clone()),
            ..Default::default()
        }
        .with_body(h.include_request_body_in_check.as_ref())
    } else if let Some(g) = &p.envoy_ext_authz_grpc {
        pb::ExtAuthz {
            authority: service(mesh, name, &g.service, g.port)?,
            grpc: true,
            timeout_ms: timeout_ms(g.timeout.as_ref()),
            fail_open: g.fail_open,
            status_on_error: status(name, &g.status_on_error)?,
            ..Default::default()
        }
        .with_body(g.include_request_body_in_check.as_ref())
    } else {
        return Err(format!(
            "extension provider {name:?} is {}, not envoyExtAuthzGrpc or envoyExtAuthzHttp",
            if p.kind().is_empty() {
                "empty"
            } else {
                p.kind()
            }
        ));
    };
    let (host, port) = out
        .authority
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_default();
    out.cluster = crate::routes::cluster_name(port.parse().unwrap_or(0), "", &host);
    if out.grpc {
        // As istiod: the cluster name with its `|` (invalid in an authority)
        // replaced, for the checks' :authority.
        out.authority = out.cluster.replace('|', "_.");
    }
    out.provider = name.to_string();
    Ok(out)
}

trait WithBody {
    fn with_body(self, body: Option<&ExtAuthzRequestBody>) -> Self;
}

impl WithBody for pb::ExtAuthz {
    fn with_body(self, body: Option<&ExtAuthzRequestBody>) -> Self {
        match body {
            // Envoy's BufferSettings: max_request_bytes is required; Istio
            // leaves a zero to Envoy, which then buffers nothing.
            Some(b) => pb::ExtAuthz {
                max_request_bytes: b.max_request_bytes,
                allow_partial_message: b.allow_partial_message,
                pack_as_bytes: b.pack_as_bytes && self.grpc,
                ..self
            },
            None => self,
        }
    }
}

/// `[<namespace>/]<hostname>` and the port → "<hostname>:<port>", the
/// hostname being one the registry knows (in that namespace when given).
fn service(mesh: &Mesh, provider: &str, service: &str, port: u32) -> Result<String, String> {
    let (namespace, host) = match service.split_once('/') {
        Some((ns, h)) => (Some(ns), h),
        None => (None, service),
    };
    if host.is_empty() {
        return Err(format!(
            "extension provider {provider:?}: service is required"
        ));
    }
    if port == 0 || port > 65535 {
        return Err(format!(
            "extension provider {provider:?}: port {port} is not a valid port"
        ));
    }
    match mesh.registry.service(host) {
        Some(svc) if namespace.is_none_or(|ns| svc.namespace == ns) => Ok(format!("{host}:{port}")),
        _ => Err(format!(
            "extension provider {provider:?}: service {service:?} is not a service or ServiceEntry host of the mesh"
        )),
    }
}

fn timeout_ms(t: Option<&api::duration::Duration>) -> u64 {
    t.map_or(DEFAULT_TIMEOUT, |d| d.as_std()).as_millis() as u64
}

fn status(provider: &str, s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Ok(403);
    }
    match s.parse::<u32>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "extension provider {provider:?}: statusOnError {s:?} is not an HTTP status"
        )),
    }
}

fn path_prefix(provider: &str, p: &str) -> Result<String, String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(p.to_string())
    } else {
        Err(format!(
            "extension provider {provider:?}: pathPrefix {p:?} must start with /"
        ))
    }
}

/// Header names and patterns are matched case-insensitively.
fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(providers: &str) -> Mesh {
        let yaml = "apiVersion: v1
kind: Service
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {app: ext-authz}
  ports: [{name: grpc, port: 9000}, {name: http, port: 8000}]
";
        let resources = api::parse("t.yaml", yaml).expect("parses");
        Mesh::build(
            &resources,
            serde_json::from_str(providers).expect("mesh config"),
        )
    }

    const ISTIO_TASK: &str = r#"{"extensionProviders": [
        {"name": "sample-ext-authz-grpc", "envoyExtAuthzGrpc": {"service": "ext-authz.foo.svc.cluster.local", "port": 9000}},
        {"name": "sample-ext-authz-http", "envoyExtAuthzHttp": {"service": "ext-authz.foo.svc.cluster.local", "port": 8000,
          "includeRequestHeadersInCheck": ["X-Ext-Authz"], "headersToUpstreamOnAllow": ["x-ext-authz-check-result"],
          "headersToDownstreamOnDeny": ["x-ext-authz-check-result"], "timeout": "2s", "failOpen": true, "statusOnError": "503",
          "pathPrefix": "/check"}},
        {"name": "elsewhere", "envoyExtAuthzGrpc": {"service": "bar/ext-authz.foo.svc.cluster.local", "port": 9000}},
        {"name": "short", "envoyExtAuthzGrpc": {"service": "ext-authz", "port": 9000}},
        {"name": "otel", "opentelemetry": {"service": "x", "port": 4317}},
        {"name": "wildcard", "envoyExtAuthzHttp": {"service": "ext-authz.foo.svc.cluster.local", "port": 8000, "headersToUpstreamOnAllow": ["*"]}}
    ]}"#;

    #[test]
    fn istio_task_providers() {
        let m = mesh(ISTIO_TASK);
        let g = resolve(&m, "sample-ext-authz-grpc").expect("grpc");
        assert!(g.grpc);
        assert_eq!(g.cluster, "outbound|9000||ext-authz.foo.svc.cluster.local");
        assert_eq!(
            g.authority,
            "outbound_.9000_._.ext-authz.foo.svc.cluster.local"
        );
        assert_eq!(
            (g.timeout_ms, g.fail_open, g.status_on_error),
            (600_000, false, 403)
        );
        let h = resolve(&m, "sample-ext-authz-http").expect("http");
        assert!(!h.grpc);
        assert_eq!(h.cluster, "outbound|8000||ext-authz.foo.svc.cluster.local");
        assert_eq!(h.include_request_headers, ["x-ext-authz"]);
        assert_eq!(h.headers_to_upstream_on_allow, ["x-ext-authz-check-result"]);
        assert_eq!(
            (h.timeout_ms, h.fail_open, h.status_on_error),
            (2000, true, 503)
        );
        assert_eq!(h.path_prefix, "/check");
    }

    #[test]
    fn unusable_providers_say_why() {
        let m = mesh(ISTIO_TASK);
        for (name, want) in [
            ("missing", "not in meshConfig.extensionProviders"),
            ("elsewhere", "not a service or ServiceEntry host"),
            ("short", "not a service or ServiceEntry host"),
            ("otel", "is opentelemetry, not envoyExtAuthzGrpc"),
            ("wildcard", "a single wildcard"),
        ] {
            let err = resolve(&m, name).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
