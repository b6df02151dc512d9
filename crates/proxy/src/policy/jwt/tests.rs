//! Request authentication with keys made here: each algorithm family, each
//! failure Envoy names, the token locations and outputs, and a jwksUri served
//! by a real local HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wire::pb;

use super::remote::RemoteJwks;
use super::*;

/// A signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    pub fn ec(alg: Algorithm, kid: &str) -> Self {
        let (sig, crv, n) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            _ => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
        };
        let kp = rcgen::KeyPair::generate_for(sig).expect("key");
        let raw = kp.public_key_raw();
        TestKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
            jwk: json!({"kty": "EC", "crv": crv, "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..1 + n]),
                "y": URL_SAFE_NO_PAD.encode(&raw[1 + n..])}),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        TestKey {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(&kp.serialize_der()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(kp.public_key_raw())}),
        }
    }

    /// RSA: ring cannot generate RSA keys, openssl can.
    pub fn rsa(alg: Algorithm, kid: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let pem = dir.path().join("k.pem");
        let der = dir.path().join("k.der");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
            out.stdout
        };
        let p = pem.to_str().expect("utf-8");
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]);
        run(&[
            "rsa",
            "-in",
            p,
            "-traditional",
            "-outform",
            "DER",
            "-out",
            der.to_str().expect("utf-8"),
        ]);
        let modulus =
            String::from_utf8(run(&["rsa", "-in", p, "-noout", "-modulus"])).expect("text");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        TestKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(&std::fs::read(der).expect("der")),
            jwk: json!({"kty": "RSA", "kid": kid, "e": "AQAB", "n": URL_SAFE_NO_PAD.encode(n)}),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).expect("sign")
    }
}

pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "exp": now() + 3600, "aud": "app", "groups": ["group1", "group2"]})
}

