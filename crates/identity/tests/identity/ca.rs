//! The CA: persistence of the self-signed root, plug-in cacerts, and what it will
//! and will not sign.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use identity::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, Ca, CaError, CertChain, ClientAuth, KeyAndCsr,
    ROOT_CERT_FILE,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::common::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// The PEM body (base64 lines) of a file, to look for it in Debug output.
fn pem_body(path: &Path) -> String {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[test]
fn self_signed_root_is_created_once_and_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let first = Ca::self_signed(TD, &ca_dir).expect("first start");
    let key_path = ca_dir.join(CA_KEY_FILE);
    let cert_path = ca_dir.join(CA_CERT_FILE);
    assert_eq!(mode(&key_path), 0o600, "private key readable by owner only");
    assert_eq!(mode(&cert_path), 0o644);
    assert_eq!(mode(&ca_dir), 0o700);
    let key_before = fs::read(&key_path).expect("key");

    // The root: ECDSA P-256, CA, O=<trust domain>, ~10 years.
    let roots = first.roots();
    assert_eq!(roots.len(), 1);
    let der = pem::parse(&roots[0]).expect("pem").into_contents();
    let (_, root) = X509Certificate::from_der(&der).expect("x509");
    assert!(root.is_ca());
    assert_eq!(root.subject().to_string(), format!("O={TD}"));
    assert_eq!(root.subject(), root.issuer(), "self-signed");
    let years =
        (root.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days() / 365;
    assert!((9..=10).contains(&years), "{years} years");
    assert_eq!(
        root.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "EC key"
    );

    // Restart: same root, same key, nothing rewritten.
    drop(first);
    let second = Ca::self_signed(TD, &ca_dir).expect("restart");
    assert_eq!(second.roots(), roots);
    assert_eq!(fs::read(&key_path).expect("key"), key_before);
    assert_eq!(mode(&key_path), 0o600);

    // The Debug of a CA never shows its key.
    let debug = format!("{second:?} {second:#?}");
    assert!(!debug.contains(&pem_body(&key_path)[..40]), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[tokio::test]
async fn self_signed_recovers_a_missing_cert_but_not_a_missing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::self_signed(TD, dir.path()).expect("first");
    let key_path = dir.path().join(CA_KEY_FILE);
    let cert_path = dir.path().join(CA_CERT_FILE);

    // Crash between writing the key and the certificate: the key is reused, so the
    // new root certificate (same key, same name) verifies what the old one would.
    fs::remove_file(&cert_path).expect("rm cert");
    let again = Ca::self_signed(TD, dir.path()).expect("recovers");
    assert_ne!(
        again.roots(),
        first.roots(),
        "a new certificate over the same key"
    );
    let httpbin = id("default", "httpbin");
    let old_roots = first.trust_bundle();
    let (seen, _) = exchange(
        server(workload(&again, &httpbin), &old_roots, ClientAuth::Required),
        client(
            workload(&again, &id("default", "sleep")),
            &old_roots,
            [httpbin],
        ),
    )
    .await
    .ok();
    assert!(seen.is_some());

    // The key gone but the certificate there: refuse, naming the file.
    fs::remove_file(&key_path).expect("rm key");
    let err = Ca::self_signed(TD, dir.path()).expect_err("must not invent a new key");
    let msg = err.to_string();
    assert!(
        msg.contains("ca-key.pem") && msg.contains("restore"),
        "{msg}"
    );

    let err = Ca::self_signed("Bad_Domain!", dir.path()).expect_err("bad trust domain");
    assert!(matches!(err, CaError::TrustDomain(_)), "{err}");
}

#[test]
fn concurrent_first_starts_agree_on_one_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared");
    let roots: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Ca::self_signed(TD, &path).expect("start").roots()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "all see the same root"
    );
    let leftovers: Vec<_> = fs::read_dir(&path)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only ca-cert.pem and ca-key.pem: {leftovers:?}"
    );
}

