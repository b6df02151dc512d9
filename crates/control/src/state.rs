//! The control plane's state: the store, the current mesh, and the connected
//! proxies with what each was sent and has acknowledged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use model::incremental::Touched;
use model::{Mesh, MeshConfig};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use wire::certs::BearerToken;
use wire::pb::{HostRefusal, Node};
use wire::snapshot::ProxySnapshot;

use crate::ca_service::Authenticator;
use crate::sources::ResourceSet;
use crate::store::Store;

pub struct ControlPlane {
    store: Mutex<Store>,
    mesh_config: MeshConfig,
    /// The current mesh with its compiler, whose cache every proxy connecting
    /// before the next change shares.
    compiler: Mutex<Arc<model::Compiler>>,
    proxies: Mutex<BTreeMap<String, Proxy>>,
    dirty: Notify,
    /// Set when workloads have credentials (`--token-secret`): then a proxy
    /// receives config only for the workload its token proves it is, as
    /// istiod authorizes a proxy's xDS stream against its identity.
    authenticator: OnceLock<Arc<dyn Authenticator>>,
    /// A live source (Kubernetes) whose resources join the store's.
    source: OnceLock<Arc<ResourceSet>>,
    /// The control plane's own metrics (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The changes not yet pushed.
    pending: Mutex<Pending>,
    /// Compiles of connecting proxies' first configs running now: one per
    /// core, as more only compete for the cores.
    compiles: tokio::sync::Semaphore,
    /// Signalled when no push is in flight (see [`release_memory_loop`]).
    settled: Notify,
}

/// What changed since the last push.
#[derive(Default)]
struct Pending {
    /// When the oldest change not yet pushed was made (for
    /// `pilot_proxy_convergence_time`).
    since: Option<std::time::Instant>,
    /// The objects changed.
    touched: Touched,
    /// A change named no objects: anything may have changed.
    anything: bool,
}

impl Pending {
    /// `None`: anything may have changed.
    fn add(&mut self, touched: Option<Touched>) {
        self.since.get_or_insert_with(std::time::Instant::now);
        match touched {
            Some(t) => self.touched.extend(t),
            None => self.anything = true,
        }
    }
}

struct Proxy {
    node: Node,
    config: watch::Sender<Arc<ProxySnapshot>>,
    status: ProxyStatus,
    /// The change its latest snapshot carries, until the snapshot is sent.
    changed_at: Option<std::time::Instant>,
}

/// What `trellis proxy-status` shows for one proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub id: String,
    pub pod: String,
    pub namespace: String,
    pub kind: String,
    pub connected: bool,
    pub connected_at: u64,
    /// By the type's short name.
    pub types: TypeStatuses,
}

/// A proxy's status of each type it was sent, by the type's short name, in
/// name order; written as a map. A vector as long as the types (four for a
/// sidecar): a `BTreeMap` of them was a B-tree node of ~1 KiB per proxy
/// however few the types (heaptrack: 1 MiB at 1,000 proxies).
#[derive(Clone, Debug, Default)]
pub struct TypeStatuses(Vec<(&'static str, TypeStatus)>);

impl TypeStatuses {
    pub fn get(&self, name: &str) -> Option<&TypeStatus> {
        let i = self.0.binary_search_by_key(&name, |(n, _)| n).ok()?;
        Some(&self.0[i].1)
    }

    pub fn values(&self) -> impl Iterator<Item = &TypeStatus> {
        self.0.iter().map(|(_, t)| t)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The status of `name`, made if new.
    fn entry(&mut self, name: &'static str) -> &mut TypeStatus {
        let i = match self.0.binary_search_by_key(&name, |(n, _)| n) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (name, TypeStatus::default()));
                i
            }
        };
        &mut self.0[i].1
    }
}