pub fn rule(issuer: &str, jwks: pb::jwt_rule::Jwks) -> pb::JwtRule {
    pb::JwtRule {
        name: format!("rule-{issuer}"),
        issuer: issuer.into(),
        jwks: Some(jwks),
        from_headers: vec![pb::JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        from_params: vec!["access_token".into()],
        ..Default::default()
    }
}

fn inline(keys: &[&TestKey]) -> pb::jwt_rule::Jwks {
    pb::jwt_rule::Jwks::JwksInline(jwks(keys))
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

async fn run(
    authn: &Authn,
    headers: &mut HeaderMap,
    uri: &str,
) -> Result<Option<String>, &'static str> {
    let uri: Uri = uri.parse().expect("uri");
    authn
        .authenticate(headers, &uri)
        .await
        .map(|v| v.map(|v| v.principal.clone()))
        .map_err(|Refused(f)| f.message())
}

#[tokio::test]
async fn every_algorithm_verifies() {
    let keys = [
        TestKey::ec(Algorithm::ES256, "es256"),
        TestKey::ec(Algorithm::ES384, "es384"),
        TestKey::ed25519("ed"),
        TestKey::rsa(Algorithm::RS256, "rs"),
    ];
    // One RSA key signs with each RSA algorithm.
    let rsa = &keys[3];
    let mut signers: Vec<(String, String)> = keys
        .iter()
        .map(|k| (format!("{:?}", k.alg), k.sign(&claims("iss", "alice"))))
        .collect();
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let mut h = Header::new(alg);
        h.kid = Some("rs".into());
        signers.push((
            format!("{alg:?}"),
            jsonwebtoken::encode(&h, &claims("iss", "alice"), &rsa.encoding).expect("sign"),
        ));
    }
    let refs: Vec<&TestKey> = keys.iter().collect();
    let authn = Authn::compile(&[rule("iss", inline(&refs))]).expect("compiles");
    for (alg, token) in signers {
        assert_eq!(
            run(&authn, &mut bearer(&token), "/").await,
            Ok(Some("iss/alice".into())),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn failures_are_envoys() {
    let key = TestKey::ec(Algorithm::ES256, "k1");
    let other = TestKey::ec(Algorithm::ES256, "k1");
    let stranger_kid = TestKey::ec(Algorithm::ES256, "k9");
    let authn = Authn::compile(&[pb::JwtRule {
        audiences: vec!["app".into(), "other".into()],
        ..rule("iss", inline(&[&key]))
    }])
    .expect("compiles");
    let mut expired = claims("iss", "a");
    expired["exp"] = json!(now() - 120);
    let mut wrong_aud = claims("iss", "a");
    wrong_aud["aud"] = json!(["nobody"]);
    let cases = [
        ("not.a.jwt".to_string(), "Jwt header is an invalid JSON"),
        (
            "deadbeef".to_string(),
            "Jwt is not in the form of Header.Payload.Signature",
        ),
        (
            key.sign(&claims("other-iss", "a")),
            "Jwt issuer is not configured",
        ),
        (key.sign(&expired), "Jwt is expired"),
        (key.sign(&wrong_aud), "Audiences in Jwt are not allowed"),
        (other.sign(&claims("iss", "a")), "Jwt verification fails"),
        (
            stranger_kid.sign(&claims("iss", "a")),
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
    ];
    for (token, want) in cases {
        assert_eq!(
            run(&authn, &mut bearer(&token), "/").await,
            Err(want),
            "{token}"
        );
    }
    // No token at all passes on, unauthenticated.
    assert_eq!(run(&authn, &mut HeaderMap::new(), "/").await, Ok(None));
    // A header without the prefix is no token either (Envoy ignores it).
    let mut basic = HeaderMap::new();
    basic.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
    assert_eq!(run(&authn, &mut basic, "/").await, Ok(None));
}

#[tokio::test]
async fn locations_forwarding_and_outputs() {
    let key = TestKey::ec(Algorithm::ES256, "k1");
    let token = key.sign(&claims("iss", "bob"));
    let default = Authn::compile(&[pb::JwtRule {
        output_payload_to_header: "x-jwt-payload".into(),
        output_claim_to_headers: vec![pb::JwtClaimHeader {
            header: "x-sub".into(),
            claim: "sub".into(),
        }],
        ..rule("iss", inline(&[&key]))
    }])
    .expect("compiles");
    // Authorization: the token is removed (forwardOriginalToken false), the outputs set.
    let mut h = bearer(&token);
    h.insert("x-sub", HeaderValue::from_static("spoofed"));
    assert_eq!(run(&default, &mut h, "/").await, Ok(Some("iss/bob".into())));
    assert!(h.get("authorization").is_none(), "token stripped");
    assert_eq!(h.get("x-sub").map(|v| v.as_bytes()), Some(&b"bob"[..]));
    let payload = h.get("x-jwt-payload").expect("payload header");
    let decoded: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.as_bytes()).expect("b64"))
            .expect("json");
    assert_eq!(decoded["sub"], "bob");
    // A client's own output header never gets through, token or not.
    let mut spoof = HeaderMap::new();
    spoof.insert("x-sub", HeaderValue::from_static("admin"));
    assert_eq!(run(&default, &mut spoof, "/").await, Ok(None));
    assert!(spoof.get("x-sub").is_none());
    // access_token parameter.
    let mut none = HeaderMap::new();
    assert_eq!(
        run(&default, &mut none, &format!("/p?x=1&access_token={token}")).await,
        Ok(Some("iss/bob".into()))
    );

    // fromHeaders with a prefix, fromCookies, forwardOriginalToken.
    let custom = Authn::compile(&[pb::JwtRule {
        from_headers: vec![pb::JwtHeader {
            name: "x-token".into(),
            prefix: "Token ".into(),
        }],
        from_params: vec![],
        from_cookies: vec!["session".into()],
        forward_original_token: true,
        ..rule("iss", inline(&[&key]))
    }])
    .expect("compiles");
    let mut h = HeaderMap::new();
    h.insert(
        "x-token",
        HeaderValue::from_str(&format!("Token {token}")).expect("v"),
    );
    assert_eq!(run(&custom, &mut h, "/").await, Ok(Some("iss/bob".into())));
    assert!(h.get("x-token").is_some(), "forwarded");
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("a=b; session={token}")).expect("v"),
    );
    assert_eq!(run(&custom, &mut h, "/").await, Ok(Some("iss/bob".into())));
    // The default locations are not this rule's: a Bearer token there is no token.
    assert_eq!(run(&custom, &mut bearer(&token), "/").await, Ok(None));
    // A token of another issuer where this rule looks is refused.
    let mut h = HeaderMap::new();
    let foreign = key.sign(&claims("elsewhere", "x"));
    h.insert(
        "x-token",
        HeaderValue::from_str(&format!("Token {foreign}")).expect("v"),
    );
    assert_eq!(
        run(&custom, &mut h, "/").await,
        Err("Jwt issuer is not configured")
    );
}