#[test]
fn issued_certificates_have_the_workload_profile() {
    let t = new_ca();
    let sleep = id("default", "sleep");
    let sign = |ttl| {
        let key = KeyAndCsr::generate(&sleep).expect("key");
        t.ca.sign(key.csr_pem(), &sleep, ttl).expect("signed")
    };
    let chain = sign(None);
    let before = OffsetDateTime::now_utc();
    let (_, leaf) = X509Certificate::from_der(chain.leaf()).expect("x509");

    assert!(!leaf.is_ca(), "a leaf");
    let bc = leaf
        .basic_constraints()
        .expect("bc")
        .expect("explicit basicConstraints");
    assert!(!bc.value.ca);
    let san = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("has SAN");
    assert!(san.critical, "empty subject ⇒ critical SAN");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/default/sa/sleep"
        )]
    );
    assert_eq!(leaf.subject().iter().count(), 0, "empty subject as Istio");
    let ku = leaf.key_usage().expect("ku").expect("has KU").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("has EKU")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(leaf.raw_serial().len() >= 16, "128-bit random serial");

    // Default TTL 24 h; notBefore backdated a little for clock skew.
    let nb = leaf.validity().not_before.to_datetime();
    let na = leaf.validity().not_after.to_datetime();
    let skew = (before - nb).whole_seconds();
    assert!((60..=180).contains(&skew), "backdated {skew}s");
    let ttl = (na - before).whole_seconds();
    assert!((24 * 3600 - 10..=24 * 3600).contains(&ttl), "ttl {ttl}s");

    // Serials differ; 90 days is granted, longer refused (as Istio's CA);
    // a lifetime of seconds is honoured exactly.
    assert_ne!(
        chain.info().expect("info").serial,
        sign(None).info().expect("info").serial
    );
    let max = sign(Some(identity::MAX_WORKLOAD_TTL)).info().expect("info");
    let days = (max.not_after - before).whole_days();
    assert!((89..=90).contains(&days), "90 days granted, got {days}");
    let key = KeyAndCsr::generate(&sleep).expect("key");
    let err =
        t.ca.sign(
            key.csr_pem(),
            &sleep,
            Some(identity::MAX_WORKLOAD_TTL + Duration::from_secs(1)),
        )
        .expect_err("longer than the maximum");
    assert!(
        matches!(err, CaError::Ttl(_))
            && err
                .to_string()
                .contains("requested TTL 7776001s is greater than the max allowed TTL 7776000s"),
        "{err}"
    );
    for secs in [1, 4] {
        let short = sign(Some(Duration::from_secs(secs))).info().expect("info");
        // notBefore and notAfter come from one clock reading: the lifetime is exact.
        assert_eq!(
            (short.not_after - short.not_before).whole_seconds(),
            (identity::CLOCK_SKEW_ALLOWANCE.as_secs() + secs) as i64,
            "{short:?}"
        );
    }
}

#[test]
fn csr_for_another_identity_is_refused() {
    let t = new_ca();
    let sleep = id("default", "sleep");
    let admin = id("istio-system", "istiod");

    // A workload authenticated as `sleep` asking for `istiod`.
    let csr = KeyAndCsr::generate(&admin).expect("key");
    let err =
        t.ca.sign(csr.csr_pem(), &sleep, None)
            .expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("spiffe://cluster.local/ns/istio-system/sa/istiod")
            && msg.contains("authenticated as spiffe://cluster.local/ns/default/sa/sleep"),
        "{msg}"
    );

    // Its own id plus another SAN (DNS or a second URI) is refused as well.
    let key = KeyPair::generate().expect("key");
    for extra in [
        SanType::DnsName("istiod.istio-system.svc".try_into().expect("dns")),
        SanType::URI(admin.to_string().try_into().expect("uri")),
    ] {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI(sleep.to_string().try_into().expect("uri")),
            extra,
        ];
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let err = t.ca.sign(&csr, &sleep, None).expect_err("extra SAN");
        assert!(matches!(err, CaError::IdentityMismatch { .. }), "{err}");
    }

    // No SAN at all.
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(matches!(
        t.ca.sign(&csr, &sleep, None),
        Err(CaError::IdentityMismatch { .. })
    ));

    // A CSR whose signature does not verify (tampered body) proves no key possession.
    let good = KeyAndCsr::generate(&sleep).expect("key");
    let mut der = pem::parse(good.csr_pem()).expect("pem").into_contents();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err =
        t.ca.sign(&tampered, &sleep, None)
            .expect_err("bad signature");
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );

    // Not a CSR at all.
    let err =
        t.ca.sign(&t.ca.roots()[0], &sleep, None)
            .expect_err("a certificate");
    assert!(
        err.to_string().contains("expected \"CERTIFICATE REQUEST\""),
        "{err}"
    );
}

