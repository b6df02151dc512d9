//! Receiving config: the discovery handler validates each update by
//! compiling a new `Snapshot` with it (rebuilding only what it changes),
//! and only then accepts it. A config that does not compile is NACKed and
//! the previous one stays.

pub mod static_file;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use wire::pb;

use crate::lb::BuildEnv;
use crate::lb::locality::Local;
use crate::limits::Limits;
use crate::snapshot::{self, Snapshot, TypeState};

/// The proxy API's own name for a type URL, or why there is none.
fn type_key(type_url: &str) -> Result<&'static str, String> {
    wire::types::ALL
        .iter()
        .copied()
        .find(|t| *t == type_url)
        .ok_or_else(|| format!("unknown resource type {type_url:?}"))
}

/// Config updates hand freed memory back at most this often (see
/// [`ConfigStore::release_after_update`]).
pub(crate) const MIN_BETWEEN_UPDATE_RELEASES: Duration = Duration::from_secs(1);

pub struct ConfigStore {
    pod_ip: Option<IpAddr>,
    /// This proxy's locality and labels, for locality-aware balancing.
    local: Local,
    /// The proxy's own limits, which every cluster's connections follow.
    limits: Limits,
    /// This proxy's mesh identity, once it has a certificate (set before any config).
    mesh_tls: OnceLock<Arc<crate::tls::MeshTls>>,
    /// Serializes updates; never touched by requests.
    state: Mutex<State>,
    /// What requests read, lock-free. Empty until every type has arrived.
    current: ArcSwapOption<Snapshot>,
    changes: watch::Sender<Option<Arc<Snapshot>>>,
    /// Called after every config update, accepted or not; see
    /// [`with_memory_release`](Self::with_memory_release).
    release_freed_memory: Option<fn()>,
    /// When an update last released memory; see [`Self::release_after_update`].
    last_update_release: Mutex<Option<Instant>>,
    /// An update's release was put off; the next periodic one does it.
    release_pending: AtomicBool,
    /// Updates accepted and rejected, by type, for the proxy's health metrics.
    pub updates: crate::telemetry::health::ConfigUpdates,
    /// Set: outbound hosts are discovered on demand (see [`crate::on_demand`]).
    on_demand: Option<Arc<crate::on_demand::OnDemand>>,
}

#[derive(Default)]
struct State {
    accepted: BTreeMap<&'static str, Arc<TypeState>>,
    /// The latest complete snapshot: the next compile carries its run-time
    /// state over. One still missing a type is compiled only to validate
    /// the update and then dropped: no traffic has used it, and keeping
    /// each such generation alive while the next is built left glibc's
    /// heap fragmented (4 MiB more resident for a 1,000-service mesh).
    latest: Option<Arc<Snapshot>>,
}

impl ConfigStore {
    pub fn new(node: &pb::Node) -> Self {
        ConfigStore {
            pod_ip: node.pod_ip.parse().ok(),
            local: Local::from_node(node),
            limits: Limits::default(),
            mesh_tls: OnceLock::new(),
            state: Mutex::default(),
            current: ArcSwapOption::empty(),
            changes: watch::Sender::new(None),
            release_freed_memory: None,
            last_update_release: Mutex::new(None),
            release_pending: AtomicBool::new(false),
            updates: Default::default(),
            on_demand: None,
        }
    }

    /// Discovers outbound hosts on demand (before any config).
    pub fn with_on_demand(mut self, on_demand: crate::on_demand::OnDemand) -> Self {
        self.on_demand = Some(Arc::new(on_demand));
        self
    }

    /// Set if outbound hosts are discovered on demand.
    pub fn on_demand(&self) -> Option<&Arc<crate::on_demand::OnDemand>> {
        self.on_demand.as_ref()
    }

    /// Sets what hands memory a config update freed back to the OS. An update
    /// that changes much (the first configs, a change to every cluster) frees
    /// the old parts after the swap: for a 1,000-service mesh several MiB in
    /// small chunks interleaved with the live snapshot, which glibc's malloc
    /// keeps resident unless asked (`malloc_trim`). The binary
    /// knows its allocator, so it provides this (see [`crate::Config`]); the
    /// crate itself has no unsafe code.
    pub fn with_memory_release(mut self, release: fn()) -> Self {
        self.release_freed_memory = Some(release);
        self
    }