#[tokio::test]
async fn several_rules_are_alternatives() {
    let k1 = TestKey::ec(Algorithm::ES256, "a");
    let k2 = TestKey::ed25519("b");
    let authn = Authn::compile(&[rule("one", inline(&[&k1])), rule("two", inline(&[&k2]))])
        .expect("compiles");
    assert_eq!(
        run(&authn, &mut bearer(&k1.sign(&claims("one", "x"))), "/").await,
        Ok(Some("one/x".into()))
    );
    assert_eq!(
        run(&authn, &mut bearer(&k2.sign(&claims("two", "y"))), "/").await,
        Ok(Some("two/y".into()))
    );
    assert_eq!(
        run(&authn, &mut bearer(&k1.sign(&claims("two", "y"))), "/").await,
        Err("Jwks doesn't have key to match kid or alg from Jwt")
    );
}

/// A JWKS server: serves whatever `body` holds now, counting requests.
struct JwksServer {
    uri: String,
    body: Arc<std::sync::Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: String) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Arc::new(std::sync::Mutex::new((200, initial)));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, n) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (b, n) = (b.clone(), n.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    n.fetch_add(1, Ordering::SeqCst);
                    let (status, text) = b.lock().expect("lock").clone();
                    async move {
                        let mut r = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(text),
                        ));
                        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    JwksServer {
        uri: format!("http://{addr}/jwks.json"),
        body,
        hits,
    }
}

#[tokio::test]
async fn jwks_uri_fetched_cached_and_failures_fail_closed() {
    let key = TestKey::ec(Algorithm::ES256, "k1");
    let server = jwks_server(jwks(&[&key])).await;
    let authn = Authn::compile(&[rule("iss", pb::jwt_rule::Jwks::JwksUri(server.uri.clone()))])
        .expect("compiles");
    let token = key.sign(&claims("iss", "carol"));
    for _ in 0..3 {
        assert_eq!(
            run(&authn, &mut bearer(&token), "/").await,
            Ok(Some("iss/carol".into()))
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );

    // Unreachable: the issuer's tokens fail, never pass.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = format!("http://{}/jwks", closed.local_addr().expect("addr"));
    drop(closed);
    let authn =
        Authn::compile(&[rule("iss", pb::jwt_rule::Jwks::JwksUri(dead))]).expect("compiles");
    assert_eq!(
        run(&authn, &mut bearer(&token), "/").await,
        Err("Jwks remote fetch is failed")
    );
    // A request without a token is still not refused.
    assert_eq!(run(&authn, &mut HeaderMap::new(), "/").await, Ok(None));
}

#[tokio::test]
async fn a_jwks_that_stops_parsing_keeps_the_last_good_keys() {
    let key = TestKey::ec(Algorithm::ES256, "k1");
    let server = jwks_server(jwks(&[&key])).await;
    // Refresh on every use, so that each request tries the server again.
    let timing = Timing {
        refresh: Duration::ZERO,
        expire: Duration::from_secs(3600),
        retry: Duration::ZERO,
        timeout: Duration::from_secs(5),
    };
    let remote = RemoteJwks::shared(&server.uri, timing);
    assert!(remote.keys().await.is_some());
    *server.body.lock().expect("lock") = (200, "{not json".into());
    // Each use starts a background refresh that fails; the keys stay.
    for _ in 0..20 {
        assert!(remote.keys().await.is_some(), "last good keys kept");
        if server.hits.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.hits.load(Ordering::SeqCst) >= 2,
        "refreshes were attempted"
    );
    *server.body.lock().expect("lock") = (500, String::new());
    assert!(
        remote.keys().await.is_some(),
        "an error status keeps them too"
    );

    // Keys past their expiry are not used.
    let expired = Timing {
        expire: Duration::ZERO,
        ..timing
    };
    let server2 = jwks_server("{not json".into()).await;
    let remote = RemoteJwks::shared(&server2.uri, expired);
    assert!(
        remote.keys().await.is_none(),
        "nothing good was ever fetched"
    );
}

#[tokio::test]
async fn openid_discovery_is_followed() {
    let key = TestKey::ed25519("k");
    let jwks_srv = jwks_server(jwks(&[&key])).await;
    let discovery =
        jwks_server(json!({"issuer": "iss", "jwks_uri": jwks_srv.uri}).to_string()).await;
    let authn = Authn::compile(&[rule(
        "iss",
        pb::jwt_rule::Jwks::JwksUri(discovery.uri.clone()),
    )])
    .expect("compiles");
    assert_eq!(
        run(&authn, &mut bearer(&key.sign(&claims("iss", "d"))), "/").await,
        Ok(Some("iss/d".into()))
    );
}
