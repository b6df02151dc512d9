//! Consistent hashing (Istio's `consistentHash`): what a request is hashed
//! by, and the two tables Envoy maps hashes to endpoints with — the ring
//! (Karger's consistent hashing, as ketama) and Maglev's lookup table.
//!
//! Hashes are xxHash64, Envoy's choice: stable across processes and
//! versions, so every replica of a client maps a key to the same endpoint.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use wire::pb;
use xxhash_rust::xxh64::xxh64;

/// Envoy's ceiling on the ring size.
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// What a request is hashed by.
#[derive(Debug)]
pub enum Key {
    Header(HeaderName),
    Cookie {
        name: Box<str>,
        path: Box<str>,
        /// Set: a missing cookie is generated, with this Max-Age (0: a session cookie).
        ttl: Option<u64>,
    },
    SourceIp,
    QueryParameter(Box<str>),
}

/// A request's hash, and the cookie to set when one was generated for it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHash {
    /// `None`: the key is missing; the balancer picks at random.
    pub hash: Option<u64>,
    pub set_cookie: Option<HeaderValue>,
}

impl Key {
    pub fn compile(ch: &pb::ConsistentHash) -> Result<Option<Self>, String> {
        use pb::consistent_hash::Key as K;
        Ok(match &ch.key {
            None => None,
            Some(K::Header(h)) => Some(Key::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("consistent_hash.header {h:?} is not a header name"))?,
            )),
            Some(K::Cookie(c)) => {
                if c.name.is_empty() || c.name.contains([';', '=', ' ']) {
                    return Err(format!(
                        "consistent_hash.cookie.name {:?} is not a cookie name",
                        c.name
                    ));
                }
                Some(Key::Cookie {
                    name: c.name.as_str().into(),
                    path: c.path.as_str().into(),
                    ttl: c.ttl_ms.map(|ms| ms / 1000),
                })
            }
            Some(K::SourceIp(true)) => Some(Key::SourceIp),
            Some(K::SourceIp(false)) => None,
            Some(K::QueryParameter(q)) => Some(Key::QueryParameter(q.as_str().into())),
        })
    }

    /// The hash of a request. `peer` is the downstream address (its IP is
    /// the source IP; the whole address seeds a generated cookie, as Envoy).
    pub fn of(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: std::net::SocketAddr,
    ) -> RequestHash {
        match self {
            Key::Header(name) => RequestHash {
                hash: headers.get(name).map(|v| hash(v.as_bytes())),
                set_cookie: None,
            },
            Key::SourceIp => {
                let mut buf = [0u8; 16];
                let ip = match peer.ip() {
                    IpAddr::V4(v4) => {
                        buf[..4].copy_from_slice(&v4.octets());
                        &buf[..4]
                    }
                    IpAddr::V6(v6) => {
                        buf.copy_from_slice(&v6.octets());
                        &buf[..]
                    }
                };
                RequestHash {
                    hash: Some(hash(ip)),
                    set_cookie: None,
                }
            }
            Key::QueryParameter(name) => RequestHash {
                hash: query_param(query, name).map(|v| hash(v.as_bytes())),
                set_cookie: None,
            },
            Key::Cookie { name, path, ttl } => {
                if let Some(v) = cookie(headers, name) {
                    return RequestHash {
                        hash: Some(hash(v.as_bytes())),
                        set_cookie: None,
                    };
                }
                let Some(ttl) = ttl else {
                    return RequestHash::default();
                };
                // Envoy's generated value: the hash of the downstream address, in hex.
                let value = format!("{:016x}", hash(peer.to_string().as_bytes()));
                let mut set = format!("{name}=\"{value}\"");
                if *ttl > 0 {
                    set.push_str(&format!("; Max-Age={ttl}"));
                }
                if !path.is_empty() {
                    set.push_str(&format!("; Path={path}"));
                }
                set.push_str("; HttpOnly");
                RequestHash {
                    // The value the client will send back, so this request lands
                    // where its successors will.
                    hash: Some(hash(format!("\"{value}\"").as_bytes())),
                    set_cookie: HeaderValue::from_str(&set).ok(),
                }
            }
        }
    }
}

