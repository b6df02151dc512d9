//! RequestAuthentication → the JWT rules a workload's proxy validates
//! requests with, as istiod builds Envoy's `jwt_authn` filter.
//!
//! Which policies apply (Istio's `GetJwtPoliciesForWorkload`): those of the
//! root namespace and of the workload's namespace, narrowed by
//! `selector.matchLabels` (a root-namespace policy with a selector selects in
//! every namespace) or by `targetRef(s)` naming the workload's Gateway — the
//! same matching as AuthorizationPolicy. Every rule of every applicable
//! policy is used: they are alternatives (Envoy's `requires_any`), and a
//! request without any token passes on (`allow_missing`), leaving the
//! decision to AuthorizationPolicy.
//!
//! The keys: an inline `jwks` is passed as written; a `jwksUri` is fetched and
//! cached by the proxy (Istio's `PILOT_JWT_ENABLE_REMOTE_JWKS=envoy`); a rule
//! with neither has its keys found by OpenID discovery from the issuer
//! (`<issuer>/.well-known/openid-configuration`), also by the proxy.

use api::Object;
use api::security::{JwtRule, RequestAuthentication};
use wire::pb;

use crate::mesh::Mesh;
use crate::registry::Workload;

/// Istio's default token locations, used by a rule that names none.
const DEFAULT_HEADER: &str = "authorization";
const DEFAULT_PREFIX: &str = "Bearer ";
const DEFAULT_PARAM: &str = "access_token";

/// The JWT rules for `w`, root namespace's policies first, each in
/// namespace/name order (the mesh keeps them sorted).
pub fn workload_rules(mesh: &Mesh, w: &Workload) -> Vec<pb::JwtRule> {
    applicable(mesh, w)
        .flat_map(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            p.spec
                .jwt_rules
                .iter()
                .enumerate()
                .map(move |(i, r)| compile_rule(r, ns, &p.metadata.name, i))
        })
        .collect()
}

pub(crate) fn applicable<'a>(
    mesh: &'a Mesh,
    w: &'a Workload,
) -> impl Iterator<Item = &'a Object<RequestAuthentication>> + 'a {
    let root = mesh.config.root_namespace.as_str();
    let ns_of = |p: &Object<RequestAuthentication>| {
        p.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let in_ns = move |ns: &'a str| {
        mesh.request_authentications
            .iter()
            .filter(move |p| ns_of(p) == ns)
    };
    let own = (w.namespace != root)
        .then(|| in_ns(&w.namespace))
        .into_iter()
        .flatten();
    in_ns(root).chain(own).filter(move |p| {
        crate::authz::attaches_to(
            &ns_of(p),
            p.spec.selector.as_ref(),
            p.spec.target_ref.iter().chain(&p.spec.target_refs),
            w,
        )
    })
}

fn compile_rule(r: &JwtRule, ns: &str, name: &str, index: usize) -> pb::JwtRule {
    let no_location =
        r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty();
    let (from_headers, from_params) = if no_location {
        (
            vec![pb::JwtHeader {
                name: DEFAULT_HEADER.into(),
                prefix: DEFAULT_PREFIX.into(),
            }],
            vec![DEFAULT_PARAM.into()],
        )
    } else {
        (
            r.from_headers
                .iter()
                .map(|h| pb::JwtHeader {
                    name: h.name.to_ascii_lowercase(),
                    prefix: h.prefix.clone().unwrap_or_default(),
                })
                .collect(),
            r.from_params.clone(),
        )
    };
    // An inline JWKS wins over a URI, as in istiod; neither: OpenID discovery.
    let jwks = match (&r.jwks, &r.jwks_uri) {
        (Some(inline), _) if !inline.is_empty() => pb::jwt_rule::Jwks::JwksInline(inline.clone()),
        (_, Some(uri)) if !uri.is_empty() => pb::jwt_rule::Jwks::JwksUri(uri.clone()),
        _ => pb::jwt_rule::Jwks::JwksUri(discovery_uri(&r.issuer)),
    };
    pb::JwtRule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        jwks: Some(jwks),
        jwks_timeout_ms: r.timeout.map_or(0, |t| {
            t.as_std().as_millis().clamp(1, u32::MAX.into()) as u32
        }),
        from_headers,
        from_params,
        from_cookies: r.from_cookies.clone(),
        forward_original_token: r.forward_original_token.unwrap_or(false),
        output_payload_to_header: r.output_payload_to_header.clone().unwrap_or_default(),
        output_claim_to_headers: r
            .output_claim_to_headers
            .iter()
            .map(|c| pb::JwtClaimHeader {
                header: c.header.to_ascii_lowercase(),
                claim: c.claim.clone(),
            })
            .collect(),
        space_delimited_claims: r.space_delimited_claims.clone(),
        name: format!("ns[{ns}]-requestauthentication[{name}]-rule[{index}]"),
    }
}

