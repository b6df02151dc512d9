//! Workload metadata for Istio's standard metric labels: who the source and
//! the destination are. Built once per workload when config arrives (never
//! per request), and shared: a request's labels are pointers to these.
//!
//! Each side learns the other without asking it (Istio's metadata exchange,
//! with no extra round trip): the client from the control plane's endpoint
//! data ([`EndpointMetas`]), the server from the peer certificate's SPIFFE id
//! and the same pushed workload data, looked up by the peer's address
//! ([`Peers`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use wire::pb;

pub const UNKNOWN: &str = "unknown";
/// Istio's cluster id when none is configured (`ISTIO_META_CLUSTER_ID`).
pub const DEFAULT_CLUSTER: &str = "Kubernetes";

/// One side of a request: a workload, as Istio's labels name it.
///
/// A mesh lists many workloads that differ only in their name — the
/// endpoints of a ServiceEntry, pods without an owner — so the other labels
/// are one shared record ([`PeerLabels`], read through `Deref`): a workload
/// is its name and a pointer (24 bytes), not eight string pointers. 11,000
/// endpoints: 1.2 MiB less.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerMeta {
    pub workload: Arc<str>,
    labels: Arc<PeerLabels>,
}

/// A workload's labels but its name, shared by the workloads that have
/// them all in common.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    pub namespace: Arc<str>,
    pub principal: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub cluster: Arc<str>,
}

impl std::ops::Deref for PeerMeta {
    type Target = PeerLabels;

    fn deref(&self) -> &PeerLabels {
        &self.labels
    }
}

impl PeerLabels {
    /// The one shared copy of these labels (see [`Interner`]).
    fn interned(self) -> Arc<PeerLabels> {
        static LABELS: OnceLock<Interner<PeerLabels>> = OnceLock::new();
        LABELS
            .get_or_init(Interner::default)
            .get(&self, || Arc::new(self.clone()))
    }
}

impl PeerMeta {
    pub fn unknown() -> Self {
        let u: Arc<str> = UNKNOWN.into();
        PeerMeta {
            workload: u.clone(),
            labels: Arc::new(PeerLabels {
                namespace: u.clone(),
                principal: u.clone(),
                app: u.clone(),
                version: u.clone(),
                canonical_service: u.clone(),
                canonical_revision: u.clone(),
                cluster: u,
            }),
        }
    }

    /// A workload's labels as Istio derives them: `workload` is the owner's
    /// name (the Deployment), the canonical service and revision come from
    /// `service.istio.io/canonical-name|revision`, else the app and version
    /// labels (`app.kubernetes.io/name|version`, `app`, `version`), else the
    /// workload name and "latest".
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        workload: &str,
        namespace: &str,
        principal: &str,
    ) -> Self {
        let first = |keys: &[&str]| -> Option<&str> {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
                .map(String::as_str)
        };
        let or_unknown = |s: &str| shared_str(if s.is_empty() { UNKNOWN } else { s });
        let workload = first(&["service.istio.io/workload-name"]).unwrap_or(workload);
        let app = first(&["app", "app.kubernetes.io/name"]);
        let version = first(&["version", "app.kubernetes.io/version"]);
        let labels = PeerLabels {
            namespace: or_unknown(namespace),
            principal: or_unknown(principal),
            app: or_unknown(app.unwrap_or("")),
            version: or_unknown(version.unwrap_or("")),
            canonical_service: or_unknown(
                first(&[
                    "service.istio.io/canonical-name",
                    "app.kubernetes.io/name",
                    "app",
                ])
                .unwrap_or(workload),
            ),
            canonical_revision: shared_str(
                first(&[
                    "service.istio.io/canonical-revision",
                    "app.kubernetes.io/version",
                    "version",
                ])
                .unwrap_or("latest"),
            ),
            cluster: shared_str(first(&["topology.istio.io/cluster"]).unwrap_or(DEFAULT_CLUSTER)),
        };
        // The name is the one label that is mostly distinct (a pod's, an
        // endpoint's): kept by the workload alone, not in the table of
        // shared values, where it would only take a slot.
        let workload = if workload.is_empty() {
            UNKNOWN
        } else {
            workload
        };
        PeerMeta {
            workload: workload.into(),
            labels: labels.interned(),
        }
    }

    /// This proxy's own workload. `principal` is its SPIFFE id (empty: none).
    pub fn from_node(node: &pb::Node, principal: &str) -> Self {
        let workload = if node.workload_name.is_empty() {
            &node.pod_name
        } else {
            &node.workload_name
        };
        PeerMeta::from_labels(&node.labels, workload, &node.namespace, principal)
    }

    /// A peer known only by its certificate.
    pub fn from_identity(id: &identity::SpiffeId) -> Self {
        PeerMeta::from_labels(&BTreeMap::new(), "", id.namespace(), &id.to_string())
    }

    /// The one shared copy of these labels (see [`Interner`]).
    pub fn interned(self) -> Arc<PeerMeta> {
        static PEERS: OnceLock<Interner<PeerMeta>> = OnceLock::new();
        PEERS
            .get_or_init(Interner::default)
            .get(&self, || Arc::new(self.clone()))
    }
}

