//! Validation of PeerAuthentication, RequestAuthentication and AuthorizationPolicy.

use super::kind;
use super::run;

#[test]
fn security() {
    let ap = |spec: &str| kind("AuthorizationPolicy", spec);
    run(vec![
        (
            "pa strict",
            kind("PeerAuthentication", "  mtls: {mode: STRICT}\n"),
            None,
        ),
        (
            "pa port level",
            kind(
                "PeerAuthentication",
                "  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
            ),
            None,
        ),
        (
            "pa port level without selector",
            kind(
                "PeerAuthentication",
                "  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
            ),
            Some(("spec.portLevelMtls", "requires a selector")),
        ),
        (
            "pa bad port",
            kind(
                "PeerAuthentication",
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n",
            ),
            Some(("spec.portLevelMtls.0", "1..65535")),
        ),
        (
            "ra",
            kind(
                "RequestAuthentication",
                "  selector: {matchLabels: {app: a}}\n  jwtRules:\n  - issuer: https://issuer.example.com\n    jwksUri: https://issuer.example.com/jwks.json\n    fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]\n    outputClaimToHeaders: [{header: x-sub, claim: sub}]\n",
            ),
            None,
        ),
        (
            // As Istio: the issuer may be omitted when jwksUri says where keys come from.
            "ra no issuer",
            kind(
                "RequestAuthentication",
                "  jwtRules:\n  - jwksUri: https://a/jwks\n",
            ),
            None,
        ),
        (
            "ra neither issuer nor jwksUri",
            kind("RequestAuthentication", "  jwtRules:\n  - audiences: [a]\n"),
            Some(("spec.jwtRules[0].issuer", "issuer or jwksUri is required")),
        ),
        (
            "ra bad jwks uri",
            kind(
                "RequestAuthentication",
                "  jwtRules:\n  - issuer: a\n    jwksUri: ftp://a/jwks\n",
            ),
            Some(("spec.jwtRules[0].jwksUri", "http:// or https://")),
        ),
        (
            "ra selector and targetRef",
            kind(
                "RequestAuthentication",
                "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
            ),
            Some(("spec.selector", "only one of selector or targetRef")),
        ),
        (
            "ap allow nothing",
            ap("  {}\n").replace("spec:\n  {}\n", "spec: {}\n"),
            None,
        ),
        ("ap allow all", ap("  rules: [{}]\n"), None),
        (
            "ap deny",
            ap(
                "  action: DENY\n  rules:\n  - from: [{source: {notNamespaces: [foo], ipBlocks: [10.0.0.0/8]}}]\n    to: [{operation: {methods: [POST], paths: ['/admin/*'], ports: ['8080']}}]\n    when: [{key: 'request.auth.claims[groups]', values: [admins]}]\n",
            ),
            None,
        ),
        (
            "ap principals",
            ap(
                "  rules:\n  - from: [{source: {principals: ['cluster.local/ns/default/sa/sleep', '*', 'cluster.local/ns/foo/*']}}]\n",
            ),
            None,
        ),
        (
            // A bare principal is an exact identity as Istio reads it.
            "ap bare principal",
            ap("  rules:\n  - from: [{source: {principals: [sleep]}}]\n"),
            None,
        ),
        (
            "ap spiffe principal",
            ap(
                "  rules:\n  - from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]\n",
            ),
            Some((
                "spec.rules[0].from[0].source.principals[0]",
                "without `spiffe://`",
            )),
        ),
        (
            "ap wildcard middle",
            ap("  rules:\n  - from: [{source: {principals: ['cluster.local/*/sa/b']}}]\n"),
            Some((
                "spec.rules[0].from[0].source.principals[0]",
                "only allowed as a prefix",
            )),
        ),
        (
            "ap bad namespace",
            ap("  rules:\n  - from: [{source: {namespaces: [Foo]}}]\n"),
            Some((
                "spec.rules[0].from[0].source.namespaces[0]",
                "invalid namespace",
            )),
        ),
        (
            "ap empty source",
            ap("  rules:\n  - from: [{source: {}}]\n"),
            Some(("spec.rules[0].from[0].source", "at least one field")),
        ),
        (
            "ap bad port",
            ap("  rules:\n  - to: [{operation: {ports: [http]}}]\n"),
            Some(("spec.rules[0].to[0].operation.ports[0]", "must be a number")),
        ),
        (
            "ap numeric ports",
            ap("  rules:\n  - to: [{operation: {ports: [8080, 9090]}}]\n"),
            None,
        ),
        (
            "ap bad path",
            ap("  rules:\n  - to: [{operation: {paths: ['api/v1']}}]\n"),
            Some((
                "spec.rules[0].to[0].operation.paths[0]",
                "must start with `/`",
            )),
        ),
        (
            "ap path template",
            ap("  rules:\n  - to: [{operation: {paths: ['/foo/{*}/bar/{**}']}}]\n"),
            None,
        ),
        (
            "ap bad template",
            ap("  rules:\n  - to: [{operation: {paths: ['/foo/{**}/bar']}}]\n"),
            Some((
                "spec.rules[0].to[0].operation.paths[0]",
                "must be the last segment",
            )),
        ),
        (
            "ap bad condition key",
            ap("  rules:\n  - when: [{key: request.body, values: [x]}]\n"),
            Some(("spec.rules[0].when[0].key", "unknown condition key")),
        ),
        (
            "ap condition no values",
            ap("  rules:\n  - when: [{key: source.ip}]\n"),
            Some((
                "spec.rules[0].when[0]",
                "at least one of values or notValues",
            )),
        ),
        (
            "ap condition bad ip",
            ap("  rules:\n  - when: [{key: source.ip, values: [10.0.0.300]}]\n"),
            Some(("spec.rules[0].when[0].values[0]", "invalid IP")),
        ),
        (
            "ap condition header",
            ap(
                "  rules:\n  - when: [{key: 'request.headers[x-token]', values: [secret]}, {key: destination.port, notValues: ['22']}]\n",
            ),
            None,
        ),
        (
            "ap condition header name",
            ap("  rules:\n  - when: [{key: 'request.headers[]', values: [a]}]\n"),
            Some((
                "spec.rules[0].when[0].key",
                "request.headers[<header-name>]",
            )),
        ),
        (
            "ap custom needs provider",
            ap("  action: CUSTOM\n  rules: [{}]\n"),
            Some(("spec.provider", "requires a provider")),
        ),
        (
            "ap custom",
            ap(
                "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: ['/admin']}}]}]\n",
            ),
            None,
        ),
        (
            "ap provider without custom",
            ap("  action: DENY\n  provider: {name: ext-authz}\n"),
            Some(("spec.provider", "only allowed with action CUSTOM")),
        ),
        (
            "ap service accounts",
            ap("  rules:\n  - from: [{source: {serviceAccounts: [default/sleep]}}]\n"),
            None,
        ),
        (
            // A service account alone is in the policy's namespace, as in Istio.
            "ap bare service account",
            ap("  rules:\n  - from: [{source: {serviceAccounts: [sleep]}}]\n"),
            None,
        ),
        (
            "ap bad service account",
            ap("  rules:\n  - from: [{source: {serviceAccounts: [Bad_SA]}}]\n"),
            Some((
                "spec.rules[0].from[0].source.serviceAccounts[0]",
                "`<namespace>/<service-account>`",
            )),
        ),
        (
            "ap service accounts with namespaces",
            ap(
                "  rules:\n  - from: [{source: {serviceAccounts: [sleep], namespaces: [default]}}]\n",
            ),
            Some((
                "spec.rules[0].from[0].source.serviceAccounts",
                "cannot be combined with principals or namespaces",
            )),
        ),
        (
            "ap target ref kind",
            ap("  targetRefs: [{kind: Pod, name: p}]\n"),
            Some(("spec.targetRefs[0].kind", "unsupported targetRef kind")),
        ),
        (
            "ap target ref ok",
            ap(
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n",
            ),
            None,
        ),
    ]);
}
