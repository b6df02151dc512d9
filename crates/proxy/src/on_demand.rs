//! On-demand discovery, the proxy's half: the proxy is sent a directory of
//! every host it may call (name, VIPs, ports) and outbound config only for
//! the hosts it asked for. A request or a captured connection for a host
//! in the directory whose config the proxy lacks asks for it on the
//! discovery stream (once, however many wait), is held until a config
//! with it is applied, and is then routed as if that config had been
//! there; after [`DEFAULT_TIMEOUT`] (Envoy's on-demand CDS default) it
//! fails with 503, flag NC, as Envoy's router does when on-demand
//! discovery finds no cluster. A destination not in the directory is
//! treated as before (404, passthrough or REGISTRY_ONLY's refusal).
//!
//! Hosts asked for are kept for the life of the process, or, with an idle
//! period (`--on-demand-idle-minutes`), until they served no call for that
//! long: see [`sweep`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use wire::asks::Asks;
use wire::pb::{self, resource::Kind};

use crate::config::ConfigStore;
use crate::snapshot::Snapshot;

pub mod sweep;

/// How long a request waits for its host's config (Envoy's
/// `OnDemandCds.timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct OnDemand {
    asks: Arc<Asks>,
    /// The pod's namespace, where short names resolve.
    namespace: String,
    timeout: Duration,
    entries: Mutex<BTreeMap<String, pb::DirectoryHost>>,
    directory: ArcSwap<Directory>,
    /// Hosts the control plane refused, with why; bumped on each refusal.
    refused: Mutex<HashMap<String, String>>,
    refusals: watch::Sender<u64>,
}

/// What the directory says of the hosts, indexed for requests.
#[derive(Debug, Default)]
pub struct Directory {
    /// Every name a client in the pod's namespace may use, lowercase, to its host.
    names: HashMap<String, Arc<str>>,
    vips: HashMap<IpAddr, Arc<str>>,
    ports: HashMap<Arc<str>, Vec<(u16, pb::Protocol)>>,
    /// Every host with its VIPs, for the DNS proxy.
    pub hosts: Arc<BTreeMap<String, Vec<IpAddr>>>,
    /// The VIPs given to hosts that have none.
    allocated: BTreeMap<String, Vec<IpAddr>>,
}

impl Directory {
    fn build(entries: &BTreeMap<String, pb::DirectoryHost>, namespace: &str) -> Directory {
        let mut d = Directory::default();
        let mut hosts: BTreeMap<String, Vec<IpAddr>> = entries
            .values()
            .map(|e| {
                let ips = e.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                (e.host.clone(), ips)
            })
            .collect();
        // Hosts without a VIP get one as the proxy gives them (see
        // crate::dns::allocate), over every host it may call: the same
        // whichever it called (see [`OnDemand::readdress`]).
        d.allocated = crate::dns::allocate(&hosts);
        hosts.extend(d.allocated.clone());
        for e in entries.values() {
            let host: Arc<str> = Arc::from(e.host.to_ascii_lowercase());
            let ips = hosts.get(&e.host).cloned().unwrap_or_default();
            for ip in &ips {
                d.vips.insert(*ip, host.clone());
            }
            let parts: Vec<&str> = host.split('.').collect();
            if parts.len() >= 4 && parts[2] == "svc" {
                let (name, ns) = (parts[0], parts[1]);
                d.names.insert(format!("{name}.{ns}.svc"), host.clone());
                d.names.insert(format!("{name}.{ns}"), host.clone());
                if ns == namespace {
                    d.names.insert(name.to_string(), host.clone());
                }
            }
            d.names.insert(host.to_string(), host.clone());
            let ports = e
                .ports
                .iter()
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok()?;
                    Some((port, pb::Protocol::try_from(p.protocol).unwrap_or_default()))
                })
                .collect();
            d.ports.insert(host.clone(), ports);
        }
        d.hosts = Arc::new(hosts);
        d
    }

    /// The host a request names by `authority` (a name, with or without
    /// port), or else by the VIP it was sent to, if it serves `port`.
    pub fn host(
        &self,
        authority: &str,
        original_dst: Option<SocketAddr>,
        port: u16,
    ) -> Option<Arc<str>> {
        let name = crate::snapshot::domains::strip_port(authority).to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let host = self
            .names
            .get(name)
            .or_else(|| original_dst.and_then(|d| self.vips.get(&d.ip())))?;
        self.serves(host, port).then(|| host.clone())
    }

    /// The host whose VIP `dst` is, and its protocol on that port.
    pub fn at(&self, dst: SocketAddr) -> Option<(Arc<str>, pb::Protocol)> {
        let host = self.vips.get(&dst.ip())?;
        let (_, protocol) = self
            .ports
            .get(host)?
            .iter()
            .find(|(p, _)| *p == dst.port())?;
        Some((host.clone(), *protocol))
    }

    fn serves(&self, host: &str, port: u16) -> bool {
        self.ports
            .get(host)
            .is_some_and(|ps| ps.iter().any(|(p, _)| *p == port))
    }
}