impl Serialize for TypeStatuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, t)| (n, t)))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    pub sent: String,
    pub acked: String,
    pub last_push: u64,
    /// The reason of the last NACK, while the proxy has not ACKed since.
    pub nack: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlPlane {
    pub fn new(store: Store, mesh_config: MeshConfig) -> Self {
        let mesh = Arc::new(Mesh::build(store.resources(), mesh_config.clone()));
        Self {
            store: Mutex::new(store),
            mesh_config,
            compiler: Mutex::new(Arc::new(model::Compiler::new(mesh))),
            proxies: Mutex::new(BTreeMap::new()),
            dirty: Notify::new(),
            metrics: Default::default(),
            pending: Default::default(),
            authenticator: OnceLock::new(),
            source: OnceLock::new(),
            compiles: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            settled: Notify::new(),
        }
    }

    /// Builds the mesh from `source`'s resources too, and its MeshConfig if
    /// it carries one, from now on (the caller signals its changes with
    /// [`ControlPlane::changed`]). Rebuilds at once, so a proxy connecting
    /// next is served the source's config.
    pub fn follow(&self, source: Arc<ResourceSet>) {
        let _ = self.source.set(source);
        lock(&self.pending).add(None);
        self.push();
    }

    /// From now on a proxy must prove, with its bootstrap token, that it is
    /// the workload its node names (namespace and service account).
    pub fn require_credentials(&self, authenticator: Arc<dyn Authenticator>) {
        let _ = self.authenticator.set(authenticator);
    }

    /// Who the proxy claiming to be `node` is. With credentials required,
    /// the token proves a namespace and service account, and the rest comes
    /// from the registry entry of its pod (see [`crate::proxy_node`]);
    /// without, the control plane can only take the proxy's word.
    async fn authorize(
        &self,
        node: &Node,
        token: Option<&BearerToken>,
    ) -> Result<Node, tonic::Status> {
        let Some(auth) = self.authenticator.get().cloned() else {
            return Ok(node.clone());
        };
        let refuse = |reason: String| {
            tracing::warn!(proxy = %node.id, %reason, "discovery stream refused");
            tonic::Status::permission_denied(format!("proxy {}: {reason}", node.id))
        };
        let token =
            token.ok_or_else(|| refuse("no `authorization: Bearer <token>` metadata: proxies prove who they are with their token, over TLS on 15012".into()))?;
        let id = auth.authenticate(token).await.map_err(refuse)?;
        if id.namespace() != node.namespace || id.service_account() != node.service_account {
            return Err(refuse(format!(
                "the token is {}'s, but the node claims namespace {:?}, service account {:?}",
                id, node.namespace, node.service_account
            )));
        }
        let mesh = self.mesh();
        let (verified, overridden) = crate::proxy_node::verified(&mesh, node, id.service_account())
            .map_err(|e| refuse(e.to_string()))?;
        if !overridden.is_empty() {
            tracing::warn!(
                proxy = %node.id,
                ignored = ?overridden,
                "the proxy's claims differ from its pod's; the pod's are used"
            );
        }
        Ok(verified)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Schedules a rebuild and push after a change that may have touched
    /// anything; many calls within the debounce window make one push.
    pub fn changed(&self) {
        lock(&self.pending).add(None);
        self.dirty.notify_one();
    }

    /// Schedules a push after a change of the objects `touched`, which
    /// rebuilds and compares only what they touch. Call it before releasing
    /// the store's lock the change was written under ([`ControlPlane::store`]):
    /// a push takes the changes and reads the store under that lock, so a
    /// change it reads is always one it is told of.
    pub fn changed_objects(&self, touched: Touched) {
        lock(&self.pending).add(Some(touched));
        self.dirty.notify_one();
    }

    pub fn mesh(&self) -> Arc<Mesh> {
        lock(&self.compiler).mesh().clone()
    }

    /// Proxies with a discovery stream open now.
    pub fn connected_proxies(&self) -> usize {
        lock(&self.proxies)
            .values()
            .filter(|p| p.status.connected)
            .count()
    }

    pub fn proxy_status(&self) -> Vec<ProxyStatus> {
        lock(&self.proxies)
            .values()
            .map(|p| p.status.clone())
            .collect()
    }

    /// Ends every proxy's discovery stream (on shutdown).
    pub fn disconnect_all(&self) {
        lock(&self.proxies).clear();
    }

    pub fn node(&self, id: &str) -> Option<Node> {
        lock(&self.proxies).get(id).map(|p| p.node.clone())
    }

    /// Rebuilds the mesh from the store and sends each proxy its config if it
    /// changed. Only the proxies the change may affect are recompiled (see
    /// [`model::incremental`]); returns how many proxies were sent a new snapshot.
    pub fn push(&self) -> usize {
        let source = self.source.get();
        let mesh_config = source
            .and_then(|s| s.mesh_config())
            .unwrap_or_else(|| self.mesh_config.clone());
        let previous = lock(&self.compiler).clone();
        // The changes are taken under the locks they were made under, with
        // the resources read: every change read is one the push is told of.
        let store = self.store();
        let pending = std::mem::take(&mut *lock(&self.pending));
        let live = source.map(|s| s.resources());
        let changed_at = pending.since;
        // Pushing unasked (no change was signalled) reads everything.
        let told = pending.since.is_some() && !pending.anything;
        let mut touched = told.then_some(pending.touched);
        if let Some(source) = source {
            match (source.take_touched(), &mut touched) {
                (Some(t), Some(touched)) => touched.extend(t),
                _ => touched = None,
            }
        }
        let resources = store
            .resources()
            .chain(live.iter().flat_map(|r| r.values()));
        let mesh = Arc::new(match &touched {
            Some(t) => previous.mesh().rebuild(resources, mesh_config, t),
            None => Mesh::build(resources, mesh_config),
        });
        drop(store);
        drop(live);
        let (compiler, affected) = match &touched {
            Some(t) => previous.update_touched(mesh, t),
            None => previous.update(mesh),
        };
        let compiler = Arc::new(compiler);
        *lock(&self.compiler) = compiler.clone();
        if affected.is_nothing() {
            return 0;
        }
        let mut proxies = lock(&self.proxies);
        let mut pushed = 0;
        let verified = self.authenticator.get().is_some();
        // Disconnected proxies get their config when they reconnect.
        for p in proxies
            .values_mut()
            .filter(|p| p.config.receiver_count() > 0)
        {
            if !affected.proxy(&compiler, &p.node) {
                continue;
            }
            let mut affected_here = &affected;
            if verified {
                // Its pod may have changed (labels, address): read it again.
                match crate::proxy_node::verified(compiler.mesh(), &p.node, &p.node.service_account)
                {
                    Ok((node, _)) => {
                        if node != p.node {
                            // Another scope, other listeners: compile it whole.
                            affected_here = &model::incremental::Affected::All;
                        }
                        p.node = node
                    }
                    Err(e) => {
                        tracing::warn!(proxy = %p.node.id, reason = %e, "the proxy's pod no longer matches it; it is served as it was")
                    }
                }
            }
            let previous = p.config.borrow().clone();
            let snapshot = affected_here.snapshot(&compiler, &p.node, &previous);
            let sent = p.config.send_if_modified(|old| {
                if old.same_versions(&snapshot) {
                    return false;
                }
                *old = Arc::new(snapshot);
                true
            });
            if sent {
                p.changed_at = changed_at;
            }
            pushed += usize::from(sent);
        }
        tracing::debug!(pushed, proxies = proxies.len(), "pushed");
        pushed
    }

    /// The config of a proxy connecting now, and the compiler that made it.
    /// Compiled off the async workers (a scope's first proxy compiles every
    /// service it sees): 2,000 proxies connecting at once must not keep the
    /// server from accepting connections and serving the streams it has, or
    /// the listener's queue overflows and connections are dropped.
    async fn first_snapshot(
        &self,
        node: &Node,
    ) -> Result<(Arc<model::Compiler>, ProxySnapshot), tonic::Status> {
        let _permit = self
            .compiles
            .acquire()
            .await
            .map_err(|_| tonic::Status::unavailable("the control plane is shutting down"))?;
        let compiler = lock(&self.compiler).clone();
        let (c, node) = (compiler.clone(), node.clone());
        let snapshot = tokio::task::spawn_blocking(move || c.snapshot(&node))
            .await
            .map_err(|e| tonic::Status::internal(format!("compiling the proxy's config: {e}")))?;
        Ok((compiler, snapshot))
    }

    /// On-demand discovery (see [`model::on_demand`]): adds the `hosts` the
    /// proxy may have to its node's asked hosts and sends it the config
    /// compiled for them; returns the others with why.
    async fn ask_hosts(&self, id: &str, hosts: Vec<String>) -> Vec<HostRefusal> {
        let mesh = self.mesh();
        let mut refused = Vec::new();
        let node = self.change_asked(id, |node| {
            for host in hosts {
                match model::on_demand::refusal(&mesh, node, &host) {
                    Some(reason) => refused.push(HostRefusal { host, reason }),
                    None if !node.asked_hosts.contains(&host) => node.asked_hosts.push(host),
                    None => {}
                }
            }
        });
        if let Some(node) = node {
            self.send_asked(id, node).await;
        }
        refused
    }

    /// Takes `hosts`, which the proxy no longer uses, out of its node's
    /// asked hosts and sends it the config compiled without them (and
    /// without the hosts only their routes sent to).
    async fn forget_hosts(&self, id: &str, hosts: Vec<String>) {
        let node = self.change_asked(id, |node| node.asked_hosts.retain(|h| !hosts.contains(h)));
        match node {
            Some(node) => self.send_asked(id, node).await,
            None => {
                tracing::debug!(proxy = %id, ?hosts, "forget of hosts not asked for: nothing to do")
            }
        }
    }

    /// Changes the asked hosts of proxy `id` with `change`, under one lock
    /// (asks and forgets of one proxy may overlap); its node if they changed.
    fn change_asked(&self, id: &str, change: impl FnOnce(&mut Node)) -> Option<Node> {
        let mut proxies = lock(&self.proxies);
        let p = proxies.get_mut(id)?;
        let before = p.node.asked_hosts.clone();
        change(&mut p.node);
        (p.node.asked_hosts != before).then(|| p.node.clone())
    }

    /// Compiles `node`'s config for the hosts it asked for and sends it,
    /// unless a later change of its asked hosts sends its own.
    async fn send_asked(&self, id: &str, node: Node) {
        loop {
            let compiler = lock(&self.compiler).clone();
            let (c, n) = (compiler.clone(), node.clone());
            let Ok(snapshot) = tokio::task::spawn_blocking(move || c.snapshot(&n)).await else {
                return;
            };
            let mut proxies = lock(&self.proxies);
            // A push that swapped the mesh meanwhile sent the proxy a config
            // of the new mesh: compile again against it.
            if !Arc::ptr_eq(&lock(&self.compiler), &compiler) {
                continue;
            }
            // A later ask or forget of the same proxy sends its own config.
            if let Some(p) = proxies
                .get_mut(id)
                .filter(|p| p.node.asked_hosts == node.asked_hosts)
            {
                p.config.send_if_modified(|old| {
                    if old.same_versions(&snapshot) {
                        return false;
                    }
                    *old = Arc::new(snapshot);
                    true
                });
            }
            return;
        }
    }

    fn with_type(&self, node: &Node, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(p) = lock(&self.proxies).get_mut(&node.id) {
            f(type_status(&mut p.status, type_url));
        }
    }
}

/// Every response and answer of every proxy is recorded here, 4,000 at once
/// when a change reaches 2,000 proxies: no allocation once a type is known.
fn type_status<'a>(status: &'a mut ProxyStatus, type_url: &str) -> &'a mut TypeStatus {
    status.types.entry(wire::types::short_name(type_url))
}