/// One allocation per distinct value, process-wide. Metric series are keyed
/// by these pointers, so a request's labels cost no hashing of strings; a
/// fresh copy of the same labels with each config push (or each connection)
/// would start a new series for them, and the series map would grow with
/// every push. Entries die with their last user.
///
/// Values are found by their hash: a table slot is the hash and a weak
/// pointer (16 bytes), not a second copy of the value. A mesh of 10,000
/// workloads has as many distinct peers: a table keyed by the values
/// themselves held 2 MiB more. Two values with one 64-bit hash (practically
/// never) are each correct, the second one merely not shared.
struct Interner<T: ?Sized> {
    table: Mutex<Table<T>>,
    hasher: RandomState,
}

struct Table<T: ?Sized> {
    by_hash: HashMap<u64, Weak<T>>,
    /// Dead entries are dropped when the table reaches this size.
    prune_at: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            table: Mutex::new(Table {
                by_hash: HashMap::new(),
                prune_at: 1024,
            }),
            hasher: RandomState::new(),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of `value`; `make` makes one when there is none.
    fn get(&self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let hash = self.hasher.hash_one(value);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = table.by_hash.get(&hash).and_then(Weak::upgrade) {
            return if *shared == *value { shared } else { make() };
        }
        if table.by_hash.len() >= table.prune_at {
            table.by_hash.retain(|_, w| w.strong_count() > 0);
            // A quarter more than what lives, not twice: the table's
            // capacity follows the largest size it reaches (11,000 peers:
            // 16,384 slots, not 32,768), and a prune every quarter of
            // growth is still a constant cost per insert.
            table.prune_at = (table.by_hash.len() + table.by_hash.len() / 4).max(1024);
        }
        let shared = make();
        table.by_hash.insert(hash, Arc::downgrade(&shared));
        shared
    }
}

/// The one shared copy of a label value: workloads' labels repeat the
/// same few strings ("unknown", namespaces, apps, versions).
fn shared_str(s: &str) -> Arc<str> {
    static STRINGS: OnceLock<Interner<str>> = OnceLock::new();
    STRINGS
        .get_or_init(Interner::default)
        .get(s, || Arc::from(s))
}

/// The metadata of a cluster's endpoints, one shared copy per workload: a
/// cluster lists every replica of a workload, and the labels are the same.
#[derive(Default)]
pub struct EndpointMetas(HashMap<PeerMeta, Arc<PeerMeta>>);

impl EndpointMetas {
    /// Metadata of an endpoint: the workload is the control plane's
    /// (the Deployment's name), else the pod's; the namespace comes from
    /// "<pod>.<namespace>", else from its SPIFFE id, else from the service
    /// it belongs to.
    pub fn of(&mut self, ep: &pb::Endpoint, service_namespace: &str) -> Arc<PeerMeta> {
        let (pod, ns) = ep.pod.split_once('.').unwrap_or((ep.pod.as_str(), ""));
        let ns = if !ns.is_empty() {
            ns
        } else {
            ep.identity
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split('/').next())
                .unwrap_or(service_namespace)
        };
        let workload = if ep.workload.is_empty() {
            pod
        } else {
            ep.workload.as_str()
        };
        let meta = PeerMeta::from_labels(&ep.labels, workload, ns, &ep.identity);
        self.0
            .entry(meta)
            .or_insert_with_key(|m| m.clone().interned())
            .clone()
    }
}