/// OpenID Connect discovery: where an issuer publishes its `jwks_uri`.
fn discovery_uri(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::MeshConfig;

    fn mesh(yaml: &str) -> Mesh {
        let resources = api::parse("test.yaml", yaml).expect("valid yaml");
        Mesh::build(&resources, MeshConfig::default())
    }

    fn workload(ns: &str, app: &str) -> Workload {
        Workload {
            kind: crate::registry::WorkloadKind::Pod,
            name: format!("{app}-0"),
            workload: app.into(),
            namespace: ns.into(),
            labels: std::sync::Arc::new([("app".to_string(), app.to_string())].into()),
            ip: "10.0.0.1".into(),
            service_account: app.into(),
            ports: Vec::new(),
            has_sidecar: true,
            gateway: false,
            locality: String::new(),
            weight: 0,
        }
    }

    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules: [{issuer: mesh-issuer, jwksUri: "https://idp.example/jwks"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ns, namespace: foo}
spec:
  jwtRules:
  - issuer: ns-issuer
    jwks: '{"keys": []}'
    fromHeaders: [{name: X-Jwt}]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules: [{issuer: "https://accounts.example/"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other, namespace: bar}
spec:
  jwtRules: [{issuer: bar-issuer}]
"#;

    #[test]
    fn root_namespace_then_namespace_then_selector() {
        let m = mesh(POLICIES);
        let names = |w: &Workload| -> Vec<String> {
            workload_rules(&m, w)
                .into_iter()
                .map(|r| r.issuer)
                .collect()
        };
        assert_eq!(
            names(&workload("foo", "httpbin")),
            ["mesh-issuer", "https://accounts.example/", "ns-issuer"]
        );
        assert_eq!(
            names(&workload("foo", "sleep")),
            ["mesh-issuer", "ns-issuer"]
        );
        assert_eq!(names(&workload("baz", "httpbin")), ["mesh-issuer"]);
    }

    #[test]
    fn defaults_and_locations() {
        let m = mesh(POLICIES);
        let rules = workload_rules(&m, &workload("foo", "httpbin"));
        let by = |iss: &str| {
            rules
                .iter()
                .find(|r| r.issuer == iss)
                .cloned()
                .expect("rule")
        };
        let mesh_rule = by("mesh-issuer");
        assert_eq!(mesh_rule.from_headers.len(), 1);
        assert_eq!(mesh_rule.from_headers[0].name, "authorization");
        assert_eq!(mesh_rule.from_headers[0].prefix, "Bearer ");
        assert_eq!(mesh_rule.from_params, ["access_token"]);
        assert!(!mesh_rule.forward_original_token);
        assert_eq!(
            mesh_rule.jwks,
            Some(pb::jwt_rule::Jwks::JwksUri(
                "https://idp.example/jwks".into()
            ))
        );
        assert_eq!(
            mesh_rule.name,
            "ns[istio-system]-requestauthentication[mesh]-rule[0]"
        );
        let ns_rule = by("ns-issuer");
        assert_eq!(ns_rule.from_headers[0].name, "x-jwt");
        assert_eq!(ns_rule.from_headers[0].prefix, "");
        assert!(
            ns_rule.from_params.is_empty(),
            "no default param once a location is named"
        );
        assert!(ns_rule.forward_original_token);
        assert_eq!(
            ns_rule.jwks,
            Some(pb::jwt_rule::Jwks::JwksInline(r#"{"keys": []}"#.into()))
        );
        assert_eq!(
            by("https://accounts.example/").jwks,
            Some(pb::jwt_rule::Jwks::JwksUri(
                "https://accounts.example/.well-known/openid-configuration".into()
            ))
        );
    }
}