/// `to` made `version`, in the room it has.
fn set_version(to: &mut String, version: &str) {
    to.clear();
    to.push_str(version);
}

#[tonic::async_trait]
impl wire::server::ConfigProvider for ControlPlane {
    async fn connect(
        &self,
        node: &Node,
        token: Option<&BearerToken>,
    ) -> Result<wire::server::Accepted, tonic::Status> {
        let node = &self.authorize(node, token).await?;
        let (compiled_by, snapshot) = self.first_snapshot(node).await?;
        let (tx, rx) = watch::channel(Arc::new(snapshot));
        let status = ProxyStatus {
            id: node.id.clone(),
            pod: node.pod_name.clone(),
            namespace: node.namespace.clone(),
            kind: node
                .kind()
                .as_str_name()
                .to_lowercase()
                .replace("proxy_kind_", ""),
            connected: true,
            connected_at: now(),
            types: TypeStatuses::default(),
        };
        tracing::info!(proxy = %node.id, "proxy connected");
        let mut proxies = lock(&self.proxies);
        // A push that swapped the mesh while this proxy's config was compiled
        // did not see the proxy (it was not here yet): compile it again, now
        // that a later push cannot miss it.
        let current = lock(&self.compiler).clone();
        if !Arc::ptr_eq(&current, &compiled_by) {
            tx.send_replace(Arc::new(current.snapshot(node)));
        }
        proxies.insert(
            node.id.clone(),
            Proxy {
                node: node.clone(),
                config: tx,
                status,
                changed_at: None,
            },
        );
        drop(proxies);
        Ok(wire::server::Accepted {
            node: node.clone(),
            config: rx,
        })
    }

