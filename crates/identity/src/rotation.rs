//! The workload's current certificate, and the loop that keeps it fresh.
//!
//! [`CertManager`] holds the current key and chain in an `ArcSwap` and is the
//! certificate resolver of every mesh TLS config, so each *new* handshake picks up
//! the newest certificate while established connections keep the one they started
//! with. [`CertManager::run`] obtains the first certificate at once, then renews at
//! half of each certificate's lifetime (Istio's SECRET_GRACE_PERIOD_RATIO 0.5, with
//! 1% jitter so a fleet started together does not renew together), retrying with
//! exponential backoff while the CA is unreachable.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::cert::{CertChain, CertError, CertInfo};
use crate::spiffe::SpiffeId;
use crate::workload::KeyAndCsr;

/// When to renew and how to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationConfig {
    /// Renew when this fraction of the lifetime remains (Istio: 0.5).
    pub grace_ratio: f64,
    /// `grace_ratio` is moved by up to ± this much, at random (Istio: 0.01).
    pub jitter_ratio: f64,
    /// First retry delay after a failed request; doubles on each failure.
    pub initial_backoff: Duration,
    /// Retry delays never exceed this.
    pub max_backoff: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            grace_ratio: 0.5,
            jitter_ratio: 0.01,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Renewals are never scheduled sooner than this, so a very short-lived (or
/// nearly expired) certificate cannot turn the loop into a busy loop against the CA.
const MIN_RENEWAL_DELAY: Duration = Duration::from_millis(100);

/// The workload's certificate: current value, renewal loop, readiness.
pub struct CertManager {
    id: SpiffeId,
    config: RotationConfig,
    current: ArcSwapOption<Current>,
    ready: watch::Sender<bool>,
}

struct Current {
    key: Arc<CertifiedKey>,
    info: Arc<CertInfo>,
}

/// Why one renewal attempt failed.
#[derive(Debug, thiserror::Error)]
enum RenewError {
    #[error("generating key and CSR: {0}")]
    Generate(CertError),
    #[error("requesting certificate: {0}")]
    Fetch(String),
    #[error("certificate returned by the CA is unusable: {0}")]
    Install(CertError),
}

impl CertManager {
    /// A manager for `id` with no certificate yet (handshakes fail until one arrives).
    pub fn new(id: SpiffeId) -> Self {
        Self::with_config(id, RotationConfig::default())
    }

    pub fn with_config(id: SpiffeId, config: RotationConfig) -> Self {
        CertManager {
            id,
            config,
            current: ArcSwapOption::empty(),
            ready: watch::Sender::new(false),
        }
    }

    /// The identity this manager obtains certificates for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The current certificate's id, serial, validity and chain; never the key.
    pub fn current(&self) -> Option<Arc<CertInfo>> {
        self.current.load().as_ref().map(|c| c.info.clone())
    }

    /// Becomes `true` once the first certificate is installed, and stays so.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Waits until the first certificate is installed.
    pub async fn wait_ready(&self) {
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
    }

    /// Makes `chain` (issued for `key`'s CSR) the certificate of new handshakes.
    ///
    /// Checked first: the leaf must carry `key`'s public key and this manager's id,
    /// and must not have expired. `run` calls this; call it directly only when
    /// driving issuance yourself.
    pub fn install(&self, key: KeyAndCsr, chain: &CertChain) -> Result<Arc<CertInfo>, CertError> {
        if key.id() != &self.id {
            return Err(CertError::WrongIdentity {
                expected: self.id.to_string(),
                got: key.id().to_string(),
            });
        }
        let info = Arc::new(chain.info()?);
        if info.not_after <= OffsetDateTime::now_utc() {
            return Err(CertError::Expired {
                serial: info.serial.clone(),
                not_after: info.not_after.to_string(),
            });
        }
        let certified = key.into_certified_key(chain)?;
        self.current.store(Some(Arc::new(Current {
            key: certified,
            info: info.clone(),
        })));
        self.ready.send_replace(true);
        tracing::info!(id = %self.id, serial = %info.serial, not_after = %info.not_after, "workload certificate installed");
        Ok(info)
    }

    /// Keeps a valid certificate installed, forever: requests one now, then renews
    /// at `grace_ratio` of each lifetime; on failure retries with backoff (the old
    /// certificate keeps serving meanwhile).
    ///
    /// `fetch` sends a CSR (PEM) to the CA and returns the issued chain; its error is
    /// only logged. A new private key is made for every request. Stop the loop by
    /// dropping the future (e.g. aborting its task); that is safe at any point.
    pub async fn run<F, Fut, E>(&self, mut fetch: F)
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<CertChain, E>>,
        E: fmt::Display,
    {
        let mut failures: u32 = 0;
        loop {
            let delay = match self.renew_once(&mut fetch).await {
                Ok(info) => {
                    failures = 0;
                    let delay = renewal_delay(
                        info.not_after,
                        OffsetDateTime::now_utc(),
                        &self.config,
                        rand::random_range(-1.0..=1.0),
                    );
                    tracing::debug!(id = %self.id, serial = %info.serial, renew_in = ?delay, "next certificate renewal scheduled");
                    delay
                }
                Err(error) => {
                    let delay = backoff(&self.config, failures, rand::random_range(0.9..=1.1));
                    failures = failures.saturating_add(1);
                    match self.current() {
                        Some(info) if info.not_after <= OffsetDateTime::now_utc() => {
                            tracing::error!(id = %self.id, %error, expired_at = %info.not_after, retry_in = ?delay,
                                "certificate renewal failing and the current certificate has EXPIRED");
                        }
                        _ => {
                            tracing::warn!(id = %self.id, %error, attempt = failures, retry_in = ?delay, "certificate request failed");
                        }
                    }
                    delay
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn renew_once<F, Fut, E>(&self, fetch: &mut F) -> Result<Arc<CertInfo>, RenewError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<CertChain, E>>,
        E: fmt::Display,
    {
        let key = KeyAndCsr::generate(&self.id).map_err(RenewError::Generate)?;
        let chain = fetch(key.csr_pem().to_owned())
            .await
            .map_err(|e| RenewError::Fetch(e.to_string()))?;
        self.install(key, &chain).map_err(RenewError::Install)
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.key.clone())
    }
}

/// How long from `now` until renewal: when `grace_ratio` (± jitter) of the
/// remaining lifetime is left. `unit_jitter` is in [-1, 1].
///
/// Measured from *now* (receipt), not from notBefore: the CA backdates notBefore for
/// clock skew, which would otherwise dominate short lifetimes.
fn renewal_delay(
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    config: &RotationConfig,
    unit_jitter: f64,
) -> Duration {
    let remaining = Duration::try_from(not_after - now).unwrap_or(Duration::ZERO);
    let ratio = (config.grace_ratio + config.jitter_ratio * unit_jitter).clamp(0.0, 1.0);
    remaining.mul_f64(1.0 - ratio).max(MIN_RENEWAL_DELAY)
}

/// Delay before retry number `failures` (0-based): initial × 2^failures, capped,
/// scaled by `factor` (jitter around 1).
fn backoff(config: &RotationConfig, failures: u32, factor: f64) -> Duration {
    let exp = config
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(failures.min(31)));
    exp.min(config.max_backoff).mul_f64(factor)
}

impl ResolvesServerCert for CertManager {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for CertManager {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

impl fmt::Debug for CertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("CertManager")
            .field("id", &self.id)
            .field("serial", &current.as_ref().map(|c| c.serial.clone()))
            .field("not_after", &current.as_ref().map(|c| c.not_after))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_life_with_bounded_jitter() {
        let cfg = RotationConfig::default();
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::hours(24);
        let mid = renewal_delay(now + day, now, &cfg, 0.0);
        assert_eq!(mid, Duration::from_secs(12 * 3600));
        let early = renewal_delay(now + day, now, &cfg, 1.0);
        let late = renewal_delay(now + day, now, &cfg, -1.0);
        // ±1% of the lifetime around the half-life.
        assert_eq!(early, Duration::from_secs_f64(24.0 * 3600.0 * 0.49));
        assert_eq!(late, Duration::from_secs_f64(24.0 * 3600.0 * 0.51));
        // Expired or nearly expired: renew soon, but never in a busy loop.
        assert_eq!(renewal_delay(now - day, now, &cfg, 0.0), MIN_RENEWAL_DELAY);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = RotationConfig::default();
        let delays: Vec<_> = (0..10).map(|n| backoff(&cfg, n, 1.0)).collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[1], Duration::from_secs(1));
        assert_eq!(delays[2], Duration::from_secs(2));
        assert_eq!(delays[9], Duration::from_secs(30));
        assert_eq!(backoff(&cfg, u32::MAX, 1.0), Duration::from_secs(30));
    }
}