/// The first value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Envoy's defaults and bounds for the table sizes.
const DEFAULT_RING_SIZE: u64 = 1024;
const DEFAULT_MAGLEV_SIZE: u64 = 65_537;
const MAX_MAGLEV_SIZE: u64 = 5_000_011;

/// The table size to build with: the default for 0, else `size` if valid
/// (Maglev needs a prime, as Envoy insists).
pub fn table_size(algorithm: pb::HashAlgorithm, size: u64) -> Result<u64, String> {
    match (algorithm, size) {
        (pb::HashAlgorithm::RingHash, 0) => Ok(DEFAULT_RING_SIZE),
        (pb::HashAlgorithm::RingHash, s) => Ok(s.min(MAX_RING_SIZE)),
        (pb::HashAlgorithm::Maglev, 0) => Ok(DEFAULT_MAGLEV_SIZE),
        (pb::HashAlgorithm::Maglev, s) if s <= MAX_MAGLEV_SIZE && is_prime(s) => Ok(s),
        (pb::HashAlgorithm::Maglev, s) => Err(format!(
            "consistent_hash.table_size {s}: a Maglev table size must be a prime up to {MAX_MAGLEV_SIZE}"
        )),
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Maps hashes to endpoints (by index into the list it was built from).
#[derive(Debug)]
pub enum Table {
    /// (hash, endpoint) sorted by hash; a key goes to the first point at or after it.
    Ring(Vec<(u64, u32)>),
    /// Maglev's table: a key goes to `table[hash % len]`.
    Maglev(Vec<u32>),
}

impl Table {
    /// `hosts` are (name, weight) pairs; the name places the endpoint (Envoy
    /// uses its address).
    pub fn build(algorithm: pb::HashAlgorithm, size: u64, hosts: &[(&str, u32)]) -> Option<Self> {
        if hosts.is_empty() {
            return None;
        }
        Some(match algorithm {
            pb::HashAlgorithm::RingHash => Table::Ring(ring(size, hosts)),
            pb::HashAlgorithm::Maglev => Table::Maglev(maglev(size, hosts)),
        })
    }

    /// The endpoint for `hash`; `skip` is how many distinct endpoints to step
    /// past (a retry avoiding the one that failed).
    pub fn lookup(&self, hash: u64, skip: Option<u32>) -> u32 {
        match self {
            Table::Ring(ring) => {
                let start = ring.partition_point(|(h, _)| *h < hash) % ring.len();
                let first = ring[start].1;
                match skip {
                    Some(avoid) if first == avoid => (1..ring.len())
                        .map(|i| ring[(start + i) % ring.len()].1)
                        .find(|e| *e != avoid)
                        .unwrap_or(first),
                    _ => first,
                }
            }
            Table::Maglev(table) => {
                let len = table.len() as u64;
                let first = table[(hash % len) as usize];
                match skip {
                    Some(avoid) if first == avoid => (1..len)
                        .map(|i| table[((hash.wrapping_add(i)) % len) as usize])
                        .find(|e| *e != avoid)
                        .unwrap_or(first),
                    _ => first,
                }
            }
        }
    }
}

/// Envoy's ring: each endpoint gets points in proportion to its weight, at
/// least `min_size` points in all, each at xxHash64("<name>_<i>").
fn ring(min_size: u64, hosts: &[(&str, u32)]) -> Vec<(u64, u32)> {
    let total: f64 = hosts.iter().map(|(_, w)| f64::from((*w).max(1))).sum();
    let min_weight = hosts
        .iter()
        .map(|(_, w)| f64::from((*w).max(1)) / total)
        .fold(f64::INFINITY, f64::min);
    let scale =
        ((min_weight * min_size.max(1) as f64).ceil() / min_weight).min(MAX_RING_SIZE as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    let mut key = String::new();
    for (i, (name, w)) in hosts.iter().enumerate() {
        target += scale * f64::from((*w).max(1)) / total;
        let mut n = 0u64;
        while current < target {
            key.clear();
            key.push_str(name);
            key.push('_');
            key.push_str(&n.to_string());
            ring.push((hash(key.as_bytes()), i as u32));
            n += 1;
            current += 1.0;
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev (Eisenbud et al., NSDI 2016) with Envoy's weighting: every
/// endpoint walks its own permutation of the table, taking free slots in
/// turn, heavier endpoints taking turns more often. `size` should be prime.
fn maglev(size: u64, hosts: &[(&str, u32)]) -> Vec<u32> {
    let m = size.max(2);
    let max_weight = hosts.iter().map(|(_, w)| (*w).max(1)).max().unwrap_or(1);
    struct Entry {
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        target: u64,
    }
    let mut entries: Vec<Entry> = hosts
        .iter()
        .map(|(name, w)| Entry {
            offset: xxh64(name.as_bytes(), 0) % m,
            skip: xxh64(name.as_bytes(), 1) % (m - 1) + 1,
            next: 0,
            weight: u64::from((*w).max(1)),
            target: 0,
        })
        .collect();
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < m {
        for (i, e) in entries.iter_mut().enumerate() {
            if filled == m {
                break;
            }
            // An endpoint of weight w takes a turn in w of every max_weight rounds.
            if iteration * e.weight < e.target {
                continue;
            }
            e.target += u64::from(max_weight);
            let mut c = (e.offset + e.skip * e.next) % m;
            while table[c as usize] != u32::MAX {
                e.next += 1;
                c = (e.offset + e.skip * e.next) % m;
            }
            table[c as usize] = i as u32;
            e.next += 1;
            filled += 1;
        }
        iteration += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn hosts(names: &[String]) -> Vec<(&str, u32)> {
        names.iter().map(|n| (n.as_str(), 1)).collect()
    }

    /// Keys per endpoint for 100 000 keys.
    fn spread(t: &Table, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for k in 0..100_000u64 {
            counts[t.lookup(hash(&k.to_le_bytes()), None) as usize] += 1;
        }
        counts
    }

    #[test]
    fn both_tables_spread_keys_evenly() {
        let names = names(5);
        for (algorithm, size) in [
            (pb::HashAlgorithm::RingHash, 1024),
            (pb::HashAlgorithm::Maglev, 65_537),
        ] {
            let t = Table::build(algorithm, size, &hosts(&names)).expect("table");
            // Deterministic (fixed keys, fixed hash): the bounds hold or never do.
            // A 1024-point ring has some imbalance; Maglev is nearly exact.
            let (lo, hi) = match algorithm {
                pb::HashAlgorithm::RingHash => (14_000, 26_000),
                pb::HashAlgorithm::Maglev => (19_000, 21_000),
            };
            for c in spread(&t, 5) {
                assert!((lo..hi).contains(&c), "{algorithm:?}: {c}");
            }
        }
    }

    #[test]
    fn removing_an_endpoint_moves_few_other_keys() {
        let all = names(5);
        for algorithm in [pb::HashAlgorithm::RingHash, pb::HashAlgorithm::Maglev] {
            let size = if algorithm == pb::HashAlgorithm::Maglev {
                65_537
            } else {
                1024
            };
            let before = Table::build(algorithm, size, &hosts(&all)).expect("table");
            let fewer: Vec<String> = all[..4].to_vec();
            let after = Table::build(algorithm, size, &hosts(&fewer)).expect("table");
            let mut moved = 0;
            for k in 0..20_000u64 {
                let h = hash(&k.to_le_bytes());
                let (b, a) = (before.lookup(h, None), after.lookup(h, None));
                if b != 4 && b != a {
                    moved += 1;
                }
            }
            // A naive modulo would move ~80 % of them. The ring grows each
            // remaining endpoint's points to keep its minimum size, which
            // moves some (as Envoy's does); Maglev moves a few percent.
            let bound = match algorithm {
                pb::HashAlgorithm::RingHash => 20_000 * 15 / 100,
                pb::HashAlgorithm::Maglev => 20_000 * 5 / 100,
            };
            assert!(moved < bound, "{algorithm:?}: {moved} keys moved");
        }
    }

    #[test]
    fn weights_shift_the_share() {
        let names = names(2);
        let weighted = [(names[0].as_str(), 3), (names[1].as_str(), 1)];
        for algorithm in [pb::HashAlgorithm::RingHash, pb::HashAlgorithm::Maglev] {
            let t = Table::build(algorithm, 65_537, &weighted).expect("table");
            let c = spread(&t, 2);
            assert!((70_000..80_000).contains(&c[0]), "{algorithm:?}: {c:?}");
        }
    }

    #[test]
    fn skip_steps_to_another_endpoint() {
        let names = names(3);
        for algorithm in [pb::HashAlgorithm::RingHash, pb::HashAlgorithm::Maglev] {
            let t = Table::build(algorithm, 1031, &hosts(&names)).expect("table");
            for k in 0..100u64 {
                let h = hash(&k.to_le_bytes());
                let first = t.lookup(h, None);
                let second = t.lookup(h, Some(first));
                assert_ne!(first, second);
                assert_eq!(t.lookup(h, Some(first)), second, "deterministic");
            }
        }
    }

    #[test]
    fn table_sizes() {
        use pb::HashAlgorithm::{Maglev, RingHash};
        assert_eq!(table_size(RingHash, 0), Ok(1024));
        assert_eq!(table_size(Maglev, 0), Ok(65_537));
        assert_eq!(table_size(Maglev, 1031), Ok(1031));
        assert!(table_size(Maglev, 1024).is_err());
    }

    #[test]
    fn request_keys() {
        let peer: std::net::SocketAddr = "10.1.2.3:5555".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().expect("value"));
        h.append("cookie", "a=1; session=abc".parse().expect("value"));
        let header = Key::Header(HeaderName::from_static("x-user"));
        assert_eq!(header.of(&h, None, peer).hash, Some(hash(b"alice")));
        assert_eq!(
            Key::Header(HeaderName::from_static("x-none"))
                .of(&h, None, peer)
                .hash,
            None
        );
        let q = Key::QueryParameter("u".into());
        assert_eq!(q.of(&h, Some("a=1&u=bob"), peer).hash, Some(hash(b"bob")));
        let ip = Key::SourceIp;
        let other: std::net::SocketAddr = "10.1.2.3:6666".parse().expect("addr");
        assert_eq!(
            ip.of(&h, None, peer).hash,
            ip.of(&h, None, other).hash,
            "the port does not matter"
        );
        let c = Key::Cookie {
            name: "session".into(),
            path: "/".into(),
            ttl: Some(60),
        };
        assert_eq!(
            c.of(&h, None, peer),
            RequestHash {
                hash: Some(hash(b"abc")),
                set_cookie: None
            }
        );
    }

    #[test]
    fn a_missing_cookie_is_generated_and_hashes_as_it_will_come_back() {
        let peer: std::net::SocketAddr = "10.1.2.3:5555".parse().expect("addr");
        let c = Key::Cookie {
            name: "session".into(),
            path: "/app".into(),
            ttl: Some(3600),
        };
        let first = c.of(&HeaderMap::new(), None, peer);
        let set = first.set_cookie.expect("generated");
        let set = set.to_str().expect("ascii");
        assert!(set.starts_with("session=\""), "{set}");
        assert!(
            set.ends_with("; Max-Age=3600; Path=/app; HttpOnly"),
            "{set}"
        );
        // The client sends it back: same hash.
        let value = set.split(';').next().expect("pair");
        let mut h = HeaderMap::new();
        h.insert("cookie", value.parse().expect("value"));
        assert_eq!(c.of(&h, None, peer).hash, first.hash);
        // Without a TTL nothing is generated.
        let plain = Key::Cookie {
            name: "session".into(),
            path: "".into(),
            ttl: None,
        };
        assert_eq!(
            plain.of(&HeaderMap::new(), None, peer),
            RequestHash::default()
        );
        let session = Key::Cookie {
            name: "s".into(),
            path: "".into(),
            ttl: Some(0),
        };
        let set = session
            .of(&HeaderMap::new(), None, peer)
            .set_cookie
            .expect("generated");
        assert!(
            !set.to_str().expect("ascii").contains("Max-Age"),
            "a session cookie"
        );
    }
}
