//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does it: every replica serves proxies, only the holder of
//! the Lease writes to the cluster. Writes to the Lease are optimistic (a
//! replace carries the resourceVersion read), so two replicas never both
//! win. A replica takes a Lease that is free (no holder) or whose holder has
//! not renewed it for `lease_duration` of this replica's own clock (as
//! client-go, the holder's timestamps are not compared with local time, so
//! clock skew does not matter). The leader renews every `retry_period` and
//! steps down if it has not managed to for `renew_deadline`. On a clean
//! stop the leader releases the Lease, so another replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// client-go's defaults (also istiod's and kube-controller-manager's).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease as last read, and when this replica saw it change.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    /// Competes for the Lease until `stop` completes, telling `leader`
    /// whether this replica holds it; then releases it if held.
    pub async fn run(mut self, leader: watch::Sender<bool>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut last_renewed: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    if !*leader.borrow() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    }
                    last_renewed = Some(Instant::now());
                    leader.send_replace(true);
                }
                Ok(false) => {
                    if *leader.borrow() {
                        tracing::warn!(lease = %self.name, "another replica holds the Lease; no longer the leader");
                    }
                    last_renewed = None;
                    leader.send_replace(false);
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "leader election: Lease update failed");
                    if *leader.borrow()
                        && last_renewed.is_none_or(|t| t.elapsed() >= self.timing.renew_deadline)
                    {
                        tracing::warn!(lease = %self.name, "could not renew the Lease within the renew deadline; no longer the leader");
                        last_renewed = None;
                        leader.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = &mut stop => break,
            }
        }
        if leader.send_replace(false) {
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.name, "released the Lease"),
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "could not release the Lease; another replica takes it when it expires")
                }
            }
        }
    }

    /// One round: `Ok(true)` if this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default());
                    Ok(true)
                }
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        self.observe(spec.clone());
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let held_by_me = holder == self.identity;
        let expired = self
            .observed
            .as_ref()
            .is_none_or(|(_, seen)| seen.elapsed() >= self.lease_duration_of(&spec));
        if !holder.is_empty() && !held_by_me && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if held_by_me {
            (
                spec.acquire_time.clone().unwrap_or(now.clone()),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut lease = current;
        lease.spec = Some(self.spec(acquired, now, transitions));
        // The replace carries the resourceVersion read above: if another
        // replica wrote the Lease since, the API server refuses (409).
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(updated.spec.unwrap_or_default());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up, as client-go's ReleaseOnCancel: no holder, and a
    /// duration of one second, so a candidate takes it on its next try.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        let d = self.timing.lease_duration;
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            // Whole seconds in the Lease, rounded up: never a promise
            // shorter than the one kept.
            lease_duration_seconds: Some(
                i32::try_from((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
                    .unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Notes when the Lease last changed, by this replica's clock.
    fn observe(&mut self, spec: LeaseSpec) {
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec) {
            self.observed = Some((spec, Instant::now()));
        }
    }

    /// The holder's stated duration (what it promised to renew within).
    fn lease_duration_of(&self, spec: &LeaseSpec) -> Duration {
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs)
    }
}

/// This replica's name in the Lease: the pod's name (HOSTNAME in a pod) and
/// the process id, unique among replicas on one machine too.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "trellisd".into());
    format!("{host}_{}", std::process::id())
}