/// Writes a plug-in cacerts directory with root → intermediate made by rcgen.
fn write_plugin_cacerts(dir: &Path, with_chain: bool) -> (String, String) {
    let root_key = KeyPair::generate().expect("key");
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    root.distinguished_name
        .push(DnType::CommonName, "Example Root CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).expect("root");
    let root_issuer = rcgen::Issuer::new(root, root_key);

    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    ca.distinguished_name
        .push(DnType::CommonName, "Mesh Intermediate CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.use_authority_key_identifier_extension = true;
    let ca_cert = ca.signed_by(&ca_key, &root_issuer).expect("intermediate");

    fs::write(dir.join(CA_CERT_FILE), ca_cert.pem()).expect("write");
    fs::write(dir.join(CA_KEY_FILE), ca_key.serialize_pem()).expect("write");
    fs::write(dir.join(ROOT_CERT_FILE), root_cert.pem()).expect("write");
    if with_chain {
        fs::write(dir.join(CERT_CHAIN_FILE), ca_cert.pem() + &root_cert.pem()).expect("write");
    }
    (root_cert.pem(), ca_cert.pem())
}

#[tokio::test]
async fn plugin_cacerts_load_and_the_chain_is_served() {
    for with_chain in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root_pem, ca_pem) = write_plugin_cacerts(dir.path(), with_chain);
        let ca = Ca::from_cacerts(dir.path()).expect("plug-in CA loads");
        assert_eq!(
            ca.roots(),
            vec![root_pem.clone()],
            "workloads trust the root"
        );

        // Issued chains are leaf + intermediate (never the root).
        let sleep = id("default", "sleep");
        let key = KeyAndCsr::generate(&sleep).expect("key");
        let chain = ca.sign(key.csr_pem(), &sleep, None).expect("signed");
        assert_eq!(chain.certs().len(), 2);
        assert_eq!(
            CertChain::from_pem(&ca_pem).expect("pem").leaf(),
            &chain.certs()[1]
        );

        // And two workloads from it complete mTLS through the intermediate.
        let roots = ca.trust_bundle();
        let httpbin = id("default", "httpbin");
        let (seen, _) = exchange(
            server(workload(&ca, &httpbin), &roots, ClientAuth::Required),
            client(workload(&ca, &sleep), &roots, [httpbin]),
        )
        .await
        .ok();
        assert_eq!(seen.expect("client cert").id(), &sleep);
    }
}

#[tokio::test]
async fn openssl_made_cacerts_with_pkcs1_rsa_key_work() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cacerts-openssl");
    let ca = Arc::new(Ca::from_cacerts(&dir).expect("Istio-style cacerts load"));
    let roots = ca.trust_bundle();
    let (httpbin, sleep) = (id("default", "httpbin"), id("default", "sleep"));
    let server_mgr = workload(&ca, &httpbin);
    assert_eq!(
        CertChain::from_pem(&server_mgr.current().expect("cert").chain_pem)
            .expect("chain")
            .certs()
            .len(),
        2,
        "leaf + intermediate"
    );
    let (seen, _) = exchange(
        server(server_mgr, &roots, ClientAuth::Required),
        client(workload(&ca, &sleep), &roots, [httpbin]),
    )
    .await
    .ok();
    assert_eq!(seen.expect("client cert").id(), &sleep);
}