    /// Hands memory freed since the last call back to the OS, if the binary
    /// said how ([`Self::with_memory_release`]).
    pub(crate) fn release_freed_memory(&self) {
        if let Some(release) = self.release_freed_memory {
            release();
        }
    }

    /// After a config update: releases at once, unless an update did less
    /// than [`MIN_BETWEEN_UPDATE_RELEASES`] ago — then the next periodic
    /// release does it, within a second ([`Self::take_pending_release`]). `malloc_trim` walks
    /// the heap holding each arena's lock in turn (2–25 ms measured on a
    /// fragmented 17 MiB heap, these cores under load), stalling requests
    /// that allocate meanwhile; under endpoint churn a proxy applies several
    /// updates a second, each freeing little.
    fn release_after_update(&self) {
        let now = Instant::now();
        let mut last = self
            .last_update_release
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < MIN_BETWEEN_UPDATE_RELEASES) {
            self.release_pending.store(true, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        self.release_freed_memory();
    }

    /// Whether an update put its release off (clearing it): the periodic
    /// release then runs even if no request freed anything.
    pub(crate) fn take_pending_release(&self) -> bool {
        self.release_pending.swap(false, Ordering::Relaxed)
    }

    /// Sets the proxy's own limits (before any config).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Gives the store the proxy's mesh identity; configs applied from then
    /// on use it for mTLS to endpoints. Set once, before the first config.
    pub fn set_mesh_tls(&self, tls: Arc<crate::tls::MeshTls>) {
        let _ = self.mesh_tls.set(tls);
    }

    /// This proxy's mesh identity, if it has one.
    pub fn mesh_tls(&self) -> Option<&Arc<crate::tls::MeshTls>> {
        self.mesh_tls.get()
    }

    /// The config in force, once complete.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Every accepted type, complete or not (for the config dump).
    pub fn accepted(&self) -> BTreeMap<&'static str, Arc<TypeState>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accepted
            .clone()
    }

    /// Notified with each new complete snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.changes.subscribe()
    }

    /// Accepts `resources` as the full set of `type_url`, or explains why not.
    pub fn apply(
        &self,
        type_url: &str,
        version: &str,
        resources: Vec<pb::Resource>,
    ) -> Result<(), String> {
        let type_key = type_key(type_url)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Resources that did not change stay the same in memory, so that
        // what was compiled from them is reused.
        let old = state.accepted.get(type_key).map(Arc::as_ref);
        let new = match TypeState::replacing(old, version, &resources) {
            Ok(new) => new,
            Err(e) => {
                self.updates.record(type_key, false);
                let what = wire::types::short_name(type_key);
                return Err(format!("{what} version {version:?}: {e}"));
            }
        };
        drop(resources);
        self.install(&mut state, type_key, new)
    }

    /// Accepts a change to the resources of `type_url` (see
    /// [`wire::client::ConfigHandler::apply_partial`]), or explains why not.
    pub fn apply_partial(
        &self,
        type_url: &str,
        version: &str,
        changed: Vec<pb::Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let type_key = type_key(type_url)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(old) = state.accepted.get(type_key) else {
            return Err(format!(
                "{} version {version:?}: a partial update before any full one",
                wire::types::short_name(type_key)
            ));
        };
        let new = old.merge(version, &changed, &removed);
        drop(changed);
        self.install(&mut state, type_key, new)
    }

    fn install(
        &self,
        state: &mut State,
        type_key: &'static str,
        new: TypeState,
    ) -> Result<(), String> {
        let version = new.version.clone();
        let mut types = state.accepted.clone();
        types.insert(type_key, Arc::new(new));
        let what = wire::types::short_name(type_key);
        let result = self.compile_and_publish(state, what, &version, types);
        self.updates.record(type_key, result.is_ok());
        self.release_after_update();
        result
    }

    fn compile_and_publish(
        &self,
        state: &mut State,
        what: &str,
        version: &str,
        types: BTreeMap<&'static str, Arc<TypeState>>,
    ) -> Result<(), String> {
        let compiled = snapshot::compile(
            types.clone(),
            self.pod_ip,
            state.latest.as_deref(),
            &BuildEnv {
                limits: &self.limits,
                local: &self.local,
                mesh_tls: self.mesh_tls.get(),
                pod_ip: self.pod_ip,
            },
        )
        .map_err(|e| format!("{what} version {version:?}: {e}"))?;
        state.accepted = types;
        if !compiled.snapshot().complete() {
            state.latest = None;
            return Ok(());
        }
        let mut snapshot = compiled.commit();
        if let Some(on_demand) = &self.on_demand {
            on_demand.readdress(&mut snapshot);
        }
        let snapshot = Arc::new(snapshot);
        state.latest = Some(snapshot.clone());
        self.current.store(Some(snapshot.clone()));
        self.changes.send_replace(Some(snapshot));
        Ok(())
    }
}

