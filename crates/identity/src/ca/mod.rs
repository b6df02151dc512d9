//! The mesh certificate authority: signs workload CSRs for authenticated callers.
//!
//! Two ways to get a signing key, as in Istio:
//! - [`Ca::self_signed`]: a root made on first start and kept in a directory
//!   (`ca-cert.pem` 0644, `ca-key.pem` 0600) so restarts keep the same trust.
//! - [`Ca::from_cacerts`]: Istio's plug-in CA files (`ca-cert.pem`, `ca-key.pem`,
//!   `root-cert.pem`, `cert-chain.pem`); issued chains then carry the intermediates.
//!
//! The CA never trusts the CSR for anything but its public key and the identity it
//! asks for, and that identity must be exactly the one the caller authenticated as.

mod files;
mod keys;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

use crate::cert::{CertChain, CertError, LeafFacts, certs_from_pem, der_to_pem};
use crate::spiffe::SpiffeId;
use crate::tls::crypto_provider;
use crate::trust::TrustBundle;
use crate::workload::KeyAndCsr;

/// Istio's plug-in CA file names (also used for the self-signed root's directory).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Workload certificate lifetime when the caller asks for none (Istio: 24 h).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest workload certificate lifetime granted (Istio's max-workload-cert-ttl: 90 days).
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Self-signed root lifetime (Istio: 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// notBefore is set this far in the past so that peers whose clocks run a little
/// behind the CA's do not reject a certificate as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(120);

/// Why the CA could not start or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: missing; {hint}", path.display())]
    Missing { path: PathBuf, hint: &'static str },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{}: certificate is not a CA (basicConstraints CA:TRUE missing)", path.display())]
    NotCa { path: PathBuf },
    #[error("{} does not match {}: their public keys differ", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: CA certificate expired at {not_after}", path.display())]
    Expired {
        path: PathBuf,
        not_after: OffsetDateTime,
    },
    #[error(
        "{}: a certificate issued by this CA does not verify against its roots: {reason}",
        dir.display()
    )]
    ChainCheck { dir: PathBuf, reason: String },
    #[error("invalid trust domain: {0}")]
    TrustDomain(String),
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error(
        "CSR asks for {requested:?} but the caller is authenticated as {authenticated}: \
         a workload may only obtain a certificate for its own identity"
    )]
    IdentityMismatch {
        authenticated: SpiffeId,
        requested: Vec<String>,
    },
    #[error("invalid certificate lifetime: {0}")]
    Ttl(String),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// What a mesh workload certificate says, as Istio's CA issues it: an empty
/// subject (rcgen then marks the SAN extension critical, RFC 5280), `id` as
/// the one URI SAN, no CA, TLS server and client use, the issuer's key id.
/// The issuer sets serial and validity.
pub fn workload_cert_params(id: &SpiffeId) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A certificate authority for workload identities.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
    /// Sent after the leaf: the CA certificate and intermediates, never a root.
    chain: Vec<CertificateDer<'static>>,
    roots: TrustBundle,
    default_ttl: Duration,
    max_ttl: Duration,
    dir: PathBuf,
}

/// The pieces both constructors assemble a `Ca` from.
struct Material {
    dir: PathBuf,
    cert: CertificateDer<'static>,
    cert_path: PathBuf,
    key: KeyPair,
    key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
}

impl Ca {
    /// Opens the self-signed root CA kept in `dir`, creating it on first start:
    /// ECDSA P-256, 10 years, subject `O=<trust_domain>` (as Istio's self-signed root).
    ///
    /// Later starts load the same key and certificate, so workloads keep trusting it.
    /// Safe against crashes (no torn files) and against two processes starting at once.
    pub fn self_signed(trust_domain: &str, dir: &Path) -> Result<Ca, CaError> {
        // Reuse SpiffeId's trust-domain rules so the root's O= is a valid trust domain.
        SpiffeId::new(trust_domain, "ns", "sa").map_err(|e| CaError::TrustDomain(e.to_string()))?;
        files::ensure_dir(dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);

        let key_pem = match files::read_optional(&key_path)? {
            Some(pem) => pem,
            None => {
                if cert_path.exists() {
                    // Never pair an existing root certificate with a fresh key: every
                    // workload would silently stop verifying. Make the operator choose.
                    return Err(CaError::Missing {
                        path: key_path,
                        hint: "ca-cert.pem exists without its key; restore ca-key.pem, \
                               or delete both to create a new root",
                    });
                }
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| CaError::Sign(format!("generating the root key: {e}")))?;
                if files::create_new(&key_path, &key.serialize_pem(), 0o600)? {
                    tracing::info!(path = %key_path.display(), "created CA root key");
                }
                // Read back what is on disk: another process may have won the race.
                files::read_required(&key_path, "just created")?
            }
        };
        files::warn_if_key_exposed(&key_path);
        let key = keys::key_from_pem(&key_pem).map_err(|reason| CaError::BadFile {
            path: key_path.clone(),
            reason,
        })?;