#[test]
fn broken_plugin_cacerts_fail_at_startup_naming_the_file() {
    // Missing root-cert.pem.
    let dir = tempfile::tempdir().expect("tempdir");
    write_plugin_cacerts(dir.path(), true);
    fs::remove_file(dir.path().join(ROOT_CERT_FILE)).expect("rm");
    let msg = Ca::from_cacerts(dir.path())
        .expect_err("missing root")
        .to_string();
    assert!(msg.contains("root-cert.pem: missing"), "{msg}");

    // A key that does not belong to ca-cert.pem.
    let dir = tempfile::tempdir().expect("tempdir");
    write_plugin_cacerts(dir.path(), true);
    fs::write(
        dir.path().join(CA_KEY_FILE),
        KeyPair::generate().expect("k").serialize_pem(),
    )
    .expect("w");
    let err = Ca::from_cacerts(dir.path()).expect_err("key mismatch");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("ca-key.pem does not match"),
        "{err}"
    );

    // root-cert.pem from another hierarchy: issued certificates would never verify.
    let dir = tempfile::tempdir().expect("tempdir");
    write_plugin_cacerts(dir.path(), false);
    let other = tempfile::tempdir().expect("tempdir");
    let (other_root, _) = write_plugin_cacerts(other.path(), false);
    fs::write(dir.path().join(ROOT_CERT_FILE), other_root).expect("w");
    let err = Ca::from_cacerts(dir.path()).expect_err("wrong root");
    assert!(matches!(err, CaError::ChainCheck { .. }), "{err}");
    // Same subject names in both hierarchies, so webpki finds the wrong root by
    // name and then reports its signature check failing.
    assert!(
        err.to_string()
            .contains("does not verify against its roots: invalid peer certificate: BadSignature"),
        "{err}"
    );

    // cert-chain.pem that does not start with ca-cert.pem.
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = write_plugin_cacerts(dir.path(), false);
    fs::write(dir.path().join(CERT_CHAIN_FILE), root).expect("w");
    let msg = Ca::from_cacerts(dir.path())
        .expect_err("bad chain")
        .to_string();
    assert!(msg.contains("cert-chain.pem: must start with"), "{msg}");

    // ca-cert.pem that is not a CA (a workload leaf).
    let dir = tempfile::tempdir().expect("tempdir");
    write_plugin_cacerts(dir.path(), false);
    let t = new_ca();
    let sleep = id("default", "sleep");
    let key = KeyAndCsr::generate(&sleep).expect("key");
    let leaf = t.ca.sign(key.csr_pem(), &sleep, None).expect("signed");
    fs::write(dir.path().join(CA_CERT_FILE), leaf.to_pem()).expect("w");
    let err = Ca::from_cacerts(dir.path()).expect_err("not a CA");
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
}

/// A CA replaced while running (new plug-in material) keeps the previous
/// CA's roots in its bundle, after its own, but only those not expired.
#[test]
fn a_replacing_ca_keeps_the_previous_roots_that_are_still_valid() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut expired = CertificateParams::default();
    expired.distinguished_name = DistinguishedName::new();
    expired
        .distinguished_name
        .push(DnType::CommonName, "expired root");
    expired.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    expired.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    expired.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
    expired.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = expired
        .self_signed(&KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
        .unwrap()
        .pem();
    let old = Ca::self_signed("cluster.local", old_dir.path())
        .unwrap()
        .with_extra_roots(&expired)
        .unwrap();
    assert_eq!(old.roots().len(), 2);
    let new = Ca::self_signed("cluster.local", new_dir.path()).unwrap();
    let own = new.roots();
    let replacing = new.with_previous_roots(&old).unwrap();
    assert_eq!(replacing.roots(), [own[0].clone(), old.roots()[0].clone()]);
    // Replaced again by the same material: nothing twice.
    let again = Ca::self_signed("cluster.local", new_dir.path())
        .unwrap()
        .with_previous_roots(&replacing)
        .unwrap();
    assert_eq!(again.roots(), replacing.roots());
}
