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
        headers: Vec<(String, Match, bool)>,
    },
    DestinationCluster,
}

#[derive(Debug)]
enum Match {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
    Present(bool),
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
                            .map(|h| matcher(h).map(|k| (h.name.to_ascii_lowercase(), k, h.invert)))
                            .collect::<Result<_, _>>()
                            .map_err(|e| format!("rate_limits[{i}]: {e}"))?,
                    },
                    Some(A::DestinationCluster(_)) => Action::DestinationCluster,
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
                let all = headers.iter().all(|(name, m, invert)| {
                    let v = header_value(r, name);
                    m.matches(v.as_deref()) != *invert
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
            (Match::Regex(r), Some(v)) => r
                .find(v)
                .is_some_and(|m| m.start() == 0 && m.end() == v.len()),
        }
    }
}

fn matcher(h: &pb::HeaderValueMatcher) -> Result<Match, String> {
    use pb::header_value_matcher::Kind;
    Ok(match &h.kind {
        Some(Kind::Exact(e)) => Match::Exact(e.clone()),
        Some(Kind::Prefix(p)) => Match::Prefix(p.clone()),
        Some(Kind::Suffix(s)) => Match::Suffix(s.clone()),
        Some(Kind::Contains(c)) => Match::Contains(c.clone()),
        Some(Kind::Regex(r)) => {
            Match::Regex(Regex::new(r).map_err(|e| format!("header {:?}: regex: {e}", h.name))?)
        }
        Some(Kind::Present(p)) => Match::Present(*p),
        None => Match::Present(true),
    })
}
