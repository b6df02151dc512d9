//! The CA on a cluster (see `control::ca_secret`): replicas started
//! together share one self-signed root through the `istio-ca-secret` Secret,
//! Istio's plug-in `cacerts` Secret takes precedence over it, and a
//! replaced `cacerts` is reloaded without a restart.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::eventually;
use e2e::kube::{Kube, Trellisd, service_account_token};
use identity::{CertChain, KeyAndCsr, SpiffeId};
use wire::certs::{Issued, create_certificate};

/// A certificate for `sleep` from `trellisd`, once it serves, verifying it
/// with the root the leader publishes, or with `root_cert`.
///
/// The published root is read again on every try: while the CA is being
/// replaced, trellisd may already serve a certificate of the new root that
/// the ConfigMap, written a moment later, does not hold yet.
async fn issue(trellisd: &Trellisd, kube: &Kube, root_cert: Option<&Path>) -> Result<Issued> {
    let ns = &kube.namespace;
    let token = service_account_token(kube, ns, "sleep", "istio-ca")?;
    let id = SpiffeId::new("cluster.local", ns, "sleep")?;
    let key = KeyAndCsr::generate(&id)?;
    eventually(Duration::from_secs(60), || async {
        let xds = match root_cert {
            Some(path) => trellisd.xds_verified_by(path)?,
            None => trellisd.xds(kube).await?,
        };
        create_certificate(&xds, &token, key.csr_pem().to_string(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await
    .with_context(|| trellisd.log())
}

/// `key` of the Secret `name` in istio-system, decoded.
fn secret_key(kube: &Kube, name: &str, key: &str) -> Result<String> {
    kube.kubectl_ok(&[
        "get",
        "secret",
        name,
        "-n",
        "istio-system",
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_root_in_the_cluster_and_a_plugged_ca_wins() -> Result<()> {
    let Some(kube) = Kube::start("ca-secret")? else {
        return Ok(());
    };
    kube.kubectl_ok(&["create", "serviceaccount", "sleep", "-n", &kube.namespace])?;
    // Two replicas with CA directories of their own, started at once.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let dir = |i: usize| dirs[i].path().join("ca").display().to_string();
    let (a, b) = (dir(0), dir(1));
    let first = Trellisd::replica(&kube, 0, &["--ca-dir", &a])?;
    let second = Trellisd::replica(&kube, 1, &["--ca-dir", &b])?;
    let from_first = issue(&first, &kube, None).await?;
    let from_second = issue(&second, &kube, None).await?;
    ensure!(
        from_first.roots_pem.contains("BEGIN CERTIFICATE"),
        "a root: {}",
        from_first.roots_pem
    );
    ensure!(
        from_first.roots_pem == from_second.roots_pem,
        "both replicas sign under one root:\n{}\n{}\n{}\n{}",
        from_first.roots_pem,
        from_second.roots_pem,
        first.log(),
        second.log()
    );
    // It is the one in istio-ca-secret, Istio's Secret for it.
    let stored = secret_key(&kube, "istio-ca-secret", "ca-cert.pem")?;
    ensure!(
        stored.trim() == from_first.roots_pem.trim(),
        "istio-ca-secret holds the root: {stored}"
    );
    ensure!(
        secret_key(&kube, "istio-ca-secret", "ca-key.pem")?.contains("PRIVATE KEY"),
        "and its key"
    );
    let secret_type = kube.kubectl_ok(&[
        "get",
        "secret",
        "istio-ca-secret",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.type}",
    ])?;
    ensure!(secret_type == "istio.io/ca-root", "type {secret_type}");
    // Issued chains verify under it: each replica's leaf is signed by it.
    for issued in [&from_first, &from_second] {
        let chain = CertChain::from_pem(&issued.chain_pem)?;
        ensure!(chain.spiffe_id()? == SpiffeId::new("cluster.local", &kube.namespace, "sleep")?);
    }

    // The plug-in CA (Istio's `cacerts`: an intermediate under an
    // operator's root) takes precedence over the self-signed root.
    let fixture = e2e::repo_root().join("crates/identity/tests/fixtures/cacerts-openssl");
    let file = |name: &str| format!("--from-file={name}={}", fixture.join(name).display());
    kube.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        &file("ca-cert.pem"),
        &file("ca-key.pem"),
        &file("root-cert.pem"),
        &file("cert-chain.pem"),
    ])?;
    let plugged_dir = tempfile::tempdir()?;
    let c = plugged_dir.path().join("ca").display().to_string();
    let third = Trellisd::replica(&kube, 2, &["--ca-dir", &c])?;
    // Its certificate chains to the plug-in root, which the ConfigMap (the
    // first replica's, the leader) does not have yet: as a proxy would
    // after the operator plugs a CA in, it verifies with the new root.
    let plugged = issue(&third, &kube, Some(&fixture.join("root-cert.pem"))).await?;
    let root = std::fs::read_to_string(fixture.join("root-cert.pem"))?;
    let intermediate = std::fs::read_to_string(fixture.join("ca-cert.pem"))?;
    ensure!(
        plugged.roots_pem.trim() == root.trim(),
        "the plug-in root is trusted: {}\n{}",
        plugged.roots_pem,
        third.log()
    );
    let chain = CertChain::from_pem(&plugged.chain_pem)?;
    let intermediate = CertChain::from_pem(&intermediate)?;
    ensure!(
        chain.certs().get(1) == intermediate.certs().first(),
        "the leaf is signed by the plug-in CA, which comes with it"
    );
    Ok(())
}

/// A plug-in CA made for a test: a root named `name` and an intermediate
/// under it, as the files of Istio's `cacerts` Secret.
fn plug_in_ca(name: &str) -> Result<Vec<(&'static str, String)>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_params = |cn: String| {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let root_params = ca_params(format!("{name} root"));
    let root = root_params.self_signed(&root_key)?.pem();
    let issuer = Issuer::new(root_params, root_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let intermediate = ca_params(format!("{name} intermediate"))
        .signed_by(&key, &issuer)?
        .pem();
    Ok(vec![
        ("ca-cert.pem", intermediate.clone()),
        ("ca-key.pem", key.serialize_pem()),
        ("root-cert.pem", root.clone()),
        ("cert-chain.pem", format!("{intermediate}{root}")),
    ])
}

/// The `cacerts` Secret holding `files`, as YAML for `kubectl apply`.
fn cacerts_secret(files: &[(&str, String)]) -> String {
    let mut yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cacerts\n  namespace: istio-system\nstringData:\n".to_string();
    for (name, pem) in files {
        yaml.push_str(&format!("  {name}: |\n"));
        for line in pem.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml
}

fn file<'a>(files: &'a [(&str, String)], name: &str) -> &'a str {
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, pem)| pem.as_str())
        .unwrap_or_default()
}

/// Replacing the `cacerts` Secret while trellisd runs reloads its CA
/// without a restart (as istiod's since 1.22): the next certificate is
/// signed by the new intermediate and comes with the new root, and the
/// `istio-ca-root-cert` ConfigMaps carry the old root and the new one, so
/// workloads with certificates from the old chain stay trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_cacerts_secret_is_reloaded_without_a_restart() -> Result<()> {
    let Some(kube) = Kube::start("ca-reload")? else {
        return Ok(());
    };
    kube.kubectl_ok(&["create", "serviceaccount", "sleep", "-n", &kube.namespace])?;
    let (old, new) = (plug_in_ca("old")?, plug_in_ca("new")?);
    kube.apply(&cacerts_secret(&old))?;
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca").display().to_string();
    let trellisd = Trellisd::replica(&kube, 0, &["--ca-dir", &ca_dir])?;
    let intermediate = |files: &[(&str, String)]| -> Result<_> {
        Ok(CertChain::from_pem(file(files, "ca-cert.pem"))?
            .certs()
            .first()
            .cloned())
    };
    let signer = |issued: &Issued| -> Result<_> {
        Ok(CertChain::from_pem(&issued.chain_pem)?
            .certs()
            .get(1)
            .cloned())
    };
    let before = issue(&trellisd, &kube, None).await?;
    ensure!(
        signer(&before)? == intermediate(&old)?,
        "signed by the old intermediate"
    );
    ensure!(before.roots_pem.trim() == file(&old, "root-cert.pem").trim());
    let configmap = || {
        kube.kubectl_ok(&[
            "get",
            "configmap",
            "istio-ca-root-cert",
            "-n",
            &kube.namespace,
            "-o",
            "jsonpath={.data.root-cert\\.pem}",
        ])
    };
    let old_root = file(&old, "root-cert.pem").trim().to_string();
    let new_root = file(&new, "root-cert.pem").trim().to_string();
    eventually(Duration::from_secs(60), || async {
        let published = configmap()?;
        ensure!(published.trim() == old_root, "published: {published}");
        Ok(())
    })
    .await
    .with_context(|| trellisd.log())?;

    kube.apply(&cacerts_secret(&new))?;
    let after = eventually(Duration::from_secs(60), || async {
        let issued = issue(&trellisd, &kube, None).await?;
        ensure!(
            signer(&issued)? == intermediate(&new)?,
            "not yet signed by the new intermediate"
        );
        Ok(issued)
    })
    .await
    .with_context(|| trellisd.log())?;
    ensure!(
        after.roots_pem.contains(&new_root) && after.roots_pem.contains(&old_root),
        "the bundle has the new root and the old one while it is valid: {}",
        after.roots_pem
    );
    eventually(Duration::from_secs(60), || async {
        let published = configmap()?;
        ensure!(
            published.contains(&new_root) && published.contains(&old_root),
            "published: {published}"
        );
        Ok(())
    })
    .await
    .with_context(|| trellisd.log())?;
    Ok(())
}