/// The mesh's workloads as an inbound connection's peer may be: by address
/// (a pod IP), and by identity, from the pushed endpoint data. Built with
/// the clusters; an update that changes only some clusters' endpoints
/// changes the entries of the endpoints it removes and adds, in place
/// ([`Peers::replace`]), so its cost is that of the change, not of every
/// endpoint of the mesh.
///
/// Where several workloads are listed under one key — a service account
/// used by v1, v2 and v3 of an app, or one address listed with different
/// labels — a lookup answers what they have in common: the fields that
/// differ are "unknown". That answer does not depend on the order
/// endpoints were listed in, so the table updated in place is the one
/// built from scratch.
#[derive(Default)]
pub struct Peers(RwLock<PeerTables>);

#[derive(Default)]
struct PeerTables {
    by_address: HashMap<IpAddr, Listed>,
    by_identity: HashMap<Arc<str>, Listed>,
}

/// The workloads listed under one key, each with how many endpoints list it.
enum Listed {
    /// The common case: one workload (no allocation besides the entry).
    One(Arc<PeerMeta>, u32),
    Several {
        /// What the workloads have in common.
        common: Arc<PeerMeta>,
        workloads: Vec<(Arc<PeerMeta>, u32)>,
    },
}

impl Listed {
    fn answer(&self) -> &Arc<PeerMeta> {
        match self {
            Listed::One(m, _) => m,
            Listed::Several { common, .. } => common,
        }
    }

    fn add(&mut self, meta: &Arc<PeerMeta>) {
        match self {
            Listed::One(m, n) if m == meta => *n += 1,
            Listed::One(m, n) => {
                *self = Listed::several(vec![(m.clone(), *n), (meta.clone(), 1)]);
            }
            // One more endpoint of a workload listed: what they have in
            // common stands (recomputing it over a namespace's hundred
            // workloads of one identity was most of an endpoint update).
            Listed::Several { workloads, .. } => {
                match workloads.iter_mut().find(|(m, _)| m == meta) {
                    Some((_, n)) => *n += 1,
                    None => {
                        let mut workloads = std::mem::take(workloads);
                        workloads.push((meta.clone(), 1));
                        *self = Listed::several(workloads);
                    }
                }
            }
        }
    }

    /// False when no endpoint lists a workload here any more.
    fn remove(&mut self, meta: &Arc<PeerMeta>) -> bool {
        match self {
            Listed::One(m, n) if m == meta => {
                *n -= 1;
                *n > 0
            }
            Listed::One(..) => true,
            Listed::Several { workloads, .. } => {
                if let Some(i) = workloads.iter().position(|(m, _)| m == meta) {
                    workloads[i].1 -= 1;
                    // A workload gone: what the rest have in common is new.
                    if workloads[i].1 == 0 {
                        let mut workloads = std::mem::take(workloads);
                        workloads.swap_remove(i);
                        *self = Listed::several(workloads);
                    }
                }
                true
            }
        }
    }

    fn several(mut workloads: Vec<(Arc<PeerMeta>, u32)>) -> Self {
        if workloads.len() == 1
            && let Some((m, n)) = workloads.pop()
        {
            return Listed::One(m, n);
        }
        let common = workloads
            .iter()
            .map(|(m, _)| m)
            .fold(None::<PeerMeta>, |acc, m| {
                Some(acc.map_or_else(|| (**m).clone(), |a| common(&a, m)))
            })
            .unwrap_or_else(PeerMeta::unknown)
            .interned();
        Listed::Several { common, workloads }
    }
}

impl PeerTables {
    fn add(&mut self, address: IpAddr, meta: &Arc<PeerMeta>) {
        if !Peers::lists(meta) {
            return;
        }
        let listed = |m: &Arc<PeerMeta>| Listed::One(m.clone(), 0);
        self.by_address
            .entry(address)
            .or_insert_with(|| listed(meta))
            .add(meta);
        self.by_identity
            .entry(meta.principal.clone())
            .or_insert_with(|| listed(meta))
            .add(meta);
    }

