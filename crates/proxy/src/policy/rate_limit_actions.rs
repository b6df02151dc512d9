//! The `rate_limits` actions of Envoy's routes, which make a request's
//! rate limit descriptors for both rate limit filters: the global one sends
//! them to the rate limit service, the local one looks for a bucket of its
//! own among its `descriptors`. Each entry of `rate_limits` makes one
//! descriptor (its actions' entries in order), or none when an action has
//! no entry to give.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use regex::Regex;
use wire::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use wire::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use wire::pb;

/// The compiled `rate_limits` of a listener's routes.
#[derive(Debug, Default)]
pub struct Actions(Vec<Vec<Action>>);

#[derive(Debug)]
enum Action {
    RequestHeader {
        header: String,
        key: String,
        skip_if_absent: bool,
    },
    RemoteAddress,
    GenericKey {
        key: String,
        value: String,
    },
    HeaderValueMatch {
        key: String,
        value: String,
        expect_match: bool,
        headers: Vec<HeaderMatch>,
    },
    DestinationCluster,
    /// The proxy's service cluster, told by the control plane.
    SourceCluster(String),
    MaskedRemoteAddress {
        v4: u8,
        v6: u8,
    },
    QueryValueMatch {
        key: String,
        value: String,
        expect_match: bool,
        /// (name, value matcher; None: present).
        parameters: Vec<(String, Option<Match>)>,
    },
}

/// One of header_value_match's headers: its matcher and flags.
#[derive(Debug)]
struct HeaderMatch {
    name: String,
    matcher: Match,
    invert: bool,
    missing_as_empty: bool,
}

#[derive(Debug)]
enum Match {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// The value and the pattern lowercased (ignore_case).
    Folded(Box<Match>),
    Regex(Regex),
    Present(bool),
    /// An integer in [start, end).
    Range(i64, i64),
}

/// What is known of the request when its descriptors are made.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// The client's address (the trusted one of x-forwarded-for, or the peer).
    pub remote: IpAddr,
    /// Inbound: the listener's port (Envoy's "inbound|<port>||" cluster).
    pub inbound_port: Option<u16>,
}