/// The discovery client's view of the store.
pub struct XdsHandler(pub Arc<ConfigStore>);

impl XdsHandler {
    /// The on-demand directory, if `type_url` is its type.
    fn directory(&self, type_url: &str) -> Option<Result<&crate::on_demand::OnDemand, String>> {
        (type_url == wire::types::DIRECTORY).then(|| {
            self.0.on_demand().map(Arc::as_ref).ok_or_else(|| {
                "a directory, but this proxy does not discover on demand".to_string()
            })
        })
    }
}

impl wire::client::ConfigHandler for XdsHandler {
    fn apply(
        &self,
        type_url: &str,
        version: &str,
        resources: Vec<pb::Resource>,
    ) -> Result<(), String> {
        if let Some(directory) = self.directory(type_url) {
            return directory?.apply(true, resources, Vec::new());
        }
        self.0.apply(type_url, version, resources)
    }

    fn asks(&self) -> Option<Arc<wire::asks::Asks>> {
        self.0.on_demand().map(|o| o.asks())
    }

    fn refused(&self, refused: Vec<pb::HostRefusal>) {
        if let Some(o) = self.0.on_demand() {
            o.refuse(refused);
        }
    }

    fn accepts_partial(&self) -> bool {
        true
    }

    fn apply_partial(
        &self,
        type_url: &str,
        version: &str,
        changed: Vec<pb::Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        if let Some(directory) = self.directory(type_url) {
            return directory?.apply(false, changed, removed);
        }
        self.0.apply_partial(type_url, version, changed, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::resource::Kind;

    fn cluster(name: &str) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            kind: Some(Kind::Cluster(pb::Cluster {
                name: name.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn route(regex: &str) -> pb::Resource {
        pb::Resource {
            name: "80".into(),
            kind: Some(Kind::RouteConfig(pb::RouteConfig {
                name: "80".into(),
                virtual_hosts: vec![pb::VirtualHost {
                    name: "vh".into(),
                    domains: vec!["*".into()],
                    routes: vec![pb::Route {
                        matches: vec![pb::RouteMatch {
                            path: Some(pb::StringMatch {
                                kind: Some(pb::string_match::Kind::Regex(regex.into())),
                            }),
                            ..Default::default()
                        }],
                        action: Some(pb::route::Action::Forward(pb::RouteAction {
                            clusters: vec![pb::WeightedCluster {
                                cluster: "c".into(),
                                weight: 100,
                                ..Default::default()
                            }],
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                }],
            })),
            ..Default::default()
        }
    }

    #[test]
    fn the_proxy_takes_what_simulated_proxies_say_it_takes() {
        // bench-control-plane subscribes with `Takes::PROXY`: what it
        // measures is what trellisd sends this proxy only if they agree.
        let handler = XdsHandler(Arc::new(ConfigStore::new(&pb::Node::default())));
        assert_eq!(
            wire::client::Takes::of(&handler),
            wire::client::Takes::PROXY
        );
    }

    #[test]
    fn publishes_only_when_complete_and_nacks_keep_the_old_config() {
        let store = ConfigStore::new(&pb::Node {
            pod_ip: "127.0.0.1".into(),
            ..Default::default()
        });
        store
            .apply(wire::types::CLUSTER, "1", vec![cluster("c")])
            .expect("clusters");
        store
            .apply(wire::types::ENDPOINTS, "1", vec![])
            .expect("endpoints");
        store
            .apply(wire::types::LISTENER, "1", vec![])
            .expect("listeners");
        assert!(
            store.current().is_none(),
            "incomplete config must not be served"
        );
        store
            .apply(wire::types::ROUTE_CONFIG, "1", vec![route("/a.*")])
            .expect("routes");
        let first = store.current().expect("complete");
        let err = store
            .apply(wire::types::ROUTE_CONFIG, "2", vec![route("(")])
            .expect_err("bad regex");
        assert!(err.contains("routes version \"2\""), "{err}");
        let still = store.current().expect("still there");
        assert!(Arc::ptr_eq(&first, &still));
        assert_eq!(still.types[wire::types::ROUTE_CONFIG].version, "1");
    }

    /// Under churn, one release per second at most; the ones put off are
    /// left to the periodic release, which learns of them once.
    #[test]
    fn updates_in_quick_succession_release_memory_once() {
        static RELEASED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn count() {
            RELEASED.fetch_add(1, Ordering::Relaxed);
        }
        let store = ConfigStore::new(&pb::Node::default()).with_memory_release(count);
        for v in 0..5 {
            let _ = store.apply(wire::types::CLUSTER, &v.to_string(), vec![cluster("c")]);
        }
        assert_eq!(RELEASED.load(Ordering::Relaxed), 1);
        assert!(
            store.take_pending_release(),
            "the later four put theirs off"
        );
        assert!(!store.take_pending_release(), "and say so once");
    }

    #[test]
    fn partial_updates_merge_into_the_accepted_set() {
        let store = ConfigStore::new(&pb::Node::default());
        assert!(
            store
                .apply_partial(wire::types::CLUSTER, "0", vec![cluster("a")], vec![])
                .is_err(),
            "nothing to merge into yet"
        );
        for t in wire::types::ALL {
            let r = if t == wire::types::CLUSTER {
                vec![cluster("a"), cluster("b")]
            } else {
                vec![]
            };
            store.apply(t, "1", r).expect("valid");
        }
        store
            .apply_partial(
                wire::types::CLUSTER,
                "2",
                vec![cluster("c")],
                vec!["a".into()],
            )
            .expect("valid");
        let now = store.current().expect("complete");
        let names: Vec<&str> = now.types[wire::types::CLUSTER].names().collect();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!(now.types[wire::types::CLUSTER].version, "2");
        // A partial update that does not compile changes nothing.
        let err = store
            .apply_partial(wire::types::LISTENER, "2", vec![cluster("x")], vec![])
            .expect_err("wrong kind");
        assert!(err.contains("listeners"), "{err}");
        assert!(Arc::ptr_eq(&now, &store.current().expect("still")));
    }

    #[test]
    fn rejects_wrong_kind_and_unknown_type() {
        let store = ConfigStore::new(&pb::Node::default());
        assert!(
            store
                .apply(wire::types::LISTENER, "1", vec![cluster("c")])
                .is_err()
        );
        assert!(store.apply("nope", "1", vec![]).is_err());
    }

    #[test]
    fn run_time_state_survives_updates() {
        let store = ConfigStore::new(&pb::Node::default());
        for t in wire::types::ALL {
            let r = if t == wire::types::CLUSTER {
                vec![cluster("c")]
            } else {
                vec![]
            };
            store.apply(t, "1", r).expect("valid");
        }
        let a = store.current().expect("complete");
        store
            .apply(wire::types::CLUSTER, "2", vec![cluster("c")])
            .expect("valid");
        let b = store.current().expect("complete");
        assert!(Arc::ptr_eq(
            &a.clusters["c"].breakers.usage,
            &b.clusters["c"].breakers.usage
        ));
    }
}