/// Why a held request or connection was not given its host's config.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the control plane sent no config for {host} within {timeout:?}")]
    Timeout { host: Arc<str>, timeout: Duration },
    #[error("the control plane refused {host}: {reason}")]
    Refused { host: Arc<str>, reason: String },
}

impl OnDemand {
    pub fn new(namespace: &str, timeout: Duration) -> OnDemand {
        OnDemand {
            asks: Arc::default(),
            namespace: namespace.to_string(),
            timeout,
            entries: Mutex::default(),
            directory: ArcSwap::default(),
            refused: Mutex::default(),
            refusals: watch::Sender::new(0),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn asks(&self) -> Arc<Asks> {
        self.asks.clone()
    }

    pub fn directory(&self) -> Arc<Directory> {
        self.directory.load_full()
    }

    /// A full directory (`changed` with `removed` empty and `whole`) or a change to it.
    pub fn apply(
        &self,
        whole: bool,
        changed: Vec<pb::Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let mut entries = Self::lock(&self.entries);
        let mut next = if whole {
            BTreeMap::new()
        } else {
            entries.clone()
        };
        for name in removed {
            next.remove(&name);
        }
        for r in changed {
            match r.kind {
                Some(Kind::DirectoryHost(h)) => {
                    next.insert(r.name, h);
                }
                _ => {
                    return Err(format!(
                        "directory: resource {:?} is no directory entry",
                        r.name
                    ));
                }
            }
        }
        self.directory
            .store(Arc::new(Directory::build(&next, &self.namespace)));
        *entries = next;
        Ok(())
    }

    /// The control plane refused these hosts: their waiters fail at once.
    pub fn refuse(&self, refused: Vec<pb::HostRefusal>) {
        let mut map = Self::lock(&self.refused);
        for r in refused {
            tracing::warn!(host = %r.host, reason = %r.reason, "on-demand host refused by the control plane");
            map.insert(r.host, r.reason);
        }
        drop(map);
        self.refusals.send_modify(|n| *n += 1);
    }

    /// The current config once it has what `ready` looks for, asking for
    /// `host` if it lacks it; at most [`OnDemand::timeout`] waited.
    pub async fn fetch(
        &self,
        store: &ConfigStore,
        host: &Arc<str>,
        ready: impl Fn(&Snapshot) -> bool,
    ) -> Result<Arc<Snapshot>, Unavailable> {
        let mut changes = store.subscribe();
        let mut refusals = self.refusals.subscribe();
        if let Some(s) = store.current().filter(|s| ready(s)) {
            return Ok(s);
        }
        // An earlier refusal is history: this is a new ask.
        Self::lock(&self.refused).remove(&**host);
        if self.asks.ask(host) {
            tracing::debug!(%host, "asking the control plane for a host on demand");
        }
        let wait = async {
            loop {
                if let Some(reason) = Self::lock(&self.refused).get(&**host).cloned() {
                    return Err(Unavailable::Refused {
                        host: host.clone(),
                        reason,
                    });
                }
                if let Some(s) = changes.borrow_and_update().clone().filter(|s| ready(s)) {
                    return Ok(s);
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = refusals.changed() => {}
                }
            }
            std::future::pending().await
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(Unavailable::Timeout {
                    host: host.clone(),
                    timeout: self.timeout,
                })
            })
    }
}

impl OnDemand {
    /// Gives the hosts of `snapshot` that have no VIP of their own the ones
    /// the directory gives them. A snapshot allocates VIPs over the hosts it
    /// has, which on demand are some of them; the DNS proxy answers with
    /// the directory's, allocated over all.
    pub fn readdress(&self, snapshot: &mut Snapshot) {
        let directory = self.directory();
        let moved: Vec<(&String, &Vec<IpAddr>, &Vec<IpAddr>)> = snapshot
            .hosts
            .iter()
            .filter_map(|(host, old)| {
                let new = directory.allocated.get(host)?;
                (old != new).then_some((host, old, new))
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        let mut vips = (*snapshot.vips).clone();
        let mut hosts = (*snapshot.hosts).clone();
        // All taken out before any is put back: one host's new VIP may be
        // another's old one.
        let mut taken = Vec::new();
        for (host, old, new) in moved {
            let at: Vec<SocketAddr> = vips
                .keys()
                .filter(|a| old.contains(&a.ip()))
                .copied()
                .collect();
            for a in at {
                if let Some(vip) = vips.remove(&a) {
                    taken.push((a.port(), new, vip));
                }
            }
            hosts.insert(host.clone(), new.clone());
        }
        for (port, new, vip) in taken {
            for ip in new {
                vips.insert(SocketAddr::new(*ip, port), vip.clone());
            }
        }
        snapshot.vips = Arc::new(vips);
        snapshot.hosts = Arc::new(hosts);
    }

    /// For a request whose virtual host the current config lacks: if it
    /// names a host of the directory (by `authority`, or else by the VIP it
    /// was sent to) served on `port`, the first config that has that host's
    /// routes (asked for if need be); `None` if it names none, and is
    /// routed as any unknown destination is.
    pub async fn on_miss(
        &self,
        store: &ConfigStore,
        authority: &str,
        original_dst: Option<SocketAddr>,
        port: u16,
    ) -> Result<Option<Arc<Snapshot>>, Unavailable> {
        let Some(host) = self.directory().host(authority, original_dst, port) else {
            return Ok(None);
        };
        let has = |s: &Snapshot| {
            s.routes_by_port
                .get(&port)
                .is_some_and(|t| t.virtual_host(&host).is_some())
        };
        self.fetch(store, &host, has).await.map(Some)
    }

    /// The config to serve a captured TCP connection to `dst` by: the
    /// current one unless `dst` is a VIP of the directory the config lacks.
    pub async fn for_connection(
        &self,
        store: &ConfigStore,
        snapshot: Arc<Snapshot>,
        dst: SocketAddr,
    ) -> Result<Arc<Snapshot>, Unavailable> {
        if snapshot.vips.contains_key(&dst) {
            return Ok(snapshot);
        }
        let Some((host, _)) = self.directory().at(dst) else {
            return Ok(snapshot);
        };
        self.fetch(store, &host, |s| s.vips.contains_key(&dst))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, ip: &str, port: u32, protocol: pb::Protocol) -> pb::Resource {
        pb::Resource {
            name: host.into(),
            kind: Some(Kind::DirectoryHost(pb::DirectoryHost {
                host: host.into(),
                addresses: vec![ip.into()],
                ports: vec![pb::DirectoryPort {
                    port,
                    protocol: protocol as i32,
                }],
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_names_its_host_by_name_or_by_vip_on_a_port_it_serves() {
        let od = OnDemand::new("a", DEFAULT_TIMEOUT);
        od.apply(
            true,
            vec![
                entry(
                    "u.a.svc.cluster.local",
                    "10.96.0.2",
                    8080,
                    pb::Protocol::Http,
                ),
                entry(
                    "t.b.svc.cluster.local",
                    "10.96.0.3",
                    9000,
                    pb::Protocol::Tcp,
                ),
            ],
            vec![],
        )
        .expect("applies");
        let d = od.directory();
        let u = Some(Arc::from("u.a.svc.cluster.local"));
        assert_eq!(d.host("u:8080", None, 8080), u);
        assert_eq!(d.host("U.a.svc.cluster.local.", None, 8080), u);
        assert_eq!(d.host("u.a", None, 8080), u);
        assert_eq!(d.host("u", None, 9999), None, "not a port of u");
        assert_eq!(
            d.host("t", None, 9000),
            None,
            "short names in the pod's namespace only"
        );
        let dst: SocketAddr = "10.96.0.2:8080".parse().expect("addr");
        assert_eq!(d.host("10.96.0.2:8080", Some(dst), 8080), u);
        let t: SocketAddr = "10.96.0.3:9000".parse().expect("addr");
        assert_eq!(d.at(t).map(|(_, p)| p), Some(pb::Protocol::Tcp));
        assert_eq!(d.hosts.len(), 2);
        od.apply(false, vec![], vec!["t.b.svc.cluster.local".into()])
            .expect("applies");
        assert!(od.directory().at(t).is_none());
        assert!(
            od.apply(false, vec![pb::Resource::default()], vec![])
                .is_err()
        );
    }

    #[test]
    fn a_host_without_a_vip_gets_one_allocated_over_the_whole_directory() {
        let od = OnDemand::new("a", DEFAULT_TIMEOUT);
        let mut db = entry("db.example.com", "", 5432, pb::Protocol::Tcp);
        let mut api = entry("api.example.com", "", 443, pb::Protocol::Tls);
        for r in [&mut db, &mut api] {
            if let Some(Kind::DirectoryHost(h)) = &mut r.kind {
                h.addresses.clear();
            }
        }
        od.apply(true, vec![db, api], vec![]).expect("applies");
        let d = od.directory();
        // In name order, as the DNS proxy and a whole config allocate them.
        assert_eq!(
            d.hosts["api.example.com"],
            vec!["240.240.0.1".parse::<IpAddr>().expect("ip")]
        );
        let db_vip: SocketAddr = "240.240.0.2:5432".parse().expect("addr");
        assert_eq!(
            d.at(db_vip).map(|(h, _)| h),
            Some(Arc::from("db.example.com"))
        );
    }
}