    fn ack(&self, node: &Node, type_url: &str, version: &str) {
        self.with_type(node, type_url, |t| {
            set_version(&mut t.acked, version);
            t.nack = None;
        });
    }

    fn nack(&self, node: &Node, type_url: &str, version: &str, reason: &str) {
        self.metrics.rejected(type_url);
        tracing::warn!(proxy = %node.id, type_url, kept_version = version, reason, "proxy rejected config");
        self.with_type(node, type_url, |t| t.nack = Some(reason.to_string()));
    }

    fn sent(&self, node: &Node, type_url: &str, version: &str) {
        self.metrics.pushed(type_url);
        // One lock per response: 2,000 streams sending a change at once all take it.
        let changed_at = lock(&self.proxies).get_mut(&node.id).and_then(|p| {
            let t = type_status(&mut p.status, type_url);
            set_version(&mut t.sent, version);
            t.last_push = now();
            p.changed_at.take()
        });
        if let Some(t) = changed_at {
            self.metrics.converged(t.elapsed());
        }
    }

    fn pushes_settled(&self) {
        self.settled.notify_one();
    }

    async fn ask(&self, node: &Node, hosts: Vec<String>) -> Vec<HostRefusal> {
        self.ask_hosts(&node.id, hosts).await
    }

    async fn forget(&self, node: &Node, hosts: Vec<String>) {
        self.forget_hosts(&node.id, hosts).await
    }