impl Actions {
    pub fn compile(list: &[pb::RateLimitActions]) -> Result<Self, String> {
        use pb::rate_limit_action::Action as A;
        let mut rate_limits = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let mut actions = Vec::new();
            for a in &r.actions {
                actions.push(match &a.action {
                    Some(A::RequestHeaders(h)) => Action::RequestHeader {
                        header: h.header_name.to_ascii_lowercase(),
                        key: h.descriptor_key.clone(),
                        skip_if_absent: h.skip_if_absent,
                    },
                    Some(A::RemoteAddress(_)) => Action::RemoteAddress,
                    Some(A::GenericKey(g)) => Action::GenericKey {
                        key: if g.descriptor_key.is_empty() {
                            "generic_key".into()
                        } else {
                            g.descriptor_key.clone()
                        },
                        value: g.descriptor_value.clone(),
                    },
                    Some(A::HeaderValueMatch(m)) => Action::HeaderValueMatch {
                        key: if m.descriptor_key.is_empty() {
                            "header_match".into()
                        } else {
                            m.descriptor_key.clone()
                        },
                        value: m.descriptor_value.clone(),
                        expect_match: m.expect_match,
                        headers: m
                            .headers
                            .iter()
                            .map(|h| {
                                Ok(HeaderMatch {
                                    name: h.name.to_ascii_lowercase(),
                                    matcher: matcher(h)?,
                                    invert: h.invert,
                                    missing_as_empty: h.treat_missing_as_empty,
                                })
                            })
                            .collect::<Result<_, String>>()
                            .map_err(|e| format!("rate_limits[{i}]: {e}"))?,
                    },
                    Some(A::DestinationCluster(_)) => Action::DestinationCluster,
                    Some(A::SourceCluster(c)) => Action::SourceCluster(c.clone()),
                    Some(A::MaskedRemoteAddress(m)) => {
                        let len = |l: u32, max: u8, v: &str| {
                            u8::try_from(l).ok().filter(|l| *l <= max).ok_or_else(|| {
                                format!("rate_limits[{i}]: masked_remote_address {v}_prefix_mask_len {l} is over {max}")
                            })
                        };
                        Action::MaskedRemoteAddress {
                            v4: len(m.v4_prefix_len, 32, "v4")?,
                            v6: len(m.v6_prefix_len, 128, "v6")?,
                        }
                    }
                    Some(A::QueryParameterValueMatch(q)) => Action::QueryValueMatch {
                        key: if q.descriptor_key.is_empty() {
                            "query_match".into()
                        } else {
                            q.descriptor_key.clone()
                        },
                        value: q.descriptor_value.clone(),
                        expect_match: q.expect_match,
                        parameters: q
                            .parameters
                            .iter()
                            .map(|p| {
                                let m = p.value.as_ref().map(query_matcher).transpose()?;
                                Ok((p.name.clone(), m))
                            })
                            .collect::<Result<_, String>>()
                            .map_err(|e| format!("rate_limits[{i}]: {e}"))?,
                    },
                    None => {
                        return Err(format!("rate_limits[{i}]: an action without a kind"));
                    }
                });
            }
            rate_limits.push(actions);
        }
        Ok(Actions(rate_limits))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request's descriptors, one per `rate_limits` entry that gives one.
    pub fn descriptors(&self, r: &RequestView<'_>) -> Vec<RateLimitDescriptor> {
        self.0
            .iter()
            .filter_map(|actions| {
                let mut entries = Vec::with_capacity(actions.len());
                for a in actions {
                    if let Some(e) = a.entry(r)? {
                        entries.push(e);
                    }
                }
                (!entries.is_empty()).then_some(RateLimitDescriptor { entries })
            })
            .collect()
    }
}

impl Action {
    /// `None`: no descriptor from this `rate_limits` entry; `Some(None)`:
    /// this action adds no entry but the descriptor stands (skip_if_absent).
    fn entry(&self, r: &RequestView<'_>) -> Option<Option<Entry>> {
        let entry = |key: &str, value: String| {
            Some(Some(Entry {
                key: key.to_string(),
                value,
            }))
        };
        match self {
            Action::RequestHeader {
                header,
                key,
                skip_if_absent,
            } => match header_value(r, header) {
                Some(v) => entry(key, v),
                None if *skip_if_absent => Some(None),
                None => None,
            },
            Action::RemoteAddress => entry("remote_address", r.remote.to_string()),
            Action::GenericKey { key, value } => entry(key, value.clone()),
            Action::HeaderValueMatch {
                key,
                value,
                expect_match,
                headers,
            } => {
                let all = headers.iter().all(|h| {
                    let v =
                        header_value(r, &h.name).or_else(|| h.missing_as_empty.then(String::new));
                    h.matcher.matches(v.as_deref()) != h.invert
                });
                (all == *expect_match).then(|| {
                    Some(Entry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                })
            }
            Action::DestinationCluster => match r.inbound_port {
                Some(port) => entry("destination_cluster", format!("inbound|{port}||")),
                None => None,
            },
            Action::SourceCluster(cluster) => entry("source_cluster", cluster.clone()),
            Action::MaskedRemoteAddress { v4, v6 } => {
                let len = if r.remote.is_ipv4() { *v4 } else { *v6 };
                let masked = ipnet::IpNet::new(r.remote, len).ok()?.trunc();
                entry("masked_remote_address", masked.to_string())
            }
            Action::QueryValueMatch {
                key,
                value,
                expect_match,
                parameters,
            } => {
                let query = r.path.split_once('?').map_or("", |(_, q)| q);
                let all = parameters.iter().all(|(name, m)| {
                    // The first value; a parameter without `=` has the empty one.
                    let v = query.split('&').find_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (k == name).then_some(v)
                    });
                    match m {
                        None => v.is_some(),
                        Some(m) => m.matches(v),
                    }
                });
                (all == *expect_match).then(|| {
                    Some(Entry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                })
            }
        }
    }
}

