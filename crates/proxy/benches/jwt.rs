//! What request authentication adds to a request: taking the token from its
//! header, verifying it with a cached JWKS (ES256 and RS256), and the
//! authorization decision on `requestPrincipals` and a claim — the whole
//! per-request work of Istio's JWT task policies. No I/O: the keys are
//! inline (a fetched jwksUri is the same cached `KeySet`).
//!
//! `cargo bench -p proxy --bench jwt`

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy::policy::authz::{Attrs, Decision, Engine, HttpAttrs};
use proxy::policy::jwt::Authn;
use serde_json::json;
use wire::pb;

const ISSUER: &str = "testing@secure.istio.io";

fn es256() -> (EncodingKey, serde_json::Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    (
        EncodingKey::from_ec_der(&kp.serialize_der()),
        json!({"kty": "EC", "crv": "P-256", "kid": "es",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])}),
    )
}

/// RSA 2048 from openssl (ring does not generate RSA keys).
fn rs256() -> (EncodingKey, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("k.pem");
    let der = dir.path().join("k.der");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let p = pem.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    openssl(&[
        "rsa",
        "-in",
        p,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    let hex = openssl(&["rsa", "-in", p, "-noout", "-modulus"]);
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (
        EncodingKey::from_rsa_der(&std::fs::read(der).unwrap()),
        json!({"kty": "RSA", "kid": "rs", "e": "AQAB", "n": URL_SAFE_NO_PAD.encode(n)}),
    )
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let claims = json!({"iss": ISSUER, "sub": ISSUER, "exp": exp, "aud": "app",
        "groups": ["group1", "group2"], "scope": "read write"});
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

/// Istio's `require-jwt` with the claim condition of its JWT task.
fn require_jwt() -> Engine {
    let m = |field: pb::AuthzField, values: &[&str], claim: &[&str]| pb::AuthzMatch {
        field: field as i32,
        values: values.iter().map(|s| s.to_string()).collect(),
        claim: claim.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Engine::compile(&[pb::AuthzPolicy {
        name: "ns[foo]-policy[require-jwt]".into(),
        action: pb::AuthzAction::Allow as i32,
        rules: vec![pb::AuthzRule {
            from: vec![pb::AuthzClause {
                all: vec![m(
                    pb::AuthzField::RequestPrincipal,
                    &[&format!("{ISSUER}/{ISSUER}")],
                    &[],
                )],
            }],
            when: vec![m(pb::AuthzField::RequestClaim, &["group1"], &["groups"])],
            ..Default::default()
        }],
        dry_run: false,
        ext_authz: None,
    }])
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let (es_key, es_jwk) = es256();
    let (rs_key, rs_jwk) = rs256();
    let jwks = json!({"keys": [es_jwk, rs_jwk]}).to_string();
    let authn = Authn::compile(&[pb::JwtRule {
        name: "bench".into(),
        issuer: ISSUER.into(),
        audiences: vec!["app".into()],
        jwks: Some(pb::jwt_rule::Jwks::JwksInline(jwks)),
        from_headers: vec![pb::JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        from_params: vec!["access_token".into()],
        ..Default::default()
    }])
    .unwrap();
    let engine = require_jwt();
    let uri: Uri = "/headers".parse().unwrap();
    let peer: SocketAddr = "127.0.0.9:40000".parse().unwrap();
    let dest: SocketAddr = "127.0.0.2:8080".parse().unwrap();

    let mut group = c.benchmark_group("jwt");
    for (name, token) in [
        ("es256", token(Algorithm::ES256, "es", &es_key)),
        ("rs256", token(Algorithm::RS256, "rs", &rs_key)),
    ] {
        let mut base = HeaderMap::new();
        base.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        base.insert("host", HeaderValue::from_static("httpbin.foo:8080"));
        group.bench_function(format!("verify_and_authorize/{name}"), |b| {
            b.iter(|| {
                let mut headers = base.clone();
                let verified = futures::executor::block_on(authn.authenticate(&mut headers, &uri))
                    .unwrap()
                    .unwrap();
                let decision = engine.decide(&Attrs {
                    source: peer.ip(),
                    remote: peer.ip(),
                    destination: dest,
                    principal: None,
                    sni: None,
                    http: Some(HttpAttrs {
                        method: "GET",
                        path: "/headers",
                        host: "httpbin.foo:8080",
                        headers: &headers,
                        auth: Some(&verified),
                    }),
                });
                assert_eq!(decision, Decision::Allow);
                black_box(decision)
            })
        });
    }
    // The cost a request without a token pays on a workload with rules.
    let mut empty = HeaderMap::new();
    empty.insert("host", HeaderValue::from_static("httpbin.foo:8080"));
    group.bench_function("no_token", |b| {
        b.iter(|| {
            let mut headers = empty.clone();
            black_box(futures::executor::block_on(authn.authenticate(&mut headers, &uri)).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