    fn disconnect(&self, node: &Node) {
        let mut proxies = lock(&self.proxies);
        // A proxy that already reconnected has a new entry whose channel is watched.
        if let Some(p) = proxies
            .get_mut(&node.id)
            .filter(|p| p.config.receiver_count() == 0)
        {
            tracing::info!(proxy = %node.id, "proxy disconnected");
            p.status.connected = false;
        }
    }
}

/// Returns the memory a burst of pushes freed to the system once the burst
/// is over. The allocator keeps freed memory for reuse: after 2,000 proxies
/// connected, 40 MB of the responses built for them stayed resident
/// (trellisd's RSS 190 MiB, 149 MiB after `malloc_trim`). Bursts that follow
/// within `delay` of a trim wait for the next one.
pub async fn release_memory_loop(cp: Arc<ControlPlane>, delay: Duration) {
    loop {
        cp.settled.notified().await;
        tokio::time::sleep(delay).await;
        // It walks the whole heap: off the async workers.
        let _ = tokio::task::spawn_blocking(sys::release_freed_memory).await;
    }
}

/// Waits for changes and pushes them. The first change after a quiet
/// `debounce` is pushed at once; the changes that follow within `debounce` of
/// a push are collected into the next one, so a burst costs a push per
/// `debounce` and a lone change none of it.
pub async fn push_loop(cp: Arc<ControlPlane>, debounce: Duration) {
    let mut last_push: Option<tokio::time::Instant> = None;
    loop {
        cp.dirty.notified().await;
        if let Some(last) = last_push {
            tokio::time::sleep_until(last + debounce).await;
        }
        let cp2 = cp.clone();
        // Compiling for every proxy is CPU work; keep it off the async workers.
        let pushed = tokio::task::spawn_blocking(move || cp2.push()).await;
        if pushed.unwrap_or(0) == 0 {
            // No send follows to say the burst is over, so say it here: the
            // compile's garbage, and a live source's list read before it
            // (5,000 pods from an API server: 11 MiB), are returned too.
            cp.settled.notify_one();
        }
        last_push = Some(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push that sends nothing (no proxy connected, or none affected)
    /// still ends a burst, after which freed memory is returned.
    #[tokio::test]
    async fn a_push_that_sends_nothing_settles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cp = Arc::new(ControlPlane::new(store, MeshConfig::default()));
        tokio::spawn(push_loop(cp.clone(), Duration::from_millis(10)));
        cp.changed();
        tokio::time::timeout(Duration::from_secs(30), cp.settled.notified())
            .await
            .expect("settled after a push that sent nothing");
    }

    /// A sidecar's four types take a vector of four, not a B-tree node of
    /// eleven, and are written as a map in name order.
    #[test]
    fn a_proxys_type_statuses_take_the_room_of_their_types() {
        let mut types = TypeStatuses::default();
        for name in ["rds", "cds", "lds", "eds", "cds"] {
            types.entry(name).sent = format!("{name}-1");
        }
        assert!(types.0.capacity() <= 4, "{}", types.0.capacity());
        assert_eq!(types.get("eds").map(|t| t.sent.as_str()), Some("eds-1"));
        let written = serde_json::to_value(&types).expect("serializes");
        let names: Vec<_> = written
            .as_object()
            .expect("a map")
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, ["cds", "eds", "lds", "rds"]);
    }
}