/// A request header by its lowercase name, pseudo-headers included.
fn header_value(r: &RequestView<'_>, name: &str) -> Option<String> {
    match name {
        ":path" => Some(r.path.to_string()),
        ":method" => Some(r.method.as_str().to_string()),
        ":authority" | "host" => Some(r.authority.to_string()),
        ":scheme" => Some(r.scheme.to_string()),
        _ => {
            let mut values = r.headers.get_all(name).iter();
            let first = values.next()?;
            let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
            for v in values {
                out.push(',');
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            Some(out)
        }
    }
}

impl Match {
    fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (Match::Present(p), v) => v.is_some() == *p,
            (_, None) => false,
            (Match::Exact(e), Some(v)) => v == e,
            (Match::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (Match::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (Match::Contains(c), Some(v)) => v.contains(c.as_str()),
            (Match::Folded(m), Some(v)) => m.matches(Some(&v.to_lowercase())),
            (Match::Regex(r), Some(v)) => r
                .find(v)
                .is_some_and(|m| m.start() == 0 && m.end() == v.len()),
            (Match::Range(start, end), Some(v)) => {
                v.parse::<i64>().is_ok_and(|n| (*start..*end).contains(&n))
            }
        }
    }
}

fn matcher(h: &pb::HeaderValueMatcher) -> Result<Match, String> {
    use pb::header_value_matcher::Kind;
    let m = match &h.kind {
        Some(Kind::Exact(e)) => Match::Exact(e.clone()),
        Some(Kind::Prefix(p)) => Match::Prefix(p.clone()),
        Some(Kind::Suffix(s)) => Match::Suffix(s.clone()),
        Some(Kind::Contains(c)) => Match::Contains(c.clone()),
        Some(Kind::Regex(r)) => {
            Match::Regex(Regex::new(r).map_err(|e| format!("header {:?}: regex: {e}", h.name))?)
        }
        Some(Kind::Present(p)) => Match::Present(*p),
        Some(Kind::Range(r)) => Match::Range(r.start, r.end),
        None => Match::Present(true),
    };
    Ok(if h.ignore_case { folded(m) } else { m })
}

fn query_matcher(m: &pb::QueryValueMatcher) -> Result<Match, String> {
    use pb::query_value_matcher::Kind;
    let matcher = match &m.kind {
        Some(Kind::Exact(e)) => Match::Exact(e.clone()),
        Some(Kind::Prefix(p)) => Match::Prefix(p.clone()),
        Some(Kind::Suffix(s)) => Match::Suffix(s.clone()),
        Some(Kind::Contains(c)) => Match::Contains(c.clone()),
        Some(Kind::Regex(r)) => {
            Match::Regex(Regex::new(r).map_err(|e| format!("query parameter regex: {e}"))?)
        }
        None => Match::Present(true),
    };
    Ok(if m.ignore_case {
        folded(matcher)
    } else {
        matcher
    })
}

/// ignore_case: the string matchers compare lowercase (Envoy ignores it
/// for regexes).
fn folded(m: Match) -> Match {
    let lower = |s: String| s.to_lowercase();
    match m {
        Match::Exact(s) => Match::Folded(Box::new(Match::Exact(lower(s)))),
        Match::Prefix(s) => Match::Folded(Box::new(Match::Prefix(lower(s)))),
        Match::Suffix(s) => Match::Folded(Box::new(Match::Suffix(lower(s)))),
        Match::Contains(s) => Match::Folded(Box::new(Match::Contains(lower(s)))),
        other => other,
    }
}
