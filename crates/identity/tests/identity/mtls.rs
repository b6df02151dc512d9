//! Real rustls handshakes over loopback TCP between mesh workloads.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use identity::{CertChain, CertManager, ClientAuth, TlsError, TrustBundle, client_config};

use crate::common::*;

#[tokio::test]
async fn mtls_handshake_exposes_both_identities_and_xfcc() {
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let (httpbin, sleep) = (id("default", "httpbin"), id("default", "sleep"));
    let server_mgr = workload(&t.ca, &httpbin);
    let client_mgr = workload(&t.ca, &sleep);

    let out = exchange(
        server(server_mgr.clone(), &roots, ClientAuth::Required),
        client(
            client_mgr.clone(),
            &roots,
            [id("default", "other"), httpbin.clone()],
        ),
    )
    .await;
    assert_eq!(out.alpn.as_deref(), Some(&b"h2"[..]), "h2 preferred");
    let (seen_by_server, seen_by_client) = out.ok();
    let seen_by_server = seen_by_server.expect("client certificate required");
    assert_eq!(seen_by_server.id(), &sleep);
    assert_eq!(seen_by_client.id(), &httpbin);

    // XFCC exactly as Envoy writes it in Istio, Hash = SHA-256 of the client's leaf.
    let client_info = client_mgr.current().expect("client cert");
    let leaf = CertChain::from_pem(&client_info.chain_pem).expect("chain");
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.leaf());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        seen_by_server.xfcc(&httpbin),
        format!(
            "By=spiffe://cluster.local/ns/default/sa/httpbin;Hash={hash};Subject=\"\";\
             URI=spiffe://cluster.local/ns/default/sa/sleep"
        )
    );
}

#[tokio::test]
async fn wrong_server_identity_is_rejected_by_secure_naming() {
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let impostor = workload(&t.ca, &id("default", "httpbin"));
    let sleep = workload(&t.ca, &id("default", "sleep"));
    let out = exchange(
        server(impostor, &roots, ClientAuth::Required),
        client(sleep, &roots, [id("prod", "reviews")]),
    )
    .await;
    let err = out.client.expect_err("client must refuse the server");
    assert!(
        err.contains("peer identity spiffe://cluster.local/ns/default/sa/httpbin is not one of")
            && err.contains("spiffe://cluster.local/ns/prod/sa/reviews"),
        "{err}"
    );
    assert!(out.server.is_err(), "server sees the aborted handshake");
}