    fn remove(&mut self, address: IpAddr, meta: &Arc<PeerMeta>) {
        if !Peers::lists(meta) {
            return;
        }
        if let Some(l) = self.by_address.get_mut(&address)
            && !l.remove(meta)
        {
            self.by_address.remove(&address);
        }
        if let Some(l) = self.by_identity.get_mut(&meta.principal)
            && !l.remove(meta)
        {
            self.by_identity.remove(&meta.principal);
        }
    }
}

impl Peers {
    /// Whether a workload with this metadata is listed: one with an identity.
    pub fn lists(meta: &PeerMeta) -> bool {
        &*meta.principal != UNKNOWN
    }

    /// The table of these endpoints (address and workload).
    pub fn of<'a>(endpoints: impl IntoIterator<Item = (IpAddr, &'a Arc<PeerMeta>)>) -> Self {
        let mut tables = PeerTables::default();
        for (address, meta) in endpoints {
            tables.add(address, meta);
        }
        Peers(RwLock::new(tables))
    }

    /// Some endpoints replaced by others (a cluster's, in an update).
    pub fn replace<'a>(
        &self,
        removed: impl IntoIterator<Item = (IpAddr, &'a Arc<PeerMeta>)>,
        added: impl IntoIterator<Item = (IpAddr, &'a Arc<PeerMeta>)>,
    ) {
        let mut tables = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (address, meta) in added {
            tables.add(address, meta);
        }
        for (address, meta) in removed {
            tables.remove(address, meta);
        }
    }

    /// Every entry, as text in a stable order (for tests).
    #[cfg(test)]
    pub(crate) fn describe(&self) -> Vec<String> {
        let tables = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = tables
            .by_address
            .iter()
            .map(|(a, l)| format!("{a} {:?}", l.answer()))
            .chain(
                tables
                    .by_identity
                    .iter()
                    .map(|(i, l)| format!("{i} {:?}", l.answer())),
            )
            .collect();
        out.sort();
        out
    }

    /// The workload behind a verified peer: the one at its address if that
    /// one holds the certificate's identity, else what the workloads with
    /// that identity have in common, else what the certificate says alone.
    pub fn find(&self, address: IpAddr, id: &identity::SpiffeId) -> Arc<PeerMeta> {
        let principal = id.to_string();
        let tables = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = tables.by_address.get(&address).map(Listed::answer)
            && *m.principal == *principal
        {
            return m.clone();
        }
        if let Some(m) = tables.by_identity.get(principal.as_str()) {
            return m.answer().clone();
        }
        drop(tables);
        PeerMeta::from_identity(id).interned()
    }
}

/// Two workloads' labels where they agree, "unknown" where they differ.
fn common(a: &PeerMeta, b: &PeerMeta) -> PeerMeta {
    let same = |x: &Arc<str>, y: &Arc<str>| -> Arc<str> {
        if x == y { x.clone() } else { UNKNOWN.into() }
    };
    let labels = PeerLabels {
        namespace: same(&a.namespace, &b.namespace),
        principal: same(&a.principal, &b.principal),
        app: same(&a.app, &b.app),
        version: same(&a.version, &b.version),
        canonical_service: same(&a.canonical_service, &b.canonical_service),
        canonical_revision: same(&a.canonical_revision, &b.canonical_revision),
        cluster: same(&a.cluster, &b.cluster),
    };
    PeerMeta {
        workload: same(&a.workload, &b.workload),
        labels: labels.interned(),
    }
}