        let cert_pem = match files::read_optional(&cert_path)? {
            Some(pem) => pem,
            None => {
                // Also reached after a crash between writing the key and the cert: the
                // key is kept, nothing was ever issued under the missing certificate.
                let cert = self_signed_root(trust_domain, &key)?;
                if files::create_new(&cert_path, &der_to_pem(&cert), 0o644)? {
                    tracing::info!(path = %cert_path.display(), %trust_domain, "created self-signed CA root");
                }
                files::read_required(&cert_path, "just created")?
            }
        };
        let cert = first_cert(&cert_path, &cert_pem)?;
        let facts = LeafFacts::of(&cert_path.display().to_string(), &cert)?;
        let ca = Ca::assemble(Material {
            dir: dir.to_path_buf(),
            roots: vec![cert.clone()],
            cert,
            cert_path,
            key,
            key_path,
            chain: Vec::new(),
        })?;
        tracing::info!(dir = %dir.display(), serial = %facts.serial, not_after = %facts.not_after, "CA ready (self-signed root)");
        Ok(ca)
    }

    /// Loads Istio's plug-in CA files from `dir`: `ca-cert.pem` (the signing CA),
    /// `ca-key.pem` (its key: PKCS#8, PKCS#1 RSA or SEC1 EC), `root-cert.pem` (the
    /// root(s) workloads trust) and, optionally, `cert-chain.pem` (from `ca-cert`
    /// up to the root), whose non-root certificates are sent with every leaf.
    pub fn from_cacerts(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let chain_path = dir.join(CERT_CHAIN_FILE);
        let hint = "a plug-in CA needs ca-cert.pem, ca-key.pem and root-cert.pem";

        let cert = first_cert(&cert_path, &files::read_required(&cert_path, hint)?)?;
        let key_pem = files::read_required(&key_path, hint)?;
        files::warn_if_key_exposed(&key_path);
        let key = keys::key_from_pem(&key_pem).map_err(|reason| CaError::BadFile {
            path: key_path.clone(),
            reason,
        })?;
        let roots = certs_in(&root_path, &files::read_required(&root_path, hint)?)?;

        let chain = match files::read_optional(&chain_path)? {
            // Istio's own secrets may hold an empty cert-chain.pem: same as absent.
            Some(pem) if !pem.trim().is_empty() => {
                let listed = certs_in(&chain_path, &pem)?;
                if listed.first() != Some(&cert) {
                    return Err(CaError::BadFile {
                        path: chain_path,
                        reason: "must start with the certificate in ca-cert.pem".into(),
                    });
                }
                listed.into_iter().filter(|c| !roots.contains(c)).collect()
            }
            _ if roots.contains(&cert) => Vec::new(),
            _ => vec![cert.clone()],
        };
        let ca = Ca::assemble(Material {
            dir: dir.to_path_buf(),
            cert,
            cert_path,
            key,
            key_path,
            chain,
            roots,
        })?;
        tracing::info!(
            dir = %dir.display(),
            intermediates = ca.chain.len(),
            roots = ca.roots.certs().len(),
            "CA ready (plug-in certificates)"
        );
        Ok(ca)
    }

    fn assemble(m: Material) -> Result<Ca, CaError> {
        let facts = LeafFacts::of(&m.cert_path.display().to_string(), &m.cert)?;
        if !facts.is_ca {
            return Err(CaError::NotCa { path: m.cert_path });
        }
        if facts.public_key != m.key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: m.cert_path,
                key: m.key_path,
            });
        }
        if facts.not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::Expired {
                path: m.cert_path,
                not_after: facts.not_after,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&m.cert, m.key).map_err(|e| CaError::BadFile {
            path: m.cert_path.clone(),
            reason: format!("cannot use as issuer: {e}"),
        })?;
        let ca = Ca {
            issuer,
            issuer_not_after: facts.not_after,
            chain: m.chain,
            roots: TrustBundle::from_certs(m.roots)?,
            default_ttl: DEFAULT_WORKLOAD_TTL,
            max_ttl: MAX_WORKLOAD_TTL,
            dir: m.dir,
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// Issues a throwaway certificate and verifies it as a peer would, so that
    /// mismatched plug-in files fail at startup instead of in every handshake.
    fn self_check(&self) -> Result<(), CaError> {
        let fail = |reason: String| CaError::ChainCheck {
            dir: self.dir.clone(),
            reason,
        };
        let probe = SpiffeId::new("trellis.invalid", "trellis-system", "ca-self-check")
            .map_err(|e| fail(e.to_string()))?;
        let csr = KeyAndCsr::generate(&probe)?;
        let chain = self.issue(
            csr.csr_pem(),
            &probe,
            Some(Duration::from_secs(60)),
            SystemTime::now(),
        )?;
        let leaf = ParsedCertificate::try_from(chain.leaf()).map_err(|e| fail(e.to_string()))?;
        let provider = crypto_provider();
        verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &self.roots.load().store,
            &chain.certs()[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| fail(e.to_string()))
    }

    /// Also trusts the roots in `pem` (concatenated PEM): during a root rotation,
    /// serve old and new roots together until every workload has a new certificate.
    pub fn with_extra_roots(self, pem: &str) -> Result<Ca, CaError> {
        let mut roots = self.roots.certs();
        for cert in certs_from_pem("extra roots", pem)? {
            if !roots.contains(&cert) {
                roots.push(cert);
            }
        }
        Ok(Ca {
            roots: TrustBundle::from_certs(roots)?,
            ..self
        })
    }

    /// Also trusts those of `previous`'s roots that have not expired: a
    /// plug-in CA replaced while running (new `cacerts`) keeps the old roots
    /// in its bundle while workloads still hold certificates chained to them.
    pub fn with_previous_roots(self, previous: &Ca) -> Result<Ca, CaError> {
        let now = OffsetDateTime::now_utc();
        let valid: String = previous
            .roots
            .certs()
            .iter()
            .filter(|c| LeafFacts::of("previous root", c).is_ok_and(|f| f.not_after > now))
            // A reload of the same material (the Secret watch's first
            // event) must not list a root twice.
            .filter(|c| !self.roots.certs().contains(c))
            .map(|c| der_to_pem(c))
            .collect();
        if valid.is_empty() {
            return Ok(self);
        }
        self.with_extra_roots(&valid)
    }

    /// Lifetime used when a CSR asks for none (default 24 h).
    pub fn with_default_ttl(self, ttl: Duration) -> Ca {
        Ca {
            default_ttl: ttl,
            ..self
        }
    }

    /// Longest lifetime granted; longer requests are refused (default 90 days).
    pub fn with_max_ttl(self, ttl: Duration) -> Ca {
        Ca {
            max_ttl: ttl,
            ..self
        }
    }

    /// The trust bundle workloads need: one PEM per root.
    pub fn roots(&self) -> Vec<String> {
        self.roots.certs().iter().map(|c| der_to_pem(c)).collect()
    }

    /// The trust bundle as a [`TrustBundle`], for TLS configs in the same process.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.roots.clone()
    }

    /// Signs `csr_pem` for `authenticated`, the identity the caller proved (bootstrap
    /// token, service-account token). Refused unless the CSR's SANs are exactly one
    /// URI equal to `authenticated`. `ttl`: `None` or zero means the default; longer
    /// than the maximum is refused ([`CaError::Ttl`]), as Istio's CA does, so that a
    /// proxy never silently runs with a lifetime other than the one it was given.
    /// Any other length is granted, down to one second (renewal at half-life then
    /// runs twice a second; `CertManager` never renews more often than every 100 ms).
    /// Returns leaf + intermediates (no root).
    pub fn sign(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<CertChain, CaError> {
        self.sign_at(csr_pem, authenticated, ttl, SystemTime::now())
    }

    /// [`sign`](Self::sign) as if the clock read `now`. For tests and tools that need
    /// certificates valid in the past or future (e.g. to show expired ones rejected).
    pub fn sign_at(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<CertChain, CaError> {
        let result = self.issue(csr_pem, authenticated, ttl, now);
        match &result {
            Ok(chain) => {
                if let Ok(info) = chain.info() {
                    tracing::info!(id = %authenticated, serial = %info.serial, not_after = %info.not_after, "issued workload certificate");
                }
            }
            Err(error) => {
                tracing::warn!(id = %authenticated, %error, "refused to issue certificate")
            }
        }
        result
    }

    fn issue(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<CertChain, CaError> {
        let (public_key, requested) = parse_csr(csr_pem)?;
        if requested.len() != 1 || requested[0] != authenticated.to_string() {
            return Err(CaError::IdentityMismatch {
                authenticated: authenticated.clone(),
                requested,
            });
        }
        let ttl = ttl.filter(|t| !t.is_zero()).unwrap_or(self.default_ttl);
        if ttl > self.max_ttl {
            return Err(CaError::Ttl(format!(
                "requested TTL {}s is greater than the max allowed TTL {}s",
                ttl.as_secs(),
                self.max_ttl.as_secs()
            )));
        }
        let now = OffsetDateTime::from(now);
        let not_after = add(now, ttl)?.min(self.issuer_not_after);

        let mut params = workload_cert_params(authenticated)
            .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?;
        params.serial_number = Some(random_serial());
        params.not_before = sub(now, CLOCK_SKEW_ALLOWANCE)?;
        params.not_after = not_after;

        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut certs = vec![leaf.der().clone()];
        certs.extend(self.chain.iter().cloned());
        Ok(CertChain::from_der(certs)?)
    }
}

impl Ca {
    /// A TLS serving certificate for the control plane's own names (as
    /// istiod's DNS certificate for its webhooks and discovery port): a new
    /// ECDSA P-256 key, `names` as DNS SANs and `ips` as IP SANs, server
    /// use only. Returns the chain (leaf + intermediates) and the key, PEM.
    /// The key never leaves the caller's process.
    pub fn issue_serving_cert(
        &self,
        names: &[String],
        ips: &[std::net::IpAddr],
        ttl: Duration,
    ) -> Result<(CertChain, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|e| CaError::Sign(e.to_string()))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.serial_number = Some(random_serial());
        params.not_before = sub(now, CLOCK_SKEW_ALLOWANCE)?;
        params.not_after = add(now, ttl)?.min(self.issuer_not_after);
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut certs = vec![leaf.der().clone()];
        certs.extend(self.chain.iter().cloned());
        Ok((CertChain::from_der(certs)?, key.serialize_pem()))
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The issuer's own Debug elides the key; list only what identifies the CA.
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("issuer_not_after", &self.issuer_not_after)
            .field("intermediates", &self.chain.len())
            .field("roots", &self.roots)
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn self_signed_root(trust_domain: &str, key: &KeyPair) -> Result<CertificateDer<'static>, CaError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = sub(now, CLOCK_SKEW_ALLOWANCE)?;
    params.not_after = add(now, ROOT_TTL)?;
    let cert = params
        .self_signed(key)
        .map_err(|e| CaError::Sign(format!("self-signing the root: {e}")))?;
    Ok(cert.der().clone())
}

/// The CSR's public key and the SANs it asks for (URIs as-is, others prefixed with
/// their kind so that a mismatch message shows them).
fn parse_csr(csr_pem: &str) -> Result<(SubjectPublicKeyInfo, Vec<String>), CaError> {
    let block = pem::parse(csr_pem).map_err(|e| CaError::Csr(format!("not PEM: {e}")))?;
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CaError::Csr(format!(
            "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
            block.tag()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| CaError::Csr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::Csr("trailing bytes after the request".into()));
    }
    // Proof of possession: only the holder of the private key can sign the request.
    csr.verify_signature()
        .map_err(|e| CaError::Csr(format!("signature does not verify: {e}")))?;
    let mut requested = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                requested.extend(san.general_names.iter().map(|name| match name {
                    GeneralName::URI(uri) => (*uri).to_owned(),
                    other => other.to_string(),
                }));
            }
            ParsedExtension::ParseError { error } => {
                return Err(CaError::Csr(format!(
                    "malformed requested extension: {error}"
                )));
            }
            // Other requested extensions (key usage, basic constraints, ...) are
            // ignored: the CA decides those, never the requester.
            _ => {}
        }
    }
    let public_key = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| CaError::Csr(format!("unsupported public key: {e}")))?;
    Ok((public_key, requested))
}

/// A positive, non-zero, 128-bit random serial (RFC 5280: at most 20 octets; random
/// so that serials cannot be predicted).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        // Keep the DER INTEGER minimal and positive without a leading zero octet.
        bytes[0] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = certs_in(path, pem)?;
    Ok(certs.swap_remove(0))
}

fn certs_in(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    certs_from_pem(&path.display().to_string(), pem).map_err(|e| CaError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn add(t: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, CaError> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .ok_or_else(|| CaError::Ttl(format!("{d:?} after {t} is out of range")))
}

fn sub(t: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, CaError> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d))
        .ok_or_else(|| CaError::Ttl(format!("{d:?} before {t} is out of range")))
}