#[tokio::test]
async fn certificate_from_another_root_is_rejected_both_ways() {
    let (mesh, other) = (new_ca(), new_ca());
    let roots = mesh.ca.trust_bundle();
    let httpbin = id("default", "httpbin");

    // A client whose certificate comes from another root: the server refuses it.
    let out = exchange(
        server(workload(&mesh.ca, &httpbin), &roots, ClientAuth::Required),
        client(
            workload(&other.ca, &id("default", "sleep")),
            &roots,
            [httpbin.clone()],
        ),
    )
    .await;
    let err = out.server.expect_err("server must refuse the client");
    assert!(err.contains("not issued by a trusted mesh root"), "{err}");
    assert!(out.client.is_err(), "client sees the alert");

    // A server whose certificate comes from another root: the client refuses it.
    let out = exchange(
        server(workload(&other.ca, &httpbin), &roots, ClientAuth::Required),
        client(
            workload(&mesh.ca, &id("default", "sleep")),
            &roots,
            [httpbin],
        ),
    )
    .await;
    let err = out.client.expect_err("client must refuse the server");
    assert!(err.contains("not issued by a trusted mesh root"), "{err}");
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_rejected() {
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let (httpbin, sleep) = (id("default", "httpbin"), id("default", "sleep"));
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();

    // Issued two hours ago for one hour (even with notBefore backdating): expired.
    let expired = certified_at(&t.ca, &sleep, now - 2 * hour, hour);
    let out = exchange(
        server(workload(&t.ca, &httpbin), &roots, ClientAuth::Required),
        client(expired.clone(), &roots, [httpbin.clone()]),
    )
    .await;
    let err = out.server.expect_err("expired client certificate");
    assert!(err.contains("certificate expired at 20"), "{err}");
    let err = out.client.expect_err("client learns it was refused");
    assert!(
        err.contains("peer refused the handshake (TLS alert CertificateExpired)"),
        "{err}"
    );

    let out = exchange(
        server(
            certified_at(&t.ca, &httpbin, now - 2 * hour, hour),
            &roots,
            ClientAuth::Required,
        ),
        client(workload(&t.ca, &sleep), &roots, [httpbin.clone()]),
    )
    .await;
    let err = out.client.expect_err("expired server certificate");
    assert!(err.contains("certificate expired"), "{err}");

    // Issued an hour from now: not yet valid.
    let out = exchange(
        server(
            certified_at(&t.ca, &httpbin, now + hour, hour),
            &roots,
            ClientAuth::Required,
        ),
        client(workload(&t.ca, &sleep), &roots, [httpbin]),
    )
    .await;
    let err = out.client.expect_err("future server certificate");
    assert!(err.contains("certificate not valid yet"), "{err}");
}

#[tokio::test]
async fn strict_requires_a_client_certificate_permissive_does_not() {
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let httpbin = id("default", "httpbin");
    let server_mgr = workload(&t.ca, &httpbin);
    // A manager that never got a certificate presents none.
    let anonymous = Arc::new(CertManager::new(id("default", "anonymous")));

    let out = exchange(
        server(server_mgr.clone(), &roots, ClientAuth::Required),
        client(anonymous.clone(), &roots, [httpbin.clone()]),
    )
    .await;
    let err = out
        .server
        .expect_err("STRICT refuses a client without certificate");
    assert!(err.contains("peer presented no certificate"), "{err}");

    let out = exchange(
        server(server_mgr.clone(), &roots, ClientAuth::Optional),
        client(anonymous, &roots, [httpbin.clone()]),
    )
    .await;
    let (seen_by_server, seen_by_client) = out.ok();
    assert!(seen_by_server.is_none(), "unauthenticated client");
    assert_eq!(
        seen_by_client.id(),
        &httpbin,
        "the client still verifies the server"
    );

    // Optional does not mean unverified: a bad certificate is still refused.
    let other = new_ca();
    let out = exchange(
        server(server_mgr, &roots, ClientAuth::Optional),
        client(
            workload(&other.ca, &id("default", "sleep")),
            &roots,
            [httpbin],
        ),
    )
    .await;
    assert!(
        out.server
            .expect_err("bad client cert")
            .contains("not issued by a trusted mesh root")
    );
}

#[tokio::test]
async fn server_without_a_certificate_yet_refuses_handshakes() {
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let httpbin = id("default", "httpbin");
    let not_ready = Arc::new(CertManager::new(httpbin.clone()));
    let out = exchange(
        server(not_ready, &roots, ClientAuth::Required),
        client(workload(&t.ca, &id("default", "sleep")), &roots, [httpbin]),
    )
    .await;
    assert!(out.server.is_err() && out.client.is_err());
}

#[tokio::test]
async fn root_rotation_updates_trust_without_rebuilding_configs() {
    let (old, new) = (new_ca(), new_ca());
    let old_root = old.ca.roots().concat();
    let both = [old.ca.roots(), new.ca.roots()].concat().concat();
    let (httpbin, sleep) = (id("default", "httpbin"), id("default", "sleep"));

    // One bundle shared by both sides' configs, built once.
    let roots = TrustBundle::from_pem(&old_root).expect("bundle");
    let server_mgr = workload(&old.ca, &httpbin);
    let server_cfg = server(server_mgr.clone(), &roots, ClientAuth::Required);
    let new_client = client(workload(&new.ca, &sleep), &roots, [httpbin.clone()]);

    let out = exchange(server_cfg.clone(), new_client.clone()).await;
    assert!(out.server.is_err(), "new root not trusted yet");

    // Overlap: both roots trusted; old and new certificates interoperate.
    roots.update(&both).expect("update");
    let (seen, _) = exchange(server_cfg.clone(), new_client.clone()).await.ok();
    assert_eq!(seen.expect("client cert").id(), &sleep);
    // The same server, during the overlap, still takes clients of the old root:
    // a proxy trusting {old, new} accepts peers signed by either.
    let old_client = client(workload(&old.ca, &sleep), &roots, [httpbin.clone()]);
    let (seen, by_client) = exchange(server_cfg.clone(), old_client).await.ok();
    assert_eq!(seen.expect("client cert").id(), &sleep);
    assert_eq!(by_client.id(), &httpbin);
    // ... and the Ca can serve both roots to workloads meanwhile.
    let serving_both = Arc::try_unwrap(new.ca)
        .expect("sole owner")
        .with_extra_roots(&old_root)
        .expect("extra roots");
    assert_eq!(serving_both.roots().len(), 2);

    // Old root retired: certificates under it are refused from the next handshake on.
    roots.update(&serving_both.roots()[0]).expect("update");
    let out = exchange(server_cfg, new_client).await;
    assert!(
        out.client
            .expect_err("old-root server")
            .contains("not issued by a trusted mesh root")
    );
}

#[test]
fn a_destination_without_expected_identities_is_refused() {
    let t = new_ca();
    let mgr = workload(&t.ca, &id("default", "sleep"));
    let err = client_config(mgr, &t.ca.trust_bundle(), Vec::new()).expect_err("must refuse");
    assert!(matches!(err, TlsError::NoExpectedIdentities), "{err}");
}