/// The destination service of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceMeta {
    pub host: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl ServiceMeta {
    /// "reviews.default.svc.cluster.local" → name "reviews", namespace "default".
    /// A host outside the cluster domain ("api.example.com") has no namespace.
    pub fn from_host(host: &str) -> Self {
        if host.is_empty() {
            let u: Arc<str> = UNKNOWN.into();
            return ServiceMeta {
                host: u.clone(),
                name: u.clone(),
                namespace: u,
            };
        }
        let mut parts = host.split('.');
        let name = parts.next().unwrap_or(host);
        let namespace = if host.contains(".svc.") {
            parts.next().unwrap_or(UNKNOWN)
        } else {
            UNKNOWN
        };
        ServiceMeta {
            host: host.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// The one shared copy for `host` (see [`Interner`]).
    pub fn interned(host: &str) -> Arc<ServiceMeta> {
        static SERVICES: OnceLock<Interner<ServiceMeta>> = OnceLock::new();
        let service = ServiceMeta::from_host(host);
        SERVICES
            .get_or_init(Interner::default)
            .get(&service, || Arc::new(service.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn endpoint_metadata() {
        let ep = pb::Endpoint {
            pod: "reviews-v2-abc.default".into(),
            labels: labels(&[("app", "reviews"), ("version", "v2")]),
            ..Default::default()
        };
        let mut metas = EndpointMetas::default();
        let m = metas.of(&ep, "x");
        assert_eq!(&*m.workload, "reviews-v2-abc");
        assert_eq!(&*m.namespace, "default");
        assert_eq!(&*m.app, "reviews");
        assert_eq!(&*m.version, "v2");
        assert_eq!(&*m.canonical_service, "reviews");
        assert_eq!(&*m.canonical_revision, "v2");
        assert_eq!(&*m.cluster, DEFAULT_CLUSTER);
        assert_eq!(&*m.principal, UNKNOWN);

        // The control plane's workload name (the Deployment's) wins over
        // the pod's, and replicas share one copy.
        let replica = |pod: &str| pb::Endpoint {
            pod: pod.into(),
            workload: "reviews-v2".into(),
            ..ep.clone()
        };
        let (a, b) = (
            replica("reviews-v2-abc.default"),
            replica("reviews-v2-def.default"),
        );
        let (ma, mb) = (metas.of(&a, "x"), metas.of(&b, "x"));
        assert_eq!(&*ma.workload, "reviews-v2");
        assert!(Arc::ptr_eq(&ma, &mb));
    }

    #[test]
    fn canonical_names_as_istio_derives_them() {
        // The canonical labels win; app.kubernetes.io/* come before app/version.
        let m = PeerMeta::from_labels(
            &labels(&[
                ("service.istio.io/canonical-name", "shop"),
                ("service.istio.io/canonical-revision", "2024"),
                ("app", "web"),
            ]),
            "web-v1",
            "ns",
            "",
        );
        assert_eq!(
            (&*m.canonical_service, &*m.canonical_revision),
            ("shop", "2024")
        );
        assert_eq!((&*m.app, &*m.version), ("web", UNKNOWN));
        let m = PeerMeta::from_labels(
            &labels(&[
                ("app.kubernetes.io/name", "k8s-name"),
                ("app.kubernetes.io/version", "1.2"),
                ("app", "web"),
            ]),
            "web-v1",
            "ns",
            "",
        );
        assert_eq!(
            (&*m.canonical_service, &*m.canonical_revision),
            ("k8s-name", "1.2")
        );
        // No labels at all: the workload name and "latest".
        let m = PeerMeta::from_labels(&BTreeMap::new(), "web-v1", "ns", "");
        assert_eq!(
            (&*m.canonical_service, &*m.canonical_revision),
            ("web-v1", "latest")
        );
    }

    #[test]
    fn peers_by_address_then_unique_identity() {
        let id = |sa: &str| -> identity::SpiffeId {
            format!("spiffe://cluster.local/ns/default/sa/{sa}")
                .parse()
                .expect("id")
        };
        let meta = |workload: &str, sa: &str| {
            let app = workload.split('-').next().unwrap_or_default();
            Arc::new(PeerMeta::from_labels(
                &labels(&[("app", app), ("version", workload)]),
                workload,
                "default",
                &id(sa).to_string(),
            ))
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let listed = [
            (ip("10.0.0.1"), meta("reviews-v1", "reviews")),
            (ip("10.0.0.2"), meta("reviews-v2", "reviews")),
            (ip("10.0.0.3"), meta("productpage-v1", "productpage")),
        ];
        let peers = Peers::of(listed.iter().map(|(a, m)| (*a, m)));
        assert_eq!(
            &*peers.find(ip("10.0.0.2"), &id("reviews")).workload,
            "reviews-v2"
        );
        // Shared identity, unknown address: what its workloads have in common.
        let m = peers.find(ip("127.0.0.1"), &id("reviews"));
        assert_eq!((&*m.workload, &*m.version), (UNKNOWN, UNKNOWN));
        assert_eq!(
            (&*m.namespace, &*m.app, &*m.canonical_service),
            ("default", "reviews", "reviews")
        );
        // A unique identity is enough.
        let m = peers.find(ip("127.0.0.1"), &id("productpage"));
        assert_eq!(&*m.workload, "productpage-v1");
        // An address whose workload has another identity is not believed.
        let m = peers.find(ip("10.0.0.3"), &id("reviews"));
        assert_eq!(&*m.workload, UNKNOWN);
    }

    #[test]
    fn equal_metadata_is_one_allocation_across_configs() {
        // Series are keyed by pointer: the next config's copy of the same
        // workload must be the same pointer, or each push starts new series.
        let ep = pb::Endpoint {
            pod: "ratings-v1-abc.default".into(),
            workload: "ratings-v1".into(),
            labels: labels(&[("app", "ratings"), ("version", "v1")]),
            ..Default::default()
        };
        let first = EndpointMetas::default().of(&ep, "default");
        let next = EndpointMetas::default().of(&ep, "default");
        assert!(Arc::ptr_eq(&first, &next));
        let other = EndpointMetas::default().of(
            &pb::Endpoint {
                workload: "ratings-v2".into(),
                ..ep.clone()
            },
            "default",
        );
        assert!(!Arc::ptr_eq(&first, &other));
        // Distinct workloads with the same other labels share one record
        // of them; and equal label values are shared across records.
        assert!(Arc::ptr_eq(&first.labels, &other.labels));
        let relabelled = EndpointMetas::default().of(
            &pb::Endpoint {
                labels: labels(&[("app", "ratings"), ("version", "v2")]),
                ..ep.clone()
            },
            "default",
        );
        assert!(!Arc::ptr_eq(&first.labels, &relabelled.labels));
        assert_eq!(&*relabelled.version, "v2");
        assert!(Arc::ptr_eq(&first.app, &relabelled.app));
        assert!(Arc::ptr_eq(&first.app, &other.app));
        assert!(Arc::ptr_eq(&first.namespace, &other.namespace));
        assert!(Arc::ptr_eq(&first.principal, &other.principal));
        let host = "ratings.default.svc.cluster.local";
        assert!(Arc::ptr_eq(
            &ServiceMeta::interned(host),
            &ServiceMeta::interned(host)
        ));
        // An entry dies with its last user: a new one is made after.
        let id: identity::SpiffeId = "spiffe://cluster.local/ns/x/sa/gone".parse().expect("id");
        let gone = Arc::downgrade(&PeerMeta::from_identity(&id).interned());
        assert!(gone.upgrade().is_none());
        assert_eq!(&*PeerMeta::from_identity(&id).interned().namespace, "x");
    }

    #[test]
    fn an_intern_table_stays_near_what_lives() {
        // 5,000 values in use while 20,000 others come and go (a config
        // update's fresh copies): dead slots are pruned before the table
        // holds a quarter more than what lives, so its capacity follows
        // the live count (twice it, before, doubled the table).
        let table: Interner<str> = Interner::default();
        let live: Vec<Arc<str>> = (0..5000)
            .map(|i| {
                let s = format!("live-{i}");
                table.get(&s, || Arc::from(s.as_str()))
            })
            .collect();
        let mut largest = 0;
        for i in 0..20_000 {
            let s = format!("gone-{i}");
            drop(table.get(&s, || Arc::from(s.as_str())));
            let len = table.table.lock().expect("table").by_hash.len();
            largest = largest.max(len);
        }
        assert!(
            largest <= 5000 + 5000 / 4 + 1,
            "{largest} slots for 5,000 live"
        );
        // The live ones are still the shared copies.
        let again = table.get("live-7", || Arc::from("live-7"));
        assert!(Arc::ptr_eq(&again, &live[7]));
    }

    #[test]
    fn service_from_host() {
        let s = ServiceMeta::from_host("reviews.default.svc.cluster.local");
        assert_eq!((&*s.name, &*s.namespace), ("reviews", "default"));
        let s = ServiceMeta::from_host("api.example.com");
        assert_eq!((&*s.name, &*s.namespace), ("api", UNKNOWN));
    }
}
